//! Helpers for the file sink's behaviour tests: records that say who wrote them, and
//! readers for everything the sink left in a directory (plain files and archives).

#![allow(dead_code, reason = "each test file uses a different subset")]

#[path = "tally.rs"]
mod tally;
#[allow(unused_imports, reason = "each test file uses a different subset")]
pub use tally::{dropped, drops};

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sinkwatch::testing::{self, Matcher, Watcher};
use sinkwatch::{FileSink, FileSinkBuilder, Record, SinkId};
use tempfile::TempDir;
use tracing::Level;

/// What most file-sink tests start from, in this order: the capture installed and a
/// watcher created before the sink (so it sees the sink's start-up events), a temporary
/// directory, and a sink writing into it, its builder given to `configure` first:
/// `let (seen, dir, sink) = arrange(|b| b.max_file_size(1000));`. Bind the directory to a
/// name (`_dir` if unused, never `_`) so it lives as long as the sink.
pub fn arrange(
    configure: impl FnOnce(FileSinkBuilder) -> FileSinkBuilder,
) -> (Watcher, TempDir, FileSink) {
    testing::init();
    let seen = testing::watch();
    let dir = tempfile::tempdir().unwrap();
    let sink = configure(FileSink::builder(dir.path())).build().unwrap();
    (seen, dir, sink)
}

/// A fixed event time, so every line of a test has the same length.
pub fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A record of about 200 bytes as JSON, tagged with its writer and sequence number.
pub fn record(task: u64, seq: u64) -> Record {
    Record::new(Level::INFO, "request handled")
        .with_time(fixed_time())
        .with_target("app::http")
        .with_field("task", task)
        .with_field("seq", seq)
        .with_field("path", "/api/v1/orders")
        .with_field("status", 200_u64)
        .with_field("pad", "x".repeat(40))
}

/// The bytes of a file, decompressed if it is a `.gz`.
pub fn read_any(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("{} is not a whole gzip archive: {e}", path.display()));
        out
    } else {
        raw
    }
}

/// Every line of a file parsed as JSON; panics on a torn or interleaved line.
pub fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let bytes = read_any(path);
    let text = String::from_utf8(bytes).expect("UTF-8");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in a partial line",
        path.display()
    );
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("torn line in {}: {e}: {l:?}", path.display()))
        })
        .collect()
}

/// The `(task, seq)` of every line in a file, in order.
pub fn ids(path: &Path) -> Vec<(u64, u64)> {
    json_lines(path)
        .iter()
        .map(|v| {
            (
                v["fields"]["task"].as_u64().unwrap(),
                v["fields"]["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The `seq` of every line in a file, in order.
pub fn seqs(path: &Path) -> Vec<u64> {
    ids(path).into_iter().map(|(_, s)| s).collect()
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The files in a directory, sorted by name.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    names(dir).into_iter().map(|n| dir.join(n)).collect()
}

/// Awaits events of `name` from `sink` until their `field` values add up to `total`;
/// returns the events.
pub async fn wait_total(
    events: &Watcher,
    sink: &SinkId,
    name: &str,
    field: &str,
    total: u64,
) -> Vec<sinkwatch::testing::CapturedEvent> {
    wait_total_matching(events, Matcher::sink_event(sink, name), field, total).await
}

/// Awaits events matching `matcher` until their `field` values add up to `total`.
pub async fn wait_total_matching(
    events: &Watcher,
    matcher: Matcher,
    field: &str,
    total: u64,
) -> Vec<sinkwatch::testing::CapturedEvent> {
    let mut got = Vec::new();
    let mut sum = 0;
    while sum < total {
        let ev = events.wait(matcher.clone()).await.unwrap();
        sum += ev.u64(field).unwrap();
        got.push(ev);
    }
    assert_eq!(sum, total, "the {field} fields overshot");
    got
}

/// Counts records by `(task, seq)` across every file the sink left in `dir`.
pub fn census(dir: &Path) -> BTreeMap<(u64, u64), usize> {
    let mut seen = BTreeMap::new();
    for path in files(dir) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            std::path::Path::new(&name)
                .extension()
                .is_none_or(|e| e != "tmp"),
            "a temporary archive was left behind: {name}"
        );
        for id in ids(&path) {
            *seen.entry(id).or_insert(0) += 1;
        }
    }
    seen
}

/// A write hook that blocks the worker's first write until `release` is sent: a stalled
/// disk. Returns the hook, a receiver that says the worker is inside that write, and the
/// release.
#[allow(clippy::type_complexity)]
pub fn write_gate() -> (
    impl Fn(usize) -> std::io::Result<usize> + Send + Sync + 'static,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let slot = std::sync::Mutex::new(Some((entered_tx, release_rx)));
    let hook = move |len| {
        if let Some((entered, release)) = slot.lock().unwrap().take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
        Ok(len)
    };
    (hook, entered_rx, release_tx)
}
