//! The Loki push sink, with every event it emits printed.
//!
//! ```text
//! cargo run -p sinkwatch-examples --example loki
//! LOKI_URL=http://localhost:3100 LOKI_TENANT=team-a cargo run -p sinkwatch-examples --example loki
//! ```
//!
//! Pushes to `LOKI_URL` (with `X-Scope-OrgID: $LOKI_TENANT` when set) or, when it is unset or
//! empty, to an embedded Loki-compatible receiver. The application's own `tracing` events go
//! to the sink through `SinkLayer`; a `fmt` layer filtered to target `sinkwatch` prints what
//! the sink did: `push_complete`, `push_retry` (the embedded receiver answers one 503 with
//! `Retry-After`), `flush_complete` and the final `sink_closed` totals. Colour only on a
//! terminal, and not with `NO_COLOR` set.

use std::io::IsTerminal as _;
use std::time::Duration;

use sinkwatch::testing::{Fault, LokiReceiver};
use sinkwatch::LokiSink;
use sinkwatch::SinkLayer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (url, receiver) = if let Some(url) = env_value("LOKI_URL") {
        (url, None)
    } else {
        let receiver = LokiReceiver::start().await?;
        receiver.push_fault(Fault::status(503).retry_after("1"));
        (receiver.url(), Some(receiver))
    };
    let mut builder = LokiSink::builder(&url)
        .name("example")
        .label("service_name", "sinkwatch-example")
        .label_from_field("level")
        .metadata_from_field("order_id")
        .batch_wait(Duration::from_millis(200))
        .min_backoff(Duration::from_millis(200));
    if let Some(tenant) = env_value("LOKI_TENANT") {
        builder = builder.tenant(tenant);
    }
    let sink = builder.build()?;

    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_thread_names(true)
                .with_ansi(colour())
                .with_filter(Targets::new().with_target("sinkwatch", tracing::Level::DEBUG)),
        )
        .with(
            SinkLayer::new(sink.clone())
                .with_filter(Targets::new().with_target("example", tracing::Level::INFO)),
        )
        .init();

    for order_id in 0..20_u64 {
        tracing::info!(target: "example", order_id, amount_cents = 1250 + order_id, "order placed");
    }
    tracing::warn!(target: "example", queue = "payments", "queue backing up");
    sink.flush().await?;

    let report = sink.shutdown(Duration::from_secs(5)).await;
    println!("\npushed to {url}: {:?}", report.stats);
    if let Some(receiver) = receiver {
        for stream in receiver.streams("fake") {
            println!("{} holds {} entries", stream.labels, stream.entries.len());
        }
    }
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
