//! [`SinkId`]: the unique id of a sink instance, carried by every event it emits.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The unique id of one sink instance (or receiver), carried by every event as
/// [`events::SINK`](crate::events::SINK).
///
/// Ids look like `file-3` or `loki-7` (or `<name>-<n>` when a sink is given a name) and are
/// unique within the process, so parallel tests never confuse two sinks.
///
/// # Examples
///
/// ```
/// use sinkwatch::SinkId;
///
/// let a = SinkId::new("file");
/// let b = SinkId::new("file");
/// assert_ne!(a, b);
/// assert!(a.as_str().starts_with("file-"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SinkId(Arc<str>, u64);

impl SinkId {
    /// A fresh id: `prefix` followed by a process-wide counter.
    pub fn new(prefix: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        SinkId(Arc::from(format!("{prefix}-{n}")), n)
    }

    /// The id as a string, as it appears in events.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The process-wide number in the id (never 0): cheap to compare on hot paths.
    pub(crate) fn number(&self) -> u64 {
        self.1
    }
}

impl fmt::Display for SinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SinkId({})", self.0)
    }
}

impl AsRef<str> for SinkId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}
