//! Real-time deadlines that tokio's paused clock cannot fire early, and the one way the
//! crate waits for a condition: [`wait_on`] (async, on a `Notify`) or [`wait_on_blocking`]
//! (on a `Condvar`), until the condition holds or a deadline passes.
//!
//! Tests often run on a runtime with a paused clock, which auto-advances whenever the runtime
//! is idle: a `tokio::time::timeout` there can expire at once while real I/O (a socket, the
//! file system, a sink's worker thread) is still in progress. Waits on work done outside the
//! runtime therefore use this timer, which runs on one shared thread and measures real time.

use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tokio::sync::Notify;

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
/// into an instant here (or in [`after`]) and nowhere else. Durations over a century count
/// as a century.
pub(crate) fn later(d: std::time::Duration) -> Instant {
    after(Instant::now(), d)
}

/// `from` plus `d`, saturating as [`later`] does.
pub(crate) fn after(from: Instant, d: std::time::Duration) -> Instant {
    from.checked_add(d.min(CENTURY))
        .or_else(|| from.checked_add(std::time::Duration::from_secs(86_400)))
        .unwrap_or(from)
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

/// What a waiter's check found.
pub(crate) enum Check<T> {
    /// The wait is over, with this result.
    Ready(T),
    /// Not yet: sleep until woken, or until this instant passes (`None`: no deadline), and
    /// check again.
    Until(Option<Instant>),
}

/// Waits on `notify` until `check` is [`Ready`](Check::Ready).
///
/// Registers for a wake-up *before* each check, so a notification that comes between the
/// check and the sleep is never lost, then sleeps until `notify` is notified or the
/// check's instant passes (real time: tokio's paused clock cannot fire it early), and
/// checks again. A deadline is the check's to enforce: past it, it answers `Ready`.
///
/// # Cancel safety
///
/// Cancel-safe: dropping the future only stops the wait.
pub(crate) async fn wait_on<T>(notify: &Notify, mut check: impl FnMut() -> Check<T>) -> T {
    let mut timer: Option<Deadline> = None;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let at = match check() {
            Check::Ready(value) => return value,
            Check::Until(at) => at,
        };
        let Some(at) = at else {
            notified.await;
            continue;
        };
        // One timer for as long as the deadline holds: a waiter woken often must not leave
        // a timer behind at each wake.
        let timer = match &mut timer {
            Some(t) if t.at == at => t,
            slot => slot.insert(until(at)),
        };
        tokio::select! {
            () = notified => {}
            () = timer => {}
        }
    }
}

/// [`wait_on`] for "`ready` holds, or `deadline` passes": true if `ready` held.
pub(crate) async fn wait_until(
    notify: &Notify,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> bool {
    wait_on(notify, || {
        if ready() {
            Check::Ready(true)
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Check::Ready(false)
        } else {
            Check::Until(deadline)
        }
    })
    .await
}

/// [`wait_on`] for synchronous code: waits on `cv`, whose mutex `guard` holds, until `check`
/// (run with the lock held) is [`Ready`](Check::Ready); returns the guard and the result.
#[inline]
pub(crate) fn wait_on_blocking<'a, S, T>(
    cv: &Condvar,
    mut guard: MutexGuard<'a, S>,
    mut check: impl FnMut(&mut S) -> Check<T>,
) -> (MutexGuard<'a, S>, T) {
    loop {
        guard = match check(&mut guard) {
            Check::Ready(value) => return (guard, value),
            Check::Until(None) => cv.wait(guard).unwrap_or_else(PoisonError::into_inner),
            Check::Until(Some(at)) => {
                let left = at.saturating_duration_since(Instant::now());
                cv.wait_timeout(guard, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
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

    #[tokio::test]
    async fn wait_on_sees_a_notification_sent_before_it_sleeps() {
        let notify = Notify::new();
        let mut checks = 0;
        let got = wait_on(&notify, || {
            checks += 1;
            if checks == 1 {
                // Between the check and the sleep: a waiter that registered late would
                // miss this and sleep forever.
                notify.notify_waiters();
                Check::Until(None)
            } else {
                Check::Ready(checks)
            }
        })
        .await;
        assert_eq!(got, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_until_gives_up_at_a_real_deadline() {
        let notify = Notify::new();
        let start = Instant::now();
        let ready = wait_until(&notify, Some(start + Duration::from_millis(30)), || false).await;
        assert!(!ready);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert!(
            wait_until(&notify, Some(start), || true).await,
            "ready beats a passed deadline"
        );
    }

    #[test]
    fn wait_on_blocking_returns_when_the_check_is_ready_or_its_deadline_passes() {
        let lock = Mutex::new(0_u32);
        let cv = Condvar::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                *lock.lock().unwrap() = 1;
                cv.notify_all();
            });
            let (_guard, seen) = wait_on_blocking(&cv, lock.lock().unwrap(), |n| {
                if *n == 1 {
                    Check::Ready(*n)
                } else {
                    Check::Until(None)
                }
            });
            assert_eq!(seen, 1);
        });
        let start = Instant::now();
        let at = start + Duration::from_millis(20);
        let (_guard, passed) = wait_on_blocking(&cv, lock.lock().unwrap(), |_| {
            if Instant::now() >= at {
                Check::Ready(true)
            } else {
                Check::Until(Some(at))
            }
        });
        assert!(passed && start.elapsed() >= Duration::from_millis(20));
    }
}
