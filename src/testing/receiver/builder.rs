//! Configuration of a [`LokiReceiver`]: listen address, auth mode, clock and Loki's limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;

use super::faults::Script;
use super::server::{Clock, Progress, Shared};
use super::store::Store;
use super::validate::Limits;
use super::LokiReceiver;
use crate::Result;
use crate::SinkId;

/// Builds a [`LokiReceiver`].
///
/// By default it listens on `127.0.0.1` on an ephemeral port, with auth off (every request is
/// tenant `fake`), the system clock, and Loki 3.x's default limits: body 100 MiB (compressed
/// and decompressed), 15 label names, names 1024 and values 2048 bytes, entries at most 7 days
/// old and 10 minutes ahead, lines up to 256 KiB, structured metadata allowed up to 64 KiB and
/// 128 pairs per entry, and entries refused when more than 1 hour behind their stream's newest.
/// A limit of 0 on a size or count means "no limit", as in Loki.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sinkwatch::testing::LokiReceiver;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sinkwatch::Result<()> {
/// let receiver = LokiReceiver::builder()
///     .auth(true)
///     .fixed_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
///     .max_line_size(1024)
///     .start()
///     .await?;
/// assert!(receiver.push_url().ends_with("/loki/api/v1/push"));
/// # Ok(())
/// # }
/// ```
#[must_use]
pub struct LokiReceiverBuilder {
    listen: SocketAddr,
    auth: bool,
    clock: Clock,
    limits: Limits,
}

impl Default for LokiReceiverBuilder {
    fn default() -> Self {
        LokiReceiverBuilder {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            auth: false,
            clock: Arc::new(SystemTime::now),
            limits: Limits::default(),
        }
    }
}

impl std::fmt::Debug for LokiReceiverBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LokiReceiverBuilder")
            .field("listen", &self.listen)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl LokiReceiverBuilder {
    /// The address to listen on. By default `127.0.0.1:0` (an ephemeral port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Auth mode, as Loki's `auth_enabled`. By default off (tenant `fake`), unlike Loki
    /// itself; with it on, a request without `X-Scope-OrgID` gets 401 `no org id`.
    pub fn auth(mut self, enabled: bool) -> Self {
        self.auth = enabled;
        self
    }

    /// The clock giving "now" for the too-old and too-new checks. By default the system clock.
    pub fn clock(mut self, now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(now);
        self
    }

    /// A fixed "now" for the too-old and too-new checks.
    pub fn fixed_time(self, now: SystemTime) -> Self {
        self.clock(move || now)
    }

    /// Largest request body, as received (compressed). By default 100 MiB; larger is 413.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_body_bytes = bytes;
        self
    }

    /// Largest body after decompression (gzip, deflate, snappy). By default 100 MiB; larger is
    /// 413. This guards against decompression bombs.
    pub fn max_decompressed_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_decoded_bytes = bytes;
        self
    }

    /// Most label names per stream, `service_name` not counted. By default 15.
    pub fn max_label_names_per_series(mut self, count: usize) -> Self {
        self.limits.max_label_names = count;
        self
    }

    /// Longest label name in bytes. By default 1024.
    pub fn max_label_name_length(mut self, bytes: usize) -> Self {
        self.limits.max_label_name_length = bytes;
        self
    }

    /// Longest label value in bytes. By default 2048.
    pub fn max_label_value_length(mut self, bytes: usize) -> Self {
        self.limits.max_label_value_length = bytes;
        self
    }

    /// Oldest acceptable entry, relative to now. By default 7 days.
    pub fn reject_old_samples_max_age(mut self, age: Duration) -> Self {
        self.limits.max_age = age;
        self
    }

    /// How far ahead of now an entry may be. By default 10 minutes.
    pub fn creation_grace_period(mut self, period: Duration) -> Self {
        self.limits.creation_grace_period = period;
        self
    }

    /// Longest line in bytes (0: no limit). By default 256 KiB; longer lines are rejected.
    pub fn max_line_size(mut self, bytes: usize) -> Self {
        self.limits.max_line_size = bytes;
        self
    }

    /// Whether structured metadata is accepted. By default yes.
    pub fn allow_structured_metadata(mut self, allow: bool) -> Self {
        self.limits.allow_structured_metadata = allow;
        self
    }

    /// Largest structured metadata per entry (names plus values, in bytes). By default 64 KiB.
    pub fn max_structured_metadata_size(mut self, bytes: usize) -> Self {
        self.limits.max_structured_metadata_size = bytes;
        self
    }

    /// Most structured-metadata pairs per entry. By default 128.
    pub fn max_structured_metadata_entries(mut self, count: usize) -> Self {
        self.limits.max_structured_metadata_entries = count;
        self
    }

    /// How far behind its stream's newest entry an entry may be. By default 1 hour (half of
    /// Loki's default `max_chunk_age`).
    pub fn out_of_order_window(mut self, window: Duration) -> Self {
        self.limits.out_of_order_window = window;
        self
    }

    /// How long a client may take to send a request's headers, and then (separately) its
    /// body. A client slower than that has its connection closed without an answer (a body
    /// timeout is recorded as a request with status 0), so a stalled or hostile client cannot
    /// hold a connection forever; an idle kept-alive connection is closed after the same
    /// time. Measured in real time, even under a paused tokio clock.
    /// By default 30 s (Loki's `http_server_read_timeout`); `Duration::MAX` waits forever.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use sinkwatch::testing::LokiReceiver;
    ///
    /// let builder = LokiReceiver::builder().read_timeout(Duration::from_secs(5));
    /// # drop(builder);
    /// ```
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.read_timeout = timeout;
        self
    }

    /// Most streams in one request. By default 10,000; more is 413 `request body too large:
    /// more than … streams in one request (the receiver's max_streams_per_request)`. Loki has
    /// no such limit (it bounds bytes and rates); this one lets the receiver refuse a small
    /// compressed body of millions of empty streams while decoding, before building them.
    /// 0: no limit.
    pub fn max_streams_per_request(mut self, count: usize) -> Self {
        self.limits.max_streams_per_request = count;
        self
    }

    /// Most entries in one request, all streams together. By default 100,000 (more than
    /// the Loki sink sends by default, see its
    /// [`batch_max_entries`](crate::LokiSinkBuilder#defaults)); more is 413, as for
    /// [`max_streams_per_request`](Self::max_streams_per_request). 0: no limit.
    pub fn max_entries_per_request(mut self, count: usize) -> Self {
        self.limits.max_entries_per_request = count;
        self
    }

    /// Most structured-metadata pairs in one request, all entries together. By default
    /// 500,000; more is 413, as for [`max_streams_per_request`](Self::max_streams_per_request).
    /// 0: no limit.
    pub fn max_structured_metadata_pairs_per_request(mut self, count: usize) -> Self {
        self.limits.max_metadata_pairs_per_request = count;
        self
    }

    /// Most connections served at once. By default 256. A connection over the cap is
    /// refused: the receiver writes a `503 Service Unavailable` answer without reading the
    /// request and closes it at once, so the client sees that 503 or a reset connection
    /// (a transport error, which the Loki sink retries). Nothing is recorded for it. A
    /// connection's place is free again once it is closed (idle kept-alive connections keep
    /// theirs until the client closes them or [`read_timeout`](Self::read_timeout) passes).
    /// 0: no limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::testing::LokiReceiver;
    ///
    /// let builder = LokiReceiver::builder().max_connections(16);
    /// # drop(builder);
    /// ```
    pub fn max_connections(mut self, count: usize) -> Self {
        self.limits.max_connections = count;
        self
    }

    /// Binds the listener and starts serving, on the receiver's own thread and runtime (see
    /// [`LokiReceiver`]): it needs no runtime of the caller's.
    ///
    /// Events go to the `tracing` dispatcher that is current when this is called.
    ///
    /// # Errors
    ///
    /// An I/O error when the address cannot be bound, or the receiver's thread or runtime
    /// cannot start.
    pub async fn start(self) -> Result<LokiReceiver> {
        let (progress, _) = tokio::sync::watch::channel(Progress::default());
        let (listening, _) = tokio::sync::watch::channel(false);
        let slots = match self.limits.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n.min(Semaphore::MAX_PERMITS),
        };
        let slots = Arc::new(Semaphore::new(slots));
        let shared = Arc::new(Shared {
            id: SinkId::new("receiver"),
            auth: self.auth,
            limits: self.limits,
            clock: self.clock,
            store: Mutex::new(Store::default()),
            script: Mutex::new(Script::default()),
            progress,
            slots,
            listening,
            dispatch: tracing::dispatcher::get_default(Clone::clone),
        });
        LokiReceiver::launch(shared, self.listen).await
    }
}
