//! The liveness bound: how long after the last fault healed one node must validate again,
//! derived from kuutamod's timing, the chain's timers and the schedule (`docs/dst.md`).

use std::time::Duration;

use kuutamod::backoff::BackoffConfig;
use neard_sim::spec::Timers;

use super::{timing, OUTSIDER_LOCK_DELAY};
use crate::clock::MS;
use crate::schedule::{FaultKind, Schedule};

/// The liveness bound after the last fault healed (ms), derived from the timing, the chain's
/// timers and the schedule (see `docs/dst.md`).
pub fn liveness_bound_ms(sched: &Schedule, timers: &Timers) -> u64 {
    let t = timing();
    let ms = |d: Duration| d.as_millis() as u64;
    let boot = sched.scenario.boot_ms.iter().copied().max().unwrap_or(0);
    // neard's restart back-off on the host that is best off: it doubles with each failure
    // (kuutamod's own configuration, as the simulated kuutamods run it).
    let b = BackoffConfig::DEFAULT;
    let backoff = (0..sched.scenario.hosts)
        .map(|h| {
            let n = sched.faults.iter().filter(|f| f.host() == Some(h)).count() as u32;
            (ms(b.base) << n.min(5)).min(ms(b.cap))
        })
        .min()
        .unwrap_or(ms(b.base));
    let foreign = sched
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::KvForeignAcquire { .. }));
    3 * ms(t.ttl)
        + ms(t.stop_grace)
        + ms(t.hot_swap_confirm)
        + 2 * boot
        + backoff
        + 2000
        + if foreign { OUTSIDER_LOCK_DELAY / MS } else { 0 }
        + if sched.scenario.stall || wall_off(sched) {
            stall_outrun_ms(timers)
        } else {
            0
        }
}

/// Whether a kuutamod's wall clock may be off the block producers' by more than the fence's
/// skew: then its fence cannot use the "caught up" rule (ahead, a block never looks produced
/// after the old leader stopped; behind, blocks from its future make it distrust its clock),
/// and waits for its target to outrun the old leader's, as in a stalled chain
/// (docs/failover.md, Lemma 3 and "What this does not cover").
fn wall_off(sched: &Schedule) -> bool {
    (0..sched.scenario.hosts).any(|h| wall_off_on(sched, h))
}

/// [`wall_off`] for the kuutamod of host `h` alone.
pub(super) fn wall_off_on(sched: &Schedule, h: usize) -> bool {
    let skew = kuutamod::fence::WALL_SKEW.as_millis();
    let off = |w: i64| u128::from(w.unsigned_abs()) > skew;
    sched.scenario.kd_wall_ms.get(h).is_some_and(|w| off(*w))
        || sched.faults.iter().any(
            |f| matches!(f.kind, FaultKind::WallStep { host, step, .. } if host == h && off(step)),
        )
}

/// In a chain stalled for want of our stake (or with a wall clock that cannot tell a block
/// produced after the old leader stopped), a new leader that inherits a stale horizon waits
/// until its own target outruns everything the old leader could have signed: one target per
/// `min_block_production_delay` over the horizon's staleness, plus one, reached by skips that
/// come one per `max_block_wait_delay` in a long stall. The staleness is at most
/// `Timing::heartbeat_staleness`.
fn stall_outrun_ms(timers: &Timers) -> u64 {
    let ms = |d: Duration| d.as_millis() as u64;
    let stale = ms(timing().heartbeat_staleness);
    let targets = stale.div_ceil(ms(timers.min_block_production_delay).max(1)) + 2;
    targets * ms(timers.max_block_wait_delay)
}

/// The bound of "a ready node means a validator" (ms): how long host `h` may be ready to take
/// over while our account signs nothing. (Its own fence's wait is the one that counts: the
/// outrun applies when its own wall clock is off.) The lock holder that cannot sign gives up within 1.5
/// x TTL (docs/failover.md, "Liveness"); then the fence's own wait: a TTL when the lock comes
/// without a clean release (a holder that vanished, a give-back with the value unchanged), the
/// height fence (a block or two in a live chain, the outrun in a stalled one or with a wall
/// clock off), and the activation (a hot swap confirmed, or a restart: the old neard's stop
/// grace and two boots, with the first back-off); two seconds for polls.
pub fn ready_bound_ms(sched: &Schedule, timers: &Timers, h: usize) -> u64 {
    let t = timing();
    let ms = |d: Duration| d.as_millis() as u64;
    let boot = sched.scenario.boot_ms.iter().copied().max().unwrap_or(0);
    3 * ms(t.ttl) / 2
        + ms(t.ttl)
        + ms(t.stop_grace)
        + ms(t.hot_swap_confirm).max(2 * boot + 1000)
        + 2000
        + if sched.scenario.stall || wall_off_on(sched, h) {
            stall_outrun_ms(timers)
        } else {
            0
        }
}
