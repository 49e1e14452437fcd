//! `CI_TIMEOUT_MULTIPLIER`: scales every wait; empty or blank means unset (a factor of 1), and
//! an invalid value is reported, not ignored.
//!
//! One test only: it changes the process environment, which no other test may observe.

use std::time::{Duration, Instant};

use sinkwatch::testing::{self, Matcher, WaitErrorKind, TIMEOUT_MULTIPLIER_VAR};

#[tokio::test]
async fn the_multiplier_scales_timeouts_blank_means_unset_and_invalid_values_are_reported() {
    testing::init();
    let seen = testing::watch();
    let never = || Matcher::event("an event no code emits");

    for bad in ["abc", "0", "-2", "NaN", "inf", "1,5"] {
        std::env::set_var(TIMEOUT_MULTIPLIER_VAR, bad);
        let err = seen.wait(never()).await.unwrap_err();
        assert_eq!(
            err.kind(),
            WaitErrorKind::InvalidMultiplier,
            "{bad:?}: {err}"
        );
        assert!(err.message().contains(TIMEOUT_MULTIPLIER_VAR), "{err}");
        assert!(err.message().contains(&format!("{bad:?}")), "{err}");
        let err = testing::eventually("never", || false).await.unwrap_err();
        assert_eq!(err.kind(), WaitErrorKind::InvalidMultiplier);
    }

    // Empty (as CI templating produces) and blank values mean unset: a plain timeout.
    for blank in ["", "  ", "\t"] {
        std::env::set_var(TIMEOUT_MULTIPLIER_VAR, blank);
        let err = seen
            .wait(never())
            .timeout(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), WaitErrorKind::Timeout, "{blank:?}: {err}");
        assert!(
            err.message()
                .contains("50ms (CI_TIMEOUT_MULTIPLIER unset or 1)"),
            "{blank:?}: {err}"
        );
        let err = testing::eventually_within("never", Duration::from_millis(50), || {
            Err::<(), _>(String::from("not yet"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), WaitErrorKind::Timeout, "{blank:?}: {err}");
    }

    // 5 s x 0.02 = 100 ms: the default timeout, scaled down.
    std::env::set_var(TIMEOUT_MULTIPLIER_VAR, "0.02");
    let started = Instant::now();
    let err = seen.wait(never()).await.unwrap_err();
    assert_eq!(err.kind(), WaitErrorKind::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the multiplier was ignored"
    );
    assert!(
        err.message().contains("5s x CI_TIMEOUT_MULTIPLIER=0.02"),
        "{err}"
    );
    std::env::remove_var(TIMEOUT_MULTIPLIER_VAR);
}
