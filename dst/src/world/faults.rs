//! The schedule's faults: what each does when it starts and when it heals, and the host-level
//! moves they share (a signal to kuutamod, the operator's control record, an agent going down
//! or running again, a host resuming from suspend).

use kuutamod::lock_store::Failure;
use kuutamod::settings::leader_key;
use kuutamod::supervisor::conductor::Input;

use super::events::Ev;
use super::operator::Command;
use super::{World, ACCOUNT, OUTSIDER_LOCK_DELAY, OUTSIDER_TTL};
use crate::clock::{MS, S};
use crate::consul::Owner;
use crate::schedule::FaultKind;

impl World {
    pub(super) fn fault_start(&mut self, i: usize) {
        use FaultKind::*;
        let kind = self.sched.faults[i].kind.clone();
        let dur_end = self.sched.faults[i].heals_at() * MS;
        self.trace(|| format!("FAULT {}", kind_name(&kind)));
        match kind {
            NeardCrash { host } => {
                if self.hosts[host].neard.as_ref().is_some_and(|n| n.alive) {
                    self.neard_dies(host);
                }
            }
            NeardHang { host, .. } => self.hosts[host].hang_until = dur_end,
            NeardSyncing { host, .. } => self.hosts[host].syncing_until = dur_end,
            NeardReload { host, mode, .. } => self.hosts[host].reload_mode = Some((mode, dur_end)),
            NeardLag { host, lag, .. } => self.hosts[host].lag_extra = (lag, dur_end),
            NeardSlowStop { host, .. } => self.hosts[host].slow_stop_until = dur_end,
            KuutamodKill { host, .. } => {
                self.kd_die(host);
            }
            KuutamodStop { host, .. } => self.hosts[host].kd_stopped = true,
            GroupStop { host, .. } => self.hosts[host].group_stopped = true,
            GroupStopGuardKill { host, after, .. } => {
                self.hosts[host].group_stopped = true;
                self.after(after * MS, Ev::GuardKill { h: host });
            }
            GuardStop { host, .. } => {
                if let Some(g) = self.hosts[host].guard.as_mut() {
                    g.stopped = true;
                }
            }
            GuardKill { host } => self.guard_kill(host),
            AgentRestart { host, .. } => {
                // A graceful leave reaches the servers (when they can be reached) and ends
                // the node's sessions.
                if self.agent_runs(host) && !self.hosts[host].agent.partitioned && self.server_up()
                {
                    self.consul
                        .store
                        .invalidate_owner(Owner::Host(host), self.t);
                    self.store_changed();
                }
                self.agent_down(host);
            }
            AgentKill { host, .. } => self.agent_down(host),
            AgentPause { host, .. } => self.hosts[host].agent.paused = true,
            AgentPartition { host, .. } => self.hosts[host].agent.partitioned = true,
            Election { .. } => self.consul.election_until = dur_end,
            QuorumLoss { .. } => self.consul.quorum_lost = true,
            ConsulSlow { max, .. } => self.consul.slow = (max, dur_end),
            ConsulLossy { permille, .. } => self.consul.lossy = (permille, dur_end),
            KvDelete => {
                if self.server_up() && self.consul.store.delete(&leader_key(ACCOUNT)) {
                    self.store_changed();
                }
            }
            KvOverwrite => {
                if self.server_up() {
                    self.consul
                        .store
                        .put(&leader_key(ACCOUNT), br#"{"written":"by hand"}"#);
                    self.store_changed();
                }
            }
            KvForeignAcquire { .. } => {
                if self.server_up() {
                    let s = self.consul.store.create_session(
                        Owner::Outsider,
                        "outsider",
                        OUTSIDER_TTL,
                        OUTSIDER_LOCK_DELAY,
                        self.t,
                        OUTSIDER_TTL + self.rng.below(OUTSIDER_TTL),
                    );
                    self.schedule_expiry(&s);
                    let got = self.consul.store.acquire(
                        &leader_key(ACCOUNT),
                        &s,
                        b"another program's lock",
                        self.t,
                    );
                    if got == Ok(true) {
                        self.store_changed();
                    }
                    self.consul.foreign = Some(s);
                }
            }
            TombstoneReap => self.consul.store.reap_tombstones(),
            HostSuspend { host, .. } => {
                self.hosts[host].suspended = true;
                self.hosts[host].clock.suspend(self.t);
            }
            HandOver { host } => self.signal(host, Input::HandOver),
            Sigterm { host, down } => {
                if self.hosts[host].kd.is_some() {
                    self.hosts[host].restart_after_exit = Some(down);
                }
                self.signal(host, Input::Shutdown);
            }
            CtlPause { .. } => self.operator_run(Command::Pause(true)),
            CtlSwitchover { to, wait } => {
                let to = to.map(|h| self.node_id(h));
                self.operator_run(Command::Switchover {
                    to,
                    wait,
                    id: format!("sw{i}"),
                });
            }
            CtlCancel => self.operator_run(Command::Cancel),
            PriorityChange {
                host,
                priority,
                down,
            } => {
                self.hosts[host].priority = priority;
                if self.hosts[host].kd.is_some() {
                    self.hosts[host].restart_after_exit = Some(down);
                }
                self.signal(host, Input::Shutdown);
            }
            NeardBehind { host, heights, .. } => {
                let lag = heights * self.settings.block_ms.max(20);
                self.hosts[host].lag_extra = (lag, dur_end);
            }
            NeardSyncSpells { host, spell, .. } => {
                self.hosts[host].spells = Some((self.t, spell * MS, dur_end));
            }
            NeardFreeze { host, .. } => self.hosts[host].frozen_until = dur_end,
            WallStep { host, step, .. } => self.hosts[host].kd_wall_offset_ms += step,
            ConsulRestore { .. } => {
                let snapshot = self.consul.store.clone();
                self.consul.snapshots.push((i, snapshot));
            }
        }
    }

    pub(super) fn fault_end(&mut self, i: usize) {
        use FaultKind::*;
        let kind = self.sched.faults[i].kind.clone();
        self.trace(|| format!("HEAL {}", kind_name(&kind)));
        match kind {
            KuutamodKill { host, .. } => self.kd_start(host),
            KuutamodStop { host, .. } => {
                self.hosts[host].kd_stopped = false;
                self.kd_resume(host, 0);
            }
            GroupStop { host, .. } | GroupStopGuardKill { host, .. } => {
                self.hosts[host].group_stopped = false;
                self.kd_resume(host, 0);
                self.guard_resume(host);
            }
            GuardStop { host, .. } => {
                if let Some(g) = self.hosts[host].guard.as_mut() {
                    g.stopped = false;
                }
                self.guard_resume(host);
            }
            AgentRestart { host, .. } | AgentKill { host, .. } => {
                self.hosts[host].agent.up = true;
            }
            AgentPause { host, .. } => {
                self.hosts[host].agent.paused = false;
                self.agent_resume(host);
            }
            AgentPartition { host, .. } => {
                self.hosts[host].agent.partitioned = false;
                let cut = std::mem::take(&mut self.hosts[host].agent.cut);
                for ev in cut {
                    let d = self.rng.range(MS, 200 * MS);
                    self.after(d, ev);
                }
            }
            Election { .. } | QuorumLoss { .. } => {
                if matches!(kind, QuorumLoss { .. }) {
                    self.consul.quorum_lost = false;
                }
                self.server_recovered();
            }
            KvForeignAcquire { .. } => {
                if let Some(s) = self.consul.foreign.take() {
                    if self.server_up()
                        && self.consul.store.release(
                            &leader_key(ACCOUNT),
                            &s,
                            b"another program's lock",
                        )
                    {
                        self.store_changed();
                    }
                    self.consul.store.invalidate(&s, self.t);
                }
            }
            HostSuspend { host, .. } => self.host_resume(host),
            CtlPause { .. } => self.operator_run(Command::Pause(false)),
            NeardFreeze { host, .. } => self.neard_thaw(host),
            WallStep { host, step, .. } => self.hosts[host].kd_wall_offset_ms -= step,
            ConsulRestore { .. } => {
                self.consul_restore(i);
                // The runbook's last step: a restored pause holds, and the operator resumes
                // unless a pause is meant to be in force now.
                let t = self.t / MS;
                let paused =
                    self.sched.faults.iter().any(|f| {
                        matches!(f.kind, CtlPause { .. }) && f.at <= t && t < f.heals_at()
                    });
                if !paused {
                    self.after(S, Ev::OperatorRun(Box::new(Command::Pause(false))));
                }
            }
            PriorityChange { host, .. } if self.hosts[host].kd.is_none() => self.kd_start(host),
            // If kuutamod has not exited yet (it was stopped), systemd's stop goes on; a
            // start that finds it running does nothing.
            Sigterm { host, .. } if self.hosts[host].kd.is_none() => self.kd_start(host),
            _ => {}
        }
    }

    fn signal(&mut self, h: usize, input: Input) {
        if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
            self.send_kd(h, inst, input);
        }
    }

    /// A snapshot taken at fault `i`'s start is restored: the KV entries with their indexes,
    /// the sessions (their timers start again, as after a new Raft leader) and lock-delays as
    /// they were. Blocking queries woken by the restore are answered with what they would have
    /// returned before it (Consul 1.8.7 does so); their next query waits for an index past the
    /// one they saw.
    pub(super) fn consul_restore(&mut self, i: usize) {
        let Some(pos) = self.consul.snapshots.iter().position(|(f, _)| *f == i) else {
            return;
        };
        let (_, snapshot) = self.consul.snapshots.swap_remove(pos);
        if !self.server_up() {
            // A restore needs a leader; the operator does it once there is one.
            self.consul.snapshots.push((i, snapshot));
            self.consul.restore_pending.push(i);
            return;
        }
        self.trace(|| "consul restores a snapshot".to_string());
        self.answer_waiters_unchanged();
        self.consul.store.restore(&snapshot);
        let now = self.t;
        let mut rng = self.rng.fork(now ^ 0x5e55);
        self.consul
            .store
            .reset_timers(now, |ttl| ttl + rng.below(ttl + 1));
        let ids: Vec<String> = self
            .consul
            .store
            .sessions()
            .map(|(i, _)| i.clone())
            .collect();
        for id in ids {
            self.schedule_expiry(&id);
        }
        self.store_changed();
    }

    fn agent_down(&mut self, h: usize) {
        let a = &mut self.hosts[h].agent;
        a.up = false;
        a.epoch += 1;
        a.waiting.clear();
        a.cut.clear();
        // Connections to it reset: every open request fails at once.
        let open: Vec<usize> = (0..self.reqs.len())
            .filter(|i| self.req_host(*i) == Some(h) && !self.reqs[*i].resolved)
            .collect();
        for idx in open {
            self.resolve(idx, Err(Failure::Failed("connection reset".into())));
        }
        let waiters = std::mem::take(&mut self.consul.waiters);
        self.consul.waiters = waiters
            .into_iter()
            .filter(|i| self.req_host(*i) != Some(h))
            .collect();
    }

    fn agent_resume(&mut self, h: usize) {
        if !self.agent_runs(h) {
            return;
        }
        let waiting = std::mem::take(&mut self.hosts[h].agent.waiting);
        for ev in waiting {
            self.after(0, ev);
        }
    }

    /// The host wakes up: timers that expired during the suspend fire first (the guard's), then
    /// neard, the agent and kuutamod run again.
    fn host_resume(&mut self, h: usize) {
        self.hosts[h].suspended = false;
        self.hosts[h].clock.resume(self.t);
        self.guard_resume(h);
        let frozen = std::mem::take(&mut self.hosts[h].frozen);
        for ev in frozen {
            let d = self.rng.range(MS / 10, MS);
            self.after(d, ev);
        }
        if let Some((pid, hups, rejoin)) = self.hosts[h]
            .neard
            .as_mut()
            .filter(|n| n.alive)
            .map(|n| (n.pid, std::mem::take(&mut n.pending_hups), n.rejoin))
        {
            for _ in 0..hups {
                self.neard_sighup(h, pid);
            }
            if rejoin || self.hosts[h].neard.as_ref().is_some_and(|n| n.rpc_up) {
                self.neard_hello(h, pid);
            }
        }
        self.agent_resume(h);
        // kuutamod runs before neard does (its suspend detection kills a validating neard at
        // once): the race in which neard signs first is outside the claim (docs/failover.md,
        // "What this does not cover"), so the model leaves it out (docs/dst.md).
        if self.kd_runnable(h) {
            if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
                self.send_kd(h, inst, Input::Tick);
            }
        }
        self.kd_resume(h, 0);
    }
}

fn kind_name(k: &FaultKind) -> String {
    crate::schedule::Fault {
        at: 0,
        kind: k.clone(),
    }
    .to_string()
    .trim_start_matches("0 ")
    .to_string()
}
