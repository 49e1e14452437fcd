//! Authentication headers reach Loki; secrets never reach Debug output, events or errors.
//!
//! The receiver does not record `Authorization`, so these tests use a tiny HTTP server that
//! hands each request's head to the test through a channel.

#![cfg(all(feature = "loki", feature = "testing"))]

#[path = "support/loki.rs"]
mod support;

use sinkwatch::events;
use sinkwatch::sink::loki::LokiSink;
use sinkwatch::testing;
use support::{ev, event_text, record};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Serves every connection: reads one request, sends its head (lowercased) to the test,
/// answers with `status`.
async fn capture_server(status: &'static str) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let head = read_request(&mut conn).await;
                let _ = tx.send(head.to_ascii_lowercase());
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = conn.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, rx)
}

/// Reads a request's head and its body (by Content-Length); returns the head.
async fn read_request(conn: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < end + length {
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    head
}

async fn head_sent_by(sink: LokiSink, rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    sink.try_write(record("hi")).unwrap();
    sink.flush().await.unwrap();
    rx.recv().await.unwrap()
}

#[tokio::test]
async fn basic_auth_is_sent() {
    testing::init();
    let (url, mut rx) = capture_server("204 No Content").await;
    let sink = LokiSink::builder(url)
        .label("a", "b")
        .basic_auth("user", "pass")
        .build()
        .unwrap();
    let head = head_sent_by(sink, &mut rx).await;
    // base64("user:pass")
    assert!(head.contains("authorization: basic dxnlcjpwyxnz"), "{head}");
}

#[tokio::test]
async fn credentials_in_the_url_are_sent_as_basic_auth() {
    testing::init();
    let (url, mut rx) = capture_server("204 No Content").await;
    let url = url.replace("http://", "http://user:pass@");
    let sink = LokiSink::builder(url).label("a", "b").build().unwrap();
    let head = head_sent_by(sink, &mut rx).await;
    assert!(head.contains("authorization: basic dxnlcjpwyxnz"), "{head}");
    assert!(head.starts_with("post /loki/api/v1/push "), "{head}");
}

#[tokio::test]
async fn bearer_tokens_tenants_and_extra_headers_are_sent() {
    testing::init();
    let (url, mut rx) = capture_server("204 No Content").await;
    let sink = LokiSink::builder(url)
        .label("a", "b")
        .bearer_token("t0ken")
        .tenant("team-b")
        .header("X-Team", "payments")
        .secret_header("X-Api-Key", "k3y")
        .build()
        .unwrap();
    let head = head_sent_by(sink, &mut rx).await;
    for expected in [
        "authorization: bearer t0ken",
        "x-scope-orgid: team-b",
        "x-team: payments",
        "x-api-key: k3y",
        "content-type: application/x-protobuf",
        "content-encoding: snappy",
    ] {
        assert!(head.contains(expected), "{expected} missing in\n{head}");
    }
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output_events_or_errors() {
    testing::init();
    let (url, mut rx) = capture_server("401 Unauthorized").await;
    let mut events = testing::watch();
    let url = url.replace("http://", "http://user:urlpa55@");
    let builder = LokiSink::builder(&url)
        .label("a", "b")
        .bearer_token("t0ken-s3cret")
        .secret_header("X-Api-Key", "k3y-s3cret");
    let builder_debug = format!("{builder:?}");
    let sink = builder.build().unwrap();
    let sink_debug = format!("{sink:?}");
    sink.try_write(record("hi")).unwrap();
    sink.flush().await.unwrap();
    rx.recv().await.unwrap();
    let failed = events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    assert_eq!(failed.u64("status"), Some(401));
    let all = event_text(&events, sink.id());
    for secret in ["t0ken-s3cret", "k3y-s3cret", "urlpa55"] {
        assert!(!builder_debug.contains(secret), "{builder_debug}");
        assert!(!sink_debug.contains(secret), "{sink_debug}");
        assert!(!all.contains(secret), "{all}");
    }
    let err = LokiSink::builder("http://h")
        .label("a", "b")
        .secret_header("X-Api-Key", "bad\nk3y-s3cret")
        .build()
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("k3y-s3cret"), "{err:?}");
}

#[tokio::test]
async fn transport_errors_do_not_show_url_credentials() {
    let receiver = support::receiver().await;
    receiver.stop().await;
    let mut events = testing::watch();
    let url = receiver.url().replace("http://", "http://user:urlpa55@");
    let sink = LokiSink::builder(url)
        .label("a", "b")
        .max_retries(0)
        .build()
        .unwrap();
    sink.try_write(record("hi")).unwrap();
    sink.flush().await.unwrap();
    let failed = events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    assert_eq!(failed.u64("status"), Some(0));
    assert!(!event_text(&events, sink.id()).contains("urlpa55"));
}
