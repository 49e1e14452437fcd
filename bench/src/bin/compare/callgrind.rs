//! Instructions per event on the calling thread, counted by callgrind: the child emits
//! `WARM_UP` events and then `n` more; the driver runs it under
//! `valgrind --tool=callgrind --separate-threads=yes` with `n` events and with none, and
//! reads the main thread's totals, so workers' instructions and the setup cancel out.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sinkwatch::{FileSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

use crate::common::emit;

const WARM_UP: u64 = 100;

/// The paths measured, in the order they are reported.
pub const PATHS: [&str; 3] = ["noop", "sinkwatch", "appender"];

pub fn label(path: &str) -> &'static str {
    match path {
        "noop" => "no-op layer (copies field values into a stack buffer): tracing's dispatch floor",
        "sinkwatch" => "sinkwatch `SinkLayer` → default `FileSink`",
        _ => "fmt JSON layer → tracing-appender `non_blocking` (default)",
    }
}

/// The child: emits under the chosen path, then lets the writer finish.
pub fn run(path: &str, n: u64, dir: &Path) {
    match path {
        "noop" => {
            let d = tracing::Dispatch::new(tracing_subscriber::registry().with(NoopLayer));
            tracing::dispatcher::with_default(&d, || (0..WARM_UP + n).for_each(emit));
        }
        "sinkwatch" => {
            let sink = FileSink::builder(dir).build().expect("the file sink");
            let d = tracing::Dispatch::new(
                tracing_subscriber::registry().with(SinkLayer::new(sink.clone())),
            );
            tracing::dispatcher::with_default(&d, || (0..WARM_UP + n).for_each(emit));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(sink.flush()).expect("flush");
            rt.block_on(sink.shutdown(Duration::from_secs(60)));
        }
        "appender" => {
            let file = tracing_appender::rolling::never(dir, "app.log");
            let (writer, guard) = tracing_appender::non_blocking(file);
            let d = tracing::Dispatch::new(
                tracing_subscriber::registry()
                    .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
            );
            tracing::dispatcher::with_default(&d, || (0..WARM_UP + n).for_each(emit));
            drop(guard);
        }
        other => panic!("unknown callgrind path {other}"),
    }
}

/// A layer that only visits the event's fields into a buffer on the stack.
struct NoopLayer;

struct StackBuf {
    buf: [u8; 512],
    len: usize,
}

impl StackBuf {
    fn put(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }
}

impl std::fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

/// Copies each value's bytes (no number formatting: the floor is dispatch and visiting);
/// only `Debug` values (the message) go through `fmt`.
impl tracing::field::Visit for StackBuf {
    fn record_u64(&mut self, _: &tracing::field::Field, value: u64) {
        self.put(&value.to_ne_bytes());
    }

    fn record_f64(&mut self, _: &tracing::field::Field, value: f64) {
        self.put(&value.to_ne_bytes());
    }

    fn record_bool(&mut self, _: &tracing::field::Field, value: bool) {
        self.put(&[u8::from(value)]);
    }

    fn record_str(&mut self, _: &tracing::field::Field, value: &str) {
        self.put(value.as_bytes());
    }

    fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self, "{value:?}");
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for NoopLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut buf = StackBuf {
            buf: [0; 512],
            len: 0,
        };
        event.record(&mut buf);
        std::hint::black_box(&buf);
    }
}

/// The main thread's instruction count for one child run under callgrind.
fn main_thread_instructions(path: &str, n: u64) -> Option<u64> {
    let out_dir = tempfile::tempdir().ok()?;
    let out_file = out_dir.path().join("cg.out");
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--separate-threads=yes")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(std::env::current_exe().ok()?)
        .args(["child", "cg", path, &n.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    // With --separate-threads, thread 1 (the main thread) writes `<file>-01`.
    let text = std::fs::read_to_string(out_dir.path().join("cg.out-01")).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Instructions per event on the calling thread, per path; `None` where valgrind failed.
pub fn measure(n: u64) -> Vec<(&'static str, Option<f64>)> {
    PATHS
        .iter()
        .map(|path| {
            eprintln!("callgrind: {path}");
            let with = main_thread_instructions(path, n);
            let without = main_thread_instructions(path, 0);
            #[allow(clippy::cast_precision_loss)]
            let per = with
                .zip(without)
                .map(|(w, z)| w.saturating_sub(z) as f64 / n.max(1) as f64);
            (*path, per)
        })
        .collect()
}
