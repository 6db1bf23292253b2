//! kuutamod's side of Consul: each answer turned into the machine's event, and the two
//! blocking watches (the lock key, the cluster's records) that query again after each answer.

use kuutamod::machine::Event;

use super::delivery::{Op, Purpose, Res};
use super::events::{Ev, Inc};
use super::{World, WATCH_IDLE, WATCH_RETRY};

impl World {
    pub(super) fn consul_done(&mut self, h: usize, id: usize) {
        let res = self.reqs[id].result.clone().unwrap_or(Res::Err);
        let purpose = self.reqs[id].purpose;
        let sent = self.reqs[id].sent_clock;
        let session = match &self.reqs[id].op {
            Op::Renew(s) | Op::Destroy(s) => s.clone(),
            Op::Lock { session, .. } | Op::Release { session, .. } => session.clone(),
            _ => String::new(),
        };
        let ev = match (purpose, res) {
            (Purpose::Create, Res::Session(s)) => Some(Event::SessionCreated(s)),
            (Purpose::Create, _) => Some(Event::SessionCreateFailed),
            (Purpose::Renew, Res::Ok) => Some(Event::Renewed { session }),
            (Purpose::Renew, Res::Gone) => Some(Event::SessionGone(session)),
            (Purpose::Renew, _) => Some(Event::RenewFailed { session }),
            (Purpose::Heartbeat { seq }, Res::Index(index)) => {
                Some(Event::HeartbeatAcked { seq, sent, index })
            }
            (Purpose::Heartbeat { .. }, Res::Gone) => Some(Event::SessionGone(session)),
            (Purpose::Heartbeat { .. }, Res::Rejected) => Some(Event::HeartbeatRejected),
            (Purpose::Heartbeat { .. }, _) => Some(Event::HeartbeatFailed),
            (Purpose::Acquire, Res::Index(index)) => Some(Event::Acquired { sent, index }),
            (Purpose::Acquire, Res::Gone) => {
                self.kd_feed(h, Event::AcquireRejected);
                Some(Event::SessionGone(session))
            }
            (Purpose::Acquire, Res::Rejected) => Some(Event::AcquireRejected),
            (Purpose::Acquire, _) => Some(Event::AcquireFailed),
            (Purpose::Release, Res::Bool(b)) => Some(Event::Released(b)),
            (Purpose::Release, _) => Some(Event::ReleaseFailed),
            (Purpose::Destroy, r) => Some(Event::Destroyed {
                session,
                ok: matches!(r, Res::Ok),
            }),
            (Purpose::Read, Res::Key(key, index)) => Some(Event::KeyObserved { key, index }),
            (Purpose::Read, _) => Some(Event::ReadFailed),
            (Purpose::Watch(gen), r) => {
                self.watch_answer(h, gen, r);
                None
            }
            (Purpose::Cluster(gen), r) => {
                self.cluster_answer(h, gen, r);
                None
            }
            (Purpose::Publish, _) => None,
        };
        if let Some(e) = ev {
            self.kd_feed(h, e);
        }
    }

    pub(super) fn watch_query(&mut self, h: usize) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        k.watch_gen += 1;
        let (gen, index) = (k.watch_gen, k.watch_index);
        self.send_req(
            h,
            Op::Get {
                min_index: (index > 0).then_some(index),
            },
            Purpose::Watch(gen),
        );
    }

    fn watch_answer(&mut self, h: usize, gen: u64, res: Res) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        if k.watch_gen != gen {
            return;
        }
        let inst = k.inst;
        match res {
            Res::Key(key, new_index) => {
                let index = k.watch_index;
                let unchanged = index > 0 && new_index == index;
                if new_index < index {
                    k.watch_index = 0;
                    self.kd_feed(h, Event::WatchReset);
                    self.watch_query(h);
                    return;
                }
                k.watch_index = new_index;
                self.kd_feed(
                    h,
                    Event::KeyObserved {
                        key,
                        index: new_index,
                    },
                );
                if unchanged {
                    self.after(
                        WATCH_IDLE,
                        Ev::ToKd {
                            h,
                            inst,
                            inc: Inc::WatchRetry(gen),
                        },
                    );
                } else {
                    self.watch_query(h);
                }
            }
            _ => {
                k.watch_index = 0;
                self.after(
                    WATCH_RETRY,
                    Ev::ToKd {
                        h,
                        inst,
                        inc: Inc::WatchRetry(gen),
                    },
                );
            }
        }
    }

    pub(super) fn cluster_query(&mut self, h: usize) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        k.cluster_gen += 1;
        let (gen, index) = (k.cluster_gen, k.cluster_index);
        self.send_req(
            h,
            Op::GetPrefix {
                min_index: (index > 0).then_some(index),
            },
            Purpose::Cluster(gen),
        );
    }

    fn cluster_answer(&mut self, h: usize, gen: u64, res: Res) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        if k.cluster_gen != gen {
            return;
        }
        let inst = k.inst;
        match res {
            Res::Prefix(control, peers, new_index) => {
                let unchanged = k.cluster_index > 0 && new_index == k.cluster_index;
                k.cluster_index = if new_index < k.cluster_index {
                    0
                } else {
                    new_index
                };
                self.kd_feed(h, Event::ClusterObserved { control, peers });
                if unchanged {
                    self.after(
                        WATCH_IDLE,
                        Ev::ToKd {
                            h,
                            inst,
                            inc: Inc::ClusterRetry(gen),
                        },
                    );
                } else {
                    self.cluster_query(h);
                }
            }
            _ => {
                k.cluster_index = 0;
                self.after(
                    WATCH_RETRY,
                    Ev::ToKd {
                        h,
                        inst,
                        inc: Inc::ClusterRetry(gen),
                    },
                );
            }
        }
    }
}
