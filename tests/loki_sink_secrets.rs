//! Authentication headers reach Loki; secrets never reach Debug output, events or errors.
//!
//! The receiver does not record `Authorization`, so these tests use a tiny HTTP server that
//! hands each request's head to the test through a channel.

#![cfg(all(feature = "loki", feature = "testing"))]

#[path = "support/loki.rs"]
mod support;

use sinkwatch::events;
use sinkwatch::testing;
use sinkwatch::{LokiSink, LokiSinkBuilder};
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
    let events = testing::watch();
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
    let events = testing::watch();
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

/// Every kind of secret a user can configure, each a distinct string.
const SECRETS: [&str; 8] = [
    "us3r-t0ken",
    "urlpa55",
    "qu3ry-s3cret",
    "h3ader-s3cret",
    "secr3t-header",
    "bas1c-user",
    "bas1c-pass",
    "bear3r",
];

#[test]
fn debug_output_shows_no_user_info_query_value_or_header_value() {
    // Before any event of this process's sinks (see `testing::init`).
    testing::init();
    let url = "http://us3r-t0ken:urlpa55@loki.example:3100/gw?api_key=qu3ry-s3cret";
    let builders = [
        LokiSink::builder(url)
            .header("X-Api-Key", "h3ader-s3cret")
            .secret_header("X-Other", "secr3t-header")
            .basic_auth("bas1c-user", "bas1c-pass"),
        LokiSink::builder(url).bearer_token("bear3r"),
        // The user name alone, as a token (no password).
        LokiSink::builder("https://us3r-t0ken@loki.example/?token=qu3ry-s3cret"),
    ];
    for builder in builders {
        let builder = builder
            .label("a", "b")
            .tenant("team-x")
            .public_header("X-Team", "payments");
        let debug = format!("{builder:?}");
        for secret in SECRETS {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        // What is not secret stays visible: it is what Debug is for.
        for shown in ["loki.example", "team-x", "payments", "=redacted"] {
            assert!(debug.contains(shown), "{shown} missing in {debug}");
        }
        let sink = builder.build().unwrap();
        let debug = format!("{sink:?} {sink:#?}");
        for secret in SECRETS {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        sink.shutdown_blocking(std::time::Duration::ZERO);
    }
}

#[tokio::test]
async fn query_secrets_stay_out_of_push_failures() {
    let receiver = support::receiver().await;
    receiver.stop().await;
    let events = testing::watch();
    let url = format!("{}/?api_key=qu3ry-s3cret", receiver.url());
    let sink = LokiSink::builder(url)
        .label("a", "b")
        .header("X-Api-Key", "h3ader-s3cret")
        .max_retries(0)
        .build()
        .unwrap();
    sink.try_write(record("hi")).unwrap();
    sink.flush().await.unwrap();
    events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    let all = event_text(&events, sink.id());
    for secret in ["qu3ry-s3cret", "h3ader-s3cret"] {
        assert!(!all.contains(secret), "{all}");
    }
}

#[test]
fn build_errors_show_no_url_credentials_or_query_values() {
    // Before any event of this process's sinks (see `testing::init`).
    testing::init();
    let errors = [
        LokiSink::builder("http://us3r-t0ken:urlpa55@h/?api_key=qu3ry-s3cret")
            .header("X-Api-Key", "bad\nh3ader-s3cret")
            .label("a", "b")
            .build()
            .unwrap_err(),
        // No label: refused after the URL is parsed.
        LokiSink::builder("http://us3r-t0ken:urlpa55@h/?api_key=qu3ry-s3cret")
            .build()
            .unwrap_err(),
        LokiSink::builder("ftp://us3r-t0ken:urlpa55@h/?api_key=qu3ry-s3cret")
            .label("a", "b")
            .build()
            .unwrap_err(),
        LokiSink::builder("http://us3r-t0ken:urlpa55@[bad/?api_key=qu3ry-s3cret")
            .label("a", "b")
            .build()
            .unwrap_err(),
    ];
    for err in errors {
        let text = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
}

/// Builds a sink for `url` with `configure`, then emits a marker event from this thread:
/// anything `build()` emitted is captured before the marker.
fn build_then_mark(
    url: &str,
    configure: impl FnOnce(LokiSinkBuilder) -> LokiSinkBuilder,
) -> (LokiSink, testing::Matcher) {
    let sink = configure(LokiSink::builder(url).label("a", "b"))
        .build()
        .unwrap();
    let marker = format!("built {}", sink.id());
    tracing::info!(marker = %marker, "sink built");
    (sink, testing::Matcher::any().field("marker", marker))
}

/// One way to configure credentials (or none) on a builder.
type Configure = fn(LokiSinkBuilder) -> LokiSinkBuilder;

fn insecure(sink: &LokiSink) -> testing::Matcher {
    ev(sink.id(), events::insecure_credentials::NAME)
}

#[tokio::test]
async fn credentials_over_plain_http_to_a_remote_host_are_warned_about_once() {
    testing::init();
    let events = testing::watch();
    let configs: [(&str, Configure); 4] = [
        ("http://loki.example:3100", |b| b.basic_auth("u", "p")),
        ("http://loki.example:3100", |b| b.bearer_token("t")),
        ("http://us3r-t0ken@10.1.2.3:3100", |b| b),
        ("http://loki.example", |b| b.header("X-Api-Key", "k")),
    ];
    for (url, configure) in configs {
        let (sink, marker) = build_then_mark(url, configure);
        let warning = events.wait(insecure(&sink)).await.unwrap();
        let host = warning.str(events::insecure_credentials::HOST).unwrap();
        assert!(host == "loki.example" || host == "10.1.2.3", "{warning}");
        // Once: no second warning before the marker emitted after build().
        events
            .assert_none_before(insecure(&sink), marker)
            .await
            .unwrap();
        assert!(!event_text(&events, sink.id()).contains("us3r-t0ken"));
        sink.shutdown_blocking(std::time::Duration::ZERO);
    }
}

#[tokio::test]
async fn https_loopback_and_public_headers_are_not_warned_about() {
    testing::init();
    let events = testing::watch();
    let configs: [(&str, Configure); 6] = [
        ("https://loki.example", |b| b.basic_auth("u", "p")),
        ("https://loki.example", |b| b.header("X-Api-Key", "k")),
        ("http://127.0.0.1:3100", |b| b.bearer_token("t")),
        ("http://[::1]:3100", |b| b.basic_auth("u", "p")),
        ("http://localhost:3100", |b| {
            b.secret_header("X-Api-Key", "k")
        }),
        ("http://loki.example", |b| {
            b.tenant("t").public_header("X-Team", "payments")
        }),
    ];
    for (url, configure) in configs {
        let (sink, marker) = build_then_mark(url, configure);
        events
            .assert_none_before(insecure(&sink), marker)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        sink.shutdown_blocking(std::time::Duration::ZERO);
    }
}
