//! The Loki sink against the Loki-compatible receiver, over real TCP. Every wait is on an
//! event (or a flush), never a sleep.

#![cfg(all(feature = "loki", feature = "testing"))]

#[path = "support/loki.rs"]
mod support;

use std::time::{Duration, Instant};

use sinkwatch::events::{self, reason};
use sinkwatch::testing::{self, Matcher};
use sinkwatch::testing::{Fault, LokiReceiver};
use sinkwatch::{Encoding, LongLines};
use sinkwatch::{ErrorKind, OverflowPolicy};
use support::{assert_identity, drops, ev, nanos, pushed, receiver, record, sink_for};

#[tokio::test]
async fn the_seed_case_one_record_arrives_with_its_labels_time_and_line() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .batch_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let r = record("hello loki");
    let time = r.time;
    sink.try_write(r).unwrap();
    let done = pushed(&events, &sink).await;
    assert_eq!(done.u64("entries"), Some(1));
    assert_eq!(done.u64("status"), Some(204));
    assert_eq!(done.u64("attempt"), Some(1));
    let entries = receiver.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].stream, r#"{app="test"}"#);
    assert_eq!(entries[0].timestamp_ns, nanos(time));
    assert_eq!(entries[0].line, "hello loki");
    let req = &receiver.requests()[0];
    assert_eq!(req.content_type.as_deref(), Some("application/x-protobuf"));
    assert_eq!(req.content_encoding.as_deref(), Some("snappy"));
    assert!(req.user_agent.as_deref().unwrap().starts_with("sinkwatch/"));
    assert_eq!(done.u64("bytes"), Some(req.bytes));
}

async fn retried_then_delivered(fault: Fault, status: u64) {
    let receiver = receiver().await;
    receiver.push_fault(fault);
    let events = testing::watch();
    let sink = sink_for(&receiver).build().unwrap();
    sink.try_write(record("again")).unwrap();
    let retry = events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert_eq!(retry.u64("status"), Some(status));
    assert_eq!(retry.u64("attempt"), Some(1));
    let done = pushed(&events, &sink).await;
    assert_eq!(done.u64("attempt"), Some(2));
    assert_eq!(receiver.lines(), ["again"]);
    sink.flush().await.unwrap();
    assert_eq!(sink.stats().delivered, 1);
    assert_identity(&sink);
}

#[tokio::test]
async fn a_429_is_retried_then_delivered() {
    retried_then_delivered(Fault::status(429), 429).await;
}

#[tokio::test]
async fn a_500_is_retried_then_delivered() {
    retried_then_delivered(Fault::status(500), 500).await;
}

#[tokio::test]
async fn a_503_is_retried_then_delivered() {
    retried_then_delivered(Fault::status(503), 503).await;
}

#[tokio::test]
async fn a_dropped_connection_is_retried() {
    retried_then_delivered(Fault::drop_connection(), 0).await;
}

#[tokio::test]
async fn a_response_slower_than_the_request_timeout_is_retried() {
    let receiver = receiver().await;
    receiver.push_fault(Fault::delay(Duration::from_secs(3)));
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    sink.try_write(record("slow")).unwrap();
    let retry = events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert_eq!(retry.u64("status"), Some(0));
    assert!(retry.str("error").unwrap().contains("timed out"), "{retry}");
    let done = pushed(&events, &sink).await;
    assert_eq!(done.u64("attempt"), Some(2));
    assert!(receiver.lines().contains(&"slow".to_owned()));
}

#[tokio::test]
async fn retry_after_in_seconds_is_honoured() {
    let receiver = receiver().await;
    receiver.push_fault(Fault::status(429).retry_after("1"));
    let events = testing::watch();
    let sink = sink_for(&receiver).build().unwrap();
    sink.try_write(record("patience")).unwrap();
    let retry = events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert!(retry.u64("delay_ms").unwrap() >= 1000, "{retry}");
    let done = pushed(&events, &sink).await;
    let waited = done.captured_at() - retry.captured_at();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let receiver = receiver().await;
    let started = Instant::now();
    let at = std::time::SystemTime::now() + Duration::from_secs(3);
    receiver.push_fault(Fault::status(503).retry_after(httpdate::fmt_http_date(at)));
    let events = testing::watch();
    let sink = sink_for(&receiver).build().unwrap();
    sink.try_write(record("dated")).unwrap();
    let retry = events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    // The date has whole seconds: 2 to 3 s after `started`. The delay runs from the answer
    // to that date, however late a loaded machine gets the answer.
    let delay = Duration::from_millis(retry.u64("delay_ms").unwrap());
    assert!(delay <= Duration::from_secs(3), "{retry}");
    let until = retry.captured_at() - started + delay;
    assert!(until >= Duration::from_millis(1990), "{until:?} {retry}");
    pushed(&events, &sink).await;
}

#[tokio::test]
async fn retry_after_is_capped() {
    let receiver = receiver().await;
    receiver.push_fault(Fault::status(429).retry_after("3600"));
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .max_retry_after(Duration::from_millis(300))
        .build()
        .unwrap();
    sink.try_write(record("capped")).unwrap();
    let retry = events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert_eq!(retry.u64("delay_ms"), Some(300));
    pushed(&events, &sink).await;
}

#[tokio::test]
async fn a_400_is_reported_with_lokis_message_and_never_resent() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver).build().unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(30 * 86_400);
    sink.try_write(record("ancient").with_time(old)).unwrap();
    sink.try_write(record("fresh")).unwrap();
    sink.flush().await.unwrap();
    let failed = events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    assert_eq!(failed.u64("status"), Some(400));
    assert_eq!(failed.u64("entries"), Some(2));
    assert_eq!(failed.u64("attempts"), Some(1));
    assert!(failed.str("error").unwrap().contains("too old"), "{failed}");
    assert_eq!(receiver.request_count(), 1);
    // Loki's partial success: the valid entry was stored even though the request failed.
    assert_eq!(receiver.lines(), ["fresh"]);
    assert_eq!(drops(&events, sink.id()).get(reason::REJECTED), Some(&2));
    assert_identity(&sink);
}

async fn not_retried(receiver: LokiReceiver, sink: sinkwatch::LokiSink, status: u64) {
    let events = testing::watch();
    sink.try_write(record("refused")).unwrap();
    sink.flush().await.unwrap();
    let failed = events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    assert_eq!(failed.u64("status"), Some(status));
    assert_eq!(failed.u64("attempts"), Some(1));
    assert_eq!(receiver.request_count(), 1);
    assert_eq!(
        drops(&events, sink.id()).get(reason::NOT_RETRYABLE),
        Some(&1)
    );
    assert_identity(&sink);
}

#[tokio::test]
async fn a_401_is_not_retried() {
    testing::init();
    let receiver = LokiReceiver::builder().auth(true).start().await.unwrap();
    let sink = sink_for(&receiver).build().unwrap();
    not_retried(receiver, sink, 401).await;
}

#[tokio::test]
async fn a_403_is_not_retried() {
    let receiver = receiver().await;
    receiver.push_fault(Fault::status(403));
    let sink = sink_for(&receiver).build().unwrap();
    not_retried(receiver, sink, 403).await;
}

#[tokio::test]
async fn a_413_is_not_retried() {
    testing::init();
    let receiver = LokiReceiver::builder()
        .max_body_bytes(16)
        .start()
        .await
        .unwrap();
    let sink = sink_for(&receiver).build().unwrap();
    not_retried(receiver, sink, 413).await;
}

#[tokio::test]
async fn retries_are_exhausted_and_reported() {
    let receiver = receiver().await;
    receiver.push_faults([Fault::status(503), Fault::status(503), Fault::status(503)]);
    let events = testing::watch();
    let sink = sink_for(&receiver).max_retries(2).build().unwrap();
    sink.try_write(record("doomed")).unwrap();
    sink.flush().await.unwrap();
    let failed = events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    assert_eq!(failed.u64("attempts"), Some(3));
    assert_eq!(failed.u64("status"), Some(503));
    assert_eq!(receiver.request_count(), 3);
    let d = drops(&events, sink.id());
    assert_eq!(d.get(reason::RETRIES_EXHAUSTED), Some(&1));
    assert_identity(&sink);
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_receiver_is_back() {
    let receiver = receiver().await;
    receiver.stop().await;
    let events = testing::watch();
    let sink = sink_for(&receiver).build().unwrap();
    sink.try_write(record("patient")).unwrap();
    let retry = events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert_eq!(retry.u64("status"), Some(0));
    assert!(retry.str("error").unwrap().contains("onnect"), "{retry}");
    receiver.restart().await.unwrap();
    pushed(&events, &sink).await;
    assert_eq!(receiver.lines(), ["patient"]);
}

#[tokio::test]
async fn flush_sends_the_pending_batch_at_once() {
    let receiver = receiver().await;
    let sink = sink_for(&receiver)
        .batch_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    sink.try_write(record("now")).unwrap();
    let started = Instant::now();
    sink.flush().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(receiver.lines(), ["now"]);
    assert_identity(&sink);
}

#[tokio::test]
async fn an_outage_with_room_to_buffer_loses_nothing() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver).max_retries(1000).build().unwrap();
    sink.try_write(record("before")).unwrap();
    pushed(&events, &sink).await;
    receiver.stop().await;
    for i in 0..300 {
        sink.try_write(record(format!("during {i}"))).unwrap();
    }
    events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    receiver.restart().await.unwrap();
    sink.flush().await.unwrap();
    let s = sink.stats();
    assert_eq!((s.accepted, s.delivered, s.dropped), (301, 301, 0));
    assert_eq!(receiver.entry_count(), 301);
}

#[tokio::test]
async fn an_outage_with_a_small_buffer_reports_exactly_what_it_drops() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .max_retries(1000)
        .queue_capacity(50)
        .batch_max_entries(10)
        .build()
        .unwrap();
    receiver.stop().await;
    sink.try_write(record("first")).unwrap();
    events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    for i in 0..500 {
        sink.try_write(record(format!("line {i}"))).unwrap();
    }
    receiver.restart().await.unwrap();
    sink.flush().await.unwrap();
    let s = sink.stats();
    assert_eq!(s.accepted, 501);
    assert_eq!(s.accepted, s.delivered + s.dropped, "{s:?}");
    assert!(s.dropped >= 400, "{s:?}");
    let d = drops(&events, sink.id());
    assert_eq!(d.values().sum::<u64>(), s.dropped, "{d:?}");
    assert_eq!(d.get(reason::QUEUE_FULL), Some(&s.dropped));
    assert_eq!(receiver.entry_count() as u64, s.delivered);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_records() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .max_retries(1000)
        .queue_capacity(20)
        .overflow(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    receiver.stop().await;
    sink.try_write(record("first")).unwrap();
    events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    for i in 0..100 {
        sink.try_write(record(format!("line {i}"))).unwrap();
    }
    receiver.restart().await.unwrap();
    sink.flush().await.unwrap();
    let lines = receiver.lines();
    assert!(lines.contains(&"line 99".to_owned()), "{lines:?}");
    assert!(!lines.contains(&"line 0".to_owned()), "{lines:?}");
    let s = sink.stats();
    let d = drops(&events, sink.id());
    assert_eq!(d.get(reason::BUFFER_FULL_OLDEST), Some(&s.dropped));
    assert_eq!(receiver.entry_count() as u64, s.delivered);
    assert_identity(&sink);
}

#[tokio::test]
async fn shutdown_in_the_middle_of_a_backoff_respects_its_deadline() {
    let receiver = receiver().await;
    receiver.stop().await;
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .min_backoff(Duration::from_secs(30))
        .max_backoff(Duration::from_secs(60))
        .build()
        .unwrap();
    for i in 0..5 {
        sink.try_write(record(format!("stuck {i}"))).unwrap();
    }
    events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    let started = Instant::now();
    let report = sink.shutdown(Duration::from_millis(300)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(report.completed);
    assert_eq!(report.undelivered, 5, "dropped with reason shutdown");
    assert_eq!((report.stats.accepted, report.stats.dropped), (5, 5));
    let failed = events
        .wait(ev(sink.id(), events::push_failed::NAME))
        .await
        .unwrap();
    assert!(
        failed.str("error").unwrap().contains("shutdown"),
        "{failed}"
    );
    assert_eq!(drops(&events, sink.id()).get(reason::SHUTDOWN), Some(&5));
    let closed = events
        .wait(ev(sink.id(), events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(closed.u64("dropped"), Some(5));
}

#[tokio::test]
async fn shutdown_cuts_a_request_in_flight_at_its_deadline() {
    let receiver = receiver().await;
    receiver.push_fault(Fault::delay(Duration::from_secs(30)));
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .request_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    sink.try_write(record("in flight")).unwrap();
    sink.try_write(record("queued")).unwrap();
    events
        .wait(Matcher::sink_event(
            receiver.id(),
            testing::receiver_request::NAME,
        ))
        .timeout(Duration::from_millis(500))
        .await
        .ok();
    let started = Instant::now();
    let report = sink.shutdown(Duration::from_millis(400)).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(report.completed);
    assert_eq!(report.stats.dropped, 2);
    assert_eq!(drops(&events, sink.id()).get(reason::SHUTDOWN), Some(&2));
}

#[tokio::test]
async fn shutdown_pushes_what_is_queued() {
    let receiver = receiver().await;
    let sink = sink_for(&receiver)
        .batch_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    for i in 0..100 {
        sink.try_write(record(format!("bye {i}"))).unwrap();
    }
    let report = sink.shutdown(Duration::from_secs(10)).await;
    assert!(report.completed);
    assert_eq!(report.stats.delivered, 100);
    assert_eq!(receiver.entry_count(), 100);
    let err = sink.try_write(record("late")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn many_streams_from_a_field() {
    let receiver = receiver().await;
    let sink = sink_for(&receiver)
        .label_from_field("shard")
        .build()
        .unwrap();
    for i in 0..200_u64 {
        sink.try_write(record(format!("l{i}")).with_field("shard", i % 50))
            .unwrap();
    }
    sink.flush().await.unwrap();
    let streams = receiver.streams("fake");
    assert_eq!(streams.len(), 50);
    assert!(streams.iter().all(|s| s.entries.len() == 4));
    assert_eq!(streams[7].labels, r#"{app="test", shard="7"}"#);
    assert_identity(&sink);
}

#[tokio::test]
async fn the_stream_guard_drops_and_reports_what_does_not_fit() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .label_from_field("user")
        .max_streams(3)
        .build()
        .unwrap();
    for i in 0..10_u64 {
        sink.try_write(record("x").with_field("user", i)).unwrap();
    }
    sink.flush().await.unwrap();
    assert_eq!(receiver.streams("fake").len(), 3);
    assert_eq!(
        drops(&events, sink.id()).get(reason::TOO_MANY_STREAMS),
        Some(&7)
    );
    assert_identity(&sink);
}

#[tokio::test]
async fn long_lines_are_truncated_within_lokis_limit() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver).build().unwrap();
    sink.try_write(record("é".repeat(200_000))).unwrap();
    sink.flush().await.unwrap();
    let lines = receiver.lines();
    assert_eq!(lines.len(), 1);
    assert!(lines[0].len() <= 256 * 1024);
    assert!(lines[0].len() > 255 * 1024);
    assert!(lines[0].ends_with("…[truncated]"));
    // Truncation is reported, with the bytes cut off.
    let reported = events
        .wait(ev(sink.id(), events::lines_truncated::NAME))
        .await
        .unwrap();
    assert_eq!(reported.u64("count"), Some(1));
    let kept = lines[0].len() - "…[truncated]".len();
    assert_eq!(reported.u64("bytes"), Some((400_000 - kept) as u64));
}

#[tokio::test]
async fn long_lines_are_dropped_and_reported_when_configured() {
    let receiver = receiver().await;
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .long_lines(LongLines::Drop)
        .build()
        .unwrap();
    sink.try_write(record("x".repeat(300 * 1024))).unwrap();
    sink.try_write(record("short")).unwrap();
    sink.flush().await.unwrap();
    assert_eq!(receiver.lines(), ["short"]);
    assert_eq!(
        drops(&events, sink.id()).get(reason::LINE_TOO_LONG),
        Some(&1)
    );
    assert_identity(&sink);
}

async fn batches_stay_under_the_byte_cap(encoding: Encoding, line: fn(u64) -> String) {
    let receiver = receiver().await;
    let cap = 4096;
    let sink = sink_for(&receiver)
        .encoding(encoding)
        .batch_max_bytes(cap)
        .max_line_bytes(1024)
        .build()
        .unwrap();
    for i in 0..200 {
        sink.try_write(record(line(i))).unwrap();
    }
    sink.flush().await.unwrap();
    let requests = receiver.requests();
    assert!(requests.len() > 5, "{}", requests.len());
    for r in &requests {
        assert!(r.bytes <= cap as u64, "{} > {cap}", r.bytes);
        assert_eq!(r.status, 204, "{}", r.error);
    }
    assert_eq!(receiver.entry_count(), 200);
    assert_identity(&sink);
}

/// Pseudo-random printable text: snappy cannot shrink it much.
fn noise(i: u64) -> String {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..900)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'!' + u8::try_from(x % 90).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn protobuf_batches_are_split_at_the_byte_cap() {
    batches_stay_under_the_byte_cap(Encoding::Protobuf, noise).await;
}

#[tokio::test]
async fn json_batches_are_split_even_when_escaping_inflates_them() {
    // Each control character becomes six bytes of JSON: the estimate is far too low, so
    // the encoder's own check has to split.
    batches_stay_under_the_byte_cap(Encoding::Json, |i| format!("{i}{}", "\u{1}".repeat(300)))
        .await;
}

async fn encoding_round_trip(encoding: Encoding, content_type: &str, ce: Option<&str>) {
    let receiver = receiver().await;
    let sink = sink_for(&receiver)
        .encoding(encoding)
        .label_from_field("k")
        .metadata_from_field("trace_id")
        .build()
        .unwrap();
    let r = record("payload \"q\" \n")
        .with_field("k", "v")
        .with_field("trace_id", "abc");
    let time = r.time;
    sink.try_write(r).unwrap();
    sink.flush().await.unwrap();
    let req = &receiver.requests()[0];
    assert_eq!(req.status, 204, "{}", req.error);
    assert_eq!(req.content_type.as_deref(), Some(content_type));
    assert_eq!(req.content_encoding.as_deref(), ce);
    let e = &receiver.entries()[0];
    assert_eq!(e.line, "payload \"q\" \n");
    assert_eq!(e.timestamp_ns, nanos(time));
    assert_eq!(e.label("k"), Some("v"));
    assert_eq!(e.metadata("trace_id"), Some("abc"));
}

#[tokio::test]
async fn protobuf_encoding_round_trips() {
    encoding_round_trip(Encoding::Protobuf, "application/x-protobuf", Some("snappy")).await;
}

#[tokio::test]
async fn json_encoding_round_trips() {
    encoding_round_trip(Encoding::Json, "application/json", None).await;
}

#[tokio::test]
async fn gzipped_json_round_trips() {
    encoding_round_trip(Encoding::JsonGzip, "application/json", Some("gzip")).await;
}

const HOSTILE: &[&str] = &[
    r#"quote " backslash \ end"#,
    "new\nline\r\ttab",
    "\u{0}\u{1}\u{1b}[31m\u{7f}",
    "\u{85}\u{2028}\u{2029}\u{200b}\u{feff}",
    "日本語 😀 é ﷽",
    "\\x41 \\u00e9 looks escaped",
    "}\", evil=\"1",
    "`backtick`",
];

async fn hostile_values_round_trip(encoding: Encoding) {
    let receiver = receiver().await;
    let sink = sink_for(&receiver)
        .encoding(encoding)
        .label("static_hostile", HOSTILE.concat())
        .label_from_field("h")
        .metadata_from_field("m")
        .build()
        .unwrap();
    for v in HOSTILE {
        sink.try_write(record(*v).with_field("h", *v).with_field("m", *v))
            .unwrap();
    }
    sink.flush().await.unwrap();
    let entries = receiver.entries();
    assert_eq!(entries.len(), HOSTILE.len(), "{:?}", receiver.requests());
    for (e, v) in entries.iter().zip(HOSTILE) {
        assert_eq!(e.label("h"), Some(*v));
        assert_eq!(e.metadata("m"), Some(*v));
        assert_eq!(e.line, *v);
        assert_eq!(e.label("static_hostile"), Some(HOSTILE.concat().as_str()));
    }
}

#[tokio::test]
async fn hostile_labels_and_metadata_round_trip_in_protobuf() {
    hostile_values_round_trip(Encoding::Protobuf).await;
}

#[tokio::test]
async fn hostile_labels_and_metadata_round_trip_in_json() {
    hostile_values_round_trip(Encoding::Json).await;
}

#[tokio::test]
async fn the_tenant_header_is_sent() {
    testing::init();
    let receiver = LokiReceiver::builder().auth(true).start().await.unwrap();
    let sink = sink_for(&receiver).tenant("team-a").build().unwrap();
    sink.try_write(record("tenanted")).unwrap();
    sink.flush().await.unwrap();
    assert_eq!(receiver.entries_for("team-a").len(), 1);
    assert_eq!(receiver.requests()[0].org_id.as_deref(), Some("team-a"));
}

/// `Duration::MAX` settings (and a `Retry-After` of 2^64 − 1 seconds) mean "very long",
/// never an `Instant` overflow that kills the worker and loses its records silently.
#[tokio::test]
async fn durations_too_long_for_an_instant_do_not_kill_the_worker() {
    let receiver = receiver().await;
    receiver.push_fault(Fault::status(503).retry_after("18446744073709551615"));
    let events = testing::watch();
    let sink = sink_for(&receiver)
        .batch_wait(Duration::MAX)
        .max_backoff(Duration::MAX)
        .max_retry_after(Duration::MAX)
        .build()
        .unwrap();
    sink.try_write(record("forever")).unwrap();
    // The batch is never due on its own: the flush sends it, and the 503 asks for 2^64 s.
    let flush = sink.flush();
    let retry = events.wait(ev(sink.id(), events::push_retry::NAME));
    let retry = tokio::select! {
        r = retry => r.unwrap(),
        f = flush => panic!("the flush ended before the retry: {f:?}"),
    };
    assert!(retry.u64("delay_ms").unwrap() > 1_000_000, "{retry}");
    let report = sink.shutdown(Duration::from_millis(200)).await;
    assert!(report.completed, "{report:?}");
    assert_eq!((report.stats.accepted, report.stats.dropped), (1, 1));
    assert_eq!(drops(&events, sink.id()).get(reason::SHUTDOWN), Some(&1));
    assert_identity(&sink);
}

#[tokio::test]
async fn a_shutdown_timeout_of_duration_max_drains_and_returns() {
    let receiver = receiver().await;
    let sink = sink_for(&receiver)
        .request_timeout(Duration::MAX)
        .build()
        .unwrap();
    sink.try_write(record("drained")).unwrap();
    let report = sink.shutdown(Duration::MAX).await;
    assert!(report.completed, "{report:?}");
    assert_eq!(report.stats.delivered, 1);
    assert_eq!(receiver.lines(), ["drained"]);
}
