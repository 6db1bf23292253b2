//! The invariants an operator states, checked on the world:
//!
//! - **A ready node means a validator**: whenever some node has been ready to take over (its
//!   kuutamod runs and says Voting; its neard answers, is in sync, not frozen, not behind; its
//!   Consul session is alive; its guard runs; its agent reaches Consul; its priority is above
//!   0; the cluster is not paused) for longer than the bound, our account has signed
//!   something the chain accepted within that time. Consul without a leader, slow or lossy,
//!   and an outsider's lock (with its lock-delay) excuse the wait while they last.
//! - **Switchovers as asked**: one planned hand-over per request, from the node the request
//!   names to its target; `kuutamoctl switchover --wait` reports a switch only when the target
//!   holds the lock with its neard holding our key, after that hand-over.
//! - **`kuutamoctl status` is current**: at the end, each running node's status record in
//!   Consul is the one it last published (once its writer is idle).
//! - **A hot swap on a healthy neard is confirmed**: a fallback to a restart ("unconfirmed")
//!   only on a host where a fault could delay the reload or kuutamod's polls.
//! - **A duplicated node id is never silent**: two hosts running with one node id for longer
//!   than the bound, and one of them reports it (or refuses to start).

use std::time::Duration;

use kuutamod::ctl::Outcome;
use kuutamod::lease::{Record, RecordState};
use kuutamod::machine::State;
use kuutamod::records::{control_key, node_key, Control, NodeRecord};

use super::{liveness, World, ACCOUNT, DOPPELGANGER_HEIGHTS};
use crate::clock::MS;
use crate::consul::Owner;
use crate::oracle::Violation;
use crate::schedule::FaultKind;

/// A planned hand-over seen in the lock's history: the request's id, the node that released,
/// the node it named, and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Handover {
    id: String,
    from: String,
    to: String,
    at: u64,
}

/// How long two hosts with one node id may run side by side before one of them must have said
/// so: each publishes its status record at its start and on every change of state.
const ID_CONFLICT_WITHIN: Duration = Duration::from_secs(10);

impl World {
    /// Whether host `h` is ready to take over now (world truth, not only its own word).
    fn ready(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        if host.priority == 0 || !self.kd_runnable(h) || self.servers.holder == Some(h) {
            return false;
        }
        let Some(m) = host.kd.as_ref().and_then(|k| k.machine()) else {
            return false;
        };
        if m.state() != State::Voting {
            return false;
        }
        let session = m
            .session()
            .is_some_and(|s| self.servers.store.session_alive(s));
        let guard = host.guard.as_ref().is_some_and(|g| g.alive() && !g.stopped);
        let neard = host
            .neard
            .as_ref()
            .is_some_and(|n| n.alive && n.rpc_up && n.joined)
            && !self.neard_syncing(h)
            && host.frozen_until <= self.t
            && host.hang_until <= self.t
            && host.lag_extra.1 <= self.t;
        let agent = self.agent_runs(h) && !host.agent.partitioned;
        // A node whose doppelganger alarm is up does not promote until our account has been
        // silent for its heights: not ready while another neard signed with our key within
        // that many heights at the chain's slowest production.
        let slowest = u64::try_from(self.timers.max_block_production_delay.as_nanos()).unwrap_or(0);
        let window = DOPPELGANGER_HEIGHTS * slowest;
        let doppelganger = m.doppelganger().is_some()
            && (0..self.hosts.len()).any(|g| {
                g != h && self.hosts[g].signed_at > 0 && self.t < self.hosts[g].signed_at + window
            });
        if doppelganger {
            return false;
        }
        // A paused cluster takes no failover, but a planned hand-over already under way is
        // carried out: the successor a released lock names is ready in a paused cluster too.
        let paused = self.paused && self.released_to().as_deref() != Some(self.node_id(h).as_str());
        session && guard && neard && agent && !paused
    }

    /// The node a released lock names as its successor (a planned hand-over under way).
    fn released_to(&self) -> Option<String> {
        let (value, held) = self.servers.store.lock(&self.lock_key)?;
        if held {
            return None;
        }
        let r = Record::parse(value)?;
        (r.state == RecordState::Released)
            .then_some(r.successor)
            .flatten()
    }

    /// Whether the lock store itself keeps a ready node from taking over now.
    fn store_excuses(&self) -> bool {
        if !self.server_up() || self.t < self.servers.slow.1 || self.t < self.servers.lossy.1 {
            return true;
        }
        let outsider = self.servers.store.holder(&self.lock_key) == Some(Owner::Outsider);
        outsider || self.servers.store.lock_delay(&self.lock_key) > self.t
    }

    /// After every event: a node ready for longer than the bound, and nothing signed.
    pub(super) fn check_ready_means_signing(&mut self) {
        if self.sched.scenario.same_id.is_some() {
            return;
        }
        // The lock store keeps everyone out; or the holder is promoting with a wall clock off
        // by more than the fence's skew, so that its fence waits for its target to outrun the
        // old leader's (its own bound, not a ready node's, counts meanwhile; invariant 4
        // bounds it).
        let outrunning = self.servers.holder.is_some_and(|g| {
            liveness::wall_off_on(&self.sched, g)
                && self.hosts[g]
                    .kd
                    .as_ref()
                    .and_then(|k| k.machine())
                    .is_some_and(|m| m.state() == State::Promoting)
        });
        if self.store_excuses() || outrunning {
            self.excused_until = self.t;
        }
        let mut worst: Option<(usize, u64)> = None;
        for h in 0..self.hosts.len() {
            let ready = self.ready(h);
            let since = &mut self.hosts[h].ready_since;
            match (ready, *since) {
                (true, None) => *since = Some(self.t),
                (false, Some(_)) => *since = None,
                _ => {}
            }
            let Some(s) = *since else {
                continue;
            };
            // How long host h has been ready while nothing was signed, beyond its bound.
            let from = s.max(self.excused_until).max(self.signed_at);
            let gap = self.t - from;
            self.out.max_unsigned_ms = self.out.max_unsigned_ms.max(gap / MS);
            let over = gap.saturating_sub(self.ready_bound[h] * MS);
            if over > 0 && worst.is_none_or(|(_, o)| over > o) {
                worst = Some((h, gap));
            }
        }
        if let Some((h, gap)) = worst {
            let ready: Vec<usize> = (0..self.hosts.len())
                .filter(|h| self.hosts[*h].ready_since.is_some())
                .collect();
            self.violate(Violation::Unsigned {
                at_ms: self.t / MS,
                what: format!(
                    "hosts {ready:?} ready, nothing signed for {} ms (host {h}'s bound {} ms)",
                    gap / MS,
                    self.ready_bound[h]
                ),
            });
        }
    }

    /// A release wrote `value` to the lock key: a planned hand-over is checked against its
    /// request and against the hand-overs before it.
    pub(super) fn handed_over(&mut self, value: &[u8]) {
        let Some(r) = Record::parse(value) else {
            return;
        };
        let (Some(to), Some(id), RecordState::Released) = (r.successor, r.switchover, r.state)
        else {
            return;
        };
        let h = Handover {
            id,
            from: r.node_id,
            to,
            at: self.t,
        };
        if let Some(before) = self.handovers.iter().find(|x| x.id == h.id) {
            let what = format!(
                "a second hand-over for request {}: {before:?}, then {h:?}",
                h.id
            );
            self.violate(Violation::Switchover {
                at_ms: self.t / MS,
                what,
            });
        }
        let control = self
            .servers
            .store
            .value(&control_key(ACCOUNT))
            .and_then(|(v, _)| Control::parse(&v));
        if let Some(sw) = control
            .and_then(|c| c.switchover)
            .filter(|sw| sw.id == h.id)
        {
            let asked = sw.from == h.from && sw.to.as_ref().is_none_or(|t| *t == h.to);
            if !asked {
                let what = format!("request {sw:?} carried out as {h:?}");
                self.violate(Violation::Switchover {
                    at_ms: self.t / MS,
                    what,
                });
            }
        }
        self.handovers.push(h);
    }

    /// A kuutamoctl process ended: what `--wait` reported must be what happened: the planned
    /// hand-over to the target, and the target holding the lock with our key live after it.
    /// (Not necessarily still at the report: a fault a moment before it may have ended that,
    /// as it can a moment after; seed 47143, a neard crash 10 ms before the report.)
    pub(super) fn operator_done(&mut self, outcome: &Outcome) {
        let Some(target) = &outcome.switched_to else {
            return;
        };
        let id = outcome.request.as_ref().map(|r| r.id.clone());
        let handover = self
            .handovers
            .iter()
            .find(|x| Some(&x.id) == id.as_ref() && x.to == *target)
            .map(|x| x.at);
        let handed = handover.is_some();
        // Any host with that node id (two hosts may share one, by mistake).
        let validates = (0..self.hosts.len()).any(|h| {
            self.node_id(h) == *target
                && self.validated_at[h].is_some_and(|at| handover.is_some_and(|since| at >= since))
        });
        if !validates || !handed {
            let what = format!(
                "--wait reported {target} validating after request {id:?}; it held the lock with our key after the hand-over: {validates}; the planned hand-over to it happened: {handed}"
            );
            self.violate(Violation::Switchover {
                at_ms: self.t / MS,
                what,
            });
        }
    }

    /// At the end: each running node's status record in Consul is the one it published last.
    pub(super) fn check_status_records(&mut self) {
        if self.sched.scenario.same_id.is_some() || !self.server_up() {
            return;
        }
        for h in 0..self.hosts.len() {
            let Some(c) = self.hosts[h].kd.as_ref().and_then(|k| k.conductor()) else {
                continue;
            };
            let (Some(mine), true) = (c.last_record(), c.records_idle()) else {
                continue;
            };
            if !self.agent_runs(h) || self.hosts[h].agent.partitioned {
                continue;
            }
            let key = node_key(self.account(h), &self.node_id(h));
            let stored = self
                .servers
                .store
                .value(&key)
                .and_then(|(v, _)| NodeRecord::parse(&v));
            if stored.as_ref() != Some(mine) {
                let what = format!(
                    "host {h} published {} (updated {}), Consul shows {}",
                    mine.state,
                    mine.updated_ms,
                    stored.map_or("nothing".into(), |r| format!(
                        "{} (updated {})",
                        r.state, r.updated_ms
                    )),
                );
                self.violate(Violation::StaleStatus {
                    at_ms: self.t / MS,
                    what,
                });
                return;
            }
        }
    }

    /// kuutamod on host `h` fell back from a hot swap to a restart.
    pub(super) fn fallback_seen(&mut self, h: usize, reason: &'static str) {
        if reason != "unconfirmed" {
            return;
        }
        // A swap is confirmed within `hot_swap_confirm` of the SIGHUP on a healthy neard; a
        // fault on the host during that time (or the polls before) may explain a fallback.
        let t = self.t / MS;
        let from = t.saturating_sub(
            u64::try_from(self.timing.hot_swap_confirm.as_millis()).unwrap_or(0) + 2000,
        );
        let excused = self.sched.faults.iter().any(|f| {
            f.host() == Some(h)
                && f.at <= t
                && f.heals_at().max(f.at + 1) > from
                && matches!(
                    f.kind,
                    FaultKind::NeardReload { .. }
                        | FaultKind::NeardHang { .. }
                        | FaultKind::NeardCrash { .. }
                        | FaultKind::HostSuspend { .. }
                        | FaultKind::KuutamodStop { .. }
                        | FaultKind::GroupStop { .. }
                        | FaultKind::GroupStopGuardKill { .. }
                )
        });
        if !excused {
            self.violate(Violation::Fallback { at_ms: t, host: h });
        }
    }

    /// kuutamod on host `h` reported another process with its node id.
    pub(super) fn id_conflict_seen(&mut self, _h: usize) {
        self.id_conflict_reported = true;
    }

    /// After every event, in a run with a duplicated node id: both kuutamods running past the
    /// start's check for longer than [`ID_CONFLICT_WITHIN`], and no report of it.
    pub(super) fn check_id_conflict(&mut self) {
        let Some(dup) = self.sched.scenario.same_id else {
            return;
        };
        let running = |w: &World, h: usize| {
            w.hosts[h].kd.as_ref().and_then(|k| k.machine()).is_some()
                && w.hosts[h]
                    .kd
                    .as_ref()
                    .and_then(|k| k.conductor())
                    .is_some_and(|c| c.running())
        };
        if !(running(self, 0) && running(self, dup)) {
            self.both_since = None;
            return;
        }
        let since = *self.both_since.get_or_insert(self.t);
        let within = u64::try_from(ID_CONFLICT_WITHIN.as_nanos()).unwrap_or(u64::MAX);
        if !self.id_conflict_reported && self.t > since + within {
            self.violate(Violation::SilentIdConflict { at_ms: self.t / MS });
        }
    }
}
