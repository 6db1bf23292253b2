//! Shrinking: the smallest schedule that still breaks an invariant.
//!
//! Greedy and deterministic: drop faults one at a time (keeping a drop whenever the run still
//! fails the same way), then shorten what lasts (halve durations and down-times), then move
//! faults earlier, then drop a host that no fault names, repeating until nothing changes. The
//! world's random streams depend only on the seed, so each candidate is judged by one run.

use crate::oracle::Violation;
use crate::schedule::{FaultKind, Schedule};
use crate::world::{run, Settings};

/// Whether `v` counts as the same failure as `want` (the same invariant).
fn same(v: &Option<Violation>, want: &Violation) -> bool {
    v.as_ref().is_some_and(|v| v.name() == want.name())
}

fn halve(k: &FaultKind) -> Option<FaultKind> {
    use FaultKind::*;
    let h = |d: u64| (d > 100).then_some(d / 2);
    Some(match k.clone() {
        NeardHang { host, dur } => NeardHang { host, dur: h(dur)? },
        NeardSyncing { host, dur } => NeardSyncing { host, dur: h(dur)? },
        NeardReload { host, dur, mode } => NeardReload {
            host,
            dur: h(dur)?,
            mode,
        },
        NeardLag { host, dur, lag } => NeardLag {
            host,
            dur: h(dur)?,
            lag,
        },
        NeardSlowStop { host, dur } => NeardSlowStop { host, dur: h(dur)? },
        KuutamodKill { host, down } => KuutamodKill {
            host,
            down: h(down)?,
        },
        KuutamodStop { host, dur } => KuutamodStop { host, dur: h(dur)? },
        GroupStop { host, dur } => GroupStop { host, dur: h(dur)? },
        // The kill stays within the (shorter) stop.
        GroupStopGuardKill { host, dur, after } => {
            let dur = h(dur)?;
            GroupStopGuardKill {
                host,
                dur,
                after: after.min(dur - 1),
            }
        }
        GuardStop { host, dur } => GuardStop { host, dur: h(dur)? },
        AgentRestart { host, down } => AgentRestart {
            host,
            down: h(down)?,
        },
        AgentKill { host, down } => AgentKill {
            host,
            down: h(down)?,
        },
        AgentPause { host, dur } => AgentPause { host, dur: h(dur)? },
        AgentPartition { host, dur } => AgentPartition { host, dur: h(dur)? },
        Election { dur } => Election { dur: h(dur)? },
        QuorumLoss { dur } => QuorumLoss { dur: h(dur)? },
        ConsulSlow { dur, max } => ConsulSlow { dur: h(dur)?, max },
        ConsulLossy { dur, permille } => ConsulLossy {
            dur: h(dur)?,
            permille,
        },
        KvForeignAcquire { dur } => KvForeignAcquire { dur: h(dur)? },
        HostSuspend { host, dur } => HostSuspend { host, dur: h(dur)? },
        CtlPause { dur } => CtlPause { dur: h(dur)? },
        NeardBehind { host, dur, heights } => NeardBehind {
            host,
            dur: h(dur)?,
            heights,
        },
        NeardSyncSpells { host, dur, spell } => NeardSyncSpells {
            host,
            dur: h(dur)?,
            spell,
        },
        NeardFreeze { host, dur } => NeardFreeze { host, dur: h(dur)? },
        WallStep { host, dur, step } => WallStep {
            host,
            dur: h(dur)?,
            step,
        },
        ConsulRestore { dur } => ConsulRestore { dur: h(dur)? },
        PriorityChange {
            host,
            priority,
            down,
        } => PriorityChange {
            host,
            priority,
            down: h(down)?,
        },
        Sigterm { host, down } => Sigterm {
            host,
            down: h(down)?,
        },
        _ => return None,
    })
}

/// Shrinks `sched` (which fails with `want` under `seed` and `settings`); returns the smallest
/// schedule found, its violation, and how many runs it took.
pub fn shrink(
    seed: u64,
    sched: &Schedule,
    settings: Settings,
    want: &Violation,
) -> (Schedule, Violation, u64) {
    let mut best = sched.clone();
    let mut best_v = want.clone();
    let mut runs = 0u64;
    let try_it = |cand: &Schedule, runs: &mut u64| -> Option<Violation> {
        // A shrunk schedule must stay within the claim, as every generated one is.
        if !crate::schedule::is_within_claim(&cand.faults) {
            return None;
        }
        *runs += 1;
        let v = run(seed, cand, settings).violation;
        same(&v, want).then(|| v.unwrap_or_else(|| want.clone()))
    };
    loop {
        let mut progress = false;
        // Drop faults.
        let mut i = 0;
        while i < best.faults.len() {
            let mut cand = best.clone();
            cand.faults.remove(i);
            if let Some(v) = try_it(&cand, &mut runs) {
                best = cand;
                best_v = v;
                progress = true;
            } else {
                i += 1;
            }
        }
        // Shorten.
        for i in 0..best.faults.len() {
            while let Some(k) = halve(&best.faults[i].kind) {
                let mut cand = best.clone();
                cand.faults[i].kind = k;
                match try_it(&cand, &mut runs) {
                    Some(v) => {
                        best = cand;
                        best_v = v;
                        progress = true;
                    }
                    None => break,
                }
            }
        }
        // Move earlier (to a round time, or half-way to the previous fault).
        for i in 0..best.faults.len() {
            let floor = if i == 0 { 1000 } else { best.faults[i - 1].at };
            let at = best.faults[i].at;
            for cand_at in [floor.div_ceil(100) * 100, floor + (at - floor) / 2] {
                if cand_at >= at || cand_at < floor {
                    continue;
                }
                let mut cand = best.clone();
                cand.faults[i].at = cand_at;
                if let Some(v) = try_it(&cand, &mut runs) {
                    best = cand;
                    best_v = v;
                    progress = true;
                    break;
                }
            }
        }
        // Drop the last host if no fault names it.
        let n = best.scenario.hosts;
        let named = best.faults.iter().any(|f| {
            f.host() == Some(n - 1)
                || matches!(f.kind, FaultKind::CtlSwitchover { to: Some(t), .. } if t == n - 1)
        });
        if n > 2 && !named && best.scenario.same_id != Some(n - 1) {
            let mut cand = best.clone();
            let s = &mut cand.scenario;
            s.hosts -= 1;
            s.old_neard.pop();
            s.priority.pop();
            s.drift_ppm.pop();
            s.wall_offset_ms.pop();
            s.boot_ms.pop();
            s.lag_ms.pop();
            s.kd_wall_ms.pop();
            if let Some(v) = try_it(&cand, &mut runs) {
                best = cand;
                best_v = v;
                progress = true;
            }
        }
        if !progress {
            return (best, best_v, runs);
        }
    }
}
