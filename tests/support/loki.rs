//! Helpers for the Loki sink's behaviour tests: a receiver, a sink builder tuned for tests
//! (short batch wait and backoff), records with distinct lines, and event tallies.

#![allow(dead_code, reason = "each test file uses a different subset")]

#[path = "tally.rs"]
mod tally;
#[allow(unused_imports, reason = "each test file uses a different subset")]
pub use tally::{dropped, drops};

use std::time::{Duration, SystemTime};

use sinkwatch::testing::LokiReceiver;
use sinkwatch::testing::{self, CapturedEvent, Matcher, Watcher};
use sinkwatch::Record;
use sinkwatch::{events, SinkId};
use sinkwatch::{LineFormat, LokiSink, LokiSinkBuilder};
use tracing::Level;

/// Installs the capturing subscriber and starts a receiver (auth off: tenant `fake`).
pub async fn receiver() -> LokiReceiver {
    testing::init();
    LokiReceiver::start().await.expect("the receiver starts")
}

/// A sink for `receiver`: one static label, lines are the message, fast retries.
pub fn sink_for(receiver: &LokiReceiver) -> LokiSinkBuilder {
    LokiSink::builder(receiver.url())
        .label("app", "test")
        .line_format(LineFormat::Message)
        .batch_wait(Duration::from_millis(20))
        .min_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(50))
}

/// A time a second ago, whole microseconds, so every test's entries are recent for Loki.
pub fn recent() -> SystemTime {
    let now = SystemTime::now() - Duration::from_secs(1);
    let ns = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap())
}

/// A record whose line is `line`, at a recent time.
pub fn record(line: impl Into<String>) -> Record {
    Record::new(Level::INFO, line).with_time(recent())
}

/// Nanoseconds since the epoch of `t`.
pub fn nanos(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

/// Matches sinkwatch's event `name` from `sink`.
pub fn ev(sink: &SinkId, name: &str) -> Matcher {
    Matcher::sink_event(sink, name)
}

/// Waits for this sink's `push_complete`, failing fast on `push_failed`.
pub async fn pushed(events: &Watcher, sink: &LokiSink) -> CapturedEvent {
    events
        .wait(ev(sink.id(), events::push_complete::NAME))
        .fail_on(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap()
}

/// Every field value of every event this sink emitted, as text.
pub fn event_text(events: &Watcher, sink: &SinkId) -> String {
    events
        .history()
        .iter()
        .filter(|e| Matcher::any().sink(sink).matches(e))
        .map(|e| format!("{e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the accounting identity once the sink is quiescent.
pub fn assert_identity(sink: &LokiSink) {
    let s = sink.stats();
    assert_eq!(s.accepted, s.delivered + s.dropped, "{s:?}");
}

/// Shuts `sink` down and returns its final counters: when the shutdown returned before the
/// worker finished (a loaded machine; a disk buffer's last sync), waits for `sink_closed`,
/// after which the counters are final and a disk buffer's directory is free again.
pub async fn shut(sink: &LokiSink, timeout: Duration) -> sinkwatch::SinkStats {
    let events = testing::watch();
    let report = sink.shutdown(timeout).await;
    if !report.completed {
        events
            .wait(ev(sink.id(), events::sink_closed::NAME))
            .await
            .unwrap();
    }
    sink.stats()
}
