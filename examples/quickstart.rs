//! The quickstart: a small simulated service whose `tracing` events land in rotating files
//! under `./logs` and in Loki, with the sinks' own events printed as they happen.
//!
//! ```text
//! cargo run -p sinkwatch-examples --example quickstart
//! LOKI_URL=http://localhost:3100 LOKI_TENANT=team-a cargo run -p sinkwatch-examples --example quickstart
//! ```
//!
//! Without `LOKI_URL` (or with it empty) it pushes to an embedded Loki-compatible receiver, so it needs no
//! server. The file sink rotates at 32 KiB, gzips rotated files in the background and keeps
//! the 5 newest, so rotation, compression and retention all visibly happen. It ends with a
//! summary: records emitted, written, pushed, rotated files, dropped (0 expected). Colour
//! only on a terminal, and not with `NO_COLOR` set.

use std::io::IsTerminal as _;
use std::time::Duration;

use sinkwatch::testing::LokiReceiver;
use sinkwatch::Compression;
use sinkwatch::LokiSink;
use sinkwatch::{FileSink, ShutdownGuard, SinkLayer};
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The simulated service's target, so its events are easy to route.
const SERVICE: &str = "quickstart::service";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, receiver) = if let Some(url) = env_value("LOKI_URL") {
        (url, None)
    } else {
        let receiver = LokiReceiver::start().await?;
        (receiver.url(), Some(receiver))
    };
    let tenant = env_value("LOKI_TENANT");

    let file = FileSink::builder("logs")
        .file_name("quickstart", "log")
        .max_file_size(32 * 1024)
        .compression(Compression::Gzip)
        .max_files(5)
        .build()?;
    let mut loki = LokiSink::builder(&url)
        .label("service_name", "quickstart")
        .label_from_field("level")
        .metadata_from_field("request_id")
        .batch_wait(Duration::from_millis(250));
    if let Some(tenant) = &tenant {
        loki = loki.tenant(tenant);
    }
    let loki = loki.build()?;
    let guard = ShutdownGuard::new()
        .with_sink(file.clone())
        .with_sink(loki.clone())
        .with_timeout(Duration::from_secs(10));

    // The sinks' own events, printed as they happen (the embedded receiver's per-request
    // events and the per-flush debug events would only be noise here).
    let sink_events = filter_fn(|meta| {
        meta.target() == sinkwatch::events::TARGET
            && meta.name() != sinkwatch::testing::receiver_request::NAME
    });
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_ansi(colour())
                .with_filter(sink_events)
                .with_filter(LevelFilter::INFO),
        )
        // Files get the service's events at DEBUG and above, plus the Loki sink's events
        // (push_complete, …) for dashboards. A sink never gets the events of its own work.
        .with(
            SinkLayer::new(file.clone()).with_filter(
                Targets::new()
                    .with_target(SERVICE, Level::DEBUG)
                    .with_target(sinkwatch::events::TARGET, Level::INFO),
            ),
        )
        // Loki gets the service's events at INFO and above only.
        .with(
            SinkLayer::new(loki.clone())
                .with_filter(Targets::new().with_target(SERVICE, Level::INFO)),
        )
        .init();

    let emitted = simulate_service().await;

    // Drain both sinks before reading their counters (the guard would do it on drop too).
    file.flush().await?;
    loki.flush().await?;
    let reports = guard.shutdown().await;

    let file_stats = reports
        .iter()
        .find(|(id, _)| id == file.id())
        .map(|(_, r)| r.stats);
    let loki_stats = reports
        .iter()
        .find(|(id, _)| id == loki.id())
        .map(|(_, r)| r.stats);
    let (file_stats, loki_stats) = (
        file_stats.unwrap_or_default(),
        loki_stats.unwrap_or_default(),
    );
    let rotated = std::fs::read_dir("logs")?
        .filter_map(Result::ok)
        .filter(|e| Some(e.file_name().as_os_str()) != file.active_path().file_name())
        .count();

    println!("\n== summary ==");
    println!("records emitted by the service   {emitted}");
    println!(
        "written to ./logs                {} (of {} accepted, incl. the Loki sink's events)",
        file_stats.delivered, file_stats.accepted
    );
    println!(
        "pushed to {url:<22} {} (of {} accepted)",
        loki_stats.delivered, loki_stats.accepted
    );
    if let Some(receiver) = &receiver {
        println!(
            "held by the embedded receiver    {}",
            receiver.entry_count()
        );
    }
    println!("rotated files kept in ./logs     {rotated}");
    println!(
        "dropped                          {}",
        file_stats.dropped + loki_stats.dropped
    );
    Ok(())
}

/// An environment variable's value; unset, empty and blank all mean `None` (CI templating
/// and `.env` files often produce `LOKI_URL=`).
fn env_value(name: &str) -> Option<String> {
    let value = std::env::var(name).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A few concurrent "request handlers" logging at several levels.
async fn simulate_service() -> u64 {
    let mut handlers = Vec::new();
    for worker in 0..4_u64 {
        handlers.push(tokio::spawn(async move {
            let mut emitted = 0;
            for n in 0..250_u64 {
                let request_id = worker * 1_000 + n;
                let span = tracing::info_span!(target: SERVICE, "request", request_id, worker);
                // Entered only around synchronous code: a span guard must never be held
                // across an `.await` (use `Instrument::instrument` for async work).
                emitted += span.in_scope(|| handle_request(request_id, n));
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            emitted
        }));
    }
    let mut total = 0;
    for h in handlers {
        total += h.await.expect("a request handler panicked");
    }
    total
}

/// One simulated request; returns how many events it emitted.
fn handle_request(request_id: u64, n: u64) -> u64 {
    let mut emitted = 2;
    tracing::debug!(target: SERVICE, request_id, route = "/orders", "request received");
    tracing::info!(
        target: SERVICE,
        request_id,
        status = 200_u64,
        duration_ms = 3.5 + f64::from(u32::try_from(n % 7).unwrap_or(0)),
        "request handled"
    );
    if n.is_multiple_of(25) {
        tracing::warn!(target: SERVICE, request_id, retries = n % 3, "upstream slow");
        emitted += 1;
    }
    if n % 100 == 99 {
        tracing::error!(target: SERVICE, request_id, error = "connection reset", "upstream failed");
        emitted += 1;
    }
    emitted
}
