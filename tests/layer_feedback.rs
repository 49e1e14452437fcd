//! No feedback loops: a sink never receives the events of its own work, while the events
//! of one sink may feed another (for dashboards).
//!
//! One test in this file: it installs the process's global subscriber with two sink
//! layers, so that events from every thread (the sinks' workers included) reach them.

use std::path::Path;

use serde_json::Value as Json;
use sinkwatch::events;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::{FileSink, SinkLayer};
use tracing_subscriber::layer::SubscriberExt as _;

fn records(path: &Path) -> Vec<Json> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn from_sink<'a>(records: &'a [Json], sink: &str) -> Vec<&'a Json> {
    records
        .iter()
        .filter(|r| r["target"] == events::TARGET && r["fields"][events::SINK] == sink)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_never_gets_its_own_events_but_others_do() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileSink::builder(dir.path().join("a")).build().unwrap();
    let b = FileSink::builder(dir.path().join("b")).build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(SinkLayer::new(a.clone()))
        .with(SinkLayer::new(b.clone()))
        .with(testing::layer());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    testing::init();
    let events = testing::watch();

    tracing::info!(order = 1, "application event");
    // Each flush makes that sink's worker emit `flush_complete`, which the layer hands to
    // the *other* sink only. Flushing a, b, a, b settles both: each file then holds the
    // other's `flush_complete` and none of its own.
    for _ in 0..2 {
        a.flush().await.unwrap();
        b.flush().await.unwrap();
    }
    events
        .wait_n(Matcher::sink_event(a.id(), events::flush_complete::NAME), 2)
        .await
        .unwrap();

    let in_a = records(a.active_path());
    let in_b = records(b.active_path());
    for (name, recs) in [("a", &in_a), ("b", &in_b)] {
        assert!(
            recs.iter().any(|r| r["message"] == "application event"),
            "{name} lacks the application event"
        );
    }
    assert!(
        from_sink(&in_a, a.id().as_str()).is_empty(),
        "a fed itself: {in_a:#?}"
    );
    assert!(
        from_sink(&in_b, b.id().as_str()).is_empty(),
        "b fed itself: {in_b:#?}"
    );
    assert!(
        !from_sink(&in_a, b.id().as_str()).is_empty(),
        "b's events did not reach a"
    );
    assert!(
        !from_sink(&in_b, a.id().as_str()).is_empty(),
        "a's events did not reach b"
    );

    // And it settles: once both are flushed, no further event from either sink arrives
    // without new application activity (a loop would keep them busy).
    let stats_a = a.stats();
    a.flush().await.unwrap();
    b.flush().await.unwrap();
    a.flush().await.unwrap();
    assert!(
        a.stats().accepted <= stats_a.accepted + 2,
        "a keeps receiving: a loop"
    );
}
