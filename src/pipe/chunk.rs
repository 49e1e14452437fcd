//! The entries between a sink's handles and its worker, in one byte string.
//!
//! A [`Chunk`] holds every entry in order (events in the layer's compact form,
//! preformatted lines, and tags for owned records and flush markers), with the events'
//! `&'static Metadata` and the owned records beside it. Handing the worker its work is one
//! swap of the pending chunk for the worker's empty one, so neither side allocates in a
//! steady state. Each entry carries the bytes it is counted at against the queue's bound.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::Metadata;

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
    Record(Box<Record>),
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
    /// Boxed, so an [`Entry`] stays small: the workers move one per record.
    records: VecDeque<Box<Record>>,
    acks: VecDeque<FlushAck>,
    /// Live records (events, records, lines) in the chunk, and the bytes they count at.
    live: usize,
    counted: usize,
    /// Where drop-oldest looks for the next victim.
    evict_at: usize,
}

impl Chunk {
    /// An empty chunk with room reserved for a burst: the queue's and each worker's.
    ///
    /// The room is address space, not memory: glibc maps an allocation this large apart
    /// (from 128 KiB, a threshold that freeing a larger mapping raises), so its pages
    /// count only once written, and it grows by remapping its pages, not by copying them.
    /// A chunk that started small would grow by doubling, each step a `realloc` that
    /// copies everything queued so far on the calling thread, under the queue's lock.
    /// (Where the allocator serves it otherwise, it grows as any `Vec` does.)
    pub(crate) fn with_room() -> Self {
        const ROOM: usize = 256 << 10;
        Chunk {
            bytes: Vec::with_capacity(ROOM),
            metas: Vec::with_capacity(ROOM / META_SIZE),
            ..Chunk::default()
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Live records (events, records, lines) in the chunk, and the bytes they count at.
    pub(super) fn live(&self) -> (usize, usize) {
        (self.live, self.counted)
    }

    /// Appends a record counted at `size` bytes (what [`Put::size`] said). An event is
    /// sealed by [`seal_event`]: its header is in place, so queueing it is two copies.
    #[inline]
    pub(super) fn push(&mut self, put: Put<'_>, size: usize) {
        match put {
            Put::Event(entry, metas) => {
                self.bytes.extend_from_slice(entry);
                // Mostly one (an event outside any span): a push, not a call to memcpy.
                match metas {
                    [meta] => self.metas.push(meta),
                    _ => self.metas.extend_from_slice(metas),
                }
            }
            Put::Line(line) => {
                self.bytes.push(LINE);
                self.bytes
                    .extend_from_slice(&len32(line.len()).to_le_bytes());
                self.bytes.extend_from_slice(line);
            }
            Put::Record(record) => {
                self.bytes.push(RECORD);
                self.bytes.extend_from_slice(&len32(size).to_le_bytes());
                self.records.push_back(record);
            }
        }
        self.live += 1;
        self.counted += size;
    }

    pub(super) fn push_flush(&mut self, ack: FlushAck) {
        self.bytes.push(FLUSH);
        self.acks.push_back(ack);
    }

    /// Marks the oldest live record dead; returns the bytes it was counted at.
    pub(super) fn evict_oldest(&mut self) -> Option<usize> {
        while self.evict_at < self.bytes.len() {
            let at = self.evict_at;
            let tag = self.bytes[at];
            let (len, size) = entry_len(&self.bytes[at..]);
            self.evict_at += len;
            if matches!(tag, EVENT | RECORD | LINE) {
                self.bytes[at] = tag | DEAD;
                self.live -= 1;
                self.counted -= size;
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
    pub(super) fn take_acks(&mut self) -> Vec<FlushAck> {
        self.acks.drain(..).collect()
    }
}

/// Room to leave at the start of an event's encoding for [`seal_event`] to fill.
pub(crate) const EVENT_HEADER: usize = EVENT_OVERHEAD;

/// Writes the queue's header into the first [`EVENT_HEADER`] bytes of an encoded event (the
/// layer leaves them free), so queueing it is one copy. At most 255 metadata.
#[inline]
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
    records: &'a mut VecDeque<Box<Record>>,
    acks: &'a mut VecDeque<FlushAck>,
}

impl<'a> Iterator for Drain<'a> {
    /// The entry, and the bytes it was counted at (0 for flush markers).
    type Item = (Entry<'a>, usize);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.bytes.get(self.pos..).filter(|r| !r.is_empty())?;
            let tag = rest[0];
            // The common entry, an event, read in one step.
            if let (EVENT, Some(&[_, n, a, b, c, d])) = (tag, rest.get(..EVENT_OVERHEAD)) {
                let end = EVENT_OVERHEAD + u32::from_le_bytes([a, b, c, d]) as usize;
                let event = rest.get(EVENT_OVERHEAD..end)?;
                self.pos += end;
                let n = usize::from(n);
                let (metas, others) = self.metas.split_at(n.min(self.metas.len()));
                self.metas = others;
                let event = EventRef::new(event, metas);
                return Some((Entry::Event(event), end + n * META_SIZE));
            }
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
    #[inline]
    pub(crate) fn size(&self) -> usize {
        match self {
            Put::Event(entry, metas) => entry.len() + metas.len() * META_SIZE,
            Put::Line(line) => 5 + line.len(),
            Put::Record(r) => r.approx_size(),
        }
    }
}
