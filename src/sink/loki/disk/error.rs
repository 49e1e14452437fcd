//! What opening and appending can fail with. Messages say what went wrong and how to fix
//! it; the I/O cause is the error's `source()`, not repeated in the message.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why [`DiskBuffer::open`](super::DiskBuffer::open) failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Another disk buffer (in another process, or another sink in this one) holds the
    /// directory.
    Locked {
        /// The directory.
        dir: PathBuf,
        /// What the holder wrote into `dir/lock`: its pid, host and start time.
        holder: String,
    },
    /// A file of the buffer was written in a format version this code cannot read: it is
    /// left as it is.
    Version {
        /// The file.
        path: PathBuf,
        /// The version it says it has.
        version: u8,
    },
    /// An I/O error.
    Io {
        /// What was being done, as a verb phrase ("create", "read", …).
        what: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl OpenError {
    pub(super) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| OpenError::Io { what, path, source }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Locked { dir, holder } => write!(
                f,
                "the disk buffer directory {} is in use by {holder}; give each sink (and each \
                 process) a directory of its own",
                dir.display()
            ),
            OpenError::Version { path, version } => write!(
                f,
                "{} is in disk buffer format version {version}, which this version of \
                 sinkwatch cannot read (it reads version {}); it is left untouched: use the \
                 version that wrote it, or another directory",
                path.display(),
                super::format::VERSION
            ),
            OpenError::Io { what, path, .. } => {
                write!(f, "could not {what} {} for the disk buffer", path.display())
            }
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why [`DiskBuffer::append`](super::DiskBuffer::append) refused an entry. Nothing was
/// appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The entry would take the buffer past its byte cap: apply the overflow policy (wait
    /// for settlements, [`evict_oldest`](super::DiskBuffer::evict_oldest), or drop it).
    Full,
    /// The entry can never fit: it is larger than the cap allows (or than 16 MiB).
    TooLarge,
    /// The disk failed (full, permission, the directory removed, …).
    Io(io::Error),
}

impl fmt::Display for AppendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppendError::Full => f.write_str("the disk buffer is full"),
            AppendError::TooLarge => {
                f.write_str("the entry is larger than the disk buffer can hold")
            }
            AppendError::Io(_) => f.write_str("the disk buffer could not append"),
        }
    }
}

impl std::error::Error for AppendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppendError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for AppendError {
    fn from(e: io::Error) -> Self {
        AppendError::Io(e)
    }
}
