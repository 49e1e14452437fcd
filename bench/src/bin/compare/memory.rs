//! Memory per queued record: the growth of the resident set while `n` records wait behind
//! a consumer that does not make progress, divided by `n`, against the length of the JSON
//! line each record becomes.
//!
//! - sinkwatch: `SinkLayer` into a `LokiSink` pushing to a receiver that never answers,
//!   with a queue large enough for all of them;
//! - tracing-appender: `non_blocking` (lossless, a buffer large enough) over a writer
//!   that blocks until released, under fmt's JSON layer.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sinkwatch::{FileSink, LokiSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::common::{emit, memory_kib, print_result};

pub fn run(name: &str, n: u64, dir: &std::path::Path) {
    match name {
        "sinkwatch" => sinkwatch(n, dir),
        "appender" => appender(n),
        other => panic!("unknown memory scenario {other}"),
    }
}

fn report(n: u64, before_kib: u64, after_kib: u64, line_bytes: f64, queued: u64) {
    #[allow(clippy::cast_precision_loss)]
    let per_record = after_kib.saturating_sub(before_kib) as f64 * 1024.0 / n as f64;
    print_result(&[
        ("records", n.into()),
        ("queued", queued.into()),
        ("rss_before_kib", before_kib.into()),
        ("rss_after_kib", after_kib.into()),
        ("bytes_per_record", per_record.round().into()),
        ("line_bytes", line_bytes.round().into()),
        (
            "ratio",
            ((per_record / line_bytes * 100.0).round() / 100.0).into(),
        ),
    ]);
}

/// The mean length of the JSON line sinkwatch writes for the benchmark's event.
fn sinkwatch_line_bytes(dir: &std::path::Path) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let file = FileSink::builder(dir).build().expect("a file sink");
    let dispatch =
        tracing::Dispatch::new(tracing_subscriber::registry().with(SinkLayer::new(file.clone())));
    tracing::dispatcher::with_default(&dispatch, || (0..1000).for_each(emit));
    rt.block_on(file.flush()).expect("flush");
    rt.block_on(file.shutdown(Duration::from_secs(10)));
    let text = std::fs::read_to_string(file.active_path()).expect("the line file");
    #[allow(clippy::cast_precision_loss)]
    let mean = text.len() as f64 / text.lines().count().max(1) as f64;
    mean
}

fn sinkwatch(n: u64, dir: &std::path::Path) {
    let line_bytes = sinkwatch_line_bytes(dir);
    let (url, first_request) = crate::receiver::start_stalled();
    let sink = LokiSink::builder(url)
        .label("service_name", "bench")
        .queue_capacity(usize::try_from(n).expect("n fits") * 2)
        .queue_max_bytes(8 * 1024 * 1024 * 1024)
        .build()
        .expect("the Loki sink");
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(SinkLayer::new(sink.clone())),
    )
    .expect("the scenario's subscriber");
    // Warm up until the first request is stuck at the receiver: from then on nothing
    // leaves the process.
    (0..1000).for_each(emit);
    first_request.recv().expect("the first request");
    let (_, before) = memory_kib();
    (0..n).for_each(emit);
    let (_, after) = memory_kib();
    let stats = sink.stats();
    report(n, before, after, line_bytes, stats.pending());
    let _ = sink.shutdown_blocking(Duration::from_millis(200));
}

/// A writer that blocks its first write until released, then counts what it is given.
#[derive(Clone)]
struct Blocked {
    gate: Arc<(Mutex<bool>, Condvar)>,
    arrived: mpsc::SyncSender<()>,
    bytes: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
}

impl Write for Blocked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.arrived.try_send(());
        let (lock, released) = &*self.gate;
        let mut open = lock.lock().expect("the gate");
        while !*open {
            open = released.wait(open).expect("the gate");
        }
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
        self.lines.fetch_add(lines, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn appender(n: u64) {
    let (arrived, first_write) = mpsc::sync_channel(1);
    let writer = Blocked {
        gate: Arc::new((Mutex::new(false), Condvar::new())),
        arrived,
        bytes: Arc::default(),
        lines: Arc::default(),
    };
    let (non_blocking, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(usize::try_from(n).expect("n fits") + 2000)
        .finish(writer.clone());
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(non_blocking),
        ),
    )
    .expect("the scenario's subscriber");
    (0..1000).for_each(emit);
    first_write.recv().expect("the first write");
    let (_, before) = memory_kib();
    (0..n).for_each(emit);
    let (_, after) = memory_kib();
    let (lock, released) = &*writer.gate;
    *lock.lock().expect("the gate") = true;
    released.notify_all();
    drop(guard);
    #[allow(clippy::cast_precision_loss)]
    let line_bytes = writer.bytes.load(Ordering::Relaxed) as f64
        / writer.lines.load(Ordering::Relaxed).max(1) as f64;
    report(n, before, after, line_bytes, n);
}
