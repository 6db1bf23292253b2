//! The simulated world: hosts with kuutamod, its guard, neard and a Consul agent; the Consul
//! servers; the chain; one discrete-event loop over true time.
//!
//! Each host runs the real decision code, `kuutamod::machine::Machine`, fed with the events
//! kuutamod's supervisor (`src/supervisor/`) would feed it, at the host's clock; its
//! [`Command`]s are carried out as the supervisor carries them out, with simulated latency and
//! faults. What a process does while it is stopped is nothing: events for it wait until it runs
//! again, as they wait in its sockets and pipes. The loop jumps from event to event; nothing
//! polls time.
//!
//! The invariants of [`crate::oracle`] are checked after every event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use kuutamod::backoff::BackoffConfig;
use kuutamod::clock::Instant;
use kuutamod::lease::KeyState;
use kuutamod::machine::{
    Command, Config, Event, GuardOrder, KeyShown, Machine, Mutations, NodeFacts, Poll,
};
use kuutamod::neard::rpc::Production;
use kuutamod::neard::Role;
use kuutamod::records::{control_key, node_key, Control, NodeRecord, Switchover};
use kuutamod::settings::leader_key;
use kuutamod::timing::Timing;
use neard_sim::client::{Client, Effects};
use neard_sim::keys::Key;
use neard_sim::network::Network;
use neard_sim::spec::{ChainSpec, Timers};
use neard_sim::wire::{ToChain, ToNode};

use crate::clock::{HostClock, MS, S};
use crate::consul::{Owner, Rec, Store, TxnError};
use crate::oracle::{Conflicts, Violation};
use crate::rng::Rng;
use crate::schedule::{FaultKind, ReloadMode, Schedule};

/// Our validator account.
pub const ACCOUNT: &str = "pool.near";
/// Its public key.
pub const OUR_KEY: &str = "ed25519:ours";
/// The account a mistyped node is configured with ([`Mutation::AccountTypo`]).
pub const TYPO_ACCOUNT: &str = "pool.naer";

/// `KUUTAMO_SESSION_TTL` of the simulated nodes: the tests' and benchmark's 3 s.
pub const TTL: Duration = Duration::from_secs(3);
/// `KUUTAMO_NEARD_STOP_GRACE`.
pub const STOP_GRACE: Duration = Duration::from_millis(500);
/// `KUUTAMO_SYNCING_GRACE`.
pub const SYNCING_GRACE: Duration = Duration::from_secs(2);
/// `KUUTAMO_DOPPELGANGER_HEIGHTS` (kuutamod's default).
pub const DOPPELGANGER_HEIGHTS: u64 = 20;

/// kuutamod's non-blocking Consul request timeout (`consul::REQUEST_TIMEOUT`).
const REQUEST_TIMEOUT: u64 = 2 * S;
/// kuutamod's `/status` timeout (`supervisor::STATUS_TIMEOUT`).
const STATUS_TIMEOUT: u64 = S;
/// `clock::JUMP_SLACK`.
const JUMP_SLACK: u64 = 50 * MS;
/// Watch loop pauses (`supervisor::tasks::WATCH_RETRY`, `WATCH_IDLE`).
const WATCH_RETRY: u64 = S;
const WATCH_IDLE: u64 = 100 * MS;
/// `/metrics` is read at least this often (`supervisor::tasks::METRICS_INTERVAL`).
const METRICS_INTERVAL: u64 = 5 * S;
/// How long a Consul server holds a request while there is no leader before it answers "No
/// cluster leader" (Consul's `rpc_hold_timeout`, 7 s).
const RPC_HOLD: u64 = 7 * S;
/// Capacity of the guard's stdin pipe, in orders (64 KiB of lines of about 40 bytes).
const PIPE_ORDERS: usize = 1600;
/// An outsider session's TTL and lock-delay (Consul's default lock-delay).
const OUTSIDER_TTL: u64 = 10 * S;
const OUTSIDER_LOCK_DELAY: u64 = 15 * S;

/// A fix switched off: one of kuutamod's [`Mutations`], or a harness-level one that the
/// simulated environment models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    /// None: the daemon as it is.
    #[default]
    None,
    /// `Mutations::no_standby_wait`.
    NoStandbyWait,
    /// `Mutations::leader_ignores_key`.
    LeaderIgnoresKey,
    /// `Mutations::keep_lock_after_step_down`.
    KeepLockAfterStepDown,
    /// `Mutations::timeout_fence`.
    TimeoutFence,
    /// `Mutations::no_guard_ack`.
    NoGuardAck,
    /// The guard runs in kuutamod's process group: a group stop stops both.
    GuardInGroup,
    /// Orders block kuutamod while the guard's pipe is full (with `no_guard_ack`, as before
    /// the guard acknowledged orders).
    BlockingGuardPipe,
    /// kuutamod's deadlines and the guard's timer on `CLOCK_MONOTONIC`, no suspend detection.
    MonotonicDeadlines,
    /// One node is configured with a mistyped account (another lock key) and our key.
    AccountTypo,
}

impl Mutation {
    /// Every mutation, with its command-line name.
    pub const ALL: [(&'static str, Mutation); 9] = [
        ("no-standby-wait", Mutation::NoStandbyWait),
        ("leader-ignores-key", Mutation::LeaderIgnoresKey),
        ("keep-lock-after-step-down", Mutation::KeepLockAfterStepDown),
        ("timeout-fence", Mutation::TimeoutFence),
        ("no-guard-ack", Mutation::NoGuardAck),
        ("guard-in-group", Mutation::GuardInGroup),
        ("blocking-guard-pipe", Mutation::BlockingGuardPipe),
        ("monotonic-deadlines", Mutation::MonotonicDeadlines),
        ("account-typo", Mutation::AccountTypo),
    ];

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Mutation> {
        if name == "none" {
            return Some(Mutation::None);
        }
        Mutation::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Mutation::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("none", |(n, _)| n)
    }

    /// Whether it needs kuutamod built with its `mutations` feature.
    pub fn needs_feature(self) -> bool {
        !self.machine().eq(&Mutations::default())
    }

    fn machine(self) -> Mutations {
        let mut m = Mutations::default();
        match self {
            Mutation::NoStandbyWait => m.no_standby_wait = true,
            Mutation::LeaderIgnoresKey => m.leader_ignores_key = true,
            Mutation::KeepLockAfterStepDown => m.keep_lock_after_step_down = true,
            Mutation::TimeoutFence => m.timeout_fence = true,
            Mutation::NoGuardAck | Mutation::BlockingGuardPipe => m.no_guard_ack = true,
            _ => {}
        }
        m
    }
}

/// How a run is set up, besides its schedule.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The fix switched off.
    pub mutation: Mutation,
    /// Target time between blocks (ms); the consensus timers derive from it.
    pub block_ms: u64,
    /// Keep every ledger entry (tests cross-check with the batch oracle).
    pub keep_ledger: bool,
    /// Record a readable trace.
    pub trace: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mutation: Mutation::None,
            block_ms: 200,
            keep_ledger: false,
            trace: false,
        }
    }
}

/// The liveness bound after the last fault healed (ms), derived from the timing, the chain's
/// timers and the schedule (see `docs/dst.md`).
pub fn liveness_bound_ms(sched: &Schedule, timers: &Timers) -> u64 {
    let t = timing();
    let ms = |d: Duration| d.as_millis() as u64;
    let boot = sched.scenario.boot_ms.iter().copied().max().unwrap_or(0);
    // neard's restart back-off on the host that is best off: it doubles with each failure.
    let backoff = (0..sched.scenario.hosts)
        .map(|h| {
            let n = sched.faults.iter().filter(|f| f.host() == Some(h)).count() as u32;
            (1000u64 << n.min(5)).min(30_000)
        })
        .min()
        .unwrap_or(1000);
    let foreign = sched
        .faults
        .iter()
        .any(|f| matches!(f.kind, FaultKind::KvForeignAcquire { .. }));
    3 * ms(t.ttl)
        + ms(t.stop_grace)
        + ms(t.hot_swap_confirm)
        + 2 * boot
        + backoff
        + 2000
        + if foreign { OUTSIDER_LOCK_DELAY / MS } else { 0 }
        + if sched.scenario.stall {
            stall_outrun_ms(timers)
        } else {
            0
        }
}

/// In a chain stalled for want of our stake, a new leader that inherits a stale horizon waits
/// until its own target outruns everything the old leader could have signed: one target per
/// `min_block_production_delay` over the horizon's staleness, plus one, reached by skips that
/// come one per `max_block_wait_delay` in a long stall. The staleness is at most the TTL after
/// a heartbeat whose values were as old as a leader lets them get (neard unanswered for
/// `STATUS_FAIL_AFTER`, plus a poll's timeout).
fn stall_outrun_ms(timers: &Timers) -> u64 {
    use kuutamod::timing::{STATUS_FAIL_AFTER, STATUS_TIMEOUT};
    let ms = |d: Duration| d.as_millis() as u64;
    let stale = ms(timing().ttl + STATUS_FAIL_AFTER + STATUS_TIMEOUT);
    let targets = stale.div_ceil(ms(timers.min_block_production_delay).max(1)) + 2;
    targets * ms(timers.max_block_wait_delay)
}

/// The derived timing of the simulated nodes.
pub fn timing() -> Timing {
    // TTL and grace are constants that satisfy the inequality.
    Timing::new(TTL, STOP_GRACE).unwrap_or_else(|e| panic!("{e}"))
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The first broken invariant.
    pub violation: Option<Violation>,
    /// Events processed.
    pub events: u64,
    /// Hash of the run's trace (event kinds and times, signatures): equal for bit-for-bit
    /// equal runs.
    pub hash: u64,
    /// True time at which the run ended (ms).
    pub end_ms: u64,
    /// Keys going live (activations).
    pub activations: u64,
    /// Step-downs.
    pub step_downs: u64,
    /// The readable trace, when asked for.
    pub trace: Vec<String>,
    /// The ledger, when asked for.
    pub ledger: Vec<neard_sim::ledger::Entry>,
    /// After the last fault: how long until one node validated (ms).
    pub recovery_ms: Option<u64>,
    /// Liveness was not reached because the chain model has no fork choice (see
    /// `docs/dst.md`): not a violation.
    pub model_stall: bool,
}

// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Ev {
    KdStart(usize),
    KdWake {
        h: usize,
        gen: u64,
    },
    /// Something for kuutamod's process (instance `inst`).
    ToKd {
        h: usize,
        inst: u64,
        inc: Inc,
    },
    PollTick {
        h: usize,
        inst: u64,
        gen: u64,
    },
    NeardStep {
        h: usize,
        pid: u32,
    },
    NeardRpcUp {
        h: usize,
        pid: u32,
    },
    NeardReloadRead {
        h: usize,
        pid: u32,
    },
    NeardReloadApply {
        h: usize,
        pid: u32,
        gen: u64,
        key: bool,
    },
    NeardExit {
        h: usize,
        pid: u32,
    },
    ChainTick,
    ToNode {
        h: usize,
        pid: u32,
        msg: ToNode,
    },
    ToChain {
        h: usize,
        pid: u32,
        msg: ToChain,
    },
    GuardRun {
        h: usize,
        gen: u64,
    },
    GuardTimer {
        h: usize,
        gen: u64,
        tgen: u64,
    },
    ReqAtServer(usize),
    RespAtAgent(usize),
    ReqTimeout(usize),
    SessionExpire {
        id: String,
        generation: u64,
    },
    FaultStart(usize),
    FaultEnd(usize),
    Liveness,
}

impl Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::KdStart(h) => 1 + 32 * *h as u64,
            Ev::KdWake { h, .. } => 2 + 32 * *h as u64,
            Ev::ToKd { h, .. } => 3 + 32 * *h as u64,
            Ev::PollTick { h, .. } => 4 + 32 * *h as u64,
            Ev::NeardStep { h, .. } => 5 + 32 * *h as u64,
            Ev::NeardRpcUp { h, .. } => 6 + 32 * *h as u64,
            Ev::NeardReloadRead { h, .. } => 7 + 32 * *h as u64,
            Ev::NeardReloadApply { h, .. } => 8 + 32 * *h as u64,
            Ev::NeardExit { h, .. } => 9 + 32 * *h as u64,
            Ev::ChainTick => 10,
            Ev::ToNode { h, .. } => 11 + 32 * *h as u64,
            Ev::ToChain { h, .. } => 12 + 32 * *h as u64,
            Ev::GuardRun { h, .. } => 13 + 32 * *h as u64,
            Ev::GuardTimer { h, .. } => 14 + 32 * *h as u64,
            Ev::ReqAtServer(_) => 15,
            Ev::RespAtAgent(_) => 16,
            Ev::ReqTimeout(_) => 17,
            Ev::SessionExpire { .. } => 18,
            Ev::FaultStart(i) => 19 + 32 * *i as u64,
            Ev::FaultEnd(i) => 20 + 32 * *i as u64,
            Ev::Liveness => 21,
        }
    }
}

/// What kuutamod's process receives.
#[derive(Debug)]
enum Inc {
    Wake,
    Signal(Event),
    /// A line from the guard (`Ok`: ack, `Err`: nack of that order), or the guard gone
    /// (`None`).
    GuardNote {
        gen: u64,
        ack: Option<Result<u64, u64>>,
    },
    NeardExited(u32),
    PollDone {
        pid: u32,
        gen: u64,
        poll: Option<(Poll, String)>,
    },
    Consul(usize),
    WatchRetry(u64),
    ClusterRetry(u64),
    Windows(Result<Vec<(u64, u64)>, String>),
}

struct Item {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
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
enum Op {
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
enum Res {
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

struct Req {
    h: usize,
    inst: u64,
    key: String,
    op: Op,
    purpose: Purpose,
    sent_clock: Instant,
    agent_epoch: u64,
    resolved: bool,
    result: Option<Res>,
    held_since: Option<u64>,
}

#[derive(Default)]
struct Poller {
    interval: u64,
    metrics: bool,
    gen: u64,
    busy: bool,
    changed: bool,
    metrics_at: Option<u64>,
    version: Option<String>,
}

struct Kd {
    inst: u64,
    m: Machine,
    wake_gen: u64,
    neard: Option<u32>,
    poll: Poller,
    watch_index: u64,
    watch_gen: u64,
    cluster_index: u64,
    cluster_gen: u64,
    guard_gen: u64,
    jump: (u64, u64),
    blocked: bool,
    lock_key: String,
    deferred: Vec<Ev>,
}

struct Guard {
    gen: u64,
    alive: bool,
    stopped: bool,
    pipe: VecDeque<(u64, GuardOrder)>,
    armed: Option<(u32, u64)>,
    tgen: u64,
    exit_pending: bool,
}

struct Neard {
    pid: u32,
    alive: bool,
    client: Client,
    key: Option<Key>,
    rpc_up: bool,
    joined: bool,
    rejoin: bool,
    stopping: bool,
    reloads: u64,
    key_gen: u64,
    pending_hups: u32,
    last_signed: Option<u64>,
}

#[derive(Default)]
struct Agent {
    up: bool,
    paused: bool,
    partitioned: bool,
    epoch: u64,
    /// Messages waiting for the agent to run again (paused, host suspended).
    waiting: Vec<Ev>,
    /// Messages waiting for the partition to heal.
    cut: Vec<Ev>,
}

struct Host {
    clock: HostClock,
    suspended: bool,
    kd: Option<Kd>,
    kd_stopped: bool,
    group_stopped: bool,
    restart_after_exit: Option<u64>,
    guard: Option<Guard>,
    neard: Option<Neard>,
    key_file: bool,
    stored_target: u64,
    next_pid: u32,
    agent: Agent,
    hang_until: u64,
    syncing_until: u64,
    reload_mode: Option<(ReloadMode, u64)>,
    lag_extra: (u64, u64),
    slow_stop_until: u64,
    last_lock: Option<u64>,
    boot_ms: u64,
    lag_ms: u64,
    /// Events for the neard and the guard that wait for the host to resume.
    frozen: Vec<Ev>,
}

struct Consul {
    store: Store,
    election_until: u64,
    quorum_lost: bool,
    held: Vec<usize>,
    waiters: Vec<usize>,
    slow: (u64, u64),
    lossy: (u64, u64),
    control: Control,
    control_pending: bool,
    switchover_from: Option<Option<usize>>,
    foreign: Option<String>,
    holder: Option<usize>,
}

/// A run.
pub struct World {
    t: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Item>>,
    rng: Rng,
    settings: Settings,
    sched: Schedule,
    timing: Timing,
    hosts: Vec<Host>,
    consul: Consul,
    reqs: Vec<Req>,
    net: Network,
    base: std::time::Instant,
    timers: Timers,
    chain_head_at: u64,
    chain_head: u64,
    max_node_tip: u64,
    conflicts: Conflicts,
    out: Outcome,
    end: u64,
    healed: u64,
    next_inst: u64,
}

fn fnv_mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0100_0000_01b3)
}

impl World {
    /// A world for `seed` and `sched`, ready to run.
    pub fn new(seed: u64, sched: Schedule, settings: Settings) -> World {
        let rng = Rng::new(seed).fork(2);
        let sc = &sched.scenario;
        let b = settings.block_ms.max(20);
        let timers = Timers {
            min_block_production_delay: Duration::from_millis(b),
            max_block_production_delay: Duration::from_millis(3 * b),
            max_block_wait_delay: Duration::from_millis(9 * b),
            doomslug_step_period: Duration::from_millis(b / 4),
            block_production_tracking_delay: Duration::from_millis(b / 4),
        };
        let validators: Vec<(&str, u128)> = if sc.stall {
            vec![("v1", 1), ("v2", 1)]
        } else {
            vec![("v1", 1), ("v2", 1), ("v3", 1)]
        };
        let ours = if sc.stall { 2 } else { 1 };
        let mut spec = ChainSpec::localnet(&[(ACCOUNT, ours)], &validators, timers);
        spec.epoch_length = 100_000;
        spec.seed = seed;
        let base = std::time::Instant::now();
        let net = Network::new(spec, base, crate::clock::WALL_BASE_MS);
        let mut hrng = Rng::new(seed).fork(3);
        let hosts = (0..sc.hosts)
            .map(|h| Host {
                clock: HostClock::new(
                    1000 * S + hrng.below(1000 * S),
                    sc.drift_ppm[h],
                    sc.wall_offset_ms[h],
                ),
                suspended: false,
                kd: None,
                kd_stopped: false,
                group_stopped: false,
                restart_after_exit: None,
                guard: None,
                neard: None,
                key_file: false,
                stored_target: 0,
                next_pid: 100 + 1000 * h as u32,
                agent: Agent {
                    up: true,
                    ..Agent::default()
                },
                hang_until: 0,
                syncing_until: 0,
                reload_mode: None,
                lag_extra: (0, 0),
                slow_stop_until: 0,
                last_lock: None,
                boot_ms: sc.boot_ms[h],
                lag_ms: sc.lag_ms[h],
                frozen: Vec::new(),
            })
            .collect();
        let healed = sched.healed_at() * MS;
        let end = healed + liveness_bound_ms(&sched, &timers) * MS;
        let mut w = World {
            t: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            settings,
            timing: timing(),
            hosts,
            consul: Consul {
                store: Store::new(),
                election_until: 0,
                quorum_lost: false,
                held: Vec::new(),
                waiters: Vec::new(),
                slow: (0, 0),
                lossy: (0, 0),
                control: Control::default(),
                control_pending: false,
                switchover_from: None,
                foreign: None,
                holder: None,
            },
            reqs: Vec::new(),
            net,
            base,
            timers,
            chain_head_at: 0,
            chain_head: 0,
            max_node_tip: 0,
            conflicts: Conflicts::new(settings.keep_ledger),
            out: Outcome::default(),
            end,
            healed,
            next_inst: 0,
            sched,
        };
        for h in 0..w.hosts.len() {
            let at = w.rng.below(200 * MS);
            w.at(at, Ev::KdStart(h));
        }
        w.at(0, Ev::ChainTick);
        for (i, f) in w.sched.faults.iter().enumerate() {
            let (start, end) = (f.at * MS, f.heals_at() * MS);
            w.queue.push(Reverse(Item {
                t: start,
                seq: i as u64,
                ev: Ev::FaultStart(i),
            }));
            if end > start {
                w.queue.push(Reverse(Item {
                    t: end,
                    seq: i as u64 + 1_000_000,
                    ev: Ev::FaultEnd(i),
                }));
            }
        }
        w.seq = 2_000_000;
        w.at(end, Ev::Liveness);
        w
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Item {
            t: t.max(self.t),
            seq: self.seq,
            ev,
        }));
    }

    fn after(&mut self, d: u64, ev: Ev) {
        self.at(self.t + d, ev);
    }

    fn trace(&mut self, f: impl FnOnce() -> String) {
        if self.settings.trace {
            let line = format!("{:>9.3} {}", self.t as f64 / S as f64, f());
            self.out.trace.push(line);
        }
    }

    /// Runs to the end (or the first violation).
    pub fn run(mut self) -> Outcome {
        while let Some(Reverse(item)) = self.queue.pop() {
            if item.t > self.end {
                break;
            }
            self.t = item.t;
            self.out.events += 1;
            self.out.hash = fnv_mix(fnv_mix(self.out.hash, item.t), item.ev.code());
            self.dispatch(item.ev);
            if self.out.violation.is_none() {
                self.check_safety();
            }
            if self.out.violation.is_some() {
                break;
            }
        }
        self.out.end_ms = self.t / MS;
        if let Some(k) = self.conflicts.kept.take() {
            self.out.ledger = k;
        }
        self.out
    }

    fn violate(&mut self, v: Violation) {
        if self.out.violation.is_none() {
            self.trace(|| format!("VIOLATION {v}"));
            self.out.violation = Some(v);
        }
    }

    // ----- invariants --------------------------------------------------------------------

    /// The hosts whose neard can sign with our key now: alive, key loaded, host not
    /// suspended. (A suspended host's neard runs again only after its guard's expired timer
    /// has fired: see `docs/dst.md`, "Assumptions".)
    fn holders(&self) -> Vec<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                !h.suspended
                    && h.neard
                        .as_ref()
                        .is_some_and(|n| n.alive && n.key.as_ref().is_some_and(is_ours))
            })
            .map(|(i, _)| i)
            .collect()
    }

    fn check_safety(&mut self) {
        let holders = self.holders();
        if holders.len() >= 2 {
            self.violate(Violation::TwoHolders {
                at_ms: self.t / MS,
                hosts: holders,
            });
            return;
        }
        for h in holders {
            let fresh = self.consul.holder == Some(h)
                || self.hosts[h]
                    .last_lock
                    .is_some_and(|l| l + self.timing.ttl.as_nanos() as u64 >= self.t);
            if !fresh {
                self.violate(Violation::StaleHolder {
                    at_ms: self.t / MS,
                    host: h,
                    last_lock_ms: self.hosts[h].last_lock.map(|l| l / MS),
                });
            }
        }
    }

    fn check_liveness(&mut self) {
        let holders = self.holders();
        // A validator approves at least once per max_block_wait_delay, skipping, even while a
        // chain stalled without it recovers; twice that, with room for its network lag.
        let recent = (2 * S).max(2 * self.timers.max_block_wait_delay.as_nanos() as u64);
        let what = match holders.as_slice() {
            [h] => {
                let n = self.hosts[*h].neard.as_ref();
                let signing = n.and_then(|n| n.last_signed);
                if !n.is_some_and(|n| n.joined) {
                    Some(format!("host {h} holds the key but is not in sync"))
                } else if signing.is_none_or(|s| s + recent < self.t) {
                    Some(format!(
                        "host {h} holds the key but signed nothing for {} ms (last: {:?} ms)",
                        recent / MS,
                        signing.map(|s| s / MS)
                    ))
                } else {
                    None
                }
            }
            [] => Some("no neard holds the key".to_string()),
            _ => Some(format!("hosts {holders:?} hold the key")),
        };
        if what.is_some() && self.max_node_tip > self.net.head().height {
            // A neard of ours has a tip the chain never accepted: the chain model has no fork
            // choice (docs/neard-sim.md), so with our stake above 1/3 the chain stays below
            // that tip and a new leader's height fence waits for it forever. Real neard would
            // have taken the higher block. Counted, not reported as a violation.
            self.out.model_stall = true;
            return;
        }
        if let Some(what) = what {
            self.violate(Violation::Liveness {
                at_ms: self.t / MS,
                what: format!(
                    "{what} {} ms after the last fault healed (bound {} ms)",
                    (self.t - self.healed) / MS,
                    liveness_bound_ms(&self.sched, &self.timers)
                ),
            });
        }
    }

    // ----- dispatch ------------------------------------------------------------------------

    fn dispatch(&mut self, ev: Ev) {
        match ev {
            Ev::KdStart(h) => self.kd_start(h),
            Ev::KdWake { h, gen } => {
                if self.hosts[h].kd.as_ref().is_some_and(|k| k.wake_gen == gen) {
                    let inst = self.hosts[h].kd.as_ref().map_or(0, |k| k.inst);
                    self.send_kd(h, inst, Inc::Wake);
                }
            }
            Ev::ToKd { h, inst, inc } => self.send_kd(h, inst, inc),
            Ev::PollTick { h, inst, gen } => self.poll_tick(h, inst, gen),
            Ev::NeardStep { h, pid } => self.neard_step(h, pid),
            Ev::NeardRpcUp { h, pid } => {
                if let Some(n) = self.neard_mut(h, pid) {
                    n.rpc_up = true;
                    n.rejoin = true;
                    self.neard_hello(h, pid);
                }
            }
            Ev::NeardReloadRead { h, pid } => self.neard_reload_read(h, pid),
            Ev::NeardReloadApply { h, pid, gen, key } => {
                if self.hosts[h].suspended {
                    self.hosts[h]
                        .frozen
                        .push(Ev::NeardReloadApply { h, pid, gen, key });
                    return;
                }
                if let Some(n) = self.neard_mut(h, pid) {
                    if n.key_gen == gen {
                        n.key = key.then(our_key);
                    }
                }
                let shown = key;
                self.trace(|| format!("host {h} neard {pid} reload applied: key {shown}"));
            }
            Ev::NeardExit { h, pid } => {
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    self.trace(|| format!("host {h} neard {pid} exited"));
                    self.neard_dies(h);
                }
            }
            Ev::ChainTick => self.chain_tick(),
            Ev::ToNode { h, pid, msg } => self.send_node(h, pid, msg),
            Ev::ToChain { h, pid, msg } => self.send_chain(h, pid, msg),
            Ev::GuardRun { h, gen } => self.guard_run(h, gen),
            Ev::GuardTimer { h, gen, tgen } => self.guard_timer(h, gen, tgen),
            Ev::ReqAtServer(id) => self.req_at_server(id),
            Ev::RespAtAgent(id) => self.resp_at_agent(id),
            Ev::ReqTimeout(id) => {
                if !self.reqs[id].resolved {
                    self.resolve(id, Res::Err);
                }
            }
            Ev::SessionExpire { id, generation } => {
                let due = self
                    .consul
                    .store
                    .session(&id)
                    .is_some_and(|s| s.generation == generation && s.expires <= self.t);
                if due && self.server_up() {
                    self.trace(|| format!("consul ends session {id} (TTL)"));
                    self.consul.store.invalidate(&id, self.t);
                    self.store_changed();
                }
            }
            Ev::FaultStart(i) => self.fault_start(i),
            Ev::FaultEnd(i) => self.fault_end(i),
            Ev::Liveness => self.check_liveness(),
        }
    }

    // ----- kuutamod ------------------------------------------------------------------------

    fn clock_now(&self, h: usize) -> u64 {
        let c = &self.hosts[h].clock;
        if self.settings.mutation == Mutation::MonotonicDeadlines {
            c.monotonic(self.t)
        } else {
            c.boottime(self.t)
        }
    }

    fn clock_reaches(&self, h: usize, deadline: u64) -> u64 {
        let c = &self.hosts[h].clock;
        if self.settings.mutation == Mutation::MonotonicDeadlines {
            c.monotonic_reaches(deadline, self.t)
        } else {
            c.boottime_reaches(deadline, self.t)
        }
    }

    fn kd_runnable(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.kd.as_ref().is_some_and(|k| !k.blocked)
            && !host.kd_stopped
            && !host.group_stopped
            && !host.suspended
    }

    fn kd_start(&mut self, h: usize) {
        if self.hosts[h].kd.is_some() {
            return;
        }
        self.next_inst += 1;
        let inst = self.next_inst;
        let typo = self.settings.mutation == Mutation::AccountTypo && h + 1 == self.hosts.len();
        let account = if typo { TYPO_ACCOUNT } else { ACCOUNT };
        let cfg = Config {
            node_id: format!("n{h}"),
            hostname: format!("h{h}"),
            account: account.to_string(),
            hot_swap: self.sched.scenario.hot_swap,
            timing: self.timing,
            syncing_grace: SYNCING_GRACE,
            backoff: BackoffConfig::DEFAULT,
            priority: self.sched.scenario.priority[h],
            doppelganger_heights: DOPPELGANGER_HEIGHTS,
            // What kuutamod reads from neard's config.json: the chain's own timers.
            block_delays: kuutamod::fence::BlockDelays {
                min: self.timers.min_block_production_delay,
                max: self.timers.max_block_production_delay,
            },
            mutations: self.settings.mutation.machine(),
        };
        let now = self.clock_now(h);
        let c = &self.hosts[h].clock;
        let jump = (c.boottime(self.t), c.monotonic(self.t));
        self.hosts[h].kd = Some(Kd {
            inst,
            m: Machine::new(cfg, Instant::from_nanos(now)),
            wake_gen: 0,
            neard: None,
            poll: Poller {
                interval: S,
                ..Poller::default()
            },
            watch_index: 0,
            watch_gen: 0,
            cluster_index: 0,
            cluster_gen: 0,
            guard_gen: 0,
            jump,
            blocked: false,
            lock_key: leader_key(account),
            deferred: Vec::new(),
        });
        self.trace(|| format!("host {h} kuutamod starts (instance {inst})"));
        self.watch_query(h);
        self.cluster_query(h);
        self.kd_feed(h, Event::Tick);
    }

    /// kuutamod's process dies (SIGKILL, or its exit): its neard dies with it
    /// (`PR_SET_PDEATHSIG`), its guard sees its pipe close.
    fn kd_die(&mut self, h: usize) {
        let Some(kd) = self.hosts[h].kd.take() else {
            return;
        };
        let _ = kd;
        if self.hosts[h].neard.as_ref().is_some_and(|n| n.alive) {
            self.trace(|| format!("host {h} neard dies with kuutamod"));
            self.neard_dies(h);
        }
        self.hosts[h].neard = None;
        if let Some(g) = self.hosts[h].guard.as_mut() {
            g.exit_pending = true;
        }
        self.guard_exit_if_orphan(h);
        if let Some(down) = self.hosts[h].restart_after_exit.take() {
            self.after(down * MS, Ev::KdStart(h));
        }
    }

    fn send_kd(&mut self, h: usize, inst: u64, inc: Inc) {
        if self.hosts[h].kd.as_ref().map(|k| k.inst) != Some(inst) {
            return;
        }
        if !self.kd_runnable(h) {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.deferred.push(Ev::ToKd { h, inst, inc });
            }
            return;
        }
        self.check_jump(h);
        match inc {
            Inc::Wake => self.kd_feed(h, Event::Tick),
            Inc::Signal(e) => self.kd_feed(h, e),
            Inc::GuardNote { gen, ack } => {
                if self.hosts[h]
                    .kd
                    .as_ref()
                    .is_some_and(|k| k.guard_gen == gen)
                {
                    match ack {
                        Some(Ok(seq)) => self.kd_feed(h, Event::GuardAck(seq)),
                        Some(Err(seq)) => self.kd_feed(h, Event::GuardNack(seq)),
                        None => self.kd_feed(h, Event::GuardLost),
                    }
                }
            }
            Inc::NeardExited(pid) => {
                let current = self.hosts[h].kd.as_ref().and_then(|k| k.neard);
                if current == Some(pid) {
                    if let Some(k) = self.hosts[h].kd.as_mut() {
                        k.neard = None;
                    }
                    self.poll_target_changed(h);
                    self.kd_feed(h, Event::NeardExited { pid });
                }
            }
            Inc::PollDone { pid, gen, poll } => self.poll_done(h, pid, gen, poll),
            Inc::Consul(id) => self.consul_done(h, id),
            Inc::WatchRetry(gen) => {
                if self.hosts[h]
                    .kd
                    .as_ref()
                    .is_some_and(|k| k.watch_gen == gen)
                {
                    self.watch_query(h);
                }
            }
            Inc::ClusterRetry(gen) => {
                if self.hosts[h]
                    .kd
                    .as_ref()
                    .is_some_and(|k| k.cluster_gen == gen)
                {
                    self.cluster_query(h);
                }
            }
            Inc::Windows(w) => self.kd_feed(h, Event::Windows(w)),
        }
    }

    /// The supervisor's suspend detector: BOOTTIME moved further than MONOTONIC.
    fn check_jump(&mut self, h: usize) {
        if self.settings.mutation == Mutation::MonotonicDeadlines {
            return;
        }
        let c = &self.hosts[h].clock;
        let (boot, mono) = (c.boottime(self.t), c.monotonic(self.t));
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        let lost = (boot - k.jump.0).saturating_sub(mono - k.jump.1);
        k.jump = (boot, mono);
        if lost > JUMP_SLACK {
            self.kd_feed(h, Event::ClockJump(Duration::from_nanos(lost)));
        }
    }

    /// Feeds an event and the follow-ups of its commands, as the supervisor's `handle` does.
    fn kd_feed(&mut self, h: usize, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(e) = queue.pop_front() {
            let now = Instant::from_nanos(self.clock_now(h));
            if self.settings.trace {
                let e = format!("{e:?}");
                self.trace(|| format!("host {h} event {e}"));
            }
            let Some(k) = self.hosts[h].kd.as_mut() else {
                return;
            };
            let cmds = k.m.handle(e, now);
            for c in cmds {
                if self.settings.trace {
                    let c = format!("{c:?}");
                    self.trace(|| format!("host {h} command {c}"));
                }
                if let Some(f) = self.exec(h, c) {
                    queue.push_back(f);
                }
                if self.hosts[h].kd.is_none() {
                    return;
                }
            }
        }
        if self.hosts[h].kd.as_ref().is_some_and(|k| k.m.exited()) {
            self.trace(|| format!("host {h} kuutamod exits"));
            self.kd_die(h);
            return;
        }
        self.arm_wake(h);
    }

    fn arm_wake(&mut self, h: usize) {
        let Some(d) = self.hosts[h].kd.as_ref().and_then(|k| k.m.next_deadline()) else {
            return;
        };
        let t = self.clock_reaches(h, d.as_nanos());
        if let Some(k) = self.hosts[h].kd.as_mut() {
            k.wake_gen += 1;
            let gen = k.wake_gen;
            self.at(t, Ev::KdWake { h, gen });
        }
    }

    /// SIGCONT (or a resume): everything that waited runs now.
    fn kd_resume(&mut self, h: usize, delay: u64) {
        if !self.kd_runnable(h) {
            return;
        }
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        let deferred = std::mem::take(&mut k.deferred);
        let inst = k.inst;
        for ev in deferred {
            self.after(delay, ev);
        }
        self.after(
            delay,
            Ev::ToKd {
                h,
                inst,
                inc: Inc::Wake,
            },
        );
    }

    fn exec(&mut self, h: usize, c: Command) -> Option<Event> {
        match c {
            Command::StartNeard(role) => Some(self.neard_start(h, role)),
            Command::TermNeard => {
                let pid = self.hosts[h].kd.as_ref()?.neard?;
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    let slow = self.hosts[h].slow_stop_until > self.t;
                    let d = if slow {
                        self.rng.range(S, 10 * S)
                    } else {
                        self.rng.range(20 * MS, 300 * MS)
                    };
                    if let Some(n) = self.neard_mut(h, pid) {
                        n.stopping = true;
                    }
                    self.after(d, Ev::NeardExit { h, pid });
                }
                None
            }
            Command::KillNeard => {
                let pid = self.hosts[h].kd.as_ref()?.neard?;
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    self.trace(|| format!("host {h} kuutamod SIGKILLs neard {pid}"));
                    self.neard_dies(h);
                }
                Some(Event::NeardKilled { pid })
            }
            Command::InstallKey => {
                self.hosts[h].key_file = true;
                None
            }
            Command::RemoveKey => {
                self.hosts[h].key_file = false;
                None
            }
            Command::Sighup => {
                let pid = self.hosts[h].kd.as_ref()?.neard?;
                if self.neard_mut(h, pid).is_some_and(|n| n.alive) {
                    self.neard_sighup(h, pid);
                }
                None
            }
            Command::SetPolling(p) => {
                if let Some(k) = self.hosts[h].kd.as_mut() {
                    k.poll.interval = p.interval.as_nanos() as u64;
                    k.poll.metrics = p.metrics;
                }
                self.poll_target_changed(h);
                None
            }
            Command::Guard { seq, order } => self.guard_write(h, seq, order),
            Command::RespawnGuard => Some(self.guard_respawn(h)),
            Command::Publish(facts) => {
                let rec = self.node_record(h, facts);
                let key = node_key(ACCOUNT, &format!("n{h}"));
                self.send_req(
                    h,
                    Op::Put {
                        key,
                        rec: Box::new(Rec::Node(rec)),
                    },
                    Purpose::Publish,
                );
                None
            }
            Command::QueryWindows => {
                let inst = self.hosts[h].kd.as_ref()?.inst;
                let answer = match self.neard_answers(h) {
                    Some(n) => {
                        let head = n.client.tip().map_or(0, |b| b.height);
                        Ok(n.client
                            .epochs()
                            .map(|e| e.maintenance_windows(ACCOUNT, head))
                            .unwrap_or_default())
                    }
                    None => Err("neard does not answer".to_string()),
                };
                let d = if answer.is_ok() {
                    2 * MS
                } else {
                    STATUS_TIMEOUT
                };
                self.after(
                    d,
                    Ev::ToKd {
                        h,
                        inst,
                        inc: Inc::Windows(answer),
                    },
                );
                None
            }
            Command::SteppedDown(_) => {
                self.out.step_downs += 1;
                None
            }
            Command::Activated { .. } => {
                self.out.activations += 1;
                if self.t >= self.healed && self.out.recovery_ms.is_none() {
                    self.out.recovery_ms = Some((self.t - self.healed) / MS);
                }
                None
            }
            Command::HotSwapFallback(_) | Command::Doppelganger(_) | Command::Exit => None,
            Command::CreateSession => self.machine_req(h, Op::Create, Purpose::Create),
            Command::Renew(s) => self.machine_req(h, Op::Renew(s), Purpose::Renew),
            Command::Heartbeat {
                session,
                expected_index,
                value,
                seq,
            } => self.machine_req(
                h,
                Op::Lock {
                    expected: Some(expected_index),
                    session,
                    value,
                },
                Purpose::Heartbeat { seq },
            ),
            Command::Acquire {
                session,
                expected_index,
                value,
            } => self.machine_req(
                h,
                Op::Lock {
                    expected: expected_index,
                    session,
                    value,
                },
                Purpose::Acquire,
            ),
            Command::Release {
                session,
                expected_index,
                value,
            } => self.machine_req(
                h,
                Op::Release {
                    session,
                    expected: expected_index,
                    value,
                },
                Purpose::Release,
            ),
            Command::DestroySession(s) => self.machine_req(h, Op::Destroy(s), Purpose::Destroy),
            Command::ReadKey => self.machine_req(h, Op::Get { min_index: None }, Purpose::Read),
        }
    }

    fn machine_req(&mut self, h: usize, op: Op, purpose: Purpose) -> Option<Event> {
        self.send_req(h, op, purpose);
        None
    }

    fn node_record(&self, h: usize, facts: NodeFacts) -> NodeRecord {
        let now = self.hosts[h].clock.wall_ms(self.t);
        let ago = |d: Duration| now.saturating_sub(d.as_millis() as u64);
        NodeRecord {
            node_id: format!("n{h}"),
            hostname: format!("h{h}"),
            state: facts.state.name().to_string(),
            synced: facts.synced,
            head: facts.head,
            neard_version: facts.neard_version,
            failover_mode: if self.sched.scenario.hot_swap {
                "hot-swap".into()
            } else {
                "restart".into()
            },
            priority: facts.priority,
            paused: facts.paused,
            may_take_over: facts.may_take_over,
            session: facts.session,
            validating_since_ms: facts.validating_for.map(ago),
            switchover: facts.switchover,
            stepped_down_ms: facts.fenced_for.map(ago),
            updated_ms: now,
        }
    }

    // ----- the poller ------------------------------------------------------------------------

    fn poll_target_changed(&mut self, h: usize) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        if k.poll.busy {
            k.poll.changed = true;
        } else {
            k.poll.gen += 1;
            let (inst, gen) = (k.inst, k.poll.gen);
            self.after(0, Ev::PollTick { h, inst, gen });
        }
    }

    fn poll_tick(&mut self, h: usize, inst: u64, gen: u64) {
        let Some(k) = self.hosts[h].kd.as_ref() else {
            return;
        };
        if k.inst != inst || k.poll.gen != gen {
            return;
        }
        if !self.kd_runnable(h) {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.deferred.push(Ev::PollTick { h, inst, gen });
            }
            return;
        }
        let Some(pid) = k.neard else {
            return;
        };
        let metrics_due = k.poll.metrics
            || k.poll
                .metrics_at
                .is_none_or(|m| self.t >= m + METRICS_INTERVAL);
        let (answer, delay) = match self.neard_answers(h) {
            Some(n) if n.pid == pid => {
                let poll = self.make_poll(h, metrics_due);
                let version = if self.sched.scenario.old_neard[h] {
                    "2.2.1"
                } else {
                    "2.6.0"
                };
                (
                    Some((poll, version.to_string())),
                    self.rng.range(MS / 2, 3 * MS),
                )
            }
            _ => {
                let alive = self.hosts[h]
                    .neard
                    .as_ref()
                    .is_some_and(|n| n.pid == pid && n.alive && n.rpc_up);
                (None, if alive { STATUS_TIMEOUT } else { MS })
            }
        };
        if let Some(k) = self.hosts[h].kd.as_mut() {
            k.poll.busy = true;
            if metrics_due && answer.is_some() {
                k.poll.metrics_at = Some(self.t);
            }
            let gen = k.poll.gen;
            self.after(
                delay,
                Ev::ToKd {
                    h,
                    inst,
                    inc: Inc::PollDone {
                        pid,
                        gen,
                        poll: answer,
                    },
                },
            );
        }
    }

    fn poll_done(&mut self, h: usize, pid: u32, gen: u64, poll: Option<(Poll, String)>) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        if k.poll.gen != gen {
            return;
        }
        k.poll.busy = false;
        let changed = std::mem::take(&mut k.poll.changed);
        k.poll.gen += 1;
        let (inst, gen2, interval) = (k.inst, k.poll.gen, k.poll.interval);
        let current = k.neard == Some(pid);
        let mut version_event = None;
        if let Some((_, v)) = &poll {
            if k.poll.version.as_deref() != Some(v.as_str()) {
                k.poll.version = Some(v.clone());
                version_event = Some(v.clone());
            }
        }
        self.after(
            if changed { 0 } else { interval },
            Ev::PollTick { h, inst, gen: gen2 },
        );
        if !current {
            return;
        }
        if let Some(v) = version_event {
            self.kd_feed(h, Event::NeardVersion(v));
        }
        match poll {
            Some((p, _)) => self.kd_feed(h, Event::Status(p)),
            None => self.kd_feed(h, Event::StatusFailed),
        }
    }

    fn make_poll(&self, h: usize, metrics: bool) -> Poll {
        let host = &self.hosts[h];
        let n = host.neard.as_ref().expect("make_poll needs a neard");
        let tip = n.client.tip();
        let c = n.client.counters(ACCOUNT);
        Poll {
            syncing: self.neard_syncing(h),
            head: tip.map_or(0, |b| b.height),
            block_ms: tip.map(|b| b.time_ms),
            wall_ms: host.clock.wall_ms(self.t),
            key: match &n.key {
                None => KeyShown::None,
                Some(k) if is_ours(k) => KeyShown::Ours,
                Some(_) => KeyShown::Other,
            },
            hot_swap_capable: Some(!self.sched.scenario.old_neard[h]),
            target: metrics.then(|| n.client.largest_target_height()),
            reloads: metrics.then_some(n.reloads),
            production: metrics.then_some(Production {
                blocks_produced: c.blocks_produced,
                blocks_expected: c.blocks_expected,
                chunks_produced: c.chunks_produced,
                chunks_expected: c.chunks_expected,
                own_blocks: n.client.blocks_produced(),
                own_chunks: n.client.chunks_produced(),
            }),
        }
    }

    // ----- Consul: requests ------------------------------------------------------------------

    fn send_req(&mut self, h: usize, op: Op, purpose: Purpose) -> usize {
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

    fn agent_runs(&self, h: usize) -> bool {
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

    fn server_up(&self) -> bool {
        !self.consul.quorum_lost && self.t >= self.consul.election_until
    }

    fn req_at_server(&mut self, id: usize) {
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
                        Rec::Node(n) if n.node_id != me => peers.push(n.clone()),
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

    fn schedule_expiry(&mut self, id: &str) {
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

    fn resp_at_agent(&mut self, id: usize) {
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

    fn resolve(&mut self, id: usize, res: Res) {
        self.resolve_after(id, res, 0);
    }

    /// A store change: wake the blocking queries it answers, track the lock holder.
    fn store_changed(&mut self) {
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
            // `kuutamoctl switchover --wait` clears its request once another node holds the
            // lock.
            if holder.is_some()
                && self
                    .consul
                    .switchover_from
                    .is_some_and(|from| from != holder)
            {
                self.consul.switchover_from = None;
                self.consul.control.switchover = None;
                self.write_control();
            }
        }
        self.wake_waiters(false);
    }

    fn records_changed(&mut self) {
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
    fn server_recovered(&mut self) {
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

    fn consul_done(&mut self, h: usize, id: usize) {
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

    // ----- the watches -------------------------------------------------------------------------

    fn watch_query(&mut self, h: usize) {
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

    fn cluster_query(&mut self, h: usize) {
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
            Res::Prefix(mut control, peers, new_index) => {
                let unchanged = k.cluster_index > 0 && new_index == k.cluster_index;
                k.cluster_index = if new_index < k.cluster_index {
                    0
                } else {
                    new_index
                };
                let now = self.hosts[h].clock.wall_ms(self.t);
                if control
                    .switchover
                    .as_ref()
                    .is_some_and(|s| s.expires_ms < now)
                {
                    control.switchover = None;
                }
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

    // ----- the guard ---------------------------------------------------------------------------

    fn guard_runnable(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.guard.as_ref().is_some_and(|g| g.alive && !g.stopped)
            && !host.suspended
            && !(host.group_stopped && self.settings.mutation == Mutation::GuardInGroup)
    }

    fn guard_write(&mut self, h: usize, seq: u64, order: GuardOrder) -> Option<Event> {
        let gen = self.hosts[h].kd.as_ref()?.guard_gen;
        let blocking = self.settings.mutation == Mutation::BlockingGuardPipe;
        let ok = match self.hosts[h].guard.as_mut() {
            Some(g) if g.alive && g.gen == gen => {
                if g.pipe.len() >= PIPE_ORDERS {
                    if blocking {
                        // The write blocks kuutamod until the guard reads.
                        g.pipe.push_back((seq, order));
                        if let Some(k) = self.hosts[h].kd.as_mut() {
                            k.blocked = true;
                        }
                        self.trace(|| format!("host {h} kuutamod blocks on the guard's pipe"));
                        return None;
                    }
                    false
                } else {
                    g.pipe.push_back((seq, order));
                    true
                }
            }
            _ => false,
        };
        if !ok {
            return Some(Event::GuardLost);
        }
        if self.guard_runnable(h) {
            let d = self.rng.range(MS / 20, MS / 2);
            self.after(d, Ev::GuardRun { h, gen });
        }
        None
    }

    fn guard_respawn(&mut self, h: usize) -> Event {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return Event::GuardSpawnFailed;
        };
        k.guard_gen += 1;
        k.blocked = false;
        let gen = k.guard_gen;
        self.hosts[h].guard = Some(Guard {
            gen,
            alive: true,
            stopped: false,
            pipe: VecDeque::new(),
            armed: None,
            tgen: 0,
            exit_pending: false,
        });
        Event::GuardSpawned
    }

    fn guard_run(&mut self, h: usize, gen: u64) {
        if !self.guard_runnable(h) || self.hosts[h].guard.as_ref().map(|g| g.gen) != Some(gen) {
            return;
        }
        let inst = self.hosts[h].kd.as_ref().map(|k| k.inst);
        while let Some((seq, order)) = self.hosts[h]
            .guard
            .as_mut()
            .and_then(|g| g.pipe.pop_front())
        {
            let note = match order {
                GuardOrder::Arm { pid, deadline } => {
                    let alive = self.hosts[h].neard.as_ref().is_some_and(|n| n.pid == pid);
                    if alive {
                        let t = self.clock_reaches(h, deadline.as_nanos());
                        let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                        g.armed = Some((pid, deadline.as_nanos()));
                        g.tgen += 1;
                        let tgen = g.tgen;
                        self.at(t, Ev::GuardTimer { h, gen, tgen });
                        Ok(seq)
                    } else {
                        // As the real guard: no pidfd for a neard that is gone; it drops what
                        // it held and refuses.
                        let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                        g.armed = None;
                        g.tgen += 1;
                        Err(seq)
                    }
                }
                GuardOrder::Disarm => {
                    let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                    g.armed = None;
                    g.tgen += 1;
                    Ok(seq)
                }
                GuardOrder::Ping => Ok(seq),
            };
            if let Some(inst) = inst {
                let d = self.rng.range(MS / 20, MS / 2);
                self.after(
                    d,
                    Ev::ToKd {
                        h,
                        inst,
                        inc: Inc::GuardNote {
                            gen,
                            ack: Some(note),
                        },
                    },
                );
            }
        }
        let unblock = self.hosts[h].kd.as_ref().is_some_and(|k| k.blocked);
        if unblock {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.blocked = false;
            }
            self.kd_resume(h, 0);
        }
        self.guard_timer_due(h);
        self.guard_exit_if_orphan(h);
    }

    fn guard_timer(&mut self, h: usize, gen: u64, tgen: u64) {
        let current = self.hosts[h]
            .guard
            .as_ref()
            .is_some_and(|g| g.gen == gen && g.tgen == tgen);
        if current {
            self.guard_timer_due(h);
        }
    }

    /// The guard's timerfd: kills an armed neard whose deadline passed on the guard's clock.
    fn guard_timer_due(&mut self, h: usize) {
        if !self.guard_runnable(h) {
            return;
        }
        let now = self.clock_now(h);
        let Some((pid, deadline)) = self.hosts[h].guard.as_ref().and_then(|g| g.armed) else {
            return;
        };
        if now < deadline {
            // An early wake (a suspend stopped MONOTONIC): wait again.
            let t = self.clock_reaches(h, deadline);
            let g = self.hosts[h].guard.as_mut().expect("guard");
            g.tgen += 1;
            let (gen, tgen) = (g.gen, g.tgen);
            self.at(t, Ev::GuardTimer { h, gen, tgen });
            return;
        }
        if let Some(g) = self.hosts[h].guard.as_mut() {
            g.armed = None;
        }
        if self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            self.trace(|| format!("host {h} guard kills neard {pid} at its deadline"));
            self.neard_dies(h);
        }
    }

    /// A guard whose kuutamod is gone kills an armed neard and exits, once it runs.
    fn guard_exit_if_orphan(&mut self, h: usize) {
        if !self.guard_runnable(h) || !self.hosts[h].guard.as_ref().is_some_and(|g| g.exit_pending)
        {
            return;
        }
        let armed = self.hosts[h].guard.as_ref().and_then(|g| g.armed);
        if let Some((pid, _)) = armed {
            if self.hosts[h]
                .neard
                .as_ref()
                .is_some_and(|n| n.pid == pid && n.alive)
            {
                self.neard_dies(h);
            }
        }
        self.hosts[h].guard = None;
    }

    fn guard_kill(&mut self, h: usize) {
        let Some(g) = self.hosts[h].guard.as_mut() else {
            return;
        };
        g.alive = false;
        let gen = g.gen;
        self.hosts[h].guard = None;
        if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
            self.after(
                MS / 10,
                Ev::ToKd {
                    h,
                    inst,
                    inc: Inc::GuardNote { gen, ack: None },
                },
            );
        }
        let unblock = self.hosts[h].kd.as_ref().is_some_and(|k| k.blocked);
        if unblock {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.blocked = false;
            }
            self.kd_resume(h, 0);
        }
    }

    fn guard_resume(&mut self, h: usize) {
        if let Some(gen) = self.hosts[h].guard.as_ref().map(|g| g.gen) {
            self.guard_run(h, gen);
        }
    }

    // ----- neard -------------------------------------------------------------------------------

    fn neard_mut(&mut self, h: usize, pid: u32) -> Option<&mut Neard> {
        self.hosts[h].neard.as_mut().filter(|n| n.pid == pid)
    }

    /// The neard whose RPC answers now.
    fn neard_answers(&self, h: usize) -> Option<&Neard> {
        let host = &self.hosts[h];
        if host.suspended || host.hang_until > self.t {
            return None;
        }
        host.neard.as_ref().filter(|n| n.alive && n.rpc_up)
    }

    fn neard_syncing(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.syncing_until > self.t || !host.neard.as_ref().is_some_and(|n| n.joined)
    }

    fn neard_start(&mut self, h: usize, role: Role) -> Event {
        if self.hosts[h].neard.as_ref().is_some_and(|n| n.alive) {
            // The supervisor replaces its child handle; dropping it kills the old process.
            self.neard_dies(h);
        }
        let host = &mut self.hosts[h];
        host.key_file = role == Role::Validator;
        host.next_pid += 1;
        let pid = host.next_pid;
        let client = Client::new(&format!("n{h}"), self.timers, host.stored_target);
        host.neard = Some(Neard {
            pid,
            alive: true,
            client,
            key: host.key_file.then(our_key),
            rpc_up: false,
            joined: false,
            rejoin: false,
            stopping: false,
            reloads: 1,
            key_gen: 0,
            pending_hups: 0,
            last_signed: None,
        });
        let boot = host.boot_ms * MS;
        if let Some(k) = host.kd.as_mut() {
            k.neard = Some(pid);
        }
        self.after(boot, Ev::NeardRpcUp { h, pid });
        let phase = self
            .rng
            .below(self.timers.doomslug_step_period.as_nanos() as u64);
        self.after(boot + phase, Ev::NeardStep { h, pid });
        self.poll_target_changed(h);
        self.trace(|| format!("host {h} starts neard {pid} as {role:?}"));
        Event::NeardSpawned { pid, role }
    }

    /// neard is gone (exited, crashed, killed): it signs nothing more; kuutamod reaps it.
    fn neard_dies(&mut self, h: usize) {
        let Some(n) = self.hosts[h].neard.as_mut() else {
            return;
        };
        if !n.alive {
            return;
        }
        n.alive = false;
        let pid = n.pid;
        let target = n.client.largest_target_height();
        let host = &mut self.hosts[h];
        host.stored_target = host.stored_target.max(target);
        if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
            self.after(
                MS / 10,
                Ev::ToKd {
                    h,
                    inst,
                    inc: Inc::NeardExited(pid),
                },
            );
        }
    }

    fn neard_hello(&mut self, h: usize, pid: u32) {
        let lag = self.lag(h);
        self.after(
            lag,
            Ev::ToChain {
                h,
                pid,
                msg: ToChain::Hello {
                    node: format!("n{h}"),
                },
            },
        );
    }

    fn lag(&mut self, h: usize) -> u64 {
        let host = &self.hosts[h];
        let extra = if host.lag_extra.1 > self.t {
            host.lag_extra.0
        } else {
            0
        };
        (host.lag_ms + extra) * MS + self.rng.below(MS)
    }

    fn signing_key(&self, h: usize) -> Option<Key> {
        let n = self.hosts[h].neard.as_ref()?;
        if !n.alive || self.neard_syncing(h) {
            return None;
        }
        n.key.clone()
    }

    fn instant(&self) -> std::time::Instant {
        self.base + Duration::from_nanos(self.t)
    }

    fn neard_step(&mut self, h: usize, pid: u32) {
        if !self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            return;
        }
        if self.hosts[h].suspended {
            self.hosts[h].frozen.push(Ev::NeardStep { h, pid });
            return;
        }
        let key = self.signing_key(h);
        let now = self.instant();
        let ms = self.hosts[h].clock.wall_ms(self.t);
        let fx = {
            let n = self.hosts[h].neard.as_mut().expect("checked");
            let mut fx = n.client.doomslug_step(now, ms, key.as_ref());
            let p = n.client.production_step(now, ms, key.as_ref());
            fx.send.extend(p.send);
            fx.ledger.extend(p.ledger);
            fx
        };
        self.neard_effects(h, pid, fx);
        let tip = self.hosts[h]
            .neard
            .as_ref()
            .and_then(|n| n.client.tip().map(|b| b.height))
            .unwrap_or(0);
        self.max_node_tip = self.max_node_tip.max(tip);
        let step = self.timers.doomslug_step_period.as_nanos() as u64;
        self.after(step, Ev::NeardStep { h, pid });
    }

    fn neard_effects(&mut self, h: usize, pid: u32, fx: Effects) {
        for e in &fx.ledger {
            if e.account == ACCOUNT {
                if matches!(e.kind, Some(neard_sim::ledger::SignedKind::Approval)) {
                    let now = self.t;
                    if let Some(n) = self.neard_mut(h, pid) {
                        n.last_signed = Some(now);
                    }
                }
                self.out.hash = fnv_mix(self.out.hash, e.height ^ (h as u64) << 48);
                if let Some(what) = self.conflicts.record(e) {
                    self.violate(Violation::Conflict {
                        at_ms: self.t / MS,
                        what,
                    });
                }
            }
        }
        for m in fx.send {
            let lag = self.lag(h);
            self.after(lag, Ev::ToChain { h, pid, msg: m });
        }
    }

    fn send_node(&mut self, h: usize, pid: u32, msg: ToNode) {
        if !self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            return;
        }
        if self.hosts[h].suspended {
            if let Some(n) = self.neard_mut(h, pid) {
                n.rejoin = true;
            }
            return;
        }
        if matches!(msg, ToNode::Welcome(_)) {
            if let Some(n) = self.neard_mut(h, pid) {
                n.joined = true;
            }
        }
        let key = self.signing_key(h);
        let now = self.instant();
        let ms = self.hosts[h].clock.wall_ms(self.t);
        let fx = match self.hosts[h].neard.as_mut() {
            Some(n) => n.client.on_message(msg, now, ms, key.as_ref()),
            None => return,
        };
        self.neard_effects(h, pid, fx);
    }

    fn send_chain(&mut self, h: usize, pid: u32, msg: ToChain) {
        let now = self.instant();
        let ms = crate::clock::WALL_BASE_MS + self.t / MS;
        let out = match msg {
            ToChain::Hello { .. } => {
                let lag = self.lag(h);
                let w = ToNode::Welcome(Box::new(self.net.welcome()));
                self.after(lag, Ev::ToNode { h, pid, msg: w });
                return;
            }
            ToChain::Approval(a) => self.net.on_approval(a, now),
            ToChain::Chunk(c) => match self.net.on_chunk(c) {
                Ok(o) => o,
                Err(_) => return,
            },
            ToChain::Block(b) => match self.net.on_block(b, ms) {
                Ok(o) => o,
                Err(_) => return,
            },
        };
        self.broadcast(out);
    }

    fn chain_tick(&mut self) {
        let now = self.instant();
        let ms = crate::clock::WALL_BASE_MS + self.t / MS;
        let out = self.net.tick(now, ms);
        self.broadcast(out);
        let step = self.timers.doomslug_step_period.as_nanos() as u64;
        self.after(step, Ev::ChainTick);
    }

    fn broadcast(&mut self, out: neard_sim::network::Output) {
        let head = self.net.head().height;
        if head != self.chain_head {
            self.chain_head = head;
            self.chain_head_at = self.t;
        }
        if out.broadcast.is_empty() {
            return;
        }
        for h in 0..self.hosts.len() {
            let Some(pid) = self.hosts[h]
                .neard
                .as_ref()
                .filter(|n| n.alive && n.joined)
                .map(|n| n.pid)
            else {
                continue;
            };
            for m in &out.broadcast {
                let lag = self.lag(h);
                self.after(
                    lag,
                    Ev::ToNode {
                        h,
                        pid,
                        msg: ToNode::from(m.clone()),
                    },
                );
            }
        }
    }

    fn neard_sighup(&mut self, h: usize, pid: u32) {
        if self.hosts[h].suspended {
            if let Some(n) = self.neard_mut(h, pid) {
                n.pending_hups += 1;
            }
            return;
        }
        let mode = self.hosts[h]
            .reload_mode
            .filter(|(_, until)| *until > self.t)
            .map(|(m, _)| m);
        let d = match mode {
            Some(ReloadMode::Ignore) => return,
            Some(ReloadMode::Slow) => self.rng.range(S, 4 * S),
            _ => self.rng.range(MS, 20 * MS),
        };
        self.after(d, Ev::NeardReloadRead { h, pid });
    }

    fn neard_reload_read(&mut self, h: usize, pid: u32) {
        if !self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            return;
        }
        if self.hosts[h].suspended {
            self.hosts[h].frozen.push(Ev::NeardReloadRead { h, pid });
            return;
        }
        let fail = self.hosts[h]
            .reload_mode
            .is_some_and(|(m, until)| m == ReloadMode::Fail && until > self.t);
        if fail {
            self.trace(|| format!("host {h} neard {pid} reload failed (config invalid)"));
            return;
        }
        let key = self.hosts[h].key_file;
        let d = self.rng.range(MS, 30 * MS);
        let n = self.neard_mut(h, pid).expect("checked");
        n.reloads += 1;
        n.key_gen += 1;
        let gen = n.key_gen;
        self.after(d, Ev::NeardReloadApply { h, pid, gen, key });
    }

    // ----- faults --------------------------------------------------------------------------------

    fn fault_start(&mut self, i: usize) {
        use FaultKind::*;
        let kind = self.sched.faults[i].kind.clone();
        let dur_end = self.sched.faults[i].heals_at() * MS;
        self.trace(|| format!("FAULT {}", kind_name(&kind)));
        match kind {
            NeardCrash { host } => {
                if self.hosts[host].neard.as_ref().is_some_and(|n| n.alive) {
                    self.neard_dies(host);
                }
            }
            NeardHang { host, .. } => self.hosts[host].hang_until = dur_end,
            NeardSyncing { host, .. } => self.hosts[host].syncing_until = dur_end,
            NeardReload { host, mode, .. } => self.hosts[host].reload_mode = Some((mode, dur_end)),
            NeardLag { host, lag, .. } => self.hosts[host].lag_extra = (lag, dur_end),
            NeardSlowStop { host, .. } => self.hosts[host].slow_stop_until = dur_end,
            KuutamodKill { host, .. } => {
                self.kd_die(host);
            }
            KuutamodStop { host, .. } => self.hosts[host].kd_stopped = true,
            GroupStop { host, .. } => self.hosts[host].group_stopped = true,
            GuardStop { host, .. } => {
                if let Some(g) = self.hosts[host].guard.as_mut() {
                    g.stopped = true;
                }
            }
            GuardKill { host } => self.guard_kill(host),
            AgentRestart { host, .. } => {
                // A graceful leave reaches the servers (when they can be reached) and ends
                // the node's sessions.
                if self.agent_runs(host) && !self.hosts[host].agent.partitioned && self.server_up()
                {
                    self.consul
                        .store
                        .invalidate_owner(Owner::Host(host), self.t);
                    self.store_changed();
                }
                self.agent_down(host);
            }
            AgentKill { host, .. } => self.agent_down(host),
            AgentPause { host, .. } => self.hosts[host].agent.paused = true,
            AgentPartition { host, .. } => self.hosts[host].agent.partitioned = true,
            Election { .. } => self.consul.election_until = dur_end,
            QuorumLoss { .. } => self.consul.quorum_lost = true,
            ConsulSlow { max, .. } => self.consul.slow = (max, dur_end),
            ConsulLossy { permille, .. } => self.consul.lossy = (permille, dur_end),
            KvDelete => {
                if self.server_up() && self.consul.store.delete(&leader_key(ACCOUNT)) {
                    self.store_changed();
                }
            }
            KvOverwrite => {
                if self.server_up() {
                    self.consul
                        .store
                        .put(&leader_key(ACCOUNT), br#"{"written":"by hand"}"#);
                    self.store_changed();
                }
            }
            KvForeignAcquire { .. } => {
                if self.server_up() {
                    let s = self.consul.store.create_session(
                        Owner::Outsider,
                        OUTSIDER_TTL,
                        OUTSIDER_LOCK_DELAY,
                        self.t,
                        OUTSIDER_TTL + self.rng.below(OUTSIDER_TTL),
                    );
                    self.schedule_expiry(&s);
                    let got = self.consul.store.acquire(
                        &leader_key(ACCOUNT),
                        &s,
                        b"another program's lock",
                        self.t,
                    );
                    if got == Ok(true) {
                        self.store_changed();
                    }
                    self.consul.foreign = Some(s);
                }
            }
            TombstoneReap => self.consul.store.reap_tombstones(),
            HostSuspend { host, .. } => {
                self.hosts[host].suspended = true;
                self.hosts[host].clock.suspend(self.t);
            }
            HandOver { host } => self.signal(host, Event::HandOver),
            Sigterm { host, down } => {
                if self.hosts[host].kd.is_some() {
                    self.hosts[host].restart_after_exit = Some(down);
                }
                self.signal(host, Event::Shutdown);
            }
            CtlPause { .. } => {
                self.consul.control.paused = true;
                self.write_control();
            }
            CtlSwitchover { to } => {
                let expires_ms = crate::clock::WALL_BASE_MS + self.t / MS + 60_000;
                self.consul.control.switchover = Some(Switchover {
                    id: format!("sw{i}"),
                    to: to.map(|h| format!("n{h}")),
                    in_window: false,
                    expires_ms,
                });
                self.consul.switchover_from = Some(self.consul.holder);
                self.write_control();
            }
        }
    }

    fn fault_end(&mut self, i: usize) {
        use FaultKind::*;
        let kind = self.sched.faults[i].kind.clone();
        self.trace(|| format!("HEAL {}", kind_name(&kind)));
        match kind {
            KuutamodKill { host, .. } => self.kd_start(host),
            KuutamodStop { host, .. } => {
                self.hosts[host].kd_stopped = false;
                self.kd_resume(host, 0);
            }
            GroupStop { host, .. } => {
                self.hosts[host].group_stopped = false;
                self.kd_resume(host, 0);
                self.guard_resume(host);
            }
            GuardStop { host, .. } => {
                if let Some(g) = self.hosts[host].guard.as_mut() {
                    g.stopped = false;
                }
                self.guard_resume(host);
            }
            AgentRestart { host, .. } | AgentKill { host, .. } => {
                self.hosts[host].agent.up = true;
            }
            AgentPause { host, .. } => {
                self.hosts[host].agent.paused = false;
                self.agent_resume(host);
            }
            AgentPartition { host, .. } => {
                self.hosts[host].agent.partitioned = false;
                let cut = std::mem::take(&mut self.hosts[host].agent.cut);
                for ev in cut {
                    let d = self.rng.range(MS, 200 * MS);
                    self.after(d, ev);
                }
            }
            Election { .. } | QuorumLoss { .. } => {
                if matches!(kind, QuorumLoss { .. }) {
                    self.consul.quorum_lost = false;
                }
                self.server_recovered();
            }
            KvForeignAcquire { .. } => {
                if let Some(s) = self.consul.foreign.take() {
                    if self.server_up()
                        && self.consul.store.release(
                            &leader_key(ACCOUNT),
                            &s,
                            b"another program's lock",
                        )
                    {
                        self.store_changed();
                    }
                    self.consul.store.invalidate(&s, self.t);
                }
            }
            HostSuspend { host, .. } => self.host_resume(host),
            CtlPause { .. } => {
                self.consul.control.paused = false;
                self.write_control();
            }
            // If kuutamod has not exited yet (it was stopped), systemd's stop goes on; a
            // start that finds it running does nothing.
            Sigterm { host, .. } if self.hosts[host].kd.is_none() => self.kd_start(host),
            _ => {}
        }
    }

    fn signal(&mut self, h: usize, e: Event) {
        if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
            self.send_kd(h, inst, Inc::Signal(e));
        }
    }

    /// `kuutamoctl` writes the control record; while the servers cannot apply it, the
    /// operator's write waits (and is applied when they can).
    fn write_control(&mut self) {
        self.consul.control_pending = !self.server_up();
        if self.server_up() {
            let c = self.consul.control.clone();
            self.consul
                .store
                .put_record(&control_key(ACCOUNT), Rec::Control(c));
            self.records_changed();
        }
    }

    fn agent_down(&mut self, h: usize) {
        let a = &mut self.hosts[h].agent;
        a.up = false;
        a.epoch += 1;
        a.waiting.clear();
        a.cut.clear();
        // Connections to it reset: every open request fails at once.
        let open: Vec<usize> = (0..self.reqs.len())
            .filter(|i| self.reqs[*i].h == h && !self.reqs[*i].resolved)
            .collect();
        for id in open {
            self.resolve(id, Res::Err);
        }
        self.consul.waiters.retain(|id| self.reqs[*id].h != h);
    }

    fn agent_resume(&mut self, h: usize) {
        if !self.agent_runs(h) {
            return;
        }
        let waiting = std::mem::take(&mut self.hosts[h].agent.waiting);
        for ev in waiting {
            self.after(0, ev);
        }
    }

    /// The host wakes up: timers that expired during the suspend fire first (the guard's), then
    /// neard, the agent and kuutamod run again.
    fn host_resume(&mut self, h: usize) {
        self.hosts[h].suspended = false;
        self.hosts[h].clock.resume(self.t);
        self.guard_resume(h);
        let frozen = std::mem::take(&mut self.hosts[h].frozen);
        for ev in frozen {
            let d = self.rng.range(MS / 10, MS);
            self.after(d, ev);
        }
        if let Some((pid, hups, rejoin)) = self.hosts[h]
            .neard
            .as_mut()
            .filter(|n| n.alive)
            .map(|n| (n.pid, std::mem::take(&mut n.pending_hups), n.rejoin))
        {
            for _ in 0..hups {
                self.neard_sighup(h, pid);
            }
            if rejoin || self.hosts[h].neard.as_ref().is_some_and(|n| n.rpc_up) {
                self.neard_hello(h, pid);
            }
        }
        self.agent_resume(h);
        // kuutamod runs before neard does (its suspend detection kills a validating neard at
        // once): the race in which neard signs first is outside the claim (docs/failover.md,
        // "What this does not cover"), so the model leaves it out (docs/dst.md).
        if self.kd_runnable(h) {
            if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
                self.send_kd(h, inst, Inc::Wake);
            }
        }
        self.kd_resume(h, 0);
    }
}

fn our_key() -> Key {
    Key {
        account_id: ACCOUNT.to_string(),
        public_key: OUR_KEY.to_string(),
    }
}

fn is_ours(k: &Key) -> bool {
    k.public_key == OUR_KEY
}

fn kind_name(k: &FaultKind) -> String {
    crate::schedule::Fault {
        at: 0,
        kind: k.clone(),
    }
    .to_string()
    .trim_start_matches("0 ")
    .to_string()
}

/// Runs one schedule.
pub fn run(seed: u64, sched: &Schedule, settings: Settings) -> Outcome {
    let sched = sched.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        World::new(seed, sched, settings).run()
    }));
    match result {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Outcome {
                violation: Some(Violation::Panic(msg)),
                ..Outcome::default()
            }
        }
    }
}
