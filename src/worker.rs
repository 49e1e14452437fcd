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

use tokio::sync::{oneshot, Notify};
use tracing::Metadata;

use crate::deadline::later;
use crate::events::{self, reason, SinkId};
use crate::queue::{Chunk, FlushAck, Put, Queue, QueueConfig, Refusal};
use crate::{Error, ErrorKind, Result};

pub use crate::queue::{OverflowPolicy, SinkStats};

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

/// The handle side of a queue. Cloning shares the queue; when every clone is gone the
/// worker drains what is queued and exits.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    /// Closes the queue when the last clone is dropped.
    _close_on_drop: Arc<CloseOnDrop>,
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

/// The worker side of a queue (cloned for the worker's own tasks).
#[derive(Clone)]
pub(crate) struct Consumer {
    shared: Arc<Shared>,
}

/// What [`Consumer::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Entries were moved into the chunk.
    Items,
    /// The queue is closed and empty: the worker should finish.
    Closed,
}

impl Consumer {
    pub(crate) fn id(&self) -> &SinkId {
        &self.shared.id
    }

    /// Waits until there is something to do, then moves everything queued into `into`
    /// (which must be empty). Also emits any pending drop reports.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: entries are only moved once the future resolves.
    pub(crate) async fn recv(&self, into: &mut Chunk) -> Recv {
        loop {
            let notified = self.shared.wake_worker.notified();
            self.report_refusals();
            if self.try_recv(into) {
                return Recv::Items;
            }
            if self.shared.lock().closed {
                return Recv::Closed;
            }
            notified.await;
        }
    }

    /// Moves everything queued into `into` (which must be empty); true if anything was.
    pub(crate) fn try_recv(&self, into: &mut Chunk) -> bool {
        debug_assert!(into.is_empty());
        self.shared.lock().take(into)
    }

    /// True once the queue is closed (every handle dropped, or a shutdown asked for).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// The worker is done with `records` records counted at `bytes`: room for writers.
    pub(crate) fn release(&self, records: usize, bytes: usize) {
        if records == 0 && bytes == 0 {
            return;
        }
        if self.shared.lock().release(records, bytes) {
            self.shared.wake_writers();
        }
    }

    /// Emits `records_dropped` for refusals the producers counted since the last call, and
    /// `queue_stalled` when a stall has ended.
    pub(crate) fn report_refusals(&self) {
        let (drops, stall) = self.shared.lock().take_reports();
        for (n, why) in drops {
            if n > 0 {
                events::records_dropped(&self.shared.id, n, why);
            }
        }
        if let Some(shed) = stall {
            events::queue_stalled(&self.shared.id, shed);
        }
    }

    /// Records that `n` records were delivered.
    pub(crate) fn delivered(&self, n: u64) {
        if n > 0 {
            self.shared.lock().delivered(n);
        }
    }

    /// Records that `n` records were dropped and emits `records_dropped`.
    pub(crate) fn dropped(&self, n: u64, why: &str) {
        if n > 0 {
            self.shared.lock().dropped(n, why);
            events::records_dropped(&self.shared.id, n, why);
        }
    }

    /// Completes a flush marker: emits pending drop reports, then `flush_complete`.
    pub(crate) fn complete_flush(&self, ack: FlushAck) {
        self.report_refusals();
        let accepted = self.shared.lock().counts.accepted;
        events::flush_complete(
            &self.shared.id,
            accepted,
            events::micros(ack.started.elapsed()),
        );
        let _ = ack.tx.send(());
    }

    /// The shutdown deadline, once shutdown has been requested.
    pub(crate) fn shutdown_deadline(&self) -> Option<Instant> {
        self.shared.lock().shutdown
    }

    /// Resolves when shutdown is requested (at once if it already was), with its deadline.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub(crate) async fn shutdown_requested(&self) -> Instant {
        loop {
            let notified = self.shared.shutdown_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(d) = self.shutdown_deadline() {
                return d;
            }
            notified.await;
        }
    }

    /// Drops everything still queued (reason `shutdown`), completing its flush markers.
    pub(crate) fn abandon_queue(&self) -> u64 {
        let (n, acks) = self.shared.lock().abandon_pending(reason::SHUTDOWN);
        if n > 0 {
            events::records_dropped(&self.shared.id, n, reason::SHUTDOWN);
        }
        for ack in acks {
            self.complete_flush(ack);
        }
        n
    }

    /// Finishes the worker: settles anything left (reason `shutdown`), completes the flush
    /// markers queued after the last drain, emits `sink_closed`, and wakes shutdown waiters.
    pub(crate) fn finish(&self) {
        end(&self.shared, reason::SHUTDOWN, None);
    }
}

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
