//! The handles' side of a sink's queue: admission with the sink's patience, flushes,
//! shutdown and its report.

use std::future::Future;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Metadata;

use super::{CloseOnDrop, Patience, Shared, ShutdownReport, LAYER_MAX_WAIT};
use crate::deadline::later;
use crate::queue::{FlushAck, OverflowPolicy, Put, Queue, Refusal, SinkStats};
use crate::SinkId;
use crate::{Error, ErrorKind, Result};

/// The handle side of a queue. Cloning shares the queue; when every clone is gone the
/// worker drains what is queued and exits.
#[derive(Clone)]
pub struct Producer {
    pub(super) shared: Arc<Shared>,
    /// Closes the queue when the last clone is dropped.
    pub(super) _close_on_drop: Arc<CloseOnDrop>,
}

impl Producer {
    pub(crate) fn id(&self) -> &SinkId {
        &self.shared.id
    }

    pub(crate) fn stats(&self) -> SinkStats {
        self.shared.lock().stats()
    }

    /// Queues an event in the layer's compact form.
    pub(crate) fn put_event(
        &self,
        bytes: &[u8],
        metas: &[&'static Metadata<'static>],
        patience: Patience,
    ) -> Result<()> {
        // The common case, room in the queue, without the general path's bookkeeping.
        let mut q = self.shared.lock();
        if q.policy() != OverflowPolicy::DropOldest {
            if let Some(was_empty) = q.try_put_event(bytes, metas) {
                drop(q);
                if was_empty {
                    self.shared.wake_worker.notify_one();
                }
                return Ok(());
            }
        }
        drop(q);
        self.put_blocking(Put::Event(bytes, metas), patience)
    }

    /// Queues a preformatted line (no trailing newline).
    pub(crate) fn put_line(&self, line: &[u8], patience: Patience) -> Result<()> {
        self.put_blocking(Put::Line(line), patience)
    }

    /// Queues a record written by hand.
    pub(crate) fn put_record(&self, record: crate::Record, patience: Patience) -> Result<()> {
        self.put_blocking(Put::Record(Box::new(record)), patience)
    }

    /// Queues `put`, waiting for room (blocking this thread) as `patience` allows.
    fn put_blocking(&self, put: Put<'_>, patience: Patience) -> Result<()> {
        let mut q = self.shared.lock();
        let mut put = put;
        let mut deadline = None;
        loop {
            let refusal = match q.try_put(put) {
                Ok(was_empty) => {
                    drop(q);
                    if was_empty {
                        self.shared.wake_worker.notify_one();
                    }
                    return Ok(());
                }
                Err((refusal, back)) => {
                    put = back;
                    refusal
                }
            };
            let wait = match (refusal, patience, q.policy()) {
                (Refusal::Full, Patience::Policy, OverflowPolicy::Wait) => None,
                (Refusal::Full, Patience::Bounded, OverflowPolicy::Wait) => {
                    Some(*deadline.get_or_insert_with(|| later(LAYER_MAX_WAIT)))
                }
                (Refusal::Full, Patience::Policy | Patience::Bounded, OverflowPolicy::Block(d)) => {
                    Some(*deadline.get_or_insert_with(|| later(d)))
                }
                (refusal, _, _) => return self.refuse(q, refusal),
            };
            let now = Instant::now();
            if wait.is_some_and(|at| now >= at) {
                q.stall();
                drop(q);
                self.shared.wake_worker.notify_one();
                return Ok(());
            }
            q.waiting += 1;
            q = match wait {
                None => self
                    .shared
                    .space
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    self.shared
                        .space
                        .wait_timeout(q, at - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            q.waiting -= 1;
        }
    }

    /// Counts a refused record; only a closed sink makes it an error.
    fn refuse(&self, mut q: MutexGuard<'_, Queue>, refusal: Refusal) -> Result<()> {
        q.refuse(refusal);
        if refusal == Refusal::Closed {
            return Err(self.shared.closed_error(&q));
        }
        drop(q);
        // The worker reports the drop.
        self.shared.wake_worker.notify_one();
        Ok(())
    }

    /// Queues a record, waiting asynchronously for room as the sink's policy allows.
    ///
    /// Cancel-safe: cancelled while waiting, the record is neither queued nor counted.
    pub(crate) async fn put_record_async(&self, record: crate::Record) -> Result<()> {
        let mut put = Put::Record(Box::new(record));
        let mut deadline = None;
        loop {
            let notified = self.shared.space_async.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake between the check and the await is not lost.
            notified.as_mut().enable();
            let wait = {
                let mut q = self.shared.lock();
                let refusal = match q.try_put(put) {
                    Ok(was_empty) => {
                        drop(q);
                        if was_empty {
                            self.shared.wake_worker.notify_one();
                        }
                        return Ok(());
                    }
                    Err((refusal, back)) => {
                        put = back;
                        refusal
                    }
                };
                match (refusal, q.policy()) {
                    (Refusal::Full, OverflowPolicy::Wait) => None,
                    (Refusal::Full, OverflowPolicy::Block(d)) => {
                        let at = *deadline.get_or_insert_with(|| later(d));
                        if Instant::now() >= at {
                            q.stall();
                            drop(q);
                            self.shared.wake_worker.notify_one();
                            return Ok(());
                        }
                        Some(at)
                    }
                    (refusal, _) => return self.refuse(q, refusal),
                }
            };
            let _waiting = Waiting::new(&self.shared);
            match wait {
                None => notified.await,
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = crate::deadline::until(at) => {}
                    }
                }
            }
        }
    }

    /// Resolves once every record queued before the call is delivered or reported dropped,
    /// and the drop reports are emitted.
    pub(crate) fn flush(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let ack = FlushAck {
            started: Instant::now(),
            tx,
        };
        let queued = self.shared.lock().put_flush(ack).is_ok();
        // Always: a worker waiting for its batch timer must push now.
        self.shared.wake_worker.notify_one();
        let shared = self.shared.clone();
        async move {
            if queued && rx.await.is_ok() {
                return Ok(());
            }
            // The worker is gone, or going (a panic drops the markers it held): wait for
            // its last word, so the error can say why.
            shared.wait_done(later(Duration::from_secs(1))).await;
            let q = shared.lock();
            if q.failed.is_some() {
                return Err(shared.closed_error(&q));
            }
            Err(Error::new(
                ErrorKind::Closed,
                format!("sink {} has stopped; nothing to flush", shared.id),
            ))
        }
    }

    /// Asks the worker to finish by `deadline` and waits (in real time) until it has.
    pub(crate) async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        self.request_shutdown(deadline);
        let completed = self.shared.wait_done(grace(deadline)).await;
        self.report(completed)
    }

    /// [`shutdown`](Self::shutdown) for synchronous code: blocks the calling thread.
    pub(crate) fn shutdown_blocking(&self, deadline: Instant) -> ShutdownReport {
        self.request_shutdown(deadline);
        let grace = grace(deadline);
        let mut q = self.shared.lock();
        while !q.done {
            let now = Instant::now();
            if now >= grace {
                break;
            }
            q = self
                .shared
                .done_cv
                .wait_timeout(q, grace - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let completed = q.done;
        drop(q);
        self.report(completed)
    }

    fn request_shutdown(&self, deadline: Instant) {
        {
            let mut q = self.shared.lock();
            q.closed = true;
            q.shutdown = Some(q.shutdown.map_or(deadline, |d| d.min(deadline)));
        }
        self.shared.wake_worker.notify_one();
        self.shared.shutdown_notify.notify_waiters();
        self.shared.wake_writers();
    }

    fn report(&self, completed: bool) -> ShutdownReport {
        let q = self.shared.lock();
        let stats = q.stats();
        let undelivered = if completed {
            q.counts.dropped_shutdown
        } else {
            q.counts.dropped_shutdown + stats.pending()
        };
        ShutdownReport {
            stats,
            undelivered,
            completed,
        }
    }

    /// Writes refused since the last report, if a report is due (at most one a second).
    pub(crate) fn refused_report(&self) -> Option<u64> {
        let mut q = self.shared.lock();
        let n = q.counts.refused - q.refused_reported;
        let now = Instant::now();
        let due = q
            .refused_reported_at
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
        if n == 0 || !due {
            return None;
        }
        q.refused_reported = q.counts.refused;
        q.refused_reported_at = Some(now);
        Some(n)
    }
}

/// A little past the deadline: the worker's own cut-off, and its last events, take a moment.
fn grace(deadline: Instant) -> Instant {
    deadline
        .checked_add(Duration::from_millis(250))
        .unwrap_or(deadline)
}

/// Counts an async writer waiting for room, also when its future is dropped.
struct Waiting<'a>(&'a Shared);

impl<'a> Waiting<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.lock().waiting += 1;
        Waiting(shared)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}
