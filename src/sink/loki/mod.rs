//! The Grafana Loki push sink: batches records into push requests, retries what Loki asks to
//! be retried, never resends what it rejected, bounds its memory, and reports every outcome
//! as an event (see [`events`](crate::events)).
//!
//! Behaviour toward Loki follows its push API and its reference clients (Promtail, Alloy):
//! protobuf + snappy by default, labels in Loki's grammar with Go-compatible quoting, entry
//! timestamps from each record's own time, 429/5xx/transport errors retried with jittered
//! exponential backoff (and `Retry-After` honoured), other 4xx final. Every record accepted
//! ends up delivered or reported dropped: see [`SinkStats`] and `docs/loki-sink.md`.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use sinkwatch::LokiSink;
//! use sinkwatch::Record;
//! use tracing::Level;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sink = LokiSink::builder("http://127.0.0.1:3100")
//!     .label("service_name", "checkout")
//!     .label_from_field("level")
//!     .metadata_from_field("trace_id")
//!     .tenant("team-a")
//!     .build()?;
//! sink.try_write(Record::new(Level::INFO, "order placed").with_field("trace_id", "4bf92f35"))?;
//! // Nothing listens on that port here: the shutdown gives up at its deadline and reports
//! // the record dropped.
//! let report = sink.shutdown_blocking(Duration::from_millis(100));
//! assert_eq!(report.stats.accepted, report.stats.delivered + report.stats.dropped);
//! # Ok(())
//! # }
//! ```

mod batch;
mod builder;
mod disk;
mod durable;
mod encode;
mod http;
mod label_text;
mod labels;
mod line;
mod push;
mod retry;
mod snappy;
mod worker;

use std::fmt;
use std::time::Duration;

pub use builder::LokiSinkBuilder;

use crate::deadline::later;
use crate::pipe::{Patience, Producer};
use crate::SinkId;
use crate::{Record, Result, ShutdownReport, SinkStats};

/// How push requests are encoded.
///
/// # Examples
///
/// ```
/// use sinkwatch::{Encoding, LokiSink};
///
/// let builder = LokiSink::builder("http://loki:3100").encoding(Encoding::JsonGzip);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// Protobuf `PushRequest`, snappy block compressed (`Content-Type:
    /// application/x-protobuf`, `Content-Encoding: snappy`), as Promtail and Alloy send.
    /// The default, and the smallest on the wire.
    #[default]
    Protobuf,
    /// JSON (`application/json`), uncompressed: easy to read in a proxy's logs.
    Json,
    /// JSON compressed with gzip (`Content-Encoding: gzip`).
    JsonGzip,
}

/// What an entry's line is made of.
///
/// # Examples
///
/// ```
/// use sinkwatch::{LineFormat, LokiSink};
///
/// let builder = LokiSink::builder("http://loki:3100").line_format(LineFormat::Message);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LineFormat {
    /// The whole record as one JSON object, as [`Record::write_json`] writes it but
    /// without the timestamp (the entry's own timestamp is the record's time): query it
    /// with `LogQL`'s `| json`. A line cut by [`LongLines::Truncate`] is no longer valid
    /// JSON. The default.
    #[default]
    Json,
    /// The record's message alone; fields reach Loki only as labels or structured metadata.
    Message,
}

/// What happens to a line longer than the limit (Loki rejects lines over 256 KiB by
/// default).
///
/// # Examples
///
/// ```
/// use sinkwatch::{LokiSink, LongLines};
///
/// let builder = LokiSink::builder("http://loki:3100").long_lines(LongLines::Drop);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LongLines {
    /// Cut the line at a character boundary and end it with `…[truncated]`, within the
    /// limit. The default.
    #[default]
    Truncate,
    /// Drop the record, reported by `records_dropped` with reason `line_too_long`.
    Drop,
}

/// When the disk buffer ([`LokiSinkBuilder::disk_buffer`]) asks the OS to put what it
/// wrote on the device (`fsync`).
///
/// Either way, a crash of the process (a panic, an OOM kill, `kill -9`) loses nothing the
/// sink had written to the buffer, and the worker writes once per chunk of records it takes
/// from the queue, within milliseconds of their arrival; the sync bounds what a power loss
/// or a kernel crash can take.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::{DiskSync, LokiSink};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let builder = LokiSink::builder("http://loki:3100")
///     .disk_buffer(dir.path())
///     .disk_buffer_sync(DiskSync::Interval(Duration::from_millis(200)));
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiskSync {
    /// At every write of a batch: the safest, and the slowest (one `fsync` per batch).
    EveryBatch,
    /// At the first write at least this long after the last sync. The default, with 1 s.
    Interval(Duration),
}

impl Default for DiskSync {
    fn default() -> Self {
        DiskSync::Interval(disk::DEFAULT_FSYNC_INTERVAL)
    }
}

/// The Loki push sink's handle.
///
/// Cheap to clone; every clone feeds the same worker, which runs on its own thread. The
/// worker pushes what is queued and stops when every clone is dropped (dropping never
/// blocks), or at [`shutdown`](LokiSink::shutdown).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::LokiSink;
/// use sinkwatch::Record;
/// use tracing::Level;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = LokiSink::builder("http://127.0.0.1:9")
///     .label("app", "demo")
///     .build()?;
/// sink.try_write(Record::new(Level::WARN, "disk almost full"))?;
/// assert_eq!(sink.stats().accepted, 1);
/// sink.shutdown_blocking(Duration::from_millis(50));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LokiSink {
    producer: Producer,
}

impl fmt::Debug for LokiSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LokiSink")
            .field("id", self.producer.id())
            .finish_non_exhaustive()
    }
}

impl LokiSink {
    /// Starts configuring a sink pushing to `url`: Loki's base URL (`http://loki:3100`, the
    /// push path is added) or the full push URL (`…/loki/api/v1/push`).
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::LokiSink;
    ///
    /// let sink = LokiSink::builder("http://loki:3100").label("app", "demo").build()?;
    /// assert!(sink.id().as_str().starts_with("loki-"));
    /// # Ok::<(), sinkwatch::Error>(())
    /// ```
    pub fn builder(url: impl Into<String>) -> LokiSinkBuilder {
        LokiSinkBuilder::new(url.into())
    }

    fn new(producer: Producer) -> Self {
        LokiSink { producer }
    }

    /// The sink's unique id, as its events carry it.
    pub fn id(&self) -> &SinkId {
        self.producer.id()
    }

    /// The sink's counters: `accepted == delivered + dropped` whenever nothing is queued or
    /// in flight (after [`flush`](Self::flush) or shutdown).
    pub fn stats(&self) -> SinkStats {
        self.producer.stats()
    }

    /// Queues a record without ever waiting: a full queue drops it (reported by a
    /// `records_dropped` event, reason `queue_full`; under
    /// [`OverflowPolicy::DropOldest`](crate::OverflowPolicy::DropOldest) the oldest go).
    ///
    /// # Errors
    ///
    /// [`Closed`](crate::ErrorKind::Closed) once the sink is shut down, or
    /// [`Failed`](crate::ErrorKind::Failed) if its worker failed: the record is refused
    /// (counted in [`SinkStats::refused`], not in the totals).
    pub fn try_write(&self, record: Record) -> Result<()> {
        self.producer.put_record(record, Patience::None)
    }

    /// Queues a record, waiting for room as the sink's overflow policy says: by default
    /// ([`OverflowPolicy::Block`](crate::OverflowPolicy::Block), bound in
    /// [the defaults](crate::LokiSinkBuilder#defaults)) for a bounded time, after
    /// which the record is dropped and the sink sheds load until it has pushed half its
    /// queue (every drop reported). This blocks the calling thread: from async code use
    /// [`write_async`](Self::write_async).
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write).
    pub fn write(&self, record: Record) -> Result<()> {
        self.producer.put_record(record, Patience::Policy)
    }

    /// Queues a record, waiting asynchronously for room as the sink's overflow policy says.
    ///
    /// # Errors
    ///
    /// As [`try_write`](Self::try_write).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if cancelled while waiting for room, the record is not queued and not
    /// counted (neither accepted nor dropped), so the totals stay exact.
    pub async fn write_async(&self, record: Record) -> Result<()> {
        self.producer.put_record_async(record).await
    }

    /// Resolves once every record accepted before the call has been pushed (2xx) or
    /// reported dropped. The pending batch is sent at once, without waiting for the batch
    /// timer; a push in retry is waited for, so this can take as long as the retry policy.
    /// With a [disk buffer](LokiSinkBuilder::disk_buffer), everything on it (a replayed
    /// backlog too) is pushed first, and requests from it retry while Loki fails: during an
    /// outage a flush resolves once Loki is back, or at shutdown.
    ///
    /// # Errors
    ///
    /// [`Closed`](crate::ErrorKind::Closed) if the sink stopped before the flush completed.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the flush still happens; only the wait is abandoned.
    pub async fn flush(&self) -> Result<()> {
        self.producer.flush().await
    }

    /// Stops accepting records, pushes what is queued until `timeout` has passed (cutting a
    /// backoff or a request in flight at the deadline), reports the rest dropped (reason
    /// `shutdown`), and resolves when the worker has stopped (or shortly after the deadline
    /// if it cannot).
    ///
    /// An entry in a request cut at the deadline is reported dropped even though Loki may
    /// have stored it. With a [disk buffer](LokiSinkBuilder::disk_buffer), what is not
    /// delivered by the deadline stays on disk instead, counted in
    /// [`SinkStats::persisted`](crate::SinkStats), for the next process (which sends a cut
    /// request again).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: the shutdown proceeds; only the wait is abandoned.
    pub async fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        self.producer.shutdown(later(timeout)).await
    }

    /// [`shutdown`](Self::shutdown) for synchronous code: blocks the calling thread.
    pub fn shutdown_blocking(&self, timeout: Duration) -> ShutdownReport {
        self.producer.shutdown_blocking(later(timeout))
    }
}

impl_sink_via_producer!(LokiSink);
