//! The queue between a sink's handles and its worker: admission, eviction and every count,
//! under one lock. Pure: no threads, no waiting, no events (the lifecycle in
//! `crate::worker` does those).
//!
//! Entries live in a [`Chunk`]: one byte string holding every entry in order (events in the
//! layer's compact form, preformatted lines, and tags for owned records and flush markers),
//! with the events' `&'static Metadata` and the owned records beside it. Handing the worker
//! its work is one swap of the pending chunk for the worker's empty one, so neither side
//! allocates in a steady state. The byte bound covers what is queued *and* what the worker
//! has taken but not yet finished ([`Queue::release`]), so memory stays within it whatever
//! the worker does.
//!
//! Every record's fate is counted here: `accepted` only when it is queued,
//! and `delivered` or `dropped` exactly once after that, so
//! `accepted == delivered + dropped + pending` always holds, and at rest `pending == 0`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Metadata;

use crate::events::reason;
use crate::record::{EventRef, Record};

const EVENT: u8 = 1;
const RECORD: u8 = 2;
const LINE: u8 = 3;
const FLUSH: u8 = 4;
/// An evicted entry of each kind (drop-oldest): skipped by the reader.
const DEAD: u8 = 0x80;

/// Bytes an event takes in the queue besides its encoding: the tag, the metadata count,
/// the length, and one pointer per metadata.
const EVENT_OVERHEAD: usize = 6;
const META_SIZE: usize = std::mem::size_of::<&'static Metadata<'static>>();

/// What a sink does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse the new record and report it dropped (`queue_full`).
    DropNewest,
    /// Make room by dropping the oldest queued records, reported as `buffer_full_oldest`.
    DropOldest,
    /// Make the writer wait for room, for as long as it takes. `try_write` still drops the
    /// newest record instead of waiting.
    Wait,
    /// Make the writer wait for room, but for at most the given time: past it the record is
    /// dropped and the sink *sheds load*: later writes are dropped at once, without
    /// waiting, until the worker has emptied half the queue. Every shed record is reported
    /// (`records_dropped`, reason `stalled`; then `queue_stalled` once the worker has
    /// room again). So a burst the sink can absorb slows the callers to its pace and loses
    /// nothing, and a stalled disk or an outage costs each caller at most one wait.
    /// `try_write` drops the newest record instead of waiting. The default of both sinks
    /// (see each builder's `overflow` for the bound).
    Block(Duration),
}

/// A snapshot of a sink's counters.
///
/// `accepted` counts every record the sink took; each of them ends up in `delivered` or
/// `dropped`, so at any quiescent point (after `flush()` or shutdown)
/// `accepted == delivered + dropped`. A closed sink accepts nothing: writing to it returns
/// an error of kind [`Closed`](crate::ErrorKind::Closed), leaves those three unchanged
/// (final since `sink_closed`) and counts the write in `refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SinkStats {
    /// Records handed to the sink and taken by it.
    pub accepted: u64,
    /// Records delivered (written to the OS, or pushed with a 2xx).
    pub delivered: u64,
    /// Records reported dropped, for any reason.
    pub dropped: u64,
    /// Writes refused because the sink was closed (never accepted, so not in the totals).
    pub refused: u64,
}

impl SinkStats {
    /// Records accepted but not yet delivered or dropped (queued or in flight).
    pub fn pending(&self) -> u64 {
        self.accepted.saturating_sub(self.delivered + self.dropped)
    }
}

/// A flush marker: completed once everything queued before it is delivered or dropped.
pub(crate) struct FlushAck {
    pub(crate) started: Instant,
    pub(crate) tx: oneshot::Sender<()>,
}

/// One entry read from a [`Chunk`].
pub(crate) enum Entry<'a> {
    /// An event captured by the layer.
    Event(EventRef<'a>),
    /// A record written by hand.
    Record(Record),
    /// A preformatted line (without its newline).
    Line(&'a [u8]),
    /// A flush marker.
    Flush(FlushAck),
}

/// A run of queued entries, in order.
#[derive(Default)]
pub(crate) struct Chunk {
    bytes: Vec<u8>,
    metas: Vec<&'static Metadata<'static>>,
    records: VecDeque<Record>,
    acks: VecDeque<FlushAck>,
    /// Live records (events, records, lines) in the chunk, and the bytes they count at.
    live: usize,
    counted: usize,
    /// Where drop-oldest looks for the next victim.
    evict_at: usize,
}

impl Chunk {
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// `entry` is sealed by [`seal_event`]: its header is in place, so this is two copies.
    fn push_event(&mut self, entry: &[u8], metas: &[&'static Metadata<'static>]) {
        self.bytes.extend_from_slice(entry);
        self.metas.extend_from_slice(metas);
        self.live += 1;
    }

    fn push_line(&mut self, line: &[u8]) {
        self.bytes.push(LINE);
        self.bytes
            .extend_from_slice(&len32(line.len()).to_le_bytes());
        self.bytes.extend_from_slice(line);
        self.live += 1;
    }

    fn push_record(&mut self, record: Record, size: usize) {
        self.bytes.push(RECORD);
        self.bytes.extend_from_slice(&len32(size).to_le_bytes());
        self.records.push_back(record);
        self.live += 1;
    }

    fn push_flush(&mut self, ack: FlushAck) {
        self.bytes.push(FLUSH);
        self.acks.push_back(ack);
    }

    /// Marks the oldest live record dead; returns the bytes it was counted at.
    fn evict_oldest(&mut self) -> Option<usize> {
        while self.evict_at < self.bytes.len() {
            let at = self.evict_at;
            let tag = self.bytes[at];
            let (len, size) = entry_len(&self.bytes[at..]);
            self.evict_at += len;
            if matches!(tag, EVENT | RECORD | LINE) {
                self.bytes[at] = tag | DEAD;
                self.live -= 1;
                return Some(size);
            }
        }
        None
    }

    /// Reads the entries in order, each with the bytes it was counted at. Owned records and
    /// flush markers are moved out; call [`clear`](Self::clear) afterwards.
    pub(crate) fn drain(&mut self) -> Drain<'_> {
        Drain {
            bytes: &self.bytes,
            pos: 0,
            metas: &self.metas,
            records: &mut self.records,
            acks: &mut self.acks,
        }
    }

    /// Empties the chunk, keeping a reasonable capacity for the next round.
    pub(crate) fn clear(&mut self) {
        const KEEP: usize = 4 << 20;
        self.bytes.clear();
        self.metas.clear();
        self.records.clear();
        self.acks.clear();
        self.live = 0;
        self.counted = 0;
        self.evict_at = 0;
        if self.bytes.capacity() > KEEP {
            self.bytes.shrink_to(KEEP);
        }
        if self.metas.capacity() > KEEP / META_SIZE {
            self.metas.shrink_to(KEEP / META_SIZE);
        }
    }

    /// Takes every flush marker out (for a queue that will never be read again).
    fn take_acks(&mut self) -> Vec<FlushAck> {
        self.acks.drain(..).collect()
    }
}

/// Room to leave at the start of an event's encoding for [`seal_event`] to fill.
pub(crate) const EVENT_HEADER: usize = EVENT_OVERHEAD;

/// Writes the queue's header into the first [`EVENT_HEADER`] bytes of an encoded event (the
/// layer leaves them free), so queueing it is one copy. At most 255 metadata.
pub(crate) fn seal_event(entry: &mut [u8], metas: usize) {
    let len = len32(entry.len() - EVENT_HEADER).to_le_bytes();
    entry[..EVENT_HEADER].copy_from_slice(&[
        EVENT,
        u8::try_from(metas).unwrap_or(u8::MAX),
        len[0],
        len[1],
        len[2],
        len[3],
    ]);
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// An entry's length in the byte string and the bytes it is counted at.
fn entry_len(bytes: &[u8]) -> (usize, usize) {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    match bytes[0] & !DEAD {
        EVENT => {
            let metas = usize::from(bytes.get(1).copied().unwrap_or(0));
            let len = u32_at(2);
            (
                EVENT_OVERHEAD + len,
                EVENT_OVERHEAD + len + metas * META_SIZE,
            )
        }
        LINE => {
            let len = u32_at(1);
            (5 + len, 5 + len)
        }
        RECORD => (5, u32_at(1)),
        _ => (1, 0),
    }
}

/// Reads a chunk's entries in order.
pub(crate) struct Drain<'a> {
    bytes: &'a [u8],
    pos: usize,
    metas: &'a [&'static Metadata<'static>],
    records: &'a mut VecDeque<Record>,
    acks: &'a mut VecDeque<FlushAck>,
}

impl<'a> Iterator for Drain<'a> {
    /// The entry, and the bytes it was counted at (0 for flush markers).
    type Item = (Entry<'a>, usize);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.bytes.get(self.pos..).filter(|r| !r.is_empty())?;
            let tag = rest[0];
            let (len, size) = entry_len(rest);
            self.pos += len;
            match tag {
                EVENT => {
                    let n = usize::from(rest[1]);
                    let (metas, others) = self.metas.split_at(n.min(self.metas.len()));
                    self.metas = others;
                    let event = EventRef::new(&rest[EVENT_OVERHEAD..len], metas);
                    return Some((Entry::Event(event), size));
                }
                LINE => return Some((Entry::Line(&rest[5..len]), size)),
                RECORD => {
                    let record = self.records.pop_front()?;
                    return Some((Entry::Record(record), size));
                }
                FLUSH => return Some((Entry::Flush(self.acks.pop_front()?), 0)),
                t if t == EVENT | DEAD => {
                    let n = usize::from(rest[1]);
                    self.metas = &self.metas[n.min(self.metas.len())..];
                }
                t if t == RECORD | DEAD => {
                    self.records.pop_front();
                }
                _ => {}
            }
        }
    }
}

/// Queue limits and policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueConfig {
    pub(crate) max_records: usize,
    pub(crate) max_bytes: usize,
    pub(crate) policy: OverflowPolicy,
}

/// Why a record could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No room now (the caller may wait, per the policy).
    Full,
    /// The sink is shedding load after a stall: drop at once.
    Shedding,
    /// The sink is closed (or its worker failed).
    Closed,
}

/// What a producer puts in the queue.
pub(crate) enum Put<'a> {
    /// An event sealed by [`seal_event`], and its metadata.
    Event(&'a [u8], &'a [&'static Metadata<'static>]),
    Line(&'a [u8]),
    /// Boxed, so a `Put` stays small on the layer's hot path, where it is moved around.
    Record(Box<Record>),
}

impl Put<'_> {
    /// The bytes the entry is counted at.
    pub(crate) fn size(&self) -> usize {
        match self {
            Put::Event(entry, metas) => entry.len() + metas.len() * META_SIZE,
            Put::Line(line) => 5 + line.len(),
            Put::Record(r) => r.approx_size(),
        }
    }
}

/// The counters; `unreported` are drops the producers counted and the worker has yet to
/// report (producers never emit events).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) accepted: u64,
    pub(crate) delivered: u64,
    pub(crate) dropped: u64,
    pub(crate) refused: u64,
    /// Dropped with reason `shutdown`.
    pub(crate) dropped_shutdown: u64,
    unreported_full: u64,
    unreported_oldest: u64,
    unreported_stalled: u64,
    /// Records shed in the current stall; reported as `queue_stalled` when it ends.
    stall_shed: u64,
    stall_ended: Option<u64>,
}

/// The queue and the sink's lifecycle flags, all behind one lock.
#[allow(clippy::struct_excessive_bools)] // four distinct moments of one lifecycle
pub(crate) struct Queue {
    pending: Chunk,
    /// Bytes and records queued or taken by the worker and not yet released.
    used_bytes: usize,
    used_records: usize,
    config: QueueConfig,
    pub(crate) counts: Counts,
    /// No more records are accepted.
    pub(crate) closed: bool,
    /// The shutdown deadline, once a shutdown was asked for.
    pub(crate) shutdown: Option<Instant>,
    /// The worker has finished; nothing will read the queue again.
    pub(crate) exited: bool,
    /// Why the worker failed, if it did.
    pub(crate) failed: Option<Arc<str>>,
    /// The worker has emitted `sink_closed`: the totals are final.
    pub(crate) done: bool,
    shedding: bool,
    /// Producers waiting for room.
    pub(crate) waiting: usize,
    /// Refused writes already reported (`writes_refused`), and when.
    pub(crate) refused_reported: u64,
    pub(crate) refused_reported_at: Option<Instant>,
}

impl Queue {
    pub(crate) fn new(config: QueueConfig) -> Self {
        Queue {
            pending: Chunk::default(),
            used_bytes: 0,
            used_records: 0,
            config: QueueConfig {
                max_records: config.max_records.max(1),
                max_bytes: config.max_bytes.max(1),
                policy: config.policy,
            },
            counts: Counts::default(),
            closed: false,
            shutdown: None,
            exited: false,
            failed: None,
            done: false,
            shedding: false,
            waiting: 0,
            refused_reported: 0,
            refused_reported_at: None,
        }
    }

    pub(crate) fn policy(&self) -> OverflowPolicy {
        self.config.policy
    }

    pub(crate) fn stats(&self) -> SinkStats {
        SinkStats {
            accepted: self.counts.accepted,
            delivered: self.counts.delivered,
            dropped: self.counts.dropped,
            refused: self.counts.refused,
        }
    }

    fn fits(&self, size: usize) -> bool {
        self.used_records < self.config.max_records
            && (self.used_records == 0 || self.used_bytes + size <= self.config.max_bytes)
    }

    /// Queues `put` if there is room (making room under drop-oldest); on success it is
    /// accepted. Nothing is counted on refusal: see [`refuse`](Self::refuse).
    pub(crate) fn try_put<'p>(&mut self, put: Put<'p>) -> Result<bool, (Refusal, Put<'p>)> {
        if self.closed {
            return Err((Refusal::Closed, put));
        }
        let size = put.size();
        if self.shedding {
            return Err((Refusal::Shedding, put));
        }
        if !self.fits(size) {
            if self.config.policy != OverflowPolicy::DropOldest {
                return Err((Refusal::Full, put));
            }
            while !self.fits(size) {
                let Some(freed) = self.pending.evict_oldest() else {
                    break;
                };
                self.used_bytes -= freed;
                self.used_records -= 1;
                self.pending.counted -= freed;
                self.counts.dropped += 1;
                self.counts.unreported_oldest += 1;
            }
            if !self.fits(size) {
                return Err((Refusal::Full, put));
            }
        }
        let was_empty = self.pending.is_empty();
        match put {
            Put::Event(bytes, metas) => self.pending.push_event(bytes, metas),
            Put::Line(line) => self.pending.push_line(line),
            Put::Record(record) => self.pending.push_record(*record, size),
        }
        self.pending.counted += size;
        self.used_bytes += size;
        self.used_records += 1;
        self.counts.accepted += 1;
        Ok(was_empty)
    }

    /// [`try_put`](Self::try_put) for a sealed event, the layer's hot path: true when the
    /// event was queued into an empty queue (the worker needs a wake-up).
    #[inline]
    pub(crate) fn try_put_event(
        &mut self,
        entry: &[u8],
        metas: &[&'static Metadata<'static>],
    ) -> Option<bool> {
        let size = entry.len() + metas.len() * META_SIZE;
        if self.closed || self.shedding || !self.fits(size) {
            return None;
        }
        let was_empty = self.pending.is_empty();
        self.pending.push_event(entry, metas);
        self.pending.counted += size;
        self.used_bytes += size;
        self.used_records += 1;
        self.counts.accepted += 1;
        Some(was_empty)
    }

    /// Counts a record that could not be queued: a full queue or a stall drops it (it is
    /// accepted and dropped at once, reported by the worker); a closed sink refuses it.
    pub(crate) fn refuse(&mut self, why: Refusal) {
        match why {
            Refusal::Closed => self.counts.refused += 1,
            Refusal::Full => {
                self.counts.accepted += 1;
                self.counts.dropped += 1;
                self.counts.unreported_full += 1;
            }
            Refusal::Shedding => self.shed(),
        }
    }

    /// A writer waited as long as the policy allows: drop its record and shed load.
    pub(crate) fn stall(&mut self) {
        self.shedding = true;
        self.shed();
    }

    fn shed(&mut self) {
        self.counts.accepted += 1;
        self.counts.dropped += 1;
        self.counts.unreported_stalled += 1;
        self.counts.stall_shed += 1;
    }

    /// Queues a flush marker; false when no worker will ever complete it.
    pub(crate) fn put_flush(&mut self, ack: FlushAck) -> Result<bool, FlushAck> {
        if self.exited {
            return Err(ack);
        }
        let was_empty = self.pending.is_empty();
        self.pending.push_flush(ack);
        Ok(was_empty)
    }

    /// Hands everything pending to the worker: swaps it with `into` (which must be empty).
    /// The records stay counted against the bound until [`release`](Self::release)d,
    /// except under drop-oldest: records the worker holds can no longer be evicted, so they
    /// must not keep newer ones out (memory can then reach twice the bound).
    pub(crate) fn take(&mut self, into: &mut Chunk) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        std::mem::swap(&mut self.pending, into);
        if self.config.policy == OverflowPolicy::DropOldest {
            self.unreserve(into.live, into.counted);
        }
        true
    }

    /// The worker is done with `records` records counted at `bytes`. Returns true if a
    /// waiting producer may now fit.
    pub(crate) fn release(&mut self, records: usize, bytes: usize) -> bool {
        if self.config.policy == OverflowPolicy::DropOldest {
            // Released when taken.
            return self.unreserve(0, 0);
        }
        self.unreserve(records, bytes)
    }

    /// Takes `records` and `bytes` off the bound; true if a waiting producer may now fit.
    fn unreserve(&mut self, records: usize, bytes: usize) -> bool {
        self.used_records = self.used_records.saturating_sub(records);
        self.used_bytes = self.used_bytes.saturating_sub(bytes);
        if self.shedding
            && self.used_records <= self.config.max_records / 2
            && self.used_bytes <= self.config.max_bytes / 2
        {
            self.shedding = false;
            self.counts.stall_ended = Some(std::mem::take(&mut self.counts.stall_shed));
        }
        self.waiting > 0
    }

    pub(crate) fn delivered(&mut self, n: u64) {
        self.counts.delivered += n;
    }

    pub(crate) fn dropped(&mut self, n: u64, why: &str) {
        self.counts.dropped += n;
        if why == reason::SHUTDOWN {
            self.counts.dropped_shutdown += n;
        }
    }

    /// Drops the producers counted since the last call, by reason, and the end of a stall
    /// (the records it shed), for the worker to report.
    pub(crate) fn take_reports(&mut self) -> ([(u64, &'static str); 3], Option<u64>) {
        let c = &mut self.counts;
        (
            [
                (std::mem::take(&mut c.unreported_full), reason::QUEUE_FULL),
                (
                    std::mem::take(&mut c.unreported_oldest),
                    reason::BUFFER_FULL_OLDEST,
                ),
                (std::mem::take(&mut c.unreported_stalled), reason::STALLED),
            ],
            c.stall_ended.take(),
        )
    }

    /// Ends the queue's life: nothing will read it again. Every record accepted and not yet
    /// settled is dropped (`why`), and the flush markers still queued are returned for the
    /// caller to complete (after those drops, so they are exact).
    pub(crate) fn end(&mut self, why: &str) -> (u64, Vec<FlushAck>) {
        self.closed = true;
        self.exited = true;
        self.shedding = false;
        let c = &self.counts;
        let pending = c.accepted.saturating_sub(c.delivered + c.dropped);
        self.dropped(pending, why);
        let acks = self.pending.take_acks();
        self.pending.clear();
        self.used_bytes = 0;
        self.used_records = 0;
        (pending, acks)
    }

    /// Drops everything still pending (not yet taken by the worker) with reason `why`, and
    /// returns the flush markers among it.
    pub(crate) fn abandon_pending(&mut self, why: &str) -> (u64, Vec<FlushAck>) {
        let mut chunk = std::mem::take(&mut self.pending);
        let mut acks = Vec::new();
        let (mut records, mut bytes) = (0, 0);
        for (entry, size) in chunk.drain() {
            if let Entry::Flush(ack) = entry {
                acks.push(ack);
            } else {
                records += 1;
                bytes += size;
            }
        }
        chunk.clear();
        self.pending = chunk;
        self.unreserve(records, bytes);
        self.dropped(records as u64, why);
        (records as u64, acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    fn config(max_records: usize, max_bytes: usize, policy: OverflowPolicy) -> QueueConfig {
        QueueConfig {
            max_records,
            max_bytes,
            policy,
        }
    }

    fn line(q: &mut Queue, text: &str) -> Result<bool, Refusal> {
        q.try_put(Put::Line(text.as_bytes())).map_err(|(r, _)| r)
    }

    fn lines(chunk: &mut Chunk) -> Vec<String> {
        chunk
            .drain()
            .filter_map(|(e, _)| match e {
                Entry::Line(l) => Some(String::from_utf8(l.to_vec()).unwrap()),
                Entry::Record(r) => Some(r.message),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn entries_come_out_in_order_with_their_sizes() {
        let mut q = Queue::new(config(10, 1 << 20, OverflowPolicy::DropNewest));
        assert_eq!(line(&mut q, "a"), Ok(true));
        q.try_put(Put::Record(Box::new(Record::new(Level::INFO, "b"))))
            .ok()
            .unwrap();
        let (tx, _rx) = oneshot::channel();
        q.put_flush(FlushAck {
            started: Instant::now(),
            tx,
        })
        .ok()
        .unwrap();
        line(&mut q, "c").unwrap();
        let mut chunk = Chunk::default();
        assert!(q.take(&mut chunk));
        let kinds: Vec<(String, usize)> = chunk
            .drain()
            .map(|(e, size)| match e {
                Entry::Line(l) => (String::from_utf8(l.to_vec()).unwrap(), size),
                Entry::Record(r) => (r.message, size),
                Entry::Flush(_) => ("flush".into(), size),
                Entry::Event(_) => ("event".into(), size),
            })
            .collect();
        assert_eq!(kinds[0], ("a".into(), 6));
        assert_eq!(kinds[1].0, "b");
        assert_eq!(kinds[2], ("flush".into(), 0));
        assert_eq!(kinds[3], ("c".into(), 6));
        assert_eq!(q.stats().accepted, 3);
    }

    #[test]
    fn the_bound_covers_records_taken_until_released() {
        let mut q = Queue::new(config(2, 1 << 20, OverflowPolicy::DropNewest));
        line(&mut q, "a").unwrap();
        line(&mut q, "b").unwrap();
        let mut chunk = Chunk::default();
        q.take(&mut chunk);
        assert_eq!(line(&mut q, "c"), Err(Refusal::Full));
        q.release(1, 6);
        assert_eq!(line(&mut q, "c"), Ok(true));
    }

    #[test]
    fn drop_oldest_evicts_queued_records_and_counts_them() {
        let mut q = Queue::new(config(2, 1 << 20, OverflowPolicy::DropOldest));
        for t in ["a", "b", "c", "d"] {
            line(&mut q, t).unwrap();
        }
        let mut chunk = Chunk::default();
        q.take(&mut chunk);
        assert_eq!(lines(&mut chunk), ["c", "d"]);
        let s = q.stats();
        assert_eq!((s.accepted, s.dropped), (4, 2));
        assert_eq!(q.take_reports().0[1], (2, reason::BUFFER_FULL_OLDEST));
    }

    #[test]
    fn drop_oldest_does_not_let_records_the_worker_holds_keep_newer_ones_out() {
        let mut q = Queue::new(config(2, 1 << 20, OverflowPolicy::DropOldest));
        line(&mut q, "a").unwrap();
        line(&mut q, "b").unwrap();
        let mut chunk = Chunk::default();
        q.take(&mut chunk);
        for t in ["c", "d", "e"] {
            line(&mut q, t).unwrap();
        }
        let mut next = Chunk::default();
        q.take(&mut next);
        assert_eq!(lines(&mut next), ["d", "e"], "the newest are kept");
        q.release(2, 12);
        assert_eq!(q.stats().dropped, 1);
    }

    #[test]
    fn a_stall_sheds_until_half_the_queue_is_free_and_reports_its_count() {
        let mut q = Queue::new(config(4, 1 << 20, OverflowPolicy::Block(Duration::ZERO)));
        for t in ["a", "b", "c", "d"] {
            line(&mut q, t).unwrap();
        }
        assert_eq!(line(&mut q, "e"), Err(Refusal::Full));
        q.stall();
        assert_eq!(line(&mut q, "f"), Err(Refusal::Shedding));
        q.refuse(Refusal::Shedding);
        q.release(1, 6);
        assert_eq!(
            line(&mut q, "g"),
            Err(Refusal::Shedding),
            "still 3 of 4 used"
        );
        q.refuse(Refusal::Shedding);
        q.release(1, 6);
        let (drops, ended) = q.take_reports();
        assert_eq!(drops[2], (3, reason::STALLED));
        assert_eq!(ended, Some(3));
        assert_eq!(line(&mut q, "h"), Ok(false));
        let s = q.stats();
        assert_eq!((s.accepted, s.dropped), (8, 3));
    }

    #[test]
    fn a_closed_queue_refuses_without_touching_the_totals() {
        let mut q = Queue::new(config(4, 1 << 20, OverflowPolicy::DropNewest));
        line(&mut q, "a").unwrap();
        q.closed = true;
        assert_eq!(line(&mut q, "b"), Err(Refusal::Closed));
        q.refuse(Refusal::Closed);
        let s = q.stats();
        assert_eq!((s.accepted, s.dropped, s.refused), (1, 0, 1));
    }

    #[test]
    fn ending_drops_everything_unsettled_and_returns_queued_flushes() {
        let mut q = Queue::new(config(8, 1 << 20, OverflowPolicy::DropNewest));
        line(&mut q, "a").unwrap();
        line(&mut q, "b").unwrap();
        let mut chunk = Chunk::default();
        q.take(&mut chunk);
        line(&mut q, "c").unwrap();
        let (tx, _rx) = oneshot::channel();
        q.put_flush(FlushAck {
            started: Instant::now(),
            tx,
        })
        .ok()
        .unwrap();
        q.delivered(1);
        let (lost, acks) = q.end(reason::WORKER_FAILED);
        assert_eq!((lost, acks.len()), (2, 1));
        let s = q.stats();
        assert_eq!(s.accepted, s.delivered + s.dropped);
        let (tx, _rx) = oneshot::channel();
        assert!(q
            .put_flush(FlushAck {
                started: Instant::now(),
                tx
            })
            .is_err());
    }

    #[test]
    fn shutdown_drops_are_counted_apart() {
        let mut q = Queue::new(config(8, 1 << 20, OverflowPolicy::DropNewest));
        line(&mut q, "a").unwrap();
        line(&mut q, "b").unwrap();
        let (n, _) = q.abandon_pending(reason::SHUTDOWN);
        assert_eq!(n, 2);
        assert_eq!(q.counts.dropped_shutdown, 2);
        assert_eq!(line(&mut q, "c"), Ok(true), "the bound was released");
    }
}
