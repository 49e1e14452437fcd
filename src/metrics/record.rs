//! Recording through the `metrics` facade (feature `metrics`).
//!
//! Two kinds of hooks, both per batch, never per record:
//! - the pipe's counts that have no event (accepted, delivered, refused, the queue gauges)
//!   go through the [`SinkMetrics`] each pipe holds;
//! - counts that have an event are recorded by that event's emitter in `events.rs`, before
//!   `tracing::event!` (whose filter may skip everything after it), through [`super::on`],
//!   and the two without an event (`bytes_written`, `push_attempt`) by their call sites.
//!
//! Each sink's handles are registered with the recorder at their first use and kept, so a
//! batch costs a few atomic additions, not a registry lookup per metric (which callgrind
//! showed doubling the worker's cost for one-record batches). The hooks that only have a
//! `SinkId` find them in the registry of live sinks ([`LIVE`]); once a sink is gone (a
//! compression finishing after its worker), they fall back to the facade's lookup.
//!
//! `accepted` is counted on the caller's thread inside `State::admit`; publishing it there
//! would cost every caller a metrics call per record. The worker publishes the difference
//! instead, whenever it looks at the pipe: when it takes work, reports drops, releases
//! room, completes a flush and ends, so the counter is exact at every quiescent point.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata};
use metrics::{SharedString, Unit};

use super::{schema, Kind, Seen};
use crate::SinkId;

/// What the sinks' metrics are registered with (the recorder may filter on it).
static META: Metadata<'static> =
    Metadata::new(crate::events::TARGET, Level::INFO, Some(module_path!()));

/// The live sinks' handles, by sink number: few entries, read once per hook call.
static LIVE: RwLock<Vec<(u64, Weak<Handles>)>> = RwLock::new(Vec::new());

/// The pipe's metrics for one sink (held by its pipe; the sink's entry in [`LIVE`]).
pub(crate) struct SinkMetrics(Arc<Handles>);

/// One sink's handles, each registered at its first use.
struct Handles {
    sink: SharedString,
    bounds: (usize, usize),
    /// `accepted` as last published: the next publication adds the difference.
    published: AtomicU64,
    pipe: OnceLock<Pipe>,
    counters: Cache<Counter>,
    gauges: Cache<Gauge>,
    duration: OnceLock<Histogram>,
}

/// The handles every pipe publishes to.
struct Pipe {
    accepted: Counter,
    delivered: Counter,
    refused: Counter,
    queue_bytes: Gauge,
    queue_records: Gauge,
}

impl SinkMetrics {
    /// The metrics of a new sink: describes every metric to the recorder (idempotent, and
    /// cheap next to building a sink), and registers the sink for the event hooks.
    pub(crate) fn new(id: &SinkId, max_records: usize, max_bytes: usize) -> Self {
        describe();
        let handles = Arc::new(Handles {
            sink: SharedString::from(Arc::<str>::from(id.as_str())),
            bounds: (max_records, max_bytes),
            published: AtomicU64::new(0),
            pipe: OnceLock::new(),
            counters: Cache::default(),
            gauges: Cache::default(),
            duration: OnceLock::new(),
        });
        let mut live = LIVE.write().unwrap_or_else(PoisonError::into_inner);
        live.retain(|(_, h)| h.strong_count() > 0);
        live.push((id.number(), Arc::downgrade(&handles)));
        drop(live);
        // The bounds now, so they show before the first record.
        handles.pipe();
        SinkMetrics(handles)
    }

    /// Publishes a snapshot taken under the pipe's lock: the records accepted since the
    /// last one, and the queue's gauges.
    pub(crate) fn publish(&self, seen: Seen) {
        let h = &self.0;
        // `fetch_max`: of two racing publishers, the later snapshot wins and nothing is
        // added twice.
        let before = h.published.fetch_max(seen.accepted, Ordering::AcqRel);
        let pipe = h.pipe();
        let new = seen.accepted.saturating_sub(before);
        if new > 0 {
            pipe.accepted.increment(new);
        }
        pipe.queue_records.set(as_f64(seen.records));
        pipe.queue_bytes.set(as_f64(seen.bytes));
    }

    /// `n` records were delivered (once per batch).
    pub(crate) fn delivered(&self, n: u64) {
        self.0.pipe().delivered.increment(n);
    }

    /// A write was refused by the closed sink (a cold path: counted at once, so the counter
    /// is exact as soon as the write has returned). Out of line and cold, so the writers'
    /// hot path (`Producer::put`) compiles as it does without the feature.
    #[cold]
    #[inline(never)]
    pub(crate) fn refused(&self) {
        self.0.pipe().refused.increment(1);
    }
}

impl Handles {
    fn pipe(&self) -> &Pipe {
        self.pipe.get_or_init(|| {
            let (max_records, max_bytes) = self.bounds;
            gauge(&self.key(schema::QUEUE_MAX_RECORDS, None)).set(as_f64(max_records));
            gauge(&self.key(schema::QUEUE_MAX_BYTES, None)).set(as_f64(max_bytes));
            Pipe {
                accepted: counter(&self.key(schema::RECORDS_ACCEPTED, None)),
                delivered: counter(&self.key(schema::RECORDS_DELIVERED, None)),
                refused: counter(&self.key(schema::RECORDS_REFUSED, None)),
                queue_bytes: gauge(&self.key(schema::QUEUE_BYTES, None)),
                queue_records: gauge(&self.key(schema::QUEUE_RECORDS, None)),
            }
        })
    }

    fn key(&self, name: &'static str, label: Option<(&'static str, &str)>) -> Key {
        let mut labels = Vec::with_capacity(2);
        labels.push(Label::new(schema::SINK, self.sink.clone()));
        if let Some((k, v)) = label {
            labels.push(Label::new(k, v.to_owned()));
        }
        Key::from_parts(name, labels)
    }
}

/// Handles by metric name and value of its second label, registered at first use.
struct Cache<T>(Mutex<Vec<Cached<T>>>);

/// A metric's name, the value of its second label if it has one, and its handle.
type Cached<T> = (&'static str, Option<Box<str>>, T);

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache(Mutex::new(Vec::new()))
    }
}

impl<T> Cache<T> {
    fn with(
        &self,
        name: &'static str,
        label: Option<(&'static str, &str)>,
        register: impl FnOnce() -> T,
        use_it: impl FnOnce(&T),
    ) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let value = label.map(|(_, v)| v);
        let found = cache
            .iter()
            .position(|(n, v, _)| *n == name && v.as_deref() == value);
        let i = found.unwrap_or_else(|| {
            cache.push((name, value.map(Box::from), register()));
            cache.len() - 1
        });
        use_it(&cache[i].2);
    }
}

/// Calls `f` with sink `id`'s handles, if it is alive.
fn with_sink(id: &SinkId, f: impl FnOnce(&Handles)) -> bool {
    let live = LIVE.read().unwrap_or_else(PoisonError::into_inner);
    let found = live
        .iter()
        .find(|(n, _)| *n == id.number())
        .and_then(|(_, h)| h.upgrade());
    drop(live);
    found.map(|h| f(&h)).is_some()
}

/// Adds `n` to counter `name` of sink `id`, with its second label if it has one.
pub(super) fn count(name: &'static str, id: &SinkId, label: Option<(&'static str, &str)>, n: u64) {
    let cached = with_sink(id, |h| {
        let register = || counter(&h.key(name, label));
        h.counters.with(name, label, register, |c| c.increment(n));
    });
    if !cached {
        counter(&uncached_key(name, id, label)).increment(n);
    }
}

fn set(name: &'static str, id: &SinkId, value: u64) {
    let cached = with_sink(id, |h| {
        let register = || gauge(&h.key(name, None));
        h.gauges
            .with(name, None, register, |g| g.set(as_f64(value)));
    });
    if !cached {
        gauge(&uncached_key(name, id, None)).set(as_f64(value));
    }
}

fn uncached_key(name: &'static str, id: &SinkId, label: Option<(&'static str, &str)>) -> Key {
    let mut labels = vec![Label::new(schema::SINK, id.as_str().to_owned())];
    if let Some((k, v)) = label {
        labels.push(Label::new(k, v.to_owned()));
    }
    Key::from_parts(name, labels)
}

fn counter(key: &Key) -> Counter {
    metrics::with_recorder(|r| r.register_counter(key, &META))
}

fn gauge(key: &Key) -> Gauge {
    metrics::with_recorder(|r| r.register_gauge(key, &META))
}

/// The file sink wrote `bytes` bytes of whole lines to the OS.
pub(crate) fn bytes_written(id: &SinkId, bytes: usize) {
    if bytes > 0 {
        count(schema::BYTES_WRITTEN, id, None, bytes as u64);
    }
}

/// One Loki push attempt ended: with an HTTP `status`, or 0 for a transport error.
pub(crate) fn push_attempt(id: &SinkId, status: u16, took: Duration) {
    let mut text = itoa::Buffer::new();
    let status = if status == 0 {
        "error"
    } else {
        text.format(status)
    };
    count(schema::PUSH_REQUESTS, id, Some((schema::STATUS, status)), 1);
    let seconds = took.as_secs_f64();
    let cached = with_sink(id, |h| {
        let histogram = h.duration.get_or_init(|| {
            let key = h.key(schema::PUSH_DURATION, None);
            metrics::with_recorder(|r| r.register_histogram(&key, &META))
        });
        histogram.record(seconds);
    });
    if !cached {
        let key = uncached_key(schema::PUSH_DURATION, id, None);
        metrics::with_recorder(|r| r.register_histogram(&key, &META).record(seconds));
    }
}

/// The disk buffer takes `bytes` bytes on disk (`sinkwatch_buffer_bytes`).
pub(crate) fn buffer_bytes(id: &SinkId, bytes: u64) {
    set(schema::BUFFER_BYTES, id, bytes);
}

/// The disk buffer's byte bound (`sinkwatch_buffer_max_bytes`).
pub(crate) fn buffer_max_bytes(id: &SinkId, bytes: u64) {
    set(schema::BUFFER_MAX_BYTES, id, bytes);
}

/// Records and bytes replayed from the disk buffer at start-up
/// (`sinkwatch_buffer_replayed_records_total`, `sinkwatch_buffer_replayed_bytes_total`),
/// from the `buffer_replayed` event's hook.
pub(super) fn buffer_replayed(id: &SinkId, records: u64, bytes: u64) {
    count(schema::BUFFER_REPLAYED_RECORDS, id, None, records);
    count(schema::BUFFER_REPLAYED_BYTES, id, None, bytes);
}

/// Exact below 2^53, which no queue reaches.
#[allow(clippy::cast_precision_loss)]
fn as_f64(n: impl TryInto<u64>) -> f64 {
    n.try_into().unwrap_or(u64::MAX) as f64
}

/// Gives the recorder every metric's type, unit and help text.
fn describe() {
    metrics::with_recorder(|r| {
        for m in schema::ALL {
            let name = KeyName::from_const_str(m.name);
            let unit = Some(unit(m.unit));
            let help = SharedString::const_str(m.help);
            match m.kind {
                Kind::Counter => r.describe_counter(name, unit, help),
                Kind::Gauge => r.describe_gauge(name, unit, help),
                Kind::Histogram => r.describe_histogram(name, unit, help),
            }
        }
    });
}

fn unit(name: &str) -> Unit {
    match name {
        "bytes" => Unit::Bytes,
        "seconds" => Unit::Seconds,
        _ => Unit::Count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_maps_to_the_facade_s() {
        for m in schema::ALL {
            let expected = match m.unit {
                "bytes" => Unit::Bytes,
                "seconds" => Unit::Seconds,
                "records" | "files" | "rotations" | "requests" => Unit::Count,
                other => panic!("{}: unknown unit {other}", m.name),
            };
            assert_eq!(unit(m.unit), expected, "{}", m.name);
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for m in schema::ALL {
            assert!(m.name.starts_with("sinkwatch_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: `_total` on counters and only on them",
                m.name
            );
            match m.unit {
                "bytes" => assert!(m.name.contains("_bytes"), "{}", m.name),
                "seconds" => assert!(m.name.ends_with("_seconds"), "{}", m.name),
                _ => {}
            }
            assert!(m.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = schema::ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), schema::ALL.len());
    }

    /// Counts registrations, and adds every counter's increments into one total per name.
    #[derive(Default)]
    struct Counting {
        registrations: AtomicU64,
        totals: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    }

    impl metrics::Recorder for Counting {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            self.registrations.fetch_add(1, Ordering::Relaxed);
            let mut totals = self.totals.lock().unwrap();
            let name = format!("{}{:?}", key.name(), key.labels().collect::<Vec<_>>());
            let i = totals
                .iter()
                .position(|(n, _)| *n == name)
                .unwrap_or_else(|| {
                    totals.push((name, Arc::default()));
                    totals.len() - 1
                });
            Counter::from_arc(totals[i].1.clone())
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    impl Counting {
        fn total(&self) -> u64 {
            let totals = self.totals.lock().unwrap();
            totals.iter().map(|(_, t)| t.load(Ordering::Relaxed)).sum()
        }
    }

    #[test]
    fn a_live_sink_registers_each_counter_once_and_a_gone_one_still_counts() {
        let recorder = Counting::default();
        metrics::with_local_recorder(&recorder, || {
            let id = SinkId::new("cache");
            let sink = SinkMetrics::new(&id, 10, 100);
            let at_build = recorder.registrations.load(Ordering::Relaxed);
            for _ in 0..5 {
                count(schema::ROTATIONS, &id, Some((schema::REASON, "size")), 1);
                count(schema::ROTATIONS, &id, Some((schema::REASON, "manual")), 1);
                bytes_written(&id, 10);
            }
            let registered = recorder.registrations.load(Ordering::Relaxed) - at_build;
            assert_eq!(registered, 3, "one per name and label value");
            assert_eq!(recorder.total(), 5 + 5 + 50);
            drop(sink);
            // A compression finishing after its sink: counted through the facade's lookup.
            count(schema::COMPRESSIONS, &id, None, 1);
            assert_eq!(recorder.total(), 61);
        });
    }

    /// The rows of `docs/metrics.md`'s tables: (name, type, labels, unit, the rest).
    fn documented() -> Vec<Vec<String>> {
        include_str!("../../docs/metrics.md")
            .lines()
            .filter(|l| l.starts_with("| `sinkwatch_"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_docs_list_every_metric_with_its_type_labels_and_unit() {
        let rows = documented();
        for m in schema::ALL {
            let row = rows
                .iter()
                .find(|r| r[0] == format!("`{}`", m.name))
                .unwrap_or_else(|| panic!("{} is missing from docs/metrics.md", m.name));
            let kind = format!("{:?}", m.kind).to_lowercase();
            let mut labels = vec![format!("`{}`", schema::SINK)];
            labels.extend(m.labels.iter().map(|l| format!("`{l}`")));
            assert_eq!(row[1], kind, "{}", m.name);
            assert_eq!(row[2], labels.join(", "), "{}", m.name);
            assert_eq!(row[3], m.unit, "{}", m.name);
        }
        for row in &rows {
            let name = row[0].trim_matches('`');
            let known = schema::ALL.iter().any(|m| m.name == name);
            assert!(known, "docs/metrics.md lists {name}, which is not recorded");
        }
        assert_eq!(rows.len(), schema::ALL.len());
    }
}
