//! The I/O around the [`machine`](crate::machine): the conductor.
//!
//! One loop: wait for the next event (a report from a background task, a signal, a note of
//! the guard, which starts neard and reports its exit, or the machine's next deadline), hand it
//! to the machine with the current [`clock`] time, and carry out the commands it returns.
//! Everything that waits on the network runs in a task of its own ([`tasks`]), so the loop
//! always gets to a deadline in time. Commands that are quick and local (signals, key files,
//! guard orders) run inline, and their outcome is fed back at once.

pub mod hook;
mod processes;
pub mod tasks;

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock::{self, JumpDetector};
use crate::exporter::Published;
use crate::guard::{Exe, Guard, Note, GUARD_ENV};
use crate::machine::{Command, Config, Event, Machine, State};
use crate::metrics::Metrics;
use crate::neard::home::Home;
use crate::neard::process::{describe, Neard, SpawnSpec};
use crate::neard::rpc::NeardRpc;
use crate::neard::Role;
use crate::settings::{leader_key, FailoverMode, Settings};
use crate::store::Store;
use crate::supervisor::tasks::{PollTarget, Report};
use crate::timing::{STATUS_INTERVAL, STATUS_TIMEOUT};

/// The loop wakes at least this often, to notice a host suspend (a jump of `CLOCK_BOOTTIME`
/// past `CLOCK_MONOTONIC`) even when no deadline is near.
pub const TICK: Duration = Duration::from_millis(250);

/// How long a stopping kuutamod waits for its last status record to reach Consul.
pub const RECORD_FLUSH: Duration = Duration::from_secs(1);

/// Runs kuutamod until `shutdown` resolves and the machine has fenced, released and stopped.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    published: watch::Sender<Published>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // The guard's parent-death signal is tied to the thread that starts it: it must be the one
    // thread that lives as long as kuutamod (main.rs runs everything on the main thread).
    if nix::unistd::gettid() != nix::unistd::getpid() {
        anyhow::bail!(
            "the supervisor must run on kuutamod's main thread (the guard's parent-death signal is tied to the thread that starts it)"
        );
    }
    let consul = settings.lock_store.client()?;
    let rpc_addr = settings.neard_config.rpc_addr()?;
    let rpc = NeardRpc::new(rpc_addr, STATUS_TIMEOUT)?;
    let exe = Exe::pin().map_err(|e| anyhow::anyhow!("cannot open kuutamod's own binary: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let rpc_for_windows = rpc.clone();
    let (poll_tx, poll_rx) = watch::channel(PollTarget {
        pid: None,
        polling: crate::machine::Polling {
            interval: STATUS_INTERVAL,
            metrics: false,
        },
    });
    let poller = tokio::spawn(tasks::poll_neard(
        rpc,
        settings.validator_key.public_key.clone(),
        settings.account_id.clone(),
        poll_rx,
        tx.clone(),
    ));
    let key = leader_key(&settings.account_id);
    tasks::check_node_id(
        &consul,
        &settings.account_id,
        &settings.node_id,
        &hostname(),
    )
    .await?;
    let instance = crate::records::new_instance();
    let watcher = tokio::spawn(tasks::watch_leader(
        consul.clone(),
        key.clone(),
        tx.clone(),
        metrics.clone(),
    ));
    let cluster = tokio::spawn(tasks::watch_cluster(
        consul.clone(),
        settings.account_id.clone(),
        settings.node_id.clone(),
        instance.clone(),
        tx.clone(),
        metrics.clone(),
    ));
    let (records, records_rx) = watch::channel(None);
    let publisher = tokio::spawn(tasks::publish_records(
        consul.clone(),
        crate::records::node_key(&settings.account_id, &settings.node_id),
        records_rx,
        metrics.clone(),
    ));
    let hooks = settings.on_role_change.clone().map(|cmd| {
        let (hook_tx, hook_rx) = mpsc::unbounded_channel();
        tokio::spawn(hook::run_hooks(
            cmd,
            settings.node_id.clone(),
            settings.account_id.clone(),
            hook_rx,
        ));
        hook_tx
    });
    metrics.priority.set(i64::from(settings.priority));
    let (notes_tx, notes_rx) = mpsc::unbounded_channel();
    let memory_path = crate::memory::path(&settings.state_dir, &settings.account_id);
    let remembered = match crate::memory::load(&memory_path) {
        Ok(m) => m,
        Err(e) => {
            // As a node that never ran: it learns the lock anew from Consul.
            log::error!("{e}");
            None
        }
    };
    if let Some(m) = remembered {
        log::info!(
            "remembered the lock at term {}, heartbeat {}, Consul index {} ({})",
            m.term,
            m.seq,
            m.index,
            memory_path.display()
        );
    }
    let (memory, memory_rx) = watch::channel(remembered);
    let keeper = tokio::spawn(crate::memory::keep(memory_path, memory_rx));
    let config = Config {
        node_id: settings.node_id.clone(),
        hostname: hostname(),
        account: settings.account_id.clone(),
        hot_swap: settings.failover_mode == FailoverMode::HotSwap,
        timing: settings.timing,
        syncing_grace: settings.syncing_grace,
        backoff: crate::backoff::BackoffConfig::DEFAULT,
        priority: settings.priority,
        doppelganger_heights: settings.doppelganger_heights,
        block_delays: settings.neard_config.block_delays()?,
        remembered,
        mutations: crate::machine::Mutations::default(),
    };
    let mut sup = Supervisor {
        machine: Machine::new(config, clock::now()),
        home: Home::new(&settings),
        settings,
        consul,
        key,
        metrics,
        published,
        records,
        neard: None,
        spawning: None,
        next_spawn: 0,
        to_reap: Vec::new(),
        neard_starts: 0,
        poll_tx,
        tx,
        exe,
        guard: None,
        guard_generation: 0,
        notes_tx,
        shown: State::Startup,
        rpc: rpc_for_windows,
        hooks,
        instance,
        memory,
    };
    let result = sup.main_loop(rx, notes_rx, shutdown).await;
    // The last record (`Shutdown`) gets a moment to reach Consul, so `kuutamoctl status` shows
    // a stopped node as stopped.
    drop(sup);
    let _ = tokio::time::timeout(RECORD_FLUSH, keeper).await;
    if tokio::time::timeout(RECORD_FLUSH, publisher).await.is_err() {
        log::warn!("this node's last status record was not published within {RECORD_FLUSH:?}");
    }
    poller.abort();
    watcher.abort();
    cluster.abort();
    result
}

struct Supervisor {
    settings: Settings,
    home: Home,
    consul: Store,
    key: String,
    machine: Machine,
    metrics: Metrics,
    published: watch::Sender<Published>,
    /// This node's status record, for [`tasks::publish_records`].
    records: watch::Sender<Option<crate::records::NodeRecord>>,
    /// The running neard (the guard's child), with kuutamod's pidfd for it.
    neard: Option<Neard>,
    /// The spawn order the guard has not answered yet, and the role it starts.
    spawning: Option<(u64, Role)>,
    next_spawn: u64,
    /// neards whose exit the machine is told of: the guard may reap them once it has been.
    to_reap: Vec<u32>,
    neard_starts: u64,
    poll_tx: watch::Sender<PollTarget>,
    tx: mpsc::UnboundedSender<Report>,
    exe: Exe,
    guard: Option<Guard>,
    guard_generation: u64,
    notes_tx: mpsc::UnboundedSender<Note>,
    shown: State,
    rpc: NeardRpc,
    hooks: Option<mpsc::UnboundedSender<(State, State)>>,
    /// This process's id in its status records.
    instance: String,
    /// The lock memory to persist ([`crate::memory::keep`]).
    memory: watch::Sender<Option<crate::lease::LockMemory>>,
}

impl Supervisor {
    async fn main_loop(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Report>,
        mut notes: mpsc::UnboundedReceiver<Note>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        let mut handover =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        let mut jumps = JumpDetector::new();
        self.handle(Event::Tick);
        while !self.machine.exited() {
            let now = clock::now();
            let sleep = self
                .machine
                .next_deadline()
                .map_or(TICK, |d| d.saturating_duration_since(now).min(TICK));
            let event = tokio::select! {
                biased;
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    Event::Shutdown
                }
                Some(note) = notes.recv() => match self.on_note(note) {
                    Some(event) => event,
                    None => {
                        self.handle_all(VecDeque::new());
                        continue;
                    }
                },
                Some(report) = rx.recv() => {
                    let current = self.neard.as_ref().map(Neard::pid);
                    if report.pid.is_some() && report.pid != current {
                        continue; // a poll of a previous neard
                    }
                    report.event
                }
                Some(()) = handover.recv() => {
                    log::info!("SIGUSR1 received: handing over");
                    Event::HandOver
                }
                _ = tokio::time::sleep(sleep) => Event::Tick,
            };
            if let Some(lost) = jumps.check() {
                log::warn!("the host was suspended for {lost:?}");
                self.handle(Event::ClockJump(lost));
            }
            if let Event::Status(crate::machine::Poll {
                production: Some(p),
                ..
            }) = &event
            {
                self.metrics.set_production(
                    &self.settings.account_id,
                    p,
                    self.settings.kickout_thresholds,
                );
            }
            self.handle(event);
        }
        Ok(())
    }

    /// Feeds an event, and everything that follows from carrying out its commands.
    fn handle(&mut self, event: Event) {
        self.handle_all(VecDeque::from([event]));
    }

    /// Feeds `queue`, and everything that follows; then lets the guard reap the neards whose
    /// exit the machine has taken note of (and published).
    fn handle_all(&mut self, mut queue: VecDeque<Event>) {
        loop {
            while let Some(event) = queue.pop_front() {
                let commands = self.machine.handle(event, clock::now());
                for c in commands {
                    self.execute(c, &mut queue);
                }
                self.publish();
            }
            self.send_reaps(&mut queue);
            if queue.is_empty() {
                return;
            }
        }
    }

    fn publish(&mut self) {
        let state = self.machine.state();
        if state != self.shown {
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
            if let Some(hooks) = &self.hooks {
                let _ = hooks.send((self.shown, state));
            }
            self.shown = state;
        }
        self.metrics.set_state(state);
        let may_take_over = self.machine.may_take_over();
        self.metrics.may_take_over.set(i64::from(may_take_over));
        self.metrics.paused.set(i64::from(self.machine.paused()));
        self.metrics
            .guard_up
            .set(i64::from(self.machine.guard_ok()));
        self.metrics
            .lock_held
            .set(i64::from(self.machine.holds_lock()));
        self.metrics
            .not_signing
            .set(self.machine.not_signing_for().as_secs_f64());
        let trusted = self.machine.wall_clock_trusted();
        if i64::from(trusted) != self.metrics.wall_clock_trusted.get() {
            if trusted {
                log::info!("this host's wall clock agrees with the chain's block timestamps again");
            } else {
                log::warn!(
                    "neard shows a block stamped later than this host's wall clock: the clock is behind the chain's (check NTP); \
                     the height fence ignores block timestamps for {:?}",
                    crate::machine::WALL_DISTRUST
                );
            }
            self.metrics.wall_clock_trusted.set(i64::from(trusted));
        }
        self.published.send_replace(Published {
            state,
            neard_pid: self.neard.as_ref().map(Neard::pid),
            may_take_over,
        });
    }

    /// Carries out one command; the events that report its outcome at once go to `follow`.
    fn execute(&mut self, command: Command, follow: &mut VecDeque<Event>) {
        if let Some(event) = self.execute_one(command, follow) {
            follow.push_back(event);
        }
    }

    fn execute_one(&mut self, command: Command, follow: &mut VecDeque<Event>) -> Option<Event> {
        use nix::sys::signal::Signal;
        match command {
            Command::StartNeard(role) => {
                self.start_neard(role, follow);
                None
            }
            Command::TermNeard => {
                self.signal_neard(Signal::SIGTERM);
                None
            }
            Command::KillNeard => {
                // Delivered, or neard is already gone: either way it signs no more.
                self.kill_neard(follow);
                None
            }
            Command::InstallKey => {
                match self.home.install_key() {
                    Ok(()) => log::info!("hot swap: validator key written into neard's home"),
                    Err(e) => log::error!("cannot install the validator key: {e:#}"),
                }
                None
            }
            Command::RemoveKey => {
                if let Err(e) = self.home.remove_key() {
                    log::error!("{e:#}");
                }
                None
            }
            Command::Sighup => {
                self.signal_neard(Signal::SIGHUP);
                None
            }
            Command::SetPolling(polling) => {
                self.poll_tx.send_modify(|t| t.polling = polling);
                None
            }
            Command::Guard { seq, order } => {
                let sent = match self.guard.as_mut() {
                    Some(g) => g.order(seq, order),
                    None => Err(std::io::Error::other("no guard")),
                };
                match sent {
                    Ok(()) => None,
                    Err(e) => {
                        // A guard we cannot reach is killed at once, and neard with it, before
                        // the next command runs.
                        log::error!("cannot give the guard an order: {e}");
                        if self.guard.is_some() {
                            self.drop_guard();
                        }
                        Some(Event::GuardLost)
                    }
                }
            }
            Command::RespawnGuard => Some(self.respawn_guard()),
            Command::SteppedDown(reason) => {
                log::warn!("stepping down: {}", reason.describe());
                self.metrics
                    .step_downs
                    .with_label_values(&[reason.label()])
                    .inc();
                None
            }
            Command::Activated { took, hot_swap } => {
                self.metrics.failover_duration.observe(took.as_secs_f64());
                log::info!(
                    "neard validates with the key {took:?} after acquiring the lock ({})",
                    if hot_swap { "hot swap" } else { "restart" }
                );
                None
            }
            Command::HotSwapFallback(reason) => {
                log::warn!("hot swap: {reason}; restarting neard instead");
                self.metrics
                    .hot_swap_fallbacks
                    .with_label_values(&[reason])
                    .inc();
                None
            }
            Command::Exit => None,
            Command::Doppelganger(change) => {
                match change {
                    crate::doppelganger::Change::Raised(evidence) => {
                        log::error!(
                            "DOPPELGANGER: {evidence}: our validator key signs somewhere this cluster does not know of; \
                             this node will not promote until the account has been silent for {} heights",
                            self.settings.doppelganger_heights
                        );
                        self.metrics.doppelganger.set(1);
                    }
                    crate::doppelganger::Change::Cleared => {
                        log::warn!(
                            "doppelganger alarm cleared: our account has been silent long enough"
                        );
                        self.metrics.doppelganger.set(0);
                    }
                }
                None
            }
            Command::Remember(m) => {
                self.memory.send_replace(Some(m));
                None
            }
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
                self.metrics.consul_rewinds.inc();
                None
            }
            Command::FinishSwitchover(done) => {
                tokio::spawn(tasks::finish_switchover(
                    self.consul.clone(),
                    self.settings.account_id.clone(),
                    done,
                    self.metrics.clone(),
                ));
                None
            }
            Command::Publish(facts) => {
                let record = self.node_record(facts);
                self.records.send_replace(Some(record));
                None
            }
            Command::QueryWindows => {
                let rpc = self.rpc.clone();
                let account = self.settings.account_id.clone();
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let windows = rpc
                        .maintenance_windows(&account)
                        .await
                        .map_err(|e| e.to_string());
                    let _ = tx.send(Report {
                        event: Event::Windows(windows),
                        pid: None,
                    });
                });
                None
            }
            consul @ (Command::CreateSession
            | Command::Renew(_)
            | Command::Heartbeat { .. }
            | Command::Acquire { .. }
            | Command::Release { .. }
            | Command::DestroySession(_)
            | Command::ReadKey) => {
                tasks::consul_request(
                    self.consul.clone(),
                    self.key.clone(),
                    consul,
                    self.settings.timing.ttl,
                    self.settings.node_id.clone(),
                    self.metrics.clone(),
                    self.tx.clone(),
                );
                None
            }
        }
    }

    /// The status record for `facts`, with the wall-clock times.
    fn node_record(&self, facts: crate::machine::NodeFacts) -> crate::records::NodeRecord {
        let now = tasks::wall_ms();
        crate::records::NodeRecord {
            node_id: self.settings.node_id.clone(),
            hostname: hostname(),
            instance: Some(self.instance.clone()),
            state: facts.state.name().to_string(),
            synced: facts.synced,
            head: facts.head,
            neard_version: facts.neard_version,
            failover_mode: match self.settings.failover_mode {
                FailoverMode::HotSwap => "hot-swap".into(),
                FailoverMode::Restart => "restart".into(),
            },
            priority: facts.priority,
            paused: facts.paused,
            may_take_over: facts.may_take_over,
            session: facts.session,
            validating_since_ms: facts
                .validating_for
                .map(|d| now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            switchover: facts.switchover,
            stepped_down_ms: facts
                .fenced_for
                .map(|d| now.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
            updated_ms: now,
        }
    }
}

/// The host name, for the leader key's value.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
