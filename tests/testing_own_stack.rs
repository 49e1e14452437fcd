//! The capture layer composes into a user's own subscriber stack: with a per-layer filter
//! on it, the other layers still see every event, and `init()` accepts the stack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sinkwatch::testing::{self, Matcher};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::{Layer, Registry};

/// Counts the events it is shown.
struct Counter(Arc<AtomicU64>);

impl<S: tracing::Subscriber> Layer<S> for Counter {
    fn on_event(&self, _event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_composes_and_never_disables_events_for_other_layers() {
    let seen_by_app_layer = Arc::new(AtomicU64::new(0));
    let subscriber = Registry::default()
        .with(Counter(seen_by_app_layer.clone()))
        // Capture only this test's target: the app layer must still see everything.
        .with(
            testing::layer()
                .with_filter(Targets::new().with_target("own_stack", tracing::Level::TRACE)),
        );
    tracing::subscriber::set_global_default(subscriber).unwrap();
    testing::try_init().expect("init() accepts a global stack that contains the layer");

    let seen = testing::watch();
    std::thread::spawn(|| {
        tracing::info!(target: "elsewhere", "not captured");
        tracing::info!(target: "own_stack", step = 1);
    })
    .join()
    .unwrap();
    let ev = seen.wait(Matcher::target("own_stack")).await.unwrap();
    assert_eq!(ev.u64("step"), Some(1));
    assert_eq!(seen_by_app_layer.load(Ordering::SeqCst), 2);
    let history = seen.history();
    assert!(
        history.iter().all(|e| e.target() == "own_stack"),
        "{history:?}"
    );
}
