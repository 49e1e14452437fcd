//! The batch being filled: entries grouped by stream, each stream one buffer of entries in
//! their wire form (`encode::put_entry`), with a running size.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::encode::{self, Entries, StreamRef};
use super::labels::LabelSet;

/// Protobuf framing per stream (tags and lengths), rounded up.
const STREAM_OVERHEAD: usize = 8;

/// One stream of the batch.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) set: Arc<LabelSet>,
    /// Its entries, framed as `StreamAdapter.entries` fields, in order.
    pub(crate) entries: Vec<u8>,
    count: usize,
}

/// Entries waiting to be pushed, grouped by stream in order of first arrival.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    streams: Vec<Stream>,
    index: HashMap<Arc<LabelSet>, usize>,
    /// The stream of the last entry: most records go to the stream of the one before, and
    /// a pointer comparison is far cheaper than hashing the label set.
    last: Option<(Arc<LabelSet>, usize)>,
    entries: usize,
    /// The raw (uncompressed) request's size, framing included (an upper bound).
    bytes: usize,
    opened: Option<Instant>,
    /// The size of the batch taken before this one: the first stream's buffer starts with
    /// that capacity, so a steady flow of batches fills it without growing it by copies.
    hint: usize,
}

impl Batch {
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    pub(crate) fn streams(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The streams, in the form the encoder takes.
    pub(crate) fn parts(&self) -> impl Iterator<Item = StreamRef<'_>> + Clone {
        self.streams.iter().map(|s| StreamRef {
            set: &s.set,
            entries: &s.entries,
        })
    }

    /// What adding an entry of `len` wire bytes to stream `set` would add to the size.
    pub(crate) fn cost(&self, set: &Arc<LabelSet>, len: usize) -> usize {
        let stream = if self.stream_of(set).is_some() {
            0
        } else {
            set.text.len() + STREAM_OVERHEAD
        };
        len + stream
    }

    /// True when adding an entry of `cost` bytes would break a limit (never for an empty
    /// batch: one entry always fits, and the encoder checks the real size).
    pub(crate) fn would_overflow(&self, cost: usize, max_entries: usize, max_bytes: usize) -> bool {
        !self.is_empty() && (self.entries >= max_entries || self.bytes + cost > max_bytes)
    }

    /// The buffer of `set`'s stream, created if the batch has none, for the caller to
    /// append one entry to (with `encode::put_entry`); then [`added`](Self::added).
    pub(crate) fn stream_buf(&mut self, set: &Arc<LabelSet>) -> &mut Vec<u8> {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        let i = if let Some(i) = self.stream_of(set) {
            i
        } else {
            let i = self.streams.len();
            // With room to spare: a line rendered in place reserves its worst case.
            let capacity = if i == 0 {
                self.hint + self.hint / 16
            } else {
                0
            };
            self.streams.push(Stream {
                set: Arc::clone(set),
                entries: Vec::with_capacity(capacity),
                count: 0,
            });
            self.index.insert(Arc::clone(set), i);
            self.bytes += set.text.len() + STREAM_OVERHEAD;
            i
        };
        if !self.last.as_ref().is_some_and(|(l, _)| Arc::ptr_eq(l, set)) {
            self.last = Some((Arc::clone(set), i));
        }
        &mut self.streams[i].entries
    }

    /// The buffer of `set`'s stream if the batch has one (then it holds entries, and the
    /// batch is open), for the caller to append one entry to; then [`added`](Self::added).
    #[inline]
    pub(crate) fn existing_stream_buf(&mut self, set: &Arc<LabelSet>) -> Option<&mut Vec<u8>> {
        let i = self.stream_of(set)?;
        if !self.last.as_ref().is_some_and(|(l, _)| Arc::ptr_eq(l, set)) {
            self.last = Some((Arc::clone(set), i));
        }
        Some(&mut self.streams[i].entries)
    }

    /// Counts the entry of `len` bytes just appended to the last stream handed out.
    pub(crate) fn added(&mut self, len: usize) {
        if let Some((_, i)) = &self.last {
            self.streams[*i].count += 1;
        }
        self.entries += 1;
        self.bytes += len;
    }

    /// Adds an entry already in wire form (one `put_entry` output) to stream `set`.
    pub(crate) fn push_framed(&mut self, set: &Arc<LabelSet>, framed: &[u8]) {
        self.stream_buf(set).extend_from_slice(framed);
        self.added(framed.len());
    }

    /// The index of `set`'s stream in the batch, if it has one.
    #[inline]
    fn stream_of(&self, set: &Arc<LabelSet>) -> Option<usize> {
        match &self.last {
            Some((last, i)) if Arc::ptr_eq(last, set) => Some(*i),
            _ => self.lookup(set),
        }
    }

    /// [`stream_of`](Self::stream_of) for a stream other than the last one used.
    fn lookup(&self, set: &Arc<LabelSet>) -> Option<usize> {
        self.index.get(set).copied()
    }

    /// When the batch must be sent, `wait` after its first entry arrived (`None` if empty).
    pub(crate) fn due(&self, wait: Duration) -> Option<Instant> {
        // A wait too long for an `Instant` (e.g. `Duration::MAX`) is never due.
        self.opened.and_then(|t| t.checked_add(wait))
    }

    /// Takes the batch, leaving an empty one.
    pub(crate) fn take(&mut self) -> Batch {
        let next = Batch {
            hint: self.bytes,
            ..Batch::default()
        };
        std::mem::replace(self, next)
    }

    /// Splits a batch of two or more entries into two with about half the entries each,
    /// keeping the order of entries within each stream.
    pub(crate) fn split(self) -> (Batch, Batch) {
        let half = self.entries / 2;
        let (mut first, mut second) = (Batch::default(), Batch::default());
        let mut moved = 0;
        for stream in &self.streams {
            for entry in Entries(&stream.entries) {
                let target = if moved < half {
                    &mut first
                } else {
                    &mut second
                };
                target.push_framed(&stream.set, entry.framed);
                moved += 1;
            }
        }
        (first, second)
    }
}

/// Bytes one entry takes in its stream's buffer, for a line of `line` bytes and encoded
/// metadata of `metadata` bytes (an upper bound, used before encoding).
pub(crate) fn entry_len(line: usize, metadata: usize) -> usize {
    // Tag and length of the entry, of the timestamp (at most 22 bytes) and of the line.
    let body = 24 + encode::varint_len(line as u64) + 1 + line + metadata;
    1 + encode::varint_len(body as u64) + body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &str) -> Arc<LabelSet> {
        Arc::new(LabelSet::new(vec![("app".into(), v.into())]))
    }

    fn add(b: &mut Batch, s: &Arc<LabelSet>, line: &str) {
        let buf = b.stream_buf(s);
        let n = encode::put_entry(buf, 1, line.as_bytes(), &[]);
        b.added(n);
    }

    fn lines(stream: &Stream) -> Vec<String> {
        Entries(&stream.entries)
            .map(|e| String::from_utf8(e.line.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn entries_group_by_stream_in_arrival_order() {
        let mut b = Batch::default();
        let (a, z) = (set("a"), set("z"));
        add(&mut b, &z, "1");
        add(&mut b, &a, "2");
        add(&mut b, &z, "3");
        assert_eq!(b.streams(), 2);
        assert_eq!(b.entries(), 3);
        assert_eq!(b.streams[0].set.text, z.text);
        assert_eq!(lines(&b.streams[0]), ["1", "3"]);
        assert_eq!(b.streams[0].count, 2);
    }

    #[test]
    fn an_empty_batch_never_overflows() {
        let b = Batch::default();
        assert!(!b.would_overflow(usize::MAX / 2, 1, 10));
    }

    #[test]
    fn limits_on_entries_and_bytes_apply() {
        let mut b = Batch::default();
        add(&mut b, &set("a"), "x");
        assert!(b.would_overflow(1, 1, 1 << 20));
        assert!(b.would_overflow(1 << 20, 10, 1 << 20));
        assert!(!b.would_overflow(10, 10, 1 << 20));
    }

    #[test]
    fn the_size_covers_the_encoded_request() {
        let mut b = Batch::default();
        for i in 0..100 {
            add(&mut b, &set(&format!("s{}", i % 7)), &"y".repeat(i));
        }
        let mut raw = Vec::new();
        for s in b.parts() {
            raw.extend_from_slice(s.set.text.as_bytes());
            raw.extend_from_slice(s.entries);
        }
        assert!(b.bytes >= raw.len(), "{} < {}", b.bytes, raw.len());
    }

    #[test]
    fn the_entry_length_bound_holds() {
        for line in [0, 1, 127, 128, 300, 70_000] {
            let mut buf = Vec::new();
            let n = encode::put_entry(&mut buf, i128::MAX, &vec![b'x'; line], &[7; 30]);
            assert!(entry_len(line, 30) >= n, "{line}");
        }
    }

    #[test]
    fn split_halves_and_keeps_order() {
        let mut batch = Batch::default();
        let (a, z) = (set("a"), set("z"));
        for i in 0..5 {
            add(&mut batch, &a, &format!("a{i}"));
            add(&mut batch, &z, &format!("z{i}"));
        }
        let (first, second) = batch.split();
        assert_eq!((first.entries(), second.entries()), (5, 5));
        assert_eq!(lines(&first.streams[0]), ["a0", "a1", "a2", "a3", "a4"]);
        assert_eq!(second.streams[0].set.text, z.text);
    }

    #[test]
    fn due_follows_the_first_entry() {
        let mut b = Batch::default();
        assert!(b.due(Duration::from_secs(1)).is_none());
        add(&mut b, &set("a"), "x");
        assert!(b.due(Duration::from_secs(1)).is_some());
        assert!(b.take().entries() == 1 && b.is_empty());
    }
}
