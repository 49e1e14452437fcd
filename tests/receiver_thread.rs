//! The test receiver runs on a thread of its own, with its own runtime: a test that blocks
//! its own runtime's only thread (a `ShutdownGuard` dropped, or `shutdown_blocking`, in a
//! default `#[tokio::test]`) cannot starve it, its events still reach the subscriber that
//! was current when it started, and a paused test clock does not touch it.

use std::time::Duration;

use sinkwatch::testing::{self, LokiReceiver, Matcher};
use sinkwatch::{events, LineFormat, LokiSink, Record, ShutdownGuard};
use tracing::Level;

const WAIT: Duration = Duration::from_secs(10);

fn sink_for(receiver: &LokiReceiver) -> LokiSink {
    LokiSink::builder(receiver.url())
        .label("app", "receiver-thread")
        .line_format(LineFormat::Message)
        .build()
        .unwrap()
}

fn write(sink: &LokiSink, n: u64) {
    for i in 0..n {
        sink.try_write(Record::new(Level::INFO, format!("line {i}")))
            .unwrap();
    }
}

// The default flavour: one thread, which the guard's drop blocks.
#[tokio::test]
async fn a_guard_dropped_on_a_single_threaded_test_runtime_still_delivers() {
    testing::init();
    let receiver = LokiReceiver::start().await.unwrap();
    let sink = sink_for(&receiver);
    let seen = testing::watch();
    let guard = ShutdownGuard::new().with_sink(sink.clone());
    write(&sink, 10);
    drop(guard); // blocks this runtime's only thread until the sink is done
    let stats = sink.stats();
    assert_eq!((stats.delivered, stats.dropped), (10, 0), "{stats:?}");
    assert_eq!(receiver.entry_count(), 10);
    assert!(
        seen.take_all(Matcher::sink_event(sink.id(), events::push_failed::NAME))
            .is_empty(),
        "no push failed"
    );
}

#[tokio::test]
async fn shutdown_blocking_on_a_single_threaded_test_runtime_still_delivers() {
    testing::init();
    let receiver = LokiReceiver::start().await.unwrap();
    let sink = sink_for(&receiver);
    write(&sink, 5);
    let report = sink.shutdown_blocking(WAIT);
    assert!(report.completed);
    assert_eq!((report.stats.delivered, report.stats.dropped), (5, 0));
    assert_eq!(receiver.lines().len(), 5);
}

#[tokio::test]
async fn its_events_reach_the_capture_from_its_own_thread() {
    testing::init();
    let seen = testing::watch();
    let receiver = LokiReceiver::start().await.unwrap();
    let sink = sink_for(&receiver);
    write(&sink, 1);
    sink.flush().await.unwrap();
    let request = seen
        .wait(Matcher::sink_event(
            receiver.id(),
            testing::receiver_request::NAME,
        ))
        .await
        .unwrap();
    assert_eq!(request.u64(testing::receiver_request::STATUS), Some(204));
    assert_eq!(request.u64(testing::receiver_request::ACCEPTED), Some(1));
    let thread = request.thread().unwrap_or_default();
    assert!(
        thread.starts_with(&format!("sinkwatch-{}", receiver.id())),
        "served on {thread:?}"
    );
    sink.shutdown(WAIT).await;
}

#[tokio::test(start_paused = true)]
async fn a_paused_test_clock_leaves_the_receiver_alone() {
    testing::init();
    let receiver = LokiReceiver::start().await.unwrap();
    receiver.push_fault(sinkwatch::testing::Fault::delay(Duration::from_millis(50)));
    let sink = sink_for(&receiver);
    write(&sink, 3);
    sink.flush().await.unwrap();
    receiver.wait_for_entries(3, WAIT).await.unwrap();
    assert_eq!(receiver.requests()[0].status, 204);
    receiver.stop().await;
    assert!(!receiver.is_running());
    receiver.restart().await.unwrap();
    assert!(receiver.is_running());
    sink.shutdown(WAIT).await;
}

#[test]
fn it_starts_and_serves_without_a_runtime_of_the_callers() {
    // Before any event of this process's sinks (see `testing::init`).
    testing::init();
    let receiver = futures_block_on(LokiReceiver::start()).unwrap();
    let sink = sink_for(&receiver);
    write(&sink, 2);
    let report = sink.shutdown_blocking(WAIT);
    assert_eq!(report.stats.delivered, 2);
    assert_eq!(receiver.entry_count(), 2);
    let closed = receiver.closed();
    drop(receiver);
    futures_block_on(closed);
}

/// Polls a future to completion on this thread, with no tokio runtime: a minimal executor.
fn futures_block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}
