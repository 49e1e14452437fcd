//! The rotating file sink: JSON lines (or text) written by a background worker, rotated by
//! size and/or time, with retention and atomic background compression, every action
//! reported as an event (see [`events`](crate::events)).
//!
//! # Files
//!
//! The active file keeps a stable name, `{prefix}.{ext}` (so `tail -F` works). A rotation
//! renames it to `{prefix}.{YYYYMMDD}T{HHMMSS}.{mmm}Z.{ext}` (the UTC time of the rotation,
//! with `_001`, `_002`… appended to the time when the name is taken; nothing is ever
//! overwritten) and opens a new active file. Compression turns a rotated file into
//! `….{ext}.gz`, written as `….gz.tmp` and renamed when complete. Retention and crash
//! recovery only touch names of exactly that form.
//!
//! # Examples
//!
//! ```
//! use sinkwatch::FileSink;
//! use sinkwatch::Record;
//! use tracing::Level;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let sink = FileSink::builder(dir.path()).max_file_size(1024 * 1024).build()?;
//! sink.try_write(Record::new(Level::INFO, "hello").with_field("n", 1_u64))?;
//! sink.flush().await?;
//! assert!(std::fs::read_to_string(sink.active_path())?.contains("\"hello\""));
//! sink.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod active;
mod builder;
mod clock;
mod compress;
mod format;
mod line_writer;
mod maintenance;
mod naming;
mod retention;
mod schedule;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use builder::FileSinkBuilder;
pub use clock::{Clock, ManualClock, SystemClock};
pub use format::Format;
pub use schedule::TimeZone;
pub use writer::FileWriter;

use self::line_writer::Control;
use crate::deadline::later;
use crate::pipe::{Patience, Producer};
use crate::SinkId;
use crate::{Error, ErrorKind, Record, Result, ShutdownReport, SinkStats};

/// How rotated files are compressed.
///
/// # Examples
///
/// ```
/// use sinkwatch::{Compression, FileSink};
///
/// let builder = FileSink::builder("logs").compression(Compression::Gzip);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Rotated files stay as they are. The default.
    #[default]
    None,
    /// gzip, in the background after each rotation (`.gz`).
    Gzip,
}

/// When the sink asks the OS to put written data on the device (`fsync`).
///
/// Every policy writes each batch to the OS at once; this is only about surviving a power
/// loss, at the cost of a slow system call.
///
/// # Examples
///
/// ```
/// use sinkwatch::{FileSink, FsyncPolicy};
///
/// let builder = FileSink::builder("logs").fsync(FsyncPolicy::OnRotation);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FsyncPolicy {
    /// Never; the OS writes back in its own time. The default.
    #[default]
    Never,
    /// Before each rotation (and at shutdown), so rotated files are complete on the device
    /// before they are compressed or pruned.
    OnRotation,
    /// As `OnRotation`, and at every `flush()` before it resolves.
    OnFlush,
}

/// The rotating file sink's handle.
///
/// Cheap to clone; every clone feeds the same worker. The worker drains what is queued and
/// stops when every clone is dropped, or at [`shutdown`](FileSink::shutdown).
///
/// # Examples
///
/// ```
/// use sinkwatch::FileSink;
/// use sinkwatch::Record;
/// use tracing::Level;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let sink = FileSink::builder(dir.path()).build()?;
/// sink.write_async(Record::new(Level::WARN, "disk almost full")).await?;
/// let rotated = sink.rotate().await?.expect("the file was not empty");
/// assert!(rotated.exists());
/// let report = sink.shutdown(std::time::Duration::from_secs(5)).await;
/// assert_eq!(report.stats.delivered, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileSink {
    producer: Producer,
    control: mpsc::UnboundedSender<Control>,
    active_path: Arc<Path>,
}

impl fmt::Debug for FileSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSink")
            .field("id", self.producer.id())
            .field("active_path", &self.active_path)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    /// Starts configuring a sink writing into `dir`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::FileSink;
    ///
    /// let dir = tempfile::tempdir()?;
    /// let sink = FileSink::builder(dir.path()).build()?;
    /// assert_eq!(sink.active_path(), dir.path().join("app.log"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(dir: impl AsRef<Path>) -> FileSinkBuilder {
        FileSinkBuilder::new(dir)
    }

    fn new(
        producer: Producer,
        control: mpsc::UnboundedSender<Control>,
        active_path: PathBuf,
    ) -> Self {
        FileSink {
            producer,
            control,
            active_path: active_path.into(),
        }
    }

    /// The sink's unique id, as its events carry it.
    pub fn id(&self) -> &SinkId {
        self.producer.id()
    }

    /// The active file's path (absolute; stable across rotations).
    pub fn active_path(&self) -> &Path {
        &self.active_path
    }

    /// The sink's counters.
    pub fn stats(&self) -> SinkStats {
        self.producer.stats()
    }

    /// Queues a record, waiting for room as the sink's overflow policy says: by default
    /// ([`OverflowPolicy::Block`](crate::OverflowPolicy::Block), bound in
    /// [the defaults](crate::FileSinkBuilder#defaults)) for a bounded time, after which
    /// the record is dropped and the sink sheds load until its worker catches up (every
    /// drop reported). This blocks the calling thread: from async code use
    /// [`write_async`](Self::write_async). The record is formatted and written by the worker.
    ///
    /// # Errors
    ///
    /// [`Closed`](crate::ErrorKind::Closed) once the sink is shut down, or
    /// [`Failed`](crate::ErrorKind::Failed) if its worker failed: the record is refused
    /// (counted in [`SinkStats::refused`], not in the totals).
    pub fn write(&self, record: Record) -> Result<()> {
        self.producer.put_record(record, Patience::Policy)
    }

    /// Queues a record, waiting asynchronously for room as the sink's overflow policy says.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if cancelled while waiting for room, the record is not queued and not
    /// counted (neither accepted nor dropped), so the totals stay exact.
    pub async fn write_async(&self, record: Record) -> Result<()> {
        self.producer.put_record_async(record).await
    }

    /// Queues a record without ever waiting: a full queue drops it (reported by a
    /// `records_dropped` event, reason `queue_full`).
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write).
    pub fn try_write(&self, record: Record) -> Result<()> {
        self.producer.put_record(record, Patience::None)
    }

    /// Resolves once every record accepted before the call is written to the OS (or
    /// reported dropped), and fsynced under [`FsyncPolicy::OnFlush`].
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

    /// Rotates the active file now, after writing every record accepted before the call.
    /// Resolves when the rotation is done, with the rotated file's path, or `None` when
    /// the active file was empty (nothing is rotated then).
    ///
    /// # Errors
    ///
    /// [`Io`](crate::ErrorKind::Io) if the rename or the reopening failed (a
    /// `rotation_failed` event says so too); [`Closed`](crate::ErrorKind::Closed) once the
    /// sink is shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in that nothing is lost, but once the request reached the worker the
    /// rotation still happens.
    pub async fn rotate(&self) -> Result<Option<PathBuf>> {
        // The worker writes everything queued before it rotates: no flush (and so no
        // `flush_complete`, which means a `flush()` call) is needed for the ordering.
        let (tx, rx) = oneshot::channel();
        let sent = self.control.send(Control::Rotate(tx)).is_ok();
        match rx.await {
            Ok(result) if sent => result,
            _ => Err(self.stopped_error().await),
        }
    }

    /// Why the worker is gone: a flush on a stopped sink says (`Failed` with the worker's
    /// panic, or `Closed`) and queues no marker, so it emits no `flush_complete`.
    async fn stopped_error(&self) -> Error {
        let closed = || Error::new(ErrorKind::Closed, format!("sink {} is closed", self.id()));
        self.producer.flush().await.err().unwrap_or_else(closed)
    }

    /// Stops accepting records, writes what is queued until `timeout` has passed, reports
    /// the rest dropped (reason `shutdown`), waits for background compression up to the
    /// same deadline (then stops it: the plain file stays, compressed at the next start-up),
    /// and resolves when the worker has stopped (or shortly after the deadline if it is
    /// stuck in a system call). Any `Duration` is fine, `Duration::MAX` included.
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

impl_sink_via_producer!(FileSink);
