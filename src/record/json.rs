//! A JSON writer built for log records: escaping with a vectorisable fast path, integers
//! and floats without `fmt`, and RFC 3339 timestamps cached per second.
//!
//! It works on [`RecordRef`], so an owned [`Record`](super::Record) and an event captured by
//! the layer in compact form are written by the same code, byte for byte.

use super::{RecordRef, ValueRef};

/// Writes `s` as a JSON string literal (quoted and escaped) into `out`.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_bytes(out, s.as_bytes());
}

/// [`write_json_str`] for bytes known to be UTF-8 (they come from a `&str`), so they need
/// no second validation.
pub(crate) fn write_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if !needs_escape(bytes) {
        // The common case: one reservation, one copy.
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    write_escaped(out, bytes);
    out.push(b'"');
}

/// True if any byte of `bytes` needs an escape in JSON: a control character, `"`, `\\` or
/// DEL. Eight bytes at a time (SWAR), since most strings need no escape at all.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0_u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_le_bytes(word);
        // A byte below 0x20 (and not 0x80 or more, which UTF-8 continuation bytes are).
        let below = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        let quote = has_zero(v ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(v ^ (ONES * u64::from(b'\\')));
        let del = has_zero(v ^ (ONES * 0x7f));
        if below | quote | backslash | del != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| ESCAPE[usize::from(b)] != 0)
}

/// Writes `bytes` (UTF-8) escaped for a JSON string, without the quotes.
pub(crate) fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
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
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes one value as JSON. Non-finite floats become the strings `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) fn write_value(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Bool(true) => out.extend_from_slice(b"true"),
        ValueRef::Bool(false) => out.extend_from_slice(b"false"),
        ValueRef::I64(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        ValueRef::U64(n) => write_u64(out, n),
        ValueRef::I128(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        ValueRef::U128(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        ValueRef::F64(x) if x.is_nan() => out.extend_from_slice(b"\"NaN\""),
        ValueRef::F64(x) if x.is_infinite() => {
            out.extend_from_slice(if x > 0.0 { b"\"inf\"" } else { b"\"-inf\"" });
        }
        ValueRef::F64(x) => write_f64(out, x),
        ValueRef::Str(s) => write_json_str(out, s),
        ValueRef::Text(b) => write_json_bytes(out, b),
    }
}

/// A finite float, as Rust's `Display` writes it (`1.5`, `3`, `1e-7` is `0.0000001`), but
/// through ryu's shortest representation for the common case, which is many times faster.
fn write_f64(out: &mut Vec<u8>, x: f64) {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(x);
    // ryu writes `3.0` and `1e21`; `Display` writes `3` and the full digits. Keep the
    // `Display` form (what earlier releases wrote), falling back to `fmt` for exponents.
    if s.contains('e') {
        use std::io::Write as _;
        let _ = write!(out, "{x}");
    } else if let Some(int) = s.strip_suffix(".0") {
        out.extend_from_slice(int.as_bytes());
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Formats RFC 3339 timestamps, remembering the date and time of the last second written:
/// consecutive records mostly fall in the same second, and then only the nanoseconds change.
#[derive(Debug, Default)]
pub(crate) struct TimestampCache {
    second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` for `second`.
    prefix: Vec<u8>,
}

impl TimestampCache {
    /// Writes a Unix time in nanoseconds as RFC 3339 UTC with nine fractional digits.
    pub(crate) fn write(&mut self, out: &mut Vec<u8>, unix_nanos: i128) {
        let secs = i64::try_from(unix_nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let nanos = u64::try_from(unix_nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
        if self.second != Some(secs) {
            self.prefix.clear();
            write_date_time(&mut self.prefix, secs);
            self.second = Some(secs);
        }
        out.extend_from_slice(&self.prefix);
        write_padded(out, nanos, 9);
        out.push(b'Z');
    }
}

/// `YYYY-MM-DDTHH:MM:SS.` for a Unix time in seconds.
fn write_date_time(out: &mut Vec<u8>, secs: i64) {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400).unsigned_abs();
    if y < 0 {
        out.push(b'-');
    }
    // Four digits at least; more for years past 9999.
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
}

/// Appends `n` zero-padded to `width` digits (for dates; `n` fits the width).
fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut n = n;
    for slot in buf[..width].iter_mut().rev() {
        #[allow(clippy::cast_possible_truncation)] // below 10
        let digit = (n % 10) as u8;
        *slot = b'0' + digit;
        n /= 10;
    }
    out.extend_from_slice(&buf[..width]);
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

/// Writes the record as one JSON object (no newline). `ts` is `None` for the untimed form
/// (Loki entries carry the time on their own).
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    record: &RecordRef<'_>,
    ts: Option<&mut TimestampCache>,
) {
    out.push(b'{');
    if let Some(ts) = ts {
        out.extend_from_slice(b"\"timestamp\":\"");
        ts.write(out, record.unix_nanos());
        out.extend_from_slice(b"\",");
    }
    out.extend_from_slice(b"\"level\":\"");
    out.extend_from_slice(record.level().as_str().as_bytes());
    out.extend_from_slice(b"\",\"target\":");
    write_json_str(out, record.target());
    out.extend_from_slice(b",\"message\":");
    write_json_bytes(out, record.message_bytes());
    out.extend_from_slice(b",\"fields\":");
    write_object(out, record.fields());
    let mut spans = record.spans().peekable();
    if spans.peek().is_some() {
        out.extend_from_slice(b",\"spans\":[");
        for (i, (name, fields)) in spans.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"name\":");
            write_json_str(out, name);
            out.extend_from_slice(b",\"fields\":");
            write_object(out, fields);
            out.push(b'}');
        }
        out.push(b']');
    }
    if let Some(file) = record.file() {
        out.extend_from_slice(b",\"file\":");
        write_json_str(out, file);
    }
    if let Some(line) = record.line() {
        out.extend_from_slice(b",\"line\":");
        write_u64(out, u64::from(line));
    }
    out.push(b'}');
}

fn write_object<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = (&'a str, ValueRef<'a>)>) {
    out.push(b'{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, name);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f64_json(x: f64) -> String {
        let mut out = Vec::new();
        write_value(&mut out, ValueRef::F64(x));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_written_as_display_writes_them() {
        for x in [
            0.0,
            -0.0,
            1.5,
            3.0,
            -2.25,
            0.1,
            1e-7,
            1e21,
            123_456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(f64_json(x), format!("{x}"), "{x:?}");
        }
    }

    #[test]
    fn the_escape_check_finds_every_special_byte_at_every_position() {
        for len in 0..20 {
            let clean = "a".repeat(len);
            assert!(!needs_escape(clean.as_bytes()));
            for at in 0..len {
                for special in [0_u8, 0x1f, b'"', b'\\', 0x7f, b'\n'] {
                    let mut bytes = clean.clone().into_bytes();
                    bytes[at] = special;
                    assert!(needs_escape(&bytes), "{len} {at} {special}");
                }
            }
        }
        // UTF-8 continuation bytes (0x80 and up) and printable ASCII need no escape.
        assert!(!needs_escape(
            "é€😀 ~!#$%&'()*+,-./09:;<=>?@AZ[]^_`az{|}".as_bytes()
        ));
    }

    #[test]
    fn integers_use_all_their_digits() {
        let mut out = Vec::new();
        write_value(&mut out, ValueRef::I64(i64::MIN));
        out.push(b' ');
        write_value(&mut out, ValueRef::U128(u128::MAX));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("{} {}", i64::MIN, u128::MAX)
        );
    }

    #[test]
    fn the_timestamp_cache_matches_a_fresh_format_across_seconds() {
        let mut cache = TimestampCache::default();
        for nanos in [
            1_700_000_000_123_456_789_i128,
            1_700_000_000_999_999_999,
            1_700_000_001_000_000_000,
            -1,
            0,
            253_402_300_800_000_000_000,
        ] {
            let mut cached = Vec::new();
            cache.write(&mut cached, nanos);
            let mut fresh = Vec::new();
            TimestampCache::default().write(&mut fresh, nanos);
            assert_eq!(cached, fresh);
        }
        let mut out = Vec::new();
        cache.write(&mut out, 1_700_000_000_123_456_789);
        assert_eq!(out, b"2023-11-14T22:13:20.123456789Z");
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
