//! A sink's counters, and what a shutdown achieved.

/// A snapshot of a sink's counters.
///
/// `accepted` counts every record the sink took; each of them ends up in `delivered` or
/// `dropped`, so at any quiescent point (after `flush()` or shutdown)
/// `accepted == delivered + dropped`. A closed sink accepts nothing: writing to it returns
/// an error of kind [`Closed`](crate::ErrorKind::Closed), leaves those counts unchanged
/// (final since `sink_closed`) and counts the write in `refused`.
///
/// A Loki sink with a disk buffer also takes over what an earlier process left in the
/// buffer (`replayed`), and leaves on disk what its shutdown could not deliver
/// (`persisted`), so that its totals read
/// `accepted + replayed == delivered + dropped + persisted`; without a disk buffer both
/// are 0.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "file")] {
/// use std::time::Duration;
/// use sinkwatch::{FileSink, Record};
///
/// # let dir = tempfile::tempdir().unwrap();
/// let sink = FileSink::builder(dir.path()).build().unwrap();
/// sink.write(Record::new(tracing::Level::INFO, "hello")).unwrap();
/// let report = sink.shutdown_blocking(Duration::from_secs(5));
/// let stats = report.stats;
/// assert_eq!((stats.accepted, stats.delivered, stats.dropped), (1, 1, 0));
/// assert_eq!(stats.pending(), 0);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SinkStats {
    /// Records handed to the sink and taken by it.
    pub accepted: u64,
    /// Records delivered (written to the OS, or pushed with a 2xx).
    pub delivered: u64,
    /// Records reported dropped, for any reason.
    pub dropped: u64,
    /// Writes refused because the sink was closed (never accepted, so not in the totals).
    pub refused: u64,
    /// Records an earlier process left in the disk buffer, taken over by this sink when it
    /// was built (reported by `buffer_replayed`).
    pub replayed: u64,
    /// Records the sink's shutdown left in its disk buffer, undelivered, for the next
    /// process to deliver (not dropped).
    pub persisted: u64,
}

impl SinkStats {
    /// Records taken (accepted or replayed) but not yet delivered, dropped or persisted
    /// (queued or in flight).
    pub fn pending(&self) -> u64 {
        (self.accepted + self.replayed)
            .saturating_sub(self.delivered + self.dropped + self.persisted)
    }
}

/// What a shutdown achieved.
///
/// # Examples
///
/// ```
/// # #[cfg(feature = "file")] {
/// use std::time::Duration;
/// use sinkwatch::FileSink;
///
/// # let dir = tempfile::tempdir().unwrap();
/// let sink = FileSink::builder(dir.path()).build().unwrap();
/// let report = sink.shutdown_blocking(Duration::from_secs(5));
/// assert!(report.completed);
/// assert_eq!(report.undelivered, 0);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The sink's final counters.
    pub stats: SinkStats,
    /// Records the shutdown could not deliver before its deadline and dropped (reported
    /// with reason `shutdown`); while `completed` is false, also those still pending. Those
    /// left in a disk buffer are in `stats.persisted`, not here.
    pub undelivered: u64,
    /// False when the worker had not finished by the deadline (for example stuck in a
    /// system call); `stats` is then a snapshot, not final.
    pub completed: bool,
}
