//! Background maintenance: compression, retention and crash recovery, one job at a time on
//! the runtime's blocking pool (whose threads are marked as this sink's), never on the
//! write path.
//!
//! One lane, strictly in order, so retention never deletes a file under a running
//! compression and recovery never races a fresh rotation's compression. Retention also
//! leaves alone the rotated files whose compression is still queued: when compression
//! falls behind, they would otherwise count at their plain size and push out archives
//! that fit the budget, or be deleted before they were ever compressed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::compress::{self, Repair};
use super::naming::{unix_millis, Naming, Rotated};
use super::retention::{self, Retention};
use crate::fault::{check, FsFaultHook, FsOp};
use crate::{events, SinkId};

/// What the lane needs to know about the sink.
pub(crate) struct Context {
    pub(crate) id: SinkId,
    pub(crate) dir: PathBuf,
    pub(crate) naming: Naming,
    pub(crate) retention: Retention,
    /// The gzip level, or `None` when compression is off.
    pub(crate) gzip_level: Option<u32>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Fault injection for tests (see `FsFaultHook`).
    pub(crate) fs_fault: Option<FsFaultHook>,
    /// Set when shutdown's deadline passed: the running job stops, the rest are skipped.
    pub(crate) stop: Arc<AtomicBool>,
    /// What start-up cut off the active file (its path and the bytes of a torn last line),
    /// reported by the lane as it starts, on the sink's own thread.
    pub(crate) tail_cut: Option<(String, u64)>,
}

/// The rotated files whose compression job is queued or running.
type Pending = Arc<Mutex<HashSet<PathBuf>>>;

/// A maintenance job.
#[derive(Debug)]
pub(crate) enum Job {
    /// Start-up: repair what a crash left among these files (listed before the sink
    /// rotated anything: its own rotations have jobs of their own), then apply retention.
    Startup(Vec<Rotated>),
    /// Compress a freshly rotated file.
    Compress(PathBuf),
    /// Apply retention.
    Prune,
}

/// The handle the worker pushes jobs through.
pub(crate) struct Lane {
    tx: Option<mpsc::UnboundedSender<Job>>,
    task: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    pending: Pending,
}

impl Lane {
    /// Starts the lane on the current runtime.
    pub(crate) fn start(ctx: Context) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let stop = ctx.stop.clone();
        let pending = Pending::default();
        let lane_pending = pending.clone();
        let ctx = Arc::new(ctx);
        let task = tokio::spawn(async move {
            // First, whatever the deadline: the repair is done already and must be known.
            if let Some((path, cut)) = &ctx.tail_cut {
                events::tail_repaired(&ctx.id, path, *cut);
            }
            while let Some(job) = rx.recv().await {
                // Past shutdown's deadline: what is left is done at the next start-up.
                if ctx.stop.load(Ordering::Acquire) {
                    break;
                }
                let compressing = match &job {
                    Job::Compress(path) => Some(path.clone()),
                    _ => None,
                };
                let (job_ctx, pending) = (ctx.clone(), lane_pending.clone());
                let done = tokio::task::spawn_blocking(move || run(&job_ctx, &pending, job)).await;
                // A panic in a job (a user's `Clock`, say) must not stop the lane, nor pass
                // unreported, nor leave a file marked pending (which would hold retention).
                if let Err(e) = done {
                    job_panicked(&ctx, &lane_pending, compressing, &e);
                }
            }
        });
        Lane {
            tx: Some(tx),
            task: Some(task),
            stop,
            pending,
        }
    }

    pub(crate) fn push(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // Marked before the job is queued, so no retention pass in between misses it.
            if let Job::Compress(path) = &job {
                lock(&self.pending).insert(path.clone());
            }
            let _ = tx.send(job);
        }
    }

    /// Lets the queued jobs finish until `deadline` (real time); past it, stops the running
    /// job (a compression stops within one chunk, removing its temporary) and skips the
    /// rest, so the sink's last events come before `sink_closed` and no job outlives it.
    pub(crate) async fn finish(&mut self, deadline: Option<Instant>) {
        self.tx = None;
        let Some(mut task) = self.task.take() else {
            return;
        };
        if let Some(at) = deadline {
            tokio::select! {
                _ = &mut task => return,
                () = crate::deadline::until(at) => {}
            }
            self.stop.store(true, Ordering::Release);
        }
        let _ = task.await;
    }
}

/// Reports a job that panicked, as the failure of what it was doing.
fn job_panicked(
    ctx: &Context,
    pending: &Pending,
    compressing: Option<PathBuf>,
    e: &tokio::task::JoinError,
) {
    let why = format!("the maintenance job failed: {e}");
    match compressing {
        Some(path) => {
            lock(pending).remove(&path);
            events::compression_failed(&ctx.id, &path.to_string_lossy(), &why);
        }
        None => events::retention_failed(&ctx.id, &ctx.dir.to_string_lossy(), &why),
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
    // The set is consistent after any panic (single inserts and removals).
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

fn run(ctx: &Context, pending: &Pending, job: Job) {
    match job {
        Job::Startup(files) => {
            repair(ctx, &files);
            prune(ctx, pending);
        }
        Job::Compress(path) => {
            compress_one(ctx, &path);
            lock(pending).remove(&path);
        }
        Job::Prune => prune(ctx, pending),
    }
}

fn compress_one(ctx: &Context, plain: &Path) {
    let Some(level) = ctx.gzip_level else { return };
    // Retention may have removed the file already: nothing to do, nothing failed. (Not
    // following a symlink: one in its place is refused by `gzip`, and reported.)
    if std::fs::symlink_metadata(plain).is_err() {
        return;
    }
    let started = Instant::now();
    let go_on = || {
        check(ctx.fs_fault.as_ref(), FsOp::CompressChunk, plain)?;
        if ctx.stop.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "stopped at the shutdown deadline; the plain file is kept and compressed at \
                 the next start-up",
            ));
        }
        Ok(())
    };
    match compress::gzip(plain, level, &go_on) {
        Ok(done) => events::compression_complete(
            &ctx.id,
            &plain.to_string_lossy(),
            &done.archive.to_string_lossy(),
            done.bytes_in,
            done.bytes_out,
            events::micros(started.elapsed()),
        ),
        Err(e) => events::compression_failed(&ctx.id, &plain.to_string_lossy(), &e.to_string()),
    }
}

fn repair(ctx: &Context, files: &[Rotated]) {
    for step in compress::plan(&ctx.dir, files, ctx.gzip_level.is_some()) {
        if ctx.stop.load(Ordering::Acquire) {
            return;
        }
        match step {
            Repair::DeleteTemp(tmp) => {
                let _ = std::fs::remove_file(tmp);
            }
            Repair::CheckArchive { plain, archive } => {
                if compress::archive_is_whole(&archive, &plain) {
                    let _ = std::fs::remove_file(&plain);
                } else if ctx.gzip_level.is_some() {
                    // The plain file is the good copy: replace the archive from it.
                    let _ = std::fs::remove_file(&archive);
                    compress_one(ctx, &plain);
                }
            }
            Repair::Compress(plain) => compress_one(ctx, &plain),
        }
    }
}

fn prune(ctx: &Context, pending: &Pending) {
    if !ctx.retention.is_active() {
        return;
    }
    let listed = check(ctx.fs_fault.as_ref(), FsOp::ListDir, &ctx.dir)
        .and_then(|()| retention::list(&ctx.dir, &ctx.naming));
    let (files, oldest_pending) = match listed {
        // Waiting for compression: not in its final form (nor size) yet, so neither counted
        // nor removed; the pass after its compression counts it at the archive's size.
        Ok(files) => retention::without(files, &lock(pending)),
        Err(e) => {
            events::retention_failed(&ctx.id, &ctx.dir.to_string_lossy(), &e.to_string());
            return;
        }
    };
    let now = unix_millis(ctx.clock.now());
    let (mut count, mut bytes) = (0, 0);
    let selected = ctx.retention.select(files, now);
    // Oldest first: a file newer than one still waiting for compression waits too.
    let removable = selected
        .into_iter()
        .filter(|f| oldest_pending.is_none_or(|p| f.stamp < p));
    for file in removable {
        match remove(ctx, &file.path) {
            Ok(()) => {
                count += 1;
                bytes += file.bytes;
            }
            // Gone since the listing (an operator, say): nothing left to remove.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // The file stays; the next pass selects it again.
            Err(e) => {
                events::retention_failed(&ctx.id, &file.path.to_string_lossy(), &e.to_string());
            }
        }
    }
    if count > 0 {
        events::retention_pruned(&ctx.id, count, bytes);
    }
}

fn remove(ctx: &Context, path: &Path) -> std::io::Result<()> {
    check(ctx.fs_fault.as_ref(), FsOp::Remove, path)?;
    std::fs::remove_file(path)
}
