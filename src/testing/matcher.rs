//! Matchers: which events a wait is for.

use std::fmt;
use std::sync::Arc;

use tracing::Level;

use super::capture::{CapturedEvent, FieldValue};
use crate::{events, SinkId};

type Predicate = Arc<dyn Fn(&FieldValue) -> bool + Send + Sync>;

#[derive(Clone)]
enum FieldCheck {
    Eq(String, FieldValue),
    Where(String, String, Predicate),
    Present(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LevelCheck {
    Exactly(Level),
    AtLeast(Level),
}

/// Describes the events a wait is for: any combination of name, target, level and fields.
///
/// Works for any event, not only sinkwatch's: match your application's own events too.
/// Field equality is loose about representation (see
/// [`FieldValue::loosely_eq`](super::FieldValue::loosely_eq)), so `?x`, `%x` and plain
/// values all match the value you expect.
///
/// # Examples
///
/// ```
/// use sinkwatch::{events, SinkId};
/// use sinkwatch::testing::Matcher;
///
/// let sink = SinkId::new("loki");
/// let pushed = Matcher::event(events::push_complete::NAME)
///     .sink(&sink)
///     .field_where("entries", |v| v.as_u64().is_some_and(|n| n >= 10));
/// let my_app = Matcher::target("my_app::orders").field("order_id", 42);
/// # let _ = (pushed, my_app);
/// ```
#[derive(Clone, Default)]
pub struct Matcher {
    name: Option<String>,
    target: Option<String>,
    target_prefix: Option<String>,
    level: Option<LevelCheck>,
    fields: Vec<FieldCheck>,
    line_contains: Vec<String>,
}

/// A key every event a matcher can match carries (see `seen.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexKey<'a> {
    Name(&'a str),
    Target(&'a str),
    Field(&'a str),
}

impl Matcher {
    /// Matches every event.
    pub fn any() -> Self {
        Matcher::default()
    }

    /// Matches events with this name (`Metadata::name()`).
    pub fn event(name: impl Into<String>) -> Self {
        Matcher {
            name: Some(name.into()),
            ..Matcher::default()
        }
    }

    /// Matches sinkwatch's event `name` emitted by `sink`: the usual matcher in a test.
    pub fn sink_event(sink: &SinkId, name: &str) -> Self {
        Matcher::event(name).target_is(events::TARGET).sink(sink)
    }

    /// Matches events with exactly this target.
    pub fn target(target: impl Into<String>) -> Self {
        Matcher::any().target_is(target)
    }

    /// Also requires exactly this target.
    #[must_use]
    pub fn target_is(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Also requires the target to start with `prefix` (a module and its children).
    #[must_use]
    pub fn target_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.target_prefix = Some(prefix.into());
        self
    }

    /// Also requires the event's name.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Also requires exactly this level.
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.level = Some(LevelCheck::Exactly(level));
        self
    }

    /// Also requires this level or a more severe one (`WARN` accepts `WARN` and `ERROR`).
    #[must_use]
    pub fn min_level(mut self, level: Level) -> Self {
        self.level = Some(LevelCheck::AtLeast(level));
        self
    }

    /// Also requires the field `sink` to be this sink's id.
    #[must_use]
    pub fn sink(self, sink: &SinkId) -> Self {
        self.field(events::SINK, sink)
    }

    /// Also requires the field `name` to equal `value`.
    #[must_use]
    pub fn field(mut self, name: impl Into<String>, value: impl Into<FieldValue>) -> Self {
        self.fields.push(FieldCheck::Eq(name.into(), value.into()));
        self
    }

    /// Also requires the field `name` to be present, whatever its value.
    #[must_use]
    pub fn has_field(mut self, name: impl Into<String>) -> Self {
        self.fields.push(FieldCheck::Present(name.into()));
        self
    }

    /// Also requires the field `name` to be present and to satisfy `predicate`.
    #[must_use]
    pub fn field_where(
        self,
        name: impl Into<String>,
        predicate: impl Fn(&FieldValue) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.field_where_described(name, "a predicate", predicate)
    }

    /// [`field_where`](Self::field_where) with a description for timeout messages.
    #[must_use]
    pub fn field_where_described(
        mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        predicate: impl Fn(&FieldValue) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.fields.push(FieldCheck::Where(
            name.into(),
            description.into(),
            Arc::new(predicate),
        ));
        self
    }

    /// Also requires the event's log line ([`CapturedEvent::log_line`]: level, target,
    /// message and fields) to contain `text`.
    ///
    /// # Examples
    ///
    /// ```
    /// use sinkwatch::testing::Matcher;
    ///
    /// let finished = Matcher::target("my_app").line_contains("job finished");
    /// # let _ = finished;
    /// ```
    #[must_use]
    pub fn line_contains(mut self, text: impl Into<String>) -> Self {
        self.line_contains.push(text.into());
        self
    }

    /// True if `event` matches every requirement.
    pub fn matches(&self, event: &CapturedEvent) -> bool {
        self.mismatches(event).is_empty()
    }

    /// The value of the `sink` field this matcher requires, if any.
    pub(crate) fn sink_id(&self) -> Option<&FieldValue> {
        self.fields.iter().find_map(|c| match c {
            FieldCheck::Eq(n, v) if n == events::SINK => Some(v),
            _ => None,
        })
    }

    /// True if the matcher names an event and `event` has that name.
    pub(crate) fn same_name(&self, event: &CapturedEvent) -> bool {
        self.name.as_deref().is_some_and(|n| n == event.name())
    }

    /// How many requirements the matcher has.
    pub(crate) fn requirements(&self) -> usize {
        usize::from(self.name.is_some())
            + usize::from(self.target.is_some())
            + usize::from(self.target_prefix.is_some())
            + usize::from(self.level.is_some())
            + self.fields.len()
            + self.line_contains.len()
    }

    /// Keys every event this matcher matches has: its exact name, its exact target, each
    /// field it requires. Empty if it could match any event.
    pub(crate) fn index_keys(&self) -> Vec<IndexKey<'_>> {
        let mut keys = Vec::new();
        if let Some(name) = &self.name {
            keys.push(IndexKey::Name(name));
        }
        if let Some(target) = &self.target {
            keys.push(IndexKey::Target(target));
        }
        for check in &self.fields {
            keys.push(IndexKey::Field(check.name()));
        }
        keys
    }

    /// True if `event` is worth showing when a wait for this matcher fails: same name,
    /// same sink, same target or crate, or a field the matcher requires (other than
    /// `message`, which nearly every event has). `None` if the matcher gives no such basis.
    pub(crate) fn related(&self, event: &CapturedEvent) -> Option<bool> {
        let mut basis = false;
        let mut related = false;
        if let Some(name) = &self.name {
            basis = true;
            related |= name == event.name();
        }
        for target in [&self.target, &self.target_prefix].into_iter().flatten() {
            basis = true;
            related |= crate_of(target) == crate_of(event.target());
        }
        for check in &self.fields {
            let name = check.name();
            if name == "message" {
                continue;
            }
            basis = true;
            related |= match (check, event.field(name)) {
                (FieldCheck::Eq(n, v), Some(actual)) if n == events::SINK => actual.loosely_eq(v),
                (FieldCheck::Eq(n, _), None) if n == events::SINK => false,
                (_, found) => found.is_some(),
            };
        }
        basis.then_some(related)
    }

    /// Each requirement `event` fails, described ("sink: expected \"a\", got \"b\"").
    pub fn mismatches(&self, event: &CapturedEvent) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(name) = &self.name {
            if name != event.name() {
                out.push(format!("name: expected {name:?}, got {:?}", event.name()));
            }
        }
        if let Some(target) = &self.target {
            if target != event.target() {
                out.push(format!(
                    "target: expected {target:?}, got {:?}",
                    event.target()
                ));
            }
        }
        if let Some(prefix) = &self.target_prefix {
            if !event.target().starts_with(prefix.as_str()) {
                out.push(format!(
                    "target: expected a prefix {prefix:?}, got {:?}",
                    event.target()
                ));
            }
        }
        match self.level {
            Some(LevelCheck::Exactly(l)) if l != event.level() => {
                out.push(format!("level: expected {l}, got {}", event.level()));
            }
            // tracing orders levels by verbosity: ERROR < WARN < … < TRACE.
            Some(LevelCheck::AtLeast(l)) if event.level() > l => {
                out.push(format!(
                    "level: expected {l} or above, got {}",
                    event.level()
                ));
            }
            _ => {}
        }
        for check in &self.fields {
            if let Some(m) = field_mismatch(check, event) {
                out.push(m);
            }
        }
        if !self.line_contains.is_empty() {
            let line = event.log_line();
            for text in &self.line_contains {
                if !line.contains(text.as_str()) {
                    out.push(format!("log line: does not contain {text:?}"));
                }
            }
        }
        out
    }
}

/// The crate a target belongs to: its first path segment.
pub(crate) fn crate_of(target: &str) -> &str {
    target.split("::").next().unwrap_or(target)
}

impl FieldCheck {
    fn name(&self) -> &str {
        match self {
            FieldCheck::Eq(n, _) | FieldCheck::Where(n, _, _) | FieldCheck::Present(n) => n,
        }
    }
}

fn field_mismatch(check: &FieldCheck, event: &CapturedEvent) -> Option<String> {
    let name = check.name();
    let Some(actual) = event.field(name) else {
        return Some(format!("{name}: missing"));
    };
    match check {
        FieldCheck::Eq(_, expected) if !actual.loosely_eq(expected) => {
            Some(format!("{name}: expected {expected}, got {actual}"))
        }
        FieldCheck::Where(_, description, predicate) if !predicate(actual) => {
            Some(format!("{name}: {actual} does not satisfy {description}"))
        }
        _ => None,
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(name) = &self.name {
            parts.push(format!("event {name:?}"));
        }
        if let Some(target) = &self.target {
            parts.push(format!("target = {target:?}"));
        }
        if let Some(prefix) = &self.target_prefix {
            parts.push(format!("target starting with {prefix:?}"));
        }
        match self.level {
            Some(LevelCheck::Exactly(l)) => parts.push(format!("level = {l}")),
            Some(LevelCheck::AtLeast(l)) => parts.push(format!("level >= {l}")),
            None => {}
        }
        for check in &self.fields {
            parts.push(match check {
                FieldCheck::Eq(n, v) => format!("{n} = {v}"),
                FieldCheck::Where(n, d, _) => format!("{n} satisfying {d}"),
                FieldCheck::Present(n) => format!("has {n}"),
            });
        }
        for text in &self.line_contains {
            parts.push(format!("log line containing {text:?}"));
        }
        if parts.is_empty() {
            f.write_str("any event")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Matcher({self})")
    }
}
