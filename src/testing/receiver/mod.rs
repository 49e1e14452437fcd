//! A Loki-compatible receiver on a real TCP socket, for tests and local development.
//!
//! [`LokiReceiver`] serves `POST /loki/api/v1/push` as Grafana Loki 3.x does: the same
//! Content-Encoding and Content-Type rules, label parsing, validation order, defaults, partial
//! success, duplicate handling and error texts (see `docs/receiver.md`). It records what it
//! accepted, per tenant and stream, and emits a `receiver_request` event (see
//! [`events`](crate::events)) for every request it handles, so tests can await it instead of
//! sleeping. Faults can be scripted: answers such as 429 or 503 (optionally with
//! `Retry-After`), slow answers, dropped connections, and going down and coming back on the
//! same port.
//!
//! Its decoding and label parsing are its own code, independent of the Loki sink's encoder.
//!
//! Also available standalone:
//! `cargo run -p sinkwatch-examples --example loki_receiver -- --listen 127.0.0.1:3100`.

mod builder;
mod decode;
mod faults;
mod gotime;
mod labels;
mod server;
mod store;
mod validate;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber;

pub use builder::LokiReceiverBuilder;
pub use faults::Fault;
pub use store::{ReceivedEntry, ReceivedRequest, ReceivedStream};

use super::watcher::{WaitError, WaitErrorKind};
use crate::SinkId;
use crate::{Error, Result};
use server::{lock, Shared};

/// A Loki-compatible push receiver listening on a real TCP port.
///
/// It runs on a thread of its own with its own tokio runtime, as the sinks do, so nothing
/// the test does with its own runtime can starve it: a `ShutdownGuard` dropped (or
/// `shutdown_blocking`) inside a single-threaded `#[tokio::test]` blocks the test's only
/// thread, and the receiver still answers the pushes that shutdown is waiting for. Its
/// timers are real time whatever the test's clock. It shuts down when dropped (or
/// [`stop`](LokiReceiver::stop)ped): the port is closed and open connections are cut.
///
/// Its events go to the `tracing` dispatcher that was current when it started (the global
/// one after [`testing::init`](crate::testing::init), or a test's scoped subscriber).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::testing::LokiReceiver;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let receiver = LokiReceiver::start().await?;
///
/// // Any Loki client can push to `receiver.push_url()`; here, a raw HTTP/1.1 request.
/// let body = r#"{"streams":[{"stream":{"app":"demo"},"values":[["1700000000000000000","hello"]]}]}"#;
/// # let body = body.replace("1700000000000000000", &std::time::SystemTime::now()
/// #     .duration_since(std::time::UNIX_EPOCH)?.as_nanos().to_string());
/// let request = format!(
///     "POST /loki/api/v1/push HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
///      Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
///     body.len()
/// );
/// let mut stream = tokio::net::TcpStream::connect(receiver.addr()).await?;
/// tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await?;
///
/// receiver.wait_for_requests(1, Duration::from_secs(10)).await?;
/// assert_eq!(receiver.requests()[0].status, 204);
/// assert_eq!(receiver.lines(), ["hello"]);
/// assert_eq!(receiver.entries()[0].stream, r#"{app="demo"}"#);
/// # Ok(())
/// # }
/// ```
pub struct LokiReceiver {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: Mutex<Option<JoinHandle<()>>>,
    runner: Runner,
}

impl std::fmt::Debug for LokiReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LokiReceiver")
            .field("id", &self.shared.id)
            .field("addr", &self.addr)
            .field("running", &self.is_running())
            .finish_non_exhaustive()
    }
}

impl LokiReceiver {
    /// Starts a receiver with the default configuration (see [`LokiReceiverBuilder`]), on
    /// its own thread: it needs no runtime of the caller's.
    ///
    /// # Errors
    ///
    /// An I/O error when the listener cannot be bound, or the receiver's thread or runtime
    /// cannot start.
    pub async fn start() -> Result<Self> {
        Self::builder().start().await
    }

    /// A builder to configure the listen address, auth mode, clock and limits.
    pub fn builder() -> LokiReceiverBuilder {
        LokiReceiverBuilder::default()
    }

    async fn launch(shared: Arc<Shared>, listen: SocketAddr) -> Result<Self> {
        let runner = Runner::start(&shared.id, &shared.dispatch)?;
        let listener = runner.bind(listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io(format!("cannot read the address bound for {listen}"), e))?;
        let task = runner.serve(listener, &shared);
        Ok(LokiReceiver {
            shared,
            addr,
            task: Mutex::new(Some(task)),
            runner,
        })
    }

    /// The receiver's id, carried as `sink` by its `receiver_request` events.
    pub fn id(&self) -> &SinkId {
        &self.shared.id
    }

    /// The address it listens on (the same across [`stop`](Self::stop) and
    /// [`restart`](Self::restart)).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (what Loki clients call the Loki URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The push endpoint, e.g. `http://127.0.0.1:41234/loki/api/v1/push`.
    pub fn push_url(&self) -> String {
        format!("http://{}{}", self.addr, server::PUSH_PATH)
    }

    /// Every accepted entry, all tenants, in arrival order.
    pub fn entries(&self) -> Vec<ReceivedEntry> {
        lock(&self.shared.store).entries().to_vec()
    }

    /// The accepted entries of one tenant, in arrival order.
    pub fn entries_for(&self, tenant: &str) -> Vec<ReceivedEntry> {
        let store = lock(&self.shared.store);
        store
            .entries()
            .iter()
            .filter(|e| e.tenant == tenant)
            .cloned()
            .collect()
    }

    /// The lines of every accepted entry, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        let store = lock(&self.shared.store);
        store.entries().iter().map(|e| e.line.clone()).collect()
    }

    /// How many entries were accepted.
    pub fn entry_count(&self) -> usize {
        lock(&self.shared.store).entries().len()
    }

    /// One tenant's streams in order of first arrival, each with its entries in arrival order.
    pub fn streams(&self, tenant: &str) -> Vec<ReceivedStream> {
        lock(&self.shared.store).streams(tenant)
    }

    /// Every request handled, in the order they completed.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.store).requests().to_vec()
    }

    /// How many requests were handled (including dropped connections).
    pub fn request_count(&self) -> usize {
        lock(&self.shared.store).requests().len()
    }

    /// Resolves once at least `n` requests have been handled (records stored and event
    /// emitted), counting since the receiver started.
    ///
    /// The timeout is real time, so a paused tokio clock cannot make it fire early.
    ///
    /// # Errors
    ///
    /// A [`WaitError`] of kind [`Timeout`](WaitErrorKind::Timeout) saying how many
    /// requests were handled.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future only stops the wait.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Result<(), WaitError> {
        let target = n as u64;
        server::wait_for(&self.shared.progress, timeout, |p| p.requests >= target)
            .await
            .map_err(|p| {
                WaitError::new(
                    WaitErrorKind::Timeout,
                    format!(
                        "the Loki receiver handled {} of {n} requests within {timeout:?}",
                        p.requests
                    ),
                )
            })
    }

    /// Resolves once at least `n` requests have arrived (read whole, a push's body too, or
    /// given up on while its body was read), whether or not they have been answered yet,
    /// counting since the receiver started. Useful to act while a request is held by
    /// [`Fault::delay`] or latency: a push counted here is held already. The timeout is real
    /// time.
    ///
    /// # Errors
    ///
    /// A [`WaitError`] of kind [`Timeout`](WaitErrorKind::Timeout) saying how many
    /// requests arrived.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future only stops the wait.
    pub async fn wait_for_arrivals(&self, n: usize, timeout: Duration) -> Result<(), WaitError> {
        let target = n as u64;
        server::wait_for(&self.shared.progress, timeout, |p| p.arrivals >= target)
            .await
            .map_err(|p| {
                WaitError::new(
                    WaitErrorKind::Timeout,
                    format!(
                        "{} of {n} requests reached the Loki receiver within {timeout:?}",
                        p.arrivals
                    ),
                )
            })
    }

    /// A future that resolves once the receiver's port and connections are closed: after
    /// [`stop`](Self::stop), or once the receiver is dropped (which closes them
    /// asynchronously). It does not borrow the receiver, so it can be awaited after the drop.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future only stops the wait.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut listening = self.shared.listening.subscribe();
        async move {
            // An error means the state is gone, which also means closed.
            let _ = listening.wait_for(|l| !*l).await;
        }
    }

    /// Resolves once at least `n` entries have been accepted, counting since the receiver
    /// started. The timeout is real time.
    ///
    /// # Errors
    ///
    /// A [`WaitError`] of kind [`Timeout`](WaitErrorKind::Timeout) saying how many
    /// entries were accepted.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future only stops the wait.
    pub async fn wait_for_entries(&self, n: usize, timeout: Duration) -> Result<(), WaitError> {
        let target = n as u64;
        server::wait_for(&self.shared.progress, timeout, |p| p.entries >= target)
            .await
            .map_err(|p| {
                WaitError::new(
                    WaitErrorKind::Timeout,
                    format!(
                        "the Loki receiver accepted {} of {n} entries within {timeout:?}",
                        p.entries
                    ),
                )
            })
    }

    /// Queues a fault; each push request consumes the next one before normal handling.
    pub fn push_fault(&self, fault: Fault) {
        lock(&self.shared.script).push(fault);
    }

    /// Queues several faults, in order.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        let mut script = lock(&self.shared.script);
        for f in faults {
            script.push(f);
        }
    }

    /// Forgets the faults not yet consumed.
    pub fn clear_faults(&self) {
        lock(&self.shared.script).clear();
    }

    /// How many queued faults have not been consumed yet.
    pub fn pending_faults(&self) -> usize {
        lock(&self.shared.script).pending()
    }

    /// Delays every push request by `delay` (on top of any scripted delay): a slow Loki.
    /// `Duration::ZERO` turns it off.
    pub fn set_latency(&self, delay: Duration) {
        lock(&self.shared.script).latency = delay;
    }

    /// True while it is listening.
    pub fn is_running(&self) -> bool {
        lock(&self.task).as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Goes down: closes the port (connections are refused) and cuts open connections.
    /// Records are kept. Resolves once the port is closed; does nothing when already stopped.
    ///
    /// # Cancel safety
    ///
    /// The receiver is stopped even if this future is dropped before it resolves.
    pub async fn stop(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            // The listener and connections are dropped when the aborted task is; wait for that.
            let _ = task.await;
        }
    }

    /// Comes back on the same address after [`stop`](Self::stop), keeping records, faults
    /// and counters. Does nothing when already running.
    ///
    /// # Errors
    ///
    /// An I/O error when the address cannot be bound again (e.g. another process took it).
    pub async fn restart(&self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let listener = self.runner.bind(self.addr).await?;
        let task = self.runner.serve(listener, &self.shared);
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
        Ok(())
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
        // Then `runner` drops: its thread ends, and with its runtime go the listener and the
        // open connections (asynchronously: `closed()` says when).
    }
}

/// The receiver's own thread and current-thread runtime, as each sink has one: whatever the
/// test does with its runtime (blocks its only thread, pauses its clock), the receiver
/// keeps serving. Dropping it ends the thread; the runtime's tasks are dropped with the
/// runtime, on that thread, under the receiver's dispatcher.
struct Runner {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl Runner {
    fn start(id: &SinkId, dispatch: &tracing::Dispatch) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(format!("sinkwatch-{id}-blocking"))
            .build()
            .map_err(|e| Error::io(format!("cannot start the runtime of the Loki {id}"), e))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let dispatch = dispatch.clone();
        std::thread::Builder::new()
            .name(format!("sinkwatch-{id}"))
            .spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    runtime.block_on(async {
                        // Sent, or dropped with the receiver: either way, stop.
                        let _ = stopped.await;
                    });
                    drop(runtime);
                });
            })
            .map_err(|e| Error::io(format!("cannot spawn the thread of the Loki {id}"), e))?;
        Ok(Runner {
            handle,
            stop: Some(stop),
        })
    }

    /// Binds on the receiver's runtime (the listener is registered with its reactor).
    async fn bind(&self, addr: SocketAddr) -> Result<TcpListener> {
        let bind = async move { TcpListener::bind(addr).await };
        let bound = self
            .handle
            .spawn(bind)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        bound.map_err(|e| Error::io(format!("cannot bind the Loki receiver to {addr}"), e))
    }

    fn serve(&self, listener: TcpListener, shared: &Arc<Shared>) -> JoinHandle<()> {
        let serve = server::serve(listener, Arc::clone(shared));
        self.handle
            .spawn(serve.with_subscriber(shared.dispatch.clone()))
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
