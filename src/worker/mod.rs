//! A sink's lifecycle: the handles' side of the queue ([`Producer`]), the worker's side
//! ([`Consumer`]), and the worker thread, which runs under a guard.
//!
//! A sink is a cheap handle in front of a background worker that owns a dedicated thread
//! with its own current-thread tokio runtime. The handle puts records in the bounded queue
//! (`crate::queue`) and never does I/O or emits events itself (it may be called from inside
//! a `tracing` layer callback). The worker drains the queue, does the I/O, and emits every
//! event, including the drop reports for records the handle had to refuse.
//!
//! Every exit decides the fate of every record the same way, in [`Queue::end`]:
//! - the worker finishes (every handle dropped, or a shutdown): what it could not deliver by
//!   the deadline is dropped with reason `shutdown`;
//! - the worker panics (a user's `Clock`, a bug): the guard catches it, emits
//!   `worker_failed`, drops everything unsettled with reason `worker_failed`, fails every
//!   pending and later `flush()`, and refuses later writes;
//! - either way `sink_closed` carries final totals with `accepted == delivered + dropped`,
//!   and flush markers queued after the worker's last look are completed, never forgotten.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::events::{self, reason};
use crate::queue::{Queue, QueueConfig};
use crate::SinkId;
use crate::{Error, ErrorKind, Result};

mod consumer;
mod producer;

pub use crate::queue::{OverflowPolicy, SinkStats};
pub(crate) use consumer::{Consumer, Recv};
pub use producer::Producer;

/// What a shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The sink's final counters.
    pub stats: SinkStats,
    /// Records the shutdown could not deliver before its deadline (reported dropped with
    /// reason `shutdown`); while `completed` is false, also those still pending.
    pub undelivered: u64,
    /// False when the worker had not finished by the deadline (for example stuck in a
    /// system call); `stats` is then a snapshot, not final.
    pub completed: bool,
}

pub(crate) struct Shared {
    id: SinkId,
    queue: Mutex<Queue>,
    wake_worker: Notify,
    shutdown_notify: Notify,
    space: Condvar,
    space_async: Notify,
    done_cv: Condvar,
    done_async: Notify,
}

/// Creates a queue; the worker side is handed to the sink's worker loop.
pub(crate) fn queue(id: SinkId, config: QueueConfig) -> (Producer, Consumer) {
    let shared = Arc::new(Shared {
        id,
        queue: Mutex::new(Queue::new(config)),
        wake_worker: Notify::new(),
        shutdown_notify: Notify::new(),
        space: Condvar::new(),
        space_async: Notify::new(),
        done_cv: Condvar::new(),
        done_async: Notify::new(),
    });
    (
        Producer {
            shared: shared.clone(),
            _close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
        },
        Consumer { shared },
    )
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake_worker.notify_one();
        self.wake_writers();
    }

    fn wake_writers(&self) {
        self.space.notify_all();
        self.space_async.notify_waiters();
    }

    /// The error for a write refused, or a flush that cannot complete.
    fn closed_error(&self, q: &Queue) -> Error {
        match &q.failed {
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

    /// Waits (in real time, at most `limit`) until the worker has emitted `sink_closed`.
    async fn wait_done(&self, until: Instant) -> bool {
        let timer = crate::deadline::until(until);
        tokio::pin!(timer);
        loop {
            let notified = self.done_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().done {
                return true;
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut timer => return self.lock().done,
            }
        }
    }
}

/// Closes the queue when the last user-facing handle is dropped, so the worker drains and
/// exits. Dropping never blocks.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// How long a writer may wait for room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Never wait: a full queue drops the record (`queue_full`).
    None,
    /// As the sink's policy says.
    Policy,
    /// As the sink's policy says, but never without a bound: `Wait` waits at most
    /// [`LAYER_MAX_WAIT`], then sheds load as `Block` does. For the application layer,
    /// which must never stall the caller for long.
    Bounded,
}

/// The longest an application's `tracing` call waits for room under a `Wait` policy.
pub(crate) const LAYER_MAX_WAIT: Duration = Duration::from_secs(1);

/// The one exit: every unsettled record is dropped for `why`, queued flush markers are
/// completed (or, for a failure, failed), `sink_closed` is emitted, and waiters are woken.
fn end(shared: &Shared, why: &str, failure: Option<&str>) {
    let (drops, stall) = shared.lock().take_reports();
    for (n, r) in drops {
        if n > 0 {
            events::records_dropped(&shared.id, n, r);
        }
    }
    if let Some(shed) = stall {
        events::queue_stalled(&shared.id, shed);
    }
    let (lost, acks, stats) = {
        let mut q = shared.lock();
        if let Some(f) = failure {
            q.failed = Some(Arc::from(f));
        }
        let (lost, acks) = q.end(why);
        (lost, acks, q.stats())
    };
    if lost > 0 {
        events::records_dropped(&shared.id, lost, why);
    }
    if failure.is_none() {
        for ack in acks {
            events::flush_complete(
                &shared.id,
                stats.accepted,
                events::micros(ack.started.elapsed()),
            );
            let _ = ack.tx.send(());
        }
    }
    events::sink_closed(&shared.id, stats.accepted, stats.delivered, stats.dropped);
    shared.lock().done = true;
    shared.done_cv.notify_all();
    shared.done_async.notify_waiters();
    shared.wake_writers();
}

std::thread_local! {
    /// The number of the sink whose worker runs on this thread (0: none).
    static CURRENT_SINK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// True when the current thread belongs to the worker of sink `id`.
///
/// Every thread a sink's worker runs on (its own thread and its runtime's blocking pool,
/// where DNS lookups and compression run) is marked, so the application layer can refuse
/// to feed a sink the events that sink's own work produced: its schema events and those of
/// its I/O stack (hyper, reqwest, rustls).
pub(crate) fn on_worker_of(id: &SinkId) -> bool {
    CURRENT_SINK.with(std::cell::Cell::get) == id.number()
}

/// True when the current thread belongs to any sink's worker: such a thread never waits
/// for room in another sink's queue (two workers waiting on each other would stall both).
pub(crate) fn on_any_worker() -> bool {
    CURRENT_SINK.with(std::cell::Cell::get) != 0
}

/// Runs a sink's worker future on a dedicated thread with its own current-thread runtime,
/// so the sink works whatever runtime (or none) the application uses, and its I/O never
/// competes with the application's tasks.
///
/// The future runs under a guard: if it panics, the panic is caught and the sink fails
/// cleanly (see the module docs); nothing waits forever.
pub(crate) fn spawn_worker<F>(producer: &Producer, worker: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let id = producer.id().clone();
    let mark = id.number();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("sinkwatch-{id}-blocking"))
        .on_thread_start(move || CURRENT_SINK.with(|c| c.set(mark)))
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime of sink {id}"), e))?;
    let shared = producer.shared.clone();
    std::thread::Builder::new()
        .name(format!("sinkwatch-{id}"))
        .spawn(move || {
            CURRENT_SINK.with(|c| c.set(mark));
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(worker)));
            if let Err(payload) = outcome {
                let message = panic_message(payload.as_ref());
                events::worker_failed(&shared.id, &message);
                end(&shared, reason::WORKER_FAILED, Some(&message));
            } else if !shared.lock().done {
                // A worker that returned without finishing still settles everything.
                end(&shared, reason::SHUTDOWN, None);
            }
            // Background compression may still run on the blocking pool: do not wait for it.
            runtime.shutdown_background();
        })
        .map_err(|e| Error::io(format!("cannot spawn the worker thread of sink {id}"), e))?;
    Ok(())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
