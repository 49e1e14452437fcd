//! The retry policy: which outcomes are retried, and how long to wait before the next attempt.
//!
//! As Promtail and Alloy do: 429, every 5xx and transport errors are retried with jittered
//! exponential backoff; every other 4xx is final. Unlike them, a `Retry-After` header
//! (seconds or an HTTP date) is honoured, capped, since gateways in front of Loki send one.

use std::hash::{BuildHasher as _, Hasher as _};
use std::time::{Duration, SystemTime};

/// What to do with a response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 400: Loki rejected (some of) the entries and stored the valid ones; never resend.
    Rejected,
    /// Any other status that retrying cannot fix (401, 403, 404, 413, 3xx, …).
    NotRetryable,
    /// 429 or 5xx: try again later.
    Retry,
}

/// Classifies an HTTP status.
pub(crate) fn classify(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        400 => Verdict::Rejected,
        429 | 500..=599 => Verdict::Retry,
        _ => Verdict::NotRetryable,
    }
}

/// Backoff and retry limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) min_backoff: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) max_retries: u32,
    pub(crate) max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
            max_retries: 10,
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `n` (1 for the first retry): uniform in
    /// `[min·2^(n−1), min·2^n)`, capped at the maximum.
    pub(crate) fn backoff(&self, n: u32, rng: &mut Rng) -> Duration {
        let min = self.min_backoff.as_nanos();
        let low = min.saturating_mul(1u128 << n.saturating_sub(1).min(64));
        let high = low.saturating_mul(2);
        let cap = self.max_backoff.as_nanos();
        if low >= cap {
            return self.max_backoff;
        }
        let span = u64::try_from(high - low).unwrap_or(u64::MAX);
        let nanos = (low + u128::from(rng.below(span))).min(cap);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// The wait before retry `n`: the backoff, or the server's `Retry-After` (capped) when
    /// that is longer.
    pub(crate) fn delay(&self, n: u32, retry_after: Option<Duration>, rng: &mut Rng) -> Duration {
        let backoff = self.backoff(n, rng);
        retry_after.map_or(backoff, |ra| ra.min(self.max_retry_after).max(backoff))
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date (a date in the past is 0).
/// Anything else is ignored.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    // delay-seconds is `1*DIGIT` (no sign); more seconds than a u64 holds is "very long",
    // which the cap then shortens, not "absent".
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A small non-cryptographic generator (splitmix64) for jitter, seeded from the process'
/// random hasher keys so sinks restarted together do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Rng(h.finish())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: unbiased enough for jitter, and never divides by zero.
        u64::try_from((u128::from(self.next()) * u128::from(n)) >> 64).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            min_backoff: Duration::from_millis(min_ms),
            max_backoff: Duration::from_millis(max_ms),
            max_retries: 10,
            max_retry_after: Duration::from_secs(5),
        }
    }

    #[test]
    fn statuses_are_classified_as_the_reference_clients_do() {
        assert_eq!(classify(204), Verdict::Delivered);
        assert_eq!(classify(200), Verdict::Delivered);
        assert_eq!(classify(400), Verdict::Rejected);
        for s in [401, 403, 404, 413, 422, 301] {
            assert_eq!(classify(s), Verdict::NotRetryable, "{s}");
        }
        for s in [429, 500, 502, 503, 504] {
            assert_eq!(classify(s), Verdict::Retry, "{s}");
        }
    }

    #[test]
    fn backoff_stays_in_its_doubling_window() {
        let p = policy(500, 300_000);
        let mut rng = Rng::new();
        for n in 1..=8 {
            for _ in 0..200 {
                let d = p.backoff(n, &mut rng).as_millis();
                let low = 500u128 << (n - 1);
                assert!(d >= low && d < low * 2, "retry {n}: {d} ms");
            }
        }
    }

    #[test]
    fn backoff_is_capped_at_the_maximum() {
        let p = policy(500, 2_000);
        let mut rng = Rng::new();
        assert_eq!(p.backoff(3, &mut rng), Duration::from_secs(2));
        assert_eq!(p.backoff(200, &mut rng), Duration::from_secs(2));
        assert!(p.backoff(2, &mut rng) <= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_wins_when_longer_and_is_capped() {
        let p = policy(10, 100);
        let mut rng = Rng::new();
        let d = p.delay(1, Some(Duration::from_secs(1)), &mut rng);
        assert_eq!(d, Duration::from_secs(1));
        let d = p.delay(1, Some(Duration::from_secs(3600)), &mut rng);
        assert_eq!(d, Duration::from_secs(5));
        let d = p.delay(1, Some(Duration::ZERO), &mut rng);
        assert!(d >= Duration::from_millis(10));
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        let date = "Sun, 06 Nov 1994 08:49:47 GMT";
        assert_eq!(parse_retry_after(date, now), Some(Duration::from_secs(10)));
        let past = "Sun, 06 Nov 1994 08:49:00 GMT";
        assert_eq!(parse_retry_after(past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn retry_after_is_strict_about_signs_and_saturates_when_huge() {
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(parse_retry_after("+7", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        let huge = "99999999999999999999999999";
        assert_eq!(
            parse_retry_after(huge, now),
            Some(Duration::from_secs(u64::MAX))
        );
        let p = RetryPolicy::default();
        let d = p.delay(1, parse_retry_after(huge, now), &mut Rng::new());
        assert_eq!(d, p.max_retry_after);
    }

    #[test]
    fn rng_below_stays_below() {
        let mut rng = Rng::new();
        assert_eq!(rng.below(0), 0);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
