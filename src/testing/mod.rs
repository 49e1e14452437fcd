//! Test support: await sinkwatch's (and your own) events instead of sleeping, and a
//! Loki-compatible receiver.
//!
//! # Awaiting events
//!
//! ```
//! use sinkwatch::testing::{self, Matcher};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! testing::init(); // once per test process is enough; later calls do nothing
//! let seen = testing::watch(); // before the action
//! tokio::spawn(async { tracing::info!(job = "nightly", "job finished") });
//! let done = seen.wait(Matcher::any().field("job", "nightly")).await.unwrap();
//! assert_eq!(done.level(), tracing::Level::INFO);
//! # }
//! ```
//!
//! # Why a global subscriber
//!
//! `tracing::subscriber::set_default` is thread-local: events from other runtime threads,
//! `spawn_blocking` and `std::thread`s never reach it, and the process-wide interest cache
//! can make a scoped capture miss events intermittently. [`init`] therefore installs one
//! global subscriber per test process (the capture layer, plus a `fmt` layer printing
//! through the test harness filtered by `RUST_LOG`, `warn` by default). Isolation between
//! parallel tests comes from matching on each sink's unique id, never from threads.
//!
//! If your tests install their own global subscriber, add [`layer()`] to it instead.
//!
//! See `docs/testing.md` for the patterns, migration from `sleep`, and `tracing-test`.

mod capture;
mod explain;
mod matcher;
mod receiver;
mod schema;
mod seen;
mod wait;
mod watcher;

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

#[cfg(feature = "file")]
pub use crate::fault::{FaultHook, FsFaultHook, FsOp};
pub use capture::{CaptureLayer, CapturedEvent, FieldValue};
pub use matcher::Matcher;
pub use receiver::{
    Fault, LokiReceiver, LokiReceiverBuilder, ReceivedEntry, ReceivedRequest, ReceivedStream,
};
pub use schema::{receiver_request, EVENTS};
pub use wait::Wait;
pub use watcher::{
    eventually, eventually_within, parse_timeout_multiplier, Checkpoint, WaitError, WaitErrorKind,
    Watcher, DEFAULT_TIMEOUT, TIMEOUT_MULTIPLIER_VAR,
};

/// The capture layer, to compose into your own subscriber stack.
///
/// # Examples
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(sinkwatch::testing::layer())
///     .with(tracing_subscriber::fmt::layer().with_test_writer());
/// # let _ = subscriber;
/// ```
pub fn layer() -> CaptureLayer {
    CaptureLayer::default()
}

/// Starts watching: the returned [`Watcher`] sees every event captured from now on.
pub fn watch() -> Watcher {
    Watcher::new()
}

/// Installs the capturing global subscriber, once per process; later calls do nothing.
///
/// Call it first in every test of a test binary that awaits events, also in the tests that
/// await none: the tests of a binary share a process under `cargo test`, and an event whose
/// callsite is first hit before the global subscriber exists can be cached as
/// uninteresting for the whole process (tokio-rs/tracing#3611), so another test's wait for
/// it times out.
///
/// # Panics
///
/// If another global subscriber is already installed without the capture layer (see
/// [`try_init`]).
pub fn init() {
    if let Err(message) = try_init() {
        panic!("{message}");
    }
}

/// [`init`] that reports failure instead of panicking.
///
/// Succeeds when it installs the subscriber, when it already did, or when a global
/// subscriber that already contains [`layer()`] is installed.
///
/// # Errors
///
/// A message saying what to do when a global subscriber without the capture layer is
/// already installed (for example by `tracing-test`'s `#[traced_test]`).
pub fn try_init() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
            let subscriber = tracing_subscriber::registry().with(layer()).with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            );
            match tracing::subscriber::set_global_default(subscriber) {
                Ok(()) => Ok(()),
                Err(_) if capture::hub().layers() > 1 => Ok(()),
                Err(_) => Err(String::from(
                    "sinkwatch::testing::init(): another global tracing subscriber is already \
                     installed, without sinkwatch's capture layer. Add \
                     sinkwatch::testing::layer() to that subscriber instead of calling init() \
                     (tracing-test's #[traced_test] installs its own: see docs/testing.md)",
                )),
            }
        })
        .clone()
}

/// Compiles and runs every Rust block of `docs/testing.md` as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../docs/testing.md")]
struct TestingGuide;
