//! Time as kuutamod's decisions see it: `CLOCK_BOOTTIME`.
//!
//! Every deadline that fences neard (the lease, the guard's kill time, a standby's wait before
//! it may activate the key) is a *duration since some event on this host*. `CLOCK_MONOTONIC`,
//! which tokio's timers use, stops while the host is suspended: after a resume, a deadline on
//! it has not passed although the rest of the world (Consul's TTL timers, the standby's clock)
//! went on, and neard would sign until a renew fails. `CLOCK_BOOTTIME` counts the suspend, so a
//! deadline that passed during a suspend has passed when the host wakes.
//!
//! [`Instant`] is a plain value (nanoseconds of `CLOCK_BOOTTIME`), so the pure decision code
//! ([`crate::machine`], [`crate::lease`], [`crate::fence`]) takes `now` as an argument and a
//! simulator can drive it with virtual time. [`now`] reads the real clock; [`JumpDetector`]
//! notices a suspend (or a stopped process) by comparing the two clocks.

use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// The wall clock in Unix milliseconds: only for what is shown to people and written into
/// records for them (never for a deadline; see the module's introduction).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A point in `CLOCK_BOOTTIME` (nanoseconds since boot, suspend included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The instant `nanos` nanoseconds after boot (for tests and simulations).
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// Nanoseconds since boot.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating.
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }

    /// `self - d`, saturating at boot.
    pub fn saturating_sub(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl std::ops::Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        self.saturating_sub(d)
    }
}

fn read(clock: ClockId) -> u64 {
    // Both clocks exist on every Linux kernel kuutamod supports (BOOTTIME since 2.6.39);
    // clock_gettime cannot fail for them with a valid pointer.
    clock_gettime(clock)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0)
}

/// The current `CLOCK_BOOTTIME` instant.
pub fn now() -> Instant {
    Instant(read(ClockId::CLOCK_BOOTTIME))
}

/// How much more `CLOCK_BOOTTIME` may advance than `CLOCK_MONOTONIC` between two readings
/// before it counts as a jump (a suspend). The clocks run at the same rate otherwise; the slack
/// only absorbs the time between the two reads.
pub const JUMP_SLACK: Duration = Duration::from_millis(50);

/// Notices the host having been suspended between two readings: `CLOCK_BOOTTIME` advanced by
/// more than `CLOCK_MONOTONIC` did.
#[derive(Debug, Clone, Copy)]
pub struct JumpDetector {
    boot: u64,
    mono: u64,
}

impl JumpDetector {
    /// Starts from the current readings.
    pub fn new() -> JumpDetector {
        JumpDetector {
            boot: read(ClockId::CLOCK_BOOTTIME),
            mono: read(ClockId::CLOCK_MONOTONIC),
        }
    }

    /// Reads both clocks; returns how long the host was suspended since the last call, if it
    /// was (more than [`JUMP_SLACK`]).
    pub fn check(&mut self) -> Option<Duration> {
        let boot = read(ClockId::CLOCK_BOOTTIME);
        let mono = read(ClockId::CLOCK_MONOTONIC);
        let lost = suspended(self.boot, self.mono, boot, mono);
        self.boot = boot;
        self.mono = mono;
        lost
    }
}

impl Default for JumpDetector {
    fn default() -> Self {
        Self::new()
    }
}

/// The suspend between readings `(boot0, mono0)` and `(boot1, mono1)`, if longer than
/// [`JUMP_SLACK`].
pub fn suspended(boot0: u64, mono0: u64, boot1: u64, mono1: u64) -> Option<Duration> {
    let boot = boot1.saturating_sub(boot0);
    let mono = mono1.saturating_sub(mono0);
    let lost = Duration::from_nanos(boot.saturating_sub(mono));
    (lost > JUMP_SLACK).then_some(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_counts_a_suspend_and_the_detector_sees_it() {
        // 10 s of both clocks, then a 30 s suspend: BOOTTIME moved 40 s, MONOTONIC 10 s.
        let s = 1_000_000_000;
        assert_eq!(suspended(0, 0, 10 * s, 10 * s), None);
        assert_eq!(
            suspended(0, 0, 40 * s, 10 * s),
            Some(Duration::from_secs(30))
        );
        // The two reads are not simultaneous: a few milliseconds of skew is no jump.
        assert_eq!(suspended(0, 0, 10 * s + 20_000_000, 10 * s), None);
    }

    #[test]
    fn the_real_clocks_agree_while_awake() {
        let mut d = JumpDetector::new();
        let a = now();
        std::thread::sleep(Duration::from_millis(20));
        let b = now();
        assert!(b.saturating_duration_since(a) >= Duration::from_millis(20));
        assert_eq!(d.check(), None);
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_nanos(5);
        assert_eq!(t - Duration::from_secs(1), Instant::from_nanos(0));
        assert_eq!(
            (t + Duration::from_nanos(10)).saturating_duration_since(t),
            Duration::from_nanos(10)
        );
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
    }
}
