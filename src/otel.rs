//! The OpenTelemetry ids of the span an event is logged in (feature `opentelemetry`).
//!
//! tracing-opentelemetry keeps each span's OpenTelemetry context in the span's extensions,
//! behind private types that its public `get_otel_context` reads, and a span gets its ids
//! only when it is started: on first entry by default, or when its context is asked for
//! (which starts it). That lookup costs hundreds of instructions (a registry lookup, two
//! locks, the context's clone), so [`SinkLayer`](crate::SinkLayer) makes it once per span, at
//! the first event it captures in the span, and keeps the answer with the span
//! ([`KeptIds`]); every later event in the span copies 24 bytes from there. Once started,
//! a span's context never changes (`set_parent` on a started span fails), so the kept ids
//! stay right.

use std::fmt;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use tracing::Dispatch;
use tracing_core::dispatcher::WeakDispatch;
use tracing_subscriber::registry::{Extensions, LookupSpan, SpanRef};

use crate::record::TraceIds;

/// The compact form's bytes of a span's ids (trace id, then span id).
pub(crate) type IdBytes = [u8; 24];

/// The dispatch a layer was registered with, which `get_otel_context` needs (a layer's
/// `Context` does not give it, and inside an event's dispatch `dispatcher::get_default`
/// only sees a scoped dispatcher's `NONE`). Weak, so the layer keeps no cycle alive.
#[derive(Default)]
pub(crate) struct DispatchSlot(OnceLock<WeakDispatch>);

impl DispatchSlot {
    /// Remembers `dispatch` (the first one: a layer is registered once).
    pub(crate) fn register(&self, dispatch: &Dispatch) {
        let _ = self.0.set(dispatch.downgrade());
    }

    /// The registered dispatch, else the current default (a layer nested in a type that
    /// does not forward the registration, under a global default).
    fn dispatch(&self) -> Dispatch {
        self.0
            .get()
            .and_then(WeakDispatch::upgrade)
            .unwrap_or_else(|| tracing::dispatcher::get_default(Dispatch::clone))
    }
}

/// A clone is a new layer, registered with a subscriber of its own.
impl Clone for DispatchSlot {
    fn clone(&self) -> Self {
        DispatchSlot::default()
    }
}

impl fmt::Debug for DispatchSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DispatchSlot")
    }
}

/// A span's ids as found at the first event captured in it (`None` inside: no valid
/// OpenTelemetry context), shared by every `SinkLayer`. Kept in the layer's record of the
/// span's fields (made when the span is, so looking it up costs nothing more per event and
/// allocates nothing in the middle of the application's work), or on its own in the span's
/// extensions when the layer keeps no fields (`with_spans(false)`).
#[derive(Default)]
pub(crate) struct KeptIds(OnceLock<Option<IdBytes>>);

/// What is known of a span's ids.
#[derive(Clone, Copy)]
pub(crate) enum Known {
    /// Not looked up yet: call [`lookup`].
    NotYet,
    /// Looked up: the ids, or `None` for a span without a valid context.
    Ids(Option<IdBytes>),
}

impl KeptIds {
    /// The ids, once looked up.
    #[inline]
    pub(crate) fn get(&self) -> Known {
        self.0.get().map_or(Known::NotYet, |&ids| Known::Ids(ids))
    }

    /// Keeps the ids (another thread's event in the same span may have been first: the
    /// same answer).
    pub(crate) fn keep(&self, ids: Option<IdBytes>) {
        let _ = self.0.set(ids);
    }
}

/// The ids kept on their own in a span's extensions, if any.
pub(crate) fn cached(extensions: &Extensions<'_>) -> Known {
    extensions
        .get::<KeptIds>()
        .map_or(Known::NotYet, KeptIds::get)
}

/// Keeps `ids` on their own in the span's extensions. The caller must hold no guard of them.
pub(crate) fn keep_alone<R>(span: &SpanRef<'_, R>, ids: Option<IdBytes>)
where
    R: for<'a> LookupSpan<'a>,
{
    let mut extensions = span.extensions_mut();
    if let Some(kept) = extensions.get_mut::<KeptIds>() {
        kept.keep(ids);
    } else {
        let kept = KeptIds::default();
        kept.keep(ids);
        extensions.insert(kept);
    }
}

/// The ids of the innermost span of `span`'s scope that tracing-opentelemetry's layer saw
/// (one that a per-layer filter hid from it belongs to its nearest visible parent's span),
/// if its span context is valid. Sampled or not: a span that is not sampled still has ids,
/// which tie its records together. The caller must hold no guard of the scope's
/// extensions (`get_otel_context` takes them).
#[cold]
#[inline(never)]
pub(crate) fn lookup<R>(span: &SpanRef<'_, R>, slot: &DispatchSlot) -> Option<IdBytes>
where
    R: for<'a> LookupSpan<'a>,
{
    let dispatch = slot.dispatch();
    for span in span.scope() {
        let Some(cx) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) else {
            continue;
        };
        let otel = cx.span();
        let context = otel.span_context();
        if !context.is_valid() {
            return None;
        }
        let ids = TraceIds::new(context.trace_id().to_bytes(), context.span_id().to_bytes())?;
        return Some(ids.to_bytes());
    }
    None
}
