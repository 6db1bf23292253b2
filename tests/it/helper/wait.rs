//! Bounded polling: wait for a condition, fail with what was last observed.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Polls `probe` every 50 ms until it returns `Ok`, or panics after `limit` with `what` and the
/// last `Err` it returned.
pub fn until<T, E: Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(e) => {
                if start.elapsed() > limit {
                    panic!("timed out after {limit:?} waiting for {what}; last seen: {e:?}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Holds `check` for `span`, polling every 50 ms; panics at the first violation.
pub fn holds<E: Debug>(span: Duration, what: &str, mut check: impl FnMut() -> Result<(), E>) {
    let start = Instant::now();
    while start.elapsed() < span {
        if let Err(e) = check() {
            panic!("{what} was violated after {:?}: {e:?}", start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
