//! Emit-to-wake latency of `sinkwatch::testing` waits on a multi-thread runtime.
//!
//! A plain thread emits an event; a task parked in `Watcher::wait` measures the time from
//! the capture of the event to its own wake-up. Prints p50/p99/max; asserts nothing.
//!
//! Run: `cargo bench -p sinkwatch-bench --bench waiter_latency`
//! (`SINKWATCH_BENCH_N` sets the number of samples, 20,000 by default).

use std::future::{Future as _, IntoFuture as _};
use std::task::Poll;
use std::time::{Duration, Instant};

use sinkwatch::testing::{self, Matcher};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn main() {
    let n: usize = std::env::var("SINKWATCH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    testing::init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<u64>();
    let emitter = std::thread::spawn(move || {
        while let Ok(i) = go_rx.recv() {
            tracing::info!(target: "latency_bench", i);
        }
    });
    let mut samples = runtime.block_on(async move {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n as u64 {
            // A watcher per sample, as a test has one per test.
            let events = testing::watch();
            let mut wait = std::pin::pin!(events
                .wait(Matcher::target("latency_bench").field("i", i))
                .into_future());
            // Poll once so the wait is parked before the event is emitted: what is measured
            // is the wake-up, not the first scan.
            let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
            assert!(first.is_pending());
            go_tx.send(i).unwrap();
            let ev = wait.await.unwrap();
            samples.push(Instant::now().saturating_duration_since(ev.captured_at()));
        }
        samples
    });
    emitter.join().unwrap();
    samples.sort_unstable();
    println!("waiter wake latency, {n} samples, multi-thread runtime (2 workers), emitter on a std thread");
    println!(
        "  p50  {:>9.1} us",
        percentile(&samples, 0.50).as_secs_f64() * 1e6
    );
    println!(
        "  p99  {:>9.1} us",
        percentile(&samples, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "  p999 {:>9.1} us",
        percentile(&samples, 0.999).as_secs_f64() * 1e6
    );
    println!(
        "  max  {:>9.1} us",
        samples[samples.len() - 1].as_secs_f64() * 1e6
    );
}
