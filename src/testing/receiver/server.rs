//! The HTTP side: accepting connections, routing, faults, and turning a push into an answer.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{
    HeaderMap, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, USER_AGENT,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::instrument::WithSubscriber;

use super::decode::{self, DecodeError, RawEntry};
use super::faults::{Action, Script};
use super::labels;
use super::store::{ReceivedRequest, Store};
use super::validate::{self, Grouped, Limits};
use crate::testing::schema;
use crate::SinkId;

/// The push endpoint.
pub(crate) const PUSH_PATH: &str = "/loki/api/v1/push";
const ORG_ID: &str = "x-scope-orgid";
const MISSING_STREAMS: &str = "error at least one valid stream is required for ingestion";

/// A clock giving "now" for the too-old and too-new checks.
pub(crate) type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Counters that waiters watch; they only grow.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Progress {
    pub(crate) requests: u64,
    pub(crate) entries: u64,
    /// Requests whose headers were read, answered or not.
    pub(crate) arrivals: u64,
}

/// State shared by the receiver handle and its server tasks.
pub(crate) struct Shared {
    pub(crate) id: SinkId,
    pub(crate) auth: bool,
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
    pub(crate) store: Mutex<Store>,
    pub(crate) script: Mutex<Script>,
    pub(crate) progress: watch::Sender<Progress>,
    /// One permit per connection served at once (`max_connections`).
    pub(crate) slots: Arc<Semaphore>,
    /// True while a serving task holds the listener; false once its listener and
    /// connections are closed (after `stop`, or the receiver's drop).
    pub(crate) listening: watch::Sender<bool>,
    /// The dispatcher current when the receiver started, so its events reach the test's
    /// subscriber from the receiver's own thread.
    pub(crate) dispatch: tracing::Dispatch,
}

/// A poisoned lock only means a panic elsewhere; the records are still consistent enough to read.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until the task is aborted; dropping the `JoinSet` then closes every
/// open connection, so a stopped receiver really is gone.
///
/// The listener is wrapped (and `listening` set) before the task exists, so that even a
/// task aborted before its first poll reports the port closed when it is dropped.
pub(crate) fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
) -> impl std::future::Future<Output = ()> + Send {
    shared.listening.send_replace(true);
    let serving = Serving {
        listener,
        conns: JoinSet::new(),
        _closed: ClosedSignal(Arc::clone(&shared)),
    };
    accept_loop(serving, shared)
}

async fn accept_loop(mut serving: Serving, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            accepted = serving.listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&shared.slots).try_acquire_owned() {
                    Ok(permit) => {
                        let conn = connection(Slot { permit: Some(permit), io: stream }, Arc::clone(&shared));
                        serving.conns.spawn(conn.with_subscriber(shared.dispatch.clone()));
                    }
                    Err(_) => refuse(&stream, shared.limits.max_connections),
                },
                // Transient (e.g. out of file descriptors): let other tasks run, then retry.
                Err(_) => tokio::task::yield_now().await,
            },
            Some(_) = serving.conns.join_next(), if !serving.conns.is_empty() => {}
        }
    }
}

/// What a serving task owns. Fields drop in order: the port closes, then the connections,
/// and only then are waiters on `listening` told.
struct Serving {
    listener: TcpListener,
    conns: JoinSet<()>,
    _closed: ClosedSignal,
}

struct ClosedSignal(Arc<Shared>);

impl Drop for ClosedSignal {
    fn drop(&mut self) {
        self.0.listening.send_replace(false);
    }
}

/// Over `max_connections`: a best-effort 503 (never blocking the accept loop), then the
/// connection is closed. The client may see the 503 or only a reset, since its request is
/// never read.
fn refuse(stream: &TcpStream, max: usize) {
    let text = format!(
        "too many connections: the receiver serves at most {max} at once (max_connections)\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

/// A served connection and its permit. The permit is given back before the socket is shut
/// down or closed (fields drop in order), so a client that has seen its connection end can
/// open another at once.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    io: TcpStream,
}

impl AsyncRead for Slot {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slot {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.permit = None;
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn connection(stream: Slot, shared: Arc<Shared>) {
    let read_timeout = shared.limits.read_timeout;
    let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&shared)));
    // An error here is the client going away, a scripted drop or a client too slow to send
    // its headers (the connection is closed, as Go's `ReadHeaderTimeout` does).
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(RealTimer)
        // hyper adds this to `Instant::now()`, which would overflow on `Duration::MAX`.
        .header_read_timeout(read_timeout.min(CENTURY))
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// hyper's timer on real time: under a paused tokio clock, tokio's timer would fire the
/// header timeout at once whenever the test's runtime is idle.
#[derive(Debug, Clone, Copy)]
struct RealTimer;

impl hyper::rt::Sleep for crate::deadline::Deadline {}

impl hyper::rt::Timer for RealTimer {
    fn sleep(&self, duration: Duration) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(crate::deadline::until(later(duration)))
    }

    fn sleep_until(&self, at: std::time::Instant) -> std::pin::Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(crate::deadline::until(at))
    }
}

/// "Forever", as far as a read timeout is concerned.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Now plus `d`, capped at a century instead of overflowing on `Duration::MAX`.
fn later(d: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(d.min(CENTURY)).unwrap_or(now)
}

type Reply = Response<Full<Bytes>>;

/// Returned to hyper to close the connection without a response.
#[derive(Debug)]
pub(crate) struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the receiver")
    }
}

impl std::error::Error for Dropped {}

/// How a request ended, before it becomes a response and a record.
#[derive(Debug, Default)]
struct Outcome {
    status: u16,
    error: String,
    tenant: String,
    accepted: u64,
    rejected: u64,
    retry_after: Option<String>,
    fault: bool,
}

impl Outcome {
    fn error(status: u16, error: impl Into<String>) -> Self {
        Outcome {
            status,
            error: error.into(),
            ..Outcome::default()
        }
    }
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Reply, Dropped> {
    let rec = record_for(&req);
    if (req.method().as_str(), req.uri().path()) != ("POST", PUSH_PATH) {
        arrived(&shared);
    }
    match (req.method().as_str(), req.uri().path()) {
        ("POST", PUSH_PATH) => push(req, &shared, rec).await,
        (_, PUSH_PATH) => Ok(finish(&shared, rec, Outcome::error(405, ""))),
        ("GET", "/ready") => {
            let mut reply = finish(
                &shared,
                rec,
                Outcome {
                    status: 200,
                    ..Outcome::default()
                },
            );
            *reply.body_mut() = Full::new(Bytes::from_static(b"ready\n"));
            Ok(reply)
        }
        _ => Ok(finish(
            &shared,
            rec,
            Outcome::error(404, "404 page not found"),
        )),
    }
}

/// A request has arrived: read whole (a push's body too), or given up on while its body
/// was read. A push counted here is held by its delay from now on, so a test that acts on
/// the count acts during the delay, as `wait_for_arrivals` promises.
fn arrived(shared: &Shared) {
    shared.progress.send_modify(|p| p.arrivals += 1);
}

fn status_ok(status: u16) -> bool {
    (200..300).contains(&status)
}

async fn push(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    mut rec: ReceivedRequest,
) -> Result<Reply, Dropped> {
    let fault = lock(&shared.script).next();
    let (parts, body) = req.into_parts();
    // A client that stalls mid-body must not hold the connection (and its task) forever.
    let limit = shared.limits.max_body_bytes;
    let body = tokio::select! {
        body = read_body(body, limit) => body,
        () = crate::deadline::until(later(shared.limits.read_timeout)) => {
            arrived(shared);
            let why = format!(
                "reading the request body timed out after {:?}",
                shared.limits.read_timeout
            );
            return Err(dropped(shared, rec, &why));
        }
    };
    arrived(shared);
    rec.bytes = match &body {
        Ok(b) => b.len() as u64,
        Err(BodyError::TooLarge(size)) => *size as u64,
        Err(BodyError::Broken(_)) => 0,
    };
    let body = match body {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge(size)) => Err(size),
        Err(BodyError::Broken(e)) => {
            return Err(dropped(
                shared,
                rec,
                &format!("reading the request body failed: {e}"),
            ))
        }
    };
    let mut pending = Pending {
        shared: Arc::clone(shared),
        request: Some((rec, parts.headers, body, fault.action)),
    };
    if !fault.delay.is_zero() {
        #[allow(clippy::disallowed_methods)] // simulates a slow peer
        tokio::time::sleep(fault.delay).await; // simulates a slow peer
    }
    pending.settle(false).unwrap_or(Err(Dropped))
}

/// A request read and waiting for its answer (held by a delay). If the client goes away
/// meanwhile, hyper drops the handler; the drop still handles the request and records it,
/// with the status it would have been answered, so retries stay countable.
struct Pending {
    shared: Arc<Shared>,
    request: Option<Held>,
}

/// The record so far, the headers, the body (or its size when over the limit), the fault.
type Held = (ReceivedRequest, HeaderMap, Result<Vec<u8>, usize>, Action);

impl Pending {
    /// Handles the request once; `None` if already done.
    fn settle(&mut self, client_gone: bool) -> Option<Result<Reply, Dropped>> {
        let (mut rec, headers, body, action) = self.request.take()?;
        rec.client_gone = client_gone;
        let shared = &self.shared;
        let outcome = match action {
            Action::Drop => {
                return Some(Err(dropped(
                    shared,
                    rec,
                    "connection dropped (scripted fault)",
                )))
            }
            Action::Respond {
                status,
                retry_after,
                body,
            } => scripted(status, retry_after, body),
            Action::Pass => normal(shared, &headers, body),
        };
        Some(Ok(finish(shared, rec, outcome)))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.request.is_some() {
            let dispatch = self.shared.dispatch.clone();
            tracing::dispatcher::with_default(&dispatch, || {
                let _ = self.settle(true);
            });
        }
    }
}

fn scripted(status: u16, retry_after: Option<String>, body: Option<String>) -> Outcome {
    let error = body.unwrap_or_else(|| {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason());
        if status_ok(status) {
            String::new()
        } else {
            reason.unwrap_or("scripted fault").to_owned()
        }
    });
    Outcome {
        status,
        error,
        retry_after,
        fault: true,
        ..Outcome::default()
    }
}

/// Loki's order: the tenant (auth middleware) first, then the body's size, encoding and content.
fn normal(shared: &Shared, headers: &HeaderMap, body: Result<Vec<u8>, usize>) -> Outcome {
    let tenant = match tenant(shared.auth, headers) {
        Ok(t) => t,
        Err(o) => return o,
    };
    let outcome = match body {
        Ok(body) => process(shared, headers, &body, &tenant),
        Err(size) => decode_error(decode::too_large(size, shared.limits.max_body_bytes)),
    };
    Outcome { tenant, ..outcome }
}

fn tenant(auth: bool, headers: &HeaderMap) -> Result<String, Outcome> {
    if !auth {
        return Ok("fake".to_owned());
    }
    match headers.get(ORG_ID).map(HeaderValue::as_bytes) {
        None | Some(b"") => Err(Outcome::error(401, "no org id")),
        Some(raw) => validate::tenant(raw).map_err(|e| Outcome::error(400, e)),
    }
}

fn decode_error(e: DecodeError) -> Outcome {
    match e {
        DecodeError::BadRequest(m) => Outcome::error(400, m),
        DecodeError::TooLarge(m) => Outcome::error(413, m),
    }
}

fn process(shared: &Shared, headers: &HeaderMap, body: &[u8], tenant: &str) -> Outcome {
    let get = |name| headers.get(name).map(HeaderValue::as_bytes);
    let push = match decode::decode(
        get(CONTENT_ENCODING),
        get(CONTENT_TYPE),
        body,
        &shared.limits.decode(),
    ) {
        Ok(p) => p,
        Err(e) => return decode_error(e),
    };
    let mut streams = Vec::with_capacity(push.streams.len());
    for s in push.streams {
        match labels::parse(&s.labels) {
            Ok(pairs) => streams.push((pairs, s.entries)),
            Err(e) => return Outcome::error(400, format!("couldn't parse labels: {e}")),
        }
    }
    if streams.is_empty() {
        return Outcome::error(422, MISSING_STREAMS);
    }
    ingest(shared, tenant, streams)
}

/// Validation (distributor) then storage (ingester); valid entries are kept even when others fail.
fn ingest(shared: &Shared, tenant: &str, streams: Vec<(labels::Pairs, Vec<RawEntry>)>) -> Outcome {
    let limits = &shared.limits;
    let now = nanos_since_epoch((shared.clock)());
    let window = i128::try_from(limits.out_of_order_window.as_nanos()).unwrap_or(i128::MAX / 4);
    let (mut errors, mut behind) = (Grouped::default(), None);
    let mut out = Outcome::default();
    let mut store = lock(&shared.store);
    for (pairs, entries) in streams {
        // Loki skips a stream without entries before looking at its labels.
        if entries.is_empty() {
            continue;
        }
        let (pairs, text) = validate::prepare(pairs);
        if let Err(e) = validate::stream_labels(&pairs, &text, limits) {
            errors.add(e);
            out.rejected += entries.len() as u64;
            continue;
        }
        let mut valid = Vec::with_capacity(entries.len());
        for e in entries {
            match validate::entry(&e, &text, limits, now) {
                Ok(()) => valid.push(e),
                Err(msg) => {
                    errors.add(msg);
                    out.rejected += 1;
                }
            }
        }
        let total = valid.len();
        let appended = store.append(tenant, &text, &pairs, valid, window);
        out.accepted += appended.stored;
        out.rejected += appended.too_far.len() as u64;
        if behind.is_none() && !appended.too_far.is_empty() {
            let max = limits.max_returned_errors;
            behind = Some(validate::too_far_behind_message(
                tenant,
                &text,
                &appended.too_far,
                total,
                max,
            ));
        }
    }
    // The distributor answers with the ingester's error before its own validation errors.
    match behind.or_else(|| (!errors.is_empty()).then(|| errors.message())) {
        Some(error) => Outcome {
            status: 400,
            error,
            ..out
        },
        None => Outcome { status: 204, ..out },
    }
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX / 4),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX / 4),
    }
}

enum BodyError {
    TooLarge(usize),
    Broken(hyper::Error),
}

/// Reads the body, refusing (without buffering) anything over `limit` bytes.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Vec<u8>, BodyError> {
    let declared = usize::try_from(body.size_hint().lower()).unwrap_or(usize::MAX);
    if declared > limit {
        return Err(BodyError::TooLarge(declared));
    }
    let mut buf = Vec::with_capacity(declared);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Broken)?;
        if let Ok(data) = frame.into_data() {
            let size = buf.len().saturating_add(data.len());
            if size > limit {
                return Err(BodyError::TooLarge(size));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

fn record_for(req: &Request<Incoming>) -> ReceivedRequest {
    let h = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    ReceivedRequest {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        status: 0,
        tenant: String::new(),
        org_id: h(ORG_ID),
        content_type: h(CONTENT_TYPE.as_str()),
        content_encoding: h(CONTENT_ENCODING.as_str()),
        user_agent: h(USER_AGENT.as_str()),
        bytes: 0,
        accepted: 0,
        rejected: 0,
        error: String::new(),
        fault: false,
        client_gone: false,
    }
}

/// Records a dropped connection and reports it (status 0); hyper then closes the socket.
fn dropped(shared: &Shared, mut rec: ReceivedRequest, why: &str) -> Dropped {
    why.clone_into(&mut rec.error);
    rec.fault = why.contains("scripted");
    account(shared, rec);
    Dropped
}

/// Stores the record, emits the event, then wakes waiters: in that order, so whoever wakes
/// (on the event or a wait) finds the records already there.
fn finish(shared: &Shared, mut rec: ReceivedRequest, o: Outcome) -> Reply {
    rec.status = o.status;
    rec.tenant = o.tenant;
    rec.accepted = o.accepted;
    rec.rejected = o.rejected;
    rec.error.clone_from(&o.error);
    rec.fault = o.fault;
    account(shared, rec);
    reply(o.status, &o.error, o.retry_after.as_deref())
}

fn account(shared: &Shared, rec: ReceivedRequest) {
    let (status, tenant, accepted, rejected, bytes) = (
        u64::from(rec.status),
        rec.tenant.clone(),
        rec.accepted,
        rec.rejected,
        rec.bytes,
    );
    let error = rec.error.clone();
    let entries = {
        let mut store = lock(&shared.store);
        store.record_request(rec);
        store.entries().len() as u64
    };
    schema::receiver_request(
        &shared.id, status, &tenant, accepted, rejected, bytes, &error,
    );
    shared.progress.send_modify(|p| {
        p.requests += 1;
        p.entries = entries;
    });
}

/// An answer as Go's `http.Error` writes it (plain text, trailing newline), or an empty one.
fn reply(status: u16, text: &str, retry_after: Option<&str>) -> Reply {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(code);
    let mut body = Bytes::new();
    if !text.is_empty() && code != StatusCode::NO_CONTENT && code != StatusCode::NOT_MODIFIED {
        builder = builder
            .header(CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("x-content-type-options", "nosniff");
        body = Bytes::from(format!("{text}\n"));
    }
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        builder = builder.header(RETRY_AFTER, v);
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Waits on a progress counter with a real-time deadline (a paused test clock cannot fire it).
pub(crate) async fn wait_for(
    progress: &watch::Sender<Progress>,
    timeout: Duration,
    done: impl Fn(&Progress) -> bool,
) -> Result<(), Progress> {
    // Subscribing before checking means no update between the check and the wait is lost.
    let mut rx = progress.subscribe();
    let deadline = crate::deadline::until(std::time::Instant::now() + timeout);
    tokio::select! {
        res = rx.wait_for(|p| done(p)) => res.map(|_| ()).map_err(|_| *progress.borrow()),
        () = deadline => Err(*progress.borrow()),
    }
}
