//! The Loki sink's worker: turns records into entries, batches them, pushes one request at a
//! time with retries, and accounts for every record.
//!
//! It runs on the sink's own thread and runtime (`crate::worker::spawn_worker`), so its
//! timers are real time. Nothing here panics: every failure becomes an event and, where
//! records are lost, a `records_dropped` report, so `accepted == delivered + dropped` holds
//! whenever the worker is idle.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::batch::Batch;
use super::encode::{self, EntryAdapter, Timestamp};
use super::labels::{LabelSet, Labeler};
use super::line::Lines;
use super::retry::{classify, parse_retry_after, RetryPolicy, Rng, Verdict};
use super::Encoding;
use crate::events::{self, reason};
use crate::worker::{Consumer, Item, Recv};
use crate::Record;

/// Items taken from the queue at a time. Records taken are no longer counted by the queue's
/// byte bound, so this stays small: it is the only memory outside the bound and the batch.
const CHUNK: usize = 512;
/// How much of an error response is kept for events.
const MESSAGE_LIMIT: usize = 1024;
/// Everything the worker is started with.
pub(crate) struct Config {
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) encoding: Encoding,
    pub(crate) max_entries: usize,
    pub(crate) max_bytes: usize,
    pub(crate) wait: Duration,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) lines: Lines,
    pub(crate) labeler: Labeler,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    /// The shutdown deadline passed: everything not delivered is being reported dropped.
    Stop,
}

/// One encoded request body and what it carries.
struct Part {
    body: Bytes,
    entries: u64,
    streams: u64,
}

/// How one attempt ended: a status (0 for a transport error), its message, `Retry-After`.
#[derive(Debug, Default)]
struct Outcome {
    status: u16,
    message: String,
    retry_after: Option<Duration>,
}

/// Records refused on the way into a batch, reported together.
#[derive(Debug, Default)]
struct Tally {
    too_long: u64,
    too_many_streams: u64,
    truncated: u64,
    truncated_bytes: u64,
}

struct Worker {
    consumer: Consumer<Record>,
    cfg: Config,
    batch: Batch,
    rng: Rng,
    tally: Tally,
}

/// The worker's whole life.
pub(crate) async fn run(consumer: Consumer<Record>, cfg: Config) {
    let mut worker = Worker {
        consumer,
        cfg,
        batch: Batch::default(),
        rng: Rng::new(),
        tally: Tally::default(),
    };
    worker.main_loop().await;
}

/// "Forever" for a configured duration: far enough, and never overflowing an `Instant`.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Now plus `d`, capped at a century: `Instant + Duration::MAX` (a configured
/// `max_backoff`, `max_retry_after` or shutdown timeout, or a `Retry-After` of 2^64 − 1
/// seconds) would panic.
pub(super) fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}

/// Waits until `at`, in real time on the worker's own runtime.
async fn sleep_until(at: Instant) {
    // A legitimate timer (batch wait, backoff, shutdown deadline), not synchronisation.
    #[allow(clippy::disallowed_methods)]
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves when the shutdown deadline has passed (never if no shutdown is requested).
async fn shutdown_cut(consumer: &Consumer<Record>) {
    let deadline = consumer.shutdown_requested().await;
    sleep_until(deadline).await;
}

impl Worker {
    async fn main_loop(&mut self) {
        let mut items = Vec::with_capacity(CHUNK);
        loop {
            let due = self.batch.due(self.cfg.wait);
            tokio::select! {
                biased;
                deadline = self.consumer.shutdown_requested() => {
                    return self.close(Some(deadline), &mut items).await;
                }
                () = wait_until(due) => {
                    self.send_batch().await;
                }
                received = self.consumer.recv(&mut items, CHUNK) => match received {
                    Recv::Items => {
                        self.process(&mut items).await;
                    }
                    // The queue is closed and drained: every handle is gone, or a shutdown
                    // closed it (racing the branch above), whose deadline then still holds.
                    Recv::Closed => {
                        let deadline = self.consumer.shutdown_deadline();
                        return self.close(deadline, &mut items).await;
                    }
                },
            }
        }
    }

    /// Pushes what is left until `deadline`, reports the rest, and emits `sink_closed`.
    async fn close(&mut self, deadline: Option<Instant>, items: &mut Vec<Item<Record>>) {
        let passed = || deadline.is_some_and(|d| Instant::now() >= d);
        let mut flow = Flow::Go;
        while flow == Flow::Go && !passed() && self.consumer.try_recv(items, CHUNK) {
            flow = self.process(items).await;
        }
        if flow == Flow::Go && !passed() {
            self.send_batch().await;
        }
        let left = self.batch.take().entries() as u64;
        self.consumer.dropped(left, reason::SHUTDOWN);
        self.consumer.abandon_queue();
        self.report_tally();
        self.consumer.finish();
    }

    /// Handles items in order. A flush marker sends the pending batch at once and is
    /// acknowledged once that batch is delivered or reported.
    async fn process(&mut self, items: &mut Vec<Item<Record>>) -> Flow {
        let mut rest = items.drain(..);
        let mut flow = Flow::Go;
        while let Some(item) = rest.next() {
            flow = match item {
                Item::Record(record, _) => self.add(record).await,
                Item::Flush(ack) => {
                    let flow = self.send_batch().await;
                    self.report_tally();
                    self.consumer.complete_flush(ack);
                    flow
                }
            };
            if flow == Flow::Stop {
                self.abandon(rest);
                break;
            }
        }
        self.report_tally();
        flow
    }

    /// After the deadline: reports the records left in a chunk, then completes its flushes.
    fn abandon(&mut self, rest: impl Iterator<Item = Item<Record>>) {
        let mut acks = Vec::new();
        let mut records = 0;
        for item in rest {
            match item {
                Item::Record(..) => records += 1,
                Item::Flush(ack) => acks.push(ack),
            }
        }
        self.consumer.dropped(records, reason::SHUTDOWN);
        for ack in acks {
            self.consumer.complete_flush(ack);
        }
    }

    /// Adds a record to the batch, sending the batch first if the record would overflow it.
    async fn add(&mut self, record: Record) -> Flow {
        let Some((set, entry)) = self.prepare(record) else {
            return Flow::Go;
        };
        let mut flow = Flow::Go;
        let cost = self.batch.cost(&set, &entry);
        if self
            .batch
            .would_overflow(cost, self.cfg.max_entries, self.cfg.max_bytes)
        {
            flow = self.send_batch().await;
        }
        let cost = self.batch.cost(&set, &entry);
        self.batch.push(set, entry, cost);
        flow
    }

    /// The record's stream and entry, or `None` (counted) when it must be dropped.
    fn prepare(&mut self, mut record: Record) -> Option<(Arc<LabelSet>, EntryAdapter)> {
        let timestamp = Some(Timestamp::from_unix_nanos(record.unix_nanos()));
        let structured_metadata = self.cfg.labeler.metadata_for(&record);
        let Ok(set) = self.cfg.labeler.labels_for(&record) else {
            self.tally.too_many_streams += 1;
            return None;
        };
        let Some((line, cut)) = self.cfg.lines.render_counted(&mut record) else {
            self.tally.too_long += 1;
            return None;
        };
        if cut > 0 {
            self.tally.truncated += 1;
            self.tally.truncated_bytes += cut as u64;
        }
        let entry = EntryAdapter {
            timestamp,
            line,
            structured_metadata,
        };
        Some((set, entry))
    }

    fn report_tally(&mut self) {
        let tally = std::mem::take(&mut self.tally);
        self.consumer.dropped(tally.too_long, reason::LINE_TOO_LONG);
        self.consumer
            .dropped(tally.too_many_streams, reason::TOO_MANY_STREAMS);
        if tally.truncated > 0 {
            events::lines_truncated(self.consumer.id(), tally.truncated, tally.truncated_bytes);
        }
    }

    /// Encodes and pushes the pending batch (in parts if its body would pass the byte cap).
    async fn send_batch(&mut self) -> Flow {
        if self.batch.is_empty() {
            return Flow::Go;
        }
        let batch = self.batch.take();
        let mut parts = Vec::new();
        self.encode_split(batch, &mut parts);
        let mut parts = parts.into_iter();
        while let Some(part) = parts.next() {
            if self.push(&part).await == Flow::Stop {
                let left: u64 = parts.map(|p| p.entries).sum();
                self.consumer.dropped(left, reason::SHUTDOWN);
                return Flow::Stop;
            }
        }
        Flow::Go
    }

    /// Encodes `batch`; a body over the byte cap is split in halves until each part fits.
    fn encode_split(&self, batch: Batch, out: &mut Vec<Part>) {
        let (entries, streams) = (batch.entries() as u64, batch.streams() as u64);
        let id = self.consumer.id();
        match encode::encode(&batch.req, &batch.sets, self.cfg.encoding) {
            Ok(body) if body.len() <= self.cfg.max_bytes => out.push(Part {
                body: Bytes::from(body),
                entries,
                streams,
            }),
            Ok(_) if entries > 1 => {
                let (first, second) = batch.split();
                self.encode_split(first, out);
                self.encode_split(second, out);
            }
            Ok(body) => {
                let max = self.cfg.max_bytes;
                let error = format!(
                    "one entry encodes to {} bytes, over the batch byte limit of {max}",
                    body.len()
                );
                events::push_failed(id, 1, 0, &error, 0);
                self.consumer.dropped(1, reason::LINE_TOO_LONG);
            }
            Err(error) => {
                events::push_failed(id, entries, 0, &error, 0);
                self.consumer.dropped(entries, reason::NOT_RETRYABLE);
            }
        }
    }

    /// Pushes one part until it is delivered, rejected, out of retries or cut by shutdown.
    async fn push(&mut self, part: &Part) -> Flow {
        let mut last = Outcome::default();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // Refusals pile up while an outage lasts; report them as they happen.
            self.consumer.report_refusals();
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                () = shutdown_cut(&self.consumer) => {
                    return self.give_up_at_shutdown(part, attempt - 1, &last);
                }
                outcome = self.attempt(part.body.clone()) => outcome,
            };
            let delay = match self.judge(part, attempt, &outcome, started) {
                Ok(flow) => return flow,
                Err(delay) => delay,
            };
            if !self.backoff(later(delay)).await {
                return self.give_up_at_shutdown(part, attempt, &outcome);
            }
            last = outcome;
        }
    }

    /// Reports an attempt's outcome: `Ok` when the part is settled, `Err(delay)` to retry.
    fn judge(
        &mut self,
        part: &Part,
        attempt: u32,
        o: &Outcome,
        started: Instant,
    ) -> Result<Flow, Duration> {
        let id = self.consumer.id();
        let verdict = if o.status == 0 {
            Verdict::Retry
        } else {
            classify(o.status)
        };
        let fail = |why| {
            let status = u64::from(o.status);
            events::push_failed(id, part.entries, status, &o.message, attempt.into());
            self.consumer.dropped(part.entries, why);
            Ok(Flow::Go)
        };
        match verdict {
            Verdict::Delivered => {
                self.consumer.delivered(part.entries);
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
                Ok(Flow::Go)
            }
            Verdict::Rejected => fail(reason::REJECTED),
            Verdict::NotRetryable => fail(reason::NOT_RETRYABLE),
            Verdict::Retry if attempt > self.cfg.retry.max_retries => {
                fail(reason::RETRIES_EXHAUSTED)
            }
            Verdict::Retry => {
                let delay = self.cfg.retry.delay(attempt, o.retry_after, &mut self.rng);
                let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                let status = u64::from(o.status);
                events::push_retry(id, part.entries, attempt.into(), ms, status, &o.message);
                Err(delay)
            }
        }
    }

    /// Waits until `until` unless the shutdown deadline comes first: false means give up.
    async fn backoff(&self, until: Instant) -> bool {
        tokio::select! {
            biased;
            deadline = self.consumer.shutdown_requested() => {
                if until > deadline {
                    return false;
                }
                sleep_until(until).await;
                true
            }
            () = sleep_until(until) => true,
        }
    }

    fn give_up_at_shutdown(&self, part: &Part, attempts: u32, last: &Outcome) -> Flow {
        let mut error = String::from("the shutdown deadline passed before delivery");
        if !last.message.is_empty() {
            error.push_str("; last error: ");
            error.push_str(&last.message);
        }
        let status = u64::from(last.status);
        events::push_failed(
            self.consumer.id(),
            part.entries,
            status,
            &error,
            attempts.into(),
        );
        self.consumer.dropped(part.entries, reason::SHUTDOWN);
        Flow::Stop
    }

    /// One request: its status, Loki's message (for errors) and `Retry-After`.
    async fn attempt(&self, body: Bytes) -> Outcome {
        let request = self.cfg.client.post(self.cfg.url.clone());
        let sent = request.timeout(self.cfg.timeout).body(body).send().await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return transport_error(e, self.cfg.timeout),
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
