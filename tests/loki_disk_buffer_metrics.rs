//! The disk buffer's metrics (feature `metrics`): `sinkwatch_buffer_bytes` follows the
//! buffer, `sinkwatch_buffer_max_bytes` is its bound, and the replay counters equal the
//! `buffer_replayed` event. Its own test binary: it installs the global recorder.

#[path = "support/loki.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use sinkwatch::events;
use sinkwatch::metrics::{
    BUFFER_BYTES, BUFFER_MAX_BYTES, BUFFER_REPLAYED_BYTES, BUFFER_REPLAYED_RECORDS, SINK,
};
use sinkwatch::testing;
use support::{ev, receiver, record, shut, sink_for};

/// Counters and gauges by name and sink; histograms ignored.
#[derive(Default)]
struct BySink {
    values: Mutex<BTreeMap<(String, String), Arc<AtomicU64>>>,
}

impl BySink {
    fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let sink = key
            .labels()
            .find(|l| l.key() == SINK)
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(values.entry((key.name().to_owned(), sink)).or_default())
    }

    fn counter(&self, name: &str, sink: &sinkwatch::SinkId) -> u64 {
        self.raw(name, sink)
    }

    /// A gauge's value (the facade stores f64 bits).
    fn gauge(&self, name: &str, sink: &sinkwatch::SinkId) -> f64 {
        f64::from_bits(self.raw(name, sink))
    }

    fn raw(&self, name: &str, sink: &sinkwatch::SinkId) -> u64 {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        values
            .get(&(name.to_owned(), sink.as_str().to_owned()))
            .map_or(0, |v| v.load(Ordering::Relaxed))
    }
}

impl Recorder for &'static BySink {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

fn recorder() -> &'static BySink {
    static RECORDER: OnceLock<&'static BySink> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let r: &'static BySink = Box::leak(Box::default());
        metrics::set_global_recorder(r).expect("the only recorder of this binary");
        r
    })
}

const CAP: u64 = 1024 * 1024;
/// The same, as the gauge holds it.
const CAP_F64: f64 = 1_048_576.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_gauges_and_replay_counters_follow_the_buffer() {
    let metrics = recorder();
    let receiver = receiver().await;
    receiver.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let first = sink_for(&receiver)
        .disk_buffer(dir.path())
        .disk_buffer_max_bytes(CAP)
        .build()
        .unwrap();
    for i in 0..20 {
        first.try_write(record(format!("m{i}"))).unwrap();
    }
    assert_eq!(shut(&first, Duration::from_millis(300)).await.persisted, 20);
    let max = metrics.gauge(BUFFER_MAX_BYTES, first.id());
    assert!((max - CAP_F64).abs() < 0.5, "{max}");
    let held = metrics.gauge(BUFFER_BYTES, first.id());
    assert!(held > 20.0 * 32.0 && held <= CAP_F64, "{held}");

    receiver.restart().await.unwrap();
    let events = testing::watch();
    let second = sink_for(&receiver)
        .disk_buffer(dir.path())
        .disk_buffer_max_bytes(CAP)
        .build()
        .unwrap();
    let replayed = events
        .wait(ev(second.id(), events::buffer_replayed::NAME))
        .await
        .unwrap();
    assert_eq!(metrics.counter(BUFFER_REPLAYED_RECORDS, second.id()), 20);
    assert_eq!(
        Some(metrics.counter(BUFFER_REPLAYED_BYTES, second.id())),
        replayed.u64(events::buffer_replayed::BYTES)
    );
    second.flush().await.unwrap();
    shut(&second, Duration::from_secs(5)).await;
    let after = metrics.gauge(BUFFER_BYTES, second.id());
    assert!(
        after < held,
        "settled segments are removed: {after} of {held}"
    );
    assert_eq!(receiver.entry_count(), 20);
}
