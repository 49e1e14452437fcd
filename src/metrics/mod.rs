//! The sinks' health as metrics (feature `metrics`): the names, types, labels and units.
//!
//! With the feature on, every sink records through the [`metrics`](https://docs.rs/metrics)
//! facade (0.24), so any recorder installed with `metrics::set_global_recorder` receives
//! them: `metrics-exporter-prometheus`, OpenTelemetry's bridge, a test recorder. sinkwatch
//! depends on no exporter. [`ALL`] lists every metric; `docs/metrics.md` (also
//! [`guide::metrics`](crate::guide::metrics)) says when each moves and how it relates to
//! [`SinkStats`](crate::SinkStats) and to the events.
//!
//! Every metric carries the label [`SINK`] (the sink's id, as in the events' `sink`
//! field); some carry one more, [`REASON`] or [`STATUS`], whose values are few.
//!
//! **Exact whatever the subscriber's filter.** The counts are recorded by the sinks
//! themselves, not derived from `tracing` events, so an application that hides sinkwatch's
//! events (`EnvFilter::new("info,sinkwatch=off")`) still gets every count. At every
//! quiescent point (once `flush()` has resolved, or after shutdown) each counter equals
//! the matching [`SinkStats`](crate::SinkStats) field and the sum of the matching events.
//!
//! # Examples
//!
//! Install a recorder before building the sinks (a sink records into the global recorder;
//! what it counted before one was installed is not replayed):
//!
//! ```
//! # #[cfg(feature = "file")] {
//! use std::time::Duration;
//! use sinkwatch::{metrics, FileSink, Record};
//!
//! // metrics::set_global_recorder(my_recorder).unwrap(); // or an exporter's install()
//! # let dir = tempfile::tempdir().unwrap();
//! let sink = FileSink::builder(dir.path()).build().unwrap();
//! sink.write(Record::new(tracing::Level::INFO, "hello")).unwrap();
//! let stats = sink.shutdown_blocking(Duration::from_secs(5)).stats;
//! // The recorder now holds sinkwatch_records_accepted_total{sink="file-…"} == 1.
//! assert_eq!(stats.accepted, 1);
//! assert!(metrics::ALL.iter().any(|m| m.name == metrics::RECORDS_ACCEPTED));
//! # }
//! ```

#[cfg(feature = "metrics")]
mod record;
#[cfg(feature = "metrics")]
pub(crate) use record::{bytes_written, push_attempt, SinkMetrics};
#[cfg(feature = "metrics")]
pub(crate) mod on;
#[cfg(feature = "metrics")]
pub(crate) use record::{buffer_bytes, buffer_max_bytes};

#[cfg(not(feature = "metrics"))]
mod off;
#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

/// A snapshot of a pipe taken under its lock, published after the lock is released.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(
    not(feature = "metrics"),
    allow(dead_code, reason = "read only with the feature")
)]
pub(crate) struct Seen {
    /// Records accepted so far.
    pub(crate) accepted: u64,
    /// Records and bytes counted against the queue's bound.
    pub(crate) records: usize,
    pub(crate) bytes: usize,
}

#[cfg(feature = "metrics")]
pub use schema::*;

#[cfg(feature = "metrics")]
mod schema {
    /// The label every metric carries: the sink's id (as in the events' `sink` field).
    pub const SINK: &str = "sink";
    /// The label of [`RECORDS_DROPPED`] and [`ROTATIONS`]: why (the events' `reason`).
    pub const REASON: &str = "reason";
    /// The label of [`PUSH_REQUESTS`]: the HTTP status as text (`"204"`, `"503"`), or
    /// `"error"` for a transport error (refused, reset, timed out).
    pub const STATUS: &str = "status";

    /// Counter: records the sink accepted ([`SinkStats::accepted`](crate::SinkStats)).
    pub const RECORDS_ACCEPTED: &str = "sinkwatch_records_accepted_total";
    /// Counter: records delivered ([`SinkStats::delivered`](crate::SinkStats)).
    pub const RECORDS_DELIVERED: &str = "sinkwatch_records_delivered_total";
    /// Counter: writes refused by a closed sink ([`SinkStats::refused`](crate::SinkStats)).
    pub const RECORDS_REFUSED: &str = "sinkwatch_records_refused_total";
    /// Counter, label [`REASON`]: records dropped ([`SinkStats::dropped`](crate::SinkStats)
    /// over every reason; per reason, the sum of `records_dropped`'s `count`).
    pub const RECORDS_DROPPED: &str = "sinkwatch_records_dropped_total";
    /// Gauge: bytes counted against the queue's byte bound (queued, or taken by the worker
    /// and not yet written or pushed).
    pub const QUEUE_BYTES: &str = "sinkwatch_queue_bytes";
    /// Gauge: records counted against the queue's record bound.
    pub const QUEUE_RECORDS: &str = "sinkwatch_queue_records";
    /// Gauge: the queue's byte bound (set when the sink is built).
    pub const QUEUE_MAX_BYTES: &str = "sinkwatch_queue_max_bytes";
    /// Gauge: the queue's record bound (set when the sink is built).
    pub const QUEUE_MAX_RECORDS: &str = "sinkwatch_queue_max_records";
    /// Counter, label [`REASON`] (`size`, `time`, `manual`): file rotations (the count of
    /// `rotation_complete`).
    pub const ROTATIONS: &str = "sinkwatch_rotations_total";
    /// Counter: bytes of whole lines the file sink wrote to the OS.
    pub const BYTES_WRITTEN: &str = "sinkwatch_bytes_written_total";
    /// Counter: rotated files compressed (the count of `compression_complete`).
    pub const COMPRESSIONS: &str = "sinkwatch_compressions_total";
    /// Counter: rotated files removed by retention (the sum of `retention_pruned`'s `files`).
    pub const RETENTION_REMOVED: &str = "sinkwatch_retention_removed_total";
    /// Counter, label [`STATUS`]: Loki push attempts (HTTP requests, retries included).
    pub const PUSH_REQUESTS: &str = "sinkwatch_push_requests_total";
    /// Counter: push attempts that failed and are retried (the count of `push_retry`).
    pub const PUSH_RETRIES: &str = "sinkwatch_push_retries_total";
    /// Histogram, in seconds: the time of each push attempt, from sending the request to
    /// its response (or its transport error).
    pub const PUSH_DURATION: &str = "sinkwatch_push_duration_seconds";
    /// Counter: wire bytes (compressed request bodies) of the pushes Loki accepted (the sum
    /// of `push_complete`'s `bytes`).
    pub const PUSH_BYTES: &str = "sinkwatch_push_bytes_total";

    /// Gauge, with `disk_buffer`: bytes the Loki sink's disk buffer takes on disk
    /// (segments and settlement log).
    pub const BUFFER_BYTES: &str = "sinkwatch_buffer_bytes";
    /// Gauge, with `disk_buffer`: the disk buffer's byte bound.
    pub const BUFFER_MAX_BYTES: &str = "sinkwatch_buffer_max_bytes";
    /// Counter, with `disk_buffer`: records replayed from the disk buffer at start-up
    /// (the sum of `buffer_replayed`'s `records`).
    pub const BUFFER_REPLAYED_RECORDS: &str = "sinkwatch_buffer_replayed_records_total";
    /// Counter, with `disk_buffer`: bytes replayed from the disk buffer (the sum of
    /// `buffer_replayed`'s `bytes`).
    pub const BUFFER_REPLAYED_BYTES: &str = "sinkwatch_buffer_replayed_bytes_total";

    /// Suggested bucket bounds (seconds) for [`PUSH_DURATION`]: from a local Loki's few
    /// milliseconds to the default request timeout (10 s). The facade defines no buckets;
    /// give these to your exporter (for `metrics-exporter-prometheus`,
    /// `set_buckets_for_metric`), or it may render a summary instead of a histogram.
    pub const PUSH_DURATION_BUCKETS: &[f64] = &[
        0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];

    /// A metric's type.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        /// Only goes up (its name ends in `_total`).
        Counter,
        /// Goes up and down; the latest value is what counts.
        Gauge,
        /// A distribution of observations.
        Histogram,
    }

    /// One metric, as listed by [`ALL`].
    #[derive(Debug, Clone, Copy)]
    pub struct Metric {
        /// The name.
        pub name: &'static str,
        /// The type.
        pub kind: Kind,
        /// What it counts or measures: `records`, `bytes`, `seconds`, `files`,
        /// `rotations` or `requests`.
        pub unit: &'static str,
        /// The labels besides [`SINK`].
        pub labels: &'static [&'static str],
        /// The help text given to the recorder.
        pub help: &'static str,
    }

    const fn metric(
        name: &'static str,
        kind: Kind,
        unit: &'static str,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Metric {
        Metric {
            name,
            kind,
            unit,
            labels,
            help,
        }
    }

    /// Every metric the sinks record, in the order of `docs/metrics.md`.
    #[rustfmt::skip]
    pub const ALL: &[Metric] = &[
        metric(RECORDS_ACCEPTED, Kind::Counter, "records", &[],
            "Records the sink accepted."),
        metric(RECORDS_DELIVERED, Kind::Counter, "records", &[],
            "Records delivered: written to the OS, or pushed and answered with a 2xx."),
        metric(RECORDS_REFUSED, Kind::Counter, "records", &[],
            "Writes refused because the sink was closed (never accepted)."),
        metric(RECORDS_DROPPED, Kind::Counter, "records", &[REASON],
            "Records dropped, by reason."),
        metric(QUEUE_BYTES, Kind::Gauge, "bytes", &[],
            "Bytes counted against the queue's byte bound."),
        metric(QUEUE_RECORDS, Kind::Gauge, "records", &[],
            "Records counted against the queue's record bound."),
        metric(QUEUE_MAX_BYTES, Kind::Gauge, "bytes", &[],
            "The queue's byte bound."),
        metric(QUEUE_MAX_RECORDS, Kind::Gauge, "records", &[],
            "The queue's record bound."),
        metric(ROTATIONS, Kind::Counter, "rotations", &[REASON],
            "File rotations, by reason."),
        metric(BYTES_WRITTEN, Kind::Counter, "bytes", &[],
            "Bytes of whole lines written to the OS."),
        metric(COMPRESSIONS, Kind::Counter, "files", &[],
            "Rotated files compressed."),
        metric(RETENTION_REMOVED, Kind::Counter, "files", &[],
            "Rotated files removed by retention."),
        metric(PUSH_REQUESTS, Kind::Counter, "requests", &[STATUS],
            "Loki push attempts, by HTTP status (error: a transport error)."),
        metric(PUSH_RETRIES, Kind::Counter, "requests", &[],
            "Loki push attempts that failed and are retried."),
        metric(PUSH_DURATION, Kind::Histogram, "seconds", &[],
            "Time of each Loki push attempt, from sending the request to its response."),
        metric(PUSH_BYTES, Kind::Counter, "bytes", &[],
            "Wire bytes of the pushes Loki accepted."),
        metric(BUFFER_BYTES, Kind::Gauge, "bytes", &[],
            "Bytes the Loki sink's disk buffer takes on disk."),
        metric(BUFFER_MAX_BYTES, Kind::Gauge, "bytes", &[],
            "The disk buffer's byte bound."),
        metric(BUFFER_REPLAYED_RECORDS, Kind::Counter, "records", &[],
            "Records replayed from the disk buffer at start-up."),
        metric(BUFFER_REPLAYED_BYTES, Kind::Counter, "bytes", &[],
            "Bytes replayed from the disk buffer at start-up."),
    ];
}
