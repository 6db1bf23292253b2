//! The lock, as Consul's KV store holds it, and the two rules that make it a fence: how long a
//! leader may validate after its last acknowledged heartbeat, and how long a new leader must
//! wait before its key goes live. Pure: no I/O, the caller passes the time; `docs/failover.md`
//! ("Safety argument") is the proof, this file is its letter.
//!
//! # The record
//!
//! The leader key `kuutamod-leader/<account>` holds a [`Record`]: who holds it (node, host,
//! session), a heartbeat counter, whether the holder is active or has released cleanly, and
//! the holder's *signing horizon* (its neard's head and largest approval target, see
//! [`crate::fence`]). Sessions are created with `Behavior: release`, so when Consul ends a
//! session (TTL, the agent leaving, a destroy) the key stays with its value and only loses its
//! `Session`: the last heartbeat stays readable.
//!
//! # The leader's side: [`Lease`]
//!
//! After every renew interval the leader writes a new heartbeat (`Seq + 1`) with one Consul
//! transaction: *check-index* (the key is exactly as this leader left it) + *lock* (same
//! session). A write that succeeds is an *acknowledged heartbeat*; the leader's lease runs
//! until `sent + step_down_after`, counted from the moment the last acknowledged heartbeat was
//! **sent** (it was applied no earlier). Any failed check (someone deleted, overwrote or took the
//! key, or Consul ended the session, which releases the key) means the key is no longer ours:
//! the leader demotes at once.
//!
//! # The standby's side: [`Observer`]
//!
//! A standby watches the key and remembers since when it has seen the *current value bytes*
//! (every heartbeat changes them; a release by Consul does not). Because every acknowledged
//! heartbeat changes the value, a key whose value is still `V` at index `i` has had no
//! acknowledged heartbeat after `V` was written, and `V` was written before this node first saw
//! it. So a leader whose last heartbeat is `V` has fenced itself by `first_seen(V) + TTL`: a
//! standby may activate its key from then on if its own acquisition is a transaction that
//! *checks index `i`* (nothing happened since) and locks. The exceptions:
//!
//! - the value is a **released** record: the previous leader fenced itself, confirmed it, and
//!   then released: activation needs no wait (only the height fence);
//! - the key is **absent** (deleted): nothing bounds when it was last heartbeated but the
//!   acquisition itself, so activation waits a full TTL after the acquisition was acknowledged;
//! - the key is **held by another session whose value has not changed for a TTL**: its holder
//!   fenced itself long ago (or never was a kuutamod); the standby destroys that session, which
//!   releases the key without changing its value, then acquires as above: host loss is taken
//!   over in about one TTL instead of Consul's up to two.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Instant;

/// Whether the holder is active or has released the lock after fencing its neard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    /// The holder heartbeats; its neard may hold the key.
    #[serde(rename = "active")]
    Active,
    /// The holder's neard was fenced (confirmed keyless or killed) before this record was
    /// written, and the lock released with it.
    #[serde(rename = "released")]
    Released,
}

/// What a leader's neard may have signed up to: its head and its largest approval target
/// (`near_largest_target_height`). See [`crate::fence`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    /// Head height.
    #[serde(rename = "Head", default)]
    pub head: Option<u64>,
    /// Largest approval target.
    #[serde(rename = "Target", default)]
    pub target: Option<u64>,
    /// True when these are upper bounds of everything the neard ever signed (read from a
    /// neard confirmed keyless); false when they are the last values seen before it was
    /// killed or while it still validated.
    #[serde(rename = "Final", default)]
    pub exact: bool,
    /// For a horizon that is not exact: how old these values were (at most) when the record
    /// was written; in a released record, when its neard was fenced.
    #[serde(rename = "StaleMs", default, skip_serializing_if = "Option::is_none")]
    pub stale_ms: Option<u64>,
}

impl Horizon {
    /// The larger of two horizons, field by field (what both constraints together require);
    /// exact only if both are.
    pub fn max(self, other: Horizon) -> Horizon {
        let m = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Horizon {
            head: m(self.head, other.head),
            target: m(self.target, other.target),
            exact: self.exact && other.exact,
            stale_ms: m(self.stale_ms, other.stale_ms),
        }
    }
}

/// The value kuutamod keeps in the leader key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Host name of the holder.
    #[serde(rename = "Hostname")]
    pub hostname: String,
    /// kuutamod node id of the holder.
    #[serde(rename = "NodeId")]
    pub node_id: String,
    /// The validator account.
    #[serde(rename = "Account", default)]
    pub account: String,
    /// The holder's Consul session.
    #[serde(rename = "Session", default)]
    pub session: String,
    /// Heartbeat counter: 1 at acquisition, +1 per heartbeat.
    #[serde(rename = "Seq", default)]
    pub seq: u64,
    /// The term: one more than the largest term its writer had seen (in the key or in its
    /// [`LockMemory`]) when it acquired the lock, the same in every heartbeat and the release
    /// of that acquisition. A record of an older `(Term, Seq)` than one a node has seen is from
    /// a rewound Consul (a snapshot restore) and proves nothing: the node treats it as foreign.
    #[serde(rename = "Term", default)]
    pub term: u64,
    /// Active or released.
    #[serde(rename = "State", default = "active")]
    pub state: RecordState,
    /// The holder's signing horizon.
    #[serde(rename = "Horizon", default)]
    pub horizon: Horizon,
    /// In a released record of a planned switchover: the node the lock is meant for. Others
    /// leave it to that node for a TTL.
    #[serde(rename = "Successor", default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// With `successor`: the id of the switchover request this hand-over carries out.
    #[serde(
        rename = "Switchover",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub switchover: Option<String>,
    /// While the holder is promoting (its key not live yet): the horizon and stale window of
    /// the leader before it, as its fence waits for them ([`crate::fence::Fence::inherited`]).
    /// If it gives the lock back before its fence opened, the next holder's fence must still
    /// wait for that leader, not only for this holder's own (possibly lagging) view. Already a
    /// whole window: a next holder adds no TTL to it.
    #[serde(rename = "Inherited", default, skip_serializing_if = "Option::is_none")]
    pub inherited: Option<Horizon>,
}

fn active() -> RecordState {
    RecordState::Active
}

impl Record {
    /// Its place in the lock's history: `(Term, Seq)`.
    pub fn order(&self) -> (u64, u64) {
        (self.term, self.seq)
    }

    /// Parses a key value; `None` when it is not a kuutamod record.
    pub fn parse(bytes: &[u8]) -> Option<Record> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a node remembers of the lock across restarts (on disk, in its state directory): the
/// newest record it has seen, by `(Term, Seq)`, and the Consul index at which it saw it. An
/// older record, or the key at a lower index, afterwards is Consul's state rewound (a snapshot
/// restore): such a record is foreign, whatever it says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockMemory {
    /// The newest record's term.
    pub term: u64,
    /// Its heartbeat counter.
    pub seq: u64,
    /// The key's `ModifyIndex` with that record.
    pub index: u64,
}

impl LockMemory {
    /// The newest record's `(Term, Seq)`.
    pub fn order(&self) -> (u64, u64) {
        (self.term, self.seq)
    }
}

/// The leader key as one read returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// `ModifyIndex`.
    pub index: u64,
    /// The session holding the lock.
    pub session: Option<String>,
    /// The value bytes.
    pub value: Vec<u8>,
}

/// The leader's lease: how long it may keep validating.
#[derive(Debug, Clone)]
pub struct Lease {
    session: String,
    record: Record,
    index: u64,
    acked_sent: Instant,
    step_down_after: Duration,
    pending: Option<Record>,
}

/// A heartbeat to send: check that the key is at `expected_index`, then write `value` under
/// the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The index the key must still have.
    pub expected_index: u64,
    /// The record to write.
    pub value: Vec<u8>,
    /// Its sequence number.
    pub seq: u64,
}

impl Lease {
    /// The lock was acquired with `record` (sequence 1) by a request sent at `sent`, which
    /// Consul acknowledged with the key at `index`.
    pub fn new(record: Record, index: u64, sent: Instant, step_down_after: Duration) -> Lease {
        Lease {
            session: record.session.clone(),
            record,
            index,
            acked_sent: sent,
            step_down_after,
            pending: None,
        }
    }

    /// Our session.
    pub fn session(&self) -> &str {
        &self.session
    }

    /// The last record written.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The last index written.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Until when the leader may validate: `step_down_after` after the last acknowledged
    /// heartbeat was sent.
    pub fn deadline(&self) -> Instant {
        self.acked_sent + self.step_down_after
    }

    /// When the guard kills neard: `guard_after` (`Timing::guard_after`, the deadline plus
    /// neard's stop grace) after the last acknowledged heartbeat was sent.
    pub fn kill_at(&self, guard_after: Duration) -> Instant {
        self.acked_sent + guard_after
    }

    /// Whether a heartbeat is on its way.
    pub fn in_flight(&self) -> bool {
        self.pending.is_some()
    }

    /// The next heartbeat, carrying `horizon` (with its age) and, while promoting, what we
    /// `inherited`; marks it in flight.
    pub fn beat(&mut self, horizon: Horizon, inherited: Option<Horizon>) -> Beat {
        let mut record = self.record.clone();
        record.seq += 1;
        record.horizon = Horizon {
            exact: false,
            ..horizon
        };
        record.inherited = inherited;
        let beat = Beat {
            expected_index: self.index,
            value: record.to_bytes(),
            seq: record.seq,
        };
        self.pending = Some(record);
        beat
    }

    /// The heartbeat `seq`, sent at `sent`, was applied at `index`: the lease now runs from
    /// `sent`. An acknowledgement of anything but the heartbeat in flight is ignored.
    pub fn acked(&mut self, seq: u64, sent: Instant, index: u64) {
        match self.pending.take() {
            Some(r) if r.seq == seq => {
                self.record = r;
                self.index = index;
                if sent > self.acked_sent {
                    self.acked_sent = sent;
                }
            }
            other => self.pending = other,
        }
    }

    /// The session was renewed at `at`: moves the lease only under the deterministic
    /// simulation's `lease_from_renew` mutation (the old lease, which ran from renewals).
    pub fn renewed(&mut self, at: Instant) {
        if at > self.acked_sent {
            self.acked_sent = at;
        }
    }

    /// The heartbeat got no verdict (Consul unreachable) or was rejected: the lease does not
    /// move.
    pub fn unacknowledged(&mut self) {
        self.pending = None;
    }

    /// The record to release the lock with after the neard was fenced; `successor` names
    /// the node a planned switchover (its id) hands over to.
    pub fn released(&self, horizon: Horizon, successor: Option<(String, String)>) -> Record {
        let (successor, switchover) = successor.unzip();
        Record {
            seq: self.record.seq + 1,
            state: RecordState::Released,
            horizon,
            successor,
            switchover,
            inherited: None,
            ..self.record.clone()
        }
    }

    /// Whether `seen` is consistent with this node holding the key: our session, our record.
    /// A read from before our last write (its Consul index is lower) says nothing. `Err` says
    /// why the key is not ours.
    pub fn check(&self, seen: &Seen) -> Result<(), Lost> {
        if seen.index < self.index {
            return Ok(());
        }
        let Some(key) = &seen.key else {
            return Err(Lost::Deleted);
        };
        if key.session.as_deref() != Some(self.session.as_str()) {
            return Err(match key.session {
                None => Lost::Released,
                Some(_) => Lost::TakenBy,
            });
        }
        match Record::parse(&key.value) {
            Some(r) if r.session == self.session && r.node_id == self.record.node_id => Ok(()),
            _ => Err(Lost::Overwritten),
        }
    }
}

/// Why the key is no longer this leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// The key was deleted.
    Deleted,
    /// The key has no session: Consul ended ours (agent left, TTL, destroy).
    Released,
    /// Another session holds it.
    TakenBy,
    /// Its value was overwritten by someone else.
    Overwritten,
    /// A heartbeat's index check failed (any of the above, seen by the write).
    CheckFailed,
    /// Consul says our session is gone.
    SessionGone,
}

impl Lost {
    /// For logs.
    pub fn describe(self) -> &'static str {
        match self {
            Lost::Deleted => "the leader key was deleted",
            Lost::Released => "the leader key lost our session (Consul ended it)",
            Lost::TakenBy => "another session holds the leader key",
            Lost::Overwritten => "the leader key was overwritten by someone else",
            Lost::CheckFailed => "the leader key is not as this node left it",
            Lost::SessionGone => "Consul says our session is gone",
        }
    }
}

/// What the watch has seen of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The key (`None`: absent).
    pub key: Option<KeyState>,
    /// Consul's index of the read (`X-Consul-Index`): a read with a lower index than a write
    /// of ours was answered from a state before it.
    pub index: u64,
    /// Since when these value bytes have been seen, continuously (absent counts as a value).
    pub value_since: Instant,
    /// When the last read returned.
    pub read_at: Instant,
}

/// Tracks the leader key as the watch reports it.
#[derive(Debug, Clone, Default)]
pub struct Observer {
    seen: Option<Seen>,
}

/// How a new leader may activate its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The previous holder released cleanly with this horizon: only the height fence remains.
    Clean(Horizon),
    /// Not before `at` (the previous holder has fenced itself by then); then the height fence
    /// against `horizon` (the last one it published, if any), which was not final.
    NotBefore {
        /// Earliest activation.
        at: Instant,
        /// The previous holder's last published horizon.
        horizon: Horizon,
        /// What the previous holder inherited of the leader before it (its record's
        /// `Inherited`), if it was still promoting.
        inherited: Option<Horizon>,
    },
    /// A full `wait` after this acquisition is acknowledged (the key was absent: nothing else
    /// bounds the previous holder).
    AfterAck {
        /// How long after the acknowledgement.
        wait: Duration,
    },
}

/// How to acquire: the transaction's check, and the activation rule that check earns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcquirePlan {
    /// `Some(i)`: check-index `i`; `None`: check-not-exists.
    pub expected_index: Option<u64>,
    /// The activation rule if the acquisition succeeds.
    pub activation: Activation,
}

/// What a standby should do about the key now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandbyMove {
    /// Nothing.
    Wait,
    /// The key is free: acquire it with this plan.
    Acquire(AcquirePlan),
    /// Another session has held the key without a heartbeat for a full wait, and a fresh read
    /// says so: destroy it.
    DestroyHolder(String),
    /// The holder looks silent, but the last read is not fresh (the watch may have been cut
    /// off): read the key again before destroying anything.
    Reread,
    /// Our own session holds the key but we do not lead (an acquisition whose answer was
    /// lost): release it, value unchanged.
    ReleaseOwn,
}

/// A read younger than this is fresh enough to destroy a silent holder on: a standby cut off
/// from Consul must not act on what it saw before the cut.
pub const FRESH_READ: Duration = Duration::from_secs(1);

impl Observer {
    /// A read at `now` that returned `key` with Consul index `index`.
    pub fn observe(&mut self, key: Option<KeyState>, index: u64, now: Instant) {
        let same_value = self
            .seen
            .as_ref()
            .is_some_and(|s| s.key.as_ref().map(|k| &k.value) == key.as_ref().map(|k| &k.value));
        let value_since = match (&self.seen, same_value) {
            (Some(s), true) => s.value_since,
            _ => now,
        };
        self.seen = Some(Seen {
            key,
            index,
            value_since,
            read_at: now,
        });
    }

    /// Forgets what was seen (the watch lost track, e.g. Consul's index went backwards).
    pub fn reset(&mut self) {
        self.seen = None;
    }

    /// The last observation.
    pub fn seen(&self) -> Option<&Seen> {
        self.seen.as_ref()
    }

    /// The current key, if known and present.
    pub fn key(&self) -> Option<&KeyState> {
        self.seen.as_ref().and_then(|s| s.key.as_ref())
    }

    /// The holder's record, if the key holds a kuutamod record.
    pub fn record(&self) -> Option<Record> {
        self.key().and_then(|k| Record::parse(&k.value))
    }

    /// What a standby with session `own` (node `me`) should do at `now`; `wait` is the time
    /// after which a silent holder has surely fenced itself (the TTL); a switchover's released
    /// record is left to its successor for `reserve`.
    ///
    /// `remembered` is the newest `(Term, Seq)` this node has seen: a record older than that is
    /// from a rewound Consul and counts as a foreign value (a TTL after it appeared, and our
    /// own view for the previous leader's horizon), a released one too.
    pub fn standby_move(
        &self,
        own: &str,
        me: &str,
        now: Instant,
        wait: Duration,
        reserve: Duration,
        remembered: Option<(u64, u64)>,
    ) -> StandbyMove {
        let Some(seen) = &self.seen else {
            return StandbyMove::Wait;
        };
        let Some(key) = &seen.key else {
            return StandbyMove::Acquire(AcquirePlan {
                expected_index: None,
                activation: Activation::AfterAck { wait },
            });
        };
        match &key.session {
            Some(s) if s == own => StandbyMove::ReleaseOwn,
            Some(s) => {
                if now < seen.value_since + wait {
                    StandbyMove::Wait
                } else if now <= seen.read_at + FRESH_READ {
                    StandbyMove::DestroyHolder(s.clone())
                } else {
                    StandbyMove::Reread
                }
            }
            None => {
                let record =
                    Record::parse(&key.value).filter(|r| remembered.is_none_or(|m| r.order() >= m));
                if let Some(Record {
                    state: RecordState::Released,
                    successor: Some(s),
                    ..
                }) = &record
                {
                    if s != me && now < seen.value_since + reserve {
                        return StandbyMove::Wait;
                    }
                }
                let activation = match record {
                    Some(r) if r.state == RecordState::Released => Activation::Clean(r.horizon),
                    Some(r) => Activation::NotBefore {
                        at: seen.value_since + wait,
                        horizon: r.horizon,
                        inherited: r.inherited,
                    },
                    None => Activation::NotBefore {
                        at: seen.value_since + wait,
                        horizon: Horizon::default(),
                        inherited: None,
                    },
                };
                StandbyMove::Acquire(AcquirePlan {
                    expected_index: Some(key.index),
                    activation,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
