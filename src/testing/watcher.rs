//! Watchers: awaiting captured events, with timeouts that explain themselves.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{hub, CapturedEvent, HubState};
use super::matcher::Matcher;
use crate::deadline;

/// The default timeout of a positive wait, before scaling.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The environment variable that scales every wait's timeout on slow machines.
pub const TIMEOUT_MULTIPLIER_VAR: &str = "CI_TIMEOUT_MULTIPLIER";

/// How many of the latest events a timeout message lists.
const RECENT_SHOWN: usize = 40;
/// How many near misses a timeout message lists.
const NEAR_MISSES_SHOWN: usize = 5;

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

    fn new(kind: WaitErrorKind, message: String) -> Self {
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
            write!(f, "{:?} ({TIMEOUT_MULTIPLIER_VAR} unset)", self.total)
        } else {
            write!(
                f,
                "{:?} ({:?} x {TIMEOUT_MULTIPLIER_VAR}={})",
                self.total, self.base, self.factor
            )
        }
    }
}

/// Parses a `CI_TIMEOUT_MULTIPLIER` value: `None` (unset) is 1, otherwise a finite number
/// greater than zero.
///
/// # Errors
///
/// A message naming the variable when the value is not a positive finite number.
///
/// # Examples
///
/// ```
/// use sinkwatch::testing::parse_timeout_multiplier;
///
/// assert_eq!(parse_timeout_multiplier(None), Ok(1.0));
/// assert_eq!(parse_timeout_multiplier(Some("2.5")), Ok(2.5));
/// assert!(parse_timeout_multiplier(Some("fast")).is_err());
/// ```
pub fn parse_timeout_multiplier(value: Option<&str>) -> Result<f64, String> {
    let Some(raw) = value else { return Ok(1.0) };
    match raw.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "{TIMEOUT_MULTIPLIER_VAR}={raw:?} is not a positive number; set it to a factor \
             such as 2 or 0.5, or unset it"
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
/// # Examples
///
/// ```
/// use sinkwatch::testing::{self, Matcher};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// testing::init();
/// let mut events = testing::watch();
/// std::thread::spawn(|| tracing::info!(order_id = 42, "order placed"));
/// let event = events
///     .wait(Matcher::any().field("order_id", 42))
///     .await
///     .unwrap();
/// assert_eq!(event.str("message"), Some("order placed"));
/// # }
/// ```
pub struct Watcher {
    id: u64,
    start: u64,
    created: Instant,
    consumed: BTreeSet<u64>,
}

/// A point in the capture order; waits can be limited to events after it with
/// [`Wait::after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint(u64);

impl Watcher {
    pub(crate) fn new() -> Self {
        let (id, start) = hub().register_now();
        Watcher {
            id,
            start,
            created: Instant::now(),
            consumed: BTreeSet::new(),
        }
    }

    /// The current point in the capture order: events captured from now on are after it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(hub().lock().next_seq())
    }

    /// Waits for the first not yet consumed event that matches.
    pub fn wait(&mut self, matcher: Matcher) -> Wait<'_, CapturedEvent> {
        let what = format!("{matcher}");
        Wait::new(self, vec![matcher], what, |mut v| v.remove(0))
    }

    /// Waits for `n` not yet consumed events that match.
    pub fn wait_n(&mut self, matcher: Matcher, n: usize) -> Wait<'_, Vec<CapturedEvent>> {
        let what = format!("{n} x ({matcher})");
        Wait::new(self, vec![matcher; n], what, |v| v)
    }

    /// Waits for events matching each matcher in turn, each after the previous one.
    pub fn wait_sequence(
        &mut self,
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

    /// Waits for `until` and fails if an event matching `forbidden` arrives before it:
    /// the deterministic way to say "no X before Y has happened".
    pub async fn assert_none_before(
        &mut self,
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
        &mut self,
        forbidden: Matcher,
        window: Duration,
    ) -> Result<(), WaitError> {
        let deadline = deadline::until(Instant::now() + window);
        tokio::pin!(deadline);
        let mut scan = self.start;
        loop {
            let notified = hub().notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = hub().lock();
                if let Some(ev) = state
                    .since(scan)
                    .find(|e| !self.consumed.contains(&e.seq()) && forbidden.matches(e))
                {
                    let message = format!(
                        "expected no event matching: {forbidden}\nwithin {window:?}, but got:\n  {}",
                        self.line(ev)
                    );
                    return Err(WaitError::new(WaitErrorKind::Forbidden, message));
                }
                scan = state.next_seq();
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut deadline => return Ok(()),
            }
        }
    }

    /// Every captured event since this watcher was created (consumed or not), oldest first.
    pub fn history(&self) -> Vec<CapturedEvent> {
        hub()
            .lock()
            .since(self.start)
            .map(|e| CapturedEvent::clone(e))
            .collect()
    }

    fn line(&self, ev: &CapturedEvent) -> String {
        let at = ev.captured_at().saturating_duration_since(self.created);
        format!("+{:>9.3}ms {ev}", at.as_secs_f64() * 1000.0)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        hub().unregister(self.id);
    }
}

impl fmt::Debug for Watcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watcher")
            .field("start", &self.start)
            .field("consumed", &self.consumed.len())
            .finish_non_exhaustive()
    }
}

/// A pending wait; configure it, then `.await` it.
///
/// Resolves to the matched event(s), or a [`WaitError`] that explains itself.
///
/// # Cancel safety
///
/// Cancel-safe: events are consumed only when the wait succeeds.
#[must_use = "a wait does nothing until awaited"]
pub struct Wait<'w, T> {
    watcher: &'w mut Watcher,
    steps: Vec<Matcher>,
    what: String,
    fail_on: Vec<Matcher>,
    forbid: Vec<Matcher>,
    timeout: Duration,
    after: Option<Checkpoint>,
    finish: fn(Vec<CapturedEvent>) -> T,
}

impl<'w, T: Send + 'w> Wait<'w, T> {
    fn new(
        watcher: &'w mut Watcher,
        steps: Vec<Matcher>,
        what: String,
        finish: fn(Vec<CapturedEvent>) -> T,
    ) -> Self {
        Wait {
            watcher,
            steps,
            what,
            fail_on: Vec::new(),
            forbid: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            after: None,
            finish,
        }
    }

    /// Sets the timeout (before scaling by `CI_TIMEOUT_MULTIPLIER`). By default, 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Fails at once if an event matching `failure` arrives before the wait is satisfied
    /// (for example `push_failed` for the same sink while awaiting `push_complete`).
    pub fn fail_on(mut self, failure: Matcher) -> Self {
        self.fail_on.push(failure);
        self
    }

    /// Only considers events captured after `checkpoint`.
    pub fn after(mut self, checkpoint: Checkpoint) -> Self {
        self.after = Some(checkpoint);
        self
    }

    async fn run(self) -> Result<T, WaitError> {
        let scaled = scale(self.timeout)?;
        let deadline = deadline::until(Instant::now() + scaled.total);
        tokio::pin!(deadline);
        let from = self
            .after
            .map_or(self.watcher.start, |c| c.0.max(self.watcher.start));
        let mut progress = Progress::default();
        let mut scan = from;
        loop {
            let notified = hub().notify.notified();
            tokio::pin!(notified);
            // Register for wakes before scanning, so an event captured between the scan
            // and the await still wakes us.
            notified.as_mut().enable();
            {
                let state = hub().lock();
                if state.base > scan {
                    return Err(self.overflow(&state));
                }
                for ev in state.since(scan) {
                    if let Some(err) = self.feed(&mut progress, ev) {
                        return Err(err);
                    }
                    if progress.matched.len() == self.steps.len() {
                        return Ok(self.succeed(&progress));
                    }
                }
                scan = state.next_seq();
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut deadline => return Err(self.timed_out(&progress, from, scaled)),
            }
        }
    }

    fn feed(&self, progress: &mut Progress, ev: &Arc<CapturedEvent>) -> Option<WaitError> {
        if self.watcher.consumed.contains(&ev.seq()) {
            return None;
        }
        if self.steps[progress.matched.len()].matches(ev) {
            progress.matched.push(ev.clone());
            return None;
        }
        if let Some(m) = self.forbid.iter().find(|m| m.matches(ev)) {
            let message = format!(
                "expected no event matching: {m}\nbefore: {}\nbut got:\n  {}",
                self.what,
                self.watcher.line(ev)
            );
            return Some(WaitError::new(WaitErrorKind::Forbidden, message));
        }
        if let Some(m) = self.fail_on.iter().find(|m| m.matches(ev)) {
            let message = format!(
                "waited for: {}\nbut a failure event arrived first (fail_on: {m}):\n  {}",
                self.what,
                self.watcher.line(ev)
            );
            return Some(WaitError::new(WaitErrorKind::FailEvent, message));
        }
        None
    }

    fn succeed(self, progress: &Progress) -> T {
        let events: Vec<CapturedEvent> = progress
            .matched
            .iter()
            .map(|e| {
                self.watcher.consumed.insert(e.seq());
                CapturedEvent::clone(e)
            })
            .collect();
        (self.finish)(events)
    }

    fn overflow(&self, state: &HubState) -> WaitError {
        WaitError::new(
            WaitErrorKind::Overflow,
            format!(
                "waited for: {}\nbut the capture buffer evicted events this watcher needed \
                 (oldest kept: #{}). Create the watcher closer to the action, or capture less \
                 (a per-layer filter on testing::layer()).",
                self.what, state.base
            ),
        )
    }

    fn timed_out(&self, progress: &Progress, from: u64, scaled: Scaled) -> WaitError {
        let state = hub().lock();
        let seen: Vec<&Arc<CapturedEvent>> = state.since(from).collect();
        let mut msg = format!("timed out after {scaled} waiting for: {}\n", self.what);
        if self.steps.len() > 1 {
            let _ = writeln!(
                msg,
                "matched {} of {} so far; next needed: {}",
                progress.matched.len(),
                self.steps.len(),
                self.steps[progress.matched.len()]
            );
        }
        let _ = writeln!(
            msg,
            "events captured since the watcher's start: {}",
            seen.len()
        );
        if seen.is_empty() {
            msg += &no_events_hint();
        } else {
            let skip = seen.len().saturating_sub(RECENT_SHOWN);
            let _ = writeln!(msg, "the last {}:", seen.len() - skip);
            for ev in &seen[skip..] {
                let _ = writeln!(msg, "  {}", self.watcher.line(ev));
            }
        }
        let target = &self.steps[progress.matched.len()];
        msg += &self.near_misses(target, &seen);
        msg += &self.sink_failures(target, &seen);
        WaitError::new(WaitErrorKind::Timeout, msg)
    }

    fn near_misses(&self, target: &Matcher, seen: &[&Arc<CapturedEvent>]) -> String {
        let needed = target.requirements();
        let mut misses: Vec<(&Arc<CapturedEvent>, Vec<String>)> = seen
            .iter()
            .filter(|e| !self.watcher.consumed.contains(&e.seq()))
            .map(|e| (*e, target.mismatches(e)))
            .filter(|(e, m)| {
                !m.is_empty() && (target.same_name(e) || (needed > 1 && m.len() * 2 <= needed))
            })
            .collect();
        let consumed_matches = seen
            .iter()
            .filter(|e| self.watcher.consumed.contains(&e.seq()) && target.matches(e))
            .count();
        let mut out = String::new();
        if consumed_matches > 0 {
            let _ = writeln!(
                out,
                "{consumed_matches} matching event(s) were already consumed by earlier waits"
            );
        }
        if misses.is_empty() {
            return out;
        }
        let skip = misses.len().saturating_sub(NEAR_MISSES_SHOWN);
        let _ = writeln!(out, "near misses ({} in all, latest shown):", misses.len());
        for (ev, diffs) in misses.drain(skip..) {
            let _ = writeln!(
                out,
                "  {}\n      differs: {}",
                self.watcher.line(ev),
                diffs.join("; ")
            );
        }
        out
    }

    fn sink_failures(&self, target: &Matcher, seen: &[&Arc<CapturedEvent>]) -> String {
        let Some(sink) = target.sink_id() else {
            return String::new();
        };
        let failures: Vec<_> = seen
            .iter()
            .filter(|e| {
                e.field(crate::events::SINK)
                    .is_some_and(|s| s.loosely_eq(sink))
                    && e.level() <= tracing::Level::WARN
            })
            .collect();
        if failures.is_empty() {
            return format!("no warning or failure event from sink {sink}\n");
        }
        let mut out = format!("warnings and failures from sink {sink}:\n");
        for ev in failures.iter().rev().take(NEAR_MISSES_SHOWN).rev() {
            let _ = writeln!(out, "  {}", self.watcher.line(ev));
        }
        out
    }
}

fn no_events_hint() -> String {
    if hub().layers() == 0 {
        "hint: the capture layer is not installed: call sinkwatch::testing::init() at the start \
         of the test, or add sinkwatch::testing::layer() to your subscriber\n"
            .to_owned()
    } else {
        "hint: no event at all arrived since the watcher was created: was the watcher created \
         after the action? Is a filter in front of the capture layer dropping events, or is \
         another (thread-local) subscriber set as the default on the emitting thread?\n"
            .to_owned()
    }
}

#[derive(Default)]
struct Progress {
    matched: Vec<Arc<CapturedEvent>>,
}

impl<'w, T: Send + 'w> IntoFuture for Wait<'w, T> {
    type Output = Result<T, WaitError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, WaitError>> + Send + 'w>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
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
    let deadline = deadline::until(Instant::now() + scaled.total);
    tokio::pin!(deadline);
    let mut backoff = Duration::from_millis(1);
    let mut polls = 0_u64;
    loop {
        let notified = hub().notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        polls += 1;
        let reason = match condition() {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        let pause = deadline::until(Instant::now() + backoff);
        tokio::select! {
            () = &mut notified => {}
            () = pause => backoff = (backoff * 2).min(Duration::from_millis(50)),
            () = &mut deadline => {
                let message = format!(
                    "timed out after {scaled} waiting until {what}\n\
                     polled {polls} times; the last check said: {reason}\n"
                );
                return Err(WaitError::new(WaitErrorKind::Timeout, message));
            }
        }
    }
}
