//! Consul's delivery: a request's way from kuutamod through its host's agent to the servers
//! and back (latency, loss, a paused or partitioned agent, a restarted agent's lost
//! connections), and the servers' side around [`crate::consul`]'s store: sessions' TTLs,
//! blocking queries that wait for a change (or their wait), requests held while there is no
//! leader. What a request does at the servers is kuutamod's own [`LockStore`] call on the
//! model ([`Server`]).
//!
//! [`LockStore`]: kuutamod::lock_store::LockStore

use kuutamod::consul::REQUEST_TIMEOUT;
use kuutamod::lock_store::{Failure, StoreOp, StoreReply};
use kuutamod::supervisor::conductor::Input;

use super::backend::{Model, ETCD_REVOKE_WITHIN};
use super::events::Ev;
use super::{World, RPC_HOLD};
use crate::clock::MS;
use crate::consul::Owner;

/// A request's answer.
type Answer = Result<StoreReply, Failure>;

/// Who made a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// kuutamod instance `inst` on host `h`, through the host's agent.
    Kd { h: usize, inst: u64 },
    /// kuutamoctl process `n`, from an operator's host straight to the servers.
    Operator(usize),
}

pub(super) struct Req {
    pub(super) origin: Origin,
    /// The caller's id of the call.
    id: u64,
    pub(super) op: StoreOp,
    agent_epoch: u64,
    pub(super) resolved: bool,
    result: Option<Answer>,
    held_since: Option<u64>,
    /// etcd: the watch of a blocking read is over, the read afresh is what is left to do.
    read_now: bool,
}

/// The lock store's servers (Consul's, or etcd's members) as the world delivers to them.
pub(super) struct Servers {
    pub(super) store: Model,
    pub(super) election_until: u64,
    pub(super) quorum_lost: bool,
    pub(super) held: Vec<usize>,
    pub(super) waiters: Vec<usize>,
    pub(super) slow: (u64, u64),
    pub(super) lossy: (u64, u64),
    /// An outsider's session holding the key (etcd: and the record's revision it wrote).
    pub(super) foreign: Option<(String, u64)>,
    pub(super) holder: Option<usize>,
    /// Snapshots taken for a restore later, by fault.
    pub(super) snapshots: Vec<(usize, Model)>,
    /// Restores that wait for a leader.
    pub(super) restore_pending: Vec<usize>,
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl World {
    /// kuutamod instance `inst` on host `h` starts lock-store call `id`.
    pub(super) fn send_req(&mut self, h: usize, inst: u64, id: u64, op: StoreOp) {
        let idx = self.reqs.len();
        let blocking = op.blocking();
        self.reqs.push(Req {
            origin: Origin::Kd { h, inst },
            id,
            op,
            agent_epoch: self.hosts[h].agent.epoch,
            resolved: false,
            result: None,
            held_since: None,
            read_now: false,
        });
        if !self.hosts[h].agent.up {
            self.resolve_after(idx, Err(Failure::Failed("connection refused".into())), MS);
            return;
        }
        if !blocking {
            self.after(nanos(REQUEST_TIMEOUT), Ev::ReqTimeout(idx));
        }
        self.send_server(idx);
    }

    /// kuutamoctl process `n` makes a call; it goes to the servers, and is not lost.
    pub(super) fn send_operator(&mut self, n: usize, op: StoreOp) {
        let idx = self.reqs.len();
        let blocking = op.blocking();
        self.reqs.push(Req {
            origin: Origin::Operator(n),
            id: 0,
            op,
            agent_epoch: 0,
            resolved: false,
            result: None,
            held_since: None,
            read_now: false,
        });
        if !blocking {
            self.after(nanos(REQUEST_TIMEOUT), Ev::ReqTimeout(idx));
        }
        let d = self.net_delay();
        self.after(d, Ev::ReqAtServer(idx));
    }

    /// The host whose agent a request goes through (none for the operator's).
    pub(super) fn req_host(&self, idx: usize) -> Option<usize> {
        match self.reqs[idx].origin {
            Origin::Kd { h, .. } => Some(h),
            Origin::Operator(_) => None,
        }
    }

    pub(super) fn agent_runs(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.agent.up && !host.agent.paused && !host.suspended
    }

    /// The agent forwards a request to the servers.
    fn send_server(&mut self, idx: usize) {
        let Some(h) = self.req_host(idx) else {
            return;
        };
        if !self.agent_runs(h) {
            self.hosts[h].agent.waiting.push(Ev::ReqAtServer(idx));
            return;
        }
        if self.hosts[h].agent.partitioned {
            self.hosts[h].agent.cut.push(Ev::ReqAtServer(idx));
            return;
        }
        let blocking = self.reqs[idx].op.blocking();
        if !blocking && self.t < self.servers.lossy.1 && self.rng.chance(self.servers.lossy.0) {
            return; // lost on the way: the client times out
        }
        let d = self.net_delay();
        self.after(d, Ev::ReqAtServer(idx));
    }

    fn net_delay(&mut self) -> u64 {
        let mut d = self.rng.range(MS / 2, 5 * MS);
        if self.t < self.servers.slow.1 {
            d += self.rng.below(self.servers.slow.0 * MS);
        }
        d
    }

    pub(super) fn server_up(&self) -> bool {
        !self.servers.quorum_lost && self.t >= self.servers.election_until
    }

    pub(super) fn req_at_server(&mut self, idx: usize) {
        if let Some(h) = self.req_host(idx) {
            if self.reqs[idx].agent_epoch != self.hosts[h].agent.epoch {
                // The agent restarted: its connection to the servers is gone with the request.
                return;
            }
        }
        if !self.server_up() {
            if self.servers.store.is_etcd()
                && self.reqs[idx].op.blocking()
                && !self.reqs[idx].read_now
            {
                // A member without a leader refuses the watch (kuutamod asks for etcd's
                // "require leader"); the client reads afresh, and that read waits for a leader.
                self.reqs[idx].read_now = true;
                self.after(nanos(REQUEST_TIMEOUT), Ev::ReqTimeout(idx));
            }
            if self.reqs[idx].held_since.is_none() {
                self.reqs[idx].held_since = Some(self.t);
            }
            self.servers.held.push(idx);
            return;
        }
        if self.reqs[idx]
            .held_since
            .is_some_and(|s| self.t >= s + RPC_HOLD)
        {
            self.respond(idx, Err(Failure::Failed("No cluster leader".into())));
            return;
        }
        if !self.reqs[idx].read_now && self.servers.store.waits(&self.reqs[idx].op, true) {
            self.servers.waiters.push(idx);
            if let StoreOp::GetKey {
                blocking: Some((_, wait)),
                ..
            }
            | StoreOp::GetPrefix {
                blocking: Some((_, wait)),
                ..
            } = self.reqs[idx].op
            {
                self.after(nanos(wait), Ev::WaitOver(idx));
            }
            return;
        }
        let r = self.apply(idx);
        self.respond(idx, r);
    }

    /// Applies a request at the servers: kuutamod's [`LockStore`] call on the model.
    ///
    /// [`LockStore`]: kuutamod::lock_store::LockStore
    fn apply(&mut self, idx: usize) -> Answer {
        let owner = match self.reqs[idx].origin {
            Origin::Kd { h, .. } => Owner::Host(h),
            Origin::Operator(_) => Owner::Outsider,
        };
        let ttl = nanos(self.timing.ttl);
        let drawn = match self.reqs[idx].op {
            StoreOp::CreateSession { .. } | StoreOp::Renew { .. } => self.expiry(ttl),
            _ => 0,
        };
        let before = self.servers.store.version();
        let op = &self.reqs[idx].op;
        let result = self.servers.store.apply(op, owner, self.t, drawn);
        let session = match (op, &result) {
            (StoreOp::CreateSession { .. }, Ok(StoreReply::Session(s))) => Some(s.clone()),
            (StoreOp::Renew { session }, Ok(_)) => Some(session.clone()),
            _ => None,
        };
        if let Some(s) = session {
            self.schedule_expiry(&s);
        }
        if let (StoreOp::Release { value, .. }, Ok(StoreReply::Applied(true))) =
            (&self.reqs[idx].op, &result)
        {
            let value = value.clone();
            self.handed_over(&value);
        }
        if self.servers.store.version() != before {
            self.store_changed();
        }
        result
    }

    /// What the timers of a session created or renewed now need: Consul ends it between one
    /// and two TTLs later; etcd revokes a lease within [`ETCD_REVOKE_WITHIN`] after its TTL
    /// ran out.
    pub(super) fn expiry(&mut self, ttl: u64) -> u64 {
        if self.servers.store.is_etcd() {
            MS + self.rng.below(ETCD_REVOKE_WITHIN)
        } else {
            ttl + self.rng.below(ttl + 1)
        }
    }

    pub(super) fn schedule_expiry(&mut self, id: &str) {
        if let Some((t, generation)) = self.servers.store.timer(id) {
            self.at(
                t,
                Ev::SessionExpire {
                    id: id.to_string(),
                    generation,
                },
            );
        }
    }

    /// The servers answer.
    fn respond(&mut self, idx: usize, res: Answer) {
        self.reqs[idx].result = Some(res);
        let Some(h) = self.req_host(idx) else {
            let d = self.net_delay();
            self.after(d, Ev::RespAtAgent(idx));
            return;
        };
        if self.hosts[h].agent.partitioned {
            self.hosts[h].agent.cut.push(Ev::RespAtAgent(idx));
            return;
        }
        let blocking = self.reqs[idx].op.blocking();
        if !blocking && self.t < self.servers.lossy.1 && self.rng.chance(self.servers.lossy.0) {
            return; // the answer is lost: the client times out
        }
        let d = self.net_delay();
        self.after(d, Ev::RespAtAgent(idx));
    }

    pub(super) fn resp_at_agent(&mut self, idx: usize) {
        if let Some(h) = self.req_host(idx) {
            if self.reqs[idx].agent_epoch != self.hosts[h].agent.epoch {
                return;
            }
            if !self.agent_runs(h) {
                self.hosts[h].agent.waiting.push(Ev::RespAtAgent(idx));
                return;
            }
        }
        if self.reqs[idx].resolved {
            return;
        }
        let res = self.reqs[idx]
            .result
            .take()
            .unwrap_or_else(|| Err(Failure::Failed("no answer".into())));
        self.resolve(idx, res);
    }

    fn resolve_after(&mut self, idx: usize, res: Answer, d: u64) {
        let r = &mut self.reqs[idx];
        r.resolved = true;
        let id = r.id;
        let ev = match r.origin {
            Origin::Kd { h, inst } => Ev::ToKd {
                h,
                inst,
                input: Box::new(Input::Store { id, result: res }),
            },
            Origin::Operator(n) => Ev::ToOperator {
                n,
                answer: Box::new(res),
            },
        };
        self.after(d, ev);
    }

    pub(super) fn resolve(&mut self, idx: usize, res: Answer) {
        self.resolve_after(idx, res, 0);
    }

    /// The client gives up on a request (consul::REQUEST_TIMEOUT); it may still be applied.
    pub(super) fn req_timeout(&mut self, idx: usize) {
        if !self.reqs[idx].resolved {
            self.resolve(idx, Err(Failure::Failed("request timed out".into())));
        }
    }

    /// A blocking query's wait is over: it answers with what is there now.
    pub(super) fn wait_over(&mut self, idx: usize) {
        let Some(pos) = self.servers.waiters.iter().position(|w| *w == idx) else {
            return;
        };
        self.servers.waiters.swap_remove(pos);
        self.wake(idx);
    }

    /// A blocking query stops waiting. Consul answers it; kuutamod's etcd client, its watch
    /// over, reads afresh: a linearizable read that needs a leader, with a request's timeout.
    fn wake(&mut self, idx: usize) {
        if self.servers.store.is_etcd() {
            self.reqs[idx].read_now = true;
            self.after(nanos(REQUEST_TIMEOUT), Ev::ReqTimeout(idx));
            self.req_at_server(idx);
        } else {
            let r = self.apply(idx);
            self.respond(idx, r);
        }
    }

    /// A store change: wake the blocking queries it answers, track the lock holder.
    pub(super) fn store_changed(&mut self) {
        let holder = match self.servers.store.holder(&self.lock_key) {
            Some(Owner::Host(h)) => Some(h),
            _ => None,
        };
        if holder != self.servers.holder {
            if let Some(old) = self.servers.holder {
                self.hosts[old].last_lock = Some(self.t);
            }
            self.servers.holder = holder;
        }
        let control = self.servers.store.value(&self.control_key);
        let index = control.as_ref().map_or(0, |(_, i)| *i);
        if index != self.control_index {
            self.control_index = index;
            self.paused = control
                .and_then(|(v, _)| kuutamod::records::Control::parse(&v))
                .is_some_and(|c| c.paused);
        }
        let waiters = std::mem::take(&mut self.servers.waiters);
        for idx in waiters {
            if self.servers.store.waits(&self.reqs[idx].op, false) {
                self.servers.waiters.push(idx);
            } else {
                self.wake(idx);
            }
        }
    }

    /// The servers have a leader again: timers restart, held requests go on.
    pub(super) fn server_recovered(&mut self) {
        if !self.server_up() {
            return;
        }
        let now = self.t;
        let rng = self.rng.fork(now);
        self.restart_timers(rng);
        let held = std::mem::take(&mut self.servers.held);
        for idx in held {
            self.req_at_server(idx);
        }
        for i in std::mem::take(&mut self.servers.restore_pending) {
            self.consul_restore(i);
        }
    }

    /// A new leader (or a restore): every session's timer starts again, drawn from `rng`
    /// (Consul: each ends between one and two TTLs from now; etcd: each lease's whole TTL and
    /// the election timeout from now, revoked within [`ETCD_REVOKE_WITHIN`] after that).
    pub(super) fn restart_timers(&mut self, mut rng: crate::rng::Rng) {
        let etcd = self.servers.store.is_etcd();
        self.servers.store.reset_timers(self.t, |ttl| {
            if etcd {
                MS + rng.below(ETCD_REVOKE_WITHIN)
            } else {
                ttl + rng.below(ttl + 1)
            }
        });
        for id in self.servers.store.session_ids() {
            self.schedule_expiry(&id);
        }
    }

    /// Ends the wait of every blocking query (etcd: their watches' streams ended).
    pub(super) fn wake_waiters(&mut self) {
        for idx in std::mem::take(&mut self.servers.waiters) {
            self.wake(idx);
        }
    }

    /// Answers every waiting blocking query with what it would have returned before now: the
    /// index it asked about, nothing new.
    pub(super) fn answer_waiters_unchanged(&mut self) {
        for idx in std::mem::take(&mut self.servers.waiters) {
            let r = self.apply(idx);
            self.respond(idx, r);
        }
    }
}
