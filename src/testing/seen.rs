//! A watcher's own copy of the events it has fetched, indexed so that a wait examines the
//! events captured since the previous fetch plus only those earlier events that could match.
//!
//! Every unconsumed event since the watcher's start stays eligible for later waits (a wait
//! for `B` after a wait for `A` finds a `B` captured before `A`). To keep that without
//! rescanning the whole history, each fetched event is indexed by its name, its target and
//! each of its field names. A matcher requires an exact name, target or field, so the events
//! it can match are all in that key's bucket: a wait re-checks the smallest such bucket, and
//! only a matcher without any of those keys (for example `Matcher::any()` or a target prefix
//! alone) re-examines every event since its start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use super::capture::{hub, CapturedEvent, MAX_RETAINED};
use super::matcher::{IndexKey, Matcher};

type Buckets = HashMap<&'static str, VecDeque<u64>>;

#[derive(Default)]
pub(crate) struct Seen {
    /// Fetched events with contiguous sequence numbers from `base`.
    events: VecDeque<Arc<CapturedEvent>>,
    base: u64,
    /// The first sequence number not fetched yet.
    cursor: u64,
    pub(crate) consumed: HashSet<u64>,
    by_name: Buckets,
    by_target: Buckets,
    by_field: Buckets,
    /// Events copied out of the hub.
    pub(crate) fetched: u64,
    /// Events a wait evaluated against its matchers.
    pub(crate) examined: u64,
}

impl Seen {
    pub(crate) fn new(start: u64) -> Self {
        Seen {
            base: start,
            cursor: start,
            ..Seen::default()
        }
    }

    /// The first sequence number still held: a wait from before it has lost events.
    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Copies the events captured since the last fetch out of the hub and indexes them.
    pub(crate) fn refresh(&mut self, watcher: u64) {
        let fetched = hub().fetch(watcher, self.cursor);
        if fetched.evicted > 0 {
            // The hub dropped events we never fetched: what we hold is no longer a
            // contiguous history, so start afresh after the gap (waits from before it fail
            // with `Overflow`).
            self.clear(self.cursor + fetched.evicted);
        }
        self.fetched += fetched.events.len() as u64;
        for ev in fetched.events {
            self.index(&ev);
            self.events.push_back(ev);
            self.cursor += 1;
        }
        while self.events.len() > MAX_RETAINED {
            self.evict_oldest();
        }
    }

    fn clear(&mut self, base: u64) {
        self.events.clear();
        self.by_name.clear();
        self.by_target.clear();
        self.by_field.clear();
        self.base = base;
        self.cursor = base;
    }

    fn index(&mut self, ev: &CapturedEvent) {
        let seq = ev.seq();
        self.by_name.entry(ev.name()).or_default().push_back(seq);
        self.by_target
            .entry(ev.target())
            .or_default()
            .push_back(seq);
        let mut names: Vec<&'static str> = ev.fields().iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            self.by_field.entry(name).or_default().push_back(seq);
        }
    }

    fn evict_oldest(&mut self) {
        let Some(ev) = self.events.pop_front() else {
            return;
        };
        self.base += 1;
        // The oldest event is at the front of each of its buckets.
        let pop = |buckets: &mut Buckets, key: &'static str| {
            if let Some(bucket) = buckets.get_mut(key) {
                bucket.pop_front();
                if bucket.is_empty() {
                    buckets.remove(key);
                }
            }
        };
        pop(&mut self.by_name, ev.name());
        pop(&mut self.by_target, ev.target());
        let mut names: Vec<&'static str> = ev.fields().iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            pop(&mut self.by_field, name);
        }
        self.consumed.remove(&ev.seq());
    }

    /// The held event with this sequence number.
    pub(crate) fn get(&self, seq: u64) -> &Arc<CapturedEvent> {
        let i = usize::try_from(seq - self.base).expect("a held sequence number");
        &self.events[i]
    }

    /// The held events from `from` on, oldest first.
    pub(crate) fn since(&self, from: u64) -> impl Iterator<Item = &Arc<CapturedEvent>> {
        let skip = usize::try_from(from.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.events.iter().skip(skip)
    }

    /// The sequence numbers from `from` on (up to the cursor) of the unconsumed events that
    /// any of `matchers` could match, in capture order. Counts them as examined.
    pub(crate) fn candidates<'m>(
        &mut self,
        matchers: impl IntoIterator<Item = &'m Matcher>,
        from: u64,
    ) -> Vec<u64> {
        let from = from.max(self.base);
        let range = self.cursor.saturating_sub(from);
        let mut seqs: Vec<u64> = Vec::new();
        let mut full = false;
        // Steps of `wait_n` are copies of one matcher: one bucket serves them all.
        let mut done: Vec<Vec<IndexKey<'_>>> = Vec::new();
        for matcher in matchers {
            let keys = matcher.index_keys();
            if done.contains(&keys) {
                continue;
            }
            match self.smallest_bucket(&keys, from) {
                Some(bucket) => seqs.extend(bucket),
                None => full = true,
            }
            if full || seqs.len() as u64 >= range {
                full = true;
                break;
            }
            done.push(keys);
        }
        if full {
            seqs = (from..self.cursor).collect();
        } else {
            seqs.sort_unstable();
            seqs.dedup();
        }
        seqs.retain(|s| !self.consumed.contains(s));
        self.examined += seqs.len() as u64;
        seqs
    }

    /// The entries from `from` on of the smallest bucket among a matcher's `keys` (each holds
    /// every event the matcher could match), or `None` without keys (it could match anything).
    fn smallest_bucket(
        &self,
        keys: &[IndexKey<'_>],
        from: u64,
    ) -> Option<impl Iterator<Item = u64> + '_> {
        static EMPTY: VecDeque<u64> = VecDeque::new();
        keys.iter()
            .map(|key| {
                let bucket = match *key {
                    IndexKey::Name(k) => self.by_name.get(k),
                    IndexKey::Target(k) => self.by_target.get(k),
                    IndexKey::Field(k) => self.by_field.get(k),
                };
                let bucket = bucket.unwrap_or(&EMPTY);
                let start = bucket.partition_point(|s| *s < from);
                (bucket.len() - start, bucket, start)
            })
            .min_by_key(|(len, _, _)| *len)
            .map(|(_, bucket, start)| bucket.range(start..).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_store_holds_nothing_from_its_start() {
        let mut seen = Seen::new(7);
        assert_eq!(seen.base(), 7);
        assert_eq!(seen.cursor(), 7);
        assert!(seen.candidates([&Matcher::any()], 7).is_empty());
        assert_eq!(seen.examined, 0);
    }
}
