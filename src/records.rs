//! What the nodes of one validator account tell each other and the operator through Consul,
//! besides the lock: each node's status record, and the cluster's control record (pause, planned
//! switchover), under `kuutamod/<account>/`. `kuutamoctl` reads and writes them from any host
//! with a Consul agent. None of this is needed for safety: the lock and its fence
//! ([`crate::lease`]) are; these records only steer who takes the lock, and when.

use serde::{Deserialize, Serialize};

/// The prefix of an account's records.
pub fn prefix(account: &str) -> String {
    format!("kuutamod/{account}/")
}

/// The key of node `node_id`'s status record.
pub fn node_key(account: &str, node_id: &str) -> String {
    format!("kuutamod/{account}/nodes/{node_id}")
}

/// The key of the account's control record.
pub fn control_key(account: &str) -> String {
    format!("kuutamod/{account}/control")
}

/// A node's status, published by the node itself on every change and every
/// [`RECORD_INTERVAL`](crate::timing::RECORD_INTERVAL).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node id.
    pub node_id: String,
    /// Host name.
    pub hostname: String,
    /// A random id of the kuutamod process that wrote the record (new at every start): a
    /// record of our node id written by another process while we run is a second host with
    /// our node id.
    #[serde(default)]
    pub instance: Option<String>,
    /// kuutamod's state (`Voting`, `Validating`, ...).
    pub state: String,
    /// Whether neard is in sync.
    pub synced: bool,
    /// neard's head height at the last poll.
    pub head: Option<u64>,
    /// neard's version.
    pub neard_version: Option<String>,
    /// `restart` or `hot-swap`.
    pub failover_mode: String,
    /// The node's priority (0: never promoted).
    pub priority: u32,
    /// Whether this node sees the cluster paused.
    pub paused: bool,
    /// Whether this node would take over now (a synced, unpaused standby with a guard).
    pub may_take_over: bool,
    /// The node's Consul session, if any.
    pub session: Option<String>,
    /// Unix ms since which the node validates, while it does.
    pub validating_since_ms: Option<u64>,
    /// Unix ms at which this node's neard was last fenced after validating (a step-down).
    #[serde(default)]
    pub stepped_down_ms: Option<u64>,
    /// The switchover this node is working on as leader, and how it goes.
    pub switchover: Option<SwitchoverStatus>,
    /// Unix ms of this record.
    pub updated_ms: u64,
}

/// A leader's progress on a switchover request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverStatus {
    /// The request's id.
    pub id: String,
    /// What is happening (`waiting for a maintenance window`, `handing over to node1`, or why
    /// it cannot be done).
    pub status: String,
    /// Whether it failed for good.
    pub failed: bool,
}

/// The account's control record, written by `kuutamoctl` (pause, a switchover request) and by
/// the node that ends a switchover (its outcome), always with check-and-set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// No automatic failover and no neard restarts while set. Safety fences stay active.
    #[serde(default)]
    pub paused: bool,
    /// A planned hand-over, while it is pending.
    #[serde(default)]
    pub switchover: Option<Switchover>,
    /// How the last switchover ended.
    #[serde(default)]
    pub done: Option<SwitchoverDone>,
}

/// A planned hand-over request: one operation with an identity. Only `from`, the node that
/// validated when it was requested, carries it out, once, to `to`, chosen when it was
/// requested; the first node that validates after it (or `from`, when it cannot) ends it by
/// moving it to [`Control::done`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Switchover {
    /// Unique id of the request.
    pub id: String,
    /// The node that validated when the request was made; only it hands over.
    #[serde(default)]
    pub from: String,
    /// Its Consul session then: a `from` that restarted since does not act on the request.
    #[serde(default)]
    pub from_session: Option<String>,
    /// The node to hand over to, chosen when the request was made.
    #[serde(default)]
    pub to: Option<String>,
    /// Wait until neard says our account has nothing to produce for a while.
    #[serde(default)]
    pub in_window: bool,
    /// How long after a node first saw the request it may still start the hand-over (ms; by
    /// that node's own clock). 0: no limit.
    #[serde(default)]
    pub timeout_ms: u64,
}

/// How a switchover ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverDone {
    /// The request's id.
    pub id: String,
    /// Whether `to` validates after a planned hand-over from `from`, as asked.
    pub ok: bool,
    /// The node that validated when it ended (the one that ended it), if any.
    #[serde(default)]
    pub leader: Option<String>,
    /// What happened, in words.
    pub outcome: String,
}

impl Control {
    /// Parses a control record; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<Control> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Ends switchover `done.id`: the pending request is replaced by its outcome. `false`
    /// (and nothing changed) when that request is not pending: it ended already, or was
    /// cancelled.
    pub fn finish(&mut self, done: &SwitchoverDone) -> bool {
        if self.switchover.as_ref().is_none_or(|s| s.id != done.id) {
            return false;
        }
        self.switchover = None;
        self.done = Some(done.clone());
        true
    }
}

impl NodeRecord {
    /// Parses a node record; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<NodeRecord> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Whether the record is recent enough, at Unix ms `now_ms`, to describe a running node: a
    /// node writes its record at least every [`RECORD_INTERVAL`](crate::timing::RECORD_INTERVAL);
    /// one three intervals old is a node that is gone.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        let stale =
            3 * u64::try_from(crate::timing::RECORD_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(self.updated_ms) <= stale
    }
}

/// A random id for this kuutamod process's records ([`NodeRecord::instance`]).
pub fn new_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| u.trim().to_string())
        .unwrap_or_else(|_| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            format!("{:x}-{nanos:x}", std::process::id())
        })
}

/// What the records under our own node id say about who else uses it.
#[derive(Debug, Clone, Default)]
pub struct OwnId {
    /// Our own record has been seen under our key (we wrote, and the watch saw it).
    seen_ours: bool,
    /// The store's index of the last record of another process seen after ours, and how many
    /// such writes there were.
    other: Option<u64>,
    others: u32,
    /// Another process writes our node id: its host name.
    pub conflict: Option<String>,
}

impl OwnId {
    /// The record under our node id as the watch read it (written at the store's `index`),
    /// with our `instance`. Another instance's record before we saw our own is our previous
    /// run's. After it, one write of another instance may still be a dead one's (our previous
    /// run's write that landed late, or a snapshot restore bringing it back); a second one is a
    /// process that runs and writes our node id, whatever host it names (cloned machines share
    /// host names).
    pub fn observe(&mut self, record: &NodeRecord, index: u64, instance: &str) -> Option<&str> {
        if record.instance.as_deref() == Some(instance) {
            self.seen_ours = true;
            return None;
        }
        if !self.seen_ours || self.conflict.is_some() || self.other == Some(index) {
            return None;
        }
        self.other = Some(index);
        self.others += 1;
        if self.others >= 2 {
            self.conflict = Some(record.hostname.clone());
            return self.conflict.as_deref();
        }
        None
    }

    /// Whether another process has been found writing our node id.
    pub fn conflicted(&self) -> bool {
        self.conflict.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_three_intervals_old_is_not_fresh() {
        let r = NodeRecord {
            updated_ms: 1_000_000,
            ..NodeRecord::default()
        };
        let limit = 1_000_000 + 3 * 120_000;
        assert!(r.is_fresh(limit));
        assert!(!r.is_fresh(limit + 1));
        // A record from a clock ahead of ours is fresh.
        assert!(r.is_fresh(0));
    }

    #[test]
    fn another_instance_under_our_id_is_a_conflict_once_it_writes_twice_after_our_own_record() {
        let mut own = OwnId::default();
        let rec = |instance: &str, host: &str| NodeRecord {
            node_id: "n1".into(),
            hostname: host.into(),
            instance: Some(instance.into()),
            ..NodeRecord::default()
        };
        // Our previous run's record, then ours: no conflict.
        assert_eq!(own.observe(&rec("old", "a"), 5, "me"), None);
        assert_eq!(own.observe(&rec("me", "a"), 6, "me"), None);
        // Our previous run's record once more (a late write, or a snapshot restore brought it
        // back), read again and again as other keys change: no conflict.
        assert_eq!(own.observe(&rec("old", "a"), 7, "me"), None);
        assert_eq!(own.observe(&rec("old", "a"), 7, "me"), None);
        // A second write of another process, on a host of the same name (cloned machines):
        // a conflict, named once.
        assert_eq!(own.observe(&rec("other", "a"), 9, "me"), Some("a"));
        assert_eq!(own.observe(&rec("other", "a"), 10, "me"), None);
        assert_eq!(own.conflict.as_deref(), Some("a"));
        assert!(own.conflicted());
    }

    #[test]
    fn keys_and_round_trips() {
        assert_eq!(node_key("pool.near", "n1"), "kuutamod/pool.near/nodes/n1");
        assert_eq!(control_key("pool.near"), "kuutamod/pool.near/control");
        assert!(node_key("a", "b").starts_with(&prefix("a")));
        let r = NodeRecord {
            node_id: "n1".into(),
            priority: 2,
            ..NodeRecord::default()
        };
        assert_eq!(NodeRecord::parse(&r.to_bytes()), Some(r));
        assert_eq!(Control::parse(b"{}"), Some(Control::default()));
        assert_eq!(Control::parse(b"garbage"), None);
    }
}
