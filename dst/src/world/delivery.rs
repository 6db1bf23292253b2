//! Consul's delivery: a request's way from kuutamod through its host's agent to the servers
//! and back (latency, loss, a paused or partitioned agent, a restarted agent's lost
//! connections), and the servers' side around [`crate::consul`]'s store: sessions' TTLs,
//! blocking queries that wait for a change, requests held while there is no leader.

use kuutamod::clock::Instant;
use kuutamod::lease::KeyState;
use kuutamod::records::{Control, NodeRecord};
use kuutamod::settings::leader_key;

use super::events::{Ev, Inc};
use super::{World, ACCOUNT, REQUEST_TIMEOUT, RPC_HOLD};
use crate::clock::MS;
use crate::consul::{Owner, Rec, Store, TxnError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    Create,
    Renew,
    Heartbeat { seq: u64 },
    Acquire,
    Release,
    Destroy,
    Read,
    Watch(u64),
    Cluster(u64),
    Publish,
}

#[derive(Debug, Clone)]
pub(super) enum Op {
    Create,
    Renew(String),
    Destroy(String),
    Lock {
        expected: Option<u64>,
        session: String,
        value: Vec<u8>,
    },
    Release {
        session: String,
        expected: u64,
        value: Vec<u8>,
    },
    Get {
        min_index: Option<u64>,
    },
    GetPrefix {
        min_index: Option<u64>,
    },
    Put {
        key: String,
        rec: Box<Rec>,
    },
}

#[derive(Debug, Clone)]
pub(super) enum Res {
    Session(String),
    Ok,
    Gone,
    Rejected,
    Index(u64),
    Bool(bool),
    Key(Option<KeyState>, u64),
    Prefix(Control, Vec<NodeRecord>, u64),
    Err,
}

pub(super) struct Req {
    pub(super) h: usize,
    inst: u64,
    key: String,
    pub(super) op: Op,
    pub(super) purpose: Purpose,
    pub(super) sent_clock: Instant,
    agent_epoch: u64,
    pub(super) resolved: bool,
    pub(super) result: Option<Res>,
    held_since: Option<u64>,
}

pub(super) struct Consul {
    pub(super) store: Store,
    pub(super) election_until: u64,
    pub(super) quorum_lost: bool,
    pub(super) held: Vec<usize>,
    pub(super) waiters: Vec<usize>,
    pub(super) slow: (u64, u64),
    pub(super) lossy: (u64, u64),
    pub(super) control: Control,
    pub(super) control_pending: bool,
    pub(super) foreign: Option<String>,
    pub(super) holder: Option<usize>,
}

impl World {
    pub(super) fn send_req(&mut self, h: usize, op: Op, purpose: Purpose) -> usize {
        let id = self.reqs.len();
        let inst = self.hosts[h].kd.as_ref().map_or(0, |k| k.inst);
        let key = self.hosts[h]
            .kd
            .as_ref()
            .map_or_else(|| leader_key(ACCOUNT), |k| k.lock_key.clone());
        let blocking = matches!(purpose, Purpose::Watch(_) | Purpose::Cluster(_));
        self.reqs.push(Req {
            h,
            inst,
            key,
            op,
            purpose,
            sent_clock: Instant::from_nanos(self.clock_now(h)),
            agent_epoch: self.hosts[h].agent.epoch,
            resolved: false,
            result: None,
            held_since: None,
        });
        if !self.hosts[h].agent.up {
            // Connection refused.
            self.resolve_after(id, Res::Err, MS);
            return id;
        }
        if !blocking {
            self.after(REQUEST_TIMEOUT, Ev::ReqTimeout(id));
        }
        self.send_server(id);
        id
    }

    pub(super) fn agent_runs(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.agent.up && !host.agent.paused && !host.suspended
    }

    /// The agent forwards a request to the servers.
    fn send_server(&mut self, id: usize) {
        let h = self.reqs[id].h;
        if !self.agent_runs(h) {
            self.hosts[h].agent.waiting.push(Ev::ReqAtServer(id));
            return;
        }
        if self.hosts[h].agent.partitioned {
            self.hosts[h].agent.cut.push(Ev::ReqAtServer(id));
            return;
        }
        let blocking = matches!(
            self.reqs[id].purpose,
            Purpose::Watch(_) | Purpose::Cluster(_)
        );
        if !blocking && self.t < self.consul.lossy.1 && self.rng.chance(self.consul.lossy.0) {
            return; // lost on the way: the client times out
        }
        let d = self.net_delay();
        self.after(d, Ev::ReqAtServer(id));
    }

    fn net_delay(&mut self) -> u64 {
        let mut d = self.rng.range(MS / 2, 5 * MS);
        if self.t < self.consul.slow.1 {
            d += self.rng.below(self.consul.slow.0 * MS);
        }
        d
    }

    pub(super) fn server_up(&self) -> bool {
        !self.consul.quorum_lost && self.t >= self.consul.election_until
    }

    pub(super) fn req_at_server(&mut self, id: usize) {
        if self.reqs[id].agent_epoch != self.hosts[self.reqs[id].h].agent.epoch {
            // The agent restarted: its connection to the servers is gone with the request.
            return;
        }
        if !self.server_up() {
            if self.reqs[id].held_since.is_none() {
                self.reqs[id].held_since = Some(self.t);
            }
            self.consul.held.push(id);
            return;
        }
        if self.reqs[id]
            .held_since
            .is_some_and(|s| self.t >= s + RPC_HOLD)
        {
            self.respond(id, Res::Err);
            return;
        }
        let res = self.apply(id);
        match res {
            Some(r) => self.respond(id, r),
            None => self.consul.waiters.push(id),
        }
    }

    /// Applies a request at the servers; `None`: a blocking query that waits.
    fn apply(&mut self, id: usize) -> Option<Res> {
        let now = self.t;
        let (h, key, op) = {
            let r = &self.reqs[id];
            (r.h, r.key.clone(), r.op.clone())
        };
        let ttl = self.timing.ttl.as_nanos() as u64;
        let res = match op {
            Op::Create => {
                let exp = self.expiry(ttl);
                let s = self
                    .consul
                    .store
                    .create_session(Owner::Host(h), ttl, 0, now, exp);
                self.schedule_expiry(&s);
                Res::Session(s)
            }
            Op::Renew(s) => {
                let exp = self.expiry(ttl);
                if self.consul.store.renew(&s, now, exp) {
                    self.schedule_expiry(&s);
                    Res::Ok
                } else {
                    Res::Gone
                }
            }
            Op::Destroy(s) => {
                if self.consul.store.invalidate(&s, now) {
                    self.store_changed();
                }
                Res::Ok
            }
            Op::Lock {
                expected,
                session,
                value,
            } => match self
                .consul
                .store
                .check_and_lock(&key, expected, &session, &value, now)
            {
                Ok(i) => {
                    self.store_changed();
                    Res::Index(i)
                }
                Err(TxnError::Rejected) => Res::Rejected,
                Err(TxnError::InvalidSession) => Res::Gone,
            },
            Op::Release {
                session,
                expected,
                value,
            } => {
                let ok = self
                    .consul
                    .store
                    .release_at(&key, Some(expected), &session, &value);
                if ok {
                    self.store_changed();
                }
                Res::Bool(ok)
            }
            Op::Get { min_index } => {
                let (e, idx) = self.consul.store.get(&key);
                if min_index.is_some_and(|m| idx <= m) {
                    return None;
                }
                Res::Key(e.map(|e| e.state()), idx)
            }
            Op::GetPrefix { min_index } => {
                let (recs, idx) = self.consul.store.records();
                if min_index.is_some_and(|m| idx <= m) {
                    return None;
                }
                let me = format!("n{h}");
                let mut control = Control::default();
                let mut peers = Vec::new();
                for (_, r) in recs {
                    match r {
                        Rec::Control(c) => control = c.clone(),
                        Rec::Node(n) if n.node_id != me => peers.push((**n).clone()),
                        Rec::Node(_) => {}
                    }
                }
                Res::Prefix(control, peers, idx)
            }
            Op::Put { key, rec } => {
                self.consul.store.put_record(&key, *rec);
                self.records_changed();
                Res::Ok
            }
        };
        Some(res)
    }

    /// When Consul ends a session renewed now: between one and two TTLs.
    fn expiry(&mut self, ttl: u64) -> u64 {
        ttl + self.rng.below(ttl + 1)
    }

    pub(super) fn schedule_expiry(&mut self, id: &str) {
        if let Some(s) = self.consul.store.session(id) {
            let (t, generation) = (s.expires, s.generation);
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
    fn respond(&mut self, id: usize, res: Res) {
        self.reqs[id].result = Some(res);
        let h = self.reqs[id].h;
        if self.hosts[h].agent.partitioned {
            self.hosts[h].agent.cut.push(Ev::RespAtAgent(id));
            return;
        }
        let blocking = matches!(
            self.reqs[id].purpose,
            Purpose::Watch(_) | Purpose::Cluster(_)
        );
        if !blocking && self.t < self.consul.lossy.1 && self.rng.chance(self.consul.lossy.0) {
            return; // the answer is lost: the client times out
        }
        let d = self.net_delay();
        self.after(d, Ev::RespAtAgent(id));
    }

    pub(super) fn resp_at_agent(&mut self, id: usize) {
        let h = self.reqs[id].h;
        if self.reqs[id].agent_epoch != self.hosts[h].agent.epoch {
            return;
        }
        if !self.agent_runs(h) {
            self.hosts[h].agent.waiting.push(Ev::RespAtAgent(id));
            return;
        }
        if self.reqs[id].resolved {
            return;
        }
        let res = self.reqs[id].result.clone().unwrap_or(Res::Err);
        self.resolve(id, res);
    }

    fn resolve_after(&mut self, id: usize, res: Res, d: u64) {
        self.reqs[id].resolved = true;
        self.reqs[id].result = Some(res);
        let (h, inst) = (self.reqs[id].h, self.reqs[id].inst);
        self.after(
            d,
            Ev::ToKd {
                h,
                inst,
                inc: Inc::Consul(id),
            },
        );
    }

    pub(super) fn resolve(&mut self, id: usize, res: Res) {
        self.resolve_after(id, res, 0);
    }

    /// A store change: wake the blocking queries it answers, track the lock holder.
    pub(super) fn store_changed(&mut self) {
        let holder = {
            let (e, _) = self.consul.store.get(&leader_key(ACCOUNT));
            e.and_then(|e| e.session.clone())
                .and_then(|s| self.consul.store.session(&s).map(|s| s.owner))
                .and_then(|o| match o {
                    Owner::Host(h) => Some(h),
                    Owner::Outsider => None,
                })
        };
        if holder != self.consul.holder {
            if let Some(old) = self.consul.holder {
                self.hosts[old].last_lock = Some(self.t);
            }
            self.consul.holder = holder;
        }
        self.wake_waiters(false);
    }

    pub(super) fn records_changed(&mut self) {
        self.wake_waiters(true);
    }

    fn wake_waiters(&mut self, records: bool) {
        let waiters = std::mem::take(&mut self.consul.waiters);
        for id in waiters {
            let is_records = matches!(self.reqs[id].purpose, Purpose::Cluster(_));
            if is_records != records {
                self.consul.waiters.push(id);
                continue;
            }
            match self.apply(id) {
                Some(r) => self.respond(id, r),
                None => self.consul.waiters.push(id),
            }
        }
    }

    /// The servers have a leader again: timers restart, held requests go on.
    pub(super) fn server_recovered(&mut self) {
        if !self.server_up() {
            return;
        }
        let now = self.t;
        let mut rng = self.rng.fork(now);
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
        let held = std::mem::take(&mut self.consul.held);
        for id in held {
            self.req_at_server(id);
        }
        if self.consul.control_pending {
            self.write_control();
        }
    }
}
