//! What the receiver accepted and the requests it handled, for assertions.

use std::collections::{HashMap, HashSet};

use super::decode::RawEntry;

/// One log entry the receiver accepted (stored), with the stream and tenant it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedEntry {
    /// The tenant: the `X-Scope-OrgID` header with auth on, `fake` with auth off.
    pub tenant: String,
    /// The stream's canonical label set, e.g. `{app="demo", env="dev"}`.
    pub stream: String,
    /// The stream's labels, sorted by name, empty values dropped.
    pub labels: Vec<(String, String)>,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The log line.
    pub line: String,
    /// Structured metadata. From a protobuf body, in the order sent (a repeated name kept
    /// each time); from a JSON body, ordered by name, a repeated name keeping only its last
    /// value (the JSON object is read as a map, so its order is not kept).
    pub structured_metadata: Vec<(String, String)>,
}

impl ReceivedEntry {
    /// The value of the stream label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        find(&self.labels, name)
    }

    /// The value of the structured-metadata pair `name`, if present.
    pub fn metadata(&self, name: &str) -> Option<&str> {
        find(&self.structured_metadata, name)
    }
}

fn find<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One stream of one tenant: its labels and the entries accepted for it, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedStream {
    /// The canonical label set, e.g. `{app="demo"}`.
    pub labels: String,
    /// The entries accepted for this stream, in arrival order.
    pub entries: Vec<ReceivedEntry>,
}

/// One HTTP request the receiver handled, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceivedRequest {
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The status answered, or 0 when the connection was dropped without a response.
    pub status: u16,
    /// The tenant the request was accounted to (empty when rejected before that was known).
    pub tenant: String,
    /// The `X-Scope-OrgID` header as sent.
    pub org_id: Option<String>,
    /// The `Content-Type` header as sent.
    pub content_type: Option<String>,
    /// The `Content-Encoding` header as sent.
    pub content_encoding: Option<String>,
    /// The `User-Agent` header as sent.
    pub user_agent: Option<String>,
    /// Bytes of the body as received (before decompression).
    pub bytes: u64,
    /// Entries stored from this request.
    pub accepted: u64,
    /// Entries rejected by validation (not counting silently dropped duplicates).
    pub rejected: u64,
    /// The error text answered (without the trailing newline); empty on success.
    pub error: String,
    /// True when a scripted fault decided the outcome.
    pub fault: bool,
    /// True when the client had gone away (given up, timed out) while the request was held
    /// by a [`Fault::delay`](super::Fault::delay) or latency: the request was still handled
    /// and recorded with the status it would have been answered, which the client never saw.
    pub client_gone: bool,
}

/// Key of one entry for exact-duplicate detection.
type EntryKey = (i128, String, Vec<(String, String)>);

#[derive(Default)]
struct StreamState {
    newest: Option<i128>,
    seen: HashSet<EntryKey>,
}

/// What appending one stream's valid entries did.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    pub(crate) stored: u64,
    /// `(timestamp, cutoff)` of each entry refused as too far behind.
    pub(crate) too_far: Vec<(i128, i128)>,
}

/// The records, guarded by one lock in the receiver.
#[derive(Default)]
pub(crate) struct Store {
    entries: Vec<ReceivedEntry>,
    streams: HashMap<(String, String), StreamState>,
    requests: Vec<ReceivedRequest>,
}

impl Store {
    /// The ingester's step: drop exact duplicates, refuse entries more than `window_ns` behind
    /// the stream's newest, store the rest in order.
    pub(crate) fn append(
        &mut self,
        tenant: &str,
        stream: &str,
        labels: &[(String, String)],
        entries: Vec<RawEntry>,
        window_ns: i128,
    ) -> Appended {
        let state = self
            .streams
            .entry((tenant.to_owned(), stream.to_owned()))
            .or_default();
        let mut out = Appended::default();
        for e in entries {
            let key = (e.ts_ns, e.line, e.metadata);
            if state.seen.contains(&key) {
                continue;
            }
            if let Some(newest) = state.newest {
                let cutoff = newest - window_ns;
                if key.0 < cutoff {
                    out.too_far.push((key.0, cutoff));
                    continue;
                }
            }
            state.newest = Some(state.newest.map_or(key.0, |n| n.max(key.0)));
            self.entries.push(ReceivedEntry {
                tenant: tenant.to_owned(),
                stream: stream.to_owned(),
                labels: labels.to_vec(),
                timestamp_ns: clamp_i64(key.0),
                line: key.1.clone(),
                structured_metadata: key.2.clone(),
            });
            state.seen.insert(key);
            out.stored += 1;
        }
        out
    }

    pub(crate) fn record_request(&mut self, r: ReceivedRequest) {
        self.requests.push(r);
    }

    pub(crate) fn entries(&self) -> &[ReceivedEntry] {
        &self.entries
    }

    pub(crate) fn requests(&self) -> &[ReceivedRequest] {
        &self.requests
    }

    /// The tenant's streams in order of first arrival.
    pub(crate) fn streams(&self, tenant: &str) -> Vec<ReceivedStream> {
        let mut out: Vec<ReceivedStream> = Vec::new();
        for e in self.entries.iter().filter(|e| e.tenant == tenant) {
            match out.iter_mut().find(|s| s.labels == e.stream) {
                Some(s) => s.entries.push(e.clone()),
                None => out.push(ReceivedStream {
                    labels: e.stream.clone(),
                    entries: vec![e.clone()],
                }),
            }
        }
        out
    }
}

fn clamp_i64(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(ts_ns: i128, line: &str) -> RawEntry {
        RawEntry {
            ts_ns,
            line: line.into(),
            metadata: vec![],
        }
    }

    #[test]
    fn exact_duplicates_are_dropped_silently() {
        let mut s = Store::default();
        let got = s.append(
            "t",
            "{a=\"b\"}",
            &[],
            vec![raw(1, "x"), raw(1, "x"), raw(1, "y")],
            10,
        );
        assert_eq!(got.stored, 2);
        assert!(got.too_far.is_empty());
    }

    #[test]
    fn entries_too_far_behind_the_newest_are_refused() {
        let mut s = Store::default();
        let got = s.append(
            "t",
            "s",
            &[],
            vec![raw(100, "a"), raw(90, "b"), raw(89, "c")],
            10,
        );
        assert_eq!(got.stored, 2);
        assert_eq!(got.too_far, vec![(89, 90)]);
    }

    #[test]
    fn streams_are_per_tenant_in_arrival_order() {
        let mut s = Store::default();
        s.append("t", "s2", &[], vec![raw(1, "a")], 10);
        s.append("t", "s1", &[], vec![raw(1, "b")], 10);
        s.append("u", "s1", &[], vec![raw(1, "c")], 10);
        let names: Vec<_> = s.streams("t").into_iter().map(|x| x.labels).collect();
        assert_eq!(names, ["s2", "s1"]);
    }
}
