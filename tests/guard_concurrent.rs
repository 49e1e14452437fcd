//! `ShutdownGuard` delivers on every sink at once: a Loki push stuck until the deadline
//! does not keep the file sink (registered first, closed last) from writing its records.

#[path = "support/file.rs"]
mod support;

use std::time::Duration;

use sinkwatch::events;
use sinkwatch::testing::{self, Fault, LokiReceiver, Matcher};
use sinkwatch::{FileSink, LokiSink, Record, ShutdownGuard};
use tracing::Level;

fn record(n: u64) -> Record {
    Record::new(Level::INFO, "last words").with_field("n", n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_loki_push_does_not_keep_the_file_sink_from_delivering() {
    testing::init();
    let receiver = LokiReceiver::start().await.unwrap();
    // Loki does not answer before the guard's deadline (a slow peer, simulated).
    receiver.push_fault(Fault::delay(Duration::from_secs(600)));
    let dir = tempfile::tempdir().unwrap();
    // The file worker's first write blocks until released: its other records wait queued.
    let (hook, entered_rx, release_tx) = support::write_gate();
    let file = FileSink::builder(dir.path())
        .fault_hook(hook)
        .build()
        .unwrap();
    let loki = LokiSink::builder(receiver.url())
        .label("app", "guard")
        .batch_wait(Duration::from_millis(1))
        .build()
        .unwrap();
    let seen = testing::watch();
    loki.try_write(record(0)).unwrap();
    receiver
        .wait_for_arrivals(1, Duration::from_secs(5))
        .await
        .unwrap();
    file.try_write(record(0)).unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    for n in 1..100 {
        file.try_write(record(n)).unwrap();
    }
    // The file's disk recovers only once the Loki push has been cut by the deadline: with
    // one sink after the other, the file sink's own deadline would be gone by then.
    let loki_id = loki.id().clone();
    let releaser = tokio::spawn(async move {
        seen.wait(Matcher::sink_event(&loki_id, events::push_failed::NAME))
            .timeout(Duration::from_secs(30))
            .await
            .unwrap();
        release_tx.send(()).unwrap();
    });
    let reports = ShutdownGuard::new()
        .with_sink(file.clone())
        .with_sink(loki.clone())
        .with_timeout(Duration::from_secs(2))
        .shutdown()
        .await;
    releaser.await.unwrap();
    let (file_report, loki_report) = (reports[0].1, reports[1].1);
    assert_eq!(file_report.stats.delivered, 100, "{file_report:?}");
    assert_eq!(file_report.undelivered, 0);
    assert_eq!(loki_report.undelivered, 1, "{loki_report:?}");
    assert_eq!(
        std::fs::read_to_string(file.active_path())
            .unwrap()
            .lines()
            .count(),
        100
    );
}
