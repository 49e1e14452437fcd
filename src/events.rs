//! The event schema: every structured event sinkwatch emits.
//!
//! All events share one target, [`TARGET`], and carry two fields besides their own:
//! [`EVENT`] (the event's name, so it shows in formatted output as `event="push_complete"`)
//! and [`SINK`] (the unique id of the sink instance that emitted it, see [`SinkId`](crate::SinkId)).
//! The name is also the event's [`Metadata::name()`](tracing::Metadata::name).
//!
//! Each event has a module here with its `NAME`, `LEVEL`, one constant per field and `FIELDS`
//! (name and type of each field, in order). Changing any of them is a breaking change.
//! `docs/events.md` is the catalogue, kept in agreement with this module by a test.
//!
//! This module is the only place the crate's schema events are emitted.
//!
//! # Examples
//!
//! Selecting sinkwatch's push events in a subscriber:
//!
//! ```
//! use sinkwatch::events;
//!
//! fn is_push_complete(meta: &tracing::Metadata<'_>) -> bool {
//!     meta.target() == events::TARGET && meta.name() == events::push_complete::NAME
//! }
//! # let _ = is_push_complete;
//! ```

use std::time::Duration;

/// The target of every event sinkwatch emits.
pub const TARGET: &str = "sinkwatch";
/// The field that repeats the event's name, so it shows in text and JSON output.
pub const EVENT: &str = "event";
/// The field that carries the emitting sink's unique id.
pub const SINK: &str = "sink";

/// A field in the schema: its name and type (`"u64"` or `"string"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// The field's type as the catalogue writes it.
    pub ty: &'static str,
}

/// One event's schema, as listed by [`ALL`].
#[derive(Debug, Clone, Copy)]
pub struct EventSchema {
    /// The event's name.
    pub name: &'static str,
    /// The event's level.
    pub level: tracing::Level,
    /// The event's own fields (not counting [`EVENT`] and [`SINK`]).
    pub fields: &'static [Field],
}

/// Reasons carried by [`records_dropped`]'s `reason` field.
pub mod reason {
    /// The sink's queue or buffer was full (drop-newest policy).
    pub const QUEUE_FULL: &str = "queue_full";
    /// The buffer was full and the oldest records made room (drop-oldest policy).
    pub const BUFFER_FULL_OLDEST: &str = "buffer_full_oldest";
    /// Writing to the file failed.
    pub const WRITE_FAILED: &str = "write_failed";
    /// A line was over the size limit and the sink is configured to drop such lines.
    pub const LINE_TOO_LONG: &str = "line_too_long";
    /// Loki answered 400 (or Loki's partial success): the entries were rejected, not retried.
    pub const REJECTED: &str = "rejected";
    /// Loki answered a status that is not retried (401, 403, 413, other 4xx).
    pub const NOT_RETRYABLE: &str = "not_retryable";
    /// Every retry failed.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// The shutdown deadline passed before these records were delivered.
    pub const SHUTDOWN: &str = "shutdown";
    /// Too many distinct label sets: the record did not fit the stream guard.
    pub const TOO_MANY_STREAMS: &str = "too_many_streams";
    /// The queue stayed full for longer than the sink's backpressure bound (a stalled disk
    /// or an outage): the writer stopped waiting, and the sink shed load until its worker
    /// caught up.
    pub const STALLED: &str = "stalled";
    /// The sink's worker failed (a panic, for example in a user-supplied clock): what it
    /// held and what was queued is lost.
    pub const WORKER_FAILED: &str = "worker_failed";
    /// The Loki sink's disk buffer held the record longer than the sink's `max_entry_age`
    /// (Loki would reject it as too old, `reject_old_samples_max_age`): dropped at send
    /// time instead of being retried forever.
    pub const TOO_OLD: &str = "too_old";
    /// The disk buffer's directory was removed under the sink: what it held and had not
    /// sent is lost.
    pub const BUFFER_LOST: &str = "buffer_lost";
    /// Records in the disk buffer could not be read back (a bad checksum, a segment
    /// damaged or removed under the sink).
    pub const BUFFER_CORRUPT: &str = "buffer_corrupt";
}

/// Rotation reasons carried by [`rotation_complete`]'s `reason` field.
pub mod rotation_reason {
    /// The active file reached the size limit.
    pub const SIZE: &str = "size";
    /// A time boundary passed.
    pub const TIME: &str = "time";
    /// `rotate()` was called.
    pub const MANUAL: &str = "manual";
}

/// Declares events: for each, a public module with its name, level and field constants, and
/// a crate-internal emitter with one typed argument per field. `@list NAME;` first names the
/// constant listing them (`ALL` by default). The receiver's event in `testing` is declared
/// with it too, so every event of the crate has the same shape.
macro_rules! schema {
    ($( $(#[$doc:meta])* $event:ident : $level:ident { $($fields:tt)* } )*) => {
        $crate::events::schema! {
            @list
            /// Every event in the schema.
            ALL;
            $( $(#[$doc])* $event : $level { $($fields)* } )*
        }
    };
    (@list $(#[$ldoc:meta])* $all:ident; $(
        $(#[$doc:meta])*
        $event:ident : $level:ident {
            $( $(#[$fdoc:meta])* $konst:ident = $field:ident : $fty:tt ),* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            pub mod $event {
                /// The event's name (also its `Metadata::name()`).
                pub const NAME: &str = stringify!($event);
                /// The event's level.
                pub const LEVEL: tracing::Level = tracing::Level::$level;
                $( $(#[$fdoc])* pub const $konst: &str = stringify!($field); )*
                /// The event's own fields with their types, in order.
                pub const FIELDS: &[$crate::events::Field] = &[
                    $( $crate::events::Field {
                        name: stringify!($field),
                        ty: $crate::events::schema!(@ty $fty),
                    } ),*
                ];
            }

            #[allow(clippy::too_many_arguments, dead_code)]
            pub(crate) fn $event(
                sink: &$crate::SinkId
                $(, $field: $crate::events::schema!(@arg $fty))*
            ) {
                // Before the macro, whose filter check may skip what follows it.
                #[cfg(feature = "metrics")]
                crate::metrics::on::$event(sink, ($($field,)*));
                tracing::event!(
                    name: $event::NAME,
                    target: $crate::events::TARGET,
                    tracing::Level::$level,
                    event = $event::NAME,
                    sink = sink.as_str()
                    $(, $field = $field)*
                );
            }
        )*

        $(#[$ldoc])*
        pub const $all: &[$crate::events::EventSchema] = &[
            $( $crate::events::EventSchema {
                name: $event::NAME,
                level: $event::LEVEL,
                fields: $event::FIELDS,
            } ),*
        ];

        /// Emits every event once through its real emitter, with placeholder values.
        #[cfg(all(test, feature = "testing"))]
        pub(crate) fn emit_every_event(sink: &$crate::SinkId) {
            $( $event(sink $(, $crate::events::schema!(@sample $fty $field))*); )*
        }
    };
    (@sample u64 $field:ident) => { 7 };
    (@sample str $field:ident) => { "x" };
    (@ty u64) => { "u64" };
    (@ty str) => { "string" };
    (@arg u64) => { u64 };
    (@arg str) => { &str };
}
pub(crate) use schema;

schema! {
    /// A push request was answered with 2xx: its entries are delivered.
    push_complete: INFO {
        /// Entries in the request.
        ENTRIES = entries: u64,
        /// Streams in the request.
        STREAMS = streams: u64,
        /// Bytes of the request body on the wire (after compression).
        BYTES = bytes: u64,
        /// The HTTP status.
        STATUS = status: u64,
        /// Which attempt succeeded (1 for the first).
        ATTEMPT = attempt: u64,
        /// Time from sending the request to its response, in microseconds.
        DURATION_US = duration_us: u64,
    }

    /// A push attempt failed with a retryable outcome; the sink will try again after a delay.
    push_retry: WARN {
        /// Entries in the request.
        ENTRIES = entries: u64,
        /// The attempt that failed (1 for the first).
        ATTEMPT = attempt: u64,
        /// The delay before the next attempt, in milliseconds.
        DELAY_MS = delay_ms: u64,
        /// The HTTP status, or 0 for a transport error (refused, reset, timeout).
        STATUS = status: u64,
        /// The error: Loki's response body or the transport error.
        ERROR = error: str,
    }

    /// A push request was given up: its entries are not delivered (also reported by
    /// `records_dropped`).
    push_failed: ERROR {
        /// Entries in the request.
        ENTRIES = entries: u64,
        /// The last HTTP status, or 0 for a transport error.
        STATUS = status: u64,
        /// Loki's message or the transport error.
        ERROR = error: str,
        /// How many attempts were made.
        ATTEMPTS = attempts: u64,
    }

    /// The active file was rotated: closed and renamed, and a new active file opened.
    rotation_complete: INFO {
        /// Why: `size`, `time` or `manual`.
        REASON = reason: str,
        /// The active file's path.
        FROM = from: str,
        /// The rotated file's new path.
        TO = to: str,
        /// Bytes in the rotated file.
        BYTES = bytes: u64,
    }

    /// A rotation failed (the active file could not be renamed or reopened).
    rotation_failed: ERROR {
        /// Why the rotation was attempted: `size`, `time` or `manual`.
        REASON = reason: str,
        /// The active file's path.
        FROM = from: str,
        /// The OS error.
        ERROR = error: str,
    }

    /// Retention removed rotated files.
    retention_pruned: INFO {
        /// Files removed.
        FILES = files: u64,
        /// Bytes removed.
        BYTES = bytes: u64,
    }

    /// Retention could not remove a rotated file, or could not list the directory; the
    /// file stays and the next pass tries again.
    retention_failed: ERROR {
        /// The file (or directory) concerned.
        PATH = path: str,
        /// The OS error.
        ERROR = error: str,
    }

    /// A rotated file was compressed: the archive is complete and the plain file removed.
    compression_complete: INFO {
        /// The plain file that was compressed (now removed).
        SOURCE = source: str,
        /// The archive's path.
        PATH = path: str,
        /// Bytes before compression.
        BYTES_IN = bytes_in: u64,
        /// Bytes after compression.
        BYTES_OUT = bytes_out: u64,
        /// Time taken, in microseconds.
        DURATION_US = duration_us: u64,
    }

    /// Compressing a rotated file failed, or was stopped by the shutdown deadline; the
    /// plain file is kept (and compressed at the next start-up).
    compression_failed: ERROR {
        /// The plain file that was to be compressed.
        SOURCE = source: str,
        /// The OS error.
        ERROR = error: str,
    }

    /// Writing to a file failed; the records are reported by `records_dropped`.
    write_failed: ERROR {
        /// The file being written.
        PATH = path: str,
        /// The OS error.
        ERROR = error: str,
        /// Records lost by this failure.
        RECORDS = records: u64,
        /// Bytes lost by this failure.
        BYTES = bytes: u64,
    }

    /// Asking the OS to put written data on the device (`fsync`, per the sink's policy)
    /// failed: the records were written to the OS but may not survive a power loss.
    sync_failed: ERROR {
        /// The file being synced.
        PATH = path: str,
        /// The OS error.
        ERROR = error: str,
    }

    /// The active file was missing or replaced (deleted or moved away) and has been reopened.
    file_reopened: WARN {
        /// The active file's path.
        PATH = path: str,
    }

    /// A `flush()` completed: every record accepted before it is delivered or reported dropped.
    flush_complete: DEBUG {
        /// Records accepted by the sink up to the flush.
        RECORDS = records: u64,
        /// Time the flush took, in microseconds.
        DURATION_US = duration_us: u64,
    }

    /// Records were dropped; `reason` says why.
    records_dropped: WARN {
        /// How many records.
        COUNT = count: u64,
        /// Why (see [`reason`](crate::events::reason)).
        REASON = reason: str,
    }

    /// Lines over the sink's size limit were truncated (and delivered with a marker), as
    /// configured, rather than dropped. Reported in aggregate, once per batch.
    lines_truncated: WARN {
        /// How many lines.
        COUNT = count: u64,
        /// Bytes cut off, in all.
        BYTES = bytes: u64,
    }

    /// The sink's worker failed (it panicked); queued records are reported dropped (reason
    /// `worker_failed`), every pending and later `flush()` resolves with an error, later
    /// writes are refused, and `sink_closed` follows.
    worker_failed: ERROR {
        /// The panic message.
        ERROR = error: str,
    }

    /// The queue stayed full for longer than the sink's backpressure bound: writers stopped
    /// waiting and the sink shed load until its worker caught up. Emitted when the worker has
    /// room again; the records shed are reported by `records_dropped` (reason `stalled`).
    queue_stalled: WARN {
        /// Records shed while the queue was stalled.
        SHED = shed: u64,
    }

    /// Writes were refused because the sink was already closed (for example events logged
    /// through `SinkLayer` by threads still running after `ShutdownGuard`, or a `write`
    /// after `shutdown`). Refused records were never accepted, so they are not in
    /// `sink_closed`'s totals; `SinkStats::refused` counts them, and the counts of these
    /// events add up to it: at most one report a second per sink, and a trailing burst is
    /// reported once its second has passed.
    writes_refused: WARN {
        /// Writes refused since the last report.
        COUNT = count: u64,
    }

    /// A blocking shutdown (a dropped `ShutdownGuard`, `shutdown_blocking`, or the drop of
    /// a sink's last handle) ran on a thread that drives a current-thread tokio runtime and
    /// saw the sink make no progress: whatever that runtime serves (a test's mock server, a
    /// Loki on the same runtime) cannot run while the thread blocks. The call stopped
    /// waiting instead of sitting out the deadline; the sink goes on until its deadline and
    /// reports what it could not deliver. Use the async form (`guard.shutdown().await`,
    /// `sink.shutdown(timeout).await`) there.
    shutdown_stalled: WARN {
        /// Records still pending when the wait stopped.
        PENDING = pending: u64,
        /// How long the call waited, in milliseconds.
        WAITED_MS = waited_ms: u64,
    }

    /// At start-up the active file ended in a torn line (the process was killed inside a
    /// write): the partial line was cut off so the next record starts on a line of its own.
    /// Also emitted by the Loki sink's disk buffer for each file it cut back or removed at
    /// start-up (a torn record at a segment's end, a segment torn at its creation).
    tail_repaired: WARN {
        /// The active file's (or the disk buffer file's) path.
        PATH = path: str,
        /// Bytes cut off the end.
        BYTES_CUT = bytes_cut: u64,
    }

    /// The Loki sink's disk buffer found, when the sink was built, records an earlier
    /// process left unsent: they are pushed first, in order, before new records.
    buffer_replayed: INFO {
        /// Records taken over (also `SinkStats::replayed`).
        RECORDS = records: u64,
        /// Their bytes in the buffer.
        BYTES = bytes: u64,
        /// The age of the oldest of them (by its timestamp), in milliseconds.
        OLDEST_AGE_MS = oldest_age_ms: u64,
    }
    /// Writing to the Loki sink's disk buffer failed (disk full, permissions, directory
    /// removed): the sink pushes from memory until the buffer works again
    /// (`buffer_recovered`), trying every few seconds. Records lost are reported by
    /// `records_dropped` (`buffer_lost`, `buffer_corrupt`).
    buffer_failed: ERROR {
        /// The buffer's directory.
        PATH = path: str,
        /// The OS error.
        ERROR = error: str,
    }
    /// The Loki sink's disk buffer works again after `buffer_failed`: new records go to
    /// disk again.
    buffer_recovered: INFO {
        /// The buffer's directory.
        PATH = path: str,
    }
    /// Credentials (basic auth, a bearer token, or a secret-looking header) are configured
    /// for a plain `http://` URL to a host that is not loopback: they cross the network in
    /// clear text. Emitted once, when the sink is built.
    insecure_credentials: WARN {
        /// The host the credentials are sent to.
        HOST = host: str,
    }

    /// The sink shut down. Its totals are final.
    sink_closed: INFO {
        /// Records accepted over the sink's life.
        ACCEPTED = accepted: u64,
        /// Records delivered (written or pushed).
        DELIVERED = delivered: u64,
        /// Records reported dropped over the sink's life (including at shutdown).
        DROPPED = dropped: u64,
        /// Records an earlier process left in the disk buffer, taken over at start-up (0
        /// without a disk buffer).
        REPLAYED = replayed: u64,
        /// Records left in the disk buffer for the next process (0 without one):
        /// `accepted + replayed == delivered + dropped + persisted`.
        PERSISTED = persisted: u64,
    }
}

/// A duration in whole microseconds, saturating, for `*_us` fields.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(all(test, feature = "testing"))]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{self, Matcher};
    use crate::SinkId;

    /// Emits every event of `list` through `emit` and checks each arrives with exactly its
    /// schema: name, level, fields in order, and each field's type.
    pub(crate) async fn assert_emitters_match(list: &[EventSchema], emit: fn(&SinkId)) {
        testing::init();
        let sink = SinkId::new("schema");
        let events = testing::watch();
        emit(&sink);
        for schema in list {
            let ev = events
                .wait(Matcher::sink_event(&sink, schema.name))
                .await
                .unwrap();
            assert_eq!(ev.level(), schema.level, "{}", schema.name);
            assert_eq!(ev.str(EVENT), Some(schema.name));
            let names: Vec<&str> = ev.fields().iter().map(|(n, _)| *n).collect();
            let mut expected = vec![EVENT, SINK];
            expected.extend(schema.fields.iter().map(|f| f.name));
            assert_eq!(names, expected, "{}", schema.name);
            for field in schema.fields {
                let value = ev.field(field.name).unwrap();
                match field.ty {
                    "u64" => assert_eq!(value.as_u64(), Some(7), "{}.{}", schema.name, field.name),
                    _ => assert!(
                        matches!(value, testing::FieldValue::Str(_)),
                        "{}.{} is recorded as a string",
                        schema.name,
                        field.name
                    ),
                }
            }
        }
    }

    #[tokio::test]
    async fn every_emitter_emits_exactly_its_schema() {
        assert_emitters_match(ALL, emit_every_event).await;
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn the_name_shows_in_text_and_json_output() {
        // A global subscriber with interest in every callsite first, so the scoped
        // subscribers below are not defeated by the process-wide interest cache.
        testing::init();
        let sink = SinkId::new("fmt");
        let text = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(text.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || push_complete(&sink, 1, 1, 10, 204, 1, 5));
        let text = String::from_utf8(text.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("event=\"push_complete\""), "{text}");
        assert!(text.contains(&format!("sink=\"{sink}\"")), "{text}");

        let json = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(json.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || push_complete(&sink, 1, 1, 10, 204, 1, 5));
        let line = String::from_utf8(json.0.lock().unwrap().clone()).unwrap();
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["fields"]["event"], "push_complete", "{line}");
        assert_eq!(value["target"], TARGET);
        assert_eq!(value["fields"]["bytes"], 10);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
