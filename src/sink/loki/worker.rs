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
//!
//! With a disk buffer (`durable.rs`), entries are appended to disk instead of the batch
//! and requests are read back from it; the batch then only carries what the buffer could
//! not take (full under a policy that keeps the oldest, or failed). While the buffer takes
//! entries, the worker takes from the queue whatever the request slots say: the disk, not
//! the queue, holds an outage's backlog.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

use super::batch::{self, Batch};
use super::durable::{Appended, DiskSetup, Durable};
use super::encode::{self, Encoder, InPlace};
use super::labels::{LabelSet, Labeler};
use super::line::Lines;
use super::push::{self, sleep_until, Done, Part, Pusher};
use super::retry::{RetryPolicy, Rng};
use super::Encoding;
use crate::events::{self, reason};
use crate::pipe::{Chunk, Consumer, Entry, Recv};
use crate::record::RecordRef;
use crate::Record;

mod from_disk;

/// Requests in flight at once by default: enough to hide a round trip behind encoding the
/// next batch, few enough not to crowd a Loki.
pub(crate) const DEFAULT_IN_FLIGHT: usize = 4;

/// Records moved into the batch after which the worker gives their room back to the queue.
const RELEASE_EVERY: usize = 1024;

/// Records taken after which the worker looks at the shutdown deadline again (it also
/// looks at the first record of every chunk, and at every flush marker).
const DEADLINE_EVERY: u32 = 32;

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
    /// The disk buffer, if the sink has one.
    pub(crate) disk: Option<DiskSetup>,
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
    /// Writes entries with their line rendered straight into the stream's buffer.
    in_place: InPlace,
    /// The line and the structured metadata of the entry being made, reused.
    line: Vec<u8>,
    metadata: Vec<u8>,
    tally: Tally,
    in_flight: JoinSet<Done>,
    /// Requests in flight with entries from memory (all of them without a disk buffer):
    /// what the memory way's limits count, so that it never waits on a disk request, which
    /// retries for as long as Loki fails.
    from_memory: usize,
    /// The disk mode, with a disk buffer.
    disk: Option<Durable>,
    max_in_flight: usize,
    /// Records (and their queue bytes) taken from the queue and not yet released.
    held: (usize, usize),
    /// The shutdown deadline passed: whatever is left is dropped.
    stopped: bool,
    /// Records to take before `abandoning` reads the deadline again.
    deadline_in: u32,
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
    let disk = cfg
        .disk
        .map(|setup| Durable::new(consumer.id().clone(), setup));
    let mut worker = Worker {
        disk,
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
        in_place: InPlace::default(),
        line: Vec::with_capacity(1024),
        metadata: Vec::new(),
        tally: Tally::default(),
        in_flight: JoinSet::new(),
        from_memory: 0,
        max_in_flight: cfg.max_in_flight.max(1),
        held: (0, 0),
        stopped: false,
        deadline_in: 0,
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

/// What a drop at encoding is charged to: the consumer, or a disk range's ticket.
type Dropped = (u64, &'static str);

/// What is left of adding a record after `Worker::add_now`.
enum Rest {
    /// Its entry, framed in `Worker::line`, for the batch after the one to send now.
    Overflowed(Arc<LabelSet>),
    /// Its line, to render apart, and its entry, to add to the batch or the disk buffer.
    Apart(Arc<LabelSet>),
}

/// How [`Worker::add_in_place`] went.
enum InPlaceStep {
    /// Not tried (no stream for the record in the batch, or an odd timestamp).
    Skipped,
    /// The record is added, or refused and counted.
    Done,
    /// The entry would overflow the batch: it is framed in `Worker::line`, for the next.
    Overflowed,
}

impl Worker {
    async fn main_loop(&mut self) {
        let mut chunk = Chunk::with_room();
        loop {
            let due = self.due();
            // A timer already due is not ready at its first poll: during a burst the queue
            // branch would win every time, and what waits on disk would not be sent.
            if self.disk.is_some() && due.is_some_and(|d| d <= Instant::now()) {
                self.send_due().await;
                continue;
            }
            let retry = self.disk.as_ref().and_then(Durable::retry_at);
            tokio::select! {
                biased;
                deadline = self.consumer.shutdown_requested() => {
                    return self.close(Some(deadline), &mut chunk).await;
                }
                joined = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    self.finished(joined);
                }
                // A request started retrying: look again at how many may be in flight.
                () = self.pusher.trouble.notified() => {}
                () = wait_until(due) => self.send_due().await,
                () = wait_until(retry) => {
                    if let Some(disk) = self.disk.as_mut() {
                        disk.try_again(&self.consumer);
                    }
                }
                received = self.consumer.recv(&mut chunk), if self.may_take() => match received {
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

    /// When to send: the batch's timer, or entries waiting on disk with a request slot free.
    fn due(&self) -> Option<Instant> {
        let batch = self.batch.due(self.wait);
        let disk = self
            .disk
            .as_ref()
            .filter(|_| self.in_flight.len() < self.allowed_in_flight())
            .and_then(|d| d.due(self.wait, self.max_entries, self.max_bytes));
        match (batch, disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether to take more from the queue. Without a disk buffer (or while it fails),
    /// only with a request slot free: records left in the queue can still be evicted
    /// (`DropOldest`) or shed, and the queue's bound, not the worker, holds the backlog
    /// during an outage. With one, while it has room: the disk holds the backlog.
    fn may_take(&self) -> bool {
        match &self.disk {
            Some(disk) if disk.accepting() => disk.has_room(),
            _ => self.from_memory < self.allowed_in_flight(),
        }
    }

    /// The batch (if due) and what waits on disk.
    async fn send_due(&mut self) {
        if self
            .batch
            .due(self.wait)
            .is_some_and(|d| d <= Instant::now())
        {
            self.send_batch().await;
        }
        self.send_from_disk();
    }

    /// True when a record taken now is dropped at once (the shutdown deadline passed).
    /// With a working disk buffer that has room never: it is appended, and stays there if
    /// not sent.
    ///
    /// The deadline is read (under the queue's lock) for the first record of a chunk and
    /// then every [`DEADLINE_EVERY`] records: the records taken in between once it passed
    /// go to the batch like any other, and are accounted for as its records are (the close
    /// does not send it after the deadline and reports them dropped, `shutdown`; a batch
    /// they fill is sent in a request the deadline cuts).
    #[inline]
    fn abandoning(&mut self) -> bool {
        // The common case, without a call.
        if self.deadline_in > 0 && !self.stopped && self.disk.is_none() {
            self.deadline_in -= 1;
            return false;
        }
        self.abandoning_now()
    }

    /// [`abandoning`](Self::abandoning) past its common case.
    fn abandoning_now(&mut self) -> bool {
        if self
            .disk
            .as_ref()
            .is_some_and(|d| d.accepting() && d.has_room())
        {
            return false;
        }
        if !self.stopped {
            if self.deadline_in == 0 {
                self.deadline_in = DEADLINE_EVERY;
                self.stopped = self.deadline_passed();
            } else {
                self.deadline_in -= 1;
            }
        }
        self.stopped
    }

    /// Pushes what is left until `deadline`, reports the rest, and emits `sink_closed`.
    /// With a disk buffer, what is not delivered by then stays on disk, reported persisted.
    async fn close(&mut self, deadline: Option<Instant>, chunk: &mut Chunk) {
        let passed = || deadline.is_some_and(|d| Instant::now() >= d);
        self.deadline_in = 0;
        while !self.abandoning() && self.consumer.try_recv(chunk) {
            self.process(chunk).await;
        }
        if !self.stopped && !passed() {
            self.send_batch().await;
        }
        if self.disk.is_some() {
            self.push_disk_until(deadline).await;
        }
        // Each request cuts itself at the deadline.
        while !self.in_flight.is_empty() {
            let joined = self.in_flight.join_next().await;
            self.finished(joined);
        }
        if let Some(disk) = self.disk.take() {
            disk.close(&self.consumer, &mut self.batch);
        }
        let left = self.batch.take().entries() as u64;
        self.consumer.dropped(left, reason::SHUTDOWN);
        self.consumer.abandon_queue();
        self.report_tally();
        self.consumer.finish();
    }

    /// A push task ended: a disk part settles its range; a panic in one is the worker's
    /// panic (its guard reports it).
    fn finished(&mut self, joined: Option<Result<Done, tokio::task::JoinError>>) {
        match joined {
            Some(Ok(done)) => {
                if done.ticket.is_none() {
                    self.from_memory -= 1;
                } else if let Some(disk) = self.disk.as_mut() {
                    disk.finished(&done, &self.consumer);
                }
            }
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(_)) | None => {}
        }
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
        self.deadline_in = 0;
        for (entry, size) in chunk.drain() {
            if let Entry::Flush(ack) = entry {
                self.stopped = self.stopped || self.deadline_passed();
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
            if self.abandoning() {
                abandoned += 1;
                continue;
            }
            match entry {
                // Most records take the way that needs no waiting, without a future.
                Entry::Event(event) => {
                    let record = RecordRef::Event(event);
                    if let Err(rest) = self.add_now(&record) {
                        self.add(&record, rest).await;
                    }
                }
                Entry::Record(record) => self.add_any(&RecordRef::Owned(&record)).await,
                Entry::Line(line) => {
                    let text = String::from_utf8_lossy(line).into_owned();
                    let record = Record::new(tracing::Level::INFO, text);
                    self.add_any(&RecordRef::Owned(&record)).await;
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
        if let Some(disk) = self.disk.as_mut() {
            disk.commit(&self.consumer, &mut self.batch);
        }
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

    /// Waits for every request in flight to settle, and with a disk buffer sends and
    /// waits for everything on it (a flush's promise).
    async fn drain_in_flight(&mut self) {
        loop {
            self.send_from_disk();
            // What a failed commit just took back from the buffer.
            self.send_batch().await;
            if self.in_flight.is_empty() {
                return;
            }
            let joined = self.in_flight.join_next().await;
            self.finished(joined);
        }
    }

    /// Adds a record to the batch, sending the batch first if the record would overflow it.
    async fn add_any(&mut self, record: &RecordRef<'_>) {
        if let Err(rest) = self.add_now(record) {
            self.add(record, rest).await;
        }
    }

    /// The part of adding a record that never waits: its labels and metadata, and its
    /// entry when it can be written in place (`add_in_place`). `Err` says what is left
    /// for [`add`](Self::add).
    fn add_now(&mut self, record: &RecordRef<'_>) -> Result<(), Rest> {
        let Ok(set) = self.labeler.labels_for(record) else {
            self.tally.too_many_streams += 1;
            return Ok(());
        };
        self.metadata.clear();
        self.labeler.metadata_into(record, &mut self.metadata);
        if self.disk.as_ref().is_some_and(Durable::accepting) {
            return Err(Rest::Apart(set));
        }
        match self.add_in_place(&set, record) {
            InPlaceStep::Done => Ok(()),
            InPlaceStep::Overflowed => Err(Rest::Overflowed(set)),
            InPlaceStep::Skipped => Err(Rest::Apart(set)),
        }
    }

    /// The rest of adding a record after [`add_now`](Self::add_now), sending the batch
    /// first if the entry would overflow it. The entry is written once, in its wire form,
    /// into its stream's buffer: with its line rendered there when the batch has the
    /// stream (`add_in_place`), else rendered apart and copied (the first entry of a
    /// stream, and every entry for the disk buffer).
    async fn add(&mut self, record: &RecordRef<'_>, rest: Rest) {
        let set = match rest {
            Rest::Overflowed(set) => {
                self.release();
                self.send_batch().await;
                self.batch.push_framed(&set, &self.line);
                return;
            }
            Rest::Apart(set) => set,
        };
        let Some(cut) = self.lines.render_into(record, &mut self.line) else {
            self.tally.too_long += 1;
            return;
        };
        if cut > 0 {
            self.tally.truncated += 1;
            self.tally.truncated_bytes += cut as u64;
        }
        if let Some(disk) = self.disk.as_mut().filter(|d| d.accepting()) {
            let nanos = record.unix_nanos();
            disk.entry.clear();
            encode::put_entry(&mut disk.entry, nanos, &self.line, &self.metadata);
            match disk.append(&set, nanos, &self.consumer, &mut self.batch) {
                Appended::Stored => disk.commit_if_big(&self.consumer, &mut self.batch),
                Appended::Dropped(_) => self.tally.too_long += 1,
                Appended::Spill => {
                    let framed = std::mem::take(&mut disk.entry);
                    self.add_framed(&set, &framed).await;
                    if let Some(disk) = self.disk.as_mut() {
                        disk.entry = framed;
                    }
                }
            }
            return;
        }
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

    /// Writes the record's entry straight into its stream's buffer, its line rendered in
    /// place, when the batch already has that stream (so that taking the entry back leaves
    /// the batch as it was). An entry that would overflow the batch is taken back into
    /// `self.line`, framed, for the caller to add after sending the batch: the same checks,
    /// on the same sizes, as [`add`](Self::add)'s other way.
    fn add_in_place(&mut self, set: &Arc<LabelSet>, record: &RecordRef<'_>) -> InPlaceStep {
        let Some(buf) = self.batch.existing_stream_buf(set) else {
            return InPlaceStep::Skipped;
        };
        let start = buf.len();
        if !self.in_place.begin(buf, record.unix_nanos()) {
            return InPlaceStep::Skipped;
        }
        let line_at = buf.len();
        let Some(cut) = self.lines.append(record, buf) else {
            buf.truncate(start);
            self.tally.too_long += 1;
            return InPlaceStep::Done;
        };
        if cut > 0 {
            self.tally.truncated += 1;
            self.tally.truncated_bytes += cut as u64;
        }
        let line_len = buf.len() - line_at;
        let n = self.in_place.finish(buf, &self.metadata);
        // `Batch::cost` for a stream the batch has: the entry alone.
        let cost = batch::entry_len(line_len, self.metadata.len());
        if self
            .batch
            .would_overflow(cost, self.max_entries, self.max_bytes)
        {
            if let Some(buf) = self.batch.existing_stream_buf(set) {
                self.line.clear();
                self.line.extend_from_slice(&buf[start..]);
                buf.truncate(start);
            }
            return InPlaceStep::Overflowed;
        }
        self.batch.added(n);
        InPlaceStep::Done
    }

    /// Adds an entry already framed to the batch, sending the batch first if it would
    /// overflow: what the disk buffer could not take.
    async fn add_framed(&mut self, set: &Arc<LabelSet>, framed: &[u8]) {
        let cost = self.batch.cost(set, framed.len());
        if self
            .batch
            .would_overflow(cost, self.max_entries, self.max_bytes)
        {
            self.send_batch().await;
        }
        self.batch.push_framed(set, framed);
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
            let part = match part {
                Ok(part) => part,
                Err((n, why)) => {
                    self.consumer.dropped(n, why);
                    continue;
                }
            };
            while self.from_memory >= self.allowed_in_flight() {
                let joined = self.in_flight.join_next().await;
                self.finished(joined);
            }
            self.spawn(part);
        }
    }

    fn spawn(&mut self, part: Part) {
        if part.ticket.is_none() {
            self.from_memory += 1;
        }
        let rng = Rng::new();
        self.in_flight
            .spawn(push::push(Arc::clone(&self.pusher), part, rng));
    }

    /// Encodes `batch`; a body over the byte cap is split in halves until each part fits.
    /// What cannot be encoded comes out as `Err`, to be reported dropped.
    fn encode_split(&mut self, batch: Batch, out: &mut Vec<Result<Part, Dropped>>) {
        let (entries, streams) = (batch.entries() as u64, batch.streams() as u64);
        let id = self.consumer.id();
        match self.encoder.encode(batch.parts(), self.encoding) {
            Ok(body) if body.len() <= self.max_bytes => out.push(Ok(Part {
                body: Bytes::from(body),
                entries,
                streams,
                ticket: None,
            })),
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
                out.push(Err((1, reason::LINE_TOO_LONG)));
            }
            Err(error) => {
                events::push_failed(id, entries, 0, &error, 0);
                out.push(Err((entries, reason::NOT_RETRYABLE)));
            }
        }
    }
}
