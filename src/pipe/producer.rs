//! The handles' side of a sink's pipe: admission with the sink's patience, flushes,
//! shutdown and its report. Each call executes the state's answer ([`State::admit`]); the
//! only waiting is [`deadline::wait_on`]'s, blocking or async.

use std::future::Future;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Metadata;

use super::chunk::{FlushAck, Put};
use super::state::{Admit, Patience, State};
use super::{grace, refusals, CloseOnDrop, Shared};
use crate::deadline::{self, Check};
use crate::{Error, ErrorKind, Record, Result, ShutdownReport, SinkId, SinkStats};

/// The handle side of a pipe. Cloning shares the pipe; when every clone is gone the worker
/// delivers what is queued and exits (see `CloseOnDrop`).
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    /// Shuts the sink down when the last clone is dropped.
    _close_on_drop: Arc<CloseOnDrop>,
}

/// How an admission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Queued {
        wake: bool,
    },
    Dropped,
    /// The sink is closed; `report`: the refusal reporter must be told.
    Refused {
        report: bool,
    },
}

/// One admission attempt, in the form [`deadline::wait_on`] takes: done, or wait until
/// room comes or the deadline the state set passes, keeping the record for the next try.
fn attempt(
    st: &mut State,
    put: &mut Option<Put<'_>>,
    patience: Patience,
    deadline: &mut Option<Instant>,
) -> Check<Outcome> {
    let Some(p) = put.take() else {
        // Never: every attempt that waits puts the record back.
        return Check::Ready(Outcome::Dropped);
    };
    match st.admit(p, patience, deadline, Instant::now) {
        Admit::Queued { wake } => Check::Ready(Outcome::Queued { wake }),
        Admit::Dropped => Check::Ready(Outcome::Dropped),
        Admit::Refused => Check::Ready(Outcome::Refused {
            report: st.schedule_refusal_report(),
        }),
        Admit::Wait { put: back, until } => {
            *put = Some(back);
            Check::Until(until)
        }
    }
}

impl Producer {
    pub(super) fn new(shared: &Arc<Shared>) -> Self {
        Producer {
            shared: shared.clone(),
            _close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
        }
    }

    pub(super) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn id(&self) -> &SinkId {
        &self.shared.id
    }

    pub(crate) fn stats(&self) -> SinkStats {
        self.shared.lock().stats()
    }

    /// Queues an event in the layer's compact form (sealed by `seal_event`). False when
    /// the sink is closed: the refusal is counted and reported, and there is no one to
    /// tell.
    #[inline]
    pub(crate) fn put_event(
        &self,
        bytes: &[u8],
        metas: &[&'static Metadata<'static>],
        patience: Patience,
    ) -> bool {
        let mut st = self.shared.lock();
        match st.try_queue_event(bytes, metas) {
            Some(wake) => {
                drop(st);
                if wake {
                    self.shared.wake_worker.notify_one();
                }
                true
            }
            None => self.put_event_slowly(st, bytes, metas, patience),
        }
    }

    /// [`put_event`](Self::put_event) when the queue is full, closed or shedding.
    #[cold]
    #[inline(never)]
    fn put_event_slowly(
        &self,
        st: MutexGuard<'_, State>,
        bytes: &[u8],
        metas: &[&'static Metadata<'static>],
        patience: Patience,
    ) -> bool {
        self.put_locked(st, Put::Event(bytes, metas), patience)
            .is_ok()
    }

    /// Queues a preformatted line (no trailing newline); false when the sink is closed.
    pub(crate) fn put_line(&self, line: &[u8], patience: Patience) -> bool {
        self.put(Put::Line(line), patience).is_ok()
    }

    /// Queues a record written by hand.
    pub(crate) fn put_record(&self, record: Record, patience: Patience) -> Result<()> {
        self.put(Put::Record(Box::new(record)), patience)
            .map_err(|()| self.closed_error())
    }

    /// Queues `put`, blocking this thread for room as `patience` and the policy allow.
    #[inline]
    fn put(&self, put: Put<'_>, patience: Patience) -> std::result::Result<(), ()> {
        self.put_locked(self.shared.lock(), put, patience)
    }

    /// [`put`](Self::put) with the state locked already.
    #[inline]
    fn put_locked(
        &self,
        mut st: MutexGuard<'_, State>,
        put: Put<'_>,
        patience: Patience,
    ) -> std::result::Result<(), ()> {
        let mut deadline = None;
        // The common case, room in the queue, in one step and without the waiting machinery.
        let (put, until) = match st.admit(put, patience, &mut deadline, Instant::now) {
            Admit::Queued { wake } => {
                drop(st);
                if wake {
                    self.shared.wake_worker.notify_one();
                }
                return Ok(());
            }
            Admit::Wait { put, until } => (put, until),
            Admit::Dropped => {
                drop(st);
                return self.after(Outcome::Dropped);
            }
            Admit::Refused => {
                let report = st.schedule_refusal_report();
                drop(st);
                return self.after(Outcome::Refused { report });
            }
        };
        self.wait_for_room(st, put, patience, deadline, until)
    }

    /// The rest of [`put`](Self::put) once the state said to wait: waits on the room
    /// `Condvar`, trying again at each wake-up, until queued, dropped or refused.
    #[cold]
    fn wait_for_room(
        &self,
        st: MutexGuard<'_, State>,
        put: Put<'_>,
        patience: Patience,
        mut deadline: Option<Instant>,
        until: Option<Instant>,
    ) -> std::result::Result<(), ()> {
        let mut put = Some(put);
        let mut first = Some(until);
        let (st, outcome) = deadline::wait_on_blocking(&self.shared.room, st, |st| {
            // The first look was made by `put`: wait as it said.
            if let Some(until) = first.take() {
                return Check::Until(until);
            }
            attempt(st, &mut put, patience, &mut deadline)
        });
        drop(st);
        self.after(outcome)
    }

    /// Queues a record, waiting asynchronously for room as the sink's policy allows.
    ///
    /// Cancel-safe: cancelled while waiting, the record is neither queued nor counted.
    pub(crate) async fn put_record_async(&self, record: Record) -> Result<()> {
        let mut put = Some(Put::Record(Box::new(record)));
        let mut deadline = None;
        let shared = &self.shared;
        let outcome = deadline::wait_on(&shared.room_async, || {
            attempt(
                &mut shared.lock(),
                &mut put,
                Patience::Policy,
                &mut deadline,
            )
        })
        .await;
        self.after(outcome).map_err(|()| self.closed_error())
    }

    /// Does what an admission's outcome asks: wake the worker (it reports drops), or tell
    /// the refusal reporter.
    #[inline]
    fn after(&self, outcome: Outcome) -> std::result::Result<(), ()> {
        match outcome {
            Outcome::Queued { wake } => {
                if wake {
                    self.shared.wake_worker.notify_one();
                }
                Ok(())
            }
            Outcome::Dropped => {
                self.shared.wake_worker.notify_one();
                Ok(())
            }
            Outcome::Refused { report } => {
                self.shared.metrics.refused();
                if report {
                    refusals::schedule(&self.shared);
                }
                Err(())
            }
        }
    }

    fn closed_error(&self) -> Error {
        let st = self.shared.lock();
        self.shared.closed_error(&st)
    }

    /// Resolves once every record queued before the call is delivered or reported dropped,
    /// and the drop reports are emitted.
    pub(crate) fn flush(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let ack = FlushAck {
            started: Instant::now(),
            tx,
        };
        let queued = self.shared.lock().queue_flush(ack).is_ok();
        // Always: a worker waiting for its batch timer must push now.
        self.shared.wake_worker.notify_one();
        let shared = self.shared.clone();
        async move {
            if queued && rx.await.is_ok() {
                return Ok(());
            }
            // The worker is gone, or going (a panic drops the markers it held): wait for
            // its last word, so the error can say why.
            shared
                .wait_done(deadline::later(Duration::from_secs(1)))
                .await;
            let st = shared.lock();
            if st.failure().is_some() {
                return Err(shared.closed_error(&st));
            }
            Err(Error::new(
                ErrorKind::Closed,
                format!("sink {} has stopped; nothing to flush", shared.id),
            ))
        }
    }

    /// Asks the worker to finish by `deadline` and waits (in real time) until it has.
    pub(crate) async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.shared.close(Some(deadline));
        let completed = self.shared.wait_done(grace(deadline)).await;
        self.report(completed)
    }

    /// [`shutdown`](Self::shutdown) for synchronous code: blocks the calling thread (on a
    /// current-thread runtime's thread, only while the sink makes progress).
    pub(crate) fn shutdown_blocking(&self, deadline: Instant) -> ShutdownReport {
        self.shared.close(Some(deadline));
        let completed = self.shared.wait_done_blocking(grace(deadline));
        self.report(completed)
    }

    /// The sink's report as of now: final once the worker has finished.
    pub(crate) fn report_now(&self) -> ShutdownReport {
        let st = self.shared.lock();
        st.shutdown_report(st.is_done())
    }

    /// True for a sink that delivers over the network (see `Settings::remote`).
    pub(crate) fn is_remote(&self) -> bool {
        self.shared.remote
    }

    fn report(&self, completed: bool) -> ShutdownReport {
        let st: MutexGuard<'_, State> = self.shared.lock();
        st.shutdown_report(completed)
    }
}
