//! What the machine knows between events: the neard process, the session, and the phase of a
//! promotion, demotion or release with its step.

use crate::clock::Instant;
use crate::fence::Fence;
use crate::lease::Horizon;
use crate::records::NodeRecord;

use super::vocabulary::{GuardOrder, Poll, Role};

/// The neard process as the machine knows it. (One per machine, never moved around: the size
/// of its running variant costs nothing worth a box.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub(super) enum Proc {
    /// Not running; start in `role` at the instant, if any.
    Down(Option<(Role, Instant)>),
    /// Spawn requested.
    Spawning(Role),
    /// Running.
    Up(Up),
    /// SIGTERM sent; SIGKILL at `kill_at`.
    Stopping { pid: u32, kill_at: Instant },
    /// SIGKILL sent; waiting for the exit.
    Dying { pid: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Up {
    pub(super) pid: u32,
    pub(super) role: Role,
    pub(super) started: Instant,
    pub(super) last_ok: Option<Instant>,
    pub(super) poll: Option<Poll>,
    pub(super) syncing_since: Option<Instant>,
    /// Since when its head has been what the last poll showed (our own clock; the first poll
    /// sets it).
    pub(super) head_since: Option<Instant>,
    /// The current head arrived after this instant: the poll before the one that first showed
    /// it (`None` for the head of the first poll).
    pub(super) tip_after: Option<Instant>,
    /// Since when every poll has shown our head [`LAG_HEIGHTS`](super::LAG_HEIGHTS) or more
    /// below the highest head a ready node's record showed before that poll (a neard that
    /// lags while it reports itself in sync).
    pub(super) behind_since: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Session {
    None {
        retry_at: Instant,
    },
    /// Asked for at `sent`.
    Creating {
        sent: Instant,
    },
    Live {
        id: String,
        renew_at: Instant,
        /// When the renew in flight was sent (`None`: none in flight).
        renewing: Option<Instant>,
        /// Consul keeps the session at least a TTL after this instant: when the creation or
        /// the last acknowledged renew was sent. Past that, Consul may have invalidated it,
        /// and a snapshot restore may bring it back to life, holding a lock another node has
        /// taken meanwhile: the node drops it then and never uses it again.
        valid_from: Instant,
    },
}

/// Where a node goes after it stepped down and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum After {
    /// Stay a standby, not acquiring before the instant.
    Standby(Instant),
    /// Exit.
    Exit,
}

/// How a node lets go of the lock after it stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Letgo {
    /// Its key was live after a legitimate activation and neard is fenced now: release with
    /// a released record (the next leader need not wait).
    Clean,
    /// It never activated: release with the value unchanged, so that the next leader's wait
    /// still counts from the previous leader's last heartbeat.
    Unchanged,
    /// It never activated, and its fence's wait for the previous leader is over (that leader
    /// is fenced by now): release with a released record carrying what the fence still waits
    /// for of that leader ([`Fence::inherited`]), so that a ready node takes over without a
    /// TTL wait (docs/failover.md, Lemma 2).
    GiveBack(Horizon),
    /// The key is not ours any more: nothing to release.
    NotOurs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// No lock.
    Idle,
    /// Holds the lock; activating.
    Promoting(Promotion),
    /// The key is live.
    Validating,
    /// Fencing neard.
    Demoting(Demotion),
    /// Fenced; releasing the lock.
    Releasing(Release),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Promotion {
    pub(super) fence: Fence,
    pub(super) acquired: Instant,
    /// Our head when the lock was acquired (for the old fence of [`Mutations::timeout_fence`]).
    pub(super) head0: Option<u64>,
    pub(super) step: PromoteStep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PromoteStep {
    /// Waiting for the guard to acknowledge its deadline, then for the fence.
    Fencing,
    /// Key written, SIGHUP sent; waiting for neard to show it.
    Swapping {
        deadline: Instant,
        reloads_before: Option<u64>,
    },
    /// Restarting neard with the key.
    Restarting,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Demotion {
    pub(super) after: After,
    pub(super) letgo: Letgo,
    pub(super) step: DemoteStep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DemoteStep {
    /// Key removed, SIGHUP sent; waiting until the deadline for neard to show no key with a
    /// reload counter past `reloads_before`.
    Unloading {
        deadline: Instant,
        reloads_before: u64,
    },
    /// neard is being stopped or killed.
    Stopping,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Release {
    /// How: the value written is derived when the release is sent, from the last record
    /// Consul acknowledged.
    pub(super) letgo: Letgo,
    /// The node a clean release hands over to, and the switchover's id.
    pub(super) successor: Option<(String, String)>,
    /// Until when the release waits for the verdict of a heartbeat on its way.
    pub(super) beat_wait_until: Instant,
    pub(super) after: After,
    pub(super) retry_at: Instant,
    pub(super) in_flight: bool,
    pub(super) give_up_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Guard {
    pub(super) alive: bool,
    pub(super) respawning: bool,
    pub(super) next_seq: u64,
    /// Sent, not yet acknowledged: (seq, order, sent at).
    pub(super) pending: Vec<(u64, GuardOrder, Instant)>,
    /// The last arm/disarm order sent (acknowledged or not).
    pub(super) last: Option<GuardOrder>,
    /// The last arm/disarm order acknowledged.
    pub(super) acked: Option<GuardOrder>,
    pub(super) last_sent: Instant,
    pub(super) retry_at: Instant,
}

/// Another node's status record, and when this node last saw it change, by its own clock: a
/// record's age is never read from the writer's wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Peer {
    pub(super) record: NodeRecord,
    pub(super) changed: Instant,
}

/// What a standby has seen of the lock holder's progress: the head its records show, and the
/// sequence numbers of the first and the latest record that showed it. Two heartbeats with one
/// head mean the holder's neard did not advance for a heartbeat interval; two in a row with a
/// head well below ours, that it lags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct HolderProgress {
    pub(super) session: String,
    pub(super) head: u64,
    pub(super) first_seq: u64,
    pub(super) seq: u64,
    /// How many of its records in a row showed a head more than
    /// [`LAG_HEIGHTS`](super::LAG_HEIGHTS) below ours when they arrived: a holder whose neard
    /// lags.
    pub(super) behind: u32,
}
