//! A hook in front of the buffer's file-system operations, so tests can make the disk
//! fill up or refuse permission at a chosen step (as root, a read-only directory does not
//! refuse anything).

use std::io;
use std::path::Path;
use std::sync::Arc;

/// A file-system operation of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A `write(2)` of `len` bytes to a segment.
    Write { len: usize },
    /// Creating a segment.
    Create,
    /// Appending to the settlement log.
    Ack,
    /// Rewriting the settlement log (compaction).
    Compact,
    /// An `fsync`.
    Sync,
    /// Removing a settled segment.
    Remove,
    /// Opening a segment to read it.
    Read,
}

/// Answers, for each operation, whether it may go ahead: `Ok(n)` lets a write through for
/// its first `n` bytes only (then it fails as if the disk were full; other operations
/// ignore `n`), an error fails the operation with it.
pub(crate) type FaultHook = Arc<dyn Fn(Op, &Path) -> io::Result<usize> + Send + Sync>;

/// Runs `hook` (if any) for `op` on `path`: how many bytes of a write may go through.
pub(super) fn check(hook: Option<&FaultHook>, op: Op, path: &Path) -> io::Result<usize> {
    let all = match op {
        Op::Write { len } => len,
        _ => usize::MAX,
    };
    hook.map_or(Ok(all), |h| h(op, path).map(|n| n.min(all)))
}
