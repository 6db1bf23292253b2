//! Bounded polling for tests: `kuutamod_bench::wait`'s, where a timeout fails the test.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Ok`, or panics after `limit` with `what` and the last `Err`
/// it returned.
pub use kuutamod_bench::wait::must as until;

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
