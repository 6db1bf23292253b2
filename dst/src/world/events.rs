//! The events of the world's queue (ordered by true time, then by insertion), their codes in
//! the trace hash, and where each is dispatched.

use kuutamod::lease::LockMemory;
use kuutamod::supervisor::conductor::Input;
use neard_sim::wire::{ToChain, ToNode};

use super::neard::our_key;
use super::World;

#[derive(Debug)]
pub(super) enum Ev {
    KdStart(usize),
    KdWake {
        h: usize,
        gen: u64,
    },
    /// An input for kuutamod's process (instance `inst`).
    ToKd {
        h: usize,
        inst: u64,
        input: Box<Input>,
    },
    /// The answer to kuutamoctl process `n`'s call.
    ToOperator {
        n: usize,
        answer: Box<Result<kuutamod::lock_store::StoreReply, kuutamod::lock_store::Failure>>,
    },
    /// The operator runs kuutamoctl process `n`'s command again (it could not ask Consul).
    OperatorRetry(usize),
    /// The operator runs a command (the restore runbook's `resume`).
    OperatorRun(Box<super::operator::Command>),
    /// kuutamod's lock memory is written.
    MemorySaved {
        h: usize,
        inst: u64,
        id: u64,
        memory: LockMemory,
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
        msg: Box<ToNode>,
    },
    ToChain {
        h: usize,
        pid: u32,
        msg: Box<ToChain>,
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
    /// A blocking query's wait is over.
    WaitOver(usize),
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
            Ev::MemorySaved { h, .. } => 4 + 32 * *h as u64,
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
            Ev::WaitOver(_) => 23,
            Ev::ToOperator { .. } => 24,
            Ev::OperatorRetry(_) => 25,
            Ev::OperatorRun(_) => 26,
        }
    }
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
            Ev::KdWake { h, gen } => self.kd_wake(h, gen),
            Ev::ToKd { h, inst, input } => self.send_kd(h, inst, *input),
            Ev::MemorySaved {
                h,
                inst,
                id,
                memory,
            } => self.memory_saved(h, inst, id, memory),
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
            Ev::ToNode { h, pid, msg } => self.send_node(h, pid, *msg),
            Ev::ToChain { h, pid, msg } => self.send_chain(h, pid, *msg),
            Ev::GuardRun { h, gen } => self.guard_run(h, gen),
            Ev::GuardTimer { h, gen, tgen } => self.guard_timer(h, gen, tgen),
            Ev::GuardKill { h } => {
                self.trace(|| format!("host {h} guard SIGKILLed during the freeze"));
                self.guard_kill(h);
            }
            Ev::ReqAtServer(id) => self.req_at_server(id),
            Ev::RespAtAgent(id) => self.resp_at_agent(id),
            Ev::ReqTimeout(id) => self.req_timeout(id),
            Ev::WaitOver(id) => self.wait_over(id),
            Ev::ToOperator { n, answer } => self.operator_answer(n, *answer),
            Ev::OperatorRetry(n) => self.operator_retry(n),
            Ev::OperatorRun(command) => self.operator_run(*command),
            Ev::SessionExpire { id, generation } => {
                if self.server_up() && self.servers.store.expire(&id, generation, self.t) {
                    self.trace(|| format!("the store ends session {id} (TTL)"));
                    self.store_changed();
                }
            }
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::Liveness => self.check_liveness(),
        }
    }
}
