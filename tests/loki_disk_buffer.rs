//! The Loki sink's disk buffer (issue 15), from the outside: restarts replay in order and
//! keep the accounting across processes, a locked directory is a clear `build()` error, the
//! cap holds and overflow is reported, rejections settle, a removed directory falls back to
//! memory and recovers, records too old for Loki are dropped, and a long outage ends with
//! every record delivered once. The crash tests (real `SIGKILL`s) are in
//! `loki_disk_buffer_kill.rs`.

#[path = "support/loki.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use sinkwatch::events::{self, reason};
use sinkwatch::testing::{self, Fault};
use sinkwatch::{ErrorKind, LokiSink, LokiSinkBuilder, OverflowPolicy, Record};
use support::{drops, ev, receiver, record, shut, sink_for};
use tracing::Level;

/// A test sink for `url` with a disk buffer in `dir`.
fn disk_sink(receiver: &testing::LokiReceiver, dir: &Path) -> LokiSinkBuilder {
    sink_for(receiver).disk_buffer(dir)
}

/// Bytes of the buffer's files in `dir` (segments and settlement log; the lock file is a
/// few bytes and not counted by the cap).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "lock")
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    })
}

/// Asserts `accepted + replayed == delivered + dropped + persisted`.
fn assert_identity(stats: &sinkwatch::SinkStats) {
    assert_eq!(
        stats.accepted + stats.replayed,
        stats.delivered + stats.dropped + stats.persisted,
        "{stats:?}"
    );
}

/// How many times each line arrived.
fn arrivals(receiver: &testing::LokiReceiver) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in receiver.lines() {
        *seen.entry(line).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_what_the_last_process_left_first_and_in_order() {
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let first = disk_sink(&receiver, dir.path())
        .max_in_flight(1)
        .build()
        .unwrap();
    for i in 0..100 {
        first.try_write(record(format!("old {i}"))).unwrap();
    }
    let stats = shut(&first, Duration::from_millis(300)).await;
    assert_eq!(stats.persisted, 100, "{stats:?}");
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_identity(&stats);

    receiver.restart().await.unwrap();
    let events = testing::watch();
    let second = disk_sink(&receiver, dir.path())
        .max_in_flight(1)
        .build()
        .unwrap();
    assert_eq!(second.stats().replayed, 100);
    let replayed = events
        .wait(ev(second.id(), events::buffer_replayed::NAME))
        .await
        .unwrap();
    assert_eq!(replayed.u64(events::buffer_replayed::RECORDS), Some(100));
    assert!(replayed.u64(events::buffer_replayed::BYTES).unwrap() > 100 * 5);
    assert!(
        replayed
            .u64(events::buffer_replayed::OLDEST_AGE_MS)
            .unwrap()
            >= 1000
    );
    for i in 0..10 {
        second.try_write(record(format!("new {i}"))).unwrap();
    }
    second.flush().await.unwrap();
    let expected: Vec<String> = (0..100)
        .map(|i| format!("old {i}"))
        .chain((0..10).map(|i| format!("new {i}")))
        .collect();
    assert_eq!(receiver.lines(), expected);
    let stats = shut(&second, Duration::from_secs(5)).await;
    assert_eq!(stats.delivered, 110, "{stats:?}");
    assert_eq!(stats.persisted, 0, "{stats:?}");
    assert_identity(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_one_sink_persists_the_next_on_the_same_dir_replays_and_delivers_once() {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let first = disk_sink(&receiver, dir.path()).build().unwrap();
    for i in 0..200 {
        first.try_write(record(format!("r{i}"))).unwrap();
    }
    first.flush().await.unwrap();
    // Loki goes down: every request is answered 503.
    receiver.push_faults((0..10_000).map(|_| Fault::status(503)));
    for i in 200..500 {
        first.try_write(record(format!("r{i}"))).unwrap();
    }
    let first_stats = shut(&first, Duration::from_millis(300)).await;
    assert_eq!(first_stats.delivered, 200, "{first_stats:?}");
    assert_eq!(first_stats.persisted, 300, "{first_stats:?}");
    assert_eq!(first_stats.dropped, 0, "{first_stats:?}");
    assert_identity(&first_stats);

    receiver.clear_faults();
    let second = disk_sink(&receiver, dir.path()).build().unwrap();
    second.flush().await.unwrap();
    let second_stats = shut(&second, Duration::from_secs(5)).await;
    assert_eq!(second_stats.replayed, first_stats.persisted);
    assert_eq!(second_stats.delivered, 300, "{second_stats:?}");
    assert_identity(&second_stats);
    let seen = arrivals(&receiver);
    assert_eq!(seen.len(), 500);
    assert!(seen.values().all(|&n| n == 1), "duplicates: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_segment_tail_is_cut_and_reported_at_start_up_and_the_rest_replayed() {
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let first = disk_sink(&receiver, dir.path()).build().unwrap();
    for i in 0..50 {
        first.try_write(record(format!("kept {i}"))).unwrap();
    }
    assert_eq!(shut(&first, Duration::from_millis(300)).await.persisted, 50);
    // A crash inside a write: half a record at the end of the last segment.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().unwrap();
    let mut file = std::fs::OpenOptions::new().append(true).open(last).unwrap();
    std::io::Write::write_all(&mut file, &[40, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(file);

    receiver.restart().await.unwrap();
    let events = testing::watch();
    let second = disk_sink(&receiver, dir.path()).build().unwrap();
    let repaired = events
        .wait(ev(second.id(), events::tail_repaired::NAME))
        .await
        .unwrap();
    assert_eq!(
        repaired.str(events::tail_repaired::PATH),
        Some(last.display().to_string().as_str())
    );
    assert_eq!(repaired.u64(events::tail_repaired::BYTES_CUT), Some(7));
    assert_eq!(second.stats().replayed, 50);
    second.flush().await.unwrap();
    assert_eq!(
        receiver.lines(),
        (0..50).map(|i| format!("kept {i}")).collect::<Vec<_>>()
    );
    assert_identity(&shut(&second, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sink_on_a_dir_in_use_gets_a_build_error_naming_the_holder() {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let first = disk_sink(&receiver, dir.path()).build().unwrap();
    let e = disk_sink(&receiver, dir.path()).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config, "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    shut(&first, Duration::from_secs(5)).await;
    // Once the holder is gone, the directory is free.
    let again = disk_sink(&receiver, dir.path()).build().unwrap();
    shut(&again, Duration::from_secs(5)).await;
}

const CAP: u64 = 256 * 1024;
/// The largest segment under a 256 KiB cap: an eighth of it, at least 16 KiB.
const SEGMENT: u64 = CAP / 8;

/// Writes `n` records of about 1 KiB during an outage, checking the disk after each 100.
fn fill_during_outage(sink: &LokiSink, dir: &Path, n: usize) {
    let pad = "x".repeat(1000);
    for i in 0..n {
        let _ = sink.try_write(record(format!("{i} {pad}")));
        if i % 100 == 99 {
            let bytes = dir_bytes(dir);
            assert!(bytes <= CAP + SEGMENT, "{bytes} bytes on disk after {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_under_drop_oldest_evicts_and_reports_and_stays_under_its_cap() {
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let events = testing::watch();
    let sink = disk_sink(&receiver, dir.path())
        .disk_buffer_max_bytes(CAP)
        .overflow(OverflowPolicy::DropOldest)
        .build()
        .unwrap();
    fill_during_outage(&sink, dir.path(), 2000);
    let stats = shut(&sink, Duration::from_millis(300)).await;
    assert!(dir_bytes(dir.path()) <= CAP + SEGMENT);
    let evicted = drops(&events, sink.id())
        .get(reason::BUFFER_FULL_OLDEST)
        .copied()
        .unwrap_or(0);
    assert!(evicted > 1000, "{evicted} evicted; {stats:?}");
    assert!(stats.persisted > 100, "{stats:?}");
    assert_identity(&stats);

    // The newest survive: the next process delivers exactly what was persisted.
    receiver.restart().await.unwrap();
    let next = disk_sink(&receiver, dir.path())
        .disk_buffer_max_bytes(CAP)
        .build()
        .unwrap();
    next.flush().await.unwrap();
    let next_stats = shut(&next, Duration::from_secs(5)).await;
    assert_eq!(next_stats.delivered, stats.persisted, "{next_stats:?}");
    assert!(
        receiver.lines().iter().any(|l| l.starts_with("1999 ")),
        "the newest record was kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_under_block_holds_the_queue_whose_policy_reports_the_drops() {
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let events = testing::watch();
    let sink = disk_sink(&receiver, dir.path())
        .disk_buffer_max_bytes(CAP)
        .queue_capacity(100)
        .build()
        .unwrap();
    fill_during_outage(&sink, dir.path(), 2000);
    let stats = shut(&sink, Duration::from_millis(300)).await;
    assert!(dir_bytes(dir.path()) <= CAP + SEGMENT);
    let full = drops(&events, sink.id())
        .get(reason::QUEUE_FULL)
        .copied()
        .unwrap_or(0);
    assert!(full > 1000, "{full} refused by the queue; {stats:?}");
    assert_eq!(
        drops(&events, sink.id()).get(reason::BUFFER_FULL_OLDEST),
        None,
        "nothing on disk is evicted under Block"
    );
    assert_identity(&stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_request_is_settled_reported_and_never_replayed() {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let events = testing::watch();
    receiver.push_fault(Fault::status(400).body("entry out of order"));
    let sink = disk_sink(&receiver, dir.path()).build().unwrap();
    for i in 0..10 {
        sink.try_write(record(format!("bad {i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    assert_eq!(
        drops(&events, sink.id()).get(reason::REJECTED),
        Some(&10),
        "{:?}",
        sink.stats()
    );
    let stats = shut(&sink, Duration::from_secs(5)).await;
    assert_eq!(stats.persisted, 0, "{stats:?}");
    assert_identity(&stats);
    let next = disk_sink(&receiver, dir.path()).build().unwrap();
    assert_eq!(next.stats().replayed, 0);
    shut(&next, Duration::from_secs(5)).await;
    assert_eq!(receiver.entry_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_directory_is_reported_the_sink_falls_back_to_memory_and_recovers() {
    let receiver = receiver().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("buffer");
    let events = testing::watch();
    let sink = disk_sink(&receiver, &dir).build().unwrap();
    for i in 0..10 {
        sink.try_write(record(format!("a{i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for i in 0..10 {
        sink.try_write(record(format!("b{i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    let failed = events
        .wait(ev(sink.id(), events::buffer_failed::NAME))
        .await
        .unwrap();
    assert_eq!(
        failed.str(events::buffer_failed::PATH),
        Some(dir.display().to_string().as_str())
    );
    assert_eq!(
        receiver.entry_count(),
        20,
        "delivered from memory meanwhile"
    );
    // The buffer is tried again every few seconds.
    events
        .wait(ev(sink.id(), events::buffer_recovered::NAME))
        .timeout(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(dir.join("lock").exists(), "opened afresh");
    for i in 0..10 {
        sink.try_write(record(format!("c{i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    assert!(dir_bytes(&dir) > 0, "new records go to disk again");
    let stats = shut(&sink, Duration::from_secs(5)).await;
    assert_eq!(stats.delivered, 30, "{stats:?}");
    assert_identity(&stats);
    let seen = arrivals(&receiver);
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_older_than_max_entry_age_are_dropped_as_too_old_not_retried() {
    let receiver = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let events = testing::watch();
    let sink = disk_sink(&receiver, dir.path())
        .max_entry_age(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Records that waited two hours on disk (an outage), and fresh ones.
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    for i in 0..5 {
        let old = Record::new(Level::INFO, format!("old {i}")).with_time(two_hours_ago);
        sink.try_write(old).unwrap();
        sink.try_write(record(format!("fresh {i}"))).unwrap();
    }
    sink.flush().await.unwrap();
    assert_eq!(drops(&events, sink.id()).get(reason::TOO_OLD), Some(&5));
    let stats = shut(&sink, Duration::from_secs(5)).await;
    assert_eq!(stats.delivered, 5, "{stats:?}");
    assert_identity(&stats);
    let lines = receiver.lines();
    assert_eq!(
        lines,
        (0..5).map(|i| format!("fresh {i}")).collect::<Vec<_>>()
    );
}

/// Records of the long outage: at 2,000 a second over `SECONDS`, on two streams.
const RATE: u64 = 2_000;

/// Issue 15, item 6: a long outage of Loki at 2,000 records/s ends with every record
/// delivered once, in order per stream, and the disk under its cap. The records carry the
/// outage's timestamps (2,000 per simulated second, from `SECONDS` ago), which is what the
/// sink and Loki judge age by; the writing itself takes as long as the machine needs. One
/// simulated minute by default; `SINKWATCH_LONG_OUTAGE_SECONDS=600` runs the full ten
/// minutes (1.2 million records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_ends_with_every_record_delivered_once_in_order() {
    let seconds: u64 = std::env::var("SINKWATCH_LONG_OUTAGE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let total = seconds * RATE;
    let cap: u64 = 512 * 1024 * 1024;
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = disk_sink(&receiver, dir.path())
        .label_from_field("half")
        .disk_buffer_max_bytes(cap)
        .max_in_flight(1)
        .overflow(OverflowPolicy::Wait)
        .build()
        .unwrap();
    let start = SystemTime::now() - Duration::from_secs(seconds);
    let mut most = 0;
    for i in 0..total {
        let at = start + Duration::from_nanos(i * 1_000_000_000 / RATE);
        let r = Record::new(Level::INFO, format!("{i}"))
            .with_time(at)
            .with_field("half", if i % 2 == 0 { "even" } else { "odd" });
        sink.write_async(r).await.unwrap();
        if i % RATE == 0 {
            most = most.max(dir_bytes(dir.path()));
        }
    }
    assert!(most <= cap + cap / 8, "{most} bytes on disk");
    assert!(most > 0, "the outage's records went to disk");

    receiver.restart().await.unwrap();
    sink.flush().await.unwrap();
    let stats = shut(&sink, Duration::from_secs(30)).await;
    assert_eq!(stats.delivered, total, "{stats:?}");
    assert_identity(&stats);
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut count = 0;
    for e in receiver.entries() {
        let n: i64 = e.line.parse().unwrap();
        let stream = e.label("half").unwrap().to_owned();
        let before = last.insert(stream, n).unwrap_or(-1);
        assert!(n > before, "{n} after {before}: out of order or duplicated");
        count += 1;
    }
    assert_eq!(count, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_racing_a_shutdown_during_an_outage_leave_exact_totals_and_a_replay_of_them() {
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let first = disk_sink(&receiver, dir.path()).build().unwrap();
    // Four threads write until the sink refuses them; the shutdown starts while they do.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let sink = first.clone();
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                for i in 0.. {
                    let line = format!("t{t} {i}");
                    match sink.write(record(line.clone())) {
                        Ok(()) => accepted.push(line),
                        Err(e) if matches!(e.kind(), ErrorKind::Closed | ErrorKind::Failed) => {
                            break
                        }
                        // Shed under backpressure (counted as dropped by the sink): go on.
                        Err(_) => {}
                    }
                }
                accepted
            })
        })
        .collect();
    // Let the writers get going before the shutdown.
    testing::eventually("the writers have written", || {
        first.stats().accepted > 1_000
    })
    .await
    .unwrap();
    let stats = shut(&first, Duration::from_millis(200)).await;
    let written: usize = writers.into_iter().map(|w| w.join().unwrap().len()).sum();
    assert_identity(&stats);
    assert_eq!(stats.delivered, 0, "Loki was down: {stats:?}");
    assert!(stats.persisted > 0, "{stats:?}");
    assert!(stats.accepted >= written as u64, "{stats:?} {written}");
    drop(first);

    receiver.restart().await.unwrap();
    let second = disk_sink(&receiver, dir.path()).build().unwrap();
    assert_eq!(second.stats().replayed, stats.persisted);
    second.flush().await.unwrap();
    let again = shut(&second, Duration::from_secs(5)).await;
    assert_identity(&again);
    assert_eq!(again.delivered, stats.persisted, "{again:?}");
    let seen = arrivals(&receiver);
    assert_eq!(seen.len() as u64, stats.persisted, "distinct lines");
    assert!(seen.values().all(|&n| n == 1), "no duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_waiting_out_an_outage_resolves_when_a_shutdown_comes() {
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let events = testing::watch();
    let sink = disk_sink(&receiver, dir.path()).build().unwrap();
    for i in 0..50 {
        sink.try_write(record(format!("r {i}"))).unwrap();
    }
    let flushing = tokio::spawn({
        let sink = sink.clone();
        async move { sink.flush().await }
    });
    // The flush cannot end while Loki is down: it waits for delivery, and the request retries.
    events
        .wait(ev(sink.id(), events::push_retry::NAME))
        .await
        .unwrap();
    assert!(!flushing.is_finished());
    let stats = shut(&sink, Duration::from_millis(200)).await;
    // The shutdown ends the flush's wait (with whatever it answers), within the default wait.
    testing::eventually("the flush resolved", || flushing.is_finished())
        .await
        .unwrap();
    assert_identity(&stats);
    assert_eq!(stats.persisted, 50, "{stats:?}");
}
