//! The Loki sink against `tracing-loki`, both pushing to the in-process Loki-compatible
//! receiver. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p sinkwatch-bench --bench loki_sink`. Each scenario runs in its own
//! subprocess of this binary, so peak memory (`VmHWM`) is per scenario.
//!
//! - burst: `SINKWATCH_BENCH_RECORDS` events (200,000 by default) emitted as fast as
//!   possible through a `tracing` layer; timed from the first event until the sink is
//!   flushed (ours) or shut down (tracing-loki). Only entries the receiver accepted count.
//! - outage: the receiver is down for `SINKWATCH_BENCH_OUTAGE_SECS` (30 by default) while
//!   events arrive at 10,000/s; peak memory growth against the configured buffer bound.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sinkwatch::testing::LokiReceiver;
use sinkwatch::{LokiSink, LokiSinkBuilder};
use sinkwatch::{OverflowPolicy, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

const OUTAGE_RATE: u64 = 10_000;
const OUTAGE_QUEUE_BYTES: usize = 32 * 1024 * 1024;
const SCENARIOS: &[&str] = &[
    "ours_default",
    "ours_sized_queue",
    "ours_wait",
    "tracing_loki",
    "ours_outage",
    "tracing_loki_outage",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmHWM` and `VmRSS` of this process, in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Reads the `count` field of an event.
struct Count(u64);
impl tracing::field::Visit for Count {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "count" {
            self.0 = value;
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// Counts the records sinkwatch reported dropped (`records_dropped` events).
#[derive(Clone, Default)]
struct DropCounter(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DropCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().name() != sinkwatch::events::records_dropped::NAME {
            return;
        }
        let mut c = Count(0);
        event.record(&mut c);
        self.0.fetch_add(c.0, Ordering::Relaxed);
    }
}

/// The same event for both clients: a message and five fields, ~250 bytes as JSON.
fn emit(seq: u64) {
    tracing::info!(
        target: "bench::http",
        task = 1_u64,
        seq,
        path = "/api/v1/orders",
        status = 200_u64,
        pad = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "request handled"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn ours(url: &str) -> LokiSinkBuilder {
    LokiSink::builder(url)
        .label("service_name", "bench")
        .label_from_field("level")
}

/// What the receiver saw: (entries, requests, bytes on the wire).
fn received(receiver: &LokiReceiver) -> (u64, u64, u64) {
    let requests = receiver.requests();
    let bytes = requests.iter().map(|r| r.bytes).sum();
    (receiver.entry_count() as u64, requests.len() as u64, bytes)
}

fn print_result(fields: &[(&str, serde_json::Value)]) {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    println!("RESULT {}", serde_json::Value::Object(map));
}

/// Our sink, fed through `SinkLayer` (or `write()` when `wait`).
fn run_ours(config: fn(LokiSinkBuilder) -> LokiSinkBuilder, wait: bool) {
    let n = env_u64("SINKWATCH_BENCH_RECORDS", 200_000);
    let rt = runtime();
    let sink = config(ours(&bench_url())).build().expect("sink");
    let drops = DropCounter::default();
    let subscriber = tracing_subscriber::registry()
        .with(drops.clone())
        .with(SinkLayer::new(sink.clone()).with_spans(false));
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    let started = Instant::now();
    for seq in 0..n {
        if wait {
            let r = sinkwatch::Record::new(tracing::Level::INFO, "request handled")
                .with_target("bench::http")
                .with_field("task", 1_u64)
                .with_field("seq", seq)
                .with_field("path", "/api/v1/orders")
                .with_field("status", 200_u64)
                .with_field("pad", "x".repeat(60));
            sink.write(r).expect("write");
        } else {
            emit(seq);
        }
    }
    let emitted = started.elapsed();
    rt.block_on(sink.flush()).expect("flush");
    let elapsed = started.elapsed();
    let stats = sink.stats();
    let reported = drops.0.load(Ordering::Relaxed);
    report_burst(n, emitted, elapsed, stats.dropped, reported);
}

/// The client's side of a burst; the receiver's side comes from the `serve` process.
fn report_burst(n: u64, emitted: Duration, elapsed: Duration, dropped: u64, reported: u64) {
    let (hwm, _) = memory_kib();
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    print_result(&[
        ("records", n.into()),
        ("stats_dropped", dropped.into()),
        ("reported_dropped", reported.into()),
        ("emit_ms", ms(emitted).into()),
        (
            "elapsed_us",
            u64::try_from(elapsed.as_micros())
                .unwrap_or(u64::MAX)
                .into(),
        ),
        ("peak_kib", hwm.into()),
    ]);
}

/// The URL of the receiver the parent started in its own process.
fn bench_url() -> String {
    std::env::var("SINKWATCH_BENCH_URL").expect("SINKWATCH_BENCH_URL")
}

/// A receiver in its own process, so client scenarios' peak memory is the client's alone:
/// prints its URL, serves until stdin closes, then prints what it received.
fn serve() {
    use std::io::{Read as _, Write as _};
    let rt = runtime();
    let receiver = rt.block_on(LokiReceiver::start()).expect("receiver");
    println!("URL {}", receiver.url());
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let (entries, requests, bytes) = received(&receiver);
    println!("RECEIVED {entries} {requests} {bytes}");
}

fn run_tracing_loki() {
    let n = env_u64("SINKWATCH_BENCH_RECORDS", 200_000);
    let rt = runtime();
    let url = tracing_loki::url::Url::parse(&bench_url()).expect("url");
    let (layer, controller, task) = tracing_loki::builder()
        .label("service_name", "bench")
        .expect("label")
        .build_controller_url(url)
        .expect("tracing-loki");
    let handle = rt.spawn(task);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("subscriber");
    let started = Instant::now();
    for seq in 0..n {
        emit(seq);
    }
    let emitted = started.elapsed();
    rt.block_on(async {
        controller.shutdown().await;
        let _ = handle.await;
    });
    let elapsed = started.elapsed();
    report_burst(n, emitted, elapsed, 0, 0);
}

/// Emits at `OUTAGE_RATE` per second for `secs` seconds, in 10 ms steps.
fn paced(secs: u64, mut seq: u64) -> u64 {
    let start = Instant::now();
    let per_step = OUTAGE_RATE / 100;
    for step in 0..secs * 100 {
        for _ in 0..per_step {
            emit(seq);
            seq += 1;
        }
        let next = start + Duration::from_millis(10 * (step + 1));
        #[allow(clippy::disallowed_methods)] // the load generator's pacing, not synchronisation
        std::thread::sleep(next.saturating_duration_since(Instant::now())); // paces a simulated peer at 10k/s
    }
    seq
}

fn run_ours_outage() {
    let secs = env_u64("SINKWATCH_BENCH_OUTAGE_SECS", 30);
    let rt = runtime();
    let receiver = rt.block_on(LokiReceiver::start()).expect("receiver");
    let sink = ours(&receiver.url())
        .queue_max_bytes(OUTAGE_QUEUE_BYTES)
        .queue_capacity(1_000_000)
        .overflow(OverflowPolicy::DropNewest)
        .max_retries(1000)
        .max_backoff(Duration::from_secs(2))
        .build()
        .expect("sink");
    let drops = DropCounter::default();
    let subscriber = tracing_subscriber::registry()
        .with(drops.clone())
        .with(SinkLayer::new(sink.clone()).with_spans(false));
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    let seq = paced(1, 0);
    rt.block_on(sink.flush()).expect("warm-up flush");
    let (_, baseline) = memory_kib();
    rt.block_on(receiver.stop());
    let seq = paced(secs, seq);
    let (hwm, _) = memory_kib();
    rt.block_on(receiver.restart()).expect("restart");
    rt.block_on(sink.flush()).expect("flush");
    let s = sink.stats();
    let bound_kib = (OUTAGE_QUEUE_BYTES + 2 * 1024 * 1024) as u64 / 1024;
    print_result(&[
        ("records", seq.into()),
        ("baseline_kib", baseline.into()),
        ("peak_kib", hwm.into()),
        ("growth_kib", hwm.saturating_sub(baseline).into()),
        ("bound_kib", bound_kib.into()),
        ("accepted", s.accepted.into()),
        ("delivered", s.delivered.into()),
        ("stats_dropped", s.dropped.into()),
        ("reported_dropped", drops.0.load(Ordering::Relaxed).into()),
        ("received", (receiver.entry_count() as u64).into()),
    ]);
}

fn run_tracing_loki_outage() {
    let secs = env_u64("SINKWATCH_BENCH_OUTAGE_SECS", 30);
    let rt = runtime();
    let receiver = rt.block_on(LokiReceiver::start()).expect("receiver");
    let url = tracing_loki::url::Url::parse(&receiver.url()).expect("url");
    let (layer, controller, task) = tracing_loki::builder()
        .label("service_name", "bench")
        .expect("label")
        .build_controller_url(url)
        .expect("tracing-loki");
    let handle = rt.spawn(task);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("subscriber");
    let seq = paced(1, 0);
    let (_, baseline) = memory_kib();
    rt.block_on(receiver.stop());
    let seq = paced(secs, seq);
    let (hwm, _) = memory_kib();
    rt.block_on(receiver.restart()).expect("restart");
    rt.block_on(async {
        controller.shutdown().await;
        let _ = handle.await;
    });
    print_result(&[
        ("records", seq.into()),
        ("baseline_kib", baseline.into()),
        ("peak_kib", hwm.into()),
        ("growth_kib", hwm.saturating_sub(baseline).into()),
        ("received", (receiver.entry_count() as u64).into()),
    ]);
}

fn run_scenario(name: &str) {
    match name {
        "ours_default" => run_ours(|b| b, false),
        // A queue that holds the whole burst: nothing has to be dropped.
        "ours_sized_queue" => run_ours(
            |b| b.queue_capacity(262_144).queue_max_bytes(512 * 1024 * 1024),
            false,
        ),
        // Back-pressure instead of drops: `write()` waits for room.
        "ours_wait" => run_ours(|b| b.overflow(OverflowPolicy::Wait), true),
        "tracing_loki" => run_tracing_loki(),
        "serve" => serve(),
        "ours_outage" => run_ours_outage(),
        "tracing_loki_outage" => run_tracing_loki_outage(),
        other => eprintln!("unknown scenario {other}"),
    }
}

/// Runs one scenario in a subprocess (bursts against a receiver in another subprocess) and
/// returns its result fields.
fn run_child(exe: &std::path::Path, name: &str) -> serde_json::Map<String, serde_json::Value> {
    use std::io::BufRead as _;
    let burst = !name.contains("outage");
    let mut server = None;
    let mut child = Command::new(exe);
    child.args(["--scenario", name]);
    if burst {
        let mut s = Command::new(exe)
            .args(["--scenario", "serve"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("serve");
        let mut lines = std::io::BufReader::new(s.stdout.take().expect("stdout")).lines();
        let url = lines.next().and_then(Result::ok).unwrap_or_default();
        child.env("SINKWATCH_BENCH_URL", url.trim_start_matches("URL "));
        server = Some((s, lines));
    }
    let out = child.output().expect("subprocess");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut result: serde_json::Map<String, serde_json::Value> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_default();
    if !out.status.success() {
        println!("  {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some((mut s, mut lines)) = server {
        drop(s.stdin.take());
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = s.wait();
        let nums: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [entries, requests, bytes] = nums[..] {
            merge_received(&mut result, entries, requests, bytes);
        }
    }
    result
}

/// Adds the receiver's counts and the figures derived from them.
fn merge_received(
    r: &mut serde_json::Map<String, serde_json::Value>,
    entries: u64,
    requests: u64,
    bytes: u64,
) {
    let records = r
        .get("records")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let us = r
        .get("elapsed_us")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1)
        .max(1);
    #[allow(clippy::cast_precision_loss)]
    let (per_sec, per_entry) = (
        entries as f64 * 1e6 / us as f64,
        if entries == 0 {
            0.0
        } else {
            bytes as f64 / entries as f64
        },
    );
    r.insert("delivered".into(), entries.into());
    r.insert("lost".into(), records.saturating_sub(entries).into());
    r.insert("requests".into(), requests.into());
    r.insert("delivered_per_sec".into(), per_sec.round().into());
    r.insert(
        "bytes_per_entry".into(),
        ((per_entry * 100.0).round() / 100.0).into(),
    );
}

fn median_rate(runs: &[serde_json::Map<String, serde_json::Value>]) -> f64 {
    let mut rates: Vec<f64> = runs
        .iter()
        .filter_map(|r| {
            r.get("delivered_per_sec")
                .and_then(serde_json::Value::as_f64)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        return run_scenario(&args[i + 1]);
    }
    let only = std::env::var("SINKWATCH_BENCH_ONLY").ok();
    let runs = env_u64("SINKWATCH_BENCH_RUNS", 3);
    let exe = std::env::current_exe().expect("current exe");
    let mut medians = Vec::new();
    for name in SCENARIOS {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| x == *name))
        {
            continue;
        }
        let n = if name.contains("outage") { 1 } else { runs };
        let results: Vec<_> = (0..n).map(|_| run_child(&exe, name)).collect();
        for r in &results {
            println!("{name:<20} {}", serde_json::Value::Object(r.clone()));
        }
        if !name.contains("outage") {
            medians.push((*name, median_rate(&results)));
        }
    }
    let theirs = medians
        .iter()
        .find(|(n, _)| *n == "tracing_loki")
        .map_or(0.0, |m| m.1);
    println!("\nmedian delivered entries/s over {runs} runs:");
    for (name, rate) in &medians {
        let ratio = if theirs > 0.0 { rate / theirs } else { 0.0 };
        println!("  {name:<20} {rate:>10.0}/s  {ratio:.2}x tracing-loki");
    }
}
