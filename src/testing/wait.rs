//! A pending wait: what it is for, how it is configured, and the matching loop.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{hub, CapturedEvent};
use super::explain;
use super::matcher::Matcher;
use super::seen::Seen;
use super::watcher::{scale, Checkpoint, WaitError, WaitErrorKind, Watcher, DEFAULT_TIMEOUT};
use crate::deadline::{self, Check};

/// A pending wait; configure it, then `.await` it.
///
/// Resolves to the matched event(s), or a [`WaitError`] that explains itself. It borrows its
/// [`Watcher`] shared, so a chain can ask the same watcher for a checkpoint
/// (`seen.wait(m).after(seen.checkpoint())`) and several waits on one watcher can run at
/// once (`tokio::join!`): each event is consumed by one wait only, the first to complete.
///
/// # Cancel safety
///
/// Cancel-safe: events are consumed only when the wait succeeds.
#[must_use = "a wait does nothing until awaited"]
pub struct Wait<'w, T> {
    watcher: &'w Watcher,
    steps: Vec<Matcher>,
    what: String,
    fail_on: Vec<Matcher>,
    pub(crate) forbid: Vec<Matcher>,
    timeout: Duration,
    after: Option<Checkpoint>,
    finish: fn(Vec<CapturedEvent>) -> T,
}

/// How far a wait got: the events matched so far and the next sequence number to examine.
pub(crate) struct Progress {
    pub(crate) matched: Vec<Arc<CapturedEvent>>,
    next: u64,
}

impl<'w, T: Send + 'w> Wait<'w, T> {
    pub(crate) fn new(
        watcher: &'w Watcher,
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

    /// Sets the timeout (before scaling by `CI_TIMEOUT_MULTIPLIER`). By default,
    /// [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT).
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
        let deadline = deadline::later(scaled.total);
        let from = self
            .after
            .map_or(self.watcher.start, |c| c.0.max(self.watcher.start));
        let mut progress = Progress {
            matched: Vec::new(),
            next: from,
        };
        let result = deadline::wait_on(&hub().notify, || {
            if let Some(result) = self.examine_new(&mut progress, from) {
                return Check::Ready(result);
            }
            if Instant::now() < deadline {
                return Check::Until(Some(deadline));
            }
            let mut held = self.watcher.held();
            held.refresh(self.watcher.id);
            let message = explain::timed_out(
                self.watcher,
                &held,
                &self.what,
                &self.steps,
                &progress.matched,
                from,
                scaled,
            );
            Check::Ready(Err(WaitError::new(WaitErrorKind::Timeout, message)))
        })
        .await;
        result.map(|events| (self.finish)(events))
    }

    /// Fetches what was captured since the last fetch and examines the events that could
    /// match: `Some(Ok)` with the events when every step matched (they are consumed),
    /// `Some(Err)` on a failure, `None` to go on.
    ///
    /// Runs under the watcher's lock, so that matching the last step and consuming every
    /// step's event is one step: a concurrent wait on the same watcher cannot take them in
    /// between. If one consumed an earlier step's event while this wait was pending, the
    /// wait starts over from `from` (among the events still unconsumed).
    fn examine_new(
        &self,
        progress: &mut Progress,
        from: u64,
    ) -> Option<Result<Vec<CapturedEvent>, WaitError>> {
        let mut held = self.watcher.held();
        held.refresh(self.watcher.id);
        loop {
            if progress.next < held.base() {
                return Some(Err(overflow(&self.what, held.base())));
            }
            let matchers = self.steps.iter().chain(&self.fail_on).chain(&self.forbid);
            let candidates = held.candidates(matchers, progress.next);
            progress.next = held.cursor();
            for seq in candidates {
                let ev = held.get(seq).clone();
                if let Some(err) = self.feed(progress, &ev) {
                    return Some(Err(err));
                }
                if progress.matched.len() < self.steps.len() {
                    continue;
                }
                if progress
                    .matched
                    .iter()
                    .any(|e| held.consumed.contains(&e.seq()))
                {
                    break; // taken by a concurrent wait: start over below
                }
                return Some(Ok(consume(&mut held, &progress.matched)));
            }
            let taken = progress
                .matched
                .iter()
                .any(|e| held.consumed.contains(&e.seq()));
            if !taken {
                return None;
            }
            *progress = Progress {
                matched: Vec::new(),
                next: from,
            };
        }
    }

    fn feed(&self, progress: &mut Progress, ev: &Arc<CapturedEvent>) -> Option<WaitError> {
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
}

/// Marks `matched` consumed and returns copies of them.
fn consume(held: &mut Seen, matched: &[Arc<CapturedEvent>]) -> Vec<CapturedEvent> {
    matched
        .iter()
        .map(|e| {
            held.consumed.insert(e.seq());
            CapturedEvent::clone(e)
        })
        .collect()
}

/// The error of a wait whose events were evicted before it examined them.
pub(crate) fn overflow(what: &str, oldest_kept: u64) -> WaitError {
    WaitError::new(
        WaitErrorKind::Overflow,
        format!(
            "waited for: {what}\nbut the capture buffer evicted events this watcher needed \
             (oldest kept: #{oldest_kept}). Create the watcher closer to the action, or capture \
             less (a per-layer filter on testing::layer())."
        ),
    )
}

impl<'w, T: Send + 'w> IntoFuture for Wait<'w, T> {
    type Output = Result<T, WaitError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, WaitError>> + Send + 'w>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
