//! The batch being filled: entries grouped by stream, with a running size estimate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::encode::{EntryAdapter, PushRequest, StreamAdapter};
use super::labels::LabelSet;

/// Protobuf framing per entry (tags, lengths, the timestamp), rounded up.
const ENTRY_OVERHEAD: usize = 24;
/// Protobuf framing per stream, rounded up.
const STREAM_OVERHEAD: usize = 8;

/// Entries waiting to be pushed, grouped by stream in order of first arrival.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) req: PushRequest,
    /// The label set of each stream in `req`, same order (the JSON encoding needs the pairs).
    pub(crate) sets: Vec<Arc<LabelSet>>,
    index: HashMap<Arc<LabelSet>, usize>,
    /// The stream of the last entry: most records go to the stream of the one before, and
    /// a pointer comparison is far cheaper than hashing the label set.
    last: Option<(Arc<LabelSet>, usize)>,
    entries: usize,
    bytes: usize,
    opened: Option<Instant>,
}

/// The estimated encoded size of an entry, before compression.
pub(crate) fn entry_cost(entry: &EntryAdapter) -> usize {
    let md: usize = entry
        .structured_metadata
        .iter()
        .map(|p| p.name.len() + p.value.len() + 6)
        .sum();
    entry.line.len() + md + ENTRY_OVERHEAD
}

impl Batch {
    pub(crate) fn entries(&self) -> usize {
        self.entries
    }

    pub(crate) fn streams(&self) -> usize {
        self.req.streams.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// What adding `entry` to stream `set` would add to the size estimate.
    pub(crate) fn cost(&self, set: &Arc<LabelSet>, entry: &EntryAdapter) -> usize {
        let stream = if self.stream_of(set).is_some() {
            0
        } else {
            set.text.len() + STREAM_OVERHEAD
        };
        entry_cost(entry) + stream
    }

    /// True when adding an entry of `cost` bytes would break a limit (never for an empty
    /// batch: one entry always fits, and the encoder checks the real size).
    pub(crate) fn would_overflow(&self, cost: usize, max_entries: usize, max_bytes: usize) -> bool {
        !self.is_empty() && (self.entries >= max_entries || self.bytes + cost > max_bytes)
    }

    /// Adds an entry; `cost` is what [`cost`](Self::cost) returned for it.
    pub(crate) fn push(&mut self, set: Arc<LabelSet>, entry: EntryAdapter, cost: usize) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
        }
        let i = if let Some(i) = self.stream_of(&set) {
            i
        } else {
            let i = self.req.streams.len();
            self.req.streams.push(StreamAdapter {
                labels: set.text.clone(),
                entries: Vec::new(),
                hash: 0,
            });
            self.sets.push(Arc::clone(&set));
            self.index.insert(set, i);
            i
        };
        self.req.streams[i].entries.push(entry);
        self.entries += 1;
        self.bytes += cost;
        if !self
            .last
            .as_ref()
            .is_some_and(|(l, _)| Arc::ptr_eq(l, &self.sets[i]))
        {
            self.last = Some((Arc::clone(&self.sets[i]), i));
        }
    }

    /// The index of `set`'s stream in the batch, if it has one.
    fn stream_of(&self, set: &Arc<LabelSet>) -> Option<usize> {
        match &self.last {
            Some((last, i)) if Arc::ptr_eq(last, set) => Some(*i),
            _ => self.index.get(set).copied(),
        }
    }

    /// When the batch must be sent, `wait` after its first entry arrived (`None` if empty).
    pub(crate) fn due(&self, wait: Duration) -> Option<Instant> {
        // A wait too long for an `Instant` (e.g. `Duration::MAX`) is never due.
        self.opened.and_then(|t| t.checked_add(wait))
    }

    /// Takes the batch, leaving an empty one.
    pub(crate) fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// Splits a batch of two or more entries into two with about half the entries each,
    /// keeping the order of entries within each stream.
    pub(crate) fn split(self) -> (Batch, Batch) {
        let half = self.entries / 2;
        let (mut first, mut second) = (Batch::default(), Batch::default());
        let mut moved = 0;
        for (stream, set) in self.req.streams.into_iter().zip(self.sets) {
            for entry in stream.entries {
                let target = if moved < half {
                    &mut first
                } else {
                    &mut second
                };
                let cost = target.cost(&set, &entry);
                target.push(Arc::clone(&set), entry, cost);
                moved += 1;
            }
        }
        (first, second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::loki::encode::Timestamp;

    fn entry(line: &str) -> EntryAdapter {
        EntryAdapter {
            timestamp: Some(Timestamp::from_unix_nanos(1)),
            line: line.into(),
            structured_metadata: vec![],
        }
    }

    fn set(v: &str) -> Arc<LabelSet> {
        Arc::new(LabelSet::new(vec![("app".into(), v.into())]))
    }

    fn add(b: &mut Batch, s: &Arc<LabelSet>, line: &str) {
        let e = entry(line);
        let cost = b.cost(s, &e);
        b.push(Arc::clone(s), e, cost);
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
        assert_eq!(b.req.streams[0].labels, z.text);
        assert_eq!(b.req.streams[0].entries.len(), 2);
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
    fn split_halves_and_keeps_order() {
        let mut batch = Batch::default();
        let (a, z) = (set("a"), set("z"));
        for i in 0..5 {
            add(&mut batch, &a, &format!("a{i}"));
            add(&mut batch, &z, &format!("z{i}"));
        }
        let (first, second) = batch.split();
        assert_eq!((first.entries(), second.entries()), (5, 5));
        let lines: Vec<_> = first.req.streams[0]
            .entries
            .iter()
            .map(|e| e.line.clone())
            .collect();
        assert_eq!(lines, ["a0", "a1", "a2", "a3", "a4"]);
        assert_eq!(second.req.streams[0].labels, z.text);
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
