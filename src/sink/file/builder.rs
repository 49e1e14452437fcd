//! [`FileSinkBuilder`]: every option of the file sink, checked by `build()`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::active::{cut_torn_tail, ActiveFile};
use super::clock::{Clock, SystemClock};
use super::line_writer::{self, Parts};
use super::maintenance::Context;
use super::naming::Naming;
use super::retention::Retention;
use super::schedule::{Schedule, TimeZone};
use super::{Compression, FileSink, Format, FsyncPolicy};
use crate::fault::{FaultHook, FsFaultHook, FsOp};
use crate::pipe::{self, spawn_worker, Limits, Settings};
use crate::SinkId;

use crate::{Error, OverflowPolicy, Result};

/// How long a writer waits for room in a full queue by default.
const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(1);
/// How long dropping the last handle waits for the sink to deliver and close, by default.
const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(1);
/// The prefix of the sink's id when it is not given a [`name`](FileSinkBuilder::name).
const DEFAULT_NAME: &str = "file";

/// Configures and builds a [`FileSink`].
///
/// Setters never fail: the first unusable value is reported by [`build`](Self::build).
///
/// # Defaults
///
/// [`FileSink::builder`] starts from these, the one place they are written (a unit test
/// checks the table against the builder):
///
/// | setting | default |
/// |---|---|
/// | [`file_name`](Self::file_name) | `app`, `log` |
/// | [`name`](Self::name) | `file` |
/// | [`max_file_size`](Self::max_file_size) | no limit |
/// | [`rotate_every`](Self::rotate_every) | no time rotation |
/// | [`time_zone`](Self::time_zone) | [`TimeZone::Utc`](crate::TimeZone::Utc) |
/// | [`max_files`](Self::max_files) | no limit |
/// | [`max_age`](Self::max_age) | no limit |
/// | [`max_total_bytes`](Self::max_total_bytes) | no limit |
/// | [`compression`](Self::compression) | [`Compression::None`](crate::Compression::None) |
/// | [`compression_level`](Self::compression_level) | 1 |
/// | [`fsync`](Self::fsync) | [`FsyncPolicy::Never`](crate::FsyncPolicy::Never) |
/// | [`format`](Self::format) | [`Format::Json`](crate::Format::Json) |
/// | [`overflow`](Self::overflow) | [`OverflowPolicy::Block`](crate::OverflowPolicy::Block) for at most 1 s |
/// | [`queue_capacity`](Self::queue_capacity) | 65,536 records |
/// | [`queue_max_bytes`](Self::queue_max_bytes) | 4 MiB |
/// | [`drop_timeout`](Self::drop_timeout) | 1 s |
/// | [`clock`](Self::clock) | [`SystemClock`](crate::SystemClock) |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::{Compression, FileSink};
///
/// let dir = tempfile::tempdir()?;
/// let sink = FileSink::builder(dir.path())
///     .file_name("api", "log")
///     .max_file_size(10 * 1024 * 1024)
///     .rotate_every(Duration::from_secs(3600))
///     .max_files(48)
///     .compression(Compression::Gzip)
///     .build()?;
/// assert!(sink.active_path().ends_with("api.log"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
pub struct FileSinkBuilder {
    dir: PathBuf,
    prefix: String,
    extension: String,
    name: Option<String>,
    max_file_size: Option<u64>,
    rotate_every: Option<Duration>,
    time_zone: TimeZone,
    retention: Retention,
    compression: Compression,
    compression_level: u32,
    fsync: FsyncPolicy,
    format: Format,
    overflow: OverflowPolicy,
    queue_capacity: usize,
    queue_max_bytes: usize,
    drop_timeout: Duration,
    clock: Arc<dyn Clock>,
    fault: Option<FaultHook>,
    fs_fault: Option<FsFaultHook>,
}

impl fmt::Debug for FileSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSinkBuilder")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("extension", &self.extension)
            .field("max_file_size", &self.max_file_size)
            .field("rotate_every", &self.rotate_every)
            .field("time_zone", &self.time_zone)
            .field("retention", &self.retention)
            .field("compression", &self.compression)
            .field("fsync", &self.fsync)
            .field("format", &self.format)
            .field("overflow", &self.overflow)
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("drop_timeout", &self.drop_timeout)
            .finish_non_exhaustive()
    }
}

impl FileSinkBuilder {
    pub(super) fn new(dir: impl AsRef<Path>) -> Self {
        FileSinkBuilder {
            dir: dir.as_ref().to_owned(),
            prefix: "app".into(),
            extension: "log".into(),
            name: None,
            max_file_size: None,
            rotate_every: None,
            time_zone: TimeZone::Utc,
            retention: Retention::default(),
            compression: Compression::None,
            compression_level: 1,
            fsync: FsyncPolicy::Never,
            format: Format::Json,
            overflow: OverflowPolicy::Block(DEFAULT_MAX_BLOCK),
            queue_capacity: 65_536,
            queue_max_bytes: 4 * 1024 * 1024,
            drop_timeout: DEFAULT_DROP_TIMEOUT,
            clock: Arc::new(SystemClock),
            fault: None,
            fs_fault: None,
        }
    }

    /// Names the files: the active file is `{prefix}.{extension}`, rotated ones
    /// `{prefix}.{UTC time}.{extension}`. Default: see [the table](Self#defaults).
    pub fn file_name(mut self, prefix: impl Into<String>, extension: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self.extension = extension.into();
        self
    }

    /// Names the sink in its id (`{name}-{n}`) as its events carry it. Default: see
    /// [the table](Self#defaults).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Rotates before a line would take the active file past `bytes`. A file exceeds the
    /// limit only when a single line is longer than it. Default: see
    /// [the table](Self#defaults).
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.max_file_size = Some(bytes);
        self
    }

    /// Rotates a non-empty active file at every boundary of `interval`: instants when the
    /// clock reads a whole multiple of it since the epoch (each minute, hour, day at
    /// midnight…), in [`time_zone`](Self::time_zone). A boundary rotates even when no
    /// record arrives then. Combines with [`max_file_size`](Self::max_file_size): whichever
    /// comes first. Default: see [the table](Self#defaults).
    pub fn rotate_every(mut self, interval: Duration) -> Self {
        self.rotate_every = Some(interval);
        self
    }

    /// The zone time boundaries align to. Rotated names are in UTC either way. Default: see
    /// [the table](Self#defaults).
    pub fn time_zone(mut self, zone: TimeZone) -> Self {
        self.time_zone = zone;
        self
    }

    /// Keeps at most `count` rotated files (the active file not counted), removing the
    /// oldest. Default: see [the table](Self#defaults).
    pub fn max_files(mut self, count: usize) -> Self {
        self.retention.count = Some(count);
        self
    }

    /// Removes rotated files rotated longer than `age` ago (by the sink's clock). Default:
    /// see [the table](Self#defaults).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.retention.age = Some(age);
        self
    }

    /// Keeps the rotated files (archives at their compressed size; the active file not
    /// counted) within `bytes`, removing the oldest. Default: see [the table](Self#defaults).
    pub fn max_total_bytes(mut self, bytes: u64) -> Self {
        self.retention.bytes = Some(bytes);
        self
    }

    /// Compresses rotated files in the background. Default: see [the table](Self#defaults).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// The compression level, 0 (store only) to 9 (smallest). The default
    /// ([the table](Self#defaults)) is the fastest level that compresses: compression
    /// shares the CPU with the sink's writer, and level 6
    /// takes more than twice the CPU, which made the sink about 20–30% slower in the
    /// benchmark. The price is archives about 1.6× larger (JSON log lines still shrink to
    /// about 5%). Set 6–9 for smaller archives (see `docs/file-sink.md`, Performance).
    pub fn compression_level(mut self, level: u32) -> Self {
        self.compression_level = level;
        self
    }

    /// When to ask the OS to put written data on the device. Default: see
    /// [the table](Self#defaults).
    pub fn fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    /// The line format. Default: see [the table](Self#defaults).
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// What a full queue does with a new record. The default ([the table](Self#defaults))
    /// is [`OverflowPolicy::Block`] with a bound of about a second: a disk write takes
    /// microseconds, so a burst slows the callers to the disk's pace and loses nothing, and
    /// only a disk stalled for that long (a hung NFS mount, a full disk being cleaned) makes
    /// the sink shed load, reporting every record it drops (reason `stalled`) and
    /// recovering by itself.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// The most records the queue holds. Default: see [the table](Self#defaults).
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records;
        self
    }

    /// The most bytes the queue holds: events captured by [`SinkLayer`](crate::SinkLayer)
    /// count at their compact size (about 0.6 of the JSON line they become), records
    /// written by hand at [`Record::approx_size`](crate::Record::approx_size). Records the
    /// worker has taken but not yet written still count. The default
    /// ([the table](Self#defaults)) holds some 25,000 typical events: with backpressure a
    /// small queue loses nothing and keeps memory low.
    pub fn queue_max_bytes(mut self, bytes: usize) -> Self {
        self.queue_max_bytes = bytes;
        self
    }

    /// How long dropping the sink's last handle waits for it to write what is queued and
    /// close, as `tracing-appender`'s `WorkerGuard` does: so the last records reach the
    /// file, and a test's temporary directory is not removed under a worker still writing.
    /// Past it the rest is reported dropped (reason `shutdown`). `Duration::ZERO` lets the
    /// drop return at once (the worker still writes everything queued, in the background).
    /// On a sink's worker thread the drop never waits. Default: see
    /// [the table](Self#defaults).
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// The clock for time rotation, rotated names and retention by age. Default: see
    /// [the table](Self#defaults).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Puts a hook in front of every write the sink makes, for fault-injection tests
    /// (feature `testing`).
    ///
    /// The hook is given the length of each write and answers how many bytes may go
    /// through (fewer makes a partial write) or an error to fail the write with, as a full
    /// disk would. The sink then behaves as it does on a real failure: a `write_failed`
    /// event, the records reported dropped, and a retry on the next write. By default there
    /// is no hook. See [`FaultHook`](crate::testing::FaultHook).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sinkwatch::{FileSink, Record};
    /// use tracing::Level;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// // Every write fails, as on a full disk.
    /// let sink = FileSink::builder(dir.path())
    ///     .fault_hook(|_len| Err(std::io::Error::other("no space left on device")))
    ///     .build()?;
    /// sink.try_write(Record::new(Level::INFO, "lost"))?;
    /// sink.flush().await?;
    /// let stats = sink.stats();
    /// assert_eq!((stats.delivered, stats.dropped), (0, 1));
    /// sink.shutdown(Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "testing")]
    pub fn fault_hook(
        mut self,
        hook: impl Fn(usize) -> std::io::Result<usize> + Send + Sync + 'static,
    ) -> Self {
        self.fault = Some(Arc::new(hook));
        self
    }

    /// Puts a hook in front of the sink's other file-system operations, for
    /// fault-injection tests (feature `testing`): each sync of the active file, retention's
    /// directory listing and removals, and each chunk a compression reads.
    ///
    /// An error fails the operation with it (the operation is not attempted); a hook that
    /// blocks holds the operation up, which lets a test act while, say, a compression is
    /// under way. By default there is no hook. See [`FsOp`](crate::testing::FsOp) and
    /// [`FsFaultHook`](crate::testing::FsFaultHook).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sinkwatch::testing::FsOp;
    /// use sinkwatch::{FileSink, FsyncPolicy, Record};
    /// use tracing::Level;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let sink = FileSink::builder(dir.path())
    ///     .fsync(FsyncPolicy::OnFlush)
    ///     .fs_fault_hook(|op, _path| match op {
    ///         FsOp::Sync => Err(std::io::Error::other("injected sync failure")),
    ///         _ => Ok(()),
    ///     })
    ///     .build()?;
    /// sink.try_write(Record::new(Level::INFO, "written, not synced"))?;
    /// // The flush still resolves; the failure is reported by a `sync_failed` event.
    /// sink.flush().await?;
    /// assert!(std::fs::read_to_string(sink.active_path())?.contains("not synced"));
    /// sink.shutdown(Duration::from_secs(5)).await;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "testing")]
    pub fn fs_fault_hook(
        mut self,
        hook: impl Fn(FsOp, &Path) -> std::io::Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.fs_fault = Some(Arc::new(hook));
        self
    }

    /// Checks the configuration, creates the directory if needed, opens (or appends to)
    /// the active file and starts the sink's worker thread. Needs no tokio runtime.
    ///
    /// An active file left ending in a torn line (the process was killed inside a write)
    /// is first cut back to its last whole line, reported by a `tail_repaired` event once
    /// the sink runs.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for the first unusable setting; an
    /// [`Io`](crate::ErrorKind::Io) error naming the path when the directory cannot be
    /// created or written, or the worker thread cannot start.
    pub fn build(self) -> Result<FileSink> {
        self.validate()?;
        let naming = Naming::new(&self.prefix, &self.extension);
        let dir = prepare_dir(&self.dir)?;
        let active_path = dir.join(naming.active());
        let tail_cut = repair_tail(&active_path)?;
        let (file, size) = ActiveFile::open(&active_path, self.fault.clone()).map_err(|e| {
            let path = active_path.display();
            Error::io(
                format!("cannot open {path} for appending; check this process may write it"),
                e,
            )
        })?;
        let file = file.with_fs_fault(self.fs_fault.clone());
        let id = SinkId::new(self.name.as_deref().unwrap_or(DEFAULT_NAME));
        let settings = Settings {
            limits: self.limits(),
            drop_timeout: self.drop_timeout,
            remote: false,
        };
        let (producer, consumer) = pipe::open(id.clone(), settings);
        let (control, control_rx) = mpsc::unbounded_channel();
        let schedule = self
            .rotate_every
            .map(|every| Schedule::new(every, self.time_zone));
        let first_boundary = schedule.and_then(|s| s.next_after(self.clock.now()));
        let parts = Parts {
            consumer,
            control: control_rx,
            file,
            size,
            max_size: self.max_file_size,
            schedule,
            first_boundary,
            fsync: self.fsync,
            format: self.format,
            clock: self.clock.clone(),
            maintenance: Context {
                id: id.clone(),
                dir,
                naming,
                retention: self.retention,
                gzip_level: (self.compression == Compression::Gzip)
                    .then_some(self.compression_level),
                clock: self.clock,
                fs_fault: self.fs_fault,
                stop: Arc::default(),
                tail_cut: (tail_cut > 0)
                    .then(|| (active_path.to_string_lossy().into_owned(), tail_cut)),
            },
        };
        spawn_worker(&producer, line_writer::run(parts))?;
        Ok(FileSink::new(producer, control, active_path))
    }

    fn limits(&self) -> Limits {
        Limits {
            max_records: self.queue_capacity,
            max_bytes: self.queue_max_bytes,
            policy: self.overflow,
        }
    }

    fn validate(&self) -> Result<()> {
        check_name_part("file name prefix", &self.prefix)?;
        check_name_part("file extension", &self.extension)?;
        if let Some(name) = &self.name {
            if name.is_empty() {
                return Err(Error::config("the sink name is empty"));
            }
        }
        let positive = [
            ("max_file_size", self.max_file_size.is_some_and(|b| b == 0)),
            (
                "rotate_every",
                self.rotate_every.is_some_and(|d| d.is_zero()),
            ),
            ("max_files", self.retention.count == Some(0)),
            ("max_age", self.retention.age.is_some_and(|d| d.is_zero())),
            ("max_total_bytes", self.retention.bytes == Some(0)),
            ("queue_capacity", self.queue_capacity == 0),
            ("queue_max_bytes", self.queue_max_bytes == 0),
        ];
        if let Some((what, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(Error::config(format!("{what} must be greater than zero")));
        }
        if self.compression_level > 9 {
            let level = self.compression_level;
            return Err(Error::config(format!(
                "compression_level {level} is out of range: use 0 to 9"
            )));
        }
        Ok(())
    }
}

fn check_name_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::config(format!("the {what} is empty")));
    }
    if s.contains(['/', '\\', '\0']) || s.starts_with('.') || s.ends_with('.') {
        return Err(Error::config(format!(
            "the {what} {s:?} must not contain a path separator or NUL, nor start or end with '.'"
        )));
    }
    Ok(())
}

/// Cuts a torn last line off the active file (see `cut_torn_tail`); returns the bytes cut.
/// A file this process may append to but not read is left as it is (the check needs to
/// read it): that is not a reason to refuse to log.
fn repair_tail(path: &Path) -> Result<u64> {
    match cut_torn_tail(path) {
        Ok(cut) => Ok(cut),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(0),
        Err(e) => {
            let shown = path.display();
            Err(Error::io(
                format!("cannot cut the torn last line off {shown}; check this process may read and write it"),
                e,
            ))
        }
    }
}

/// Creates `dir` if needed, checks a file can be created in it, and makes it absolute so a
/// later change of working directory cannot move the sink's files.
fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    let shown = dir.display();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create the log directory {shown}"), e))?;
    let dir = std::path::absolute(dir)
        .map_err(|e| Error::io(format!("cannot resolve the log directory {shown}"), e))?;
    // Rotation creates and renames files: an append-only active file is not enough.
    let probe = dir.join(format!(".sinkwatch-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&probe)
        .map_err(|e| {
            let shown = dir.display();
            Error::io(
                format!("cannot create files in the log directory {shown}; check its permissions"),
                e,
            )
        })?;
    let _ = std::fs::remove_file(&probe);
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[allow(clippy::needless_pass_by_value, reason = "builders are used by value")]
    fn err(b: FileSinkBuilder) -> Error {
        b.validate().unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(FileSinkBuilder::new("x").validate().is_ok());
    }

    #[test]
    fn the_defaults_table_is_what_new_sets() {
        use crate::defaults::{assert_table, bytes, count, duration, policy, variant};
        let b = FileSinkBuilder::new("x");
        let limit = |set: bool| if set { "set" } else { "no limit" }.to_owned();
        // The system clock is the only one that reads the time of day.
        let off = b.clock.now().duration_since(std::time::SystemTime::now());
        let system = off.unwrap_or_else(|e| e.duration()) < Duration::from_secs(60);
        assert_table(
            include_str!("builder.rs"),
            &[
                ("file_name", format!("`{}`, `{}`", b.prefix, b.extension)),
                (
                    "name",
                    format!("`{}`", b.name.as_deref().unwrap_or(DEFAULT_NAME)),
                ),
                ("max_file_size", limit(b.max_file_size.is_some())),
                (
                    "rotate_every",
                    b.rotate_every.map_or("no time rotation".into(), duration),
                ),
                ("time_zone", variant("TimeZone", b.time_zone)),
                ("max_files", limit(b.retention.count.is_some())),
                ("max_age", limit(b.retention.age.is_some())),
                ("max_total_bytes", limit(b.retention.bytes.is_some())),
                ("compression", variant("Compression", b.compression)),
                ("compression_level", b.compression_level.to_string()),
                ("fsync", variant("FsyncPolicy", b.fsync)),
                ("format", variant("Format", b.format)),
                ("overflow", policy(b.overflow)),
                (
                    "queue_capacity",
                    format!("{} records", count(b.queue_capacity as u64)),
                ),
                ("queue_max_bytes", bytes(b.queue_max_bytes as u64)),
                ("drop_timeout", duration(b.drop_timeout)),
                (
                    "clock",
                    if system {
                        "[`SystemClock`](crate::SystemClock)"
                    } else {
                        "another clock"
                    }
                    .to_owned(),
                ),
            ],
        );
    }

    #[test]
    fn zero_limits_are_reported_by_name() {
        let e = err(FileSinkBuilder::new("x").max_file_size(0));
        assert!(
            e.kind() == ErrorKind::Config && e.to_string().contains("max_file_size"),
            "{e}"
        );
        let e = err(FileSinkBuilder::new("x").rotate_every(Duration::ZERO));
        assert!(e.to_string().contains("rotate_every"), "{e}");
        let e = err(FileSinkBuilder::new("x").max_files(0));
        assert!(e.to_string().contains("max_files"), "{e}");
    }

    #[test]
    fn bad_names_are_refused() {
        for (prefix, ext) in [
            ("", "log"),
            ("a/b", "log"),
            ("app", ""),
            ("app", ".log"),
            (".app", "log"),
        ] {
            assert!(
                err(FileSinkBuilder::new("x").file_name(prefix, ext)).kind() == ErrorKind::Config,
                "{prefix} {ext}"
            );
        }
    }

    #[test]
    fn compression_level_is_bounded() {
        let e = err(FileSinkBuilder::new("x").compression_level(10));
        assert!(e.to_string().contains("0 to 9"), "{e}");
    }

    #[test]
    fn a_directory_that_is_a_file_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let e = prepare_dir(&file.join("logs")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
