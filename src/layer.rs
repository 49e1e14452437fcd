//! The `tracing` layer that turns an application's events into records for the sinks.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
#[cfg(feature = "opentelemetry")]
use tracing_subscriber::registry::SpanRef;

use crate::events;
use crate::pipe::{self, Patience, Producer, EVENT_HEADER};
use crate::record::clock;
use crate::record::compact::{self, FieldWriter};
use crate::sink::Sink;
use crate::SinkId;

/// A `tracing_subscriber::Layer` that turns each event into a record (as [`Record`](crate::Record)
/// describes one, in a compact form) and hands it to one or more sinks.
///
/// - **Cheap for the caller, with bounded backpressure.** The event is captured (time,
///   level, typed field values, optionally the span chain and file/line) into a compact
///   byte form, without an allocation per event, and queued; formatting and I/O happen on
///   each sink's worker. A full queue applies the sink's overflow policy: by default
///   ([`OverflowPolicy::Block`](crate::OverflowPolicy::Block)) the caller waits for room,
///   so a burst the sink can absorb loses nothing, but never longer than the sink's bound
///   (its builder's `overflow` default: [file](crate::FileSinkBuilder#defaults),
///   [Loki](crate::LokiSinkBuilder#defaults)); past it the sink sheds load without waiting and reports
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
/// - **Trace ids** (feature `opentelemetry`). With tracing-opentelemetry's layer in the
///   subscriber, an event inside a span carries the span's OpenTelemetry `trace_id` and
///   `span_id` ([`TraceIds`](crate::TraceIds)), looked up once per span and copied (24 bytes)
///   per event; see [the Loki guide](crate::guide::loki_sink#trace-ids-and-grafana).
/// - **Composes.** Use the usual filters: `EnvFilter` on the whole stack, or a per-layer
///   filter (`.with_filter(LevelFilter::WARN)`) to give one sink only some events. For
///   different filters per sink, add one `SinkLayer` per sink.
///
/// # Defaults
///
/// [`SinkLayer::new`] starts from these, the one place they are written (a unit test checks
/// the table against `new`):
///
/// | setting | default |
/// |---|---|
/// | [`with_spans`](Self::with_spans) | true |
/// | [`with_location`](Self::with_location) | false |
/// | [`with_sinkwatch_events`](Self::with_sinkwatch_events) | true |
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
    /// The subscriber's dispatch, for tracing-opentelemetry's context lookup.
    #[cfg(feature = "opentelemetry")]
    dispatch: crate::otel::DispatchSlot,
}

impl SinkLayer {
    /// The longest an event waits for room in a sink's queue whose policy is
    /// [`OverflowPolicy::Wait`](crate::OverflowPolicy::Wait) (under `Block(d)`, `d` bounds
    /// the wait); past it the sink sheds load as `Block` does.
    pub const MAX_WAIT: std::time::Duration = pipe::LAYER_MAX_WAIT;

    /// A layer feeding one sink, with the [defaults](Self#defaults): records carry the span
    /// chain with its fields and no file/line, and other sinks' sinkwatch events are
    /// forwarded.
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
            #[cfg(feature = "opentelemetry")]
            dispatch: crate::otel::DispatchSlot::default(),
        }
    }

    /// Also feeds `sink` (each event goes to every sink of the layer).
    #[must_use]
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
        self.producers.push(sink.producer().clone());
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Whether records carry the current span chain and its fields. Default: see
    /// [the table](Self#defaults).
    #[must_use]
    pub fn with_spans(mut self, spans: bool) -> Self {
        self.spans = spans;
        self
    }

    /// Whether records carry the event's source file and line. Default: see
    /// [the table](Self#defaults).
    #[must_use]
    pub fn with_location(mut self, location: bool) -> Self {
        self.location = location;
        self
    }

    /// Whether sinkwatch's own events (target `sinkwatch`) from *other* sinks are
    /// forwarded to this layer's sinks. A sink never receives the events of its own work,
    /// whatever this says. Default: see [the table](Self#defaults).
    #[must_use]
    pub fn with_sinkwatch_events(mut self, forward: bool) -> Self {
        self.sinkwatch_events = forward;
        self
    }

    /// Encodes the event (and its span chain) into `buf`.
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
            #[cfg(feature = "opentelemetry")]
            if !self.spans && self.saw_span.load(Ordering::Relaxed) {
                self.capture_trace_alone(event, ctx, buf);
            }
            pipe::seal_event(&mut buf.bytes, 1);
            return;
        };
        let count_at = buf.bytes.len();
        buf.bytes.push(0);
        let mut count = 0_u8;
        let spans = scope.from_root();
        // The innermost span, the event's own, comes last; its trace ids follow the chain.
        #[cfg(feature = "opentelemetry")]
        let (leaf, mut trace, mut unresolved) =
            (spans.size_hint().0, crate::otel::Known::Ids(None), None);
        // At most 255 metadata in all: the event's and 254 spans'.
        for span in spans.take(254) {
            let extensions = span.extensions();
            let kept = extensions.get::<SpanFields>();
            let fields = kept.map_or(EMPTY_FIELDS, |f| &f.bytes[..]);
            compact::push_span(&mut buf.bytes, fields);
            buf.metas.push(span.metadata());
            count += 1;
            #[cfg(feature = "opentelemetry")]
            if usize::from(count) == leaf {
                trace = match kept {
                    Some(f) => f.trace.get(),
                    // A span this layer kept no fields for (made before it saw spans).
                    None => crate::otel::cached(&extensions),
                };
                if let crate::otel::Known::NotYet = trace {
                    drop(extensions);
                    unresolved = Some(span);
                }
            }
        }
        buf.bytes[count_at] = count;
        #[cfg(feature = "opentelemetry")]
        {
            let ids = match (unresolved, trace) {
                (Some(span), _) => self.resolve_ids(&span),
                (None, crate::otel::Known::Ids(ids)) => ids,
                (None, crate::otel::Known::NotYet) => None,
            };
            if let Some(ids) = ids {
                compact::push_trace(&mut buf.bytes, EVENT_HEADER, &ids);
            }
        }
        pipe::seal_event(&mut buf.bytes, buf.metas.len());
    }

    /// The event's trace ids without its span chain (`with_spans(false)`).
    #[cfg(feature = "opentelemetry")]
    fn capture_trace_alone<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, buf: &mut Scratch)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let Some(span) = ctx.event_span(event) else {
            return;
        };
        let cached = {
            let extensions = span.extensions();
            match extensions.get::<SpanFields>() {
                Some(kept) => kept.trace.get(),
                None => crate::otel::cached(&extensions),
            }
        };
        let ids = match cached {
            crate::otel::Known::Ids(ids) => ids,
            crate::otel::Known::NotYet => self.resolve_ids(&span),
        };
        if let Some(ids) = ids {
            compact::push_trace(&mut buf.bytes, EVENT_HEADER, &ids);
        }
    }

    /// Looks up the ids of the event's span (once per span) and keeps them with it. The
    /// caller holds no guard of the span's extensions.
    #[cfg(feature = "opentelemetry")]
    #[cold]
    #[inline(never)]
    fn resolve_ids<R>(&self, span: &SpanRef<'_, R>) -> Option<crate::otel::IdBytes>
    where
        R: for<'a> LookupSpan<'a>,
    {
        let ids = crate::otel::lookup(span, &self.dispatch);
        let kept = {
            let extensions = span.extensions();
            extensions
                .get::<SpanFields>()
                .map(|fields| fields.trace.keep(ids))
                .is_some()
        };
        if !kept {
            crate::otel::keep_alone(span, ids);
        }
        ids
    }
}

/// A span with no fields: a count of zero.
const EMPTY_FIELDS: &[u8] = &[0, 0];

/// The calling thread's reused capture buffer.
#[derive(Default)]
struct Scratch {
    bytes: Vec<u8>,
    metas: Vec<&'static Metadata<'static>>,
}

std::thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            bytes: Vec::new(),
            metas: Vec::new(),
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
    #[cfg(feature = "opentelemetry")]
    fn on_register_dispatch(&self, dispatch: &tracing::Dispatch) {
        self.dispatch.register(dispatch);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // Without the span chain, an event in a span still carries the span's trace ids.
        #[cfg(feature = "opentelemetry")]
        self.saw_span.store(true, Ordering::Relaxed);
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
                #[cfg(feature = "opentelemetry")]
                trace: crate::otel::KeptIds::default(),
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
        let mark = pipe::mark();
        if mark.is_any_worker() {
            return self.on_worker_event(event, &ctx, mark);
        }
        if !self.sinkwatch_events && event.metadata().target() == events::TARGET {
            return;
        }
        // An application's thread (no sink's): every sink takes the event, waiting for
        // room as long as the layer's bound allows.
        SCRATCH.with(|scratch| self.deliver_from(event, &ctx, scratch));
    }
}

impl SinkLayer {
    /// [`deliver`](Self::deliver) on an application's thread, through its scratch buffer.
    /// A call of its own, so that the thread-local's access inlines into `on_event`
    /// (measured: 21 instructions an event fewer than the whole in the closure).
    #[inline(never)]
    fn deliver_from<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, scratch: &RefCell<Scratch>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        match scratch.try_borrow_mut() {
            Ok(mut buf) => self.deliver(event, ctx, &mut buf, Patience::Bounded, |_| true),
            // An event logged while capturing another (a `Debug` impl that logs).
            Err(_) => self.deliver(
                event,
                ctx,
                &mut Scratch::default(),
                Patience::Bounded,
                |_| true,
            ),
        }
    }

    /// Captures the event once and queues it to every sink `accepts`.
    #[inline]
    fn deliver<S>(
        &self,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
        buf: &mut Scratch,
        patience: Patience,
        accepts: impl Fn(&SinkId) -> bool,
    ) where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        self.capture(event, ctx, buf);
        for producer in &self.producers {
            if accepts(producer.id()) {
                // Refused by a closed sink: counted and reported (`writes_refused`) by it.
                producer.put_event(&buf.bytes, &buf.metas, patience);
            }
        }
    }

    /// [`on_event`](tracing_subscriber::Layer::on_event) on a sink's own threads: the
    /// events of a sink's own work never go back to that sink, and such a thread never
    /// waits for room in another sink's queue.
    #[cold]
    #[inline(never)]
    fn on_worker_event<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, mark: pipe::Mark)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        if mark.is_reporter() {
            return;
        }
        if !self.sinkwatch_events && event.metadata().target() == events::TARGET {
            return;
        }
        let accepts = |id: &SinkId| !mark.is_worker_of(id);
        if !self.producers.iter().any(|p| accepts(p.id())) {
            return;
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => self.deliver(event, ctx, &mut buf, Patience::None, accepts),
            Err(_) => self.deliver(event, ctx, &mut Scratch::default(), Patience::None, accepts),
        });
    }
}

/// A span's recorded fields in compact form, kept in the registry's extensions by the
/// first `SinkLayer` that saw the span.
struct SpanFields {
    owner: usize,
    bytes: Vec<u8>,
    /// The span's trace ids, once the first event in it looked them up.
    #[cfg(feature = "opentelemetry")]
    trace: crate::otel::KeptIds,
}

#[cfg(all(test, feature = "file"))]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_table_is_what_new_sets() {
        let dir = tempfile::tempdir().unwrap();
        let sink = crate::FileSink::builder(dir.path()).build().unwrap();
        let layer = SinkLayer::new(sink.clone());
        crate::defaults::assert_table(
            include_str!("layer.rs"),
            &[
                ("with_spans", layer.spans.to_string()),
                ("with_location", layer.location.to_string()),
                ("with_sinkwatch_events", layer.sinkwatch_events.to_string()),
            ],
        );
        sink.shutdown_blocking(std::time::Duration::from_secs(5));
    }
}
