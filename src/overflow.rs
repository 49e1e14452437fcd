//! What a sink does when its queue is full.

use std::time::Duration;

/// What a sink does when its queue is full.
///
/// Set with each builder's `overflow`; the builders' defaults tables give each sink's
/// default ([`FileSinkBuilder`](crate::FileSinkBuilder),
/// [`LokiSinkBuilder`](crate::LokiSinkBuilder)).
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "file")] {
/// use std::time::Duration;
/// use sinkwatch::{FileSink, OverflowPolicy};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let sink = FileSink::builder(dir.path())
///     .overflow(OverflowPolicy::Block(Duration::from_millis(200)))
///     .build()
///     .unwrap();
/// # drop(sink);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Refuse the new record and report it dropped (`queue_full`).
    DropNewest,
    /// Make room by dropping the oldest queued records, reported as `buffer_full_oldest`.
    DropOldest,
    /// Make the writer wait for room, for as long as it takes. `try_write` still drops the
    /// newest record instead of waiting, and `SinkLayer` waits at most
    /// [`SinkLayer::MAX_WAIT`](crate::SinkLayer::MAX_WAIT), then sheds load as `Block`
    /// does.
    Wait,
    /// Make the writer wait for room, but for at most the given time: past it the record is
    /// dropped and the sink *sheds load*: later writes are dropped at once, without
    /// waiting, until the worker has emptied half the queue. Every shed record is reported
    /// (`records_dropped`, reason `stalled`; then `queue_stalled` once the worker has
    /// room again). So a burst the sink can absorb slows the callers to its pace and loses
    /// nothing, and a stalled disk or an outage costs each caller at most one wait.
    /// `try_write` drops the newest record instead of waiting. The default of both sinks.
    Block(Duration),
}
