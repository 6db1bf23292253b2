//! Bounded polling for tests: like `kuutamod_bench::wait`, but a timeout fails the test.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Ok`, or panics after `limit` with `what` and the last `Err`
/// it returned.
pub fn until<T, E: Debug>(limit: Duration, what: &str, probe: impl FnMut() -> Result<T, E>) -> T {
    kuutamod_bench::wait::until(limit, what, probe).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Holds `check` for `span`, polling like `until`; panics at the first violation.
pub fn holds<E: Debug>(span: Duration, what: &str, mut check: impl FnMut() -> Result<(), E>) {
    let start = Instant::now();
    while start.elapsed() < span {
        if let Err(e) = check() {
            panic!("{what} was violated after {:?}: {e:?}", start.elapsed());
        }
        std::thread::sleep(kuutamod_bench::wait::POLL);
    }
}
