//! The sink-agnostic log record.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use tracing::Level;

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
        use std::io::Write as _;
        // Writing into a Vec cannot fail.
        let _ = match self {
            Value::Bool(b) => write!(out, "{b}"),
            Value::I64(n) => {
                if *n < 0 {
                    out.push(b'-');
                }
                write_u64(out, n.unsigned_abs());
                Ok(())
            }
            Value::U64(n) => {
                write_u64(out, *n);
                Ok(())
            }
            Value::I128(n) => write!(out, "{n}"),
            Value::U128(n) => write!(out, "{n}"),
            Value::F64(x) if x.is_nan() => write!(out, "\"NaN\""),
            Value::F64(x) if x.is_infinite() => {
                write!(out, "{}", if *x > 0.0 { "\"inf\"" } else { "\"-inf\"" })
            }
            Value::F64(x) => write!(out, "{x}"),
            Value::Str(s) => {
                write_json_str(out, s);
                Ok(())
            }
        };
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

/// Writes `s` as a JSON string literal (quoted and escaped) into `out`.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most strings need no escape at all. This check has no early exit, so the compiler
    // vectorises it: a clean string costs a few nanoseconds and one copy.
    #[allow(clippy::needless_bitwise_bool)] // branch-free, so it vectorises
    let dirty = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\') | (b == 0x7f)
    });
    if !dirty {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        // One table load per byte: most bytes need no escape and cost nothing more.
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            let hex = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(hex[usize::from(b >> 4)]);
            out.push(hex[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// For each byte: 0 when it is written as is, else the letter of its escape (`u` for
/// `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0_u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x7f] = b'u';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t
};

/// Appends `n` in decimal, without `fmt`'s machinery.
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0_u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        buf[i] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `n` zero-padded to `width` digits (for dates; `n` fits the width).
fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut n = n;
    for slot in buf[..width].iter_mut().rev() {
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        *slot = b'0' + digit;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
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
        }
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

    /// An estimate of the record's size in memory, used for byte-bounded buffers.
    pub fn approx_size(&self) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .map(|(n, v)| n.len() + value_size(v) + 16)
            .sum();
        let spans: usize = self
            .spans
            .iter()
            .map(|s| {
                s.name.len()
                    + s.fields
                        .iter()
                        .map(|(n, v)| n.len() + value_size(v) + 16)
                        .sum::<usize>()
            })
            .sum();
        64 + self.target.len() + self.message.len() + fields + spans
    }

    /// Writes the record as one JSON object (no trailing newline) into `out`.
    ///
    /// The layout is `{"timestamp":…,"level":…,"target":…,"message":…,"fields":{…}}`, with
    /// `"spans":[…]`, `"file"` and `"line"` added when present. The timestamp is RFC 3339 in
    /// UTC with nanoseconds. Control characters in strings are escaped, so the output never
    /// contains a raw newline.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_rfc3339(out, self.unix_nanos());
        out.extend_from_slice(b"\",");
        self.write_json_rest(out);
    }

    /// [`write_json`](Self::write_json) without the timestamp, for sinks whose entries
    /// carry the time on their own (Loki).
    pub(crate) fn write_json_untimed(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        self.write_json_rest(out);
    }

    /// Everything after the timestamp: `"level":…` to the closing brace.
    fn write_json_rest(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\"level\":\"");
        out.extend_from_slice(self.level.as_str().as_bytes());
        out.extend_from_slice(b"\",\"target\":");
        write_json_str(out, &self.target);
        out.extend_from_slice(b",\"message\":");
        write_json_str(out, &self.message);
        out.extend_from_slice(b",\"fields\":");
        write_json_object(out, &self.fields);
        if !self.spans.is_empty() {
            out.extend_from_slice(b",\"spans\":[");
            for (i, span) in self.spans.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"name\":");
                write_json_str(out, span.name);
                out.extend_from_slice(b",\"fields\":");
                write_json_object(out, &span.fields);
                out.push(b'}');
            }
            out.push(b']');
        }
        if let Some(file) = self.file {
            out.extend_from_slice(b",\"file\":");
            write_json_str(out, file);
        }
        if let Some(line) = self.line {
            out.extend_from_slice(b",\"line\":");
            write_u64(out, u64::from(line));
        }
        out.push(b'}');
    }
}

fn value_size(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len(),
        _ => 8,
    }
}

fn write_json_object(out: &mut Vec<u8>, fields: &[(Cow<'static, str>, Value)]) {
    out.push(b'{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, name);
        out.push(b':');
        value.write_json(out);
    }
    out.push(b'}');
}

/// Writes a Unix time in nanoseconds as RFC 3339 UTC with nine fractional digits.
pub(crate) fn write_rfc3339(out: &mut Vec<u8>, unix_nanos: i128) {
    let secs = i64::try_from(unix_nanos.div_euclid(1_000_000_000)).unwrap_or(0);
    let nanos = u64::try_from(unix_nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400).unsigned_abs();
    if y < 0 {
        out.push(b'-');
    }
    // Four digits at least, as `{y:04}` wrote them; more for years past 9999.
    match y.unsigned_abs() {
        year @ 0..=9999 => write_padded(out, year, 4),
        year => write_u64(out, year),
    }
    out.push(b'-');
    write_padded(out, u64::from(m), 2);
    out.push(b'-');
    write_padded(out, u64::from(d), 2);
    out.push(b'T');
    write_padded(out, rem / 3600, 2);
    out.push(b':');
    write_padded(out, rem / 60 % 60, 2);
    out.push(b':');
    write_padded(out, rem % 60, 2);
    out.push(b'.');
    write_padded(out, nanos, 9);
    out.push(b'Z');
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar.
/// Howard Hinnant's algorithm: exact for every i64 day count we can meet.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
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

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
