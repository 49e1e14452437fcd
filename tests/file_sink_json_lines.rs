//! The file sink's JSON lines, pinned byte for byte: unicode, control characters, floats
//! at the edges of their notation, 128-bit integers, empty strings, spans (nested, empty,
//! recorded later), location, `Debug`/`Display`/error values and bridged `log` records.
//!
//! The layer stamps events with the clock, so each line's timestamp (always 30 bytes) is
//! replaced by `<ts>` before comparing; records written by hand carry a fixed time and are
//! compared whole.

#[path = "support/file.rs"]
mod support;

use std::time::{Duration, SystemTime};

use sinkwatch::{FileSink, Record, SinkLayer};
use tracing::Level;
use tracing_subscriber::layer::SubscriberExt as _;

/// The lines of the active file after `emit` ran under a `SinkLayer` (with location when
/// `location`), with every event timestamp replaced by `<ts>`.
async fn lines_of(location: bool, emit: impl FnOnce()) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path()).build().unwrap();
    let layer = SinkLayer::new(file.clone()).with_location(location);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
    file.flush().await.unwrap();
    let text = std::fs::read_to_string(file.active_path()).unwrap();
    text.lines().map(without_timestamp).collect()
}

fn without_timestamp(line: &str) -> String {
    const HEAD: &str = "{\"timestamp\":\"";
    let rest = line.strip_prefix(HEAD).expect("a timestamp first");
    let (ts, rest) = rest.split_at(30);
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    format!("{HEAD}<ts>{rest}")
}

#[tokio::test]
async fn unicode_and_control_characters_are_escaped_exactly() {
    let got = lines_of(false, || {
        tracing::info!(
            s = "héllo wörld 😀 日本",
            ctl = "tab\there\nnl\r\u{1}\u{1f}\u{7f} \"q\" back\\slash /",
            "ünïcode 😀 \"quoted\" \u{0}"
        );
    })
    .await;
    assert_eq!(
        got,
        [concat!(
            r#"{"timestamp":"<ts>","level":"INFO","target":"file_sink_json_lines","#,
            r#""message":"ünïcode 😀 \"quoted\" \u0000","fields":{"s":"héllo wörld 😀 日本","#,
            r#""ctl":"tab\there\nnl\r\u0001\u001f\u007f \"q\" back\\slash /"}}"#
        )]
    );
}

#[tokio::test]
async fn floats_keep_their_shortest_display_form() {
    let got = lines_of(false, || {
        tracing::info!(
            a = 0.1_f64,
            b = 1e21_f64,
            c = 1e-7_f64,
            d = f64::NAN,
            e = f64::INFINITY,
            f = f64::NEG_INFINITY,
            g = 1.0_f64,
            h = -0.0_f64,
            i = 0.75_f64,
            j = 123_456.789_f64,
            k = f64::MAX,
            l = f64::MIN_POSITIVE,
            m = 5e-324_f64,
            n = 1e15_f64,
            o = 1e16_f64,
            p = -2.5e-5_f64,
            q = 0.3_f32,
            r = 9_007_199_254_740_993_f64,
            s = 1.234_567_890_123_456_7e-300_f64,
            t = 100.0_f64,
            "floats"
        );
    })
    .await;
    // The extremes have hundreds of digits: Rust's `Display` (no exponent, shortest
    // round trip) is the form, so they are spelt by it; the rest are written out.
    let display = |x: f64| format!("{x}");
    let expected = [
        r#"{"timestamp":"<ts>","level":"INFO","target":"file_sink_json_lines","message":"floats","fields":{"#,
        r#""a":0.1,"b":1000000000000000000000,"c":0.0000001,"d":"NaN","e":"inf","f":"-inf","#,
        r#""g":1,"h":-0,"i":0.75,"j":123456.789,"#,
        &format!(r#""k":{},"l":{},"m":{},"#, display(f64::MAX), display(f64::MIN_POSITIVE), display(5e-324)),
        r#""n":1000000000000000,"o":10000000000000000,"p":-0.000025,"q":0.30000001192092896,"#,
        r#""r":9007199254740992,"#,
        &format!(r#""s":{},"#, display(1.234_567_890_123_456_7e-300)),
        r#""t":100}}"#,
    ]
    .concat();
    assert!(
        expected.contains("\"k\":17976931348623157000") && expected.contains("22250738585072014,")
    );
    assert_eq!(got, [expected]);
}

#[tokio::test]
async fn integers_use_every_digit_and_empty_strings_stay_strings() {
    let got = lines_of(false, || {
        tracing::warn!(
            u = u128::MAX,
            i = i128::MIN,
            u64max = u64::MAX,
            i64min = i64::MIN,
            zero = 0_u64,
            neg = -1_i64,
            empty = "",
            no = false,
            ""
        );
        tracing::error!(only = 1_u64);
    })
    .await;
    assert_eq!(
        got,
        [
            concat!(
                r#"{"timestamp":"<ts>","level":"WARN","target":"file_sink_json_lines","message":"","#,
                r#""fields":{"u":340282366920938463463374607431768211455,"#,
                r#""i":-170141183460469231731687303715884105728,"u64max":18446744073709551615,"#,
                r#""i64min":-9223372036854775808,"zero":0,"neg":-1,"empty":"","no":false}}"#
            ),
            concat!(
                r#"{"timestamp":"<ts>","level":"ERROR","target":"file_sink_json_lines","message":"","#,
                r#""fields":{"only":1}}"#
            ),
        ]
    );
}

#[tokio::test]
async fn spans_nest_outermost_first_with_their_fields() {
    let got = lines_of(false, || {
        let outer = tracing::info_span!("outer", id = 7_u64, route = "/a\"b");
        let _o = outer.enter();
        let empty = tracing::debug_span!("empty");
        let _e = empty.enter();
        let later = tracing::info_span!("later", n = tracing::field::Empty, x = 1.5_f64);
        later.record("n", 3_i64);
        let _l = later.enter();
        tracing::info!(k = "v", "inside");
    })
    .await;
    assert_eq!(
        got,
        [concat!(
            r#"{"timestamp":"<ts>","level":"INFO","target":"file_sink_json_lines","message":"inside","#,
            r#""fields":{"k":"v"},"spans":[{"name":"outer","fields":{"id":7,"route":"/a\"b"}},"#,
            r#"{"name":"empty","fields":{}},{"name":"later","fields":{"x":1.5,"n":3}}]}"#
        )]
    );
}

#[tokio::test]
async fn debug_display_and_error_values_become_strings_and_location_ends_the_line() {
    let line = line!() + 3;
    let got = lines_of(true, || {
        let err = std::io::Error::other("disk on fire");
        tracing::info!(
            dbg = ?vec!["a", "b"],
            disp = %"shown\n",
            error = &err as &(dyn std::error::Error + 'static),
            "msg {} {:?}",
            1,
            "q"
        );
    })
    .await;
    let expected = format!(
        concat!(
            r#"{{"timestamp":"<ts>","level":"INFO","target":"file_sink_json_lines","message":"msg 1 \"q\"","#,
            r#""fields":{{"dbg":"[\"a\", \"b\"]","disp":"shown\n","error":"disk on fire"}},"#,
            r#""file":"tests/file_sink_json_lines.rs","line":{}}}"#
        ),
        line
    );
    assert_eq!(got, [expected]);
}

#[tokio::test]
async fn a_bridged_log_record_keeps_its_own_target() {
    use tracing_log::log;
    let got = lines_of(false, || {
        let record = log::Record::builder()
            .args(format_args!("from log"))
            .level(log::Level::Warn)
            .target("legacy::module")
            .module_path_static(Some("legacy::module"))
            .file_static(Some("legacy.rs"))
            .line(Some(12))
            .build();
        tracing_log::format_trace(&record).unwrap();
    })
    .await;
    assert_eq!(
        got,
        [
            r#"{"timestamp":"<ts>","level":"WARN","target":"legacy::module","message":"from log","fields":{}}"#
        ]
    );
}

#[tokio::test]
async fn records_written_by_hand_are_written_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileSink::builder(dir.path()).build().unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 120_000_000);
    file.write(
        Record::new(Level::DEBUG, "by hand \u{2028}")
            .with_time(t)
            .with_target("app::x")
            .with_field("ratio", 0.25_f64)
            .with_field("who", "a\tb".to_string())
            .with_field("big", u128::MAX),
    )
    .unwrap();
    file.write(Record::new(Level::TRACE, "").with_time(support::fixed_time()))
        .unwrap();
    file.flush().await.unwrap();
    let text = std::fs::read_to_string(file.active_path()).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"{"timestamp":"2023-11-14T22:13:20.120000000Z","level":"DEBUG","target":"app::x","#,
            r#""message":"by hand "#,
            "\u{2028}",
            r#"","fields":{"ratio":0.25,"who":"a\tb","big":340282366920938463463374607431768211455}}"#,
            "\n",
            r#"{"timestamp":"2023-11-14T22:13:20.000000000Z","level":"TRACE","target":"","message":"","fields":{}}"#,
            "\n"
        )
    );
}
