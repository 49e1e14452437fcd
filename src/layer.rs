//! The `tracing` layer that turns an application's events into records for the sinks.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::events;
use crate::record::{Record, SpanInfo, Value};
use crate::sink::Sink;
use crate::worker;

/// A `tracing_subscriber::Layer` that turns each event into a [`Record`] and hands it to
/// one or more sinks.
///
/// - **Never blocks the caller.** The event is captured (time, level, target, message,
///   typed fields, optionally the span chain and file/line) and queued; formatting and I/O
///   happen on each sink's worker. A full queue applies the sink's overflow policy (a
///   `Wait` policy drops the new record here, since the caller must not wait) and the drop
///   is reported by that sink's worker as `records_dropped`.
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
    spans: bool,
    location: bool,
    sinkwatch_events: bool,
}

impl SinkLayer {
    /// A layer feeding one sink.
    ///
    /// By default, records carry the span chain with its fields, no file/line, and other
    /// sinks' sinkwatch events are forwarded.
    pub fn new(sink: impl Sink) -> Self {
        SinkLayer {
            sinks: vec![Arc::new(sink)],
            spans: true,
            location: false,
            sinkwatch_events: true,
        }
    }

    /// Also feeds `sink` (each event goes to every sink of the layer).
    #[must_use]
    pub fn with_sink(mut self, sink: impl Sink) -> Self {
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

    fn capture<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>) -> Record
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        let mut visitor = EventVisitor::default();
        event.record(&mut visitor);
        // A `log` record bridged by tracing-log has the target `log`; its real target is
        // in the field `log.target`.
        let target = match visitor.log_target.take() {
            Some(t) if meta.target() == "log" => Cow::Owned(t),
            _ => Cow::Borrowed(meta.target()),
        };
        Record {
            time: SystemTime::now(),
            level: *meta.level(),
            target,
            message: visitor.message,
            fields: visitor.fields,
            spans: if self.spans {
                span_chain(event, ctx)
            } else {
                Vec::new()
            },
            file: if self.location { meta.file() } else { None },
            line: if self.location { meta.line() } else { None },
        }
    }
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
            .finish()
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
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if extensions.get_mut::<SpanFields>().is_none() {
            let mut visitor = EventVisitor::default();
            attrs.record(&mut visitor);
            extensions.insert(SpanFields(visitor.into_fields()));
        }
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        if !self.spans {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(fields) = extensions.get_mut::<SpanFields>() {
            let mut visitor = EventVisitor::default();
            values.record(&mut visitor);
            fields.0.extend(visitor.into_fields());
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let own = event.metadata().target() == events::TARGET;
        if own && !self.sinkwatch_events {
            return;
        }
        // Events of a sink's own work (on its worker threads) never go back to that sink.
        let accepts = |s: &&Arc<dyn Sink>| !worker::on_worker_of(s.id());
        let mut remaining = self.sinks.iter().filter(accepts).count();
        if remaining == 0 {
            return;
        }
        let mut record = Some(self.capture(event, &ctx));
        for sink in self.sinks.iter().filter(accepts) {
            remaining -= 1;
            // The last sink takes the record itself; the others get clones.
            let this = if remaining == 0 {
                record.take()
            } else {
                record.clone()
            };
            if let Some(r) = this {
                sink.try_write(r);
            }
        }
    }
}

/// A span's recorded fields, kept in the registry's extensions.
struct SpanFields(Vec<(Cow<'static, str>, Value)>);

fn span_chain<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Vec<SpanInfo>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(scope) = ctx.event_scope(event) else {
        return Vec::new();
    };
    scope
        .from_root()
        .map(|span| SpanInfo {
            name: span.name(),
            fields: span
                .extensions()
                .get::<SpanFields>()
                .map(|f| f.0.clone())
                .unwrap_or_default(),
        })
        .collect()
}

/// Captures an event's fields as typed values, without formatting anything but the
/// message (and values that only offer `Debug`).
#[derive(Default)]
struct EventVisitor {
    message: String,
    fields: Vec<(Cow<'static, str>, Value)>,
    log_target: Option<String>,
}

impl EventVisitor {
    fn push(&mut self, field: &Field, value: Value) {
        if self.fields.is_empty() {
            self.fields.reserve(6);
        }
        self.fields.push((Cow::Borrowed(field.name()), value));
    }

    /// For spans, which have no message: keep a `message` field as a field.
    fn into_fields(mut self) -> Vec<(Cow<'static, str>, Value)> {
        if !self.message.is_empty() {
            self.fields
                .insert(0, (Cow::Borrowed("message"), Value::from(self.message)));
        }
        self.fields
    }
}

impl Visit for EventVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() != "log.line" {
            self.push(field, Value::U64(value));
        }
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.push(field, Value::I128(value));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push(field, Value::U128(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => value.clone_into(&mut self.message),
            "log.target" => self.log_target = Some(value.to_owned()),
            // The rest of tracing-log's bookkeeping for bridged `log` records.
            "log.module_path" | "log.file" => {}
            _ => self.push(field, Value::Str(Cow::Owned(value.to_owned()))),
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The error and its chain of causes, as text.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.push(field, Value::Str(Cow::Owned(text)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            self.push(field, Value::Str(Cow::Owned(format!("{value:?}"))));
        }
    }
}
