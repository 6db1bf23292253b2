//! Every decision kuutamod makes, as one pure state machine.
//!
//! [`Machine::handle`] takes an [`Event`] (a poll result, a Consul answer, a signal, the time
//! passing) with the current time and returns the [`Command`]s to carry out. It does no I/O: the
//! [`supervisor`](crate::supervisor) runs the commands and turns their outcomes into events, and
//! unit tests (and a simulator) drive it with virtual time. It is *level-triggered*: an event
//! only updates what the machine knows; [`Machine::reconcile`] then derives from that everything
//! that must happen now, so a lost or repeated event cannot leave a step undone.
//!
//! The order of reconciliation is the order of priorities: first the fence (a node whose neard
//! may hold the key and can no longer be sure it is the leader stops it), then the progress of
//! a promotion, demotion or release, then the session and the lease, and last a standby's
//! moves. The lock is released only after neard is fenced, and the key goes live only after
//! the guard has acknowledged its deadline and the [`fence`](crate::fence) has opened; see
//! `docs/failover.md` for the argument.

use std::time::Duration;

use crate::backoff::{Backoff, BackoffConfig};
use crate::clock::Instant;
use crate::doppelganger::{Change, Cluster, Doppelganger};
use crate::fence::{Closed, Fence, LagTracker, OwnView};
use crate::lease::{
    AcquirePlan, Horizon, KeyState, Lease, Lost, Observer, Record, RecordState, StandbyMove,
};
use crate::neard::rpc::Production;
use crate::neard::Role;
use crate::records::{Control, NodeRecord, SwitchoverStatus};
use crate::timing::{
    Timing, FAST_POLL, RECORD_INTERVAL, STATUS_FAIL_AFTER, STATUS_INTERVAL, SWITCHOVER_WINDOW,
    VALIDATOR_BOOT_LIMIT,
};

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
    /// The release got an answer: `true` if it released our lock.
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
    /// The guard is gone, refused an order, or its pipe is full.
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
        /// The value.
        value: Vec<u8>,
    },
    /// Destroy a session (ours, or a silent holder's).
    DestroySession(String),
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

impl NodeFacts {
    /// Whether `other` says something new (head and durations move all the time and are only
    /// refreshed periodically).
    fn differs(&self, other: &NodeFacts) -> bool {
        let strip = |f: &NodeFacts| NodeFacts {
            head: None,
            validating_for: f.validating_for.map(|_| Duration::ZERO),
            fenced_for: f.fenced_for.map(|_| Duration::ZERO),
            ..f.clone()
        };
        strip(self) != strip(other)
    }
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
    /// The guard did not acknowledge.
    GuardLost,
    /// The host was suspended.
    ClockJump,
    /// SIGUSR1.
    HandOver,
    /// SIGTERM/SIGINT.
    Shutdown,
    /// A restart with the key did not come up in time.
    BootTimeout,
}

impl StepDown {
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
            StepDown::GuardLost => "the guard process did not acknowledge".into(),
            StepDown::ClockJump => "the host was suspended".into(),
            StepDown::HandOver => "asked to hand over (SIGUSR1)".into(),
            StepDown::Shutdown => "asked to stop".into(),
            StepDown::BootTimeout => "neard did not come up with the key in time".into(),
        }
    }
}

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
}

/// The neard process as the machine knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Proc {
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
struct Up {
    pid: u32,
    role: Role,
    started: Instant,
    last_ok: Option<Instant>,
    poll: Option<Poll>,
    syncing_since: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Session {
    None {
        retry_at: Instant,
    },
    Creating,
    Live {
        id: String,
        renew_at: Instant,
        renewing: bool,
    },
}

/// Where a node goes after it stepped down and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Stay a standby, not acquiring before the instant.
    Standby(Instant),
    /// Exit.
    Exit,
}

/// How a node lets go of the lock after it stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Letgo {
    /// Its key was live after a legitimate activation and neard is fenced now: release with
    /// a released record (the next leader need not wait).
    Clean,
    /// It never activated: release with the value unchanged, so that the next leader's wait
    /// still counts from the previous leader's last heartbeat.
    Unchanged,
    /// The key is not ours any more: nothing to release.
    NotOurs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
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
struct Promotion {
    fence: Fence,
    acquired: Instant,
    step: PromoteStep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PromoteStep {
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
struct Demotion {
    after: After,
    letgo: Letgo,
    step: DemoteStep,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DemoteStep {
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
struct Release {
    value: Vec<u8>,
    after: After,
    retry_at: Instant,
    in_flight: bool,
    give_up_at: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Guard {
    alive: bool,
    respawning: bool,
    next_seq: u64,
    /// Sent, not yet acknowledged: (seq, order, sent at).
    pending: Vec<(u64, GuardOrder, Instant)>,
    /// The last arm/disarm order sent (acknowledged or not).
    last: Option<GuardOrder>,
    /// The last arm/disarm order acknowledged.
    acked: Option<GuardOrder>,
    last_sent: Instant,
    retry_at: Instant,
}

/// How often a switchover waiting for a maintenance window asks neard for them again (they
/// change with the epoch).
const WINDOWS_REFRESH: Duration = Duration::from_secs(10);

/// How long to wait before trying again to start a guard that could not be started.
const GUARD_RETRY: Duration = Duration::from_secs(1);

/// The machine.
#[derive(Debug, Clone)]
pub struct Machine {
    cfg: Config,
    now: Instant,
    proc: Proc,
    /// What to start once a deliberately stopped neard is gone.
    then_start: Option<Role>,
    backoff: Backoff,
    lag: LagTracker,
    /// The current neard may hold the validator key.
    key_live: bool,
    /// The key file is in neard's home.
    key_file: bool,
    hot_swap_capable: Option<bool>,
    /// The largest horizon seen while the key was live (or about to be).
    horizon: Horizon,
    session: Session,
    lease: Option<Lease>,
    /// When the leader's next heartbeat is due.
    beat_at: Instant,
    observer: Observer,
    acquiring: Option<(AcquirePlan, Record)>,
    destroying: Option<String>,
    reading: bool,
    releasing_own: bool,
    holdoff_until: Option<Instant>,
    phase: Phase,
    guard: Guard,
    exiting: bool,
    /// While exiting: None = session not yet destroyed, Some(false) = in flight, Some(true) =
    /// done (or failed: the TTL ends it).
    exit_destroy: Option<bool>,
    polling: Option<Polling>,
    exited: bool,
    control: Control,
    peers: Vec<NodeRecord>,
    /// The switchover request last acted on (or found impossible), by id.
    handled_switchover: Option<String>,
    /// The leader's progress on the current switchover.
    switchover: Option<SwitchoverStatus>,
    /// The node the next clean release is meant for (a switchover).
    successor: Option<String>,
    windows: Option<Result<Vec<(u64, u64)>, String>>,
    windows_pending: bool,
    windows_at: Instant,
    published: Option<NodeFacts>,
    published_at: Instant,
    /// neard was started at least once (a paused cluster does not restart it).
    started_once: bool,
    neard_version: Option<String>,
    activated_at: Option<Instant>,
    fenced_at: Option<Instant>,
    doppelganger: Doppelganger,
}

impl Machine {
    /// A machine at `now`: neard is started as voter at once, and a guard is wanted.
    pub fn new(cfg: Config, now: Instant) -> Machine {
        Machine {
            backoff: Backoff::new(cfg.backoff),
            cfg: cfg.clone(),
            now,
            proc: Proc::Down(Some((Role::Voter, now))),
            then_start: None,
            lag: LagTracker::default(),
            key_live: false,
            key_file: false,
            hot_swap_capable: None,
            horizon: Horizon::default(),
            session: Session::None { retry_at: now },
            lease: None,
            beat_at: now,
            observer: Observer::default(),
            acquiring: None,
            destroying: None,
            reading: false,
            releasing_own: false,
            holdoff_until: None,
            phase: Phase::Idle,
            guard: Guard {
                alive: false,
                respawning: false,
                next_seq: 1,
                pending: Vec::new(),
                last: None,
                acked: None,
                last_sent: now,
                retry_at: now,
            },
            exiting: false,
            exit_destroy: None,
            polling: None,
            exited: false,
            control: Control::default(),
            peers: Vec::new(),
            handled_switchover: None,
            switchover: None,
            successor: None,
            windows: None,
            windows_pending: false,
            windows_at: now,
            published: None,
            published_at: now,
            started_once: false,
            neard_version: None,
            activated_at: None,
            fenced_at: None,
            doppelganger: Doppelganger::new(
                cfg.doppelganger_heights,
                cfg.timing.heartbeat_interval,
            ),
        }
    }

    /// The state to report. A node whose neard may hold the key reports Validating, also while
    /// it is being fenced: the state never claims neard is keyless before it is.
    pub fn state(&self) -> State {
        if self.key_live || matches!(self.phase, Phase::Validating | Phase::Demoting(_)) {
            return State::Validating;
        }
        if self.exiting {
            return State::Shutdown;
        }
        if let Phase::Promoting(_) = self.phase {
            return State::Promoting;
        }
        match &self.proc {
            Proc::Up(up) => match &up.poll {
                None => State::Startup,
                Some(p) if p.syncing => State::Syncing,
                Some(_) => match self.session {
                    Session::Live { .. } => State::Voting,
                    _ => State::Registering,
                },
            },
            _ => State::Startup,
        }
    }

    /// Whether the guard process runs and has acknowledged every order in time.
    pub fn guard_ok(&self) -> bool {
        self.guard.alive
            && self
                .guard
                .pending
                .first()
                .is_none_or(|(_, _, sent)| self.now < *sent + self.cfg.timing.guard_ack)
    }

    /// Whether the cluster is paused (`kuutamoctl pause`).
    pub fn paused(&self) -> bool {
        self.control.paused
    }

    /// Whether neard may hold the validator key now.
    pub fn key_live(&self) -> bool {
        self.key_live
    }

    /// Whether the node holds the lock (as far as it knows).
    pub fn holds_lock(&self) -> bool {
        self.lease.is_some()
    }

    /// Whether the machine has finished (after [`Command::Exit`]).
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// The lease deadline, while it matters (the key is or will soon be live).
    pub fn lease_deadline(&self) -> Option<Instant> {
        let matters = self.key_live
            || matches!(
                self.phase,
                Phase::Promoting(_) | Phase::Validating | Phase::Demoting(_)
            );
        self.lease.as_ref().filter(|_| matters).map(Lease::deadline)
    }

    /// Our session, if any.
    pub fn session(&self) -> Option<&str> {
        match &self.session {
            Session::Live { id, .. } => Some(id),
            _ => None,
        }
    }

    /// neard's pid, while a process exists.
    pub fn neard_pid(&self) -> Option<u32> {
        match &self.proc {
            Proc::Up(up) => Some(up.pid),
            Proc::Stopping { pid, .. } | Proc::Dying { pid } => Some(*pid),
            _ => None,
        }
    }

    /// neard's last poll.
    pub fn last_poll(&self) -> Option<Poll> {
        match &self.proc {
            Proc::Up(up) => up.poll,
            _ => None,
        }
    }

    /// The fence of the promotion in progress, if any, and why it is still closed.
    pub fn fence_status(&self) -> Option<Result<(), Closed>> {
        let Phase::Promoting(p) = &self.phase else {
            return None;
        };
        let own = self.own_view()?;
        Some(p.fence.check(self.now, own, self.lag.lag()))
    }

    /// Feeds one event at `now`; returns the commands to carry out, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        self.now = now.max(self.now);
        let mut out = Vec::new();
        if !self.exited {
            self.apply(event, &mut out);
            self.reconcile(&mut out);
        }
        out
    }

    /// The next instant at which time alone changes a decision.
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = &self.cfg.timing;
        let mut d: Vec<Instant> = Vec::new();
        match &self.proc {
            Proc::Down(Some((_, at))) => d.push(*at),
            Proc::Stopping { kill_at, .. } => d.push(*kill_at),
            Proc::Up(up) => {
                if let Some(ok) = up.last_ok {
                    d.push(ok + STATUS_FAIL_AFTER);
                }
                if let Some(s) = up.syncing_since {
                    d.push(s + self.cfg.syncing_grace);
                }
                if up.role == Role::Validator && up.last_ok.is_none() {
                    d.push(up.started + VALIDATOR_BOOT_LIMIT);
                }
            }
            _ => {}
        }
        match &self.session {
            Session::None { retry_at } => d.push(*retry_at),
            Session::Live { renew_at, .. } => d.push(*renew_at),
            Session::Creating => {}
        }
        if let Some(l) = self.lease_deadline() {
            d.push(l);
        }
        if self.lease.is_some() && matches!(self.phase, Phase::Promoting(_) | Phase::Validating) {
            d.push(self.beat_at);
        }
        if let Some((_, _, sent)) = self.guard.pending.first() {
            d.push(*sent + t.guard_ack);
        }
        if self.guard.alive {
            d.push(self.guard.last_sent + t.heartbeat_interval);
        } else {
            d.push(self.guard.retry_at);
        }
        match &self.phase {
            Phase::Promoting(p) => match &p.step {
                PromoteStep::Fencing => d.push(p.fence.not_before(self.lag.lag())),
                PromoteStep::Swapping { deadline, .. } => d.push(*deadline),
                PromoteStep::Restarting => {}
            },
            Phase::Demoting(dm) => {
                if let DemoteStep::Unloading { deadline, .. } = dm.step {
                    d.push(deadline);
                }
            }
            Phase::Releasing(r) => {
                d.push(r.retry_at);
                if let Some(g) = r.give_up_at {
                    d.push(g);
                }
            }
            _ => {}
        }
        if let Some(h) = self.holdoff_until {
            d.push(h);
        }
        d.push(self.published_at + RECORD_INTERVAL);
        if let Some(seen) = self.observer.seen() {
            // A switchover's successor that does not come, and the priority yield.
            d.push(seen.value_since + t.ttl);
            d.push(seen.value_since + t.heartbeat_interval);
        }
        if let Some(seen) = self.observer.seen() {
            if seen.key.as_ref().is_some_and(|k| k.session.is_some()) {
                d.push(seen.value_since + t.ttl);
            }
        }
        d.into_iter().filter(|x| *x > self.now).min()
    }

    // ----- facts -----------------------------------------------------------------------------

    fn apply(&mut self, event: Event, out: &mut Vec<Command>) {
        let now = self.now;
        match event {
            Event::Tick | Event::StatusFailed => {}
            Event::NeardSpawned { pid, role } => {
                if !matches!(self.proc, Proc::Spawning(_)) {
                    return; // not ours to believe: no spawn was asked for
                }
                self.backoff.started(now);
                self.proc = Proc::Up(Up {
                    pid,
                    role,
                    started: now,
                    last_ok: None,
                    poll: None,
                    syncing_since: None,
                });
                self.key_live = role == Role::Validator;
                // Announce the polling again for the new process.
                self.polling = None;
            }
            Event::NeardSpawnFailed => {
                if !matches!(self.proc, Proc::Spawning(_)) {
                    return;
                }
                let wait = self.backoff.failed(now);
                self.proc = Proc::Down(Some((Role::Voter, now + wait)));
                self.neard_gone(StepDown::NeardExited, out);
            }
            Event::NeardExited { pid } => {
                if self.neard_pid() != Some(pid) {
                    return;
                }
                let deliberate = matches!(self.proc, Proc::Stopping { .. } | Proc::Dying { .. });
                if deliberate {
                    self.proc = Proc::Down(self.then_start.take().map(|r| (r, now)));
                    self.key_live = false;
                } else {
                    let wait = self.backoff.failed(now);
                    self.proc = Proc::Down(Some((Role::Voter, now + wait)));
                    self.neard_gone(StepDown::NeardExited, out);
                }
            }
            Event::NeardKilled { pid } => {
                if self.neard_pid() == Some(pid) {
                    self.key_live = false;
                    self.proc = Proc::Dying { pid };
                }
            }
            Event::Status(poll) => {
                self.on_poll(poll);
                if let Some(p) = poll.production {
                    let cluster = self.cluster_view();
                    if let Some(change) = self.doppelganger.observe(now, poll.head, p, cluster) {
                        out.push(Command::Doppelganger(change));
                    }
                }
            }
            Event::SessionCreated(id) => {
                self.session = Session::Live {
                    id,
                    renew_at: now + self.cfg.timing.renew_interval,
                    renewing: false,
                };
            }
            Event::SessionCreateFailed => {
                self.session = Session::None {
                    retry_at: now + self.cfg.timing.retry,
                };
            }
            Event::Renewed { session } => {
                if let Session::Live { id, renewing, .. } = &mut self.session {
                    if *id == session {
                        *renewing = false;
                    }
                }
            }
            Event::RenewFailed { session } => {
                let retry = self.cfg.timing.retry;
                if let Session::Live {
                    id,
                    renewing,
                    renew_at,
                } = &mut self.session
                {
                    if *id == session {
                        *renewing = false;
                        *renew_at = now + retry;
                    }
                }
            }
            Event::SessionGone(id) => {
                if self.session() == Some(id.as_str()) {
                    self.session = Session::None { retry_at: now };
                    if self.exiting {
                        self.exit_destroy = Some(true);
                    }
                    self.lock_lost(Lost::SessionGone, out);
                }
            }
            Event::HeartbeatAcked { seq, sent, index } => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.acked(seq, sent, index);
                }
            }
            Event::HeartbeatRejected => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.unacknowledged();
                }
                self.lock_lost(Lost::CheckFailed, out);
            }
            Event::HeartbeatFailed => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.unacknowledged();
                }
                self.beat_at = self.beat_at.min(now + self.cfg.timing.retry);
            }
            Event::KeyObserved { key, index } => {
                self.reading = false;
                self.observer.observe(key, index, now);
                let lost = match (&self.lease, self.observer.seen()) {
                    (Some(lease), Some(seen)) => lease.check(seen).err(),
                    _ => None,
                };
                if let Some(lost) = lost {
                    self.lock_lost(lost, out);
                }
            }
            Event::WatchReset => {
                self.reading = false;
                self.observer.reset();
            }
            Event::Acquired { sent, index } => {
                if let Some((plan, record)) = self.acquiring.take() {
                    self.lease = Some(Lease::new(
                        record,
                        index,
                        sent,
                        self.cfg.timing.step_down_after,
                    ));
                    self.beat_at = sent + self.cfg.timing.heartbeat_interval;
                    if self.exiting || !matches!(self.phase, Phase::Idle) || !self.synced() {
                        // Not ready to lead any more: give it back, value unchanged.
                        self.start_release(Letgo::Unchanged, self.after_standby(false));
                    } else {
                        self.phase = Phase::Promoting(Promotion {
                            fence: Fence::new(plan.activation, now),
                            acquired: now,
                            step: PromoteStep::Fencing,
                        });
                    }
                }
            }
            Event::AcquireRejected | Event::AcquireFailed => self.acquiring = None,
            Event::Released(_) => {
                self.releasing_own = false;
                if let Phase::Releasing(r) = &self.phase {
                    let after = r.after;
                    self.finish_release(after);
                }
            }
            Event::ReleaseFailed => {
                self.releasing_own = false;
                let retry = now + self.cfg.timing.retry;
                if let Phase::Releasing(r) = &mut self.phase {
                    r.in_flight = false;
                    r.retry_at = retry;
                }
            }
            Event::Destroyed { session, .. } => {
                if self.destroying.as_deref() == Some(session.as_str()) {
                    self.destroying = None;
                }
                if self.exiting && self.session() == Some(session.as_str()) {
                    self.exit_destroy = Some(true);
                }
            }
            Event::GuardAck(seq) => {
                let g = &mut self.guard;
                if let Some(pos) = g.pending.iter().rposition(|(s, _, _)| *s <= seq) {
                    for (_, order, _) in g.pending.drain(..=pos) {
                        if order != GuardOrder::Ping {
                            g.acked = Some(order);
                        }
                    }
                }
            }
            Event::GuardLost => self.guard_lost(out),
            Event::GuardSpawned => {
                let g = &mut self.guard;
                g.alive = true;
                g.respawning = false;
                g.pending.clear();
                g.last = None;
                g.acked = Some(GuardOrder::Disarm);
                g.last_sent = now;
            }
            Event::GuardSpawnFailed => {
                let g = &mut self.guard;
                g.alive = false;
                g.respawning = false;
                g.retry_at = now + GUARD_RETRY;
            }
            Event::ClockJump(_) => {
                if self.key_live {
                    self.step_down(StepDown::ClockJump, out);
                }
            }
            Event::Shutdown => {
                if !self.exiting {
                    self.exiting = true;
                    self.then_start = None;
                    match &self.phase {
                        Phase::Validating => self.step_down(StepDown::Shutdown, out),
                        Phase::Promoting(_) => {
                            if self.key_live {
                                self.step_down(StepDown::Shutdown, out);
                            } else {
                                out.push(Command::SteppedDown(StepDown::Shutdown));
                                self.start_release(Letgo::Unchanged, After::Exit);
                            }
                        }
                        Phase::Demoting(_) => self.step_down(StepDown::Shutdown, out),
                        Phase::Releasing(_) | Phase::Idle => {
                            if let Phase::Releasing(r) = &mut self.phase {
                                r.after = After::Exit;
                                r.give_up_at = Some(now + self.cfg.timing.heartbeat_interval);
                            }
                        }
                    }
                }
            }
            Event::HandOver => {
                if matches!(self.phase, Phase::Validating) {
                    self.step_down(StepDown::HandOver, out);
                }
            }
            Event::ClusterObserved { control, peers } => {
                if control.switchover.is_none() {
                    self.switchover = None;
                    self.windows = None;
                }
                self.control = control;
                self.peers = peers;
            }
            Event::NeardVersion(v) => self.neard_version = Some(v),
            Event::Windows(w) => {
                self.windows_pending = false;
                self.windows_at = now;
                self.windows = Some(w);
            }
        }
    }

    fn on_poll(&mut self, poll: Poll) {
        let now = self.now;
        let Proc::Up(up) = &mut self.proc else {
            return;
        };
        up.last_ok = Some(now);
        up.syncing_since = match (poll.syncing, up.syncing_since) {
            (false, _) => None,
            (true, since) => since.or(Some(now)),
        };
        up.poll = Some(poll);
        self.lag.observe(poll.head, poll.block_ms, poll.wall_ms);
        if poll.hot_swap_capable.is_some() {
            self.hot_swap_capable = poll.hot_swap_capable;
        }
        if self.key_live || matches!(self.phase, Phase::Promoting(_)) {
            self.horizon = self.horizon.max(Horizon {
                head: Some(poll.head),
                target: poll.target,
                exact: false,
            });
        }
    }

    fn synced(&self) -> bool {
        self.own_view().is_some()
    }

    fn own_view(&self) -> Option<OwnView> {
        match &self.proc {
            Proc::Up(Up { poll: Some(p), .. }) if !p.syncing => Some(OwnView {
                head: p.head,
                target: p.target,
            }),
            _ => None,
        }
    }

    fn after_standby(&self, handover: bool) -> After {
        if self.exiting {
            return After::Exit;
        }
        let t = &self.cfg.timing;
        let hold = if handover {
            t.handover_holdoff
        } else {
            t.retake_holdoff
        };
        After::Standby(self.now + hold)
    }

    /// neard died on its own (or could not be started): it is fenced.
    fn neard_gone(&mut self, why: StepDown, out: &mut Vec<Command>) {
        let was_live = self.key_live;
        self.key_live = false;
        match self.phase.clone() {
            Phase::Validating => {
                out.push(Command::SteppedDown(why));
                self.fenced(Letgo::Clean, self.after_standby(false), out);
            }
            Phase::Promoting(p) => {
                let keyed = was_live || p.step != PromoteStep::Fencing;
                out.push(Command::SteppedDown(why));
                let letgo = if keyed {
                    Letgo::Clean
                } else {
                    Letgo::Unchanged
                };
                self.fenced(letgo, self.after_standby(false), out);
            }
            Phase::Demoting(d) => self.fenced(d.letgo, d.after, out),
            Phase::Idle | Phase::Releasing(_) => {
                if self.key_file {
                    out.push(Command::RemoveKey);
                    self.key_file = false;
                }
            }
        }
    }

    /// The key is not ours any more (seen by the watch, a heartbeat or a renew).
    fn lock_lost(&mut self, lost: Lost, out: &mut Vec<Command>) {
        if self.lease.is_none() {
            return;
        }
        match &mut self.phase {
            Phase::Validating => self.step_down(StepDown::KeyLost(lost), out),
            Phase::Promoting(_) if self.key_live => self.step_down(StepDown::KeyLost(lost), out),
            Phase::Promoting(_) => {
                out.push(Command::SteppedDown(StepDown::KeyLost(lost)));
                self.finish_release(self.after_standby(false));
            }
            Phase::Demoting(d) => d.letgo = Letgo::NotOurs,
            Phase::Releasing(r) => {
                let after = r.after;
                self.finish_release(after);
            }
            Phase::Idle => self.lease = None,
        }
    }

    fn guard_lost(&mut self, out: &mut Vec<Command>) {
        let g = &mut self.guard;
        if g.respawning {
            return;
        }
        g.alive = false;
        g.respawning = true;
        g.pending.clear();
        g.last = None;
        g.acked = None;
        out.push(Command::RespawnGuard);
        match &self.phase {
            Phase::Validating => self.step_down(StepDown::GuardLost, out),
            Phase::Promoting(_) if self.key_live => self.step_down(StepDown::GuardLost, out),
            _ => {}
        }
    }

    /// Starts fencing a neard whose key may be live: the node gives up validating.
    fn step_down(&mut self, reason: StepDown, out: &mut Vec<Command>) {
        if let Phase::Demoting(d) = &mut self.phase {
            // Already fencing; only where to go afterwards can change.
            if reason == StepDown::Shutdown {
                d.after = After::Exit;
            }
            if let StepDown::KeyLost(_) = reason {
                d.letgo = Letgo::NotOurs;
            }
            return;
        }
        if matches!(self.phase, Phase::Releasing(_) | Phase::Idle) && !self.key_live {
            return;
        }
        let letgo = match reason {
            StepDown::KeyLost(_) => Letgo::NotOurs,
            _ if self.lease.is_none() => Letgo::NotOurs,
            _ => Letgo::Clean,
        };
        let after = match reason {
            StepDown::Shutdown => After::Exit,
            StepDown::HandOver => self.after_standby(true),
            _ => self.after_standby(false),
        };
        out.push(Command::SteppedDown(reason));
        if !self.key_live {
            self.fenced(letgo, after, out);
            return;
        }
        // A hot-swap demotion needs a neard that drops keys on SIGHUP (>= 2.3), whose key was
        // confirmed loaded (so the reload counter is known), and that still answers.
        let reloads = self.last_poll().and_then(|p| p.reloads);
        let unload = match (&self.phase, &self.proc, reloads) {
            (Phase::Validating, Proc::Up(_), Some(r))
                if self.cfg.hot_swap
                    && self.hot_swap_capable == Some(true)
                    && !matches!(
                        reason,
                        StepDown::NeardFailed | StepDown::BootTimeout | StepDown::ClockJump
                    ) =>
            {
                Some(r)
            }
            _ => None,
        };
        match unload {
            Some(reloads_before) => {
                out.push(Command::RemoveKey);
                self.key_file = false;
                out.push(Command::Sighup);
                self.phase = Phase::Demoting(Demotion {
                    after,
                    letgo,
                    step: DemoteStep::Unloading {
                        deadline: self.now + self.cfg.timing.stop_grace,
                        reloads_before,
                    },
                });
            }
            None => {
                self.phase = Phase::Demoting(Demotion {
                    after,
                    letgo,
                    step: DemoteStep::Stopping,
                });
                // No time for a graceful stop when the lease or the guard is the reason, or
                // neard does not answer anyway.
                let kill = matches!(
                    reason,
                    StepDown::NeardFailed
                        | StepDown::LeaseExpired
                        | StepDown::GuardLost
                        | StepDown::ClockJump
                        | StepDown::KeyLost(_)
                );
                self.stop_neard(kill, out);
            }
        }
    }

    /// Stops neard (SIGTERM, SIGKILL after the grace; or SIGKILL at once); a voter is started
    /// again afterwards unless the node exits.
    fn stop_neard(&mut self, kill_now: bool, out: &mut Vec<Command>) {
        self.then_start = (!self.exiting).then_some(Role::Voter);
        match &self.proc {
            Proc::Up(up) => {
                let pid = up.pid;
                if kill_now {
                    out.push(Command::KillNeard);
                    self.proc = Proc::Dying { pid };
                } else {
                    out.push(Command::TermNeard);
                    self.proc = Proc::Stopping {
                        pid,
                        kill_at: self.now + self.cfg.timing.stop_grace,
                    };
                }
            }
            Proc::Stopping { pid, .. } if kill_now => {
                let pid = *pid;
                out.push(Command::KillNeard);
                self.proc = Proc::Dying { pid };
            }
            _ => {}
        }
    }

    /// neard is fenced (confirmed keyless, killed, or dead): remove the key file (a restart
    /// with the key wrote one too) and let go.
    fn fenced(&mut self, letgo: Letgo, after: After, out: &mut Vec<Command>) {
        self.key_live = false;
        self.fenced_at = Some(self.now);
        out.push(Command::RemoveKey);
        self.key_file = false;
        if self.exiting {
            self.then_start = None;
        }
        match letgo {
            Letgo::NotOurs => self.finish_release(after),
            _ => self.start_release(letgo, after),
        }
    }

    fn start_release(&mut self, letgo: Letgo, after: After) {
        let Some(lease) = &self.lease else {
            self.finish_release(after);
            return;
        };
        let value = match letgo {
            Letgo::Clean => lease
                .released(self.horizon, self.successor.take())
                .to_bytes(),
            _ => lease.record().to_bytes(),
        };
        self.phase = Phase::Releasing(Release {
            value,
            after,
            retry_at: self.now,
            in_flight: false,
            give_up_at: (after == After::Exit)
                .then(|| self.now + self.cfg.timing.heartbeat_interval),
        });
    }

    fn finish_release(&mut self, after: After) {
        self.lease = None;
        self.phase = Phase::Idle;
        self.horizon = Horizon::default();
        if let After::Standby(until) = after {
            self.holdoff_until = Some(until);
        }
    }

    // ----- decisions -------------------------------------------------------------------------

    /// Derives everything that must happen now, repeating until nothing changes (a step that
    /// finishes, such as a fence, can enable the next, such as the release, at once).
    fn reconcile(&mut self, out: &mut Vec<Command>) {
        for _ in 0..8 {
            let before = (self.shape(), out.len());
            self.reconcile_guard(out);
            self.reconcile_neard_health(out);
            self.reconcile_lease(out);
            self.reconcile_phase(out);
            self.reconcile_neard_start(out);
            self.reconcile_guard(out);
            self.reconcile_session(out);
            self.reconcile_switchover(out);
            self.reconcile_standby(out);
            self.reconcile_polling(out);
            self.reconcile_publish(out);
            self.reconcile_exit(out);
            if (self.shape(), out.len()) == before || self.exited {
                return;
            }
        }
    }

    /// A summary of the state that one reconciliation pass can change.
    fn shape(
        &self,
    ) -> (
        std::mem::Discriminant<Phase>,
        std::mem::Discriminant<Proc>,
        bool,
        bool,
    ) {
        (
            std::mem::discriminant(&self.phase),
            std::mem::discriminant(&self.proc),
            self.key_live,
            self.lease.is_some(),
        )
    }

    /// The order the guard should hold: armed with the lease's kill time while the key is or
    /// may soon be live, disarmed otherwise.
    fn guard_want(&self) -> GuardOrder {
        let t = &self.cfg.timing;
        let holding = self.key_live
            || matches!(
                self.phase,
                Phase::Promoting(_) | Phase::Validating | Phase::Demoting(_)
            );
        match (holding, self.neard_pid(), &self.lease) {
            (true, Some(pid), Some(l)) => GuardOrder::Arm {
                pid,
                deadline: l.deadline() + t.stop_grace,
            },
            // A live key without a lease cannot happen; if it does, kill at once.
            (true, Some(pid), None) if self.key_live => GuardOrder::Arm {
                pid,
                deadline: self.now,
            },
            _ => GuardOrder::Disarm,
        }
    }

    fn reconcile_guard(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let t = self.cfg.timing;
        if !self.guard.alive {
            if !self.guard.respawning && now >= self.guard.retry_at {
                self.guard.respawning = true;
                out.push(Command::RespawnGuard);
            }
            return;
        }
        if let Some((_, _, sent)) = self.guard.pending.first() {
            if now >= *sent + t.guard_ack {
                self.guard_lost(out);
                return;
            }
        }
        let want = self.guard_want();
        let g = &mut self.guard;
        let order = if g.last != Some(want) {
            Some(want)
        } else if g.pending.is_empty() && now >= g.last_sent + t.heartbeat_interval {
            Some(GuardOrder::Ping)
        } else {
            None
        };
        if let Some(order) = order {
            let seq = g.next_seq;
            g.next_seq += 1;
            g.pending.push((seq, order, now));
            g.last_sent = now;
            if order != GuardOrder::Ping {
                g.last = Some(order);
            }
            out.push(Command::Guard { seq, order });
        }
    }

    /// Whether the guard has acknowledged a kill deadline for the current neard.
    fn guard_armed(&self) -> bool {
        let g = &self.guard;
        match (g.acked, self.neard_pid()) {
            (Some(GuardOrder::Arm { pid, .. }), Some(p)) => {
                pid == p && g.alive && g.last == g.acked
            }
            _ => false,
        }
    }

    /// Starts neard when it is due (after a stop, or a crash's back-off).
    fn reconcile_neard_start(&mut self, out: &mut Vec<Command>) {
        if let Proc::Down(Some((role, at))) = self.proc {
            if self.now < at || self.exiting {
                return;
            }
            let restarting_with_key = role == Role::Validator
                && matches!(&self.phase, Phase::Promoting(p) if p.step == PromoteStep::Restarting);
            if self.control.paused && self.started_once && !restarting_with_key {
                return; // paused: kuutamod restarts no neard
            }
            self.started_once = true;
            // A validator start belongs to a promotion that is still on.
            let promoting = matches!(
                &self.phase,
                Phase::Promoting(p) if p.step == PromoteStep::Restarting
            );
            let role = if promoting { role } else { Role::Voter };
            self.proc = Proc::Spawning(role);
            if role == Role::Validator {
                self.key_live = true;
            }
            out.push(Command::StartNeard(role));
        }
    }

    /// neard's health: SIGKILL after the stop grace, and the step-downs a sick neard causes.
    fn reconcile_neard_health(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        match self.proc.clone() {
            Proc::Stopping { kill_at, pid } if now >= kill_at => {
                out.push(Command::KillNeard);
                self.proc = Proc::Dying { pid };
            }
            Proc::Up(up) => {
                let failed = up.last_ok.is_some_and(|ok| now >= ok + STATUS_FAIL_AFTER);
                let boot_timeout = up.role == Role::Validator
                    && up.last_ok.is_none()
                    && now >= up.started + VALIDATOR_BOOT_LIMIT;
                let syncing_too_long = up
                    .syncing_since
                    .is_some_and(|s| now >= s + self.cfg.syncing_grace);
                let leading = self.key_live || matches!(self.phase, Phase::Promoting(_));
                if leading && failed {
                    self.step_down(StepDown::NeardFailed, out);
                } else if leading && boot_timeout {
                    self.step_down(StepDown::BootTimeout, out);
                } else if syncing_too_long && matches!(self.phase, Phase::Validating) {
                    self.step_down(StepDown::Syncing, out);
                } else if failed && !leading && !self.control.paused {
                    // A standby whose neard hangs: start it again (not while paused).
                    self.stop_neard(true, out);
                }
            }
            _ => {}
        }
    }

    /// The lease: a node whose key may be live and whose lease has run out stops at once.
    fn reconcile_lease(&mut self, out: &mut Vec<Command>) {
        let Some(deadline) = self.lease_deadline() else {
            return;
        };
        if self.now < deadline {
            return;
        }
        match &self.phase {
            Phase::Validating => self.step_down(StepDown::LeaseExpired, out),
            Phase::Promoting(_) if self.key_live => self.step_down(StepDown::LeaseExpired, out),
            Phase::Promoting(_) => {
                out.push(Command::SteppedDown(StepDown::LeaseExpired));
                self.start_release(Letgo::Unchanged, self.after_standby(false));
            }
            _ => {}
        }
    }

    fn reconcile_phase(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        match self.phase.clone() {
            Phase::Idle | Phase::Validating => {}
            Phase::Promoting(p) => match p.step {
                PromoteStep::Fencing => {
                    if self.doppelganger.alarmed() {
                        // Someone else signs with our key: do not add a second signer.
                        self.start_release(Letgo::Unchanged, self.after_standby(false));
                        return;
                    }
                    if !self.guard_armed() {
                        return;
                    }
                    let Some(own) = self.own_view() else { return };
                    if p.fence.check(now, own, self.lag.lag()).is_ok() {
                        self.activate(p, out);
                    }
                }
                PromoteStep::Swapping {
                    deadline,
                    reloads_before,
                } => {
                    let confirmed = self.last_poll().is_some_and(|poll| {
                        poll.key == KeyShown::Ours
                            && matches!((reloads_before, poll.reloads), (Some(b), Some(r)) if r > b)
                    });
                    if confirmed {
                        out.push(Command::Activated {
                            took: now.saturating_duration_since(p.acquired),
                            hot_swap: true,
                        });
                        self.activated_at = Some(now);
                        self.phase = Phase::Validating;
                    } else if now >= deadline {
                        out.push(Command::HotSwapFallback("unconfirmed"));
                        self.restart_with_key(p, out);
                    }
                }
                PromoteStep::Restarting => {
                    if matches!(&self.proc, Proc::Up(up) if up.role == Role::Validator) {
                        out.push(Command::Activated {
                            took: now.saturating_duration_since(p.acquired),
                            hot_swap: false,
                        });
                        self.activated_at = Some(now);
                        self.phase = Phase::Validating;
                    }
                }
            },
            Phase::Demoting(d) => match d.step {
                DemoteStep::Unloading {
                    deadline,
                    reloads_before,
                } => {
                    let keyless = self.last_poll().filter(|p| {
                        p.key == KeyShown::None && p.reloads.is_some_and(|r| r > reloads_before)
                    });
                    if let Some(p) = keyless {
                        // Read from a neard that holds no key any more: these bound all it
                        // signed, exactly when its largest target is known.
                        self.horizon = self.horizon.max(Horizon {
                            head: Some(p.head),
                            target: p.target,
                            exact: true,
                        });
                        self.horizon.exact = p.target.is_some();
                        self.fenced(d.letgo, d.after, out);
                    } else if now >= deadline {
                        out.push(Command::HotSwapFallback("demotion_unconfirmed"));
                        self.phase = Phase::Demoting(Demotion {
                            step: DemoteStep::Stopping,
                            ..d
                        });
                        self.stop_neard(true, out);
                    }
                }
                DemoteStep::Stopping => match self.proc {
                    // Fenced once SIGKILL is sent (in order, before anything else) or neard is
                    // gone.
                    Proc::Dying { .. } | Proc::Down(_) => {
                        self.horizon.exact = false;
                        self.fenced(d.letgo, d.after, out);
                    }
                    // A neard that came up since (it was being spawned): kill it.
                    Proc::Up(_) if self.key_live => self.stop_neard(true, out),
                    Proc::Up(_) => {
                        self.horizon.exact = false;
                        self.fenced(d.letgo, d.after, out);
                    }
                    Proc::Stopping { .. } | Proc::Spawning(_) => {}
                },
            },
            Phase::Releasing(r) => {
                if r.give_up_at.is_some_and(|g| now >= g) {
                    self.finish_release(r.after);
                    return;
                }
                if r.in_flight || now < r.retry_at {
                    return;
                }
                match self.session().map(str::to_string) {
                    Some(session) if self.lease.is_some() => {
                        out.push(Command::Release {
                            session,
                            value: r.value.clone(),
                        });
                        if let Phase::Releasing(r) = &mut self.phase {
                            r.in_flight = true;
                        }
                    }
                    _ => self.finish_release(r.after),
                }
            }
        }
    }

    fn activate(&mut self, p: Promotion, out: &mut Vec<Command>) {
        let hot = self.cfg.hot_swap && self.hot_swap_capable != Some(false);
        if !hot {
            if self.cfg.hot_swap {
                out.push(Command::HotSwapFallback("neard_too_old"));
            }
            self.restart_with_key(p, out);
            return;
        }
        let reloads_before = self.last_poll().and_then(|poll| poll.reloads);
        out.push(Command::InstallKey);
        out.push(Command::Sighup);
        self.key_file = true;
        self.key_live = true;
        self.phase = Phase::Promoting(Promotion {
            step: PromoteStep::Swapping {
                deadline: self.now + self.cfg.timing.hot_swap_confirm,
                reloads_before,
            },
            ..p
        });
    }

    fn restart_with_key(&mut self, p: Promotion, out: &mut Vec<Command>) {
        self.phase = Phase::Promoting(Promotion {
            step: PromoteStep::Restarting,
            ..p
        });
        if self.key_file {
            out.push(Command::RemoveKey);
            self.key_file = false;
        }
        // A running neard may hold the key (a hot swap that was not confirmed): stopping it is
        // a fence; the validator start comes once it is gone.
        match &self.proc {
            Proc::Up(_) | Proc::Stopping { .. } => {
                self.stop_neard(false, out);
                self.then_start = Some(Role::Validator);
            }
            Proc::Dying { .. } | Proc::Spawning(_) => self.then_start = Some(Role::Validator),
            Proc::Down(_) => self.proc = Proc::Down(Some((Role::Validator, self.now))),
        }
    }

    fn reconcile_session(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let t = self.cfg.timing;
        let synced = self.synced();
        match &mut self.session {
            Session::None { retry_at } => {
                if synced && !self.exiting && now >= *retry_at {
                    self.session = Session::Creating;
                    out.push(Command::CreateSession);
                }
            }
            Session::Creating => {}
            Session::Live {
                id,
                renew_at,
                renewing,
            } => {
                let id = id.clone();
                if now >= *renew_at && !*renewing {
                    *renewing = true;
                    *renew_at = now + t.renew_interval;
                    out.push(Command::Renew(id.clone()));
                }
                let beating = matches!(self.phase, Phase::Promoting(_) | Phase::Validating);
                if let (true, Some(lease)) = (beating, self.lease.as_mut()) {
                    if now >= self.beat_at && !lease.in_flight() {
                        self.beat_at = now + t.heartbeat_interval;
                        let beat = lease.beat(self.horizon);
                        out.push(Command::Heartbeat {
                            session: id,
                            expected_index: beat.expected_index,
                            value: beat.value,
                            seq: beat.seq,
                        });
                    }
                }
            }
        }
    }

    /// Whether this node would take the lock now if it were free: a synced standby with a
    /// session and a guard, a priority above 0, in an unpaused cluster.
    pub fn may_take_over(&self) -> bool {
        matches!(self.phase, Phase::Idle)
            && !self.exiting
            && self.synced()
            && self.session().is_some()
            && self.guard.alive
            && self.cfg.priority > 0
            && !self.control.paused
            && !self.doppelganger.alarmed()
    }

    /// Whether the doppelganger alarm is raised (and why).
    pub fn doppelganger(&self) -> Option<&str> {
        self.doppelganger.evidence()
    }

    /// What this cluster is doing, for the doppelganger check: this node validates; another
    /// node of ours holds the lock and heartbeats; or nobody of ours validates.
    fn cluster_view(&self) -> Cluster {
        if matches!(self.phase, Phase::Validating) && self.key_live {
            return Cluster::Leading;
        }
        let live_other = self.observer.seen().is_some_and(|s| {
            s.key.as_ref().is_some_and(|k| {
                k.session.is_some()
                    && k.session.as_deref() != self.session()
                    && self.now < s.value_since + self.cfg.timing.heartbeat_interval * 2
            })
        });
        if live_other {
            Cluster::OtherLeads
        } else {
            Cluster::Leaderless
        }
    }

    /// Whether a peer with a higher priority would take the lock now.
    fn better_peer(&self) -> bool {
        self.peers
            .iter()
            .any(|p| p.may_take_over && p.priority > self.cfg.priority)
    }

    fn reconcile_standby(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        if self.exiting
            || !matches!(self.phase, Phase::Idle)
            || self.acquiring.is_some()
            || self.releasing_own
            || !self.guard.alive
        {
            return;
        }
        let (Some(view), Some(own)) = (self.own_view(), self.session().map(str::to_string)) else {
            return;
        };
        let me = self.cfg.node_id.clone();
        let movement = self
            .observer
            .standby_move(&own, &me, now, self.cfg.timing.ttl);
        let automatic =
            self.cfg.priority > 0 && !self.control.paused && !self.doppelganger.alarmed();
        match movement {
            StandbyMove::Wait => {}
            StandbyMove::Acquire(plan) => {
                let for_me = self
                    .observer
                    .record()
                    .and_then(|r| r.successor)
                    .is_some_and(|s| s == me);
                if !automatic {
                    return;
                }
                if !for_me {
                    if self.holdoff_until.is_some_and(|h| now < h) {
                        return;
                    }
                    // A better standby gets the first chance.
                    let since = self.observer.seen().map_or(now, |s| s.value_since);
                    if self.better_peer() && now < since + self.cfg.timing.heartbeat_interval {
                        return;
                    }
                }
                let record = Record {
                    hostname: self.cfg.hostname.clone(),
                    node_id: me,
                    account: self.cfg.account.clone(),
                    session: own.clone(),
                    seq: 1,
                    state: RecordState::Active,
                    horizon: Horizon {
                        head: Some(view.head),
                        target: view.target,
                        exact: false,
                    },
                    successor: None,
                };
                out.push(Command::Acquire {
                    session: own,
                    expected_index: plan.expected_index,
                    value: record.to_bytes(),
                });
                self.acquiring = Some((plan, record));
            }
            StandbyMove::DestroyHolder(s) => {
                if automatic && self.destroying.as_deref() != Some(s.as_str()) {
                    self.destroying = Some(s.clone());
                    out.push(Command::DestroySession(s));
                }
            }
            StandbyMove::Reread => {
                if automatic && !self.reading {
                    self.reading = true;
                    out.push(Command::ReadKey);
                }
            }
            StandbyMove::ReleaseOwn => {
                if let Some(key) = self.observer.key() {
                    self.releasing_own = true;
                    out.push(Command::Release {
                        session: own,
                        value: key.value.clone(),
                    });
                }
            }
        }
    }

    /// A planned switchover, carried out by the leader: pick the target, wait for a
    /// maintenance window if asked, then hand over with the target named in the released
    /// record.
    fn reconcile_switchover(&mut self, out: &mut Vec<Command>) {
        let Some(sw) = self.control.switchover.clone() else {
            return;
        };
        if self.handled_switchover.as_deref() == Some(sw.id.as_str()) {
            return;
        }
        if !matches!(self.phase, Phase::Validating) {
            return;
        }
        let status = |text: String, failed: bool| SwitchoverStatus {
            id: sw.id.clone(),
            status: text,
            failed,
        };
        if sw.to.as_deref() == Some(self.cfg.node_id.as_str()) {
            self.switchover = Some(status("this node already validates".into(), false));
            self.handled_switchover = Some(sw.id);
            return;
        }
        let eligible = |p: &&NodeRecord| p.may_take_over && p.priority > 0;
        let target = match &sw.to {
            Some(to) => self
                .peers
                .iter()
                .filter(eligible)
                .find(|p| &p.node_id == to),
            None => self
                .peers
                .iter()
                .filter(eligible)
                .max_by_key(|p| p.priority),
        }
        .map(|p| p.node_id.clone());
        let Some(target) = target else {
            let who = sw.to.clone().unwrap_or_else(|| "any node".into());
            self.switchover = Some(status(
                format!("waiting: {who} is not a synced standby that may take over"),
                false,
            ));
            return;
        };
        if sw.in_window {
            match &self.windows {
                None => {
                    if !self.windows_pending {
                        self.windows_pending = true;
                        out.push(Command::QueryWindows);
                    }
                    self.switchover =
                        Some(status("waiting for a maintenance window".into(), false));
                    return;
                }
                Some(Err(e)) => {
                    self.switchover = Some(status(
                        format!("neard cannot tell its maintenance windows ({e}); switch over without --in-window"),
                        true,
                    ));
                    self.handled_switchover = Some(sw.id);
                    return;
                }
                Some(Ok(windows)) => {
                    let head = self.own_view().map_or(0, |v| v.head);
                    let inside = windows
                        .iter()
                        .any(|(a, b)| *a <= head + 1 && head + SWITCHOVER_WINDOW < *b);
                    if !inside {
                        // The windows hold for the epoch: check them against each new head,
                        // and ask again when they are used up or old.
                        let used_up = windows.iter().all(|(_, b)| *b <= head + 1);
                        if (used_up || self.now >= self.windows_at + WINDOWS_REFRESH)
                            && !self.windows_pending
                        {
                            self.windows_pending = true;
                            out.push(Command::QueryWindows);
                        }
                        self.switchover =
                            Some(status("waiting for a maintenance window".into(), false));
                        return;
                    }
                }
            }
        }
        self.switchover = Some(status(format!("handing over to {target}"), false));
        self.handled_switchover = Some(sw.id);
        self.successor = Some(target);
        self.step_down(StepDown::HandOver, out);
    }

    /// This node's status record, published on every change and every [`RECORD_INTERVAL`].
    fn reconcile_publish(&mut self, out: &mut Vec<Command>) {
        let facts = NodeFacts {
            state: self.state(),
            synced: self.synced(),
            head: self.own_view().map(|v| v.head),
            neard_version: self.neard_version.clone(),
            priority: self.cfg.priority,
            paused: self.control.paused,
            may_take_over: self.may_take_over(),
            session: self.session().map(str::to_string),
            validating_for: match (&self.phase, self.activated_at) {
                (Phase::Validating, Some(at)) => Some(self.now.saturating_duration_since(at)),
                _ => None,
            },
            switchover: self.switchover.clone(),
            fenced_for: self
                .fenced_at
                .map(|at| self.now.saturating_duration_since(at)),
        };
        // A fence just now is news: publish it at once (a switchover measures its gap by it).
        let fresh_fence = self.fenced_at == Some(self.now);
        let due = fresh_fence || self.now >= self.published_at + RECORD_INTERVAL;
        if due || self.published.as_ref().is_none_or(|p| p.differs(&facts)) {
            self.published_at = self.now;
            self.published = Some(facts.clone());
            out.push(Command::Publish(facts));
        }
    }

    fn reconcile_polling(&mut self, out: &mut Vec<Command>) {
        let waiting_for_window = matches!(self.phase, Phase::Validating)
            && self.control.switchover.as_ref().is_some_and(|s| {
                s.in_window && self.handled_switchover.as_deref() != Some(s.id.as_str())
            });
        let fast = waiting_for_window
            || match &self.phase {
                Phase::Promoting(p) => p.step != PromoteStep::Restarting,
                Phase::Demoting(d) => matches!(d.step, DemoteStep::Unloading { .. }),
                _ => false,
            };
        let want = Polling {
            interval: if fast { FAST_POLL } else { STATUS_INTERVAL },
            metrics: fast || self.key_live || !matches!(self.phase, Phase::Idle),
        };
        if self.polling != Some(want) {
            self.polling = Some(want);
            out.push(Command::SetPolling(want));
        }
    }

    fn reconcile_exit(&mut self, out: &mut Vec<Command>) {
        if !self.exiting || self.key_live || !matches!(self.phase, Phase::Idle) {
            return;
        }
        // Fenced and released: destroy the session, stop neard, exit.
        if let Some(id) = self.session().map(str::to_string) {
            if self.exit_destroy.is_none() {
                self.exit_destroy = Some(false);
                out.push(Command::DestroySession(id));
            }
        }
        if let Proc::Up(_) = self.proc {
            self.stop_neard(false, out);
        }
        let neard_gone = matches!(self.proc, Proc::Down(_));
        let destroyed = self.session().is_none() || self.exit_destroy == Some(true);
        if neard_gone && destroyed {
            self.exited = true;
            out.push(Command::Exit);
        }
    }
}

#[cfg(test)]
mod tests;
