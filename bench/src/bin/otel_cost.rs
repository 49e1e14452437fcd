//! What the `opentelemetry` feature costs the calling thread (issue 17, item 3): instructions
//! per event inside a span, counted by callgrind on the main thread, with the feature off
//! and on (the same source, two builds):
//!
//! ```sh
//! cargo build --release -p sinkwatch-bench --bin otel_cost
//! cp target/release/otel_cost /tmp/otel_cost-off
//! cargo build --release -p sinkwatch-bench --bin otel_cost --features otel
//! cp target/release/otel_cost /tmp/otel_cost-on
//! /tmp/otel_cost-off measure 20000; /tmp/otel_cost-on measure 20000
//! ```
//!
//! Paths (each a `SinkLayer` feeding a default `FileSink`):
//! - `span`: one span entered, every event inside it; no OpenTelemetry layer;
//! - `otel-span`: the same under tracing-opentelemetry's layer with an SDK tracer (always
//!   sampled, no exporter): the layer's own cost is in both builds, so the difference
//!   between the builds is sinkwatch's;
//! - `otel-new-span`: a new span per event (created, entered, one event, closed) under the
//!   OpenTelemetry layer: the once-per-span lookup of the ids is in every event.
//!
//! Each path runs under `valgrind --tool=callgrind --separate-threads=yes` with `n` events
//! and with none (after the same warm-up); the main thread's difference over `n` is the
//! figure, so the setup and the shutdown cancel out.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use sinkwatch::{FileSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

const WARM_UP: u64 = 100;
const PATHS: [&str; 3] = ["span", "otel-span", "otel-new-span"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child") => child(
            &args[2],
            args[3].parse().expect("a count"),
            args.get(4).is_some_and(|a| a == "check"),
        ),
        Some("measure") => {
            let n = args.get(2).map_or(20_000, |n| n.parse().expect("a count"));
            measure(n);
        }
        _ => eprintln!("usage: otel_cost measure [N] | otel_cost child PATH N"),
    }
}

fn emit(i: u64) {
    tracing::info!(
        request_id = i,
        user = "ada",
        cached = true,
        "request handled"
    );
}

/// Emits `WARM_UP + n` events on `path`; `check` looks at the lines afterwards (a run of
/// its own: reading the file would count on the main thread).
fn child(path: &str, n: u64, check: bool) {
    let dir = tempfile::tempdir().expect("a directory");
    let sink = FileSink::builder(dir.path())
        .build()
        .expect("the file sink");
    let layer = SinkLayer::new(sink.clone());
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let dispatch = if path == "span" {
        tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
    } else {
        let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        tracing::Dispatch::new(tracing_subscriber::registry().with(otel).with(layer))
    };
    tracing::dispatcher::with_default(&dispatch, || {
        if path == "otel-new-span" {
            for i in 0..WARM_UP + n {
                tracing::info_span!("request", id = i).in_scope(|| emit(i));
            }
        } else {
            let span = tracing::info_span!("request", id = 7_u64);
            let _s = span.enter();
            for i in 0..WARM_UP + n {
                emit(i);
            }
        }
    });
    drop(dispatch);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(sink.flush()).expect("flush");
    let delivered = rt
        .block_on(sink.shutdown(Duration::from_secs(60)))
        .stats
        .delivered;
    assert_eq!(delivered, WARM_UP + n);
    if check {
        check_ids(dir.path(), path);
    }
}

/// With the feature on, the lines of the OpenTelemetry paths carry ids (so the build
/// measured is the one it claims to be).
fn check_ids(dir: &Path, path: &str) {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).expect("the directory").flatten() {
        text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    let want = cfg!(feature = "otel") && path != "span";
    assert_eq!(text.contains("\"trace_id\":"), want, "ids on {path}");
}

/// The main thread's instructions in one run of the child under callgrind.
fn main_thread(path: &str, n: u64) -> u64 {
    let dir = tempfile::tempdir().expect("a directory");
    let out = dir.path().join("cg");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--separate-threads=yes")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(std::env::current_exe().expect("this binary"))
        .args(["child", path, &n.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("valgrind");
    assert!(status.success(), "the child failed under callgrind");
    let text = std::fs::read_to_string(dir.path().join("cg-01")).expect("thread 1's file");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("a total")
}

#[allow(clippy::cast_precision_loss)] // counts far below 2^52
fn measure(n: u64) {
    let build = if cfg!(feature = "otel") { "on" } else { "off" };
    for path in PATHS {
        let checked = Command::new(std::env::current_exe().expect("this binary"))
            .args(["child", path, "10", "check"])
            .status()
            .expect("the check");
        assert!(
            checked.success(),
            "{path}: the lines are not what this build writes"
        );
        let with = main_thread(path, n);
        let without = main_thread(path, 0);
        let per = with.saturating_sub(without) as f64 / n as f64;
        println!("feature {build:>3}  {path:<14} {per:>9.1} instructions per event (main thread, n = {n})");
    }
}
