//! The rotating file sink, with every event it emits printed.
//!
//! ```text
//! cargo run -p sinkwatch-examples --example file
//! ```
//!
//! Writes 2,000 records into a temporary directory with a 64 KiB size limit, gzip and a
//! retention of 3 rotated files, then rotates by hand and shuts down. Each rotation,
//! compression, retention pass, flush and the final totals appear as `sinkwatch` events.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sinkwatch::Record;
use sinkwatch::{Compression, FileSink};
use tracing::Level;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Print sinkwatch's own events (flush_complete is DEBUG).
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("sinkwatch=debug"))
        .with_thread_names(true)
        .with_ansi(colour())
        .init();

    let dir = TempDir::new()?;
    let sink = FileSink::builder(dir.path())
        .file_name("orders", "log")
        .max_file_size(64 * 1024)
        .max_files(3)
        .compression(Compression::Gzip)
        .build()?;

    for n in 0..2_000_u64 {
        let record = Record::new(Level::INFO, "order placed")
            .with_target("shop::orders")
            .with_field("order_id", n)
            .with_field("customer", "c-1042")
            .with_field("amount", 19.99);
        // Never blocks: formatting and I/O happen on the sink's worker thread.
        sink.write_async(record).await?;
    }
    sink.flush().await?;
    if let Some(rotated) = sink.rotate().await? {
        println!("rotated by hand to {}", rotated.display());
    }

    let report = sink.shutdown(Duration::from_secs(5)).await;
    println!("\n{report:?}\n\nfiles in {}:", dir.path().display());
    let mut names: Vec<_> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let len = std::fs::metadata(dir.path().join(&name))?.len();
        println!("  {name:<45} {len:>8} bytes");
    }
    Ok(())
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to a non-empty value
/// (<https://no-color.org>).
fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A directory of this run's own under the system's temporary directory, removed on drop.
/// (Hand-rolled rather than the `tempfile` crate: the examples keep their dependencies to
/// what they need, so the quickstart's first build stays small.)
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("sinkwatch-file-example-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
