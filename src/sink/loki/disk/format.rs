//! The bytes on disk: segment names, segment headers and records. Pure: no I/O, so every
//! rule of the format is tested here, byte by byte.

use std::ops::Range;

/// The first bytes of every segment file.
pub(super) const MAGIC: [u8; 8] = *b"SWBUFSEG";
/// The version of the segment and settlement-log formats this code writes and reads.
pub(super) const VERSION: u8 = 1;
/// Magic (8), version (1), three zero bytes, the first sequence number (u64 LE), and the
/// CRC-32 of those 20 bytes (u32 LE).
pub(super) const HEADER_LEN: usize = 24;
/// A record's frame: the body's length (u32 LE) and the body's CRC-32 (u32 LE).
pub(super) const FRAME_LEN: usize = 8;
/// The fixed part of a body: the sequence number (u64 LE), seconds (i64 LE), nanoseconds
/// (u32 LE), the stream's length (u32 LE). The stream's bytes and the payload follow.
///
/// The sequence number is in the record, under its checksum, so a damaged length that
/// frames the bytes after it wrongly can never give an entry another entry's number.
pub(super) const BODY_FIXED: usize = 24;
/// The longest body accepted: far above Loki's line limit (256 KiB by default), far below
/// what would make a corrupt length field allocate without bound.
pub(super) const MAX_BODY: usize = 16 << 20;
/// The suffix of a segment file's name.
const SEGMENT_SUFFIX: &str = ".seg";
/// The digits of a segment file's name: every `u64`, zero-padded so names sort by number.
const SEGMENT_DIGITS: usize = 20;

/// The name of the segment whose first record has sequence number `first`.
pub(super) fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// The first sequence number of a segment named `name`, or `None` if the name is not one
/// the buffer writes (other files in the directory are left alone).
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment's header.
pub(super) fn header(first: u64) -> [u8; HEADER_LEN] {
    let mut h = [0; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8] = VERSION;
    h[12..20].copy_from_slice(&first.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    /// A good header, with the segment's first sequence number.
    Good(u64),
    /// A good header of another version of the format: the file is not ours to change.
    Version(u8),
    /// Too short, or not a header: a segment torn at its creation, or damaged.
    Bad,
}

/// Reads a segment's header from its first bytes (fewer than [`HEADER_LEN`] is `Bad`).
pub(super) fn parse_header(bytes: &[u8]) -> Header {
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Header::Bad;
    };
    if h[..8] != MAGIC || u32_at(h, 20) != crc32fast::hash(&h[..20]) {
        return Header::Bad;
    }
    if h[8] != VERSION {
        return Header::Version(h[8]);
    }
    if h[9..12] != [0; 3] {
        return Header::Bad;
    }
    Header::Good(u64_at(h, 12))
}

/// The bytes a record of this stream and payload takes, frame included.
pub(super) fn record_len(stream: usize, payload: usize) -> usize {
    FRAME_LEN + BODY_FIXED + stream + payload
}

/// Appends one record to `out`. The caller has checked the length against [`MAX_BODY`].
/// Three copies and one checksum over the whole body (the vectorised path, once).
pub(super) fn encode(out: &mut Vec<u8>, seq: u64, stream: &[u8], unix_nanos: i128, payload: &[u8]) {
    let (secs, nanos) = split_nanos(unix_nanos);
    let body_len = BODY_FIXED + stream.len() + payload.len();
    let mut head = [0u8; FRAME_LEN + BODY_FIXED];
    head[..4].copy_from_slice(&len_u32(body_len).to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..24].copy_from_slice(&secs.to_le_bytes());
    head[24..28].copy_from_slice(&nanos.to_le_bytes());
    head[28..].copy_from_slice(&len_u32(stream.len()).to_le_bytes());
    let at = out.len();
    out.reserve(FRAME_LEN + body_len);
    out.extend_from_slice(&head);
    out.extend_from_slice(stream);
    out.extend_from_slice(payload);
    let crc = crc(&out[at + FRAME_LEN..]);
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The CRC-32 of `bytes`. The CPU's features are looked up once, not per call.
pub(super) fn crc(bytes: &[u8]) -> u32 {
    static PROTO: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    let mut h = PROTO.get_or_init(crc32fast::Hasher::new).clone();
    h.update(bytes);
    h.finalize()
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Frame {
    /// A whole, good record of `len` bytes (frame included).
    Good { len: usize },
    /// A record of `len` bytes whose checksum or layout is wrong: skip it, it is lost.
    Corrupt { len: usize },
    /// Not all of the record is there: at least `need` bytes are.
    Short { need: usize },
    /// A length no record can have: nothing after this point can be framed.
    Broken,
}

/// Frames the record at the start of `bytes`, checking its checksum if `verify` (the
/// layout is always checked).
pub(super) fn frame(bytes: &[u8], verify: bool) -> Frame {
    if bytes.len() < FRAME_LEN {
        return Frame::Short { need: FRAME_LEN };
    }
    let body_len = u32_at(bytes, 0) as usize;
    if !(BODY_FIXED..=MAX_BODY).contains(&body_len) {
        return Frame::Broken;
    }
    let len = FRAME_LEN + body_len;
    let Some(body) = bytes.get(FRAME_LEN..len) else {
        return Frame::Short { need: len };
    };
    let stream_len = u32_at(body, 20) as usize;
    if stream_len > body_len - BODY_FIXED || (verify && crc(body) != u32_at(bytes, 4)) {
        return Frame::Corrupt { len };
    }
    Frame::Good { len }
}

/// A good record's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Body<'a> {
    pub(super) seq: u64,
    pub(super) unix_nanos: i128,
    pub(super) stream: &'a [u8],
    pub(super) payload: &'a [u8],
}

/// The contents of `record`, which [`frame`] called `Good` (whole, frame included).
pub(super) fn body(record: &[u8]) -> Body<'_> {
    let (head, rest) = record.split_at(FRAME_LEN + BODY_FIXED);
    let field = |at: usize| -> [u8; 8] { head[at..at + 8].try_into().unwrap_or([0; 8]) };
    let stream_len = u32_at(head, 28) as usize;
    let secs = i128::from(i64::from_le_bytes(field(16)));
    let (stream, payload) = rest.split_at(stream_len.min(rest.len()));
    Body {
        seq: u64::from_le_bytes(field(8)),
        unix_nanos: secs * 1_000_000_000 + i128::from(u32_at(head, 24)),
        stream,
        payload,
    }
}

/// Nanoseconds since the epoch as seconds and nanoseconds (Loki's form), saturating far
/// outside any real clock.
fn split_nanos(unix_nanos: i128) -> (i64, u32) {
    // Every clock after 1970 and before 2554: a 64-bit division, not a 128-bit one.
    if let Ok(n) = u64::try_from(unix_nanos) {
        let secs = i64::try_from(n / 1_000_000_000).unwrap_or(i64::MAX);
        return (secs, u32::try_from(n % 1_000_000_000).unwrap_or(0));
    }
    let secs = i64::try_from(unix_nanos.div_euclid(1_000_000_000)).unwrap_or(if unix_nanos < 0 {
        i64::MIN
    } else {
        i64::MAX
    });
    // In 0..1e9, so it fits.
    let nanos = u32::try_from(unix_nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    (secs, nanos)
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// One line of the settlement log for `range`: `start end crc\n`, where `crc` is the
/// CRC-32 (8 lowercase hex digits) of the text `start end`.
pub(super) fn ack_line(out: &mut Vec<u8>, range: &Range<u64>) {
    let at = out.len();
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(range.start).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(range.end).as_bytes());
    let crc = crc32fast::hash(&out[at..]);
    out.extend_from_slice(format!(" {crc:08x}\n").as_bytes());
}

/// The range on one line of the settlement log (without its `\n`), or `None` if the line
/// is damaged.
pub(super) fn parse_ack_line(line: &[u8]) -> Option<Range<u64>> {
    let text = std::str::from_utf8(line).ok()?;
    let (range, crc) = text.rsplit_once(' ')?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(range.as_bytes()) {
        return None;
    }
    let (start, end) = range.split_once(' ')?;
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    (start < end).then_some(start..end)
}

/// The settlement log's first line.
pub(super) fn acks_header() -> String {
    format!("{ACKS_MAGIC} {VERSION}\n")
}

/// The first word of the settlement log's first line.
pub(super) const ACKS_MAGIC: &str = "SWACKS";

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &[u8], nanos: i128, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode(&mut v, 77, stream, nanos, payload);
        v
    }

    #[test]
    fn segment_names_are_zero_padded_and_parse_back() {
        assert_eq!(segment_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("00000000000000000042.seg"), Some(42));
        for foreign in [
            "42.seg",
            "acks",
            "lock",
            "0000000000000000004x.seg",
            "00000000000000000042.seg.tmp",
        ] {
            assert_eq!(parse_segment_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_header_parses_back_and_damage_is_noticed() {
        let h = header(7);
        assert_eq!(parse_header(&h), Header::Good(7));
        assert_eq!(parse_header(&h[..HEADER_LEN - 1]), Header::Bad);
        for i in 0..HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x40;
            assert_ne!(parse_header(&bad), Header::Good(7), "byte {i}");
        }
    }

    #[test]
    fn another_version_is_recognised_not_called_damaged() {
        let mut h = header(7);
        h[8] = 2;
        let crc = crc32fast::hash(&h[..20]);
        h[20..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse_header(&h), Header::Version(2));
    }

    #[test]
    fn a_record_round_trips() {
        let r = record(b"{app=\"x\"}", 1_700_000_000_123_456_789, b"payload");
        assert_eq!(r.len(), record_len(9, 7));
        assert_eq!(frame(&r, true), Frame::Good { len: r.len() });
        let b = body(&r);
        assert_eq!(b.seq, 77);
        assert_eq!(b.unix_nanos, 1_700_000_000_123_456_789);
        assert_eq!(
            (b.stream, b.payload),
            (&b"{app=\"x\"}"[..], &b"payload"[..])
        );
    }

    #[test]
    fn timestamps_before_the_epoch_and_far_ahead_round_trip() {
        let far = i128::from(i64::MAX) * 1_000_000_000;
        for t in [
            -1,
            -1_000_000_000,
            -1_500_000_001,
            0,
            999_999_999,
            i128::from(u64::MAX),
            far,
        ] {
            assert_eq!(body(&record(b"", t, b"")).unix_nanos, t);
        }
    }

    #[test]
    fn an_unverified_frame_skips_only_the_checksum() {
        let mut r = record(b"s", 1, b"payload");
        let last = r.len() - 1;
        r[last] ^= 1;
        assert_eq!(frame(&r, true), Frame::Corrupt { len: r.len() });
        assert_eq!(frame(&r, false), Frame::Good { len: r.len() });
    }

    #[test]
    fn a_record_cut_anywhere_is_short() {
        let r = record(b"s", 1, b"some payload");
        for cut in 0..r.len() {
            assert!(
                matches!(frame(&r[..cut], true), Frame::Short { need } if need > cut),
                "{cut}"
            );
        }
    }

    #[test]
    fn a_flipped_body_byte_is_corrupt_a_flipped_length_is_broken_or_corrupt() {
        let r = record(b"s", 1, b"some payload");
        for i in 0..r.len() {
            let mut bad = r.clone();
            bad[i] ^= 0x01;
            let f = frame(&bad, true);
            assert_ne!(f, Frame::Good { len: r.len() }, "byte {i}");
        }
        let mut zeros = vec![0u8; 64];
        assert_eq!(
            frame(&zeros, true),
            Frame::Broken,
            "zeroed blocks never frame"
        );
        zeros[0] = 0xff;
        zeros[3] = 0xff;
        assert_eq!(
            frame(&zeros, true),
            Frame::Broken,
            "a huge length never allocates"
        );
    }

    #[test]
    fn a_stream_length_past_the_body_is_corrupt_even_with_a_good_checksum() {
        let mut r = record(b"s", 1, b"p");
        r[FRAME_LEN + 20] = 9;
        let crc = crc32fast::hash(&r[FRAME_LEN..]);
        r[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(frame(&r, true), Frame::Corrupt { len: r.len() });
        assert_eq!(
            frame(&r, false),
            Frame::Corrupt { len: r.len() },
            "checked unverified too"
        );
    }

    #[test]
    fn ack_lines_round_trip_and_damage_is_noticed() {
        let mut line = Vec::new();
        ack_line(&mut line, &(12..345));
        assert_eq!(line.last(), Some(&b'\n'));
        let text = &line[..line.len() - 1];
        assert_eq!(parse_ack_line(text), Some(12..345));
        for i in 0..text.len() {
            let mut bad = text.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(parse_ack_line(&bad), None, "byte {i}");
        }
        assert_eq!(parse_ack_line(&text[..text.len() - 1]), None);
    }
}
