//! Background maintenance: compression, retention and crash recovery, one job at a time on
//! the runtime's blocking pool (whose threads are marked as this sink's), never on the
//! write path.
//!
//! One lane, strictly in order, so retention never deletes a file under a running
//! compression and recovery never races a fresh rotation's compression.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::clock::Clock;
use super::compress::{self, Repair};
use super::naming::{unix_millis, Naming, Rotated};
use super::retention::{self, Retention};
use crate::events::{self, SinkId};

/// What the lane needs to know about the sink.
pub(crate) struct Context {
    pub(crate) id: SinkId,
    pub(crate) dir: PathBuf,
    pub(crate) naming: Naming,
    pub(crate) retention: Retention,
    /// The gzip level, or `None` when compression is off.
    pub(crate) gzip_level: Option<u32>,
    pub(crate) clock: Arc<dyn Clock>,
}

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
}

impl Lane {
    /// Starts the lane on the current runtime.
    pub(crate) fn start(ctx: Context) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let ctx = Arc::new(ctx);
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let ctx = ctx.clone();
                // A panic in a job (there should be none) must not stop the lane.
                let _ = tokio::task::spawn_blocking(move || run(&ctx, job)).await;
            }
        });
        Lane {
            tx: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) fn push(&self, job: Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }

    /// Lets the queued jobs finish, waiting at most until `deadline` (real time).
    pub(crate) async fn finish(&mut self, deadline: Option<Instant>) {
        self.tx = None;
        let Some(task) = self.task.take() else { return };
        match deadline {
            None => {
                let _ = task.await;
            }
            Some(at) => {
                tokio::select! {
                    _ = task => {}
                    () = crate::deadline::until(at) => {}
                }
            }
        }
    }
}

fn run(ctx: &Context, job: Job) {
    match job {
        Job::Startup(files) => {
            repair(ctx, &files);
            prune(ctx);
        }
        Job::Compress(path) => compress_one(ctx, &path),
        Job::Prune => prune(ctx),
    }
}

fn compress_one(ctx: &Context, plain: &Path) {
    let Some(level) = ctx.gzip_level else { return };
    // Retention may have removed the file already: nothing to do, nothing failed.
    if !plain.exists() {
        return;
    }
    let started = Instant::now();
    match compress::gzip(plain, level) {
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

fn prune(ctx: &Context) {
    if !ctx.retention.is_active() {
        return;
    }
    let Ok(files) = retention::list(&ctx.dir, &ctx.naming) else {
        return;
    };
    let now = unix_millis(ctx.clock.now());
    let (mut count, mut bytes) = (0, 0);
    for file in ctx.retention.select(files, now) {
        if std::fs::remove_file(&file.path).is_ok() {
            count += 1;
            bytes += file.bytes;
        }
    }
    if count > 0 {
        events::retention_pruned(&ctx.id, count, bytes);
    }
}
