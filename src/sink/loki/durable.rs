//! The Loki worker's disk mode (issue 15): each entry, once rendered, is appended to the
//! disk buffer (`disk/`) instead of the batch; requests are built from what the buffer
//! hands back, and a request's outcome settles its range of entries there.
//!
//! The accounting is done here, from what [`DiskBuffer::settle`] says was newly settled,
//! not by the push tasks: an entry evicted (`DropOldest`) while its request was in flight
//! is already counted dropped, and must not be counted delivered too.
//!
//! Faults: a failed write (disk full, permissions, the directory removed) emits
//! `buffer_failed` and new entries take the memory way (the batch) until a retry, every
//! [`RETRY_EVERY`], works (`buffer_recovered`). Entries the buffer had not written are
//! taken back into the batch; a removed directory loses what it held unsent (reported,
//! reason `buffer_lost`), and the retry opens it afresh.

use std::collections::HashMap;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::batch::Batch;
use super::disk::{AppendError, DiskBuffer, Options, Recovered, Seq};
use super::label_text::Streams;
use super::labels::LabelSet;
use super::push::{Done, End};
use crate::deadline::later;
use crate::events::{self, reason};
use crate::pipe::Consumer;
use crate::SinkId;

/// Bytes appended past which the worker writes them without waiting for the end of its
/// chunk of work.
const WRITE_AT: u64 = 256 * 1024;
/// How often a failed buffer is tried again.
pub(crate) const RETRY_EVERY: Duration = Duration::from_secs(5);

/// The disk buffer as the builder opened it, and how to treat it.
pub(crate) struct DiskSetup {
    pub(crate) buffer: DiskBuffer,
    /// To open it again after its directory was removed.
    pub(crate) options: Options,
    /// Entries older than this (by their timestamp) when read to be sent are dropped.
    pub(crate) max_entry_age: Duration,
    /// The overflow policy is `DropOldest`: a full buffer evicts its oldest segment.
    pub(crate) drop_oldest: bool,
    /// The buffer held entries of an earlier process: send them at once.
    pub(crate) replay: bool,
}

/// What became of an entry given to [`Durable::append`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Appended {
    /// In the buffer.
    Stored,
    /// Not in the buffer (it is full and the policy keeps the oldest, or it failed): the
    /// worker sends it from memory.
    Spill,
    /// Dropped, with the reason.
    Dropped(&'static str),
}

/// One range handed out by the buffer, sent in one or more parts (a body over the byte
/// cap is split).
#[derive(Debug)]
struct Joint {
    /// The buffer it came from ([`Durable::generation`]).
    generation: u64,
    range: Range<Seq>,
    /// Parts still in flight, and whether more may still be added.
    parts: usize,
    open: bool,
    delivered: u64,
    dropped: Vec<(&'static str, u64)>,
    /// Entries of parts cut by the shutdown deadline.
    kept: u64,
}

/// The worker's disk mode.
pub(super) struct Durable {
    id: SinkId,
    /// `None` once its directory was removed, until it is opened again.
    buffer: Option<DiskBuffer>,
    options: Options,
    /// Counts the buffers opened: a range of a removed buffer is not settled in its successor.
    generation: u64,
    /// While the buffer fails: when to try it again. New entries take the memory way.
    retry_at: Option<Instant>,
    max_age: Duration,
    drop_oldest: bool,
    /// The buffer is full and the policy keeps the oldest: take no more from the queue
    /// until settlements free room.
    full: bool,
    streams: Streams,
    /// The entry being appended, framed by `encode::put_entry` (the worker fills it).
    pub(super) entry: Vec<u8>,
    /// When the oldest entry not yet handed out was appended; `urgent` sends it at once.
    pending_since: Option<Instant>,
    urgent: bool,
    joints: HashMap<u64, Joint>,
    next_ticket: u64,
    /// Runs of entries found too old in the range being read.
    old: Vec<Range<Seq>>,
}

impl Durable {
    pub(super) fn new(id: SinkId, setup: DiskSetup) -> Self {
        let mut durable = Durable {
            id,
            buffer: Some(setup.buffer),
            options: setup.options,
            generation: 0,
            retry_at: None,
            max_age: setup.max_entry_age,
            drop_oldest: setup.drop_oldest,
            full: false,
            streams: Streams::default(),
            entry: Vec::with_capacity(1024),
            pending_since: None,
            urgent: false,
            joints: HashMap::new(),
            next_ticket: 0,
            old: Vec::new(),
        };
        if setup.replay {
            durable.pending_since = Some(Instant::now());
            durable.urgent = true;
        }
        durable.gauge();
        durable
    }

    /// True while new entries go to disk (the buffer works).
    pub(super) fn accepting(&self) -> bool {
        self.buffer.is_some() && self.retry_at.is_none()
    }

    /// True when the worker may take more from the queue: the buffer is not full (or
    /// failed, and the memory way's rules apply).
    pub(super) fn has_room(&self) -> bool {
        !(self.full && self.accepting())
    }

    /// When to try a failed buffer again.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Appends [`entry`](Self::entry) to the buffer, as the stream `set`.
    pub(super) fn append(
        &mut self,
        set: &Arc<LabelSet>,
        unix_nanos: i128,
        consumer: &Consumer,
        batch: &mut Batch,
    ) -> Appended {
        loop {
            let Some(buffer) = self.buffer.as_mut() else {
                return Appended::Spill;
            };
            match buffer.append(set.text.as_bytes(), unix_nanos, &self.entry) {
                Ok(_) => {
                    self.streams.remember(set);
                    self.pending_since.get_or_insert_with(Instant::now);
                    return Appended::Stored;
                }
                Err(AppendError::Full) if self.drop_oldest => {
                    let evicted = buffer.evict_oldest();
                    if evicted == 0 {
                        // Everything left is in flight: nothing to evict.
                        self.full = true;
                        return Appended::Spill;
                    }
                    consumer.dropped(evicted, reason::BUFFER_FULL_OLDEST);
                }
                Err(AppendError::Full) => {
                    self.full = true;
                    return Appended::Spill;
                }
                Err(AppendError::TooLarge) => return Appended::Dropped(reason::LINE_TOO_LONG),
                Err(AppendError::Io(e)) => {
                    self.fail(&e, consumer, batch);
                    return Appended::Spill;
                }
            }
        }
    }

    /// Writes what was appended once it passes [`WRITE_AT`]: a large chunk of work is
    /// written as it goes, so the buffer's memory stays small.
    pub(super) fn commit_if_big(&mut self, consumer: &Consumer, batch: &mut Batch) {
        if self
            .buffer
            .as_ref()
            .is_some_and(|b| b.backlog().unwritten.bytes >= WRITE_AT)
        {
            self.commit(consumer, batch);
        }
    }

    /// Writes what was appended (once per chunk of work, and before any send). A failure
    /// takes the unwritten entries back into `batch`.
    pub(super) fn commit(&mut self, consumer: &Consumer, batch: &mut Batch) {
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        if self.retry_at.is_none() && buffer.backlog().unwritten.entries > 0 {
            if let Err(e) = buffer.commit() {
                self.fail(&e, consumer, batch);
            }
        }
        self.report_lost(consumer);
        self.gauge();
    }

    /// The buffer failed: report it, take back what it had not written, and send from
    /// memory until a retry works.
    fn fail(&mut self, e: &io::Error, consumer: &Consumer, batch: &mut Batch) {
        let dir = self.options.dir.display().to_string();
        if self.retry_at.is_none() {
            events::buffer_failed(&self.id, &dir, &e.to_string());
        }
        self.retry_at = Some(later(RETRY_EVERY));
        let Some(buffer) = self.buffer.as_mut() else {
            return;
        };
        let streams = &mut self.streams;
        buffer.take_unwritten(|entry| batch.push_framed(&streams.get(entry.stream), entry.payload));
        if buffer.is_gone() {
            let lost = buffer.backlog().unsent.entries + buffer.take_lost();
            consumer.dropped(lost, reason::BUFFER_LOST);
            // Its requests in flight are accounted without it; a new one is opened later.
            self.buffer = None;
            self.generation += 1;
            self.pending_since = None;
            self.urgent = false;
        }
    }

    /// Tries a failed buffer again: a removed directory is opened afresh; a buffer whose
    /// writes failed is asked to commit (which checks its files and retries settlements).
    pub(super) fn try_again(&mut self, consumer: &Consumer) {
        self.retry_at = None;
        let result = match self.buffer.as_mut() {
            Some(buffer) => buffer.commit(),
            None => match DiskBuffer::open(self.options.clone()) {
                Ok((buffer, recovered)) => {
                    take_over(&self.id, consumer, &recovered);
                    if recovered.entries > 0 {
                        self.pending_since = Some(Instant::now());
                        self.urgent = true;
                    }
                    self.buffer = Some(buffer);
                    Ok(())
                }
                Err(e) => Err(io::Error::other(e.to_string())),
            },
        };
        match result {
            Ok(()) => {
                self.full = false;
                events::buffer_recovered(&self.id, &self.options.dir.display().to_string());
            }
            Err(e) => {
                if self.buffer.as_ref().is_some_and(DiskBuffer::is_gone) {
                    // Removed while it was failing for another reason: report what it held
                    // and open it afresh next time (nothing is unwritten while failing).
                    self.fail(&e, consumer, &mut Batch::default());
                }
                self.retry_at = Some(later(RETRY_EVERY));
            }
        }
        self.gauge();
    }

    /// When entries on disk are due to be sent: `wait` after the oldest not handed out
    /// was appended, or now if they fill a request (or were left over or replayed).
    pub(super) fn due(
        &self,
        wait: Duration,
        max_entries: usize,
        max_bytes: usize,
    ) -> Option<Instant> {
        let buffer = self.buffer.as_ref()?;
        let backlog = buffer.backlog();
        let entries = backlog.unsent.entries + backlog.unwritten.entries;
        let bytes = backlog.unsent.bytes + backlog.unwritten.bytes;
        if entries == 0 {
            return None;
        }
        let full = entries >= max_entries as u64 || bytes >= max_bytes as u64;
        if self.urgent || full {
            return Some(Instant::now());
        }
        self.pending_since.and_then(|t| t.checked_add(wait))
    }

    /// Reads the next entries to send into `batch` (at most `max_entries`, and `max_bytes`
    /// of records) and returns the ticket of their range, or `None` when nothing waits.
    /// Entries older than `max_entry_age` are settled and reported dropped (`too_old`).
    pub(super) fn next_part(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        consumer: &Consumer,
        batch: &mut Batch,
    ) -> Option<u64> {
        let max_age = i128::try_from(self.max_age.as_nanos()).unwrap_or(i128::MAX);
        let cutoff = unix_nanos(SystemTime::now()).saturating_sub(max_age);
        loop {
            let buffer = self.buffer.as_mut()?;
            let (streams, old) = (&mut self.streams, &mut self.old);
            old.clear();
            let read = buffer.next_batch(max_entries, max_bytes, |entry| {
                if entry.unix_nanos < cutoff {
                    match old.last_mut() {
                        Some(run) if run.end == entry.seq => run.end += 1,
                        _ => old.push(entry.seq..entry.seq + 1),
                    }
                } else {
                    batch.push_framed(&streams.get(entry.stream), entry.payload);
                }
            });
            let range = match read {
                Ok(Some(range)) => range,
                Ok(None) => {
                    self.pending_since = None;
                    self.urgent = false;
                    self.report_lost(consumer);
                    return None;
                }
                Err(e) => {
                    // Read again after the batch wait, not in a loop. Nothing is unwritten
                    // here (the worker commits before it reads), so `fail` takes nothing
                    // into `batch`.
                    self.urgent = false;
                    self.pending_since = Some(Instant::now());
                    self.fail(&e, consumer, batch);
                    return None;
                }
            };
            let too_old: u64 = self.old.drain(..).map(|run| buffer.settle(run)).sum();
            consumer.dropped(too_old, reason::TOO_OLD);
            consumer.dropped(buffer.take_lost(), reason::BUFFER_CORRUPT);
            if batch.is_empty() {
                // Every entry was too old: settled already.
                buffer.settle(range);
                continue;
            }
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            self.joints.insert(
                ticket,
                Joint {
                    generation: self.generation,
                    range,
                    parts: 0,
                    open: true,
                    delivered: 0,
                    dropped: Vec::new(),
                    kept: 0,
                },
            );
            return Some(ticket);
        }
    }

    /// Entries are left over after a send (no request slot was free): send them as soon
    /// as one is.
    pub(super) fn left_over(&mut self) {
        if self
            .buffer
            .as_ref()
            .is_some_and(|b| b.backlog().unsent.entries > 0)
        {
            self.urgent = true;
        }
    }

    /// A part of `ticket`'s range was started.
    pub(super) fn part_started(&mut self, ticket: u64) {
        if let Some(joint) = self.joints.get_mut(&ticket) {
            joint.parts += 1;
        }
    }

    /// `n` entries of `ticket`'s range could not be encoded: dropped.
    pub(super) fn part_dropped(&mut self, ticket: u64, n: u64, why: &'static str) {
        if let Some(joint) = self.joints.get_mut(&ticket) {
            joint.dropped.push((why, n));
        }
    }

    /// Every part of `ticket`'s range was started: it settles when they have ended.
    pub(super) fn sealed(&mut self, ticket: u64, consumer: &Consumer) {
        if let Some(joint) = self.joints.get_mut(&ticket) {
            joint.open = false;
        }
        self.settle_if_done(ticket, consumer);
    }

    /// A push task ended: once every part of its range has, the range is settled and its
    /// entries accounted.
    pub(super) fn finished(&mut self, done: &Done, consumer: &Consumer) {
        let Some(ticket) = done.ticket else {
            return;
        };
        let Some(joint) = self.joints.get_mut(&ticket) else {
            return;
        };
        joint.parts = joint.parts.saturating_sub(1);
        match done.end {
            End::Delivered => joint.delivered += done.entries,
            End::Dropped(why) => joint.dropped.push((why, done.entries)),
            End::Kept => joint.kept += done.entries,
        }
        self.settle_if_done(ticket, consumer);
    }

    fn settle_if_done(&mut self, ticket: u64, consumer: &Consumer) {
        if self
            .joints
            .get(&ticket)
            .is_none_or(|j| j.open || j.parts > 0)
        {
            return;
        }
        let Some(joint) = self.joints.remove(&ticket) else {
            return;
        };
        let total = joint.delivered + joint.dropped.iter().map(|(_, n)| n).sum::<u64>();
        let buffer = self
            .buffer
            .as_mut()
            .filter(|_| joint.generation == self.generation);
        let Some(buffer) = buffer else {
            // Its buffer was removed: nothing to settle; what was cut is lost.
            consumer.dropped(joint.kept, reason::BUFFER_LOST);
            account(consumer, joint.delivered, &joint.dropped, total);
            return;
        };
        if joint.kept > 0 {
            // Cut by the shutdown deadline: it stays on disk (counted as persisted), even
            // the parts that were delivered (at-least-once for what was in flight).
            return;
        }
        let newly = buffer.settle(joint.range);
        account(consumer, joint.delivered, &joint.dropped, newly);
        if self.full {
            let buffer = self.buffer.as_ref().expect("settled above");
            self.full = buffer.disk_bytes() > self.options.max_bytes / 4 * 3;
        }
        self.gauge();
    }

    /// At shutdown, after every request ended: what is left stays on disk, counted as
    /// persisted.
    pub(super) fn close(mut self, consumer: &Consumer, batch: &mut Batch) {
        // A commit even with nothing to write: it notices a removed directory.
        if let Some(buffer) = self.buffer.as_mut().filter(|_| self.retry_at.is_none()) {
            if let Err(e) = buffer.commit() {
                self.fail(&e, consumer, batch);
            }
        }
        self.report_lost(consumer);
        let Some(buffer) = self.buffer.take() else {
            return;
        };
        let left = buffer.unsettled().entries;
        let dir = buffer.dir().display().to_string();
        // Persisted either way: a failed sync leaves what was written in the OS, there
        // for the next process.
        consumer.persisted(left);
        if let Err(e) = buffer.close() {
            events::buffer_failed(&self.id, &dir, &e.to_string());
        }
    }

    fn report_lost(&mut self, consumer: &Consumer) {
        if let Some(buffer) = self.buffer.as_mut() {
            consumer.dropped(buffer.take_lost(), reason::BUFFER_CORRUPT);
        }
    }

    fn gauge(&self) {
        if let Some(buffer) = &self.buffer {
            crate::metrics::buffer_bytes(&self.id, buffer.disk_bytes());
        }
    }
}

/// Accounts `newly` settled entries of a range: as delivered as far as its parts were,
/// the rest as its parts were dropped (fewer than the parts carried when some were evicted
/// meanwhile, and already counted).
fn account(consumer: &Consumer, delivered: u64, dropped: &[(&'static str, u64)], newly: u64) {
    let (delivered, dropped) = shares(delivered, dropped, newly);
    consumer.delivered(delivered);
    for (why, n) in dropped {
        consumer.dropped(n, why);
    }
}

/// How `newly` settled entries split between delivered and each drop reason, given what the
/// parts reported: delivered first, then the drops in order, none past `newly`.
fn shares(
    delivered: u64,
    dropped: &[(&'static str, u64)],
    newly: u64,
) -> (u64, Vec<(&'static str, u64)>) {
    let delivered = delivered.min(newly);
    let mut rest = newly - delivered;
    let mut out = Vec::with_capacity(dropped.len());
    for &(why, n) in dropped {
        let n = n.min(rest);
        out.push((why, n));
        rest -= n;
    }
    (delivered, out)
}

/// Reports what an opened buffer found: replayed entries (and their event), files cut
/// back, entries lost to damage. Lost entries count as replayed and dropped, so the next
/// process accounts for everything the last one persisted.
pub(crate) fn take_over(id: &SinkId, consumer: &Consumer, recovered: &Recovered) {
    for repaired in &recovered.repaired {
        events::tail_repaired(id, &repaired.path.display().to_string(), repaired.bytes_cut);
    }
    consumer.replayed(recovered.entries + recovered.lost);
    consumer.dropped(recovered.lost, reason::BUFFER_CORRUPT);
    if recovered.entries > 0 {
        let now = unix_nanos(SystemTime::now());
        let age = recovered.oldest_unix_nanos.map_or(0, |t| {
            ((now - t).max(0) / 1_000_000)
                .try_into()
                .unwrap_or(u64::MAX)
        });
        events::buffer_replayed(id, recovered.entries, recovered.bytes, age);
    }
}

fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos().try_into().unwrap_or(i128::MAX),
        Err(e) => -e.duration().as_nanos().try_into().unwrap_or(i128::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_settled_whole_is_accounted_as_its_parts_ended() {
        let (delivered, dropped) = shares(60, &[(reason::REJECTED, 40)], 100);
        assert_eq!((delivered, dropped), (60, vec![(reason::REJECTED, 40)]));
    }

    #[test]
    fn entries_evicted_in_flight_are_not_counted_twice() {
        // 30 of the range's 100 were evicted (and counted dropped) while it was in flight.
        let (delivered, dropped) = shares(60, &[(reason::REJECTED, 40)], 70);
        assert_eq!(delivered + dropped.iter().map(|(_, n)| n).sum::<u64>(), 70);
        assert_eq!((delivered, dropped), (60, vec![(reason::REJECTED, 10)]));
        assert_eq!(shares(100, &[], 0), (0, vec![]));
    }

    #[test]
    fn the_age_of_a_time_before_the_epoch_is_negative_nanos() {
        assert_eq!(unix_nanos(UNIX_EPOCH + Duration::from_nanos(5)), 5);
        assert_eq!(unix_nanos(UNIX_EPOCH - Duration::from_nanos(5)), -5);
    }
}
