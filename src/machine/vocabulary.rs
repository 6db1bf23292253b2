//! The machine's vocabulary: its inputs ([`Event`]), outputs ([`Command`]), and the states and
//! reasons it reports.

use std::time::Duration;

use crate::clock::Instant;
use crate::doppelganger::{Change, Production};
use crate::lease::{KeyState, LockMemory, Lost};
use crate::records::{Control, NodeRecord, SwitchoverStatus};

/// The role neard is started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Without the validator key, with this host's own (voter) node key and the voter address.
    Voter,
    /// With the validator key, the validator node key and the validator address.
    Validator,
}

/// The states kuutamod reports (`kuutamod_state{type}` and `/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// neard was (re)started and has not answered `/status` yet, or is not running.
    Startup,
    /// neard answers but is not in sync.
    Syncing,
    /// neard is in sync; a Consul session is being created.
    Registering,
    /// A session exists; this node is a standby.
    Voting,
    /// This node holds the lock; the key is not live yet (waiting for the guard, the previous
    /// leader's fence and the height fence).
    Promoting,
    /// This node's neard holds the validator key (or may still hold it while being fenced).
    Validating,
    /// Stopping.
    Shutdown,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 7] = [
        State::Startup,
        State::Syncing,
        State::Registering,
        State::Voting,
        State::Promoting,
        State::Validating,
        State::Shutdown,
    ];

    /// The name used in logs and in `kuutamod_state{type=...}`.
    pub fn name(self) -> &'static str {
        match self {
            State::Startup => "Startup",
            State::Syncing => "Syncing",
            State::Registering => "Registering",
            State::Voting => "Voting",
            State::Promoting => "Promoting",
            State::Validating => "Validating",
            State::Shutdown => "Shutdown",
        }
    }
}

/// Which validator key neard's `/status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyShown {
    /// None.
    None,
    /// Ours.
    Ours,
    /// Another one.
    Other,
}

/// One successful poll of neard's `/status` (and `/metrics`, when asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poll {
    /// `sync_info.syncing`.
    pub syncing: bool,
    /// `sync_info.latest_block_height`.
    pub head: u64,
    /// `sync_info.latest_block_time` as unix ms, when it parses.
    pub block_ms: Option<u64>,
    /// Unix ms at which the poll was answered.
    pub wall_ms: u64,
    /// The validator key neard has loaded.
    pub key: KeyShown,
    /// Whether this neard drops a key on SIGHUP (>= 2.3), when its version says.
    pub hot_swap_capable: Option<bool>,
    /// `near_largest_target_height`, when `/metrics` was polled and has it.
    pub target: Option<u64>,
    /// `near_config_reloads_total`, when `/metrics` was polled and has it.
    pub reloads: Option<u64>,
    /// Our account's production and this neard's own, when `/metrics` was polled and has them.
    pub production: Option<Production>,
}

/// What the guard is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardOrder {
    /// Kill neard `pid` at `deadline` unless told otherwise first.
    Arm {
        /// neard's pid.
        pid: u32,
        /// When.
        deadline: Instant,
    },
    /// Nothing to enforce.
    Disarm,
    /// Only answer (a liveness check).
    Ping,
}

/// Inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed (a timer of [`Machine::next_deadline`] or a periodic tick).
    Tick,
    /// neard was spawned (its home prepared for `role`).
    NeardSpawned {
        /// Its pid.
        pid: u32,
        /// Its role.
        role: Role,
    },
    /// neard could not be spawned (or its home prepared).
    NeardSpawnFailed,
    /// neard exited and was reaped.
    NeardExited {
        /// Its pid.
        pid: u32,
    },
    /// SIGKILL was delivered to neard (it cannot sign any more; it may not be reaped yet).
    NeardKilled {
        /// Its pid.
        pid: u32,
    },
    /// A successful poll.
    Status(Poll),
    /// A failed poll (no answer in time, an error status, garbage).
    StatusFailed,
    /// A session was created.
    SessionCreated(String),
    /// Creating a session failed.
    SessionCreateFailed,
    /// A renew request sent at `sent` succeeded.
    Renewed {
        /// The session.
        session: String,
    },
    /// A renew failed (no verdict).
    RenewFailed {
        /// The session.
        session: String,
    },
    /// Consul says the session does not exist.
    SessionGone(String),
    /// The heartbeat with sequence `seq`, sent at `sent`, was applied at `index`.
    HeartbeatAcked {
        /// Its sequence number.
        seq: u64,
        /// When it was sent.
        sent: Instant,
        /// The key's new index.
        index: u64,
    },
    /// The heartbeat's check failed: the key is not as we left it.
    HeartbeatRejected,
    /// The heartbeat got no verdict.
    HeartbeatFailed,
    /// A read of the leader key (`None`: absent) answered at Consul index `index`.
    KeyObserved {
        /// The key.
        key: Option<KeyState>,
        /// `X-Consul-Index` of the answer.
        index: u64,
    },
    /// The watch lost track (an index reset): forget what was seen.
    WatchReset,
    /// A fresh read of the key failed: what was seen stands, as old as it is.
    ReadFailed,
    /// A watch query failed (Consul unreachable).
    WatchFailed,
    /// The acquisition sent at `sent` succeeded; the key is at `index`.
    Acquired {
        /// When it was sent.
        sent: Instant,
        /// The key's index.
        index: u64,
    },
    /// The acquisition's check or lock failed (someone else was faster, or the key changed).
    AcquireRejected,
    /// The acquisition got no verdict.
    AcquireFailed,
    /// The release got an answer: `true` if it released our lock, `false` if the key was not
    /// at the expected index or not held by our session (nothing was written).
    Released(bool),
    /// The release got no verdict.
    ReleaseFailed,
    /// A destroy of `session` got an answer (or failed, `ok` false).
    Destroyed {
        /// The session.
        session: String,
        /// Whether Consul confirmed.
        ok: bool,
    },
    /// The guard acknowledged every order up to `seq`.
    GuardAck(u64),
    /// The guard refused order `seq`.
    GuardNack(u64),
    /// The guard is gone, or its pipe is full. The supervisor has killed it (and with it
    /// neard, the guard's child) before this is fed.
    GuardLost,
    /// A new guard process runs.
    GuardSpawned,
    /// No guard could be started.
    GuardSpawnFailed,
    /// The host was suspended for this long.
    ClockJump(Duration),
    /// SIGTERM or SIGINT.
    Shutdown,
    /// SIGUSR1: hand the lock over.
    HandOver,
    /// The account's records as the cluster watch read them: the control record, and the
    /// other nodes' status records (stale and expired ones already dropped).
    ClusterObserved {
        /// Pause and switchover.
        control: Control,
        /// The other nodes.
        peers: Vec<NodeRecord>,
    },
    /// neard's version, when it changes.
    NeardVersion(String),
    /// neard's maintenance windows for our account (height ranges, end exclusive), or why
    /// they could not be read.
    Windows(Result<Vec<(u64, u64)>, String>),
}

/// How fast, and whether with `/metrics`, the supervisor polls neard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polling {
    /// Time between polls.
    pub interval: Duration,
    /// Also read `/metrics` (largest target, reload counter).
    pub metrics: bool,
}

/// Outputs, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Prepare neard's home for `role` (the validator key installed only for
    /// [`Role::Validator`], removed otherwise) and spawn neard.
    StartNeard(Role),
    /// SIGTERM to neard.
    TermNeard,
    /// SIGKILL to neard; report [`Event::NeardKilled`] once delivered.
    KillNeard,
    /// Hot swap: write the validator key into the running neard's home.
    InstallKey,
    /// Remove the validator key file from neard's home (durably).
    RemoveKey,
    /// SIGHUP to neard (reload the key).
    Sighup,
    /// Change how neard is polled.
    SetPolling(Polling),
    /// Create a session.
    CreateSession,
    /// Renew the session.
    Renew(String),
    /// Read the leader key now (consistently) and report [`Event::KeyObserved`].
    ReadKey,
    /// Write a heartbeat: check the key is at `expected_index`, lock it with `value`.
    Heartbeat {
        /// Our session.
        session: String,
        /// The check.
        expected_index: u64,
        /// The record.
        value: Vec<u8>,
        /// Its sequence number.
        seq: u64,
    },
    /// Acquire the key: check-index (or check-not-exists for `None`), then lock with `value`.
    Acquire {
        /// Our session.
        session: String,
        /// The check.
        expected_index: Option<u64>,
        /// The record.
        value: Vec<u8>,
    },
    /// Release our lock, writing `value`.
    Release {
        /// Our session.
        session: String,
        /// The index the key must still have (the last one we wrote or saw with our lock): a
        /// release that arrives late must not release a later term of the same session.
        expected_index: u64,
        /// The value.
        value: Vec<u8>,
    },
    /// Destroy a session (ours, or a silent holder's).
    DestroySession(String),
    /// Our session was not renewed for a TTL: the machine dropped it (for the log; nothing is
    /// sent, and the session is never used again).
    SessionAbandoned(String),
    /// Send an order to the guard.
    Guard {
        /// Sequence number the guard acknowledges.
        seq: u64,
        /// The order.
        order: GuardOrder,
    },
    /// Kill the guard process and start a new one.
    RespawnGuard,
    /// Count and log a step-down.
    SteppedDown(StepDown),
    /// The key is confirmed live, `took` after the lock was acquired.
    Activated {
        /// Lock to live key.
        took: Duration,
        /// Whether it was a hot swap (else a restart with the key).
        hot_swap: bool,
    },
    /// A hot swap fell back to a restart for this reason.
    HotSwapFallback(&'static str),
    /// Publish this node's status record.
    Publish(NodeFacts),
    /// Persist what this node remembers of the lock (atomically, in its state directory).
    Remember(LockMemory),
    /// The key shows an older record, at a lower Consul index, than this node has seen:
    /// Consul's state was rewound (a snapshot restore). Log and count it.
    ConsulRewound {
        /// What the key shows now: `(Term, Seq)` and its index.
        seen: (u64, u64, u64),
        /// What this node had seen.
        remembered: LockMemory,
    },
    /// End the switchover request `done.id`: in the control record, with check-and-set,
    /// replace the request by its outcome (nothing, if the request is no longer there).
    FinishSwitchover(crate::records::SwitchoverDone),
    /// Ask neard for our account's maintenance windows; report [`Event::Windows`].
    QueryWindows,
    /// The doppelganger alarm changed (log it).
    Doppelganger(Change),
    /// Exit the process (status 0).
    Exit,
}

/// What a node's status record says, as the machine knows it (the supervisor adds wall-clock
/// times).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// The reported state.
    pub state: State,
    /// neard in sync.
    pub synced: bool,
    /// neard's head.
    pub head: Option<u64>,
    /// neard's version.
    pub neard_version: Option<String>,
    /// This node's priority.
    pub priority: u32,
    /// Whether the cluster is paused.
    pub paused: bool,
    /// Whether this node would take over now.
    pub may_take_over: bool,
    /// The session.
    pub session: Option<String>,
    /// How long the key has been live, while it is.
    pub validating_for: Option<Duration>,
    /// How long ago this node's neard was last fenced after validating.
    pub fenced_for: Option<Duration>,
    /// The switchover this node works on as leader.
    pub switchover: Option<SwitchoverStatus>,
}

/// Why a node stopped validating (the `reason` label of `kuutamod_step_downs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepDown {
    /// No acknowledged heartbeat before the lease deadline.
    LeaseExpired,
    /// The key is not ours any more.
    KeyLost(Lost),
    /// neard exited.
    NeardExited,
    /// neard stopped answering `/status`.
    NeardFailed,
    /// neard kept reporting syncing past the grace.
    Syncing,
    /// The guard was lost (it did not acknowledge, refused, exited, or could not be reached),
    /// and neard died with it.
    GuardLost,
    /// The host was suspended.
    ClockJump,
    /// SIGUSR1.
    HandOver,
    /// SIGTERM/SIGINT.
    Shutdown,
    /// A restart with the key did not come up in time.
    BootTimeout,
    /// The node held the lock without signing for
    /// [`Timing::progress_grace`](crate::timing::Timing::progress_grace) while another node was
    /// ready: the lock goes to that node (docs/failover.md, "Liveness").
    NoProgress(Stuck),
}

/// Why a lock holder is not signing (see [`StepDown::NoProgress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// Promoting (the key not live yet), its neard reports syncing.
    Syncing,
    /// Its neard's head stayed at `own` while a ready node's record shows `peer`, a higher one:
    /// the chain moves on without this node (frozen, cut off, or on a fork of its own).
    Head {
        /// Our neard's head, unchanged for the grace.
        own: u64,
        /// The highest head a ready node's record shows.
        peer: u64,
        /// Whether our key may be live (validating) or never went live (promoting).
        live: bool,
    },
    /// Its neard's head moves, but at every poll for the grace it was
    /// [`LAG_HEIGHTS`](super::LAG_HEIGHTS) or more below the head a ready node's record had
    /// shown before: a neard that lags while it reports itself in sync signs nothing the chain
    /// takes.
    Behind {
        /// Our neard's head at the last poll.
        own: u64,
        /// The highest head a ready node's record shows.
        peer: u64,
        /// Whether our key may be live (validating) or never went live (promoting).
        live: bool,
    },
}

impl StepDown {
    /// Every label, so the metric's series exist from the start.
    pub const LABELS: [&'static str; 11] = [
        "lease_expired",
        "key_lost",
        "neard_exited",
        "neard_failed",
        "syncing",
        "guard_lost",
        "clock_jump",
        "hand_over",
        "shutdown",
        "boot_timeout",
        "no_progress",
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            StepDown::LeaseExpired => "lease_expired",
            StepDown::KeyLost(_) => "key_lost",
            StepDown::NeardExited => "neard_exited",
            StepDown::NeardFailed => "neard_failed",
            StepDown::Syncing => "syncing",
            StepDown::GuardLost => "guard_lost",
            StepDown::ClockJump => "clock_jump",
            StepDown::HandOver => "hand_over",
            StepDown::Shutdown => "shutdown",
            StepDown::BootTimeout => "boot_timeout",
            StepDown::NoProgress(_) => "no_progress",
        }
    }

    /// For logs.
    pub fn describe(self) -> String {
        match self {
            StepDown::LeaseExpired => {
                "no acknowledged heartbeat before the lease deadline".to_string()
            }
            StepDown::KeyLost(l) => l.describe().to_string(),
            StepDown::NeardExited => "neard exited".into(),
            StepDown::NeardFailed => "neard stopped answering /status".into(),
            StepDown::Syncing => "neard kept reporting syncing past the syncing grace".into(),
            StepDown::GuardLost => "the guard process was lost (neard died with it)".into(),
            StepDown::ClockJump => "the host was suspended".into(),
            StepDown::HandOver => "asked to hand over (SIGUSR1 or kuutamoctl switchover)".into(),
            StepDown::Shutdown => "asked to stop".into(),
            StepDown::BootTimeout => "neard did not come up with the key in time".into(),
            StepDown::NoProgress(Stuck::Syncing) => {
                "our neard reports syncing while another node is ready; it gets the lock (our key never went live)".into()
            }
            StepDown::NoProgress(Stuck::Head { own, peer, live }) => format!(
                "our neard's head stayed at {own} while a ready node's is at {peer}; it gets the lock ({})",
                if live { "our neard is fenced first" } else { "our key never went live" }
            ),
            StepDown::NoProgress(Stuck::Behind { own, peer, live }) => format!(
                "our neard lags: its head {own} is still below a ready node's {peer}; it gets the lock ({})",
                if live { "our neard is fenced first" } else { "our key never went live" }
            ),
        }
    }
}
