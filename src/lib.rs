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
//! `docs/design.md` describes the data flow, `docs/operations.md` every setting.
//!
//! # Feature flags
//!
//! - `file` (default): the rotating file sink ([`FileSink`]).
//! - `loki` (default): the Loki push sink ([`LokiSink`]).
//! - `testing`: the event waiter and the Loki-compatible receiver, for tests.
//!
//! # Supported Rust
//!
//! The minimum supported Rust version is 1.82.

// Builds with only some features leave parts of the shared plumbing unused; the
// all-features build (the one CI lints) still reports dead code.
#![cfg_attr(
    not(all(feature = "file", feature = "loki", feature = "testing")),
    allow(dead_code, unused_macros, unused_imports)
)]

mod deadline;
pub mod error;
pub mod events;
mod guard;
mod layer;
mod queue;
pub mod record;
pub mod sink;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

pub use error::{Error, ErrorKind, Result};
pub use events::SinkId;
pub use guard::ShutdownGuard;
pub use layer::SinkLayer;
pub use record::{Record, SpanInfo, Value};
#[cfg(feature = "file")]
pub use sink::file::{FileSink, FileSinkBuilder};
#[cfg(feature = "loki")]
pub use sink::loki::{LokiSink, LokiSinkBuilder};
pub use sink::Sink;
pub use worker::{OverflowPolicy, ShutdownReport, SinkStats};

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(all(doctest, feature = "testing", feature = "file", feature = "loki"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
