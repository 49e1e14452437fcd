//! Request bodies: Loki's protobuf `PushRequest` (snappy block compressed), or JSON,
//! optionally gzipped.
//!
//! The protobuf messages are written by hand with `prost`'s derive, tags as in Loki's
//! `logproto` package, so no `protoc` is needed at build time.

use std::io::Write as _;

use super::labels::LabelSet;
use super::Encoding;
use crate::record::write_json_str;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub(crate) labels: String,
    #[prost(message, repeated, tag = "2")]
    pub(crate) entries: Vec<EntryAdapter>,
    /// Loki-internal; clients leave it 0.
    #[prost(uint64, tag = "3")]
    pub(crate) hash: u64,
}

/// `logproto.EntryAdapter` (the query-only `parsed` field is never set by clients).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub(crate) timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub(crate) line: String,
    #[prost(message, repeated, tag = "3")]
    pub(crate) structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct Timestamp {
    #[prost(int64, tag = "1")]
    pub(crate) seconds: i64,
    #[prost(int32, tag = "2")]
    pub(crate) nanos: i32,
}

impl Timestamp {
    /// From nanoseconds since the Unix epoch (saturating far outside Loki's range).
    pub(crate) fn from_unix_nanos(ns: i128) -> Self {
        let seconds = i64::try_from(ns.div_euclid(1_000_000_000)).unwrap_or(i64::MAX);
        // rem_euclid is in 0..1e9, which always fits an i32.
        let nanos = i32::try_from(ns.rem_euclid(1_000_000_000)).unwrap_or(0);
        Timestamp { seconds, nanos }
    }

    /// Nanoseconds since the Unix epoch.
    pub(crate) fn unix_nanos(self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }
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

/// The request body for `req` (whose streams' label sets are `sets`, in the same order).
///
/// # Errors
///
/// Only when the compressor refuses its input (snappy's limit is 4 GiB, far above any batch).
pub(crate) fn encode(
    req: &PushRequest,
    sets: &[std::sync::Arc<LabelSet>],
    encoding: Encoding,
) -> Result<Vec<u8>, String> {
    match encoding {
        Encoding::Protobuf => {
            let raw = prost::Message::encode_to_vec(req);
            snap::raw::Encoder::new()
                .compress_vec(&raw)
                .map_err(|e| format!("snappy compression failed: {e}"))
        }
        Encoding::Json => Ok(json(req, sets)),
        Encoding::JsonGzip => gzip(&json(req, sets)),
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
fn json(req: &PushRequest, sets: &[std::sync::Arc<LabelSet>]) -> Vec<u8> {
    let size: usize = req
        .streams
        .iter()
        .map(|s| 64 + s.entries.iter().map(|e| e.line.len() + 40).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(size + 16);
    out.extend_from_slice(b"{\"streams\":[");
    for (i, (stream, set)) in req.streams.iter().zip(sets).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"stream\":");
        let labels: Vec<_> = set
            .pairs
            .iter()
            .map(|(n, v)| (n.as_str(), json_label_value(v)))
            .collect();
        json_pairs(&mut out, labels.iter().map(|(n, v)| (*n, v.as_ref())));
        out.extend_from_slice(b",\"values\":[");
        for (j, entry) in stream.entries.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_entry(&mut out, entry);
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

fn json_entry(out: &mut Vec<u8>, entry: &EntryAdapter) {
    let ns = entry.timestamp.map_or(0, Timestamp::unix_nanos);
    // Loki wants the timestamp as a decimal string: a JSON number is a 400.
    let _ = write!(out, "[\"{ns}\",");
    write_json_str(out, &entry.line);
    if !entry.structured_metadata.is_empty() {
        out.push(b',');
        json_pairs(
            out,
            entry
                .structured_metadata
                .iter()
                .map(|p| (p.name.as_str(), p.value.as_str())),
        );
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
    use std::sync::Arc;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    fn request(labels: &str, ns: i128, line: &str, md: &[(&str, &str)]) -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: labels.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(ns)),
                    line: line.into(),
                    structured_metadata: md
                        .iter()
                        .map(|(n, v)| LabelPairAdapter {
                            name: (*n).into(),
                            value: (*v).into(),
                        })
                        .collect(),
                }],
                hash: 0,
            }],
        }
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<Arc<LabelSet>> {
        let pairs = pairs
            .iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect();
        vec![Arc::new(LabelSet::new(pairs))]
    }

    #[test]
    fn protobuf_matches_the_spec_vector_1() {
        let req = request(
            r#"{foo="bar2"}"#,
            1_570_818_238_000_000_000,
            "fizzbuzz",
            &[],
        );
        let body = encode(&req, &set(&[("foo", "bar2")]), Encoding::Protobuf).unwrap();
        assert_eq!(
            hex(&body),
            "248c0a220a0c7b666f6f3d2262617232227d12120a0608be9183ed05120866697a7a62757a7a"
        );
    }

    #[test]
    fn protobuf_matches_the_spec_vector_2_with_metadata() {
        let md = [("a", "a"), ("b", "b")];
        let req = request(
            r#"{foo="bar2"}"#,
            1_570_818_238_000_000_000,
            "fizzbuzz",
            &md,
        );
        let body = encode(&req, &set(&[("foo", "bar2")]), Encoding::Protobuf).unwrap();
        assert_eq!(
            hex(&body),
            "34cc0a320a0c7b666f6f3d2262617232227d12220a0608be9183ed05120866697a7a62757a7a1a060a01611201611a060a0162120162"
        );
    }

    #[test]
    fn protobuf_matches_the_spec_vector_3_with_nanos() {
        let labels = r#"{app="demo", env="dev"}"#;
        let md = [("trace_id", "0242ac120002")];
        let req = request(labels, 1_700_000_000_123_456_789, "hello", &md);
        assert_eq!(
            hex(&prost::Message::encode_to_vec(&req)),
            "0a490a177b6170703d2264656d6f222c20656e763d22646576227d122e0a0b0880e2cfaa0610959aef3a120568656c6c6f1a180a0874726163655f6964120c303234326163313230303032"
        );
    }

    #[test]
    fn json_has_string_timestamps_and_metadata_objects() {
        let req = request("x", 1_700_000_000_000_000_001, "a \"q\"\n", &[("k", "v")]);
        let body = encode(&req, &set(&[("app", "d\"e")]), Encoding::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let s = &v["streams"][0];
        assert_eq!(s["stream"]["app"], "d\"e");
        assert_eq!(s["values"][0][0], "1700000000000000001");
        assert_eq!(s["values"][0][1], "a \"q\"\n");
        assert_eq!(s["values"][0][2]["k"], "v");
    }

    #[test]
    fn json_label_values_never_carry_a_raw_replacement_character() {
        let req = request("{}", 1, "x\u{fffd}", &[("m", "\u{fffd}")]);
        let body = encode(&req, &set(&[("app", "a\u{fffd}b")]), Encoding::Json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["streams"][0]["stream"]["app"], "a?b");
        // Lines and metadata are not parsed as labels: they keep it.
        assert_eq!(v["streams"][0]["values"][0][1], "x\u{fffd}");
        assert_eq!(v["streams"][0]["values"][0][2]["m"], "\u{fffd}");
    }

    #[test]
    fn gzip_wraps_the_json() {
        use std::io::Read as _;
        let req = request("x", 1, "line", &[]);
        let body = encode(&req, &set(&[("a", "b")]), Encoding::JsonGzip).unwrap();
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(
            plain,
            encode(&req, &set(&[("a", "b")]), Encoding::Json).unwrap()
        );
    }

    #[test]
    fn timestamps_split_into_seconds_and_nanos() {
        let t = Timestamp::from_unix_nanos(1_700_000_000_123_456_789);
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
        assert_eq!(t.unix_nanos(), 1_700_000_000_123_456_789);
    }
}
