//! Request bodies: Loki's protobuf `PushRequest` (snappy block compressed), or JSON,
//! optionally gzipped.
//!
//! Entries are written once, straight into their stream's buffer, as the protobuf bytes
//! they are on the wire (`logproto.EntryAdapter`, framed as field 2 of `StreamAdapter`), so
//! a request is those buffers with a little framing around them: no message structs, no
//! `String` per entry, no second copy. Field numbers as in Loki's `logproto` package
//! (`docs/loki-push-spec`): `PushRequest.streams = 1`; `StreamAdapter.labels = 1`,
//! `entries = 2`; `EntryAdapter.timestamp = 1` (`google.protobuf.Timestamp {seconds = 1,
//! nanos = 2}`), `line = 2`, `structuredMetadata = 3`; `LabelPairAdapter.name = 1`,
//! `value = 2`. As proto3 (and `prost`) do, fields holding zero or an empty string are left
//! out, so the bytes match Loki's own test vectors.
//!
//! The JSON encodings read the same entry bytes back ([`Entries`]), so every encoding
//! sends exactly what was batched.

use std::io::Write as _;

use super::labels::LabelSet;
use super::Encoding;
use crate::record::write_json_str;

/// Wire type 2 (length-delimited) of field `n`.
const fn tag(n: u8) -> u8 {
    (n << 3) | 2
}

/// `StreamAdapter.entries`, `PushRequest.streams`, and the fields inside them.
const STREAM: u8 = tag(1);
const LABELS: u8 = tag(1);
const ENTRY: u8 = tag(2);
const TIMESTAMP: u8 = tag(1);
const LINE: u8 = tag(2);
const METADATA: u8 = tag(3);
const PAIR_NAME: u8 = tag(1);
const PAIR_VALUE: u8 = tag(2);
/// Varint fields of `google.protobuf.Timestamp`.
const SECONDS: u8 = 1 << 3;
const NANOS: u8 = 2 << 3;

/// Bytes `v` takes as a protobuf varint.
pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends `v` as a protobuf varint.
#[allow(clippy::cast_possible_truncation)] // each byte takes the low 7 bits, on purpose
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field: its tag, the length and the bytes.
fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Bytes a length-delimited field of `len` bytes takes, tag included.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

/// A timestamp as `google.protobuf.Timestamp`'s two fields: seconds (an int64 varint, as
/// two's complement) and nanoseconds since the epoch, saturating far outside Loki's range.
fn split_time(unix_nanos: i128) -> (u64, u64) {
    let (seconds, nanos) = match u64::try_from(unix_nanos) {
        // Every time a clock gives today: a 64-bit division, not a 128-bit one.
        Ok(n) => (
            i64::try_from(n / 1_000_000_000).unwrap_or(i64::MAX),
            n % 1_000_000_000,
        ),
        Err(_) => (
            i64::try_from(unix_nanos.div_euclid(1_000_000_000)).unwrap_or(i64::MAX),
            // rem_euclid is in 0..1e9.
            u64::try_from(unix_nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
        ),
    };
    (u64::from_ne_bytes(seconds.to_ne_bytes()), nanos)
}

/// The bytes of a timestamp's message: its two varint fields, zeros left out.
fn timestamp_len(seconds: u64, nanos: u64) -> usize {
    let field = |v: u64| if v == 0 { 0 } else { 1 + varint_len(v) };
    field(seconds) + field(nanos)
}

/// A short run of bytes built on the stack and appended in one copy.
struct Head {
    bytes: [u8; 64],
    len: usize,
}

impl Head {
    fn new() -> Self {
        Head {
            bytes: [0; 64],
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    #[inline]
    #[allow(clippy::cast_possible_truncation)] // each byte takes the low 7 bits, on purpose
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    /// A timestamp's two varint fields (from [`split_time`]), zeros left out.
    #[inline]
    fn timestamp(&mut self, seconds: u64, nanos: u64) {
        if seconds != 0 {
            self.byte(SECONDS);
            self.varint(seconds);
        }
        if nanos != 0 {
            self.byte(NANOS);
            self.varint(nanos);
        }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Structured metadata, already encoded as `EntryAdapter.structuredMetadata` fields (see
/// [`put_metadata`]).
pub(crate) type Metadata = [u8];

/// Appends one structured-metadata pair, encoded as a `structuredMetadata` field of an
/// entry, to `out` (which then goes to [`put_entry`] as the entry's metadata).
pub(crate) fn put_metadata(out: &mut Vec<u8>, name: &str, value: &str) {
    let len = field_len(name.len())
        + if value.is_empty() {
            0
        } else {
            field_len(value.len())
        };
    out.push(METADATA);
    put_varint(out, len as u64);
    put_bytes(out, PAIR_NAME, name.as_bytes());
    if !value.is_empty() {
        put_bytes(out, PAIR_VALUE, value.as_bytes());
    }
}

/// Appends one entry, framed as a `StreamAdapter.entries` field: its timestamp, its line,
/// and its structured metadata (from [`put_metadata`]). Returns the bytes appended.
pub(crate) fn put_entry(
    out: &mut Vec<u8>,
    unix_nanos: i128,
    line: &[u8],
    metadata: &Metadata,
) -> usize {
    let (seconds, nanos) = split_time(unix_nanos);
    let ts_len = timestamp_len(seconds, nanos);
    let line_len = if line.is_empty() {
        0
    } else {
        field_len(line.len())
    };
    let body = field_len(ts_len) + line_len + metadata.len();
    // Everything before the line in one copy: the entry's tag and length, the timestamp,
    // the line's tag and length (at most 1 + 10 + 2 + 22 + 1 + 10 bytes).
    let mut head = Head::new();
    head.byte(ENTRY);
    head.varint(body as u64);
    head.byte(TIMESTAMP);
    #[allow(clippy::cast_possible_truncation)] // at most 22
    head.byte(ts_len as u8);
    head.timestamp(seconds, nanos);
    if !line.is_empty() {
        head.byte(LINE);
        head.varint(line.len() as u64);
    }
    let head = head.as_slice();
    let len = head.len() + line.len() + metadata.len();
    out.reserve(len);
    out.extend_from_slice(head);
    out.extend_from_slice(line);
    if !metadata.is_empty() {
        out.extend_from_slice(metadata);
    }
    len
}

/// Writes `v` as a varint of exactly `dst.len()` bytes (which is its [`varint_len`]).
#[inline]
#[allow(clippy::cast_possible_truncation)] // each byte takes the low 7 bits, on purpose
fn patch_varint(dst: &mut [u8], v: usize) {
    match dst {
        // The common widths, written at once.
        [a] => *a = v as u8,
        [a, b] => {
            *a = v as u8 | 0x80;
            *b = (v >> 7) as u8;
        }
        _ => {
            let last = dst.len().saturating_sub(1);
            for (i, b) in dst.iter_mut().enumerate() {
                *b = ((v >> (7 * i)) as u8 & 0x7f) | if i < last { 0x80 } else { 0 };
            }
        }
    }
}

/// The varint lengths `InPlace` handles: 1 to 5 bytes (values below 2^35).
const WIDTHS: [(usize, usize); 6] = [
    (0, 0),
    (1, 1 << 7),
    (1 << 7, 1 << 14),
    (1 << 14, 1 << 21),
    (1 << 21, 1 << 28),
    (1 << 28, 1 << 35),
];

/// Writes entries straight into a stream's buffer, their line rendered in place (no copy):
/// [`begin`](Self::begin) appends the entry's head with room for the two lengths it cannot
/// know yet (the entry's and the line's), the caller appends the line, and
/// [`finish`](Self::finish) appends the metadata and writes the lengths. The room is
/// guessed from the entry before (most entries of a program are of one size class); when
/// the guess is wrong the head is rewritten and the line moved. The head up to the
/// nanoseconds is kept from the entry before (most entries share their second). The bytes
/// are exactly [`put_entry`]'s.
#[derive(Debug)]
pub(crate) struct InPlace {
    /// Varint bytes left for the entry's length and for the line's (1 to 5).
    body_width: usize,
    line_width: usize,
    /// The head for entries of second `seconds` whose nanoseconds field takes
    /// `nanos_field` bytes (0: none), the nanoseconds' varint at `nanos_at` left to write;
    /// `head_len` bytes.
    template: [u8; 40],
    valid: bool,
    seconds: u64,
    nanos_field: usize,
    nanos_at: usize,
    /// The continuation bits of the nanoseconds' varint.
    nanos_mask: u64,
    head_len: usize,
    /// The entry's bytes besides its line and metadata, past its own tag and length.
    fixed_body: usize,
    /// Where the open entry starts in the buffer, and where its line does.
    start: usize,
    line_at: usize,
}

impl Default for InPlace {
    fn default() -> Self {
        // Lines of 128 bytes to 16 KiB.
        InPlace {
            body_width: 2,
            line_width: 2,
            template: [0; 40],
            valid: false,
            seconds: 0,
            nanos_field: 0,
            nanos_at: 0,
            nanos_mask: 0,
            head_len: 0,
            fixed_body: 0,
            start: 0,
            line_at: 0,
        }
    }
}

impl InPlace {
    /// Appends the head of an entry at `unix_nanos`, its line to follow. `false` (with
    /// nothing appended) for a time whose seconds take more than 5 varint bytes (before the
    /// epoch, or past the year 3058): [`put_entry`] then writes it.
    #[inline]
    pub(crate) fn begin(&mut self, out: &mut Vec<u8>, unix_nanos: i128) -> bool {
        let (seconds, nanos) = split_time(unix_nanos);
        let nanos_field = if nanos == 0 { 0 } else { 1 + varint_len(nanos) };
        let kept = self.valid && seconds == self.seconds && nanos_field == self.nanos_field;
        if !kept && !self.template_for(seconds, nanos_field) {
            return false;
        }
        let mut head = self.template;
        if nanos != 0 {
            // Below 10^9, so at most 5 bytes: 7 bits to each.
            let word = (nanos & 0x7f)
                | ((nanos << 1) & 0x7f00)
                | ((nanos << 2) & 0x7f_0000)
                | ((nanos << 3) & 0x7f00_0000)
                | ((nanos << 4) & 0x7f_0000_0000)
                | self.nanos_mask;
            let at = self.nanos_at;
            if let Some(dst) = head.get_mut(at..at + 8) {
                dst.copy_from_slice(&word.to_le_bytes());
            }
            // The word ran over the line's tag.
            if let Some(tag) = head.get_mut(at + nanos_field - 1) {
                *tag = LINE;
            }
        }
        self.start = out.len();
        crate::record::json::put_fixed(out, &head, self.head_len);
        self.line_at = self.start + self.head_len;
        true
    }

    /// Makes the head template for `seconds` and a nanoseconds field of `nanos_field`
    /// bytes; `false` if `seconds` takes more than 5 varint bytes.
    fn template_for(&mut self, seconds: u64, nanos_field: usize) -> bool {
        if seconds >= 1 << 35 {
            return false;
        }
        let mut head = Head::new();
        head.byte(ENTRY);
        let body_at = head.len;
        head.len += self.body_width;
        head.byte(TIMESTAMP);
        let seconds_field = if seconds == 0 {
            0
        } else {
            1 + varint_len(seconds)
        };
        let ts_len = seconds_field + nanos_field;
        #[allow(clippy::cast_possible_truncation)] // at most 12
        head.byte(ts_len as u8);
        if seconds != 0 {
            head.byte(SECONDS);
            head.varint(seconds);
        }
        if nanos_field != 0 {
            head.byte(NANOS);
            self.nanos_at = head.len;
            head.len += nanos_field - 1;
        }
        head.byte(LINE);
        head.len += self.line_width;
        debug_assert!(head.len + 8 <= self.template.len() && body_at == 1);
        let n = self.template.len();
        self.template.copy_from_slice(&head.bytes[..n]);
        self.nanos_mask =
            0x8080_8080_8080_8080 & ((1_u64 << (8 * nanos_field.saturating_sub(2))) - 1);
        self.head_len = head.len;
        self.fixed_body = field_len(ts_len) + 1 + self.line_width;
        self.seconds = seconds;
        self.nanos_field = nanos_field;
        self.valid = true;
        true
    }

    /// Ends the entry [`begin`](Self::begin) started, whose line the caller appended:
    /// appends `metadata` and writes the lengths. Returns the entry's bytes, as
    /// [`put_entry`] does.
    #[inline]
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>, metadata: &Metadata) -> usize {
        let line_len = out.len() - self.line_at;
        if !metadata.is_empty() {
            out.extend_from_slice(metadata);
        }
        let body = self.fixed_body + line_len + metadata.len();
        let (line_lo, line_hi) = WIDTHS[self.line_width];
        let (body_lo, body_hi) = WIDTHS[self.body_width];
        if (line_lo..line_hi).contains(&line_len) && (body_lo..body_hi).contains(&body) {
            let (start, line_at) = (self.start, self.line_at);
            if let Some(dst) = out.get_mut(start + 1..start + 1 + self.body_width) {
                patch_varint(dst, body);
            }
            if let Some(dst) = out.get_mut(line_at - self.line_width..line_at) {
                patch_varint(dst, line_len);
            }
        } else {
            self.rewrite(out, line_len, metadata.len());
        }
        out.len() - self.start
    }

    /// The head of the open entry again, as [`put_entry`] writes it, in place of the one
    /// written with the wrong room for the lengths (or for an empty line, which has no line
    /// field); the room then follows this entry's lengths.
    #[cold]
    fn rewrite(&mut self, out: &mut Vec<u8>, line_len: usize, metadata_len: usize) {
        let ts_len = self.fixed_body - 3 - self.line_width;
        let ts_at = self.start + 1 + self.body_width + 2;
        let mut head = Head::new();
        let line_field = if line_len == 0 {
            0
        } else {
            field_len(line_len)
        };
        let body = field_len(ts_len) + line_field + metadata_len;
        head.byte(ENTRY);
        head.varint(body as u64);
        head.byte(TIMESTAMP);
        #[allow(clippy::cast_possible_truncation)] // at most 12
        head.byte(ts_len as u8);
        for &b in out.get(ts_at..ts_at + ts_len).unwrap_or_default() {
            head.byte(b);
        }
        if line_len > 0 {
            head.byte(LINE);
            head.varint(line_len as u64);
            self.line_width = varint_len(line_len as u64).min(5);
        }
        self.body_width = varint_len(body as u64).min(5);
        self.valid = false;
        out.splice(self.start..self.line_at, head.as_slice().iter().copied());
    }
}

/// One entry read back from a stream's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryView<'a> {
    /// The whole entry as framed in the buffer (what [`put_entry`] appended).
    pub(crate) framed: &'a [u8],
    pub(crate) unix_nanos: i128,
    pub(crate) line: &'a [u8],
    /// The encoded `structuredMetadata` fields.
    pub(crate) metadata: &'a [u8],
}

impl EntryView<'_> {
    /// The structured-metadata pairs.
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        ProtoFields(self.metadata)
            .filter(|(field, _)| *field == METADATA)
            .map(|(_, pair)| {
                let mut name: &[u8] = &[];
                let mut value: &[u8] = &[];
                for (f, v) in ProtoFields(pair) {
                    match f {
                        PAIR_NAME => name = v,
                        PAIR_VALUE => value = v,
                        _ => {}
                    }
                }
                (name, value)
            })
    }
}

/// Reads a varint; `None` at the end of the input or on a malformed one.
fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0_u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// The fields of a message, as (tag, contents) for length-delimited ones and (tag, raw
/// varint bytes) for varints. Stops at anything it does not understand: the bytes are the
/// crate's own.
struct ProtoFields<'a>(&'a [u8]);

impl<'a> Iterator for ProtoFields<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, mut rest) = self.0.split_first()?;
        let value = if tag & 7 == 2 {
            let len = usize::try_from(read_varint(&mut rest)?).ok()?;
            let value = rest.get(..len)?;
            rest = &rest[len..];
            value
        } else {
            let before = rest;
            read_varint(&mut rest)?;
            &before[..before.len() - rest.len()]
        };
        self.0 = rest;
        Some((tag, value))
    }
}

/// Reads back the entries of a stream's buffer, in order.
pub(crate) struct Entries<'a>(pub(crate) &'a [u8]);

impl<'a> Iterator for Entries<'a> {
    type Item = EntryView<'a>;

    fn next(&mut self) -> Option<EntryView<'a>> {
        let all = self.0;
        let (&tag, mut rest) = all.split_first()?;
        if tag != ENTRY {
            return None;
        }
        let len = usize::try_from(read_varint(&mut rest)?).ok()?;
        let body = rest.get(..len)?;
        let framed = &all[..all.len() - rest.len() + len];
        self.0 = &all[framed.len()..];
        let mut view = EntryView {
            framed,
            unix_nanos: 0,
            line: &[],
            metadata: &[],
        };
        let mut fields = ProtoFields(body);
        loop {
            let at = body.len() - fields.0.len();
            let Some((tag, value)) = fields.next() else {
                break;
            };
            match tag {
                TIMESTAMP => view.unix_nanos = read_timestamp(value),
                LINE => view.line = value,
                METADATA => {
                    // Metadata comes last: the rest of the entry.
                    view.metadata = &body[at..];
                    break;
                }
                _ => {}
            }
        }
        Some(view)
    }
}

/// Nanoseconds since the epoch from a `google.protobuf.Timestamp`'s bytes.
fn read_timestamp(bytes: &[u8]) -> i128 {
    let (mut seconds, mut nanos) = (0_i64, 0_i64);
    for (field, mut v) in ProtoFields(bytes) {
        // Written by `timestamp`: two's complement int64 and a nanosecond count.
        let x = i64::from_ne_bytes(read_varint(&mut v).unwrap_or(0).to_ne_bytes());
        match field {
            SECONDS => seconds = x,
            NANOS => nanos = x,
            _ => {}
        }
    }
    i128::from(seconds) * 1_000_000_000 + i128::from(nanos)
}

/// The headers that go with an encoding: Content-Type and Content-Encoding.
pub(crate) fn content_headers(encoding: Encoding) -> (&'static str, Option<&'static str>) {
    match encoding {
        // As Grafana Alloy sends it: the snappy header is optional for Loki but explicit.
        Encoding::Protobuf => ("application/x-protobuf", Some("snappy")),
        Encoding::Json => ("application/json", None),
        Encoding::JsonGzip => ("application/json", Some("gzip")),
    }
}

/// One stream of a request: its label set and its entries, as [`put_entry`] wrote them.
#[derive(Clone, Copy)]
pub(crate) struct StreamRef<'a> {
    pub(crate) set: &'a LabelSet,
    pub(crate) entries: &'a [u8],
}

/// Raw requests up to this size are assembled and compressed in one piece (one snappy
/// block: the same bytes as any snappy encoder's, as Loki's test vectors have them);
/// larger ones stream by stream ([`Encoder::snappy_by_stream`]).
const ASSEMBLE_UP_TO: usize = 64 * 1024;

/// The block `snap` compresses on its own (its `MAX_BLOCK_SIZE`).
const SNAPPY_BLOCK: usize = super::snappy::MAX_BLOCK;

/// What encoding a request needs kept between requests: the snappy encoder's table and
/// buffers for the raw protobuf and the compressed streams.
#[derive(Default)]
pub(crate) struct Encoder {
    snappy: Option<snap::raw::Encoder>,
    /// `snap`'s block compression without its table's zeroing per block (`snappy.rs`), for
    /// the requests compressed stream by stream.
    blocks: Option<super::snappy::Blocks>,
    raw: Vec<u8>,
    /// One block of entries, compressed (zeroed once: snappy writes into an initialised
    /// slice).
    scratch: Vec<u8>,
}

impl Encoder {
    /// The request body for `streams`.
    ///
    /// # Errors
    ///
    /// Only when the compressor refuses its input (snappy's limit is 4 GiB, far above any
    /// batch).
    pub(crate) fn encode<'a>(
        &mut self,
        streams: impl Iterator<Item = StreamRef<'a>> + Clone,
        encoding: Encoding,
    ) -> Result<Vec<u8>, String> {
        match encoding {
            Encoding::Protobuf => {
                let total: usize = streams.clone().map(|s| field_len(stream_len(&s))).sum();
                if total <= ASSEMBLE_UP_TO {
                    self.snappy_assembled(streams)
                } else {
                    self.snappy_by_stream(streams, total)
                }
            }
            Encoding::Json => Ok(json(streams)),
            Encoding::JsonGzip => gzip(&json(streams)),
        }
    }

    /// The snappy-compressed `PushRequest` for `streams`, without the raw request being
    /// assembled: a snappy stream is its uncompressed length and then elements whose
    /// back-references are relative, and `snap` compresses each 64 KiB block on its own, so
    /// each stream's entries are compressed where they lie, a block at a time (into a
    /// scratch buffer of one block's bound), and their elements follow one another, with
    /// each stream's framing (tag, length, labels) as a literal between them. The output
    /// decodes to exactly the bytes [`protobuf`] writes (a test checks it), and the
    /// entries, the bulk of a request, are read once instead of copied and read again.
    /// The blocks are compressed by `snappy.rs`, `snap`'s algorithm with a table that is
    /// not zeroed for each block: the same bytes as `snap`'s (a test checks that too).
    fn snappy_by_stream<'a>(
        &mut self,
        streams: impl Iterator<Item = StreamRef<'a>> + Clone,
        total: usize,
    ) -> Result<Vec<u8>, String> {
        if u32::try_from(total).is_err() {
            return Err(format!(
                "snappy compression failed: {total} bytes is too big"
            ));
        }
        let blocks = self
            .blocks
            .get_or_insert_with(super::snappy::Blocks::default);
        let max = super::snappy::max_compressed_len(SNAPPY_BLOCK);
        if self.scratch.len() < max {
            self.scratch.resize(max, 0);
        }
        // Log lines compress well: a quarter of the raw size is mostly enough.
        let mut body = Vec::with_capacity(total / 4 + 64);
        put_varint(&mut body, total as u64);
        let mut framing = Vec::new();
        for s in streams {
            framing.clear();
            framing.push(STREAM);
            put_varint(&mut framing, stream_len(&s) as u64);
            put_bytes(&mut framing, LABELS, s.set.text.as_bytes());
            put_snappy_literal(&mut body, &framing);
            for block in s.entries.chunks(SNAPPY_BLOCK) {
                let n = blocks.compress(block, &mut self.scratch);
                body.extend_from_slice(self.scratch.get(..n).unwrap_or_default());
            }
        }
        Ok(body)
    }

    /// The snappy-compressed `PushRequest` for `streams`, assembled raw and compressed in
    /// one piece.
    fn snappy_assembled<'a>(
        &mut self,
        streams: impl Iterator<Item = StreamRef<'a>> + Clone,
    ) -> Result<Vec<u8>, String> {
        self.raw.clear();
        protobuf(&mut self.raw, streams);
        let snappy = self.snappy.get_or_insert_with(snap::raw::Encoder::new);
        let mut body = vec![0; snap::raw::max_compress_len(self.raw.len())];
        let n = snappy
            .compress(&self.raw, &mut body)
            .map_err(|e| format!("snappy compression failed: {e}"))?;
        body.truncate(n);
        Ok(body)
    }
}

/// A stream's `StreamAdapter` length: its labels field and its entries.
fn stream_len(s: &StreamRef<'_>) -> usize {
    field_len(s.set.text.len()) + s.entries.len()
}

/// Appends `bytes` as one snappy literal element: a tag with the length minus one (in the
/// tag below 60, else in the 1 to 4 bytes after it), then the bytes.
#[allow(clippy::cast_possible_truncation)] // lengths below 4 GiB, checked by the caller
fn put_snappy_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    let Some(n) = bytes.len().checked_sub(1) else {
        return;
    };
    if n < 60 {
        out.push((n as u8) << 2);
    } else {
        let width = (u64::BITS - (n as u64).leading_zeros()).div_ceil(8) as usize;
        out.push(((59 + width) as u8) << 2);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..width]);
    }
    out.extend_from_slice(bytes);
}

/// The raw (uncompressed) `PushRequest` for `streams`.
fn protobuf<'a>(out: &mut Vec<u8>, streams: impl Iterator<Item = StreamRef<'a>> + Clone) {
    let total: usize = streams.clone().map(|s| field_len(stream_len(&s))).sum();
    out.reserve(total);
    for s in streams {
        out.push(STREAM);
        put_varint(out, stream_len(&s) as u64);
        put_bytes(out, LABELS, s.set.text.as_bytes());
        out.extend_from_slice(s.entries);
    }
}

fn gzip(raw: &[u8]) -> Result<Vec<u8>, String> {
    // Level 1: log text compresses well even at the fastest level, and the worker's time is
    // better spent pushing.
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::fast(),
    );
    gz.write_all(raw)
        .and_then(|()| gz.finish())
        .map_err(|e| format!("gzip compression failed: {e}"))
}

/// `{"streams":[{"stream":{…},"values":[["<ns>","<line>",{…}],…]},…]}`.
fn json<'a>(streams: impl Iterator<Item = StreamRef<'a>> + Clone) -> Vec<u8> {
    let size: usize = streams.clone().map(|s| 64 + s.entries.len() * 5 / 4).sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(b"{\"streams\":[");
    for (i, stream) in streams.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"stream\":");
        let labels: Vec<_> = stream
            .set
            .pairs
            .iter()
            .map(|(n, v)| (n.as_str(), json_label_value(v)))
            .collect();
        json_pairs(&mut out, labels.iter().map(|(n, v)| (*n, v.as_ref())));
        out.extend_from_slice(b",\"values\":[");
        for (j, entry) in Entries(stream.entries).enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_entry(&mut out, &entry);
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}");
    out
}

/// A label value as the JSON encodings must send it. Loki turns a JSON label object back
/// into text with Go's `strconv.Quote`, which leaves U+FFFD unescaped, and its label parser
/// (the `PromQL` lexer) then refuses that character as `utf8.RuneError` ("invalid UTF-8 rune"),
/// failing the whole request. No JSON spelling avoids it, so U+FFFD is sent as `?`; the
/// protobuf encoding, which quotes the labels itself, keeps it.
fn json_label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains('\u{fffd}') {
        std::borrow::Cow::Owned(value.replace('\u{fffd}', "?"))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// The crate's own bytes are UTF-8 (lines are rendered as text, names and values are
/// `str`): a lossy view costs nothing for them.
fn text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

fn json_entry(out: &mut Vec<u8>, entry: &EntryView<'_>) {
    // Loki wants the timestamp as a decimal string: a JSON number is a 400.
    let _ = write!(out, "[\"{}\",", entry.unix_nanos);
    write_json_str(out, &text(entry.line));
    let pairs: Vec<_> = entry.pairs().map(|(n, v)| (text(n), text(v))).collect();
    if !pairs.is_empty() {
        out.push(b',');
        json_pairs(out, pairs.iter().map(|(n, v)| (n.as_ref(), v.as_ref())));
    }
    out.push(b']');
}

fn json_pairs<'a>(out: &mut Vec<u8>, pairs: impl Iterator<Item = (&'a str, &'a str)>) {
    out.push(b'{');
    for (i, (name, value)) in pairs.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, name);
        out.push(b':');
        write_json_str(out, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn set(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).into(), (*v).into()))
                .collect(),
        )
    }

    fn body(set: &LabelSet, ns: i128, line: &str, md: &[(&str, &str)], enc: Encoding) -> Vec<u8> {
        let mut metadata = Vec::new();
        for (n, v) in md {
            put_metadata(&mut metadata, n, v);
        }
        let mut entries = Vec::new();
        put_entry(&mut entries, ns, line.as_bytes(), &metadata);
        let stream = StreamRef {
            set,
            entries: &entries,
        };
        Encoder::default()
            .encode(std::iter::once(stream), enc)
            .unwrap()
    }

    fn raw(set: &LabelSet, ns: i128, line: &str, md: &[(&str, &str)]) -> Vec<u8> {
        let compressed = body(set, ns, line, md, Encoding::Protobuf);
        snap::raw::Decoder::new()
            .decompress_vec(&compressed)
            .unwrap()
    }

    #[test]
    fn protobuf_matches_the_spec_vector_1() {
        let body = body(
            &set(&[("foo", "bar2")]),
            1_570_818_238_000_000_000,
            "fizzbuzz",
            &[],
            Encoding::Protobuf,
        );
        assert_eq!(
            hex(&body),
            "248c0a220a0c7b666f6f3d2262617232227d12120a0608be9183ed05120866697a7a62757a7a"
        );
    }

    #[test]
    fn protobuf_matches_the_spec_vector_2_with_metadata() {
        let body = body(
            &set(&[("foo", "bar2")]),
            1_570_818_238_000_000_000,
            "fizzbuzz",
            &[("a", "a"), ("b", "b")],
            Encoding::Protobuf,
        );
        assert_eq!(
            hex(&body),
            "34cc0a320a0c7b666f6f3d2262617232227d12220a0608be9183ed05120866697a7a62757a7a1a060a01611201611a060a0162120162"
        );
    }

    #[test]
    fn protobuf_matches_the_spec_vector_3_with_nanos() {
        let raw = raw(
            &set(&[("app", "demo"), ("env", "dev")]),
            1_700_000_000_123_456_789,
            "hello",
            &[("trace_id", "0242ac120002")],
        );
        assert_eq!(
            hex(&raw),
            "0a490a177b6170703d2264656d6f222c20656e763d22646576227d122e0a0b0880e2cfaa0610959aef3a120568656c6c6f1a180a0874726163655f6964120c303234326163313230303032"
        );
    }

    #[test]
    fn a_request_compressed_stream_by_stream_decodes_to_the_raw_request() {
        // Streams of every size around the assembly limit and snappy's 64 KiB block, a
        // long label set (a literal with a multi-byte length) and an empty stream.
        let long = "v".repeat(300);
        let sets = [
            set(&[("app", "a")]),
            set(&[("app", &long)]),
            set(&[("app", "c")]),
        ];
        for sizes in [[0, 70_000, 3], [200_000, 1, 65_536], [ASSEMBLE_UP_TO, 0, 0]] {
            let entries: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| {
                    let mut buf = Vec::new();
                    let mut i = 0_u64;
                    while buf.len() < n {
                        let line = format!("line {i} of a stream, repeated: {}", i % 17);
                        put_entry(&mut buf, i128::from(i), line.as_bytes(), &[]);
                        i += 1;
                    }
                    buf
                })
                .collect();
            let streams = sets
                .iter()
                .zip(&entries)
                .map(|(set, e)| StreamRef { set, entries: e });
            let mut want = Vec::new();
            protobuf(&mut want, streams.clone());
            // The body as `snap` compressed each block before `snappy.rs` did: the same.
            let mut snapped = Vec::new();
            put_varint(&mut snapped, want.len() as u64);
            let mut snap = snap::raw::Encoder::new();
            for s in streams.clone() {
                let mut framing = vec![STREAM];
                put_varint(&mut framing, stream_len(&s) as u64);
                put_bytes(&mut framing, LABELS, s.set.text.as_bytes());
                if want.len() > ASSEMBLE_UP_TO {
                    put_snappy_literal(&mut snapped, &framing);
                    for block in s.entries.chunks(SNAPPY_BLOCK) {
                        let out = snap.compress_vec(block).unwrap();
                        snapped.extend_from_slice(&out[varint_len(block.len() as u64)..]);
                    }
                }
            }
            if want.len() <= ASSEMBLE_UP_TO {
                snapped = snap.compress_vec(&want).unwrap();
            }
            let mut encoder = Encoder::default();
            // Twice: the scratch buffer is reused.
            for _ in 0..2 {
                let body = encoder.encode(streams.clone(), Encoding::Protobuf).unwrap();
                assert!(body == snapped, "{sizes:?}");
                let got = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
                assert!(got == want, "{sizes:?}");
                assert!(body.len() < want.len() / 2, "{sizes:?} compresses");
            }
        }
    }

    #[test]
    fn snappy_literals_of_every_length_class_decode() {
        for n in [
            1_u32,
            59,
            60,
            61,
            255,
            256,
            257,
            65_536,
            65_537,
            1 << 24 | 1,
        ] {
            let bytes: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut body = Vec::new();
            put_varint(&mut body, u64::from(n));
            put_snappy_literal(&mut body, &bytes);
            assert_eq!(
                snap::raw::Decoder::new().decompress_vec(&body).unwrap(),
                bytes
            );
        }
    }

    #[test]
    fn varints_take_the_bytes_protobuf_says() {
        for (v, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!((out.len(), varint_len(v)), (len, len), "{v}");
            assert_eq!(read_varint(&mut &out[..]), Some(v));
        }
    }

    #[test]
    fn entries_read_back_as_written() {
        let mut md = Vec::new();
        put_metadata(&mut md, "trace_id", "abc");
        put_metadata(&mut md, "empty", "");
        let mut buf = Vec::new();
        let a = put_entry(&mut buf, 1_700_000_000_000_000_001, b"first", &md);
        put_entry(&mut buf, 0, b"", &[]);
        put_entry(&mut buf, -1, &vec![b'x'; 300], &[]);
        let read: Vec<_> = Entries(&buf).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].framed.len(), a);
        assert_eq!(read[0].unix_nanos, 1_700_000_000_000_000_001);
        assert_eq!(read[0].line, b"first");
        let pairs: Vec<_> = read[0].pairs().collect();
        assert_eq!(
            pairs,
            [(&b"trace_id"[..], &b"abc"[..]), (&b"empty"[..], &b""[..])]
        );
        assert_eq!((read[1].unix_nanos, read[1].line), (0, &b""[..]));
        assert_eq!(read[2].unix_nanos, -1);
        assert_eq!(read[2].line.len(), 300);
        let framed: Vec<u8> = read.iter().flat_map(|e| e.framed.to_vec()).collect();
        assert_eq!(framed, buf);
    }

    #[test]
    fn entries_written_in_place_are_put_entrys_bytes() {
        // Lines across every length class (and back), empty ones, metadata, and times
        // with zero, short and long nanoseconds, in one buffer written in place.
        let mut md = Vec::new();
        put_metadata(&mut md, "trace_id", "abc");
        let lens = [
            250, 250, 0, 1, 127, 128, 16_383, 16_384, 100, 0, 300, 2_000_000, 5, 250,
        ];
        let times: [i128; 5] = [
            1_700_000_000_000_000_000,
            1_700_000_000_000_000_001,
            1_700_000_000_300_000_000,
            1_700_000_001_999_999_999,
            5,
        ];
        let mut in_place = InPlace::default();
        let (mut got, mut want) = (Vec::new(), Vec::new());
        let mut i = 0_usize;
        for _round in 0..3 {
            for &len in &lens {
                for &t in &times {
                    i += 1;
                    let line: Vec<u8> = (0..len).map(|j| b"abcdefghij"[(i + j) % 10]).collect();
                    let meta: &[u8] = if i.is_multiple_of(3) { &md } else { &[] };
                    let before = got.len();
                    assert!(in_place.begin(&mut got, t));
                    got.extend_from_slice(&line);
                    let n = in_place.finish(&mut got, meta);
                    let m = put_entry(&mut want, t, &line, meta);
                    assert_eq!((n, got.len() - before), (m, m), "{len} at {t}");
                    assert!(got == want, "{len} at {t}");
                }
            }
        }
        // Before the epoch: not in place (then `put_entry`), nothing written.
        assert!(!in_place.begin(&mut got, -1));
        assert!(got == want);
    }

    #[test]
    fn json_has_string_timestamps_and_metadata_objects() {
        let body = body(
            &set(&[("app", "d\"e")]),
            1_700_000_000_000_000_001,
            "a \"q\"\n",
            &[("k", "v")],
            Encoding::Json,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let s = &v["streams"][0];
        assert_eq!(s["stream"]["app"], "d\"e");
        assert_eq!(s["values"][0][0], "1700000000000000001");
        assert_eq!(s["values"][0][1], "a \"q\"\n");
        assert_eq!(s["values"][0][2]["k"], "v");
    }

    #[test]
    fn json_label_values_never_carry_a_raw_replacement_character() {
        let body = body(
            &set(&[("app", "a\u{fffd}b")]),
            1,
            "x\u{fffd}",
            &[("m", "\u{fffd}")],
            Encoding::Json,
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["streams"][0]["stream"]["app"], "a?b");
        // Lines and metadata are not parsed as labels: they keep it.
        assert_eq!(v["streams"][0]["values"][0][1], "x\u{fffd}");
        assert_eq!(v["streams"][0]["values"][0][2]["m"], "\u{fffd}");
    }

    #[test]
    fn gzip_wraps_the_json() {
        use std::io::Read as _;
        let s = set(&[("a", "b")]);
        let gz = body(&s, 1, "line", &[], Encoding::JsonGzip);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, body(&s, 1, "line", &[], Encoding::Json));
    }

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let (seconds, nanos) = split_time(1_700_000_000_123_456_789);
        let mut head = Head::new();
        head.timestamp(seconds, nanos);
        let ts = head.as_slice();
        let n = timestamp_len(seconds, nanos);
        let mut secs = Vec::new();
        put_varint(&mut secs, 1_700_000_000);
        let mut nanos = Vec::new();
        put_varint(&mut nanos, 123_456_789);
        let mut want = vec![SECONDS];
        want.extend(secs);
        want.push(NANOS);
        want.extend(nanos);
        assert_eq!(ts.len(), n);
        assert_eq!(ts, &want[..]);
    }
}
