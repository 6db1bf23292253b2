//! Exponential back-off for restarting neard.
//!
//! A neard that crashes at every start must not be restarted in a tight loop (an earlier
//! version started one 150 times a second): each restart waits twice as long as the one
//! before, up to a cap, and the wait starts over once neard has stayed up for a while.
//! Pure: the caller passes the time.

use std::time::Duration;

use crate::clock::Instant;

/// Back-off settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Wait before the first restart after a failure.
    pub base: Duration,
    /// Longest wait.
    pub cap: Duration,
    /// A neard that has run this long counts as healthy: the next failure waits `base` again.
    pub reset_after: Duration,
}

impl BackoffConfig {
    /// kuutamod's defaults: 1 s doubling to 30 s, reset after 60 s of running. A crash loop
    /// then costs at most a few starts a minute, and a neard that crashed once after running
    /// for a minute is back after a second.
    pub const DEFAULT: BackoffConfig = BackoffConfig {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(30),
        reset_after: Duration::from_secs(60),
    };
}

/// The back-off state of one supervised process.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
    started: Option<Instant>,
}

impl Backoff {
    /// No failure yet.
    pub fn new(config: BackoffConfig) -> Backoff {
        Backoff {
            config,
            failures: 0,
            started: None,
        }
    }

    /// The process was started at `now`.
    pub fn started(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// The process ended (crashed, or was stopped for a failure) at `now`; returns how long to
    /// wait before starting it again.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let ran = self.started.map(|s| now.saturating_duration_since(s));
        if ran.is_some_and(|r| r >= self.config.reset_after) {
            self.failures = 0;
        }
        self.started = None;
        let wait = self
            .config
            .base
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.config.cap);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn doubles_up_to_the_cap_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new(BackoffConfig::DEFAULT);
        let waits: Vec<u64> = (0..8)
            .map(|i| {
                b.started(t(i));
                b.failed(t(i)).as_secs()
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        b.started(t(100));
        assert_eq!(
            b.failed(t(159)),
            Duration::from_secs(30),
            "59 s is not healthy"
        );
        b.started(t(200));
        assert_eq!(b.failed(t(260)), Duration::from_secs(1), "60 s is");
    }

    #[test]
    fn a_crash_loop_is_started_a_few_times_a_minute() {
        // neard crashes 100 ms after every start: count the starts in 10 minutes.
        let mut b = Backoff::new(BackoffConfig::DEFAULT);
        let mut now = Instant::default();
        let mut starts = 0;
        let end = now + Duration::from_secs(600);
        while now < end {
            b.started(now);
            starts += 1;
            now = now + Duration::from_millis(100);
            now = now + b.failed(now);
        }
        // Five quick ones, then one every 30 s.
        assert!(starts <= 5 + 600 / 30 + 1, "{starts} starts");
    }
}
