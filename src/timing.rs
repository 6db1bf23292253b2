//! Every timing of the failover protocol, derived once from the two that an operator sets
//! (the session TTL and neard's stop grace). `docs/failover.md` ("Timing") explains each; the
//! safety argument needs only the inequality checked in [`Timing::new`].

use std::time::Duration;

/// Longest time a hot swap may take to show in neard's `/status` and `/metrics` before
/// kuutamod falls back to a restart. neard applies a reload within a second (its client actor
/// polls the config updater); five seconds allow for load.
pub const HOT_SWAP_CONFIRM_MAX: Duration = Duration::from_secs(5);

/// Longest time the guard may take to acknowledge an order. The guard answers from a loop that
/// does nothing else; a second means it is stopped or starved.
pub const GUARD_ACK_MAX: Duration = Duration::from_secs(1);

/// Time between `/status` polls: often enough to notice a wedged neard within seconds, rare
/// enough to cost neard nothing.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// Timeout of one `/status` or `/metrics` request; neard answers from memory, so a second
/// means trouble. (A poll's values were read at most this long before it was answered.)
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Poll interval while a promotion or a demotion waits for neard: every millisecond here is a
/// millisecond without a validator (or with a fence still open).
pub const FAST_POLL: Duration = Duration::from_millis(10);

/// A neard that answered `/status` once and then not for this long has failed (three polls:
/// the original kuutamod's rule).
pub const STATUS_FAIL_AFTER: Duration = Duration::from_secs(3);

/// A node publishes its status record on every change and at least this often (a dead node's
/// record grows old; readers drop records older than three intervals). Two minutes keep the
/// Consul cost of the records below one write a minute per node.
pub const RECORD_INTERVAL: Duration = Duration::from_secs(120);

/// A switchover `--in-window` hands over when neard's maintenance window, the heights in which
/// our account has no block and no chunk to produce, still has this many heights to run: a hot
/// swap takes well under a second, a few heights of slack absorb the height fence and a late
/// poll.
pub const SWITCHOVER_WINDOW: u64 = 5;

/// How long neard may take to boot as validator (restart mode) before the node steps down. A
/// mainnet neard with memtries takes minutes; longer than this and the lock is better used by a
/// standby.
pub const VALIDATOR_BOOT_LIMIT: Duration = Duration::from_secs(600);

/// The derived timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Session TTL requested from Consul; also the time a standby waits after the last
    /// heartbeat it saw before it may activate the key.
    pub ttl: Duration,
    /// Session renew interval: half the TTL (Consul ends a session no earlier than a TTL after
    /// its last renew, so a failed renew leaves time for several retries).
    pub renew_interval: Duration,
    /// The leader's heartbeat interval: a third of the TTL, so that a standby sees the leader
    /// alive several times per TTL.
    pub heartbeat_interval: Duration,
    /// After a failed renew or heartbeat, the next try comes this soon.
    pub retry: Duration,
    /// neard's stop grace (SIGTERM to SIGKILL; also the limit for a hot-swap demotion).
    pub stop_grace: Duration,
    /// Slack between the guard's kill and the TTL: a tenth of the TTL, for signal delivery,
    /// the kernel tearing neard down, scheduling delays and clock-rate differences.
    pub margin: Duration,
    /// A leader steps down this long after its last acknowledged heartbeat was sent:
    /// `ttl - stop_grace - margin`.
    pub step_down_after: Duration,
    /// The guard kills neard this long after the last acknowledged heartbeat was sent: when
    /// kuutamod itself would have finished stepping down (`step_down_after + stop_grace`).
    pub guard_after: Duration,
    /// How old the values of the last heartbeat a successor reads can be: it came at most a
    /// TTL before the lock was free, and its values were as old as a leader lets them get
    /// (neard unanswered for [`STATUS_FAIL_AFTER`], plus one poll's [`STATUS_TIMEOUT`]).
    pub heartbeat_staleness: Duration,
    /// How long a hot-swap promotion may take to be confirmed.
    pub hot_swap_confirm: Duration,
    /// How long the guard may take to acknowledge an order.
    pub guard_ack: Duration,
    /// After a hand-over (SIGUSR1), the old leader does not take the lock back for this long.
    pub handover_holdoff: Duration,
    /// After any other step-down, the node leaves the released lock to the others for this
    /// long before it may take it back itself.
    pub retake_holdoff: Duration,
    /// A lock holder that has not signed for this long (a third of the TTL: one heartbeat
    /// interval) while another node is ready gives the lock to it: promoting, when its neard
    /// reports syncing, or its head stays put while a ready node's record shows a higher one;
    /// validating, when its head stays put while a ready node's record shows a higher one, or
    /// lags a ready node's by two heights or more at every poll of the grace. See
    /// `docs/failover.md`, "Liveness", for the bound this gives.
    pub progress_grace: Duration,
}

impl Timing {
    /// Derives every timing, refusing combinations that break the safety inequality
    /// `step_down_after + stop_grace + margin <= ttl` with room for a missed heartbeat.
    pub fn new(ttl: Duration, stop_grace: Duration) -> Result<Self, String> {
        let heartbeat_interval = ttl / 3;
        let margin = ttl / 10;
        // One missed heartbeat, plus a retry, must not end the lease.
        let needed = heartbeat_interval + heartbeat_interval / 2;
        let step_down_after = ttl
            .checked_sub(stop_grace + margin)
            .filter(|d| *d >= needed)
            .ok_or_else(|| {
                use crate::duration::{display, display_floor};
                format!(
                    "KUUTAMO_NEARD_STOP_GRACE ({}) is too long for KUUTAMO_SESSION_TTL ({}): \
                     a leader must survive one missed heartbeat ({}) and still stop neard {} before the TTL; \
                     use a stop grace of at most {} or a longer TTL",
                    display(stop_grace),
                    display(ttl),
                    display(needed),
                    display(margin),
                    display_floor(ttl.saturating_sub(needed + margin)),
                )
            })?;
        Ok(Timing {
            ttl,
            renew_interval: ttl / 2,
            heartbeat_interval,
            retry: heartbeat_interval / 4,
            stop_grace,
            margin,
            step_down_after,
            guard_after: step_down_after + stop_grace,
            heartbeat_staleness: ttl + STATUS_FAIL_AFTER + STATUS_TIMEOUT,
            hot_swap_confirm: HOT_SWAP_CONFIRM_MAX.min(step_down_after / 2),
            guard_ack: GUARD_ACK_MAX.min(ttl / 5),
            handover_holdoff: ttl,
            retake_holdoff: heartbeat_interval,
            progress_grace: heartbeat_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_timing_keeps_the_safety_inequality() {
        let t = Timing::new(Duration::from_secs(30), Duration::from_secs(5)).expect("defaults");
        assert_eq!(t.renew_interval, Duration::from_secs(15));
        assert_eq!(t.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(t.step_down_after, Duration::from_secs(22));
        assert_eq!(t.guard_after, Duration::from_secs(27));
        assert!(
            t.guard_after + t.margin <= t.ttl,
            "neard is dead a margin before the TTL"
        );
        assert_eq!(t.hot_swap_confirm, Duration::from_secs(5));
        assert_eq!(t.guard_ack, Duration::from_secs(1));
        let err =
            Timing::new(Duration::from_secs(10), Duration::from_secs(5)).expect_err("must fail");
        assert!(err.contains("KUUTAMO_NEARD_STOP_GRACE"), "{err}");
        // Durations print as people write them: 10 s / 3 + 10 s / 6 is 4.999999999 s.
        assert!(
            err.contains("(5s)") && err.contains("at most 4s") && !err.contains("999"),
            "{err}"
        );
        // The largest grace the error proposes is accepted.
        assert!(Timing::new(Duration::from_secs(10), Duration::from_secs(4)).is_ok());
    }

    #[test]
    fn test_timing_scales_down() {
        let t = Timing::new(Duration::from_secs(3), Duration::from_millis(500)).expect("tests");
        assert_eq!(t.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(t.step_down_after, Duration::from_millis(2200));
        assert_eq!(t.hot_swap_confirm, Duration::from_millis(1100));
        assert_eq!(t.guard_ack, Duration::from_millis(600));
    }
}
