//! Time rotation boundaries: aligned to the interval in UTC or in local time, across DST.
//!
//! A boundary is an instant at which the wall clock (UTC, or the local one) reads a multiple
//! of the interval since the epoch: every hour on the hour, every day at midnight. In local
//! time the wall clock jumps at DST changes, so two more rules keep it sane:
//! - a jump *over* a boundary (spring forward past 02:00 for hourly rotation) rotates at
//!   the jump, once;
//! - a jump back that shows a boundary time again (fall back to 01:00 for hourly rotation)
//!   rotates again, so no file spans two real hours; a daily rotation does not rotate at a
//!   jump that stays within the same day.

use std::time::{Duration, SystemTime};

const NANOS: i128 = 1_000_000_000;

/// The time zone time rotation aligns to.
///
/// Rotated file names are always in UTC; this only decides where the boundaries fall.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use sinkwatch::{FileSink, TimeZone};
///
/// // Rotate at local midnight.
/// let builder = FileSink::builder("logs")
///     .rotate_every(Duration::from_secs(24 * 3600))
///     .time_zone(TimeZone::Local);
/// # drop(builder);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TimeZone {
    /// Coordinated Universal Time. The default.
    #[default]
    Utc,
    /// The system's local time zone, including its DST rules.
    Local,
}

/// The offset of local time from UTC at an instant.
pub(crate) trait Offsets {
    /// Seconds to add to UTC to get local wall time, at `unix_nanos`.
    fn offset_secs(&self, unix_nanos: i128) -> i64;
}

impl Offsets for TimeZone {
    fn offset_secs(&self, unix_nanos: i128) -> i64 {
        match self {
            TimeZone::Utc => 0,
            TimeZone::Local => local_offset(unix_nanos),
        }
    }
}

fn local_offset(unix_nanos: i128) -> i64 {
    use chrono::{Offset as _, TimeZone as _};
    let secs = i64::try_from(unix_nanos.div_euclid(NANOS)).unwrap_or(0);
    chrono::DateTime::from_timestamp(secs, 0).map_or(0, |utc| {
        i64::from(
            chrono::Local
                .offset_from_utc_datetime(&utc.naive_utc())
                .fix()
                .local_minus_utc(),
        )
    })
}

/// The rotation schedule: an interval and the zone its boundaries align to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule<Z = TimeZone> {
    interval: i128,
    zone: Z,
}

impl<Z: Offsets> Schedule<Z> {
    /// A schedule; `interval` must not be zero (the builder checks).
    pub(crate) fn new(interval: Duration, zone: Z) -> Self {
        Schedule {
            interval: i128::try_from(interval.as_nanos())
                .unwrap_or(i128::MAX)
                .max(1),
            zone,
        }
    }

    /// The first boundary strictly after `now`, or `None` if it is past what `SystemTime`
    /// can hold.
    pub(crate) fn next_after(&self, now: SystemTime) -> Option<SystemTime> {
        from_nanos(self.next_after_nanos(to_nanos(now)))
    }

    fn next_after_nanos(&self, now: i128) -> i128 {
        let mut from = now;
        // Each pass either finds the boundary or moves past one offset change; more than a
        // few changes within one interval does not happen in real zones.
        for _ in 0..8 {
            let off = self.offset(from);
            let local = from.saturating_add(off);
            let target = (local.div_euclid(self.interval) + 1).saturating_mul(self.interval);
            let candidate = target.saturating_sub(off);
            if self.offset(candidate) == off {
                return candidate;
            }
            let change = self.first_change(from, candidate, off);
            if self.wall_boundary(change) || self.period(change) != self.period(now) {
                return change;
            }
            from = change;
        }
        from.saturating_add(self.interval)
    }

    fn offset(&self, t: i128) -> i128 {
        i128::from(self.zone.offset_secs(t)) * NANOS
    }

    fn period(&self, t: i128) -> i128 {
        (t + self.offset(t)).div_euclid(self.interval)
    }

    fn wall_boundary(&self, t: i128) -> bool {
        (t + self.offset(t)).rem_euclid(self.interval) == 0
    }

    /// The first instant in `(lo, hi]` whose offset differs from `off` (which holds at `lo`).
    fn first_change(&self, mut lo: i128, mut hi: i128, off: i128) -> i128 {
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.offset(mid) == off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }
}

fn to_nanos(t: SystemTime) -> i128 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

fn from_nanos(n: i128) -> Option<SystemTime> {
    let abs = u64::try_from(n.unsigned_abs() / 1_000_000_000).ok()?;
    let sub = u32::try_from(n.unsigned_abs() % 1_000_000_000).ok()?;
    let d = Duration::new(abs, sub);
    if n >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(d)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;
    const DAY: u64 = 24 * H;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
    }

    /// A zone one hour ahead of UTC, two hours ahead between `summer_start` and
    /// `summer_end` (UTC seconds), like central Europe.
    struct Dst {
        summer_start: u64,
        summer_end: u64,
    }

    impl Offsets for Dst {
        fn offset_secs(&self, unix_nanos: i128) -> i64 {
            let s = u64::try_from(unix_nanos.div_euclid(NANOS)).unwrap();
            if (self.summer_start..self.summer_end).contains(&s) {
                7200
            } else {
                3600
            }
        }
    }

    // Day 100 (UTC midnight); the change happens at 01:00 UTC (02:00 local -> 03:00 local in
    // spring, 03:00 local -> 02:00 local in autumn).
    const SPRING_DAY: u64 = 100 * DAY;
    const AUTUMN_DAY: u64 = 300 * DAY;

    fn dst() -> Dst {
        Dst {
            summer_start: SPRING_DAY + H,
            summer_end: AUTUMN_DAY + H,
        }
    }

    fn boundaries<Z: Offsets>(s: &Schedule<Z>, from: u64, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut now = t(from);
        for _ in 0..n {
            now = s.next_after(now).unwrap();
            out.push(secs(now));
        }
        out
    }

    #[test]
    fn utc_hourly_aligns_to_the_hour() {
        let s = Schedule::new(Duration::from_secs(H), TimeZone::Utc);
        assert_eq!(secs(s.next_after(t(10 * H + 1)).unwrap()), 11 * H);
    }

    #[test]
    fn a_boundary_instant_is_not_its_own_next() {
        let s = Schedule::new(Duration::from_secs(60), TimeZone::Utc);
        assert_eq!(secs(s.next_after(t(120)).unwrap()), 180);
    }

    #[test]
    fn odd_durations_align_to_the_epoch() {
        let s = Schedule::new(Duration::from_secs(7), TimeZone::Utc);
        assert_eq!(boundaries(&s, 0, 3), vec![7, 14, 21]);
    }

    #[test]
    fn sub_second_intervals_work() {
        let s = Schedule::new(Duration::from_millis(250), TimeZone::Utc);
        let next = s
            .next_after(SystemTime::UNIX_EPOCH + Duration::from_millis(1100))
            .unwrap();
        assert_eq!(next, SystemTime::UNIX_EPOCH + Duration::from_millis(1250));
    }

    #[test]
    fn local_daily_rotates_at_local_midnight() {
        let s = Schedule::new(Duration::from_secs(DAY), dst());
        // Winter: local midnight is 23:00 UTC the day before.
        assert_eq!(boundaries(&s, 50 * DAY, 1), vec![51 * DAY - H]);
    }

    #[test]
    fn local_daily_across_spring_forward_is_23_hours() {
        let s = Schedule::new(Duration::from_secs(DAY), dst());
        let b = boundaries(&s, SPRING_DAY - 2 * H, 2);
        assert_eq!(b, vec![SPRING_DAY - H, SPRING_DAY + DAY - 2 * H]);
        assert_eq!(b[1] - b[0], 23 * H);
    }

    #[test]
    fn local_daily_across_fall_back_is_25_hours() {
        let s = Schedule::new(Duration::from_secs(DAY), dst());
        let b = boundaries(&s, AUTUMN_DAY - 3 * H, 2);
        assert_eq!(b, vec![AUTUMN_DAY - 2 * H, AUTUMN_DAY + DAY - H]);
        assert_eq!(b[1] - b[0], 25 * H);
    }

    #[test]
    fn local_hourly_rotates_once_at_spring_forward() {
        let s = Schedule::new(Duration::from_secs(H), dst());
        // From 00:30 local (23:30 UTC): 01:00 local, then the jump 02:00 -> 03:00 at 01:00
        // UTC, then 04:00 local.
        let b = boundaries(&s, SPRING_DAY - H / 2, 3);
        assert_eq!(b, vec![SPRING_DAY, SPRING_DAY + H, SPRING_DAY + 2 * H]);
    }

    #[test]
    fn local_hourly_rotates_each_real_hour_at_fall_back() {
        let s = Schedule::new(Duration::from_secs(H), dst());
        // 02:00 local summer (00:00 UTC), 02:00 local winter again at the change (01:00 UTC),
        // then 03:00 local winter (02:00 UTC): every file spans one real hour.
        let b = boundaries(&s, AUTUMN_DAY - H / 2, 3);
        assert_eq!(b, vec![AUTUMN_DAY, AUTUMN_DAY + H, AUTUMN_DAY + 2 * H]);
    }

    #[test]
    fn boundaries_always_move_forward() {
        for interval in [60, 15 * 60, H, 3 * H, DAY] {
            let s = Schedule::new(Duration::from_secs(interval), dst());
            let mut now = t(AUTUMN_DAY - 2 * DAY);
            for _ in 0..500 {
                let next = s.next_after(now).unwrap();
                assert!(next > now, "interval {interval}: stuck at {}", secs(now));
                now = next;
            }
        }
    }

    #[test]
    fn the_real_local_zone_gives_a_boundary_within_one_interval() {
        let s = Schedule::new(Duration::from_secs(H), TimeZone::Local);
        let now = SystemTime::now();
        let next = s.next_after(now).unwrap();
        assert!(next > now && next <= now + Duration::from_secs(2 * H));
    }

    #[test]
    fn an_interval_past_the_representable_range_never_fires() {
        let s = Schedule::new(Duration::MAX, TimeZone::Utc);
        assert_eq!(s.next_after(SystemTime::now()), None);
    }
}
