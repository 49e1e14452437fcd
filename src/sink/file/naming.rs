//! File names: the stable active name, the timestamped rotated names, and parsing them back.
//!
//! Active: `{prefix}.{ext}`. Rotated: `{prefix}.{YYYYMMDD}T{HHMMSS}.{mmm}Z[_{counter}].{ext}`,
//! the UTC time of the rotation plus a counter when that name is taken, then `.gz` once
//! compressed and `.gz.tmp` while compressing. The names sort in creation order as plain
//! strings (retention sorts on the parsed values anyway, but people and tools sort names):
//! the time fields are fixed-width, and the counter is `001`…`999`, then a letter giving
//! the number of digits that follow (`a` for four, `b` for five, … `g` for ten) so that
//! `_a1000` sorts after `_999` and `_b10000` after `_a9999`. Letters sort after digits,
//! so the encoding keeps order to `u32::MAX`. Names of earlier versions (`_1000`, which
//! sorted before `_101`) still parse.
//!
//! Parsing is exact: retention and recovery touch only names this module produces, never a
//! foreign file that merely shares the prefix.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::record::civil_from_days;

/// The suffix of a compressed file.
pub(crate) const GZ: &str = ".gz";
/// The suffix of an archive being written.
pub(crate) const TMP: &str = ".tmp";

/// The naming scheme of one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Naming {
    prefix: String,
    ext: String,
}

/// What a rotated file's name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp {
    /// Milliseconds since the Unix epoch (UTC).
    pub(crate) millis: i64,
    /// The collision counter (0 when absent).
    pub(crate) counter: u32,
}

/// The state a rotated file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Plain text, as rotated.
    Plain,
    /// A complete archive.
    Gz,
    /// An archive being written (or left by a crash).
    GzTmp,
}

/// One of this sink's rotated files, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rotated {
    pub(crate) stamp: Stamp,
    pub(crate) kind: Kind,
    /// The name without any `.gz`/`.gz.tmp` suffix.
    pub(crate) base: String,
}

impl Naming {
    pub(crate) fn new(prefix: &str, ext: &str) -> Self {
        Naming {
            prefix: prefix.to_owned(),
            ext: ext.to_owned(),
        }
    }

    /// The active file's name.
    pub(crate) fn active(&self) -> String {
        format!("{}.{}", self.prefix, self.ext)
    }

    /// The rotated name for a rotation at `time` with collision counter `counter`.
    #[cfg(test)]
    pub(crate) fn rotated(&self, time: SystemTime, counter: u32) -> String {
        self.rotated_at(Stamp {
            millis: unix_millis(time),
            counter,
        })
    }

    /// The rotated name for `stamp`.
    pub(crate) fn rotated_at(&self, stamp: Stamp) -> String {
        let time = format_stamp(stamp.millis);
        match stamp.counter {
            0 => format!("{}.{time}.{}", self.prefix, self.ext),
            n => format!("{}.{time}_{}.{}", self.prefix, format_counter(n), self.ext),
        }
    }

    /// Parses a name in `dir` back; `None` for anything this sink did not name.
    pub(crate) fn parse(&self, name: &str) -> Option<Rotated> {
        let (rest, kind) = if let Some(r) = name.strip_suffix(".gz.tmp") {
            (r, Kind::GzTmp)
        } else if let Some(r) = name.strip_suffix(GZ) {
            (r, Kind::Gz)
        } else {
            (name, Kind::Plain)
        };
        let middle = rest
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_suffix(self.ext.as_str())?
            .strip_suffix('.')?;
        let stamp = parse_stamp(middle)?;
        Some(Rotated {
            stamp,
            kind,
            base: rest.to_owned(),
        })
    }

    /// The rotated name for a rotation at `now`: later than `last` (the newest rotated
    /// name so far), so names keep sorting in rotation order even when the clock stands
    /// still or steps back, and free in `dir` in every form (plain, archive, temporary), so
    /// a rotation never overwrites anything.
    pub(crate) fn free_rotated(
        &self,
        dir: &Path,
        now: SystemTime,
        last: Option<Stamp>,
    ) -> (PathBuf, Stamp) {
        let millis = unix_millis(now);
        let mut stamp = match last {
            Some(last) if last.millis >= millis => Stamp {
                millis: last.millis,
                counter: last.counter.saturating_add(1),
            },
            _ => Stamp { millis, counter: 0 },
        };
        loop {
            let path = dir.join(self.rotated_at(stamp));
            if !any_form_exists(&path) || stamp.counter == u32::MAX {
                return (path, stamp);
            }
            stamp.counter += 1;
        }
    }
}

fn any_form_exists(path: &Path) -> bool {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    exists(path) || exists(&with_suffix(path, GZ)) || exists(&with_suffix(path, ".gz.tmp"))
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Milliseconds since the Unix epoch, negative before it.
pub(crate) fn unix_millis(time: SystemTime) -> i64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The time a stamp's milliseconds stand for.
#[cfg(test)]
fn from_unix_millis(millis: i64) -> SystemTime {
    use std::time::Duration;
    let d = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        SystemTime::UNIX_EPOCH + d
    } else {
        SystemTime::UNIX_EPOCH - d
    }
}

fn format_stamp(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let ms = millis.rem_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{ms:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Parses `YYYYMMDDTHHMMSS.mmmZ[_NNN]` exactly.
fn parse_stamp(s: &str) -> Option<Stamp> {
    let (stamp, counter) = match s.split_once('_') {
        Some((stamp, counter)) => (stamp, parse_counter(counter)?),
        None => (s, 0),
    };
    let b = stamp.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = stamp.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0..4)?).ok()?, num(4..6)?, num(6..8)?)?;
    let time = chrono::NaiveTime::from_hms_milli_opt(
        num(9..11)?,
        num(11..13)?,
        num(13..15)?,
        num(16..19)?,
    )?;
    let millis = date.and_time(time).and_utc().timestamp_millis();
    Some(Stamp { millis, counter })
}

/// The collision counter as names carry it: `001`…`999`, then a length letter and the
/// digits (`a1000`…`a9999`, `b10000`…), so names keep sorting as strings past 999.
fn format_counter(n: u32) -> String {
    if n < 1000 {
        return format!("{n:03}");
    }
    let digits = n.to_string();
    // Four digits and more: `a` for four, up to `g` for u32's ten.
    let letter = char::from(b'a' + u8::try_from(digits.len() - 4).unwrap_or(0));
    format!("{letter}{digits}")
}

/// A collision counter, not zero, exactly as `format_counter` writes it, or as earlier
/// versions did (plain digits, at least three: `_1000` and up); nothing else, so `_0001`
/// or `_a999` (never produced) are not ours.
fn parse_counter(s: &str) -> Option<u32> {
    let digits = match s.as_bytes().first()? {
        letter @ b'a'..=b'g' => {
            let digits = &s[1..];
            (digits.len() == usize::from(letter - b'a') + 4).then_some(digits)?
        }
        _ => s,
    };
    if digits.len() < 3 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    let canonical = format_counter(n);
    let legacy = format!("{n:03}");
    (n > 0 && (canonical == s || (digits == s && legacy == s))).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn naming() -> Naming {
        Naming::new("app", "log")
    }

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn active_name_is_stable() {
        assert_eq!(naming().active(), "app.log");
    }

    #[test]
    fn rotated_name_is_utc_with_millis() {
        let name = naming().rotated(at(1_700_000_000_123), 0);
        assert_eq!(name, "app.20231114T221320.123Z.log");
    }

    #[test]
    fn collision_counter_is_zero_padded() {
        assert_eq!(
            naming().rotated(at(0), 7),
            "app.19700101T000000.000Z_007.log"
        );
    }

    #[test]
    fn counters_past_999_carry_their_length_as_a_letter() {
        let n = naming();
        assert_eq!(n.rotated(at(0), 999), "app.19700101T000000.000Z_999.log");
        assert_eq!(n.rotated(at(0), 1000), "app.19700101T000000.000Z_a1000.log");
        assert_eq!(
            n.rotated(at(0), 10_000),
            "app.19700101T000000.000Z_b10000.log"
        );
        assert_eq!(
            n.rotated(at(0), u32::MAX),
            "app.19700101T000000.000Z_g4294967295.log"
        );
    }

    #[test]
    fn names_sort_as_strings_past_counter_999() {
        let n = naming();
        let in_order: Vec<String> = [0, 1, 101, 999, 1000, 1001, 9999, 10_000, u32::MAX]
            .into_iter()
            .map(|c| n.rotated(at(5), c))
            .collect();
        let mut sorted = in_order.clone();
        sorted.sort();
        assert_eq!(sorted, in_order);
    }

    #[test]
    fn names_of_earlier_versions_still_parse() {
        let n = naming();
        for (counter, name) in [
            (1, "app.19700101T000000.000Z_001.log"),
            (1000, "app.19700101T000000.000Z_1000.log"),
            (123_456, "app.19700101T000000.000Z_123456.log.gz"),
        ] {
            assert_eq!(
                n.parse(name).map(|r| r.stamp.counter),
                Some(counter),
                "{name}"
            );
        }
    }

    #[test]
    fn malformed_length_letters_are_not_ours() {
        let n = naming();
        for counter in [
            "a999",
            "a10000",
            "b1000",
            "a0100",
            "h1234567890",
            "A1000",
            "a",
            "z1234",
        ] {
            let name = format!("app.19700101T000000.000Z_{counter}.log");
            assert_eq!(n.parse(&name), None, "{name} was taken for ours");
        }
    }

    proptest::proptest! {
        #[test]
        fn increasing_stamps_give_increasing_names(
            m1 in 0_i64..253_402_300_799_999,
            m2 in 0_i64..253_402_300_799_999,
            c1: u32,
            c2: u32,
        ) {
            let n = naming();
            let (a, b) = (Stamp { millis: m1, counter: c1 }, Stamp { millis: m2, counter: c2 });
            let (na, nb) = (n.rotated_at(a), n.rotated_at(b));
            proptest::prop_assert_eq!(a.cmp(&b), na.cmp(&nb), "{} vs {}", na, nb);
            proptest::prop_assert_eq!(n.parse(&na).map(|r| r.stamp), Some(a));
        }
    }

    #[test]
    fn rotated_names_parse_back() {
        let n = naming();
        for counter in [0, 1, 42, 1234] {
            let name = n.rotated(at(1_700_000_000_123), counter);
            let parsed = n.parse(&name).unwrap();
            assert_eq!(
                parsed.stamp,
                Stamp {
                    millis: 1_700_000_000_123,
                    counter
                }
            );
            assert_eq!(parsed.kind, Kind::Plain);
            assert_eq!(parsed.base, name);
        }
    }

    #[test]
    fn archives_and_temporaries_parse_with_their_kind() {
        let n = naming();
        let base = n.rotated(at(5), 0);
        assert_eq!(n.parse(&format!("{base}.gz")).unwrap().kind, Kind::Gz);
        assert_eq!(
            n.parse(&format!("{base}.gz.tmp")).unwrap().kind,
            Kind::GzTmp
        );
        assert_eq!(n.parse(&format!("{base}.gz")).unwrap().base, base);
    }

    #[test]
    fn foreign_files_sharing_the_prefix_are_not_ours() {
        let n = naming();
        for name in [
            "app.log",
            "app.log.1",
            "app.old.log",
            "app.backup.20231114T221320.123Z.log",
            "app2.20231114T221320.123Z.log",
            "app.20231114T221320.123Z.log.bak",
            "app.20231114T221320.123Z.txt",
            "app.20231114T221320.123Z_1.log",
            "app.20231114T221320.123Z_000.log",
            "app.20231114T221320.123Z_0001.log",
            "app.20231314T221320.123Z.log",
            "app.20231114T251320.123Z.log",
            "app.2023111xT221320.123Z.log",
            "app.20231114T221320.123.log",
            "app.20231114T221320.123Z.log.zst",
            "app.20231114T221320.123Z.log.tmp",
        ] {
            assert_eq!(n.parse(name), None, "{name} was taken for ours");
        }
    }

    #[test]
    fn names_sort_by_time_as_strings() {
        let n = naming();
        let in_order = vec![
            n.rotated(at(999), 0),
            n.rotated(at(1000), 0),
            n.rotated(at(1000), 1),
            n.rotated(at(1000), 2),
            n.rotated(at(86_400_000), 0),
        ];
        let mut sorted = in_order.clone();
        sorted.reverse();
        sorted.swap(1, 3);
        sorted.sort();
        assert_eq!(sorted, in_order);
    }

    #[test]
    fn a_prefix_with_dots_still_parses_exactly() {
        let n = Naming::new("my.app", "jsonl");
        let name = n.rotated(at(0), 0);
        assert!(n.parse(&name).is_some());
        assert_eq!(Naming::new("my", "jsonl").parse(&name), None);
    }

    #[test]
    fn free_name_skips_every_taken_form() {
        let dir = tempfile::tempdir().unwrap();
        let n = naming();
        let first = dir.path().join(n.rotated(at(0), 0));
        std::fs::write(&first, "x").unwrap();
        std::fs::write(dir.path().join(format!("{}.gz", n.rotated(at(0), 1))), "x").unwrap();
        std::fs::write(
            dir.path().join(format!("{}.gz.tmp", n.rotated(at(0), 2))),
            "x",
        )
        .unwrap();
        assert_eq!(
            n.free_rotated(dir.path(), at(0), None).0,
            dir.path().join(n.rotated(at(0), 3))
        );
    }

    #[test]
    fn free_name_comes_after_the_last_even_if_the_clock_stands_still_or_steps_back() {
        let dir = tempfile::tempdir().unwrap();
        let n = naming();
        let last = Stamp {
            millis: 5_000,
            counter: 2,
        };
        for now in [at(5_000), at(1_000)] {
            let (path, stamp) = n.free_rotated(dir.path(), now, Some(last));
            assert_eq!(
                stamp,
                Stamp {
                    millis: 5_000,
                    counter: 3
                }
            );
            assert_eq!(path, dir.path().join(n.rotated(at(5_000), 3)));
        }
        let (_, stamp) = n.free_rotated(dir.path(), at(6_000), Some(last));
        assert_eq!(
            stamp,
            Stamp {
                millis: 6_000,
                counter: 0
            }
        );
    }

    #[test]
    fn millis_round_trip_before_and_after_the_epoch() {
        for m in [-1_500, 0, 1_700_000_000_123] {
            assert_eq!(unix_millis(from_unix_millis(m)), m);
        }
    }
}
