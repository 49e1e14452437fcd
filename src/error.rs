//! The crate's error type.

use std::fmt;

/// A specialised `Result` for sinkwatch operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is.
///
/// The list may grow: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A builder was given a value it cannot use (checked by `build()`).
    Config,
    /// An I/O operation failed (creating a directory, opening a file, binding a socket).
    Io,
    /// The sink has been shut down and accepts no more records.
    Closed,
    /// The sink's worker failed (it panicked, for example in a user-supplied `Clock`); the
    /// sink is closed, and the `worker_failed` event says why. Not [`Closed`](Self::Closed):
    /// match both to handle "the sink no longer takes records" whatever the cause.
    Failed,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Io => "I/O error",
            ErrorKind::Closed => "sink closed",
            ErrorKind::Failed => "sink failed",
        })
    }
}

/// The error type of sinkwatch.
///
/// An opaque value with a [`kind`](Error::kind) (the one way to ask what went wrong), a
/// message that says what was being done (and, where it helps, how to fix it) and the
/// underlying cause through [`source`](std::error::Error::source). The message never
/// repeats the cause.
///
/// # Examples
///
/// Errors come from the crate's calls, never built by hand: here, a builder given a
/// setting it cannot use.
///
/// ```
/// # #[cfg(feature = "loki")] {
/// use sinkwatch::{ErrorKind, LokiSink};
///
/// // The scheme is missing, so `loki` reads as one.
/// let err = LokiSink::builder("loki:3100")
///     .label("service_name", "checkout")
///     .build()
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: the Loki URL must be http:// or https://, not loki://"
/// );
/// # }
/// ```
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// Creates an error of the given kind with a message.
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                source: None,
            }),
        }
    }

    /// Creates a configuration error: a builder was given a value it cannot use.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Creates an I/O error with a message saying what was being done, and its cause.
    pub(crate) fn io(message: impl Into<String>, source: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, message).with_source(source)
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.inner.source = Some(Box::new(source));
        self
    }

    /// The kind of failure: the one way to ask what went wrong.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(feature = "file")] {
    /// use sinkwatch::{ErrorKind, FileSink, Record};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let sink = FileSink::builder(dir.path()).build().unwrap();
    /// sink.shutdown_blocking(std::time::Duration::from_secs(5));
    /// let err = sink.try_write(Record::new(tracing::Level::INFO, "late")).unwrap_err();
    /// // A sink that stopped, whether shut down or failed:
    /// assert!(matches!(err.kind(), ErrorKind::Closed | ErrorKind::Failed));
    /// # }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn message_does_not_repeat_the_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let err = Error::io("cannot create /x", cause);
        assert_eq!(err.to_string(), "I/O error: cannot create /x");
        assert_eq!(err.source().unwrap().to_string(), "denied");
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
