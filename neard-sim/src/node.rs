//! The running simulator: what `neard-sim run` does.
//!
//! [`prepare`] does everything neard does before it starts serving and that can fail with a
//! panic in neard (config, addresses, keys); the binary aborts on its error. [`run`] then
//! plays the node's life: boot delay, RPC and network listeners, a sync period, signing each
//! height into the ledger while it holds a key, SIGHUP reloads, and SIGTERM/SIGINT stops.
//!
//! All mutable state sits in one [`Shared`] value behind `Arc`: the fault knobs in a `watch`
//! channel (tasks wait on "not frozen"), the rest in a mutex held only for short, non-async
//! sections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use crate::chain;
use crate::config::{Config, ConfigError, Genesis};
use crate::control::{self, Control, StatusMode};
use crate::keys::{self, Key, KeyError, Kind};
use crate::ledger;
use crate::settings::Settings;
use crate::status::{self, Snapshot};

/// Upper bound on the signing loop's period: a new height is signed within this of its start.
const MAX_SIGN_TICK: Duration = Duration::from_millis(10);

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
    let ledger = match &settings.ledger {
        Some(path) => Some(
            ledger::Writer::open(path).map_err(|source| StartError::Ledger {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    Ok(Prepared {
        home,
        settings,
        config,
        node_key,
        validator_key,
        genesis,
        ledger,
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

/// Mutable node state (short critical sections only; never held across an await).
struct State {
    config: Config,
    key: Option<Key>,
    /// Bumped by every reload, so a delayed key drop knows whether it is still current.
    key_generation: u64,
    booted_ms: Option<u64>,
    earliest_height: u64,
    stopping: bool,
    /// Head height pinned while the chain is stalled or the process frozen.
    stalled_at: Option<u64>,
    last_signed: Option<u64>,
    blocks_produced: u64,
    reloads_total: u64,
    reload_timestamp_ms: u64,
    config_correct: bool,
    ledger: Option<ledger::Writer>,
}

/// What every task of the node shares.
struct Shared {
    home: PathBuf,
    settings: Settings,
    chain_id: String,
    genesis_hash: String,
    genesis_validators: Vec<String>,
    node_public_key: String,
    rpc_addr: Option<SocketAddr>,
    network_addr: SocketAddr,
    started_ms: u64,
    control: watch::Sender<Control>,
    rpc_down: watch::Sender<bool>,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock aborts the process (panic = abort semantics are what
        // neard has), so a poisoned lock can only be seen in debug builds: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn block_time_ms(&self) -> u64 {
        u64::try_from(self.settings.block_time.as_millis()).unwrap_or(u64::MAX)
    }

    fn syncing(&self, st: &State, now_ms: u64) -> bool {
        let sync_ms = u64::try_from(self.settings.sync_delay.as_millis()).unwrap_or(u64::MAX);
        let booting = st
            .booted_ms
            .is_none_or(|b| now_ms < b.saturating_add(sync_ms));
        booting || self.control.borrow().force_syncing
    }

    fn snapshot(&self, now_ms: u64) -> (Snapshot, Duration) {
        let st = self.state();
        let head = st
            .stalled_at
            .unwrap_or_else(|| chain::height_at(now_ms, self.block_time_ms()));
        let mut validators = self.genesis_validators.clone();
        if let Some(k) = &st.key {
            if !validators.contains(&k.account_id) {
                validators.push(k.account_id.clone());
            }
        }
        let snap = Snapshot {
            chain_id: self.chain_id.clone(),
            genesis_hash: self.genesis_hash.clone(),
            rpc_addr: self.rpc_addr.map(|a| a.to_string()),
            validators,
            validator: st
                .key
                .as_ref()
                .map(|k| (k.account_id.clone(), k.public_key.clone())),
            node_public_key: self.node_public_key.clone(),
            head_height: head,
            block_time_ms: self.block_time_ms(),
            earliest_height: st.earliest_height.min(head),
            syncing: self.syncing(&st, now_ms),
            uptime_sec: i64::try_from(now_ms.saturating_sub(self.started_ms) / 1000)
                .unwrap_or(i64::MAX),
        };
        (snap, st.config.max_block_production_delay)
    }

    async fn wait_unfrozen(&self) {
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
            earliest_height: 0,
            stopping: false,
            stalled_at: None,
            last_signed: None,
            blocks_produced: 0,
            reloads_total: 1,
            reload_timestamp_ms: now,
            config_correct: true,
            ledger: p.ledger,
        }),
        settings: p.settings,
    });

    tokio::spawn(poll_control(shared.clone()));
    tokio::spawn(boot(shared.clone()));
    tokio::spawn(sign_loop(shared.clone()));
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

/// Identity and version of a file: (device, inode, mtime s, mtime ns, size). A rename gives a
/// new inode, so an atomic replacement is seen even within one mtime tick.
type FileStamp = (u64, u64, i64, i64, u64);

/// Watches the control file and applies changes (abort at once).
async fn poll_control(shared: Arc<Shared>) {
    use std::os::unix::fs::MetadataExt;
    let path = shared.settings.control.clone();
    let mut seen: Option<Option<FileStamp>> = None;
    let mut tick = tokio::time::interval(control::POLL_INTERVAL);
    loop {
        tick.tick().await;
        let meta = std::fs::metadata(&path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()));
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
        {
            let mut st = shared.state();
            if c.freeze || c.stall {
                if st.stalled_at.is_none() {
                    st.stalled_at = Some(chain::height_at(chain::now_ms(), shared.block_time_ms()));
                }
            } else {
                st.stalled_at = None;
            }
        }
        if *shared.control.borrow() != c {
            log("INFO", "neard_sim", &format!("control knobs now {c:?}"));
            shared.control.send_replace(c);
        }
    }
}

/// After the boot delay, binds the RPC and network listeners and starts serving.
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
    {
        let now = chain::now_ms();
        let mut st = shared.state();
        st.booted_ms = Some(now);
        st.earliest_height = chain::height_at(now, shared.block_time_ms());
    }
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
        tokio::spawn(serve_rpc(shared.clone(), listener));
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

async fn serve_rpc(shared: Arc<Shared>, listener: TcpListener) {
    let mut down = shared.rpc_down.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    log("WARN", "network", &format!("accept on rpc.addr failed: {e}"));
                    continue;
                }
            },
            _ = down.wait_for(|d| *d) => return,
        };
        let shared = shared.clone();
        let mut down = shared.rpc_down.subscribe();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = down.wait_for(|d| *d) => {}
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(v: &Value) -> Resp {
    respond(StatusCode::OK, "application/json", v.to_string())
}

fn empty(code: StatusCode) -> Resp {
    respond(code, "text/plain", Bytes::new())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    shared.wait_unfrozen().await;
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let resp = match (req.uri().path(), get, req.method() == Method::POST) {
        ("/status", true, _) => match status_mode(&shared) {
            StatusMode::Ok => json_resp(&status::response(&shared.snapshot(chain::now_ms()).0)),
            StatusMode::Error503 => empty(StatusCode::SERVICE_UNAVAILABLE),
            StatusMode::Hang => std::future::pending().await,
        },
        ("/health", true, _) => {
            let (snap, max) = shared.snapshot(chain::now_ms());
            match status::health(&snap, chain::now_ms(), max) {
                Ok(()) => json_resp(&Value::Null),
                Err(_) => empty(StatusCode::SERVICE_UNAVAILABLE),
            }
        }
        ("/metrics", true, _) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics(&shared),
        ),
        ("/", _, true) => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            json_resp(&jsonrpc(&shared, body.ok().as_deref().unwrap_or_default()).await)
        }
        _ => empty(StatusCode::NOT_FOUND),
    };
    Ok(resp)
}

fn status_mode(shared: &Shared) -> StatusMode {
    shared.control.borrow().status
}

/// Answers a JSON-RPC request (`status`, `health`).
async fn jsonrpc(shared: &Shared, body: &[u8]) -> Value {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700,
                "message": "Parse error", "data": e.to_string(),
                "name": "REQUEST_VALIDATION_ERROR", "cause": {"name": "PARSE_ERROR", "info": {}}}})
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let result = match method {
        "status" => match status_mode(shared) {
            StatusMode::Ok => Ok(status::response(&shared.snapshot(chain::now_ms()).0)),
            StatusMode::Hang => std::future::pending().await,
            StatusMode::Error503 => Err(json!({"name": "HANDLER_ERROR",
                "cause": {"name": "INTERNAL_ERROR", "info": {"error_message": "simulated failure"}},
                "code": -32000, "message": "Server error", "data": "simulated failure"})),
        },
        "health" => {
            let (snap, max) = shared.snapshot(chain::now_ms());
            status::health(&snap, chain::now_ms(), max)
                .map(|()| Value::Null)
                .map_err(|u| u.rpc_error())
        }
        other => Err(json!({"name": "REQUEST_VALIDATION_ERROR",
            "cause": {"name": "METHOD_NOT_FOUND", "info": {"method_name": other}},
            "code": -32601, "message": "Method not found", "data": other})),
    };
    match result {
        Ok(r) => json!({"jsonrpc": "2.0", "result": r, "id": id}),
        Err(e) => json!({"jsonrpc": "2.0", "error": e, "id": id}),
    }
}

/// Prometheus text exposition of the `near_*` metrics kuutamod and operators look at.
fn metrics(shared: &Shared) -> String {
    let now = chain::now_ms();
    let (snap, _) = shared.snapshot(now);
    let st = shared.state();
    let validating = u8::from(st.key.is_some());
    let lines: [(&str, &str, &str, String); 11] = [
        (
            "near_block_height_head",
            "gauge",
            "Height of the current head of the blockchain",
            snap.head_height.to_string(),
        ),
        (
            "near_sync_status",
            "gauge",
            "Node sync status (0 = NoSync, 4 = HeaderSync)",
            if snap.syncing { "4" } else { "0" }.to_owned(),
        ),
        (
            "near_is_validator",
            "gauge",
            "Bool to denote if it is validating in the current epoch",
            validating.to_string(),
        ),
        (
            "near_is_block_producer",
            "gauge",
            "Bool to denote if the node is a block producer in the current epoch",
            validating.to_string(),
        ),
        (
            "near_block_produced_total",
            "counter",
            "Total number of blocks produced since starting this node",
            st.blocks_produced.to_string(),
        ),
        (
            "near_chunk_produced_total",
            "counter",
            "Total number of chunks produced since starting this node",
            st.blocks_produced.to_string(),
        ),
        (
            "near_config_reloads_total",
            "counter",
            "Number of times the dynamic configs were reloaded (1 at startup)",
            st.reloads_total.to_string(),
        ),
        (
            "near_config_reload_timestamp_seconds",
            "gauge",
            "Timestamp of the last successful reload of dynamic configs",
            format!("{:.3}", st.reload_timestamp_ms as f64 / 1000.0),
        ),
        (
            "near_config_correct",
            "gauge",
            "Are the current dynamically loadable configs correct",
            u8::from(st.config_correct).to_string(),
        ),
        (
            "near_boot_time_seconds",
            "gauge",
            "Unix timestamp of the node's start",
            (shared.started_ms / 1000).to_string(),
        ),
        (
            "near_node_protocol_version",
            "gauge",
            "Max protocol version supported by the node",
            chain::PROTOCOL_VERSION.to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in lines {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP near_build_info Metric whose labels indicate node's version\n# TYPE near_build_info gauge\nnear_build_info{{release=\"{}\",build=\"neard-sim-{}\",rustc_version=\"1.80.0\"}} 1\n",
        status::NEARD_VERSION,
        env!("CARGO_PKG_VERSION")
    ));
    out
}

/// Signs the current height into the ledger whenever it is new and the node may sign.
async fn sign_loop(shared: Arc<Shared>) {
    let period = (shared.settings.block_time / 4).clamp(Duration::from_millis(1), MAX_SIGN_TICK);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = chain::now_ms();
        let height = chain::height_at(now, shared.block_time_ms());
        let blocked = {
            let c = shared.control.borrow();
            c.freeze || c.stall || c.force_syncing
        };
        let mut st = shared.state();
        if blocked || st.stopping || shared.syncing(&st, now) {
            continue;
        }
        let Some(key) = st.key.clone() else { continue };
        if st.last_signed.is_some_and(|l| height <= l) {
            continue;
        }
        st.last_signed = Some(height);
        st.blocks_produced += 1;
        let entry = ledger::Entry {
            height,
            node: shared.settings.node_id.clone(),
            account: key.account_id,
            public_key: key.public_key,
            time_ms: now,
        };
        if let Some(w) = st.ledger.as_mut() {
            if let Err(e) = w.append(&entry) {
                log(
                    "ERROR",
                    "neard_sim",
                    &format!("ledger {}: {e}", w.path().display()),
                );
            }
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
