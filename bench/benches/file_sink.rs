//! Throughput, caller-side latency and peak memory of the rotating file sink, against
//! tracing-appender and a `serde_json` floor, in the same run.
//!
//! Workload: `SINKWATCH_BENCH_N` records (default 1,000,000) with a message and five fields
//! (u64, &str, f64, bool, 60-character string), about 230 bytes as a JSON line, written from
//! one thread. Scenarios, each in its own subprocess so peak memory (`VmHWM`) is its own:
//! - `floor`: `serde_json` of the same records into a `BufWriter<File>` (no rotation);
//! - `appender`: `info!` through tracing-subscriber's fmt JSON layer over tracing-appender's
//!   `non_blocking` (lossless) and its rolling appender;
//! - `sinkwatch`: `FileSink::write` (`Wait` policy), size rotation every 10 MiB;
//! - `sinkwatch+gzip`: the same with background gzip compression at the default level;
//! - `sinkwatch+gzip6`: the same at level 6 (zlib's usual default), for the speed/size
//!   trade-off.
//!
//! The gzip scenarios also report the archives' total size once compression has drained.
//!
//! Throughput counts until every record reached the OS (the worker flushed). Caller-side
//! latency covers building the record and handing it over. In the gzip scenario it is also
//! split by whether a compression was running at the time (rotation done, archive not yet).
//!
//! Run: `cargo bench -p sinkwatch-bench --bench file_sink`. Prints figures; asserts nothing.
//! `SINKWATCH_BENCH_RUNS` (default 3) rounds of every scenario in turn; each scenario's
//! median by throughput is shown.

use std::io::{BufWriter, Write as _};
use std::process::Command;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use sinkwatch::{Compression, FileSink};
use sinkwatch::{OverflowPolicy, Record};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

const LONG: &str = "a sixty character string value for the fifth field of events";
const SCENARIO_VAR: &str = "SINKWATCH_BENCH_SCENARIO";
const SCENARIOS: [&str; 5] = [
    "floor",
    "appender",
    "sinkwatch",
    "sinkwatch+gzip",
    "sinkwatch+gzip6",
];
const ROTATE_AT: u64 = 10 * 1024 * 1024;

fn main() {
    let n = env_number("SINKWATCH_BENCH_N", 1_000_000);
    if let Ok(scenario) = std::env::var(SCENARIO_VAR) {
        let figures = run_scenario(&scenario, n);
        println!("RESULT {}", figures.to_line());
        return;
    }
    let runs = env_number("SINKWATCH_BENCH_RUNS", 3).max(1);
    println!("file sink benchmark: {n} records of ~230 bytes, {runs} run(s) per scenario, median shown\n");
    // Rounds of every scenario in turn, so a change in the shared machine's load during the
    // benchmark falls on every scenario alike.
    let mut all: Vec<Vec<Figures>> = SCENARIOS.iter().map(|_| Vec::new()).collect();
    for _ in 0..runs {
        for (scenario, figures) in SCENARIOS.iter().zip(&mut all) {
            figures.push(in_subprocess(scenario, n));
        }
    }
    let mut results = Vec::new();
    for (scenario, mut figures) in SCENARIOS.iter().zip(all) {
        figures.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let median = figures.swap_remove(figures.len() / 2);
        median.print(scenario);
        results.push(median);
    }
    print_ratios(&results);
}

fn env_number(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The figures of one run of one scenario.
#[derive(Debug, Default)]
struct Figures {
    rate: f64,
    p50: u64,
    p99: u64,
    /// Gzip scenario only: p99 of writes made while no compression was running / while one was.
    steady_p99: u64,
    during_p99: u64,
    during_count: u64,
    rotations: u64,
    peak_kib: u64,
    drain_ms: u64,
    /// Gzip scenarios only: bytes written before compression, and the archives' total size.
    plain_bytes: u64,
    archive_bytes: u64,
    /// Gzip scenarios only: total time spent compressing, in milliseconds.
    compress_ms: u64,
}

impl Figures {
    fn to_line(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {}",
            self.rate,
            self.p50,
            self.p99,
            self.steady_p99,
            self.during_p99,
            self.during_count,
            self.rotations,
            self.peak_kib,
            self.drain_ms,
            self.plain_bytes,
            self.archive_bytes,
            self.compress_ms
        )
    }

    fn from_line(line: &str) -> Self {
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|s| s.parse().unwrap_or(0.0))
            .collect();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let u = |i: usize| v.get(i).copied().unwrap_or(0.0) as u64;
        Figures {
            rate: v.first().copied().unwrap_or(0.0),
            p50: u(1),
            p99: u(2),
            steady_p99: u(3),
            during_p99: u(4),
            during_count: u(5),
            rotations: u(6),
            peak_kib: u(7),
            drain_ms: u(8),
            plain_bytes: u(9),
            archive_bytes: u(10),
            compress_ms: u(11),
        }
    }

    fn print(&self, name: &str) {
        print!(
            "{name:<16} {:>10.0} records/s   caller p50 {:>6} ns  p99 {:>7} ns   peak RSS {:>7} KiB",
            self.rate, self.p50, self.p99, self.peak_kib
        );
        if self.rotations > 0 {
            print!("   {} rotations", self.rotations);
        }
        println!();
        if self.during_count > 0 {
            println!(
                "{:<16} caller p99 with no compression running {} ns, while compressing {} ns ({} writes, ratio {:.2}); compression drained {} ms after the last write",
                "",
                self.steady_p99,
                self.during_p99,
                self.during_count,
                ratio(self.during_p99, self.steady_p99),
                self.drain_ms
            );
        }
        if self.archive_bytes > 0 {
            println!(
                "{:<16} archives {} bytes for {} bytes compressed (ratio {:.3}), {} ms compressing",
                "",
                self.archive_bytes,
                self.plain_bytes,
                ratio(self.archive_bytes, self.plain_bytes),
                self.compress_ms
            );
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

fn print_ratios(r: &[Figures]) {
    let [floor, appender, plain, gzip, gzip6] = r else {
        return;
    };
    println!("\nthroughput ratios:");
    for (name, f) in [
        ("sinkwatch", plain),
        ("sinkwatch+gzip", gzip),
        ("sinkwatch+gzip6", gzip6),
    ] {
        println!(
            "  {name:<15} {:.2}x tracing-appender (target >= 2), {:.2}x the floor (target >= 0.6)",
            f.rate / appender.rate,
            f.rate / floor.rate
        );
    }
    println!(
        "  caller p99 while compressing / steady: {:.2} (target <= 2)",
        ratio(gzip.during_p99, gzip.steady_p99)
    );
}

fn in_subprocess(scenario: &str, n: u64) -> Figures {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let out = Command::new(exe)
        .env(SCENARIO_VAR, scenario)
        .env("SINKWATCH_BENCH_N", n.to_string())
        .output()
        .expect("cannot run a scenario subprocess");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) {
        Some(line) => Figures::from_line(line),
        None => panic!(
            "scenario {scenario} failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn run_scenario(scenario: &str, n: u64) -> Figures {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut figures = match scenario {
        "floor" => floor(dir.path(), n),
        "appender" => appender(dir.path(), n),
        "sinkwatch" => sinkwatch(dir.path(), n, Gzip::Off),
        "sinkwatch+gzip" => sinkwatch(dir.path(), n, Gzip::DefaultLevel),
        "sinkwatch+gzip6" => sinkwatch(dir.path(), n, Gzip::Level(6)),
        other => panic!("unknown scenario {other}"),
    };
    figures.peak_kib = peak_rss_kib();
    figures
}

/// The process's peak resident set size, from `/proc/self/status`.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A log-linear latency histogram: 16 buckets per power of two (about 6% resolution),
/// so recording costs nothing like the work measured and no per-sample memory.
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: vec![0; 64 * 16],
            count: 0,
        }
    }

    fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        let octave = ns.ilog2();
        let sub = if octave >= 4 {
            (ns >> (octave - 4)) & 15
        } else {
            0
        };
        let index = usize::try_from(u64::from(octave) * 16 + sub).unwrap_or(0);
        self.buckets[index] += 1;
        self.count += 1;
    }

    /// The upper bound of the bucket holding quantile `q`.
    fn quantile(&self, q: f64) -> u64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((self.count as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if c > 0 && seen >= rank.max(1) {
                let (octave, sub) = (i as u64 / 16, i as u64 % 16);
                return if octave >= 4 {
                    (16 + sub + 1) << (octave - 4)
                } else {
                    1 << (octave + 1)
                };
            }
        }
        0
    }
}

fn rate(n: u64, elapsed: Duration) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    n / elapsed.as_secs_f64()
}

fn record(i: u64) -> Record {
    Record::new(Level::INFO, "request handled")
        .with_target("bench")
        .with_field("request_id", i)
        .with_field("user", "ada")
        .with_field("ratio", 0.75_f64)
        .with_field("cached", true)
        .with_field("note", LONG)
}

/// The floor's record: the same shape, serialised by `serde_json`.
#[derive(serde::Serialize)]
struct FloorRecord<'a> {
    timestamp: String,
    level: &'a str,
    target: &'a str,
    message: &'a str,
    fields: FloorFields<'a>,
}

#[derive(serde::Serialize)]
struct FloorFields<'a> {
    request_id: u64,
    user: &'a str,
    ratio: f64,
    cached: bool,
    note: &'a str,
}

fn floor(dir: &std::path::Path, n: u64) -> Figures {
    let file = std::fs::File::create(dir.join("floor.log")).expect("floor file");
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut hist = Histogram::new();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let rec = FloorRecord {
            timestamp: chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            level: "INFO",
            target: "bench",
            message: "request handled",
            fields: FloorFields {
                request_id: i,
                user: "ada",
                ratio: 0.75,
                cached: true,
                note: LONG,
            },
        };
        serde_json::to_writer(&mut out, &rec).expect("serialise");
        out.write_all(b"\n").expect("write");
        hist.record(t.elapsed());
    }
    out.flush().expect("flush");
    let elapsed = started.elapsed();
    Figures {
        rate: rate(n, elapsed),
        p50: hist.quantile(0.5),
        p99: hist.quantile(0.99),
        ..Figures::default()
    }
}

fn appender(dir: &std::path::Path, n: u64) -> Figures {
    let rolling = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::HOURLY)
        .filename_prefix("app")
        .filename_suffix("log")
        .build(dir)
        .expect("rolling appender");
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(rolling);
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
    );
    let mut hist = Histogram::new();
    let started = Instant::now();
    tracing::dispatcher::with_default(&dispatch, || {
        for i in 0..n {
            let t = Instant::now();
            tracing::info!(
                target: "bench",
                request_id = i,
                user = "ada",
                ratio = 0.75_f64,
                cached = true,
                note = LONG,
                "request handled"
            );
            hist.record(t.elapsed());
        }
    });
    // Dropping the guard waits for the worker to write everything out.
    drop(guard);
    let elapsed = started.elapsed();
    Figures {
        rate: rate(n, elapsed),
        p50: hist.quantile(0.5),
        p99: hist.quantile(0.99),
        ..Figures::default()
    }
}

/// Compressions running now: up at `rotation_complete`, down at `compression_complete`.
static COMPRESSING: AtomicI64 = AtomicI64::new(0);
static ROTATIONS: AtomicI64 = AtomicI64::new(0);
/// Total time spent compressing (the `duration_us` of every `compression_complete`).
static COMPRESS_US: AtomicI64 = AtomicI64::new(0);

/// Reads `duration_us` from a `compression_complete` event.
struct DurationField(i64);

impl tracing::field::Visit for DurationField {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == sinkwatch::events::compression_complete::DURATION_US {
            self.0 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// Follows the sink's own events to know when a compression is running.
struct Follow {
    gzip: bool,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Follow {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != sinkwatch::events::TARGET {
            return;
        }
        match meta.name() {
            n if n == sinkwatch::events::rotation_complete::NAME => {
                ROTATIONS.fetch_add(1, Ordering::Relaxed);
                if self.gzip {
                    COMPRESSING.fetch_add(1, Ordering::Relaxed);
                }
            }
            n if n == sinkwatch::events::compression_complete::NAME => {
                let mut took = DurationField(0);
                event.record(&mut took);
                COMPRESS_US.fetch_add(took.0, Ordering::Relaxed);
                COMPRESSING.fetch_sub(1, Ordering::Relaxed);
            }
            n if n == sinkwatch::events::compression_failed::NAME => {
                COMPRESSING.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// How the sink scenarios compress.
#[derive(Clone, Copy)]
enum Gzip {
    Off,
    DefaultLevel,
    Level(u32),
}

fn sinkwatch(dir: &std::path::Path, n: u64, gzip: Gzip) -> Figures {
    let compress = !matches!(gzip, Gzip::Off);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Follow { gzip: compress }),
    )
    .expect("the scenario's subscriber");
    let mut builder = FileSink::builder(dir)
        .max_file_size(ROTATE_AT)
        .overflow(OverflowPolicy::Wait);
    if compress {
        builder = builder.compression(Compression::Gzip);
    }
    if let Gzip::Level(level) = gzip {
        builder = builder.compression_level(level);
    }
    let sink = builder.build().expect("the sink");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (mut all, mut steady, mut during) = (Histogram::new(), Histogram::new(), Histogram::new());
    let started = Instant::now();
    for i in 0..n {
        let compressing = COMPRESSING.load(Ordering::Relaxed) > 0;
        let t = Instant::now();
        sink.write(record(i)).expect("the sink is open");
        let d = t.elapsed();
        all.record(d);
        if compressing {
            &mut during
        } else {
            &mut steady
        }
        .record(d);
    }
    runtime.block_on(sink.flush()).expect("flush");
    let elapsed = started.elapsed();
    let report = sink.shutdown_blocking(Duration::from_secs(600));
    let drained = started.elapsed().saturating_sub(elapsed);
    assert_eq!(report.stats.dropped, 0, "the Wait policy drops nothing");
    let (plain_bytes, archive_bytes) = if compress { archive_sizes(dir) } else { (0, 0) };
    #[allow(clippy::cast_sign_loss)]
    Figures {
        plain_bytes,
        archive_bytes,
        compress_ms: COMPRESS_US.load(Ordering::Relaxed) as u64 / 1000,
        rate: rate(report.stats.delivered, elapsed),
        p50: all.quantile(0.5),
        p99: all.quantile(0.99),
        steady_p99: steady.quantile(0.99),
        during_p99: during.quantile(0.99),
        during_count: during.count,
        rotations: ROTATIONS.load(Ordering::Relaxed) as u64,
        drain_ms: u64::try_from(drained.as_millis()).unwrap_or(u64::MAX),
        ..Figures::default()
    }
}

/// The bytes compressed (from each archive's gzip trailer, which holds the input size
/// modulo 2^32: a rotated file is 10 MiB) and the archives' total size.
fn archive_sizes(dir: &std::path::Path) -> (u64, u64) {
    let (mut plain, mut archived) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("the bench directory") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "gz") {
            let bytes = std::fs::read(&path).expect("an archive");
            let isize: [u8; 4] = bytes[bytes.len() - 4..].try_into().expect("4 bytes");
            plain += u64::from(u32::from_le_bytes(isize));
            archived += bytes.len() as u64;
        }
    }
    (plain, archived)
}
