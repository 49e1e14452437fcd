//! Reading a segment's records in order, in large chunks: one `read(2)` per 256 KiB (or
//! per record, for a larger one), whatever the size of the records.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::Path;

use super::format::{self, Frame};

/// How much is read at a time.
const CHUNK: usize = 256 * 1024;

/// What the reader found at its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// A good record of `len` bytes: [`record`](Reader::record) holds it.
    Record { len: usize },
    /// A record of `len` bytes that fails its checksum: skip it.
    Corrupt { len: usize },
    /// The position is the limit: nothing more to read.
    End,
    /// The data ends (at the limit, or the file ends early) inside a record, or a length
    /// field no record can have: nothing from here on can be read.
    Damaged,
}

/// A forward-only reader of one segment file.
pub(super) struct Reader {
    file: File,
    buf: Vec<u8>,
    /// The record at the position starts at `buf[start]`; `buf[start..end]` is read.
    start: usize,
    end: usize,
    /// The file offset of `buf[start]`.
    pos: u64,
    /// The file ended before the limit.
    eof: bool,
    /// Checksums are checked.
    verify: bool,
}

impl Reader {
    /// Opens `path` to read from offset `pos`, checking checksums if `verify`. One `open`,
    /// one `lseek`.
    pub(super) fn open(path: &Path, pos: u64, verify: bool) -> io::Result<Self> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(pos))?;
        Ok(Reader {
            file,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pos,
            eof: false,
            verify,
        })
    }

    /// The file offset of the next record.
    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    /// Looks at the record at the position, reading more of the file (never past offset
    /// `limit`) as needed. Does not move: [`advance`](Self::advance) does.
    pub(super) fn peek(&mut self, limit: u64) -> io::Result<Step> {
        loop {
            let have = &self.buf[self.start..self.end];
            let need = match format::frame(have, self.verify) {
                Frame::Good { len } => return Ok(Step::Record { len }),
                Frame::Corrupt { len } => return Ok(Step::Corrupt { len }),
                Frame::Broken => return Ok(Step::Damaged),
                Frame::Short { need } => need,
            };
            let read_to = self.pos + (self.end - self.start) as u64;
            if read_to >= limit || self.eof {
                let at_end = self.start == self.end && read_to == limit;
                return Ok(if at_end { Step::End } else { Step::Damaged });
            }
            self.fill(need, limit - read_to)?;
        }
    }

    /// The bytes of the record [`peek`](Self::peek) found (`len` as it said).
    pub(super) fn record(&self, len: usize) -> &[u8] {
        &self.buf[self.start..self.start + len]
    }

    /// Moves past the record `peek` found (`len` as it said).
    pub(super) fn advance(&mut self, len: usize) {
        self.start += len;
        self.pos += len as u64;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
    }

    /// Reads until `need` bytes from the position are in the buffer, the file ends, or
    /// `room` more bytes have been read.
    fn fill(&mut self, need: usize, room: u64) -> io::Result<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let want = need.max(CHUNK);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        let stop = self.buf.len().min(self.end.saturating_add(room));
        while self.end < need.min(stop) {
            match self.file.read(&mut self.buf[self.end..stop]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::{encode, HEADER_LEN};
    use super::*;

    fn segment(records: &[(&[u8], &[u8])]) -> (tempfile::TempDir, std::path::PathBuf, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.seg");
        let mut bytes = format::header(0).to_vec();
        let mut lens = Vec::new();
        for (s, p) in records {
            let at = bytes.len();
            encode(&mut bytes, lens.len() as u64, s, 5, p);
            lens.push(bytes.len() - at);
        }
        std::fs::write(&path, &bytes).unwrap();
        (dir, path, lens)
    }

    fn read_all(path: &Path, limit: u64) -> (Vec<Vec<u8>>, Step) {
        let mut r = Reader::open(path, HEADER_LEN as u64, true).unwrap();
        let mut out = Vec::new();
        loop {
            match r.peek(limit).unwrap() {
                Step::Record { len } => {
                    out.push(format::body(r.record(len)).payload.to_vec());
                    r.advance(len);
                }
                other => return (out, other),
            }
        }
    }

    #[test]
    fn records_larger_than_a_chunk_and_many_small_ones_read_back() {
        let big = vec![7u8; 3 * CHUNK + 5];
        let small: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let mut recs: Vec<(&[u8], &[u8])> = small.iter().map(|p| (&b"s"[..], &p[..])).collect();
        recs.insert(2500, (b"s", &big));
        let (_d, path, _) = segment(&recs);
        let len = std::fs::metadata(&path).unwrap().len();
        let (got, end) = read_all(&path, len);
        assert_eq!(end, Step::End);
        assert_eq!(got.len(), 5001);
        assert_eq!(got[2500], big);
        assert_eq!(got[4999], 4998u32.to_le_bytes());
    }

    #[test]
    fn a_limit_inside_a_record_or_a_short_file_is_damage() {
        let (_d, path, lens) = segment(&[(b"s", b"one"), (b"s", b"two")]);
        let full = (HEADER_LEN + lens[0] + lens[1]) as u64;
        assert_eq!(
            read_all(&path, full - 1),
            (vec![b"one".to_vec()], Step::Damaged)
        );
        assert_eq!(read_all(&path, (HEADER_LEN + lens[0]) as u64).1, Step::End);
        // The file is shorter than the limit says.
        assert_eq!(read_all(&path, full + 10).1, Step::Damaged);
    }
}
