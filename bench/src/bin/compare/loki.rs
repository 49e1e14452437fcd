//! Loki scenarios: a burst of events through `SinkLayer` into a default `LokiSink`, into
//! one with a disk buffer (issue 15: in the scenario's temporary directory, with the small
//! memory queue the operations guide suggests), and through tracing-loki's layer with its
//! defaults, all pushing to the counting receiver (another process, started by the driver;
//! its URL comes in `SINKWATCH_BENCH_URL`).

use std::path::Path;
use std::time::{Duration, Instant};

use sinkwatch::{LokiSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::common::{
    emit_from_threads, memory_kib, micros, print_result, runtime, unix_nanos, DropCounter,
};

/// The disk variant's memory queue: it only bridges two of the worker's writes.
const DISK_QUEUE_BYTES: usize = 4 * 1024 * 1024;

pub fn run(name: &str, n: u64, dir: &Path) {
    let url = std::env::var("SINKWATCH_BENCH_URL").expect("SINKWATCH_BENCH_URL");
    match name {
        "sinkwatch" => sinkwatch(n, &url, None),
        "sinkwatch-disk" => sinkwatch(n, &url, Some(dir)),
        "tracing-loki" => tracing_loki(n, &url),
        other => panic!("unknown loki scenario {other}"),
    }
}

fn sinkwatch(n: u64, url: &str, disk: Option<&Path>) {
    let rt = runtime();
    let mut builder = LokiSink::builder(url).label("service_name", "bench");
    if let Some(dir) = disk {
        builder = builder
            .disk_buffer(dir.join("loki-buffer"))
            .queue_max_bytes(DISK_QUEUE_BYTES);
    }
    let sink = builder.build().expect("the Loki sink");
    let drops = DropCounter::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry()
            .with(drops.clone())
            .with(SinkLayer::new(sink.clone())),
    )
    .expect("the scenario's subscriber");
    let started_unix_ns = unix_nanos();
    let started = Instant::now();
    let hist = emit_from_threads(n, 1);
    let emitted = started.elapsed();
    rt.block_on(sink.flush()).expect("flush");
    let elapsed = started.elapsed();
    let shut = rt.block_on(sink.shutdown(Duration::from_secs(60)));
    let (peak, _) = memory_kib();
    print_result(&[
        ("emitted", n.into()),
        ("dropped", shut.stats.dropped.into()),
        ("events_dropped", drops.get().into()),
        ("emit_us", micros(emitted).into()),
        ("elapsed_us", micros(elapsed).into()),
        ("p50_ns", hist.quantile(0.5).into()),
        ("p99_ns", hist.quantile(0.99).into()),
        ("peak_kib", peak.into()),
        ("started_unix_ns", started_unix_ns.into()),
    ]);
}

fn tracing_loki(n: u64, url: &str) {
    let rt = runtime();
    let url = tracing_loki::url::Url::parse(url).expect("the receiver's URL");
    let (layer, controller, task) = tracing_loki::builder()
        .label("service_name", "bench")
        .expect("a label")
        .build_controller_url(url)
        .expect("tracing-loki");
    let handle = rt.spawn(task);
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("the scenario's subscriber");
    let started_unix_ns = unix_nanos();
    let started = Instant::now();
    let hist = emit_from_threads(n, 1);
    let emitted = started.elapsed();
    // Shutting down sends what its background task holds.
    rt.block_on(async {
        controller.shutdown().await;
        let _ = handle.await;
    });
    let elapsed = started.elapsed();
    let (peak, _) = memory_kib();
    print_result(&[
        ("emitted", n.into()),
        ("dropped", 0.into()),
        ("events_dropped", 0.into()),
        ("emit_us", micros(emitted).into()),
        ("elapsed_us", micros(elapsed).into()),
        ("p50_ns", hist.quantile(0.5).into()),
        ("p99_ns", hist.quantile(0.99).into()),
        ("peak_kib", peak.into()),
        ("started_unix_ns", started_unix_ns.into()),
    ]);
}
