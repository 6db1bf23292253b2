//! The machine's fixed settings, and the fixes the deterministic simulation may switch off.

use std::time::Duration;

use crate::backoff::BackoffConfig;
use crate::fence::BlockDelays;
use crate::timing::Timing;

/// The machine's fixed settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's id.
    pub node_id: String,
    /// This host's name.
    pub hostname: String,
    /// The validator account.
    pub account: String,
    /// Hot-swap failover (else restart).
    pub hot_swap: bool,
    /// The derived timings.
    pub timing: Timing,
    /// How long a validating neard may report syncing.
    pub syncing_grace: Duration,
    /// neard restart back-off.
    pub backoff: BackoffConfig,
    /// Priority among the standbys (0: never take the lock).
    pub priority: u32,
    /// Silent heights after which a doppelganger alarm clears (0: no detection).
    pub doppelganger_heights: u64,
    /// neard's block production delays (how fast its largest approval target can grow).
    pub block_delays: BlockDelays,
    /// What this node remembered of the lock on disk at start ([`LockMemory`]), if anything.
    pub remembered: Option<crate::lease::LockMemory>,
    /// Fixes switched off, for the deterministic simulation only (they take effect only when
    /// kuutamod is built with the `mutations` feature; never set them elsewhere).
    pub mutations: Mutations,
}

/// Fixes that the deterministic simulation (`dst/`) switches off, to show that it finds the
/// holes they close. Each field restores one earlier behaviour. Without the `mutations` cargo
/// feature the machine ignores them (`cfg!` removes the branches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mutations {
    /// A new leader activates as soon as it holds the lock, without waiting a TTL after the
    /// previous leader's last heartbeat (the session-based fence: agent restarts, key deletes).
    pub no_standby_wait: bool,
    /// A leader ignores what happens to its key (deleted, overwritten, taken).
    pub leader_ignores_key: bool,
    /// A leader's lease runs from its session renewals (the old lease), not only from
    /// acknowledged heartbeats.
    pub lease_from_renew: bool,
    /// A node that stepped down on its lease keeps the lock (the stuck lock).
    pub keep_lock_after_step_down: bool,
    /// The old height fence: open once the head moved past the head at acquisition, or after
    /// 5 s in any case.
    pub timeout_fence: bool,
    /// Promote and keep validating without the guard's acknowledgements.
    pub no_guard_ack: bool,
    /// A new leader's record carries only its own view until its fence opens, not what it
    /// inherited of the leader before it.
    pub no_inherited_horizon: bool,
    /// A lock holder that cannot sign keeps the lock however long (no liveness rule: a
    /// promoting node whose neard syncs, a leader whose head froze).
    pub no_progress_rule: bool,
    /// A node trusts any record in the key, also one older than it has seen (a Consul
    /// snapshot restore bringing back an old release).
    pub trust_rewound_records: bool,
    /// `kuutamoctl pause` is not refused while a switchover is in flight, and a switchover's
    /// named successor does not take its lock in a paused cluster: a pause that races a
    /// switchover leaves a released lock nobody may take.
    pub pause_during_switchover: bool,
    /// The fence's "caught up" rule trusts any tip and any wall clock: a tip that arrived
    /// before the old leader was fenced, a wall clock behind the chain's.
    pub caught_up_any_tip: bool,
    /// A release does not wait for the verdict of a heartbeat on its way, and a node that does
    /// not lead gives its own key back only while its neard is in sync and its guard runs.
    pub release_races_heartbeat: bool,
    /// A switchover without identity: every node that validates acts on the request (not only
    /// the one it names), and kuutamoctl names no target (the leader picks one).
    pub switchover_without_identity: bool,
    /// A poll without `/metrics` forgets the reload counter neard showed before: a hot swap
    /// started right after one cannot be confirmed.
    pub forget_reload_counter: bool,
    /// Blind after a snapshot restore: a rewind does not make a node give its own key back
    /// again at an index it tried, a refused give-back or acquisition does not read the key
    /// afresh, and a refused acquisition is tried again at once.
    pub blind_after_restore: bool,
    /// A node keeps using a session it has not renewed for a TTL (Consul may have invalidated
    /// it, and a snapshot restore may bring it back holding a lock another node took meanwhile).
    pub keep_stale_session: bool,
    /// A node that may have missed writes to the key (it started, or lost its session) trusts
    /// the records it finds at once, as if it had followed the key throughout; and a fence
    /// over a foreign value takes no floor from the horizons records showed.
    pub rejoin_trusts_records: bool,
}

impl Mutations {
    /// Whether mutation `m` is on (always false without the `mutations` feature).
    pub fn on(self, m: fn(&Mutations) -> bool) -> bool {
        cfg!(feature = "mutations") && m(&self)
    }
}
