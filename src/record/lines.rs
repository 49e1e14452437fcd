//! JSON lines for the file sink's worker: events captured by the layer are written in one
//! pass over their compact form, with what never changes for a callsite (the level, the
//! target, each field's quoted name, the source location; a span's name) escaped once and
//! remembered by the worker, keyed by the callsite's `&'static Metadata`. The cache lives
//! on the worker, so the calling thread never takes a lock or looks anything up for it.
//!
//! The output is byte for byte [`json::write_record`]'s (a test compares them); owned
//! records and events without metadata are written by it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use tracing::Metadata;

use super::compact::{
    self, EncodedFields, EncodedSpans, EventRef, Roles, BOOL, F64, I128, I64, LOG_TARGET, MESSAGE,
    STR, U128, U64,
};
use super::json::{self, write_json_bytes, write_json_str, write_u64, Piece, TimestampCache};
use super::{RecordRef, ValueRef};

/// Callsites remembered at most (plus one line's: an event and up to 254 spans); past it
/// the cache starts over before the next line. A program has a fixed set of callsites, so
/// this only bounds memory for a pathological one.
const MAX_CALLSITES: usize = 4096;

/// What the worker keeps from one line to the next: the timestamp of the last second
/// written and the pre-escaped parts of every callsite seen.
#[derive(Default)]
pub(crate) struct LineCache {
    timestamps: TimestampCache,
    index: HashMap<usize, usize, BuildHasherDefault<AddressHasher>>,
    callsites: Vec<Callsite>,
    /// The last callsite looked up: consecutive records mostly share one.
    last: Option<(usize, usize)>,
}

impl std::fmt::Debug for LineCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineCache")
            .field("callsites", &self.callsites.len())
            .finish_non_exhaustive()
    }
}

/// The parts of a line that depend only on the callsite, already escaped, kept for
/// copies of constant size (see [`Piece`]).
struct Callsite {
    /// An event's `","level":"INFO","target":"…","message":`; a span's
    /// `{"name":"…","fields":`.
    head: Piece<64>,
    /// An event's head for a line without a timestamp (a Loki entry's):
    /// `{"level":"INFO","target":"…","message":`.
    untimed_head: Piece<64>,
    /// An event's `","level":"INFO","target":` and `,"message":`, for a bridged `log`
    /// record, which writes its own target between them.
    around_target: (Box<[u8]>, Box<[u8]>),
    /// `,"name":` for each field, by index (the first field's comma becomes the brace).
    names: Vec<Piece<32>>,
    /// An event's `,"file":"…","line":N` (the parts its metadata has), written when the
    /// layer captured the location.
    location: Box<[u8]>,
    /// Which of an event's fields are its message and a bridged record's `log.*` fields.
    roles: Roles,
    /// The index of the message when it is the only field with a role (most callsites'),
    /// else `u8::MAX`.
    lone_message: u8,
}

/// The name of a field past the callsite's own, as the generic writer names it.
const NO_NAME: &[u8] = b",\"\":";

impl Callsite {
    fn new(meta: &'static Metadata<'static>) -> Self {
        let mut head = Vec::new();
        let mut around_target = (Box::default(), Box::default());
        if meta.is_span() {
            head.extend_from_slice(b"{\"name\":");
            write_json_str(&mut head, meta.name());
            head.extend_from_slice(b",\"fields\":");
        } else {
            head.extend_from_slice(b"\",\"level\":\"");
            head.extend_from_slice(meta.level().as_str().as_bytes());
            head.extend_from_slice(b"\",\"target\":");
            let before = head.len();
            write_json_str(&mut head, meta.target());
            let after = head.len();
            head.extend_from_slice(b",\"message\":");
            around_target = (head[..before].into(), head[after..].into());
        }
        let names = meta
            .fields()
            .iter()
            .map(|field| {
                let mut name = vec![b','];
                write_json_str(&mut name, field.name());
                name.push(b':');
                Piece::new(&name)
            })
            .collect();
        let mut location = Vec::new();
        if let Some(file) = meta.file() {
            location.extend_from_slice(b",\"file\":");
            write_json_str(&mut location, file);
        }
        if let Some(line) = meta.line() {
            location.extend_from_slice(b",\"line\":");
            write_u64(&mut location, u64::from(line));
        }
        // The timed head starts by closing the timestamp's string (`",`).
        let mut untimed_head = vec![b'{'];
        untimed_head.extend_from_slice(head.get(2..).unwrap_or_default());
        let roles = Roles::of(meta);
        Callsite {
            untimed_head: Piece::new(if meta.is_span() { &head } else { &untimed_head }),
            head: Piece::new(&head),
            around_target,
            names,
            location: location.into(),
            roles,
            lone_message: roles.lone_message().unwrap_or(u8::MAX),
        }
    }

    /// Appends `,"name":` for the field at `index`.
    #[inline]
    fn put_name(&self, out: &mut Vec<u8>, index: u8) {
        match self.names.get(usize::from(index)) {
            Some(name) => name.put(out),
            None => out.extend_from_slice(NO_NAME),
        }
    }
}

impl LineCache {
    /// The timestamp cache (the text format writes its own lines with it).
    pub(crate) fn timestamps(&mut self) -> &mut TimestampCache {
        &mut self.timestamps
    }

    /// Writes `record` as one JSON object and a newline, as [`json::write_record`] with a
    /// timestamp does.
    pub(crate) fn write_json_line(&mut self, out: &mut Vec<u8>, record: &RecordRef<'_>) {
        match record {
            RecordRef::Event(event) => match event.meta() {
                Some(meta) => {
                    self.write_event(out, event, meta, true);
                    out.extend_from_slice(b"}\n");
                    return;
                }
                None => json::write_record(out, record, Some(&mut self.timestamps), true),
            },
            RecordRef::Owned(_) => {
                json::write_record(out, record, Some(&mut self.timestamps), true);
            }
        }
        out.push(b'\n');
    }

    /// Writes `record` as one JSON object without a timestamp and without a newline, as
    /// [`json::write_record`] without a timestamp does (a Loki entry's line: the entry
    /// carries the time).
    pub(crate) fn write_untimed(&mut self, out: &mut Vec<u8>, record: &RecordRef<'_>) {
        if let RecordRef::Event(event) = record {
            if let Some(meta) = event.meta() {
                self.write_event(out, event, meta, false);
                out.push(b'}');
                return;
            }
        }
        json::write_record(out, record, None, false);
    }

    /// The index of `meta`'s cached parts, made on first use.
    #[inline]
    fn callsite(&mut self, meta: &'static Metadata<'static>) -> usize {
        let key = std::ptr::from_ref(meta) as usize;
        if let Some((last, at)) = self.last {
            if last == key {
                return at;
            }
        }
        self.lookup(key, meta)
    }

    /// [`callsite`](Self::callsite) past the last one used.
    fn lookup(&mut self, key: usize, meta: &'static Metadata<'static>) -> usize {
        let at = if let Some(&at) = self.index.get(&key) {
            at
        } else {
            self.callsites.push(Callsite::new(meta));
            self.index.insert(key, self.callsites.len() - 1);
            self.callsites.len() - 1
        };
        self.last = Some((key, at));
        at
    }

    /// Writes an event's JSON object but its closing brace, with its timestamp first if
    /// `timed`. Inlined into both writers, so each has its own copy with `timed` fixed
    /// (measured: as a call it cost the file worker 40 instructions per line).
    #[allow(clippy::inline_always)]
    #[inline(always)]
    fn write_event(
        &mut self,
        out: &mut Vec<u8>,
        event: &EventRef<'_>,
        meta: &'static Metadata<'static>,
        timed: bool,
    ) {
        if self.callsites.len() >= MAX_CALLSITES {
            // Between lines, so no index taken for this line is invalidated.
            self.callsites.clear();
            self.index.clear();
            self.last = None;
        }
        let at = self.callsite(meta);
        // Room for the whole line in one reservation: escapes aside, a value takes at
        // most three times its encoded bytes (`true` for one byte, 40 digits for 16), and
        // each name and the head are copied in pieces of constant size.
        out.reserve(160 + 32 * self.callsites[at].names.len() + 3 * event.len());
        if timed {
            out.extend_from_slice(b"{\"timestamp\":\"");
            self.timestamps.write_nanos(out, event.nanos());
        }
        let site = &self.callsites[at];
        let mut fields = event.raw_fields_with(Roles::NONE);
        let log_target = if meta.target() == "log" {
            event
                .raw_fields_with(site.roles)
                .find(|f| f.kind == LOG_TARGET)
                .filter(|f| std::str::from_utf8(f.value).is_ok())
        } else {
            None
        };
        match log_target {
            Some(target) => {
                if timed {
                    out.extend_from_slice(&site.around_target.0);
                } else {
                    out.push(b'{');
                    out.extend_from_slice(site.around_target.0.get(2..).unwrap_or_default());
                }
                write_json_bytes(out, target.value);
                out.extend_from_slice(&site.around_target.1);
            }
            None if timed => site.head.put(out),
            None => site.untimed_head.put(out),
        }
        // `tracing`'s macros record the message first, and most callsites have no other
        // field with a role: then one pass writes everything, with no role to look for.
        let mut peek = fields.clone();
        match peek.next() {
            Some(first) if first.index == site.lone_message && first.kind == STR => {
                write_json_bytes(out, first.value);
                fields = peek;
            }
            _ => write_message(out, &mut fields, site.roles),
        }
        out.extend_from_slice(b",\"fields\":");
        write_fields(out, site, &mut fields);
        // The file line (timed) carries the trace ids; a Loki entry's line (untimed) does
        // not: they are its structured metadata, and a copy in the line would meet them
        // again as `trace_id_extracted` in `| json`.
        if let Some(ids) = event.trace_ids().filter(|_| timed) {
            json::write_trace_ids(out, ids);
        }
        let mut spans = EncodedSpans::after(fields.rest(), event.span_metas()).peekable();
        if spans.peek().is_some() {
            out.extend_from_slice(b",\"spans\":[");
            for (i, (span_meta, mut span_fields)) in spans.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let span_at = self.callsite(span_meta);
                let span = &self.callsites[span_at];
                span.head.put(out);
                write_fields(out, span, &mut span_fields);
                out.push(b'}');
            }
            out.push(b']');
        }
        if event.flags() & compact::FLAG_LOCATION != 0 {
            out.extend_from_slice(&self.callsites[at].location);
        }
    }
}

/// Writes the message of an event whose fields have more roles than a leading message (a
/// bridged `log` record's, or a message recorded late), and gives the fields still to be
/// written their roles.
#[inline(never)]
fn write_message(out: &mut Vec<u8>, fields: &mut EncodedFields<'_>, roles: Roles) {
    fields.set_roles(roles);
    let mut peek = fields.clone();
    match peek.next() {
        Some(first) if first.kind == MESSAGE => {
            write_json_bytes(out, first.value);
            *fields = peek;
            fields.set_roles(roles.without(first.index));
        }
        _ => {
            let message = fields.clone().find(|f| f.kind == MESSAGE);
            write_json_bytes(out, message.map_or(&[], |f| f.value));
        }
    }
}

/// Writes the value fields of a list as one JSON object, reading the list to its end; the
/// message and a bridged record's target are not fields.
fn write_fields(out: &mut Vec<u8>, site: &Callsite, fields: &mut EncodedFields<'_>) {
    let mut open = false;
    for f in fields.by_ref() {
        if f.kind > STR {
            continue;
        }
        let at = out.len();
        site.put_name(out, f.index);
        if !open {
            // The first name's comma opens the object.
            out[at] = b'{';
            open = true;
        }
        // The encoding gives each kind its length, so the conversions cannot fail.
        let word = || <[u8; 8]>::try_from(f.value).unwrap_or_default();
        let wide = || <[u8; 16]>::try_from(f.value).unwrap_or_default();
        match f.kind {
            BOOL if f.value.first().is_some_and(|&b| b != 0) => out.extend_from_slice(b"true"),
            BOOL => out.extend_from_slice(b"false"),
            I64 => json::write_value(out, ValueRef::I64(i64::from_le_bytes(word()))),
            U64 => write_u64(out, u64::from_le_bytes(word())),
            F64 => json::write_float(out, f64::from_le_bytes(word())),
            I128 => json::write_value(out, ValueRef::I128(i128::from_le_bytes(wide()))),
            U128 => json::write_value(out, ValueRef::U128(u128::from_le_bytes(wide()))),
            _ => write_json_bytes(out, f.value),
        }
    }
    out.extend_from_slice(if open { b"}" } else { b"{}" });
}

/// Hashes a callsite's address: already unique, so one multiplication spreads it.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    use tracing::span::{Attributes, Id, Record as SpanValues};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt as _};
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use super::*;
    use crate::record::compact::{begin_event, nanos_of, push_span, FieldWriter, FLAG_LOCATION};

    /// Captures each event as the layer does and renders it with both writers (with and
    /// without a timestamp), the cached
    /// one through a cache shared by every event (as on the worker).
    #[derive(Clone, Default)]
    struct Both {
        cache: Arc<Mutex<LineCache>>,
        lines: Arc<Mutex<Vec<(String, String)>>>,
        location: bool,
        /// End each event with these trace ids, as the layer does in a span.
        trace: Option<[u8; 24]>,
    }

    struct SpanBytes(Vec<u8>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Both {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let mut bytes = Vec::new();
            let mut w = FieldWriter::span(&mut bytes);
            attrs.record(&mut w);
            w.finish();
            ctx.span(id)
                .unwrap()
                .extensions_mut()
                .insert(SpanBytes(bytes));
        }

        fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
            let span = ctx.span(id).unwrap();
            let mut ext = span.extensions_mut();
            let bytes = &mut ext.get_mut::<SpanBytes>().unwrap().0;
            let mut w = FieldWriter::resume_span(bytes);
            values.record(&mut w);
            w.finish();
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5);
            let mut bytes = Vec::new();
            let flags = if self.location { FLAG_LOCATION } else { 0 };
            let mut w = begin_event(&mut bytes, 0, nanos_of(t), flags);
            event.record(&mut w);
            w.finish();
            let mut metas = vec![event.metadata()];
            let count_at = bytes.len();
            bytes.push(0);
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    push_span(&mut bytes, &span.extensions().get::<SpanBytes>().unwrap().0);
                    metas.push(span.metadata());
                    bytes[count_at] += 1;
                }
            }
            if let Some(ids) = self.trace {
                crate::record::compact::push_trace(&mut bytes, 0, &ids);
            }
            let record = RecordRef::Event(EventRef::new(&bytes, &metas));
            let mut generic = Vec::new();
            json::write_record(
                &mut generic,
                &record,
                Some(&mut TimestampCache::default()),
                true,
            );
            let mut cached = Vec::new();
            self.cache
                .lock()
                .unwrap()
                .write_json_line(&mut cached, &record);
            assert_eq!(cached.pop(), Some(b'\n'));
            // The untimed form (a Loki entry's line) through the same cache.
            let mut untimed_generic = Vec::new();
            json::write_record(&mut untimed_generic, &record, None, false);
            let mut untimed = Vec::new();
            self.cache
                .lock()
                .unwrap()
                .write_untimed(&mut untimed, &record);
            let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
            let mut lines = self.lines.lock().unwrap();
            lines.push((text(generic), text(cached)));
            lines.push((text(untimed_generic), text(untimed)));
        }
    }

    fn both(location: bool, emit: impl FnOnce()) -> Vec<(String, String)> {
        let layer = Both {
            location,
            ..Both::default()
        };
        let lines = layer.lines.clone();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        let lines = lines.lock().unwrap().clone();
        assert!(!lines.is_empty());
        lines
    }

    fn assert_same(lines: &[(String, String)]) {
        for (generic, cached) in lines {
            assert_eq!(cached, generic);
            serde_json::from_str::<serde_json::Value>(cached).expect("valid JSON");
        }
    }

    #[test]
    fn cached_lines_match_the_generic_writer_for_every_kind_of_value() {
        assert_same(&both(false, || {
            for i in 0..3_u64 {
                tracing::info!(
                    n = i,
                    neg = -4_i64,
                    big = u128::MAX,
                    small = i128::MIN,
                    x = 0.75_f64,
                    y = 1e21_f64,
                    z = f64::NAN,
                    ok = false,
                    s = "tab\tquote\"é😀",
                    empty = "",
                    dbg = ?[1, 2],
                    disp = %"d",
                    "msg {i} \n"
                );
            }
            tracing::warn!("only a message");
            tracing::error!(only = 1_u64);
            tracing::info!(target: "weird\"target\n", "t");
        }));
    }

    #[test]
    fn cached_lines_match_with_spans_and_location() {
        assert_same(&both(true, || {
            let outer = tracing::info_span!("outer", id = 7_u64, s = "a\"b");
            let _o = outer.enter();
            for i in 0..3 {
                let inner = tracing::debug_span!("inner", n = tracing::field::Empty);
                inner.record("n", i);
                let _i = inner.enter();
                tracing::info!(k = "v", "inside");
            }
            let empty = tracing::trace_span!("empty");
            let _e = empty.enter();
            tracing::info!("deep");
        }));
    }

    #[test]
    fn cached_lines_match_with_trace_ids() {
        let mut ids = [0xab_u8; 24];
        ids[16..].copy_from_slice(&[0, 1, 2, 3, 4, 5, 6, 0xff]);
        let layer = Both {
            trace: Some(ids),
            ..Both::default()
        };
        let lines = layer.lines.clone();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!("s", a = 1_u64);
            let _s = span.enter();
            tracing::info!(b = 2_u64, "in a span");
            tracing::info!("no fields");
        });
        let lines = lines.lock().unwrap().clone();
        assert_same(&lines);
        assert!(lines[0].1.contains(
            r#""fields":{"b":2},"trace_id":"abababababababababababababababab","span_id":"00010203040506ff","spans":"#
        ), "{}", lines[0].1);
        // Each event gives a file line (timed) and a Loki entry's line (untimed): only the
        // file line carries the ids.
        assert!(!lines[1].1.contains("trace_id"), "{}", lines[1].1);
        assert!(
            lines[2].1.contains(r#""fields":{},"trace_id":"#),
            "{}",
            lines[2].1
        );
        assert!(!lines[3].1.contains("trace_id"), "{}", lines[3].1);
    }

    #[test]
    fn a_message_recorded_after_the_fields_still_comes_first() {
        // A hand-written callsite can list `message` anywhere; `tracing`'s macros put it first.
        assert_same(&both(false, || {
            tracing::info!(a = 1_u64, message = "late", b = 2_u64);
            tracing::info!(a = 1_u64, message = "twice", message = "again");
        }));
    }

    /// The caller encodes every field by its value's kind; the readers give the message
    /// and a bridged record's `log.*` fields their roles by name.
    #[test]
    fn fields_get_their_roles_by_name_on_the_reader() {
        let lines = both(false, || {
            tracing::info!(a = 1_u64, message = "late", b = 2_u64);
            // Only text is a message: a number named so stays a field.
            tracing::info!(message = 5_u64);
            tracing::info!(a = 1_u64, message = "twice", message = "again");
            // `log.*` names are bookkeeping only in a bridged record.
            tracing::info!(log.file = "mine.rs", log.line = 3_u64, "own log fields");
            let span = tracing::info_span!("s", message = "a span's field");
            let _s = span.enter();
            tracing::info!("in the span");
        });
        assert_same(&lines);
        let timed: Vec<&str> = lines.iter().step_by(2).map(|(g, _)| g.as_str()).collect();
        let tail = |line: &str| line[line.find(r#""message""#).unwrap()..].to_string();
        assert_eq!(
            tail(timed[0]),
            r#""message":"late","fields":{"a":1,"b":2}}"#
        );
        assert_eq!(tail(timed[1]), r#""message":"","fields":{"message":5}}"#);
        assert_eq!(tail(timed[2]), r#""message":"twice","fields":{"a":1}}"#);
        assert_eq!(
            tail(timed[3]),
            r#""message":"own log fields","fields":{"log.file":"mine.rs","log.line":3}}"#
        );
        assert!(
            timed[4].contains(r#""spans":[{"name":"s","fields":{"message":"a span's field"}}]"#),
            "{}",
            timed[4]
        );
    }

    #[test]
    fn a_bridged_log_record_writes_its_own_target() {
        use tracing_log::log;
        let lines = both(false, || {
            let record = log::Record::builder()
                .args(format_args!("from log"))
                .level(log::Level::Warn)
                .target("legacy::module")
                .build();
            tracing_log::format_trace(&record).unwrap();
        });
        assert_same(&lines);
        assert!(lines[0].1.contains(r#""target":"legacy::module""#));
        // Its bookkeeping (`log.module_path`, `log.file`, `log.line`) is not a field.
        assert!(
            lines[0].1.ends_with(r#""message":"from log","fields":{}}"#),
            "{}",
            lines[0].1
        );
    }

    #[test]
    fn the_callsite_cache_starts_over_when_full_and_stays_right() {
        let layer = Both::default();
        let (cache, lines) = (layer.cache.clone(), layer.lines.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!("s", a = 1_u64);
            let meta = span.metadata().unwrap();
            cache
                .lock()
                .unwrap()
                .callsites
                .extend((0..MAX_CALLSITES).map(|_| Callsite::new(meta)));
            let _s = span.enter();
            tracing::info!(b = 2_u64, "after");
            tracing::info!(b = 3_u64, "again");
        });
        assert_same(&lines.lock().unwrap());
        // Started over: the span and the two events' callsites only.
        assert_eq!(cache.lock().unwrap().callsites.len(), 3);
    }
}
