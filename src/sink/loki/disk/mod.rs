//! The Loki sink's disk buffer: a write-ahead log of entries, kept until they are settled
//! (delivered, or dropped for good), so that what a process accepted survives its restart
//! or crash (issue 15).
//!
//! The worker appends entries in order ([`DiskBuffer::append`]), commits once per batch
//! ([`commit`](DiskBuffer::commit): one `write(2)`, an `fsync` as the [`Fsync`] policy
//! says), takes them back in order to push ([`next_batch`](DiskBuffer::next_batch)), and
//! settles ranges of sequence numbers in any order as requests finish
//! ([`settle`](DiskBuffer::settle)). [`open`](DiskBuffer::open) recovers what an earlier
//! process left: every committed, unsettled entry, in order.
//!
//! # Format (version 1)
//!
//! A directory holds one buffer (an exclusive `flock` on `dir/lock`, whose text names the
//! holder: pid, host, start time). All integers are little-endian.
//!
//! - **Segments** `dir/<first seq, 20 digits>.seg`: a 24-byte header (the magic
//!   `SWBUFSEG`, the version byte `1`, three zero bytes, the first record's sequence number
//!   as a u64, the CRC-32 of those 20 bytes), then records: `u32 length | u32 CRC-32 of the
//!   body | body`. The body is the entry's sequence number (`u64`), its timestamp (`i64`
//!   seconds and `u32` nanoseconds since the Unix epoch), its stream (`u32` length, then the
//!   label set's text) and its payload (the rest: the encoded entry, opaque here): 32 bytes
//!   of framing per entry. Numbers increase through a segment and from one segment to the
//!   next (gaps are numbers settled or lost). A segment is closed at about `segment_bytes`
//!   (by default an eighth of the cap, between 16 KiB and 8 MiB) and removed once every
//!   entry in it is settled.
//! - **The settlement log** `dir/acks`: a line `SWACKS 1`, then one line per settled range,
//!   `start end crc` (decimal, end exclusive, `crc` the CRC-32 in 8 hex digits of the text
//!   `start end`), written with one `write(2)` as each settlement arrives. Past a size
//!   (1/64 of the cap, between 4 KiB and 1 MiB) it is rewritten to the few ranges that still
//!   matter: `acks.tmp`, fsync, rename over `acks`, fsync of the directory.
//!
//! # Crash semantics (kill -9)
//!
//! What [`commit`](DiskBuffer::commit) wrote is in the OS and survives the process; only
//! entries appended since the last commit are lost. A settlement is written before
//! `settle` returns, and [`next_batch`](DiskBuffer::next_batch) hands out only written
//! entries, so no settled entry is ever handed out again; entries handed out and not yet
//! settled at the crash are handed out again (at-least-once). At open, a torn record at a
//! segment's end, a torn last line of the log and a segment torn at its creation are cut
//! and reported ([`Recovered::repaired`]); a record failing its checksum, or the rest of a
//! segment after damage, is settled as lost and counted once ([`Recovered::lost`]). A
//! file of another format version stops the open and is left untouched.
//!
//! Against power loss, the `fsync` policy bounds what is lost; settled sequence numbers are
//! never reused even if data written before them was lost (new entries start past the
//! highest settled one).
//!
//! # Faults
//!
//! No call panics on an I/O error. A failed write is cut back to the last whole record
//! and its entries stay buffered, to be written by the next commit (or taken back with
//! [`take_unwritten`](DiskBuffer::take_unwritten)). A settlement or a removal that fails is
//! kept in memory, retried at each commit, and reported by the next commit. A segment
//! removed or damaged under the buffer loses its unsent entries, counted by
//! [`take_lost`](DiskBuffer::take_lost). A removed directory stops the buffer
//! ([`is_gone`](DiskBuffer::is_gone)): its unsent entries ([`Backlog::unsent`]) are lost,
//! and a new [`open`](DiskBuffer::open) starts afresh.

mod acks;
mod error;
mod fault;
mod format;
mod lock;
mod ranges;
mod read;
mod reader;
mod recover;
mod settle;
#[cfg(test)]
mod tests;
mod write;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub(crate) use error::{AppendError, OpenError};
pub(crate) use fault::{FaultHook, Op};

use acks::Acks;
use format::Frame;
use lock::DirLock;
use ranges::RangeSet;
use reader::Reader;

/// An entry's sequence number: its place in the order of appends, never reused.
pub(crate) type Seq = u64;

/// The smallest and largest default segment size.
const SEGMENT_BYTES: (u64, u64) = (16 * 1024, 8 * 1024 * 1024);
/// The smallest and largest size at which the settlement log is rewritten.
const COMPACT_AT: (u64, u64) = (4 * 1024, 1024 * 1024);
/// How often data is synced by default under [`Fsync::Interval`].
pub(crate) const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// When committed data is synced to the device. Either way a kill -9 loses only what was
/// not committed; this bounds what a power loss can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fsync {
    /// At every commit.
    EveryCommit,
    /// At the first commit at least this long after the last sync.
    Interval(Duration),
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Interval(DEFAULT_FSYNC_INTERVAL)
    }
}

/// How to open a buffer.
#[derive(Clone)]
pub(crate) struct Options {
    /// The buffer's directory (created if missing).
    pub(crate) dir: PathBuf,
    /// The most bytes the segments and the settlement log may take together.
    pub(crate) max_bytes: u64,
    /// The size at which a segment is closed; `None` for an eighth of `max_bytes`, within
    /// 16 KiB to 8 MiB.
    pub(crate) segment_bytes: Option<u64>,
    /// When to `fsync`.
    pub(crate) fsync: Fsync,
    /// Fault injection, for tests.
    pub(crate) faults: Option<FaultHook>,
}

impl Options {
    /// A buffer in `dir` of at most `max_bytes`, with default segments and fsync policy.
    pub(crate) fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Options {
            dir: dir.into(),
            max_bytes,
            segment_bytes: None,
            fsync: Fsync::default(),
            faults: None,
        }
    }
}

/// A count of entries and of the bytes their records take (frame included: the stream,
/// the payload and 32 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

impl Tally {
    fn add(&mut self, len: usize) {
        self.entries += 1;
        self.bytes += len as u64;
    }

    fn sub(&mut self, other: Tally) {
        self.entries -= other.entries;
        self.bytes -= other.bytes;
    }

    fn plus(self, other: Tally) -> Tally {
        Tally {
            entries: self.entries + other.entries,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// The unsettled entries, by where they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backlog {
    /// Appended and not yet written (by a commit, or a segment filling up): in memory only.
    pub(crate) unwritten: Tally,
    /// Written, not yet handed out: on disk (lost if the directory was removed).
    pub(crate) unsent: Tally,
    /// Handed out by `next_batch`, not yet settled: the worker's requests hold them.
    pub(crate) in_flight: Tally,
}

impl Backlog {
    /// Every unsettled entry.
    #[cfg(test)]
    pub(crate) fn total(&self) -> Tally {
        self.unwritten.plus(self.unsent).plus(self.in_flight)
    }
}

/// A file cut back at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Repaired {
    pub(crate) path: PathBuf,
    pub(crate) bytes_cut: u64,
}

/// What [`DiskBuffer::open`] found: the facts of a `buffer_replayed` report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Unsettled entries to hand out, in order, before anything appended now.
    pub(crate) entries: u64,
    /// Their bytes (as [`Tally::bytes`]).
    pub(crate) bytes: u64,
    /// The earliest timestamp among them.
    pub(crate) oldest_unix_nanos: Option<i128>,
    /// Torn tails cut, and segments torn at creation or damaged, removed.
    pub(crate) repaired: Vec<Repaired>,
    /// Entries that could not be read (a bad checksum, a segment damaged part-way): now
    /// settled, so counted here once. Report them dropped.
    pub(crate) lost: u64,
    /// Damaged lines of the settlement log: what they settled may be handed out again.
    pub(crate) lost_settlements: u64,
}

/// One entry, as `next_batch` hands it out: borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryView<'a> {
    pub(crate) seq: Seq,
    pub(crate) stream: &'a [u8],
    pub(crate) unix_nanos: i128,
    pub(crate) payload: &'a [u8],
}

/// A segment: its records are the sequence numbers `first..end`.
#[derive(Debug, Clone)]
struct Segment {
    first: Seq,
    end: Seq,
    /// Bytes in the file (the header included; for the active segment, not its buffer).
    written: u64,
    /// Entries not settled, and their bytes.
    live: Tally,
    /// Check checksums when reading it: it held damaged records at open. Other segments
    /// were checked whole at open, or written by this process, and are read trusting the
    /// page cache (their framing and numbering are still checked).
    verify: bool,
}

/// The segment being appended to: the last one.
struct Active {
    file: File,
    path: PathBuf,
    /// Records appended since the last write, in order.
    buf: Vec<u8>,
}

/// Where `next_batch` goes on: the next sequence number to consider and, once a segment
/// is being read, where in it.
struct Cursor {
    seq: Seq,
    at: Option<At>,
}

struct At {
    segment: Seq,
    offset: u64,
    reader: Option<Reader>,
}

/// Files written since their last sync.
struct Unsynced {
    last: Instant,
    active: bool,
    sealed: Vec<File>,
    dir: bool,
}

/// Why the buffer stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// The directory was removed.
    Gone,
    /// A failed write could not be cut back: the active segment's tail is unknown.
    Damaged,
}

/// The disk buffer. Not `Sync`-shared: the worker owns it. Every method returns quickly
/// except where it says it syncs.
pub(crate) struct DiskBuffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    compact_at: u64,
    fsync: Fsync,
    faults: Option<FaultHook>,
    lock: DirLock,
    acks: Acks,
    segments: VecDeque<Segment>,
    active: Option<Active>,
    next_seq: Seq,
    cursor: Cursor,
    settled: RangeSet,
    /// Every entry handed out and not settled (and settled ones behind the oldest of
    /// those), in order: sequence number and record length.
    ledger: VecDeque<(Seq, u32)>,
    live: Tally,
    in_flight: Tally,
    unwritten: Tally,
    /// Bytes of every segment (buffers included) and of files whose removal failed.
    disk: u64,
    /// Settled segments whose removal failed, retried at each commit.
    doomed: Vec<(PathBuf, u64)>,
    /// Settled in memory, not yet in the log (its write failed), retried at each commit.
    unacked: Vec<Range<Seq>>,
    lost: u64,
    /// The first error of a settlement or removal, reported by the next commit.
    deferred: Option<io::Error>,
    unsynced: Unsynced,
    broken: Option<Broken>,
    scratch: Vec<Range<Seq>>,
}

impl DiskBuffer {
    /// The buffer's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every unsettled entry (as [`Backlog::total`]).
    pub(crate) fn unsettled(&self) -> Tally {
        self.live
    }

    /// The unsettled entries, by where they are. No syscall.
    pub(crate) fn backlog(&self) -> Backlog {
        let mut unsent = self.live;
        unsent.sub(self.in_flight);
        unsent.sub(self.unwritten);
        Backlog {
            unwritten: self.unwritten,
            unsent,
            in_flight: self.in_flight,
        }
    }

    /// Bytes the buffer takes on disk: segments (with what is buffered for the next
    /// write) and the settlement log. Never more than the cap plus one segment.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk + self.acks.len()
    }

    /// Entries found lost since the last call (a bad checksum when read, a segment removed
    /// or damaged under the buffer): settled, never handed out. Report them dropped.
    pub(crate) fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// True once the buffer noticed its directory was removed: it refuses every write,
    /// its unsent entries are lost, and a new `open` starts afresh.
    pub(crate) fn is_gone(&self) -> bool {
        self.broken == Some(Broken::Gone)
    }

    /// Writes what is buffered and syncs everything (data, settlement log, directory),
    /// whatever the fsync policy: for a shutdown.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    pub(crate) fn close(mut self) -> io::Result<()> {
        self.commit()?;
        self.sync_now()
    }

    /// Fails if the buffer stopped.
    #[inline]
    fn usable(&self) -> io::Result<()> {
        match self.broken {
            None => Ok(()),
            Some(broken) => Err(self.stopped(broken)),
        }
    }

    #[cold]
    fn stopped(&self, broken: Broken) -> io::Error {
        match broken {
            Broken::Gone => io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the disk buffer directory {} was removed: what it held is lost; open it \
                     again to start afresh",
                    self.dir.display()
                ),
            ),
            Broken::Damaged => io::Error::other(format!(
                "a failed write to the disk buffer in {} could not be cut back; open it again \
                 to repair it",
                self.dir.display()
            )),
        }
    }

    /// Keeps the first error of work that cannot fail its caller (a settlement, a removal).
    fn defer(&mut self, e: io::Error) {
        self.deferred.get_or_insert(e);
    }
}

impl Drop for DiskBuffer {
    /// Writes what is buffered (no sync): an orderly drop loses nothing to a later crash.
    fn drop(&mut self) {
        if self.broken.is_none() {
            let _ = self.write_buffer();
        }
    }
}

/// Makes a creation, rename or removal in `dir` durable. Best effort: some file systems
/// refuse to sync a directory, and the change itself is already atomic.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Walks the records of a buffer of whole records.
fn records(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0;
    std::iter::from_fn(move || {
        // Bytes this process encoded a moment ago: no checksum to check.
        let Frame::Good { len } = format::frame(&buf[at..], false) else {
            return None;
        };
        let record = &buf[at..at + len];
        at += len;
        Some(record)
    })
}
