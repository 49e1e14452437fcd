//! The file sink's line writer, the loop its worker thread runs: drains the queue in
//! batches, formats each record into a line, writes each batch with one `write(2)`,
//! rotates, and hands compression and retention to the maintenance lane.
//!
//! It runs on the sink's own thread (see `crate::pipe::spawn_worker`), so blocking file
//! I/O here never stalls the application's runtime. Nothing in it panics: every failure
//! becomes an event and, where records are lost, a `records_dropped` report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::active::ActiveFile;
use super::clock::Clock;
use super::compress;
use super::maintenance::{Context, Job, Lane};
use super::naming::{Naming, Stamp};
use super::schedule::Schedule;
use super::{Format, FsyncPolicy};
use crate::events::{self, rotation_reason};
use crate::pipe::{Chunk, Consumer, Entry, Recv};
use crate::record::{LineCache, RecordRef};
use crate::sink::BoxFuture;
use crate::{Error, Result};

/// Formatted bytes written with one `write(2)`: big enough that a busy sink makes few, large
/// writes; small enough that the buffer stays small and the queue's room comes back often.
const WRITE_AT: usize = 256 * 1024;
/// A write buffer that grew past this (one huge record) is given back after its batch.
const KEEP_BUFFER: usize = 4 * 1024 * 1024;
/// After a failed rotation, how long size rotation waits before trying again, so a
/// persistent failure does not become one `rotation_failed` per record.
const ROTATION_RETRY: Duration = Duration::from_secs(1);

/// A request from a handle that is not a record.
pub(crate) enum Control {
    /// Rotate now; answers with the rotated file's path (`None` if the file was empty).
    Rotate(oneshot::Sender<Result<Option<PathBuf>>>),
}

/// Everything the worker is started with.
pub(crate) struct Parts {
    pub(crate) consumer: Consumer,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) file: ActiveFile,
    pub(crate) size: u64,
    pub(crate) max_size: Option<u64>,
    pub(crate) schedule: Option<Schedule>,
    /// The end of the active file's period, read from the clock when the sink was built:
    /// a record written after `build()` returns belongs to that period even if the clock
    /// moves on before the worker thread first runs.
    pub(crate) first_boundary: Option<SystemTime>,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) format: Format,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) maintenance: Context,
}

#[allow(clippy::struct_excessive_bools)] // independent settings and states
struct LineWriter {
    consumer: Consumer,
    control: mpsc::UnboundedReceiver<Control>,
    file: ActiveFile,
    /// Bytes in the active file: only bytes that reached the OS are counted.
    size: u64,
    max_size: Option<u64>,
    schedule: Option<Schedule>,
    fsync: FsyncPolicy,
    format: Format,
    clock: Arc<dyn Clock>,
    naming: Naming,
    dir: PathBuf,
    lane: Lane,
    compress: bool,
    prune: bool,
    /// Formatted lines not yet written, and where each one ends.
    buf: Vec<u8>,
    ends: Vec<usize>,
    /// Records and queue bytes behind the lines in `buf`, released once they are written.
    held: (usize, usize),
    /// The last second's timestamp and every callsite's escaped parts.
    lines: LineCache,
    /// The queue is closed: a removed log directory is not recreated any more.
    closing: bool,
    /// A failed write left a partial line that could not be cut off: the next write starts
    /// with a newline so the next record is not glued to it.
    torn: bool,
    next_boundary: Option<SystemTime>,
    timer: Option<BoxFuture<()>>,
    retry_rotation_at: Option<Instant>,
    /// The newest rotated name so far: the next one must sort after it.
    last_rotated: Option<Stamp>,
}

/// The worker's whole life.
pub(crate) async fn run(parts: Parts) {
    let first_boundary = parts.first_boundary;
    let mut worker = LineWriter::new(parts);
    // Listed before the first rotation, so start-up repair never races this run's own files.
    let existing = compress::scan(&worker.dir, &worker.naming).unwrap_or_default();
    worker.last_rotated = existing.iter().map(|f| f.stamp).max();
    worker.lane.push(Job::Startup(existing));
    worker.rotate_if_stale();
    worker.arm_timer_at(first_boundary);
    worker.main_loop().await;
}

impl LineWriter {
    fn new(p: Parts) -> Self {
        let compress = p.maintenance.gzip_level.is_some();
        let prune = p.maintenance.retention.is_active();
        let naming = p.maintenance.naming.clone();
        let dir = p.maintenance.dir.clone();
        LineWriter {
            consumer: p.consumer,
            control: p.control,
            file: p.file,
            size: p.size,
            max_size: p.max_size,
            schedule: p.schedule,
            fsync: p.fsync,
            format: p.format,
            clock: p.clock,
            naming,
            dir,
            lane: Lane::start(p.maintenance),
            compress,
            prune,
            buf: Vec::with_capacity(WRITE_AT + 64 * 1024),
            ends: Vec::with_capacity(4096),
            held: (0, 0),
            lines: LineCache::default(),
            closing: false,
            torn: false,
            next_boundary: None,
            timer: None,
            retry_rotation_at: None,
            last_rotated: None,
        }
    }

    async fn main_loop(&mut self) {
        let mut chunk = Chunk::with_room();
        loop {
            tokio::select! {
                biased;
                deadline = self.consumer.shutdown_requested() => {
                    return self.close(Some(deadline), &mut chunk).await;
                }
                Some(control) = self.control.recv() => self.on_control(control, &mut chunk),
                () = wait(&mut self.timer) => self.on_tick(&mut chunk),
                received = self.consumer.recv(&mut chunk) => match received {
                    Recv::Items => {
                        self.process(&mut chunk);
                        // A ready queue never makes this loop wait, and the runtime has one
                        // thread: let the maintenance lane start its next job between batches.
                        tokio::task::yield_now().await;
                    }
                    // Every handle is gone and the queue is drained.
                    Recv::Closed => return self.close(None, &mut chunk).await,
                },
            }
        }
    }

    /// Writes everything still queued (until `deadline`), lets maintenance finish, and
    /// emits `sink_closed`.
    async fn close(&mut self, deadline: Option<Instant>, chunk: &mut Chunk) {
        self.closing = true;
        // A shutdown also closes the queue: if the worker saw the queue closed first, the
        // shutdown's deadline still holds.
        let deadline = deadline.or_else(|| self.consumer.shutdown_deadline());
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.consumer.abandon_queue();
                break;
            }
            if !self.consumer.try_recv(chunk) {
                break;
            }
            self.process(chunk);
        }
        // Pending `rotate()` calls learn the sink is closed when their sender drops.
        self.control.close();
        while self.control.try_recv().is_ok() {}
        if self.fsync != FsyncPolicy::Never {
            self.sync();
        }
        self.lane.finish(deadline).await;
        self.consumer.finish();
    }

    fn on_control(&mut self, control: Control, chunk: &mut Chunk) {
        match control {
            Control::Rotate(reply) => {
                // Records accepted before `rotate()` was called are queued: into this file.
                self.drain_queued(chunk);
                let result = self.rotate(rotation_reason::MANUAL).map_err(|e| {
                    Error::io(format!("cannot rotate {}", self.file.path().display()), e)
                });
                let _ = reply.send(result);
            }
        }
    }

    /// Handles entries in order: records are formatted into the buffer, written out every
    /// `WRITE_AT` bytes; a flush marker writes the buffer out before it is acknowledged.
    fn process(&mut self, chunk: &mut Chunk) {
        for (entry, size) in chunk.drain() {
            match entry {
                Entry::Event(event) => self.append(&RecordRef::Event(event)),
                Entry::Record(record) => self.append(&RecordRef::Owned(&record)),
                Entry::Line(line) => self.append_line(line),
                Entry::Flush(ack) => {
                    self.write_buffer(self.buf.len());
                    if self.fsync == FsyncPolicy::OnFlush {
                        self.sync();
                    }
                    self.consumer.complete_flush(ack);
                    continue;
                }
            }
            self.held.0 += 1;
            self.held.1 += size;
            if self.buf.len() >= WRITE_AT {
                self.write_buffer(self.buf.len());
            }
        }
        self.write_buffer(self.buf.len());
        chunk.clear();
        if self.buf.capacity() > KEEP_BUFFER {
            self.buf = Vec::with_capacity(WRITE_AT + 64 * 1024);
        }
    }

    /// Takes everything queued now and writes it: at a time boundary, the records accepted
    /// before the worker saw the boundary belong to the period that is ending.
    fn drain_queued(&mut self, chunk: &mut Chunk) {
        if self.consumer.try_recv(chunk) {
            self.process(chunk);
        }
    }

    /// A preformatted line (the `MakeWriter`): written as is, with a newline if it has none.
    fn append_line(&mut self, line: &[u8]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            self.buf.push(b'\n');
        }
        self.after_append(start);
    }

    /// Formats one record; rotates first if its line would take the file past the size
    /// limit (a file only exceeds the limit when one line alone does).
    fn append(&mut self, record: &RecordRef<'_>) {
        let start = self.buf.len();
        self.format
            .write_line(record, &mut self.buf, &mut self.lines);
        self.after_append(start);
    }

    /// Accounts for the line that starts at `start`: rotates before it if it would take
    /// the file past the size limit (a file only exceeds the limit when one line alone does).
    fn after_append(&mut self, start: usize) {
        let line = (self.buf.len() - start) as u64;
        let before = self.size + start as u64;
        let over = self
            .max_size
            .is_some_and(|max| before > 0 && before + line > max);
        if over && self.retry_rotation_at.is_none_or(|at| Instant::now() >= at) {
            self.write_buffer(start);
            if self.rotate(rotation_reason::SIZE).is_err() {
                self.retry_rotation_at = Some(Instant::now() + ROTATION_RETRY);
            }
        }
        self.ends.push(self.buf.len());
    }

    /// Writes the first `len` bytes of the buffer (whole lines, ending at the last entry of
    /// `ends`), accounts for them and removes them from the buffer.
    fn write_buffer(&mut self, len: usize) {
        if len > 0 {
            let records = self.ends.len() as u64;
            match self.ensure_current() {
                Ok(()) => self.write_lines(len),
                Err(e) => self.report_lost(&e, records, len as u64),
            }
            self.buf.drain(..len);
            self.ends.clear();
        }
        if self.buf.is_empty() {
            let (records, bytes) = std::mem::take(&mut self.held);
            self.consumer.release(records, bytes);
        }
    }

    fn write_lines(&mut self, len: usize) {
        if self.torn {
            let (n, result) = self.file.write(b"\n");
            self.size += n as u64;
            self.torn = result.is_err();
        }
        let (mut written, mut result) = self.file.write(&self.buf[..len]);
        if written > 0 && self.file.is_deleted() {
            // Deleted between the identity check and the write: those bytes went to a file
            // nobody can read. Write them again to a new active file.
            (written, result) = match self.ensure_current() {
                Ok(()) => self.file.write(&self.buf[..len]),
                Err(e) => (0, Err(e)),
            };
        }
        let complete = self.ends.partition_point(|&end| end <= written);
        let whole = if complete == 0 {
            0
        } else {
            self.ends[complete - 1]
        };
        self.consumer.delivered(complete as u64);
        crate::metrics::bytes_written(self.consumer.id(), if result.is_ok() { len } else { whole });
        let Err(e) = result else {
            self.size += len as u64;
            return;
        };
        self.size += whole as u64;
        if written > whole {
            // Cut the torn line off, so readers never see half a record.
            if self.file.truncate(self.size).is_err() {
                self.size += (written - whole) as u64;
                self.torn = true;
            }
        }
        let lost = self.ends.len() - complete;
        self.report_lost(&e, lost as u64, (len - whole) as u64);
    }

    /// Syncs the active file, reporting a failure with `sync_failed`.
    fn sync(&self) {
        if let Err(e) = self.file.sync() {
            let path = self.file.path().to_string_lossy();
            events::sync_failed(self.consumer.id(), &path, &e.to_string());
        }
    }

    fn report_lost(&self, e: &std::io::Error, records: u64, bytes: u64) {
        let path = self.file.path().to_string_lossy();
        events::write_failed(self.consumer.id(), &path, &e.to_string(), records, bytes);
        self.consumer.dropped(records, events::reason::WRITE_FAILED);
    }

    /// Reopens the active file if it was deleted or moved under the sink.
    fn ensure_current(&mut self) -> std::io::Result<()> {
        if !self.file.is_replaced() {
            return Ok(());
        }
        if self.closing || self.consumer.is_closed() {
            // A sink being dropped or shut down never recreates its file or directory: they
            // were most likely removed on purpose (a test's `TempDir`). A file moved away
            // (logrotate) still takes the last records; a deleted one cannot, and they are
            // reported lost.
            if self.file.is_deleted() || !self.dir.is_dir() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the active file was removed while the sink was closing; not recreated",
                ));
            }
            return Ok(());
        }
        let (file, size) = self.file.reopen()?;
        self.file = file;
        self.size = size;
        self.torn = false;
        events::file_reopened(self.consumer.id(), &self.file.path().to_string_lossy());
        Ok(())
    }

    /// Renames the active file to a fresh rotated name and opens a new active file.
    /// Returns the rotated path, or `None` when the active file is empty.
    fn rotate(&mut self, reason: &str) -> std::io::Result<Option<PathBuf>> {
        let from = self.file.path().to_string_lossy().into_owned();
        match self.try_rotate() {
            Ok(Some((to, bytes))) => {
                self.retry_rotation_at = None;
                events::rotation_complete(
                    self.consumer.id(),
                    reason,
                    &from,
                    &to.to_string_lossy(),
                    bytes,
                );
                if self.compress {
                    self.lane.push(Job::Compress(to.clone()));
                }
                if self.prune {
                    self.lane.push(Job::Prune);
                }
                Ok(Some(to))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                events::rotation_failed(self.consumer.id(), reason, &from, &e.to_string());
                Err(e)
            }
        }
    }

    /// The rotation itself: the rotated path and the bytes it holds.
    fn try_rotate(&mut self) -> std::io::Result<Option<(PathBuf, u64)>> {
        self.ensure_current()?;
        if self.size == 0 {
            return Ok(None);
        }
        if self.fsync != FsyncPolicy::Never {
            // A failed sync is reported but does not stop the rotation: the data is with
            // the OS either way, and keeping the file open would only let it grow past its
            // limits (on Linux a retried fsync reports success for pages already lost).
            self.sync();
        }
        let from = self.file.path().to_owned();
        let (to, stamp) = self
            .naming
            .free_rotated(&self.dir, self.clock.now(), self.last_rotated);
        std::fs::rename(&from, &to)?;
        self.last_rotated = Some(stamp);
        match self.file.reopen() {
            Ok((file, size)) => {
                self.file = file;
                self.torn = false;
                Ok(Some((to, std::mem::replace(&mut self.size, size))))
            }
            Err(e) => {
                // Without a new active file, keep writing to the old one under its name.
                let _ = std::fs::rename(&to, &from);
                Err(e)
            }
        }
    }

    /// At start-up, an active file left from an earlier period is rotated at once.
    fn rotate_if_stale(&mut self) {
        let Some(schedule) = self.schedule else {
            return;
        };
        let Ok(modified) = std::fs::metadata(self.file.path()).and_then(|m| m.modified()) else {
            return;
        };
        if self.size > 0
            && schedule
                .next_after(modified)
                .is_some_and(|b| b <= self.clock.now())
        {
            let _ = self.rotate(rotation_reason::TIME);
        }
    }

    /// Sets the timer for the next boundary after now.
    fn arm_timer(&mut self) {
        let Some(schedule) = self.schedule else {
            return;
        };
        self.arm_timer_at(schedule.next_after(self.clock.now()));
    }

    /// Sets the timer for `boundary`.
    fn arm_timer_at(&mut self, boundary: Option<SystemTime>) {
        if self.schedule.is_none() {
            return;
        }
        self.next_boundary = boundary;
        self.timer = self.next_boundary.map(|at| self.clock.sleep_until(at));
    }

    /// The timer fired: rotate a non-empty file if the boundary has really passed.
    fn on_tick(&mut self, chunk: &mut Chunk) {
        let Some(boundary) = self.next_boundary else {
            self.timer = None;
            return;
        };
        let now = self.clock.now();
        if now < boundary {
            let stepped_back = self
                .schedule
                .and_then(|s| s.next_after(now))
                .is_some_and(|next| next < boundary);
            if !stepped_back {
                // An early wake (the system clock's wait is cut into pieces): wait again.
                self.timer = Some(self.clock.sleep_until(boundary));
                return;
            }
            // The clock stepped back past the start of this file's interval (NTP, an
            // operator): the interval is over as the clock now reads it. Waiting for the old
            // boundary would keep the file open for as long as the step.
        }
        // Records accepted before the boundary was seen belong to the period that ends.
        self.drain_queued(chunk);
        let _ = self.rotate(rotation_reason::TIME);
        self.arm_timer();
    }
}

/// Waits on an optional timer; no timer never resolves.
async fn wait(timer: &mut Option<BoxFuture<()>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}
