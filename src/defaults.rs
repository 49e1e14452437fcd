//! Test support for the defaults tables: each builder's type doc has a `# Defaults` table,
//! the one place its defaults are written, and a unit test next to the builder reads that
//! table from the source and compares every row with what the builder's constructor really
//! sets, rendered the way the table writes it. A default changed in one place only fails
//! the test.
//!
//! A unit test rather than a doc test: the defaults live in private fields, which a doc
//! test cannot see without making them public API.

use std::fmt::Write as _;
use std::time::Duration;

use crate::OverflowPolicy;

/// The rows of the `# Defaults` table in the doc comments of `source` (a file's text, as
/// `include_str!` gives it): the setter named in the first cell, and the second cell.
///
/// # Panics
///
/// When `source` has no such table, or a row whose first cell names no setter.
pub(crate) fn table(source: &str) -> Vec<(String, String)> {
    let mut lines = source.lines().map(str::trim_start);
    lines
        .find(|l| *l == "/// # Defaults")
        .expect("a `# Defaults` section in the type's doc comment");
    let rows = lines
        .take_while(|l| l.starts_with("///"))
        .map(|l| l.trim_start_matches("///").trim())
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // the header and the separator
    rows.map(|row| {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let setter = cells[1]
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("no setter named in the row {row:?}"));
        (setter.to_owned(), cells[2].to_owned())
    })
    .collect()
}

/// Asserts that the table in `source` has exactly the rows of `actual`, in that order.
///
/// # Panics
///
/// When they differ; the message lists each difference.
pub(crate) fn assert_table(source: &str, actual: &[(&str, String)]) {
    let documented = table(source);
    let actual: Vec<(String, String)> = actual
        .iter()
        .map(|(s, d)| ((*s).to_owned(), d.clone()))
        .collect();
    if documented == actual {
        return;
    }
    let mut message = String::from("the defaults table disagrees with the builder:\n");
    for (s, d) in &actual {
        match documented.iter().find(|(ds, _)| ds == s) {
            Some((_, dd)) if dd == d => {}
            Some((_, dd)) => {
                let _ = writeln!(message, "  {s}: the table says {dd:?}, the builder {d:?}");
            }
            None => {
                let _ = writeln!(
                    message,
                    "  {s}: missing from the table (the builder: {d:?})"
                );
            }
        }
    }
    for (s, _) in &documented {
        if !actual.iter().any(|(a, _)| a == s) {
            let _ = writeln!(message, "  {s}: in the table, not a default the test knows");
        }
    }
    let _ = writeln!(message, "  (or the same rows in another order)");
    panic!("{message}");
}

/// A count as the tables write it: `65,536`.
pub(crate) fn count(n: u64) -> String {
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

/// A size in bytes: `4 MiB`, `256 KiB`, or `1,000 bytes` when not a whole KiB.
pub(crate) fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    match n {
        n if n >= KIB * KIB && n % (KIB * KIB) == 0 => format!("{} MiB", count(n / (KIB * KIB))),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", count(n / KIB)),
        n => format!("{} bytes", count(n)),
    }
}

/// A duration in its largest whole unit: `500 ms`, `1 s`, `5 min`.
pub(crate) fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms >= 60_000 && ms % 60_000 == 0 => format!("{} min", ms / 60_000),
        ms if ms >= 1000 && ms % 1000 == 0 => format!("{} s", ms / 1000),
        ms => format!("{ms} ms"),
    }
}

/// An overflow policy, linked: ``[`OverflowPolicy::Block`](…) for at most 1 s``.
pub(crate) fn policy(p: OverflowPolicy) -> String {
    let link = |name: &str| format!("[`OverflowPolicy::{name}`](crate::OverflowPolicy::{name})");
    match p {
        OverflowPolicy::Block(d) => format!("{} for at most {}", link("Block"), duration(d)),
        other => link(&format!("{other:?}")),
    }
}

/// A public enum value, linked: ``[`Format::Json`](crate::Format::Json)``.
pub(crate) fn variant(ty: &str, value: impl std::fmt::Debug) -> String {
    format!("[`{ty}::{value:?}`](crate::{ty}::{value:?})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sizes_and_durations_are_written_as_the_tables_write_them() {
        assert_eq!(count(7), "7");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(65_536), "65,536");
        assert_eq!(count(1_048_576), "1,048,576");
        assert_eq!(bytes(4 << 20), "4 MiB");
        assert_eq!(bytes(256 << 10), "256 KiB");
        assert_eq!(bytes(1000), "1,000 bytes");
        assert_eq!(duration(Duration::from_millis(500)), "500 ms");
        assert_eq!(duration(Duration::from_secs(10)), "10 s");
        assert_eq!(duration(Duration::from_secs(300)), "5 min");
        assert_eq!(duration(Duration::from_millis(1500)), "1500 ms");
    }

    const SOURCE: &str = "
/// A builder.
///
/// # Defaults
///
/// | setting | default |
/// |---|---|
/// | [`a`](Self::a) | 1 |
/// | [`b`](Self::b) | no limit |
///
/// # Examples
pub struct B;
";

    #[test]
    fn the_table_is_read_from_the_doc_comment() {
        assert_eq!(
            table(SOURCE),
            [("a".into(), "1".into()), ("b".into(), "no limit".into())]
        );
        assert_table(SOURCE, &[("a", "1".into()), ("b", "no limit".into())]);
    }

    #[test]
    #[should_panic(expected = "b: the table says \"no limit\", the builder \"10\"")]
    fn a_disagreement_names_the_setting() {
        assert_table(SOURCE, &[("a", "1".into()), ("b", "10".into())]);
    }

    #[test]
    #[should_panic(expected = "c: missing from the table")]
    fn a_default_missing_from_the_table_fails() {
        assert_table(
            SOURCE,
            &[
                ("a", "1".into()),
                ("b", "no limit".into()),
                ("c", "x".into()),
            ],
        );
    }
}
