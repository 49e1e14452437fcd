//! Feature `opentelemetry`: with tracing-opentelemetry's layer (and a real SDK tracer
//! provider, no exporter) in the subscriber, a record logged inside a span carries that
//! span's ids, compared here with what the SDK gave the span
//! (`OpenTelemetrySpanExt::context`): as `trace_id`/`span_id` fields of the file sink's
//! lines and as structured metadata of the Loki entries the receiver decoded, never as
//! labels; records outside any span (or without a valid span context) carry neither.

use std::path::Path;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use serde_json::Value as Json;
use sinkwatch::testing::{LokiReceiver, ReceivedEntry};
use sinkwatch::{FileSink, Format, LineFormat, LokiSink, SinkLayer};
use tracing::Subscriber;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer as _;

/// The sinks of one test and what they received.
struct Sinks {
    file: FileSink,
    loki: LokiSink,
    receiver: LokiReceiver,
    _dir: tempfile::TempDir,
}

/// The hex ids a span has in OpenTelemetry (all zeros when its context is invalid).
fn otel_ids(span: &tracing::Span) -> (String, String) {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    (sc.trace_id().to_string(), sc.span_id().to_string())
}

impl Sinks {
    async fn new(format: Format) -> Self {
        let receiver = LokiReceiver::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = FileSink::builder(dir.path())
            .format(format)
            .build()
            .unwrap();
        let loki = LokiSink::builder(receiver.url())
            .label("app", "otel")
            .label_from_field("level")
            .line_format(LineFormat::Json)
            .build()
            .unwrap();
        Sinks {
            file,
            loki,
            receiver,
            _dir: dir,
        }
    }

    fn layer(&self) -> SinkLayer {
        SinkLayer::new(self.file.clone()).with_sink(self.loki.clone())
    }

    /// Delivers everything and returns the file's lines (JSON) and the Loki entries, in
    /// the order logged.
    async fn delivered(&self) -> (Vec<Json>, Vec<ReceivedEntry>) {
        self.file.flush().await.unwrap();
        self.loki.flush().await.unwrap();
        let lines = file_lines(self.file.active_path())
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut entries = self.receiver.entries();
        entries.sort_by_key(|e| e.timestamp_ns);
        (lines, entries)
    }
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn provider(sampler: Sampler) -> SdkTracerProvider {
    SdkTracerProvider::builder().with_sampler(sampler).build()
}

/// The subscriber: tracing-opentelemetry's layer with the SDK's tracer, then the sinks.
fn subscriber(
    provider: &SdkTracerProvider,
    sinks: SinkLayer,
) -> impl Subscriber + for<'a> LookupSpan<'a> {
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(sinks)
}

/// Checks the file line and the Loki entry of one record against `ids` (`None`: neither
/// may carry ids).
fn assert_ids(line: &Json, entry: &ReceivedEntry, ids: Option<&(String, String)>) {
    let message = &line["message"];
    assert_eq!(
        entry.metadata("trace_id").is_some(),
        ids.is_some(),
        "{entry:?}"
    );
    if let Some((trace, span)) = ids {
        assert_eq!(trace.len(), 32);
        assert_eq!(span.len(), 16);
        assert!(trace
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(line["trace_id"].as_str(), Some(trace.as_str()), "{message}");
        assert_eq!(line["span_id"].as_str(), Some(span.as_str()), "{message}");
        assert_eq!(
            entry.metadata("trace_id"),
            Some(trace.as_str()),
            "{message}"
        );
        assert_eq!(entry.metadata("span_id"), Some(span.as_str()), "{message}");
    } else {
        assert!(line.get("trace_id").is_none(), "{line}");
        assert!(line.get("span_id").is_none(), "{line}");
        assert_eq!(entry.metadata("span_id"), None, "{entry:?}");
    }
    // Never labels, and not repeated in the Loki line: they are its metadata.
    assert!(entry.label("trace_id").is_none() && entry.label("span_id").is_none());
    assert!(!entry.stream.contains("trace_id"), "{}", entry.stream);
    assert!(!entry.line.contains("trace_id"), "{}", entry.line);
    let loki_line: Json = serde_json::from_str(&entry.line).unwrap();
    assert_eq!(loki_line["message"], *message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_and_child_spans_give_their_ids_and_records_outside_spans_carry_none() {
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOn);
    let (root_ids, child_ids) =
        tracing::subscriber::with_default(subscriber(&provider, sinks.layer()), || {
            tracing::info!("before any span");
            let root = tracing::info_span!("request", id = 7_u64);
            let root_ids = {
                let _r = root.enter();
                tracing::info!("in the root");
                let child = tracing::info_span!("query");
                let child_ids = {
                    let _c = child.enter();
                    tracing::warn!(rows = 3_u64, "in the child");
                    otel_ids(&child)
                };
                tracing::info!("back in the root");
                (otel_ids(&root), child_ids)
            };
            tracing::info!("after the spans");
            root_ids
        });
    let (lines, entries) = sinks.delivered().await;
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(entries.len(), 5);
    // A child shares its root's trace and has a span id of its own.
    assert_eq!(child_ids.0, root_ids.0);
    assert_ne!(child_ids.1, root_ids.1);
    assert_ne!(root_ids.0, TraceId::INVALID.to_string());
    let want = [
        None,
        Some(&root_ids),
        Some(&child_ids),
        Some(&root_ids),
        None,
    ];
    for ((line, entry), ids) in lines.iter().zip(&entries).zip(want) {
        assert_ids(line, entry, ids);
    }
    // The ids come right after the event's fields.
    let raw = file_lines(sinks.file.active_path());
    assert!(
        raw[2].contains(&format!(
            r#""fields":{{"rows":3}},"trace_id":"{}","span_id":"{}","spans":["#,
            child_ids.0, child_ids.1
        )),
        "{}",
        raw[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_parent_gives_its_trace_id_and_the_span_its_own_span_id() {
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)));
    let remote_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let remote_span = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let ids = tracing::subscriber::with_default(subscriber(&provider, sinks.layer()), || {
        let remote = SpanContext::new(
            remote_trace,
            remote_span,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let parent = opentelemetry::Context::new().with_remote_span_context(remote);
        let span = tracing::info_span!("handler");
        span.set_parent(parent).unwrap();
        let _s = span.enter();
        tracing::info!("handling");
        otel_ids(&span)
    });
    assert_eq!(ids.0, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(ids.1, "00f067aa0ba902b7");
    let (lines, entries) = sinks.delivered().await;
    assert_ids(&lines[0], &entries[0], Some(&ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_that_is_not_sampled_still_ties_its_records_together() {
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOff);
    let ids = tracing::subscriber::with_default(subscriber(&provider, sinks.layer()), || {
        let span = tracing::info_span!("dropped by the sampler");
        let _s = span.enter();
        tracing::info!("one");
        tracing::info!("two");
        assert!(!span.context().span().span_context().is_sampled());
        otel_ids(&span)
    });
    let (lines, entries) = sinks.delivered().await;
    assert_ids(&lines[0], &entries[0], Some(&ids));
    assert_ids(&lines[1], &entries[1], Some(&ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_an_explicit_parent_that_was_never_entered_gets_its_ids() {
    // The span is still a builder in tracing-opentelemetry (not started: no ids yet) when
    // the event arrives; the lookup starts it, and its ids are the ones it keeps.
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOn);
    let ids = tracing::subscriber::with_default(subscriber(&provider, sinks.layer()), || {
        let span = tracing::info_span!("never entered");
        tracing::info!(parent: &span, "explicit parent");
        tracing::info!(parent: &span, "again");
        otel_ids(&span)
    });
    let (lines, entries) = sinks.delivered().await;
    assert_ids(&lines[0], &entries[0], Some(&ids));
    assert_ids(&lines[1], &entries[1], Some(&ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_span_chain_records_still_carry_the_ids() {
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOn);
    let layer = sinks.layer().with_spans(false);
    let ids = tracing::subscriber::with_default(subscriber(&provider, layer), || {
        let span = tracing::info_span!("s");
        let _s = span.enter();
        tracing::info!("inside");
        otel_ids(&span)
    });
    let (lines, entries) = sinks.delivered().await;
    assert!(lines[0].get("spans").is_none(), "{}", lines[0]);
    assert_ids(&lines[0], &entries[0], Some(&ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_hidden_from_the_otel_layer_logs_with_its_nearest_visible_parent() {
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOn);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_filter(filter_fn(|m| m.name() != "hidden" || !m.is_span()));
    let subscriber = tracing_subscriber::registry()
        .with(otel)
        .with(sinks.layer());
    let ids = tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!("outer");
        let _o = outer.enter();
        let hidden = tracing::info_span!("hidden");
        let _h = hidden.enter();
        tracing::info!("in the hidden span");
        otel_ids(&outer)
    });
    let (lines, entries) = sinks.delivered().await;
    assert_eq!(lines[0]["spans"][1]["name"], "hidden");
    assert_ids(&lines[0], &entries[0], Some(&ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_span_context_records_carry_no_ids() {
    let sinks = Sinks::new(Format::Json).await;
    // No OpenTelemetry layer at all, then one with the no-op tracer (invalid contexts).
    let plain = tracing_subscriber::registry().with(sinks.layer());
    tracing::subscriber::with_default(plain, || {
        let span = tracing::info_span!("no otel layer");
        let _s = span.enter();
        tracing::info!("one");
    });
    let noop = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer())
        .with(sinks.layer());
    tracing::subscriber::with_default(noop, || {
        let span = tracing::info_span!("no-op tracer");
        let _s = span.enter();
        assert!(!span.context().span().span_context().is_valid());
        tracing::info!("two");
    });
    let (lines, entries) = sinks.delivered().await;
    assert_eq!(lines.len(), 2);
    assert_ids(&lines[0], &entries[0], None);
    assert_ids(&lines[1], &entries[1], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_end_with_the_ids() {
    let sinks = Sinks::new(Format::Text).await;
    let provider = provider(Sampler::AlwaysOn);
    let ids = tracing::subscriber::with_default(subscriber(&provider, sinks.layer()), || {
        tracing::info!("outside");
        let span = tracing::info_span!("s");
        let _s = span.enter();
        tracing::info!(n = 1_u64, "inside");
        otel_ids(&span)
    });
    sinks.file.flush().await.unwrap();
    let lines = file_lines(sinks.file.active_path());
    assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
    assert!(
        lines[1].ends_with(&format!(" n=1 trace_id={} span_id={}", ids.0, ids.1)),
        "{}",
        lines[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_other_threads_in_a_span_get_its_ids() {
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOn);
    let dispatch = tracing::Dispatch::new(subscriber(&provider, sinks.layer()));
    let ids = tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!("shared");
        std::thread::scope(|scope| {
            for i in 0..4_u64 {
                let (span, dispatch) = (span.clone(), dispatch.clone());
                scope.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        span.in_scope(|| tracing::info!(i, "from a thread"));
                    });
                });
            }
        });
        otel_ids(&span)
    });
    let (lines, entries) = sinks.delivered().await;
    assert_eq!(lines.len(), 4);
    for (line, entry) in lines.iter().zip(&entries) {
        assert_ids(line, entry, Some(&ids));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_layer_behind_a_per_layer_filter_or_in_a_box_finds_the_ids() {
    // Both pass the subscriber's dispatch on to the layer (`on_register_dispatch`).
    let sinks = Sinks::new(Format::Json).await;
    let provider = provider(Sampler::AlwaysOn);
    let filtered = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(
            sinks
                .layer()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        );
    let ids = tracing::subscriber::with_default(filtered, || {
        let span = tracing::info_span!("filtered");
        let _s = span.enter();
        tracing::debug!("filtered out");
        tracing::info!("through the filter");
        otel_ids(&span)
    });
    let boxed = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
        .with(Box::new(sinks.layer()));
    let boxed_ids = tracing::subscriber::with_default(boxed, || {
        let span = tracing::info_span!("boxed");
        let _s = span.enter();
        tracing::info!("through a box");
        otel_ids(&span)
    });
    let (lines, entries) = sinks.delivered().await;
    assert_eq!(lines.len(), 2);
    assert_ids(&lines[0], &entries[0], Some(&ids));
    assert_ids(&lines[1], &entries[1], Some(&boxed_ids));
}
