//! Hostile input: arbitrary bytes in bodies and headers always get a Loki-style answer,
//! never a crash or a hang.
#![cfg(all(feature = "testing", feature = "loki"))]

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use sinkwatch::testing::LokiReceiver;

/// A small deterministic generator, so a failure can be replayed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }
}

const TYPES: &[&[u8]] = &[
    b"application/json",
    b"application/x-protobuf",
    b"application/json; charset=\"utf-8\"",
    b"",
    b"\xff\xfe",
    b"a/b; x",
    b"text",
];
const ENCODINGS: &[&[u8]] = &[b"", b"gzip", b"deflate", b"snappy", b"br", b"\x80zip"];

/// Bodies that are almost valid: a real push, cut or flipped at a random place.
fn near_valid(rng: &mut XorShift) -> Vec<u8> {
    let good = br#"{"streams":[{"stream":{"a":"b"},"values":[["1","x",{"k":"v"}]]}]}"#;
    let mut body = good.to_vec();
    match rng.below(3) {
        0 => body.truncate(rng.below(good.len())),
        1 => {
            let i = rng.below(body.len());
            body[i] = rng.next().to_le_bytes()[0];
        }
        _ => {
            body = snap::raw::Encoder::new().compress_vec(&body).unwrap()[..rng.below(20)].to_vec();
        }
    }
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn arbitrary_bodies_and_headers_get_a_loki_answer() {
    let r = LokiReceiver::builder()
        .auth(true)
        .max_body_bytes(4096)
        .start()
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for case in 0..300 {
        let mut headers = HeaderMap::new();
        let ct = TYPES[rng.below(TYPES.len())];
        if !ct.is_empty() {
            headers.insert("content-type", HeaderValue::from_bytes(ct).unwrap());
        }
        let enc = ENCODINGS[rng.below(ENCODINGS.len())];
        if !enc.is_empty() {
            headers.insert("content-encoding", HeaderValue::from_bytes(enc).unwrap());
        }
        let org: &[u8] = [&b"t"[..], b"a|b", b"\xc3\xa9", b".", b""][rng.below(5)];
        if let Ok(v) = HeaderValue::from_bytes(org) {
            headers.insert("x-scope-orgid", v);
        }
        let body = if rng.below(2) == 0 {
            rng.bytes(6000)
        } else {
            near_valid(&mut rng)
        };
        let resp = client
            .post(r.push_url())
            .headers(headers)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("case {case}: {e}"));
        let status = resp.status().as_u16();
        assert!(
            [204, 400, 401, 413, 422].contains(&status),
            "case {case}: {status}"
        );
        let text = resp.text().await.unwrap();
        assert!(
            status == 204 || text.ends_with('\n'),
            "case {case}: {text:?}"
        );
    }
    assert_eq!(r.request_count(), 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_length_over_the_limit_is_refused_without_reading() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let r = LokiReceiver::builder()
        .max_body_bytes(10)
        .start()
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    // Claims 10 GB and sends nothing: the answer must not wait for the body.
    let head = "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 10000000000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.contains("request body too large: 10000000000 bytes, limit: 10 bytes"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_body_is_recorded_not_fatal() {
    use tokio::io::AsyncWriteExt;
    let r = LokiReceiver::start().await.unwrap();
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let head = "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{\"streams\":";
    s.write_all(head.as_bytes()).await.unwrap();
    drop(s);
    r.wait_for_requests(1, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r.requests()[0].status, 0);
    // Still serving.
    let resp = reqwest::Client::new()
        .post(r.push_url())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}

/// Reads until the peer closes the connection; fails the test (rather than hanging it) if
/// the receiver keeps the connection open for a minute.
async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("the receiver kept a stalled connection open")
        .ok();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_mid_body_is_cut_off_after_the_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let r = LokiReceiver::builder()
        .read_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let head = "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{\"streams\":";
    s.write_all(head.as_bytes()).await.unwrap();
    // The client never sends the rest and never closes.
    let answer = read_until_closed(&mut s).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    r.wait_for_requests(1, Duration::from_secs(30))
        .await
        .unwrap();
    let rec = &r.requests()[0];
    assert_eq!(rec.status, 0);
    assert!(rec.error.contains("timed out"), "{}", rec.error);
    assert_eq!(r.entry_count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stalls_mid_headers_is_cut_off_after_the_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let r = LokiReceiver::builder()
        .read_timeout(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    s.write_all(b"POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    read_until_closed(&mut s).await;
    // Still serving others.
    let resp = reqwest::Client::new()
        .post(r.push_url())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_timeout_of_duration_max_means_no_timeout_not_a_panic() {
    let r = LokiReceiver::builder()
        .read_timeout(Duration::MAX)
        .start()
        .await
        .unwrap();
    let resp = reqwest::Client::new()
        .post(r.push_url())
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}

/// A JSON push body with one entry, timestamped now.
fn one_entry(line: &str) -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(r#"{{"streams":[{{"stream":{{"app":"raw"}},"values":[["{ns}","{line}"]]}}]}}"#)
}

/// Reads from `s` until the text read so far contains `want` `times` times.
async fn read_until(s: &mut tokio::net::TcpStream, got: &mut String, want: &str, times: usize) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    while got.matches(want).count() < times {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {got:?}"))
            .unwrap();
        assert!(n > 0, "closed before {want:?}: {got:?}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expect_100_continue_is_answered_before_the_body() {
    use tokio::io::AsyncWriteExt;
    let r = LokiReceiver::start().await.unwrap();
    let body = one_entry("continued");
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let head = format!(
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut got = String::new();
    read_until(&mut s, &mut got, "HTTP/1.1 100 Continue", 1).await;
    s.write_all(body.as_bytes()).await.unwrap();
    read_until(&mut s, &mut got, "HTTP/1.1 204", 1).await;
    assert_eq!(r.lines(), ["continued"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_alive_connections_serve_sized_and_chunked_requests_in_turn() {
    use tokio::io::AsyncWriteExt;
    let r = LokiReceiver::start().await.unwrap();
    let mut s = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let first = one_entry("sized");
    let second = one_entry("chunked");
    let (a, b) = second.split_at(second.len() / 2);
    let requests = format!(
        "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{first}\
         POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        first.len(),
        a.len(),
        b.len()
    );
    s.write_all(requests.as_bytes()).await.unwrap();
    let mut got = String::new();
    read_until(&mut s, &mut got, "HTTP/1.1 204", 2).await;
    assert_eq!(r.lines(), ["sized", "chunked"]);
    assert_eq!(r.request_count(), 2);
}

/// `body` compressed with gzip at the best level.
fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(body).unwrap();
    gz.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_body_of_millions_of_empty_streams_is_refused_at_the_stream_cap() {
    let r = LokiReceiver::start().await.unwrap();
    // Five million empty protobuf streams (field 1, length 0), snappy then gzip: 723 bytes on
    // the wire for 10 MB decoded, which would be hundreds of MB of structs.
    let raw = [0x0a, 0x00].repeat(5_000_000);
    let proto = gzip(&snap::raw::Encoder::new().compress_vec(&raw).unwrap());
    // The same in JSON, a million of them: `{"streams":[{},{},…]}`, about 3 KB.
    let json = gzip(format!(r#"{{"streams":[{}{{}}]}}"#, "{},".repeat(1_000_000)).as_bytes());
    let client = reqwest::Client::new();
    for (body, content_type) in [
        (proto, "application/x-protobuf"),
        (json, "application/json"),
    ] {
        assert!(body.len() < 4096, "{content_type}: {} bytes", body.len());
        let resp = client
            .post(r.push_url())
            .header("content-type", content_type)
            .header("content-encoding", "gzip")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 413, "{content_type}");
        let text = resp.text().await.unwrap();
        assert_eq!(
            text,
            "request body too large: more than 10000 streams in one request \
             (the receiver's max_streams_per_request)\n",
            "{content_type}"
        );
    }
    assert_eq!(r.entry_count(), 0);
    assert!(r.requests().iter().all(|q| q.status == 413));
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_over_the_cap_are_refused_and_a_lower_cap_applies() {
    let r = LokiReceiver::builder()
        .max_entries_per_request(3)
        .start()
        .await
        .unwrap();
    let body =
        r#"{"streams":[{"stream":{"a":"b"},"values":[["1","x"],["2","y"],["3","z"],["4","w"]]}]}"#;
    let resp = reqwest::Client::new()
        .post(r.push_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("max_entries_per_request"));
}

/// Sends `GET /ready` on `conn` and returns the answer read so far (until the `ready` body,
/// or the end of the connection).
async fn ready(conn: &mut tokio::net::TcpStream, close: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connection = if close { "close" } else { "keep-alive" };
    let request = format!("GET /ready HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n");
    // Writing to a refused connection may fail; what is read tells.
    let _ = conn.write_all(request.as_bytes()).await;
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut chunk))
            .await
            .expect("the receiver neither answered nor closed the connection");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
        if !close && got.ends_with(b"ready\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_refused_until_one_closes() {
    let r = LokiReceiver::builder()
        .max_connections(1)
        .start()
        .await
        .unwrap();
    let mut first = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    assert!(ready(&mut first, false).await.starts_with("HTTP/1.1 200"));
    // The first connection is open (kept alive): a second one is refused, not served.
    let mut second = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    let refused = ready(&mut second, false).await;
    assert!(
        refused.is_empty() || refused.starts_with("HTTP/1.1 503"),
        "{refused}"
    );
    assert!(
        refused.is_empty() || refused.contains("max_connections"),
        "{refused}"
    );
    assert_eq!(r.request_count(), 1);
    // Once the first connection has ended, its place is free.
    assert!(ready(&mut first, true).await.starts_with("HTTP/1.1 200"));
    let mut third = tokio::net::TcpStream::connect(r.addr()).await.unwrap();
    assert!(ready(&mut third, true).await.starts_with("HTTP/1.1 200"));
    assert_eq!(r.request_count(), 3);
}
