//! Entry lines: what a record's line holds, and what happens to one that is too long.

use super::{LineFormat, LongLines};
use crate::record::{LineCache, RecordRef};

/// Appended to a truncated line.
pub(crate) const TRUNCATION_MARKER: &str = "…[truncated]";

/// How records become lines.
#[derive(Debug)]
pub(crate) struct Lines {
    pub(crate) format: LineFormat,
    pub(crate) max_bytes: usize,
    pub(crate) long: LongLines,
    /// Each callsite's pre-escaped parts, shared with the file sink's writer (one pass
    /// over the compact form, as `record::lines` describes).
    pub(crate) cache: LineCache,
}

impl Lines {
    /// The record's line, or `None` when it is too long and such lines are dropped.
    #[cfg(test)]
    pub(crate) fn render(&mut self, record: &mut crate::Record) -> Option<String> {
        let mut out = Vec::new();
        self.render_into(&RecordRef::Owned(record), &mut out)?;
        Some(String::from_utf8(out).unwrap())
    }

    /// Renders the record's line into `out` (emptied first) and returns the bytes cut off
    /// it (0 unless it was truncated), or `None` when it is too long and such lines are
    /// dropped. The line is UTF-8: text escaped as JSON, or the message, cut at a character
    /// boundary.
    pub(crate) fn render_into(
        &mut self,
        record: &RecordRef<'_>,
        out: &mut Vec<u8>,
    ) -> Option<usize> {
        out.clear();
        self.append(record, out)
    }

    /// [`render_into`](Self::render_into) appending to `out` (a stream's buffer, where the
    /// entry's head was just written): the line is what follows `out`'s length on entry.
    /// On `None`, `out` is left as it was found.
    pub(crate) fn append(&mut self, record: &RecordRef<'_>, out: &mut Vec<u8>) -> Option<usize> {
        let start = out.len();
        match self.format {
            // As `Record::write_json` writes it but without the timestamp: the entry
            // carries the same time, to the nanosecond, and repeating it costs bytes.
            // Without the trace ids too: they are the entry's structured metadata, and a
            // copy in the line would meet them again as `trace_id_extracted` in `| json`.
            LineFormat::Json => self.cache.write_untimed(out, record),
            LineFormat::Message => out.extend_from_slice(record.message_bytes()),
        }
        let len = out.len() - start;
        if len <= self.max_bytes {
            return Some(0);
        }
        match self.long {
            LongLines::Drop => {
                out.truncate(start);
                None
            }
            LongLines::Truncate => {
                truncate_at_char(out, start, start + self.max_bytes - TRUNCATION_MARKER.len());
                let cut = start + len - out.len();
                out.extend_from_slice(TRUNCATION_MARKER.as_bytes());
                Some(cut)
            }
        }
    }
}

/// Cuts the UTF-8 text that starts at `start` in `bytes` (and runs to its end) to end at
/// most at `max`, at a character boundary.
fn truncate_at_char(bytes: &mut Vec<u8>, start: usize, max: usize) {
    if bytes.len() > max {
        let mut end = max;
        // A continuation byte is 0b10xx_xxxx: back up to the start of its character.
        while end > start && bytes[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        bytes.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use tracing::Level;

    fn lines(max: usize, long: LongLines) -> Lines {
        Lines {
            format: LineFormat::Message,
            max_bytes: max,
            long,
            cache: LineCache::default(),
        }
    }

    #[test]
    fn short_lines_pass_unchanged() {
        let mut r = Record::new(Level::INFO, "hello");
        assert_eq!(
            lines(64, LongLines::Truncate).render(&mut r).unwrap(),
            "hello"
        );
    }

    #[test]
    fn long_lines_are_truncated_with_a_marker_within_the_limit() {
        let mut r = Record::new(Level::INFO, "é".repeat(100));
        let line = lines(64, LongLines::Truncate).render(&mut r).unwrap();
        assert!(line.len() <= 64, "{}", line.len());
        assert!(line.ends_with(TRUNCATION_MARKER));
    }

    #[test]
    fn a_line_appended_after_other_bytes_is_the_line_rendered_alone() {
        // Bytes before the line that look like UTF-8 continuation bytes (an entry's head)
        // are never taken for part of its first character.
        for (message, long) in [
            ("é".repeat(100), LongLines::Truncate),
            ("é".to_owned(), LongLines::Truncate),
            ("x".repeat(65), LongLines::Drop),
        ] {
            let r = Record::new(Level::INFO, message);
            let mut alone = Vec::new();
            let a = lines(64, long).render_into(&RecordRef::Owned(&r), &mut alone);
            let mut after = vec![0x12, 0x80, 0x81];
            let b = lines(64, long).append(&RecordRef::Owned(&r), &mut after);
            assert_eq!(a, b);
            if a.is_some() {
                assert_eq!(after[..3], [0x12, 0x80, 0x81]);
                assert_eq!(after[3..], alone[..]);
            } else {
                assert_eq!(after, [0x12, 0x80, 0x81]);
            }
        }
    }

    #[test]
    fn long_lines_are_dropped_when_configured() {
        let mut r = Record::new(Level::INFO, "x".repeat(65));
        assert!(lines(64, LongLines::Drop).render(&mut r).is_none());
    }

    #[test]
    fn json_lines_are_the_record_without_its_timestamp() {
        let mut r = Record::new(Level::WARN, "m\n")
            .with_target("app::x")
            .with_field("n", 1_u64)
            .with_field("s", "q\"");
        r.line = Some(7);
        let mut l = Lines {
            format: LineFormat::Json,
            max_bytes: 1024,
            long: LongLines::Drop,
            cache: LineCache::default(),
        };
        let v: serde_json::Value = serde_json::from_str(&l.render(&mut r).unwrap()).unwrap();
        assert_eq!(v["message"], "m\n");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "app::x");
        assert_eq!(v["fields"]["n"], 1);
        assert_eq!(v["fields"]["s"], "q\"");
        assert_eq!(v["line"], 7);
        assert!(v.get("timestamp").is_none());
    }
}
