//! Two minimal Loki push endpoints, each in its own process or thread:
//!
//! - a counting receiver that only counts entries (snappy + a protobuf walk that reads
//!   just the field tags; or JSON) and answers 204, so the client, not the receiver,
//!   is what is measured (sinkwatch's `LokiReceiver` validates everything and is slower);
//! - a stalled receiver that accepts connections, reads requests and never answers, so a
//!   sink's records stay queued.

use std::convert::Infallible;
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt as _;

#[derive(Default)]
struct Counts {
    entries: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Wall-clock time (ns since the epoch) when the first and the last request that
    /// carried entries had been counted: the driver times delivery on the receiver's side
    /// with them, against the child's wall-clock time of its first event.
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

/// Serves until stdin closes: prints `URL <url>` first, `RECEIVED <entries> <requests>
/// <bytes> <first_ns> <last_ns>` last.
pub fn serve_counting() {
    let rt = crate::common::runtime();
    let counts = Arc::new(Counts::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind the receiver");
    let addr = listener.local_addr().expect("the receiver's address");
    rt.spawn(accept(listener, counts.clone()));
    println!("URL http://{addr}");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    println!(
        "RECEIVED {} {} {} {} {}",
        counts.entries.load(Ordering::Relaxed),
        counts.requests.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed),
        counts.first_ns.load(Ordering::Relaxed),
        counts.last_ns.load(Ordering::Relaxed)
    );
}

async fn accept(listener: tokio::net::TcpListener, counts: Arc<Counts>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let counts = counts.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(req, counts.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    counts: Arc<Counts>,
) -> Result<hyper::Response<http_body_util::Empty<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let (content_type, encoding) = (header("content-type"), header("content-encoding"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let entries = count_entries(&body, &content_type, &encoding);
    counts.entries.fetch_add(entries, Ordering::Relaxed);
    if entries > 0 {
        let now = crate::common::unix_nanos();
        let _ = counts
            .first_ns
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        counts.last_ns.fetch_max(now, Ordering::Relaxed);
    }
    let mut response = hyper::Response::new(http_body_util::Empty::new());
    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
    Ok(response)
}

fn count_entries(body: &[u8], content_type: &str, encoding: &str) -> u64 {
    let plain = if encoding.contains("gzip") {
        let mut out = Vec::new();
        let _ = flate2::read::GzDecoder::new(body).read_to_end(&mut out);
        out
    } else {
        body.to_vec()
    };
    if content_type.contains("json") {
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap_or_default();
        return v["streams"].as_array().map_or(0, |streams| {
            streams
                .iter()
                .map(|s| s["values"].as_array().map_or(0, Vec::len) as u64)
                .sum()
        });
    }
    let Ok(raw) = snap::raw::Decoder::new().decompress_vec(&plain) else {
        return 0;
    };
    // PushRequest { repeated StreamAdapter streams = 1 }, StreamAdapter { labels = 1,
    // repeated EntryAdapter entries = 2, hash = 3 }: count field 2 in each field 1.
    let mut total = 0;
    for_each_field(&raw, |field, value| {
        if field == 1 {
            for_each_field(value, |f, _| total += u64::from(f == 2));
        }
    });
    total
}

fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0_u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Calls `f(field number, payload)` for each length-delimited field; skips the others.
fn for_each_field(buf: &[u8], mut f: impl FnMut(u64, &[u8])) {
    let mut at = 0;
    while at < buf.len() {
        let Some(tag) = varint(buf, &mut at) else {
            return;
        };
        match tag & 7 {
            0 => {
                if varint(buf, &mut at).is_none() {
                    return;
                }
            }
            1 => at += 8,
            5 => at += 4,
            2 => {
                let Some(len) = varint(buf, &mut at).and_then(|l| usize::try_from(l).ok()) else {
                    return;
                };
                let Some(value) = buf.get(at..at.saturating_add(len)) else {
                    return;
                };
                f(tag >> 3, value);
                at += len;
            }
            _ => return,
        }
    }
}

/// Starts a receiver that never answers, on a thread: returns its URL and a channel that
/// yields once the first request's bytes have arrived.
pub fn start_stalled() -> (String, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (arrived, first) = std::sync::mpsc::sync_channel(1);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let arrived = arrived.clone();
            // Reads (so the client's write completes) and never answers.
            std::thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    let _ = arrived.try_send(());
                }
            });
        }
    });
    (format!("http://{addr}"), first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len_field(field: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2, u8::try_from(payload.len()).unwrap()];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn counts_entries_across_streams() {
        let entry = len_field(2, &[0x0a, 0x00, 0x12, 0x01, b'x']);
        let mut stream = len_field(1, b"{a=\"b\"}");
        stream.extend(entry.repeat(3));
        stream.extend_from_slice(&[0x18, 0x05]); // hash = 5, a varint field
        let mut push = len_field(1, &stream);
        push.extend(len_field(1, &len_field(2, b"")));
        let body = snap::raw::Encoder::new().compress_vec(&push).unwrap();
        assert_eq!(count_entries(&body, "application/x-protobuf", ""), 4);
    }

    #[test]
    fn counts_json_values() {
        let body = br#"{"streams":[{"stream":{},"values":[["1","a"],["2","b"]]}]}"#;
        assert_eq!(count_entries(body, "application/json", ""), 2);
    }

    #[test]
    fn garbage_counts_nothing() {
        assert_eq!(count_entries(b"\xff\xff", "application/x-protobuf", ""), 0);
    }
}
