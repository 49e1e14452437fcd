//! The sink-agnostic log record.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use tracing::Level;

pub(crate) mod clock;
pub(crate) mod compact;
pub(crate) mod json;
mod lines;
mod trace;

pub(crate) use compact::EventRef;
#[allow(unused_imports)] // each sink uses some
pub(crate) use json::{civil_from_days, write_json_str, write_u64, TimestampCache};
pub(crate) use lines::LineCache;
pub use trace::TraceIds;

/// A typed field value in a [`Record`].
///
/// Numbers stay numbers and booleans stay booleans all the way to the sink, which formats
/// them on its own worker. Non-finite floats are written as the strings `"NaN"`, `"inf"` and
/// `"-inf"` in JSON (which has no representation for them).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A signed 128-bit integer.
    I128(i128),
    /// An unsigned 128-bit integer.
    U128(u128),
    /// A float (may be NaN or infinite).
    F64(f64),
    /// A string.
    Str(Cow<'static, str>),
}

impl Value {
    /// Writes the value as JSON into `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json::write_value(out, self.as_ref());
    }

    /// The value, borrowed.
    pub(crate) fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::I64(n) => ValueRef::I64(*n),
            Value::U64(n) => ValueRef::U64(*n),
            Value::I128(n) => ValueRef::I128(*n),
            Value::U128(n) => ValueRef::U128(*n),
            Value::F64(x) => ValueRef::F64(*x),
            Value::Str(s) => ValueRef::Str(s),
        }
    }
}

/// A borrowed field value: what the formatters read, from an owned [`Record`] or from an
/// event the layer captured in compact form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ValueRef<'a> {
    Bool(bool),
    I64(i64),
    U64(u64),
    I128(i128),
    U128(u128),
    F64(f64),
    Str(&'a str),
    /// A string read from the layer's compact form: bytes known to be UTF-8 (written from a
    /// `&str`), so the JSON writer need not validate them again.
    Text(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    /// A string value as text (`None` for other values).
    pub(crate) fn text(&self) -> Option<std::borrow::Cow<'a, str>> {
        match *self {
            ValueRef::Str(s) => Some(Cow::Borrowed(s)),
            ValueRef::Text(b) => Some(String::from_utf8_lossy(b)),
            _ => None,
        }
    }
}

impl fmt::Display for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Bool(b) => write!(f, "{b}"),
            ValueRef::I64(n) => write!(f, "{n}"),
            ValueRef::U64(n) => write!(f, "{n}"),
            ValueRef::I128(n) => write!(f, "{n}"),
            ValueRef::U128(n) => write!(f, "{n}"),
            ValueRef::F64(x) => write!(f, "{x}"),
            ValueRef::Str(s) => f.write_str(s),
            ValueRef::Text(b) => f.write_str(&String::from_utf8_lossy(b)),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::I64(n) => write!(f, "{n}"),
            Value::U64(n) => write!(f, "{n}"),
            Value::I128(n) => write!(f, "{n}"),
            Value::U128(n) => write!(f, "{n}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

macro_rules! value_from {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(<$as>::from(v))
            }
        })*
    };
}

value_from! {
    bool => Bool as bool,
    i8 => I64 as i64, i16 => I64 as i64, i32 => I64 as i64, i64 => I64 as i64,
    u8 => U64 as u64, u16 => U64 as u64, u32 => U64 as u64, u64 => U64 as u64,
    i128 => I128 as i128, u128 => U128 as u128,
    f32 => F64 as f64, f64 => F64 as f64,
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::U64(v as u64)
    }
}

impl From<&'static str> for Value {
    fn from(v: &'static str) -> Self {
        Value::Str(Cow::Borrowed(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(Cow::Owned(v))
    }
}

/// A span in a record's span chain: its name and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanInfo {
    /// The span's name.
    pub name: &'static str,
    /// The span's fields, in the order they were recorded.
    pub fields: Vec<(Cow<'static, str>, Value)>,
}

/// One log record, as the sinks receive it.
///
/// Built by [`SinkLayer`](crate::SinkLayer) from a `tracing` event, or by hand.
/// The time is the event's own time, and sinks use it as the entry's timestamp (never the
/// time the record happens to be sent).
///
/// # Examples
///
/// ```
/// use sinkwatch::Record;
/// use tracing::Level;
///
/// let record = Record::new(Level::INFO, "order placed")
///     .with_target("shop::orders")
///     .with_field("order_id", 1234_u64)
///     .with_field("express", true);
/// assert_eq!(record.fields.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When the event happened.
    pub time: SystemTime,
    /// The event's level.
    pub level: Level,
    /// The event's target (by convention the module path).
    pub target: Cow<'static, str>,
    /// The message.
    pub message: String,
    /// The other fields, in the order they were recorded.
    pub fields: Vec<(Cow<'static, str>, Value)>,
    /// The span chain, outermost first (empty unless the layer is asked to capture spans).
    pub spans: Vec<SpanInfo>,
    /// Source file, if captured.
    pub file: Option<&'static str>,
    /// Source line, if captured.
    pub line: Option<u32>,
    /// The OpenTelemetry ids of the span the record was logged in, if any (see
    /// [`with_trace_ids`](Self::with_trace_ids)).
    pub trace: Option<TraceIds>,
}

impl Record {
    /// Creates a record with the current time, an empty target and no fields.
    pub fn new(level: Level, message: impl Into<String>) -> Self {
        Record {
            time: SystemTime::now(),
            level,
            target: Cow::Borrowed(""),
            message: message.into(),
            fields: Vec::new(),
            spans: Vec::new(),
            file: None,
            line: None,
            trace: None,
        }
    }

    /// Sets the OpenTelemetry ids the record carries: the sinks write them as `trace_id`
    /// and `span_id` (JSON and text lines, Loki structured metadata), as they do for an
    /// event that [`SinkLayer`](crate::SinkLayer) captured inside a span (feature
    /// `opentelemetry`).
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::{Record, TraceIds};
    /// use tracing::Level;
    ///
    /// let ids = TraceIds::new([0x4b; 16], [0x0c; 8]).unwrap();
    /// let record = Record::new(Level::INFO, "paid").with_trace_ids(ids);
    /// let mut line = Vec::new();
    /// record.write_json(&mut line);
    /// let line = String::from_utf8(line).unwrap();
    /// assert!(line.contains(r#""trace_id":"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b","span_id":"0c0c0c0c0c0c0c0c""#));
    /// ```
    #[must_use]
    pub fn with_trace_ids(mut self, ids: TraceIds) -> Self {
        self.trace = Some(ids);
        self
    }

    /// Sets the target.
    #[must_use]
    pub fn with_target(mut self, target: impl Into<Cow<'static, str>>) -> Self {
        self.target = target.into();
        self
    }

    /// Sets the event time.
    #[must_use]
    pub fn with_time(mut self, time: SystemTime) -> Self {
        self.time = time;
        self
    }

    /// Adds a field.
    #[must_use]
    pub fn with_field(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<Value>,
    ) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Looks up a field by name (the first one, if a name repeats).
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The event time in nanoseconds since the Unix epoch (0 for times before the epoch).
    pub fn unix_nanos(&self) -> i128 {
        match self.time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
            Err(_) => 0,
        }
    }

    /// An estimate of the record's size in memory (the record, its heap allocations and
    /// its queue slot), used for byte-bounded buffers.
    pub fn approx_size(&self) -> usize {
        use std::mem::size_of;
        let cow = |c: &Cow<'static, str>| match c {
            Cow::Owned(s) => s.capacity(),
            Cow::Borrowed(_) => 0,
        };
        let value = |v: &Value| match v {
            Value::Str(s) => cow(s),
            _ => 0,
        };
        let slot = size_of::<(Cow<'static, str>, Value)>();
        let fields = |f: &Vec<(Cow<'static, str>, Value)>| -> usize {
            f.capacity() * slot + f.iter().map(|(n, v)| cow(n) + value(v)).sum::<usize>()
        };
        let spans: usize = self
            .spans
            .iter()
            .map(|s| size_of::<SpanInfo>() + fields(&s.fields))
            .sum();
        size_of::<Record>()
            + 2 * size_of::<usize>()
            + self.message.capacity()
            + cow(&self.target)
            + fields(&self.fields)
            + self.spans.capacity() * size_of::<SpanInfo>()
            + spans
    }

    /// Writes the record as one JSON object (no trailing newline) into `out`.
    ///
    /// The layout is `{"timestamp":…,"level":…,"target":…,"message":…,"fields":{…}}`, with
    /// `"trace_id"` and `"span_id"` (after the fields), `"spans":[…]`, `"file"` and `"line"`
    /// added when present. The timestamp is RFC 3339 in
    /// UTC with nanoseconds. Control characters in strings are escaped, so the output never
    /// contains a raw newline. The level is uppercase, as `tracing` prints it (`"WARN"`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        json::write_record(
            out,
            &RecordRef::Owned(self),
            Some(&mut TimestampCache::default()),
            true,
        );
    }
}

/// A record as the formatters read it: an owned [`Record`], or an event the layer captured
/// in compact form. Both are written byte for byte the same.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RecordRef<'a> {
    Owned(&'a Record),
    Event(EventRef<'a>),
}

type OwnedFields<'a> = std::iter::Map<
    std::slice::Iter<'a, (Cow<'static, str>, Value)>,
    fn(&'a (Cow<'static, str>, Value)) -> (&'a str, ValueRef<'a>),
>;

fn owned_field<'a>((name, value): &'a (Cow<'static, str>, Value)) -> (&'a str, ValueRef<'a>) {
    (name, value.as_ref())
}

/// A record's fields, owned or read from the compact form: (name, value) in the order
/// recorded.
pub(crate) enum RecordFields<'a, E> {
    Owned(OwnedFields<'a>),
    Event(E),
}

impl<'a, E: Iterator<Item = (&'a str, ValueRef<'a>)>> Iterator for RecordFields<'a, E> {
    type Item = (&'a str, ValueRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            RecordFields::Owned(it) => it.next(),
            RecordFields::Event(it) => it.next(),
        }
    }
}

/// A record's span chain: each span's name and fields, outermost first.
pub(crate) enum Spans<'a> {
    Owned(std::slice::Iter<'a, SpanInfo>),
    Event(compact::Spans<'a>),
}

impl<'a> Iterator for Spans<'a> {
    type Item = (&'a str, RecordFields<'a, compact::SpanFields<'a>>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Spans::Owned(it) => it.next().map(|s| {
                let fields: OwnedFields<'a> = s.fields.iter().map(owned_field);
                (s.name, RecordFields::Owned(fields))
            }),
            Spans::Event(it) => it.next().map(|(name, f)| (name, RecordFields::Event(f))),
        }
    }
}

impl<'a> RecordRef<'a> {
    pub(crate) fn unix_nanos(&self) -> i128 {
        match self {
            RecordRef::Owned(r) => r.unix_nanos(),
            RecordRef::Event(e) => e.unix_nanos(),
        }
    }

    pub(crate) fn level(&self) -> Level {
        match self {
            RecordRef::Owned(r) => r.level,
            RecordRef::Event(e) => e.level(),
        }
    }

    pub(crate) fn target(&self) -> &'a str {
        match self {
            RecordRef::Owned(r) => &r.target,
            RecordRef::Event(e) => e.target(),
        }
    }

    pub(crate) fn message(&self) -> Cow<'a, str> {
        match self {
            RecordRef::Owned(r) => Cow::Borrowed(&r.message),
            RecordRef::Event(e) => String::from_utf8_lossy(e.message()),
        }
    }

    /// The message as UTF-8 bytes, without a second validation.
    pub(crate) fn message_bytes(&self) -> &'a [u8] {
        match self {
            RecordRef::Owned(r) => r.message.as_bytes(),
            RecordRef::Event(e) => e.message(),
        }
    }

    pub(crate) fn fields(&self) -> RecordFields<'a, impl Iterator<Item = (&'a str, ValueRef<'a>)>> {
        match self {
            RecordRef::Owned(r) => RecordFields::Owned(r.fields.iter().map(owned_field)),
            RecordRef::Event(e) => RecordFields::Event(e.fields()),
        }
    }

    /// The first field called `name`.
    pub(crate) fn field(&self, name: &str) -> Option<ValueRef<'a>> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub(crate) fn spans(&self) -> Spans<'a> {
        match self {
            RecordRef::Owned(r) => Spans::Owned(r.spans.iter()),
            RecordRef::Event(e) => Spans::Event(e.spans()),
        }
    }

    pub(crate) fn file(&self) -> Option<&'a str> {
        match self {
            RecordRef::Owned(r) => r.file,
            RecordRef::Event(e) => e.file(),
        }
    }

    pub(crate) fn line(&self) -> Option<u32> {
        match self {
            RecordRef::Owned(r) => r.line,
            RecordRef::Event(e) => e.line(),
        }
    }

    /// The OpenTelemetry ids the record carries.
    pub(crate) fn trace_ids(&self) -> Option<TraceIds> {
        match self {
            RecordRef::Owned(r) => r.trace,
            RecordRef::Event(e) => e.trace_ids(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn json(record: &Record) -> serde_json::Value {
        let mut out = Vec::new();
        record.write_json(&mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn numbers_and_booleans_stay_typed() {
        let r = Record::new(Level::WARN, "m")
            .with_field("n", 3_u64)
            .with_field("neg", -4_i64)
            .with_field("b", true)
            .with_field("x", 1.5_f64);
        let v = json(&r);
        assert_eq!(v["fields"]["n"], 3);
        assert_eq!(v["fields"]["neg"], -4);
        assert_eq!(v["fields"]["b"], true);
        assert_eq!(v["fields"]["x"], 1.5);
        assert_eq!(v["level"], "WARN");
    }

    #[test]
    fn non_finite_floats_become_strings() {
        let r = Record::new(Level::INFO, "m")
            .with_field("a", f64::NAN)
            .with_field("b", f64::INFINITY)
            .with_field("c", f64::NEG_INFINITY);
        let v = json(&r);
        assert_eq!(v["fields"]["a"], "NaN");
        assert_eq!(v["fields"]["b"], "inf");
        assert_eq!(v["fields"]["c"], "-inf");
    }

    #[test]
    fn control_characters_are_escaped() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h\u{1F600}";
        let r = Record::new(Level::INFO, nasty).with_field("k\n", nasty.to_string());
        let mut out = Vec::new();
        r.write_json(&mut out);
        assert!(!out.contains(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["message"], nasty);
        assert_eq!(v["fields"]["k\n"], nasty);
    }

    #[test]
    fn timestamp_is_rfc3339_utc_with_nanos() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let v = json(&Record::new(Level::INFO, "m").with_time(t));
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.123456789Z");
    }
}
