//! The simulated world: hosts with kuutamod, its guard, neard and a Consul agent (or the
//! host's etcd member); the lock store's servers, Consul's or etcd's (`backend`); the chain;
//! one discrete-event loop over true time.
//!
//! Each host runs kuutamod's real supervisor, its
//! [`Conductor`](kuutamod::supervisor::conductor::Conductor) with the `Machine` inside, at the
//! host's clocks; the world is its host: every call (a Consul request, a `/status` read, a
//! guard order, a signal to neard) is carried out on the simulated Consul, neard, guard and
//! processes, with simulated latency and faults, and its answer comes back as the input the
//! daemon's tokio host would give. What a process does while it is stopped is nothing: inputs
//! for it wait until it runs again, as they wait in its sockets and pipes. The loop jumps from
//! event to event; nothing polls time.
//!
//! The invariants of [`crate::oracle`] are checked after every event.
//!
//! # Layout
//!
//! This file holds the world's state, its construction and the event loop; each part of the
//! world's behaviour is a further `impl World` in a module of its own:
//!
//! - `mutation`: the fixes a run may switch off.
//! - `liveness`: the liveness bound after the last fault healed.
//! - `events`: the events of the queue, and where each is dispatched.
//! - `invariants`: the safety and liveness checks.
//! - `observed`: the invariants an operator states (a ready node means a validator,
//!   switchovers as asked, a current status, confirmed hot swaps, a duplicated node id
//!   reported).
//! - `kd`: kuutamod's process: its real supervisor (the conductor) fed its inputs, with the
//!   world as the host that carries out its calls.
//! - `backend`: which lock-store model a run uses, and what the world asks of it besides
//!   kuutamod's calls.
//! - `delivery`: lock-store requests from the agent to the servers and back, and the servers'
//!   side (sessions' TTLs, blocking queries, held requests).
//! - `guard`: the guard process, neard's parent: its pipe, the spawns and exits of neard, its
//!   timer, its death (which takes neard along).
//! - `neard`: neard's processes, their consensus client and the chain they talk to.
//! - `faults`: applying and healing the schedule's faults.
//! - `operator`: `kuutamoctl` at the schedule's moments, running kuutamod's own [`kuutamod::ctl`].

mod backend;
mod delivery;
mod events;
mod faults;
mod guard;
mod invariants;
mod kd;
mod liveness;
mod mutation;
mod neard;
mod observed;
mod operator;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use kuutamod::timing::Timing;
use neard_sim::network::Network;
use neard_sim::spec::{ChainSpec, Timers};

use crate::clock::{HostClock, MS, S};
use crate::oracle::{Conflicts, Violation};
use crate::rng::Rng;
use crate::schedule::{ReloadMode, Schedule};

use backend::Model;
use delivery::{Req, Servers};
use events::{Ev, Item};
use guard::Guard;
use kd::Kd;
use neard::Neard;

pub use backend::Backend;
pub use liveness::liveness_bound_ms;
pub use mutation::Mutation;

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
pub use kuutamod::settings::DOPPELGANGER_HEIGHTS;

/// How long a Consul server holds a request while there is no leader before it answers "No
/// cluster leader" (Consul's `rpc_hold_timeout`, 7 s).
const RPC_HOLD: u64 = 7 * S;
/// Capacity of the guard's stdin pipe, in orders (64 KiB of lines of about 40 bytes); the
/// default of `Settings::guard_pipe`.
pub const PIPE_ORDERS: usize = 1600;
/// An outsider session's TTL and lock-delay (Consul's default lock-delay).
const OUTSIDER_TTL: u64 = 10 * S;
const OUTSIDER_LOCK_DELAY: u64 = 15 * S;

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
    /// Capacity of the guard's stdin pipe, in orders.
    pub guard_pipe: usize,
    /// The lock store modelled.
    pub backend: Backend,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mutation: Mutation::None,
            block_ms: 200,
            keep_ledger: false,
            trace: false,
            guard_pipe: PIPE_ORDERS,
            backend: Backend::Consul,
        }
    }
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
    /// Liveness was not judged because every node had priority 0 at the end (the operator's
    /// choice, by `priority` changes).
    pub no_candidate: bool,
    /// The run ended before the liveness bound: liveness held without a break for the
    /// quiescence window after the last fault healed.
    pub quiesced: bool,
    /// The longest time a node was ready to take over while our account signed nothing that
    /// the chain accepted (excused waits not counted), ms.
    pub max_unsigned_ms: u64,
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
    /// kuutamod's `KUUTAMO_PRIORITY` (a restart may change it).
    priority: u32,
    /// kuutamod's wall clock minus the host's (a clock stepped for kuutamod alone), ms.
    kd_wall_offset_ms: i64,
    restart_after_exit: Option<u64>,
    guard: Option<Guard>,
    neard: Option<Neard>,
    key_file: bool,
    /// kuutamod's lock memory in its state directory (survives its restarts).
    memory: Option<kuutamod::lease::LockMemory>,
    stored_target: u64,
    next_pid: u32,
    agent: Agent,
    hang_until: u64,
    syncing_until: u64,
    /// Syncing spells: since when, how long each spell (and each in-sync time between), until
    /// when (true time, ns).
    spells: Option<(u64, u64, u64)>,
    /// neard's head is frozen until then.
    frozen_until: u64,
    reload_mode: Option<(ReloadMode, u64)>,
    lag_extra: (u64, u64),
    slow_stop_until: u64,
    last_lock: Option<u64>,
    boot_ms: u64,
    lag_ms: u64,
    /// Events for the neard and the guard that wait for the host to resume.
    frozen: Vec<Ev>,
    /// Since when this host has been ready to take over (world truth), while it is.
    ready_since: Option<u64>,
    /// When this host's neard last signed something for our account the chain accepted.
    signed_at: u64,
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
    servers: Servers,
    /// Our account's lock key, and its control record's key.
    lock_key: String,
    control_key: String,
    reqs: Vec<Req>,
    /// The operator's kuutamoctl processes.
    operators: Vec<operator::Operator>,
    /// Whether the control record in Consul says paused, and its index.
    paused: bool,
    control_index: u64,
    /// When our account last signed something the chain accepted (true time).
    signed_at: u64,
    /// Until when the lock store last kept a ready node from taking over.
    excused_until: u64,
    /// The bound of "a ready node means a validator" (ms).
    ready_bound: Vec<u64>,
    /// The planned hand-overs in the lock's history.
    handovers: Vec<observed::Handover>,
    /// Per host, the last moment it held the lock with our key live in its neard.
    validated_at: Vec<Option<u64>>,
    /// A kuutamod reported another process with its node id.
    id_conflict_reported: bool,
    /// Since when both hosts with one node id have run.
    both_since: Option<u64>,
    /// `pause` and `resume` commands waiting for the one before them to end.
    operator_queue: Vec<operator::Command>,
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
    /// How long liveness must hold after the last fault healed before the run may end early
    /// (`None`: the run goes on to the liveness bound).
    quiesce: Option<u64>,
    /// Since when liveness has held without a break, after the last fault healed.
    live_since: Option<u64>,
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
                priority: sc.priority[h],
                kd_wall_offset_ms: sc.kd_wall_ms[h],
                restart_after_exit: None,
                guard: None,
                neard: None,
                key_file: false,
                memory: None,
                stored_target: 0,
                next_pid: 100 + 1000 * h as u32,
                agent: Agent {
                    up: true,
                    ..Agent::default()
                },
                hang_until: 0,
                syncing_until: 0,
                spells: None,
                frozen_until: 0,
                reload_mode: None,
                lag_extra: (0, 0),
                slow_stop_until: 0,
                last_lock: None,
                boot_ms: sc.boot_ms[h],
                lag_ms: sc.lag_ms[h],
                frozen: Vec::new(),
                ready_since: None,
                signed_at: 0,
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
            servers: Servers {
                store: Model::new(settings.backend),
                election_until: 0,
                quorum_lost: false,
                held: Vec::new(),
                waiters: Vec::new(),
                slow: (0, 0),
                lossy: (0, 0),
                foreign: None,
                holder: None,
                snapshots: Vec::new(),
                restore_pending: Vec::new(),
            },
            lock_key: kuutamod::settings::leader_key(ACCOUNT),
            control_key: kuutamod::records::control_key(ACCOUNT),
            reqs: Vec::new(),
            operators: Vec::new(),
            paused: false,
            control_index: 0,
            signed_at: 0,
            excused_until: 0,
            ready_bound: (0..sc.hosts)
                .map(|h| liveness::ready_bound_ms(&sched, &timers, h))
                .collect(),
            handovers: Vec::new(),
            validated_at: vec![None; sc.hosts],
            id_conflict_reported: false,
            both_since: None,
            operator_queue: Vec::new(),
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
            quiesce: quiesce_ns(&sched),
            live_since: None,
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
                self.check_ready_means_signing();
                self.check_id_conflict();
            }
            if self.out.violation.is_some() {
                break;
            }
            if self.quiesced() {
                self.out.quiesced = true;
                self.check_status_records();
                break;
            }
        }
        self.out.end_ms = self.t / MS;
        if let Some(k) = self.conflicts.kept.take() {
            self.out.ledger = k;
        }
        self.out
    }
}

/// How long liveness must hold without a break after the last fault healed for a run to end
/// before its liveness bound: long enough for everything the faults left in flight to land
/// (a session ends at most 2 x TTL after its last renewal; a request is held at most
/// `RPC_HOLD` by leaderless servers, longer than any slow-Consul delay). `None` when an
/// outsider's session held the key (its TTL and lock-delay are longer): those runs go on to
/// the bound.
fn quiesce_ns(sched: &Schedule) -> Option<u64> {
    let foreign = sched
        .faults
        .iter()
        .any(|f| matches!(f.kind, crate::schedule::FaultKind::KvForeignAcquire { .. }));
    (!foreign).then_some(2 * TTL.as_nanos() as u64 + RPC_HOLD)
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
