//! The clock an event is stamped with on the calling thread: the wall clock, in
//! nanoseconds since the Unix epoch, read once per event.
//!
//! On Linux it is `clock_gettime(CLOCK_REALTIME)` through the vDSO (rustix), the same
//! clock and the same call `SystemTime::now()` makes, without the conversion through
//! `SystemTime` and `Duration` (a subtraction from the epoch with its checks), which cost
//! more than the read itself. Elsewhere, `SystemTime`.

/// The wall clock now, in nanoseconds since the epoch (0 before it).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
pub(crate) fn now_nanos() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    match (u64::try_from(now.tv_sec), u64::try_from(now.tv_nsec)) {
        (Ok(secs), Ok(nanos)) => secs.saturating_mul(1_000_000_000).saturating_add(nanos),
        _ => 0,
    }
}

/// The wall clock now, in nanoseconds since the epoch (0 before it).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
pub(crate) fn now_nanos() -> u64 {
    super::compact::nanos_of(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::compact::nanos_of;
    use std::time::SystemTime;

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
}
