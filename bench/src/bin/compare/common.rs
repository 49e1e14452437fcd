//! What every scenario shares: the event, memory readings, a latency histogram, the
//! counter of reported drops, and the child-process protocol.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The fifth field: a 60-character string.
pub const LONG: &str = "a sixty character string value for the fifth field of events";

/// The event every scenario emits: a message and five fields (u64, &str, f64, bool,
/// 60-character string), about 250 bytes as a JSON line.
#[inline]
pub fn emit(i: u64) {
    tracing::info!(
        request_id = i,
        user = "ada",
        ratio = 0.75_f64,
        cached = true,
        note = LONG,
        "request handled"
    );
}

/// `VmHWM` (peak) and `VmRSS` (now) of this process, in KiB.
pub fn memory_kib() -> (u64, u64) {
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

/// Prints the child's result line, which the driver parses.
pub fn print_result(fields: &[(&str, serde_json::Value)]) {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    println!("RESULT {}", serde_json::Value::Object(map));
}

/// The wall clock in nanoseconds since the epoch: comparable across processes (the child's
/// first event, the receiver's last entry), unlike `Instant`.
pub fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A log-linear latency histogram: 16 buckets per power of two (about 6% resolution), so
/// recording costs little next to the work measured and needs no per-sample memory.
#[derive(Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            buckets: vec![0; 64 * 16],
            count: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
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

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The upper bound of the bucket holding quantile `q`, in nanoseconds.
    pub fn quantile(&self, q: f64) -> u64 {
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

/// Reads the `count` field of a `records_dropped` event.
struct Count(u64);

impl tracing::field::Visit for Count {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == sinkwatch::events::records_dropped::COUNT {
            self.0 = value;
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// Adds up the records sinkwatch reported dropped in `records_dropped` events.
#[derive(Clone, Default)]
pub struct DropCounter(Arc<AtomicU64>);

impl DropCounter {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for DropCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != sinkwatch::events::TARGET
            || meta.name() != sinkwatch::events::records_dropped::NAME
        {
            return;
        }
        let mut c = Count(0);
        event.record(&mut c);
        self.0.fetch_add(c.0, Ordering::Relaxed);
    }
}

/// Emits `total` events split over `threads` threads (under the global subscriber) and
/// returns the merged caller-side latency histogram.
pub fn emit_from_threads(total: u64, threads: u64) -> Histogram {
    let per = total / threads;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut hist = Histogram::new();
                for i in t * per..(t + 1) * per {
                    let started = std::time::Instant::now();
                    emit(i);
                    hist.record(started.elapsed());
                }
                hist
            })
        })
        .collect();
    let mut all = Histogram::new();
    for h in handles {
        all.merge(&h.join().expect("an emitting thread"));
    }
    all
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
