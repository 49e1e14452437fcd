//! The clock the file sink reads time from, injectable so tests drive time rotation and
//! retention by age without waiting for the wall clock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use crate::sink::BoxFuture;

/// A source of wall-clock time, and a way to wait for a time to come.
///
/// The file sink's worker reads [`now`](Clock::now) to name rotated files and to age them,
/// and waits on [`sleep_until`](Clock::sleep_until) for the next time boundary: it never
/// polls. [`SystemClock`] is the real one; [`ManualClock`] is for tests.
///
/// # Examples
///
/// ```
/// use sinkwatch::{Clock, SystemClock};
///
/// let clock = SystemClock;
/// assert!(clock.now() > std::time::SystemTime::UNIX_EPOCH);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// A future that resolves once [`now`](Clock::now) has reached `at`, or earlier: the
    /// worker checks the time again when it wakes, so an early wake is harmless.
    ///
    /// The future runs on the sink's own runtime, which has tokio's time driver enabled.
    fn sleep_until(&self, at: SystemTime) -> BoxFuture<()>;
}

/// The system's wall clock.
///
/// # Examples
///
/// ```
/// use sinkwatch::{FileSink, SystemClock};
///
/// let dir = tempfile::tempdir()?;
/// let sink = FileSink::builder(dir.path()).clock(SystemClock).build()?;
/// # drop(sink);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The longest single wait: the wall clock can be stepped (NTP, an operator) while the
/// worker waits on the monotonic clock, so a long wait is cut into pieces that re-read it.
const MAX_WAIT: Duration = Duration::from_secs(60);

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, at: SystemTime) -> BoxFuture<()> {
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT);
        // A real-time deadline: it fires on time whatever runtime or paused clock is around.
        Box::pin(crate::deadline::until(Instant::now() + wait))
    }
}

/// A clock that only moves when told to, for tests.
///
/// Clones share the same time. [`advance`](ManualClock::advance) and
/// [`set`](ManualClock::set) wake every sink waiting on a boundary, so a test moves time past
/// a rotation boundary and then awaits the sink's `rotation_complete` event.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sinkwatch::{Clock, ManualClock};
///
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let clock = ManualClock::new(start);
/// clock.advance(Duration::from_secs(90));
/// assert_eq!(clock.now(), start + Duration::from_secs(90));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    now: Mutex<SystemTime>,
    changed: Notify,
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            inner: Arc::new(ManualInner {
                now: Mutex::new(start),
                changed: Notify::new(),
            }),
        }
    }

    /// Moves the clock forward by `by` and wakes every waiter.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now += by;
        drop(now);
        self.inner.changed.notify_waiters();
    }

    /// Sets the clock to `to` (backwards too) and wakes every waiter.
    pub fn set(&self, to: SystemTime) {
        *self.lock() = to;
        self.inner.changed.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        self.inner
            .now
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }

    fn sleep_until(&self, at: SystemTime) -> BoxFuture<()> {
        let clock = self.clone();
        let started = clock.now();
        Box::pin(async move {
            // A step back wakes the waiter early (as the system clock's wait does within a
            // minute), so it can aim for a boundary of the new time.
            crate::deadline::wait_on(&clock.inner.changed, || {
                let now = clock.now();
                if now >= at || now < started {
                    crate::deadline::Check::Ready(())
                } else {
                    crate::deadline::Check::Until(None)
                }
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[tokio::test]
    async fn manual_sleep_resolves_once_advanced_past_the_target() {
        let clock = ManualClock::new(epoch(100));
        let wait = clock.sleep_until(epoch(160));
        let task = tokio::spawn(wait);
        clock.advance(Duration::from_secs(30));
        assert!(!task.is_finished());
        clock.advance(Duration::from_secs(30));
        task.await.unwrap();
    }

    #[tokio::test]
    async fn manual_sleep_for_a_past_time_resolves_at_once() {
        let clock = ManualClock::new(epoch(100));
        clock.sleep_until(epoch(50)).await;
    }

    #[tokio::test]
    async fn manual_sleep_resolves_early_when_the_clock_steps_back() {
        let clock = ManualClock::new(epoch(100));
        let task = tokio::spawn(clock.sleep_until(epoch(160)));
        clock.set(epoch(40));
        task.await.unwrap();
    }

    #[test]
    fn clones_share_the_time() {
        let a = ManualClock::new(epoch(0));
        let b = a.clone();
        a.set(epoch(42));
        assert_eq!(b.now(), epoch(42));
    }
}
