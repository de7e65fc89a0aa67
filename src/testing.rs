//! Helpers of the test suites. A test that needs something a machine may lack (the committed FMNIST-align assets,
//! the Fashion-MNIST package, ONNX Runtime, the real weights under `../shared/data/`) calls [`missing`] and returns:
//! locally it skips with the printed reason; under CI (`CI=true`, set by the CI runner) it fails, so a missing
//! install step can never pass silently.

/// Whether this process runs under CI (`CI=true` or `CI=1`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Report a missing prerequisite: panics under CI, prints `SKIP: <reason>` otherwise (the caller then returns).
pub fn missing(reason: impl std::fmt::Display) {
    if under_ci() {
        panic!("missing under CI (CI=true), where every prerequisite must be installed: {reason}");
    }
    eprintln!("SKIP: {reason}");
}
