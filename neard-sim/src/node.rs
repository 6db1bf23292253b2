//! The running simulator: what `neard-sim run` does.
//!
//! [`prepare`] does everything neard does before it starts serving and that can fail with a
//! panic in neard (config, addresses, keys); the binary aborts on its error. [`run`] then
//! plays the node's life: boot delay, RPC and network listeners, the link to the chain (a chain
//! process's socket, or a private chain in-process), a sync period, the consensus client
//! ([`crate::client`]) signing into the ledger while it holds a key, SIGHUP reloads, and
//! SIGTERM/SIGINT stops.
//!
//! All mutable state sits in one `Shared` value behind `Arc`: the fault knobs in a `watch`
//! channel (tasks wait on "not frozen"), the rest in a mutex held only for short, non-async
//! sections.
//!
//! # Layout
//!
//! This file holds the shared state and [`run`], which wires the tasks together and waits for
//! the stop signal.
//!
//! - `start`: [`prepare`] and what it can fail with ([`StartError`]).
//! - `tasks`: the node's tasks: the control file's poller, boot, the network listener, the
//!   consensus loop, SIGHUP reloads.

mod start;
mod tasks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::chain;
use crate::client::Client;
use crate::config::Config;
use crate::control::Control;
use crate::keys::{self, Key};
use crate::ledger;
use crate::network::Network;
use crate::settings::Settings;
use crate::spec::ChainSpec;
use crate::status::{BlockRef, StatusView};
use crate::wire::Engine;

pub use start::{prepare, Prepared, RunArgs, StartError};
use tasks::{boot, poll_control, reload_loop};

/// Where the node keeps doomslug's largest target height (neard keeps it in its database,
/// `save_largest_target_height`), relative to the home.
pub const LARGEST_TARGET_FILE: &str = "data/neard-sim-largest-target-height";

/// Prints a neard-style log line to stderr (`<time> <LEVEL> <target>: <message>`).
pub fn log(level: &str, target: &str, msg: &str) {
    eprintln!(
        "{} {level:>5} {target}: {msg}",
        chain::rfc3339(chain::now_ms())
    );
}

/// Aborts the process like a neard panic under `panic = abort`: message to stderr, SIGABRT.
/// Core dumps are switched off first so a test's deliberate crash leaves no core file.
pub fn abort(msg: &str) -> ! {
    eprintln!("neard-sim panicked: {msg}");
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    std::process::abort()
}

/// The largest target height in the home's store (0 when absent or unreadable).
pub fn read_largest_target(home: &Path) -> u64 {
    std::fs::read_to_string(home.join(LARGEST_TARGET_FILE))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Stores the largest target height (temp file and rename; like neard's store it is written
/// before the approvals go out, not fsynced).
fn write_largest_target(home: &Path, value: u64) -> std::io::Result<()> {
    let path = home.join(LARGEST_TARGET_FILE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = keys::tmp_path(&path);
    std::fs::write(&tmp, value.to_string())?;
    std::fs::rename(&tmp, &path)
}

/// Mutable node state (short critical sections only; never held across an await).
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) key: Option<Key>,
    /// Bumped by every reload, so a delayed key drop knows whether it is still current.
    key_generation: u64,
    booted_ms: Option<u64>,
    pub(crate) stopping: bool,
    pub(crate) client: Client,
    pub(crate) reloads_total: u64,
    pub(crate) reload_timestamp_ms: u64,
    pub(crate) config_correct: bool,
    ledger: Option<ledger::Writer>,
}

/// What every task of the node shares.
pub(crate) struct Shared {
    home: PathBuf,
    pub(crate) settings: Settings,
    chain_id: String,
    genesis_hash: String,
    genesis_validators: Vec<String>,
    node_public_key: String,
    rpc_addr: Option<SocketAddr>,
    network_addr: SocketAddr,
    pub(crate) started_ms: u64,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) rpc_down: watch::Sender<bool>,
    state: Mutex<State>,
    /// The private chain, when there is no chain process.
    embedded: Option<Engine>,
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock aborts the process (panic = abort semantics are what
        // neard has), so a poisoned lock can only be seen in debug builds: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn syncing(&self, st: &State, now_ms: u64) -> bool {
        let sync_ms = u64::try_from(self.settings.sync_delay.as_millis()).unwrap_or(u64::MAX);
        let booting = st
            .booted_ms
            .is_none_or(|b| now_ms < b.saturating_add(sync_ms));
        // No word from the chain yet: neard's AwaitingPeers, which counts as syncing.
        booting || self.control.borrow().force_syncing || !st.client.has_view()
    }

    /// Whether the node may sign now: a key, synced, not stopping, not frozen or stalled.
    fn signing_key(&self, st: &State, now_ms: u64) -> Option<Key> {
        let c = self.control.borrow();
        let blocked = c.freeze || c.stall || c.force_syncing;
        drop(c);
        if blocked || st.stopping || self.syncing(st, now_ms) {
            return None;
        }
        st.key.clone()
    }

    /// What /status shows now, and the health check's `max_block_production_delay`.
    pub(crate) fn view(&self, now_ms: u64) -> (StatusView, Duration) {
        let st = self.state();
        let genesis = BlockRef {
            height: 0,
            hash: self.genesis_hash.clone(),
            time_ms: self.started_ms,
        };
        let r = |b: &crate::blocks::Block| BlockRef {
            height: b.height,
            hash: b.hash.clone(),
            time_ms: b.time_ms,
        };
        let head = st.client.tip().map_or(genesis.clone(), r);
        let earliest = st.client.earliest().map_or(genesis, r);
        let (validators, epoch_start) = match st.client.epochs() {
            Some(e) => (
                e.spec()
                    .validators
                    .iter()
                    .map(|v| v.account_id.clone())
                    .collect(),
                e.epoch_start(e.epoch_of(head.height)),
            ),
            None => {
                let mut v = self.genesis_validators.clone();
                if let Some(k) = &st.key {
                    if !v.contains(&k.account_id) {
                        v.push(k.account_id.clone());
                    }
                }
                (v, 0)
            }
        };
        let view = StatusView {
            chain_id: self.chain_id.clone(),
            genesis_hash: self.genesis_hash.clone(),
            rpc_addr: self.rpc_addr.map(|a| a.to_string()),
            validators,
            validator: st
                .key
                .as_ref()
                .map(|k| (k.account_id.clone(), k.public_key.clone())),
            node_public_key: self.node_public_key.clone(),
            epoch_id: chain::hash("epoch", epoch_start),
            epoch_start_height: epoch_start,
            head,
            earliest,
            syncing: self.syncing(&st, now_ms),
            uptime_sec: i64::try_from(now_ms.saturating_sub(self.started_ms) / 1000)
                .unwrap_or(i64::MAX),
        };
        (view, st.config.max_block_production_delay)
    }

    pub(crate) async fn wait_unfrozen(&self) {
        let mut rx = self.control.subscribe();
        let _ = rx.wait_for(|c| !c.freeze).await;
    }
}

/// Runs the node until SIGTERM/SIGINT (then returns after the stop delay) or a fatal error
/// (then aborts).
pub async fn run(p: Prepared) {
    let mut hup = must(signal(SignalKind::hangup()), "SIGHUP handler");
    let mut term = must(signal(SignalKind::terminate()), "SIGTERM handler");
    let mut int = must(signal(SignalKind::interrupt()), "SIGINT handler");

    let now = chain::now_ms();
    let (chain_id, genesis_hash, genesis_validators) = match &p.genesis {
        Some(g) => (g.chain_id.clone(), g.hash.clone(), g.validators.clone()),
        None => {
            log(
                "WARN",
                "neard",
                "no readable genesis; reporting chain id localnet",
            );
            (
                "localnet".to_owned(),
                chain::hash("genesis:localnet", 0),
                Vec::new(),
            )
        }
    };
    if let Some(k) = &p.validator_key {
        log(
            "INFO",
            "neard",
            &format!("Validator key {} ({})", k.account_id, k.public_key),
        );
    }
    let embedded = match &p.settings.chain {
        Some(path) => {
            log(
                "INFO",
                "neard_sim",
                &format!("chain process at {}", path.display()),
            );
            None
        }
        None => {
            let spec = ChainSpec::from_home(
                p.genesis.as_ref(),
                p.config.timers,
                p.validator_key.as_ref().map(|k| k.account_id.as_str()),
            );
            log(
                "INFO",
                "neard_sim",
                &format!(
                    "private chain: validators {:?}",
                    spec.validators
                        .iter()
                        .map(|v| format!("{}{}", v.account_id, if v.ours { " (ours)" } else { "" }))
                        .collect::<Vec<_>>()
                ),
            );
            let step = spec
                .consensus
                .doomslug_step_period
                .min(spec.consensus.block_production_tracking_delay);
            let (events, mut rx) = mpsc::unbounded_channel();
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            Some(Engine::spawn(
                Network::new(spec, Instant::now(), now),
                step,
                events,
            ))
        }
    };
    let client = Client::new(&p.settings.node_id, p.config.timers, p.stored_target);
    let shared = Arc::new(Shared {
        home: p.home.clone(),
        chain_id,
        genesis_hash,
        genesis_validators,
        node_public_key: p.node_key.public_key.clone(),
        rpc_addr: p.config.rpc_addr,
        network_addr: p.config.network_addr,
        started_ms: now,
        control: watch::Sender::new(Control::default()),
        rpc_down: watch::Sender::new(false),
        state: Mutex::new(State {
            config: p.config,
            key: p.validator_key,
            key_generation: 0,
            booted_ms: None,
            stopping: false,
            client,
            reloads_total: 1,
            reload_timestamp_ms: now,
            config_correct: true,
            ledger: p.ledger,
        }),
        settings: p.settings,
        embedded,
    });

    tokio::spawn(poll_control(shared.clone()));
    tokio::spawn(boot(shared.clone()));
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    tokio::spawn(reload_loop(shared.clone(), reload_rx));

    let name = loop {
        tokio::select! {
            _ = hup.recv() => {
                shared.wait_unfrozen().await;
                if shared.control.borrow().ignore_sighup {
                    log("INFO", "neard", "SIGHUP ignored (ignore_sighup knob)");
                } else {
                    let _ = reload_tx.send(());
                }
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    // A wedged process does not get to handle the signal until it is unwedged.
    shared.wait_unfrozen().await;
    log(
        "WARN",
        "neard",
        &format!("{name}, stopping... this may take a few minutes."),
    );
    shared.state().stopping = true;
    // Like neard, RPC servers go down first; the process lingers for the stop delay
    // (neard waits for RocksDB to shut down).
    shared.rpc_down.send_replace(true);
    tokio::time::sleep(shared.settings.stop_delay).await;
    log(
        "INFO",
        "neard",
        "Waiting for RocksDB to gracefully shutdown",
    );
}

fn must<T>(r: std::io::Result<T>, what: &str) -> T {
    r.unwrap_or_else(|e| abort(&format!("cannot install {what}: {e}")))
}
