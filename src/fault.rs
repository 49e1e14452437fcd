//! Fault injection for tests: hooks a file sink runs in front of its writes and other
//! file-system operations, so a test can fail or hold them up as a full disk, an I/O error
//! or a stalled device would.
//!
//! This module exists only for fault injection. The types are public through
//! `sinkwatch::testing` (feature `testing`), where
//! [`FileSinkBuilder::fault_hook`](crate::FileSinkBuilder::fault_hook) and
//! [`fs_fault_hook`](crate::FileSinkBuilder::fs_fault_hook) take them; without that feature
//! no hook can be installed and the sink only ever sees `None`. It lives outside `testing`
//! because the file sink uses it, and nothing outside `testing` imports `testing`.

use std::io;
use std::path::Path;
use std::sync::Arc;

/// A test hook standing in front of every `write(2)` the sink makes: given the length of
/// the write, it answers how many bytes may go through (a partial write when less), or an
/// error to fail the write with (disk full, I/O error). Installed by
/// [`FileSinkBuilder::fault_hook`](crate::FileSinkBuilder::fault_hook).
pub type FaultHook = Arc<dyn Fn(usize) -> io::Result<usize> + Send + Sync>;

/// A file-system operation other than a write that [`FsFaultHook`] can fail (see
/// [`FileSinkBuilder::fs_fault_hook`](crate::FileSinkBuilder::fs_fault_hook)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FsOp {
    /// An `fsync` of the active file (per the fsync policy).
    Sync,
    /// Retention removing a rotated file.
    Remove,
    /// Retention listing the directory.
    ListDir,
    /// Compression about to read the next chunk of a rotated file.
    CompressChunk,
}

/// A test hook standing in front of syncs, retention's removals and its directory listing,
/// and each chunk a compression reads: an error fails the operation with it (the operation
/// is not attempted); a hook that blocks holds the operation up. Installed by
/// [`FileSinkBuilder::fs_fault_hook`](crate::FileSinkBuilder::fs_fault_hook).
pub type FsFaultHook = Arc<dyn Fn(FsOp, &Path) -> io::Result<()> + Send + Sync>;

/// Runs `hook` (if any) for `op` on `path`.
pub(crate) fn check(hook: Option<&FsFaultHook>, op: FsOp, path: &Path) -> io::Result<()> {
    hook.map_or(Ok(()), |h| h(op, path))
}
