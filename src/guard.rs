//! The shutdown guard: flushes every sink with a deadline when `main` ends.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deadline::later;
use crate::sink::Sink;
use crate::ShutdownReport;
use crate::SinkId;

/// Shuts every registered sink down with a deadline when dropped (or when
/// [`shutdown`](Self::shutdown) is called), so the last records before `main` returns are
/// not lost, and reports what could not be delivered.
///
/// Every sink starts delivering at once, concurrently, so one stuck sink (a Loki that does
/// not answer) never keeps the others from delivering. They *close* in the reverse order
/// of registration: a sink closes once the sinks registered after it have closed, so
/// register the sink that should record the others' closing events (typically the file
/// sink) first. To leave room for that, each later sink's deadline is a little earlier
/// (a tenth of the timeout, at most 250 ms, per sink). Dropping blocks the current thread
/// until the sinks have finished or the deadline has passed (plus a short grace): that is
/// its purpose. Each sink reports undelivered records with a `records_dropped` event
/// (reason `shutdown`) and ends with `sink_closed`.
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

    /// Shuts every sink down by the deadline (see the type's docs for the order) and
    /// reports, per sink in the order of registration, what happened.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe in effect: shutdown is requested at the first poll and cannot be
    /// taken back; dropping the future only stops waiting for the reports.
    pub async fn shutdown(mut self) -> Vec<(SinkId, ShutdownReport)> {
        self.done = true;
        shutdown_all(&self.sinks, self.timeout).await
    }

    /// [`shutdown`](Self::shutdown) for synchronous code: blocks the current thread.
    pub fn shutdown_blocking(mut self) -> Vec<(SinkId, ShutdownReport)> {
        self.done = true;
        self.shutdown_on_helper()
    }

    /// Runs the shutdown on a helper thread with its own small runtime, so it works from
    /// any thread, inside an async runtime (a guard dropped in `async fn main`) or not.
    fn shutdown_on_helper(&self) -> Vec<(SinkId, ShutdownReport)> {
        let sinks = self.sinks.clone();
        let timeout = self.timeout;
        std::thread::scope(|scope| {
            let helper = scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().ok()?;
                Some(runtime.block_on(shutdown_all(&sinks, timeout)))
            });
            helper.join().ok().flatten()
        })
        .unwrap_or_else(|| {
            // No runtime could start: shut down one by one, each with the whole deadline.
            let deadline = later(self.timeout);
            self.sinks
                .iter()
                .rev()
                .map(|s| {
                    let left = deadline.saturating_duration_since(Instant::now());
                    (s.id().clone(), s.shutdown_blocking(left))
                })
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        })
    }
}

/// Every sink delivers concurrently; sink `i` closes once the sinks after it have closed
/// (or their deadline has passed), with a deadline `tail` later than theirs.
async fn shutdown_all(sinks: &[Arc<dyn Sink>], timeout: Duration) -> Vec<(SinkId, ShutdownReport)> {
    let deadline = later(timeout);
    let tail = (timeout / 10).min(Duration::from_millis(250));
    let n = sinks.len();
    // Sink `i` gets `tail` less per sink registered before it: the first-registered,
    // closing last, keeps the whole deadline.
    let deadlines: Vec<Instant> = (0..n)
        .map(|i| {
            let steps = u32::try_from(i).unwrap_or(u32::MAX);
            deadline
                .checked_sub(tail.saturating_mul(steps))
                .unwrap_or(deadline)
        })
        .collect();
    let closed: Vec<Arc<tokio::sync::Notify>> = (0..n)
        .map(|_| Arc::new(tokio::sync::Notify::new()))
        .collect();
    let done: Vec<Arc<std::sync::atomic::AtomicBool>> = (0..n).map(|_| Arc::default()).collect();
    let tasks = sinks.iter().enumerate().map(|(i, sink)| {
        let (closed, done, deadlines) = (&closed, &done, &deadlines);
        async move {
            if i + 1 < n {
                // Deliver now, close later: flushing runs while the later sinks close.
                let flush = sink.flush();
                let later_closed = async {
                    for j in i + 1..n {
                        wait_closed(&closed[j], &done[j], deadlines[j]).await;
                    }
                };
                tokio::pin!(flush);
                tokio::select! {
                    () = later_closed => {}
                    _ = &mut flush => {
                        for j in i + 1..n {
                            wait_closed(&closed[j], &done[j], deadlines[j]).await;
                        }
                    }
                }
            }
            let left = deadlines[i].saturating_duration_since(Instant::now());
            let report = sink.shutdown(left).await;
            done[i].store(true, std::sync::atomic::Ordering::Release);
            closed[i].notify_waiters();
            (sink.id().clone(), report)
        }
    });
    join_all(tasks).await
}

/// Waits until sink `j` has closed, or its deadline has passed.
async fn wait_closed(
    closed: &tokio::sync::Notify,
    done: &std::sync::atomic::AtomicBool,
    deadline: Instant,
) {
    let timer = crate::deadline::until(deadline);
    tokio::pin!(timer);
    loop {
        let notified = closed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if done.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        tokio::select! {
            () = &mut notified => {}
            () = &mut timer => return,
        }
    }
}

/// Polls every future to completion, concurrently, keeping their order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.map(|f| Some(Box::pin(f))).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in set.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *result = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

impl Default for ShutdownGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        if !self.done {
            self.shutdown_on_helper();
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
