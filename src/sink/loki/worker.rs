//! The Loki sink's worker: turns records into entries, batches them, and hands each full
//! batch to a push task (`push.rs`), several in flight at once, accounting for every record.
//!
//! It runs on the sink's own thread and runtime (`crate::pipe::spawn_worker`), so its
//! timers are real time. Nothing here panics: every failure becomes an event and, where
//! records are lost, a `records_dropped` report, so `accepted == delivered + dropped` holds
//! whenever the worker is idle.
//!
//! Several requests in flight reorder entries of a stream by at most a few requests, which
//! Loki accepts since 2.4 (`unordered_writes`, on by default). A flush waits for every
//! request in flight; the shutdown deadline cuts each of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::batch::{self, Batch};
use super::encode::{self, Encoder};
use super::labels::Labeler;
use super::line::Lines;
use super::push::{self, sleep_until, Part, Pusher};
use super::retry::{RetryPolicy, Rng};
use super::Encoding;
use crate::events::{self, reason};
use crate::pipe::{Chunk, Consumer, Entry, Recv};
use crate::record::RecordRef;
use crate::Record;

/// Requests in flight at once by default: enough to hide a round trip behind encoding the
/// next batch, few enough not to crowd a Loki.
pub(crate) const DEFAULT_IN_FLIGHT: usize = 4;

/// Records moved into the batch after which the worker gives their room back to the queue.
const RELEASE_EVERY: usize = 1024;

/// Everything the worker is started with.
pub(crate) struct Config {
    pub(crate) client: reqwest::Client,
    pub(crate) url: reqwest::Url,
    pub(crate) encoding: Encoding,
    pub(crate) max_entries: usize,
    pub(crate) max_bytes: usize,
    pub(crate) wait: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_in_flight: usize,
    pub(crate) retry: RetryPolicy,
    pub(crate) lines: Lines,
    pub(crate) labeler: Labeler,
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
    consumer: Consumer,
    pusher: Arc<Pusher>,
    encoding: Encoding,
    max_entries: usize,
    max_bytes: usize,
    wait: Duration,
    lines: Lines,
    labeler: Labeler,
    batch: Batch,
    encoder: Encoder,
    /// The line and the structured metadata of the entry being made, reused.
    line: Vec<u8>,
    metadata: Vec<u8>,
    tally: Tally,
    in_flight: JoinSet<()>,
    max_in_flight: usize,
    /// Records (and their queue bytes) taken from the queue and not yet released.
    held: (usize, usize),
    /// The shutdown deadline passed: whatever is left is dropped.
    stopped: bool,
}

/// The worker's whole life.
pub(crate) async fn run(consumer: Consumer, cfg: Config) {
    let pusher = Pusher::new(
        consumer.clone(),
        cfg.client,
        cfg.url,
        cfg.timeout,
        cfg.retry,
    );
    let mut worker = Worker {
        consumer,
        pusher: Arc::new(pusher),
        encoding: cfg.encoding,
        max_entries: cfg.max_entries,
        max_bytes: cfg.max_bytes,
        wait: cfg.wait,
        lines: cfg.lines,
        labeler: cfg.labeler,
        batch: Batch::default(),
        encoder: Encoder::default(),
        line: Vec::with_capacity(1024),
        metadata: Vec::new(),
        tally: Tally::default(),
        in_flight: JoinSet::new(),
        max_in_flight: cfg.max_in_flight.max(1),
        held: (0, 0),
        stopped: false,
    };
    worker.main_loop().await;
}

/// Waits until `at`, or forever when there is nothing to wait for.
async fn wait_until(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A finished push task: a panic in one is the worker's panic (its guard reports it).
fn settle(joined: Option<Result<(), tokio::task::JoinError>>) {
    if let Some(Err(e)) = joined {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

impl Worker {
    async fn main_loop(&mut self) {
        let mut chunk = Chunk::default();
        loop {
            let due = self.batch.due(self.wait);
            tokio::select! {
                biased;
                deadline = self.consumer.shutdown_requested() => {
                    return self.close(Some(deadline), &mut chunk).await;
                }
                joined = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    settle(joined);
                }
                // A request started retrying: look again at how many may be in flight.
                () = self.pusher.trouble.notified() => {}
                () = wait_until(due) => self.send_batch().await,
                // Take more from the queue only with a request slot free: records left in
                // the queue can still be evicted (`DropOldest`) or shed, and the queue's
                // bound, not the worker, holds the backlog during an outage.
                received = self.consumer.recv(&mut chunk),
                    if self.in_flight.len() < self.allowed_in_flight() => match received {
                    Recv::Items => self.process(&mut chunk).await,
                    // The queue is closed and drained: every handle is gone, or a shutdown
                    // closed it (racing the branch above), whose deadline then still holds.
                    Recv::Closed => {
                        let deadline = self.consumer.shutdown_deadline();
                        return self.close(deadline, &mut chunk).await;
                    }
                },
            }
        }
    }

    /// Pushes what is left until `deadline`, reports the rest, and emits `sink_closed`.
    async fn close(&mut self, deadline: Option<Instant>, chunk: &mut Chunk) {
        let passed = || deadline.is_some_and(|d| Instant::now() >= d);
        while !self.stopped && !passed() && self.consumer.try_recv(chunk) {
            self.process(chunk).await;
        }
        if !self.stopped && !passed() {
            self.send_batch().await;
        }
        // Each request cuts itself at the deadline.
        while !self.in_flight.is_empty() {
            settle(self.in_flight.join_next().await);
        }
        let left = self.batch.take().entries() as u64;
        self.consumer.dropped(left, reason::SHUTDOWN);
        self.consumer.abandon_queue();
        self.report_tally();
        self.consumer.finish();
    }

    fn deadline_passed(&self) -> bool {
        self.consumer
            .shutdown_deadline()
            .is_some_and(|d| Instant::now() >= d)
    }

    /// Gives the queue back the room of the records moved into the batch.
    fn release(&mut self) {
        let (records, bytes) = std::mem::take(&mut self.held);
        self.consumer.release(records, bytes);
    }

    /// Handles entries in order. A flush marker sends the pending batch at once and is
    /// acknowledged once everything in flight is delivered or reported.
    async fn process(&mut self, chunk: &mut Chunk) {
        let mut abandoned = 0;
        for (entry, size) in chunk.drain() {
            if let Entry::Flush(ack) = entry {
                if !self.stopped {
                    self.release();
                    self.send_batch().await;
                    self.drain_in_flight().await;
                }
                self.report_tally();
                self.consumer
                    .dropped(std::mem::take(&mut abandoned), reason::SHUTDOWN);
                self.consumer.complete_flush(ack);
                continue;
            }
            self.held.0 += 1;
            self.held.1 += size;
            if self.stopped || self.deadline_passed() {
                self.stopped = true;
                abandoned += 1;
                continue;
            }
            match entry {
                Entry::Event(event) => self.add(&RecordRef::Event(event)).await,
                Entry::Record(record) => self.add(&RecordRef::Owned(&record)).await,
                Entry::Line(line) => {
                    let text = String::from_utf8_lossy(line).into_owned();
                    let record = Record::new(tracing::Level::INFO, text);
                    self.add(&RecordRef::Owned(&record)).await;
                }
                Entry::Flush(_) => unreachable!("handled above"),
            }
            // Room back to waiting writers as entries reach the batch, not only per chunk
            // or batch: with a small queue, `Block`'s waits stay short.
            if self.held.0 >= RELEASE_EVERY {
                self.release();
            }
        }
        chunk.clear();
        self.consumer.dropped(abandoned, reason::SHUTDOWN);
        self.release();
        self.report_tally();
    }

    /// Requests that may be in flight now: all of `max_in_flight` while Loki answers, one
    /// while a request is retrying (an outage or overload: more requests would only hold
    /// more records that `DropOldest` could otherwise replace, and load a struggling Loki).
    fn allowed_in_flight(&self) -> usize {
        if self.pusher.in_trouble() {
            1
        } else {
            self.max_in_flight
        }
    }

    /// Waits for every request in flight to settle (a flush's promise).
    async fn drain_in_flight(&mut self) {
        while !self.in_flight.is_empty() {
            settle(self.in_flight.join_next().await);
        }
    }

    /// Adds a record to the batch, sending the batch first if the record would overflow it.
    /// The entry is written once, in its wire form, into its stream's buffer.
    async fn add(&mut self, record: &RecordRef<'_>) {
        let Ok(set) = self.labeler.labels_for(record) else {
            self.tally.too_many_streams += 1;
            return;
        };
        let Some(cut) = self.lines.render_into(record, &mut self.line) else {
            self.tally.too_long += 1;
            return;
        };
        if cut > 0 {
            self.tally.truncated += 1;
            self.tally.truncated_bytes += cut as u64;
        }
        self.metadata.clear();
        self.labeler.metadata_into(record, &mut self.metadata);
        let len = batch::entry_len(self.line.len(), self.metadata.len());
        let cost = self.batch.cost(&set, len);
        if self
            .batch
            .would_overflow(cost, self.max_entries, self.max_bytes)
        {
            self.release();
            self.send_batch().await;
        }
        let buf = self.batch.stream_buf(&set);
        let n = encode::put_entry(buf, record.unix_nanos(), &self.line, &self.metadata);
        self.batch.added(n);
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

    /// Encodes the pending batch (in parts if its body would pass the byte cap) and starts
    /// a push task for each part, waiting for a free slot when enough are in flight.
    async fn send_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = self.batch.take();
        let mut parts = Vec::new();
        self.encode_split(batch, &mut parts);
        for part in parts {
            while self.in_flight.len() >= self.allowed_in_flight() {
                settle(self.in_flight.join_next().await);
            }
            let rng = Rng::new();
            self.in_flight
                .spawn(push::push(Arc::clone(&self.pusher), part, rng));
        }
    }

    /// Encodes `batch`; a body over the byte cap is split in halves until each part fits.
    fn encode_split(&mut self, batch: Batch, out: &mut Vec<Part>) {
        let (entries, streams) = (batch.entries() as u64, batch.streams() as u64);
        let id = self.consumer.id();
        match self.encoder.encode(batch.parts(), self.encoding) {
            Ok(body) if body.len() <= self.max_bytes => out.push(Part {
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
                let max = self.max_bytes;
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
}
