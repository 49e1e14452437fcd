//! Without feature `metrics`: the same calls, doing nothing (the compiler removes them), so
//! the call sites need no `cfg`. The events' hooks (`on`) are not twinned: their one call
//! site, in the `events.rs` macro, carries the `cfg`.

use std::time::Duration;

use super::Seen;
use crate::SinkId;

pub(crate) struct SinkMetrics;

#[allow(clippy::unused_self, reason = "the same methods as with the feature")]
impl SinkMetrics {
    #[inline]
    pub(crate) fn new(_: &SinkId, _: usize, _: usize) -> Self {
        SinkMetrics
    }

    #[inline]
    pub(crate) fn publish(&self, _: Seen) {}

    #[inline]
    pub(crate) fn delivered(&self, _: u64) {}

    #[inline]
    pub(crate) fn refused(&self) {}
}

#[inline]
pub(crate) fn bytes_written(_: &SinkId, _: usize) {}

#[inline]
pub(crate) fn push_attempt(_: &SinkId, _: u16, _: Duration) {}

#[inline]
pub(crate) fn buffer_bytes(_: &SinkId, _: u64) {}

#[inline]
pub(crate) fn buffer_max_bytes(_: &SinkId, _: u64) {}
