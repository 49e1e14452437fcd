//! The shutdown guard: flushes every sink with a deadline when `main` ends.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::events::SinkId;
use crate::sink::Sink;
use crate::ShutdownReport;

/// Shuts every registered sink down with a deadline when dropped (or when
/// [`shutdown`](Self::shutdown) is called), so the last records before `main` returns are
/// not lost, and reports what could not be delivered.
///
/// Sinks shut down one after the other, in the reverse order of registration, under one
/// deadline: register the sink that should record the others' closing events (typically
/// the file sink) first. Dropping blocks the current thread until the sinks have finished
/// or the deadline has passed (plus a short grace): that is its purpose. Each sink reports undelivered records
/// with a `records_dropped` event (reason `shutdown`) and ends with `sink_closed`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::{FileSink, ShutdownGuard};
///
/// # let dir = tempfile::tempdir()?;
/// let file = FileSink::builder(dir.path()).build()?;
/// let guard = ShutdownGuard::new()
///     .with_sink(file.clone())
///     .with_timeout(Duration::from_secs(2));
/// file.try_write(sinkwatch::Record::new(tracing::Level::INFO, "last words"));
/// let reports = guard.shutdown_blocking();
/// assert_eq!(reports[0].1.undelivered, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ShutdownGuard {
    sinks: Vec<Arc<dyn Sink>>,
    timeout: Duration,
    done: bool,
}

impl ShutdownGuard {
    /// A guard with no sinks. By default, the shutdown deadline is 5 s.
    pub fn new() -> Self {
        ShutdownGuard {
            sinks: Vec::new(),
            timeout: Duration::from_secs(5),
            done: false,
        }
    }

    /// Adds a sink to shut down.
    #[must_use]
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Sets how long shutdown may take in all (the sinks shut down concurrently).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Shuts every sink down by the deadline, in the reverse order of registration, and
    /// reports, per sink in the order of registration, what happened.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe in effect: shutdown is requested at the first poll and cannot be
    /// taken back; dropping the future only stops waiting for the reports.
    pub async fn shutdown(mut self) -> Vec<(SinkId, ShutdownReport)> {
        self.done = true;
        let deadline = Instant::now() + self.timeout;
        let mut reports = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks.iter().rev() {
            reports.push((sink.id().clone(), sink.shutdown(deadline).await));
        }
        reports.reverse();
        reports
    }

    /// [`shutdown`](Self::shutdown) for synchronous code: blocks the current thread.
    pub fn shutdown_blocking(mut self) -> Vec<(SinkId, ShutdownReport)> {
        self.done = true;
        self.shutdown_all()
    }

    fn shutdown_all(&self) -> Vec<(SinkId, ShutdownReport)> {
        let deadline = Instant::now() + self.timeout;
        let mut reports: Vec<_> = self
            .sinks
            .iter()
            .rev()
            .map(|s| (s.id().clone(), s.shutdown_blocking(deadline)))
            .collect();
        reports.reverse();
        reports
    }
}

impl Default for ShutdownGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shutdown_all();
        }
    }
}

impl fmt::Debug for ShutdownGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownGuard")
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|s| s.id().clone())
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("done", &self.done)
            .finish()
    }
}
