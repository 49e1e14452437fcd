//! Stream labels and structured metadata: Loki's label grammar with Go-compatible quoting,
//! labels taken from record fields, and the guard on distinct streams.
//!
//! The rule for labels taken from record fields, which never produces a label set Loki
//! rejects: names are checked by `build()` (valid, not reserved, not repeated, at most 15 in
//! all); a value is the field's text, cut to 2048 bytes at a character boundary; an empty or
//! missing value leaves the label out (as Loki itself would), and the static labels, of which
//! `build()` requires at least one with a value, keep the set from ever being empty.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::encode;
use crate::record::{RecordRef, ValueRef};
use crate::TraceIds;

/// Loki's default limit on label names per stream.
pub(crate) const MAX_LABEL_NAMES: usize = 15;
/// Loki's default limit on a label value's length, in bytes.
pub(crate) const MAX_LABEL_VALUE: usize = 2048;
/// Loki's default limit on a label name's length, in bytes.
pub(crate) const MAX_LABEL_NAME: usize = 1024;
/// Loki's default limit on an entry's structured metadata (names plus values), in bytes.
pub(crate) const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Loki's default limit on structured-metadata pairs per entry.
pub(crate) const MAX_METADATA_PAIRS: usize = 128;

/// One stream's labels: sorted pairs with non-empty values, and their text in Loki's grammar.
/// Equality and hashing use the text alone.
#[derive(Debug, Clone)]
pub(crate) struct LabelSet {
    pub(crate) text: String,
    pub(crate) pairs: Vec<(String, String)>,
}

impl LabelSet {
    /// Sorts `pairs` by name, leaves out empty values and writes the text.
    pub(crate) fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = String::with_capacity(
            2 + pairs
                .iter()
                .map(|(n, v)| n.len() + v.len() + 5)
                .sum::<usize>(),
        );
        text.push('{');
        for (i, (name, value)) in pairs.iter().enumerate() {
            if i > 0 {
                text.push_str(", ");
            }
            text.push_str(name);
            text.push('=');
            quote_into(&mut text, value);
        }
        text.push('}');
        LabelSet { text, pairs }
    }
}

impl PartialEq for LabelSet {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for LabelSet {}

impl Hash for LabelSet {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

/// True for a valid Prometheus/Loki label name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Appends `value` as a Go double-quoted string literal that `strconv.Unquote` (and so
/// Loki's label parser) turns back into exactly `value`.
///
/// Rust's `{:?}` cannot be used: it writes `\u{1b}`, which Go rejects. Control characters
/// get Go's short escapes or `\xNN` (only below 0x80, where a byte and a character agree);
/// C1 controls, the Unicode line and paragraph separators and U+FFFD get `\uNNNN`; everything else
/// is written as is, which Go accepts for any valid UTF-8.
pub(crate) fn quote_into(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            // U+FFFD written raw decodes as Go's `utf8.RuneError`, which the PromQL lexer
            // behind Loki's label parser rejects ("invalid UTF-8 rune"); escaped, it is fine.
            c if ('\u{80}'..='\u{9f}').contains(&c)
                || c == '\u{2028}'
                || c == '\u{2029}'
                || c == '\u{fffd}' =>
            {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Cuts `s` to at most `max` bytes at a character boundary.
pub(crate) fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A record's value of `name`: the field's text, or for `level` and `target` without such a
/// field, the record's level (lowercase) or target.
fn field_text(record: &RecordRef<'_>, name: &str) -> Option<String> {
    match record.field(name) {
        Some(v @ (ValueRef::Str(_) | ValueRef::Text(_))) => v.text().map(Cow::into_owned),
        Some(v) => Some(v.to_string()),
        None if name == "level" => Some(record.level().as_str().to_ascii_lowercase()),
        None if name == "target" => Some(record.target().to_string()),
        None => None,
    }
}

/// Appends the raw value of `name` to a cache key: `-` when absent, else its length in
/// bytes, `:` and the text, so no two combinations of values make the same key.
fn cache_key(key: &mut String, record: &RecordRef<'_>, name: &str) {
    let start = key.len();
    key.push_str("000000000:");
    let body = key.len();
    let present = match record.field(name) {
        Some(v @ (ValueRef::Str(_) | ValueRef::Text(_))) => {
            key.push_str(&v.text().unwrap_or_default());
            true
        }
        Some(v) => write!(key, "{v}").is_ok(),
        None if name == "level" => {
            key.push_str(record.level().as_str());
            true
        }
        None if name == "target" => {
            key.push_str(record.target());
            true
        }
        None => false,
    };
    if present {
        let mut n = key.len() - body;
        let mut digits = [b'0'; 9];
        for d in digits.iter_mut().rev() {
            *d = b'0' + u8::try_from(n % 10).unwrap_or(0);
            n /= 10;
        }
        // ASCII digits are always UTF-8.
        key.replace_range(
            start..start + 9,
            std::str::from_utf8(&digits).unwrap_or("?"),
        );
    } else {
        key.truncate(start);
        key.push('-');
    }
}

/// Why a record got no label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyStreams;

/// Turns records into label sets and structured metadata.
#[derive(Debug)]
pub(crate) struct Labeler {
    statics: Vec<(String, String)>,
    static_set: Arc<LabelSet>,
    dynamic: Vec<String>,
    metadata: Vec<String>,
    max_streams: usize,
    seen: HashSet<Arc<LabelSet>>,
    /// Label sets by the raw values of the dynamic fields, so a known combination costs
    /// no allocation.
    cache: HashMap<String, Arc<LabelSet>>,
    key: String,
    /// The last key and its set: consecutive records mostly share their labels, and
    /// comparing two short strings is cheaper than hashing one.
    last: Option<(String, Arc<LabelSet>)>,
}

impl Labeler {
    /// `statics`, `dynamic` and `metadata` are checked by the builder.
    pub(crate) fn new(
        statics: Vec<(String, String)>,
        dynamic: Vec<String>,
        metadata: Vec<String>,
        max_streams: usize,
    ) -> Self {
        let static_set = Arc::new(LabelSet::new(statics.clone()));
        Labeler {
            statics,
            static_set,
            dynamic,
            metadata,
            max_streams,
            seen: HashSet::new(),
            cache: HashMap::new(),
            key: String::new(),
            last: None,
        }
    }

    /// The record's label set. A set never seen before is refused once the guard holds
    /// `max_streams` of them; the static set alone always passes.
    pub(crate) fn labels_for(
        &mut self,
        record: &RecordRef<'_>,
    ) -> Result<Arc<LabelSet>, TooManyStreams> {
        if self.dynamic.is_empty() {
            return Ok(Arc::clone(&self.static_set));
        }
        self.key.clear();
        for name in &self.dynamic {
            cache_key(&mut self.key, record, name);
        }
        if let Some((key, set)) = &self.last {
            if *key == self.key {
                return Ok(Arc::clone(set));
            }
        }
        if let Some(set) = self.cache.get(&self.key) {
            let set = Arc::clone(set);
            self.last = Some((self.key.clone(), Arc::clone(&set)));
            return Ok(set);
        }
        let set = self.resolve(record)?;
        // Distinct raw values can make one label set (cut values): bound the cache anyway.
        if self.cache.len() >= 4 * self.max_streams.max(1) {
            self.cache.clear();
        }
        self.cache.insert(self.key.clone(), Arc::clone(&set));
        Ok(set)
    }

    /// The label set for a combination of values not in the cache.
    fn resolve(&mut self, record: &RecordRef<'_>) -> Result<Arc<LabelSet>, TooManyStreams> {
        let mut pairs = self.statics.clone();
        for name in &self.dynamic {
            if let Some(mut value) = field_text(record, name) {
                truncate_at_char(&mut value, MAX_LABEL_VALUE);
                pairs.push((name.clone(), value));
            }
        }
        let set = LabelSet::new(pairs);
        if set == *self.static_set {
            return Ok(Arc::clone(&self.static_set));
        }
        if let Some(known) = self.seen.get(&set) {
            return Ok(Arc::clone(known));
        }
        if self.seen.len() >= self.max_streams {
            return Err(TooManyStreams);
        }
        let set = Arc::new(set);
        self.seen.insert(Arc::clone(&set));
        Ok(set)
    }

    /// Appends the record's structured metadata, in the configured order, encoded as an
    /// entry's `structuredMetadata` fields (`encode::put_metadata`), then the record's
    /// OpenTelemetry ids as `trace_id` and `span_id` (lowercase hex, as Loki's OTLP
    /// ingestion stores them; a record that carries ids takes those names from them, not
    /// from a configured field of the same name). Pairs that would take the entry past
    /// Loki's 64 KiB limit are left out. Costs nothing when no metadata field is configured
    /// and the record carries no ids.
    #[inline]
    pub(crate) fn metadata_into(&self, record: &RecordRef<'_>, out: &mut Vec<u8>) {
        let ids = record.trace_ids();
        if ids.is_none() && self.metadata.is_empty() {
            return;
        }
        self.metadata_of(record, ids, out);
    }

    /// [`metadata_into`](Self::metadata_into) for a record with some.
    fn metadata_of(&self, record: &RecordRef<'_>, ids: Option<TraceIds>, out: &mut Vec<u8>) {
        let mut size = 0;
        if let Some(ids) = ids {
            let (trace, span) = ids.hex();
            // Hex digits are ASCII, so always UTF-8.
            let trace = std::str::from_utf8(&trace).unwrap_or_default();
            let span = std::str::from_utf8(&span).unwrap_or_default();
            size += TRACE_ID.len() + trace.len() + SPAN_ID.len() + span.len();
            encode::put_metadata(out, TRACE_ID, trace);
            encode::put_metadata(out, SPAN_ID, span);
        }
        for name in &self.metadata {
            if ids.is_some() && (name == TRACE_ID || name == SPAN_ID) {
                continue;
            }
            let Some(value) = field_text(record, name) else {
                continue;
            };
            if size + name.len() + value.len() > MAX_METADATA_BYTES {
                continue;
            }
            size += name.len() + value.len();
            encode::put_metadata(out, name, &value);
        }
    }
}

/// The structured-metadata names of a record's OpenTelemetry ids (Loki's OTLP names).
pub(crate) const TRACE_ID: &str = "trace_id";
/// See [`TRACE_ID`].
pub(crate) const SPAN_ID: &str = "span_id";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use tracing::Level;

    fn quoted(s: &str) -> String {
        let mut out = String::new();
        quote_into(&mut out, s);
        out
    }

    #[test]
    fn plain_values_are_just_quoted() {
        assert_eq!(quoted("demo"), "\"demo\"");
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn control_characters_use_go_escapes_not_rust_ones() {
        assert_eq!(quoted("\n\r\t\u{7}\u{8}\u{b}\u{c}"), r#""\n\r\t\a\b\v\f""#);
        assert_eq!(quoted("\u{1b}\u{0}\u{7f}"), r#""\x1b\x00\x7f""#);
        assert!(!quoted("\u{1b}").contains("\\u{"));
    }

    #[test]
    fn c1_controls_and_separators_use_four_digit_escapes() {
        assert_eq!(quoted("\u{85}\u{2028}"), r#""\u0085\u2028""#);
    }

    #[test]
    fn the_replacement_character_is_escaped_since_promql_rejects_it_raw() {
        assert_eq!(quoted("a\u{fffd}b"), r#""a\ufffdb""#);
    }

    #[test]
    fn other_unicode_is_written_as_is() {
        assert_eq!(quoted("é😀日本"), "\"é😀日本\"");
    }

    #[test]
    fn label_sets_are_sorted_and_drop_empty_values() {
        let set = LabelSet::new(vec![
            ("env".into(), "dev".into()),
            ("app".into(), "demo".into()),
            ("x".into(), String::new()),
        ]);
        assert_eq!(set.text, r#"{app="demo", env="dev"}"#);
        assert_eq!(set.pairs.len(), 2);
    }

    #[test]
    fn names_follow_the_prometheus_grammar() {
        assert!(valid_name("app"));
        assert!(valid_name("_x9"));
        assert!(!valid_name(""));
        assert!(!valid_name("9a"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name("é"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "aé".to_string();
        truncate_at_char(&mut s, 2);
        assert_eq!(s, "a");
    }

    fn labeler(dynamic: &[&str], max_streams: usize) -> Labeler {
        Labeler::new(
            vec![("app".into(), "demo".into())],
            dynamic.iter().map(|s| (*s).to_string()).collect(),
            vec!["trace_id".into()],
            max_streams,
        )
    }

    #[test]
    fn dynamic_labels_come_from_fields_and_level() {
        let mut l = labeler(&["level", "region"], 10);
        let r = Record::new(Level::WARN, "m").with_field("region", "eu");
        let set = l.labels_for(&RecordRef::Owned(&r)).unwrap();
        assert_eq!(set.text, r#"{app="demo", level="warn", region="eu"}"#);
    }

    #[test]
    fn a_missing_field_leaves_the_label_out() {
        let mut l = labeler(&["region"], 10);
        let set = l
            .labels_for(&RecordRef::Owned(&Record::new(Level::INFO, "m")))
            .unwrap();
        assert_eq!(set.text, r#"{app="demo"}"#);
    }

    #[test]
    fn long_values_are_cut_to_loki_limit() {
        let mut l = labeler(&["region"], 10);
        let r = Record::new(Level::INFO, "m").with_field("region", "x".repeat(5000));
        let set = l.labels_for(&RecordRef::Owned(&r)).unwrap();
        assert_eq!(set.pairs[1].1.len(), MAX_LABEL_VALUE);
    }

    #[test]
    fn the_stream_guard_refuses_new_sets_but_not_known_ones() {
        let mut l = labeler(&["n"], 2);
        let rec = |n: u64| Record::new(Level::INFO, "m").with_field("n", n);
        assert!(l.labels_for(&RecordRef::Owned(&rec(1))).is_ok());
        assert!(l.labels_for(&RecordRef::Owned(&rec(2))).is_ok());
        assert_eq!(
            l.labels_for(&RecordRef::Owned(&rec(3))),
            Err(TooManyStreams)
        );
        assert!(l.labels_for(&RecordRef::Owned(&rec(1))).is_ok());
        assert!(l
            .labels_for(&RecordRef::Owned(&Record::new(Level::INFO, "static only")))
            .is_ok());
    }

    #[test]
    fn cache_keys_tell_every_combination_apart() {
        let key = |a: Option<&'static str>, b: Option<&'static str>| {
            let mut r = Record::new(Level::INFO, "m");
            if let Some(a) = a {
                r = r.with_field("a", a);
            }
            if let Some(b) = b {
                r = r.with_field("b", b);
            }
            let mut k = String::new();
            cache_key(&mut k, &RecordRef::Owned(&r), "a");
            cache_key(&mut k, &RecordRef::Owned(&r), "b");
            k
        };
        let keys = [
            key(Some("x:"), Some("")),
            key(Some(""), Some(":x")),
            key(Some("x"), None),
            key(None, Some("x")),
            key(Some("-"), None),
            key(None, None),
        ];
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn cached_label_sets_match_fresh_ones() {
        let mut l = labeler(&["region"], 10);
        let r = Record::new(Level::INFO, "m").with_field("region", "eu");
        let first = l.labels_for(&RecordRef::Owned(&r)).unwrap();
        let again = l.labels_for(&RecordRef::Owned(&r)).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
    }

    #[test]
    fn metadata_comes_from_fields_in_order() {
        let l = labeler(&[], 1);
        let r = Record::new(Level::INFO, "m").with_field("trace_id", "abc");
        let mut md = Vec::new();
        l.metadata_into(&RecordRef::Owned(&r), &mut md);
        let mut want = Vec::new();
        encode::put_metadata(&mut want, "trace_id", "abc");
        assert_eq!(md, want);
    }

    #[test]
    fn metadata_over_the_size_limit_is_left_out() {
        let l = labeler(&[], 1);
        let r =
            Record::new(Level::INFO, "m").with_field("trace_id", "x".repeat(MAX_METADATA_BYTES));
        let mut md = Vec::new();
        l.metadata_into(&RecordRef::Owned(&r), &mut md);
        assert!(md.is_empty());
    }

    #[test]
    fn trace_ids_become_metadata_and_take_their_names_from_a_field() {
        let l = labeler(&[], 1);
        let ids = crate::TraceIds::new([0xab; 16], [0x01; 8]).unwrap();
        let r = Record::new(Level::INFO, "m")
            .with_field("trace_id", "from a field")
            .with_trace_ids(ids);
        let mut md = Vec::new();
        l.metadata_into(&RecordRef::Owned(&r), &mut md);
        let mut want = Vec::new();
        encode::put_metadata(&mut want, "trace_id", &"ab".repeat(16));
        encode::put_metadata(&mut want, "span_id", &"01".repeat(8));
        assert_eq!(md, want);
    }

    #[test]
    fn trace_ids_are_never_labels() {
        // Not even labels taken from fields of those names: the ids are not fields.
        let mut l = labeler(&["trace_id", "span_id"], 10);
        let ids = crate::TraceIds::new([0xab; 16], [0x01; 8]).unwrap();
        let r = Record::new(Level::INFO, "m").with_trace_ids(ids);
        let set = l.labels_for(&RecordRef::Owned(&r)).unwrap();
        assert!(
            !set.text.contains("trace_id") && !set.text.contains("abab"),
            "{}",
            set.text
        );
    }
}
