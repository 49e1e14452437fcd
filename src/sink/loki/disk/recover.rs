//! Start-up: reading every segment once, cutting what a crash tore, and finding what is
//! still to be delivered.
//!
//! Repairs follow the file sink's rule: a torn tail is cut and reported, never a reason
//! to refuse to start. What cannot be read any more is settled (so it is reported lost
//! once, not at every start) and counted in [`Recovered::lost`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::acks::Acks;
use super::format::{self, Header, HEADER_LEN};
use super::lock::DirLock;
use super::ranges::RangeSet;
use super::reader::{Reader, Step};
use super::{
    Cursor, DiskBuffer, OpenError, Options, Recovered, Repaired, Segment, Tally, Unsynced,
    COMPACT_AT, SEGMENT_BYTES,
};

impl DiskBuffer {
    /// Opens (creating if needed) the buffer in `opts.dir`: takes the directory's lock,
    /// reads every segment once (in large chunks), cuts torn tails, and rewrites the
    /// settlement log. What is unsettled is handed out first by `next_batch`.
    ///
    /// # Errors
    ///
    /// [`OpenError::Locked`] when another buffer holds the directory, naming it;
    /// [`OpenError::Version`] for files of another format version (nothing is changed);
    /// [`OpenError::Io`] when the directory cannot be created, read or written.
    pub(crate) fn open(opts: Options) -> Result<(DiskBuffer, Recovered), OpenError> {
        let dir = opts.dir;
        std::fs::create_dir_all(&dir).map_err(OpenError::io("create", &dir))?;
        let lock = DirLock::acquire(&dir)?;
        let files = list(&dir)?;
        check_versions(&files)?;
        let (acks, loaded) = Acks::open(&dir, opts.faults.clone())?;
        let mut settled = loaded.settled;
        let mut recovered = Recovered {
            lost_settlements: loaded.damaged,
            ..Recovered::default()
        };
        if loaded.cut > 0 {
            recovered.repaired.push(Repaired {
                path: acks.path().to_owned(),
                bytes_cut: loaded.cut,
            });
        }
        let segments = recover(&files, &mut settled, &mut recovered)?;
        // Past every settled number too: after a power loss the log may be ahead of the data.
        let next_seq = segments.back().map_or(0, |s| s.end).max(settled.max_end());
        let live = Tally {
            entries: recovered.entries,
            bytes: recovered.bytes,
        };
        let disk = segments.iter().map(|s| s.written).sum();
        let segment_bytes = opts.segment_bytes.unwrap_or(opts.max_bytes / 8);
        let mut buffer = DiskBuffer {
            max_bytes: opts.max_bytes,
            segment_bytes: segment_bytes.clamp(SEGMENT_BYTES.0, SEGMENT_BYTES.1),
            compact_at: (opts.max_bytes / 64).clamp(COMPACT_AT.0, COMPACT_AT.1),
            fsync: opts.fsync,
            faults: opts.faults,
            lock,
            acks,
            cursor: Cursor {
                seq: segments.front().map_or(next_seq, |s| s.first),
                at: None,
            },
            segments,
            active: None,
            next_seq,
            settled,
            ledger: VecDeque::new(),
            live,
            in_flight: Tally::default(),
            unwritten: Tally::default(),
            disk,
            doomed: Vec::new(),
            unacked: Vec::new(),
            lost: 0,
            deferred: None,
            unsynced: Unsynced {
                last: Instant::now(),
                active: false,
                sealed: Vec::new(),
                dir: false,
            },
            broken: None,
            scratch: Vec::new(),
            dir,
        };
        if let Some(bytes) = opts.segment_bytes {
            // An explicit size is taken as given, within what a header and a record need.
            buffer.segment_bytes = bytes.max(HEADER_LEN as u64 + 1);
        }
        buffer.drop_settled_segments();
        buffer
            .compact()
            .map_err(OpenError::io("rewrite", buffer.acks.path()))?;
        if let Some(e) = buffer.deferred.take() {
            return Err(OpenError::io("clean up", &buffer.dir)(e));
        }
        Ok((buffer, recovered))
    }
}

/// The segment files in `dir`, by first sequence number. Other files (and anything that
/// is not a regular file) are left alone.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OpenError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(OpenError::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(OpenError::io("list", dir))?;
        let Some(first) = entry
            .file_name()
            .to_str()
            .and_then(format::parse_segment_name)
        else {
            continue;
        };
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push((first, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// Refuses files of another format version before anything in the directory is changed.
pub(super) fn check_versions(files: &[(u64, PathBuf)]) -> Result<(), OpenError> {
    for (_, path) in files {
        if let Header::Version(version) = read_header(path).map_err(OpenError::io("read", path))? {
            return Err(OpenError::Version {
                path: path.clone(),
                version,
            });
        }
    }
    Ok(())
}

/// Scans and repairs every segment in `files`: what is still to deliver, with every
/// repair and loss added to `out` and every lost entry added to `settled`.
pub(super) fn recover(
    files: &[(u64, PathBuf)],
    settled: &mut RangeSet,
    out: &mut Recovered,
) -> Result<VecDeque<Segment>, OpenError> {
    let mut segments = VecDeque::new();
    for (k, (first, path)) in files.iter().enumerate() {
        let first = *first;
        // A sealed segment holds the numbers up to the next one's first.
        let next = files.get(k + 1).map(|(f, _)| *f);
        let scan = scan(path, first, next, settled).map_err(OpenError::io("read", path))?;
        if !scan.header_ok {
            // Torn at its creation (the last segment), or damaged: nothing in it is readable.
            std::fs::remove_file(path).map_err(OpenError::io("remove", path))?;
            repaired(out, path, scan.file_len);
            if let Some(next) = next {
                lose(settled, out, first..next);
            }
            continue;
        }
        if scan.valid_len < scan.file_len {
            truncate(path, scan.valid_len).map_err(OpenError::io("repair", path))?;
            repaired(out, path, scan.file_len - scan.valid_len);
        }
        for gap in scan.gaps {
            lose(settled, out, gap);
        }
        if let Some(next) = next {
            lose(settled, out, scan.end..next);
        }
        out.entries += scan.live.entries;
        out.bytes += scan.live.bytes;
        out.oldest_unix_nanos = match (out.oldest_unix_nanos, scan.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        segments.push_back(Segment {
            first,
            end: scan.end,
            written: scan.valid_len,
            live: scan.live,
            verify: scan.damaged,
        });
    }
    Ok(segments)
}

/// Settles `range` as lost, counting the entries in it that were not settled already.
fn lose(settled: &mut RangeSet, out: &mut Recovered, range: Range<u64>) {
    if range.is_empty() {
        return;
    }
    out.lost += settled.count_gaps_in(range.clone());
    settled.insert(range);
}

fn repaired(out: &mut Recovered, path: &Path, bytes_cut: u64) {
    if bytes_cut > 0 {
        out.repaired.push(Repaired {
            path: path.to_owned(),
            bytes_cut,
        });
    }
}

/// What one segment holds.
#[derive(Debug, Default)]
struct Scan {
    header_ok: bool,
    file_len: u64,
    /// One past the last good record's number (`first` if there is none).
    end: u64,
    /// Where the last good record ends: what follows (a torn record, damage) is cut.
    valid_len: u64,
    /// Unsettled good entries.
    live: Tally,
    oldest: Option<i128>,
    /// Numbers between good records that no good record holds: records that fail their
    /// checksum.
    gaps: Vec<Range<u64>>,
    /// Records failing their checksum were found.
    damaged: bool,
}

/// Reads a segment once, in large chunks. Its records must carry increasing numbers from
/// `first`, below `next` (the next segment's first) if there is one; a record that does
/// not is where the damage starts.
fn scan(path: &Path, first: u64, next: Option<u64>, settled: &RangeSet) -> io::Result<Scan> {
    let file_len = std::fs::metadata(path)?.len();
    let mut scan = Scan {
        file_len,
        end: first,
        valid_len: HEADER_LEN as u64,
        ..Scan::default()
    };
    if read_header(path)? != Header::Good(first) {
        return Ok(scan);
    }
    scan.header_ok = true;
    let mut reader = Reader::open(path, HEADER_LEN as u64, true)?;
    loop {
        match reader.peek(file_len)? {
            Step::Record { len } => {
                let body = format::body(reader.record(len));
                let seq = body.seq;
                if seq < scan.end || next.is_some_and(|n| seq >= n) {
                    break;
                }
                if seq > scan.end {
                    scan.gaps.push(scan.end..seq);
                }
                if !settled.contains(seq) {
                    scan.live.add(len);
                    let t = body.unix_nanos;
                    scan.oldest = Some(scan.oldest.map_or(t, |o| o.min(t)));
                }
                scan.end = seq + 1;
                reader.advance(len);
                scan.valid_len = reader.pos();
            }
            Step::Corrupt { len } => {
                scan.damaged = true;
                reader.advance(len);
            }
            Step::End | Step::Damaged => break,
        }
    }
    Ok(scan)
}

/// The header of the segment at `path` (`Bad` if the file is shorter than one).
fn read_header(path: &Path) -> io::Result<Header> {
    let mut h = [0; HEADER_LEN];
    let mut file = File::open(path)?;
    let mut got = 0;
    while got < HEADER_LEN {
        match file.read(&mut h[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(format::parse_header(&h[..got]))
}

fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_data()
}
