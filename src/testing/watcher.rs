//! Watchers: awaiting captured events, with timeouts that explain themselves.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::capture::{hub, CapturedEvent};
use super::matcher::Matcher;
use super::seen::Seen;
use super::wait::{overflow, Wait};
use crate::deadline::{self, Check};

/// The default timeout of a positive wait, before scaling.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable that scales every wait's timeout on slow machines.
pub const TIMEOUT_MULTIPLIER_VAR: &str = "CI_TIMEOUT_MULTIPLIER";

/// How many of the latest log lines a failed log assertion quotes.
const RECENT_SHOWN: usize = 40;

/// Why a wait failed. Its `Display` (and `Debug`, so `unwrap()` prints it well) is the full
/// explanation: what was awaited, the timeout and its scale, what was seen instead.
pub struct WaitError {
    kind: WaitErrorKind,
    message: String,
}

/// What kind of failure a [`WaitError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitErrorKind {
    /// The awaited events did not all arrive in time.
    Timeout,
    /// A failure event given to `fail_on` arrived first.
    FailEvent,
    /// An event a negative assertion forbids arrived.
    Forbidden,
    /// `CI_TIMEOUT_MULTIPLIER` is set to something that is not a positive number.
    InvalidMultiplier,
    /// Events this watcher still needed were evicted from the capture buffer.
    Overflow,
}

impl WaitError {
    /// The kind of failure.
    pub fn kind(&self) -> WaitErrorKind {
        self.kind
    }

    /// The explanation.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(kind: WaitErrorKind, message: String) -> Self {
        WaitError { kind, message }
    }
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:\n{}", self.kind, self.message)
    }
}

impl std::error::Error for WaitError {}

/// A scaled timeout and how it was scaled, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scaled {
    pub(crate) base: Duration,
    pub(crate) factor: f64,
    pub(crate) total: Duration,
}

impl fmt::Display for Scaled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[allow(clippy::float_cmp)] // exactly 1.0 when unset
        if self.factor == 1.0 {
            write!(f, "{:?} ({TIMEOUT_MULTIPLIER_VAR} unset or 1)", self.total)
        } else {
            write!(
                f,
                "{:?} ({:?} x {TIMEOUT_MULTIPLIER_VAR}={})",
                self.total, self.base, self.factor
            )
        }
    }
}

/// Parses a `CI_TIMEOUT_MULTIPLIER` value: `None` (unset), empty or only whitespace is 1
/// (CI templating often sets the variable to an empty string), otherwise a finite number
/// greater than zero.
///
/// # Errors
///
/// A message naming the variable when a non-empty value is not a positive finite number.
///
/// # Examples
///
/// ```
/// use sinkwatch::testing::parse_timeout_multiplier;
///
/// assert_eq!(parse_timeout_multiplier(None), Ok(1.0));
/// assert_eq!(parse_timeout_multiplier(Some("")), Ok(1.0));
/// assert_eq!(parse_timeout_multiplier(Some(" 2.5 ")), Ok(2.5));
/// assert!(parse_timeout_multiplier(Some("fast")).is_err());
/// ```
pub fn parse_timeout_multiplier(value: Option<&str>) -> Result<f64, String> {
    let raw = value.unwrap_or("");
    if raw.trim().is_empty() {
        return Ok(1.0);
    }
    match raw.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "{TIMEOUT_MULTIPLIER_VAR}={raw:?} is not a positive number; set it to a factor \
             such as 2 or 0.5, or leave it empty or unset (a factor of 1)"
        )),
    }
}

/// Scales `base` by `CI_TIMEOUT_MULTIPLIER` (read at every call).
pub(crate) fn scale(base: Duration) -> Result<Scaled, WaitError> {
    let raw = std::env::var(TIMEOUT_MULTIPLIER_VAR).ok();
    let factor = parse_timeout_multiplier(raw.as_deref())
        .map_err(|m| WaitError::new(WaitErrorKind::InvalidMultiplier, m))?;
    let total = Duration::try_from_secs_f64(base.as_secs_f64() * factor)
        .unwrap_or(Duration::from_secs(86_400));
    Ok(Scaled {
        base,
        factor,
        total,
    })
}

/// Awaits captured events. Create one with [`watch`](super::watch) *before* the action
/// whose events you want: it sees every event captured from its creation on, from any
/// thread, whether or not a wait is in progress when the event arrives.
///
/// A successful wait *consumes* the events it matched: the next wait with the same matcher
/// gets the next occurrence. Every wait has a timeout (by default [`DEFAULT_TIMEOUT`],
/// scaled by `CI_TIMEOUT_MULTIPLIER`), measured in real time, so a paused tokio clock cannot
/// fire it early.
///
/// Every method takes `&self`: a watcher can be shared by several waits at once, and a wait
/// can be configured with the watcher's own [`checkpoint`](Self::checkpoint)
/// (`seen.wait(m).after(seen.checkpoint())`). Each event is consumed by one wait only.
///
/// A watcher keeps its own copy of the events it has fetched (shared `Arc`s) and a cursor
/// into the capture order: a wait copies only the events captured since the last fetch out
/// of the process-wide buffer, and matches outside its lock, so emitting never waits on a
/// wait. Earlier unconsumed events stay eligible, and are re-checked only when they could
/// match: they have the name, target or a field the matcher requires (see `docs/testing.md`,
/// "Cost and limits").
///
/// # Examples
///
/// ```
/// use sinkwatch::testing::{self, Matcher};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// testing::init();
/// let seen = testing::watch();
/// std::thread::spawn(|| tracing::info!(order_id = 42, "order placed"));
/// let event = seen
///     .wait(Matcher::any().field("order_id", 42))
///     .await
///     .unwrap();
/// assert_eq!(event.str("message"), Some("order placed"));
/// # }
/// ```
pub struct Watcher {
    pub(crate) id: u64,
    pub(crate) start: u64,
    created: Instant,
    /// Held only while fetching and matching, never across an `.await`.
    seen: Mutex<Seen>,
}

/// A point in the capture order; waits can be limited to events after it with
/// [`Wait::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint(pub(crate) u64);

impl Watcher {
    pub(crate) fn new() -> Self {
        let (id, start) = hub().register_now();
        Watcher {
            id,
            start,
            created: Instant::now(),
            seen: Mutex::new(Seen::new(start)),
        }
    }

    /// The events this watcher holds. A poisoned lock only means a panic in another wait
    /// (an assertion in a test): what is held is still consistent.
    pub(crate) fn held(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current point in the capture order: events captured from now on are after it.
    ///
    /// # Examples
    ///
    /// Only what is logged from now on counts, not an earlier event that would match:
    ///
    /// ```
    /// use sinkwatch::testing::{self, Matcher};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// testing::init();
    /// let seen = testing::watch();
    /// tracing::info!(step = "cp-demo", round = 1_u64);
    /// let wait = seen
    ///     .wait(Matcher::any().field("step", "cp-demo"))
    ///     .after(seen.checkpoint());
    /// std::thread::spawn(|| tracing::info!(step = "cp-demo", round = 2_u64));
    /// assert_eq!(wait.await.unwrap().u64("round"), Some(2));
    /// # }
    /// ```
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(hub().next_seq())
    }

    /// Waits for the first not yet consumed event that matches.
    pub fn wait(&self, matcher: Matcher) -> Wait<'_, CapturedEvent> {
        let what = format!("{matcher}");
        Wait::new(self, vec![matcher], what, |mut v| v.remove(0))
    }

    /// Waits for `n` not yet consumed events that match.
    pub fn wait_n(&self, matcher: Matcher, n: usize) -> Wait<'_, Vec<CapturedEvent>> {
        let what = format!("{n} x ({matcher})");
        Wait::new(self, vec![matcher; n], what, |v| v)
    }

    /// Waits for events matching each matcher in turn, each after the previous one.
    pub fn wait_sequence(
        &self,
        matchers: impl IntoIterator<Item = Matcher>,
    ) -> Wait<'_, Vec<CapturedEvent>> {
        let matchers: Vec<Matcher> = matchers.into_iter().collect();
        let what = matchers
            .iter()
            .map(|m| format!("({m})"))
            .collect::<Vec<_>>()
            .join(" then ");
        Wait::new(self, matchers, format!("the sequence {what}"), |v| v)
    }

    /// Waits for an event whose [log line](CapturedEvent::log_line) contains `text`: the
    /// awaiting form of [`logs_contain`](Self::logs_contain), for logs emitted by other
    /// threads or tasks. Like every wait, it consumes what it matched and has a timeout.
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::testing;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// testing::init();
    /// let seen = testing::watch();
    /// std::thread::spawn(|| tracing::info!(job = "nightly-7", "job finished"));
    /// let ev = seen.wait_logs_contain("job finished job=\"nightly-7\"").await.unwrap();
    /// assert_eq!(ev.str("job"), Some("nightly-7"));
    /// # }
    /// ```
    pub fn wait_logs_contain(&self, text: impl Into<String>) -> Wait<'_, CapturedEvent> {
        self.wait(Matcher::any().line_contains(text))
    }

    /// Waits for `until` and fails if an event matching `forbidden` arrives before it:
    /// the deterministic way to say "no X before Y has happened".
    pub async fn assert_none_before(
        &self,
        forbidden: Matcher,
        until: Matcher,
    ) -> Result<CapturedEvent, WaitError> {
        let what = format!("{until}");
        let mut wait = Wait::new(self, vec![until], what, |mut v| v.remove(0));
        wait.forbid = vec![forbidden];
        wait.await
    }

    /// Fails if an event matching `forbidden` arrives within `window` (real time, not
    /// scaled). Prefer [`assert_none_before`](Self::assert_none_before): a window can only
    /// show that nothing happened *yet*.
    pub async fn assert_none_within(
        &self,
        forbidden: Matcher,
        window: Duration,
    ) -> Result<(), WaitError> {
        let deadline = deadline::later(window);
        let mut next = self.start;
        deadline::wait_on(&hub().notify, || {
            let mut held = self.held();
            held.refresh(self.id);
            if next < held.base() {
                let what = format!("no event matching {forbidden}");
                return Check::Ready(Err(overflow(&what, held.base())));
            }
            for seq in held.candidates([&forbidden], next) {
                let ev = held.get(seq);
                if forbidden.matches(ev) {
                    let message = format!(
                        "expected no event matching: {forbidden}\nwithin {window:?}, but got:\n  {}",
                        self.line(ev)
                    );
                    return Check::Ready(Err(WaitError::new(WaitErrorKind::Forbidden, message)));
                }
            }
            next = held.cursor();
            if Instant::now() >= deadline {
                Check::Ready(Ok(()))
            } else {
                Check::Until(Some(deadline))
            }
        })
        .await
    }

    /// Takes every not yet consumed event that matches, captured up to now, without
    /// waiting: possibly none. Like a wait, it consumes what it returns (a later wait or
    /// `take_all` gets only newer events).
    ///
    /// With [`flush`](crate::FileSink::flush) it answers "every X so far" when the count
    /// is not known up front: a flush resolves only after the sink's worker has handled
    /// every record accepted before it, and the events it emitted meanwhile (a
    /// `rotation_complete` for each size rotation, `write_failed`, `records_dropped`,
    /// `file_reopened`) are captured by then. Events of work the flush does not wait for
    /// are not covered: the file sink's background compression and retention, and a time
    /// rotation a [`ManualClock`](crate::ManualClock) step triggers (await those with
    /// [`wait`](Self::wait) or [`wait_n`](Self::wait_n): you know how many boundaries
    /// you crossed). See `docs/testing.md`, "Every rotation so far".
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::events::rotation_complete;
    /// use sinkwatch::testing::{self, Matcher};
    /// use sinkwatch::{FileSink, Record};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// testing::init();
    /// let seen = testing::watch();
    /// let sink = FileSink::builder(dir.path()).max_file_size(1024).build()?;
    /// for n in 0..100_u64 {
    ///     sink.write(Record::new(tracing::Level::INFO, "hello").with_field("n", n))?;
    /// }
    /// sink.flush().await?; // every record so far written, every size rotation done
    /// let rotations = seen.take_all(Matcher::sink_event(sink.id(), rotation_complete::NAME));
    /// let rotated = std::fs::read_dir(dir.path())?.count() - 1; // all but the active file
    /// assert_eq!(rotations.len(), rotated);
    /// # sink.shutdown(std::time::Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    #[allow(
        clippy::needless_pass_by_value,
        reason = "taken by value, as by every wait"
    )]
    pub fn take_all(&self, matcher: Matcher) -> Vec<CapturedEvent> {
        let mut held = self.held();
        held.refresh(self.id);
        let from = self.start.max(held.base());
        let found: Vec<Arc<CapturedEvent>> = held
            .candidates([&matcher], from)
            .into_iter()
            .map(|seq| held.get(seq).clone())
            .filter(|ev| matcher.matches(ev))
            .collect();
        found
            .into_iter()
            .map(|ev| {
                held.consumed.insert(ev.seq());
                CapturedEvent::clone(&ev)
            })
            .collect()
    }

    /// Every captured event since this watcher was created (consumed or not), oldest first.
    pub fn history(&self) -> Vec<CapturedEvent> {
        self.events()
            .iter()
            .map(|e| CapturedEvent::clone(e))
            .collect()
    }

    /// Every event since this watcher was created, each as one
    /// [log line](CapturedEvent::log_line) (`INFO my_app: order placed order_id=42`).
    ///
    /// Scope: the events *this watcher* has seen, from every thread of the test process.
    /// Tests running in parallel in one binary see each other's events, so assert on text
    /// your test alone logs (a unique id, a sink's id).
    pub fn log_lines(&self) -> Vec<String> {
        self.events().iter().map(|e| e.log_line()).collect()
    }

    /// True if an event logged since this watcher was created has `text` in its log line:
    /// `tracing-test`'s `logs_contain`, scoped to this watcher. Does not wait; for logs
    /// another thread may not have emitted yet, await
    /// [`wait_logs_contain`](Self::wait_logs_contain).
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::testing;
    ///
    /// testing::init();
    /// let seen = testing::watch();
    /// tracing::warn!(order_id = 42, "payment declined");
    /// assert!(seen.logs_contain("WARN"));
    /// assert!(seen.logs_contain("payment declined order_id=42"));
    /// assert!(!seen.logs_contain("payment accepted"));
    /// ```
    pub fn logs_contain(&self, text: &str) -> bool {
        self.events().iter().any(|e| e.log_line().contains(text))
    }

    /// Asserts [`logs_contain`](Self::logs_contain).
    ///
    /// # Panics
    ///
    /// If no log line contains `text`; the message quotes the latest lines.
    #[track_caller]
    pub fn assert_logs_contain(&self, text: &str) {
        let lines = self.log_lines();
        assert!(
            lines.iter().any(|l| l.contains(text)),
            "{}",
            missing_text(text, &lines)
        );
    }

    /// Runs `check` over the [log lines](Self::log_lines) seen so far and panics with its
    /// message if it returns `Err`: `tracing-test`'s `logs_assert`, scoped to this watcher.
    ///
    /// # Panics
    ///
    /// If `check` returns `Err`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::testing;
    ///
    /// testing::init();
    /// let seen = testing::watch();
    /// tracing::info!(batch = "b-19", "retrying");
    /// tracing::info!(batch = "b-19", "retrying");
    /// seen.logs_assert(|lines| {
    ///     match lines.iter().filter(|l| l.contains("retrying batch=\"b-19\"")).count() {
    ///         2 => Ok(()),
    ///         n => Err(format!("expected 2 retries, saw {n}")),
    ///     }
    /// });
    /// ```
    #[track_caller]
    pub fn logs_assert(&self, check: impl FnOnce(&[&str]) -> Result<(), String>) {
        let lines = self.log_lines();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        if let Err(message) = check(&refs) {
            panic!("logs_assert failed: {message}");
        }
    }

    /// How many events this watcher's waits have evaluated against their matchers.
    #[doc(hidden)]
    pub fn examined(&self) -> u64 {
        self.held().examined
    }

    /// How many events this watcher has copied out of the capture buffer.
    #[doc(hidden)]
    pub fn fetched(&self) -> u64 {
        self.held().fetched
    }

    /// The events since the start: those fetched, then those not fetched yet.
    fn events(&self) -> Vec<Arc<CapturedEvent>> {
        let held = self.held();
        let mut out: Vec<_> = held.since(self.start).cloned().collect();
        out.extend(hub().peek(held.cursor()));
        out
    }

    pub(crate) fn line(&self, ev: &CapturedEvent) -> String {
        let at = ev.captured_at().saturating_duration_since(self.created);
        format!("+{:>9.3}ms {ev}", at.as_secs_f64() * 1000.0)
    }
}

fn missing_text(text: &str, lines: &[String]) -> String {
    let mut msg = format!(
        "no log line since the watcher's start contains {text:?}; {} line(s) seen",
        lines.len()
    );
    let skip = lines.len().saturating_sub(RECENT_SHOWN);
    if skip < lines.len() {
        let _ = write!(msg, ", the last {}:", lines.len() - skip);
    }
    for line in &lines[skip..] {
        let _ = write!(msg, "\n  {line}");
    }
    msg
}

impl Drop for Watcher {
    fn drop(&mut self) {
        hub().unregister(self.id);
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.held();
        f.debug_struct("Watcher")
            .field("start", &self.start)
            .field("cursor", &held.cursor())
            .field("consumed", &held.consumed.len())
            .finish_non_exhaustive()
    }
}

/// Polls `condition` until it holds, for conditions no event announces. Polls with a
/// backoff (1 ms doubling to 50 ms) and also whenever an event is captured, under the
/// default timeout scaled by `CI_TIMEOUT_MULTIPLIER`.
///
/// # Errors
///
/// A [`WaitError`] describing `what` and the number of polls if the condition never held.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
///
/// let done = Arc::new(AtomicBool::new(false));
/// let flag = done.clone();
/// std::thread::spawn(move || flag.store(true, Ordering::SeqCst));
/// sinkwatch::testing::eventually("the flag is set", || done.load(Ordering::SeqCst))
///     .await
///     .unwrap();
/// # }
/// ```
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) -> Result<(), WaitError> {
    eventually_within(what, DEFAULT_TIMEOUT, || {
        if condition() {
            Ok(())
        } else {
            Err(String::from("false"))
        }
    })
    .await
}

/// [`eventually`] with a timeout and a condition that returns a value, or why it does not
/// hold yet (the last reason is quoted in the timeout message).
///
/// # Errors
///
/// A [`WaitError`] with the last reason if the condition never held.
pub async fn eventually_within<T>(
    what: &str,
    timeout: Duration,
    mut condition: impl FnMut() -> Result<T, String>,
) -> Result<T, WaitError> {
    let scaled = scale(timeout)?;
    let deadline = deadline::later(scaled.total);
    // Conditions on what a sink did are rechecked at each captured event, and also polled
    // (from 1 ms, doubling, up to 50 ms) for state no event announces.
    let mut backoff = Duration::from_millis(1);
    let mut polls = 0_u64;
    deadline::wait_on(&hub().notify, || {
        polls += 1;
        let reason = match condition() {
            Ok(value) => return Check::Ready(Ok(value)),
            Err(reason) => reason,
        };
        let now = Instant::now();
        if now >= deadline {
            let message = format!(
                "timed out after {scaled} waiting until {what}\n\
                 polled {polls} times; the last check said: {reason}\n"
            );
            return Check::Ready(Err(WaitError::new(WaitErrorKind::Timeout, message)));
        }
        let next = deadline::after(now, backoff).min(deadline);
        backoff = (backoff * 2).min(Duration::from_millis(50));
        Check::Until(Some(next))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_empty_and_blank_multipliers_are_one() {
        for value in [None, Some(""), Some("   "), Some("\t\n")] {
            assert_eq!(parse_timeout_multiplier(value), Ok(1.0), "{value:?}");
        }
    }

    #[test]
    fn numbers_are_trimmed_and_parsed() {
        assert_eq!(parse_timeout_multiplier(Some("2")), Ok(2.0));
        assert_eq!(parse_timeout_multiplier(Some(" 0.5\n")), Ok(0.5));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for bad in ["abc", "0", "-2", "NaN", "inf", "1,5"] {
            let err = parse_timeout_multiplier(Some(bad)).unwrap_err();
            assert!(err.contains(TIMEOUT_MULTIPLIER_VAR), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
