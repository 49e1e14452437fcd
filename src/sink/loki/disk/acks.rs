//! The settlement log, `dir/acks`: one line per settled range, appended with one
//! `write(2)` per settlement, and rewritten whole (`acks.tmp`, fsync, rename, as the file
//! sink's compression does) when it grows past a threshold.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::OpenError;
use super::fault::{check, FaultHook, Op};
use super::format::{self, ACKS_MAGIC, VERSION};
use super::ranges::RangeSet;
use super::sync_dir;

/// The settlement log's name in the buffer's directory.
pub(super) const ACKS: &str = "acks";
/// The name a compaction writes before renaming it over [`ACKS`].
pub(super) const ACKS_TMP: &str = "acks.tmp";

/// What reading the log at open found.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) settled: RangeSet,
    /// Bytes of a torn last line cut off.
    pub(super) cut: u64,
    /// Damaged lines skipped: settlements lost, whose entries may be handed out again.
    pub(super) damaged: u64,
}

/// The open settlement log.
pub(super) struct Acks {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    len: u64,
    buf: Vec<u8>,
    /// A write failed part-way and its tail may still be there: the next write starts
    /// with a newline, so the fragment is a damaged line of its own, not glued to a good one.
    fragment: bool,
    /// Written since the last sync.
    dirty: bool,
    /// A compaction renamed the new log into place but could not open it: the handle is
    /// the old, unlinked file, and must be replaced before the next append.
    stale: bool,
    faults: Option<FaultHook>,
}

impl Acks {
    /// Reads `dir/acks` (removing a compaction's leftover `acks.tmp` and cutting a torn
    /// last line), and opens it for appending.
    pub(super) fn open(dir: &Path, faults: Option<FaultHook>) -> Result<(Acks, Loaded), OpenError> {
        let path = dir.join(ACKS);
        let tmp = dir.join(ACKS_TMP);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(OpenError::io("remove", tmp)(e));
            }
            _ => {}
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(OpenError::io("read", path)(e)),
        };
        let (loaded, whole) = parse(&bytes).map_err(|version| OpenError::Version {
            path: path.clone(),
            version,
        })?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(OpenError::io("open", &path))?;
        if whole < bytes.len() {
            file.set_len(whole as u64)
                .map_err(OpenError::io("repair", &path))?;
        }
        let acks = Acks {
            file,
            path,
            dir: dir.to_owned(),
            len: whole as u64,
            buf: Vec::new(),
            fragment: false,
            dirty: false,
            stale: false,
            faults,
        };
        Ok((acks, loaded))
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The log's size in bytes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Appends `ranges` with one `write(2)`. On failure nothing is known to be written.
    pub(super) fn append(&mut self, ranges: &[Range<u64>]) -> io::Result<()> {
        self.buf.clear();
        if self.len == 0 {
            self.buf.extend_from_slice(format::acks_header().as_bytes());
        }
        if self.fragment {
            self.buf.push(b'\n');
        }
        for r in ranges {
            format::ack_line(&mut self.buf, r);
        }
        check(self.faults.as_ref(), Op::Ack, &self.path)?;
        if self.stale {
            self.file = OpenOptions::new().append(true).open(&self.path)?;
            self.stale = false;
        }
        if let Err(e) = (&self.file).write_all(&self.buf) {
            // Cut what part of it went through; if that fails too, isolate it.
            self.fragment = self.file.set_len(self.len).is_err();
            return Err(e);
        }
        self.fragment = false;
        self.len += self.buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Rewrites the log to hold just `settled`: `acks.tmp` is written and synced, then
    /// renamed over the log, and the directory synced. A failure leaves the old log whole.
    pub(super) fn compact(&mut self, settled: &RangeSet) -> io::Result<()> {
        let tmp = self.dir.join(ACKS_TMP);
        self.buf.clear();
        self.buf.extend_from_slice(format::acks_header().as_bytes());
        for r in settled.ranges() {
            format::ack_line(&mut self.buf, r);
        }
        let written = check(self.faults.as_ref(), Op::Compact, &tmp).and_then(|_| {
            let mut f = File::create(&tmp)?;
            f.write_all(&self.buf)?;
            f.sync_data()
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.dir);
        self.len = self.buf.len() as u64;
        // The old file is gone from the directory: append to the new one.
        match OpenOptions::new().append(true).open(&self.path) {
            Ok(file) => self.file = file,
            Err(e) => {
                self.stale = true;
                return Err(e);
            }
        }
        self.len = self.buf.len() as u64;
        self.fragment = false;
        self.dirty = false;
        Ok(())
    }

    /// Syncs what was appended since the last sync.
    pub(super) fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            check(self.faults.as_ref(), Op::Sync, &self.path)?;
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Reads a settlement log: what it settles, and how many of its bytes are whole lines (a
/// torn last line is not). `Err` with the version if it is another version's log.
fn parse(bytes: &[u8]) -> Result<(Loaded, usize), u8> {
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut loaded = Loaded {
        cut: (bytes.len() - whole) as u64,
        ..Loaded::default()
    };
    let mut lines = bytes[..whole].split(|&b| b == b'\n');
    lines.next_back(); // the empty piece after the last newline
    match lines.next().map(header_version) {
        None | Some(Some(VERSION)) => {}
        Some(Some(other)) => return Err(other),
        // Not a header: every line is suspect, and none is trusted.
        Some(None) => {
            loaded.damaged = 1 + lines.count() as u64;
            return Ok((loaded, whole));
        }
    }
    for line in lines {
        match format::parse_ack_line(line) {
            Some(r) => loaded.settled.insert(r),
            None if line.is_empty() => {}
            None => loaded.damaged += 1,
        }
    }
    Ok((loaded, whole))
}

/// The version a header line names, or `None` if the line is not a header.
fn header_version(line: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(line).ok()?;
    let (magic, version) = text.split_once(' ')?;
    (magic == ACKS_MAGIC).then(|| version.parse().ok())?
}

#[cfg(test)]
// One range of sequence numbers, not a vector of numbers.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    fn log(ranges: &[Range<u64>]) -> Vec<u8> {
        let mut v = format::acks_header().into_bytes();
        for r in ranges {
            format::ack_line(&mut v, r);
        }
        v
    }

    #[test]
    fn an_empty_or_missing_log_settles_nothing() {
        let (l, whole) = parse(b"").unwrap();
        assert_eq!((l.settled.len(), l.cut, l.damaged, whole), (0, 0, 0, 0));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_the_rest_kept() {
        let mut v = log(&[0..5, 9..12]);
        let whole_len = v.len();
        v.extend_from_slice(b"12 1");
        let (l, whole) = parse(&v).unwrap();
        assert_eq!(whole, whole_len);
        assert_eq!(l.cut, 4);
        assert_eq!(l.settled.ranges(), [0..5, 9..12]);
    }

    #[test]
    fn a_damaged_line_is_skipped_and_counted() {
        let mut v = log(&[0..5]);
        v.extend_from_slice(b"5 9 deadbeef\n\n");
        format::ack_line(&mut v, &(20..30));
        let (l, _) = parse(&v).unwrap();
        assert_eq!(l.damaged, 1);
        assert_eq!(l.settled.ranges(), [0..5, 20..30]);
    }

    #[test]
    fn another_version_is_refused() {
        assert_eq!(parse(b"SWACKS 9\n").err(), Some(9));
    }

    #[test]
    fn a_log_without_a_header_trusts_nothing() {
        let mut v = Vec::new();
        format::ack_line(&mut v, &(0..5));
        let (l, _) = parse(&v).unwrap();
        assert_eq!((l.settled.len(), l.damaged), (0, 1));
    }

    #[test]
    fn appends_and_compaction_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut a, l) = Acks::open(dir.path(), None).unwrap();
        assert_eq!(l.settled.len(), 0);
        a.append(&[0..3, 7..9]).unwrap();
        a.append(&[3..7]).unwrap();
        let before = a.len();
        drop(a);
        let (mut a, l) = Acks::open(dir.path(), None).unwrap();
        assert_eq!(l.settled.ranges(), [0..9]);
        assert_eq!(a.len(), before);
        a.compact(&l.settled).unwrap();
        assert!(a.len() < before);
        a.append(&[20..21]).unwrap();
        drop(a);
        let (_a, l) = Acks::open(dir.path(), None).unwrap();
        assert_eq!(l.settled.ranges(), [0..9, 20..21]);
        assert!(!dir.path().join(ACKS_TMP).exists());
    }

    #[test]
    fn a_leftover_tmp_is_removed_and_the_log_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(ACKS), log(&[0..4])).unwrap();
        std::fs::write(dir.path().join(ACKS_TMP), b"SWACKS 1\n0 1").unwrap();
        let (_a, l) = Acks::open(dir.path(), None).unwrap();
        assert_eq!(l.settled.ranges(), [0..4]);
        assert!(!dir.path().join(ACKS_TMP).exists());
    }
}
