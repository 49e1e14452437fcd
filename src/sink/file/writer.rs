//! The file sink as a `tracing_subscriber::fmt::MakeWriter`, for applications that keep the
//! fmt layer's formatting: `fmt::layer().with_writer(file_sink)`.

use std::io;

use tracing_subscriber::fmt::MakeWriter;

use super::FileSink;
use crate::pipe::{self, Patience};

/// What [`FileSink`]'s `MakeWriter` hands the fmt layer for one event: it collects the
/// formatted event and, when the fmt layer is done with it (on drop), queues it as one
/// preformatted line, with all of the sink's rotation, retention, compression,
/// backpressure and accounting (each event counts as one record).
///
/// Events emitted on the sink's own worker thread are not written back to it (no feedback
/// loop); on another sink's worker, a full queue drops the line rather than waiting.
#[derive(Debug)]
pub struct FileWriter {
    sink: FileSink,
    buf: Vec<u8>,
}

impl io::Write for FileWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() || pipe::on_worker_of(self.sink.id()) {
            return;
        }
        let patience = if pipe::on_any_worker() {
            Patience::None
        } else {
            Patience::Bounded
        };
        // A write refused because the sink is closed is counted in `stats().refused` and
        // reported by `writes_refused`.
        self.sink.producer.put_line(&self.buf, patience);
    }
}

/// # Examples
///
/// The one-line switch from tracing-appender: the fmt layer keeps formatting, the file
/// sink does the rest. Turn colours off with `.with_ansi(false)`: the fmt layer writes ANSI
/// escape codes into any writer unless `NO_COLOR` is set, and a log file is no terminal.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt as _;
/// use sinkwatch::FileSink;
///
/// # let dir = tempfile::tempdir().unwrap();
/// let file = FileSink::builder(dir.path()).max_file_size(64 << 20).build()?;
/// let subscriber = tracing_subscriber::registry().with(
///     tracing_subscriber::fmt::layer()
///         .with_ansi(false) // no colour codes in the file
///         .with_writer(file.clone()),
/// );
/// tracing::subscriber::with_default(subscriber, || tracing::info!(user = "ada", "logged in"));
/// file.shutdown_blocking(std::time::Duration::from_secs(5));
/// let text = std::fs::read_to_string(file.active_path()).unwrap();
/// assert!(text.contains("logged in user=\"ada\""), "{text}");
/// assert!(!text.contains('\x1b'), "no escape codes: {text:?}");
/// # Ok::<(), sinkwatch::Error>(())
/// ```
///
/// The JSON formatter (`.json()`) writes no colour codes; `.with_writer(file)` is all it
/// needs. In tests, where a process can install a global subscriber only once, use a
/// scoped one per test (`with_default`, as above) after `sinkwatch::testing::init()` (feature
/// `testing`), which keeps the process-wide interest cache from hiding callsites from the
/// scoped subscriber (see the migrating guide).
impl<'a> MakeWriter<'a> for FileSink {
    type Writer = FileWriter;

    fn make_writer(&'a self) -> FileWriter {
        FileWriter {
            sink: self.clone(),
            buf: Vec::new(),
        }
    }
}
