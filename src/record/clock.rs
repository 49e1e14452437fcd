//! The clock an event is stamped with on the calling thread: the wall clock, in
//! nanoseconds since the Unix epoch, read once per event.
//!
//! `SystemTime::now()`, then its distance from the epoch. The distance is where the cost
//! was: `duration_since` and the `Timespec` subtraction under it are calls into `std` that
//! handle both signs and carry the nanoseconds, about 56 instructions, five times the
//! clock read itself. A `SystemTime` hashes as its seconds (`i64`) then its nanoseconds
//! (`u32`) on the platforms whose `std` keeps a `timespec`, and that derived `Hash` is
//! compiled into this crate, so a [`Hasher`] that keeps those two values reads them in a
//! few instructions, in safe code. How `std` hashes a `SystemTime` is not a promise,
//! though: the first reading checks it against `duration_since` on the same time (the
//! exact writes, in their order, and the value), and if anything differs every later
//! reading takes `duration_since`. (A raw `clock_gettime` through rustix cost three more
//! crates in the quickstart's build and crashed under valgrind; `unsafe`, for libc
//! directly, is forbidden in the crate.)

use std::hash::{Hash as _, Hasher};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::SystemTime;

/// Whether [`Parts`] reads `SystemTime`s right: not checked yet, yes, no.
static HASHED: AtomicU8 = AtomicU8::new(UNCHECKED);
const UNCHECKED: u8 = 0;
const RIGHT: u8 = 1;
const WRONG: u8 = 2;

/// The wall clock now, in nanoseconds since the epoch (0 before it).
#[inline]
pub(crate) fn now_nanos() -> u64 {
    let now = SystemTime::now();
    match HASHED.load(Ordering::Relaxed) {
        RIGHT => Parts::of(now).nanos().unwrap_or(0),
        WRONG => super::compact::nanos_of(now),
        _ => check(now),
    }
}

/// The first reading: decides whether [`Parts`] may be used from now on.
#[cold]
fn check(now: SystemTime) -> u64 {
    let right = super::compact::nanos_of(now);
    let parts = Parts::of(now).nanos();
    let verdict = if parts == Some(right) { RIGHT } else { WRONG };
    HASHED.store(verdict, Ordering::Relaxed);
    right
}

/// A `SystemTime`'s seconds and nanoseconds, as its `Hash` writes them: exactly one `i64`
/// then one `u32`, or the reading is refused.
#[derive(Default)]
struct Parts {
    secs: i64,
    nanos: u32,
    writes: u8,
    odd: bool,
}

impl Parts {
    #[inline]
    fn of(time: SystemTime) -> Self {
        let mut parts = Parts::default();
        time.hash(&mut parts);
        parts
    }

    /// Nanoseconds since the epoch (0 before it, as `nanos_of`); `None` when the writes
    /// were not the two expected or the nanoseconds are out of range.
    #[inline]
    fn nanos(&self) -> Option<u64> {
        if self.odd || self.writes != 2 || self.nanos >= 1_000_000_000 {
            return None;
        }
        Some(u64::try_from(self.secs).map_or(0, |secs| {
            secs.saturating_mul(1_000_000_000)
                .saturating_add(u64::from(self.nanos))
        }))
    }
}

impl Hasher for Parts {
    fn finish(&self) -> u64 {
        0
    }

    // Every other kind of write (the default methods end here) is not a `timespec`'s.
    fn write(&mut self, _: &[u8]) {
        self.odd = true;
    }

    #[inline]
    fn write_i64(&mut self, secs: i64) {
        self.odd |= self.writes != 0;
        self.secs = secs;
        self.writes = self.writes.saturating_add(1);
    }

    #[inline]
    fn write_u32(&mut self, nanos: u32) {
        self.odd |= self.writes != 1;
        self.nanos = nanos;
        self.writes = self.writes.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::compact::nanos_of;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn reads_the_same_clock_as_system_time_to_the_microsecond() {
        for _ in 0..1000 {
            let before = nanos_of(SystemTime::now());
            let now = now_nanos();
            let after = nanos_of(SystemTime::now());
            // Same clock: between the two readings around it (rounded to microseconds, as a
            // step of the clock between the reads could otherwise land it just outside).
            assert!(before / 1000 <= now / 1000 && now / 1000 <= after / 1000 + 1);
        }
    }

    #[test]
    fn the_hashed_parts_are_the_distance_from_the_epoch() {
        let times = [
            UNIX_EPOCH,
            UNIX_EPOCH + Duration::new(0, 1),
            UNIX_EPOCH + Duration::new(1, 999_999_999),
            UNIX_EPOCH + Duration::new(1_796_351_140, 155_197_898),
            UNIX_EPOCH + Duration::new(18_446_744_073, 709_551_615),
            UNIX_EPOCH + Duration::new(u64::MAX / 4, 5),
            SystemTime::now(),
        ];
        for time in times {
            // Where std hashes a time otherwise, `Parts` refuses it and the clock falls back.
            if let Some(nanos) = Parts::of(time).nanos() {
                assert_eq!(nanos, nanos_of(time), "{time:?}");
            }
        }
        #[cfg(unix)]
        assert!(Parts::of(SystemTime::now()).nanos().is_some(), "a timespec");
    }

    #[test]
    fn times_before_the_epoch_are_zero_either_way() {
        let before = UNIX_EPOCH - Duration::new(3, 500);
        assert_eq!(nanos_of(before), 0);
        assert_eq!(Parts::of(before).nanos().unwrap_or(0), 0);
    }

    /// One write a `Hash` impl could make.
    enum W {
        I64(i64),
        U32(u32),
        U8(u8),
    }

    fn read(writes: &[W]) -> Option<u64> {
        let mut parts = Parts::default();
        for w in writes {
            match *w {
                W::I64(n) => parts.write_i64(n),
                W::U32(n) => parts.write_u32(n),
                W::U8(n) => parts.write_u8(n),
            }
        }
        parts.nanos()
    }

    #[test]
    fn writes_other_than_one_i64_then_one_u32_are_refused() {
        assert_eq!(read(&[W::U32(1), W::I64(2)]), None, "wrong order");
        assert_eq!(read(&[W::I64(2), W::U32(1), W::U8(0)]), None, "extra");
        assert_eq!(read(&[W::I64(2)]), None, "missing");
        assert_eq!(
            read(&[W::I64(2), W::U32(1_000_000_000)]),
            None,
            "out of range"
        );
        assert_eq!(read(&[W::I64(2), W::U32(1)]), Some(2_000_000_001));
    }
}
