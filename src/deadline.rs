//! Real-time deadlines that tokio's paused clock cannot fire early.
//!
//! Tests often run on a runtime with a paused clock, which auto-advances whenever the runtime
//! is idle: a `tokio::time::timeout` there can expire at once while real I/O (a socket, the
//! file system, a sink's worker thread) is still in progress. Waits on work done outside the
//! runtime therefore use this timer, which runs on one shared thread and measures real time.

use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

struct Slot {
    fired: bool,
    waker: Option<Waker>,
}

type SlotRef = Arc<Mutex<Slot>>;

struct Entry {
    at: Instant,
    slot: std::sync::Weak<Mutex<Slot>>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // A min-heap on the deadline.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

struct Timer {
    heap: Mutex<BinaryHeap<Entry>>,
    cv: Condvar,
}

fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            heap: Mutex::new(BinaryHeap::new()),
            cv: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("sinkwatch-deadline".into())
            .spawn(move || run(timer))
            .expect("cannot spawn the sinkwatch deadline thread");
        timer
    })
}

fn run(timer: &'static Timer) {
    let mut heap = timer
        .heap
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|e| e.at <= now) {
            let entry = heap.pop().expect("peeked");
            if let Some(slot) = entry.slot.upgrade() {
                let mut slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                slot.fired = true;
                if let Some(w) = slot.waker.take() {
                    w.wake();
                }
            }
        }
        heap = match heap.peek().map(|e| e.at) {
            // Condvar waits measure real time; a paused tokio clock has no say here.
            Some(at) => {
                timer
                    .cv
                    .wait_timeout(heap, at.saturating_duration_since(now))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            }
            None => timer
                .cv
                .wait(heap)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        };
    }
}

/// "Forever" for a user's duration: far enough, and never overflowing an `Instant`.
const CENTURY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Now plus `d`, saturating: `Instant::now() + Duration::MAX` panics, so every public
/// `Duration` (a shutdown timeout, a backoff, a `Retry-After`, a backpressure bound) turns
/// into an instant here and nowhere else. Durations over a century count as a century.
pub(crate) fn later(d: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(CENTURY))
        .or_else(|| now.checked_add(std::time::Duration::from_secs(86_400)))
        .unwrap_or(now)
}

/// A future that resolves when real time reaches `at`.
///
/// # Cancel safety
///
/// Dropping it cancels the wait; nothing else is affected.
pub(crate) struct Deadline {
    at: Instant,
    slot: Option<SlotRef>,
}

/// Resolves at the real-time instant `at`.
pub(crate) fn until(at: Instant) -> Deadline {
    Deadline { at, slot: None }
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        if let Some(slot) = &self.slot {
            let mut s = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.fired {
                return Poll::Ready(());
            }
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let slot = Arc::new(Mutex::new(Slot {
            fired: false,
            waker: Some(cx.waker().clone()),
        }));
        let timer = timer();
        {
            let mut heap = timer
                .heap
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let earliest = heap.peek().is_none_or(|e| self.at < e.at);
            heap.push(Entry {
                at: self.at,
                slot: Arc::downgrade(&slot),
            });
            if earliest {
                timer.cv.notify_one();
            }
        }
        self.slot = Some(slot);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn later_saturates_instead_of_panicking() {
        let far = later(Duration::MAX);
        assert!(far > Instant::now() + Duration::from_secs(3600));
        assert!(later(Duration::ZERO) <= Instant::now());
    }

    #[tokio::test(start_paused = true)]
    async fn paused_clock_cannot_fire_a_real_deadline_early() {
        let start = Instant::now();
        until(start + Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn deadlines_fire_in_order_of_time_not_of_creation() {
        let now = Instant::now();
        let late = until(now + Duration::from_millis(200));
        let early = until(now + Duration::from_millis(10));
        tokio::select! {
            () = late => panic!("the later deadline fired first"),
            () = early => {}
        }
    }
}
