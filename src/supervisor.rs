//! The I/O around the [`machine`](crate::machine): polls neard's `/status`, keeps the Consul
//! session alive, watches the leader key, enforces the lease deadline, and carries out the
//! machine's actions.
//!
//! Everything that can block for long runs in its own task and reports through a channel (the
//! `/status` poller, the session renewer, the leader-key watch), so the main loop always gets
//! to the lease deadline in time. The deadline counts from the moment the last successful renew
//! was *sent* (monotonic clock) and fires [`Event::LeaseExpired`], which demotes neard while
//! there is still time to kill it before Consul could hand the lock to another node.

use std::collections::VecDeque;
use std::future::Future;
use std::process::ExitStatus;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::consul::{Consul, ConsulError, LeaderValue};
use crate::exporter::Published;
use crate::guard::{Guard, Order};
use crate::machine::{Action, Event, Machine, MachineConfig, NeardStatus, State};
use crate::metrics::Metrics;
use crate::neard::config::NeardConfig;
use crate::neard::process::{describe, Neard};
use crate::neard::rpc::NeardRpc;
use crate::neard::status::Status;
use crate::neard::Role;
use crate::settings::{leader_key, FailoverMode, Settings, ShardTracking};

/// Time between `/status` polls: often enough to notice a wedged neard within seconds, rare
/// enough to cost neard nothing.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Timeout of one `/status` poll; neard answers from memory, so a second means trouble.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failed polls after which neard counts as failed (the original kuutamod's rule).
pub const STATUS_FAILURE_LIMIT: u32 = 3;
/// `wait` of the leader-key blocking query. Long, so an idle standby costs Consul almost
/// nothing; a change still wakes it at once.
pub const WATCH_WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed watch query, so an unreachable Consul is not hammered.
pub const WATCH_RETRY: Duration = Duration::from_secs(1);
/// Pause after a blocking query that returned without a change of index (its wait ran out, or
/// Consul woke it spuriously), so a misbehaving Consul cannot turn the watch into a busy loop.
pub const WATCH_IDLE: Duration = Duration::from_millis(100);
/// Pause before restarting a neard that could not be spawned at all.
pub const SPAWN_RETRY: Duration = Duration::from_secs(1);
/// How long a hot-swap promotion may take to show in neard's `/status` and `/metrics` before
/// kuutamod falls back to a restart. neard applies a reload within a second (its client actor
/// polls the config updater); five seconds allows for load. Capped to half the step-down delay,
/// so a promotion is decided long before the lease needs a renewal.
pub const HOT_SWAP_CONFIRM: Duration = Duration::from_secs(5);
/// Poll interval while waiting for neard to confirm a hot swap: fast, because every
/// millisecond here is a millisecond without a validator.
pub const HOT_SWAP_POLL: Duration = Duration::from_millis(10);

/// What a `/status` poll produced.
type StatusResult = Result<Status, String>;

/// A renew outcome: when the request was sent, and what Consul said.
struct Renewal {
    sent: Instant,
    result: Result<Option<Duration>, ConsulError>,
}

/// Runs kuutamod until `shutdown` resolves (or a fatal error). On return neard is stopped, the
/// validator key is gone from its home, and the session is destroyed (best effort).
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    published: watch::Sender<Published>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let consul = Consul::new(&settings.consul_url, settings.consul_token.clone())
        .map_err(anyhow::Error::msg)?;
    let rpc_addr = settings.neard_config.rpc_addr()?;
    let (status_tx, status_rx) = mpsc::channel(4);
    let status_task = tokio::spawn(poll_status(format!("http://{rpc_addr}/status"), status_tx));
    let (watch_tx, watch_rx) = mpsc::channel(4);
    let watch_task = tokio::spawn(watch_leader(
        consul.clone(),
        leader_key(&settings.account_id),
        watch_tx,
        metrics.clone(),
    ));
    let (renew_tx, renew_rx) = mpsc::channel(4);
    let machine = Machine::new(MachineConfig {
        syncing_grace: settings.syncing_grace,
        failure_limit: STATUS_FAILURE_LIMIT,
        demote_keeps_neard: settings.failover_mode == FailoverMode::HotSwap,
        handover_holdoff: settings.timing.ttl,
    });
    let rpc = NeardRpc::new(rpc_addr, STATUS_TIMEOUT).map_err(anyhow::Error::msg)?;
    let handover = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut sup = Supervisor {
        settings,
        consul,
        machine,
        metrics,
        published,
        neard: None,
        neard_starts: 0,
        session: None,
        renewer: None,
        renew_tx,
        lease_deadline: None,
        guard_deadline: None,
        guard: Some(
            Guard::spawn().map_err(|e| anyhow::anyhow!("cannot start the guard process: {e}"))?,
        ),
        acquired_at: None,
        status_rx,
        rpc,
        hot_swap_capable: None,
        shown: State::Startup,
        exit: false,
    };
    let result = sup.main_loop(watch_rx, renew_rx, handover, shutdown).await;
    status_task.abort();
    watch_task.abort();
    if let Some(r) = sup.renewer.take() {
        r.abort();
    }
    result
}

struct Supervisor {
    settings: Settings,
    consul: Consul,
    machine: Machine,
    metrics: Metrics,
    published: watch::Sender<Published>,
    neard: Option<Neard>,
    neard_starts: u64,
    session: Option<String>,
    renewer: Option<JoinHandle<()>>,
    renew_tx: mpsc::Sender<Renewal>,
    /// Armed while validating: when neard must be demoted unless a renew succeeds first.
    lease_deadline: Option<Instant>,
    /// While this node validates: when the guard must kill neard if kuutamod has not stopped it
    /// by then (the lease deadline plus the stop grace).
    guard_deadline: Option<Instant>,
    /// The guard process (see [`crate::guard`]).
    guard: Option<Guard>,
    /// When the lock was acquired, until the validator key is confirmed live.
    acquired_at: Option<Instant>,
    status_rx: mpsc::Receiver<StatusResult>,
    rpc: NeardRpc,
    /// The state shown in metrics and `/health`: the machine's, except that a node leaving
    /// Validating shows Validating until its fencing actions are done.
    shown: State,
    /// From the last `/status`: can this neard drop a key on SIGHUP (>= 2.3)?
    hot_swap_capable: Option<bool>,
    exit: bool,
}

async fn wait_neard(neard: &mut Option<Neard>) -> std::io::Result<ExitStatus> {
    match neard {
        Some(n) => n.wait().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Supervisor {
    async fn main_loop(
        &mut self,
        mut watch_rx: mpsc::Receiver<Option<String>>,
        mut renew_rx: mpsc::Receiver<Renewal>,
        mut handover: tokio::signal::unix::Signal,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut shutdown_seen = false;
        self.execute(Action::StartNeard(Role::Voter)).await;
        self.handle(Event::NeardStarted).await;
        while !self.exit {
            let lease = if self.machine.state() == State::Validating {
                self.lease_deadline
            } else {
                None
            };
            let event = tokio::select! {
                biased;
                _ = &mut shutdown, if !shutdown_seen => {
                    shutdown_seen = true;
                    Event::Shutdown
                }
                _ = sleep_until_opt(lease) => {
                    log::warn!(
                        "no successful renew of the Consul session for {:?}: stepping down before the TTL ({:?}) can run out",
                        self.settings.timing.step_down_after, self.settings.timing.ttl
                    );
                    self.lease_deadline = None;
                    Event::LeaseExpired
                }
                status = wait_neard(&mut self.neard) => {
                    let pid = self.neard.take().map(|n| n.pid()).unwrap_or_default();
                    match status {
                        Ok(s) => log::warn!("neard (pid {pid}) exited: {}", describe(&s)),
                        Err(e) => log::warn!("neard (pid {pid}): wait failed: {e}"),
                    }
                    self.publish();
                    Event::NeardExited
                }
                Some(renewal) = renew_rx.recv() => match self.on_renewal(renewal) {
                    Some(e) => e,
                    None => continue,
                },
                Some(result) = self.status_rx.recv() => self.on_status(result),
                // Held by our own session counts as free *for us*: after a step-down on the
                // lease deadline the session may live on, and only this node can use it.
                Some(holder) = watch_rx.recv() => Event::LockObserved {
                    free: holder.is_none() || holder == self.session,
                },
                Some(()) = handover.recv() => {
                    log::info!("SIGUSR1 received: handing over");
                    Event::HandOver
                }
            };
            self.handle(event).await;
        }
        Ok(())
    }

    /// Publishes the state to the exporter and the guard.
    fn publish(&mut self) {
        let order = match (self.guard_deadline, &self.neard) {
            (Some(deadline), Some(neard)) => Order::Arm {
                pid: neard.pid(),
                deadline,
            },
            _ => Order::Disarm,
        };
        let sent = match self.guard.as_mut() {
            Some(g) => g.order(order),
            None => Err(std::io::Error::other("no guard")),
        };
        if let Err(e) = sent {
            log::error!("the guard process is gone ({e}); starting a new one");
            self.guard = None;
            match Guard::spawn() {
                Ok(mut g) => {
                    if let Err(e) = g.order(order) {
                        log::error!("the new guard does not listen: {e}");
                    }
                    self.guard = Some(g);
                }
                Err(e) => log::error!("cannot start a guard process: {e}"),
            }
        }
        let state = self.shown;
        self.metrics.set_state(state);
        self.published.send_replace(Published {
            state,
            neard_pid: self.neard.as_ref().map(Neard::pid),
        });
    }

    /// Feeds an event and everything that follows from it to the machine.
    async fn handle(&mut self, event: Event) {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let step = self.machine.step(event, Instant::now());
            if step.from != step.to {
                log::info!(
                    "state {} -> {}: {}",
                    step.from.name(),
                    step.to.name(),
                    step.reason
                );
                if step.from == State::Validating {
                    self.metrics
                        .step_downs
                        .with_label_values(&[step.reason])
                        .inc();
                }
            }
            // A node leaving Validating still shows Validating until its fencing actions are
            // done: the state never claims neard is keyless before it is.
            self.shown = if step.from == State::Validating {
                State::Validating
            } else {
                step.to
            };
            self.publish();
            for action in step.actions {
                if let Some(follow) = self.execute(action).await {
                    queue.push_back(follow);
                }
            }
            if self.machine.state() != State::Validating {
                // Leaving Validating always came with Demote or StopNeard, now done.
                self.guard_deadline = None;
            }
            self.shown = self.machine.state();
            self.publish();
        }
    }

    fn on_status(&mut self, result: StatusResult) -> Event {
        match result {
            Ok(status) => {
                self.hot_swap_capable = status.supports_key_hot_swap();
                if let Some(acquired) = self.acquired_at {
                    if self.key_is_live(&status) {
                        let took = acquired.elapsed();
                        self.metrics.failover_duration.observe(took.as_secs_f64());
                        log::info!(
                            "neard validates with the key {:?} after acquiring the lock",
                            took
                        );
                        self.acquired_at = None;
                    }
                }
                Event::Status(if status.sync_info.syncing {
                    NeardStatus::Syncing
                } else {
                    NeardStatus::Synced
                })
            }
            Err(e) => {
                log::debug!("{e}");
                Event::Status(NeardStatus::Failed)
            }
        }
    }

    fn key_is_live(&self, status: &Status) -> bool {
        status.validator_public_key.as_deref() == Some(&self.settings.validator_key.public_key)
    }

    fn on_renewal(&mut self, renewal: Renewal) -> Option<Event> {
        match renewal.result {
            Ok(ttl) => {
                let mut step_down = self.settings.timing.step_down_after;
                if let Some(ttl) = ttl.filter(|t| *t < self.settings.timing.ttl) {
                    // Consul applies a shorter TTL than asked for: shorten the deadline to match.
                    log::warn!(
                        "Consul applies a TTL of {ttl:?}, shorter than the requested {:?}",
                        self.settings.timing.ttl
                    );
                    step_down = step_down.saturating_sub(self.settings.timing.ttl - ttl);
                }
                if self.machine.state() == State::Validating {
                    let deadline = renewal.sent + step_down;
                    if self.lease_deadline.is_some_and(|d| d < deadline) {
                        self.lease_deadline = Some(deadline);
                        self.guard_deadline = Some(deadline + self.settings.timing.stop_grace);
                        self.publish();
                    }
                }
                None
            }
            Err(ConsulError::SessionGone(id)) => {
                if self.session.as_deref() != Some(id.as_str()) {
                    return None; // an old session's renewer
                }
                log::warn!("Consul session {id} is gone");
                self.stop_renewer();
                self.session = None;
                Some(Event::SessionGone)
            }
            Err(e) => {
                log::warn!("renewing the Consul session failed: {e}");
                None
            }
        }
    }

    fn stop_renewer(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }

    fn start_renewer(&mut self, id: String) {
        self.stop_renewer();
        let consul = self.consul.clone();
        let tx = self.renew_tx.clone();
        let interval = self.settings.timing.renew_interval;
        let metrics = self.metrics.clone();
        self.renewer = Some(tokio::spawn(async move {
            let mut wait = interval;
            loop {
                tokio::time::sleep(wait).await;
                let sent = Instant::now();
                metrics.consul_requests.with_label_values(&["renew"]).inc();
                let result = consul.renew(&id).await;
                // After a failure retry sooner: the lease deadline leaves room for a few tries.
                wait = if result.is_ok() {
                    interval
                } else {
                    interval / 4
                };
                let gone = matches!(result, Err(ConsulError::SessionGone(_)));
                if tx.send(Renewal { sent, result }).await.is_err() || gone {
                    return;
                }
            }
        }));
    }

    /// Writes neard's home for `role`: keys, network address, shard tracking.
    fn prepare_home(&self, role: Role) -> anyhow::Result<()> {
        let s = &self.settings;
        let mut config = match NeardConfig::load(&s.neard_home) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e}; using the config.json read at start");
                s.neard_config.clone()
            }
        };
        let validator_key = config.validator_key_path();
        let node_key = config.node_key_path();
        let (addr, node) = match role {
            Role::Voter => (s.voter_network_addr, &s.voter_node_key),
            Role::Validator => match (s.failover_mode, &s.validator_node_key) {
                (FailoverMode::Restart, Some(key)) => (s.validator_network_addr, key),
                // A hot swap cannot change the node key or address of a running neard, so in
                // hot-swap mode the host keeps its own identity in both roles (also when a
                // failed hot swap falls back to a restart).
                _ => (s.voter_network_addr, &s.voter_node_key),
            },
        };
        if role == Role::Voter {
            crate::keys::remove_durably(&validator_key)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", validator_key.display()))?;
        }
        node.install(&node_key)?;
        config.set_network_addr(addr);
        match s.voter_shard_tracking {
            ShardTracking::None => {}
            ShardTracking::ShadowValidator => {
                config.set_field(
                    "tracked_shards_config",
                    serde_json::json!({ "ShadowValidator": s.validator_key.account_id }),
                );
            }
            ShardTracking::TrackedShadowValidator => {
                config.set_field(
                    "tracked_shadow_validator",
                    serde_json::json!(s.validator_key.account_id),
                );
                config.set_field("tracked_shards", serde_json::json!([]));
            }
        }
        config.save()?;
        if role == Role::Validator {
            s.validator_key.install(&validator_key)?;
        }
        Ok(())
    }

    async fn start_neard(&mut self, role: Role) -> Option<Event> {
        if let Err(e) = self.prepare_home(role) {
            log::error!("cannot prepare neard's home for the {role:?} role: {e:#}");
            tokio::time::sleep(SPAWN_RETRY).await;
            return Some(Event::NeardExited);
        }
        let s = &self.settings;
        match Neard::spawn(&s.neard_bin, &s.neard_home, s.neard_bootnodes.as_deref()) {
            Ok(neard) => {
                if self.neard_starts > 0 {
                    self.metrics.neard_restarts.inc();
                }
                self.neard_starts += 1;
                log::info!("started neard as {role:?} (pid {})", neard.pid());
                self.neard = Some(neard);
                while self.status_rx.try_recv().is_ok() {} // answers of the previous neard
                Some(Event::NeardStarted)
            }
            Err(e) => {
                log::error!("cannot start neard {}: {e}", s.neard_bin.display());
                tokio::time::sleep(SPAWN_RETRY).await;
                Some(Event::NeardExited)
            }
        }
    }

    /// Stops neard and removes the validator key; on return neard is dead.
    async fn stop_neard(&mut self) {
        if let Some(neard) = self.neard.take() {
            let pid = neard.pid();
            match neard.stop(self.settings.timing.stop_grace).await {
                Ok(status) => log::info!("neard (pid {pid}) stopped: {}", describe(&status)),
                Err(e) => log::error!("stopping neard (pid {pid}) failed: {e}"),
            }
        }
        self.acquired_at = None;
        let path = self.validator_key_path();
        if let Err(e) = crate::keys::remove_durably(&path) {
            log::error!("cannot remove the validator key {}: {e}", path.display());
        }
        self.publish();
    }

    async fn restart_as(&mut self, role: Role) -> Option<Event> {
        let acquired = self.acquired_at;
        self.stop_neard().await;
        self.acquired_at = acquired;
        self.start_neard(role).await
    }

    /// The height fence: before this node's key goes live, the chain must have passed the head
    /// its neard saw when the lock was acquired. The old leader was fenced before the lock could
    /// move, so every height it may have signed is at most that head (or, where its last block
    /// had not reached us yet, the very next height, which this wait lets arrive). A neard that
    /// was handed the key sooner could sign a height the old leader already signed.
    async fn height_fence(&mut self) {
        let limit = HOT_SWAP_CONFIRM.min(self.settings.timing.step_down_after / 2);
        let deadline = Instant::now() + limit;
        let mut start = None;
        loop {
            if let Ok(status) = self.rpc.status().await {
                let head = status.sync_info.latest_block_height;
                match start {
                    None => start = Some(head),
                    Some(h0) if head > h0 => {
                        log::info!(
                            "height fence: head moved from {h0} to {head}; activating the key"
                        );
                        return;
                    }
                    Some(_) => {}
                }
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "height fence: no new head observed within {limit:?} (head at the lock: {start:?}); activating the key"
                );
                return;
            }
            tokio::time::sleep(HOT_SWAP_POLL).await;
        }
    }

    fn neard_exited(&mut self) -> bool {
        self.neard.as_mut().is_none_or(Neard::has_exited)
    }

    /// Hot-swap promotion: write the key into the running neard's home, SIGHUP, and wait until
    /// neard itself confirms the key is live (`/status` shows it, and the reload counter moved).
    /// Anything else within [`HOT_SWAP_CONFIRM`] falls back to a restart with the key.
    async fn hot_swap_promote(&mut self) -> Option<Event> {
        let reason = match self.try_hot_swap_promote().await {
            Ok(took) => {
                self.metrics.failover_duration.observe(took.as_secs_f64());
                log::info!(
                    "hot swap: neard validates with the key {took:?} after acquiring the lock"
                );
                self.acquired_at = None;
                return None;
            }
            Err(HotSwapFailure::NotRunning) => {
                // neard died while taking the key: a neard failure like any other. The machine
                // fences (reaps neard, removes the key) and releases the lock, so a healthy
                // standby takes over instead of this node waiting for a restart.
                log::warn!("neard exited during the hot swap");
                self.acquired_at = None;
                return Some(Event::NeardExited);
            }
            Err(reason) => reason,
        };
        log::warn!("hot swap failed ({reason}); restarting neard with the validator key");
        self.metrics
            .hot_swap_fallbacks
            .with_label_values(&[reason.label()])
            .inc();
        self.restart_as(Role::Validator).await
    }

    async fn try_hot_swap_promote(&mut self) -> Result<Duration, HotSwapFailure> {
        let acquired = self.acquired_at.unwrap_or_else(Instant::now);
        if self.neard_exited() {
            return Err(HotSwapFailure::NotRunning);
        }
        let status = self.rpc.status().await.map_err(HotSwapFailure::Rpc)?;
        if status.supports_key_hot_swap() == Some(false) {
            return Err(HotSwapFailure::TooOld);
        }
        let before = self
            .rpc
            .config_reloads()
            .await
            .map_err(HotSwapFailure::Rpc)?;
        self.prepare_home(Role::Validator)
            .map_err(|e| HotSwapFailure::Home(format!("{e:#}")))?;
        if let Some(neard) = self.neard.as_mut() {
            neard
                .signal(nix::sys::signal::Signal::SIGHUP)
                .map_err(|_| HotSwapFailure::NotRunning)?;
        }
        let limit = HOT_SWAP_CONFIRM.min(self.settings.timing.step_down_after / 2);
        let deadline = Instant::now() + limit;
        loop {
            if self.neard_exited() {
                return Err(HotSwapFailure::NotRunning);
            }
            if let (Ok(status), Ok(reloads)) =
                (self.rpc.status().await, self.rpc.config_reloads().await)
            {
                if self.key_is_live(&status) && reloads > before {
                    return Ok(acquired.elapsed());
                }
            }
            if Instant::now() >= deadline {
                return Err(HotSwapFailure::Unconfirmed(limit));
            }
            tokio::time::sleep(HOT_SWAP_POLL).await;
        }
    }

    /// Hot-swap demotion, a hard fence: remove the key, SIGHUP, and wait until `/status` shows
    /// no validator key, for at most the stop grace (the time the safety inequality reserves
    /// for stopping neard); otherwise SIGKILL neard and start it again as voter.
    async fn hot_swap_demote(&mut self) -> Option<Event> {
        if self.hot_swap_capable != Some(true) {
            // A neard that cannot be shown to drop keys on SIGHUP is fenced by a restart.
            return self.restart_as(Role::Voter).await;
        }
        let deadline = Instant::now() + self.settings.timing.stop_grace;
        self.acquired_at = None;
        let path = self.validator_key_path();
        if let Err(e) = crate::keys::remove_durably(&path) {
            log::error!("cannot remove the validator key {}: {e}", path.display());
        }
        let signalled = match self.neard.as_mut() {
            Some(neard) => neard.signal(nix::sys::signal::Signal::SIGHUP).is_ok(),
            None => false,
        };
        while signalled && !self.neard_exited() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Ok(Ok(status)) = tokio::time::timeout(left, self.rpc.status()).await {
                if status.validator_public_key.is_none() && status.validator_account_id.is_none() {
                    log::info!("hot swap: neard confirmed it holds no validator key");
                    return None;
                }
            }
            tokio::time::sleep(HOT_SWAP_POLL.min(left)).await;
        }
        if !self.neard_exited() {
            log::warn!(
                "neard did not confirm dropping the validator key within {:?}; killing it",
                self.settings.timing.stop_grace
            );
            self.metrics
                .hot_swap_fallbacks
                .with_label_values(&["demotion_unconfirmed"])
                .inc();
        }
        if let Some(neard) = self.neard.take() {
            let pid = neard.pid();
            match neard.kill().await {
                Ok(status) => log::info!("neard (pid {pid}) killed: {}", describe(&status)),
                Err(e) => log::error!("killing neard (pid {pid}) failed: {e}"),
            }
        }
        self.start_neard(Role::Voter).await
    }

    fn validator_key_path(&self) -> std::path::PathBuf {
        match NeardConfig::load(&self.settings.neard_home) {
            Ok(c) => c.validator_key_path(),
            Err(_) => self.settings.neard_config.validator_key_path(),
        }
    }

    async fn execute(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::StartNeard(role) => self.start_neard(role).await,
            Action::StopNeard => {
                self.stop_neard().await;
                None
            }
            Action::Promote => {
                self.acquired_at = Some(Instant::now());
                self.guard_deadline = self
                    .lease_deadline
                    .map(|d| d + self.settings.timing.stop_grace);
                self.publish();
                self.height_fence().await;
                match self.settings.failover_mode {
                    FailoverMode::HotSwap => self.hot_swap_promote().await,
                    FailoverMode::Restart => self.restart_as(Role::Validator).await,
                }
            }
            Action::Demote => {
                self.lease_deadline = None;
                match self.settings.failover_mode {
                    FailoverMode::HotSwap => self.hot_swap_demote().await,
                    FailoverMode::Restart => self.restart_as(Role::Voter).await,
                }
            }
            Action::CreateSession => {
                let sent = Instant::now();
                self.metrics
                    .consul_requests
                    .with_label_values(&["create"])
                    .inc();
                match self
                    .consul
                    .create_session(&self.settings.node_id, self.settings.timing.ttl)
                    .await
                {
                    Ok(id) => {
                        log::info!("created Consul session {id}");
                        let _ = sent;
                        self.session = Some(id.clone());
                        self.start_renewer(id);
                        Some(Event::SessionCreated)
                    }
                    Err(e) => {
                        log::warn!("cannot create a Consul session: {e}");
                        Some(Event::SessionFailed)
                    }
                }
            }
            Action::DestroySession => {
                self.stop_renewer();
                self.lease_deadline = None;
                if let Some(id) = self.session.take() {
                    self.metrics
                        .consul_requests
                        .with_label_values(&["destroy"])
                        .inc();
                    match self.consul.destroy_session(&id).await {
                        Ok(()) => log::info!("destroyed Consul session {id}"),
                        Err(e) => log::warn!(
                            "cannot destroy Consul session {id} ({e}); it expires after its TTL"
                        ),
                    }
                }
                None
            }
            Action::TryAcquire => Some(self.try_acquire().await),
            Action::Exit => {
                self.exit = true;
                None
            }
        }
    }

    /// Renews the session (so the lease counts from now), then tries to take the lock.
    async fn try_acquire(&mut self) -> Event {
        let Some(id) = self.session.clone() else {
            return Event::AcquireFailed;
        };
        let sent = Instant::now();
        self.metrics
            .consul_requests
            .with_label_values(&["renew"])
            .inc();
        match self.consul.renew(&id).await {
            Ok(_) => {}
            Err(ConsulError::SessionGone(_)) => {
                self.stop_renewer();
                self.session = None;
                return Event::SessionGone;
            }
            Err(e) => {
                log::warn!("renew before acquiring failed: {e}");
                return Event::AcquireFailed;
            }
        }
        let value = LeaderValue {
            hostname: hostname(),
            node_id: self.settings.node_id.clone(),
        };
        self.metrics
            .consul_requests
            .with_label_values(&["acquire"])
            .inc();
        let key = leader_key(&self.settings.account_id);
        match self.consul.acquire(&key, &id, &value).await {
            Ok(true) => {
                self.lease_deadline = Some(sent + self.settings.timing.step_down_after);
                Event::Acquired(true)
            }
            Ok(false) => Event::Acquired(false),
            Err(ConsulError::SessionGone(_)) => {
                self.stop_renewer();
                self.session = None;
                Event::SessionGone
            }
            Err(e) => {
                log::warn!("acquiring {key} failed: {e}");
                Event::AcquireFailed
            }
        }
    }
}

/// Why a hot-swap promotion fell back to a restart.
#[derive(Debug)]
enum HotSwapFailure {
    NotRunning,
    TooOld,
    Rpc(String),
    Home(String),
    Unconfirmed(Duration),
}

impl HotSwapFailure {
    /// The `reason` label of `kuutamod_hot_swap_fallbacks_total`.
    fn label(&self) -> &'static str {
        match self {
            HotSwapFailure::NotRunning => "neard_not_running",
            HotSwapFailure::TooOld => "neard_too_old",
            HotSwapFailure::Rpc(_) => "rpc_error",
            HotSwapFailure::Home(_) => "home_error",
            HotSwapFailure::Unconfirmed(_) => "unconfirmed",
        }
    }
}

impl std::fmt::Display for HotSwapFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HotSwapFailure::NotRunning => write!(f, "neard is not running"),
            HotSwapFailure::TooOld => write!(
                f,
                "neard is older than 2.3, which cannot drop a key on SIGHUP"
            ),
            HotSwapFailure::Rpc(e) => write!(f, "{e}"),
            HotSwapFailure::Home(e) => write!(f, "{e}"),
            HotSwapFailure::Unconfirmed(limit) => {
                write!(f, "neard did not confirm the key within {limit:?}")
            }
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

/// Polls neard's `/status` forever, one request at a time.
async fn poll_status(url: String, tx: mpsc::Sender<StatusResult>) {
    let http = match reqwest::Client::builder().timeout(STATUS_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            log::error!("cannot build the HTTP client for {url}: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = async {
            let resp = http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("neard /status at {url} failed: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("neard /status at {url} answered {}", resp.status()));
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| format!("neard /status at {url} failed: {e}"))?;
            crate::neard::status::parse(&body).map_err(|e| format!("{url}: {e}"))
        }
        .await;
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

/// Watches the leader key with blocking queries and reports the session holding it (`None`:
/// free), on every change (and once at the start, and again on every return while free).
async fn watch_leader(
    consul: Consul,
    key: String,
    tx: mpsc::Sender<Option<String>>,
    metrics: Metrics,
) {
    let mut index = 0u64;
    let mut last: Option<Option<String>> = None;
    loop {
        let blocking = (index > 0).then_some((index, WATCH_WAIT));
        metrics.consul_requests.with_label_values(&["watch"]).inc();
        match consul.get_key(&key, blocking).await {
            Ok((entry, new_index)) => {
                let holder = entry.and_then(|e| e.session);
                let free = holder.is_none();
                let unchanged = index > 0 && new_index == index;
                // Consul's index can go backwards (e.g. after a snapshot restore): start over.
                index = if new_index < index { 0 } else { new_index };
                if last.as_ref() != Some(&holder) || free {
                    if tx.send(holder.clone()).await.is_err() {
                        return;
                    }
                    last = Some(holder);
                }
                if free && index == 0 {
                    tokio::time::sleep(WATCH_RETRY).await;
                } else if unchanged {
                    tokio::time::sleep(WATCH_IDLE).await;
                }
            }
            Err(e) => {
                log::warn!("watching {key}: {e}");
                index = 0;
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}
