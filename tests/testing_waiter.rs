//! Behaviour of `sinkwatch::testing`: capture from every kind of thread, isolation,
//! race-free and consuming waits, counts, sequences, checkpoints, fail-fast, negative
//! assertions, timeout explanations and `eventually`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sinkwatch::testing::{self, Matcher, WaitErrorKind};
use sinkwatch::{events, SinkId};

/// A short timeout for waits that are expected to time out.
const SHORT: Duration = Duration::from_millis(150);

/// A unique value per call, so parallel tests never match each other's seen.
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
    let seen = testing::watch();
    let t = tag.clone();
    tokio::spawn(async move { emit(&t, 1) });
    let t = tag.clone();
    tokio::task::spawn_blocking(move || emit(&t, 2));
    let t = tag.clone();
    std::thread::spawn(move || emit(&t, 3));
    let got = seen
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
    let seen = testing::watch();
    go.notify_one();
    let ev = seen
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
    let seen = testing::watch();
    emit(&tag, 1);
    let ev = seen
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
    let seen = testing::watch();
    let err = seen
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
    let seen = testing::watch();
    emit(&tag, 1);
    emit(&tag, 2);
    let m = Matcher::any().field("tag", tag.as_str());
    assert_eq!(seen.wait(m.clone()).await.unwrap().u64("n"), Some(1));
    assert_eq!(seen.wait(m.clone()).await.unwrap().u64("n"), Some(2));
    let err = seen.wait(m).timeout(SHORT).await.unwrap_err();
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
    let a = testing::watch();
    let b = testing::watch();
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
            let seen = testing::watch();
            let s = sink.clone();
            std::thread::spawn(move || {
                for i in 0..5_u64 {
                    tracing::info!(name: "push_complete", target: "sinkwatch", sink = s.as_str(), entries = i);
                }
            });
            let got = seen
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
    let seen = testing::watch();
    for n in 0..5 {
        emit(&tag, n);
    }
    let got = seen
        .wait_n(Matcher::any().field("tag", tag.as_str()), 3)
        .await
        .unwrap();
    let ns: Vec<_> = got.iter().map(|e| e.u64("n").unwrap()).collect();
    assert_eq!(ns, [0, 1, 2]);
    let rest = seen
        .wait_n(Matcher::any().field("tag", tag.as_str()), 2)
        .await
        .unwrap();
    assert_eq!(rest[0].u64("n"), Some(3));
}

#[tokio::test]
async fn a_sequence_must_arrive_in_order() {
    testing::init();
    let tag = unique("sequence");
    let seen = testing::watch();
    emit(&tag, 1);
    emit(&tag, 2);
    let one = || Matcher::any().field("tag", tag.as_str()).field("n", 1);
    let two = || Matcher::any().field("tag", tag.as_str()).field("n", 2);
    let err = seen
        .wait_sequence([two(), one()])
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert!(err.message().contains("matched 1 of 2"), "{err}");
    let got = seen.wait_sequence([one(), two()]).await.unwrap();
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn a_checkpoint_skips_earlier_events() {
    testing::init();
    let tag = unique("checkpoint");
    let seen = testing::watch();
    emit(&tag, 1);
    let cp = seen.checkpoint();
    emit(&tag, 2);
    let ev = seen
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
    let seen = testing::watch();
    tracing::error!(name: "push_failed", target: "sinkwatch", sink = sink.as_str(), status = 400_u64);
    let started = std::time::Instant::now();
    let err = seen
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
    let seen = testing::watch();
    emit(&tag, 1);
    emit(&tag, 666);
    seen.assert_none_before(bad(), good()).await.unwrap();

    let seen = testing::watch();
    emit(&tag, 666);
    emit(&tag, 1);
    let err = seen.assert_none_before(bad(), good()).await.unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Forbidden);
}

#[tokio::test]
async fn none_within_passes_on_silence_and_fails_on_the_event() {
    testing::init();
    let tag = unique("none-within");
    let m = || Matcher::any().field("tag", tag.as_str());
    let seen = testing::watch();
    seen.assert_none_within(m(), Duration::from_millis(50))
        .await
        .unwrap();
    std::thread::spawn({
        let tag = tag.clone();
        move || emit(&tag, 1)
    });
    let err = seen
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
    let seen = testing::watch();
    tracing::info!(name: "push_complete", target: "sinkwatch", sink = other.as_str(), entries = 3_u64);
    tracing::warn!(name: "push_retry", target: "sinkwatch", sink = sink.as_str(), status = 503_u64);
    let err = seen
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
    let seen = testing::watch();
    // Other tests in this process may emit concurrently, so match on an impossible value
    // and check the hint with a wait that sees only its own (absent) seen.
    let err = seen
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
    let seen = testing::watch();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = tag.clone();
    std::thread::spawn(move || {
        rx.recv().unwrap();
        emit(&t, 1);
    });
    tx.send(()).unwrap();
    // With tokio's clock paused, tokio::time::timeout would fire as soon as the runtime is
    // idle; the waiter's deadline is real time.
    let ev = seen
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
    let seen = testing::watch();
    tracing::debug!(target: "my_app::orders", tag = tag.as_str(), total = 12.5_f64, express = true, note = ?"quoted");
    let m = Matcher::target("my_app::orders")
        .level(tracing::Level::DEBUG)
        .field("tag", tag.as_str())
        .field("express", true)
        .field("note", "quoted")
        .field_where("total", |v| v.as_f64().is_some_and(|t| t > 10.0));
    let err = seen
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
    let ev = seen.wait(m).await.unwrap();
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
    let seen = testing::watch();
    tracing::info!(name: "push_complete", target: "sinkwatch", event = "push_complete", sink = sink.as_str());
    let ev = seen
        .wait(Matcher::sink_event(&sink, events::push_complete::NAME))
        .await
        .unwrap();
    assert_eq!(ev.name(), "push_complete");
    assert_eq!(ev.str(events::EVENT), Some("push_complete"));
}

#[tokio::test]
async fn a_later_wait_examines_only_new_events_after_a_long_history() {
    testing::init();
    let tag = unique("long-history");
    let seen = testing::watch();
    for i in 0..200_000_u64 {
        tracing::trace!(target: "history_noise", i);
    }
    emit(&tag, 1);
    let m = || Matcher::any().field("tag", tag.as_str());
    assert_eq!(seen.wait(m()).await.unwrap().u64("n"), Some(1));
    assert!(seen.fetched() >= 200_001, "fetched {}", seen.fetched());
    let (fetched, examined) = (seen.fetched(), seen.examined());

    emit(&tag, 2);
    assert_eq!(seen.wait(m()).await.unwrap().u64("n"), Some(2));
    // Other tests in this process emit concurrently: a few hundred events, never 200,000.
    let (new_fetched, new_examined) = (seen.fetched() - fetched, seen.examined() - examined);
    assert!(
        (1..10_000).contains(&new_fetched),
        "the later wait fetched {new_fetched} events"
    );
    assert!(
        (1..10_000).contains(&new_examined),
        "the later wait examined {new_examined} events"
    );
    // The history is still there for diagnostics and for waits that need it.
    let noise = Matcher::target("history_noise").field("i", 199_999_u64);
    seen.wait(noise).timeout(SHORT).await.unwrap();
}

#[tokio::test]
async fn earlier_unconsumed_events_stay_eligible_for_later_waits() {
    testing::init();
    let tag = unique("eligible");
    let seen = testing::watch();
    emit(&tag, 1);
    emit(&tag, 2);
    let n = |n: u64| Matcher::any().field("tag", tag.as_str()).field("n", n);
    assert_eq!(seen.wait(n(2)).await.unwrap().u64("n"), Some(2));
    // Captured before the match above, examined by that wait, not consumed: still found.
    assert_eq!(seen.wait(n(1)).await.unwrap().u64("n"), Some(1));
    let err = seen.wait(n(1)).timeout(SHORT).await.unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Timeout);
}

#[tokio::test]
async fn a_timeout_lists_what_explains_it_before_dependency_noise() {
    testing::init();
    let sink = SinkId::new("noisy");
    let other = SinkId::new("noisy");
    let seen = testing::watch();
    for i in 0..600_u64 {
        tracing::trace!(target: "hyper_util::client::legacy::pool", i, "checkout");
    }
    tracing::info!(name: "push_complete", target: "sinkwatch", sink = other.as_str(), entries = 3_u64);
    tracing::debug!(name: "batch_sent", target: "sinkwatch", sink = sink.as_str(), entries = 3_u64);
    for i in 0..600_u64 {
        tracing::trace!(target: "hyper_util::client::legacy::pool", i, "checkout");
    }
    for i in 0..34_u64 {
        tracing::debug!(target: "h2::codec::framed_read", i, "received frame");
    }
    let err = seen
        .wait(Matcher::sink_event(&sink, "push_complete"))
        .timeout(SHORT)
        .await
        .unwrap_err();
    let msg = err.message();
    let at = |needle: &str| {
        msg.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from:\n{msg}"))
    };
    let near_miss = at(&format!("sink: expected \"{sink}\", got \"{other}\""));
    let same_sink = at(&format!("batch_sent sink=\"{sink}\""));
    let summary = at("events from other targets: ");
    assert!(near_miss < summary && same_sink < summary, "{msg}");
    assert!(msg.contains("hyper_util (1,200 TRACE)"), "{msg}");
    assert!(msg.contains("h2 (34 DEBUG)"), "{msg}");
    // The noise is counted, never listed line by line.
    assert!(!msg.contains("hyper_util::client"), "{msg}");
    assert!(!msg.contains("received frame"), "{msg}");
}

#[tokio::test]
async fn logs_contain_sees_only_what_this_watcher_saw() {
    testing::init();
    let tag = unique("logs");
    tracing::info!("{tag} before the watcher");
    let seen = testing::watch();
    tracing::warn!(target: "my_app::orders", order = tag.as_str(), "payment declined");
    assert!(seen.logs_contain(&format!(
        "WARN my_app::orders: payment declined order=\"{tag}\""
    )));
    assert!(!seen.logs_contain(&format!("{tag} before the watcher")));
    seen.assert_logs_contain("payment declined");
    let lines = seen.log_lines();
    assert!(lines.iter().any(|l| l.contains(tag.as_str())), "{lines:?}");
}

#[tokio::test]
async fn assert_logs_contain_panics_quoting_the_lines_seen() {
    testing::init();
    let tag = unique("logs-missing");
    let seen = testing::watch();
    tracing::info!(tag = tag.as_str(), "something else");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        seen.assert_logs_contain(&format!("{tag} never logged"));
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted panic");
    assert!(
        message.contains("no log line since the watcher's start contains"),
        "{message}"
    );
    assert!(
        message.contains(&format!("something else tag=\"{tag}\"")),
        "{message}"
    );
}

#[tokio::test]
async fn logs_assert_runs_the_check_over_the_lines() {
    testing::init();
    let tag = unique("logs-assert");
    let seen = testing::watch();
    for _ in 0..2 {
        tracing::info!(batch = tag.as_str(), "retrying");
    }
    let needle = format!("retrying batch=\"{tag}\"");
    let count = |lines: &[&str]| lines.iter().filter(|l| l.contains(&needle)).count();
    seen.logs_assert(|lines| match count(lines) {
        2 => Ok(()),
        n => Err(format!("expected 2 retries, saw {n}")),
    });
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        seen.logs_assert(|lines| match count(lines) {
            3 => Ok(()),
            n => Err(format!("expected 3 retries, saw {n}")),
        });
    }))
    .unwrap_err();
    let message = panic.downcast_ref::<String>().expect("a formatted panic");
    assert!(message.contains("expected 3 retries, saw 2"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_logs_contain_awaits_logs_from_other_threads() {
    testing::init();
    let tag = unique("logs-wait");
    let seen = testing::watch();
    let t = tag.clone();
    std::thread::spawn(move || tracing::info!(job = t.as_str(), "job finished"));
    let ev = seen
        .wait_logs_contain(format!("job finished job=\"{tag}\""))
        .await
        .unwrap();
    assert_eq!(ev.str("job"), Some(tag.as_str()));
    let err = seen
        .wait_logs_contain(format!("{tag} never logged"))
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Timeout);
    assert!(err.message().contains("log line containing"), "{err}");
}

#[tokio::test]
async fn the_receiver_types_are_reachable_at_testing() {
    use sinkwatch::testing::{Fault, LokiReceiver, LokiReceiverBuilder};
    let builder: fn() -> LokiReceiverBuilder = LokiReceiver::builder;
    let _: fn(&LokiReceiver) -> Vec<testing::ReceivedEntry> = LokiReceiver::entries;
    let _: fn(&LokiReceiver) -> Vec<testing::ReceivedRequest> = LokiReceiver::requests;
    let _: fn(&LokiReceiver, &str) -> Vec<testing::ReceivedStream> = LokiReceiver::streams;
    let receiver = builder().start().await.unwrap();
    receiver.push_fault(Fault::status(503));
    receiver.push_fault(Fault::status(429));
    assert_eq!(receiver.pending_faults(), 2);
}

#[tokio::test]
async fn the_documented_checkpoint_chain_compiles_and_skips_earlier_events() {
    testing::init();
    let tag = unique("chain");
    let seen = testing::watch();
    emit(&tag, 1);
    // The chain of the guide's API table: one watcher, borrowed twice.
    let wait = seen
        .wait(Matcher::any().field("tag", tag.as_str()))
        .after(seen.checkpoint());
    let t = tag.clone();
    std::thread::spawn(move || emit(&t, 2));
    assert_eq!(wait.await.unwrap().u64("n"), Some(2));
    // The earlier event was skipped, not consumed: a plain wait still finds it.
    let first = seen
        .wait(Matcher::any().field("tag", tag.as_str()))
        .await
        .unwrap();
    assert_eq!(first.u64("n"), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_waits_on_one_watcher_never_share_an_event() {
    testing::init();
    let tag = unique("concurrent");
    let seen = testing::watch();
    let m = || Matcher::any().field("tag", tag.as_str());
    let t = tag.clone();
    std::thread::spawn(move || {
        for n in 0..4 {
            emit(&t, n);
        }
    });
    let (a, b, pair) = tokio::join!(seen.wait(m()), seen.wait(m()), seen.wait_n(m(), 2));
    let mut ns: Vec<u64> = [a.unwrap(), b.unwrap()]
        .into_iter()
        .chain(pair.unwrap())
        .map(|e| e.u64("n").unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, [0, 1, 2, 3], "each event went to exactly one wait");
    // All four are consumed: nothing is left for another wait.
    assert!(seen.take_all(m()).is_empty());
}

#[tokio::test]
async fn take_all_consumes_every_match_so_far_and_nothing_later() {
    testing::init();
    let tag = unique("take-all");
    let seen = testing::watch();
    let m = || Matcher::any().field("tag", tag.as_str());
    assert!(seen.take_all(m()).is_empty(), "nothing yet");
    for n in 0..3 {
        emit(&tag, n);
    }
    emit(&unique("other"), 9);
    let taken: Vec<u64> = seen
        .take_all(m())
        .iter()
        .map(|e| e.u64("n").unwrap())
        .collect();
    assert_eq!(taken, [0, 1, 2], "in capture order, only the matching ones");
    assert!(seen.take_all(m()).is_empty(), "consumed");
    emit(&tag, 3);
    let later = seen.wait(m()).timeout(SHORT).await.unwrap();
    assert_eq!(later.u64("n"), Some(3));
}
