//! kuutamod's process on a host: the real `Machine`, fed the events the supervisor would feed
//! it at the host's clock (signals, neard's exit, the guard's notes, Consul's answers, the
//! suspend detector), and its commands carried out as the supervisor carries them out.

use std::collections::VecDeque;
use std::time::Duration;

use kuutamod::backoff::BackoffConfig;
use kuutamod::clock::Instant;
use kuutamod::machine::{Command, Config, Event, Machine, NodeFacts};
use kuutamod::records::{node_key, NodeRecord};
use kuutamod::settings::leader_key;

use super::delivery::{Op, Purpose};
use super::events::{Ev, GuardNote, Inc};
use super::guard::Order;
use super::poller::Poller;
use super::{
    Mutation, World, ACCOUNT, DOPPELGANGER_HEIGHTS, JUMP_SLACK, STATUS_TIMEOUT, SYNCING_GRACE,
    TYPO_ACCOUNT,
};
use crate::clock::{MS, S};
use crate::consul::Rec;

pub(super) struct Kd {
    pub(super) inst: u64,
    m: Machine,
    pub(super) wake_gen: u64,
    pub(super) neard: Option<u32>,
    pub(super) poll: Poller,
    pub(super) watch_index: u64,
    pub(super) watch_gen: u64,
    pub(super) cluster_index: u64,
    pub(super) cluster_gen: u64,
    pub(super) guard_gen: u64,
    jump: (u64, u64),
    pub(super) blocked: bool,
    pub(super) lock_key: String,
    pub(super) deferred: Vec<Ev>,
}

impl World {
    pub(super) fn clock_now(&self, h: usize) -> u64 {
        let c = &self.hosts[h].clock;
        if self.settings.mutation == Mutation::MonotonicDeadlines {
            c.monotonic(self.t)
        } else {
            c.boottime(self.t)
        }
    }

    pub(super) fn clock_reaches(&self, h: usize, deadline: u64) -> u64 {
        let c = &self.hosts[h].clock;
        if self.settings.mutation == Mutation::MonotonicDeadlines {
            c.monotonic_reaches(deadline, self.t)
        } else {
            c.boottime_reaches(deadline, self.t)
        }
    }

    pub(super) fn kd_runnable(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.kd.as_ref().is_some_and(|k| !k.blocked)
            && !host.kd_stopped
            && !host.group_stopped
            && !host.suspended
    }

    pub(super) fn kd_start(&mut self, h: usize) {
        if self.hosts[h].kd.is_some() {
            return;
        }
        self.next_inst += 1;
        let inst = self.next_inst;
        let typo = self.settings.mutation == Mutation::AccountTypo && h + 1 == self.hosts.len();
        let account = if typo { TYPO_ACCOUNT } else { ACCOUNT };
        let cfg = Config {
            node_id: format!("n{h}"),
            hostname: format!("h{h}"),
            account: account.to_string(),
            hot_swap: self.sched.scenario.hot_swap,
            timing: self.timing,
            syncing_grace: SYNCING_GRACE,
            backoff: BackoffConfig::DEFAULT,
            priority: self.sched.scenario.priority[h],
            doppelganger_heights: DOPPELGANGER_HEIGHTS,
            // What kuutamod reads from neard's config.json: the chain's own timers.
            block_delays: kuutamod::fence::BlockDelays {
                min: self.timers.min_block_production_delay,
                max: self.timers.max_block_production_delay,
            },
            remembered: self.hosts[h].memory,
            mutations: self.settings.mutation.machine(),
        };
        let now = self.clock_now(h);
        let c = &self.hosts[h].clock;
        let jump = (c.boottime(self.t), c.monotonic(self.t));
        self.hosts[h].kd = Some(Kd {
            inst,
            m: Machine::new(cfg, Instant::from_nanos(now)),
            wake_gen: 0,
            neard: None,
            poll: Poller::new(S),
            watch_index: 0,
            watch_gen: 0,
            cluster_index: 0,
            cluster_gen: 0,
            guard_gen: 0,
            jump,
            blocked: false,
            lock_key: leader_key(account),
            deferred: Vec::new(),
        });
        self.trace(|| format!("host {h} kuutamod starts (instance {inst})"));
        self.watch_query(h);
        self.cluster_query(h);
        self.kd_feed(h, Event::Tick);
    }

    /// kuutamod's process dies (SIGKILL, or its exit): its guard dies with it, stopped or not
    /// (`PR_SET_PDEATHSIG`), and neard with the guard.
    pub(super) fn kd_die(&mut self, h: usize) {
        let Some(kd) = self.hosts[h].kd.take() else {
            return;
        };
        let _ = kd;
        if self.hosts[h].guard.is_some() {
            self.trace(|| format!("host {h} guard dies with kuutamod"));
            self.guard_kill(h);
        }
        if self.hosts[h].neard.as_ref().is_some_and(|n| n.alive) {
            // Only with the mutation that cuts the guard -> neard link: the model keeps one
            // neard per host, so this one is taken down here rather than left an orphan.
            self.neard_dies(h);
        }
        self.hosts[h].neard = None;
        if let Some(down) = self.hosts[h].restart_after_exit.take() {
            self.after(down * MS, Ev::KdStart(h));
        }
    }

    pub(super) fn send_kd(&mut self, h: usize, inst: u64, inc: Inc) {
        if self.hosts[h].kd.as_ref().map(|k| k.inst) != Some(inst) {
            return;
        }
        if !self.kd_runnable(h) {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.deferred.push(Ev::ToKd { h, inst, inc });
            }
            return;
        }
        self.check_jump(h);
        match inc {
            Inc::Wake => self.kd_feed(h, Event::Tick),
            Inc::Signal(e) => self.kd_feed(h, e),
            Inc::Guard { gen, note } => {
                if self.hosts[h]
                    .kd
                    .as_ref()
                    .is_some_and(|k| k.guard_gen == gen)
                {
                    self.guard_note_in(h, note);
                }
            }
            Inc::PollDone { pid, gen, poll } => self.poll_done(h, pid, gen, poll),
            Inc::Consul(id) => self.consul_done(h, id),
            Inc::WatchRetry(gen) => {
                if self.hosts[h]
                    .kd
                    .as_ref()
                    .is_some_and(|k| k.watch_gen == gen)
                {
                    self.watch_query(h);
                }
            }
            Inc::ClusterRetry(gen) => {
                if self.hosts[h]
                    .kd
                    .as_ref()
                    .is_some_and(|k| k.cluster_gen == gen)
                {
                    self.cluster_query(h);
                }
            }
            Inc::Windows(w) => self.kd_feed(h, Event::Windows(w)),
        }
    }

    /// A note of the current guard, as the supervisor's `on_note` takes it.
    fn guard_note_in(&mut self, h: usize, note: GuardNote) {
        let set_neard = |w: &mut World, pid: Option<u32>| {
            if let Some(k) = w.hosts[h].kd.as_mut() {
                k.neard = pid;
            }
            w.poll_target_changed(h);
        };
        match note {
            GuardNote::Ack(seq) => self.kd_feed(h, Event::GuardAck(seq)),
            GuardNote::Nack(seq) => self.kd_feed(h, Event::GuardNack(seq)),
            GuardNote::Lost => {
                // Kill neard (through its pidfd) and the guard first; then the machine hears.
                self.guard_drop(h);
                self.kd_feed(h, Event::GuardLost);
            }
            GuardNote::Spawned(pid, role) => {
                set_neard(self, Some(pid));
                self.kd_feed(h, Event::NeardSpawned { pid, role });
            }
            GuardNote::SpawnFailed => self.kd_feed(h, Event::NeardSpawnFailed),
            GuardNote::Exited(pid) => {
                if self.hosts[h].kd.as_ref().and_then(|k| k.neard) == Some(pid) {
                    set_neard(self, None);
                    self.kd_feed(h, Event::NeardExited { pid });
                }
            }
        }
    }

    /// The supervisor's suspend detector: BOOTTIME moved further than MONOTONIC.
    fn check_jump(&mut self, h: usize) {
        if self.settings.mutation == Mutation::MonotonicDeadlines {
            return;
        }
        let c = &self.hosts[h].clock;
        let (boot, mono) = (c.boottime(self.t), c.monotonic(self.t));
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        let lost = (boot - k.jump.0).saturating_sub(mono - k.jump.1);
        k.jump = (boot, mono);
        if lost > JUMP_SLACK {
            self.kd_feed(h, Event::ClockJump(Duration::from_nanos(lost)));
        }
    }

    /// Feeds an event and the follow-ups of its commands, as the supervisor's `handle` does.
    pub(super) fn kd_feed(&mut self, h: usize, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            let now = Instant::from_nanos(self.clock_now(h));
            if self.settings.trace {
                let e = format!("{e:?}");
                self.trace(|| format!("host {h} event {e}"));
            }
            let Some(k) = self.hosts[h].kd.as_mut() else {
                return;
            };
            let cmds = k.m.handle(e, now);
            for c in cmds {
                if self.settings.trace {
                    let c = format!("{c:?}");
                    self.trace(|| format!("host {h} command {c}"));
                }
                if let Some(f) = self.exec(h, c) {
                    queue.push_back(f);
                }
                if self.hosts[h].kd.is_none() {
                    return;
                }
            }
        }
        if self.hosts[h].kd.as_ref().is_some_and(|k| k.m.exited()) {
            self.trace(|| format!("host {h} kuutamod exits"));
            self.kd_die(h);
            return;
        }
        self.arm_wake(h);
    }

    fn arm_wake(&mut self, h: usize) {
        let Some(d) = self.hosts[h].kd.as_ref().and_then(|k| k.m.next_deadline()) else {
            return;
        };
        let t = self.clock_reaches(h, d.as_nanos());
        if let Some(k) = self.hosts[h].kd.as_mut() {
            k.wake_gen += 1;
            let gen = k.wake_gen;
            self.at(t, Ev::KdWake { h, gen });
        }
    }

    /// SIGCONT (or a resume): everything that waited runs now.
    pub(super) fn kd_resume(&mut self, h: usize, delay: u64) {
        if !self.kd_runnable(h) {
            return;
        }
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        let deferred = std::mem::take(&mut k.deferred);
        let inst = k.inst;
        for ev in deferred {
            self.after(delay, ev);
        }
        self.after(
            delay,
            Ev::ToKd {
                h,
                inst,
                inc: Inc::Wake,
            },
        );
    }

    fn exec(&mut self, h: usize, c: Command) -> Option<Event> {
        match c {
            Command::StartNeard(role) => self.guard_write(h, Order::Spawn(role)),
            Command::TermNeard => {
                let pid = self.hosts[h].kd.as_ref()?.neard?;
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    let slow = self.hosts[h].slow_stop_until > self.t;
                    let d = if slow {
                        self.rng.range(S, 10 * S)
                    } else {
                        self.rng.range(20 * MS, 300 * MS)
                    };
                    if let Some(n) = self.neard_mut(h, pid) {
                        n.stopping = true;
                    }
                    self.after(d, Ev::NeardExit { h, pid });
                }
                None
            }
            Command::KillNeard => {
                let pid = self.hosts[h].kd.as_ref()?.neard?;
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    self.trace(|| format!("host {h} kuutamod SIGKILLs neard {pid}"));
                    self.neard_dies(h);
                }
                Some(Event::NeardKilled { pid })
            }
            Command::InstallKey => {
                self.hosts[h].key_file = true;
                None
            }
            Command::RemoveKey => {
                self.hosts[h].key_file = false;
                None
            }
            Command::Sighup => {
                let pid = self.hosts[h].kd.as_ref()?.neard?;
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    self.neard_sighup(h, pid);
                }
                None
            }
            Command::SetPolling(p) => {
                if let Some(k) = self.hosts[h].kd.as_mut() {
                    k.poll.interval = p.interval.as_nanos() as u64;
                    k.poll.metrics = p.metrics;
                }
                self.poll_target_changed(h);
                None
            }
            Command::Guard { seq, order } => self.guard_write(h, Order::Machine(seq, order)),
            Command::RespawnGuard => Some(self.guard_respawn(h)),
            Command::Publish(facts) => {
                let rec = self.node_record(h, facts);
                let key = node_key(ACCOUNT, &format!("n{h}"));
                self.send_req(
                    h,
                    Op::Put {
                        key,
                        rec: Box::new(Rec::Node(Box::new(rec))),
                    },
                    Purpose::Publish,
                );
                None
            }
            Command::Remember(m) => {
                self.hosts[h].memory = Some(m);
                None
            }
            Command::ConsulRewound { .. } => None,
            Command::FinishSwitchover(done) => {
                // The node's check-and-set of the control record (applied at once here; the
                // simulation's Consul model keeps the control record out of band).
                let c = &mut self.consul.control;
                if c.switchover.as_ref().is_some_and(|s| s.id == done.id) {
                    c.switchover = None;
                    c.done = Some(done);
                    self.write_control();
                }
                None
            }
            Command::QueryWindows => {
                let inst = self.hosts[h].kd.as_ref()?.inst;
                let answer = match self.neard_answers(h) {
                    Some(n) => {
                        let head = n.client.tip().map_or(0, |b| b.height);
                        Ok(n.client
                            .epochs()
                            .map(|e| e.maintenance_windows(ACCOUNT, head))
                            .unwrap_or_default())
                    }
                    None => Err("neard does not answer".to_string()),
                };
                let d = if answer.is_ok() {
                    2 * MS
                } else {
                    STATUS_TIMEOUT
                };
                self.after(
                    d,
                    Ev::ToKd {
                        h,
                        inst,
                        inc: Inc::Windows(answer),
                    },
                );
                None
            }
            Command::SteppedDown(_) => {
                self.out.step_downs += 1;
                None
            }
            Command::Activated { .. } => {
                self.out.activations += 1;
                if self.t >= self.healed && self.out.recovery_ms.is_none() {
                    self.out.recovery_ms = Some((self.t - self.healed) / MS);
                }
                None
            }
            Command::HotSwapFallback(_) | Command::Doppelganger(_) | Command::Exit => None,
            Command::CreateSession => self.machine_req(h, Op::Create, Purpose::Create),
            Command::Renew(s) => self.machine_req(h, Op::Renew(s), Purpose::Renew),
            Command::Heartbeat {
                session,
                expected_index,
                value,
                seq,
            } => self.machine_req(
                h,
                Op::Lock {
                    expected: Some(expected_index),
                    session,
                    value,
                },
                Purpose::Heartbeat { seq },
            ),
            Command::Acquire {
                session,
                expected_index,
                value,
            } => self.machine_req(
                h,
                Op::Lock {
                    expected: expected_index,
                    session,
                    value,
                },
                Purpose::Acquire,
            ),
            Command::Release {
                session,
                expected_index,
                value,
            } => self.machine_req(
                h,
                Op::Release {
                    session,
                    expected: expected_index,
                    value,
                },
                Purpose::Release,
            ),
            Command::DestroySession(s) => self.machine_req(h, Op::Destroy(s), Purpose::Destroy),
            Command::ReadKey => self.machine_req(h, Op::Get { min_index: None }, Purpose::Read),
        }
    }

    fn machine_req(&mut self, h: usize, op: Op, purpose: Purpose) -> Option<Event> {
        self.send_req(h, op, purpose);
        None
    }

    fn node_record(&self, h: usize, facts: NodeFacts) -> NodeRecord {
        let now = self.hosts[h].clock.wall_ms(self.t);
        let ago = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        NodeRecord {
            node_id: format!("n{h}"),
            hostname: format!("h{h}"),
            instance: self.hosts[h].kd.as_ref().map(|k| format!("i{}", k.inst)),
            state: facts.state.name().to_string(),
            synced: facts.synced,
            head: facts.head,
            neard_version: facts.neard_version,
            failover_mode: if self.sched.scenario.hot_swap {
                "hot-swap".into()
            } else {
                "restart".into()
            },
            priority: facts.priority,
            paused: facts.paused,
            may_take_over: facts.may_take_over,
            session: facts.session,
            validating_since_ms: facts.validating_for.map(ago),
            switchover: facts.switchover,
            stepped_down_ms: facts.fenced_for.map(ago),
            updated_ms: now,
        }
    }
}
