//! Loki's validation: tenant ids, per-stream label rules and per-entry rules, in Loki's order
//! and with Loki's messages (`pkg/validation/validate.go`, `pkg/distributor/validator.go`).

use std::fmt::Write as _;
use std::time::Duration;

use super::decode::{DecodeLimits, RawEntry};
use super::gotime;
use super::labels;

/// The limits the receiver enforces. Defaults are Loki 3.x's.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_decoded_bytes: usize,
    pub(crate) max_label_names: usize,
    pub(crate) max_label_name_length: usize,
    pub(crate) max_label_value_length: usize,
    pub(crate) max_age: Duration,
    pub(crate) creation_grace_period: Duration,
    pub(crate) max_line_size: usize,
    pub(crate) allow_structured_metadata: bool,
    pub(crate) max_structured_metadata_size: usize,
    pub(crate) max_structured_metadata_entries: usize,
    pub(crate) out_of_order_window: Duration,
    pub(crate) max_returned_errors: usize,
    /// How long a client may take to send a request's headers, and then its body.
    pub(crate) read_timeout: Duration,
    /// The receiver's own caps on one request's structure (Loki has none: it bounds bytes).
    pub(crate) max_streams_per_request: usize,
    pub(crate) max_entries_per_request: usize,
    pub(crate) max_metadata_pairs_per_request: usize,
    /// Connections served at once; more are refused.
    pub(crate) max_connections: usize,
}

impl Limits {
    pub(crate) fn decode(&self) -> DecodeLimits {
        DecodeLimits {
            decoded_bytes: self.max_decoded_bytes,
            streams: self.max_streams_per_request,
            entries: self.max_entries_per_request,
            metadata_pairs: self.max_metadata_pairs_per_request,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 100 << 20,
            max_decoded_bytes: 100 << 20,
            max_label_names: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_age: Duration::from_secs(7 * 24 * 3600),
            creation_grace_period: Duration::from_secs(600),
            max_line_size: 256 * 1024,
            allow_structured_metadata: true,
            max_structured_metadata_size: 64 * 1024,
            max_structured_metadata_entries: 128,
            // Half of Loki's default max chunk age (2 h).
            out_of_order_window: Duration::from_secs(3600),
            max_returned_errors: 10,
            // Loki's `http_server_read_timeout`.
            read_timeout: Duration::from_secs(30),
            // Above what the Loki sink sends by default (65,536 entries, 1000 streams).
            max_streams_per_request: 10_000,
            max_entries_per_request: 100_000,
            max_metadata_pairs_per_request: 500_000,
            max_connections: 256,
        }
    }
}

/// Loki's label that does not count towards the label-name limit.
const SERVICE_NAME_LABEL: &str = "service_name";

/// dskit's `ValidTenantID` for each `|`-separated id, then the single-tenant rule for pushes.
pub(crate) fn tenant(header: &[u8]) -> Result<String, String> {
    let mut ids: Vec<&[u8]> = header.split(|&b| b == b'|').collect();
    for id in &ids {
        valid_tenant_id(id)?;
    }
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        // Every byte was checked to be ASCII above.
        [one] => Ok(String::from_utf8_lossy(one).into_owned()),
        _ => Err("multiple org IDs present".to_owned()),
    }
}

fn valid_tenant_id(id: &[u8]) -> Result<(), String> {
    let ok = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
    if let Some(&bad) = id.iter().find(|&&b| !ok(b)) {
        // Go prints the offending *byte* with %c, so a UTF-8 lead byte shows as Latin-1.
        return Err(format!(
            "tenant ID '{}' contains unsupported character '{}'",
            String::from_utf8_lossy(id),
            char::from(bad)
        ));
    }
    if id.len() > 150 {
        return Err("tenant ID is too long: max 150 characters".to_owned());
    }
    if id == b"." || id == b".." {
        return Err("tenant ID is '.' or '..'".to_owned());
    }
    Ok(())
}

/// The stream-level checks (`ValidateLabels`), on normalised pairs and their canonical text.
pub(crate) fn stream_labels(
    pairs: &[(String, String)],
    stream: &str,
    limits: &Limits,
) -> Result<(), String> {
    if pairs.is_empty() {
        return Err("error at least one label pair is required per stream".to_owned());
    }
    let counted = pairs.len() - usize::from(pairs.iter().any(|(n, _)| n == SERVICE_NAME_LABEL));
    if counted > limits.max_label_names {
        return Err(format!(
            "entry for stream '{stream}' has {counted} label names; limit {}",
            limits.max_label_names
        ));
    }
    let mut last = "";
    for (name, value) in pairs {
        if name.len() > limits.max_label_name_length {
            return Err(format!(
                "stream '{stream}' has label name too long: '{name}'"
            ));
        }
        if value.len() > limits.max_label_value_length {
            return Err(format!(
                "stream '{stream}' has label value too long: '{value}'"
            ));
        }
        if name == last {
            return Err(format!(
                "stream '{stream}' has duplicate label name: '{name}'"
            ));
        }
        last = name;
    }
    Ok(())
}

/// The entry-level checks (`ValidateEntry`) in Loki's order; the first failure is the error.
pub(crate) fn entry(
    e: &RawEntry,
    stream: &str,
    limits: &Limits,
    now_ns: i128,
) -> Result<(), String> {
    let oldest = now_ns - i128::try_from(limits.max_age.as_nanos()).unwrap_or(i128::MAX / 4);
    if e.ts_ns < oldest {
        return Err(format!(
            "entry for stream '{stream}' has timestamp too old: {}, oldest acceptable timestamp is: {}",
            gotime::rfc3339(e.ts_ns),
            gotime::rfc3339(oldest)
        ));
    }
    let newest =
        now_ns + i128::try_from(limits.creation_grace_period.as_nanos()).unwrap_or(i128::MAX / 4);
    if e.ts_ns > newest {
        return Err(format!(
            "entry for stream '{stream}' has timestamp too new: {}",
            gotime::rfc3339(e.ts_ns)
        ));
    }
    if limits.max_line_size != 0 && e.line.len() > limits.max_line_size {
        return Err(format!(
            "Max entry size '{}' bytes exceeded for stream '{stream}' while adding an entry with length '{}' bytes",
            limits.max_line_size,
            e.line.len()
        ));
    }
    if e.metadata.is_empty() {
        return Ok(());
    }
    metadata(e, stream, limits)
}

fn metadata(e: &RawEntry, stream: &str, limits: &Limits) -> Result<(), String> {
    if !limits.allow_structured_metadata {
        return Err(format!("stream '{stream}' includes structured metadata, but this feature is disallowed. Please see `limits_config.allow_structured_metadata` or contact your Loki administrator to enable it."));
    }
    let size: usize = e.metadata.iter().map(|(n, v)| n.len() + v.len()).sum();
    let max_size = limits.max_structured_metadata_size;
    if max_size != 0 && size > max_size {
        return Err(format!("stream '{stream}' has structured metadata too large: '{size}' bytes, limit: '{max_size}' bytes. Please see `limits_config.max_structured_metadata_size` or contact your Loki administrator to increase it."));
    }
    let count = e.metadata.len();
    let max_count = limits.max_structured_metadata_entries;
    if max_count != 0 && count > max_count {
        return Err(format!("stream '{stream}' has too many structured metadata labels: '{count}', limit: '{max_count}'. Please see `limits_config.max_structured_metadata_entries_count` or contact your Loki administrator to increase it."));
    }
    Ok(())
}

/// Errors grouped by text, as Loki's `GroupedErrors` prints them (in first-seen order here,
/// where Go's map order is random).
#[derive(Debug, Default)]
pub(crate) struct Grouped {
    groups: Vec<(String, usize)>,
}

impl Grouped {
    pub(crate) fn add(&mut self, err: String) {
        match self.groups.iter_mut().find(|(e, _)| *e == err) {
            Some((_, n)) => *n += 1,
            None => self.groups.push((err, 1)),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub(crate) fn message(&self) -> String {
        let single = self.groups.len() == 1 && self.groups[0].1 == 1;
        let parts: Vec<String> = self
            .groups
            .iter()
            .map(|(e, n)| {
                if single {
                    e.clone()
                } else {
                    format!("{n} errors like: {e}")
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// The ingester's answer when entries of one stream were too far behind (`errorForFailedEntries`).
pub(crate) fn too_far_behind_message(
    tenant: &str,
    stream: &str,
    failed: &[(i128, i128)],
    total: usize,
    max_listed: usize,
) -> String {
    let mut out = String::new();
    let listed = if max_listed == 0 {
        failed.len()
    } else {
        failed.len().min(max_listed)
    };
    for &(ts, cutoff) in &failed[..listed] {
        let _ = writeln!(
            out,
            "entry with timestamp {} ignored, reason: 'entry too far behind, entry timestamp is: {}, oldest acceptable timestamp is: {}',",
            gotime::go_string(ts),
            gotime::rfc3339(ts),
            gotime::rfc3339(cutoff)
        );
    }
    let _ = write!(
        out,
        "user '{tenant}', total ignored: {} out of {total} for stream: {stream}",
        failed.len()
    );
    out
}

/// Normalises parsed pairs and gives their canonical text.
pub(crate) fn prepare(pairs: labels::Pairs) -> (labels::Pairs, String) {
    let pairs = labels::normalise(pairs);
    let text = labels::canonical(&pairs);
    (pairs, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| ((*a).into(), (*b).into()))
            .collect()
    }

    #[test]
    fn tenant_rules_match_dskit() {
        assert_eq!(tenant(b"team-a").unwrap(), "team-a");
        assert_eq!(tenant(b"a|a").unwrap(), "a");
        assert_eq!(tenant(b"a|b").unwrap_err(), "multiple org IDs present");
        assert_eq!(
            tenant(b"a/b").unwrap_err(),
            "tenant ID 'a/b' contains unsupported character '/'"
        );
        assert_eq!(
            tenant(&[b'a'; 151]).unwrap_err(),
            "tenant ID is too long: max 150 characters"
        );
        assert!(tenant(&[b'a'; 150]).is_ok());
        assert_eq!(tenant(b"..").unwrap_err(), "tenant ID is '.' or '..'");
        assert!(tenant(b"ABCxyz019!-_.*'()").is_ok());
    }

    #[test]
    fn label_count_ignores_service_name() {
        let limits = Limits {
            max_label_names: 1,
            ..Limits::default()
        };
        assert!(stream_labels(&pairs(&[("a", "1"), ("service_name", "x")]), "s", &limits).is_ok());
        let err = stream_labels(&pairs(&[("a", "1"), ("b", "2")]), "s", &limits).unwrap_err();
        assert_eq!(err, "entry for stream 's' has 2 label names; limit 1");
    }

    #[test]
    fn duplicate_names_are_found_after_sorting() {
        let (p, text) = prepare(pairs(&[("b", "1"), ("a", "x"), ("b", "2")]));
        let err = stream_labels(&p, &text, &Limits::default()).unwrap_err();
        assert_eq!(
            err,
            r#"stream '{a="x", b="1", b="2"}' has duplicate label name: 'b'"#
        );
    }

    #[test]
    fn entry_checks_run_in_loki_order() {
        let limits = Limits {
            max_line_size: 1,
            allow_structured_metadata: false,
            ..Limits::default()
        };
        let old = RawEntry {
            ts_ns: 0,
            line: "long".into(),
            metadata: pairs(&[("a", "b")]),
        };
        let now = 1_000_000_000_000_000_000;
        assert!(entry(&old, "s", &limits, now)
            .unwrap_err()
            .contains("timestamp too old"));
        let ok_time = RawEntry { ts_ns: now, ..old };
        assert!(entry(&ok_time, "s", &limits, now)
            .unwrap_err()
            .starts_with("Max entry size '1'"));
        let short = RawEntry {
            line: "x".into(),
            ..ok_time
        };
        assert!(entry(&short, "s", &limits, now)
            .unwrap_err()
            .contains("disallowed"));
    }

    #[test]
    fn grouped_errors_print_like_loki() {
        let mut g = Grouped::default();
        g.add("x".into());
        assert_eq!(g.message(), "x");
        g.add("x".into());
        assert_eq!(g.message(), "2 errors like: x");
        g.add("y".into());
        assert_eq!(g.message(), "2 errors like: x; 1 errors like: y");
    }
}
