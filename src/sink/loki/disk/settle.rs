//! Settlements: ranges of entries delivered or dropped for good, written to the log at
//! once; segments removed when all of theirs are settled; the log kept small.

use std::io;
use std::ops::Range;

use super::fault::{check, Op};
use super::format::segment_name;
use super::{DiskBuffer, Seq, Tally};

impl DiskBuffer {
    /// Settles the entries of `range` that were handed out (others in it are ignored), in
    /// any order and any split, and returns how many were not settled before: count those
    /// as delivered (or dropped), since an entry evicted or lost meanwhile is already
    /// counted. One `write(2)` to the settlement log before returning; a segment whose
    /// entries are all settled is removed.
    ///
    /// A failed write of the log is kept and retried (the entries count as settled in this
    /// process; a crash before the retry may hand them out again), and reported by the next
    /// [`commit`](Self::commit), as is a failed removal.
    pub(crate) fn settle(&mut self, range: Range<Seq>) -> u64 {
        let range = range.start..range.end.min(self.cursor.seq);
        if range.is_empty() {
            return 0;
        }
        let mut gaps = std::mem::take(&mut self.scratch);
        gaps.clear();
        self.settled.gaps_in(range, &mut gaps);
        let mut done = Tally::default();
        if !gaps.is_empty() {
            done = self.release(&gaps);
            self.record_settled(gaps.iter().cloned());
            self.forget_settled_ledger();
            self.drop_settled_segments();
        }
        self.scratch = gaps;
        done.entries
    }

    /// Drops every unsettled entry of the oldest segment (written or not, handed out or
    /// not), settles them, removes the segment, and returns how many were dropped: for an
    /// overflow policy that keeps the newest. 0 when nothing is left to evict.
    pub(crate) fn evict_oldest(&mut self) -> u64 {
        let Some(oldest) = self.segments.front() else {
            return 0;
        };
        let (first, end, live) = (oldest.first, oldest.end, oldest.live);
        if live.entries == 0 {
            return 0;
        }
        let flying = self.ledger_live_in(first..end);
        self.in_flight.sub(flying);
        if self.is_active(0) {
            // Its buffer goes with it; appends go on in a new segment.
            self.unwritten = Tally::default();
            if let Some(active) = self.active.take() {
                self.disk -= active.buf.len() as u64;
            }
            self.unsynced.active = false;
        }
        self.segments[0].live = Tally::default();
        self.live.sub(live);
        self.record_settled(std::iter::once(first..end));
        if self.cursor.seq < end {
            self.cursor.seq = end;
            self.cursor.at = None;
        }
        self.forget_settled_ledger();
        self.drop_settled_segments();
        live.entries
    }

    /// Takes the handed-out entries of `gaps` (not settled before) out of the tallies.
    fn release(&mut self, gaps: &[Range<Seq>]) -> Tally {
        let mut done = Tally::default();
        for gap in gaps {
            let from = self.ledger.partition_point(|&(seq, _)| seq < gap.start);
            let mut s = self.segments.partition_point(|s| s.end <= gap.start);
            // What is settled in segment `s`, taken off it once it is left.
            let mut here = Tally::default();
            for &(seq, len) in self.ledger.range(from..) {
                if seq >= gap.end {
                    break;
                }
                if self.segments.get(s).is_some_and(|seg| seg.end <= seq) {
                    self.segments[s].live.sub(here);
                    done = done.plus(std::mem::take(&mut here));
                    while self.segments.get(s).is_some_and(|seg| seg.end <= seq) {
                        s += 1;
                    }
                }
                here.entries += 1;
                here.bytes += u64::from(len);
            }
            if here.entries > 0 {
                debug_assert!(
                    s < self.segments.len(),
                    "entries in flight outside any segment"
                );
                if let Some(seg) = self.segments.get_mut(s) {
                    seg.live.sub(here);
                }
                done = done.plus(here);
            }
        }
        self.in_flight.sub(done);
        self.live.sub(done);
        done
    }

    /// Adds `ranges` to the settled set and writes them to the log (or keeps them for a
    /// retry when the write fails); rewrites the log when it has grown past its threshold.
    pub(super) fn record_settled(&mut self, ranges: impl IntoIterator<Item = Range<Seq>>) {
        for r in ranges.into_iter().filter(|r| !r.is_empty()) {
            self.settled.insert(r.clone());
            self.unacked.push(r);
        }
        self.flush_acks();
        if self.acks.len() > self.compact_at {
            if let Err(e) = self.compact() {
                self.defer(e);
            }
        }
    }

    fn flush_acks(&mut self) {
        if self.unacked.is_empty() {
            return;
        }
        match self.acks.append(&self.unacked) {
            Ok(()) => self.unacked.clear(),
            Err(e) => self.defer(e),
        }
    }

    /// Rewrites the settlement log to the settled set, which first drops every range
    /// below the oldest segment into one.
    pub(super) fn compact(&mut self) -> io::Result<()> {
        let floor = self.segments.front().map_or(self.next_seq, |s| s.first);
        self.settled.insert(0..floor);
        self.acks.compact(&self.settled)?;
        // The rewrite holds every settlement, those whose append failed too.
        self.unacked.clear();
        Ok(())
    }

    /// Drops from the front of the ledger what is settled: one lookup per settled range.
    fn forget_settled_ledger(&mut self) {
        while let Some(&(seq, _)) = self.ledger.front() {
            let Some(end) = self.settled.end_of_range_with(seq) else {
                break;
            };
            while self.ledger.front().is_some_and(|&(s, _)| s < end) {
                self.ledger.pop_front();
            }
        }
    }

    /// Removes every segment, but the active one, whose entries are all settled.
    pub(super) fn drop_settled_segments(&mut self) {
        let mut i = 0;
        while i < self.segments.len() {
            if self.segments[i].live.entries > 0 || self.is_active(i) {
                i += 1;
                continue;
            }
            let Some(s) = self.segments.remove(i) else {
                break;
            };
            // Bytes of records lost to damage are known only roughly: none may linger.
            self.live.bytes -= s.live.bytes;
            if self
                .cursor
                .at
                .as_ref()
                .is_some_and(|at| at.segment == s.first)
            {
                self.cursor.at = None;
            }
            if (s.first..s.end).contains(&self.cursor.seq) {
                self.cursor.seq = s.end;
            }
            self.remove_file(s.first, s.written);
        }
    }

    /// Removes a settled segment's file; a failure is retried at each commit.
    fn remove_file(&mut self, first: Seq, bytes: u64) {
        let path = self.dir.join(segment_name(first));
        let removed = check(self.faults.as_ref(), Op::Remove, &path)
            .and_then(|_| std::fs::remove_file(&path));
        match removed {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                self.doomed.push((path, bytes));
                self.defer(e);
            }
            _ => self.disk -= bytes,
        }
        self.unsynced.dir = true;
    }

    /// Retries settlements that could not be written and removals that failed.
    pub(super) fn retry_deferred(&mut self) {
        self.flush_acks();
        let doomed = std::mem::take(&mut self.doomed);
        for (path, bytes) in doomed {
            let removed = check(self.faults.as_ref(), Op::Remove, &path)
                .and_then(|_| std::fs::remove_file(&path));
            match removed {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    self.doomed.push((path, bytes));
                    self.defer(e);
                }
                _ => self.disk -= bytes,
            }
        }
    }
}
