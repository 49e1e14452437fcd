//! Property: any label value and structured-metadata value (any Unicode, control characters
//! included) survives the sink's encoding and the receiver's own label parser unchanged.

#![cfg(all(feature = "loki", feature = "testing"))]

#[path = "support/loki.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use sinkwatch::testing::LokiReceiver;
use sinkwatch::{Encoding, LokiSink};
use support::record;

fn any_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 1..40).prop_map(String::from_iter)
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    receiver: LokiReceiver,
    sinks: Vec<LokiSink>,
}

fn fixture() -> Fixture {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = rt.block_on(support::receiver());
    let sinks = [Encoding::Protobuf, Encoding::Json]
        .into_iter()
        .map(|encoding| {
            support::sink_for(&receiver)
                .encoding(encoding)
                .label_from_field("v")
                .metadata_from_field("m")
                .max_streams(100_000)
                .build()
                .unwrap()
        })
        .collect();
    Fixture {
        rt,
        receiver,
        sinks,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn any_value_round_trips_through_the_receivers_parser(
        label in any_text(),
        meta in any_text(),
        json in any::<bool>(),
    ) {
        static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
        static CASE: AtomicU64 = AtomicU64::new(0);
        let f = FIXTURE.get_or_init(fixture);
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let sink = &f.sinks[usize::from(json)];
        // A unique line per case, so shrinking's repeats are never exact duplicates.
        let r = record(format!("case {case}")).with_field("v", label.clone()).with_field("m", meta.clone());
        sink.try_write(r).unwrap();
        f.rt.block_on(sink.flush()).unwrap();
        let entries = f.receiver.entries();
        let e = entries.iter().find(|e| e.line == format!("case {case}"));
        let e = e.unwrap_or_else(|| panic!("case {case} not stored: {:?}", f.receiver.requests().last()));
        // The JSON encodings send U+FFFD in a label value as `?` (Loki cannot parse it there).
        let sent = if json { label.replace('\u{fffd}', "?") } else { label.clone() };
        prop_assert_eq!(e.label("v"), Some(sent.as_str()));
        prop_assert_eq!(e.metadata("m"), Some(meta.as_str()));
    }
}

/// Characters Go's `PromQL` lexer is picky about, each in a label value and in metadata.
/// U+FFFD written raw reads as Go's `utf8.RuneError`, which Loki's label parser refuses.
#[test]
fn awkward_characters_round_trip_exactly() {
    let f = fixture();
    let values = [
        "\u{fffd}",
        "a\u{fffd}b",
        "\u{feff}bom",
        "\u{2028}\u{2029}",
        "\u{0}\u{1b}\u{7f}\u{85}",
        "\"\\`'",
        "\u{10ffff}\u{e000}",
    ];
    for (i, value) in values.iter().enumerate() {
        for (s, sink) in f.sinks.iter().enumerate() {
            let line = format!("awkward {i} {s}");
            let r = record(line.clone())
                .with_field("v", (*value).to_owned())
                .with_field("m", (*value).to_owned());
            sink.try_write(r).unwrap();
            f.rt.block_on(sink.flush()).unwrap();
            let entries = f.receiver.entries();
            let e = entries.iter().find(|e| e.line == line);
            let e = e.unwrap_or_else(|| {
                panic!("{value:?} not stored: {:?}", f.receiver.requests().last())
            });
            // The JSON encodings send U+FFFD in a label value as `?` (documented).
            let sent = if s == 1 {
                value.replace('\u{fffd}', "?")
            } else {
                (*value).to_owned()
            };
            assert_eq!(e.label("v"), Some(sent.as_str()), "{value:?}");
            assert_eq!(e.metadata("m"), Some(*value), "{value:?}");
        }
    }
}
