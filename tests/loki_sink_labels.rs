//! Property: any label value and structured-metadata value (any Unicode, control characters
//! included) survives the sink's encoding and the receiver's own label parser unchanged.

#![cfg(all(feature = "loki", feature = "testing"))]

#[path = "support/loki.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use sinkwatch::sink::loki::{Encoding, LokiSink};
use sinkwatch::testing::receiver::LokiReceiver;
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
        prop_assert_eq!(e.label("v"), Some(label.as_str()));
        prop_assert_eq!(e.metadata("m"), Some(meta.as_str()));
    }
}
