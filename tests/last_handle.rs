//! How a sink ends when nobody shuts it down: dropping the last handle delivers and closes
//! before it returns (within the sink's drop timeout), a blocking shutdown that would starve
//! its own runtime stops waiting and says so, and every write refused after the end is
//! reported, a trailing burst included.

use std::time::Duration;

use sinkwatch::events;
use sinkwatch::testing::{self, CapturedEvent, Matcher, Watcher};
use sinkwatch::{Compression, FileSink, LineFormat, LokiSink, Record, ShutdownGuard, SinkLayer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

fn record(i: u64) -> Record {
    Record::new(Level::INFO, "last handle").with_field("i", i)
}

/// The events from `id` named `name` captured so far, without waiting.
fn so_far(seen: &Watcher, id: &sinkwatch::SinkId, name: &str) -> Vec<CapturedEvent> {
    let m = Matcher::sink_event(id, name);
    seen.history()
        .into_iter()
        .filter(|e| m.matches(e))
        .collect()
}

#[tokio::test]
async fn dropping_the_last_file_handle_writes_rotates_and_closes_before_it_returns() {
    testing::init();
    let seen = testing::watch();
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let sink = FileSink::builder(dir.path())
            .max_file_size(4096)
            .compression(Compression::Gzip)
            .build()
            .unwrap();
        let id = sink.id().clone();
        for i in 0..2_000 {
            sink.try_write(record(i)).unwrap();
        }
        // The end of a test's scope, as the README writes it: the sink, then the directory.
        drop(sink);
        let closed = so_far(&seen, &id, events::sink_closed::NAME);
        assert_eq!(
            closed.len(),
            1,
            "round {round}: closed before the drop returned"
        );
        assert_eq!(closed[0].u64("delivered"), Some(2_000), "round {round}");
        assert!(
            !so_far(&seen, &id, events::rotation_complete::NAME).is_empty(),
            "round {round}: the test rotated"
        );
        drop(dir);
        assert!(!path.exists(), "round {round}: {}", path.display());
    }
}

#[tokio::test]
async fn a_zero_drop_timeout_returns_at_once_and_the_worker_still_writes_everything() {
    testing::init();
    let seen = testing::watch();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path())
        .drop_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let id = sink.id().clone();
    for i in 0..500 {
        sink.try_write(record(i)).unwrap();
    }
    drop(sink);
    let closed = seen
        .wait(Matcher::sink_event(&id, events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(closed.u64("delivered"), Some(500));
    assert_eq!(closed.u64("dropped"), Some(0));
}

// On a multi-threaded runtime the receiver serves from another worker thread while the
// drop blocks this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_loki_handle_pushes_before_it_returns() {
    testing::init();
    let seen = testing::watch();
    let receiver = testing::LokiReceiver::start().await.unwrap();
    let sink = LokiSink::builder(receiver.url())
        .label("app", "test")
        .line_format(LineFormat::Message)
        .build()
        .unwrap();
    let id = sink.id().clone();
    sink.try_write(Record::new(Level::INFO, "the last words"))
        .unwrap();
    drop(sink);
    // No waiting: the drop returned once the push was answered and the sink closed (the
    // batch timer, 1 s by default, did not hold it back).
    let closed = so_far(&seen, &id, events::sink_closed::NAME);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].u64("delivered"), Some(1));
    assert_eq!(receiver.lines(), ["the last words"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loki_drop_gives_up_at_its_timeout_and_reports_the_rest() {
    testing::init();
    let seen = testing::watch();
    let receiver = testing::LokiReceiver::start().await.unwrap();
    // Simulates a Loki slower than the drop timeout.
    receiver.push_fault(testing::Fault::delay(Duration::from_secs(30)));
    let sink = LokiSink::builder(receiver.url())
        .label("app", "test")
        .drop_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let id = sink.id().clone();
    sink.try_write(Record::new(Level::INFO, "too slow"))
        .unwrap();
    drop(sink);
    let closed = so_far(&seen, &id, events::sink_closed::NAME);
    assert_eq!(
        closed.len(),
        1,
        "closed at the drop's deadline, before Loki answered"
    );
    assert_eq!(
        (closed[0].u64("delivered"), closed[0].u64("dropped")),
        (Some(0), Some(1))
    );
    let dropped = so_far(&seen, &id, events::records_dropped::NAME);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].str("reason"), Some(events::reason::SHUTDOWN));
}

/// A hand-rolled Loki stand-in that runs on the test's own runtime, as a user's mock
/// server might: it answers every request with 204, but only while that runtime runs.
async fn mock_loki_on_this_runtime() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    // One request at a time: headers, then the body they announce.
                    while let Some(end) = find(&seen, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if seen.len() < end + 4 + len {
                            break;
                        }
                        seen.drain(..end + 4 + len);
                        let answer = b"HTTP/1.1 204 No Content\r\n\r\n";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    url
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn a_blocking_guard_on_a_runtime_it_starves_stops_waiting_and_says_so() {
    testing::init();
    let seen = testing::watch();
    let url = mock_loki_on_this_runtime().await;
    let sink = LokiSink::builder(url).label("app", "test").build().unwrap();
    let id = sink.id().clone();
    sink.try_write(Record::new(Level::INFO, "waits for this runtime"))
        .unwrap();
    // Blocks this thread, which is the only one that could serve the mock: it must not
    // sit out the 5 s deadline (by which the push would be cut and its record dropped).
    drop(ShutdownGuard::new().with_sink(sink.clone()));
    let stalled = so_far(&seen, &id, events::shutdown_stalled::NAME);
    assert_eq!(stalled.len(), 1, "the guard said why it stopped waiting");
    assert_eq!(stalled[0].u64("pending"), Some(1));
    // Free again, the runtime serves the mock, and the sink delivers before its deadline.
    let closed = seen
        .wait(Matcher::sink_event(&id, events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(closed.u64("delivered"), Some(1));
}

#[tokio::test]
async fn the_async_guard_on_the_same_runtime_delivers_without_a_stall() {
    testing::init();
    let seen = testing::watch();
    let url = mock_loki_on_this_runtime().await;
    let sink = LokiSink::builder(url).label("app", "test").build().unwrap();
    let id = sink.id().clone();
    sink.try_write(Record::new(Level::INFO, "delivered"))
        .unwrap();
    let reports = ShutdownGuard::new()
        .with_sink(sink.clone())
        .shutdown()
        .await;
    assert_eq!(reports[0].1.stats.delivered, 1);
    assert!(reports[0].1.completed);
    assert!(so_far(&seen, &id, events::shutdown_stalled::NAME).is_empty());
}

#[tokio::test]
async fn every_refused_write_is_reported_a_trailing_burst_included() {
    testing::init();
    let seen = testing::watch();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    let id = sink.id().clone();
    sink.shutdown(Duration::from_secs(5)).await;
    // A first refusal, reported at once: the burst below falls within the next second.
    let err = sink.try_write(record(0)).unwrap_err();
    assert_eq!(err.kind(), sinkwatch::ErrorKind::Closed);
    let first = seen
        .wait(Matcher::sink_event(&id, events::writes_refused::NAME))
        .await
        .unwrap();
    assert_eq!(first.u64("count"), Some(1));
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(sink.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..10 {
            tracing::info!(i, "a thread still logging after the guard ran");
        }
    });
    for i in 1..3 {
        sink.try_write(record(i)).unwrap_err();
    }
    assert_eq!(sink.stats().refused, 13);
    let reported = || -> u64 {
        so_far(&seen, &id, events::writes_refused::NAME)
            .iter()
            .filter_map(|e| e.u64("count"))
            .sum()
    };
    // Nothing follows the burst, yet it is reported once its second has passed.
    testing::eventually("every refused write is reported", || reported() == 13)
        .await
        .unwrap();
    assert!(so_far(&seen, &id, events::writes_refused::NAME).len() >= 2);
    let s = sink.stats();
    assert_eq!((s.accepted, s.delivered, s.dropped), (0, 0, 0));
}
