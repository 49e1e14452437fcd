//! `docs/events.md` and the code agree: every event, level, field and type of
//! `sinkwatch::events` is in the catalogue's "Events" section, every one of the testing
//! side's (`sinkwatch::testing::EVENTS`) in its own section, and the catalogue lists nothing
//! the code does not have.

use sinkwatch::events::{self, reason, rotation_reason, EventSchema};
use sinkwatch::testing;

#[derive(Debug, Default, PartialEq)]
struct Documented {
    name: String,
    level: String,
    fields: Vec<(String, String)>,
}

/// The events documented in the section whose heading starts with `heading`.
fn parse_catalogue(heading: &str) -> Vec<Documented> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md"))
        .expect("docs/events.md exists");
    let body = text
        .split(&format!("\n## {heading}"))
        .nth(1)
        .unwrap_or_else(|| panic!("a section \"{heading}\""));
    let body = body.split("\n## ").next().unwrap();
    let mut out: Vec<Documented> = Vec::new();
    for line in body.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            out.push(Documented {
                name: name.trim_matches('`').to_owned(),
                ..Documented::default()
            });
        } else if let Some(level) = line.strip_prefix("**Level:** ") {
            level.trim().clone_into(&mut out.last_mut().unwrap().level);
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let field = cells[1].trim_matches('`').to_owned();
            out.last_mut()
                .unwrap()
                .fields
                .push((field, cells[2].to_owned()));
        }
    }
    out
}

fn from_code(list: &[EventSchema]) -> Vec<Documented> {
    list.iter()
        .map(|e| Documented {
            name: e.name.to_owned(),
            level: e.level.to_string(),
            fields: e
                .fields
                .iter()
                .map(|f| (f.name.to_owned(), f.ty.to_owned()))
                .collect(),
        })
        .collect()
}

#[test]
fn the_catalogue_matches_the_code() {
    assert_eq!(parse_catalogue("Events\n"), from_code(events::ALL));
}

#[test]
fn the_testing_sides_events_are_catalogued_apart() {
    let documented = parse_catalogue("Events of the testing side");
    assert_eq!(documented, from_code(testing::EVENTS));
    assert!(!documented.is_empty());
}

#[test]
fn every_reason_is_documented() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md")).unwrap();
    for reason in [
        reason::QUEUE_FULL,
        reason::BUFFER_FULL_OLDEST,
        reason::WRITE_FAILED,
        reason::LINE_TOO_LONG,
        reason::REJECTED,
        reason::NOT_RETRYABLE,
        reason::RETRIES_EXHAUSTED,
        reason::SHUTDOWN,
        reason::TOO_MANY_STREAMS,
        reason::STALLED,
        reason::WORKER_FAILED,
        reason::TOO_OLD,
        reason::BUFFER_LOST,
        reason::BUFFER_CORRUPT,
    ] {
        assert!(
            text.contains(&format!("| `{reason}` |")),
            "reason {reason} is not documented"
        );
    }
    for reason in [
        rotation_reason::SIZE,
        rotation_reason::TIME,
        rotation_reason::MANUAL,
    ] {
        assert!(
            text.contains(&format!("| `{reason}` |")),
            "rotation reason {reason} is not documented"
        );
    }
}
