//! The sinks, and the trait the application layer uses to feed them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::SinkId;
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
// item.
#[cfg(feature = "file")]
mod file;
#[cfg(feature = "loki")]
mod loki;

#[cfg(feature = "file")]
pub use file::{
    Clock, Compression, FileSink, FileSinkBuilder, FileWriter, Format, FsyncPolicy, ManualClock,
    SystemClock, TimeZone,
};
#[cfg(feature = "loki")]
pub use loki::{DiskSync, Encoding, LineFormat, LokiSink, LokiSinkBuilder, LongLines};

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
