//! The `tracing` layer that turns an application's events into records for the sinks.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::events;
use crate::queue::{self, EVENT_HEADER};
use crate::record::clock;
use crate::record::compact::{self, FieldWriter};
use crate::sink::Sink;
use crate::worker::{self, Patience, Producer};

/// A `tracing_subscriber::Layer` that turns each event into a record (as [`Record`](crate::Record)
/// describes one, in a compact form) and hands it to one or more sinks.
///
/// - **Cheap for the caller, with bounded backpressure.** The event is captured (time,
///   level, typed field values, optionally the span chain and file/line) into a compact
///   byte form, without an allocation per event, and queued; formatting and I/O happen on
///   each sink's worker. A full queue applies the sink's overflow policy: by default
///   ([`OverflowPolicy::Block`](crate::OverflowPolicy::Block)) the caller waits for room,
///   so a burst the sink can absorb loses nothing, but never longer than the sink's bound
///   (file: 1 s, Loki: 100 ms); past it the sink sheds load without waiting and reports
///   every record it drops (`records_dropped`, reason `stalled`), until its worker has
///   caught up. Under [`OverflowPolicy::Wait`](crate::OverflowPolicy::Wait) the layer
///   waits at most 1 s too (a direct `write` waits as long as it takes). Events emitted on
///   any sink's worker thread never wait (they are dropped and reported if the queue is
///   full), so two sinks cannot stall each other.
/// - **Nothing vanishes.** An event logged after a sink was shut down is refused and
///   counted in that sink's [`SinkStats::refused`](crate::SinkStats::refused), and
///   reported by a `writes_refused` event at most once a second.
/// - **No feedback loops.** An event emitted on a sink's own worker threads — its schema
///   events, and whatever its I/O stack (hyper, reqwest, h2, rustls) emits while it works —
///   is never handed back to that same sink. It may still go to the *other* sinks (the Loki
///   sink's `push_complete` events written to the file sink, for dashboards); turn that off
///   with [`with_sinkwatch_events(false)`](Self::with_sinkwatch_events).
/// - **Composes.** Use the usual filters: `EnvFilter` on the whole stack, or a per-layer
///   filter (`.with_filter(LevelFilter::WARN)`) to give one sink only some events. For
///   different filters per sink, add one `SinkLayer` per sink.
///
/// # Examples
///
/// ```no_run
/// use sinkwatch::{FileSink, SinkLayer};
/// use tracing_subscriber::filter::LevelFilter;
/// use tracing_subscriber::layer::SubscriberExt as _;
/// use tracing_subscriber::util::SubscriberInitExt as _;
/// use tracing_subscriber::Layer as _;
///
/// let file = FileSink::builder("./logs").build()?;
/// let guard = sinkwatch::ShutdownGuard::new().with_sink(file.clone());
/// tracing_subscriber::registry()
///     .with(SinkLayer::new(file).with_filter(LevelFilter::INFO))
///     .with(tracing_subscriber::fmt::layer())
///     .init();
/// tracing::info!(user = "ada", attempts = 3, "logged in");
/// drop(guard); // flushes the sinks with a deadline before main returns
/// # Ok::<(), sinkwatch::Error>(())
/// ```
#[derive(Clone)]
pub struct SinkLayer {
    sinks: Vec<Arc<dyn Sink>>,
    /// Each sink's queue handle, beside it: the hot path calls it without a virtual call.
    producers: Vec<Producer>,
    spans: bool,
    location: bool,
    sinkwatch_events: bool,
    /// Tells this layer's span extensions from another `SinkLayer`'s in the same subscriber.
    id: usize,
    /// Set once any span was created under this layer: until then an event has no span
    /// chain to look up (a registry lookup per event saved).
    saw_span: Arc<std::sync::atomic::AtomicBool>,
}

impl SinkLayer {
    /// A layer feeding one sink.
    ///
    /// By default, records carry the span chain with its fields, no file/line, and other
    /// sinks' sinkwatch events are forwarded.
    pub fn new(sink: impl Sink) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let producers = vec![sink.producer().clone()];
        SinkLayer {
            sinks: vec![Arc::new(sink)],
            producers,
            spans: true,
            location: false,
            sinkwatch_events: true,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            saw_span: Arc::default(),
        }
    }

    /// Also feeds `sink` (each event goes to every sink of the layer).
    #[must_use]
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.producers.push(sink.producer().clone());
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Whether records carry the current span chain and its fields. By default, true.
    #[must_use]
    pub fn with_spans(mut self, spans: bool) -> Self {
        self.spans = spans;
        self
    }

    /// Whether records carry the event's source file and line. By default, false.
    #[must_use]
    pub fn with_location(mut self, location: bool) -> Self {
        self.location = location;
        self
    }

    /// Whether sinkwatch's own events (target `sinkwatch`) from *other* sinks are
    /// forwarded to this layer's sinks. By default, true. A sink never receives the
    /// events of its own work, whatever this says.
    #[must_use]
    pub fn with_sinkwatch_events(mut self, forward: bool) -> Self {
        self.sinkwatch_events = forward;
        self
    }

    /// Encodes the event (and its span chain) into `buf`, sealed for the queue.
    fn capture<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, buf: &mut Scratch)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let flags = if self.location {
            compact::FLAG_LOCATION
        } else {
            0
        };
        buf.bytes.clear();
        buf.metas.clear();
        let mut fields =
            compact::begin_event(&mut buf.bytes, EVENT_HEADER, clock::now_nanos(), flags);
        event.record(&mut fields);
        fields.finish();
        buf.metas.push(event.metadata());
        let scope = if self.spans && self.saw_span.load(Ordering::Relaxed) {
            ctx.event_scope(event)
        } else {
            None
        };
        let Some(scope) = scope else {
            buf.bytes.push(0);
            queue::seal_event(&mut buf.bytes, 1);
            return;
        };
        let count_at = buf.bytes.len();
        buf.bytes.push(0);
        let mut count = 0_u8;
        // At most 255 metadata in all: the event's and 254 spans'.
        for span in scope.from_root().take(254) {
            let extensions = span.extensions();
            let fields = extensions
                .get::<SpanFields>()
                .map_or(EMPTY_FIELDS, |f| &f.bytes[..]);
            compact::push_span(&mut buf.bytes, fields);
            buf.metas.push(span.metadata());
            count += 1;
        }
        buf.bytes[count_at] = count;
        queue::seal_event(&mut buf.bytes, buf.metas.len());
    }

    /// Captures the event once and queues it in every sink `feeds` accepts.
    fn deliver<S>(
        &self,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
        buf: &mut Scratch,
        patience: Patience,
        feeds: impl Fn(&dyn Sink) -> bool,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.capture(event, ctx, buf);
        for (sink, producer) in self.sinks.iter().zip(&self.producers) {
            if feeds(sink.as_ref())
                && producer
                    .put_event(&buf.bytes, &buf.metas, patience)
                    .is_err()
            {
                Self::refused(sink.as_ref());
            }
        }
    }

    /// A write was refused because `sink` is closed: report it when one is due.
    fn refused(sink: &dyn Sink) {
        if let Some(n) = sink.producer().refused_report() {
            report_refused(sink.id().clone(), n);
        }
    }
}

/// Hands a `writes_refused` report to the reporter thread. An event emitted from inside a
/// layer callback would be dropped by `tracing` (it does not re-enter a dispatcher), so the
/// report is emitted from a thread of its own, to the global subscriber. Events on that
/// thread are never fed back to any sink.
fn report_refused(id: crate::SinkId, n: u64) {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};
    type Report = (crate::SinkId, u64);
    static REPORTER: OnceLock<Option<Mutex<Sender<Report>>>> = OnceLock::new();
    let reporter = REPORTER.get_or_init(|| {
        let (tx, rx) = channel::<Report>();
        std::thread::Builder::new()
            .name("sinkwatch-reporter".into())
            .spawn(move || {
                SCRATCH.with(|s| s.borrow_mut().reporting = true);
                for (id, n) in rx {
                    events::writes_refused(&id, n);
                }
            })
            .ok()
            .map(|_| Mutex::new(tx))
    });
    if let Some(tx) = reporter {
        let _ = tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send((id, n));
    }
}

/// A span with no fields: a count of zero.
const EMPTY_FIELDS: &[u8] = &[0, 0];

/// The calling thread's reused capture buffer (one thread-local for everything the layer
/// keeps per thread: one lookup per event).
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    metas: Vec<&'static Metadata<'static>>,
    /// Set on the thread that emits the layer's `writes_refused` reports: its events go
    /// to no sink.
    reporting: bool,
}

std::thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            bytes: Vec::new(),
            metas: Vec::new(),
            reporting: false,
        })
    };
}

impl fmt::Debug for SinkLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkLayer")
            .field(
                "sinks",
                &self
                    .sinks
                    .iter()
                    .map(|s| s.id().clone())
                    .collect::<Vec<_>>(),
            )
            .field("spans", &self.spans)
            .field("location", &self.location)
            .field("sinkwatch_events", &self.sinkwatch_events)
            .finish_non_exhaustive()
    }
}

impl<S> tracing_subscriber::Layer<S> for SinkLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !self.spans {
            return;
        }
        self.saw_span.store(true, Ordering::Relaxed);
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        // Every `SinkLayer` would record the same fields: the first one keeps them.
        if extensions.get_mut::<SpanFields>().is_none() {
            let mut bytes = Vec::new();
            let mut writer = FieldWriter::span(&mut bytes);
            attrs.record(&mut writer);
            writer.finish();
            extensions.insert(SpanFields {
                owner: self.id,
                bytes,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        if !self.spans {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            // Only the layer that keeps the fields adds to them, or two layers would
            // record every value twice.
            if fields.owner == self.id {
                let mut writer = FieldWriter::resume_span(&mut fields.bytes);
                values.record(&mut writer);
                writer.finish();
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if !self.sinkwatch_events && event.metadata().target() == events::TARGET {
            return;
        }
        // An application thread (the common case) feeds every sink, waiting as the sinks
        // allow. On a sink's worker thread, events of that sink's own work never go back to
        // it, and a full queue of another sink drops rather than waits.
        let on_worker = worker::on_any_worker();
        if on_worker && self.sinks.iter().all(|s| worker::on_worker_of(s.id())) {
            return;
        }
        let patience = if on_worker {
            Patience::None
        } else {
            Patience::Bounded
        };
        let feeds = |s: &dyn Sink| !on_worker || !worker::on_worker_of(s.id());
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(buf) if buf.reporting => {}
            Ok(mut buf) => self.deliver(event, &ctx, &mut buf, patience, feeds),
            // An event logged while capturing another (a `Debug` impl that logs); never on
            // the reporter's thread, which captures nothing.
            Err(_) => self.deliver(event, &ctx, &mut Scratch::default(), patience, feeds),
        });
    }
}

/// A span's recorded fields in compact form, kept in the registry's extensions by the
/// first `SinkLayer` that saw the span.
struct SpanFields {
    owner: usize,
    bytes: Vec<u8>,
}
