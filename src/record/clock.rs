//! The clock an event is stamped with on the calling thread: the wall clock, in
//! nanoseconds since the Unix epoch, read once per event.
//!
//! `SystemTime::now()` and its distance from the epoch. A raw `clock_gettime` through
//! rustix saved about 82 of the calling thread's instructions per event, but it cost the
//! quickstart three crates (issue 17 keeps its first build at 130) and rustix's raw-syscall
//! backend crashes under valgrind (its vDSO set-up reads the auxiliary vector valgrind
//! gives it); `unsafe` (libc directly) is forbidden in the crate.

/// The wall clock now, in nanoseconds since the epoch (0 before it).
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
