//! `ShutdownGuard`: the last records before `main` returns are delivered when the guard is
//! dropped, and what could not be delivered by the deadline is reported.

use std::time::{Duration, Instant};

use sinkwatch::events;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::testing::{Fault, LokiReceiver};
use sinkwatch::{ErrorKind, FileSink, LokiSink, Record, ShutdownGuard};
use tracing::Level;

fn record(n: u64) -> Record {
    Record::new(Level::INFO, "last words").with_field("n", n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_guard_delivers_the_last_records_of_every_sink() {
    testing::init();
    let receiver = LokiReceiver::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path()).build().unwrap();
    // A long batch wait: without the guard these records would sit in the batch.
    let loki = LokiSink::builder(receiver.url())
        .label("app", "guard")
        .batch_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    let events = testing::watch();
    let guard = ShutdownGuard::new()
        .with_sink(file.clone())
        .with_sink(loki.clone())
        .with_timeout(Duration::from_secs(10));
    for n in 0..100 {
        file.try_write(record(n)).unwrap();
        loki.try_write(record(n)).unwrap();
    }
    // Dropping blocks, as at the end of `main`: do it off the runtime's threads.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();

    for sink in [file.id(), loki.id()] {
        let closed = events
            .wait(Matcher::sink_event(sink, events::sink_closed::NAME))
            .await
            .unwrap();
        assert_eq!(closed.u64("delivered"), Some(100), "{sink}");
        assert_eq!(closed.u64("dropped"), Some(0), "{sink}");
    }
    let written = std::fs::read_to_string(file.active_path()).unwrap();
    assert_eq!(written.lines().count(), 100);
    assert_eq!(receiver.entry_count(), 100);
    // Closed sinks accept nothing more, and their totals stay final.
    assert_eq!(
        file.try_write(record(100)).unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(file.stats().accepted, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_deadline_cuts_off_is_reported() {
    testing::init();
    let receiver = LokiReceiver::start().await.unwrap();
    // Loki is slow to answer: the push cannot finish within the guard's deadline.
    receiver.push_fault(Fault::delay(Duration::from_secs(30)));
    let loki = LokiSink::builder(receiver.url())
        .label("app", "guard")
        .batch_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    let events = testing::watch();
    for n in 0..10 {
        loki.try_write(record(n)).unwrap();
    }
    let guard = ShutdownGuard::new()
        .with_sink(loki.clone())
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let reports = guard.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the deadline was not kept"
    );
    let (id, report) = &reports[0];
    assert_eq!(id, loki.id());
    assert_eq!(report.stats.delivered, 0);
    assert_eq!(report.stats.dropped, 10);
    let dropped = events
        .wait(
            Matcher::sink_event(loki.id(), events::records_dropped::NAME)
                .field("reason", events::reason::SHUTDOWN),
        )
        .await
        .unwrap();
    assert_eq!(dropped.u64("count"), Some(10));
}
