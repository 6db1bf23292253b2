//! Virtual time: one true time for the world, and each host's clocks derived from it.
//!
//! True time `t` is nanoseconds since the start of a run; nothing in the simulated world reads
//! it directly. Each host has
//!
//! - `CLOCK_BOOTTIME`: `offset + t * (1 + rate)`, with `rate` within the run's drift bound
//!   (parts per million). A suspend does not stop it (that is what BOOTTIME is for).
//! - `CLOCK_MONOTONIC`: BOOTTIME minus the time the host spent suspended.
//! - a wall clock (unix ms): the true wall time, plus the host's NTP offset, at the host's
//!   rate (block timestamps and kuutamod's "caught up" rule use it).
//!
//! kuutamod's machine gets BOOTTIME (or MONOTONIC, under the harness mutation that restores
//! deadlines on `CLOCK_MONOTONIC`); deadlines it computes are turned back into true time to
//! schedule wake-ups, rounding up so that the host clock has reached the deadline when the
//! wake-up runs.

/// Nanoseconds in a millisecond.
pub const MS: u64 = 1_000_000;
/// Nanoseconds in a second.
pub const S: u64 = 1_000_000_000;

/// Unix ms of true time 0 (any fixed instant: runs must not depend on the real date).
pub const WALL_BASE_MS: u64 = 1_750_000_000_000;

/// One host's clocks.
#[derive(Debug, Clone)]
pub struct HostClock {
    /// BOOTTIME at t = 0.
    boot_offset: u64,
    /// Rate error, parts per million (BOOTTIME advances by `1 + ppm/1e6` per true ns).
    ppm: i64,
    /// Wall clock offset from true wall time, in ms.
    wall_offset_ms: i64,
    /// BOOTTIME spent suspended in completed suspends.
    suspended_total: u64,
    /// BOOTTIME at which the current suspend began.
    suspended_since: Option<u64>,
}

impl HostClock {
    /// A clock that reads `boot_offset` at t = 0, runs `ppm` fast (negative: slow), and whose
    /// wall clock is `wall_offset_ms` off.
    pub fn new(boot_offset: u64, ppm: i64, wall_offset_ms: i64) -> HostClock {
        HostClock {
            boot_offset,
            ppm,
            wall_offset_ms,
            suspended_total: 0,
            suspended_since: None,
        }
    }

    /// The rate error in ppm.
    pub fn ppm(&self) -> i64 {
        self.ppm
    }

    fn scaled(&self, t: u64) -> u64 {
        let d = i128::from(t) * i128::from(self.ppm) / 1_000_000;
        u64::try_from(i128::from(t) + d).unwrap_or(0)
    }

    /// BOOTTIME at true time `t`.
    pub fn boottime(&self, t: u64) -> u64 {
        self.boot_offset + self.scaled(t)
    }

    /// MONOTONIC at true time `t` (time spent suspended does not count).
    pub fn monotonic(&self, t: u64) -> u64 {
        let boot = self.boottime(t);
        let current = self.suspended_since.map_or(0, |s| boot.saturating_sub(s));
        boot - self.suspended_total - current
    }

    /// Wall clock (unix ms) at true time `t`.
    pub fn wall_ms(&self, t: u64) -> u64 {
        let ms = i64::try_from(self.scaled(t) / MS).unwrap_or(0) + self.wall_offset_ms;
        WALL_BASE_MS.saturating_add_signed(ms)
    }

    /// The host is suspended at true time `t`.
    pub fn suspend(&mut self, t: u64) {
        if self.suspended_since.is_none() {
            self.suspended_since = Some(self.boottime(t));
        }
    }

    /// The host resumes at true time `t`.
    pub fn resume(&mut self, t: u64) {
        if let Some(s) = self.suspended_since.take() {
            self.suspended_total += self.boottime(t).saturating_sub(s);
        }
    }

    /// The first true time >= `now` at which BOOTTIME reads at least `deadline`.
    pub fn boottime_reaches(&self, deadline: u64, now: u64) -> u64 {
        if self.boottime(now) >= deadline {
            return now;
        }
        let rel = deadline - self.boot_offset;
        // t = rel / (1 + ppm/1e6), rounded up, then nudged until the clock has got there.
        let mut t = u64::try_from(
            (i128::from(rel) * 1_000_000).div_euclid(1_000_000 + i128::from(self.ppm)),
        )
        .unwrap_or(u64::MAX / 2)
        .max(now);
        while self.boottime(t) < deadline {
            t += 1;
        }
        t
    }

    /// The first true time >= `now` at which MONOTONIC reads at least `deadline`, assuming
    /// no suspend begins meanwhile (a wake-up that comes too early is re-armed).
    pub fn monotonic_reaches(&self, deadline: u64, now: u64) -> u64 {
        let m = self.monotonic(now);
        if m >= deadline {
            return now;
        }
        let boot_deadline = self.boottime(now) + (deadline - m);
        self.boottime_reaches(boot_deadline, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_runs_at_its_rate_and_deadlines_invert() {
        let c = HostClock::new(1000 * S, 10_000, 0);
        assert_eq!(c.boottime(0), 1000 * S);
        assert_eq!(c.boottime(100 * S), 1000 * S + 101 * S);
        let d = c.boottime(7 * S + 3) + 5;
        let t = c.boottime_reaches(d, 0);
        assert!(c.boottime(t) >= d && c.boottime(t - 1) < d);
        let slow = HostClock::new(0, -10_000, 0);
        assert_eq!(slow.boottime(100 * S), 99 * S);
        let t = slow.boottime_reaches(99 * S, 0);
        assert_eq!(t, 100 * S);
    }

    #[test]
    fn a_suspend_stops_monotonic_but_not_boottime() {
        let mut c = HostClock::new(0, 0, 0);
        c.suspend(10 * S);
        assert_eq!(c.monotonic(15 * S), 10 * S);
        assert_eq!(c.boottime(15 * S), 15 * S);
        c.resume(20 * S);
        assert_eq!(c.monotonic(25 * S), 15 * S);
        assert_eq!(c.monotonic_reaches(16 * S, 25 * S), 26 * S);
    }

    #[test]
    fn the_wall_clock_carries_its_offset() {
        let c = HostClock::new(0, 0, -20);
        assert_eq!(c.wall_ms(S), WALL_BASE_MS + 1000 - 20);
    }
}
