//! Clusters of real kuutamod processes, each supervising the neard simulator, against one Consul.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use kuutamod_bench::cluster::{parse_metrics, state_of};
pub use kuutamod_bench::procs::alive;

use super::consul::{ureq_get, ConsulAgent};
use super::{free_port, kuutamod_bin, neard_sim_bin, wait};

/// Timing and simulator settings of a test cluster.
#[derive(Debug, Clone)]
pub struct Opts {
    /// KUUTAMO_SESSION_TTL.
    pub ttl: &'static str,
    /// KUUTAMO_NEARD_STOP_GRACE.
    pub stop_grace: &'static str,
    /// KUUTAMO_SYNCING_GRACE.
    pub syncing_grace: &'static str,
    /// KUUTAMO_FAILOVER_MODE.
    pub failover_mode: &'static str,
    /// NEARD_SIM_BOOT_DELAY_MS.
    pub boot_delay_ms: u64,
    /// Further environment for every node.
    pub env: Vec<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            ttl: "3s",
            stop_grace: "500ms",
            syncing_grace: "2s",
            failover_mode: "restart",
            boot_delay_ms: 300,
            env: Vec::new(),
        }
    }
}

/// The validator account every test cluster shares.
pub const ACCOUNT: &str = "pool.test.near";

/// A set of nodes sharing one validator key.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The shared signing ledger of all simulators.
    pub ledger: PathBuf,
    /// Where keys and homes live.
    pub dir: tempfile::TempDir,
    /// Consul's URL.
    pub consul_url: String,
}

/// One kuutamod + neard-sim node.
pub struct Node {
    /// Node id.
    pub id: String,
    /// neard's home.
    pub home: PathBuf,
    /// Exporter address.
    pub exporter: SocketAddr,
    /// The simulator's RPC port.
    pub rpc_port: u16,
    /// network.addr port as validator.
    pub validator_port: u16,
    /// network.addr port as voter.
    pub voter_port: u16,
    /// kuutamod's log file.
    pub log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// `neard-sim --home <home> init` for a localnet home whose validator key is for `account`.
pub fn sim_init(home: &Path, account: &str) {
    let home = home.to_str().expect("utf-8 path");
    let args = [
        "--home",
        home,
        "init",
        "--chain-id",
        "localnet",
        "--account-id",
        account,
    ];
    let out = Command::new(neard_sim_bin())
        .args(args)
        .output()
        .expect("cannot run neard-sim");
    assert!(
        out.status.success(),
        "neard-sim {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_rpc_addr(home: &Path, port: u16) {
    let path = home.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
    config["rpc"]["addr"] = format!("127.0.0.1:{port}").into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
}

impl Cluster {
    /// Creates `n` nodes (not started) against `consul`.
    pub fn new(consul: &ConsulAgent, n: usize, opts: &Opts) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let shared = keys.join("shared");
        sim_init(&shared, ACCOUNT);
        let ledger = dir.path().join("ledger.jsonl");
        let mut nodes = Vec::new();
        for i in 0..n {
            let id = format!("node{i}");
            let home = dir.path().join(&id);
            sim_init(&home, ACCOUNT);
            let voter_key = keys.join(format!("{id}-voter_node_key.json"));
            std::fs::copy(home.join("node_key.json"), &voter_key).expect("copy voter key");
            let rpc_port = free_port();
            set_rpc_addr(&home, rpc_port);
            let validator_port = free_port();
            let voter_port = free_port();
            let exporter: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut env: Vec<(String, String)> = vec![
                ("KUUTAMO_NODE_ID".into(), id.clone()),
                ("KUUTAMO_ACCOUNT_ID".into(), ACCOUNT.into()),
                ("KUUTAMO_CONSUL_URL".into(), consul.url.clone()),
                ("KUUTAMO_EXPORTER_ADDRESS".into(), exporter.to_string()),
                (
                    "KUUTAMO_VALIDATOR_KEY".into(),
                    path_str(&shared.join("validator_key.json")),
                ),
                (
                    "KUUTAMO_VALIDATOR_NODE_KEY".into(),
                    path_str(&shared.join("node_key.json")),
                ),
                ("KUUTAMO_VOTER_NODE_KEY".into(), path_str(&voter_key)),
                ("KUUTAMO_NEARD_HOME".into(), path_str(&home)),
                ("KUUTAMO_NEARD_BIN".into(), path_str(&neard_sim_bin())),
                (
                    "KUUTAMO_VALIDATOR_NETWORK_ADDR".into(),
                    format!("127.0.0.1:{validator_port}"),
                ),
                (
                    "KUUTAMO_VOTER_NETWORK_ADDR".into(),
                    format!("127.0.0.1:{voter_port}"),
                ),
                ("KUUTAMO_SESSION_TTL".into(), opts.ttl.into()),
                ("KUUTAMO_NEARD_STOP_GRACE".into(), opts.stop_grace.into()),
                ("KUUTAMO_SYNCING_GRACE".into(), opts.syncing_grace.into()),
                ("KUUTAMO_FAILOVER_MODE".into(), opts.failover_mode.into()),
                ("NEARD_SIM_LEDGER".into(), path_str(&ledger)),
                ("NEARD_SIM_NODE_ID".into(), id.clone()),
                (
                    "NEARD_SIM_BOOT_DELAY_MS".into(),
                    opts.boot_delay_ms.to_string(),
                ),
                ("RUST_LOG".into(), "info".into()),
            ];
            env.extend(opts.env.iter().cloned());
            nodes.push(Node {
                log: dir.path().join(format!("{id}.log")),
                id,
                home,
                exporter,
                rpc_port,
                validator_port,
                voter_port,
                env,
                child: None,
            });
        }
        Cluster {
            nodes,
            ledger,
            dir,
            consul_url: consul.url.clone(),
        }
    }

    /// Starts every node.
    pub fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    /// Waits until exactly one node is Validating and returns its index.
    pub fn wait_for_leader(&self, limit: Duration) -> usize {
        self.until(limit, "exactly one node in Validating", || {
            let states: Vec<_> = self
                .nodes
                .iter()
                .map(|n| n.state().unwrap_or_else(|e| e))
                .collect();
            let leaders: Vec<_> = states
                .iter()
                .enumerate()
                .filter(|(_, s)| *s == "Validating")
                .map(|(i, _)| i)
                .collect();
            match leaders.as_slice() {
                [one] => Ok(*one),
                _ => Err(states),
            }
        })
    }

    /// Waits until node `i` is Validating *and* its neard signs (a ledger line by it after
    /// `after_ms`); returns the first such line's time.
    pub fn wait_for_signing(&self, i: usize, after_ms: u64, limit: Duration) -> u64 {
        let id = self.nodes[i].id.clone();
        self.until(limit, &format!("{id} to sign a height"), || {
            let entries = self.entries();
            entries
                .iter()
                .filter(|e| e.node == id && e.time_ms > after_ms)
                .map(|e| e.time_ms)
                .min()
                .ok_or_else(|| self.describe())
        })
    }

    /// Polls like [`wait::until`]; a timeout fails the test with the tail of every node's log.
    pub fn until<T, E: std::fmt::Debug>(
        &self,
        limit: Duration,
        what: &str,
        probe: impl FnMut() -> Result<T, E>,
    ) -> T {
        kuutamod_bench::wait::until(limit, what, probe)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()))
    }

    /// Waits until node `i` is in state `want`.
    pub fn wait_state(&self, i: usize, want: &str, limit: Duration) {
        let id = &self.nodes[i].id;
        self.until(limit, &format!("{id} to be {want}"), || {
            match self.nodes[i].state() {
                Ok(s) if s == want => Ok(()),
                other => Err(other),
            }
        });
    }

    /// Asserts that node `old` signed for the last time before `first_new`, the time of the new
    /// leader's first signature: the old leader stopped before the new one began.
    pub fn assert_stopped_before(&self, old: usize, first_new: u64) {
        let id = &self.nodes[old].id;
        let last_old = self
            .entries()
            .iter()
            .filter(|e| &e.node == id)
            .map(|e| e.time_ms)
            .max()
            .expect("the old leader signed before");
        assert!(
            last_old < first_new,
            "old leader signed at {last_old}, new at {first_new}"
        );
    }

    /// All ledger entries so far (empty if nothing was signed yet).
    pub fn entries(&self) -> Vec<neard_sim::ledger::Entry> {
        if !self.ledger.exists() {
            return Vec::new();
        }
        neard_sim::ledger::read(&self.ledger).expect("ledger readable")
    }

    /// The oracle's verdict on the ledger.
    pub fn report(&self) -> neard_sim::ledger::Report {
        neard_sim::ledger::analyze(&self.entries(), ACCOUNT)
    }

    /// Asserts that no height was signed by two nodes.
    pub fn assert_no_double_signing(&self) {
        let report = self.report();
        assert!(
            report.double_signed.is_empty(),
            "double-signed heights: {:?}\n{}",
            report.double_signed.iter().take(10).collect::<Vec<_>>(),
            self.logs()
        );
    }

    /// Each node's state, for failure messages.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.state().unwrap_or_else(|e| e)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The tails of all logs.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_tail(40))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Wall-clock milliseconds since the Unix epoch (the ledger's time base).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

impl Node {
    /// Starts kuutamod (output to the node's log file).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(kuutamod_bin())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("cannot start kuutamod");
        self.child = Some(child);
    }

    /// kuutamod's pid.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Sends a signal to kuutamod.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal kuutamod");
    }

    /// Waits for kuutamod to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let status = wait::until(limit, "kuutamod to exit", || match child.try_wait() {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        });
        self.child = None;
        status
    }

    /// The Prometheus metrics, as `name{labels}` -> value.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let body = ureq_get(&format!("http://{}/metrics", self.exporter))?;
        Ok(parse_metrics(&body))
    }

    /// The current state (the `kuutamod_state` series that is 1).
    pub fn state(&self) -> Result<String, String> {
        state_of(&self.metrics()?)
    }

    /// Sets an environment variable for this node's next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// pid of the supervised neard (from `/neard-pid`).
    pub fn neard_pid(&self) -> Option<i32> {
        ureq_get(&format!("http://{}/neard-pid", self.exporter))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether the validator key file is in neard's home.
    pub fn has_validator_key(&self) -> bool {
        self.home.join("validator_key.json").exists()
    }

    /// Sets the simulator's fault knobs.
    pub fn control(&self, control: &neard_sim::control::Control) {
        control
            .write(&self.home.join("neard-sim-control.json"))
            .expect("write control file");
    }

    /// The last `n` lines of kuutamod's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        format!(
            "--- {} log ---\n{}",
            self.id,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
