//! Crashes of a process writing through `SinkLayer` into a `LokiSink` with a disk buffer
//! (issue 15): real child processes (this test binary, run again) killed with `SIGKILL`
//! 1.5 s after their last write, during an outage and while requests are in flight to a
//! slow Loki, then a restart on the same directory against a healthy receiver. With
//! `DiskSync::EveryBatch` nothing is lost; duplicates come only from requests in flight at
//! the kill.

#![cfg(unix)]

#[path = "support/child.rs"]
mod child;
#[path = "support/loki.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use sinkwatch::testing::{Fault, LokiReceiver};
use sinkwatch::{DiskSync, LineFormat, LokiSink, SinkLayer};
use support::shut;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

const CHILD_TEST: &str = "child_writes_through_the_layer_until_killed";
const CHILD_DIR: &str = "SINKWATCH_KILL_DIR";
const CHILD_URL: &str = "SINKWATCH_KILL_URL";
const RECORDS: u64 = 5_000;
/// The target of the child's application events (the only ones its layer ships).
const APP: &str = "app";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the kill tests in this file, which run it"]
async fn child_writes_through_the_layer_until_killed() {
    let dir = std::env::var_os(CHILD_DIR)
        .unwrap_or_else(|| panic!("run only by its parent test, which sets {CHILD_DIR}"));
    let url = std::env::var(CHILD_URL).unwrap();
    let sink = LokiSink::builder(url)
        .label("app", "kill")
        .line_format(LineFormat::Message)
        .batch_wait(Duration::from_millis(20))
        .batch_max_entries(500)
        .min_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(100))
        .disk_buffer(&dir)
        .disk_buffer_sync(DiskSync::EveryBatch)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(SinkLayer::new(sink.clone()).with_filter(filter_fn(|m| m.target() == APP)));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    for i in 0..RECORDS {
        tracing::info!(target: APP, "record {i}");
    }
    // Straight to the process's stdout, past the harness's capture.
    let mut out = std::io::stdout().lock();
    writeln!(out, "written").unwrap();
    out.flush().unwrap();
    drop(out);
    // Never killed (the parent failed): do not outlive it.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// Runs the child against `url` with its buffer in `dir`, and kills it (`SIGKILL`) 1.5 s
/// after it said it had written its last record.
fn run_and_kill_child(dir: &Path, url: &str) {
    let child = start_child(dir, url);
    // The scenario itself (issue 15: "killed 1.5 s after their last write"), not a
    // synchronisation: nothing is awaited here.
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(Duration::from_millis(1500)); // the scenario, not a wait for work

    child::kill(child);
}

/// Starts the child and returns once it said it had written its last record.
fn start_child(dir: &Path, url: &str) -> child::KillOnDrop {
    let envs = [(CHILD_DIR, dir.as_os_str()), (CHILD_URL, OsStr::new(url))];
    child::start(CHILD_TEST, &envs, "written")
}

/// How many times each line arrived.
fn arrivals(receiver: &LokiReceiver) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for line in receiver.lines() {
        *seen.entry(line).or_insert(0) += 1;
    }
    seen
}

/// Restarts on `dir` against the (now healthy) receiver and delivers what was left.
async fn restart_and_deliver(receiver: &LokiReceiver, dir: &Path) -> u64 {
    // Its labels do not matter: replayed entries keep the stream they were written with.
    let sink = support::sink_for(receiver)
        .disk_buffer(dir)
        .build()
        .unwrap();
    let replayed = sink.stats().replayed;
    sink.flush().await.unwrap();
    let stats = shut(&sink, Duration::from_secs(10)).await;
    assert_eq!(stats.delivered, replayed, "{stats:?}");
    assert_eq!(stats.persisted, 0, "{stats:?}");
    replayed
}

fn every_record() -> BTreeSet<String> {
    (0..RECORDS).map(|i| format!("record {i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_an_outage_loses_nothing_and_duplicates_nothing() {
    let receiver = support::receiver().await;
    receiver.push_faults((0..100_000).map(|_| Fault::status(503)));
    let dir = tempfile::tempdir().unwrap();
    run_and_kill_child(dir.path(), &receiver.url());
    assert_eq!(receiver.entry_count(), 0, "Loki was down");

    receiver.clear_faults();
    let replayed = restart_and_deliver(&receiver, dir.path()).await;
    assert_eq!(replayed, RECORDS);
    let seen = arrivals(&receiver);
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        every_record()
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "duplicates without requests in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_with_requests_in_flight_loses_nothing_and_duplicates_only_those() {
    let receiver = support::receiver().await;
    // A slow Loki: each request takes a second, so some are in flight at the kill.
    receiver.set_latency(Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap();
    run_and_kill_child(dir.path(), &receiver.url());
    assert!(
        (receiver.entry_count() as u64) < RECORDS,
        "the kill came first"
    );

    receiver.set_latency(Duration::ZERO);
    restart_and_deliver(&receiver, dir.path()).await;
    let seen = arrivals(&receiver);
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        every_record(),
        "every record delivered"
    );
    assert!(seen.values().all(|&n| n <= 2), "at most once again");
    // A duplicate is an entry of a request in flight at the kill, sent again by the next
    // process: at most the child's requests in flight (4) of its batches (500 entries).
    let twice = seen.values().filter(|&&n| n > 1).count();
    assert!(twice <= 4 * 500, "{twice} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_dir_in_use_gets_a_build_error_naming_the_first() {
    let receiver = support::receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let child = start_child(dir.path(), &receiver.url());
    let e = support::sink_for(&receiver)
        .disk_buffer(dir.path())
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), sinkwatch::ErrorKind::Config, "{e}");
    let message = e.to_string();
    assert!(
        message.contains(&format!("pid {} ", child.0.id())),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    // Once its holder is killed (at once: what it had not written yet is lost, as a kill
    // within the write window loses), the directory is free, and what it held is delivered.
    drop(child);
    let before = arrivals(&receiver).len() as u64;
    let replayed = restart_and_deliver(&receiver, dir.path()).await;
    let distinct = arrivals(&receiver).len() as u64;
    assert!(
        distinct >= before.max(replayed),
        "{replayed} replayed, {before} before"
    );
}
