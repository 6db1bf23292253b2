//! Bounded polling: wait for a condition with a deadline, fail with what was last observed.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a condition is polled: short against 100 ms heights, cheap on two cores.
pub const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Ok`; after `limit`, an error naming `what` and the last
/// `Err` seen.
pub fn until<T, E: Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, E>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(e) => {
                if start.elapsed() > limit {
                    anyhow::bail!("timed out after {limit:?} waiting for {what}; last seen: {e:?}");
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// [`until`] for tests: a timeout panics, failing the test, with the same message.
pub fn must<T, E: Debug>(limit: Duration, what: &str, probe: impl FnMut() -> Result<T, E>) -> T {
    until(limit, what, probe).unwrap_or_else(|e| panic!("{e:#}"))
}
