//! No feedback loops with the Loki sink: neither its own events nor what its HTTP stack
//! logs while it pushes (reqwest's `log` records, bridged into `tracing` as most services
//! do) ever reach Loki through it, while the file sink beside it records both.
//!
//! One test in this file: it installs the process's global subscriber and `log` bridge.

use std::path::Path;

use serde_json::Value as Json;
use sinkwatch::events;
use sinkwatch::testing::LokiReceiver;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::{FileSink, LokiSink, SinkLayer};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

fn file_records(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loki_sink_never_ships_its_own_work_but_the_file_sink_records_it() {
    tracing_log::LogTracer::init().unwrap();
    let receiver = LokiReceiver::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path()).build().unwrap();
    let loki = LokiSink::builder(receiver.url())
        .label("app", "feedback")
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        // The in-process receiver logs each request it serves: keep those away from the
        // Loki sink, or each push would cause the next (see docs/design.md).
        .with(SinkLayer::new(loki.clone()).with_filter(filter_fn(|m| {
            m.name() != sinkwatch::testing::receiver_request::NAME
        })))
        .with(SinkLayer::new(file.clone()))
        .with(testing::layer());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    testing::init();
    let events = testing::watch();

    tracing::info!(order = 7, "application event");
    loki.flush().await.unwrap();
    events
        .wait(Matcher::sink_event(loki.id(), events::push_complete::NAME))
        .await
        .unwrap();
    // A second push carries whatever reached the Loki sink during the first one.
    tracing::info!(order = 8, "second application event");
    loki.flush().await.unwrap();
    file.flush().await.unwrap();

    let shipped: Vec<Json> = receiver
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(shipped.iter().any(|r| r["message"] == "application event"));
    assert!(shipped
        .iter()
        .any(|r| r["message"] == "second application event"));
    for r in &shipped {
        let target = r["target"].as_str().unwrap();
        assert!(
            !(target == events::TARGET && r["fields"][events::SINK] == loki.id().as_str()),
            "the Loki sink shipped its own event: {r}"
        );
        assert!(
            !target.starts_with("reqwest") && !target.starts_with("hyper") && target != "log",
            "the Loki sink shipped what its HTTP stack logged: {r}"
        );
    }

    let written = file_records(file.active_path());
    assert!(
        written
            .iter()
            .any(|r| r["target"].as_str().unwrap().starts_with("reqwest")),
        "the file sink should hold what the Loki sink's HTTP stack logged (proof it was emitted): {:#?}",
        written.iter().map(|r| format!("{} {}", r["target"], r["message"])).collect::<Vec<_>>()
    );
    assert!(written.iter().any(|r| {
        r["fields"][events::EVENT] == events::push_complete::NAME
            && r["fields"][events::SINK] == loki.id().as_str()
    }));
    assert!(written
        .iter()
        .all(|r| r["fields"][events::SINK] != file.id().as_str()));
}
