//! The open active file: append-only writes that report how much reached the OS, the
//! identity check that notices the file was deleted or moved under the sink, and the
//! start-up check that cuts off a line torn by a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fault::{check, FaultHook, FsFaultHook, FsOp};

/// The active file, opened for appending.
pub(crate) struct ActiveFile {
    file: File,
    path: PathBuf,
    identity: Identity,
    fault: Option<FaultHook>,
    fs_fault: Option<FsFaultHook>,
}

/// What makes a file the same file: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    #[cfg(unix)]
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    // Elsewhere only a missing file is noticed.
    #[cfg(not(unix))]
    fn of(_meta: &std::fs::Metadata) -> Self {
        Identity { dev: 0, ino: 0 }
    }
}

impl ActiveFile {
    /// Opens (creating if needed) `path` for appending; also returns its current size.
    pub(crate) fn open(path: &Path, fault: Option<FaultHook>) -> io::Result<(Self, u64)> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let meta = file.metadata()?;
        let active = ActiveFile {
            file,
            path: path.to_owned(),
            identity: Identity::of(&meta),
            fault,
            fs_fault: None,
        };
        Ok((active, meta.len()))
    }

    /// Puts `hook` in front of this file's syncs (kept across reopening).
    pub(crate) fn with_fs_fault(mut self, hook: Option<FsFaultHook>) -> Self {
        self.fs_fault = hook;
        self
    }

    /// Reopens the same path, keeping the fault hooks.
    pub(crate) fn reopen(&self) -> io::Result<(Self, u64)> {
        if let Some(dir) = self.path.parent() {
            // The whole directory may have been removed with the file.
            std::fs::create_dir_all(dir)?;
        }
        let (file, size) = Self::open(&self.path, self.fault.clone())?;
        Ok((file.with_fs_fault(self.fs_fault.clone()), size))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// True when the path no longer leads to the file this handle has open (deleted, or
    /// moved and perhaps replaced). One `stat`, so cheap enough to run once per batch.
    pub(crate) fn is_replaced(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(meta) => Identity::of(&meta) != self.identity,
            Err(_) => true,
        }
    }

    /// True when the open file has no name left (deleted): what is written to it is lost.
    /// One `fstat`.
    #[cfg(unix)]
    pub(crate) fn is_deleted(&self) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        self.file.metadata().is_ok_and(|m| m.nlink() == 0)
    }

    // Elsewhere the next batch's identity check notices a missing file.
    #[cfg(not(unix))]
    pub(crate) fn is_deleted(&self) -> bool {
        false
    }

    /// Writes `buf`, returning how many bytes reached the OS, and the error that stopped
    /// the write if it did not complete.
    pub(crate) fn write(&mut self, buf: &[u8]) -> (usize, io::Result<()>) {
        let mut target = Target {
            file: &mut self.file,
            fault: self.fault.as_ref(),
        };
        write_counting(&mut target, buf)
    }

    /// Cuts the file back to `len` bytes (to remove a line torn by a failed write).
    pub(crate) fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    /// Flushes the file's data to the device.
    pub(crate) fn sync(&self) -> io::Result<()> {
        check(self.fs_fault.as_ref(), FsOp::Sync, &self.path)?;
        self.file.sync_data()
    }
}

/// How far back [`cut_torn_tail`] reads at a time.
const TAIL_CHUNK: u64 = 64 * 1024;

/// Cuts a torn last line off the file at `path`: when the file is not empty and does not
/// end with `\n` (the process was killed inside a `write(2)`), truncates it to just after
/// its last `\n`, or to nothing if it has none. Returns the bytes cut: 0 when the file is
/// missing, empty or whole.
///
/// Run at start-up, before the file is opened for appending, so the first new record
/// starts on a line of its own instead of being glued to the torn one.
pub(crate) fn cut_torn_tail(path: &Path) -> io::Result<u64> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let keep = whole_lines_len(&mut file, len)?;
    if keep < len {
        file.set_len(keep)?;
    }
    Ok(len - keep)
}

/// The length of `file`'s first `len` bytes up to and including the last `\n` (0 if none).
fn whole_lines_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut end = len;
    let mut chunk = vec![0; usize::try_from(TAIL_CHUNK.min(len)).unwrap_or(0)];
    while end > 0 {
        let start = end.saturating_sub(TAIL_CHUNK);
        let part = &mut chunk[..usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(part)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

struct Target<'a> {
    file: &'a mut File,
    fault: Option<&'a FaultHook>,
}

impl Write for Target<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let allowed = match self.fault {
            Some(hook) => hook(buf.len())?.min(buf.len()),
            None => buf.len(),
        };
        if allowed == 0 && !buf.is_empty() {
            return Ok(0);
        }
        self.file.write(&buf[..allowed])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `write_all` that also says how far it got: the caller must know which lines reached
/// the file when a write fails half-way.
pub(crate) fn write_counting(w: &mut impl Write, buf: &[u8]) -> (usize, io::Result<()>) {
    let mut written = 0;
    while written < buf.len() {
        match w.write(&buf[written..]) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::WriteZero, "the file accepted no more bytes");
                return (written, Err(e));
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    (written, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Accepts `budget` bytes, at most `chunk` per call, then fails.
    struct Quota {
        out: Vec<u8>,
        budget: usize,
        chunk: usize,
    }

    impl Write for Quota {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.budget).min(self.chunk);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_are_continued() {
        let mut q = Quota {
            out: Vec::new(),
            budget: 100,
            chunk: 3,
        };
        let (n, r) = write_counting(&mut q, b"0123456789");
        assert_eq!((n, r.is_ok()), (10, true));
        assert_eq!(q.out, b"0123456789");
    }

    #[test]
    fn a_failure_reports_how_far_the_write_got() {
        let mut q = Quota {
            out: Vec::new(),
            budget: 7,
            chunk: 4,
        };
        let (n, r) = write_counting(&mut q, b"0123456789");
        assert_eq!(n, 7);
        assert_eq!(r.unwrap_err().to_string(), "disk full");
    }

    #[test]
    fn the_fault_hook_can_fail_or_shorten_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let hook: FaultHook = Arc::new(|len| {
            if len > 4 {
                Ok(4)
            } else {
                Err(io::Error::other("full"))
            }
        });
        let (mut f, size) = ActiveFile::open(&path, Some(hook)).unwrap();
        assert_eq!(size, 0);
        let (n, r) = f.write(b"abcdefgh");
        assert_eq!((n, r.unwrap_err().to_string()), (4, "full".to_string()));
        assert_eq!(std::fs::read(&path).unwrap(), b"abcd");
    }

    fn cut(content: &[u8]) -> (u64, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, content).unwrap();
        let n = cut_torn_tail(&path).unwrap();
        (n, std::fs::read(&path).unwrap())
    }

    #[test]
    fn a_whole_file_is_left_alone() {
        assert_eq!(cut(b"one\ntwo\n"), (0, b"one\ntwo\n".to_vec()));
    }

    #[test]
    fn an_empty_or_missing_file_is_left_alone() {
        assert_eq!(cut(b""), (0, Vec::new()));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(cut_torn_tail(&dir.path().join("none.log")).unwrap(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_torn_last_line_is_cut_after_the_last_newline() {
        assert_eq!(cut(b"one\ntwo\n{\"tor"), (5, b"one\ntwo\n".to_vec()));
    }

    #[test]
    fn a_file_without_any_newline_is_cut_to_nothing() {
        assert_eq!(cut(b"{\"torn"), (6, Vec::new()));
    }

    #[test]
    fn a_torn_line_longer_than_a_chunk_is_cut_whole() {
        let mut content = b"whole\n".to_vec();
        content.resize(content.len() + 3 * 64 * 1024 + 17, b'x');
        let torn = content.len() as u64 - 6;
        assert_eq!(cut(&content), (torn, b"whole\n".to_vec()));
        // A newline exactly at a chunk's edge.
        let mut content = vec![b'y'; 64 * 1024 - 1];
        content.push(b'\n');
        content.resize(content.len() + 64 * 1024, b'z');
        let (n, left) = cut(&content);
        assert_eq!((n, left.len()), (64 * 1024, 64 * 1024));
    }

    #[test]
    fn replacement_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let (f, _) = ActiveFile::open(&path, None).unwrap();
        assert!(!f.is_replaced());
        std::fs::rename(&path, dir.path().join("b.log")).unwrap();
        assert!(f.is_replaced());
        std::fs::write(&path, "new").unwrap();
        assert!(f.is_replaced());
        let (g, size) = f.reopen().unwrap();
        assert_eq!(size, 3);
        assert!(!g.is_replaced());
    }
}
