//! The writing side: appends into a buffer, one `write(2)` per commit, segments rolled
//! at their size, syncs as the policy says.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::fault::check;
use super::format::{self, segment_name, HEADER_LEN, MAX_BODY};
use super::{
    records, Active, AppendError, Broken, DiskBuffer, EntryView, FaultHook, Fsync, Op, Segment,
    Seq, Tally,
};

impl DiskBuffer {
    /// Appends an entry to the buffer (in memory until [`commit`](Self::commit)) and
    /// returns its sequence number. No syscall, except a `write(2)` and a file creation when
    /// a segment fills up; no allocation once the buffer has grown to a batch.
    ///
    /// # Errors
    ///
    /// [`AppendError::Full`] when the entry would take the buffer past its cap (nothing is
    /// appended; the worker applies its overflow policy), [`AppendError::TooLarge`] when it
    /// never could fit, [`AppendError::Io`] when a segment could not be rolled or the
    /// buffer stopped.
    pub(crate) fn append(
        &mut self,
        stream: &[u8],
        unix_nanos: i128,
        payload: &[u8],
    ) -> Result<Seq, AppendError> {
        let len = format::record_len(stream.len(), payload.len());
        if too_large(len, self.max_bytes) {
            return Err(AppendError::TooLarge);
        }
        self.usable()?;
        let roll = self.needs_roll(len);
        let grows = len as u64 + if roll { HEADER_LEN as u64 } else { 0 };
        if self.disk_bytes() + grows > self.max_bytes {
            return Err(AppendError::Full);
        }
        if roll {
            self.roll()?;
        }
        let (Some(active), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            unreachable!("a roll opens the active segment");
        };
        let seq = self.next_seq;
        format::encode(&mut active.buf, seq, stream, unix_nanos, payload);
        self.next_seq += 1;
        segment.end = self.next_seq;
        segment.live.add(len);
        self.live.add(len);
        self.unwritten.add(len);
        self.disk += len as u64;
        Ok(seq)
    }

    /// Writes what was appended since the last commit with one `write(2)`, and syncs as the
    /// [`Fsync`] policy says. Also checks (two `fstat`s) that the directory and the active
    /// segment are still there, and retries settlements and removals that failed before.
    ///
    /// # Errors
    ///
    /// The write's error (the entries stay buffered: a later commit writes them); the
    /// sync's; the first error of a settlement or removal since the last commit (they are
    /// retried); or the buffer stopped (its directory removed, see [`is_gone`](Self::is_gone)).
    pub(crate) fn commit(&mut self) -> io::Result<()> {
        self.usable()?;
        self.check_files()?;
        self.write_buffer()?;
        self.retry_deferred();
        self.sync_if_due(Instant::now())?;
        self.deferred.take().map_or(Ok(()), Err)
    }

    /// Takes back the entries appended since the last commit (they never reached the OS)
    /// and forgets them, calling `f` for each in order: for a worker that falls back to
    /// memory after a commit failed. Their sequence numbers are given out again.
    pub(crate) fn take_unwritten(&mut self, mut f: impl FnMut(EntryView<'_>)) -> Tally {
        let taken = std::mem::take(&mut self.unwritten);
        let (Some(active), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return taken;
        };
        let first = self.next_seq - taken.entries;
        for record in records(&active.buf) {
            let body = format::body(record);
            f(EntryView {
                seq: body.seq,
                stream: body.stream,
                unix_nanos: body.unix_nanos,
                payload: body.payload,
            });
        }
        active.buf.clear();
        segment.end = first;
        segment.live.sub(taken);
        self.live.sub(taken);
        self.disk -= taken.bytes;
        self.next_seq = first;
        taken
    }

    /// True when an entry of `len` bytes must go to a new segment.
    fn needs_roll(&self, len: usize) -> bool {
        match (&self.active, self.segments.back()) {
            (Some(active), Some(s)) => {
                let size = s.written + active.buf.len() as u64 + len as u64;
                s.end > s.first && size > self.segment_bytes
            }
            _ => true,
        }
    }

    /// Closes the active segment (writing its buffer) and starts a new one at `next_seq`.
    fn roll(&mut self) -> io::Result<()> {
        self.write_buffer()?;
        let first = self.next_seq;
        let (file, path) = create_segment(&self.dir, first, self.faults.as_ref())?;
        let buf = match self.active.take() {
            Some(old) => {
                if std::mem::take(&mut self.unsynced.active) {
                    self.unsynced.sealed.push(old.file);
                }
                old.buf
            }
            None => Vec::new(),
        };
        self.active = Some(Active { file, path, buf });
        self.segments.push_back(Segment {
            first,
            end: first,
            written: HEADER_LEN as u64,
            live: Tally::default(),
            verify: false,
        });
        self.disk += HEADER_LEN as u64;
        self.unsynced.dir = true;
        // The closed segment may be settled already.
        self.drop_settled_segments();
        Ok(())
    }

    /// Writes the active segment's buffer. A write that fails part-way is cut back, so the
    /// file ends on a whole record and the buffer can be written again.
    pub(super) fn write_buffer(&mut self) -> io::Result<()> {
        let (Some(active), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return Ok(());
        };
        if active.buf.is_empty() {
            return Ok(());
        }
        let faults = self.faults.as_ref();
        match write_all(&mut active.file, &active.buf, &active.path, faults) {
            (_, Ok(())) => {
                segment.written += active.buf.len() as u64;
                active.buf.clear();
                self.unwritten = Tally::default();
                self.unsynced.active = true;
                Ok(())
            }
            (written, Err(e)) => {
                if written > 0 && active.file.set_len(segment.written).is_err() {
                    self.broken = Some(Broken::Damaged);
                }
                Err(e)
            }
        }
    }

    /// Notices a removed directory (the buffer stops) or a removed active segment (its
    /// unsent entries are lost, and appends go on in a new segment).
    fn check_files(&mut self) -> io::Result<()> {
        if self.lock.is_gone() {
            self.broken = Some(Broken::Gone);
            return self.usable();
        }
        let removed = self.active.as_ref().is_some_and(|a| is_deleted(&a.file));
        if removed {
            self.lose_rest(self.segments.len() - 1);
        }
        Ok(())
    }

    /// Moves the entries not yet written to a new segment (the active one's file is gone
    /// or damaged), so what is committed next is readable. Call after `lose_rest` of the
    /// active segment.
    pub(super) fn rehome(&mut self) {
        let first = self.next_seq - self.unwritten.entries;
        let (Some(active), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            return;
        };
        // Nothing of it was written: start the same segment again.
        let restart = segment.first == first;
        if restart {
            let _ = std::fs::remove_file(&active.path);
        }
        let Ok((file, path)) = create_segment(&self.dir, first, self.faults.as_ref()) else {
            self.broken = Some(Broken::Damaged);
            return;
        };
        (active.file, active.path) = (file, path);
        self.unsynced.active = false;
        self.unsynced.dir = true;
        self.disk += HEADER_LEN as u64;
        if restart {
            self.disk -= segment.written;
            segment.written = HEADER_LEN as u64;
            // A reader waiting at its start holds the old file.
            if self
                .cursor
                .at
                .as_ref()
                .is_some_and(|at| at.segment == first)
            {
                self.cursor.at = None;
            }
            return;
        }
        let moved = self.unwritten;
        segment.end = first;
        segment.live.sub(moved);
        self.segments.push_back(Segment {
            first,
            end: self.next_seq,
            written: HEADER_LEN as u64,
            live: moved,
            verify: false,
        });
        // The old segment keeps its entries in flight until they settle.
        self.drop_settled_segments();
    }

    /// Syncs if the policy says it is time.
    fn sync_if_due(&mut self, now: Instant) -> io::Result<()> {
        let due = match self.fsync {
            Fsync::EveryCommit => true,
            Fsync::Interval(every) => now.saturating_duration_since(self.unsynced.last) >= every,
        };
        if due {
            self.sync_now()?;
            self.unsynced.last = now;
        }
        Ok(())
    }

    /// Syncs every file written since its last sync, the settlement log and the directory.
    pub(super) fn sync_now(&mut self) -> io::Result<()> {
        while let Some(file) = self.unsynced.sealed.last() {
            check(self.faults.as_ref(), Op::Sync, &self.dir)?;
            file.sync_data()?;
            self.unsynced.sealed.pop();
        }
        if let Some(active) = self.active.as_ref().filter(|_| self.unsynced.active) {
            check(self.faults.as_ref(), Op::Sync, &active.path)?;
            active.file.sync_data()?;
            self.unsynced.active = false;
        }
        self.acks.sync()?;
        if std::mem::take(&mut self.unsynced.dir) {
            super::sync_dir(&self.dir);
        }
        Ok(())
    }
}

/// True when the open file has no name left (deleted). One `fstat`.
#[cfg(unix)]
fn is_deleted(file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    file.metadata().is_ok_and(|m| m.nlink() == 0)
}

// Elsewhere a removed segment is noticed when it is read.
#[cfg(not(unix))]
fn is_deleted(_file: &std::fs::File) -> bool {
    false
}

/// `write_all` that says how far it got, and lets the fault hook shorten or fail it.
pub(super) fn write_all(
    file: &mut File,
    buf: &[u8],
    path: &Path,
    faults: Option<&FaultHook>,
) -> (usize, io::Result<()>) {
    let allowed = match check(faults, Op::Write { len: buf.len() }, path) {
        Ok(n) => n,
        Err(e) => return (0, Err(e)),
    };
    let mut written = 0;
    while written < allowed {
        match file.write(&buf[written..allowed]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (written, Err(e)),
        }
    }
    if written < buf.len() {
        let e = io::Error::new(io::ErrorKind::WriteZero, "the disk accepted no more bytes");
        return (written, Err(e));
    }
    (written, Ok(()))
}

/// Creates the segment file for `first` in `dir` and writes its header.
fn create_segment(
    dir: &Path,
    first: Seq,
    faults: Option<&FaultHook>,
) -> io::Result<(File, PathBuf)> {
    let path = dir.join(segment_name(first));
    check(faults, Op::Create, &path)?;
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)?;
    if let (_, Err(e)) = write_all(&mut file, &format::header(first), &path, faults) {
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

/// True when the longest body the cap allows is exceeded.
fn too_large(len: usize, max_bytes: u64) -> bool {
    len - format::FRAME_LEN > MAX_BODY || (len + HEADER_LEN) as u64 > max_bytes
}
