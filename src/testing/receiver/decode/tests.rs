use super::*;
use proptest::prelude::*;

const LIMIT: usize = 1 << 20;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn proto(body: &[u8]) -> Result<Push, DecodeError> {
    decode(
        None,
        Some(b"application/x-protobuf"),
        body,
        &DecodeLimits::bytes(LIMIT),
    )
}

fn json(body: &str) -> Result<Push, DecodeError> {
    decode(
        None,
        Some(b"application/json"),
        body.as_bytes(),
        &DecodeLimits::bytes(LIMIT),
    )
}

fn entry(ts_ns: i128, line: &str, metadata: &[(&str, &str)]) -> RawEntry {
    RawEntry {
        ts_ns,
        line: line.to_owned(),
        metadata: metadata
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
    }
}

fn one_stream(labels: &str, entries: Vec<RawEntry>) -> Push {
    Push {
        streams: vec![RawStream {
            labels: labels.to_owned(),
            entries,
        }],
    }
}

#[test]
fn spec_vector_1() {
    let body = hex("248c0a220a0c7b666f6f3d2262617232227d12120a0608be9183ed05120866697a7a62757a7a");
    let want = one_stream(
        r#"{foo="bar2"}"#,
        vec![entry(1_570_818_238_000_000_000, "fizzbuzz", &[])],
    );
    assert_eq!(proto(&body).unwrap(), want);
    let raw = hex("0a220a0c7b666f6f3d2262617232227d12120a0608be9183ed05120866697a7a62757a7a");
    assert_eq!(decode_protobuf(&raw).unwrap(), want);
}

#[test]
fn spec_vector_2() {
    let body = hex("34cc0a320a0c7b666f6f3d2262617232227d12220a0608be9183ed05120866697a7a62757a7a1a060a01611201611a060a0162120162");
    let want = one_stream(
        r#"{foo="bar2"}"#,
        vec![entry(
            1_570_818_238_000_000_000,
            "fizzbuzz",
            &[("a", "a"), ("b", "b")],
        )],
    );
    assert_eq!(proto(&body).unwrap(), want);
}

#[test]
fn spec_vector_3() {
    let raw = hex("0a490a177b6170703d2264656d6f222c20656e763d22646576227d122e0a0b0880e2cfaa0610959aef3a120568656c6c6f1a180a0874726163655f6964120c303234326163313230303032");
    let want = one_stream(
        r#"{app="demo", env="dev"}"#,
        vec![entry(
            1_700_000_000_123_456_789,
            "hello",
            &[("trace_id", "0242ac120002")],
        )],
    );
    assert_eq!(decode_protobuf(&raw).unwrap(), want);
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    assert_eq!(proto(&body).unwrap(), want);
}

#[test]
fn spec_json_example() {
    let body = r#"{"streams":[{"stream":{"app":"demo","env":"dev"},
      "values":[["1570818238000000000","a line"],
                ["1570818238000000001","another",{"trace_id":"0242ac120002"}]]}]}"#;
    let want = one_stream(
        r#"{app="demo", env="dev"}"#,
        vec![
            entry(1_570_818_238_000_000_000, "a line", &[]),
            entry(
                1_570_818_238_000_000_001,
                "another",
                &[("trace_id", "0242ac120002")],
            ),
        ],
    );
    assert_eq!(json(body).unwrap(), want);
}

#[test]
fn json_number_timestamp_is_an_error() {
    let err = json(r#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#).unwrap_err();
    assert!(matches!(err, DecodeError::BadRequest(m) if m.contains("timestamp")));
}

#[test]
fn json_numeric_label_values_are_text() {
    let got = json(r#"{"streams":[{"stream":{"port":8080},"values":[]}]}"#).unwrap();
    assert_eq!(got.streams[0].labels, r#"{port="8080"}"#);
}

#[test]
fn json_label_values_of_any_type_are_their_text_as_in_loki() {
    let got = json(
        r#"{"streams":[{"stream":{"a":true,"b":null,"c":[1,"x"],"d":{"k":"v"},"e":-3},"values":[]}]}"#,
    )
    .unwrap();
    assert_eq!(
        got.streams[0].labels,
        r#"{a="true", b="null", c="[1,\"x\"]", d="{\"k\":\"v\"}", e="-3"}"#
    );
}

#[test]
fn json_null_entries_are_skipped_as_in_loki() {
    let got = json(r#"{"streams":[{"stream":{"a":"b"},"values":[null,["1","x"],null]}]}"#).unwrap();
    assert_eq!(got.streams[0].entries.len(), 1);
    assert_eq!(got.streams[0].entries[0].line, "x");
    let err = json(r#"{"streams":[{"stream":{"a":"b"},"values":["1"]}]}"#).unwrap_err();
    assert!(matches!(err, DecodeError::BadRequest(m) if m.contains("expected an array")));
}

#[test]
fn json_null_values_and_stream_are_empty() {
    let got = json(r#"{"streams":[{"stream":null,"values":null}]}"#).unwrap();
    assert_eq!(got, one_stream("{}", vec![]));
}

#[test]
fn json_without_streams_has_none() {
    assert_eq!(json("{}").unwrap(), Push::default());
    assert_eq!(json(r#"{"streams":[]}"#).unwrap(), Push::default());
}

#[test]
fn json_timestamps_follow_go_parse_int() {
    assert_eq!(parse_int("+5").unwrap(), 5);
    assert_eq!(parse_int("-5").unwrap(), -5);
    for bad_ts in [
        "",
        "1.5",
        "1e9",
        " 1",
        "0x10",
        "+-1",
        "99999999999999999999",
    ] {
        assert!(parse_int(bad_ts).is_err(), "{bad_ts:?}");
    }
}

#[test]
fn deeply_nested_json_is_a_400() {
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(r#"{{"streams":[{{"stream":{{"a":{nested}}}}}]}}"#);
    assert!(matches!(json(&body), Err(DecodeError::BadRequest(_))));
}

#[test]
fn gzip_and_raw_deflate_are_decoded() {
    use flate2::write::{DeflateEncoder, GzEncoder};
    use std::io::Write;
    let text = r#"{"streams":[{"stream":{"a":"b"},"values":[["1","x"]]}]}"#;
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let mut df = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    df.write_all(text.as_bytes()).unwrap();
    let want = json(text).unwrap();
    let ct = Some(&b"application/json; charset=utf-8"[..]);
    assert_eq!(
        decode(
            Some(b"gzip"),
            ct,
            &gz.finish().unwrap(),
            &DecodeLimits::bytes(LIMIT)
        )
        .unwrap(),
        want
    );
    assert_eq!(
        decode(
            Some(b"deflate"),
            ct,
            &df.finish().unwrap(),
            &DecodeLimits::bytes(LIMIT)
        )
        .unwrap(),
        want
    );
}

#[test]
fn zlib_is_not_raw_deflate() {
    use flate2::write::ZlibEncoder;
    use std::io::Write;
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(br#"{"streams":[]}"#).unwrap();
    let got = decode(
        Some(b"deflate"),
        Some(b"application/json"),
        &z.finish().unwrap(),
        &DecodeLimits::bytes(LIMIT),
    );
    assert!(got.is_err());
}

#[test]
fn unknown_encoding_is_named_in_go_quotes() {
    let err = decode(
        Some(b"br"),
        Some(b"application/json"),
        b"{}",
        &DecodeLimits::bytes(LIMIT),
    )
    .unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadRequest(r#"Content-Encoding "br" not supported"#.into())
    );
}

#[test]
fn content_types_follow_go_mime() {
    assert_eq!(
        media_type("application/json; charset=utf-8").unwrap(),
        "application/json"
    );
    assert_eq!(
        media_type(" Application/JSON ").unwrap(),
        "application/json"
    );
    assert_eq!(media_type("text").unwrap(), "text");
    assert_eq!(media_type("a/b;").unwrap(), "a/b");
    assert_eq!(media_type("").unwrap_err(), "mime: no media type");
    assert_eq!(
        media_type("a b").unwrap_err(),
        "mime: expected slash after first token"
    );
    assert_eq!(
        media_type("a/").unwrap_err(),
        "mime: expected token after slash"
    );
    assert_eq!(
        media_type("a/b c").unwrap_err(),
        "mime: unexpected content after media subtype"
    );
    assert_eq!(
        media_type("a/b; x").unwrap_err(),
        "mime: invalid media parameter"
    );
    assert_eq!(
        media_type("a/b; x=1; X=2").unwrap_err(),
        "mime: duplicate parameter name"
    );
    assert_eq!(media_type("a/b; x=\"q;\\\"\"").unwrap(), "a/b");
}

#[test]
fn framed_snappy_is_rejected() {
    let mut framed = Vec::new();
    {
        use std::io::Write;
        let mut w = snap::write::FrameEncoder::new(&mut framed);
        w.write_all(b"\x0a\x00").unwrap();
    }
    assert_eq!(
        proto(&framed).unwrap_err(),
        DecodeError::BadRequest("snappy: corrupt input".into())
    );
}

#[test]
fn snappy_claiming_a_huge_size_is_413_before_allocating() {
    // A varint length of about 4 GiB followed by nothing.
    let body = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert!(matches!(proto(&body), Err(DecodeError::TooLarge(_))));
}

#[test]
fn gzip_bomb_is_413() {
    use flate2::write::GzEncoder;
    use std::io::Write;
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 4 << 20]).unwrap();
    let got = decode(
        Some(b"gzip"),
        Some(b"application/json"),
        &gz.finish().unwrap(),
        &DecodeLimits::bytes(LIMIT),
    );
    assert_eq!(got.unwrap_err(), too_large(LIMIT + 1, LIMIT));
}

#[test]
fn missing_proto_timestamp_is_go_zero_time() {
    let raw = proto::PushRequest {
        streams: vec![proto::StreamAdapter {
            labels: "{a=\"b\"}".into(),
            entries: vec![proto::EntryAdapter {
                line: "x".into(),
                ..Default::default()
            }],
            hash: 0,
        }],
        format: String::new(),
    };
    let got = decode_protobuf(&prost::Message::encode_to_vec(&raw)).unwrap();
    assert_eq!(
        got.streams[0].entries[0].ts_ns,
        i128::from(GO_ZERO_TIME_SECS) * 1_000_000_000
    );
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        enc in proptest::option::of(prop_oneof![Just(&b"gzip"[..]), Just(&b"deflate"[..]), Just(&b"snappy"[..]), Just(&b"x"[..])]),
        ct in proptest::option::of(prop_oneof![Just(&b"application/json"[..]), Just(&b"application/x-protobuf"[..]), Just(&b"\xff"[..])]),
    ) {
        let _ = decode(enc, ct, &body, &DecodeLimits::bytes(4096));
    }

    #[test]
    fn arbitrary_snappy_payloads_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..512)) {
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let _ = proto(&body);
    }

    #[test]
    fn arbitrary_json_text_never_panics(s in "\\PC{0,200}") {
        let _ = json(&s);
    }

    #[test]
    fn arbitrary_content_types_never_panic(s in "\\PC{0,60}") {
        let _ = media_type(&s);
    }
}

fn capped(streams: usize, entries: usize, pairs: usize) -> DecodeLimits {
    DecodeLimits {
        streams,
        entries,
        metadata_pairs: pairs,
        ..DecodeLimits::bytes(LIMIT)
    }
}

fn json_capped(body: &str, limits: &DecodeLimits) -> Result<Push, DecodeError> {
    decode(None, Some(b"application/json"), body.as_bytes(), limits)
}

#[test]
fn json_streams_entries_and_pairs_are_capped_while_decoding() {
    let body = r#"{"streams":[{"values":[["1","a",{"k":"v","l":"w"}]]},{"values":[["2","b"]]}]}"#;
    assert_eq!(
        json_capped(body, &capped(2, 2, 2)).unwrap().streams.len(),
        2
    );
    for (limits, what) in [
        (capped(1, 0, 0), "max_streams_per_request"),
        (capped(0, 1, 0), "max_entries_per_request"),
        (capped(0, 0, 1), "max_structured_metadata_pairs_per_request"),
    ] {
        let err = json_capped(body, &limits).unwrap_err();
        assert!(
            matches!(&err, DecodeError::TooLarge(m) if m.contains(what)),
            "{err:?}"
        );
    }
}

#[test]
fn protobuf_streams_are_capped_before_decoding() {
    let raw = [0x0a, 0x00].repeat(1000);
    let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let err = decode(
        None,
        Some(b"application/x-protobuf"),
        &body,
        &capped(999, 0, 0),
    )
    .unwrap_err();
    assert!(
        matches!(&err, DecodeError::TooLarge(m) if m.contains("more than 999 streams")),
        "{err:?}"
    );
    let ok = decode(
        None,
        Some(b"application/x-protobuf"),
        &body,
        &capped(1000, 0, 0),
    )
    .unwrap();
    assert_eq!(ok.streams.len(), 1000);
}

#[test]
fn json_syntax_errors_come_before_entry_errors_as_in_go() {
    let err = json(r#"{"streams":[{"values":[5]}]"#).unwrap_err();
    assert!(
        matches!(&err, DecodeError::BadRequest(m) if m.starts_with("loghttp.PushRequest: EOF")),
        "{err:?}"
    );
}

#[test]
fn json_entries_with_four_elements_and_odd_shapes_are_refused() {
    let err = json(r#"{"streams":[{"values":[[1,"x",{},4]]}]}"#).unwrap_err();
    assert_eq!(
        err,
        DecodeError::BadRequest("error reading entry: array must contains 2 values".into())
    );
    let err = json(r#"{"streams":[{"values":[["1",[1,2]]]}]}"#).unwrap_err();
    assert!(
        matches!(&err, DecodeError::BadRequest(m) if m.contains("line: expected a string, found an array")),
        "{err:?}"
    );
    let err = json(r#"{"streams":[{"values":[["1","x",{"k":[1]}]]}]}"#).unwrap_err();
    assert!(
        matches!(&err, DecodeError::BadRequest(m) if m.contains("expected a string, found an array")),
        "{err:?}"
    );
    let err = json("[]").unwrap_err();
    assert!(
        matches!(&err, DecodeError::BadRequest(m) if m.contains("expected struct JsonPush")),
        "{err:?}"
    );
    let err = json(r#"{"streams":[],"streams":[]}"#).unwrap_err();
    assert!(
        matches!(&err, DecodeError::BadRequest(m) if m.contains("duplicate field")),
        "{err:?}"
    );
}

#[test]
fn json_metadata_is_ordered_by_name_and_a_repeated_name_keeps_its_last_value() {
    let got = json(r#"{"streams":[{"values":[["1","x",{"b":"1","a":"2","b":"3"}]]}]}"#).unwrap();
    assert_eq!(
        got.streams[0].entries[0].metadata,
        [
            ("a".to_owned(), "2".to_owned()),
            ("b".to_owned(), "3".to_owned())
        ]
    );
}
