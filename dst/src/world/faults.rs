//! The schedule's faults: what each does when it starts and when it heals, and the host-level
//! moves they share (a signal to kuutamod, the operator's control record, an agent going down
//! or running again, a host resuming from suspend).

use kuutamod::lock_store::{Failure, StoreOp, StoreReply};
use kuutamod::settings::leader_key;
use kuutamod::supervisor::conductor::Input;

use super::backend::Model;
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
                // etcd's leases belong to the cluster, not to a member: a member's restart
                // ends none.
                if self.agent_runs(host) && !self.hosts[host].agent.partitioned && self.server_up()
                {
                    if let Model::Consul(store) = &mut self.servers.store {
                        store.invalidate_owner(Owner::Host(host), self.t);
                        self.store_changed();
                    }
                }
                self.agent_down(host);
            }
            AgentKill { host, .. } => self.agent_down(host),
            AgentPause { host, .. } => self.hosts[host].agent.paused = true,
            AgentPartition { host, .. } => self.hosts[host].agent.partitioned = true,
            Election { .. } => self.servers.election_until = dur_end,
            QuorumLoss { .. } => self.servers.quorum_lost = true,
            ConsulSlow { max, .. } => self.servers.slow = (max, dur_end),
            ConsulLossy { permille, .. } => self.servers.lossy = (permille, dur_end),
            KvDelete => {
                if self.server_up() && self.delete_lock_key(i) {
                    self.store_changed();
                }
            }
            KvOverwrite => {
                if self.server_up() {
                    let junk = br#"{"written":"by hand"}"#;
                    match &mut self.servers.store {
                        Model::Consul(store) => {
                            store.put(&leader_key(ACCOUNT), junk);
                        }
                        Model::Etcd(store) => {
                            store.put(&kuutamod::etcd::calls::put_plain(
                                &leader_key(ACCOUNT),
                                junk,
                            ));
                        }
                    }
                    self.store_changed();
                }
            }
            KvForeignAcquire { .. } => {
                if self.server_up() {
                    self.foreign_acquire();
                }
            }
            TombstoneReap => match &mut self.servers.store {
                Model::Consul(store) => store.reap_tombstones(),
                Model::Etcd(store) => store.compact(),
            },
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
                let snapshot = self.servers.store.clone();
                self.servers.snapshots.push((i, snapshot));
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
                    self.servers.quorum_lost = false;
                }
                self.server_recovered();
            }
            KvForeignAcquire { .. } => self.foreign_release(),
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

    /// An outsider deletes the lock key: Consul's key; on etcd the record, the holder, or both
    /// at once (`etcdctl del --prefix`), by fault `i`'s own draw. Returns whether anything
    /// was deleted.
    fn delete_lock_key(&mut self, i: usize) -> bool {
        let key = leader_key(ACCOUNT);
        let which = self.rng.fork(0xde1e_7e00 + i as u64).below(3);
        match &mut self.servers.store {
            Model::Consul(store) => store.delete(&key),
            Model::Etcd(store) => {
                let holder = kuutamod::etcd::holder_key(&key);
                match which {
                    0 => store.delete(&key),
                    1 => store.delete(&holder),
                    _ => store.delete_keys(&[&key, &holder]),
                }
            }
        }
    }

    /// Another program takes the lock with a session of its own (Consul: `?acquire=` with a
    /// lock-delay of 15 s; etcd: a lease of its own and kuutamod's own lock transaction at the
    /// record's current revision, so that it gets the lock only when no lease holds it).
    fn foreign_acquire(&mut self) {
        let key = leader_key(ACCOUNT);
        let value = b"another program's lock";
        let now = self.t;
        if self.servers.store.is_etcd() {
            let drawn = self.expiry(OUTSIDER_TTL);
            let create = StoreOp::CreateSession {
                name: "outsider".into(),
                ttl: std::time::Duration::from_nanos(OUTSIDER_TTL),
            };
            let Ok(StoreReply::Session(s)) =
                self.servers
                    .store
                    .apply(&create, Owner::Outsider, now, drawn)
            else {
                return;
            };
            self.schedule_expiry(&s);
            let expected = self.servers.store.value(&key).map(|(_, i)| i);
            let lock = StoreOp::CheckAndLock {
                key,
                expected,
                session: s.clone(),
                value: value.to_vec(),
            };
            let index = match self.servers.store.apply(&lock, Owner::Outsider, now, 0) {
                Ok(StoreReply::Index(i)) => {
                    self.store_changed();
                    i
                }
                _ => 0,
            };
            self.servers.foreign = Some((s, index));
            return;
        }
        let expire_after = OUTSIDER_TTL + self.rng.below(OUTSIDER_TTL);
        let Model::Consul(store) = &mut self.servers.store else {
            return;
        };
        let s = store.create_session(
            Owner::Outsider,
            "outsider",
            OUTSIDER_TTL,
            OUTSIDER_LOCK_DELAY,
            now,
            expire_after,
        );
        let got = store.acquire(&key, &s, value, now);
        self.schedule_expiry(&s);
        if got == Ok(true) {
            self.store_changed();
        }
        self.servers.foreign = Some((s, 0));
    }

    /// The other program lets go: releases the lock if it still holds it, and ends its
    /// session (lease).
    fn foreign_release(&mut self) {
        let Some((s, index)) = self.servers.foreign.take() else {
            return;
        };
        let key = leader_key(ACCOUNT);
        let value = b"another program's lock";
        let now = self.t;
        let up = self.server_up();
        if let Model::Consul(store) = &mut self.servers.store {
            if up && store.release(&key, &s, value) {
                self.store_changed();
            }
            if let Model::Consul(store) = &mut self.servers.store {
                store.invalidate(&s, now);
            }
            return;
        }
        if !up {
            return;
        }
        let before = self.servers.store.version();
        let release = StoreOp::Release {
            key,
            expected: index,
            session: s.clone(),
            value: value.to_vec(),
        };
        let _ = self.servers.store.apply(&release, Owner::Outsider, now, 0);
        let destroy = StoreOp::DestroySession { session: s };
        let _ = self.servers.store.apply(&destroy, Owner::Outsider, now, 0);
        if self.servers.store.version() != before {
            self.store_changed();
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
        let Some(pos) = self.servers.snapshots.iter().position(|(f, _)| *f == i) else {
            return;
        };
        let (_, snapshot) = self.servers.snapshots.swap_remove(pos);
        if !self.server_up() {
            // A restore needs a leader; the operator does it once there is one.
            self.servers.snapshots.push((i, snapshot));
            self.servers.restore_pending.push(i);
            return;
        }
        self.trace(|| "the store restores a snapshot".to_string());
        if self.servers.store.is_etcd() {
            // Restored members are new processes: every watch's stream ends, and each client
            // reads afresh from the restored store.
            self.servers.store.restore(&snapshot);
            self.wake_waiters();
        } else {
            self.answer_waiters_unchanged();
            self.servers.store.restore(&snapshot);
        }
        let rng = self.rng.fork(self.t ^ 0x5e55);
        self.restart_timers(rng);
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
        let waiters = std::mem::take(&mut self.servers.waiters);
        self.servers.waiters = waiters
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
