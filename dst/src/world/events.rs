//! The events of the world's queue (ordered by true time, then by insertion), their codes in
//! the trace hash, and where each is dispatched.

use kuutamod::machine::{Event, Poll};
use kuutamod::neard::Role;
use neard_sim::wire::{ToChain, ToNode};

use super::delivery::Res;
use super::neard::our_key;
use super::World;

#[derive(Debug)]
pub(super) enum Ev {
    KdStart(usize),
    KdWake {
        h: usize,
        gen: u64,
    },
    /// Something for kuutamod's process (instance `inst`).
    ToKd {
        h: usize,
        inst: u64,
        inc: Inc,
    },
    PollTick {
        h: usize,
        inst: u64,
        gen: u64,
    },
    NeardStep {
        h: usize,
        pid: u32,
    },
    NeardRpcUp {
        h: usize,
        pid: u32,
    },
    NeardReloadRead {
        h: usize,
        pid: u32,
    },
    NeardReloadApply {
        h: usize,
        pid: u32,
        gen: u64,
        key: bool,
    },
    NeardExit {
        h: usize,
        pid: u32,
    },
    ChainTick,
    ToNode {
        h: usize,
        pid: u32,
        msg: ToNode,
    },
    ToChain {
        h: usize,
        pid: u32,
        msg: ToChain,
    },
    GuardRun {
        h: usize,
        gen: u64,
    },
    GuardTimer {
        h: usize,
        gen: u64,
        tgen: u64,
    },
    /// The guard is SIGKILLed (during a group stop: [`crate::schedule::FaultKind::GroupStopGuardKill`]).
    GuardKill {
        h: usize,
    },
    ReqAtServer(usize),
    RespAtAgent(usize),
    ReqTimeout(usize),
    SessionExpire {
        id: String,
        generation: u64,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Liveness,
}

impl Ev {
    pub(super) fn code(&self) -> u64 {
        match self {
            Ev::KdStart(h) => 1 + 32 * *h as u64,
            Ev::KdWake { h, .. } => 2 + 32 * *h as u64,
            Ev::ToKd { h, .. } => 3 + 32 * *h as u64,
            Ev::PollTick { h, .. } => 4 + 32 * *h as u64,
            Ev::NeardStep { h, .. } => 5 + 32 * *h as u64,
            Ev::NeardRpcUp { h, .. } => 6 + 32 * *h as u64,
            Ev::NeardReloadRead { h, .. } => 7 + 32 * *h as u64,
            Ev::NeardReloadApply { h, .. } => 8 + 32 * *h as u64,
            Ev::NeardExit { h, .. } => 9 + 32 * *h as u64,
            Ev::ChainTick => 10,
            Ev::ToNode { h, .. } => 11 + 32 * *h as u64,
            Ev::ToChain { h, .. } => 12 + 32 * *h as u64,
            Ev::GuardRun { h, .. } => 13 + 32 * *h as u64,
            Ev::GuardTimer { h, .. } => 14 + 32 * *h as u64,
            Ev::ReqAtServer(_) => 15,
            Ev::RespAtAgent(_) => 16,
            Ev::ReqTimeout(_) => 17,
            Ev::SessionExpire { .. } => 18,
            Ev::FaultStart(i) => 19 + 32 * *i as u64,
            Ev::FaultEnd(i) => 20 + 32 * *i as u64,
            Ev::Liveness => 21,
            Ev::GuardKill { h } => 22 + 32 * *h as u64,
        }
    }
}

/// What kuutamod's process receives.
#[derive(Debug)]
pub(super) enum Inc {
    Wake,
    Signal(Event),
    /// A line from the guard of generation `gen`, or its pipe closing.
    Guard {
        gen: u64,
        note: GuardNote,
    },
    PollDone {
        pid: u32,
        gen: u64,
        poll: Option<(Poll, String)>,
    },
    Consul(usize),
    WatchRetry(u64),
    ClusterRetry(u64),
    Windows(Result<Vec<(u64, u64)>, String>),
}

/// What the guard says (`src/guard.rs`, "Protocol").
#[derive(Debug)]
pub(super) enum GuardNote {
    /// `ack <seq>`.
    Ack(u64),
    /// `nack <seq> ...`.
    Nack(u64),
    /// `spawned <id> <pid>` (for the spawn of that role).
    Spawned(u32, Role),
    /// `spawn-failed <id> ...`.
    SpawnFailed,
    /// `exited <pid> ...`.
    Exited(u32),
    /// The pipe closed: the guard is gone.
    Lost,
}

pub(super) struct Item {
    pub(super) t: u64,
    pub(super) seq: u64,
    pub(super) ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

impl World {
    pub(super) fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::KdStart(h) => self.kd_start(h),
            Ev::KdWake { h, gen } => {
                if self.hosts[h].kd.as_ref().is_some_and(|k| k.wake_gen == gen) {
                    let inst = self.hosts[h].kd.as_ref().map_or(0, |k| k.inst);
                    self.send_kd(h, inst, Inc::Wake);
                }
            }
            Ev::ToKd { h, inst, inc } => self.send_kd(h, inst, inc),
            Ev::PollTick { h, inst, gen } => self.poll_tick(h, inst, gen),
            Ev::NeardStep { h, pid } => self.neard_step(h, pid),
            Ev::NeardRpcUp { h, pid } => {
                if let Some(n) = self.neard_mut(h, pid) {
                    n.rpc_up = true;
                    n.rejoin = true;
                    self.neard_hello(h, pid);
                }
            }
            Ev::NeardReloadRead { h, pid } => self.neard_reload_read(h, pid),
            Ev::NeardReloadApply { h, pid, gen, key } => {
                if self.hosts[h].suspended {
                    self.hosts[h]
                        .frozen
                        .push(Ev::NeardReloadApply { h, pid, gen, key });
                    return;
                }
                if let Some(n) = self.neard_mut(h, pid) {
                    if n.key_gen == gen {
                        n.key = key.then(our_key);
                    }
                }
                let shown = key;
                self.trace(|| format!("host {h} neard {pid} reload applied: key {shown}"));
            }
            Ev::NeardExit { h, pid } => {
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    self.trace(|| format!("host {h} neard {pid} exited"));
                    self.neard_dies(h);
                }
            }
            Ev::ChainTick => self.chain_tick(),
            Ev::ToNode { h, pid, msg } => self.send_node(h, pid, msg),
            Ev::ToChain { h, pid, msg } => self.send_chain(h, pid, msg),
            Ev::GuardRun { h, gen } => self.guard_run(h, gen),
            Ev::GuardTimer { h, gen, tgen } => self.guard_timer(h, gen, tgen),
            Ev::GuardKill { h } => {
                self.trace(|| format!("host {h} guard SIGKILLed during the freeze"));
                self.guard_kill(h);
            }
            Ev::ReqAtServer(id) => self.req_at_server(id),
            Ev::RespAtAgent(id) => self.resp_at_agent(id),
            Ev::ReqTimeout(id) => {
                if !self.reqs[id].resolved {
                    self.resolve(id, Res::Err);
                }
            }
            Ev::SessionExpire { id, generation } => {
                let due = self
                    .consul
                    .store
                    .session(&id)
                    .is_some_and(|s| s.generation == generation && s.expires <= self.t);
                if due && self.server_up() {
                    self.trace(|| format!("consul ends session {id} (TTL)"));
                    self.consul.store.invalidate(&id, self.t);
                    self.store_changed();
                }
            }
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::Liveness => self.check_liveness(),
        }
    }
}
