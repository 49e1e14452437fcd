//! [`LokiSinkBuilder`]: every option of the Loki sink, checked by `build()`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderName;

use super::disk::{DiskBuffer, Fsync, OpenError, Options, Recovered};
use super::durable::{self, DiskSetup};
use super::http::{clear_text_host, redact_url, Auth, ExtraHeader, HeaderKind, Http, Secret};
use super::labels::{self, Labeler, MAX_LABEL_NAME, MAX_LABEL_NAMES, MAX_LABEL_VALUE};
use super::line::{Lines, TRUNCATION_MARKER};
use super::retry::RetryPolicy;
use super::worker::{self, Config};
use super::{DiskSync, Encoding, LineFormat, LokiSink, LongLines};
use crate::pipe::{self, spawn_worker, Limits, Settings};
use crate::{events, SinkId};

use crate::{Error, OverflowPolicy, Result};

/// How long a writer waits for room in a full queue by default.
const DEFAULT_MAX_BLOCK: Duration = Duration::from_millis(500);
/// How long dropping the last handle waits for the sink to push and close, by default.
const DEFAULT_DROP_TIMEOUT: Duration = Duration::from_secs(2);
/// The disk buffer's byte bound by default.
const DEFAULT_DISK_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// The smallest disk buffer: a few segments of the smallest size.
const MIN_DISK_MAX_BYTES: u64 = 64 * 1024;
/// The oldest entry sent by default: Loki's default `reject_old_samples_max_age` (1 week).
const DEFAULT_MAX_ENTRY_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The prefix of the sink's id when it is not given a [`name`](LokiSinkBuilder::name).
const DEFAULT_NAME: &str = "loki";

/// Loki's push path, added to a base URL.
const PUSH_PATH: &str = "/loki/api/v1/push";
/// Headers the sink sets itself; `header()` refuses them.
const RESERVED: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
];

/// Configures and builds a [`LokiSink`].
///
/// Setters never fail: the first unusable value is reported by [`build`](Self::build), with
/// what to change. `Debug` output never shows a credential: the URL's user name and
/// password and every query value are replaced by `redacted`, and so are the auth settings
/// and every header value but those given to [`public_header`](Self::public_header).
///
/// # Defaults
///
/// [`LokiSink::builder`] starts from these, the one place they are written (a unit test
/// checks the table against the builder). `build()` needs at least one
/// [`label`](Self::label).
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `loki` |
/// | [`label`](Self::label) | none |
/// | [`label_from_field`](Self::label_from_field) | none |
/// | [`metadata_from_field`](Self::metadata_from_field) | none |
/// | [`max_streams`](Self::max_streams) | 1,000 |
/// | [`tenant`](Self::tenant) | none |
/// | [`basic_auth`](Self::basic_auth), [`bearer_token`](Self::bearer_token) | none |
/// | [`header`](Self::header), [`public_header`](Self::public_header), [`secret_header`](Self::secret_header) | none |
/// | [`root_certificate_pem`](Self::root_certificate_pem) | the built-in roots only |
/// | [`encoding`](Self::encoding) | [`Encoding::Protobuf`](crate::Encoding::Protobuf) |
/// | [`line_format`](Self::line_format) | [`LineFormat::Json`](crate::LineFormat::Json) |
/// | [`max_line_bytes`](Self::max_line_bytes) | 256 KiB |
/// | [`long_lines`](Self::long_lines) | [`LongLines::Truncate`](crate::LongLines::Truncate) |
/// | [`batch_max_entries`](Self::batch_max_entries) | 65,536 |
/// | [`batch_max_bytes`](Self::batch_max_bytes) | 1 MiB |
/// | [`batch_wait`](Self::batch_wait) | 1 s |
/// | [`request_timeout`](Self::request_timeout) | 10 s |
/// | [`max_in_flight`](Self::max_in_flight) | 4 |
/// | [`min_backoff`](Self::min_backoff) | 500 ms |
/// | [`max_backoff`](Self::max_backoff) | 5 min |
/// | [`max_retries`](Self::max_retries) | 10 |
/// | [`max_retry_after`](Self::max_retry_after) | 5 min |
/// | [`overflow`](Self::overflow) | [`OverflowPolicy::Block`](crate::OverflowPolicy::Block) for at most 500 ms |
/// | [`queue_capacity`](Self::queue_capacity) | 65,536 records |
/// | [`queue_max_bytes`](Self::queue_max_bytes) | 2 MiB |
/// | [`drop_timeout`](Self::drop_timeout) | 2 s |
/// | [`disk_buffer`](Self::disk_buffer) | none |
/// | [`disk_buffer_max_bytes`](Self::disk_buffer_max_bytes) | 256 MiB |
/// | [`disk_buffer_sync`](Self::disk_buffer_sync) | [`DiskSync::Interval`](crate::DiskSync::Interval) of 1 s |
/// | [`max_entry_age`](Self::max_entry_age) | 7 days |
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::{Encoding, LokiSink};
///
/// let sink = LokiSink::builder("https://logs.example.com")
///     .label("service_name", "api")
///     .label("env", "prod")
///     .label_from_field("level")
///     .metadata_from_field("trace_id")
///     .tenant("team-a")
///     .basic_auth("team-a", "s3cret")
///     .encoding(Encoding::Protobuf)
///     .batch_wait(Duration::from_millis(500))
///     .max_retries(5)
///     .build()?;
/// assert!(!format!("{sink:?}").contains("s3cret"));
/// # Ok::<(), sinkwatch::Error>(())
/// ```
#[must_use = "a builder does nothing until `build()` is called"]
pub struct LokiSinkBuilder {
    url: String,
    name: Option<String>,
    labels: Vec<(String, String)>,
    label_fields: Vec<String>,
    metadata_fields: Vec<String>,
    max_streams: usize,
    http: Http,
    encoding: Encoding,
    line_format: LineFormat,
    max_line_bytes: usize,
    long_lines: LongLines,
    batch_max_entries: usize,
    batch_max_bytes: usize,
    batch_wait: Duration,
    request_timeout: Duration,
    max_in_flight: usize,
    retry: RetryPolicy,
    overflow: OverflowPolicy,
    queue_capacity: usize,
    queue_max_bytes: usize,
    drop_timeout: Duration,
    disk_dir: Option<PathBuf>,
    disk_max_bytes: u64,
    disk_sync: DiskSync,
    max_entry_age: Duration,
    error: Option<Error>,
}

impl fmt::Debug for LokiSinkBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LokiSinkBuilder")
            .field("url", &redact_url(&self.url))
            .field("labels", &self.labels)
            .field("label_fields", &self.label_fields)
            .field("metadata_fields", &self.metadata_fields)
            .field("http", &self.http)
            .field("encoding", &self.encoding)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("batch_wait", &self.batch_wait)
            .field("request_timeout", &self.request_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("retry", &self.retry)
            .field("overflow", &self.overflow)
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("drop_timeout", &self.drop_timeout)
            .finish_non_exhaustive()
    }
}

impl LokiSinkBuilder {
    pub(super) fn new(url: String) -> Self {
        LokiSinkBuilder {
            url,
            name: None,
            labels: Vec::new(),
            label_fields: Vec::new(),
            metadata_fields: Vec::new(),
            max_streams: 1000,
            http: Http::default(),
            encoding: Encoding::Protobuf,
            line_format: LineFormat::Json,
            max_line_bytes: 256 * 1024,
            long_lines: LongLines::Truncate,
            batch_max_entries: 65_536,
            batch_max_bytes: 1024 * 1024,
            batch_wait: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_in_flight: worker::DEFAULT_IN_FLIGHT,
            retry: RetryPolicy::default(),
            overflow: OverflowPolicy::Block(DEFAULT_MAX_BLOCK),
            queue_capacity: 65_536,
            queue_max_bytes: 2 * 1024 * 1024,
            drop_timeout: DEFAULT_DROP_TIMEOUT,
            disk_dir: None,
            disk_max_bytes: DEFAULT_DISK_MAX_BYTES,
            disk_sync: DiskSync::default(),
            max_entry_age: DEFAULT_MAX_ENTRY_AGE,
            error: None,
        }
    }

    /// Keeps the first error only: it is the one `build()` reports.
    fn fail(&mut self, message: String) {
        if self.error.is_none() {
            self.error = Some(Error::config(message));
        }
    }

    /// Names the sink in its id (`{name}-{n}`) as its events carry it. Default: see
    /// [the table](Self#defaults).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a static label, on every stream. `build()` requires at least one with a
    /// non-empty value, since Loki rejects a stream without labels. Names must
    /// match `[A-Za-z_][A-Za-z0-9_]*` and not start with `__` (reserved); values are at most
    /// 2048 bytes, any Unicode.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        if let Err(e) = self.check_label_name(&name, "label") {
            self.fail(e);
        } else if value.len() > MAX_LABEL_VALUE {
            self.fail(format!(
                "the value of label {name:?} is {} bytes; Loki accepts at most {MAX_LABEL_VALUE}",
                value.len()
            ));
        }
        self.labels.push((name, value));
        self
    }

    /// Adds a label whose value is taken from each record's field `name` (its text, cut to
    /// 2048 bytes; the record's level in lowercase or its target for `level` and `target`
    /// when there is no such field). A record without the field has no such label. Each
    /// distinct label set is a Loki stream: see [`max_streams`](Self::max_streams).
    pub fn label_from_field(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if let Err(e) = self.check_label_name(&name, "label_from_field") {
            self.fail(e);
        }
        self.label_fields.push(name);
        self
    }

    /// Adds structured metadata taken from each record's field `name` (its text; `level` and
    /// `target` as for [`label_from_field`](Self::label_from_field)). Pairs that would take
    /// an entry past Loki's 64 KiB limit are left out.
    pub fn metadata_from_field(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !labels::valid_name(&name) {
            self.fail(format!(
                "metadata_from_field({name:?}): the name must match [A-Za-z_][A-Za-z0-9_]*"
            ));
        } else if self.metadata_fields.contains(&name) {
            self.fail(format!("metadata_from_field({name:?}) is given twice"));
        }
        self.metadata_fields.push(name);
        self
    }

    fn check_label_name(&self, name: &str, what: &str) -> std::result::Result<(), String> {
        if !labels::valid_name(name) || name.len() > MAX_LABEL_NAME {
            return Err(format!(
                "{what}({name:?}): a label name must match [A-Za-z_][A-Za-z0-9_]* (at most {MAX_LABEL_NAME} bytes)"
            ));
        }
        if name.starts_with("__") {
            return Err(format!(
                "{what}({name:?}): names starting with __ are reserved by Loki"
            ));
        }
        let taken = self.labels.iter().any(|(n, _)| n == name)
            || self.label_fields.iter().any(|n| n == name);
        if taken {
            return Err(format!("{what}({name:?}): the label name is already used"));
        }
        Ok(())
    }

    /// The most distinct label sets made by [`label_from_field`](Self::label_from_field)
    /// over the sink's life. A record that would make one more is dropped, reported with
    /// reason `too_many_streams`, so a high-cardinality field cannot flood Loki with streams.
    /// Default: see [the table](Self#defaults).
    pub fn max_streams(mut self, streams: usize) -> Self {
        self.max_streams = streams;
        self
    }

    /// Sends `X-Scope-OrgID: tenant` (Loki multi-tenancy). Allowed: ASCII letters, digits and `!-_.*'()`, at most 150 bytes, not `.` or `..`.
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        let tenant = tenant.into();
        let ok = |b: u8| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b);
        if tenant.is_empty()
            || tenant.len() > 150
            || !tenant.bytes().all(ok)
            || tenant == "."
            || tenant == ".."
        {
            self.fail(format!(
                "tenant({tenant:?}): Loki accepts 1 to 150 of the characters A-Z a-z 0-9 ! - _ . * ' ( ), and not . or .."
            ));
        }
        self.http.tenant = Some(tenant);
        self
    }

    /// HTTP basic auth (replaces any bearer token). Neither the user nor the password appears in Debug output, events or errors. Credentials in
    /// the URL (`https://user:pass@host`) are used the same way.
    ///
    /// Credentials for a plain `http://` URL to a host that is not loopback cross the
    /// network in clear text: `build()` then emits an `insecure_credentials` warning.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.http.auth = Auth::Basic {
            user: Secret(user.into()),
            password: Secret(password.into()),
        };
        self
    }

    /// `Authorization: Bearer <token>` (replaces any basic auth). The token never appears in Debug output, events or errors.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.http.auth = Auth::Bearer(Secret(token.into()));
        self
    }

    /// Adds a header to every request, besides the sink's own. Its value
    /// never appears in Debug output, events or errors, since custom headers often carry
    /// an API key; use [`public_header`](Self::public_header) for a value you want to see
    /// there, [`secret_header`](Self::secret_header) for `Authorization` or a value that
    /// must also never be HPACK-indexed, and [`tenant`](Self::tenant) and the auth methods
    /// for those headers. Like credentials, it makes `build()` warn
    /// (`insecure_credentials`) when the URL is plain `http://` to a host that is not
    /// loopback.
    pub fn header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add_header(&name.into(), value.into(), HeaderKind::Hidden)
    }

    /// Adds a header whose value you declare not secret (`X-Team: payments`, say): unlike
    /// [`header`](Self::header), its value shows in Debug output, and it never makes
    /// `build()` warn about clear-text credentials. Same rules for names as `header`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::LokiSink;
    ///
    /// let builder = LokiSink::builder("https://logs.example.com")
    ///     .label("app", "demo")
    ///     .public_header("X-Team", "payments")
    ///     .header("X-Api-Key", "k3y");
    /// let debug = format!("{builder:?}");
    /// assert!(debug.contains("payments") && !debug.contains("k3y"));
    /// ```
    pub fn public_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add_header(&name.into(), value.into(), HeaderKind::Public)
    }

    /// Adds a header whose value never appears in Debug output, events or errors, and is
    /// marked sensitive (HTTP/2 never indexes it): an API key, or `Authorization` in a
    /// scheme the auth methods do not cover.
    pub fn secret_header(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.add_header(&name.into(), value.into(), HeaderKind::Secret)
    }

    fn add_header(mut self, name: &str, value: String, kind: HeaderKind) -> Self {
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            self.fail(format!(
                "header({name:?}): the sink sets this header itself"
            ));
        } else if lower == "x-scope-orgid" {
            self.fail(format!(
                "header({name:?}): use tenant() for the tenant header"
            ));
        } else if lower == "authorization" && kind != HeaderKind::Secret {
            self.fail(format!(
                "header({name:?}): use basic_auth(), bearer_token() or secret_header()"
            ));
        }
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => self.http.headers.push(ExtraHeader {
                name,
                value: Secret(value),
                kind,
            }),
            Err(_) => self.fail(format!("header({name:?}): not a valid HTTP header name")),
        }
        self
    }

    /// Trusts extra root certificates (PEM, one or a bundle) for HTTPS, besides the built-in Mozilla roots:
    /// for a Loki behind a private CA. Default: see [the table](Self#defaults).
    pub fn root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        match reqwest::Certificate::from_pem_bundle(pem.as_ref()) {
            Ok(certs) if !certs.is_empty() => self.http.roots.extend(certs),
            _ => self.fail("root_certificate_pem: no PEM certificate found".to_owned()),
        }
        self
    }

    /// The request encoding. Default: see [the table](Self#defaults).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// What each entry's line holds. Default: see [the table](Self#defaults).
    pub fn line_format(mut self, format: LineFormat) -> Self {
        self.line_format = format;
        self
    }

    /// The longest line sent, in bytes. At least 64, and at most half of
    /// [`batch_max_bytes`](Self::batch_max_bytes). The default ([the table](Self#defaults))
    /// is Loki's own default limit.
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// What happens to longer lines. Default: see [the table](Self#defaults).
    pub fn long_lines(mut self, policy: LongLines) -> Self {
        self.long_lines = policy;
        self
    }

    /// The most entries in one request. Default: see [the table](Self#defaults).
    pub fn batch_max_entries(mut self, entries: usize) -> Self {
        self.batch_max_entries = entries;
        self
    }

    /// The largest request body on the wire, in bytes: never exceeded, even when a backlog
    /// is pushed after an outage. At least 1024. Default: see [the table](Self#defaults).
    pub fn batch_max_bytes(mut self, bytes: usize) -> Self {
        self.batch_max_bytes = bytes;
        self
    }

    /// How long the first entry of a batch waits for others before the batch is sent. A
    /// full batch or a `flush()` sends at once. Default: see [the table](Self#defaults).
    pub fn batch_wait(mut self, wait: Duration) -> Self {
        self.batch_wait = wait;
        self
    }

    /// The timeout of each request (connecting, sending, and reading the response); a
    /// timed-out request is retried. Must not be zero. Default: see [the table](Self#defaults).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many push requests may be in flight at once. With more than one (the default:
    /// [the table](Self#defaults)), the next batch is encoded and sent while earlier ones
    /// wait for Loki. Entries of one stream may then
    /// arrive out of order by a few requests, which Loki accepts since 2.4
    /// (`unordered_writes`, the default); for an older Loki, or one configured for ordered
    /// writes, use 1. While a request is retrying (an outage, an overload), only one is in
    /// flight, whatever this says. Must be at least 1.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests;
        self
    }

    /// The first retry's backoff: retry `n` waits a random time in `[min·2^(n−1), min·2^n)`,
    /// capped at [`max_backoff`](Self::max_backoff). Must not be zero. Default: see [the table](Self#defaults).
    pub fn min_backoff(mut self, backoff: Duration) -> Self {
        self.retry.min_backoff = backoff;
        self
    }

    /// The longest backoff. At least [`min_backoff`](Self::min_backoff). Default: see [the table](Self#defaults).
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.retry.max_backoff = backoff;
        self
    }

    /// Retries after the first attempt (so `max_retries + 1` attempts in all) before a
    /// request is dropped with reason `retries_exhausted`. Not for requests read from a
    /// [`disk_buffer`](Self::disk_buffer), which are retried for as long as Loki fails.
    /// Default: see [the table](Self#defaults).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// The longest `Retry-After` honoured: a longer one waits this long. Default: see [the table](Self#defaults).
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.retry.max_retry_after = cap;
        self
    }

    /// What a full queue does with a new record. The default ([the table](Self#defaults))
    /// is [`OverflowPolicy::Block`] with a short bound: a healthy Loki takes a burst at its
    /// own pace and loses nothing, but an outage lasts minutes, so a full queue costs each
    /// caller at most one short wait, and then the sink sheds load (reporting every record
    /// it drops, reason `stalled`) until it has pushed half its queue.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.overflow = policy;
        self
    }

    /// The most records queued (waiting for a batch). Default: see [the table](Self#defaults).
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records;
        self
    }

    /// The most bytes the queue holds: events captured by [`SinkLayer`](crate::SinkLayer)
    /// count at their compact size (about 0.6 of the JSON line they become), records
    /// written by hand at [`Record::approx_size`](crate::Record::approx_size). Records the
    /// worker has taken count until they are in a batch. Besides the queue, the sink holds
    /// the batch being filled and up to [`max_in_flight`](Self::max_in_flight) encoded
    /// requests, each at most [`batch_max_bytes`](Self::batch_max_bytes). Default: see [the table](Self#defaults).
    pub fn queue_max_bytes(mut self, bytes: usize) -> Self {
        self.queue_max_bytes = bytes;
        self
    }

    /// How long dropping the sink's last handle waits for it to push what is queued and
    /// close: so the last records reach Loki when a handle goes out of scope. Past it the
    /// rest is reported dropped (reason `shutdown`), as a shutdown at that deadline would.
    /// `Duration::ZERO` lets the drop return at once (the worker still pushes everything
    /// queued, in the background). On a sink's worker thread the drop never waits. Default:
    /// see [the table](Self#defaults).
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// Keeps every accepted record in a disk buffer in `dir` until Loki has acknowledged
    /// it (2xx) or rejected it for good, so that records survive a restart, a crash and a
    /// long outage (see the operations guide's "Disk buffer" section,
    /// [`guide::operations`](crate::guide::operations)).
    ///
    /// The sink's worker (never the caller's thread) appends each record to a segment log
    /// in `dir` (created if missing) and pushes from it. A shutdown whose deadline passes
    /// leaves what is undelivered on disk, counted in [`SinkStats::persisted`](crate::SinkStats)
    /// rather than dropped; the next `build()` on the same `dir` pushes it first, in order,
    /// counts it in [`SinkStats::replayed`](crate::SinkStats) and emits `buffer_replayed`. A
    /// kill loses at most what the worker had not yet written (it writes every chunk it
    /// takes, within milliseconds); a power loss at most the
    /// [`disk_buffer_sync`](Self::disk_buffer_sync) window. Requests in flight at a crash
    /// are sent again (at-least-once). Requests from the buffer are retried for as long as
    /// Loki fails, with the backoff capped at [`max_backoff`](Self::max_backoff) (no
    /// `retries_exhausted`): the buffer's bound, not the retry count, limits an outage.
    ///
    /// One directory per sink and per process, on a local disk (not tmpfs, which a reboot
    /// empties, nor a network file system). With a buffer, the memory queue only has to
    /// absorb the time between two writes: a small
    /// [`queue_max_bytes`](Self::queue_max_bytes) (a few MiB) is enough and bounds the
    /// memory a burst takes. Default: see [the table](Self#defaults).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sinkwatch::{LokiSink, Record};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// let sink = LokiSink::builder("http://127.0.0.1:9")
    ///     .label("app", "demo")
    ///     .disk_buffer(dir.path())
    ///     .disk_buffer_max_bytes(64 * 1024 * 1024)
    ///     .build()?;
    /// sink.try_write(Record::new(tracing::Level::INFO, "kept on disk"))?;
    /// // Nothing listens there: the record stays on disk for the next process.
    /// let report = sink.shutdown_blocking(Duration::from_millis(100));
    /// assert_eq!(report.stats.persisted, 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn disk_buffer(mut self, dir: impl Into<PathBuf>) -> Self {
        self.disk_dir = Some(dir.into());
        self
    }

    /// The most bytes the disk buffer takes (segments and settlement log); it may pass it
    /// by at most one segment (an eighth of it, at most 8 MiB). When it is full, the
    /// [`overflow`](Self::overflow) policy decides: under
    /// [`DropOldest`](crate::OverflowPolicy::DropOldest) the oldest segment's records are
    /// dropped (reason `buffer_full_oldest`); under the others the worker stops taking
    /// records from the queue until Loki has taken some, so the queue fills and its policy
    /// applies to the callers (what the worker had already taken is pushed from memory).
    /// At least 64 KiB. Default: see [the table](Self#defaults).
    pub fn disk_buffer_max_bytes(mut self, bytes: u64) -> Self {
        self.disk_max_bytes = bytes;
        self
    }

    /// When the disk buffer syncs what it wrote to the device. Default: see
    /// [the table](Self#defaults).
    pub fn disk_buffer_sync(mut self, sync: DiskSync) -> Self {
        self.disk_sync = sync;
        self
    }

    /// The oldest record (by its timestamp) the disk buffer sends: an older one, found when
    /// it is read to be pushed (after a long outage, or in a buffer left by an earlier
    /// process), is dropped and reported (reason `too_old`) rather than sent to a Loki that
    /// rejects it. Set it to your Loki's `reject_old_samples_max_age`, whose default the
    /// default is. Must not be zero. Default: see [the table](Self#defaults).
    pub fn max_entry_age(mut self, age: Duration) -> Self {
        self.max_entry_age = age;
        self
    }

    /// Checks the configuration, sets up the HTTP client, opens the disk buffer (with
    /// [`disk_buffer`](Self::disk_buffer)) and starts the sink's worker thread. Needs no
    /// tokio runtime and makes no connection.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for the first unusable setting, saying
    /// what to change, or when the disk buffer's directory is held by another sink (in this
    /// process or another: the message names the holder's pid, host and start time) or
    /// holds files of a format version this sinkwatch cannot read; an
    /// [`Io`](crate::ErrorKind::Io) error when the disk buffer cannot be opened or the
    /// worker thread cannot start.
    pub fn build(mut self) -> Result<LokiSink> {
        let url = self.push_url();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let url = url?;
        self.validate()?;
        let id = SinkId::new(self.name.as_deref().unwrap_or(DEFAULT_NAME));
        if self.http.has_credentials() {
            if let Some(host) = clear_text_host(&url) {
                events::insecure_credentials(&id, &host);
            }
        }
        let mut config = self.worker_config(url)?;
        let disk = self.open_disk()?;
        let limits = Limits {
            max_records: self.queue_capacity,
            max_bytes: self.queue_max_bytes,
            policy: self.overflow,
        };
        let settings = Settings {
            limits,
            drop_timeout: self.drop_timeout,
            remote: true,
        };
        let (producer, consumer) = pipe::open(id.clone(), settings);
        if let Some((setup, recovered)) = disk {
            crate::metrics::buffer_max_bytes(&id, self.disk_max_bytes);
            durable::take_over(&id, &consumer, &recovered);
            config.disk = Some(setup);
        }
        spawn_worker(&producer, worker::run(consumer, config))?;
        Ok(LokiSink::new(producer))
    }

    /// Opens the disk buffer, if there is one.
    fn open_disk(&self) -> Result<Option<(DiskSetup, Recovered)>> {
        let Some(dir) = &self.disk_dir else {
            return Ok(None);
        };
        let mut options = Options::new(dir.clone(), self.disk_max_bytes);
        options.fsync = match self.disk_sync {
            DiskSync::EveryBatch => Fsync::EveryCommit,
            DiskSync::Interval(every) => Fsync::Interval(every),
        };
        let (buffer, recovered) = DiskBuffer::open(options.clone()).map_err(open_error)?;
        let setup = DiskSetup {
            buffer,
            options,
            max_entry_age: self.max_entry_age,
            drop_oldest: self.overflow == OverflowPolicy::DropOldest,
            replay: recovered.entries > 0,
        };
        Ok(Some((setup, recovered)))
    }

    /// The push URL; credentials in it become basic auth (unless auth is set) and are
    /// removed from it.
    fn push_url(&mut self) -> Result<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.url).map_err(|e| {
            Error::config(format!(
                "the Loki URL {:?} does not parse; expected e.g. http://loki:3100",
                redact_url(&self.url)
            ))
            .with_source(e)
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::config(format!(
                "the Loki URL must be http:// or https://, not {}://",
                url.scheme()
            )));
        }
        if !url.username().is_empty() && matches!(self.http.auth, Auth::None) {
            self.http.auth = Auth::Basic {
                user: Secret(url.username().to_owned()),
                password: Secret(url.password().unwrap_or_default().to_owned()),
            };
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
        if !url.path().ends_with(PUSH_PATH) {
            let path = format!("{}{PUSH_PATH}", url.path().trim_end_matches('/'));
            url.set_path(&path);
        }
        Ok(url)
    }

    fn validate(&self) -> Result<()> {
        let has_value = self.labels.iter().any(|(_, v)| !v.is_empty());
        let names = self.labels.iter().map(|(n, _)| n).chain(&self.label_fields);
        let counted = names.filter(|n| *n != "service_name").count();
        let problem = if !has_value {
            Some("at least one static label with a value is required (Loki rejects a stream without labels): add .label(\"service_name\", \"my-app\")".to_owned())
        } else if counted > MAX_LABEL_NAMES {
            Some(format!(
                "{counted} label names; Loki accepts at most {MAX_LABEL_NAMES} per stream"
            ))
        } else if self.metadata_fields.len() > labels::MAX_METADATA_PAIRS {
            Some(format!(
                "{} metadata fields; Loki accepts at most {} per entry",
                self.metadata_fields.len(),
                labels::MAX_METADATA_PAIRS
            ))
        } else {
            self.check_limits()
        };
        problem.map_or(Ok(()), |p| Err(Error::config(p)))
    }

    fn check_limits(&self) -> Option<String> {
        let r = &self.retry;
        let checks = [
            (
                self.batch_max_bytes < 1024,
                "batch_max_bytes must be at least 1024",
            ),
            (
                self.max_line_bytes < 64 || self.max_line_bytes > self.batch_max_bytes / 2,
                "max_line_bytes must be between 64 and half of batch_max_bytes",
            ),
            (
                self.batch_max_entries == 0,
                "batch_max_entries must be at least 1",
            ),
            (
                self.request_timeout.is_zero(),
                "request_timeout must not be zero",
            ),
            (self.max_in_flight == 0, "max_in_flight must be at least 1"),
            (r.min_backoff.is_zero(), "min_backoff must not be zero"),
            (
                r.max_backoff < r.min_backoff,
                "max_backoff must be at least min_backoff",
            ),
            (
                self.queue_capacity == 0 || self.queue_max_bytes == 0,
                "queue_capacity and queue_max_bytes must not be zero",
            ),
            (
                self.max_streams == 0 && !self.label_fields.is_empty(),
                "max_streams must be at least 1 with label_from_field",
            ),
            (
                self.disk_max_bytes < MIN_DISK_MAX_BYTES,
                "disk_buffer_max_bytes must be at least 64 KiB",
            ),
            (
                self.max_entry_age.is_zero(),
                "max_entry_age must not be zero",
            ),
        ];
        checks
            .iter()
            .find(|(bad, _)| *bad)
            .map(|(_, m)| (*m).to_owned())
    }

    fn worker_config(&self, url: reqwest::Url) -> Result<Config> {
        Ok(Config {
            client: self.http.client(self.encoding, self.request_timeout)?,
            url,
            encoding: self.encoding,
            max_entries: self.batch_max_entries,
            max_bytes: self.batch_max_bytes,
            wait: self.batch_wait,
            timeout: self.request_timeout,
            max_in_flight: self.max_in_flight,
            retry: self.retry,
            lines: Lines {
                format: self.line_format,
                max_bytes: self.max_line_bytes.max(TRUNCATION_MARKER.len()),
                long: self.long_lines,
                cache: crate::record::LineCache::default(),
            },
            labeler: Labeler::new(
                self.labels.clone(),
                self.label_fields.clone(),
                self.metadata_fields.clone(),
                self.max_streams,
            ),
            disk: None,
        })
    }
}

/// A disk buffer that would not open, as `build()` reports it: a directory in use or of
/// another version is a configuration to change; the rest is I/O.
fn open_error(e: OpenError) -> Error {
    let message = e.to_string();
    match e {
        OpenError::Locked { .. } | OpenError::Version { .. } => Error::config(message),
        OpenError::Io { source, .. } => Error::io(message, source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn base() -> LokiSinkBuilder {
        LokiSinkBuilder::new("http://127.0.0.1:3100".into()).label("app", "demo")
    }

    fn err(b: LokiSinkBuilder) -> String {
        let e = b.build().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        e.to_string()
    }

    #[test]
    fn the_defaults_table_is_what_new_sets() {
        use crate::defaults::{assert_table, bytes, count, duration, policy, variant};
        let b = LokiSinkBuilder::new("http://h".into());
        let none = |empty: bool| if empty { "none" } else { "set" }.to_owned();
        let r = b.retry;
        assert_table(
            include_str!("builder.rs"),
            &[
                (
                    "name",
                    format!("`{}`", b.name.as_deref().unwrap_or(DEFAULT_NAME)),
                ),
                ("label", none(b.labels.is_empty())),
                ("label_from_field", none(b.label_fields.is_empty())),
                ("metadata_from_field", none(b.metadata_fields.is_empty())),
                ("max_streams", count(b.max_streams as u64)),
                ("tenant", none(b.http.tenant.is_none())),
                ("basic_auth", none(matches!(b.http.auth, Auth::None))),
                ("header", none(b.http.headers.is_empty())),
                (
                    "root_certificate_pem",
                    if b.http.roots.is_empty() {
                        "the built-in roots only"
                    } else {
                        "set"
                    }
                    .to_owned(),
                ),
                ("encoding", variant("Encoding", b.encoding)),
                ("line_format", variant("LineFormat", b.line_format)),
                ("max_line_bytes", bytes(b.max_line_bytes as u64)),
                ("long_lines", variant("LongLines", b.long_lines)),
                ("batch_max_entries", count(b.batch_max_entries as u64)),
                ("batch_max_bytes", bytes(b.batch_max_bytes as u64)),
                ("batch_wait", duration(b.batch_wait)),
                ("request_timeout", duration(b.request_timeout)),
                ("max_in_flight", count(b.max_in_flight as u64)),
                ("min_backoff", duration(r.min_backoff)),
                ("max_backoff", duration(r.max_backoff)),
                ("max_retries", r.max_retries.to_string()),
                ("max_retry_after", duration(r.max_retry_after)),
                ("overflow", policy(b.overflow)),
                (
                    "queue_capacity",
                    format!("{} records", count(b.queue_capacity as u64)),
                ),
                ("queue_max_bytes", bytes(b.queue_max_bytes as u64)),
                ("drop_timeout", duration(b.drop_timeout)),
                ("disk_buffer", none(b.disk_dir.is_none())),
                ("disk_buffer_max_bytes", bytes(b.disk_max_bytes)),
                (
                    "disk_buffer_sync",
                    match b.disk_sync {
                        DiskSync::Interval(d) => format!(
                            "[`DiskSync::Interval`](crate::DiskSync::Interval) of {}",
                            duration(d)
                        ),
                        other => variant("DiskSync", other),
                    },
                ),
                (
                    "max_entry_age",
                    format!("{} days", b.max_entry_age.as_secs() / 86_400),
                ),
            ],
        );
    }

    #[test]
    fn the_push_path_is_added_to_a_base_url() {
        let mut b = LokiSinkBuilder::new("http://h:3100".into());
        assert_eq!(
            b.push_url().unwrap().as_str(),
            "http://h:3100/loki/api/v1/push"
        );
        let mut b = LokiSinkBuilder::new("http://h/gw/".into());
        assert_eq!(
            b.push_url().unwrap().as_str(),
            "http://h/gw/loki/api/v1/push"
        );
        let mut b = LokiSinkBuilder::new("http://h/loki/api/v1/push".into());
        assert_eq!(b.push_url().unwrap().as_str(), "http://h/loki/api/v1/push");
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth() {
        let mut b = LokiSinkBuilder::new("https://u:p4ss@h".into());
        let url = b.push_url().unwrap();
        assert!(!url.as_str().contains("p4ss"));
        assert!(matches!(b.http.auth, Auth::Basic { ref user, .. } if user.0 == "u"));
        assert!(!format!("{b:?}").contains("p4ss"));
    }

    #[test]
    fn the_first_bad_setting_is_reported() {
        let e = err(base().label("9bad", "x").tenant("a/b"));
        assert!(e.contains("9bad"), "{e}");
    }

    #[test]
    fn bad_settings_are_explained() {
        assert!(err(LokiSinkBuilder::new("ftp://h".into()).label("a", "b")).contains("http"));
        assert!(err(LokiSinkBuilder::new("http://h".into())).contains("static label"));
        assert!(err(base().label("__x", "y")).contains("reserved"));
        assert!(err(base().label_from_field("app")).contains("already used"));
        assert!(err(base().tenant("..")).contains("tenant"));
        assert!(err(base().header("Content-Type", "x")).contains("sets this header"));
        assert!(err(base().header("X-Scope-OrgID", "x")).contains("tenant()"));
        assert!(err(base().max_line_bytes(10)).contains("max_line_bytes"));
        assert!(err(base().request_timeout(Duration::ZERO)).contains("request_timeout"));
        assert!(err(base().max_in_flight(0)).contains("max_in_flight"));
        assert!(err(base().root_certificate_pem("nope")).contains("PEM"));
    }

    #[test]
    fn too_many_label_names_are_refused() {
        let mut b = base();
        for i in 0..15 {
            b = b.label_from_field(format!("f{i}"));
        }
        assert!(err(b).contains("at most 15"));
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug() {
        let e = err(base().secret_header("X-Key", "bad\nsecret"));
        assert!(!e.contains("secret"), "{e}");
        let b = base()
            .bearer_token("tok3n")
            .secret_header("X-Key", "k3y")
            .basic_auth("u", "pw0rd");
        let dbg = format!("{b:?}");
        for s in ["tok3n", "k3y", "pw0rd"] {
            assert!(!dbg.contains(s), "{dbg}");
        }
    }
}
