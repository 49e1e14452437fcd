//! Feature `metrics`: every counter equals `SinkStats` and the sum of the events, whatever
//! filter the application puts on its subscriber.
//!
//! One process, one recorder (metrics recorders are global): an exact in-process recorder
//! below, and every test uses sinks of its own, told apart by their `sink` label.
//!
//! The main test runs one scripted scenario twice, each time with new sinks: a file sink
//! that rotates (by size and by hand), compresses and prunes, and a Loki sink that meets
//! 503s, a dropped connection, a 400 and a write after close.
//! - First under a global `EnvFilter` that hides sinkwatch's events (`sinkwatch=off`): the
//!   events' callsites are disabled for the whole process, so nothing after the filter
//!   check in an emitter runs. The counters must still equal `SinkStats`, the receiver's
//!   own record of the requests, and the files on disk.
//! - Then with the events visible (the same filter, reloaded): the counters must equal the
//!   sums of the events, and the first run's counters (the scenario is deterministic).

#![allow(
    clippy::float_cmp,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counts held as f64 are whole numbers far below 2^52: exact comparison is the point"
)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use sinkwatch::events;
use sinkwatch::metrics as names;
use sinkwatch::testing::{self, Fault, LokiReceiver, Matcher, Watcher};
use sinkwatch::SinkId;
use sinkwatch::{Compression, ErrorKind, FileSink, LineFormat, LokiSink, Record, SinkLayer};
use sinkwatch::{OverflowPolicy, SinkStats};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{reload, EnvFilter, Registry};

#[path = "support/file.rs"]
mod support;

const SHUTDOWN: Duration = Duration::from_secs(10);
/// The application's filter: its own events at info, none of sinkwatch's.
const HIDDEN: &str = "info,sinkwatch=off";
/// The same application with sinkwatch's events visible.
const VISIBLE: &str = "info,sinkwatch=trace";

// ----- an exact recorder -----

/// A histogram that keeps its count and sum.
#[derive(Default)]
struct Observations {
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl HistogramFn for Observations {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = (value * 1e6).round() as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

/// A metric's identity: its name and its labels, sorted.
type Id = (String, Vec<(String, String)>);

fn id_of(key: &Key) -> Id {
    let mut labels: Vec<_> = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels)
}

/// A metric's description: its kind (`counter`, `gauge`, `histogram`), unit and help.
type Description = (&'static str, Option<Unit>, String);

/// Every value as recorded, nothing aggregated away or sampled.
#[derive(Default)]
struct Exact {
    counters: Mutex<BTreeMap<Id, Arc<AtomicU64>>>,
    /// f64 bits, as the facade's `GaugeFn for AtomicU64` stores them.
    gauges: Mutex<BTreeMap<Id, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<Id, Arc<Observations>>>,
    descriptions: Mutex<BTreeMap<String, Description>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Exact {
    fn describe(&self, kind: &'static str, key: &KeyName, unit: Option<Unit>, help: &str) {
        lock(&self.descriptions).insert(key.as_str().to_owned(), (kind, unit, help.to_owned()));
    }

    /// Every metric of sink `sink`, by name and other labels (`name{label=value}`): counters
    /// and gauges by value, histograms by their count (`name_count`).
    fn of_sink(&self, sink: &SinkId) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        let mine = |id: &Id| -> Option<String> {
            let (name, labels) = id;
            if !labels
                .iter()
                .any(|(k, v)| k == names::SINK && v == sink.as_str())
            {
                return None;
            }
            let rest: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k != names::SINK)
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            Some(if rest.is_empty() {
                name.clone()
            } else {
                format!("{name}{{{}}}", rest.join(","))
            })
        };
        for (id, c) in lock(&self.counters).iter() {
            if let Some(k) = mine(id) {
                out.insert(k, as_f64(c.load(Ordering::Relaxed)));
            }
        }
        for (id, g) in lock(&self.gauges).iter() {
            if let Some(k) = mine(id) {
                out.insert(k, f64::from_bits(g.load(Ordering::Relaxed)));
            }
        }
        for (id, h) in lock(&self.histograms).iter() {
            if let Some(k) = mine(id) {
                out.insert(
                    format!("{k}_count"),
                    as_f64(h.count.load(Ordering::Relaxed)),
                );
            }
        }
        out
    }
}

impl Recorder for Exact {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe("counter", &key, unit, &help);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe("gauge", &key, unit, &help);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, help: SharedString) {
        self.describe("histogram", &key, unit, &help);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(lock(&self.counters).entry(id_of(key)).or_default().clone())
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(lock(&self.gauges).entry(id_of(key)).or_default().clone())
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(
            lock(&self.histograms)
                .entry(id_of(key))
                .or_default()
                .clone(),
        )
    }
}

fn as_f64(n: u64) -> f64 {
    n as f64
}

/// The process' recorder and its global subscriber (whose filter the scenario reloads),
/// installed once.
struct Process {
    recorder: &'static Exact,
    filter: reload::Handle<EnvFilter, Registry>,
    /// The scenario reloads the global filter: one at a time.
    scenario: tokio::sync::Mutex<()>,
}

fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let recorder: &'static Exact = Box::leak(Box::default());
        metrics::set_global_recorder(recorder).expect("the only recorder of this process");
        let (filter, handle) = reload::Layer::new(EnvFilter::new(HIDDEN));
        // A global filter, as an application sets one: a callsite it disables is disabled
        // for the whole stack, the capture layer included.
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(testing::layer());
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        Process {
            recorder,
            filter: handle,
            scenario: tokio::sync::Mutex::new(()),
        }
    })
}

fn set_filter(directives: &str) {
    // `reload` rebuilds the process-wide interest cache.
    process()
        .filter
        .reload(EnvFilter::new(directives))
        .expect("the subscriber is alive");
}

// ----- the scenario -----

fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// About 150 bytes of JSON, always the same length for the same `n` width.
fn file_record(n: u64) -> Record {
    Record::new(Level::INFO, "request handled")
        .with_time(fixed_time())
        .with_target("app::http")
        .with_field("n", 1000 + n)
        .with_field("pad", "x".repeat(40))
}

/// A time a second ago, so Loki takes the entries.
fn recent() -> SystemTime {
    let now = SystemTime::now() - Duration::from_secs(1);
    let ns = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap())
}

fn loki_record(n: u64) -> Record {
    Record::new(Level::INFO, format!("line {n}")).with_time(recent())
}

/// What one run of the scenario left: its sinks, their final stats, the receiver's view.
struct Run {
    file: SinkId,
    file_stats: SinkStats,
    /// Bytes in the files left on disk (archives decompressed), and how many rotated ones.
    on_disk_bytes: u64,
    rotated_on_disk: u64,
    active_bytes: u64,
    loki: SinkId,
    loki_stats: SinkStats,
    /// The receiver's requests: (status as the metric's label, wire bytes).
    requests: Vec<(String, u64)>,
}

async fn scenario() -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (file, on_disk) = file_scenario(dir.path()).await;
    let receiver = LokiReceiver::start().await.unwrap();
    let loki = loki_scenario(&receiver).await;
    let requests = receiver
        .requests()
        .iter()
        .map(|r| {
            let status = if r.status == 0 {
                "error".to_owned()
            } else {
                r.status.to_string()
            };
            (status, r.bytes)
        })
        .collect();
    Run {
        file: file.0,
        file_stats: file.1,
        on_disk_bytes: on_disk.0,
        rotated_on_disk: on_disk.1,
        active_bytes: on_disk.2,
        loki: loki.0,
        loki_stats: loki.1,
        requests,
    }
}

/// Size rotations, one by hand, gzip, retention by count; records written by hand and
/// through `SinkLayer` under the application's filter.
async fn file_scenario(dir: &Path) -> ((SinkId, SinkStats), (u64, u64, u64)) {
    let sink = FileSink::builder(dir)
        .max_file_size(1500)
        .compression(Compression::Gzip)
        .max_files(3)
        .queue_capacity(10_000)
        .queue_max_bytes(4 << 20)
        .build()
        .unwrap();
    let recorder = process().recorder;
    for n in 0..40 {
        sink.write(file_record(n)).unwrap();
    }
    // The application's own events, through the layer, under its filter.
    let app = tracing_subscriber::registry()
        .with(EnvFilter::new(HIDDEN))
        .with(SinkLayer::new(sink.clone()));
    tracing::subscriber::with_default(app, || {
        for n in 0..20_u64 {
            tracing::info!(
                n = 1000 + n,
                pad = "yyyyyyyyyyyyyyyyyyyyyyyyy",
                "order placed"
            );
        }
    });
    sink.flush().await.unwrap();
    // Exact at the flush: the pipe's counters, and the queue is empty.
    let now = recorder.of_sink(sink.id());
    let stats = sink.stats();
    assert_eq!(stats.accepted, 60, "{stats:?}");
    assert_eq!(
        now[names::RECORDS_ACCEPTED],
        as_f64(stats.accepted),
        "{now:#?}"
    );
    assert_eq!(
        now[names::RECORDS_DELIVERED],
        as_f64(stats.delivered),
        "{now:#?}"
    );
    assert_eq!(now[names::QUEUE_RECORDS], 0.0, "{now:#?}");
    assert_eq!(now[names::QUEUE_BYTES], 0.0, "{now:#?}");

    sink.rotate()
        .await
        .unwrap()
        .expect("the active file has lines");
    for n in 0..5 {
        sink.write(file_record(n)).unwrap();
    }
    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed);
    assert_eq!(
        sink.write(file_record(0)).unwrap_err().kind(),
        ErrorKind::Closed
    );
    let refused = recorder.of_sink(sink.id());
    assert_eq!(
        refused.get(names::RECORDS_REFUSED),
        Some(&1.0),
        "a refused write is counted before write() returns"
    );
    let on_disk = files_on_disk(dir, sink.active_path());
    ((sink.id().clone(), sink.stats()), on_disk)
}

/// (bytes of every file, decompressed; rotated files; bytes of the active file).
fn files_on_disk(dir: &Path, active: &Path) -> (u64, u64, u64) {
    let (mut bytes, mut rotated) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let raw = std::fs::read(&path).unwrap();
        let len = if path.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
                .unwrap();
            out.len()
        } else {
            raw.len()
        };
        bytes += len as u64;
        if path != active {
            rotated += 1;
        }
    }
    let active = std::fs::metadata(active).map_or(0, |m| m.len());
    (bytes, rotated, active)
}

/// Pushes through two 503s; a 400; a dropped connection and 503s until the retries run
/// out; then a write after close.
async fn loki_scenario(receiver: &LokiReceiver) -> (SinkId, SinkStats) {
    let sink = LokiSink::builder(receiver.url())
        .label("app", "metrics")
        .line_format(LineFormat::Message)
        .batch_wait(Duration::from_secs(3600)) // only flushes push
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .max_retries(2)
        .overflow(OverflowPolicy::Block(Duration::from_secs(5)))
        .queue_capacity(1000)
        .queue_max_bytes(1 << 20)
        .build()
        .unwrap();
    let recorder = process().recorder;
    let mut n = 0;
    let mut batch = |sink: &LokiSink, count: u64| {
        for _ in 0..count {
            sink.write(loki_record(n)).unwrap();
            n += 1;
        }
    };
    // Two 503s, then delivered on the third attempt.
    receiver.push_faults([Fault::status(503), Fault::status(503)]);
    batch(&sink, 5);
    sink.flush().await.unwrap();
    // Rejected for good.
    receiver.push_fault(Fault::status(400).body("entry too far behind"));
    batch(&sink, 3);
    sink.flush().await.unwrap();
    // A transport error and two 503s: the retries (2) run out.
    receiver.push_faults([
        Fault::drop_connection(),
        Fault::status(503),
        Fault::status(503),
    ]);
    batch(&sink, 2);
    sink.flush().await.unwrap();
    let now = recorder.of_sink(sink.id());
    let stats = sink.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.dropped), (10, 5, 5));
    assert_eq!(now[names::RECORDS_ACCEPTED], 10.0, "{now:#?}");
    assert_eq!(now[names::RECORDS_DELIVERED], 5.0, "{now:#?}");
    assert_eq!(now[&dropped("rejected")], 3.0, "{now:#?}");
    assert_eq!(now[&dropped("retries_exhausted")], 2.0, "{now:#?}");

    let report = sink.shutdown(SHUTDOWN).await;
    assert!(report.completed);
    let refused = sink.write(loki_record(99)).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Closed);
    assert_eq!(
        recorder.of_sink(sink.id()).get(names::RECORDS_REFUSED),
        Some(&1.0),
        "a refused write is counted before write() returns"
    );
    (sink.id().clone(), sink.stats())
}

fn dropped(reason: &str) -> String {
    format!("{}{{reason={reason}}}", names::RECORDS_DROPPED)
}

// ----- what the counters must be -----

/// The file sink's metrics as `SinkStats`, the queue's bounds and the rotations say.
fn file_expected(
    run: &Run,
    rotations: &BTreeMap<String, u64>,
    bytes_written: u64,
) -> BTreeMap<String, f64> {
    let s = run.file_stats;
    let mut m = pipe_expected(s, 10_000, 4 << 20);
    for (reason, n) in rotations {
        m.insert(
            format!("{}{{reason={reason}}}", names::ROTATIONS),
            as_f64(*n),
        );
    }
    let total: u64 = rotations.values().sum();
    m.insert(names::BYTES_WRITTEN.into(), as_f64(bytes_written));
    // Every rotated file is compressed; retention keeps three.
    m.insert(names::COMPRESSIONS.into(), as_f64(total));
    m.insert(names::RETENTION_REMOVED.into(), as_f64(total - 3));
    m
}

/// The counters every sink has, from its stats (none dropped unless said).
fn pipe_expected(s: SinkStats, max_records: usize, max_bytes: usize) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert(names::RECORDS_ACCEPTED.into(), as_f64(s.accepted));
    m.insert(names::RECORDS_DELIVERED.into(), as_f64(s.delivered));
    if s.refused > 0 {
        m.insert(names::RECORDS_REFUSED.into(), as_f64(s.refused));
    }
    m.insert(names::QUEUE_RECORDS.into(), 0.0);
    m.insert(names::QUEUE_BYTES.into(), 0.0);
    m.insert(names::QUEUE_MAX_RECORDS.into(), max_records as f64);
    m.insert(names::QUEUE_MAX_BYTES.into(), max_bytes as f64);
    m
}

/// The Loki sink's metrics as `SinkStats` and the receiver's requests say.
fn loki_expected(run: &Run, drops: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    let s = run.loki_stats;
    let mut m = pipe_expected(s, 1000, 1 << 20);
    for (reason, n) in drops {
        m.insert(dropped(reason), as_f64(*n));
    }
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    for (status, _) in &run.requests {
        *by_status.entry(status).or_default() += 1;
    }
    for (status, n) in &by_status {
        m.insert(
            format!("{}{{status={status}}}", names::PUSH_REQUESTS),
            as_f64(*n),
        );
    }
    let attempts = run.requests.len() as u64;
    let accepted: u64 = run
        .requests
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, b)| b)
        .sum();
    let failures = run
        .requests
        .iter()
        .filter(|(s, _)| !s.starts_with('2'))
        .count() as u64;
    // Every failed attempt was retried but the last of each settled request: the 400 and
    // the third attempt of the exhausted one.
    m.insert(names::PUSH_RETRIES.into(), as_f64(failures - 2));
    m.insert(format!("{}_count", names::PUSH_DURATION), as_f64(attempts));
    m.insert(names::PUSH_BYTES.into(), as_f64(accepted));
    m
}

// ----- the events -----

fn sinks_events(seen: &Watcher, sink: &SinkId, name: &str) -> Vec<testing::CapturedEvent> {
    seen.history()
        .into_iter()
        .filter(|e| Matcher::sink_event(sink, name).matches(e))
        .collect()
}

fn sum_by(
    seen: &Watcher,
    sink: &SinkId,
    name: &str,
    key: &str,
    value: &str,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for e in sinks_events(seen, sink, name) {
        let k = e.str(key).unwrap().to_owned();
        *out.entry(k).or_default() += if value.is_empty() {
            1
        } else {
            e.u64(value).unwrap()
        };
    }
    out
}

fn sum(seen: &Watcher, sink: &SinkId, name: &str, field: &str) -> u64 {
    sinks_events(seen, sink, name)
        .iter()
        .map(|e| e.u64(field).unwrap())
        .sum()
}

fn count(seen: &Watcher, sink: &SinkId, name: &str) -> u64 {
    sinks_events(seen, sink, name).len() as u64
}

/// The metrics of both sinks as the events of a visible run add up.
fn from_events(seen: &Watcher, run: &Run) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let f = &run.file;
    let mut file = BTreeMap::new();
    let closed = &sinks_events(seen, f, events::sink_closed::NAME)[0];
    file.insert(
        names::RECORDS_ACCEPTED.to_owned(),
        as_f64(closed.u64("accepted").unwrap()),
    );
    file.insert(
        names::RECORDS_DELIVERED.to_owned(),
        as_f64(closed.u64("delivered").unwrap()),
    );
    assert_eq!(closed.u64("dropped"), Some(0));
    file.insert(
        names::RECORDS_REFUSED.to_owned(),
        as_f64(sum(seen, f, events::writes_refused::NAME, "count")),
    );
    for (reason, n) in sum_by(seen, f, events::rotation_complete::NAME, "reason", "") {
        file.insert(
            format!("{}{{reason={reason}}}", names::ROTATIONS),
            as_f64(n),
        );
    }
    let rotated_bytes = sum(seen, f, events::rotation_complete::NAME, "bytes");
    file.insert(
        names::BYTES_WRITTEN.to_owned(),
        as_f64(rotated_bytes + run.active_bytes),
    );
    file.insert(
        names::COMPRESSIONS.to_owned(),
        as_f64(count(seen, f, events::compression_complete::NAME)),
    );
    file.insert(
        names::RETENTION_REMOVED.to_owned(),
        as_f64(sum(seen, f, events::retention_pruned::NAME, "files")),
    );

    let l = &run.loki;
    let mut loki = BTreeMap::new();
    let closed = &sinks_events(seen, l, events::sink_closed::NAME)[0];
    loki.insert(
        names::RECORDS_ACCEPTED.to_owned(),
        as_f64(closed.u64("accepted").unwrap()),
    );
    loki.insert(
        names::RECORDS_DELIVERED.to_owned(),
        as_f64(closed.u64("delivered").unwrap()),
    );
    loki.insert(
        names::RECORDS_REFUSED.to_owned(),
        as_f64(sum(seen, l, events::writes_refused::NAME, "count")),
    );
    for (reason, n) in sum_by(seen, l, events::records_dropped::NAME, "reason", "count") {
        loki.insert(dropped(&reason), as_f64(n));
    }
    // One attempt is one of: push_complete, push_retry, or a push_failed that settled it
    // (none here was cut by a shutdown).
    let mut attempts: BTreeMap<String, u64> = BTreeMap::new();
    for name in [
        events::push_complete::NAME,
        events::push_retry::NAME,
        events::push_failed::NAME,
    ] {
        for e in sinks_events(seen, l, name) {
            let status = match e.u64("status").unwrap() {
                0 => "error".to_owned(),
                s => s.to_string(),
            };
            *attempts.entry(status).or_default() += 1;
        }
    }
    let total: u64 = attempts.values().sum();
    for (status, n) in attempts {
        loki.insert(
            format!("{}{{status={status}}}", names::PUSH_REQUESTS),
            as_f64(n),
        );
    }
    loki.insert(format!("{}_count", names::PUSH_DURATION), as_f64(total));
    loki.insert(
        names::PUSH_RETRIES.to_owned(),
        as_f64(count(seen, l, events::push_retry::NAME)),
    );
    loki.insert(
        names::PUSH_BYTES.to_owned(),
        as_f64(sum(seen, l, events::push_complete::NAME, "bytes")),
    );
    (file, loki)
}

/// `metrics` without the gauges (the events say nothing of them).
fn counters(metrics: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    metrics
        .iter()
        .filter(|(k, _)| !k.starts_with("sinkwatch_queue_"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_are_exact_with_sinkwatch_events_hidden_and_match_the_events_when_shown() {
    let p = process();
    let _one_at_a_time = p.scenario.lock().await;

    // 1. sinkwatch's events hidden by the application's global filter.
    set_filter(HIDDEN);
    let seen = testing::watch();
    let hidden = scenario().await;
    assert!(
        seen.history().iter().all(|e| e.target() != events::TARGET),
        "the filter hides sinkwatch's events: {:?}",
        seen.history().first()
    );
    let file_hidden = p.recorder.of_sink(&hidden.file);
    let loki_hidden = p.recorder.of_sink(&hidden.loki);

    // The file sink: SinkStats; rotations counted from the files on disk (every rotated
    // file still there or removed by retention); every byte written is in a file.
    let s = hidden.file_stats;
    assert_eq!(
        (s.accepted, s.delivered, s.dropped, s.refused),
        (65, 65, 0, 1)
    );
    let rotations: u64 = file_hidden
        .iter()
        .filter(|(k, _)| k.starts_with(names::ROTATIONS))
        .map(|(_, v)| *v as u64)
        .sum();
    let removed = file_hidden[names::RETENTION_REMOVED] as u64;
    assert_eq!(
        rotations,
        hidden.rotated_on_disk + removed,
        "{file_hidden:#?}"
    );
    assert_eq!(hidden.rotated_on_disk, 3, "retention keeps three");
    let written = file_hidden[names::BYTES_WRITTEN] as u64;
    assert!(written >= hidden.on_disk_bytes && hidden.on_disk_bytes > 0);
    let by_reason: BTreeMap<String, u64> = file_hidden
        .iter()
        .filter_map(|(k, v)| {
            let reason = k.strip_prefix(names::ROTATIONS)?.strip_prefix("{reason=")?;
            Some((reason.trim_end_matches('}').to_owned(), *v as u64))
        })
        .collect();
    assert_eq!(by_reason.get("manual"), Some(&1), "{by_reason:?}");
    assert!(
        by_reason.get("size").is_some_and(|n| *n >= 3),
        "{by_reason:?}"
    );
    assert_eq!(file_hidden, file_expected(&hidden, &by_reason, written));

    // The Loki sink: SinkStats and the receiver's record of every request.
    let s = hidden.loki_stats;
    assert_eq!(
        (s.accepted, s.delivered, s.dropped, s.refused),
        (10, 5, 5, 1)
    );
    let drops = BTreeMap::from([
        ("rejected".to_owned(), 3),
        ("retries_exhausted".to_owned(), 2),
    ]);
    assert_eq!(
        hidden.requests.len(),
        7,
        "3 + 1 + 3 attempts: {:?}",
        hidden.requests
    );
    assert_eq!(loki_hidden, loki_expected(&hidden, &drops));

    // 2. The same scenario with the events visible.
    set_filter(VISIBLE);
    let seen = testing::watch();
    let shown = scenario().await;
    // `writes_refused` comes from a reporter thread within about a second.
    for sink in [&shown.file, &shown.loki] {
        seen.wait(Matcher::sink_event(sink, events::writes_refused::NAME))
            .await
            .unwrap();
    }
    set_filter(HIDDEN);
    let file_shown = p.recorder.of_sink(&shown.file);
    let loki_shown = p.recorder.of_sink(&shown.loki);
    let (file_events, loki_events) = from_events(&seen, &shown);
    assert_eq!(counters(&file_shown), file_events);
    assert_eq!(counters(&loki_shown), loki_events);
    // Deterministic: the events' visibility changed nothing.
    assert_eq!(file_shown, file_hidden);
    assert_eq!(
        without(&loki_shown, names::PUSH_BYTES),
        without(&loki_hidden, names::PUSH_BYTES),
        "(the wire bytes depend on the entries' timestamps)"
    );
}

fn without(m: &BTreeMap<String, f64>, name: &str) -> BTreeMap<String, f64> {
    let mut m = m.clone();
    m.remove(name);
    m
}

#[tokio::test]
async fn every_metric_is_described_with_its_type_and_unit_once_a_sink_is_built() {
    let p = process();
    let dir = tempfile::tempdir().unwrap();
    let sink = FileSink::builder(dir.path()).build().unwrap();
    let described = lock(&p.recorder.descriptions).clone();
    for m in names::ALL {
        let (kind, unit, help) = described
            .get(m.name)
            .unwrap_or_else(|| panic!("{} is not described", m.name));
        let expected_kind = match m.kind {
            names::Kind::Counter => "counter",
            names::Kind::Gauge => "gauge",
            names::Kind::Histogram => "histogram",
        };
        assert_eq!(*kind, expected_kind, "{}", m.name);
        let expected_unit = match m.unit {
            "bytes" => Unit::Bytes,
            "seconds" => Unit::Seconds,
            _ => Unit::Count,
        };
        assert_eq!(*unit, Some(expected_unit), "{}", m.name);
        assert_eq!(help, m.help);
    }
    sink.shutdown(SHUTDOWN).await;
}

#[tokio::test]
async fn the_queue_gauges_show_what_the_worker_held_when_it_last_looked() {
    let p = process();
    let dir = tempfile::tempdir().unwrap();
    let (gate, entered, release) = support::write_gate();
    let sink = FileSink::builder(dir.path())
        .fault_hook(gate)
        .queue_capacity(1000)
        .build()
        .unwrap();
    sink.write(file_record(0)).unwrap();
    // The worker took the record and is stuck writing it (a stalled disk): it counts
    // against the bound until written, and the gauges say so.
    entered.recv().unwrap();
    let now = p.recorder.of_sink(sink.id());
    assert_eq!(now[names::QUEUE_RECORDS], 1.0, "{now:#?}");
    assert!(now[names::QUEUE_BYTES] > 100.0, "{now:#?}");
    assert_eq!(now[names::QUEUE_MAX_RECORDS], 1000.0);
    // What arrives while the worker is stuck shows once it looks again (documented).
    for n in 1..50 {
        sink.write(file_record(n)).unwrap();
    }
    release.send(()).unwrap();
    sink.flush().await.unwrap();
    let now = p.recorder.of_sink(sink.id());
    assert_eq!(now[names::QUEUE_RECORDS], 0.0, "{now:#?}");
    assert_eq!(now[names::QUEUE_BYTES], 0.0, "{now:#?}");
    assert_eq!(now[names::RECORDS_ACCEPTED], 50.0, "{now:#?}");
    assert_eq!(now[names::RECORDS_DELIVERED], 50.0, "{now:#?}");
    sink.shutdown(SHUTDOWN).await;
}
