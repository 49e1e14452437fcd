//! The worker's thread: its runtime, the guard it runs under, the one exit every worker
//! goes through, and the marks that tell a sink's own threads from the application's.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Producer, Shared};
use crate::events::{self, reason};
use crate::{Error, Result, SinkId, SinkStats};

std::thread_local! {
    /// What this thread is: 0 for an application thread, a sink's number for the threads
    /// of that sink's worker, [`REPORTER`] for the `writes_refused` reporter.
    static MARK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The mark of the reporter thread (sink numbers count up from 1 and never get there).
const REPORTER: u64 = u64::MAX;

/// What the current thread is, read once: the layer's hot path asks three questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark(u64);

/// The current thread's [`Mark`].
#[inline]
pub(crate) fn mark() -> Mark {
    Mark(MARK.with(std::cell::Cell::get))
}

impl Mark {
    /// True on the threads of the worker of sink `id` (its own thread and its runtime's
    /// blocking pool, where DNS lookups and compression run): the application layer must
    /// not feed a sink the events of its own work, its schema events and those of its I/O
    /// stack (hyper, reqwest, rustls).
    #[inline]
    pub(crate) fn is_worker_of(self, id: &SinkId) -> bool {
        self.0 == id.number()
    }

    /// True on any sink's threads (and the reporter's): such a thread never waits for room
    /// in another sink's queue (two workers waiting on each other would stall both), nor for
    /// a sink to close.
    #[inline]
    pub(crate) fn is_any_worker(self) -> bool {
        self.0 != 0
    }

    /// True on the `writes_refused` reporter: the layer forwards nothing from it.
    #[inline]
    pub(crate) fn is_reporter(self) -> bool {
        self.0 == REPORTER
    }
}

/// Marks the current thread as the `writes_refused` reporter.
pub(super) fn mark_reporter() {
    MARK.with(|m| m.set(REPORTER));
}

/// True when the current thread belongs to the worker of sink `id` (see
/// [`Mark::is_worker_of`]).
pub(crate) fn on_worker_of(id: &SinkId) -> bool {
    mark().is_worker_of(id)
}

/// True when the current thread belongs to any sink's worker (see
/// [`Mark::is_any_worker`]).
pub(crate) fn on_any_worker() -> bool {
    mark().is_any_worker()
}

/// Runs a sink's worker future on a dedicated thread with its own current-thread runtime,
/// so the sink works whatever runtime (or none) the application uses, and its I/O never
/// competes with the application's tasks.
///
/// The future runs under a guard: if it panics, the panic is caught and the sink fails
/// cleanly (see the module docs of `pipe`); nothing waits forever. If the thread cannot be
/// started, the sink is settled at once, so nothing waits for a worker that never ran.
pub(crate) fn spawn_worker<F>(producer: &Producer, worker: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let shared = producer.shared().clone();
    let id = shared.id.clone();
    let mark = id.number();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("sinkwatch-{id}-blocking"))
        .on_thread_start(move || MARK.with(|c| c.set(mark)))
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            abort(&shared);
            return Err(Error::io(
                format!("cannot start the runtime of sink {id}"),
                e,
            ));
        }
    };
    let on_thread = shared.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("sinkwatch-{id}"))
        .spawn(move || {
            let shared = on_thread;
            MARK.with(|c| c.set(mark));
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(worker)));
            if let Err(payload) = outcome {
                let message = panic_message(payload.as_ref());
                events::worker_failed(&shared.id, &message);
                end(&shared, reason::WORKER_FAILED, Some(&message));
            } else if !shared.lock().is_done() {
                // A worker that returned without finishing still settles everything.
                end(&shared, reason::SHUTDOWN, None);
            }
            // Background compression may still run on the blocking pool: do not wait for it.
            runtime.shutdown_background();
        });
    if let Err(e) = spawned {
        abort(&shared);
        return Err(Error::io(
            format!("cannot spawn the worker thread of sink {id}"),
            e,
        ));
    }
    Ok(())
}

/// A sink whose worker never ran: settled and done, without events (it accepted nothing).
fn abort(shared: &Shared) {
    shared.lock().end(reason::SHUTDOWN, None);
    shared.mark_done();
}

/// The one exit: the drops producers counted are reported, every unsettled record is
/// dropped for `why`, queued flush markers are completed (or, for a failure, failed),
/// `sink_closed` is emitted, and waiters are woken.
pub(super) fn end(shared: &Shared, why: &str, failure: Option<&str>) {
    super::consumer::report(shared);
    let (lost, acks, stats, seen) = {
        let mut st = shared.lock();
        let (lost, acks) = st.end(why, failure.map(Arc::from));
        (lost, acks, st.stats(), super::seen(&st))
    };
    shared.metrics.publish(seen);
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
    events::sink_closed(
        &shared.id,
        stats.accepted,
        stats.delivered,
        stats.dropped,
        stats.replayed,
        stats.persisted,
    );
    shared.mark_done();
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

/// How long a blocking wait on a current-thread runtime's thread waits without any
/// progress before it concludes it is starving what the sinks wait for.
pub(crate) const STALL_AFTER: Duration = Duration::from_millis(300);

/// True when blocking this thread blocks a current-thread tokio runtime that has tasks of
/// its own (a `#[tokio::test]` by default, or `#[tokio::main(flavor = "current_thread")]`,
/// that spawned a mock server, say): those tasks cannot run while the thread blocks.
pub(crate) fn blocks_a_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|h| {
        h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread
            && h.metrics().num_alive_tasks() > 0
    })
}

/// Records settled so far (delivered or dropped): what a blocked shutdown waits on.
pub(crate) fn settled(stats: &SinkStats) -> u64 {
    stats.delivered + stats.dropped
}

/// Watches a blocking wait for progress.
pub(crate) struct Progress {
    started: Instant,
    last: Option<u64>,
    since: Instant,
}

impl Progress {
    pub(crate) fn new(now: Instant) -> Self {
        Progress {
            started: now,
            last: None,
            since: now,
        }
    }

    /// True once `settled` has not moved for [`STALL_AFTER`].
    pub(crate) fn stalled(&mut self, settled: u64, now: Instant) -> bool {
        if self.last != Some(settled) {
            self.last = Some(settled);
            self.since = now;
            return false;
        }
        now.duration_since(self.since) >= STALL_AFTER
    }

    /// When to look again: a few times per [`STALL_AFTER`], and never past it.
    pub(crate) fn next_look(&self, now: Instant) -> Instant {
        (now + STALL_AFTER / 4).min(self.since + STALL_AFTER)
    }

    /// How long the wait lasted.
    pub(crate) fn waited(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Emits `shutdown_stalled` for a blocking wait that gave up for want of progress.
pub(crate) fn report_stall(id: &SinkId, pending: u64, waited: Duration) {
    let ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
    events::shutdown_stalled(id, pending, ms);
}
