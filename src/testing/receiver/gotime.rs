//! Timestamps formatted as Go formats them in Loki's error messages (always UTC, as Loki runs).

/// Seconds and nanoseconds of a Unix-epoch nanosecond count, flooring like Go's `time.Unix(0, ns)`.
fn split(ns: i128) -> (i64, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    (
        i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX }),
        u32::try_from(nanos).unwrap_or(0),
    )
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both are in small ranges by construction (1..=31, 1..=12).
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

fn date_time(secs: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, mo, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (y, mo, d, sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Go's `t.Format(time.RFC3339)` in UTC: `2024-01-02T03:04:05Z`.
pub(crate) fn rfc3339(ns: i128) -> String {
    let (secs, _) = split(ns);
    let (y, mo, d, h, mi, s) = date_time(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Go's `t.String()` in UTC: `2024-01-02 03:04:05.123 +0000 UTC` (fraction without trailing zeros).
pub(crate) fn go_string(ns: i128) -> String {
    let (secs, nanos) = split(ns);
    let (y, mo, d, h, mi, s) = date_time(secs);
    let mut frac = String::new();
    if nanos > 0 {
        frac = format!(".{nanos:09}");
        while frac.ends_with('0') {
            frac.pop();
        }
    }
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac} +0000 UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(1_570_818_238_000_000_000), "2019-10-11T18:23:58Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn formats_go_string() {
        assert_eq!(
            go_string(1_700_000_000_123_456_789),
            "2023-11-14 22:13:20.123456789 +0000 UTC"
        );
        assert_eq!(
            go_string(1_700_000_000_120_000_000),
            "2023-11-14 22:13:20.12 +0000 UTC"
        );
        assert_eq!(
            go_string(1_700_000_000_000_000_000),
            "2023-11-14 22:13:20 +0000 UTC"
        );
    }

    #[test]
    fn go_zero_time() {
        assert_eq!(
            rfc3339(-62_135_596_800 * 1_000_000_000),
            "0001-01-01T00:00:00Z"
        );
    }

    #[test]
    fn extreme_values_do_not_panic() {
        let _ = rfc3339(i128::MAX);
        let _ = go_string(i128::MIN);
    }
}
