//! Line formats. Formatting runs on the sink's worker, never on the caller's thread.

use std::io::Write as _;

use crate::record::{json, write_json_str, LineCache, RecordRef, TimestampCache, ValueRef};

/// How each record is written: one line per record either way.
///
/// # Examples
///
/// ```
/// use sinkwatch::{FileSink, Format};
///
/// let builder = FileSink::builder("logs").format(Format::Text);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Format {
    /// One JSON object per line, as [`Record::write_json`](crate::Record::write_json) writes it. The default.
    #[default]
    Json,
    /// Human-readable text: `time LEVEL target: message key=value …`, and last
    /// `trace_id=… span_id=…` for a record that carries trace ids. Strings that contain
    /// spaces, quotes, `=` or control characters are quoted and escaped, so a record is
    /// always exactly one line.
    Text,
}

impl Format {
    /// Appends `record` and a newline to `out`. `cache` holds what the worker remembers
    /// between lines.
    pub(crate) fn write_line(
        self,
        record: &RecordRef<'_>,
        out: &mut Vec<u8>,
        cache: &mut LineCache,
    ) {
        match self {
            Format::Json => cache.write_json_line(out, record),
            Format::Text => {
                write_text(record, out, cache.timestamps());
                out.push(b'\n');
            }
        }
    }
}

fn write_text(record: &RecordRef<'_>, out: &mut Vec<u8>, ts: &mut TimestampCache) {
    ts.write(out, record.unix_nanos());
    let _ = write!(out, " {:>5} ", record.level().as_str());
    write_plain(out, record.target());
    out.extend_from_slice(b": ");
    write_plain(out, &record.message());
    for (name, value) in record.fields() {
        out.push(b' ');
        write_plain(out, name);
        out.push(b'=');
        match value {
            ValueRef::Str(s) if needs_quotes(s) => write_json_str(out, s),
            ValueRef::Str(s) => out.extend_from_slice(s.as_bytes()),
            ValueRef::Text(b) if needs_quotes(&String::from_utf8_lossy(b)) => {
                json::write_json_bytes(out, b);
            }
            ValueRef::Text(b) => out.extend_from_slice(b),
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
    if let Some(ids) = record.trace_ids() {
        let (trace, span) = ids.hex();
        out.extend_from_slice(b" trace_id=");
        out.extend_from_slice(&trace);
        out.extend_from_slice(b" span_id=");
        out.extend_from_slice(&span);
    }
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'"' || b == b'=')
}

/// Writes `s` unquoted, escaping control characters so the line cannot break.
fn write_plain(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(|b| b.is_ascii_control()) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut quoted = Vec::with_capacity(s.len() + 2);
    write_json_str(&mut quoted, s);
    // Keep the escapes, drop the surrounding quotes: the text stays readable.
    out.extend_from_slice(&quoted[1..quoted.len() - 1]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use std::time::{Duration, SystemTime};
    use tracing::Level;

    fn record() -> Record {
        Record::new(Level::INFO, "order placed")
            .with_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .with_target("shop")
            .with_field("id", 7_u64)
            .with_field("who", "a b")
            .with_field("ok", true)
    }

    fn line(format: Format, r: &Record) -> String {
        let mut out = Vec::new();
        format.write_line(&RecordRef::Owned(r), &mut out, &mut LineCache::default());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_end_with_one_newline() {
        let s = line(Format::Json, &record());
        assert!(s.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).unwrap();
        assert_eq!(v["fields"]["id"], 7);
    }

    #[test]
    fn text_lines_read_naturally() {
        assert_eq!(
            line(Format::Text, &record()),
            "2023-11-14T22:13:20.000000000Z  INFO shop: order placed id=7 who=\"a b\" ok=true\n"
        );
    }

    #[test]
    fn trace_ids_end_a_text_line_and_follow_the_fields_in_json() {
        let ids = crate::TraceIds::new([0xab; 16], [0x12; 8]).unwrap();
        let r = record().with_trace_ids(ids);
        assert_eq!(
            line(Format::Text, &r),
            "2023-11-14T22:13:20.000000000Z  INFO shop: order placed id=7 who=\"a b\" ok=true \
             trace_id=abababababababababababababababab span_id=1212121212121212\n"
        );
        let json = line(Format::Json, &r);
        assert!(json.contains(
            r#""ok":true},"trace_id":"abababababababababababababababab","span_id":"1212121212121212"}"#
        ));
        assert!(!line(Format::Text, &record()).contains("trace_id"));
        assert!(!line(Format::Json, &record()).contains("trace_id"));
    }

    #[test]
    fn text_never_breaks_a_line() {
        let r = Record::new(Level::WARN, "two\nlines").with_field("v", "x\ny".to_string());
        let s = line(Format::Text, &r);
        assert_eq!(s.matches('\n').count(), 1);
        assert!(s.contains("two\\nlines") && s.contains("v=\"x\\ny\""));
    }
}
