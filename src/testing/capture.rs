//! The capture layer and the process-wide hub of captured events.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::SinkId;

/// A field value as captured from an event, keeping its type.
///
/// Values recorded with `?x` or `%x` arrive as text and are kept as [`Debug`](Self::Debug);
/// matching normalises them (a `Debug("\"a\"")` equals `Str("a")`, `Debug("3")` equals
/// `U64(3)`), so the sigil a call site used does not decide whether a matcher matches.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum FieldValue {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A signed 128-bit integer.
    I128(i128),
    /// An unsigned 128-bit integer.
    U128(u128),
    /// A float.
    F64(f64),
    /// A string recorded as a string.
    Str(String),
    /// A value recorded through `Debug` or `Display` (`?x`, `%x`), as text.
    Debug(String),
}

impl FieldValue {
    /// The value as a `u64`, if it is a non-negative integer (or text of one).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            FieldValue::U64(n) => Some(*n),
            FieldValue::I64(n) => u64::try_from(*n).ok(),
            FieldValue::I128(n) => u64::try_from(*n).ok(),
            FieldValue::U128(n) => u64::try_from(*n).ok(),
            FieldValue::Debug(s) | FieldValue::Str(s) => s.parse().ok(),
            FieldValue::Bool(_) | FieldValue::F64(_) => None,
        }
    }

    /// The value as an `i64`, if it is an integer in range (or text of one).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            FieldValue::U64(n) => i64::try_from(*n).ok(),
            FieldValue::I64(n) => Some(*n),
            FieldValue::I128(n) => i64::try_from(*n).ok(),
            FieldValue::U128(n) => i64::try_from(*n).ok(),
            FieldValue::Debug(s) | FieldValue::Str(s) => s.parse().ok(),
            FieldValue::Bool(_) | FieldValue::F64(_) => None,
        }
    }

    /// The value as an `f64`, if it is a number (or text of one).
    #[allow(clippy::cast_precision_loss)] // approximate on purpose: comparing numbers
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FieldValue::U64(n) => Some(*n as f64),
            FieldValue::I64(n) => Some(*n as f64),
            FieldValue::I128(n) => Some(*n as f64),
            FieldValue::U128(n) => Some(*n as f64),
            FieldValue::F64(x) => Some(*x),
            FieldValue::Debug(s) | FieldValue::Str(s) => s.parse().ok(),
            FieldValue::Bool(_) => None,
        }
    }

    /// The value as a `bool`, if it is one (or the text `true`/`false`).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            FieldValue::Bool(b) => Some(*b),
            FieldValue::Debug(s) | FieldValue::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The value as text: a string as is, a `?x` string without its quotes.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            FieldValue::Str(s) => Some(s),
            FieldValue::Debug(s) => Some(unquote(s)),
            _ => None,
        }
    }

    fn is_number(&self) -> bool {
        matches!(
            self,
            FieldValue::U64(_)
                | FieldValue::I64(_)
                | FieldValue::I128(_)
                | FieldValue::U128(_)
                | FieldValue::F64(_)
        )
    }

    /// Equality across representations: numbers numerically, text with or without the
    /// quotes `?` adds, booleans with their text.
    pub fn loosely_eq(&self, other: &FieldValue) -> bool {
        if self == other {
            return true;
        }
        match (self, other) {
            (FieldValue::Bool(a), b) | (b, FieldValue::Bool(a)) => b.as_bool() == Some(*a),
            (a, b) if a.is_number() || b.is_number() => match (a.as_i128(), b.as_i128()) {
                (Some(x), Some(y)) => x == y,
                _ => match (a.as_f64(), b.as_f64()) {
                    (Some(x), Some(y)) => x == y,
                    _ => false,
                },
            },
            (a, b) => match (a.as_str(), b.as_str()) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }

    fn as_i128(&self) -> Option<i128> {
        match self {
            FieldValue::U64(n) => Some(i128::from(*n)),
            FieldValue::I64(n) => Some(i128::from(*n)),
            FieldValue::I128(n) => Some(*n),
            FieldValue::U128(n) => i128::try_from(*n).ok(),
            FieldValue::Debug(s) | FieldValue::Str(s) => s.parse().ok(),
            FieldValue::F64(_) | FieldValue::Bool(_) => None,
        }
    }
}

fn unquote(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

impl fmt::Display for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::I64(n) => write!(f, "{n}"),
            FieldValue::U64(n) => write!(f, "{n}"),
            FieldValue::I128(n) => write!(f, "{n}"),
            FieldValue::U128(n) => write!(f, "{n}"),
            FieldValue::F64(x) => write!(f, "{x}"),
            FieldValue::Str(s) => write!(f, "{s:?}"),
            FieldValue::Debug(s) => f.write_str(s),
        }
    }
}

macro_rules! field_value_from {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for FieldValue {
            fn from(v: $t) -> Self {
                FieldValue::$variant(v.into())
            }
        })*
    };
}

field_value_from! {
    bool => Bool, i8 => I64, i16 => I64, i32 => I64, i64 => I64,
    u8 => U64, u16 => U64, u32 => U64, u64 => U64, i128 => I128, u128 => U128,
    f32 => F64, f64 => F64, String => Str, &str => Str, &String => Str,
}

impl From<usize> for FieldValue {
    fn from(v: usize) -> Self {
        FieldValue::U64(v as u64)
    }
}

impl From<&SinkId> for FieldValue {
    fn from(v: &SinkId) -> Self {
        FieldValue::Str(v.as_str().to_owned())
    }
}

/// One event as the capture layer saw it.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    seq: u64,
    at: Instant,
    name: &'static str,
    target: &'static str,
    level: Level,
    thread: Option<String>,
    fields: Vec<(&'static str, FieldValue)>,
}

impl CapturedEvent {
    /// The event's position in the process-wide capture order.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When it was captured.
    pub fn captured_at(&self) -> Instant {
        self.at
    }

    /// The event's name (`Metadata::name()`): a schema name such as `push_complete` for
    /// sinkwatch's events, `event file:line` for events without a name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The event's target.
    pub fn target(&self) -> &'static str {
        self.target
    }

    /// The event's level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The name of the thread that emitted it, if it had one.
    pub fn thread(&self) -> Option<&str> {
        self.thread.as_deref()
    }

    /// Every field, in order (the message, if any, is the field `message`).
    pub fn fields(&self) -> &[(&'static str, FieldValue)] {
        &self.fields
    }

    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&FieldValue> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// A field as a `u64`.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.field(name).and_then(FieldValue::as_u64)
    }

    /// A field as an `i64`.
    pub fn i64(&self, name: &str) -> Option<i64> {
        self.field(name).and_then(FieldValue::as_i64)
    }

    /// A field as an `f64`.
    pub fn f64(&self, name: &str) -> Option<f64> {
        self.field(name).and_then(FieldValue::as_f64)
    }

    /// A field as a `bool`.
    pub fn bool(&self, name: &str) -> Option<bool> {
        self.field(name).and_then(FieldValue::as_bool)
    }

    /// A field as text.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.field(name).and_then(FieldValue::as_str)
    }
}

impl CapturedEvent {
    /// The event as one log line, as `tracing-test` and `fmt` print it: level, target,
    /// message, then the other fields (`INFO my_app::orders: order placed order_id=42`).
    ///
    /// This is the text [`Watcher::logs_contain`](super::Watcher::logs_contain) searches.
    pub fn log_line(&self) -> String {
        let mut line = format!("{} {}:", self.level, self.target);
        if let Some(message) = self.field("message") {
            let text = match message {
                FieldValue::Str(s) | FieldValue::Debug(s) => s.as_str(),
                _ => "",
            };
            line.push(' ');
            line.push_str(text);
        }
        for (name, value) in self.fields.iter().filter(|(n, _)| *n != "message") {
            use fmt::Write as _;
            let _ = write!(line, " {name}={value}");
        }
        line
    }
}

impl fmt::Display for CapturedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} {}",
            self.seq,
            self.level,
            self.target,
            short_name(self.name)
        )?;
        for (name, value) in &self.fields {
            write!(f, " {name}={value}")?;
        }
        if let Some(thread) = &self.thread {
            write!(f, " [thread {thread}]")?;
        }
        Ok(())
    }
}

/// An event's name without the registry path of a dependency's source file:
/// `event /home/u/.cargo/registry/src/index.crates.io-6f17d22bba15001f/hyper-util-0.1.10/src/client/pool.rs:12`
/// becomes `event hyper-util-0.1.10/src/client/pool.rs:12`.
fn short_name(name: &str) -> std::borrow::Cow<'_, str> {
    const REGISTRY: &str = "/registry/src/";
    let Some(at) = name.find(REGISTRY) else {
        return name.into();
    };
    let after_index = &name[at + REGISTRY.len()..];
    let Some(slash) = after_index.find('/') else {
        return name.into();
    };
    let prefix = name.split(' ').next().unwrap_or("");
    format!("{prefix} {}", &after_index[slash + 1..]).into()
}

/// Records an event's fields as typed values, in order: the `Visit` behind every capture.
#[derive(Default)]
struct FieldRecorder(Vec<(&'static str, FieldValue)>);

impl Visit for FieldRecorder {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), FieldValue::F64(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), FieldValue::I64(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), FieldValue::U64(value)));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.0.push((field.name(), FieldValue::I128(value)));
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.0.push((field.name(), FieldValue::U128(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), FieldValue::Bool(value)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .push((field.name(), FieldValue::Str(value.to_owned())));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), FieldValue::Debug(format!("{value:?}"))));
    }
}

/// Events kept when no watcher needs older ones (for diagnostics only).
const KEEP_IDLE: usize = 64;
/// The most events the hub keeps for watchers that have not fetched them yet, before the
/// oldest are evicted (a watcher that needed them then fails its next wait with `Overflow`).
pub(crate) const MAX_RETAINED: usize = 1_000_000;

/// The hub's buffer: only what some live watcher has not fetched yet (plus a few idle ones).
///
/// Watchers copy the new tail out under the lock (cheap `Arc` clones) and match on their
/// own copy, outside it: the lock is held only to append or to copy out, so an emitting
/// thread never waits on a scan.
pub(crate) struct HubState {
    events: VecDeque<Arc<CapturedEvent>>,
    /// Sequence number of `events[0]`.
    base: u64,
    /// Live watchers: id -> their cursor, the first sequence number they have not fetched.
    watchers: BTreeMap<u64, u64>,
}

impl HubState {
    pub(crate) fn next_seq(&self) -> u64 {
        self.base + self.events.len() as u64
    }

    /// The retained events with sequence numbers `>= from`.
    fn since(&self, from: u64) -> impl Iterator<Item = &Arc<CapturedEvent>> {
        let skip = usize::try_from(from.saturating_sub(self.base)).unwrap_or(usize::MAX);
        self.events.iter().skip(skip)
    }

    fn prune(&mut self) {
        let floor = self.watchers.values().min().copied();
        let keep_from = match floor {
            Some(f) => f.max(self.next_seq().saturating_sub(MAX_RETAINED as u64)),
            None => self.next_seq().saturating_sub(KEEP_IDLE as u64),
        };
        while self.base < keep_from && !self.events.is_empty() {
            self.events.pop_front();
            self.base += 1;
        }
    }
}

/// Events a watcher fetched, oldest first.
pub(crate) struct Fetched {
    pub(crate) events: Vec<Arc<CapturedEvent>>,
    /// Events this watcher had not fetched yet and the hub evicted (over `MAX_RETAINED`).
    pub(crate) evicted: u64,
}

pub(crate) struct Hub {
    state: Mutex<HubState>,
    pub(crate) notify: Notify,
    layers: AtomicU64,
    next_watcher: AtomicU64,
}

pub(crate) fn hub() -> &'static Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| Hub {
        state: Mutex::new(HubState {
            events: VecDeque::new(),
            base: 0,
            watchers: BTreeMap::new(),
        }),
        notify: Notify::new(),
        layers: AtomicU64::new(0),
        next_watcher: AtomicU64::new(0),
    })
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of capture layers attached to a subscriber so far.
    pub(crate) fn layers(&self) -> u64 {
        self.layers.load(Ordering::Acquire)
    }

    /// The sequence number the next captured event will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.lock().next_seq()
    }

    /// Registers a watcher needing every event from now on; returns its id and the
    /// sequence number of the first event it will see.
    pub(crate) fn register_now(&self) -> (u64, u64) {
        let id = self.next_watcher.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        let from = state.next_seq();
        state.watchers.insert(id, from);
        (id, from)
    }

    pub(crate) fn unregister(&self, id: u64) {
        let mut state = self.lock();
        state.watchers.remove(&id);
        state.prune();
    }

    /// Copies out the events from `cursor` on and moves watcher `id`'s cursor past them,
    /// so the hub can drop what every watcher has fetched. O(new events) under the lock.
    pub(crate) fn fetch(&self, id: u64, cursor: u64) -> Fetched {
        let mut state = self.lock();
        let evicted = state.base.saturating_sub(cursor);
        let events: Vec<_> = state.since(cursor).cloned().collect();
        let next = state.next_seq();
        if let Some(c) = state.watchers.get_mut(&id) {
            *c = next;
        }
        state.prune();
        Fetched { events, evicted }
    }

    /// Copies out the events from `cursor` on without moving any cursor.
    pub(crate) fn peek(&self, cursor: u64) -> Vec<Arc<CapturedEvent>> {
        self.lock().since(cursor).cloned().collect()
    }

    fn push(&self, mut event: CapturedEvent) {
        {
            let mut state = self.lock();
            event.seq = state.next_seq();
            state.events.push_back(Arc::new(event));
            state.prune();
        }
        self.notify.notify_waiters();
    }
}

/// The layer that captures every event for [`watch`](super::watch) and
/// [`eventually`](super::eventually).
///
/// It never filters: its `enabled` is always true and it registers interest in every
/// callsite, so composing it into a stack never disables events for the other layers.
/// Put a per-layer filter on it (`layer().with_filter(..)`) to capture less.
///
/// All capture layers feed one process-wide buffer, so a watcher sees events from every
/// thread, whichever subscriber instance captured them.
#[derive(Debug, Default, Clone, Copy)]
pub struct CaptureLayer {
    _private: (),
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_layer(&mut self, _subscriber: &mut S) {
        hub().layers.fetch_add(1, Ordering::AcqRel);
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut fields = FieldRecorder::default();
        event.record(&mut fields);
        hub().push(CapturedEvent {
            seq: 0,
            at: Instant::now(),
            name: meta.name(),
            target: meta.target(),
            level: *meta.level(),
            thread: std::thread::current().name().map(str::to_owned),
            fields: fields.0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigils_do_not_decide_equality() {
        let quoted = FieldValue::Debug("\"file-3\"".into());
        assert!(quoted.loosely_eq(&FieldValue::from("file-3")));
        assert!(FieldValue::Debug("file-3".into()).loosely_eq(&"file-3".into()));
        assert!(FieldValue::Debug("3".into()).loosely_eq(&FieldValue::U64(3)));
        assert!(FieldValue::I64(3).loosely_eq(&FieldValue::U64(3)));
        assert!(FieldValue::F64(3.0).loosely_eq(&FieldValue::U64(3)));
        assert!(FieldValue::Debug("true".into()).loosely_eq(&FieldValue::Bool(true)));
    }

    #[test]
    fn different_values_differ() {
        assert!(!FieldValue::U64(3).loosely_eq(&FieldValue::U64(4)));
        assert!(!FieldValue::from("a").loosely_eq(&"b".into()));
        assert!(!FieldValue::from("3x").loosely_eq(&FieldValue::U64(3)));
        assert!(!FieldValue::I64(-1).loosely_eq(&FieldValue::U64(u64::MAX)));
        assert!(!FieldValue::Bool(true).loosely_eq(&FieldValue::U64(1)));
    }

    fn event(fields: Vec<(&'static str, FieldValue)>) -> CapturedEvent {
        CapturedEvent {
            seq: 0,
            at: Instant::now(),
            name: "event src/x.rs:1",
            target: "my_app::orders",
            level: Level::INFO,
            thread: None,
            fields,
        }
    }

    #[test]
    fn a_log_line_has_level_target_message_then_fields() {
        let ev = event(vec![
            ("message", FieldValue::Debug("order placed".into())),
            ("order_id", FieldValue::U64(42)),
            ("who", FieldValue::Str("ann".into())),
        ]);
        assert_eq!(
            ev.log_line(),
            "INFO my_app::orders: order placed order_id=42 who=\"ann\""
        );
    }

    #[test]
    fn a_log_line_without_a_message_lists_the_fields() {
        assert_eq!(
            event(vec![("step", FieldValue::U64(1))]).log_line(),
            "INFO my_app::orders: step=1"
        );
    }

    #[test]
    fn registry_paths_are_shortened_in_names() {
        assert_eq!(
            short_name("event /home/u/.cargo/registry/src/index.crates.io-6f17/hyper-util-0.1.10/src/pool.rs:12"),
            "event hyper-util-0.1.10/src/pool.rs:12"
        );
        assert_eq!(short_name("event src/x.rs:1"), "event src/x.rs:1");
        assert_eq!(short_name("push_complete"), "push_complete");
    }

    #[test]
    fn typed_accessors_normalise() {
        assert_eq!(FieldValue::I64(7).as_u64(), Some(7));
        assert_eq!(FieldValue::I64(-7).as_u64(), None);
        assert_eq!(FieldValue::Debug("\"x\"".into()).as_str(), Some("x"));
        assert_eq!(FieldValue::Debug("2.5".into()).as_f64(), Some(2.5));
    }
}
