//! `tracing-test`'s `#[traced_test]` installs its own global subscriber (and panics if one
//! is already installed), so it and `sinkwatch::testing::init()` cannot both own the global
//! default: see docs/testing.md. This test pins down what a user then sees: a clear error
//! from `try_init()` that says what to do, instead of waits that silently never see events.

use tracing_test::traced_test;

#[traced_test]
#[test]
fn init_explains_the_conflict_with_traced_test() {
    tracing::info!("logged through tracing-test");
    assert!(logs_contain("logged through tracing-test"));
    let err = sinkwatch::testing::try_init().unwrap_err();
    assert!(err.contains("another global tracing subscriber"), "{err}");
    assert!(err.contains("traced_test"), "{err}");
    assert!(err.contains("docs/testing.md"), "{err}");
}
