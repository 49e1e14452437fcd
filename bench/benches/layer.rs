//! Caller-side cost of one `info!` with five fields through `SinkLayer` into the file sink,
//! against tracing-subscriber's fmt JSON layer over tracing-appender's `non_blocking`, in the
//! same run: p50/p99 ns per event and heap allocations per event on the calling thread.
//! A third scenario keeps the sink's queue full (4 slots) to show the caller never blocks.
//!
//! Run: `cargo bench -p sinkwatch-bench --bench layer` (`SINKWATCH_BENCH_N`, default 200,000).
//! Prints figures; asserts nothing.

#![allow(unsafe_code)] // the counting allocator below

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use sinkwatch::{FileSink, OverflowPolicy, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

/// Counts allocations made by the current thread only (the workers' are not the caller's).
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the thread-local counter is const-initialised,
// so touching it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const LONG: &str = "a sixty character string value for the fifth field of events";

struct Figures {
    p50: Duration,
    p99: Duration,
    allocs_per_event: f64,
    total: Duration,
}

/// Emits `n` events under `dispatch` on this thread, timing each one.
fn run(n: usize, dispatch: &tracing::Dispatch) -> Figures {
    let mut samples = Vec::with_capacity(n);
    let allocs_before = ALLOCS.with(Cell::get);
    let started = Instant::now();
    tracing::dispatcher::with_default(dispatch, || {
        for i in 0..n as u64 {
            let t = Instant::now();
            tracing::info!(
                request_id = i,
                user = "ada",
                ratio = 0.75_f64,
                cached = true,
                note = LONG,
                "request handled"
            );
            samples.push(t.elapsed());
        }
    });
    let total = started.elapsed();
    // The samples vector was allocated up front, so the count is the events' own.
    let allocs = ALLOCS.with(Cell::get) - allocs_before;
    samples.sort_unstable();
    #[allow(clippy::cast_precision_loss)]
    Figures {
        p50: samples[n / 2],
        p99: samples[n * 99 / 100],
        allocs_per_event: allocs as f64 / n as f64,
        total,
    }
}

fn print(name: &str, f: &Figures, n: usize) {
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / f.total.as_secs_f64();
    println!(
        "{name:<44} p50 {:>7} ns  p99 {:>7} ns  allocs/event {:>5.2}  caller-side {:>10.0} events/s",
        f.p50.as_nanos(),
        f.p99.as_nanos(),
        f.allocs_per_event,
        rate
    );
}

fn main() {
    let n: usize = std::env::var("SINKWATCH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    println!("caller-side cost per event, {n} events, info! with a message and 5 fields\n");

    // Warm up both paths once (lazy statics, file creation), then measure.
    let file = FileSink::builder(dir.path().join("sinkwatch"))
        .queue_capacity(n + 1)
        .build()
        .unwrap();
    let ours =
        tracing::Dispatch::new(tracing_subscriber::registry().with(SinkLayer::new(file.clone())));
    run(1_000, &ours);
    let sw = run(n, &ours);
    let report = file.shutdown_blocking(Duration::from_secs(60));
    print("sinkwatch SinkLayer -> FileSink", &sw, n);

    let appender = tracing_appender::rolling::never(dir.path().join("appender"), "app.log");
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(n + 1)
        .finish(appender);
    let theirs = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(writer)),
    );
    run(1_000, &theirs);
    let ta = run(n, &theirs);
    drop(guard);
    print("fmt JSON layer -> tracing-appender non_blocking", &ta, n);

    #[allow(clippy::cast_precision_loss)]
    let ratio = |a: Duration, b: Duration| a.as_nanos() as f64 / b.as_nanos().max(1) as f64;
    println!(
        "\nratio sinkwatch / tracing-appender: p50 {:.2}, p99 {:.2}",
        ratio(sw.p50, ta.p50),
        ratio(sw.p99, ta.p99)
    );

    // A queue of 4 records that is always full: the caller must still never wait.
    let tiny = FileSink::builder(dir.path().join("full"))
        .queue_capacity(4)
        .overflow(OverflowPolicy::Wait)
        .build()
        .unwrap();
    let full =
        tracing::Dispatch::new(tracing_subscriber::registry().with(SinkLayer::new(tiny.clone())));
    let fq = run(n, &full);
    print("sinkwatch, queue of 4 (Wait policy) kept full", &fq, n);
    let stats = tiny.shutdown_blocking(Duration::from_secs(60)).stats;
    println!(
        "  full-queue run: accepted {} delivered {} dropped (reported) {}",
        stats.accepted, stats.delivered, stats.dropped
    );
    println!(
        "  first run: delivered {} of {} (dropped {})",
        report.stats.delivered, report.stats.accepted, report.stats.dropped
    );
}
