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

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::chain;
use crate::client::{Client, Effects};
use crate::config::{Config, ConfigError, Genesis};
use crate::control::{self, Control};
use crate::keys::{self, Key, KeyError, Kind};
use crate::ledger;
use crate::network::Network;
use crate::settings::Settings;
use crate::spec::ChainSpec;
use crate::status::{BlockRef, StatusView};
use crate::wire::{self, Conn, Engine, ToChain, ToNode};

/// Where the node keeps doomslug's largest target height (neard keeps it in its database,
/// `save_largest_target_height`), relative to the home.
pub const LARGEST_TARGET_FILE: &str = "data/neard-sim-largest-target-height";

/// Longest the client loop sleeps when nothing is due (it also wakes on every message).
const MAX_IDLE: Duration = Duration::from_millis(50);

/// Overrides `run` takes on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    /// The home directory.
    pub home: PathBuf,
    /// `--boot-nodes`.
    pub boot_nodes: Option<String>,
    /// `--rpc-addr`.
    pub rpc_addr: Option<String>,
    /// `--network-addr`.
    pub network_addr: Option<String>,
    /// `--ledger` (wins over `NEARD_SIM_LEDGER`).
    pub ledger: Option<PathBuf>,
    /// `--chain` (wins over `NEARD_SIM_CHAIN`).
    pub chain: Option<PathBuf>,
}

/// Why the node cannot start. neard panics (and, built with `panic = abort`, aborts) on all of
/// these.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `config.json` missing or unparsable.
    #[error("Error loading config: {0}")]
    Config(#[from] ConfigError),
    /// A command-line address does not parse.
    #[error("Error loading config: {flag} {value:?} is not an ip:port address")]
    BadAddr {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// A listen address with port 0.
    #[error("using an any port (i.e. 0) for the tcp::ListenerAddr is allowed only in tests ({what} = {addr})")]
    AnyPort {
        /// Which address (`rpc.addr`, `network.addr`).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// `network.boot_nodes` or `--boot-nodes` has an entry that is not `pk@host:port`.
    #[error("Failed to parse PeerInfo {0:?} (expected ed25519:<key>@<host>:<port>)")]
    BootNodes(String),
    /// node_key.json missing or invalid.
    #[error("Error loading config: node key: {0}")]
    NodeKey(KeyError),
    /// validator_key.json present but invalid.
    #[error("Error loading config: Failed initializing validator signer: {0}")]
    ValidatorKey(KeyError),
    /// The ledger cannot be opened.
    #[error("cannot open ledger {path}: {source}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A node ready to run: config, keys and genesis read and checked.
#[derive(Debug)]
pub struct Prepared {
    home: PathBuf,
    settings: Settings,
    config: Config,
    node_key: Key,
    validator_key: Option<Key>,
    genesis: Option<Genesis>,
    ledger: Option<ledger::Writer>,
    stored_target: u64,
}

impl Prepared {
    /// The effective `rpc.addr` (after `--rpc-addr`).
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.config.rpc_addr
    }
}

fn parse_addr(flag: &'static str, value: &str) -> Result<SocketAddr, StartError> {
    value.parse().map_err(|_| StartError::BadAddr {
        flag,
        value: value.to_owned(),
    })
}

fn check_boot_nodes(s: &str) -> Result<(), StartError> {
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let ok = entry.split_once('@').is_some_and(|(pk, addr)| {
            pk.starts_with("ed25519:")
                && addr
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
        if !ok {
            return Err(StartError::BootNodes(entry.to_owned()));
        }
    }
    Ok(())
}

/// Reads and checks everything `run` needs, applying the command-line overrides.
pub fn prepare(args: RunArgs, mut settings: Settings) -> Result<Prepared, StartError> {
    let home = args.home;
    let mut config = Config::load(&home)?;
    for field in &config.unknown_fields {
        log(
            "WARN",
            "neard",
            &format!("config.json: encountered unrecognised field: {field}"),
        );
    }
    if let Some(a) = &args.rpc_addr {
        config.rpc_addr = Some(parse_addr("--rpc-addr", a)?);
    }
    if let Some(a) = &args.network_addr {
        config.network_addr = parse_addr("--network-addr", a)?;
    }
    if let Some(b) = args.boot_nodes {
        config.boot_nodes = b;
    }
    check_boot_nodes(&config.boot_nodes)?;
    if let Some(addr) = config.rpc_addr.filter(|a| a.port() == 0) {
        return Err(StartError::AnyPort {
            what: "rpc.addr",
            addr,
        });
    }
    if config.network_addr.port() == 0 {
        return Err(StartError::AnyPort {
            what: "network.addr",
            addr: config.network_addr,
        });
    }
    let node_key =
        keys::read(&home.join(&config.node_key_file), Kind::Node).map_err(StartError::NodeKey)?;
    let validator_key =
        keys::read_optional(&home.join(&config.validator_key_file), Kind::Validator)
            .map_err(StartError::ValidatorKey)?;
    let genesis = Genesis::load(&home.join(&config.genesis_file));
    if let Some(p) = args.ledger {
        settings.ledger = Some(p);
    }
    if let Some(p) = args.chain {
        settings.chain = Some(p);
    }
    let ledger = match &settings.ledger {
        Some(path) => Some(
            ledger::Writer::open(path).map_err(|source| StartError::Ledger {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let stored_target = read_largest_target(&home);
    Ok(Prepared {
        home,
        settings,
        config,
        node_key,
        validator_key,
        genesis,
        ledger,
        stored_target,
    })
}

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

/// Watches the control file and applies changes (abort at once).
async fn poll_control(shared: Arc<Shared>) {
    let path = shared.settings.control.clone();
    let mut seen: Option<control::FileStamp> = None;
    let mut tick = tokio::time::interval(control::POLL_INTERVAL);
    loop {
        tick.tick().await;
        let meta = control::stamp(&path);
        if seen.as_ref() == Some(&meta) {
            continue;
        }
        seen = Some(meta);
        let c = match Control::read(&path) {
            Ok(c) => c,
            Err(e) => {
                log("WARN", "neard_sim", &format!("ignoring {e}"));
                continue;
            }
        };
        if c.abort {
            abort("abort requested by the control file");
        }
        if *shared.control.borrow() != c {
            log("INFO", "neard_sim", &format!("control knobs now {c:?}"));
            shared.control.send_replace(c);
        }
    }
}

/// After the boot delay, binds the RPC and network listeners, links up with the chain and
/// starts serving.
async fn boot(shared: Arc<Shared>) {
    tokio::time::sleep(shared.settings.boot_delay).await;
    if shared.state().stopping {
        return;
    }
    let network = bind(shared.network_addr, "network.addr").await;
    let rpc = match shared.rpc_addr {
        Some(a) => Some(bind(a, "rpc.addr").await),
        None => None,
    };
    shared.state().booted_ms = Some(chain::now_ms());
    let conn = match (&shared.embedded, &shared.settings.chain) {
        (Some(engine), _) => {
            let conn = engine.connect();
            let _ = conn.to_chain.send(ToChain::Hello {
                node: shared.settings.node_id.clone(),
            });
            conn
        }
        (None, Some(path)) => wire::connect_socket(path.clone(), shared.settings.node_id.clone()),
        (None, None) => abort("neither a chain process nor a private chain"),
    };
    tokio::spawn(client_loop(shared.clone(), conn));
    tokio::spawn(serve_network(shared.clone(), network));
    if let Some(listener) = rpc {
        log(
            "INFO",
            "network",
            &format!(
                "Starting http server at {}",
                shared.rpc_addr.map_or(String::new(), |a| a.to_string())
            ),
        );
        tokio::spawn(crate::rpc::serve(shared.clone(), listener));
    }
}

async fn bind(addr: SocketAddr, what: &str) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => abort(&format!("failed to bind {what} {addr}: {e}")),
    }
}

/// Accepts peer connections and drops them (enough for port checks); stops accepting while
/// frozen, and for good once RPC goes down at shutdown.
async fn serve_network(shared: Arc<Shared>, listener: TcpListener) {
    let mut down = shared.rpc_down.subscribe();
    loop {
        shared.wait_unfrozen().await;
        tokio::select! {
            r = listener.accept() => drop(r),
            _ = down.wait_for(|d| *d) => return,
        }
    }
}

/// The node's consensus loop: receives from the chain (late by `lag_ms`, not at all while
/// `network_offline` or `stall`), runs the doomslug and block production steps at their
/// periods, appends what it signs to the ledger and sends it (unless offline).
async fn client_loop(shared: Arc<Shared>, conn: Conn) {
    let Conn {
        to_chain,
        mut from_chain,
    } = conn;
    let mut queue: VecDeque<(u64, ToNode)> = VecDeque::new();
    let mut next_ds = Instant::now();
    let mut next_bp = Instant::now();
    let mut was_offline = false;
    let mut stored_target = read_largest_target(&shared.home);
    loop {
        shared.wait_unfrozen().await;
        let c = shared.control.borrow().clone();
        let now_ms = chain::now_ms();
        if c.network_offline && !was_offline {
            log("INFO", "network", "cut off the chain (network_offline)");
            queue.clear();
        }
        if !c.network_offline && was_offline {
            log("INFO", "network", "back on the chain");
            let _ = to_chain.send(ToChain::Hello {
                node: shared.settings.node_id.clone(),
            });
        }
        was_offline = c.network_offline;
        while let Ok(m) = from_chain.try_recv() {
            if !c.network_offline && !c.stall {
                queue.push_back((now_ms, m));
            }
        }
        let (effects, target) = {
            let mut st = shared.state();
            let now = Instant::now();
            let key = shared.signing_key(&st, now_ms);
            let mut fx = Effects::default();
            while queue
                .front()
                .is_some_and(|(at, _)| at.saturating_add(c.lag_ms) <= now_ms)
            {
                if let Some((_, m)) = queue.pop_front() {
                    let e = st.client.on_message(m, now, now_ms, key.as_ref());
                    fx.send.extend(e.send);
                    fx.ledger.extend(e.ledger);
                }
            }
            if now >= next_ds {
                let e = st.client.doomslug_step(now, now_ms, key.as_ref());
                fx.send.extend(e.send);
                fx.ledger.extend(e.ledger);
                next_ds = now + st.config.timers.doomslug_step_period;
            }
            if now >= next_bp {
                let e = st.client.production_step(now, now_ms, key.as_ref());
                fx.send.extend(e.send);
                fx.ledger.extend(e.ledger);
                next_bp = now + st.config.timers.block_production_tracking_delay;
            }
            if let Some(w) = st.ledger.as_mut() {
                for entry in &fx.ledger {
                    if let Err(e) = w.append(entry) {
                        log(
                            "ERROR",
                            "neard_sim",
                            &format!("ledger {}: {e}", w.path().display()),
                        );
                    }
                }
            }
            (fx, st.client.largest_target_height())
        };
        // neard saves the largest target height before sending the approvals.
        if target != stored_target {
            if let Err(e) = write_largest_target(&shared.home, target) {
                log(
                    "WARN",
                    "neard_sim",
                    &format!("cannot store the largest target height: {e}"),
                );
            }
            stored_target = target;
        }
        if !c.network_offline {
            for m in effects.send {
                let _ = to_chain.send(m);
            }
        }
        let now = Instant::now();
        let mut wake = next_ds.min(next_bp).min(now + MAX_IDLE);
        if let Some((at, _)) = queue.front() {
            let due_ms = at.saturating_add(c.lag_ms).saturating_sub(chain::now_ms());
            wake = wake.min(now + Duration::from_millis(due_ms));
        }
        let mut control = shared.control.subscribe();
        tokio::select! {
            m = from_chain.recv() => {
                if let Some(m) = m {
                    let c = shared.control.borrow();
                    if !c.network_offline && !c.stall {
                        queue.push_back((chain::now_ms(), m));
                    }
                } else {
                    tokio::time::sleep_until(wake.into()).await;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = control.changed() => {}
        }
    }
}

/// Applies SIGHUPs one after the other, each after the reload delay, like neard >= 2.3.
async fn reload_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(shared.settings.reload_delay).await;
        if shared.state().stopping {
            continue;
        }
        reload(&shared);
    }
}

fn reload(shared: &Arc<Shared>) {
    let not_valid = |e: &dyn std::fmt::Display| {
        log(
            "WARN",
            "neard",
            &format!("Dynamically updatable configs are not valid. Please fix this ASAP otherwise the node will be unable to restart: {e}"),
        );
        shared.state().config_correct = false;
    };
    let config = match Config::load(&shared.home) {
        Ok(c) => c,
        Err(e) => return not_valid(&e),
    };
    let path = shared.home.join(&config.validator_key_file);
    let key = match keys::read_optional(&path, Kind::Validator) {
        Ok(k) => k,
        Err(e) => return not_valid(&e),
    };
    match &key {
        Some(_) => log(
            "INFO",
            "neard",
            &format!("Hot loading validator key {}.", path.display()),
        ),
        None => log(
            "INFO",
            "neard",
            &format!("No validator key {}.", path.display()),
        ),
    }
    let generation = {
        let mut st = shared.state();
        st.config_correct = true;
        st.reloads_total += 1;
        st.reload_timestamp_ms = chain::now_ms();
        st.key_generation += 1;
        st.key_generation
    };
    let drop_delay = shared.settings.key_drop_delay;
    if key.is_none() && !drop_delay.is_zero() {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(drop_delay).await;
            set_key(&shared, None, generation);
        });
    } else {
        set_key(shared, key, generation);
    }
}

/// Installs `key` unless a later reload has happened since (its generation moved on).
fn set_key(shared: &Shared, key: Option<Key>, generation: u64) {
    let mut st = shared.state();
    if st.key_generation != generation {
        return;
    }
    if st.key != key {
        let show = |k: &Option<Key>| {
            k.as_ref().map_or("None".to_owned(), |k| {
                format!("{}:{}", k.account_id, k.public_key)
            })
        };
        log(
            "INFO",
            "config",
            &format!(
                "Updated config field 'validator_signer' from {} to {}",
                show(&st.key),
                show(&key)
            ),
        );
        log("INFO", "client", "Updated validator key");
        st.key = key;
    }
}
