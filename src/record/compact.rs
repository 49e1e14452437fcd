//! The compact form in which the layer hands an event to the sinks.
//!
//! Capturing an event must cost the caller little: no allocation per field, no formatting
//! beyond what `tracing` itself asks for (the message and `Debug`-only values). The layer
//! encodes the event into a byte string in a reused thread-local buffer, and the queue
//! copies those bytes in; names, the target, the level and the source location are not
//! copied at all but read, on the worker, from the event's `&'static Metadata` (and each
//! span's), which travel beside the bytes. A queued event takes about as many bytes as
//! its values, well under the length of the JSON line it becomes.
//!
//! Layout of an event (all integers little-endian):
//!
//! ```text
//! u64 time (ns since the epoch) | u8 flags | fields | u8 spans | per span: u32 len, fields
//!   | with FLAG_TRACE: 16 bytes trace id, 8 bytes span id (the last 24 bytes)
//! fields = u16 count, then per field: u8 kind, u8 index into the callsite's fields, value
//! ```
//!
//! Values: `bool` one byte, numbers 8 or 16 bytes, strings a `u32` length and UTF-8 bytes.
//! The caller encodes every field alike, by its value's kind. Which field is the message,
//! and which are a bridged `log` record's target and bookkeeping (`log.file`, …), the reader
//! finds by name in the callsite's metadata ([`Roles`]), once per callsite on the workers'
//! hot path: a test of the name on the calling thread cost it 12 to 19 instructions a field.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::Metadata;

use super::ValueRef;

// The value kinds, as encoded, are 0 to `STR`. The kinds after them are given on reading,
// by [`Roles`], to the fields that are not fields.
pub(super) const BOOL: u8 = 0;
pub(super) const I64: u8 = 1;
pub(super) const U64: u8 = 2;
pub(super) const I128: u8 = 3;
pub(super) const U128: u8 = 4;
pub(super) const F64: u8 = 5;
pub(super) const STR: u8 = 6;
/// The event's message (a string named `message`).
pub(super) const MESSAGE: u8 = 7;
/// A bridged `log` record's real target (a string named `log.target`).
pub(super) const LOG_TARGET: u8 = 8;
/// A bridged `log` record's bookkeeping (`log.module_path`, `log.file`, `log.line`): shown
/// by no reader.
pub(super) const BOOKKEEPING: u8 = 9;

/// Flag: the reader may show the callsite's file and line.
pub(crate) const FLAG_LOCATION: u8 = 1;
/// Flag: the event ends with its span's OpenTelemetry ids ([`push_trace`]).
pub(crate) const FLAG_TRACE: u8 = 2;

/// Starts an event's encoding at the end of `out`: `header` bytes left for the queue (see
/// `queue::seal_event`), the time (ns since the epoch) and flags, in one copy; returns the
/// writer of its fields. The span chain follows them ([`push_span`], after a `u8` count).
#[inline]
pub(crate) fn begin_event(
    out: &mut Vec<u8>,
    header: usize,
    nanos: u64,
    flags: u8,
) -> FieldWriter<'_> {
    const MAX_HEADER: usize = 8;
    let header = header.min(MAX_HEADER);
    let mut start = [0_u8; MAX_HEADER + 11];
    start[MAX_HEADER..MAX_HEADER + 8].copy_from_slice(&nanos.to_le_bytes());
    start[MAX_HEADER + 8] = flags;
    out.extend_from_slice(&start[MAX_HEADER - header..]);
    FieldWriter {
        count_at: out.len() - 2,
        out,
        count: 0,
    }
}

/// The wall clock in nanoseconds since the epoch (0 before it), as events record it.
#[inline]
pub(crate) fn nanos_of(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| {
            d.as_secs()
                .saturating_mul(1_000_000_000)
                .saturating_add(u64::from(d.subsec_nanos()))
        })
}

/// Appends one span's encoded fields to an event (after its `u8` span count).
pub(crate) fn push_span(out: &mut Vec<u8>, fields: &[u8]) {
    let len = u32::try_from(fields.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&fields[..len as usize]);
}

/// Ends an event begun by [`begin_event`] (with the same `header`) with its span's trace
/// ids, after its span chain: 24 fixed bytes and a flag bit, formatted as hex on the worker.
#[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))] // the layer's only caller
#[inline]
pub(crate) fn push_trace(out: &mut Vec<u8>, header: usize, ids: &[u8; super::trace::TRACE_BYTES]) {
    if let Some(flags) = out.get_mut(header + 8) {
        *flags |= FLAG_TRACE;
        out.extend_from_slice(ids);
    }
}

/// Encodes fields as a `Visit`or, an event's or a span's: each by its value's kind.
pub(crate) struct FieldWriter<'a> {
    out: &'a mut Vec<u8>,
    count_at: usize,
    count: u16,
}

impl<'a> FieldWriter<'a> {
    /// Starts a span's list of fields at the end of `out`.
    pub(crate) fn span(out: &'a mut Vec<u8>) -> Self {
        let count_at = out.len();
        out.extend_from_slice(&[0, 0]);
        FieldWriter {
            out,
            count_at,
            count: 0,
        }
    }

    /// Continues a span's list of fields written earlier (`on_record`): `out` holds exactly
    /// one list.
    pub(crate) fn resume_span(out: &'a mut Vec<u8>) -> Self {
        let count = out.get(..2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        FieldWriter {
            out,
            count_at: 0,
            count,
        }
    }

    /// A field of fixed size: its head and value in one copy of a constant length.
    #[inline]
    fn fixed<const N: usize>(&mut self, kind: u8, field: &Field, value: [u8; N]) {
        if self.count == u16::MAX {
            return;
        }
        self.count += 1;
        let mut entry = [0_u8; 18];
        entry[0] = kind;
        entry[1] = u8::try_from(field.index()).unwrap_or(u8::MAX);
        entry[2..2 + N].copy_from_slice(&value);
        self.out.extend_from_slice(&entry[..2 + N]);
    }

    #[inline]
    fn str(&mut self, kind: u8, field: &Field, s: &str) {
        if self.count == u16::MAX {
            return;
        }
        self.count += 1;
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        let l = len.to_le_bytes();
        let index = u8::try_from(field.index()).unwrap_or(u8::MAX);
        self.out
            .extend_from_slice(&[kind, index, l[0], l[1], l[2], l[3]]);
        self.out.extend_from_slice(&s.as_bytes()[..len as usize]);
    }

    #[inline]
    fn debug(&mut self, kind: u8, field: &Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        if self.count == u16::MAX {
            return;
        }
        self.count += 1;
        let index = u8::try_from(field.index()).unwrap_or(u8::MAX);
        // The head and room for the length, in one copy.
        self.out.extend_from_slice(&[kind, index, 0, 0, 0, 0]);
        let at = self.out.len() - 4;
        let _ = write!(Bytes(self.out), "{value:?}");
        let len = u32::try_from(self.out.len() - at - 4).unwrap_or(u32::MAX);
        self.out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Ends the list: writes its count.
    #[inline]
    pub(crate) fn finish(self) {
        self.out[self.count_at..self.count_at + 2].copy_from_slice(&self.count.to_le_bytes());
    }
}

/// `fmt::Write` straight into a byte buffer (`io::Write`'s adapter costs more per call).
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Visit for FieldWriter<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fixed(F64, field, value.to_le_bytes());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fixed(I64, field, value.to_le_bytes());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fixed(U64, field, value.to_le_bytes());
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.fixed(I128, field, value.to_le_bytes());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.fixed(U128, field, value.to_le_bytes());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fixed(BOOL, field, [u8::from(value)]);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.str(STR, field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its chain of causes, as text.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.str(STR, field, &text);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.debug(STR, field, value);
    }
}

/// An event in compact form, read in place on the worker.
#[derive(Clone, Copy)]
pub(crate) struct EventRef<'a> {
    bytes: &'a [u8],
    /// The event's metadata, then each span's, outermost first.
    metas: &'a [&'static Metadata<'static>],
}

impl fmt::Debug for EventRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRef")
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl<'a> EventRef<'a> {
    /// Reads an event written by [`begin_event`] (and its [`FieldWriter`]) and
    /// [`push_span`]; `metas` starts with the event's metadata.
    pub(crate) fn new(bytes: &'a [u8], metas: &'a [&'static Metadata<'static>]) -> Self {
        EventRef { bytes, metas }
    }

    /// The event's metadata.
    pub(super) fn meta(&self) -> Option<&'static Metadata<'static>> {
        self.metas.first().copied()
    }

    /// The spans' metadata, outermost first.
    pub(super) fn span_metas(&self) -> &'a [&'static Metadata<'static>] {
        self.metas.get(1..).unwrap_or(&[])
    }

    /// The time in nanoseconds since the epoch, as encoded.
    pub(super) fn nanos(&self) -> u64 {
        self.bytes
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    /// The time in nanoseconds since the epoch.
    pub(crate) fn unix_nanos(&self) -> i128 {
        i128::from(self.nanos())
    }

    pub(crate) fn level(&self) -> tracing::Level {
        self.meta().map_or(tracing::Level::INFO, |m| *m.level())
    }

    pub(super) fn flags(&self) -> u8 {
        self.bytes.get(8).copied().unwrap_or(0)
    }

    /// The event's own fields, encoded (the span chain follows them), each of the kind its
    /// role gives it.
    pub(super) fn raw_fields(&self) -> EncodedFields<'a> {
        self.raw_fields_with(self.meta().map_or(Roles::NONE, Roles::of))
    }

    /// [`raw_fields`](Self::raw_fields) with the roles of the event's callsite, found before.
    #[inline]
    pub(super) fn raw_fields_with(&self, roles: Roles) -> EncodedFields<'a> {
        let mut fields = EncodedFields::new(self.bytes.get(9..).unwrap_or(&[]));
        fields.roles = roles;
        fields
    }

    /// The target: a bridged `log` record's own, else the callsite's.
    pub(crate) fn target(&self) -> &'a str {
        let meta_target = self.meta().map_or("", |m| m.target());
        if meta_target == "log" {
            let target = self.raw_fields().find(|f| f.kind == LOG_TARGET);
            if let Some(text) = target.and_then(|f| std::str::from_utf8(f.value).ok()) {
                return text;
            }
        }
        meta_target
    }

    /// The message, as the UTF-8 bytes it was written from.
    pub(crate) fn message(&self) -> &'a [u8] {
        self.raw_fields()
            .find(|f| f.kind == MESSAGE)
            .map_or(&[], |f| f.value)
    }

    /// The fields other than the message, in the order they were recorded.
    pub(crate) fn fields(&self) -> NamedFields<'a> {
        NamedFields::new(self.raw_fields(), self.meta())
    }

    /// Each span's name and fields, outermost first.
    pub(crate) fn spans(&self) -> Spans<'a> {
        let mut fields = self.raw_fields();
        for _ in fields.by_ref() {}
        Spans(EncodedSpans::after(fields.rest(), self.span_metas()))
    }

    /// The encoded bytes (without the queue's header).
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn file(&self) -> Option<&'static str> {
        if self.flags() & FLAG_LOCATION == 0 {
            return None;
        }
        self.meta().and_then(Metadata::file)
    }

    pub(crate) fn line(&self) -> Option<u32> {
        if self.flags() & FLAG_LOCATION == 0 {
            return None;
        }
        self.meta().and_then(Metadata::line)
    }

    /// The span's OpenTelemetry ids, if the layer captured them (the last 24 bytes).
    pub(crate) fn trace_ids(&self) -> Option<super::TraceIds> {
        if self.flags() & FLAG_TRACE == 0 {
            return None;
        }
        let at = self.bytes.len().checked_sub(super::trace::TRACE_BYTES)?;
        super::TraceIds::from_bytes(&self.bytes[at..])
    }
}

/// Reads the span chain of an [`EventRef`]: each span's metadata and encoded fields.
pub(super) struct EncodedSpans<'a> {
    count: u8,
    bytes: &'a [u8],
    metas: &'a [&'static Metadata<'static>],
}

impl<'a> EncodedSpans<'a> {
    /// The chain that starts at `rest`, the bytes after the event's own fields.
    pub(super) fn after(rest: &'a [u8], metas: &'a [&'static Metadata<'static>]) -> Self {
        EncodedSpans {
            count: rest.first().copied().unwrap_or(0),
            bytes: rest.get(1..).unwrap_or(&[]),
            metas,
        }
    }
}

impl<'a> Iterator for EncodedSpans<'a> {
    type Item = (&'static Metadata<'static>, EncodedFields<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.count == 0 {
            return None;
        }
        self.count -= 1;
        let (meta, metas) = self.metas.split_first()?;
        self.metas = metas;
        let len = read_u32(self.bytes, 0)? as usize;
        let fields = self.bytes.get(4..4 + len)?;
        self.bytes = self.bytes.get(4 + len..)?;
        Some((meta, EncodedFields::new(fields)))
    }
}

/// The span chain of an [`EventRef`], with names.
pub(crate) struct Spans<'a>(EncodedSpans<'a>);

impl<'a> Iterator for Spans<'a> {
    type Item = (&'a str, SpanFields<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let (meta, fields) = self.0.next()?;
        Some((
            meta.name(),
            SpanFields(NamedFields::new(fields, Some(meta))),
        ))
    }
}

/// A span's fields in an [`EventRef`].
pub(crate) struct SpanFields<'a>(NamedFields<'a>);

impl<'a> Iterator for SpanFields<'a> {
    type Item = (&'a str, ValueRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

/// The most fields a callsite can have (`tracing` allows 32).
const MAX_FIELDS: usize = 32;

/// Fields with their names and values: the callsite's names are read once per record, not
/// once per field.
pub(crate) struct NamedFields<'a> {
    raw: EncodedFields<'a>,
    names: [&'static str; MAX_FIELDS],
}

impl<'a> NamedFields<'a> {
    fn new(raw: EncodedFields<'a>, meta: Option<&'static Metadata<'static>>) -> Self {
        let mut names = [""; MAX_FIELDS];
        if let Some(meta) = meta {
            for (slot, field) in names.iter_mut().zip(meta.fields().iter()) {
                *slot = field.name();
            }
        }
        NamedFields { raw, names }
    }
}

impl<'a> Iterator for NamedFields<'a> {
    type Item = (&'a str, ValueRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let f = self.raw.next()?;
            let value = match f.kind {
                BOOL => ValueRef::Bool(f.value.first().is_some_and(|&b| b != 0)),
                I64 => ValueRef::I64(i64::from_le_bytes(f.value.try_into().ok()?)),
                U64 => ValueRef::U64(u64::from_le_bytes(f.value.try_into().ok()?)),
                I128 => ValueRef::I128(i128::from_le_bytes(f.value.try_into().ok()?)),
                U128 => ValueRef::U128(u128::from_le_bytes(f.value.try_into().ok()?)),
                F64 => ValueRef::F64(f64::from_le_bytes(f.value.try_into().ok()?)),
                STR => ValueRef::Text(f.value),
                // The message and a bridged record's target are not fields.
                _ => continue,
            };
            let name = self.names.get(usize::from(f.index)).copied().unwrap_or("");
            return Some((name, value));
        }
    }
}

/// One encoded field: its kind, its index in the callsite, and its value's bytes.
pub(super) struct RawField<'a> {
    pub(super) kind: u8,
    pub(super) index: u8,
    pub(super) value: &'a [u8],
}

/// The fields of an event's callsite that are not fields (the message, a bridged `log`
/// record's target and bookkeeping), by index: found by name, as the caller encodes every
/// field by its value's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Roles {
    /// A bit for each index below 64 that has a role.
    special: u64,
    /// The fields named `message` (a callsite may name two so: the first is shown).
    message: u64,
    /// A bridged record's `log.module_path`, `log.file` and `log.line`.
    bookkeeping: u64,
}

impl Roles {
    /// Every field is a field (a span's list).
    pub(super) const NONE: Roles = Roles {
        special: 0,
        message: 0,
        bookkeeping: 0,
    };

    /// The roles in an event callsite's fields: its `message`, and for a `log` record
    /// bridged by `tracing-log` (target `log`) the `log.*` fields it adds.
    pub(super) fn of(meta: &Metadata<'_>) -> Roles {
        let mut roles = Roles::NONE;
        if meta.is_span() {
            return roles;
        }
        let bridged = meta.target() == "log";
        // `tracing` allows 32 fields a callsite: every index fits the masks.
        for (i, field) in meta.fields().iter().enumerate().take(64) {
            let bit = 1_u64 << i;
            match field.name() {
                "message" => roles.message |= bit,
                "log.target" if bridged => {}
                "log.module_path" | "log.file" | "log.line" if bridged => roles.bookkeeping |= bit,
                _ => continue,
            }
            roles.special |= bit;
        }
        roles
    }

    /// The kind a field read as `kind` at `index` has: its role's if it has one (the message
    /// and the target only when they are text).
    #[inline]
    fn kind(self, kind: u8, index: u8) -> u8 {
        // Most lists have no role left once their message is read: one test a field.
        if self.special == 0 {
            return kind;
        }
        let bit = 1_u64.checked_shl(u32::from(index)).unwrap_or(0);
        if self.special & bit == 0 {
            kind
        } else if self.bookkeeping & bit != 0 {
            BOOKKEEPING
        } else if kind != STR {
            kind
        } else if self.message & bit != 0 {
            MESSAGE
        } else {
            LOG_TARGET
        }
    }

    /// The index of the message when it is the only field with a role.
    pub(super) fn lone_message(self) -> Option<u8> {
        (self.special == self.message && self.message.is_power_of_two())
            .then(|| u8::try_from(self.message.trailing_zeros()).unwrap_or(u8::MAX))
    }

    /// These roles but the one of the field at `index` (read already).
    #[inline]
    pub(super) fn without(self, index: u8) -> Roles {
        let keep = !1_u64.checked_shl(u32::from(index)).unwrap_or(0);
        Roles {
            special: self.special & keep,
            message: self.message & keep,
            bookkeeping: self.bookkeeping & keep,
        }
    }
}

/// Reads a list of encoded fields without decoding their values.
#[derive(Clone)]
pub(super) struct EncodedFields<'a> {
    /// What is not read yet: the next field, or what follows the list.
    rest: &'a [u8],
    left: u16,
    /// An event's roles ([`Roles::NONE`] for a span's list).
    roles: Roles,
}

impl<'a> EncodedFields<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        let left = bytes
            .get(..2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        EncodedFields {
            rest: bytes.get(2..).unwrap_or(&[]),
            left,
            roles: Roles::NONE,
        }
    }

    /// Gives the fields still to be read these roles.
    pub(super) fn set_roles(&mut self, roles: Roles) {
        self.roles = roles;
    }

    /// What follows the list (only meaningful once it is read to the end).
    pub(super) fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for EncodedFields<'a> {
    type Item = RawField<'a>;

    // Each step splits what is left, so every length is checked once, against one slice.
    fn next(&mut self) -> Option<RawField<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (&[kind, index], after) = self.rest.split_first_chunk::<2>()?;
        let (len, after) = match kind {
            BOOL => (1, after),
            I64 | U64 | F64 => (8, after),
            I128 | U128 => (16, after),
            _ => {
                let (len, after) = after.split_first_chunk::<4>()?;
                (u32::from_le_bytes(*len) as usize, after)
            }
        };
        let (value, after) = after.split_at_checked(len)?;
        self.rest = after;
        Some(RawField {
            kind: self.roles.kind(kind, index),
            index,
            value,
        })
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
