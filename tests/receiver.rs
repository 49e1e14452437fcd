//! The Loki-compatible receiver over real TCP: the spec's status table, its test vectors,
//! an independent client (tracing-loki), and every scripted fault.
//!
//! Every test installs the global subscriber first, though only one awaits an event: the
//! tests share a process, and a receiver event hit first without the global subscriber can
//! cache its callsite as uninteresting for the whole process (tokio-rs/tracing#3611).
#![cfg(all(feature = "testing", feature = "loki"))]

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sinkwatch::testing::{LokiReceiver, WaitErrorKind};

const WAIT: Duration = Duration::from_secs(30);
const JSON: &str = "application/json";
const PROTO: &str = "application/x-protobuf";
/// 2023-11-14T22:13:20Z, the fixed "now" of the time-sensitive tests.
const NOW_S: i64 = 1_700_000_000;

struct Answer {
    status: u16,
    body: String,
    headers: reqwest::header::HeaderMap,
}

/// A fresh client per request, without pooling, so a receiver that went down and came back
/// never meets a stale keep-alive connection.
async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> reqwest::Result<Answer> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let mut req = client.post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    Ok(Answer {
        status,
        headers,
        body: resp.text().await?,
    })
}

async fn post_json(r: &LokiReceiver, body: &str) -> Answer {
    post(
        &r.push_url(),
        &[("content-type", JSON)],
        body.as_bytes().to_vec(),
    )
    .await
    .unwrap()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn fixed_ns(offset_s: i64) -> String {
    (i128::from(NOW_S + offset_s) * 1_000_000_000).to_string()
}

async fn fixed_receiver() -> LokiReceiver {
    LokiReceiver::builder()
        .fixed_time(UNIX_EPOCH + Duration::from_secs(NOW_S.unsigned_abs()))
        .start()
        .await
        .unwrap()
}

fn stream_json(labels: &str, values: &[(String, &str)]) -> String {
    let vals: Vec<String> = values
        .iter()
        .map(|(ts, line)| format!(r#"["{ts}",{}]"#, serde_json::to_string(line).unwrap()))
        .collect();
    format!(
        r#"{{"streams":[{{"stream":{labels},"values":[{}]}}]}}"#,
        vals.join(",")
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn assert_error(a: &Answer, status: u16, text: &str) {
    assert_eq!(a.status, status, "body: {}", a.body);
    assert_eq!(a.body, format!("{text}\n"));
    assert_eq!(a.headers["content-type"], "text/plain; charset=utf-8");
}

// ---- success and the spec's test vector over HTTP ----

#[tokio::test(flavor = "multi_thread")]
async fn spec_vector_1_is_accepted_over_http() {
    sinkwatch::testing::init();
    // The vector's timestamp is in 2019: move "now" there so it is not too old.
    let r = LokiReceiver::builder()
        .fixed_time(UNIX_EPOCH + Duration::from_secs(1_570_818_238))
        .start()
        .await
        .unwrap();
    let body = hex("248c0a220a0c7b666f6f3d2262617232227d12120a0608be9183ed05120866697a7a62757a7a");
    let a = post(
        &r.push_url(),
        &[("content-type", PROTO), ("content-encoding", "snappy")],
        body,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 204);
    assert_eq!(a.body, "");
    let e = &r.entries()[0];
    assert_eq!(
        (e.tenant.as_str(), e.stream.as_str()),
        ("fake", r#"{foo="bar2"}"#)
    );
    assert_eq!(
        (e.timestamp_ns, e.line.as_str()),
        (1_570_818_238_000_000_000, "fizzbuzz")
    );
    let req = &r.requests()[0];
    assert_eq!((req.status, req.accepted, req.bytes), (204, 1, 38));
    assert_eq!(req.content_encoding.as_deref(), Some("snappy"));
}

#[tokio::test(flavor = "multi_thread")]
async fn json_with_structured_metadata_is_recorded_per_stream() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let (t1, t2) = (now_ns(), now_ns() + 1);
    let body = format!(
        r#"{{"streams":[{{"stream":{{"env":"dev","app":"demo","empty":""}},
        "values":[["{t1}","a line"],["{t2}","another",{{"trace_id":"0242ac120002"}}]]}},
        {{"stream":{{"app":"other"}},"values":null}}]}}"#
    );
    let a = post(
        &r.push_url(),
        &[("content-type", "application/json; charset=utf-8")],
        body.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 204, "{}", a.body);
    let streams = r.streams("fake");
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].labels, r#"{app="demo", env="dev"}"#);
    assert_eq!(
        streams[0].entries[1].metadata("trace_id"),
        Some("0242ac120002")
    );
    assert_eq!(streams[0].entries[1].label("app"), Some("demo"));
    assert_eq!(r.lines(), ["a line", "another"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_stream_empty_is_204() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let a = post_json(&r, r#"{"streams":[{"stream":{"a":"b"},"values":[]}]}"#).await;
    assert_eq!((a.status, r.entry_count()), (204, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_and_raw_deflate_bodies_are_accepted() {
    use flate2::write::{DeflateEncoder, GzEncoder};
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let body = stream_json(r#"{"a":"b"}"#, &[(now_ns().to_string(), "zipped")]);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let mut df = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    df.write_all(body.as_bytes()).unwrap();
    for (enc, bytes) in [
        ("gzip", gz.finish().unwrap()),
        ("deflate", df.finish().unwrap()),
    ] {
        let a = post(
            &r.push_url(),
            &[("content-type", JSON), ("content-encoding", enc)],
            bytes,
        )
        .await
        .unwrap();
        assert_eq!(a.status, 204, "{enc}: {}", a.body);
    }
    // The second push is an exact duplicate of the first: dropped silently.
    assert_eq!(r.entry_count(), 1);
}

// ---- the status table: 400s from encoding, type, body and labels ----

#[tokio::test(flavor = "multi_thread")]
async fn unsupported_content_encoding_is_400() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let a = post(
        &r.push_url(),
        &[("content-type", JSON), ("content-encoding", "br")],
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    assert_error(&a, 400, r#"Content-Encoding "br" not supported"#);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_content_type_is_400() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let a = post(&r.push_url(), &[], b"{}".to_vec()).await.unwrap();
    assert_error(&a, 400, "mime: no media type");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_snappy_is_400_with_snappys_text() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let a = post(
        &r.push_url(),
        &[("content-type", PROTO)],
        b"not snappy at all".to_vec(),
    )
    .await
    .unwrap();
    assert_error(&a, 400, "snappy: corrupt input");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_labels_fail_the_whole_request() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let ts = now_ns();
    let body = format!(
        r#"{{"streams":[{{"stream":{{"ok":"x"}},"values":[["{ts}","kept?"]]}},
        {{"stream":{{"bad-name":"x"}},"values":[["{ts}","y"]]}}]}}"#
    );
    let a = post_json(&r, &body).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body
            .starts_with("couldn't parse labels: 1:5: parse error"),
        "{}",
        a.body
    );
    assert_eq!(r.entry_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_number_timestamp_is_400() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let a = post_json(
        &r,
        r#"{"streams":[{"stream":{"a":"b"},"values":[[1,"x"]]}]}"#,
    )
    .await;
    assert_eq!(a.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_json_is_400_not_a_crash() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let nested = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let a = post_json(&r, &format!(r#"{{"streams":{nested}}}"#)).await;
    assert_eq!(a.status, 400);
}

// ---- 401, tenant ids, 413, 422 ----

#[tokio::test(flavor = "multi_thread")]
async fn auth_mode_requires_and_checks_the_tenant() {
    sinkwatch::testing::init();
    let r = LokiReceiver::builder().auth(true).start().await.unwrap();
    let body = stream_json(r#"{"a":"b"}"#, &[(now_ns().to_string(), "x")]).into_bytes();
    let ct = ("content-type", JSON);
    let a = post(&r.push_url(), &[ct], body.clone()).await.unwrap();
    assert_error(&a, 401, "no org id");
    let a = post(&r.push_url(), &[ct, ("x-scope-orgid", "a/b")], body.clone())
        .await
        .unwrap();
    assert_error(
        &a,
        400,
        "tenant ID 'a/b' contains unsupported character '/'",
    );
    let a = post(&r.push_url(), &[ct, ("x-scope-orgid", "..")], body.clone())
        .await
        .unwrap();
    assert_error(&a, 400, "tenant ID is '.' or '..'");
    let a = post(&r.push_url(), &[ct, ("x-scope-orgid", "team-a")], body)
        .await
        .unwrap();
    assert_eq!(a.status, 204);
    assert_eq!(r.entries_for("team-a").len(), 1);
    assert_eq!(r.requests()[3].org_id.as_deref(), Some("team-a"));
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_off_means_tenant_fake_whatever_the_header() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let body = stream_json(r#"{"a":"b"}"#, &[(now_ns().to_string(), "x")]).into_bytes();
    let a = post(
        &r.push_url(),
        &[("content-type", JSON), ("x-scope-orgid", "t")],
        body,
    )
    .await
    .unwrap();
    assert_eq!(a.status, 204);
    assert_eq!(r.entries()[0].tenant, "fake");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_the_limit_is_413() {
    sinkwatch::testing::init();
    let r = LokiReceiver::builder()
        .max_body_bytes(100)
        .start()
        .await
        .unwrap();
    let a = post(&r.push_url(), &[("content-type", JSON)], vec![b' '; 101])
        .await
        .unwrap();
    assert_error(
        &a,
        413,
        "request body too large: 101 bytes, limit: 100 bytes",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn decompression_bomb_is_413() {
    use flate2::write::GzEncoder;
    sinkwatch::testing::init();
    let r = LokiReceiver::builder()
        .max_decompressed_bytes(1 << 20)
        .start()
        .await
        .unwrap();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 8 << 20]).unwrap();
    let a = post(
        &r.push_url(),
        &[("content-type", JSON), ("content-encoding", "gzip")],
        gz.finish().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 413, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_streams_is_422() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    for body in [r#"{"streams":[]}"#, "{}"] {
        let a = post_json(&r, body).await;
        assert_error(
            &a,
            422,
            "error at least one valid stream is required for ingestion",
        );
    }
}

// ---- per-stream and per-entry validation, partial success ----

#[tokio::test(flavor = "multi_thread")]
async fn partial_success_stores_valid_entries_then_groups_errors() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let body = stream_json(
        r#"{"app":"demo"}"#,
        &[
            (fixed_ns(0), "good"),
            (fixed_ns(-8 * 24 * 3600), "old"),
            (fixed_ns(-8 * 24 * 3600), "old2"),
        ],
    );
    let a = post_json(&r, &body).await;
    assert_error(
        &a,
        400,
        "2 errors like: entry for stream '{app=\"demo\"}' has timestamp too old: 2023-11-06T22:13:20Z, \
         oldest acceptable timestamp is: 2023-11-07T22:13:20Z",
    );
    assert_eq!(r.lines(), ["good"]);
    let req = &r.requests()[0];
    assert_eq!((req.accepted, req.rejected), (1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn too_new_is_400() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let a = post_json(&r, &stream_json(r#"{"a":"b"}"#, &[(fixed_ns(601), "x")])).await;
    assert_error(
        &a,
        400,
        "entry for stream '{a=\"b\"}' has timestamp too new: 2023-11-14T22:23:21Z",
    );
    let a = post_json(&r, &stream_json(r#"{"a":"b"}"#, &[(fixed_ns(600), "x")])).await;
    assert_eq!(a.status, 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn line_over_256_kib_is_rejected_not_truncated() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let line = "x".repeat(256 * 1024 + 1);
    let a = post_json(&r, &stream_json(r#"{"a":"b"}"#, &[(fixed_ns(0), &line)])).await;
    assert_error(
        &a,
        400,
        "Max entry size '262144' bytes exceeded for stream '{a=\"b\"}' while adding an entry with length '262145' bytes",
    );
    assert_eq!(r.entry_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn structured_metadata_limits() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let pairs: Vec<String> = (0..129).map(|i| format!(r#""k{i}":"v""#)).collect();
    let many = format!(
        r#"{{"streams":[{{"stream":{{"a":"b"}},"values":[["{}","x",{{{}}}]]}}]}}"#,
        fixed_ns(0),
        pairs.join(",")
    );
    let a = post_json(&r, &many).await;
    assert_eq!(a.status, 400);
    assert!(
        a.body
            .contains("has too many structured metadata labels: '129', limit: '128'"),
        "{}",
        a.body
    );
    let big = format!(
        r#"{{"streams":[{{"stream":{{"a":"b"}},"values":[["{}","x",{{"k":"{}"}}]]}}]}}"#,
        fixed_ns(0),
        "v".repeat(64 * 1024)
    );
    let a = post_json(&r, &big).await;
    assert!(
        a.body
            .contains("has structured metadata too large: '65537' bytes, limit: '65536' bytes"),
        "{}",
        a.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn label_rules_are_checked_per_stream() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let sixteen: Vec<String> = (0..16).map(|i| format!(r#""l{i:02}":"v""#)).collect();
    let cases = [
        (
            format!("{{{}}}", sixteen.join(",")),
            "has 16 label names; limit 15",
        ),
        (
            format!(r#"{{"{}":"v"}}"#, "n".repeat(1025)),
            "has label name too long",
        ),
        (
            format!(r#"{{"a":"{}"}}"#, "v".repeat(2049)),
            "has label value too long",
        ),
        (
            r#"{"a":""}"#.to_owned(),
            "error at least one label pair is required per stream",
        ),
    ];
    for (labels, want) in cases {
        let a = post_json(&r, &stream_json(&labels, &[(fixed_ns(0), "x")])).await;
        assert_eq!(a.status, 400);
        assert!(a.body.contains(want), "{want}: {}", a.body);
    }
    // service_name does not count towards the 15.
    let fifteen: Vec<String> = (0..15).map(|i| format!(r#""l{i:02}":"v""#)).collect();
    let labels = format!(r#"{{{},"service_name":"s"}}"#, fifteen.join(","));
    assert_eq!(
        post_json(&r, &stream_json(&labels, &[(fixed_ns(0), "x")]))
            .await
            .status,
        204
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_label_names_in_a_protobuf_label_string_are_400() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let body = proto_body(r#"{a="1", a="2"}"#, NOW_S, "x");
    let a = post(&r.push_url(), &[("content-type", PROTO)], body)
        .await
        .unwrap();
    assert_error(
        &a,
        400,
        r#"stream '{a="1", a="2"}' has duplicate label name: 'a'"#,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_duplicates_are_dropped_silently() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let body = stream_json(
        r#"{"a":"b"}"#,
        &[(fixed_ns(0), "same"), (fixed_ns(0), "same")],
    );
    assert_eq!(post_json(&r, &body).await.status, 204);
    assert_eq!(post_json(&r, &body).await.status, 204);
    assert_eq!(r.lines(), ["same"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn entry_too_far_behind_is_400_like_the_ingester() {
    sinkwatch::testing::init();
    let r = fixed_receiver().await;
    let body = stream_json(
        r#"{"a":"b"}"#,
        &[(fixed_ns(0), "new"), (fixed_ns(-3601), "late")],
    );
    let a = post_json(&r, &body).await;
    assert_error(
        &a,
        400,
        "entry with timestamp 2023-11-14 21:13:19 +0000 UTC ignored, reason: 'entry too far behind, \
         entry timestamp is: 2023-11-14T21:13:19Z, oldest acceptable timestamp is: 2023-11-14T21:13:20Z',\n\
         user 'fake', total ignored: 1 out of 2 for stream: {a=\"b\"}",
    );
    assert_eq!(r.lines(), ["new"]);
    // Out of order within the hour is fine.
    let a = post_json(&r, &stream_json(r#"{"a":"b"}"#, &[(fixed_ns(-3600), "ok")])).await;
    assert_eq!(a.status, 204);
}

// ---- routing ----

#[tokio::test(flavor = "multi_thread")]
async fn other_paths_and_methods() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let client = reqwest::Client::new();
    let a = client.get(r.push_url()).send().await.unwrap();
    assert_eq!(a.status(), 405);
    let a = client
        .post(format!("{}/api/prom/push", r.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 404);
    let a = client
        .get(format!("{}/ready", r.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (a.status().as_u16(), a.text().await.unwrap()),
        (200, "ready\n".to_owned())
    );
}

/// A protobuf + snappy body with one entry, built by hand (independent of any encoder).
fn proto_body(labels: &str, secs: i64, line: &str) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(u8::try_from(v & 0x7f).unwrap() | 0x80);
            v >>= 7;
        }
        out.push(u8::try_from(v).unwrap());
    }
    fn field(tag: u8, bytes: &[u8], out: &mut Vec<u8>) {
        out.push(tag);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }
    let mut ts = vec![0x08];
    varint(u64::try_from(secs).unwrap(), &mut ts);
    let mut entry = Vec::new();
    field(0x0a, &ts, &mut entry);
    field(0x12, line.as_bytes(), &mut entry);
    let mut stream = Vec::new();
    field(0x0a, labels.as_bytes(), &mut stream);
    field(0x12, &entry, &mut stream);
    let mut req = Vec::new();
    field(0x0a, &stream, &mut req);
    snap::raw::Encoder::new().compress_vec(&req).unwrap()
}

// ---- an independent client ----

#[tokio::test(flavor = "multi_thread")]
async fn tracing_loki_pushes_are_accepted_and_recorded() {
    use tracing_subscriber::layer::SubscriberExt;
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let (layer, controller, task) = tracing_loki::builder()
        .label("host", "ci")
        .unwrap()
        .extra_field("pid", "42")
        .unwrap()
        .build_controller_url(tracing_loki::url::Url::parse(&r.url()).unwrap())
        .unwrap();
    let task = tokio::spawn(task);
    // The layer must outlive the wait: tracing-loki 0.2.7's task spins on a closed channel
    // when its layer is dropped before the task is shut down through the controller.
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(answer = 42, "hello from tracing-loki");
        tracing::warn!("second event");
    });
    r.wait_for_entries(2, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", r.requests()));
    controller.shutdown().await;
    task.await.unwrap();
    drop(dispatch);
    let streams = r.streams("fake");
    let info = streams
        .iter()
        .find(|s| s.labels == r#"{host="ci", level="info"}"#)
        .unwrap();
    assert!(
        info.entries[0].line.contains("hello from tracing-loki"),
        "{}",
        info.entries[0].line
    );
    assert!(info.entries[0].line.contains("\"pid\":\"42\""));
    assert!(streams
        .iter()
        .any(|s| s.labels == r#"{host="ci", level="warn"}"#));
    let req = &r.requests()[0];
    assert_eq!(req.status, 204);
    assert_eq!(req.content_type.as_deref(), Some(PROTO));
    assert!(req
        .user_agent
        .as_deref()
        .unwrap()
        .starts_with("tracing-loki/"));
}

// ---- events ----

#[tokio::test(flavor = "multi_thread")]
async fn every_request_emits_a_receiver_request_event() {
    use sinkwatch::testing::{self, receiver_request, Matcher};
    sinkwatch::testing::init();
    let events = testing::watch();
    let r = LokiReceiver::start().await.unwrap();
    post_json(
        &r,
        &stream_json(r#"{"a":"b"}"#, &[(now_ns().to_string(), "x")]),
    )
    .await;
    post(&r.push_url(), &[], vec![]).await.unwrap();
    let mine = events
        .wait_n(Matcher::sink_event(r.id(), receiver_request::NAME), 2)
        .await
        .unwrap();
    assert_eq!(
        (mine[0].u64("status"), mine[0].u64("accepted")),
        (Some(204), Some(1)),
        "{}",
        mine[0]
    );
    assert_eq!(mine[1].u64("status"), Some(400), "{}", mine[1]);
    assert!(
        mine[1]
            .str("error")
            .is_some_and(|e| e.contains("mime: no media type")),
        "{}",
        mine[1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_requests_that_never_come_times_out() {
    sinkwatch::testing::init();
    let r = LokiReceiver::start().await.unwrap();
    let err = r
        .wait_for_requests(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Timeout, "{err}");
    assert!(err.message().contains("0 of 1 requests"), "{err}");
}
