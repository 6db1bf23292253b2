//! The daemon's [`Host`]: the conductor's calls carried out with tokio, real processes and
//! files. It decides nothing: a call that waits on the network or the disk runs in a task of
//! its own and sends its answer to the main loop; a call on a local process or file is done
//! at once and returns its result. It also keeps the metrics of what it carries out.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio::sync::mpsc;

use super::conductor::{Host, Input, Meter, NeardSignal, Report, SpawnError, StatusAnswer};
use crate::guard::{Exe, Guard, Note, GUARD_ENV};
use crate::lease::LockMemory;
use crate::lock_store::{execute, Failure, StoreOp};
use crate::machine::{GuardOrder, State};
use crate::metrics::Metrics;
use crate::neard::home::Home;
use crate::neard::process::{Neard, SpawnSpec};
use crate::neard::rpc::NeardRpc;
use crate::neard::Role;
use crate::settings::Settings;
use crate::store::Store;

/// The daemon's host.
pub(super) struct TokioHost {
    pub(super) settings: Settings,
    pub(super) home: Home,
    /// The lock store the settings name (Consul or etcd).
    pub(super) store: Store,
    pub(super) rpc: NeardRpc,
    pub(super) metrics: Metrics,
    /// Answers for the main loop.
    pub(super) tx: mpsc::UnboundedSender<Input>,
    pub(super) exe: Exe,
    pub(super) guard: Option<Guard>,
    /// The guard's notes, for the main loop.
    pub(super) notes_tx: mpsc::UnboundedSender<Note>,
    /// kuutamod's pidfds of the neards the guard started and has not reaped.
    pub(super) neards: HashMap<u32, Neard>,
    pub(super) hooks: Option<mpsc::UnboundedSender<(State, State)>>,
    pub(super) memory_path: PathBuf,
}

impl Host for TokioHost {
    fn store(&mut self, id: u64, op: StoreOp, meter: Meter) {
        let mut store = self.store.clone();
        let metrics = self.metrics.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let label = match meter {
                Meter::Op(op) => Some(op),
                Meter::Watch | Meter::ClusterWatch => Some("watch"),
                Meter::Publish => Some("publish"),
                Meter::Quiet => None,
            };
            if let Some(l) = label {
                metrics.consul_requests.with_label_values(&[l]).inc();
            }
            let started = std::time::Instant::now();
            let result = execute(&mut store, &op).await.map_err(Failure::from);
            let failed = result.as_ref().is_err_and(Failure::is_failure);
            match meter {
                Meter::Op(op) => {
                    metrics
                        .consul_latency
                        .with_label_values(&[op])
                        .observe(started.elapsed().as_secs_f64());
                    metrics.consul_up.set(i64::from(!failed));
                    if failed {
                        metrics.consul_errors.with_label_values(&[op]).inc();
                    }
                }
                Meter::Watch if result.is_err() => {
                    metrics.consul_up.set(0);
                    metrics.consul_errors.with_label_values(&["watch"]).inc();
                }
                Meter::ClusterWatch if result.is_err() => {
                    metrics.consul_errors.with_label_values(&["watch"]).inc();
                }
                _ => {}
            }
            let _ = tx.send(Input::Store { id, result });
        });
    }

    fn status(&mut self, id: u64) {
        let rpc = self.rpc.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = rpc
                .status()
                .await
                .map(|s| StatusAnswer {
                    syncing: s.sync_info.syncing,
                    head: s.sync_info.latest_block_height,
                    block_ms: s.sync_info.latest_block_ms(),
                    hot_swap_capable: s.supports_key_hot_swap(),
                    version: s.version.map(|v| v.version),
                    validator_key: s.validator_public_key,
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(Input::Status { id, result });
        });
    }

    fn metrics(&mut self, id: u64) {
        let rpc = self.rpc.clone();
        let account = self.settings.account_id.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = rpc.metrics(&account).await.map_err(|e| e.to_string());
            let _ = tx.send(Input::Metrics { id, result });
        });
    }

    fn windows(&mut self, id: u64) {
        let rpc = self.rpc.clone();
        let account = self.settings.account_id.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = rpc
                .maintenance_windows(&account)
                .await
                .map_err(|e| e.to_string());
            let _ = tx.send(Input::Windows { id, result });
        });
    }

    fn save_memory(&mut self, id: u64, memory: LockMemory) {
        let path = self.memory_path.clone();
        let tx = self.tx.clone();
        // Off the event loop: an fsync may take a while.
        tokio::spawn(async move {
            let p = path.clone();
            let result =
                match tokio::task::spawn_blocking(move || crate::memory::save(&p, &memory)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("{}: {e}", path.display())),
                    Err(e) => Err(format!("{}: {e}", path.display())),
                };
            let _ = tx.send(Input::Saved { id, result });
        });
    }

    fn spawn_neard(&mut self, id: u64, role: Role) -> Result<(), SpawnError> {
        self.home.prepare(role).map_err(|e| {
            SpawnError::Prepare(format!(
                "cannot prepare neard's home for the {role:?} role: {e:#}"
            ))
        })?;
        let s = &self.settings;
        let spec = SpawnSpec::neard(
            &s.neard_bin,
            &s.neard_home,
            s.neard_bootnodes.as_deref(),
            GUARD_ENV,
        )
        .map_err(|e| {
            SpawnError::Prepare(format!("cannot start neard {}: {e}", s.neard_bin.display()))
        })?;
        let guard = self.guard.as_mut().ok_or(SpawnError::NoGuard)?;
        guard
            .spawn_neard(id, &spec)
            .map_err(|e| SpawnError::Guard(e.to_string()))
    }

    fn signal_neard(&mut self, pid: u32, signal: NeardSignal) -> Result<(), String> {
        use nix::sys::signal::Signal;
        let n = self
            .neards
            .get(&pid)
            .ok_or_else(|| "kuutamod holds no pidfd for it".to_string())?;
        match signal {
            NeardSignal::Term => n.signal(Signal::SIGTERM),
            NeardSignal::Hup => n.signal(Signal::SIGHUP),
            NeardSignal::Kill => n.kill(),
        }
        .map_err(|e| e.to_string())
    }

    fn install_key(&mut self) {
        match self.home.install_key() {
            Ok(()) => log::info!("hot swap: validator key written into neard's home"),
            Err(e) => log::error!("cannot install the validator key: {e:#}"),
        }
    }

    fn remove_key(&mut self) {
        if let Err(e) = self.home.remove_key() {
            log::error!("{e:#}");
        }
    }

    fn guard_order(&mut self, seq: u64, order: GuardOrder) -> Result<(), String> {
        match self.guard.as_mut() {
            Some(g) => g.order(seq, order).map_err(|e| e.to_string()),
            None => Err("no guard".into()),
        }
    }

    fn adopt_neard(&mut self, pid: u32) -> Result<(), String> {
        let guard = self.guard.as_mut().ok_or_else(|| "no guard".to_string())?;
        let pidfd = guard.adopt(pid).map_err(|e| e.to_string())?;
        self.neards.insert(pid, Neard::new(pidfd));
        Ok(())
    }

    fn reap_neard(&mut self, pid: u32) -> Result<(), String> {
        self.neards.remove(&pid);
        match self.guard.as_mut() {
            Some(g) => g.reap(pid).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn drop_guard(&mut self, neard: Option<u32>) {
        if let Some(n) = neard.and_then(|pid| self.neards.get(&pid)) {
            match n.kill() {
                Ok(()) => log::warn!("killed neard (pid {}) with its guard", n.pid()),
                Err(e) => log::error!(
                    "cannot SIGKILL neard (pid {}): {e}; it dies with its guard",
                    n.pid()
                ),
            }
        }
        self.neards.clear();
        // Dropping the guard kills and reaps it (a stopped one too); by then the kernel has
        // sent neard its parent-death SIGKILL as well.
        self.guard = None;
    }

    fn spawn_guard(&mut self, generation: u64) -> Result<(), String> {
        match Guard::spawn(self.exe.path(), generation, self.notes_tx.clone()) {
            Ok(g) => {
                log::info!("guard process started (pid {})", g.pid());
                self.guard = Some(g);
                Ok(())
            }
            Err(e) => Err(format!("from {}: {e}", self.exe.path().display())),
        }
    }

    fn hook(&mut self, old: State, new: State) {
        if let Some(hooks) = &self.hooks {
            let _ = hooks.send((old, new));
        }
    }

    fn report(&mut self, report: Report) {
        let m = &self.metrics;
        match report {
            Report::SteppedDown(reason) => {
                m.step_downs.with_label_values(&[reason.label()]).inc();
            }
            Report::Activated { took, .. } => m.failover_duration.observe(took.as_secs_f64()),
            Report::HotSwapFallback(reason) => {
                m.hot_swap_fallbacks.with_label_values(&[reason]).inc();
            }
            Report::Doppelganger(raised) => m.doppelganger.set(i64::from(raised)),
            Report::StoreRewound => m.consul_rewinds.inc(),
            Report::NeardStarted { restart } => {
                if restart {
                    m.neard_restarts.inc();
                }
            }
            Report::NodeIdConflict { .. } => m.node_id_conflict.set(1),
            Report::Production(p) => m.set_production(
                &self.settings.account_id,
                &p,
                self.settings.kickout_thresholds,
            ),
        }
    }
}
