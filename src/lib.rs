//! Log sinks for `tracing` that tell the world what they did.
//!
//! sinkwatch ships a service's logs to Grafana Loki and to rotating files. Every significant
//! thing a sink does is a structured `tracing` event with a stable name and typed fields
//! (see [`events`]), and [`testing`] (feature `testing`) turns those events into awaitable
//! futures, so tests wait for `push_complete` instead of sleeping.
//!
//! # Usage
//!
//! Build the sinks, add one [`SinkLayer`] per sink to your subscriber, and keep a
//! [`ShutdownGuard`] alive until `main` returns:
//!
//! ```
//! # #[cfg(all(feature = "file", feature = "loki"))]
//! # fn main() -> Result<(), sinkwatch::Error> {
//! use sinkwatch::{FileSink, LokiSink, ShutdownGuard, SinkLayer};
//! use tracing_subscriber::filter::LevelFilter;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::Layer as _;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! let file = FileSink::builder(dir.path()).max_file_size(64 << 20).build()?;
//! let loki = LokiSink::builder("http://loki:3100").label("service_name", "checkout").build()?;
//! let guard = ShutdownGuard::new().with_sink(file.clone()).with_sink(loki.clone());
//! let subscriber = tracing_subscriber::registry()
//!     .with(SinkLayer::new(file))
//!     .with(SinkLayer::new(loki).with_filter(LevelFilter::WARN));
//! tracing::subscriber::with_default(subscriber, || tracing::warn!(order_id = 42, "retried"));
//! drop(guard); // delivers what is queued, with a deadline, and reports the rest
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "file", feature = "loki")))]
//! # fn main() {}
//! ```
//!
//! # The sinks
//!
//! - [`FileSink`] (feature `file`): JSON or text lines; rotation by size and/or time;
//!   retention by count, age and total bytes; atomic background gzip.
//! - [`LokiSink`] (feature `loki`): protobuf+snappy or JSON; labels, structured metadata;
//!   batching; Loki's retry rules, `Retry-After`, a timeout on every request.
//!
//! Each runs a worker on its own thread behind a bounded queue: callers never wait on I/O,
//! and every record accepted is delivered or reported dropped (`records_dropped`, with a
//! reason), so `accepted == delivered + dropped` ([`SinkStats`]) at every quiescent point.
//! [The design guide](guide::design) describes the data flow, [the operations
//! guide](guide::operations) every setting.
//!
//! # Guides
//!
//! Long-form documentation lives in [`guide`], one module per topic; every code example in
//! it is compiled and run as a doc test:
//!
//! - [`guide::testing`] (feature `testing`): awaiting events in tests, without sleeps.
//! - [`guide::receiver`] (feature `testing`): the Loki-compatible receiver.
//! - [`guide::file_sink`] (feature `file`) and [`guide::loki_sink`] (feature `loki`).
//! - [`guide::operations`]: every setting, failure modes, dashboards.
//! - [`guide::metrics`] (feature `metrics`): every metric, Prometheus, alerts.
//! - [`guide::migrating`] (all three features): from tracing-appender, tracing-loki and tracing-test.
//! - [`guide::design`] and [`guide::events`] (the event catalogue).
//!
//! # Feature flags
//!
//! - `file` (default): the rotating file sink ([`FileSink`]).
//! - `loki` (default): the Loki push sink ([`LokiSink`]).
//! - `testing`: the event waiter and the Loki-compatible receiver, for tests.
//! - `metrics`: the sinks' health through the `metrics` facade, for any recorder
//!   ([`metrics`], [`guide::metrics`]).
//! - `opentelemetry`: with tracing-opentelemetry's layer in the subscriber, each record
//!   [`SinkLayer`] captures inside a span carries that span's `trace_id` and `span_id`
//!   ([`TraceIds`]): fields of the file sink's lines, structured metadata of Loki entries
//!   ([`guide::file_sink`], [`guide::loki_sink`]).
//!
//! # Supported Rust
//!
//! The minimum supported Rust version is 1.89 (the disk buffer's lock is `File::try_lock`).

// Feature badges on docs.rs (nightly rustdoc; `doc_auto_cfg` became part of `doc_cfg` in
// 2025). Behind `cfg(docsrs)` so stable builds never see the unstable feature.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Builds with only some features leave parts of the shared plumbing unused; the
// all-features build (the one CI lints) still reports dead code.
#![cfg_attr(
    not(all(feature = "file", feature = "loki", feature = "testing")),
    allow(dead_code, unused_macros, unused_imports)
)]

mod deadline;
#[cfg(test)]
mod defaults;
mod error;
pub mod events;
#[cfg(feature = "file")]
mod fault;
mod guard;
mod layer;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
mod metrics;
#[cfg(feature = "opentelemetry")]
mod otel;
mod overflow;
mod pipe;
mod record;
mod sink;
mod sink_id;
mod stats;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, ErrorKind, Result};
pub use guard::ShutdownGuard;
pub use layer::SinkLayer;
pub use overflow::OverflowPolicy;
pub use record::{Record, SpanInfo, TraceIds, Value};
pub use sink::{BoxFuture, Sink};
#[cfg(feature = "file")]
pub use sink::{
    Clock, Compression, FileSink, FileSinkBuilder, FileWriter, Format, FsyncPolicy, ManualClock,
    SystemClock, TimeZone,
};
#[cfg(feature = "loki")]
pub use sink::{DiskSync, Encoding, LineFormat, LokiSink, LokiSinkBuilder, LongLines};
pub use sink_id::SinkId;
pub use stats::{ShutdownReport, SinkStats};

/// Guides: the long-form documentation from `docs/`, readable in rustdoc.
///
/// Every Rust code block in them is compiled and run as a doc test, so none can rot. The
/// doc tests always see every feature: the crate's self dev-dependency turns on `testing`,
/// `file` and `loki` whenever tests are built. A guide is gated on the feature it is about.
// The guides are prose read on GitHub too: names such as LogQL or VmHWM are words there,
// not code to put in backticks.
#[allow(clippy::doc_markdown)]
pub mod guide {
    #[cfg(feature = "testing")]
    #[doc = include_str!("../docs/testing.md")]
    pub mod testing {}

    #[cfg(feature = "testing")]
    #[doc = include_str!("../docs/receiver.md")]
    pub mod receiver {}

    #[cfg(feature = "file")]
    #[doc = include_str!("../docs/file-sink.md")]
    pub mod file_sink {}

    #[cfg(feature = "loki")]
    #[doc = include_str!("../docs/loki-sink.md")]
    pub mod loki_sink {}

    #[cfg(feature = "loki")]
    #[doc = include_str!("../docs/disk-buffer-format.md")]
    pub mod disk_buffer {}

    #[doc = include_str!("../docs/operations.md")]
    pub mod operations {}

    #[cfg(feature = "metrics")]
    #[doc = include_str!("../docs/metrics.md")]
    pub mod metrics {}

    #[cfg(all(feature = "file", feature = "loki", feature = "testing"))]
    #[doc = include_str!("../docs/migrating.md")]
    pub mod migrating {}

    #[doc = include_str!("../docs/design.md")]
    pub mod design {}

    #[doc = include_str!("../docs/events.md")]
    pub mod events {}
}

/// One path per item: the modules behind the root's re-exports are private, so each of these
/// fails to compile (E0603, a private module), as do the removed test-only items.
///
/// ```compile_fail,E0603
/// use sinkwatch::error::Error;
/// ```
///
/// ```compile_fail,E0603
/// use sinkwatch::record::Record;
/// ```
///
/// ```compile_fail,E0603
/// use sinkwatch::sink::FileSink;
/// ```
///
/// ```compile_fail,E0603
/// use sinkwatch::testing::receiver::LokiReceiver;
/// ```
///
/// ```compile_fail,E0432
/// use sinkwatch::events::SinkId;
/// ```
///
/// ```compile_fail,E0599
/// let _ = sinkwatch::ErrorKind::Timeout;
/// ```
///
/// ```compile_fail,E0432
/// use sinkwatch::events::receiver_request;
/// ```
///
/// The single paths:
///
/// ```
/// use sinkwatch::testing::{receiver_request, LokiReceiver};
/// use sinkwatch::{Error, Record, SinkId};
/// # let _ = (receiver_request::NAME, LokiReceiver::builder);
/// # fn _f(_: Error, _: Record, _: SinkId) {}
/// ```
#[cfg(all(doctest, feature = "testing", feature = "file", feature = "loki"))]
pub struct OnePathDoctests;

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(all(doctest, feature = "testing", feature = "file", feature = "loki"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
