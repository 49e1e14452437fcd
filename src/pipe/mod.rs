//! The pipe between a sink's handles and its worker: one state behind one lock, and the
//! two sides that act on it.
//!
//! A sink is a cheap handle in front of a background worker that owns a dedicated thread
//! with its own current-thread tokio runtime (`thread.rs`). The handles ([`Producer`],
//! `producer.rs`) put records in the bounded queue and never do I/O or emit events
//! themselves (they may be called from inside a `tracing` layer callback). The worker
//! ([`Consumer`], `consumer.rs`) drains the queue, does the I/O, and emits every event,
//! including the drop reports for records the handles had to refuse. What either side may
//! do is decided by the state (`state.rs`), which is pure and unit-tested: the sides only
//! execute its answers and wait when it says so (`crate::deadline::wait_on`).
//!
//! Every exit decides the fate of every record the same way, in `State::end`:
//! - the worker finishes (the last handle dropped, or a shutdown): what it could not
//!   deliver by the deadline is dropped with reason `shutdown`;
//! - the worker panics (a user's `Clock`, a bug): the guard catches it, emits
//!   `worker_failed`, drops everything unsettled with reason `worker_failed`, fails every
//!   pending and later `flush()`, and refuses later writes;
//! - either way `sink_closed` carries final totals with `accepted == delivered + dropped`,
//!   and flush markers queued after the worker's last look are completed, never forgotten.

mod chunk;
mod consumer;
mod producer;
mod refusals;
mod state;
mod thread;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::deadline::{self, Check};
use crate::metrics::{Seen, SinkMetrics};
use crate::{Error, ErrorKind, SinkId};

pub(crate) use chunk::{seal_event, Chunk, Entry, EVENT_HEADER};
pub(crate) use consumer::{Consumer, Recv};
pub use producer::Producer;
pub(crate) use state::{Limits, Patience, LAYER_MAX_WAIT};
pub(crate) use thread::{blocks_a_runtime, report_stall, settled, Progress};
pub(crate) use thread::{mark, on_any_worker, on_worker_of, spawn_worker, Mark};

/// How a sink's pipe is set up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// The queue's bound and policy.
    pub(crate) limits: Limits,
    /// How long dropping the last handle waits for the worker to deliver what is queued
    /// and close (`Duration::ZERO`: it does not wait).
    pub(crate) drop_timeout: Duration,
    /// The worker delivers over the network, to a peer that may run on the application's
    /// own runtime (a test's mock server): a blocking wait there is watched for stalls.
    pub(crate) remote: bool,
}

/// Creates a sink's pipe: the handle side, and the worker side for its worker loop.
pub(crate) fn open(id: SinkId, settings: Settings) -> (Producer, Consumer) {
    let limits = settings.limits;
    let shared = Arc::new(Shared {
        metrics: SinkMetrics::new(&id, limits.max_records, limits.max_bytes),
        id,
        state: Mutex::new(state::State::new(settings.limits)),
        wake_worker: Notify::new(),
        closing: Notify::new(),
        room: Condvar::new(),
        room_async: Notify::new(),
        done: Condvar::new(),
        done_async: Notify::new(),
        drop_timeout: settings.drop_timeout,
        remote: settings.remote,
    });
    (Producer::new(&shared), Consumer::new(shared))
}

/// What both sides share.
struct Shared {
    id: SinkId,
    state: Mutex<state::State>,
    /// The pipe's counts as metrics (feature `metrics`; nothing without it).
    metrics: SinkMetrics,
    /// Something to do for the worker: records, a flush, a close.
    wake_worker: Notify,
    /// The sink was closed (a shutdown or the last handle's drop), or its deadline changed.
    closing: Notify,
    /// Room in the queue, or the sink closed: for writers that wait.
    room: Condvar,
    room_async: Notify,
    /// `sink_closed` was emitted.
    done: Condvar,
    done_async: Notify,
    drop_timeout: Duration,
    remote: bool,
}

impl Shared {
    #[inline]
    fn lock(&self) -> MutexGuard<'_, state::State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_writers(&self) {
        self.room.notify_all();
        self.room_async.notify_waiters();
    }

    /// Stops accepting records, with a deadline for the worker (the earliest asked holds).
    fn close(&self, deadline: Option<Instant>) {
        self.lock().close(deadline);
        self.wake_worker.notify_one();
        self.closing.notify_waiters();
        self.wake_writers();
    }

    /// The error for a write refused, or a flush that cannot complete.
    fn closed_error(&self, st: &state::State) -> Error {
        match st.failure() {
            Some(why) => Error::new(
                ErrorKind::Failed,
                format!(
                    "the worker of sink {} failed ({why}); the sink is closed",
                    self.id
                ),
            ),
            None => Error::new(ErrorKind::Closed, format!("sink {} is closed", self.id)),
        }
    }

    /// Marks the totals final and wakes everyone who waits for that.
    fn mark_done(&self) {
        self.lock().finish();
        self.done.notify_all();
        self.done_async.notify_waiters();
        self.wake_writers();
    }

    /// Waits (in real time) until `sink_closed` was emitted, or `until`; true if it was.
    async fn wait_done(&self, until: Instant) -> bool {
        deadline::wait_until(&self.done_async, Some(until), || self.lock().is_done()).await
    }

    /// [`wait_done`](Self::wait_done) for synchronous code.
    ///
    /// On a thread that runs a current-thread tokio runtime with tasks of its own, blocking
    /// may starve what a network sink's worker waits for (a test's mock server on that
    /// runtime): there, the wait gives up once the sink has made no progress for
    /// [`thread::STALL_AFTER`], says so (`shutdown_stalled`), and leaves the worker to
    /// finish by its deadline.
    fn wait_done_blocking(&self, until: Instant) -> bool {
        let watched = self.remote && thread::blocks_a_runtime();
        let mut watch = watched.then(|| thread::Progress::new(Instant::now()));
        let (st, done) = deadline::wait_on_blocking(&self.done, self.lock(), |st| {
            let now = Instant::now();
            if st.is_done() {
                return Check::Ready(true);
            }
            if now >= until {
                return Check::Ready(false);
            }
            match &mut watch {
                Some(p) => {
                    if p.stalled(thread::settled(&st.stats()), now) {
                        Check::Ready(false)
                    } else {
                        Check::Until(Some(until.min(p.next_look(now))))
                    }
                }
                None => Check::Until(Some(until)),
            }
        });
        let stalled = !done && Instant::now() < until;
        let pending = st.stats().pending();
        drop(st);
        if stalled {
            if let Some(p) = watch {
                thread::report_stall(&self.id, pending, p.waited());
            }
        }
        done
    }
}

/// What the metrics publish, read under the lock (see `crate::metrics`).
fn seen(st: &state::State) -> Seen {
    let (records, bytes) = st.used();
    Seen {
        accepted: st.stats().accepted,
        records,
        bytes,
    }
}

/// A little past a deadline: the worker's own cut-off, and its last events, take a moment.
fn grace(deadline: Instant) -> Instant {
    deadline::after(deadline, Duration::from_millis(250))
}

/// Shuts the sink down when the last user-facing handle is dropped: the worker delivers
/// what is queued, within the sink's drop timeout, and the drop waits for it (so a test's
/// temporary directory is not removed under a worker still writing). On a sink's worker
/// thread, or with a zero timeout, it closes without waiting.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let shared = &self.0;
        if shared.drop_timeout.is_zero() || on_any_worker() {
            shared.close(None);
            return;
        }
        let deadline = deadline::later(shared.drop_timeout);
        shared.close(Some(deadline));
        shared.wait_done_blocking(grace(deadline));
    }
}
