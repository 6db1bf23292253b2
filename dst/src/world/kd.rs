//! kuutamod's process on a host: kuutamod's own supervisor, its
//! [`Conductor`](kuutamod::supervisor::conductor::Conductor) (and the real `Machine` inside it),
//! fed its inputs at the host's clocks, with the world as its [`Host`]: every call it makes is
//! carried out on the simulated Consul, neard, guard and files, and every answer comes back as
//! the input the daemon's tokio host would give it. Nothing here decides what kuutamod does.
//!
//! While the process is stopped (SIGSTOP, a group stop, a suspended host, a write blocked on
//! the guard's pipe), its inputs wait, as they wait in its sockets and pipes, and reach it in
//! order when it runs again.

use kuutamod::backoff::BackoffConfig;
use kuutamod::clock::Instant;
use kuutamod::doppelganger::Production;
use kuutamod::lease::LockMemory;
use kuutamod::lock_store::StoreOp;
use kuutamod::machine::{Config, GuardOrder, State};
use kuutamod::neard::rpc::NeardMetrics;
use kuutamod::neard::Role;
use kuutamod::supervisor::conductor::{
    self, Conductor, Host, Input, Meter, NeardSignal, Now, Report, SpawnError, StatusAnswer,
};

use super::events::Ev;
use super::guard::Order;
use super::neard::is_ours;
use super::{Mutation, World, ACCOUNT, DOPPELGANGER_HEIGHTS, OUR_KEY, SYNCING_GRACE, TYPO_ACCOUNT};
use crate::clock::{MS, S};

/// How long systemd waits before it starts a kuutamod that exited (`RestartSec=1s` in the
/// unit files).
const RESTART_SEC: u64 = S;

/// How long the lock memory's write (a temporary file, fsync, rename) takes.
const FSYNC: (u64, u64) = (MS, 5 * MS);

pub(super) struct Kd {
    pub(super) inst: u64,
    /// kuutamod's supervisor (taken out while it runs, and put back).
    conductor: Option<Box<Conductor>>,
    pub(super) wake_gen: u64,
    /// A write to the guard's full pipe blocks it (only with [`Mutation::BlockingGuardPipe`]).
    pub(super) blocked: bool,
    pub(super) deferred: Vec<Ev>,
    /// The fence's state last traced.
    fence_shown: Option<String>,
    /// The doppelganger alarm last shown in the trace.
    alarm_shown: bool,
}

impl Kd {
    /// kuutamod's supervisor, when it is not running (it is taken out while it runs).
    pub(super) fn conductor(&self) -> Option<&Conductor> {
        self.conductor.as_deref()
    }

    /// Its machine.
    pub(super) fn machine(&self) -> Option<&kuutamod::machine::Machine> {
        self.conductor().map(Conductor::machine)
    }
}

impl World {
    /// kuutamod's clock for deadlines: `CLOCK_BOOTTIME` (or `CLOCK_MONOTONIC` under the
    /// mutation that puts them back there).
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

    /// The time kuutamod reads on host `h` (under the mutation without suspend detection, both
    /// clocks are `CLOCK_MONOTONIC`).
    pub(super) fn kd_now(&self, h: usize) -> Now {
        let c = &self.hosts[h].clock;
        let boot = self.clock_now(h);
        let mono = if self.settings.mutation == Mutation::MonotonicDeadlines {
            boot
        } else {
            c.monotonic(self.t)
        };
        Now {
            boot: Instant::from_nanos(boot),
            mono,
            wall_ms: self.kd_wall_ms(h),
        }
    }

    /// kuutamod's wall clock on host `h`: the host's, plus kuutamod's own offset (a clock
    /// stepped for kuutamod alone).
    pub(super) fn kd_wall_ms(&self, h: usize) -> u64 {
        let host = &self.hosts[h];
        host.clock
            .wall_ms(self.t)
            .saturating_add_signed(host.kd_wall_offset_ms)
    }

    pub(super) fn kd_runnable(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.kd.as_ref().is_some_and(|k| !k.blocked)
            && !host.kd_stopped
            && !host.group_stopped
            && !host.suspended
    }

    /// The account host `h`'s kuutamod is configured with: ours, or under the mutation
    /// `account-typo` a mistyped one on the last host.
    pub(super) fn account(&self, h: usize) -> &'static str {
        let typo = self.settings.mutation == Mutation::AccountTypo && h + 1 == self.hosts.len();
        if typo {
            TYPO_ACCOUNT
        } else {
            ACCOUNT
        }
    }

    pub(super) fn kd_start(&mut self, h: usize) {
        if self.hosts[h].kd.is_some() {
            return;
        }
        self.next_inst += 1;
        let inst = self.next_inst;
        let account = self.account(h);
        let machine = Config {
            node_id: self.node_id(h),
            hostname: format!("h{h}"),
            account: account.to_string(),
            hot_swap: self.sched.scenario.hot_swap,
            timing: self.timing,
            syncing_grace: SYNCING_GRACE,
            backoff: BackoffConfig::DEFAULT,
            priority: self.hosts[h].priority,
            doppelganger_heights: DOPPELGANGER_HEIGHTS,
            // What kuutamod reads from neard's config.json: the chain's own timers.
            block_delays: kuutamod::fence::BlockDelays {
                min: self.timers.min_block_production_delay,
                max: self.timers.max_block_production_delay,
            },
            remembered: self.hosts[h].memory,
            mutations: self.settings.mutation.machine(),
        };
        let settings = conductor::Settings {
            machine,
            validator_key: OUR_KEY.to_string(),
            instance: format!("i{inst}"),
            check_node_id: true,
        };
        let now = self.kd_now(h);
        let c = Conductor::new(settings, now).with_mutations(self.settings.mutation.conductor());
        self.hosts[h].kd = Some(Kd {
            inst,
            conductor: Some(Box::new(c)),
            wake_gen: 0,
            blocked: false,
            deferred: Vec::new(),
            fence_shown: None,
            alarm_shown: false,
        });
        self.trace(|| format!("host {h} kuutamod starts (instance {inst})"));
        self.run_conductor(h, |c, io, now| c.start(now, io));
    }

    /// kuutamod's process dies (SIGKILL, or its exit): its guard dies with it, stopped or not
    /// (`PR_SET_PDEATHSIG`), and neard with the guard.
    pub(super) fn kd_die(&mut self, h: usize) {
        if self.hosts[h].kd.take().is_none() {
            return;
        }
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

    /// An input for kuutamod instance `inst`: fed now if it runs, kept until it runs again
    /// otherwise.
    pub(super) fn send_kd(&mut self, h: usize, inst: u64, input: Input) {
        if self.hosts[h].kd.as_ref().map(|k| k.inst) != Some(inst) {
            return;
        }
        if !self.kd_runnable(h) {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.deferred.push(Ev::ToKd {
                    h,
                    inst,
                    input: Box::new(input),
                });
            }
            return;
        }
        if self.settings.trace {
            let i = format!("{input:?}");
            self.trace(|| format!("host {h} input {i}"));
        }
        self.run_conductor(h, |c, io, now| c.feed(input, now, io));
    }

    /// Runs kuutamod's conductor on this host's clocks with the world as its host; then kuutamod
    /// exits if it is done, or waits for its next deadline.
    fn run_conductor(&mut self, h: usize, f: impl FnOnce(&mut Conductor, &mut Io<'_>, Now)) {
        let Some((inst, mut c)) = self.hosts[h]
            .kd
            .as_mut()
            .and_then(|k| Some((k.inst, k.conductor.take()?)))
        else {
            return;
        };
        let now = self.kd_now(h);
        f(&mut c, &mut Io { w: self, h, inst }, now);
        if self.settings.trace {
            let fence = c.machine().fence_status().map(|f| match f {
                Ok(()) => "open".to_string(),
                Err(closed) => closed.to_string(),
            });
            let alarm = c.machine().doppelganger().map(str::to_string);
            if let Some(k) = self.hosts[h].kd.as_mut() {
                if fence.is_some() && fence != k.fence_shown {
                    k.fence_shown = fence.clone();
                    let f = fence.unwrap_or_default();
                    self.trace(|| format!("host {h} fence: {f}"));
                }
            }
            if let Some(k) = self.hosts[h].kd.as_mut() {
                if alarm.is_some() != k.alarm_shown {
                    k.alarm_shown = alarm.is_some();
                    self.trace(|| format!("host {h} doppelganger alarm: {alarm:?}"));
                }
            }
        }
        let exited = c.exited();
        let refused = c.refused().is_some();
        let deadline = c.next_deadline();
        match self.hosts[h].kd.as_mut().filter(|k| k.inst == inst) {
            Some(k) => k.conductor = Some(c),
            None => return,
        }
        if exited {
            self.trace(|| format!("host {h} kuutamod exits"));
            if refused {
                // systemd starts it again (`Restart=always`).
                self.hosts[h].restart_after_exit = Some(RESTART_SEC / MS);
            }
            self.kd_die(h);
            return;
        }
        if let Some(d) = deadline {
            let t = self.clock_reaches(h, d.as_nanos());
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.wake_gen += 1;
                let gen = k.wake_gen;
                self.at(t, Ev::KdWake { h, gen });
            }
        }
    }

    /// A deadline of kuutamod's conductor is reached.
    pub(super) fn kd_wake(&mut self, h: usize, gen: u64) {
        let Some(k) = self.hosts[h].kd.as_ref().filter(|k| k.wake_gen == gen) else {
            return;
        };
        let inst = k.inst;
        self.send_kd(h, inst, Input::Tick);
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
                input: Box::new(Input::Tick),
            },
        );
    }

    /// What the guard's current neard (if it is `pid`) says on `/status`, or `None` when it
    /// does not answer; and how long the answer (or its failure) takes.
    fn rpc_answer(&mut self, h: usize) -> (bool, u64) {
        match self.neard_answers(h) {
            Some(_) => (true, self.rng.range(MS / 2, 3 * MS)),
            None => {
                let hangs = self.hosts[h]
                    .neard
                    .as_ref()
                    .is_some_and(|n| n.alive && n.rpc_up);
                // A hung neard times out (the client's STATUS_TIMEOUT); a neard that is gone or
                // still booting refuses at once.
                let d = if hangs {
                    kuutamod::timing::STATUS_TIMEOUT.as_nanos() as u64
                } else {
                    MS
                };
                (false, d)
            }
        }
    }

    fn reply(&mut self, h: usize, inst: u64, d: u64, input: Input) {
        self.after(
            d,
            Ev::ToKd {
                h,
                inst,
                input: Box::new(input),
            },
        );
    }

    /// The node id of host `h` (host 0's for the host configured with it by mistake).
    pub(super) fn node_id(&self, h: usize) -> String {
        match self.sched.scenario.same_id {
            Some(s) if s == h => "n0".to_string(),
            _ => format!("n{h}"),
        }
    }
}

/// The world as kuutamod's host.
struct Io<'a> {
    w: &'a mut World,
    h: usize,
    inst: u64,
}

impl Host for Io<'_> {
    fn store(&mut self, id: u64, op: StoreOp, _meter: Meter) {
        if self.w.settings.trace {
            let o = format!("{op:?}");
            let h = self.h;
            self.w.trace(|| format!("host {h} store {id} {o}"));
        }
        self.w.send_req(self.h, self.inst, id, op);
    }

    fn status(&mut self, id: u64) {
        let h = self.h;
        let (answers, d) = self.w.rpc_answer(h);
        let result = if answers {
            let host = &self.w.hosts[h];
            let n = host.neard.as_ref().expect("an answering neard");
            let tip = n.client.tip();
            let old = self.w.sched.scenario.old_neard[h];
            Ok(StatusAnswer {
                syncing: self.w.neard_syncing(h),
                head: tip.map_or(0, |b| b.height),
                block_ms: tip.map(|b| b.time_ms),
                validator_key: n.key.as_ref().map(|k| {
                    if is_ours(k) {
                        OUR_KEY.to_string()
                    } else {
                        k.public_key.clone()
                    }
                }),
                version: Some(if old { "2.2.1" } else { "2.6.0" }.to_string()),
                hot_swap_capable: Some(!old),
            })
        } else {
            Err("neard does not answer".to_string())
        };
        self.w.reply(h, self.inst, d, Input::Status { id, result });
    }

    fn metrics(&mut self, id: u64) {
        let h = self.h;
        let (answers, d) = self.w.rpc_answer(h);
        let result = if answers {
            let n = self.w.hosts[h].neard.as_ref().expect("an answering neard");
            let c = n.client.counters(ACCOUNT);
            Ok(NeardMetrics {
                largest_target: Some(n.client.largest_target_height()),
                config_reloads: Some(n.reloads),
                production: Some(Production {
                    blocks_produced: c.blocks_produced,
                    blocks_expected: c.blocks_expected,
                    chunks_produced: c.chunks_produced,
                    chunks_expected: c.chunks_expected,
                    own_blocks: n.client.blocks_produced(),
                    own_chunks: n.client.chunks_produced(),
                }),
            })
        } else {
            Err("neard does not answer".to_string())
        };
        self.w.reply(h, self.inst, d, Input::Metrics { id, result });
    }

    fn windows(&mut self, id: u64) {
        let h = self.h;
        let result = match self.w.neard_answers(h) {
            Some(n) => {
                let head = n.client.tip().map_or(0, |b| b.height);
                Ok(n.client
                    .epochs()
                    .map(|e| e.maintenance_windows(ACCOUNT, head))
                    .unwrap_or_default())
            }
            None => Err("neard does not answer".to_string()),
        };
        let d = if result.is_ok() {
            2 * MS
        } else {
            kuutamod::timing::STATUS_TIMEOUT.as_nanos() as u64
        };
        self.w.reply(h, self.inst, d, Input::Windows { id, result });
    }

    fn save_memory(&mut self, id: u64, memory: LockMemory) {
        let d = self.w.rng.range(FSYNC.0, FSYNC.1);
        self.w.after(
            d,
            Ev::MemorySaved {
                h: self.h,
                inst: self.inst,
                id,
                memory,
            },
        );
    }

    fn spawn_neard(&mut self, id: u64, role: Role) -> Result<(), SpawnError> {
        // neard's home is prepared first: the key file is there for the validator role only.
        self.w.hosts[self.h].key_file = role == Role::Validator;
        self.w.guard_write(self.h, Order::Spawn(id, role))
    }

    fn signal_neard(&mut self, pid: u32, signal: NeardSignal) -> Result<(), String> {
        let h = self.h;
        if self.w.hosts[h].neard.as_ref().map(|n| n.pid) != Some(pid) {
            return Err("no such process".into());
        }
        let alive = self.w.hosts[h].neard.as_ref().is_some_and(|n| n.alive);
        match signal {
            NeardSignal::Term if alive => self.w.neard_term(h, pid),
            NeardSignal::Hup if alive => self.w.neard_sighup(h, pid),
            NeardSignal::Kill if alive => {
                self.w
                    .trace(|| format!("host {h} kuutamod SIGKILLs neard {pid}"));
                self.w.neard_dies(h);
            }
            _ => {}
        }
        Ok(())
    }

    fn install_key(&mut self) {
        self.w.hosts[self.h].key_file = true;
    }

    fn remove_key(&mut self) {
        self.w.hosts[self.h].key_file = false;
    }

    fn guard_order(&mut self, seq: u64, order: GuardOrder) -> Result<(), String> {
        self.w
            .guard_write(self.h, Order::Machine(seq, order))
            .map_err(|e| match e {
                SpawnError::Guard(e) | SpawnError::Prepare(e) => e,
                SpawnError::NoGuard => "no guard".into(),
            })
    }

    fn adopt_neard(&mut self, pid: u32) -> Result<(), String> {
        let host = &self.w.hosts[self.h];
        let guard = host.guard.as_ref().is_some_and(|g| g.alive());
        let known = host.neard.as_ref().is_some_and(|n| n.pid == pid);
        if guard && known {
            Ok(())
        } else {
            Err("the guard exited before neard could be watched".into())
        }
    }

    fn reap_neard(&mut self, _pid: u32) -> Result<(), String> {
        // Pids are never reused here: the reap order is not modelled (docs/dst.md).
        Ok(())
    }

    fn drop_guard(&mut self, neard: Option<u32>) {
        self.w.guard_drop(self.h, neard);
    }

    fn spawn_guard(&mut self, generation: u64) -> Result<(), String> {
        self.w.guard_spawn(self.h, generation);
        Ok(())
    }

    fn hook(&mut self, old: State, new: State) {
        let h = self.h;
        self.w
            .trace(|| format!("host {h} state {} -> {}", old.name(), new.name()));
    }

    fn report(&mut self, report: Report) {
        self.w.kd_report(self.h, report);
    }
}

impl World {
    /// The lock memory is on disk (if kuutamod instance `inst` still runs: a process killed
    /// before its rename leaves the old file).
    pub(super) fn memory_saved(&mut self, h: usize, inst: u64, id: u64, memory: LockMemory) {
        if self.hosts[h].kd.as_ref().map(|k| k.inst) != Some(inst) {
            return;
        }
        self.hosts[h].memory = Some(memory);
        self.send_kd(h, inst, Input::Saved { id, result: Ok(()) });
    }

    /// SIGTERM to neard: it exits a while later (longer during a slow-stop fault).
    pub(super) fn neard_term(&mut self, h: usize, pid: u32) {
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

    fn kd_report(&mut self, h: usize, report: Report) {
        match report {
            Report::SteppedDown(_) => self.out.step_downs += 1,
            Report::Activated { .. } => {
                self.out.activations += 1;
                if self.t >= self.healed && self.out.recovery_ms.is_none() {
                    self.out.recovery_ms = Some((self.t - self.healed) / MS);
                }
            }
            Report::NodeIdConflict { .. } => self.id_conflict_seen(h),
            Report::HotSwapFallback(reason) => self.fallback_seen(h, reason),
            _ => {}
        }
    }
}
