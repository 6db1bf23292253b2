//! The two watches and the start's check.
//!
//! - The leader-key watch reports every answer of its blocking query (changed or not), so the
//!   machine knows both what the key holds and how fresh its knowledge is. The store's index
//!   can go backwards (a snapshot restore, a new cluster): then it starts over and the machine
//!   forgets what it saw. After an answer with an unchanged index it pauses
//!   ([`WATCH_IDLE`](super::WATCH_IDLE)); after a failure longer
//!   ([`WATCH_RETRY`](super::WATCH_RETRY)).
//! - The cluster watch reads the account's records (`kuutamod/<account>/`): the control record
//!   and the other nodes' status records. Their freshness is the machine's to judge, by when it
//!   saw them change: never by the writers' wall clocks. A record of our own node id written by
//!   another kuutamod process ([`NodeRecord::instance`]) is a second host with our node id:
//!   logged as an error and reported.
//! - At the start, kuutamod refuses to run when the status record of our node id names another
//!   host and that host's session is alive.

use std::collections::VecDeque;

use super::store::{describe, Pending};
use super::{Conductor, Host, Life, Meter, Report, WATCH_IDLE, WATCH_RETRY, WATCH_WAIT};
use crate::clock::Instant;
use crate::lock_store::{Failure, StoreOp, StoreReply};
use crate::machine::Event;
use crate::records::{control_key, prefix, Control, NodeRecord, OwnId};

/// When a watch queries next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// At this instant (or now, if it has passed).
    At(Instant),
    /// A query is in flight.
    Waiting,
}

/// The leader-key watch.
#[derive(Debug, Clone)]
pub(super) struct KeyWatch {
    key: String,
    index: u64,
    next: Next,
}

impl KeyWatch {
    pub(super) fn new(key: String, now: Instant) -> KeyWatch {
        KeyWatch {
            key,
            index: 0,
            next: Next::At(now),
        }
    }

    /// The leader key.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    pub(super) fn due(&self) -> Option<Instant> {
        match self.next {
            Next::At(t) => Some(t),
            Next::Waiting => None,
        }
    }

    pub(super) fn ready(&self, now: Instant) -> bool {
        matches!(self.next, Next::At(t) if now >= t)
    }
}

/// The cluster watch.
#[derive(Debug, Clone)]
pub(super) struct ClusterWatch {
    prefix: String,
    control_key: String,
    node_id: String,
    instance: String,
    hostname: String,
    own: OwnId,
    index: u64,
    next: Next,
}

impl ClusterWatch {
    pub(super) fn new(
        account: &str,
        node_id: &str,
        instance: &str,
        hostname: &str,
        now: Instant,
    ) -> ClusterWatch {
        ClusterWatch {
            prefix: prefix(account),
            control_key: control_key(account),
            node_id: node_id.to_string(),
            instance: instance.to_string(),
            hostname: hostname.to_string(),
            own: OwnId::default(),
            index: 0,
            next: Next::At(now),
        }
    }

    pub(super) fn due(&self) -> Option<Instant> {
        match self.next {
            Next::At(t) => Some(t),
            Next::Waiting => None,
        }
    }

    pub(super) fn ready(&self, now: Instant) -> bool {
        matches!(self.next, Next::At(t) if now >= t)
    }
}

/// The start's node-id check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NodeIdCheck {
    /// Reading our node id's status record.
    Reading,
    /// Asking whether the session of the other host named there is alive.
    Asking {
        /// That host.
        host: String,
        /// Its session.
        session: String,
    },
}

impl Conductor {
    pub(super) fn key_watch_query(&mut self, host: &mut impl Host) {
        let w = &mut self.key_watch;
        w.next = Next::Waiting;
        let op = StoreOp::GetKey {
            key: w.key.clone(),
            blocking: (w.index > 0).then_some((w.index, WATCH_WAIT)),
            consistent: false,
        };
        self.request(op, Pending::LeaderWatch, Meter::Watch, host);
    }

    pub(super) fn key_watch_answer(
        &mut self,
        result: Result<StoreReply, Failure>,
        follow: &mut VecDeque<Event>,
    ) {
        let now = self.now.boot;
        let w = &mut self.key_watch;
        match result {
            Ok(StoreReply::Key(entry, new_index)) => {
                let unchanged = w.index > 0 && new_index == w.index;
                if new_index < w.index {
                    w.index = 0;
                    w.next = Next::At(now);
                    follow.push_back(Event::WatchReset);
                    return;
                }
                w.index = new_index;
                w.next = Next::At(if unchanged { now + WATCH_IDLE } else { now });
                follow.push_back(Event::KeyObserved {
                    key: entry.map(|e| e.state()),
                    index: new_index,
                });
            }
            r => {
                log::warn!("watching {}: {}", w.key, describe(r));
                w.index = 0;
                w.next = Next::At(now + WATCH_RETRY);
                follow.push_back(Event::WatchFailed);
            }
        }
    }

    pub(super) fn cluster_query(&mut self, host: &mut impl Host) {
        let w = &mut self.cluster;
        w.next = Next::Waiting;
        let op = StoreOp::GetPrefix {
            prefix: w.prefix.clone(),
            blocking: (w.index > 0).then_some((w.index, WATCH_WAIT)),
        };
        self.request(op, Pending::ClusterWatch, Meter::ClusterWatch, host);
    }

    pub(super) fn cluster_answer(
        &mut self,
        result: Result<StoreReply, Failure>,
        follow: &mut VecDeque<Event>,
        host: &mut impl Host,
    ) {
        let now = self.now.boot;
        let w = &mut self.cluster;
        match result {
            Ok(StoreReply::Prefix(entries, new_index)) => {
                let unchanged = w.index > 0 && new_index == w.index;
                w.index = if new_index < w.index { 0 } else { new_index };
                let mut control = Control::default();
                let mut peers = Vec::new();
                let heal = !self.mutations.records_overtake;
                for e in &entries {
                    if e.key == w.control_key {
                        control = Control::parse(&e.bytes()).unwrap_or_default();
                    } else if let Some(r) = NodeRecord::parse(&e.bytes()) {
                        if r.node_id != w.node_id {
                            // (The simulation's mutation: judged by the writer's wall clock.)
                            if !self.mutations.peers_by_wall_clock || r.is_fresh(self.now.wall_ms) {
                                peers.push(r);
                            }
                            continue;
                        }
                        // Ours, or our host's previous run's: Consul must show the newest
                        // record we wrote (a write that timed out may land after a newer one;
                        // a snapshot restore brings an old one back).
                        // (Not once another process is known to write our node id: each
                        // would write its record again over the other's, for ever.)
                        let mine = r.instance.as_deref() == Some(w.instance.as_str())
                            || (r.hostname == w.hostname && !w.own.conflicted());
                        if mine && heal {
                            self.records.stored(&r);
                        }
                        if let Some(other) = w.own.observe(&r, e.modify_index, &w.instance) {
                            log::error!(
                                "another kuutamod process (host {other}, instance {}) writes the status record of node id {}: \
                                 two hosts run with KUUTAMO_NODE_ID={}; give every host its own node id",
                                r.instance.as_deref().unwrap_or("unknown"),
                                w.node_id,
                                w.node_id,
                            );
                            host.report(Report::NodeIdConflict {
                                host: other.to_string(),
                            });
                        }
                    }
                }
                w.next = Next::At(if unchanged { now + WATCH_IDLE } else { now });
                follow.push_back(Event::ClusterObserved { control, peers });
            }
            r => {
                log::warn!("watching {}: {}", w.prefix, describe(r));
                w.index = 0;
                w.next = Next::At(now + WATCH_RETRY);
            }
        }
    }

    /// An answer of the start's node-id check: go on to the next step, refuse, or start.
    pub(super) fn node_id_checked(
        &mut self,
        result: Result<StoreReply, Failure>,
        host: &mut impl Host,
    ) {
        let Life::Checking { check, shutdown } = self.life.clone() else {
            return;
        };
        let node_id = self.settings.machine.node_id.clone();
        match (check, result) {
            (NodeIdCheck::Reading, Ok(StoreReply::Key(Some(entry), _))) => {
                let other = NodeRecord::parse(&entry.bytes()).and_then(|r| {
                    let session = r.session?;
                    (r.hostname != self.settings.machine.hostname).then_some((r.hostname, session))
                });
                let Some((other, session)) = other else {
                    return self.run(shutdown, host);
                };
                self.life = Life::Checking {
                    check: NodeIdCheck::Asking {
                        host: other,
                        session: session.clone(),
                    },
                    shutdown,
                };
                self.request(
                    StoreOp::SessionInfo { session },
                    Pending::NodeId,
                    Meter::Quiet,
                    host,
                );
            }
            (
                NodeIdCheck::Asking {
                    host: other,
                    session,
                },
                Ok(StoreReply::Info(Some(_))),
            ) => {
                let why = format!(
                    "host {other} already runs a kuutamod with KUUTAMO_NODE_ID={node_id} (its Consul session {session} is alive): \
                     give every host its own node id"
                );
                self.life = Life::Refused(why);
            }
            // No record, a record of this host, no session, the store unreachable: nothing to
            // say here (the cluster watch notices a conflict later).
            _ => self.run(shutdown, host),
        }
    }
}
