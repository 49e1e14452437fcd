//! Behaviour of `sinkwatch::testing`: capture from every kind of thread, isolation,
//! race-free and consuming waits, counts, sequences, checkpoints, fail-fast, negative
//! assertions, timeout explanations and `eventually`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sinkwatch::events::{self, SinkId};
use sinkwatch::testing::{self, Matcher, WaitErrorKind};

/// A short timeout for waits that are expected to time out.
const SHORT: Duration = Duration::from_millis(150);

/// A unique value per call, so parallel tests never match each other's events.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn emit(tag: &str, n: u64) {
    tracing::info!(tag, n, "waiter test event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_from_tasks_blocking_pool_and_plain_threads() {
    testing::init();
    let tag = unique("threads");
    let mut events = testing::watch();
    let t = tag.clone();
    tokio::spawn(async move { emit(&t, 1) });
    let t = tag.clone();
    tokio::task::spawn_blocking(move || emit(&t, 2));
    let t = tag.clone();
    std::thread::spawn(move || emit(&t, 3));
    let got = events
        .wait_n(Matcher::any().field("tag", tag.as_str()), 3)
        .await
        .unwrap();
    let mut ns: Vec<u64> = got.iter().map(|e| e.u64("n").unwrap()).collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_from_a_task_spawned_before_the_watcher() {
    testing::init();
    let tag = unique("early-task");
    let go = Arc::new(tokio::sync::Notify::new());
    let (g, t) = (go.clone(), tag.clone());
    let task = tokio::spawn(async move {
        g.notified().await;
        emit(&t, 7);
    });
    let mut events = testing::watch();
    go.notify_one();
    let ev = events
        .wait(Matcher::any().field("tag", tag.as_str()))
        .await
        .unwrap();
    assert_eq!(ev.u64("n"), Some(7));
    task.await.unwrap();
}

#[tokio::test]
async fn an_event_emitted_before_the_wait_starts_is_found() {
    testing::init();
    let tag = unique("before-wait");
    let mut events = testing::watch();
    emit(&tag, 1);
    let ev = events
        .wait(Matcher::any().field("tag", tag.as_str()))
        .timeout(SHORT)
        .await
        .unwrap();
    assert_eq!(ev.u64("n"), Some(1));
}

#[tokio::test]
async fn events_before_the_watcher_are_not_seen() {
    testing::init();
    let tag = unique("too-early");
    emit(&tag, 1);
    let mut events = testing::watch();
    let err = events
        .wait(Matcher::any().field("tag", tag.as_str()))
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Timeout);
}

#[tokio::test]
async fn a_wait_consumes_its_match_so_the_next_gets_the_next_occurrence() {
    testing::init();
    let tag = unique("consume");
    let mut events = testing::watch();
    emit(&tag, 1);
    emit(&tag, 2);
    let m = Matcher::any().field("tag", tag.as_str());
    assert_eq!(events.wait(m.clone()).await.unwrap().u64("n"), Some(1));
    assert_eq!(events.wait(m.clone()).await.unwrap().u64("n"), Some(2));
    let err = events.wait(m).timeout(SHORT).await.unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Timeout);
    assert!(
        err.message()
            .contains("2 matching event(s) were already consumed"),
        "{err}"
    );
}

#[tokio::test]
async fn two_watchers_consume_independently() {
    testing::init();
    let tag = unique("independent");
    let mut a = testing::watch();
    let mut b = testing::watch();
    emit(&tag, 1);
    let m = Matcher::any().field("tag", tag.as_str());
    assert_eq!(a.wait(m.clone()).await.unwrap().u64("n"), Some(1));
    assert_eq!(b.wait(m).await.unwrap().u64("n"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_waiters_only_see_their_own_sink() {
    testing::init();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(tokio::spawn(async move {
            let sink = SinkId::new("isolation");
            let mut events = testing::watch();
            let s = sink.clone();
            std::thread::spawn(move || {
                for i in 0..5_u64 {
                    tracing::info!(name: "push_complete", target: "sinkwatch", sink = s.as_str(), entries = i);
                }
            });
            let got = events
                .wait_n(Matcher::sink_event(&sink, events::push_complete::NAME), 5)
                .await
                .unwrap();
            for (i, ev) in got.iter().enumerate() {
                assert_eq!(ev.str("sink"), Some(sink.as_str()));
                assert_eq!(ev.u64("entries"), Some(i as u64));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn wait_n_returns_exactly_n_in_order() {
    testing::init();
    let tag = unique("count");
    let mut events = testing::watch();
    for n in 0..5 {
        emit(&tag, n);
    }
    let got = events
        .wait_n(Matcher::any().field("tag", tag.as_str()), 3)
        .await
        .unwrap();
    let ns: Vec<_> = got.iter().map(|e| e.u64("n").unwrap()).collect();
    assert_eq!(ns, [0, 1, 2]);
    let rest = events
        .wait_n(Matcher::any().field("tag", tag.as_str()), 2)
        .await
        .unwrap();
    assert_eq!(rest[0].u64("n"), Some(3));
}

#[tokio::test]
async fn a_sequence_must_arrive_in_order() {
    testing::init();
    let tag = unique("sequence");
    let mut events = testing::watch();
    emit(&tag, 1);
    emit(&tag, 2);
    let one = || Matcher::any().field("tag", tag.as_str()).field("n", 1);
    let two = || Matcher::any().field("tag", tag.as_str()).field("n", 2);
    let err = events
        .wait_sequence([two(), one()])
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert!(err.message().contains("matched 1 of 2"), "{err}");
    let got = events.wait_sequence([one(), two()]).await.unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn a_checkpoint_skips_earlier_events() {
    testing::init();
    let tag = unique("checkpoint");
    let mut events = testing::watch();
    emit(&tag, 1);
    let cp = events.checkpoint();
    emit(&tag, 2);
    let ev = events
        .wait(Matcher::any().field("tag", tag.as_str()))
        .after(cp)
        .await
        .unwrap();
    assert_eq!(ev.u64("n"), Some(2));
}

#[tokio::test]
async fn fail_on_fails_fast_when_the_failure_comes_first() {
    testing::init();
    let sink = SinkId::new("failfast");
    let mut events = testing::watch();
    tracing::error!(name: "push_failed", target: "sinkwatch", sink = sink.as_str(), status = 400_u64);
    let started = std::time::Instant::now();
    let err = events
        .wait(Matcher::sink_event(&sink, "push_complete"))
        .fail_on(Matcher::sink_event(&sink, "push_failed"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::FailEvent);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not fail fast"
    );
    assert!(err.message().contains("push_failed"), "{err}");
}

#[tokio::test]
async fn none_before_passes_and_fails_deterministically() {
    testing::init();
    let tag = unique("none-before");
    let bad = || Matcher::any().field("tag", tag.as_str()).field("n", 666);
    let good = || Matcher::any().field("tag", tag.as_str()).field("n", 1);
    let mut events = testing::watch();
    emit(&tag, 1);
    emit(&tag, 666);
    events.assert_none_before(bad(), good()).await.unwrap();

    let mut events = testing::watch();
    emit(&tag, 666);
    emit(&tag, 1);
    let err = events.assert_none_before(bad(), good()).await.unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Forbidden);
}

#[tokio::test]
async fn none_within_passes_on_silence_and_fails_on_the_event() {
    testing::init();
    let tag = unique("none-within");
    let m = || Matcher::any().field("tag", tag.as_str());
    let mut events = testing::watch();
    events
        .assert_none_within(m(), Duration::from_millis(50))
        .await
        .unwrap();
    std::thread::spawn({
        let tag = tag.clone();
        move || emit(&tag, 1)
    });
    let err = events
        .assert_none_within(m(), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Forbidden);
}

#[tokio::test]
async fn a_timeout_explains_what_was_awaited_and_what_was_seen() {
    testing::init();
    let sink = SinkId::new("explain");
    let other = SinkId::new("explain");
    let mut events = testing::watch();
    tracing::info!(name: "push_complete", target: "sinkwatch", sink = other.as_str(), entries = 3_u64);
    tracing::warn!(name: "push_retry", target: "sinkwatch", sink = sink.as_str(), status = 503_u64);
    let err = events
        .wait(Matcher::sink_event(&sink, "push_complete"))
        .timeout(SHORT)
        .await
        .unwrap_err();
    let msg = err.message();
    assert!(msg.contains("timed out after"), "{msg}");
    assert!(
        msg.contains(&format!(
            "event \"push_complete\", target = \"sinkwatch\", sink = \"{sink}\""
        )),
        "{msg}"
    );
    // Other tests in this process emit concurrently, so the count is at least ours.
    let count: usize = msg
        .split("events captured since the watcher's start: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|n| n.parse().ok())
        .expect("the count of events seen");
    assert!(count >= 2, "{msg}");
    assert!(msg.contains("near misses"), "{msg}");
    assert!(
        msg.contains(&format!("sink: expected \"{sink}\", got \"{other}\"")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("warnings and failures from sink \"{sink}\"")),
        "{msg}"
    );
    assert!(msg.contains("push_retry"), "{msg}");
}

#[tokio::test]
async fn a_timeout_with_no_events_gives_a_hint() {
    testing::init();
    let mut events = testing::watch();
    // Other tests in this process may emit concurrently, so match on an impossible value
    // and check the hint with a wait that sees only its own (absent) events.
    let err = events
        .wait(Matcher::event(unique("never-emitted")))
        .timeout(SHORT)
        .await
        .unwrap_err();
    let msg = err.message();
    if msg.contains("events captured since the watcher's start: 0") {
        assert!(msg.contains("hint: no event at all arrived"), "{msg}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_paused_clock_cannot_time_out_a_wait_early() {
    testing::init();
    let tag = unique("paused");
    let mut events = testing::watch();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = tag.clone();
    std::thread::spawn(move || {
        rx.recv().unwrap();
        emit(&t, 1);
    });
    tx.send(()).unwrap();
    // With tokio's clock paused, tokio::time::timeout would fire as soon as the runtime is
    // idle; the waiter's deadline is real time.
    let ev = events
        .wait(Matcher::any().field("tag", tag.as_str()))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ev.u64("n"), Some(1));
}

#[tokio::test]
async fn matchers_check_level_target_and_predicates() {
    testing::init();
    let tag = unique("matchers");
    let mut events = testing::watch();
    tracing::debug!(target: "my_app::orders", tag = tag.as_str(), total = 12.5_f64, express = true, note = ?"quoted");
    let m = Matcher::target("my_app::orders")
        .level(tracing::Level::DEBUG)
        .field("tag", tag.as_str())
        .field("express", true)
        .field("note", "quoted")
        .field_where("total", |v| v.as_f64().is_some_and(|t| t > 10.0));
    let err = events
        .wait(
            Matcher::target_prefix(Matcher::any(), "my_app")
                .min_level(tracing::Level::WARN)
                .field("tag", tag.as_str()),
        )
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("level: expected WARN or above, got DEBUG"),
        "{err}"
    );
    let ev = events.wait(m).await.unwrap();
    assert_eq!(ev.target(), "my_app::orders");
}

#[tokio::test]
async fn eventually_succeeds_and_explains_failure() {
    testing::init();
    let counter = Arc::new(AtomicU64::new(0));
    let c = counter.clone();
    std::thread::spawn(move || c.store(3, Ordering::SeqCst));
    testing::eventually("the counter reaches 3", || {
        counter.load(Ordering::SeqCst) == 3
    })
    .await
    .unwrap();
    let err = testing::eventually_within("the counter reaches 4", SHORT, || {
        let n = counter.load(Ordering::SeqCst);
        if n == 4 {
            Ok(())
        } else {
            Err(format!("counter is {n}"))
        }
    })
    .await
    .unwrap_err();
    assert!(err.message().contains("the counter reaches 4"), "{err}");
    assert!(err.message().contains("counter is 3"), "{err}");
}

#[tokio::test]
async fn schema_events_carry_their_name_in_metadata_and_fields() {
    testing::init();
    let sink = SinkId::new("schema");
    let mut events = testing::watch();
    tracing::info!(name: "push_complete", target: "sinkwatch", event = "push_complete", sink = sink.as_str());
    let ev = events
        .wait(Matcher::sink_event(&sink, events::push_complete::NAME))
        .await
        .unwrap();
    assert_eq!(ev.name(), "push_complete");
    assert_eq!(ev.str(events::EVENT), Some("push_complete"));
}
