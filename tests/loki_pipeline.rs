//! Several push requests in flight: every entry delivered exactly once, a flush waits for
//! all of them, faults on some requests retry only those, and `max_in_flight(1)` keeps one.

#[path = "support/loki.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use sinkwatch::events;
use sinkwatch::testing::{self, Fault};
use support::{assert_identity, ev, receiver, record, sink_for};

#[tokio::test]
async fn many_small_batches_in_flight_deliver_every_entry_once_and_flush_waits_for_all() {
    let receiver = receiver().await;
    // Every request waits a little at the receiver (a slow Loki), so several overlap.
    receiver.set_latency(Duration::from_millis(20));
    let sink = sink_for(&receiver).batch_max_entries(10).build().unwrap();
    for i in 0..200 {
        sink.try_write(record(format!("line {i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    // Nothing is still in flight once the flush resolves.
    let lines: Vec<String> = receiver.lines();
    assert_eq!(lines.len(), 200);
    let distinct: BTreeSet<_> = lines.iter().collect();
    assert_eq!(distinct.len(), 200, "an entry arrived twice");
    assert!(receiver.request_count() >= 20);
    assert_identity(&sink);
    sink.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_failed_request_among_several_is_retried_alone() {
    let receiver = receiver().await;
    let seen = testing::watch();
    receiver.push_faults([Fault::status(503), Fault::status(500)]);
    let sink = sink_for(&receiver).batch_max_entries(5).build().unwrap();
    for i in 0..50 {
        sink.try_write(record(format!("entry {i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    let retries = seen
        .wait_n(ev(sink.id(), events::push_retry::NAME), 2)
        .await
        .unwrap();
    assert_eq!(
        retries
            .iter()
            .map(|e| e.u64("entries").unwrap())
            .sum::<u64>(),
        10,
        "only the two failed requests' entries were retried"
    );
    let lines: BTreeSet<String> = receiver.lines().into_iter().collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(receiver.entry_count(), 50, "no duplicates");
    let stats = sink.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.dropped),
        (50, 50, 0)
    );
    sink.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn one_in_flight_keeps_every_stream_in_order() {
    let receiver = receiver().await;
    receiver.set_latency(Duration::from_millis(5));
    let sink = sink_for(&receiver)
        .batch_max_entries(3)
        .max_in_flight(1)
        .build()
        .unwrap();
    for i in 0..60 {
        sink.try_write(record(format!("{i:03}"))).unwrap();
    }
    sink.flush().await.unwrap();
    // One stream: the receiver keeps its entries in the order they arrived.
    let arrived: Vec<String> = receiver.lines();
    let expected: Vec<String> = (0..60).map(|i| format!("{i:03}")).collect();
    assert_eq!(arrived, expected);
    sink.shutdown(Duration::from_secs(10)).await;
}

#[test]
fn zero_in_flight_is_a_configuration_error() {
    let err = sinkwatch::LokiSink::builder("http://127.0.0.1:9")
        .label("app", "t")
        .max_in_flight(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_in_flight"), "{err}");
}

#[tokio::test]
async fn a_burst_many_times_the_default_queue_bound_loses_nothing_through_the_layer() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let receiver = receiver().await;
    // Every default but the label: the default queue bound (a few MiB) holds a fraction
    // of the burst, and the default backpressure (`Block`) absorbs the rest.
    let sink = sinkwatch::LokiSink::builder(receiver.url())
        .label("app", "test")
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(sinkwatch::SinkLayer::new(sink.clone()));
    // About 150 bytes each in the queue: 60,000 make four times a 2 MiB bound.
    let emitted = 60_000_u64;
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..emitted {
            tracing::info!(
                i,
                user = "ada",
                note = "a sixty character string value for the fifth field of events",
                "burst"
            );
        }
    });
    sink.flush().await.unwrap();
    let stats = sink.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.dropped),
        (emitted, emitted, 0)
    );
    assert_eq!(receiver.lines().len() as u64, emitted);
    sink.shutdown(Duration::from_secs(10)).await;
}
