//! The queue and worker plumbing shared by the sinks.
//!
//! A sink is a cheap handle ([`Producer`]) in front of a background worker that owns a
//! dedicated thread with its own current-thread tokio runtime. The handle pushes records
//! into a bounded queue and never does I/O or emits events itself (it may be called from
//! inside a `tracing` layer callback, where emitting would re-enter the subscriber). The
//! worker drains the queue, does the I/O, and emits every event, including the drop reports
//! for records the handle had to refuse.
//!
//! Flushes travel through the queue as markers, so "every record accepted before the flush"
//! is exactly "everything before the marker". Shutdown is a separate signal with a
//! deadline that the worker observes even in the middle of a retry.
//!
//! This module knows nothing of files or Loki.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify};

use crate::events::{self, SinkId};
use crate::{Error, ErrorKind, Result};

/// What a sink does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse the new record and report it dropped (`queue_full`). The default.
    #[default]
    DropNewest,
    /// Make room by dropping the oldest queued records, reported as `buffer_full_oldest`.
    DropOldest,
    /// Make the caller wait for room. `try_write` (and so the application layer, which must
    /// never block) still drops the newest record instead of waiting.
    Wait,
}

/// A snapshot of a sink's counters.
///
/// `accepted` counts every record handed to the sink while it was open; each of them ends
/// up in `delivered` or `dropped`, so at any quiescent point (after `flush()` or shutdown)
/// `accepted == delivered + dropped`. A closed sink accepts nothing: writing to it returns
/// an error of kind [`Closed`](crate::ErrorKind::Closed) and leaves the counters (final
/// since `sink_closed`) unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SinkStats {
    /// Records handed to the sink.
    pub accepted: u64,
    /// Records delivered (written to the OS, or pushed with a 2xx).
    pub delivered: u64,
    /// Records reported dropped, for any reason.
    pub dropped: u64,
}

impl SinkStats {
    /// Records accepted but not yet delivered or dropped (queued or in flight).
    pub fn pending(&self) -> u64 {
        self.accepted.saturating_sub(self.delivered + self.dropped)
    }
}

/// What a shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The sink's final counters.
    pub stats: SinkStats,
    /// Records the shutdown could not deliver before its deadline (reported dropped with
    /// reason `shutdown`).
    pub undelivered: u64,
    /// False when the worker had not finished by the deadline (for example stuck in a
    /// system call); `stats` is then a snapshot, not final.
    pub completed: bool,
}

/// An item in the queue.
pub(crate) enum Item<T> {
    Record(T, usize),
    Flush(FlushAck),
}

/// A flush marker: the worker completes it once everything queued before it is done.
pub(crate) struct FlushAck {
    started: Instant,
    tx: oneshot::Sender<()>,
}

struct State<T> {
    items: VecDeque<Item<T>>,
    records: usize,
    bytes: usize,
    closed: bool,
    shutdown: Option<Instant>,
    exited: bool,
}

pub(crate) struct Shared<T> {
    id: SinkId,
    state: Mutex<State<T>>,
    max_records: usize,
    max_bytes: usize,
    policy: OverflowPolicy,
    wake_worker: Notify,
    shutdown_notify: Notify,
    space: Condvar,
    space_async: Notify,
    exited_cv: Condvar,
    exited_async: Notify,
    accepted: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    // Refusals counted by producers, reported by the worker (producers never emit events).
    unreported_full: AtomicU64,
    unreported_oldest: AtomicU64,
}

/// Queue limits and policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueConfig {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) policy: OverflowPolicy,
}

/// Creates a queue; the worker side is handed to the sink's worker loop.
pub(crate) fn queue<T: Send + 'static>(
    id: SinkId,
    config: QueueConfig,
) -> (Producer<T>, Consumer<T>) {
    let shared = Arc::new(Shared {
        id,
        state: Mutex::new(State {
            items: VecDeque::new(),
            records: 0,
            bytes: 0,
            closed: false,
            shutdown: None,
            exited: false,
        }),
        max_records: config.max_records.max(1),
        max_bytes: config.max_bytes.max(1),
        policy: config.policy,
        wake_worker: Notify::new(),
        shutdown_notify: Notify::new(),
        space: Condvar::new(),
        space_async: Notify::new(),
        exited_cv: Condvar::new(),
        exited_async: Notify::new(),
        accepted: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        unreported_full: AtomicU64::new(0),
        unreported_oldest: AtomicU64::new(0),
    });
    (
        Producer {
            shared: shared.clone(),
            close_on_drop: Arc::new(CloseOnDrop(shared.clone())),
        },
        Consumer { shared },
    )
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> SinkStats {
        // Read `delivered` and `dropped` before `accepted`, so a concurrent write can only
        // make `pending` look larger, never negative.
        let delivered = self.delivered.load(Ordering::Acquire);
        let dropped = self.dropped.load(Ordering::Acquire);
        SinkStats {
            accepted: self.accepted.load(Ordering::Acquire),
            delivered,
            dropped,
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake_worker.notify_one();
        self.space.notify_all();
        self.space_async.notify_waiters();
    }
}

/// Closes the queue when the last user-facing handle is dropped, so the worker drains and
/// exits. Dropping never blocks.
struct CloseOnDrop<T>(Arc<Shared<T>>);

impl<T> Drop for CloseOnDrop<T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The handle side of a queue. Cloning shares the queue; when every clone is gone the
/// worker drains what is queued and exits.
pub(crate) struct Producer<T> {
    shared: Arc<Shared<T>>,
    close_on_drop: Arc<CloseOnDrop<T>>,
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            shared: self.shared.clone(),
            close_on_drop: self.close_on_drop.clone(),
        }
    }
}

enum Push<T> {
    Done,
    Full(T),
}

impl<T: Send + 'static> Producer<T> {
    pub(crate) fn id(&self) -> &SinkId {
        &self.shared.id
    }

    pub(crate) fn stats(&self) -> SinkStats {
        self.shared.stats()
    }

    /// Queues a record without ever waiting. With the `Wait` policy a full queue drops the
    /// new record, as `DropNewest` does.
    pub(crate) fn try_push(&self, item: T, size: usize) -> Result<()> {
        self.shared.accepted.fetch_add(1, Ordering::AcqRel);
        let mut state = self.shared.lock();
        match self.push_locked(&mut state, item, size) {
            Ok(Push::Done) => Ok(()),
            Ok(Push::Full(_)) => {
                drop(state);
                self.refuse(&self.shared.unreported_full);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Queues a record, waiting for room under the `Wait` policy (blocking this thread).
    pub(crate) fn push_blocking(&self, item: T, size: usize) -> Result<()> {
        if self.shared.policy != OverflowPolicy::Wait {
            return self.try_push(item, size);
        }
        self.shared.accepted.fetch_add(1, Ordering::AcqRel);
        let mut state = self.shared.lock();
        let mut item = item;
        loop {
            match self.push_locked(&mut state, item, size)? {
                Push::Done => return Ok(()),
                Push::Full(back) => {
                    item = back;
                    state = self
                        .shared
                        .space
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Queues a record, waiting asynchronously for room under the `Wait` policy.
    pub(crate) async fn push_async(&self, item: T, size: usize) -> Result<()> {
        if self.shared.policy != OverflowPolicy::Wait {
            return self.try_push(item, size);
        }
        self.shared.accepted.fetch_add(1, Ordering::AcqRel);
        // Dropped while waiting for room, the record was never queued: take it back out of
        // `accepted`, or `accepted == delivered + dropped` would never hold again.
        let mut uncount = Uncount(Some(&self.shared.accepted));
        let mut item = item;
        loop {
            let notified = self.shared.space_async.notified();
            tokio::pin!(notified);
            // Register before checking, so a wake between the check and the await is not lost.
            notified.as_mut().enable();
            {
                let mut state = self.shared.lock();
                let pushed = self.push_locked(&mut state, item, size);
                if !matches!(pushed, Ok(Push::Full(_))) {
                    // Queued, or refused and counted dropped: accounted for either way.
                    uncount.0 = None;
                }
                match pushed? {
                    Push::Done => return Ok(()),
                    Push::Full(back) => item = back,
                }
            }
            notified.await;
        }
    }

    fn push_locked(&self, state: &mut State<T>, item: T, size: usize) -> Result<Push<T>> {
        if state.closed {
            // A closed sink accepts nothing: its final totals (`sink_closed`) stay final,
            // and the caller learns of the refusal from the error.
            self.shared.accepted.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorKind::Closed,
                format!("sink {} is closed", self.shared.id),
            ));
        }
        let fits = |s: &State<T>| {
            s.records < self.shared.max_records
                && (s.records == 0 || s.bytes + size <= self.shared.max_bytes)
        };
        if !fits(state) {
            if self.shared.policy != OverflowPolicy::DropOldest {
                return Ok(Push::Full(item));
            }
            let mut evicted = 0;
            while !fits(state) {
                let Some(pos) = state
                    .items
                    .iter()
                    .position(|i| matches!(i, Item::Record(..)))
                else {
                    break;
                };
                if let Some(Item::Record(_, old)) = state.items.remove(pos) {
                    state.records -= 1;
                    state.bytes -= old;
                    evicted += 1;
                }
            }
            if evicted > 0 {
                self.shared.dropped.fetch_add(evicted, Ordering::AcqRel);
                self.shared
                    .unreported_oldest
                    .fetch_add(evicted, Ordering::AcqRel);
            }
        }
        let was_empty = state.items.is_empty();
        state.items.push_back(Item::Record(item, size));
        state.records += 1;
        state.bytes += size;
        if was_empty {
            self.shared.wake_worker.notify_one();
        }
        Ok(Push::Done)
    }

    fn refuse(&self, counter: &AtomicU64) {
        self.shared.dropped.fetch_add(1, Ordering::AcqRel);
        counter.fetch_add(1, Ordering::AcqRel);
        self.shared.wake_worker.notify_one();
    }

    /// Resolves once every record queued before the call is delivered or reported dropped,
    /// and the drop reports are emitted.
    pub(crate) fn flush(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let queued = {
            let mut state = self.shared.lock();
            if state.exited {
                false
            } else {
                state.items.push_back(Item::Flush(FlushAck {
                    started: Instant::now(),
                    tx,
                }));
                true
            }
        };
        self.shared.wake_worker.notify_one();
        let id = self.shared.id.clone();
        async move {
            if queued && rx.await.is_ok() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Closed,
                    format!("sink {id} has stopped; nothing to flush"),
                ))
            }
        }
    }

    /// Asks the worker to finish by `deadline` and waits (in real time) until it has.
    pub(crate) async fn shutdown(&self, deadline: Instant) -> ShutdownReport {
        let grace = deadline + Duration::from_millis(250);
        self.request_shutdown(deadline);
        let timer = crate::deadline::until(grace);
        tokio::pin!(timer);
        loop {
            let notified = self.shared.exited_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.lock().exited {
                return self.report(true);
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut timer => return self.report(self.shared.lock().exited),
            }
        }
    }

    /// [`shutdown`](Self::shutdown) for synchronous code: blocks the calling thread.
    pub(crate) fn shutdown_blocking(&self, deadline: Instant) -> ShutdownReport {
        let grace = deadline + Duration::from_millis(250);
        self.request_shutdown(deadline);
        let mut state = self.shared.lock();
        while !state.exited {
            let now = Instant::now();
            if now >= grace {
                break;
            }
            state = self
                .shared
                .exited_cv
                .wait_timeout(state, grace - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let completed = state.exited;
        drop(state);
        self.report(completed)
    }

    fn request_shutdown(&self, deadline: Instant) {
        {
            let mut state = self.shared.lock();
            state.closed = true;
            state.shutdown = Some(state.shutdown.map_or(deadline, |d| d.min(deadline)));
        }
        self.shared.wake_worker.notify_one();
        self.shared.shutdown_notify.notify_waiters();
        self.shared.space.notify_all();
        self.shared.space_async.notify_waiters();
    }

    fn report(&self, completed: bool) -> ShutdownReport {
        let stats = self.stats();
        ShutdownReport {
            stats,
            undelivered: stats.pending(),
            completed,
        }
    }
}

/// Takes a record back out of `accepted` if a waiting `push_async` is cancelled.
struct Uncount<'a>(Option<&'a AtomicU64>);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        if let Some(accepted) = self.0 {
            accepted.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The worker side of a queue.
pub(crate) struct Consumer<T> {
    shared: Arc<Shared<T>>,
}

/// What [`Consumer::recv`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recv {
    /// Items were moved into the buffer.
    Items,
    /// The queue is closed and empty: the worker should finish.
    Closed,
}

impl<T: Send + 'static> Consumer<T> {
    pub(crate) fn id(&self) -> &SinkId {
        &self.shared.id
    }

    /// Waits until there is something to do, then moves up to `max` items into `out`.
    /// Also emits any pending drop reports.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: items are only moved once the future resolves.
    pub(crate) async fn recv(&self, out: &mut Vec<Item<T>>, max: usize) -> Recv {
        loop {
            let notified = self.shared.wake_worker.notified();
            self.report_refusals();
            if self.try_recv(out, max) {
                return Recv::Items;
            }
            if self.shared.lock().closed {
                return Recv::Closed;
            }
            notified.await;
        }
    }

    /// Moves up to `max` items into `out` without waiting; true if any were moved.
    pub(crate) fn try_recv(&self, out: &mut Vec<Item<T>>, max: usize) -> bool {
        let mut state = self.shared.lock();
        let n = state.items.len().min(max);
        if n == 0 {
            return false;
        }
        let st = &mut *state;
        for item in st.items.drain(..n) {
            if let Item::Record(_, size) = &item {
                st.records -= 1;
                st.bytes -= size;
            }
            out.push(item);
        }
        drop(state);
        self.shared.space.notify_all();
        self.shared.space_async.notify_waiters();
        true
    }

    /// Emits `records_dropped` for refusals the producers counted since the last call.
    pub(crate) fn report_refusals(&self) {
        let reasons = [
            (&self.shared.unreported_full, events::reason::QUEUE_FULL),
            (
                &self.shared.unreported_oldest,
                events::reason::BUFFER_FULL_OLDEST,
            ),
        ];
        for (counter, reason) in reasons {
            let n = counter.swap(0, Ordering::AcqRel);
            if n > 0 {
                events::records_dropped(&self.shared.id, n, reason);
            }
        }
    }

    /// Records that `n` records were delivered.
    pub(crate) fn delivered(&self, n: u64) {
        self.shared.delivered.fetch_add(n, Ordering::AcqRel);
    }

    /// Records that `n` records were dropped and emits `records_dropped`.
    pub(crate) fn dropped(&self, n: u64, reason: &str) {
        if n > 0 {
            self.shared.dropped.fetch_add(n, Ordering::AcqRel);
            events::records_dropped(&self.shared.id, n, reason);
        }
    }

    /// Completes a flush marker: emits pending drop reports, then `flush_complete`.
    pub(crate) fn complete_flush(&self, ack: FlushAck) {
        self.report_refusals();
        events::flush_complete(
            &self.shared.id,
            self.shared.accepted.load(Ordering::Acquire),
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

    /// Drops everything still queued (reason `shutdown`), completing any flush markers.
    pub(crate) fn abandon_queue(&self) -> u64 {
        let items: Vec<Item<T>> = {
            let mut state = self.shared.lock();
            state.records = 0;
            state.bytes = 0;
            state.items.drain(..).collect()
        };
        let mut n = 0;
        for item in items {
            match item {
                Item::Record(..) => n += 1,
                Item::Flush(ack) => drop(ack),
            }
        }
        self.dropped(n, events::reason::SHUTDOWN);
        n
    }

    /// Finishes the worker: reports refusals, emits `sink_closed`, and wakes shutdown waiters.
    pub(crate) fn finish(&self) {
        self.report_refusals();
        let stats = self.shared.stats();
        events::sink_closed(
            &self.shared.id,
            stats.accepted,
            stats.delivered,
            stats.dropped,
        );
        self.shared.lock().exited = true;
        self.shared.exited_cv.notify_all();
        self.shared.exited_async.notify_waiters();
    }
}

std::thread_local! {
    static CURRENT_SINK: std::cell::RefCell<Option<SinkId>> = const { std::cell::RefCell::new(None) };
}

/// True when the current thread belongs to the worker of sink `id`.
///
/// Every thread a sink's worker runs on (its own thread and its runtime's blocking pool,
/// where DNS lookups and compression run) is marked, so the application layer can refuse
/// to feed a sink the events that sink's own work produced: its schema events and those of
/// its I/O stack (hyper, reqwest, rustls).
pub(crate) fn on_worker_of(id: &SinkId) -> bool {
    CURRENT_SINK.with(|c| c.borrow().as_ref() == Some(id))
}

/// Runs a sink's worker future on a dedicated thread with its own current-thread runtime,
/// so the sink works whatever runtime (or none) the application uses, and its I/O never
/// competes with the application's tasks.
pub(crate) fn spawn_worker<F>(id: &SinkId, worker: F) -> Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let mark = id.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("sinkwatch-{id}-blocking"))
        .on_thread_start(move || CURRENT_SINK.with(|c| *c.borrow_mut() = Some(mark.clone())))
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime of sink {id}"), e))?;
    let mark = id.clone();
    std::thread::Builder::new()
        .name(format!("sinkwatch-{id}"))
        .spawn(move || {
            CURRENT_SINK.with(|c| *c.borrow_mut() = Some(mark));
            runtime.block_on(worker);
        })
        .map_err(|e| Error::io(format!("cannot spawn the worker thread of sink {id}"), e))?;
    Ok(())
}
