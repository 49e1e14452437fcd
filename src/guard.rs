//! The shutdown guard: flushes every sink with a deadline when `main` ends.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::deadline::later;
use crate::pipe;
use crate::sink::Sink;
use crate::{ShutdownReport, SinkId};

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
/// In async code, prefer [`shutdown`](Self::shutdown)`.await`: dropping the guard (or
/// [`shutdown_blocking`](Self::shutdown_blocking)) blocks the thread, and on a thread that
/// drives a current-thread runtime (a default `#[tokio::test]`) whatever that runtime
/// serves cannot run meanwhile. There, a blocked shutdown that sees a network sink make no
/// progress stops waiting instead of sitting out the deadline, and says so with a
/// `shutdown_stalled` event; the sinks go on until their deadline.
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
#[must_use = "the guard shuts the sinks down when it is dropped: bind it to a variable (`let _guard = …`) that lives until the end of `main`"]
pub struct ShutdownGuard {
    sinks: Vec<Arc<dyn Sink>>,
    timeout: Duration,
    done: bool,
}

impl ShutdownGuard {
    /// The shutdown deadline of a new guard (5 s): the one place it is written.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A guard with no sinks and a shutdown deadline of
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT).
    pub fn new() -> Self {
        ShutdownGuard {
            sinks: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            done: false,
        }
    }

    /// Adds a sink to shut down.
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Sets how long shutdown may take in all (the sinks shut down concurrently). Default:
    /// [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT).
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
    ///
    /// On a thread that drives a current-thread runtime with tasks of its own, the wait is
    /// watched: once the network sinks make no progress for a while, it stops (see the
    /// type's docs) and reports what it saw then.
    fn shutdown_on_helper(&self) -> Vec<(SinkId, ShutdownReport)> {
        let sinks = self.sinks.clone();
        let timeout = self.timeout;
        let (tx, rx) = std::sync::mpsc::channel();
        let helper = std::thread::Builder::new()
            .name("sinkwatch-shutdown".into())
            .spawn(move || {
                let reports = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .ok()
                    .map(|rt| rt.block_on(shutdown_all(&sinks, timeout)));
                let _ = tx.send(reports);
            });
        if helper.is_err() {
            return self.shutdown_one_by_one();
        }
        let watched =
            pipe::blocks_a_runtime() && self.sinks.iter().any(|s| s.producer().is_remote());
        if !watched {
            return match rx.recv() {
                Ok(Some(reports)) => reports,
                _ => self.shutdown_one_by_one(),
            };
        }
        let started = Instant::now();
        let mut progress = pipe::Progress::new(started);
        loop {
            let now = Instant::now();
            let wait = progress.next_look(now).saturating_duration_since(now);
            match rx.recv_timeout(wait) {
                Ok(Some(reports)) => return reports,
                Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return self.shutdown_one_by_one();
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            let settled = self.sinks.iter().map(|s| pipe::settled(&s.stats())).sum();
            if progress.stalled(settled, Instant::now()) {
                return self.report_stall(progress.waited());
            }
        }
    }

    /// Shuts down one sink at a time, each with what is left of the deadline: for when no
    /// helper thread or runtime could start.
    fn shutdown_one_by_one(&self) -> Vec<(SinkId, ShutdownReport)> {
        let deadline = later(self.timeout);
        let mut reports: Vec<_> = self
            .sinks
            .iter()
            .rev()
            .map(|s| {
                let left = deadline.saturating_duration_since(Instant::now());
                (s.id().clone(), s.shutdown_blocking(left))
            })
            .collect();
        reports.reverse();
        reports
    }

    /// The wait stopped for want of progress: says so, and reports each sink as it is now.
    fn report_stall(&self, waited: Duration) -> Vec<(SinkId, ShutdownReport)> {
        self.sinks
            .iter()
            .map(|s| {
                let report = s.producer().report_now();
                if !report.completed {
                    pipe::report_stall(s.id(), report.stats.pending(), waited);
                }
                (s.id().clone(), report)
            })
            .collect()
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
    crate::deadline::wait_until(closed, Some(deadline), || {
        done.load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
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
