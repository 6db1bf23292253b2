//! The seam between the conductor and the world it runs in: [`Host`], what the conductor asks
//! of its host (the lock store, neard's RPC, the guard and neard's processes, files, the
//! hook), and [`Input`], what comes back. The daemon's host is tokio with real processes
//! (`supervisor::io`); the deterministic simulation's is its simulated world.
//!
//! Calls that wait on the network or the disk return at once and answer later through an
//! [`Input`] carrying the call's id; calls on local processes and files are done when they
//! return, and their result is the return value.

use std::time::Duration;

use crate::clock::Instant;
use crate::doppelganger::Production;
use crate::guard::Note;
use crate::lease::LockMemory;
use crate::lock_store::{Failure, StoreOp, StoreReply};
use crate::machine::{GuardOrder, State, StepDown};
use crate::neard::rpc::NeardMetrics;
use crate::neard::Role;

/// The time of an input, as the host's clocks read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// `CLOCK_BOOTTIME`: every deadline of the machine.
    pub boot: Instant,
    /// `CLOCK_MONOTONIC` (ns), read with `boot`: a host suspend shows as `boot` moving further
    /// than `mono`.
    pub mono: u64,
    /// kuutamod's wall clock (unix ms): status records and polls carry it.
    pub wall_ms: u64,
}

/// How a lock-store call counts in kuutamod's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// A request of the machine (`op` label): counted, timed, and `kuutamod_consul_up` set by
    /// whether it got a usable answer.
    Op(&'static str),
    /// The leader-key watch: counted; a failure sets `kuutamod_consul_up` to 0.
    Watch,
    /// The cluster watch: counted; a failure is counted as an error.
    ClusterWatch,
    /// A status record or the control record written: counted.
    Publish,
    /// Not counted (the start's node-id check).
    Quiet,
}

/// The signals kuutamod sends neard (through its pidfd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeardSignal {
    /// Stop.
    Term,
    /// Reload the validator key.
    Hup,
    /// Stop now: it signs nothing more once this is delivered.
    Kill,
}

/// Why an order to start neard could not be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnError {
    /// neard's home could not be prepared for the role, or its command line built: no neard
    /// starts.
    Prepare(String),
    /// No guard process runs to start it.
    NoGuard,
    /// The order could not be written to the guard: the guard is lost.
    Guard(String),
}

/// neard's `/status`, as far as kuutamod reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusAnswer {
    /// `sync_info.syncing`.
    pub syncing: bool,
    /// `sync_info.latest_block_height`.
    pub head: u64,
    /// The head block's time stamp (unix ms), when it parses.
    pub block_ms: Option<u64>,
    /// The public key of the validator key neard has loaded.
    pub validator_key: Option<String>,
    /// neard's version.
    pub version: Option<String>,
    /// Whether this version drops a key on SIGHUP.
    pub hot_swap_capable: Option<bool>,
}

/// What the conductor tells the metrics (its logs it writes itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A step-down (`kuutamod_step_downs_total{reason}`).
    SteppedDown(StepDown),
    /// The key confirmed live, `took` after the lock was acquired
    /// (`kuutamod_failover_duration_seconds`).
    Activated {
        /// Lock to live key.
        took: Duration,
        /// A hot swap, else a restart.
        hot_swap: bool,
    },
    /// A hot swap fell back to a restart (`kuutamod_hot_swap_fallbacks_total{reason}`).
    HotSwapFallback(&'static str),
    /// The doppelganger alarm was raised (`true`) or cleared.
    Doppelganger(bool),
    /// The lock store's state was rewound (`kuutamod_consul_rewinds_total`).
    StoreRewound,
    /// neard started; `restart`: not the first start (`kuutamod_neard_restarts`).
    NeardStarted {
        /// Not the first start of this kuutamod.
        restart: bool,
    },
    /// Another kuutamod process writes our node id's status record
    /// (`kuutamod_node_id_conflict`).
    NodeIdConflict {
        /// Its host.
        host: String,
    },
    /// Our account's production, from neard's `/metrics`.
    Production(Production),
}

/// What the conductor asks of its host.
pub trait Host {
    /// Starts lock-store call `id`; the answer comes as [`Input::Store`].
    fn store(&mut self, id: u64, op: StoreOp, meter: Meter);
    /// Starts a read of neard's `/status`; the answer comes as [`Input::Status`].
    fn status(&mut self, id: u64);
    /// Starts a read of neard's `/metrics`; the answer comes as [`Input::Metrics`].
    fn metrics(&mut self, id: u64);
    /// Starts a query of our account's maintenance windows; the answer comes as
    /// [`Input::Windows`].
    fn windows(&mut self, id: u64);
    /// Starts writing the lock memory to the state directory; done when [`Input::Saved`]
    /// comes.
    fn save_memory(&mut self, id: u64, memory: LockMemory);
    /// Prepares neard's home for `role` and orders the guard to start neard (spawn order
    /// `id`); the guard's [`Note::Spawned`] or [`Note::SpawnFailed`] follows.
    fn spawn_neard(&mut self, id: u64, role: Role) -> Result<(), SpawnError>;
    /// Sends `signal` to neard `pid` through kuutamod's pidfd.
    fn signal_neard(&mut self, pid: u32, signal: NeardSignal) -> Result<(), String>;
    /// Writes the validator key into neard's home (hot swap).
    fn install_key(&mut self);
    /// Removes the validator key from neard's home.
    fn remove_key(&mut self);
    /// Writes an order into the guard's pipe (never blocking).
    fn guard_order(&mut self, seq: u64, order: GuardOrder) -> Result<(), String>;
    /// Opens a pidfd for neard `pid`, the guard's new child.
    fn adopt_neard(&mut self, pid: u32) -> Result<(), String>;
    /// Lets the guard reap neard `pid` (its exit has been taken note of).
    fn reap_neard(&mut self, pid: u32) -> Result<(), String>;
    /// The guard is given up: SIGKILL to neard `neard` (if any) through kuutamod's pidfd, then
    /// to the guard, which is reaped (neard, its child, dies with it anyway).
    fn drop_guard(&mut self, neard: Option<u32>);
    /// Starts a guard process of generation `generation`.
    fn spawn_guard(&mut self, generation: u64) -> Result<(), String>;
    /// Runs the role-change hook for a change of state (never waited for).
    fn hook(&mut self, old: State, new: State);
    /// Tells the metrics.
    fn report(&mut self, report: Report);
}

/// What comes into the conductor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed (a deadline of [`super::Conductor::next_deadline`], or a periodic tick).
    Tick,
    /// SIGTERM or SIGINT.
    Shutdown,
    /// SIGUSR1: hand over.
    HandOver,
    /// A note of a guard (its generation inside).
    Guard(Note),
    /// The answer to lock-store call `id`.
    Store {
        /// The call.
        id: u64,
        /// Its answer.
        result: Result<StoreReply, Failure>,
    },
    /// The answer to `/status` read `id`.
    Status {
        /// The read.
        id: u64,
        /// Its answer, or why there is none.
        result: Result<StatusAnswer, String>,
    },
    /// The answer to `/metrics` read `id`.
    Metrics {
        /// The read.
        id: u64,
        /// Its answer, or why there is none.
        result: Result<NeardMetrics, String>,
    },
    /// The answer to maintenance-window query `id`.
    Windows {
        /// The query.
        id: u64,
        /// Height ranges, or why there are none.
        result: Result<Vec<(u64, u64)>, String>,
    },
    /// The lock memory of write `id` is on disk, or why not.
    Saved {
        /// The write.
        id: u64,
        /// Done, or why not.
        result: Result<(), String>,
    },
}
