//! The sinks' health as Prometheus metrics: `/metrics` served by
//! `metrics-exporter-prometheus` while a scripted scenario runs.
//!
//! ```text
//! cargo run -p sinkwatch-examples --features prometheus --example prometheus
//! cargo run -p sinkwatch-examples --features prometheus --example prometheus -- \
//!     --listen 127.0.0.1:9464 --serve-for 60
//! ```
//!
//! A simulated service logs through `SinkLayer` into a file sink (small files, so it
//! rotates, compresses and prunes) and a Loki sink pushing to an embedded Loki-compatible
//! receiver that answers two 503s, goes down for three seconds (connections refused: the
//! sink retries, runs out of retries and reports drops), comes back, and rejects one
//! request with a 400. Both sinks are then shut down and written to once more (a refused
//! write each). The application's global filter hides sinkwatch's own events
//! (`info,sinkwatch=off`): the metrics do not depend on them.
//!
//! It prints the address of `/metrics` first, and at the end each sink's `SinkStats` and
//! the statuses the receiver answered, one `key=value` line each (what
//! `scripts/prometheus-check.sh` compares with a real Prometheus' queries); then it keeps
//! serving `/metrics` for `--serve-for` seconds (60 by default) so a scrape sees the final
//! values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use sinkwatch::testing::{Fault, LokiReceiver};
use sinkwatch::{metrics, Compression, FileSink, LineFormat, LokiSink, Record, SinkLayer};
use sinkwatch::{SinkId, SinkStats};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// The scenario's length, in ticks of `TICK`, and what happens when.
const TICK: Duration = Duration::from_millis(100);
const TICKS: u32 = 120;
const EVENTS_PER_TICK: u64 = 20;
const FAULTS_AT: u32 = 20;
const OUTAGE_FROM: u32 = 40;
const OUTAGE_UNTIL: u32 = 70;
const REJECT_AT: u32 = 90;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse()?;

    // The recorder first: a sink records into the recorder installed when it runs.
    PrometheusBuilder::new()
        .with_http_listener(args.listen)
        .set_buckets_for_metric(
            Matcher::Full(metrics::PUSH_DURATION.to_owned()),
            metrics::PUSH_DURATION_BUCKETS,
        )?
        .install()?;
    println!("metrics: http://{}/metrics", args.listen);

    let dir = std::env::temp_dir().join(format!("sinkwatch-prometheus-{}", std::process::id()));
    let file = FileSink::builder(&dir)
        .max_file_size(64 * 1024)
        .compression(Compression::Gzip)
        .max_files(4)
        .build()?;
    let receiver = LokiReceiver::start().await?;
    let loki = LokiSink::builder(receiver.url())
        .label("service_name", "shop")
        .line_format(LineFormat::Json)
        .batch_wait(Duration::from_millis(200))
        .min_backoff(Duration::from_millis(100))
        .max_backoff(Duration::from_millis(400))
        .max_retries(3)
        .build()?;

    // The application's filter hides sinkwatch's own events entirely.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sinkwatch=off".into());
    tracing_subscriber::registry()
        .with(filter)
        .with(SinkLayer::new(file.clone()))
        .with(SinkLayer::new(loki.clone()))
        .init();
    println!("logging to {} and to {}", dir.display(), receiver.url());

    run_scenario(&receiver).await?;

    file.flush().await?;
    loki.flush().await?;
    let file_stats = file.shutdown(Duration::from_secs(10)).await.stats;
    let loki_stats = loki.shutdown(Duration::from_secs(10)).await.stats;
    // After the shutdown: refused, and counted in `refused`.
    let _ = file.write(Record::new(tracing::Level::INFO, "too late"));
    let _ = loki.write(Record::new(tracing::Level::INFO, "too late"));

    print_stats(file.id(), file.stats(), file_stats);
    print_stats(loki.id(), loki.stats(), loki_stats);
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    for request in receiver.requests() {
        *statuses.entry(request.status).or_default() += 1;
    }
    for (status, count) in statuses {
        println!("requests sink={} status={status} count={count}", loki.id());
    }
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "done: serving /metrics for {} s more",
        args.serve_for.as_secs()
    );
    // Keeps the process (and its exporter) alive for the final scrapes; not synchronisation.
    #[allow(clippy::disallowed_methods)]
    tokio::time::sleep(args.serve_for).await;
    Ok(())
}

/// The service's traffic, with the receiver's faults on cue.
async fn run_scenario(receiver: &LokiReceiver) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut order_id = 0_u64;
    for tick in 0..TICKS {
        match tick {
            FAULTS_AT => {
                println!("t={:>4.1}s Loki answers two 503s", secs(start));
                receiver.push_faults([Fault::status(503), Fault::status(503)]);
            }
            OUTAGE_FROM => {
                println!(
                    "t={:>4.1}s Loki goes down (retries, then drops)",
                    secs(start)
                );
                receiver.stop().await;
            }
            OUTAGE_UNTIL => {
                println!("t={:>4.1}s Loki is back", secs(start));
                receiver.restart().await?;
            }
            REJECT_AT => {
                println!("t={:>4.1}s Loki rejects one request (400)", secs(start));
                receiver.push_fault(Fault::status(400).body("entry too far behind"));
            }
            _ => {}
        }
        for _ in 0..EVENTS_PER_TICK {
            tracing::info!(
                target: "shop",
                order_id,
                amount_cents = 1250 + order_id % 700,
                customer = "c-0042",
                "order placed"
            );
            order_id += 1;
        }
        // The service's pace, not synchronisation.
        #[allow(clippy::disallowed_methods)]
        tokio::time::sleep_until((start + TICK * (tick + 1)).into()).await;
    }
    println!("t={:>4.1}s traffic ends: {order_id} events", secs(start));
    Ok(())
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

/// One line per sink, final totals plus the refused write after the shutdown.
fn print_stats(id: &SinkId, now: SinkStats, at_shutdown: SinkStats) {
    assert_eq!(
        (now.accepted, now.delivered, now.dropped),
        (
            at_shutdown.accepted,
            at_shutdown.delivered,
            at_shutdown.dropped
        ),
        "final since sink_closed"
    );
    println!(
        "stats sink={id} accepted={} delivered={} dropped={} refused={}",
        now.accepted, now.delivered, now.dropped, now.refused
    );
}

struct Args {
    listen: SocketAddr,
    serve_for: Duration,
}

impl Args {
    fn parse() -> Result<Self, Box<dyn std::error::Error>> {
        let mut args = Args {
            listen: "127.0.0.1:9464".parse()?,
            serve_for: Duration::from_secs(60),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--listen" => args.listen = value.parse()?,
                "--serve-for" => args.serve_for = Duration::from_secs(value.parse()?),
                other => {
                    return Err(format!(
                        "unknown option {other}; use --listen ADDR and --serve-for SECONDS"
                    )
                    .into())
                }
            }
        }
        Ok(args)
    }
}
