//! Log sinks for `tracing` that tell the world what they did.
//!
//! sinkwatch ships a service's logs to Grafana Loki and to rotating files. Every significant
//! thing a sink does is a structured `tracing` event with a stable name and typed fields
//! (see [`events`]), and [`testing`] (feature `testing`) turns those events into awaitable
//! futures, so tests wait for `push_complete` instead of sleeping.
//!
//! # Feature flags
//!
//! - `file` (default): the rotating file sink.
//! - `loki` (default): the Loki push sink.
//! - `testing`: the event waiter and the Loki-compatible receiver, for tests.
//!
//! # Supported Rust
//!
//! The minimum supported Rust version is 1.82.

mod deadline;
pub mod error;
pub mod events;
mod guard;
mod layer;
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
