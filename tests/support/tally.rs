//! Tallies of what sinks reported, shared by the file and Loki helpers (each includes this
//! file, so every test file gets it through its `support` module).

use std::collections::BTreeMap;

use sinkwatch::testing::{Matcher, Watcher};
use sinkwatch::{events, SinkId};

/// The records `sink` reported dropped, per reason, in every `records_dropped` event
/// `seen` has captured so far (consumed by a wait or not).
pub fn drops(seen: &Watcher, sink: &SinkId) -> BTreeMap<String, u64> {
    let dropped = Matcher::sink_event(sink, events::records_dropped::NAME);
    let mut out = BTreeMap::new();
    for e in seen.history().iter().filter(|e| dropped.matches(e)) {
        let reason = e.str(events::records_dropped::REASON).unwrap().to_owned();
        *out.entry(reason).or_insert(0) += e.u64(events::records_dropped::COUNT).unwrap();
    }
    out
}

/// The records `sink` reported dropped with `reason` so far (0 if none).
pub fn dropped(seen: &Watcher, sink: &SinkId, reason: &str) -> u64 {
    drops(seen, sink).get(reason).copied().unwrap_or(0)
}
