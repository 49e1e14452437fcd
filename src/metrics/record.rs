//! Recording through the `metrics` facade (feature `metrics`).
//!
//! Two kinds of hooks, both per batch, never per record:
//! - the pipe's counts that have no event (accepted, delivered, refused, the queue gauges)
//!   go through the [`SinkMetrics`] each pipe holds, whose keys are built once per sink;
//! - counts that have an event are recorded by that event's emitter in `events.rs`, before
//!   `tracing::event!` (whose filter may skip everything after it), through [`super::on`].
//!
//! `accepted` is counted on the caller's thread inside `State::admit`; publishing it there
//! would cost every caller a metrics call per record. The worker publishes the difference
//! instead, whenever it looks at the pipe: when it takes work, reports drops, releases
//! room, completes a flush and ends, so the counter is exact at every quiescent point.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Key, KeyName, Label, Level, Metadata, SharedString, Unit};

use super::{schema, Kind, Seen};
use crate::SinkId;

/// What the sinks' metrics are registered with (the recorder may filter on it).
static META: Metadata<'static> =
    Metadata::new(crate::events::TARGET, Level::INFO, Some(module_path!()));

/// The pipe's own metrics for one sink: keys built once, and what was published so far.
pub(crate) struct SinkMetrics {
    accepted: Key,
    delivered: Key,
    refused: Key,
    queue_bytes: Key,
    queue_records: Key,
    /// `accepted` as last published: the next publication adds the difference.
    published: AtomicU64,
}

impl SinkMetrics {
    /// The metrics of a new sink: describes every metric to the recorder (idempotent, and
    /// cheap next to building a sink) and sets the bound gauges.
    pub(crate) fn new(id: &SinkId, max_records: usize, max_bytes: usize) -> Self {
        describe();
        let key = |name: &'static str| Key::from_parts(name, vec![sink_label(id)]);
        set_gauge(&key(schema::QUEUE_MAX_RECORDS), max_records);
        set_gauge(&key(schema::QUEUE_MAX_BYTES), max_bytes);
        SinkMetrics {
            accepted: key(schema::RECORDS_ACCEPTED),
            delivered: key(schema::RECORDS_DELIVERED),
            refused: key(schema::RECORDS_REFUSED),
            queue_bytes: key(schema::QUEUE_BYTES),
            queue_records: key(schema::QUEUE_RECORDS),
            published: AtomicU64::new(0),
        }
    }

    /// Publishes a snapshot taken under the pipe's lock: the records accepted since the
    /// last one, and the queue's gauges.
    pub(crate) fn publish(&self, seen: Seen) {
        // `fetch_max`: of two racing publishers, the later snapshot wins and nothing is
        // added twice.
        let before = self.published.fetch_max(seen.accepted, Ordering::AcqRel);
        let new = seen.accepted.saturating_sub(before);
        metrics::with_recorder(|r| {
            if new > 0 {
                r.register_counter(&self.accepted, &META).increment(new);
            }
            r.register_gauge(&self.queue_records, &META)
                .set(as_f64(seen.records));
            r.register_gauge(&self.queue_bytes, &META)
                .set(as_f64(seen.bytes));
        });
    }

    /// `n` records were delivered (once per batch).
    pub(crate) fn delivered(&self, n: u64) {
        metrics::with_recorder(|r| r.register_counter(&self.delivered, &META).increment(n));
    }

    /// A write was refused by the closed sink (a cold path: counted at once, so the counter
    /// is exact as soon as the write has returned).
    pub(crate) fn refused(&self) {
        metrics::with_recorder(|r| r.register_counter(&self.refused, &META).increment(1));
    }
}

/// The file sink wrote `bytes` bytes of whole lines to the OS.
pub(crate) fn bytes_written(id: &SinkId, bytes: usize) {
    if bytes > 0 {
        count(schema::BYTES_WRITTEN, id, None, bytes as u64);
    }
}

/// One Loki push attempt ended: with an HTTP `status`, or 0 for a transport error.
pub(crate) fn push_attempt(id: &SinkId, status: u16, took: Duration) {
    let status = if status == 0 {
        SharedString::const_str("error")
    } else {
        SharedString::from_owned(status.to_string())
    };
    count(schema::PUSH_REQUESTS, id, Some((schema::STATUS, status)), 1);
    let key = Key::from_parts(schema::PUSH_DURATION, vec![sink_label(id)]);
    metrics::with_recorder(|r| r.register_histogram(&key, &META).record(took.as_secs_f64()));
}

/// The disk buffer holds `bytes` bytes (issue 15 wires it: `sinkwatch_buffer_bytes`).
#[allow(dead_code, reason = "the disk buffer (issue 15) will call it")]
pub(crate) fn buffer_bytes(id: &SinkId, bytes: u64) {
    let key = Key::from_parts(schema::BUFFER_BYTES, vec![sink_label(id)]);
    metrics::with_recorder(|r| r.register_gauge(&key, &META).set(as_f64(bytes)));
}

/// The disk buffer's byte bound (`sinkwatch_buffer_max_bytes`).
#[allow(dead_code, reason = "the disk buffer (issue 15) will call it")]
pub(crate) fn buffer_max_bytes(id: &SinkId, bytes: u64) {
    let key = Key::from_parts(schema::BUFFER_MAX_BYTES, vec![sink_label(id)]);
    metrics::with_recorder(|r| r.register_gauge(&key, &META).set(as_f64(bytes)));
}

/// Records and bytes replayed from the disk buffer at start-up
/// (`sinkwatch_buffer_replayed_records_total`, `sinkwatch_buffer_replayed_bytes_total`).
#[allow(dead_code, reason = "the disk buffer (issue 15) will call it")]
pub(crate) fn buffer_replayed(id: &SinkId, records: u64, bytes: u64) {
    count(schema::BUFFER_REPLAYED_RECORDS, id, None, records);
    count(schema::BUFFER_REPLAYED_BYTES, id, None, bytes);
}

/// Adds `n` to counter `name` of sink `id`, with one more label if given.
pub(super) fn count(
    name: &'static str,
    id: &SinkId,
    label: Option<(&'static str, SharedString)>,
    n: u64,
) {
    let mut labels = Vec::with_capacity(2);
    labels.push(sink_label(id));
    if let Some((k, v)) = label {
        labels.push(Label::new(k, v));
    }
    let key = Key::from_parts(name, labels);
    metrics::with_recorder(|r| r.register_counter(&key, &META).increment(n));
}

fn sink_label(id: &SinkId) -> Label {
    Label::new(schema::SINK, id.as_str().to_owned())
}

fn set_gauge(key: &Key, value: usize) {
    metrics::with_recorder(|r| r.register_gauge(key, &META).set(as_f64(value)));
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
        let reserved = [
            schema::BUFFER_BYTES,
            schema::BUFFER_MAX_BYTES,
            schema::BUFFER_REPLAYED_RECORDS,
            schema::BUFFER_REPLAYED_BYTES,
        ];
        for row in &rows {
            let name = row[0].trim_matches('`');
            let known = schema::ALL.iter().any(|m| m.name == name);
            let is_reserved = reserved.contains(&name) && row[4].starts_with("with `disk_buffer`");
            assert!(
                known || is_reserved,
                "docs/metrics.md lists {name}, which is not recorded"
            );
        }
        assert_eq!(rows.len(), schema::ALL.len() + reserved.len());
    }
}
