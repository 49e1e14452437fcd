//! The message of a wait that timed out: what explains the failure first (near misses,
//! the sink's warnings and failures, related events), then a count of the rest by crate
//! and level, so dependency noise cannot drown the lines that matter.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use tracing::Level;

use super::capture::{hub, CapturedEvent};
use super::matcher::{crate_of, Matcher};
use super::seen::Seen as Held;
use super::watcher::{Scaled, Watcher};

/// How many related events a timeout message lists.
const RELATED_SHOWN: usize = 40;
/// How many near misses, and how many of the sink's warnings, a timeout message lists.
const NEAR_MISSES_SHOWN: usize = 5;
/// How many other crates the summary names.
const CRATES_NAMED: usize = 8;

type Seen<'a> = [&'a Arc<CapturedEvent>];

/// The explanation of a timed-out wait for `steps`, of which `matched` matched.
pub(crate) fn timed_out(
    watcher: &Watcher,
    held: &Held,
    what: &str,
    steps: &[Matcher],
    matched: &[Arc<CapturedEvent>],
    from: u64,
    scaled: Scaled,
) -> String {
    let seen: Vec<&Arc<CapturedEvent>> = held.since(from).collect();
    let mut msg = format!("timed out after {scaled} waiting for: {what}\n");
    let target = &steps[matched.len()];
    if steps.len() > 1 {
        let _ = writeln!(
            msg,
            "matched {} of {} so far; next needed: {target}",
            matched.len(),
            steps.len(),
        );
    }
    let _ = writeln!(
        msg,
        "events captured since the watcher's start: {}",
        seen.len()
    );
    if seen.is_empty() {
        msg += &no_events_hint(what);
        return msg;
    }
    msg += &near_misses(watcher, held, target, &seen);
    msg += &sink_failures(watcher, target, &seen);
    msg += &related(watcher, target, &seen);
    msg
}

fn near_misses(watcher: &Watcher, held: &Held, target: &Matcher, seen: &Seen<'_>) -> String {
    let consumed = |e: &CapturedEvent| held.consumed.contains(&e.seq());
    let needed = target.requirements();
    let misses: Vec<(&Arc<CapturedEvent>, Vec<String>)> = seen
        .iter()
        .filter(|e| !consumed(e))
        .map(|e| (*e, target.mismatches(e)))
        .filter(|(e, m)| {
            !m.is_empty() && (target.same_name(e) || (needed > 1 && m.len() * 2 <= needed))
        })
        .collect();
    let consumed_matches = seen
        .iter()
        .filter(|e| consumed(e) && target.matches(e))
        .count();
    let mut out = String::new();
    if consumed_matches > 0 {
        let _ = writeln!(
            out,
            "{consumed_matches} matching event(s) were already consumed by earlier waits"
        );
    }
    if misses.is_empty() {
        return out;
    }
    let skip = misses.len().saturating_sub(NEAR_MISSES_SHOWN);
    let _ = writeln!(out, "near misses ({} in all, latest shown):", misses.len());
    for (ev, diffs) in &misses[skip..] {
        let _ = writeln!(
            out,
            "  {}\n      differs: {}",
            watcher.line(ev),
            diffs.join("; ")
        );
    }
    out
}

fn sink_failures(watcher: &Watcher, target: &Matcher, seen: &Seen<'_>) -> String {
    let Some(sink) = target.sink_id() else {
        return String::new();
    };
    let failures: Vec<_> = seen
        .iter()
        .filter(|e| {
            e.field(crate::events::SINK)
                .is_some_and(|s| s.loosely_eq(sink))
                && e.level() <= Level::WARN
        })
        .collect();
    if failures.is_empty() {
        return format!("no warning or failure event from sink {sink}\n");
    }
    let mut out = format!("warnings and failures from sink {sink}:\n");
    for ev in failures.iter().rev().take(NEAR_MISSES_SHOWN).rev() {
        let _ = writeln!(out, "  {}", watcher.line(ev));
    }
    out
}

/// The latest events related to the matcher (and every warning or error), one a line, then
/// the others counted by crate and level.
fn related(watcher: &Watcher, target: &Matcher, seen: &Seen<'_>) -> String {
    let (related, others): (Vec<&Arc<CapturedEvent>>, Vec<&Arc<CapturedEvent>>) = seen
        .iter()
        .partition(|e| e.level() <= Level::WARN || target.related(e) != Some(false));
    let mut out = String::new();
    let skip = related.len().saturating_sub(RELATED_SHOWN);
    if !related.is_empty() {
        let what = if others.is_empty() && target.related(related[0]).is_none() {
            "events"
        } else {
            "related events (same name, crate, sink or fields; warnings and errors)"
        };
        let _ = writeln!(
            out,
            "the last {} of {} {what}:",
            related.len() - skip,
            related.len()
        );
        for ev in &related[skip..] {
            let _ = writeln!(out, "  {}", watcher.line(ev));
        }
    }
    if !others.is_empty() {
        let _ = writeln!(
            out,
            "and {} events from other targets: {}",
            thousands(others.len() as u64),
            by_crate(&others)
        );
    }
    out
}

/// `hyper_util (1,200 TRACE), h2 (34 DEBUG)`: the most frequent crates first.
fn by_crate(events: &Seen<'_>) -> String {
    let mut counts: BTreeMap<&str, [u64; 5]> = BTreeMap::new();
    for ev in events {
        counts.entry(crate_of(ev.target())).or_default()[level_index(ev.level())] += 1;
    }
    let mut crates: Vec<(&str, [u64; 5])> = counts.into_iter().collect();
    crates.sort_by_key(|(name, n)| (std::cmp::Reverse(n.iter().sum::<u64>()), *name));
    let mut parts: Vec<String> = crates
        .iter()
        .take(CRATES_NAMED)
        .map(|(name, n)| {
            let levels: Vec<String> = LEVELS
                .iter()
                .zip(n)
                .filter(|(_, count)| **count > 0)
                .map(|(level, count)| format!("{} {level}", thousands(*count)))
                .collect();
            format!("{name} ({})", levels.join(", "))
        })
        .collect();
    if crates.len() > CRATES_NAMED {
        parts.push(format!("{} more crates", crates.len() - CRATES_NAMED));
    }
    parts.join(", ")
}

const LEVELS: [Level; 5] = [
    Level::ERROR,
    Level::WARN,
    Level::INFO,
    Level::DEBUG,
    Level::TRACE,
];

fn level_index(level: Level) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(4)
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn no_events_hint(what: &str) -> String {
    if hub().layers() == 0 {
        return "hint: the capture layer is not installed: call sinkwatch::testing::init() at \
                the start of the test, or add sinkwatch::testing::layer() to your subscriber\n"
            .to_owned();
    }
    let mut hint = String::from(
        "hint: no event at all arrived since the watcher was created. Most likely the sink \
         has not done what was awaited",
    );
    if what.contains("\"rotation_complete\"") {
        hint += " (a boundary rotates only a non-empty active file: were records written before \
                 the clock moved past it?)";
    } else if what.contains("\"push_complete\"") {
        hint += " (a batch is pushed when full, at `batch_wait`, or at `flush()`)";
    }
    hint += ". Otherwise: was the watcher created after the action? Is a filter in front of \
             the capture layer dropping events, or another (thread-local) subscriber the \
             default on the emitting thread?\n";
    hint
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn levels_index_by_severity() {
        assert_eq!(level_index(Level::ERROR), 0);
        assert_eq!(level_index(Level::TRACE), 4);
    }
}
