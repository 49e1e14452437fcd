//! One lifecycle for every sink: each record's fate is decided on every exit path — a panic
//! on the worker, flushes and writers racing shutdown, writes after shutdown, deadlines of
//! any size — and the totals stay exact.

#[path = "support/file.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sinkwatch::events::{self, reason};
use sinkwatch::testing::{self, Matcher, Watcher};
use sinkwatch::BoxFuture;
use sinkwatch::{Clock, ManualClock};
use sinkwatch::{ErrorKind, FileSink, Record, ShutdownGuard, SinkLayer};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

const SHUTDOWN: Duration = Duration::from_secs(10);

fn record(i: u64) -> Record {
    Record::new(Level::INFO, "lifecycle").with_field("i", i)
}

/// How long a wait for what a deliberate panic causes may take. With `RUST_BACKTRACE` set
/// the panic hook first resolves and prints the backtrace, which in a debug build on a
/// loaded machine takes seconds (a stress run under load saw the default 5 s run out while
/// the hook was still printing).
const AFTER_A_PANIC: Duration = Duration::from_secs(60);

/// A user's clock that panics once armed, as a buggy `Clock` implementation would.
#[derive(Clone)]
struct PanickyClock {
    inner: ManualClock,
    armed: Arc<AtomicBool>,
}

impl Clock for PanickyClock {
    fn now(&self) -> SystemTime {
        assert!(!self.armed.load(Ordering::SeqCst), "the clock broke");
        self.inner.now()
    }

    fn sleep_until(&self, at: SystemTime) -> BoxFuture<()> {
        self.inner.sleep_until(at)
    }
}

#[tokio::test]
async fn a_panic_on_the_worker_is_caught_reported_and_fails_everyone_cleanly() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let clock = PanickyClock {
        inner: ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        armed: armed.clone(),
    };
    let (hook, entered, release) = support::write_gate();
    let sink = FileSink::builder(dir.path())
        .max_file_size(64)
        .clock(clock)
        .fault_hook(hook)
        .build()
        .unwrap();
    let seen = testing::watch();
    sink.try_write(record(0)).unwrap();
    tokio::task::spawn_blocking(move || entered.recv().unwrap())
        .await
        .unwrap();
    for i in 1..20 {
        sink.try_write(record(i)).unwrap();
    }
    let pending_flush = sink.flush();
    // The next record needs a rotation, and the rotation asks the clock.
    armed.store(true, Ordering::SeqCst);
    release.send(()).unwrap();
    let failed = seen
        .wait(Matcher::sink_event(sink.id(), events::worker_failed::NAME))
        .timeout(AFTER_A_PANIC)
        .await
        .unwrap();
    assert!(
        failed.str("error").unwrap().contains("the clock broke"),
        "{failed}"
    );
    let closed = seen
        .wait(Matcher::sink_event(sink.id(), events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(
        (
            closed.u64("accepted"),
            closed.u64("delivered"),
            closed.u64("dropped")
        ),
        (Some(20), Some(1), Some(19))
    );
    assert_eq!(
        support::dropped(&seen, sink.id(), reason::WORKER_FAILED),
        19
    );
    // The flush queued before the panic, and every later one, resolve with the failure.
    let err = pending_flush.await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    assert!(err.to_string().contains("the clock broke"), "{err}");
    assert_eq!(sink.flush().await.unwrap_err().kind(), ErrorKind::Failed);
    assert!(sink.rotate().await.is_err());
    // Later writes are refused, and counted apart from the final totals.
    assert_eq!(
        sink.try_write(record(20)).unwrap_err().kind(),
        ErrorKind::Failed
    );
    let stats = sink.stats();
    assert_eq!(
        (
            stats.accepted,
            stats.delivered,
            stats.dropped,
            stats.refused
        ),
        (20, 1, 19, 1)
    );
    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed);
}

/// A user's clock that panics when read on the sink's blocking pool (where retention runs).
#[derive(Clone)]
struct PanicsOffTheWorker(ManualClock);

impl Clock for PanicsOffTheWorker {
    fn now(&self) -> SystemTime {
        let name = std::thread::current().name().unwrap_or_default().to_owned();
        assert!(!name.ends_with("-blocking"), "the clock broke on {name}");
        self.0.now()
    }

    fn sleep_until(&self, at: SystemTime) -> BoxFuture<()> {
        self.0.sleep_until(at)
    }
}

#[tokio::test]
async fn a_panic_in_a_maintenance_job_is_reported_and_the_sink_keeps_going() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let clock = PanicsOffTheWorker(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let sink = FileSink::builder(dir.path())
        .max_age(Duration::from_secs(3600))
        .clock(clock)
        .build()
        .unwrap();
    let seen = testing::watch();
    sink.try_write(record(0)).unwrap();
    sink.rotate().await.unwrap().unwrap();
    let failed = seen
        .wait(
            Matcher::sink_event(sink.id(), events::retention_failed::NAME).field_where(
                "error",
                |v| matches!(v, testing::FieldValue::Str(t) if t.contains("maintenance job failed")),
            ),
        )
        .timeout(AFTER_A_PANIC)
        .await
        .unwrap();
    assert!(
        failed.str("error").unwrap().contains("the clock broke"),
        "{failed}"
    );
    // The sink itself goes on.
    sink.try_write(record(1)).unwrap();
    sink.flush().await.unwrap();
    let report = sink.shutdown(SHUTDOWN).await;
    assert_eq!((report.stats.delivered, report.stats.dropped), (2, 0));
}

#[tokio::test]
async fn a_flush_racing_shutdown_always_resolves() {
    testing::init();
    for round in 0..40_u64 {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::builder(dir.path()).build().unwrap();
        for i in 0..50 {
            sink.try_write(record(i)).unwrap();
        }
        let flushers: Vec<_> = (0..4)
            .map(|_| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    for _ in 0..20 {
                        outcomes.push(sink.flush().await.is_ok());
                    }
                    outcomes
                })
            })
            .collect();
        let report = sink.shutdown(SHUTDOWN).await;
        assert!(report.completed, "round {round}");
        for f in flushers {
            // Each flush resolved (Ok before the end, Err after): none hangs.
            let outcomes = tokio::time::timeout(SHUTDOWN, f)
                .await
                .expect("a flush never resolved")
                .unwrap();
            assert_eq!(outcomes.len(), 20);
        }
        let s = report.stats;
        assert_eq!(
            (s.accepted, s.delivered, s.dropped),
            (50, 50, 0),
            "round {round}"
        );
    }
}

#[test]
fn totals_stay_exact_when_writers_race_shutdown() {
    testing::init();
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::builder(dir.path())
            .queue_capacity(64)
            .build()
            .unwrap();
        let seen = testing::watch();
        let writers: Vec<_> = (0..3)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let mut refused = 0_u64;
                    for i in 0..2_000 {
                        match sink.try_write(record(t * 10_000 + i)) {
                            Ok(()) => {}
                            Err(e) => {
                                assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
                                refused += 1;
                            }
                        }
                    }
                    refused
                })
            })
            .collect();
        let report = sink.shutdown_blocking(Duration::from_millis(round % 5 * 2));
        let refused: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(report.completed);
        let s = report.stats;
        assert_eq!(s.accepted, s.delivered + s.dropped, "round {round}: {s:?}");
        assert_eq!(s.accepted + refused, 6_000, "round {round}");
        let closed = futures_wait(&seen, &sink);
        assert_eq!(
            (closed.0, closed.1, closed.2),
            (s.accepted, s.delivered, s.dropped),
            "sink_closed agrees with the report, round {round}"
        );
        assert_eq!(
            report.undelivered,
            support::dropped(&seen, sink.id(), reason::SHUTDOWN)
        );
        assert_eq!(sink.stats().refused, refused);
    }
}

/// The totals `sink_closed` carried, awaited from synchronous code.
fn futures_wait(seen: &Watcher, sink: &FileSink) -> (u64, u64, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ev = runtime
        .block_on(async {
            seen.wait(Matcher::sink_event(sink.id(), events::sink_closed::NAME))
                .await
        })
        .unwrap();
    (
        ev.u64("accepted").unwrap(),
        ev.u64("delivered").unwrap(),
        ev.u64("dropped").unwrap(),
    )
}

#[tokio::test]
async fn undelivered_counts_what_the_deadline_cut() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let (hook, entered, release) = support::write_gate();
    let sink = FileSink::builder(dir.path())
        .fault_hook(hook)
        .build()
        .unwrap();
    let seen = testing::watch();
    sink.try_write(record(0)).unwrap();
    tokio::task::spawn_blocking(move || entered.recv().unwrap())
        .await
        .unwrap();
    for i in 1..10 {
        sink.try_write(record(i)).unwrap();
    }
    // The worker is stuck in a write when the deadline passes: the queued nine are cut.
    // Poll the shutdown once (which asks for it) before the write is released.
    let shutdown = sink.shutdown(Duration::ZERO);
    tokio::pin!(shutdown);
    tokio::select! {
        biased;
        _ = &mut shutdown => panic!("the shutdown finished while the worker was stuck"),
        () = std::future::ready(()) => {}
    }
    release.send(()).unwrap();
    let report = shutdown.await;
    seen.wait(Matcher::sink_event(sink.id(), events::sink_closed::NAME))
        .await
        .unwrap();
    assert_eq!(report.undelivered, 9);
    assert_eq!(report.stats.dropped, 9);
    assert_eq!(support::dropped(&seen, sink.id(), reason::SHUTDOWN), 9);
}

#[tokio::test]
async fn events_logged_after_shutdown_are_counted_and_reported() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    let seen = testing::watch();
    sink.shutdown(SHUTDOWN).await;
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(sink.clone()));
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..10 {
            tracing::info!(i, "a thread still logging after the guard ran");
        }
    });
    assert_eq!(sink.stats().refused, 10);
    let report = seen
        .wait(Matcher::sink_event(sink.id(), events::writes_refused::NAME))
        .await
        .unwrap();
    // The first refusal is reported at once; the rest within the next second's report.
    assert!(report.u64("count").unwrap() >= 1);
    let s = sink.stats();
    assert_eq!(
        (s.accepted, s.delivered, s.dropped),
        (0, 0, 0),
        "final totals stay final"
    );
}

#[tokio::test]
async fn the_manual_clock_recipe_rotates_every_time_without_a_flush() {
    testing::init();
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let sink = FileSink::builder(dir.path())
            .rotate_every(Duration::from_secs(60))
            .clock(clock.clone())
            .build()
            .unwrap();
        let seen = testing::watch();
        sink.try_write(record(round)).unwrap();
        clock.advance(Duration::from_secs(60));
        let rotated = seen
            .wait(
                Matcher::sink_event(sink.id(), events::rotation_complete::NAME)
                    .field("reason", events::rotation_reason::TIME),
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let text = std::fs::read_to_string(rotated.str("to").unwrap()).unwrap();
        assert!(
            text.contains(&format!("\"i\":{round}")),
            "round {round}: {text}"
        );
        sink.shutdown(SHUTDOWN).await;
    }
}

#[tokio::test]
async fn the_plain_test_pattern_leaves_no_directory_behind() {
    testing::init();
    let seen = testing::watch();
    let mut paths = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::builder(dir.path()).build().unwrap();
        for i in 0..2_000 {
            sink.try_write(record(i)).unwrap();
        }
        paths.push(dir.path().to_owned());
        ids.push(sink.id().clone());
        // The end of a test's scope: the sink, then the directory, are dropped.
        drop(sink);
        drop(dir);
    }
    for id in &ids {
        seen.wait(Matcher::sink_event(id, events::sink_closed::NAME))
            .await
            .unwrap();
    }
    for path in paths {
        assert!(!path.exists(), "{} was recreated", path.display());
    }
}

#[tokio::test]
async fn any_duration_is_a_valid_deadline() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    sink.try_write(record(0)).unwrap();
    let report = sink.shutdown(Duration::MAX).await;
    assert!(report.completed);
    assert_eq!(report.stats.delivered, 1);
    let other = FileSink::builder(dir.path()).name("other").build().unwrap();
    other.try_write(record(1)).unwrap();
    drop(
        ShutdownGuard::new()
            .with_sink(other.clone())
            .with_timeout(Duration::MAX),
    );
    assert_eq!(other.stats().delivered, 1);
    assert!(other.shutdown_blocking(Duration::MAX).completed);
}

#[tokio::test]
async fn two_sink_layers_record_each_span_field_once() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let a = FileSink::builder(dir.path())
        .name("a")
        .file_name("a", "log")
        .build()
        .unwrap();
    let b = FileSink::builder(dir.path())
        .name("b")
        .file_name("b", "log")
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(SinkLayer::new(a.clone()))
        .with(SinkLayer::new(b.clone()));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", method = "GET", status = tracing::field::Empty);
        span.record("status", 200_u64);
        span.in_scope(|| tracing::info!("handled"));
    });
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    for sink in [&a, &b] {
        let text = std::fs::read_to_string(sink.active_path()).unwrap();
        assert_eq!(text.matches("\"status\":200").count(), 1, "{text}");
        assert_eq!(text.matches("\"method\":\"GET\"").count(), 1, "{text}");
    }
}
