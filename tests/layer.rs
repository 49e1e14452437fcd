//! The application layer: typed capture, spans, location, per-layer filters, and bounded
//! backpressure (a burst loses nothing; a stall holds the caller once, then sheds).
//!
//! Application events are emitted on the test's own thread under a thread-local subscriber
//! holding the layer under test; the sinks' events come from their worker threads and
//! reach the global capture subscriber (`testing::init()`), which the waits use.

#[path = "support/file.rs"]
mod support;

use std::path::Path;

use serde_json::Value as Json;
use sinkwatch::events;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::{FileSink, OverflowPolicy, SinkLayer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

fn lines(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn fields_keep_their_types_and_spans_their_fields() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path()).build().unwrap();
    let subscriber =
        tracing_subscriber::registry().with(SinkLayer::new(file.clone()).with_location(true));
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", id = 7_u64, route = "/orders");
        let _enter = span.enter();
        let err = std::io::Error::other("disk on fire");
        tracing::warn!(
            n = 3_u64,
            neg = -4_i64,
            ratio = 1.5_f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            ok = true,
            who = "ada",
            dbg = ?vec![1, 2],
            disp = %"shown",
            error = &err as &(dyn std::error::Error + 'static),
            "charged {} items",
            3
        );
    });
    file.flush().await.unwrap();
    let got = lines(file.active_path());
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r["level"], "WARN");
    assert_eq!(r["target"], "layer");
    assert_eq!(r["message"], "charged 3 items");
    let f = &r["fields"];
    assert_eq!(f["n"], 3);
    assert_eq!(f["neg"], -4);
    assert_eq!(f["ratio"], 1.5);
    assert_eq!(f["nan"], "NaN");
    assert_eq!(f["inf"], "inf");
    assert_eq!(f["ok"], true);
    assert_eq!(f["who"], "ada");
    assert_eq!(f["dbg"], "[1, 2]");
    assert_eq!(f["disp"], "shown");
    assert_eq!(f["error"], "disk on fire");
    assert_eq!(r["spans"][0]["name"], "request");
    assert_eq!(r["spans"][0]["fields"]["id"], 7);
    assert_eq!(r["spans"][0]["fields"]["route"], "/orders");
    assert!(r["file"].as_str().unwrap().ends_with("layer.rs"));
    assert!(r["line"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_per_layer_filter_gives_a_sink_only_some_events() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let warn_only = FileSink::builder(dir.path().join("warn")).build().unwrap();
    let all = FileSink::builder(dir.path().join("all")).build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(SinkLayer::new(warn_only.clone()).with_filter(LevelFilter::WARN))
        .with(SinkLayer::new(all.clone()).with_spans(false));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("routine");
        tracing::warn!("unusual");
        tracing::error!("broken");
    });
    warn_only.flush().await.unwrap();
    all.flush().await.unwrap();
    let warn_msgs: Vec<_> = lines(warn_only.active_path())
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(warn_msgs, ["unusual", "broken"]);
    assert_eq!(lines(all.active_path()).len(), 3);
}

#[tokio::test]
async fn one_layer_feeds_several_sinks() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let a = FileSink::builder(dir.path().join("a")).build().unwrap();
    let b = FileSink::builder(dir.path().join("b")).build().unwrap();
    let subscriber =
        tracing_subscriber::registry().with(SinkLayer::new(a.clone()).with_sink(b.clone()));
    tracing::subscriber::with_default(subscriber, || tracing::info!(k = 1, "both"));
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    assert_eq!(lines(a.active_path())[0]["message"], "both");
    assert_eq!(lines(b.active_path())[0]["fields"]["k"], 1);
}

#[tokio::test]
async fn a_burst_through_the_layer_into_a_small_queue_loses_nothing() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // A queue far smaller than the burst: backpressure, not the queue, absorbs it.
    let file = FileSink::builder(dir.path())
        .queue_capacity(16)
        .queue_max_bytes(4096)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(file.clone()));
    let emitted = 50_000_u64;
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..emitted {
            tracing::info!(i, user = "ada", ok = true, "burst");
        }
    });
    file.flush().await.unwrap();
    let stats = file.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.dropped),
        (emitted, emitted, 0)
    );
    let written = lines(file.active_path());
    assert_eq!(written.len() as u64, emitted);
    assert_eq!(written[49_999]["fields"]["i"], 49_999);
    file.shutdown(std::time::Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_stalled_disk_holds_the_caller_once_then_the_sink_sheds_reports_and_recovers() {
    use std::time::{Duration, Instant};
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    // The worker's first write blocks until released: a disk that stalls.
    let (hook, entered_rx, release_tx) = support::write_gate();
    let bound = Duration::from_millis(50);
    let file = FileSink::builder(dir.path())
        .queue_capacity(4)
        .overflow(OverflowPolicy::Block(bound))
        .fault_hook(hook)
        .build()
        .unwrap();
    let seen = testing::watch();
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(file.clone()));
    let emitted = 400_u64;
    let started = Instant::now();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(i = 0_u64, "first");
        entered_rx.recv().unwrap();
        for i in 1..emitted {
            tracing::info!(i, "while the disk is stalled");
        }
    });
    // Had every call waited out the bound, this would take 20 s; shedding makes it one wait.
    assert!(
        started.elapsed() < bound * 100,
        "the callers waited {:?}",
        started.elapsed()
    );
    release_tx.send(()).unwrap();
    let stalled = seen
        .wait(Matcher::sink_event(file.id(), events::queue_stalled::NAME))
        .await
        .unwrap();
    file.flush().await.unwrap();
    let stats = file.stats();
    assert_eq!(stats.accepted, emitted);
    assert_eq!(stats.accepted, stats.delivered + stats.dropped);
    assert!(stats.dropped > 0 && stats.delivered >= 4, "{stats:?}");
    assert_eq!(stalled.u64("shed"), Some(stats.dropped));
    assert_eq!(
        support::dropped(&seen, file.id(), events::reason::STALLED),
        stats.dropped
    );
    // Recovered: the next event is written, not shed.
    let subscriber = tracing_subscriber::registry().with(SinkLayer::new(file.clone()));
    tracing::subscriber::with_default(subscriber, || tracing::info!("after the stall"));
    file.flush().await.unwrap();
    assert_eq!(file.stats().delivered, stats.delivered + 1);
    let last = lines(file.active_path()).pop().unwrap();
    assert_eq!(last["message"], "after the stall");
    file.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn try_write_never_waits_and_every_drop_is_reported() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path())
        .queue_capacity(4)
        .overflow(OverflowPolicy::Wait)
        .build()
        .unwrap();
    let events = testing::watch();
    let emitted = 20_000_u64;
    for i in 0..emitted {
        file.try_write(sinkwatch::Record::new(tracing::Level::INFO, "burst").with_field("i", i))
            .unwrap();
    }
    file.flush().await.unwrap();
    let stats = file.stats();
    assert_eq!(stats.accepted, emitted);
    assert!(
        stats.dropped > 0,
        "a 4-record queue took a 20,000-record burst without a drop"
    );
    assert_eq!(stats.delivered + stats.dropped, emitted);
    assert_eq!(lines(file.active_path()).len() as u64, stats.delivered);
    assert_eq!(
        support::dropped(&events, file.id(), events::reason::QUEUE_FULL),
        stats.dropped
    );
}

#[tokio::test]
async fn composes_with_env_filter_and_the_fmt_layer() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path()).build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "warn,layer::chatty=debug",
        ))
        .with(tracing_subscriber::fmt::layer().with_test_writer())
        .with(SinkLayer::new(file.clone()));
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("filtered out");
        tracing::warn!("kept");
        tracing::debug!(target: "layer::chatty", "kept by its directive");
        tracing::trace!(target: "layer::chatty", "filtered out");
    });
    file.flush().await.unwrap();
    let kept: Vec<_> = lines(file.active_path())
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kept, ["kept", "kept by its directive"]);
}
