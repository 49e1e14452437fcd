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
/// no second validation. Inlined: the workers write every string of every line here
/// (measured: as a call, it cost the Loki worker 60 instructions an entry).
#[allow(clippy::inline_always)]
#[inline(always)]
pub(crate) fn write_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if !needs_escape(bytes) {
        // The common case: one reservation, one copy.
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    write_quoted_escaped(out, bytes);
}

#[cold]
#[inline(never)]
fn write_quoted_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    write_escaped(out, bytes);
    out.push(b'"');
}

/// True if any byte of `bytes` needs an escape in JSON: a control character, `"`, `\\` or
/// DEL. Eight bytes at a time (SWAR), since most strings need no escape at all; a string of
/// eight bytes or more ends with one overlapping word instead of a byte loop.
#[inline]
fn needs_escape(bytes: &[u8]) -> bool {
    if bytes.len() < 8 {
        return bytes.iter().any(|&b| ESCAPE[usize::from(b)] != 0);
    }
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        if word_needs_escape(chunk) {
            return true;
        }
    }
    !chunks.remainder().is_empty() && word_needs_escape(&bytes[bytes.len() - 8..])
}

/// [`needs_escape`] for exactly eight bytes: for each test, the "has a zero byte" trick
/// (`(x - 0x01…) & !x & 0x80…`), with the high-bit mask applied once to all four.
#[inline]
fn word_needs_escape(chunk: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut word = [0_u8; 8];
    word.copy_from_slice(chunk);
    let v = u64::from_le_bytes(word);
    let quote = v ^ (ONES * u64::from(b'"'));
    let backslash = v ^ (ONES * u64::from(b'\\'));
    let del = v ^ (ONES * 0x7f);
    // A byte below 0x20 (and not 0x80 or more, which UTF-8 continuation bytes are), or
    // one equal to `"`, `\\` or DEL.
    let any = (v.wrapping_sub(ONES * 0x20) & !v)
        | (quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (del.wrapping_sub(ONES) & !del);
    any & HIGH != 0
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

/// Appends the first `len` bytes of `bytes` with a copy of constant size (all `N` bytes,
/// then the excess cut off): for short pieces, cheaper than a copy of variable length,
/// which is a call to `memcpy`.
#[inline]
pub(crate) fn put_fixed<const N: usize>(out: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    out.extend_from_slice(bytes);
    out.truncate(out.len() - (N - len.min(N)));
}

/// Bytes kept for [`put_fixed`] when they fit in `N`, else as they are.
#[derive(Debug, Clone)]
pub(crate) enum Piece<const N: usize> {
    Short([u8; N], usize),
    Long(Box<[u8]>),
}

impl<const N: usize> Piece<N> {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= N {
            let mut short = [0; N];
            short[..bytes.len()].copy_from_slice(bytes);
            Piece::Short(short, bytes.len())
        } else {
            Piece::Long(bytes.into())
        }
    }

    /// Appends the bytes to `out`.
    #[inline]
    pub(crate) fn put(&self, out: &mut Vec<u8>) {
        match self {
            Piece::Short(bytes, len) => put_fixed(out, bytes, *len),
            Piece::Long(bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// `00` to `99`, two bytes each.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The two digits of `n` (below 100).
#[inline]
fn pair(n: u64) -> [u8; 2] {
    let i = usize::try_from(n % 100).unwrap_or(0) * 2;
    [PAIRS[i], PAIRS[i + 1]]
}

/// Appends `n` in decimal, without `fmt`'s machinery: two digits at a time into a buffer
/// of constant size, copied as one piece.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0_u8; 20];
    let len = digits_into(&mut buf, n);
    put_fixed(out, &buf, len);
}

/// Writes `n` in decimal at the start of `buf` (which has room for it); returns the length.
fn digits_into(buf: &mut [u8], n: u64) -> usize {
    let len = n.checked_ilog10().map_or(1, |l| l as usize + 1);
    fill_digits(&mut buf[..len], n);
    len
}

/// Fills `buf` with the last `buf.len()` decimal digits of `n`, zero-padded.
fn fill_digits(buf: &mut [u8], n: u64) {
    let (mut n, mut end) = (n, buf.len());
    while end >= 2 {
        buf[end - 2..end].copy_from_slice(&pair(n));
        n /= 100;
        end -= 2;
    }
    if end == 1 {
        buf[0] = PAIRS[usize::try_from(n % 10).unwrap_or(0) * 2 + 1];
    }
}

fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Writes one value as JSON. Non-finite floats become the strings `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) fn write_value(out: &mut Vec<u8>, value: ValueRef<'_>) {
    match value {
        ValueRef::Bool(true) => out.extend_from_slice(b"true"),
        ValueRef::Bool(false) => out.extend_from_slice(b"false"),
        ValueRef::I64(n) => write_i64(out, n),
        ValueRef::U64(n) => write_u64(out, n),
        ValueRef::I128(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        ValueRef::U128(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        ValueRef::F64(x) => write_float(out, x),
        ValueRef::Str(s) => write_json_str(out, s),
        ValueRef::Text(b) => write_json_bytes(out, b),
    }
}

/// A float as JSON: non-finite ones as the strings `"NaN"`, `"inf"`, `"-inf"`.
pub(crate) fn write_float(out: &mut Vec<u8>, x: f64) {
    if x.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if x.is_infinite() {
        out.extend_from_slice(if x > 0.0 { b"\"inf\"" } else { b"\"-inf\"" });
    } else {
        write_f64(out, x);
    }
}

/// A finite float, as Rust's `Display` writes it (`1.5`, `3`, `1e-7` is `0.0000001`): the
/// common short decimals directly, the others through ryu's shortest representation, both
/// many times faster than `fmt`. (Where two 17-digit decimals are exactly as near, ryu and
/// `Display` may pick different ones; both read back as the same float.)
fn write_f64(out: &mut Vec<u8>, x: f64) {
    if x == 0.0 {
        out.extend_from_slice(if x.is_sign_negative() { b"-0" } else { b"0" });
        return;
    }
    if write_short_decimal(out, x) {
        return;
    }
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

/// Powers of ten that are exact as `f64` and leave room for 15 digits below 2^53.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];
const POW10_U64: [u64; 16] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    1_000_000_000_000,
    10_000_000_000_000,
    100_000_000_000_000,
    1_000_000_000_000_000,
];

/// Writes a non-zero finite `x` that is `n / 10^k` for an integer `n` below 10^15 (and
/// `k` up to 15) the way `Display` does, without ryu; false (nothing written) otherwise.
///
/// Why this is `Display`'s output: `n` and `10^k` are exact doubles, so the division is
/// correctly rounded and `n / 10^k == x` says the decimal `n·10^-k` reads back as `x`. A
/// decimal of at most 15 significant digits that reads back as `x` is the only one (a
/// double carries more than 15 digits, so two such decimals cannot meet in one double), so
/// the shortest representation `Display` writes is that decimal. The smallest `k` that
/// fits is taken; its trailing zeros are not written.
fn write_short_decimal(out: &mut Vec<u8>, x: f64) -> bool {
    let a = x.abs();
    for (k, (&p, &p_int)) in POW10.iter().zip(&POW10_U64).enumerate() {
        let scaled = a * p;
        if scaled >= 1e15 {
            return false;
        }
        // Below 1e15 and not negative: exact in i64, whose conversions to and from f64
        // are single instructions (u64's are not).
        #[allow(clippy::cast_possible_truncation)]
        let whole = scaled as i64;
        #[allow(clippy::cast_precision_loss, clippy::float_cmp)] // exact: below 2^53
        let exact = whole as f64 == scaled && whole as f64 / p == a;
        let n = whole.unsigned_abs();
        if exact {
            // At most a sign, 15 digits, a point and 15 digits: one piece.
            let mut buf = [0_u8; 40];
            let mut len = usize::from(x < 0.0);
            buf[0] = b'-';
            len += digits_into(&mut buf[len..], n / p_int);
            let mut frac = n % p_int;
            if frac != 0 {
                let mut width = k;
                while frac.is_multiple_of(10) {
                    frac /= 10;
                    width -= 1;
                }
                buf[len] = b'.';
                fill_digits(&mut buf[len + 1..len + 1 + width], frac);
                len += 1 + width;
            }
            put_fixed(out, &buf, len);
            return true;
        }
    }
    false
}

/// Formats RFC 3339 timestamps, remembering the date and time of the last second written:
/// consecutive records mostly fall in the same second, and then only the nanoseconds change.
#[derive(Debug, Default)]
pub(crate) struct TimestampCache {
    second: Option<i64>,
    /// `YYYY-MM-DDTHH:MM:SS.` for `second`.
    prefix: Option<Piece<32>>,
}

impl TimestampCache {
    /// Writes a Unix time in nanoseconds as RFC 3339 UTC with nine fractional digits.
    pub(crate) fn write(&mut self, out: &mut Vec<u8>, unix_nanos: i128) {
        if let Ok(n) = u64::try_from(unix_nanos) {
            return self.write_nanos(out, n);
        }
        let secs = i64::try_from(unix_nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let nanos = u64::try_from(unix_nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
        self.write_parts(out, secs, nanos);
    }

    /// [`write`](Self::write) for a time after the epoch (as the layer encodes it), without
    /// 128-bit division.
    pub(crate) fn write_nanos(&mut self, out: &mut Vec<u8>, unix_nanos: u64) {
        let secs = i64::try_from(unix_nanos / 1_000_000_000).unwrap_or(i64::MAX);
        self.write_parts(out, secs, unix_nanos % 1_000_000_000);
    }

    fn write_parts(&mut self, out: &mut Vec<u8>, secs: i64, nanos: u64) {
        let prefix = match &self.prefix {
            Some(prefix) if self.second == Some(secs) => prefix,
            _ => {
                let mut text = Vec::with_capacity(32);
                write_date_time(&mut text, secs);
                self.second = Some(secs);
                self.prefix.insert(Piece::new(&text))
            }
        };
        prefix.put(out);
        // Nine digits and the `Z`, as one piece of constant size.
        let mut digits = [b'Z'; 10];
        let mut n = nanos;
        for at in [7, 5, 3, 1] {
            digits[at..at + 2].copy_from_slice(&pair(n));
            n /= 100;
        }
        digits[0] = PAIRS[usize::try_from(n % 10).unwrap_or(0) * 2 + 1];
        out.extend_from_slice(&digits);
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

/// Appends `n` zero-padded to `width` digits (at most 20; `n` fits the width).
fn write_padded(out: &mut Vec<u8>, n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let width = width.min(20);
    fill_digits(&mut buf[..width], n);
    put_fixed(out, &buf, width);
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
/// (Loki entries carry the time on their own); `trace` says whether its trace ids are written
/// (Loki entries carry them as structured metadata instead).
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    record: &RecordRef<'_>,
    ts: Option<&mut TimestampCache>,
    trace: bool,
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
    if let Some(ids) = record.trace_ids().filter(|_| trace) {
        write_trace_ids(out, ids);
    }
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

/// Appends `,"trace_id":"…","span_id":"…"` (lowercase hex), in one copy of constant size.
pub(crate) fn write_trace_ids(out: &mut Vec<u8>, ids: super::TraceIds) {
    const TRACE: &[u8; 13] = b",\"trace_id\":\"";
    const SPAN: &[u8; 13] = b"\",\"span_id\":\"";
    let (trace, span) = ids.hex();
    let mut piece = [b'"'; 75];
    piece[..13].copy_from_slice(TRACE);
    piece[13..45].copy_from_slice(&trace);
    piece[45..58].copy_from_slice(SPAN);
    piece[58..74].copy_from_slice(&span);
    out.extend_from_slice(&piece);
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
            0.75,
            100.0,
            1e15,
            999_999_999_999_999.0,
            0.000_000_000_000_001,
            0.1 + 0.2,
            5e-324,
            -1.25e-10,
            9_007_199_254_740_993.0,
        ] {
            assert_eq!(f64_json(x), format!("{x}"), "{x:?}");
        }
    }

    #[test]
    fn short_decimals_and_random_floats_are_written_as_display_writes_them() {
        // xorshift: a fixed sequence, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // The writer before the fast path: ryu, with `Display`'s notation. It is the
        // reference for every float (ryu and `Display` pick differently between two
        // 17-digit decimals at exactly the same distance, e.g. 1318347781736333.25; the
        // output stays ryu's there), and `Display` for the short decimals.
        let reference = |x: f64| {
            let mut buf = ryu::Buffer::new();
            let s = buf.format_finite(x);
            if s.contains('e') {
                format!("{x}")
            } else {
                s.strip_suffix(".0").unwrap_or(s).to_owned()
            }
        };
        for _ in 0..50_000 {
            let r = next();
            // Random bit patterns, and decimals of up to 17 digits at every scale the fast
            // path tries (and around it).
            let digits = r % 10_u64.pow(u32::try_from(r % 18).unwrap());
            let scale = i32::try_from(next() % 40).unwrap() - 20;
            #[allow(clippy::cast_precision_loss)]
            let decimal = digits as f64 * 10_f64.powi(scale);
            for x in [f64::from_bits(r), decimal, -decimal, decimal / 3.0] {
                if x.is_finite() {
                    assert_eq!(f64_json(x), reference(x), "{x:?}");
                }
            }
            if digits < 10_u64.pow(15) {
                assert_eq!(f64_json(decimal), format!("{decimal}"), "{decimal:?}");
            }
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
    fn unsigned_integers_match_their_display_at_every_length() {
        let mut n = 1_u64;
        let mut cases = vec![0, u64::MAX, u64::MAX - 1];
        while let Some(next) = n.checked_mul(10) {
            cases.extend([n - 1, n, n + 1, n + n / 3]);
            n = next;
        }
        for x in cases {
            let mut out = b"x".to_vec();
            write_u64(&mut out, x);
            assert_eq!(out, format!("x{x}").into_bytes());
            let mut padded = Vec::new();
            write_padded(&mut padded, x % 1_000_000_000, 9);
            assert_eq!(padded, format!("{:09}", x % 1_000_000_000).into_bytes());
        }
    }

    #[test]
    fn pieces_write_their_bytes_short_or_long() {
        for len in [0, 1, 7, 8, 31, 32, 33, 100] {
            let bytes: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz"
                .iter()
                .cycle()
                .take(len)
                .copied()
                .collect();
            let mut out = b"<".to_vec();
            Piece::<32>::new(&bytes).put(&mut out);
            out.push(b'>');
            assert_eq!(out, [b"<", &bytes[..], b">"].concat());
        }
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
