//! The conductor: everything the supervisor decides between the [`Machine`] and the world, as
//! plain code driven by inputs and time, with no I/O of its own.
//!
//! It turns the machine's [`Command`]s into calls on its [`Host`] (lock-store requests, neard's
//! RPC, guard orders, signals, files) and each answer into the machine's [`Event`]s, and it
//! runs what lives beside the machine: the leader-key watch and its index bookkeeping, the
//! cluster watch (peers' records, the control record, a second process with our node id), the
//! neard poller's cadence (`/status`, `/metrics` now and then, version changes), the status
//! record writer (one write at a time, the newest last), the lock-memory keeper, the end of a
//! switchover in the control record, the start's node-id check, the guard's notes, suspend
//! detection and the role-change hook.
//!
//! The daemon runs it on tokio (`supervisor::run`: its host executes each call and feeds the
//! answers back); the deterministic simulation (`dst/`) runs the same conductor on its
//! simulated world. Nothing here waits: every timing is a deadline in
//! [`Conductor::next_deadline`].
//!
//! # Layout
//!
//! - `host`: the seam ([`Host`], [`Input`]) and its vocabulary.
//! - `store`: the machine's lock-store requests and their answers.
//! - `watch`: the leader-key watch, the cluster watch and the start's node-id check.
//! - `poller`: neard's `/status` and `/metrics`.
//! - `writers`: the status record, the lock memory, a switchover's end.
//! - `processes`: the guard and neard (starts, signals, notes, losing the guard).

mod host;
mod poller;
mod processes;
mod store;
mod watch;
mod writers;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::time::Duration;

pub use host::{Host, Input, Meter, NeardSignal, Now, Report, SpawnError, StatusAnswer};

use crate::clock::Instant;
use crate::lock_store::{Failure, StoreOp, StoreReply};
use crate::machine::{Command, Config, Event, Machine, State};
use crate::neard::Role;
use crate::records::NodeRecord;

use poller::Poller;
use store::Pending;
use watch::{ClusterWatch, KeyWatch, NodeIdCheck};
use writers::{Finisher, MemoryKeeper, RecordWriter};

/// `wait` of the watches' blocking queries. Long, so an idle standby costs the store almost
/// nothing; a change (every heartbeat) still wakes it at once.
pub const WATCH_WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed watch query (or a failed status-record write), so an unreachable
/// store is not hammered.
pub const WATCH_RETRY: Duration = Duration::from_secs(1);
/// Pause after a blocking query that returned without a change of index (its wait ran out, or
/// the store woke it spuriously), so a misbehaving store cannot turn the watch into a busy
/// loop.
pub const WATCH_IDLE: Duration = Duration::from_millis(100);
/// How often `/metrics` is read when the machine does not ask for it: often enough to follow
/// our account's production within a few blocks, rarely enough to cost neard nothing (its
/// `/metrics` is large).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);
/// How many times a switchover's end is tried against a control record that keeps changing.
pub const FINISH_TRIES: usize = 20;

/// What the conductor needs besides the machine's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The machine's configuration (node id, host name, account, timing, ...).
    pub machine: Config,
    /// The public key of our validator key (`ed25519:...`): which key neard's `/status` shows.
    pub validator_key: String,
    /// A random id of this kuutamod process, in its status records.
    pub instance: String,
    /// Refuse to start next to a live kuutamod of our node id on another host.
    pub check_node_id: bool,
}

/// Fixes of the conductor that the deterministic simulation may switch off (only with the
/// `mutations` feature; see [`crate::machine::Mutations`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConductorMutations {
    /// Each status record is written by a request of its own, as soon as it is made, with no
    /// retry, and a stale record of ours in Consul is left as it is: two writes in flight may
    /// land in either order (the bug fixed in 4d88641).
    pub records_overtake: bool,
    /// `/metrics` is read at most every [`METRICS_INTERVAL`], also for a neard just started:
    /// a hot swap right after its first poll cannot be confirmed.
    pub metrics_once_per_interval: bool,
    /// Peers' status records are judged by their writers' wall clocks
    /// ([`NodeRecord::is_fresh`]): a record more than six minutes old by our clock is dropped.
    pub peers_by_wall_clock: bool,
}

/// Where the conductor is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Life {
    /// Checking that no other host runs our node id; then the machine starts. `shutdown`: a
    /// SIGTERM came meanwhile.
    Checking { check: NodeIdCheck, shutdown: bool },
    /// The machine runs (and, once it has exited, the last writes finish).
    Running,
    /// Refused to start: why.
    Refused(String),
}

/// The supervisor's decisions around the machine.
#[derive(Debug)]
pub struct Conductor {
    settings: Settings,
    mutations: ConductorMutations,
    machine: Machine,
    life: Life,
    now: Now,
    /// The last `(BOOTTIME, MONOTONIC)` readings, for suspend detection.
    clocks: (u64, u64),
    next_id: u64,
    /// Lock-store calls in flight, by id.
    pending: Vec<(u64, Pending)>,
    key_watch: KeyWatch,
    cluster: ClusterWatch,
    poller: Poller,
    records: RecordWriter,
    memory: MemoryKeeper,
    finishers: Vec<Finisher>,
    /// The maintenance-window query in flight.
    windows: Option<u64>,
    /// The running neard (the guard's child).
    neard: Option<u32>,
    /// The spawn order the guard has not answered yet, and the role it starts.
    spawning: Option<(u64, Role)>,
    next_spawn: u64,
    /// neards whose exit the machine has taken note of: the guard may reap them.
    to_reap: Vec<u32>,
    neard_starts: u64,
    guard_generation: u64,
    /// A guard process is ours (started, not given up).
    guard_up: bool,
    /// The state last reported.
    shown: State,
}

impl Conductor {
    /// A conductor at `now`, with the machine not started yet ([`Conductor::start`]).
    pub fn new(settings: Settings, now: Now) -> Conductor {
        let machine = Machine::new(settings.machine.clone(), now.boot);
        let account = settings.machine.account.clone();
        let node_id = settings.machine.node_id.clone();
        Conductor {
            mutations: ConductorMutations::default(),
            machine,
            life: Life::Running,
            now,
            clocks: (now.boot.as_nanos(), now.mono),
            next_id: 0,
            pending: Vec::new(),
            key_watch: KeyWatch::new(crate::settings::leader_key(&account), now.boot),
            cluster: ClusterWatch::new(
                &account,
                &node_id,
                &settings.instance,
                &settings.machine.hostname,
                now.boot,
            ),
            poller: Poller::new(now.boot),
            records: RecordWriter::new(crate::records::node_key(&account, &node_id)),
            memory: MemoryKeeper::default(),
            finishers: Vec::new(),
            windows: None,
            neard: None,
            spawning: None,
            next_spawn: 0,
            to_reap: Vec::new(),
            neard_starts: 0,
            guard_generation: 0,
            guard_up: false,
            shown: State::Startup,
            settings,
        }
    }

    /// Switches conductor fixes off (the simulation's mutations; without the `mutations`
    /// feature this does nothing).
    pub fn with_mutations(mut self, m: ConductorMutations) -> Conductor {
        if cfg!(feature = "mutations") {
            self.mutations = m;
        }
        self
    }

    /// Starts: the node-id check first (when configured), then the watches and the machine.
    pub fn start(&mut self, now: Now, host: &mut impl Host) {
        self.now = now;
        if self.settings.check_node_id {
            let key = crate::records::node_key(
                &self.settings.machine.account,
                &self.settings.machine.node_id,
            );
            self.life = Life::Checking {
                check: NodeIdCheck::Reading,
                shutdown: false,
            };
            self.request(
                StoreOp::GetKey {
                    key,
                    blocking: None,
                    consistent: false,
                },
                Pending::NodeId,
                Meter::Quiet,
                host,
            );
        } else {
            self.run(false, host);
        }
    }

    /// The checks passed: the watches start and the machine takes its first step.
    fn run(&mut self, shutdown: bool, host: &mut impl Host) {
        self.life = Life::Running;
        let mut queue = VecDeque::from([Event::Tick]);
        if shutdown {
            queue.push_back(Event::Shutdown);
        }
        self.handle_all(queue, host);
        self.pump(host);
    }

    /// The machine.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Whether the start's checks passed and the machine runs.
    pub fn running(&self) -> bool {
        self.life == Life::Running && !self.machine.exited()
    }

    /// The status record this node published last, if any.
    pub fn last_record(&self) -> Option<&NodeRecord> {
        self.records.newest()
    }

    /// Whether no status record is waiting to be written or being written.
    pub fn records_idle(&self) -> bool {
        self.records.flushed()
    }

    /// The neard kuutamod runs now (its pid), if any.
    pub fn neard(&self) -> Option<u32> {
        self.neard
    }

    /// Whether kuutamod is done: the machine exited, or the start was refused.
    pub fn exited(&self) -> bool {
        match &self.life {
            Life::Refused(_) => true,
            Life::Checking { .. } => false,
            Life::Running => self.machine.exited(),
        }
    }

    /// Why the start was refused, if it was.
    pub fn refused(&self) -> Option<&str> {
        match &self.life {
            Life::Refused(why) => Some(why),
            _ => None,
        }
    }

    /// Whether the last status record and the lock memory are written (after the exit,
    /// kuutamod waits a moment for them).
    pub fn flushed(&self) -> bool {
        self.records.flushed() && self.memory.flushed()
    }

    /// The next instant at which time alone changes something: a deadline of the machine, a
    /// watch to query again, a poll, a retry.
    pub fn next_deadline(&self) -> Option<Instant> {
        if !matches!(self.life, Life::Running) {
            return None;
        }
        let mut soonest: Option<Instant> = self.records.due();
        let mut push = |t: Option<Instant>| {
            if let Some(t) = t {
                soonest = Some(soonest.map_or(t, |s| s.min(t)));
            }
        };
        if !self.machine.exited() {
            push(self.machine.next_deadline());
            push(self.key_watch.due());
            push(self.cluster.due());
            if self.neard.is_some() {
                push(self.poller.due());
            }
            for f in &self.finishers {
                push(f.due());
            }
        }
        soonest
    }

    /// Takes in `input` at `now`, and everything that follows from it at once.
    pub fn feed(&mut self, input: Input, now: Now, host: &mut impl Host) {
        self.now = now;
        let mut queue = VecDeque::new();
        if let Some(lost) = self.suspended(now) {
            log::warn!("the host was suspended for {lost:?}");
            queue.push_back(Event::ClockJump(lost));
        }
        if let Life::Checking { shutdown, .. } = &mut self.life {
            match input {
                Input::Shutdown => *shutdown = true,
                Input::Store { id, result } => self.on_store(id, result, &mut queue, host),
                _ => {}
            }
            return;
        }
        if matches!(self.life, Life::Refused(_)) {
            return;
        }
        if self.machine.exited() {
            // Only the last writes finish.
            match input {
                Input::Store { id, result } => self.on_store(id, result, &mut queue, host),
                Input::Saved { id, result } => self.memory.saved(id, result),
                _ => {}
            }
            self.pump(host);
            return;
        }
        match input {
            Input::Tick => queue.push_back(Event::Tick),
            Input::Shutdown => queue.push_back(Event::Shutdown),
            Input::HandOver => {
                log::info!("SIGUSR1 received: handing over");
                queue.push_back(Event::HandOver);
            }
            Input::Guard(note) => {
                if let Some(e) = self.on_note(note, host) {
                    queue.push_back(e);
                }
            }
            Input::Store { id, result } => self.on_store(id, result, &mut queue, host),
            Input::Status { id, result } => self.on_status(id, result, &mut queue, host),
            Input::Metrics { id, result } => self.on_metrics(id, result, &mut queue, host),
            Input::Windows { id, result } => {
                if self.windows == Some(id) {
                    self.windows = None;
                    queue.push_back(Event::Windows(result));
                }
            }
            Input::Saved { id, result } => self.memory.saved(id, result),
        }
        self.handle_all(queue, host);
        self.pump(host);
    }

    /// Suspend detection: `CLOCK_BOOTTIME` moved further than `CLOCK_MONOTONIC` since the last
    /// input.
    fn suspended(&mut self, now: Now) -> Option<Duration> {
        let (boot0, mono0) = self.clocks;
        self.clocks = (now.boot.as_nanos(), now.mono);
        crate::clock::suspended(boot0, mono0, now.boot.as_nanos(), now.mono)
    }

    /// Feeds `queue` to the machine and carries out its commands, with everything that follows
    /// at once; then lets the guard reap the neards whose exit the machine has taken note of.
    fn handle_all(&mut self, mut queue: VecDeque<Event>, host: &mut impl Host) {
        loop {
            while let Some(event) = queue.pop_front() {
                let commands = self.machine.handle(event, self.now.boot);
                for c in commands {
                    self.command(c, &mut queue, host);
                }
                self.state_changed(host);
            }
            self.send_reaps(&mut queue, host);
            if queue.is_empty() {
                return;
            }
        }
    }

    /// A new state is logged and given to the hook.
    fn state_changed(&mut self, host: &mut impl Host) {
        let state = self.machine.state();
        if state == self.shown {
            return;
        }
        log::info!("state {} -> {}", self.shown.name(), state.name());
        if state == State::Promoting {
            match self.machine.fence_status() {
                Some(Err(closed)) => {
                    log::info!("the key goes live once the fence opens; now: {closed}")
                }
                Some(Ok(())) => log::info!("the fence is open"),
                None => {}
            }
        }
        host.hook(self.shown, state);
        self.shown = state;
    }

    /// Carries out one command of the machine; events that report its outcome at once go to
    /// `follow`.
    fn command(&mut self, command: Command, follow: &mut VecDeque<Event>, host: &mut impl Host) {
        match command {
            Command::StartNeard(role) => self.start_neard(role, follow, host),
            Command::TermNeard => self.signal_neard(NeardSignal::Term, host),
            Command::KillNeard => self.kill_neard(follow, host),
            Command::Sighup => self.signal_neard(NeardSignal::Hup, host),
            Command::InstallKey => host.install_key(),
            Command::RemoveKey => host.remove_key(),
            Command::SetPolling(polling) => self.poller.set_polling(polling),
            Command::Guard { seq, order } => {
                if let Err(e) = host.guard_order(seq, order) {
                    // A guard we cannot reach is killed at once, and neard with it, before the
                    // next command runs.
                    log::error!("cannot give the guard an order: {e}");
                    if self.guard_up {
                        self.drop_guard(host);
                    }
                    follow.push_back(Event::GuardLost);
                }
            }
            Command::RespawnGuard => follow.push_back(self.respawn_guard(host)),
            Command::SteppedDown(reason) => {
                log::warn!("stepping down: {}", reason.describe());
                host.report(Report::SteppedDown(reason));
            }
            Command::Activated { took, hot_swap } => {
                log::info!(
                    "neard validates with the key {took:?} after acquiring the lock ({})",
                    if hot_swap { "hot swap" } else { "restart" }
                );
                host.report(Report::Activated { took, hot_swap });
            }
            Command::HotSwapFallback(reason) => {
                log::warn!("hot swap: {reason}; restarting neard instead");
                host.report(Report::HotSwapFallback(reason));
            }
            Command::Exit => {}
            Command::SessionAbandoned(id) => log::warn!(
                "Consul session {id} was not renewed for a TTL (Consul may have invalidated it): \
                 this node drops it, gives up any lock it held with it, and creates a new one"
            ),
            Command::Doppelganger(change) => {
                let raised = match change {
                    crate::doppelganger::Change::Raised(evidence) => {
                        log::error!(
                            "DOPPELGANGER: {evidence}: our validator key signs somewhere this cluster does not know of; \
                             this node will not promote until the account has been silent for {} heights",
                            self.settings.machine.doppelganger_heights
                        );
                        true
                    }
                    crate::doppelganger::Change::Cleared => {
                        log::warn!(
                            "doppelganger alarm cleared: our account has been silent long enough"
                        );
                        false
                    }
                };
                host.report(Report::Doppelganger(raised));
            }
            Command::Remember(m) => self.memory.keep(m),
            Command::ConsulRewound { seen, remembered } => {
                log::error!(
                    "Consul's state was rewound: the leader key shows term {}, heartbeat {} at index {}, but this node saw term {}, heartbeat {} at index {} (a snapshot restore?); the key's record is treated as foreign (a TTL's wait, our own view of the chain)",
                    seen.0,
                    seen.1,
                    seen.2,
                    remembered.term,
                    remembered.seq,
                    remembered.index
                );
                host.report(Report::StoreRewound);
            }
            Command::FinishSwitchover(done) => {
                let n = self.id();
                self.finishers.push(Finisher::new(n, done, self.now.boot));
            }
            Command::Publish(facts) => {
                let record = self.node_record(facts);
                if self.mutations.records_overtake {
                    // The old way: a write of its own for every record, at once.
                    self.records.published(record.clone());
                    let key = self.records.key().to_string();
                    self.request(
                        StoreOp::Put {
                            key,
                            value: record.to_bytes(),
                        },
                        Pending::Unanswered,
                        Meter::Publish,
                        host,
                    );
                } else {
                    self.records.publish(record);
                }
            }
            Command::QueryWindows => {
                let id = self.id();
                self.windows = Some(id);
                host.windows(id);
            }
            store @ (Command::CreateSession
            | Command::Renew(_)
            | Command::Heartbeat { .. }
            | Command::Acquire { .. }
            | Command::Release { .. }
            | Command::DestroySession(_)
            | Command::ReadKey) => self.machine_request(store, host),
        }
    }

    /// The status record for `facts`, with the wall-clock times.
    fn node_record(&self, facts: crate::machine::NodeFacts) -> NodeRecord {
        let now = self.now.wall_ms;
        let ago =
            |d: Duration| now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let m = &self.settings.machine;
        NodeRecord {
            node_id: m.node_id.clone(),
            hostname: m.hostname.clone(),
            instance: Some(self.settings.instance.clone()),
            state: facts.state.name().to_string(),
            synced: facts.synced,
            head: facts.head,
            neard_version: facts.neard_version,
            failover_mode: if m.hot_swap { "hot-swap" } else { "restart" }.into(),
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

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Starts lock-store call `op` for `purpose`.
    fn request(&mut self, op: StoreOp, purpose: Pending, meter: Meter, host: &mut impl Host) {
        let id = self.id();
        if purpose != Pending::Unanswered {
            self.pending.push((id, purpose));
        }
        host.store(id, op, meter);
    }

    /// An answer of the lock store.
    fn on_store(
        &mut self,
        id: u64,
        result: Result<StoreReply, Failure>,
        follow: &mut VecDeque<Event>,
        host: &mut impl Host,
    ) {
        let Some(pos) = self.pending.iter().position(|(i, _)| *i == id) else {
            return;
        };
        let (_, purpose) = self.pending.swap_remove(pos);
        match purpose {
            Pending::NodeId => self.node_id_checked(result, host),
            Pending::LeaderWatch => self.key_watch_answer(result, follow),
            Pending::ClusterWatch => self.cluster_answer(result, follow, host),
            Pending::Publish => self.records.written(result, self.now.boot),
            Pending::Finish(n) => self.finish_answer(n, result, host),
            Pending::Unanswered => {}
            machine => self.machine_answer(machine, result, follow),
        }
    }

    /// Starts whatever is due: watch queries, a poll, a status-record write, a lock-memory
    /// write, a switchover's next try.
    fn pump(&mut self, host: &mut impl Host) {
        if !matches!(self.life, Life::Running) {
            return;
        }
        let now = self.now.boot;
        if !self.machine.exited() {
            if self.key_watch.ready(now) {
                self.key_watch_query(host);
            }
            if self.cluster.ready(now) {
                self.cluster_query(host);
            }
            self.poll(host);
            self.finish_pump(host);
        }
        if let Some(op) = self.records.next(now) {
            self.request(op, Pending::Publish, Meter::Publish, host);
        }
        if let Some(m) = self.memory.next() {
            let id = self.id();
            self.memory.sent(id);
            host.save_memory(id, m);
        }
    }
}
