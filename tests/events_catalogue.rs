//! `docs/events.md` and `sinkwatch::events` agree: every event, level, field and type in
//! the code is in the catalogue, and the catalogue lists nothing the code does not have.

use sinkwatch::events;
use sinkwatch::events::{reason, rotation_reason};

#[derive(Debug, Default, PartialEq)]
struct Documented {
    name: String,
    level: String,
    fields: Vec<(String, String)>,
}

fn parse_catalogue() -> Vec<Documented> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/events.md"))
        .expect("docs/events.md exists");
    let body = text
        .split("\n## Events\n")
        .nth(1)
        .expect("an Events section");
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

#[test]
fn the_catalogue_matches_the_code() {
    let documented = parse_catalogue();
    let from_code: Vec<Documented> = events::ALL
        .iter()
        .map(|e| Documented {
            name: e.name.to_owned(),
            level: e.level.to_string(),
            fields: e
                .fields
                .iter()
                .map(|f| (f.name.to_owned(), f.ty.to_owned()))
                .collect(),
        })
        .collect();
    assert_eq!(documented, from_code);
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
