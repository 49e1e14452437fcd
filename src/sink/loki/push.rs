//! One push request's life, run as its own task so several can be in flight: attempts,
//! Loki's retry rules, a shared `Retry-After` pause, the shutdown cut, and the accounting
//! of its entries (each settled exactly once: delivered, or dropped with a reason).
//!
//! A part read from the disk buffer (it has a [`Part::ticket`]) is accounted by the worker
//! instead, which settles its range in the buffer: the task only says how it [`End`]ed. Such
//! a part is never given up for retries (the disk holds it, not memory) and is kept on disk
//! when the shutdown deadline cuts it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::retry::{classify, parse_retry_after, RetryPolicy, Rng, Verdict};
use crate::deadline::later;
use crate::events::{self, reason};
use crate::pipe::Consumer;

/// How much of an error response is kept for events.
const MESSAGE_LIMIT: usize = 1024;

/// One encoded request body and what it carries.
pub(super) struct Part {
    pub(super) body: Bytes,
    pub(super) entries: u64,
    pub(super) streams: u64,
    /// The disk buffer's ticket for the entries (`None` for a part from memory).
    pub(super) ticket: Option<u64>,
}

/// How a part's push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Loki answered 2xx.
    Delivered,
    /// Given up for good, with the drop reason.
    Dropped(&'static str),
    /// Cut by the shutdown deadline: a disk part stays on disk.
    Kept,
}

/// What a push task hands back to the worker.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) ticket: Option<u64>,
    pub(super) entries: u64,
    pub(super) end: End,
}

/// How one attempt ended: a status (0 for a transport error), its message, `Retry-After`.
#[derive(Debug, Default)]
struct Outcome {
    status: u16,
    message: String,
    retry_after: Option<Duration>,
}

/// What every push task shares.
pub(super) struct Pusher {
    pub(super) consumer: Consumer,
    pub(super) client: reqwest::Client,
    pub(super) url: reqwest::Url,
    pub(super) timeout: Duration,
    pub(super) retry: RetryPolicy,
    /// No attempt starts before this: a `Retry-After` from Loki holds every request, not
    /// only the one it answered.
    pause: Mutex<Option<Instant>>,
    /// Requests between a failed attempt and their settling: while any is retrying, Loki is
    /// in trouble and the worker starts no more than one request at a time.
    retrying: std::sync::atomic::AtomicUsize,
    /// Wakes the worker when a request starts retrying, so it stops taking more work.
    pub(super) trouble: tokio::sync::Notify,
}

impl Pusher {
    pub(super) fn new(
        consumer: Consumer,
        client: reqwest::Client,
        url: reqwest::Url,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        Pusher {
            consumer,
            client,
            url,
            timeout,
            retry,
            pause: Mutex::new(None),
            retrying: std::sync::atomic::AtomicUsize::new(0),
            trouble: tokio::sync::Notify::new(),
        }
    }

    /// True while some request is retrying.
    pub(super) fn in_trouble(&self) -> bool {
        self.retrying.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn paused_until(&self) -> Option<Instant> {
        let pause = *self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        pause.filter(|at| *at > Instant::now())
    }

    fn pause_until(&self, at: Instant) {
        let mut pause = self.pause.lock().unwrap_or_else(PoisonError::into_inner);
        if pause.is_none_or(|p| p < at) {
            *pause = Some(at);
        }
    }
}

/// Waits until `at`, in real time on the worker's own runtime.
pub(super) async fn sleep_until(at: Instant) {
    // A legitimate timer (batch wait, backoff, shutdown deadline), not synchronisation.
    #[allow(clippy::disallowed_methods)]
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

/// Resolves when the shutdown deadline has passed (never if no shutdown is requested).
pub(super) async fn shutdown_cut(consumer: &Consumer) {
    let deadline = consumer.shutdown_requested().await;
    sleep_until(deadline).await;
}

/// Pushes one part until it is delivered, rejected, out of retries or cut by shutdown.
pub(super) async fn push(p: Arc<Pusher>, part: Part, rng: Rng) -> Done {
    let mut retried = false;
    let end = push_until_settled(&p, &part, rng, &mut retried).await;
    if retried {
        p.retrying.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
    Done {
        ticket: part.ticket,
        entries: part.entries,
        end,
    }
}

async fn push_until_settled(p: &Pusher, part: &Part, mut rng: Rng, retried: &mut bool) -> End {
    let mut last = Outcome::default();
    let mut attempt: u32 = 0;
    loop {
        if let Some(at) = p.paused_until() {
            if !backoff(p, at).await {
                return give_up_at_shutdown(p, part, attempt, &last);
            }
        }
        attempt += 1;
        // Refusals pile up while an outage lasts; report them as they happen.
        p.consumer.report_drops();
        let started = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = shutdown_cut(&p.consumer) => {
                return give_up_at_shutdown(p, part, attempt - 1, &last);
            }
            outcome = attempt_once(p, part.body.clone()) => outcome,
        };
        let delay = match judge(p, part, attempt, &outcome, started, &mut rng, retried) {
            Ok(end) => return end,
            Err(delay) => delay,
        };
        let until = later(delay);
        if outcome.retry_after.is_some() {
            p.pause_until(until);
        }
        if !backoff(p, until).await {
            return give_up_at_shutdown(p, part, attempt, &outcome);
        }
        last = outcome;
    }
}

/// Reports an attempt's outcome: `Ok` when the part is settled, `Err(delay)` to retry.
/// A disk part's entries are accounted by the worker, not here.
fn judge(
    p: &Pusher,
    part: &Part,
    attempt: u32,
    o: &Outcome,
    started: Instant,
    rng: &mut Rng,
    retried: &mut bool,
) -> Result<End, Duration> {
    let id = p.consumer.id();
    let on_disk = part.ticket.is_some();
    crate::metrics::push_attempt(id, o.status, started.elapsed());
    let verdict = if o.status == 0 {
        Verdict::Retry
    } else {
        classify(o.status)
    };
    let fail = |why| {
        let status = u64::from(o.status);
        events::push_failed(id, part.entries, status, &o.message, attempt.into());
        if !on_disk {
            p.consumer.dropped(part.entries, why);
        }
        Ok(End::Dropped(why))
    };
    match verdict {
        Verdict::Delivered => {
            if !on_disk {
                p.consumer.delivered(part.entries);
            }
            let (bytes, status) = (part.body.len() as u64, u64::from(o.status));
            let us = events::micros(started.elapsed());
            events::push_complete(
                id,
                part.entries,
                part.streams,
                bytes,
                status,
                attempt.into(),
                us,
            );
            Ok(End::Delivered)
        }
        Verdict::Rejected => fail(reason::REJECTED),
        Verdict::NotRetryable => fail(reason::NOT_RETRYABLE),
        // The disk holds a disk part through any outage: its retries never run out (the
        // backoff is capped at `max_backoff`; entries too old for Loki are dropped at send).
        Verdict::Retry if attempt > p.retry.max_retries && !on_disk => {
            fail(reason::RETRIES_EXHAUSTED)
        }
        Verdict::Retry => {
            if !*retried {
                // Before the event: whoever sees `push_retry` sees the worker hold back.
                *retried = true;
                p.retrying.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                p.trouble.notify_one();
            }
            let delay = p.retry.delay(attempt, o.retry_after, rng);
            let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            let status = u64::from(o.status);
            events::push_retry(id, part.entries, attempt.into(), ms, status, &o.message);
            Err(delay)
        }
    }
}

/// Waits until `until` unless the shutdown deadline comes first: false means give up.
async fn backoff(p: &Pusher, until: Instant) -> bool {
    tokio::select! {
        biased;
        deadline = p.consumer.shutdown_requested() => {
            if until > deadline {
                return false;
            }
            sleep_until(until).await;
            true
        }
        () = sleep_until(until) => true,
    }
}

fn give_up_at_shutdown(p: &Pusher, part: &Part, attempts: u32, last: &Outcome) -> End {
    if part.ticket.is_some() {
        // Left on disk for the next process, and counted as persisted by the worker.
        return End::Kept;
    }
    let mut error = String::from("the shutdown deadline passed before delivery");
    if !last.message.is_empty() {
        error.push_str("; last error: ");
        error.push_str(&last.message);
    }
    let status = u64::from(last.status);
    events::push_failed(
        p.consumer.id(),
        part.entries,
        status,
        &error,
        attempts.into(),
    );
    p.consumer.dropped(part.entries, reason::SHUTDOWN);
    End::Dropped(reason::SHUTDOWN)
}

/// One request: its status, Loki's message (for errors) and `Retry-After`.
async fn attempt_once(p: &Pusher, body: Bytes) -> Outcome {
    let request = p.client.post(p.url.clone());
    let sent = request.timeout(p.timeout).body(body).send().await;
    let mut response = match sent {
        Ok(r) => r,
        Err(e) => return transport_error(e, p.timeout),
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let mut text = Vec::new();
    // Read (part of) the body: the error message, and on success it frees the connection.
    while text.len() < MESSAGE_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => text.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    text.truncate(MESSAGE_LIMIT);
    let message = String::from_utf8_lossy(&text).trim_end().to_owned();
    Outcome {
        status,
        message,
        retry_after,
    }
}

/// A transport error as text, without the URL (which could carry credentials) and with its
/// causes, which say what actually happened (refused, reset, …).
fn transport_error(e: reqwest::Error, timeout: Duration) -> Outcome {
    let message = if e.is_timeout() {
        format!("the request timed out after {timeout:?}")
    } else {
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    };
    Outcome {
        status: 0,
        message,
        retry_after: None,
    }
}
