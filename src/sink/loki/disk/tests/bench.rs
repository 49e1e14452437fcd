//! What the engine costs per entry: appends, commits, reads and settlements at the Loki
//! worker's rhythm. Not a test (nothing to assert about speed): it prints.
//!
//! ```text
//! cargo test --release --lib --all-features disk_buffer_throughput -- --ignored --nocapture
//! ```
//!
//! `SINKWATCH_DISK_BENCH_ENTRIES` sets the entries per run (default 1,000,000), and
//! `SINKWATCH_DISK_BENCH_FSYNC` (`interval` or `commit`) runs one fsync policy only. Under
//! `valgrind --tool=callgrind`, the difference of two runs gives instructions per entry.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::super::{DiskBuffer, Fsync, Options};

/// Entries per commit, as a worker's batch.
const BATCH: usize = 1000;
/// Requests in flight, as the worker's default.
const IN_FLIGHT: usize = 4;

/// Appends, commits, hands out and settles `entries` entries of a 250-byte payload.
/// Returns the time taken and the bytes left on disk.
fn run(entries: u64, fsync: Fsync) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        fsync,
        ..Options::new(dir.path(), 1 << 30)
    };
    let (mut buf, _) = DiskBuffer::open(opts).unwrap();
    let stream = b"{app=\"bench\", level=\"info\", service_name=\"checkout\"}";
    let payload = [b'x'; 250];
    let mut in_flight = VecDeque::new();
    let mut seen = 0u64;
    let start = Instant::now();
    let mut appended = 0;
    while appended < entries {
        for _ in 0..BATCH.min(usize::try_from(entries - appended).unwrap()) {
            buf.append(stream, 1_700_000_000_000_000_000, &payload)
                .unwrap();
            appended += 1;
        }
        buf.commit().unwrap();
        while let Some(r) = buf
            .next_batch(BATCH, 1 << 20, |v| seen += v.payload.len() as u64)
            .unwrap()
        {
            in_flight.push_back(r);
        }
        // Requests finish one behind another, the newest first now and then.
        while in_flight.len() > IN_FLIGHT {
            let i = if appended % 3 == 0 {
                in_flight.len() - 1
            } else {
                0
            };
            let r = in_flight.remove(i).unwrap();
            buf.settle(r);
        }
    }
    for r in in_flight {
        buf.settle(r);
    }
    buf.commit().unwrap();
    let took = start.elapsed();
    assert_eq!(seen, entries * 250);
    assert_eq!(buf.unsettled().entries, 0);
    (took, buf.disk_bytes())
}

#[test]
#[ignore = "a benchmark, run by hand: see the module's docs"]
fn disk_buffer_throughput() {
    let entries = std::env::var("SINKWATCH_DISK_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000u64);
    let only = std::env::var("SINKWATCH_DISK_BENCH_FSYNC").unwrap_or_default();
    for (name, fsync) in [
        ("interval", Fsync::default()),
        ("commit", Fsync::EveryCommit),
    ] {
        if !only.is_empty() && only != name {
            continue;
        }
        let (took, left) = run(entries, fsync);
        #[allow(clippy::cast_precision_loss)] // a figure to print
        let per_sec = entries as f64 / took.as_secs_f64();
        #[allow(clippy::cast_precision_loss)]
        let ns = took.as_nanos() as f64 / entries as f64;
        println!(
            "disk buffer, fsync {name}: {entries} entries of 250 B in {took:.2?}: {per_sec:.0} entries/s, \
             {ns:.0} ns per entry (append + commit + read + settle), {left} bytes left on disk"
        );
    }
}
