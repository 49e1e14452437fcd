//! `FileSink` as the fmt layer's writer: the fmt layer's own lines, with the sink's
//! rotation, compression, accounting and events.

use std::io::Read as _;
use std::time::Duration;

use sinkwatch::events;
use sinkwatch::testing::{self, Matcher};
use sinkwatch::{Compression, FileSink};
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::test]
async fn the_fmt_layers_lines_rotate_and_compress_and_every_one_is_counted() {
    testing::init();
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path())
        .max_file_size(16 * 1024)
        .compression(Compression::Gzip)
        .build()
        .unwrap();
    let seen = testing::watch();
    // The one-line switch from tracing-appender: `.with_writer(file)`.
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(file.clone()),
    );
    let emitted = 500_u64;
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..emitted {
            tracing::info!(i, user = "ada", "request handled");
        }
    });
    file.flush().await.unwrap();
    seen.wait(Matcher::sink_event(
        file.id(),
        events::compression_complete::NAME,
    ))
    .await
    .unwrap();
    let report = file.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        (
            report.stats.accepted,
            report.stats.delivered,
            report.stats.dropped
        ),
        (emitted, emitted, 0)
    );
    let mut lines = Vec::new();
    let mut archives = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut text = String::new();
        if path.extension().is_some_and(|e| e == "gz") {
            archives += 1;
            flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = std::fs::read_to_string(&path).unwrap();
        }
        lines.extend(text.lines().map(str::to_owned));
    }
    assert!(archives >= 2, "rotated and compressed: {archives} archives");
    assert_eq!(lines.len() as u64, emitted);
    let mut seqs: Vec<u64> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(
                v["fields"]["message"], "request handled",
                "the fmt layer's format"
            );
            v["fields"]["i"].as_u64().unwrap()
        })
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..emitted).collect::<Vec<_>>());
}
