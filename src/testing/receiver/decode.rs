//! Request bodies: Content-Encoding, Content-Type, and the JSON and protobuf push formats.
//!
//! The protobuf messages are hand-written here from Loki's `logproto` field numbers, not
//! shared with the Loki sink's encoder, so a wrong tag on one side shows up as a test failure.

mod budget;
mod json;

use std::io::Read;

use super::labels;

pub(crate) use budget::DecodeLimits;
use budget::{scan_protobuf, Budget};

/// A decoded push request, before label parsing and validation.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Push {
    /// The streams in request order (including those without entries).
    pub(crate) streams: Vec<RawStream>,
}

/// One stream as sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RawStream {
    /// The label string, e.g. `{app="demo"}` (for JSON, built as Loki builds it).
    pub(crate) labels: String,
    /// Entries in request order.
    pub(crate) entries: Vec<RawEntry>,
}

/// One entry as sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct RawEntry {
    /// Nanoseconds since the Unix epoch (wide, so hostile timestamps cannot overflow).
    pub(crate) ts_ns: i128,
    pub(crate) line: String,
    pub(crate) metadata: Vec<(String, String)>,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// 400 with this text.
    BadRequest(String),
    /// 413 with this text.
    TooLarge(String),
}

fn bad(msg: impl Into<String>) -> DecodeError {
    DecodeError::BadRequest(msg.into())
}

/// The message Loki gives for a body over a size limit.
pub(crate) fn too_large(size: usize, limit: usize) -> DecodeError {
    DecodeError::TooLarge(format!(
        "request body too large: {size} bytes, limit: {limit} bytes"
    ))
}

/// Go's zero `time.Time` (year 1), what Loki sees for an entry without a timestamp.
const GO_ZERO_TIME_SECS: i64 = -62_135_596_800;

mod proto {
    //! `logproto.PushRequest` and friends (proto3), by field number.

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub(crate) streams: Vec<StreamAdapter>,
        #[prost(string, tag = "2")]
        pub(crate) format: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct StreamAdapter {
        #[prost(string, tag = "1")]
        pub(crate) labels: String,
        #[prost(message, repeated, tag = "2")]
        pub(crate) entries: Vec<EntryAdapter>,
        #[prost(uint64, tag = "3")]
        pub(crate) hash: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct EntryAdapter {
        #[prost(message, optional, tag = "1")]
        pub(crate) timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub(crate) line: String,
        #[prost(message, repeated, tag = "3")]
        pub(crate) structured_metadata: Vec<LabelPairAdapter>,
        #[prost(message, repeated, tag = "4")]
        pub(crate) parsed: Vec<LabelPairAdapter>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct Timestamp {
        #[prost(int64, tag = "1")]
        pub(crate) seconds: i64,
        #[prost(int32, tag = "2")]
        pub(crate) nanos: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct LabelPairAdapter {
        #[prost(string, tag = "1")]
        pub(crate) name: String,
        #[prost(string, tag = "2")]
        pub(crate) value: String,
    }
}

/// Decodes a request body given its `Content-Encoding` and `Content-Type` header values.
///
/// `limits.decoded_bytes` bounds every decompressed size (gzip, deflate, snappy), checked
/// while decompressing; the streams, entries and metadata pairs are counted against their
/// caps before any of them is built. So a small hostile body cannot make the receiver
/// allocate without bound, nor take long to be refused.
pub(crate) fn decode(
    encoding: Option<&[u8]>,
    content_type: Option<&[u8]>,
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<Push, DecodeError> {
    let max_decoded = limits.decoded_bytes;
    let budget = Budget::new(*limits);
    let encoding = Encoding::parse(encoding.unwrap_or_default())?;
    // Go's gzip reader checks the header at once, before the Content-Type is looked at.
    if encoding == Encoding::Gzip {
        check_gzip_header(body)?;
    }
    let media =
        media_type(&String::from_utf8_lossy(content_type.unwrap_or_default())).map_err(bad)?;
    let body = encoding.decompress(body, max_decoded)?;
    if media == "application/json" {
        json::decode_json(&body, &budget)
    } else {
        let raw = snappy_block(&body, max_decoded)?;
        scan_protobuf(&raw, &budget)?;
        decode_protobuf(&raw)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        match value {
            // `snappy` only says what the protobuf path always does anyway.
            b"" | b"snappy" => Ok(Encoding::Identity),
            b"gzip" => Ok(Encoding::Gzip),
            b"deflate" => Ok(Encoding::Deflate),
            other => Err(bad(format!(
                "Content-Encoding {} not supported",
                labels::quote_bytes(other)
            ))),
        }
    }

    fn decompress(
        self,
        body: &[u8],
        limit: usize,
    ) -> Result<std::borrow::Cow<'_, [u8]>, DecodeError> {
        match self {
            Encoding::Identity => Ok(body.into()),
            Encoding::Gzip => {
                read_bounded(flate2::read::MultiGzDecoder::new(body), limit).map(Into::into)
            }
            // Raw DEFLATE (RFC 1951), as Go's `compress/flate`; not zlib.
            Encoding::Deflate => {
                read_bounded(flate2::read::DeflateDecoder::new(body), limit).map(Into::into)
            }
        }
    }
}

fn check_gzip_header(body: &[u8]) -> Result<(), DecodeError> {
    match body {
        [] => Err(bad("EOF")),
        [0x1f, 0x8b, 8, ..] if body.len() >= 10 => Ok(()),
        [0x1f, 0x8b, 8, ..] | [0x1f, 0x8b] | [0x1f] => Err(bad("unexpected EOF")),
        _ => Err(bad("gzip: invalid header")),
    }
}

/// Reads a decompressor to the end, refusing more than `limit` bytes of output.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(|e| {
        bad(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "unexpected EOF",
            _ => "flate: corrupt input",
        })
    })?;
    if out.len() > limit {
        return Err(too_large(out.len(), limit));
    }
    Ok(out)
}

/// Go's `mime.ParseMediaType`, returning the lower-cased media type or Go's error text.
pub(crate) fn media_type(value: &str) -> Result<String, &'static str> {
    let (base, mut params) = value.split_at(value.find(';').unwrap_or(value.len()));
    let media = base.trim().to_ascii_lowercase();
    let (typ, rest) = consume_token(&media);
    if typ.is_empty() {
        return Err("mime: no media type");
    }
    if !rest.is_empty() {
        let Some(after) = rest.strip_prefix('/') else {
            return Err("mime: expected slash after first token");
        };
        let (sub, rest) = consume_token(after);
        if sub.is_empty() {
            return Err("mime: expected token after slash");
        }
        if !rest.is_empty() {
            return Err("mime: unexpected content after media subtype");
        }
    }
    let mut seen = Vec::new();
    loop {
        params = params.trim_start();
        if params.is_empty() {
            break;
        }
        match consume_param(params) {
            Some((key, rest)) => {
                if seen.contains(&key) {
                    return Err("mime: duplicate parameter name");
                }
                seen.push(key);
                params = rest;
            }
            None if params.trim() == ";" => break,
            None => return Err("mime: invalid media parameter"),
        }
    }
    Ok(media)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii() && c > ' ' && c != '\u{7f}' && !"()<>@,;:\\\"/[]?=".contains(c)
}

fn consume_token(s: &str) -> (&str, &str) {
    let end = s.find(|c| !is_token_char(c)).unwrap_or(s.len());
    s.split_at(end)
}

/// One `; key=value` parameter: its lower-cased key and what follows it.
fn consume_param(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix(';')?.trim_start();
    let (key, rest) = consume_token(rest);
    if key.is_empty() {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let rest = if let Some(quoted) = rest.strip_prefix('"') {
        skip_quoted(quoted)?
    } else {
        let (value, rest) = consume_token(rest);
        if value.is_empty() {
            return None;
        }
        rest
    };
    Some((key.to_ascii_lowercase(), rest))
}

/// Skips a quoted-string body (after its opening quote), returning what follows it.
fn skip_quoted(s: &str) -> Option<&str> {
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some(&s[i + 1..]),
            '\\' => {
                chars.next()?;
            }
            _ => {}
        }
    }
    None
}

/// Snappy **block** format (not framed), with the decoded size checked before allocating.
fn snappy_block(body: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    const CORRUPT: &str = "snappy: corrupt input";
    let len = snap::raw::decompress_len(body).map_err(|_| bad(CORRUPT))?;
    if len > limit {
        return Err(too_large(len, limit));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|_| bad(CORRUPT))
}

fn decode_protobuf(bytes: &[u8]) -> Result<Push, DecodeError> {
    let req =
        <proto::PushRequest as prost::Message>::decode(bytes).map_err(|e| bad(e.to_string()))?;
    let streams = req
        .streams
        .into_iter()
        .map(|s| RawStream {
            labels: s.labels,
            entries: s.entries.into_iter().map(proto_entry).collect(),
        })
        .collect();
    Ok(Push { streams })
}

fn proto_entry(e: proto::EntryAdapter) -> RawEntry {
    let (secs, nanos) = e
        .timestamp
        .map_or((GO_ZERO_TIME_SECS, 0), |t| (t.seconds, t.nanos));
    RawEntry {
        ts_ns: i128::from(secs) * 1_000_000_000 + i128::from(nanos),
        line: e.line,
        metadata: e
            .structured_metadata
            .into_iter()
            .map(|p| (p.name, p.value))
            .collect(),
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`, with its error text.
fn parse_int(s: &str) -> Result<i64, DecodeError> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let syntax_ok = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let reason = if syntax_ok {
        "value out of range"
    } else {
        "invalid syntax"
    };
    s.strip_prefix('+')
        .unwrap_or(s)
        .parse::<i64>()
        .ok()
        .filter(|_| syntax_ok)
        .ok_or_else(|| {
            bad(format!(
                "error reading entry timestamp: strconv.ParseInt: parsing {}: {reason}",
                labels::quote(s)
            ))
        })
}

#[cfg(test)]
mod tests;
