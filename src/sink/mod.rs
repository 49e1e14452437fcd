//! The sinks, and the trait the application layer uses to feed them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::events::SinkId;
use crate::{Result, ShutdownReport, SinkStats};

/// Implements [`Sink`] for a sink handle with a `producer: Producer` field: every sink
/// drives its queue the same way.
macro_rules! impl_sink_via_producer {
    ($handle:ty) => {
        impl $crate::sink::sealed::Sealed for $handle {
            fn producer(&self) -> &$crate::pipe::Producer {
                &self.producer
            }
        }

        impl $crate::sink::Sink for $handle {}
    };
}

// The implementations live in private modules, re-exported at the crate root: one path per
// item. Their directories keep their names; the modules are renamed because `file` and
// `loki` are taken by the deprecated paths below, kept for code written against 0.1.
#[cfg(feature = "file")]
#[path = "file/mod.rs"]
pub(crate) mod file_sink;
#[cfg(feature = "loki")]
#[path = "loki/mod.rs"]
pub(crate) mod loki_sink;

/// The file sink's old home (`sinkwatch::sink::file`): every item is now at the crate root.
///
/// Kept so code written against 0.1 compiles, with a deprecation warning that names the new
/// path. `Clock` is a trait, which an alias cannot stand for: it is re-exported as is.
///
/// The warning fires (so denying it fails the build):
///
/// ```compile_fail
/// #![deny(deprecated)]
/// use sinkwatch::sink::file::{Compression, FileSink};
/// let _ = (FileSink::builder("logs"), Compression::Gzip);
/// ```
///
/// and the same code builds when the warning is allowed:
///
/// ```
/// #![allow(deprecated)]
/// use sinkwatch::sink::file::{Compression, FileSink};
/// let _ = (FileSink::builder("logs"), Compression::Gzip);
/// ```
#[cfg(feature = "file")]
#[doc(hidden)]
pub mod file {
    /// Moved: use [`sinkwatch::FileSink`](crate::FileSink).
    #[deprecated(note = "use sinkwatch::FileSink")]
    pub type FileSink = crate::FileSink;
    /// Moved: use [`sinkwatch::FileSinkBuilder`](crate::FileSinkBuilder).
    #[deprecated(note = "use sinkwatch::FileSinkBuilder")]
    pub type FileSinkBuilder = crate::FileSinkBuilder;
    /// Moved: use [`sinkwatch::Compression`](crate::Compression).
    #[deprecated(note = "use sinkwatch::Compression")]
    pub type Compression = crate::Compression;
    /// Moved: use [`sinkwatch::FsyncPolicy`](crate::FsyncPolicy).
    #[deprecated(note = "use sinkwatch::FsyncPolicy")]
    pub type FsyncPolicy = crate::FsyncPolicy;
    /// Moved: use [`sinkwatch::Format`](crate::Format).
    #[deprecated(note = "use sinkwatch::Format")]
    pub type Format = crate::Format;
    /// Moved: use [`sinkwatch::TimeZone`](crate::TimeZone).
    #[deprecated(note = "use sinkwatch::TimeZone")]
    pub type TimeZone = crate::TimeZone;
    /// Moved: use [`sinkwatch::ManualClock`](crate::ManualClock).
    #[deprecated(note = "use sinkwatch::ManualClock")]
    pub type ManualClock = crate::ManualClock;
    /// Moved: use [`sinkwatch::SystemClock`](crate::SystemClock).
    #[deprecated(note = "use sinkwatch::SystemClock")]
    pub type SystemClock = crate::SystemClock;
    /// Moved: use [`sinkwatch::SystemClock`](crate::SystemClock). A unit struct is also a
    /// value, which a type alias does not carry: this constant stands for it.
    #[deprecated(note = "use sinkwatch::SystemClock")]
    #[allow(non_upper_case_globals)]
    pub const SystemClock: crate::SystemClock = crate::SystemClock;
    /// Moved: use [`sinkwatch::FileWriter`](crate::FileWriter).
    #[deprecated(note = "use sinkwatch::FileWriter")]
    pub type FileWriter = crate::FileWriter;
    /// Moved: use [`sinkwatch::testing::FaultHook`](crate::testing::FaultHook).
    #[cfg(feature = "testing")]
    #[deprecated(note = "use sinkwatch::testing::FaultHook")]
    pub type FaultHook = crate::testing::FaultHook;
    /// Moved: use [`sinkwatch::testing::FsFaultHook`](crate::testing::FsFaultHook).
    #[cfg(feature = "testing")]
    #[deprecated(note = "use sinkwatch::testing::FsFaultHook")]
    pub type FsFaultHook = crate::testing::FsFaultHook;
    /// Moved: use [`sinkwatch::testing::FsOp`](crate::testing::FsOp).
    #[cfg(feature = "testing")]
    #[deprecated(note = "use sinkwatch::testing::FsOp")]
    pub type FsOp = crate::testing::FsOp;

    /// Moved to [`sinkwatch::Clock`](crate::Clock). A trait cannot be aliased, and Rust
    /// ignores `#[deprecated]` on a re-export, so this path compiles without a warning.
    pub use crate::Clock;
}

/// The Loki sink's old home (`sinkwatch::sink::loki`): every item is now at the crate root.
///
/// Kept so code written against 0.1 compiles, with a deprecation warning that names the new
/// path:
///
/// ```compile_fail
/// #![deny(deprecated)]
/// use sinkwatch::sink::loki::{Encoding, LokiSink};
/// let _ = (LokiSink::builder("http://loki:3100"), Encoding::Json);
/// ```
///
/// ```
/// #![allow(deprecated)]
/// use sinkwatch::sink::loki::{Encoding, LokiSink};
/// let _ = (LokiSink::builder("http://loki:3100"), Encoding::Json);
/// ```
#[cfg(feature = "loki")]
#[doc(hidden)]
pub mod loki {
    /// Moved: use [`sinkwatch::LokiSink`](crate::LokiSink).
    #[deprecated(note = "use sinkwatch::LokiSink")]
    pub type LokiSink = crate::LokiSink;
    /// Moved: use [`sinkwatch::LokiSinkBuilder`](crate::LokiSinkBuilder).
    #[deprecated(note = "use sinkwatch::LokiSinkBuilder")]
    pub type LokiSinkBuilder = crate::LokiSinkBuilder;
    /// Moved: use [`sinkwatch::Encoding`](crate::Encoding).
    #[deprecated(note = "use sinkwatch::Encoding")]
    pub type Encoding = crate::Encoding;
    /// Moved: use [`sinkwatch::LineFormat`](crate::LineFormat).
    #[deprecated(note = "use sinkwatch::LineFormat")]
    pub type LineFormat = crate::LineFormat;
    /// Moved: use [`sinkwatch::LongLines`](crate::LongLines).
    #[deprecated(note = "use sinkwatch::LongLines")]
    pub type LongLines = crate::LongLines;
}

/// A boxed future, as returned by [`Sink`]'s asynchronous methods.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pub(crate) mod sealed {
    /// Keeps [`Sink`](super::Sink) implemented by this crate's sinks only, so it can grow.
    pub trait Sealed {
        /// The handle side of the sink's queue.
        fn producer(&self) -> &crate::pipe::Producer;
    }
}

/// What every sink offers, so the application layer and the shutdown guard can drive any
/// mix of sinks. Implemented by [`FileSink`](crate::FileSink) and
/// [`LokiSink`](crate::LokiSink); sealed, so it can grow without breaking anyone.
///
/// The methods mirror the sinks' inherent ones, with the same names and arguments.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "file")] {
/// use std::time::Duration;
/// use sinkwatch::{FileSink, Sink};
///
/// fn report(sink: &dyn Sink) -> String {
///     format!("{}: {:?}", sink.id(), sink.stats())
/// }
/// let dir = tempfile::tempdir().unwrap();
/// let file = FileSink::builder(dir.path()).build().unwrap();
/// assert!(report(&file).starts_with("file-"));
/// Sink::shutdown_blocking(&file, Duration::from_secs(5));
/// # }
/// ```
pub trait Sink: sealed::Sealed + Send + Sync + 'static {
    /// The sink's unique id, as carried by its events.
    fn id(&self) -> &SinkId {
        self.producer().id()
    }

    /// The sink's counters.
    fn stats(&self) -> SinkStats {
        self.producer().stats()
    }

    /// Resolves once every record accepted before the call is delivered or reported dropped.
    ///
    /// # Errors
    ///
    /// [`Closed`](crate::ErrorKind::Closed) (or [`Failed`](crate::ErrorKind::Failed)) if
    /// the sink stopped before the flush completed.
    fn flush(&self) -> BoxFuture<Result<()>> {
        Box::pin(self.producer().flush())
    }

    /// Stops accepting records, delivers what it can within `timeout`, reports the rest as
    /// dropped (reason `shutdown`) and resolves when the worker has stopped (or shortly
    /// after the deadline if it cannot). Any `Duration`, even `Duration::MAX`, is fine.
    fn shutdown(&self, timeout: Duration) -> BoxFuture<ShutdownReport> {
        let producer = self.producer().clone();
        let deadline = crate::deadline::later(timeout);
        Box::pin(async move { producer.shutdown(deadline).await })
    }

    /// [`shutdown`](Sink::shutdown) for synchronous code: blocks the calling thread.
    fn shutdown_blocking(&self, timeout: Duration) -> ShutdownReport {
        self.producer()
            .shutdown_blocking(crate::deadline::later(timeout))
    }
}
