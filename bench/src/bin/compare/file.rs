//! File scenarios: `SinkLayer` into a default `FileSink`, tracing-appender's `non_blocking`
//! (lossy default and lossless) under fmt's JSON layer, and a `serde_json` floor.
//!
//! Every scenario counts the lines that reached its files: records/s is lines written over
//! the time until everything was written (sinkwatch: `flush()` resolved; tracing-appender:
//! its guard's drop returned, which waits at most about a second for its worker).

use std::io::{BufWriter, Read as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use sinkwatch::Compression;
use sinkwatch::{FileSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::common::{emit_from_threads, memory_kib, micros, print_result, DropCounter, LONG};

/// Size rotation for the gzip scenario (compression happens on rotation).
const ROTATE_AT: u64 = 10 * 1024 * 1024;

pub fn run(name: &str, n: u64, dir: &Path) {
    match name {
        "floor" => floor(n, dir),
        "sinkwatch-1t" => sinkwatch(n, 1, dir, false),
        "sinkwatch-2t" => sinkwatch(n, 2, dir, false),
        "sinkwatch-gzip-1t" => sinkwatch(n, 1, dir, true),
        "appender-lossy-1t" => appender(n, 1, dir, true),
        "appender-lossy-2t" => appender(n, 2, dir, true),
        "appender-lossless-1t" => appender(n, 1, dir, false),
        "appender-lossless-2t" => appender(n, 2, dir, false),
        other => panic!("unknown file scenario {other}"),
    }
}

/// Lines (newline bytes) in every file of `dir`, decompressing `.gz` archives, and the
/// plain bytes they hold. `limits` caps a file's bytes read (its length when a writer
/// may still be running, so only what was there at that moment counts).
fn count_lines(dir: &Path, limits: &[(std::path::PathBuf, u64)]) -> (u64, u64) {
    let (mut lines, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).expect("the output directory") {
        let path = entry.expect("an entry").path();
        let file = std::fs::File::open(&path).expect("an output file");
        let limit = limits
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(u64::MAX, |(_, l)| *l);
        let mut reader: Box<dyn std::io::Read> = if path.extension().is_some_and(|e| e == "gz") {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        } else {
            Box::new(file.take(limit))
        };
        let mut buf = vec![0; 1 << 20];
        loop {
            let got = reader.read(&mut buf).expect("read an output file");
            if got == 0 {
                break;
            }
            bytes += got as u64;
            lines += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    (lines, bytes)
}

/// The lengths of the files in `dir` now.
fn lengths(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    std::fs::read_dir(dir)
        .expect("the output directory")
        .map(|e| {
            let path = e.expect("an entry").path();
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            (path, len)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn report(
    n: u64,
    elapsed: Duration,
    hist: &crate::common::Histogram,
    written: (u64, u64),
    counted_dropped: u64,
    events_dropped: u64,
    peak_kib: u64,
) {
    let (lines, bytes) = written;
    print_result(&[
        ("emitted", n.into()),
        ("written", lines.into()),
        ("line_bytes", (bytes / lines.max(1)).into()),
        ("dropped", counted_dropped.into()),
        ("events_dropped", events_dropped.into()),
        (
            "lost_unreported",
            n.saturating_sub(lines + counted_dropped).into(),
        ),
        ("elapsed_us", micros(elapsed).into()),
        ("p50_ns", hist.quantile(0.5).into()),
        ("p99_ns", hist.quantile(0.99).into()),
        ("peak_kib", peak_kib.into()),
    ]);
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

fn floor(n: u64, dir: &Path) {
    let file = std::fs::File::create(dir.join("floor.log")).expect("floor file");
    let mut out = BufWriter::with_capacity(256 * 1024, file);
    let mut hist = crate::common::Histogram::new();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let rec = FloorRecord {
            timestamp: chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            level: "INFO",
            target: "compare::common",
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
    let (peak, _) = memory_kib();
    report(n, elapsed, &hist, count_lines(dir, &[]), 0, 0, peak);
}

/// `SinkLayer` into a `FileSink` with default settings (gzip: plus size rotation and
/// compression, which only happens on rotation).
fn sinkwatch(n: u64, threads: u64, dir: &Path, gzip: bool) {
    let mut builder = FileSink::builder(dir);
    if gzip {
        builder = builder
            .max_file_size(ROTATE_AT)
            .compression(Compression::Gzip);
    }
    let sink = builder.build().expect("the file sink");
    let drops = DropCounter::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(drops.clone())
            .with(SinkLayer::new(sink.clone())),
    )
    .expect("the scenario's subscriber");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let started = Instant::now();
    let hist = emit_from_threads(n, threads);
    rt.block_on(sink.flush()).expect("flush");
    let elapsed = started.elapsed();
    // Waits for background compression too, so the archives can be counted.
    let shut = rt.block_on(sink.shutdown(Duration::from_secs(600)));
    let (peak, _) = memory_kib();
    report(
        n,
        elapsed,
        &hist,
        count_lines(dir, &[]),
        shut.stats.dropped,
        drops.get(),
        peak,
    );
}

/// fmt's JSON layer over tracing-appender's `non_blocking` writer into one plain file.
fn appender(n: u64, threads: u64, dir: &Path, lossy: bool) {
    let file = tracing_appender::rolling::never(dir, "app.log");
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(lossy)
        .finish(file);
    let errors = writer.error_counter();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
    )
    .expect("the scenario's subscriber");
    let started = Instant::now();
    let hist = emit_from_threads(n, threads);
    // Its drop waits (up to ~1.1 s) for the worker to write what is queued; what is not
    // written by then is lost when a process exits, so only that counts.
    drop(guard);
    let elapsed = started.elapsed();
    let limits = lengths(dir);
    let (peak, _) = memory_kib();
    report(
        n,
        elapsed,
        &hist,
        count_lines(dir, &limits),
        errors.dropped_lines() as u64,
        0,
        peak,
    );
}
