//! The reading side: entries handed out in order, across segments, from large reads of
//! what was written (the tail just written is still in the page cache).

use std::io;
use std::ops::Range;

use super::fault::{check, Op};
use super::format::{self, segment_name, HEADER_LEN};
use super::reader::{Reader, Step};
use super::{At, DiskBuffer, EntryView, Seq, Tally};

impl DiskBuffer {
    /// Hands out, in order, the next written entries not yet handed out: at most
    /// `max_entries`, and at most `max_bytes` of records (always at least one). Returns the
    /// range of sequence numbers they span (to [`settle`](Self::settle) once delivered), or
    /// `None` when nothing is waiting. One `read(2)` per 256 KiB; no allocation per entry.
    ///
    /// Entries handed out stay on disk until settled: if they never are in this process,
    /// the next `open` hands them out again. An entry that fails its checksum is skipped,
    /// settled and counted by [`take_lost`](Self::take_lost); so is the rest of a segment
    /// removed or damaged under the buffer.
    ///
    /// # Errors
    ///
    /// A read error (nothing is handed out; the next call reads again), or the buffer
    /// stopped.
    pub(crate) fn next_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        mut f: impl FnMut(EntryView<'_>),
    ) -> io::Result<Option<Range<Seq>>> {
        self.usable()?;
        let mut first = None;
        let (mut n, mut bytes) = (0, 0);
        // Bytes of records skipped for a bad checksum since the last good one.
        let mut skipped = 0;
        // The segment being read (its index, written length and end), while nothing
        // moves the segments.
        let mut segment = None;
        while n < max_entries {
            let (i, limit, end) = match segment {
                Some(s) => s,
                None => match self.position()? {
                    Some(i) => {
                        let s = &self.segments[i];
                        *segment.insert((i, s.written, s.end))
                    }
                    None => break,
                },
            };
            let at = self.cursor.at.as_mut().expect("positioned");
            let reader = at.reader.as_mut().expect("positioned");
            let step = match reader.peek(limit) {
                Ok(step) => step,
                Err(e) => {
                    // Read again from the same place next time.
                    at.reader = None;
                    return if n == 0 { Err(e) } else { break };
                }
            };
            match step {
                Step::Record { len } => {
                    let body = format::body(reader.record(len));
                    let seq = body.seq;
                    let expected = self.cursor.seq;
                    if seq < expected || seq >= end {
                        // Not the record that belongs here: the segment is damaged.
                        self.lose_rest(i);
                        segment = None;
                        continue;
                    }
                    let settled = self.settled.contains(seq);
                    if !settled && n > 0 && bytes + len > max_bytes {
                        break;
                    }
                    if !settled {
                        f(EntryView {
                            seq,
                            stream: body.stream,
                            unix_nanos: body.unix_nanos,
                            payload: body.payload,
                        });
                        // A record is at most 16 MiB and a few bytes.
                        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
                        self.ledger.push_back((seq, len32));
                        self.in_flight.add(len);
                        first.get_or_insert(seq);
                        (n, bytes) = (n + 1, bytes + len);
                    }
                    reader.advance(len);
                    at.offset += len as u64;
                    self.cursor.seq = seq + 1;
                    if seq > expected {
                        // Skipped records: settled at open, or damaged since.
                        self.lose_gap(i, expected..seq, skipped);
                        segment = None;
                    }
                    skipped = 0;
                }
                Step::Corrupt { len } => {
                    reader.advance(len);
                    at.offset += len as u64;
                    skipped += len as u64;
                }
                Step::End => {
                    let s = &self.segments[i];
                    let written_end = if self.is_active(i) {
                        s.end - self.unwritten.entries
                    } else {
                        s.end
                    };
                    if self.cursor.seq < written_end {
                        // Records missing: the file was cut or damaged under the buffer.
                        self.lose_rest(i);
                    } else if self.cursor.seq < s.end {
                        break; // the rest is not written yet
                    }
                    segment = None;
                }
                Step::Damaged => {
                    self.lose_rest(i);
                    segment = None;
                }
            }
        }
        Ok(first.map(|first| first..self.cursor.seq))
    }

    /// The index of the segment holding the cursor, with a reader open at the cursor;
    /// `None` when nothing written is left to read.
    fn position(&mut self) -> io::Result<Option<usize>> {
        loop {
            self.usable()?;
            let seq = self.cursor.seq;
            let i = self.segments.partition_point(|s| s.end <= seq);
            let Some(segment) = self.segments.get(i) else {
                return Ok(None);
            };
            let (first, verify) = (segment.first, segment.verify);
            if self.cursor.at.as_ref().is_none_or(|at| at.segment != first) {
                // The cursor only leaves a segment at its end.
                debug_assert!(
                    seq <= first,
                    "cursor {seq} inside segment {first} unpositioned"
                );
                self.cursor.seq = first;
                self.cursor.at = Some(At {
                    segment: first,
                    offset: HEADER_LEN as u64,
                    reader: None,
                });
            }
            let at = self.cursor.at.as_mut().expect("set above");
            if at.reader.is_some() {
                return Ok(Some(i));
            }
            let path = self.dir.join(segment_name(first));
            let opened = check(self.faults.as_ref(), Op::Read, &path)
                .and_then(|_| Reader::open(&path, at.offset, verify));
            match opened {
                Ok(reader) => at.reader = Some(reader),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.lose_rest(i),
                Err(e) => return Err(e),
            }
        }
    }

    /// True when segment `i` is the one being appended to.
    pub(super) fn is_active(&self, i: usize) -> bool {
        self.active.is_some() && i + 1 == self.segments.len()
    }

    /// Records of segment `i` numbered `gap` were skipped (`bytes` of records failing
    /// their checksum): those not settled are lost.
    fn lose_gap(&mut self, i: usize, gap: Range<Seq>, bytes: u64) {
        let entries = self.settled.count_gaps_in(gap.clone());
        if entries == 0 {
            return;
        }
        let live = self.segments[i].live;
        // The skipped records' own lengths; their count is what their numbers say.
        let lost = Tally {
            entries: entries.min(live.entries),
            bytes: bytes.min(live.bytes),
        };
        self.segments[i].live.sub(lost);
        self.live.sub(lost);
        self.lost += lost.entries;
        self.record_settled(std::iter::once(gap));
        self.drop_settled_segments();
    }

    /// Segment `i` was removed or damaged under the buffer: what of it was written and not
    /// yet handed out is lost (settled and counted); entries in flight stay in flight, and
    /// entries not yet written move to a new segment.
    pub(super) fn lose_rest(&mut self, i: usize) {
        let active = self.is_active(i);
        let s = &self.segments[i];
        let (first, end) = (s.first, s.end);
        let written_end = if active {
            end - self.unwritten.entries
        } else {
            end
        };
        let mut keep = self.ledger_live_in(first..end);
        if active {
            keep = keep.plus(self.unwritten);
        }
        let mut lost = self.segments[i].live;
        lost.sub(keep);
        self.segments[i].live = keep;
        self.live.sub(lost);
        self.lost += lost.entries;
        let from = self.cursor.seq.max(first);
        self.record_settled(std::iter::once(from..written_end));
        if (first..written_end).contains(&self.cursor.seq) {
            self.cursor.seq = written_end;
            self.cursor.at = None;
        }
        if active {
            self.rehome();
        } else {
            self.drop_settled_segments();
        }
    }

    /// The entries of `range` handed out and not settled.
    pub(super) fn ledger_live_in(&self, range: Range<Seq>) -> Tally {
        let from = self.ledger.partition_point(|&(seq, _)| seq < range.start);
        let mut t = Tally::default();
        for &(seq, len) in self.ledger.range(from..) {
            if seq >= range.end {
                break;
            }
            if !self.settled.contains(seq) {
                t.add(len as usize);
            }
        }
        t
    }
}
