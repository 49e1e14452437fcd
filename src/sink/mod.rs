//! The sinks, and the trait the application layer uses to feed them.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use crate::events::SinkId;
use crate::{Record, Result, ShutdownReport, SinkStats};

/// Implements [`Sink`] for a sink handle with a `producer: Producer<Record>` field and an
/// inherent `try_write(Record) -> Result<()>`: every sink drives its queue the same way.
macro_rules! impl_sink_via_producer {
    ($handle:ty) => {
        impl $crate::sink::Sink for $handle {
            fn id(&self) -> &$crate::SinkId {
                self.producer.id()
            }

            fn try_write(&self, record: $crate::Record) {
                // Refusals are counted and reported by the worker.
                let _ = <$handle>::try_write(self, record);
            }

            fn stats(&self) -> $crate::SinkStats {
                self.producer.stats()
            }

            fn flush(&self) -> $crate::sink::BoxFuture<$crate::Result<()>> {
                Box::pin(self.producer.flush())
            }

            fn shutdown(
                &self,
                deadline: std::time::Instant,
            ) -> $crate::sink::BoxFuture<$crate::ShutdownReport> {
                let producer = self.producer.clone();
                Box::pin(async move { producer.shutdown(deadline).await })
            }

            fn shutdown_blocking(&self, deadline: std::time::Instant) -> $crate::ShutdownReport {
                self.producer.shutdown_blocking(deadline)
            }
        }
    };
}

#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "loki")]
pub mod loki;

/// A boxed future, as returned by [`Sink`]'s asynchronous methods.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What every sink offers, so the application layer and the shutdown guard can drive any
/// mix of sinks.
pub trait Sink: Send + Sync + 'static {
    /// The sink's unique id, as carried by its events.
    fn id(&self) -> &SinkId;

    /// Hands a record to the sink without ever blocking. A full queue applies the sink's
    /// overflow policy (a `Wait` policy drops the new record here) and the drop is reported
    /// by a `records_dropped` event from the sink's worker.
    fn try_write(&self, record: Record);

    /// The sink's counters.
    fn stats(&self) -> SinkStats;

    /// Resolves once every record accepted before the call is delivered or reported dropped.
    fn flush(&self) -> BoxFuture<Result<()>>;

    /// Stops accepting records, delivers what it can by `deadline`, reports the rest as
    /// dropped (reason `shutdown`) and resolves when the worker has stopped (or shortly
    /// after the deadline if it cannot).
    fn shutdown(&self, deadline: Instant) -> BoxFuture<ShutdownReport>;

    /// [`shutdown`](Sink::shutdown) for synchronous code: blocks the calling thread.
    fn shutdown_blocking(&self, deadline: Instant) -> ShutdownReport;
}
