//! The events' side: one function per schema event, named after it, called by the event's
//! emitter in `events.rs` with its fields (as a tuple, in schema order) *before*
//! `tracing::event!`. The macro's filter check may skip everything after it, so what is
//! recorded here does not depend on the subscriber.
//!
//! Every event has a function, so a new event does not compile until someone has decided
//! whether it moves a metric (most do not: add its name to `unmeasured!`).

use super::record::count;
use super::schema;
use crate::SinkId;

/// Events that move no metric: their counts are in `SinkStats`, in another metric, or are
/// failures that the drops they cause already count.
macro_rules! unmeasured {
    ($($event:ident),* $(,)?) => {
        $(
            #[inline]
            pub(crate) fn $event<T>(_: &SinkId, _: T) {}
        )*
    };
}

unmeasured!(
    push_failed,
    rotation_failed,
    retention_failed,
    compression_failed,
    write_failed,
    sync_failed,
    file_reopened,
    flush_complete,
    lines_truncated,
    worker_failed,
    queue_stalled,
    writes_refused,
    shutdown_stalled,
    tail_repaired,
    buffer_failed,
    buffer_recovered,
    insecure_credentials,
    sink_closed,
    receiver_request,
);

/// `sinkwatch_records_dropped_total{reason}`: every drop is reported through this event.
pub(crate) fn records_dropped(sink: &SinkId, (n, reason): (u64, &str)) {
    if n > 0 {
        count(
            schema::RECORDS_DROPPED,
            sink,
            Some((schema::REASON, reason)),
            n,
        );
    }
}

/// `sinkwatch_rotations_total{reason}`.
pub(crate) fn rotation_complete(sink: &SinkId, (reason, ..): (&str, &str, &str, u64)) {
    count(schema::ROTATIONS, sink, Some((schema::REASON, reason)), 1);
}

/// `sinkwatch_compressions_total`.
pub(crate) fn compression_complete<T>(sink: &SinkId, _: T) {
    count(schema::COMPRESSIONS, sink, None, 1);
}

/// `sinkwatch_retention_removed_total`: files.
pub(crate) fn retention_pruned(sink: &SinkId, (files, _bytes): (u64, u64)) {
    if files > 0 {
        count(schema::RETENTION_REMOVED, sink, None, files);
    }
}

/// `sinkwatch_push_bytes_total`: the request's wire bytes, once it was accepted.
pub(crate) fn push_complete(
    sink: &SinkId,
    (_entries, _streams, bytes, ..): (u64, u64, u64, u64, u64, u64),
) {
    count(schema::PUSH_BYTES, sink, None, bytes);
}

/// `sinkwatch_push_retries_total`.
pub(crate) fn push_retry<T>(sink: &SinkId, _: T) {
    count(schema::PUSH_RETRIES, sink, None, 1);
}

/// `sinkwatch_buffer_replayed_records_total`, `sinkwatch_buffer_replayed_bytes_total`.
pub(crate) fn buffer_replayed(sink: &SinkId, (records, bytes, _age): (u64, u64, u64)) {
    super::record::buffer_replayed(sink, records, bytes);
}
