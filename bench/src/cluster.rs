//! Clusters of real kuutamod processes, each supervising the neard simulator, sharing one
//! validator key and one signing ledger. A node may live in its own network namespace; its
//! Consul URL is whatever the scenario wires it to (a proxy, a client agent, a server).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::consul::http_get;
use crate::procs::{alive, free_port, kuutamod_bin, neard_sim_bin, now_ms, signal, Guard};
use crate::wait;

/// Block time of the simulator: NEAR's ~1 s is scaled down ten times so takeovers are
/// measured in heights that matter (the targets are stated for 100 ms heights).
pub const BLOCK_TIME_MS: u64 = 100;

/// Timing and simulator settings of a cluster.
#[derive(Debug, Clone)]
pub struct Opts {
    /// KUUTAMO_SESSION_TTL.
    pub ttl: Duration,
    /// KUUTAMO_NEARD_STOP_GRACE.
    pub stop_grace: Duration,
    /// KUUTAMO_SYNCING_GRACE.
    pub syncing_grace: Duration,
    /// KUUTAMO_FAILOVER_MODE (`restart` or `hot-swap`).
    pub failover_mode: String,
    /// NEARD_SIM_BOOT_DELAY_MS: neard's start-up time.
    pub boot_delay_ms: u64,
    /// The validator account (also names the Consul lock, so runs sharing a Consul differ).
    pub account: String,
}

/// How one node reaches the world.
#[derive(Debug, Clone)]
pub struct Wiring {
    /// KUUTAMO_CONSUL_URL.
    pub consul_url: String,
    /// Namespace to run in (`ip netns exec`), if any.
    pub netns: Option<String>,
    /// Address the exporter binds (reachable from the root namespace).
    pub exporter_ip: IpAddr,
}

/// A set of nodes sharing one validator key.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The shared signing ledger.
    pub ledger: PathBuf,
    /// The validator account.
    pub account: String,
    /// Keys, homes and logs.
    pub dir: PathBuf,
}

/// One kuutamod + neard-sim node.
pub struct Node {
    /// Node id (also the simulator's ledger id).
    pub id: String,
    /// neard's home.
    pub home: PathBuf,
    /// Exporter address.
    pub exporter: SocketAddr,
    /// kuutamod's log.
    pub log: PathBuf,
    env: Vec<(String, String)>,
    netns: Option<String>,
    guard: Option<Guard>,
}

fn sim_init(home: &Path, account: &str) -> anyhow::Result<()> {
    let out = Command::new(neard_sim_bin())
        .arg("--home")
        .arg(home)
        .args(["init", "--chain-id", "localnet", "--account-id", account])
        .output()
        .context("cannot run neard-sim")?;
    anyhow::ensure!(
        out.status.success(),
        "neard-sim init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn set_rpc_addr(home: &Path, port: u16) -> anyhow::Result<()> {
    let path = home.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    config["rpc"]["addr"] = format!("127.0.0.1:{port}").into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Cluster {
    /// Creates one node per `wiring` entry under `dir` (not started).
    pub fn new(dir: &Path, wiring: &[Wiring], opts: &Opts) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let shared = dir.join("keys/shared");
        sim_init(&shared, &opts.account)?;
        let ledger = dir.join("ledger.jsonl");
        let mut nodes = Vec::new();
        for (i, w) in wiring.iter().enumerate() {
            let id = format!("node{i}");
            let home = dir.join(&id);
            sim_init(&home, &opts.account)?;
            let voter_key = dir.join(format!("keys/{id}-voter_node_key.json"));
            std::fs::copy(home.join("node_key.json"), &voter_key)?;
            // Inside a namespace every port is free; outside, pick free ones.
            set_rpc_addr(&home, free_port())?;
            let exporter = SocketAddr::new(w.exporter_ip, free_port());
            let p = |p: &Path| p.display().to_string();
            let env: Vec<(String, String)> = vec![
                ("KUUTAMO_NODE_ID".into(), id.clone()),
                ("KUUTAMO_ACCOUNT_ID".into(), opts.account.clone()),
                ("KUUTAMO_CONSUL_URL".into(), w.consul_url.clone()),
                ("KUUTAMO_EXPORTER_ADDRESS".into(), exporter.to_string()),
                (
                    "KUUTAMO_VALIDATOR_KEY".into(),
                    p(&shared.join("validator_key.json")),
                ),
                (
                    "KUUTAMO_VALIDATOR_NODE_KEY".into(),
                    p(&shared.join("node_key.json")),
                ),
                ("KUUTAMO_VOTER_NODE_KEY".into(), p(&voter_key)),
                ("KUUTAMO_NEARD_HOME".into(), p(&home)),
                ("KUUTAMO_NEARD_BIN".into(), p(&neard_sim_bin())),
                (
                    "KUUTAMO_VALIDATOR_NETWORK_ADDR".into(),
                    format!("127.0.0.1:{}", free_port()),
                ),
                (
                    "KUUTAMO_VOTER_NETWORK_ADDR".into(),
                    format!("127.0.0.1:{}", free_port()),
                ),
                ("KUUTAMO_SESSION_TTL".into(), ms(opts.ttl)),
                ("KUUTAMO_NEARD_STOP_GRACE".into(), ms(opts.stop_grace)),
                ("KUUTAMO_SYNCING_GRACE".into(), ms(opts.syncing_grace)),
                ("KUUTAMO_FAILOVER_MODE".into(), opts.failover_mode.clone()),
                ("NEARD_SIM_LEDGER".into(), p(&ledger)),
                ("NEARD_SIM_NODE_ID".into(), id.clone()),
                (
                    "NEARD_SIM_BOOT_DELAY_MS".into(),
                    opts.boot_delay_ms.to_string(),
                ),
                ("NEARD_SIM_BLOCK_TIME_MS".into(), BLOCK_TIME_MS.to_string()),
                ("RUST_LOG".into(), "info".into()),
            ];
            nodes.push(Node {
                log: dir.join(format!("{id}.log")),
                id,
                home,
                exporter,
                env,
                netns: w.netns.clone(),
                guard: None,
            });
        }
        Ok(Cluster {
            nodes,
            ledger,
            account: opts.account.clone(),
            dir: dir.to_path_buf(),
        })
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.start()?;
        }
        Ok(())
    }

    /// Each node's state (`Err` text when the exporter does not answer).
    pub fn states(&self) -> Vec<Result<String, String>> {
        self.nodes.iter().map(Node::state).collect()
    }

    /// Waits until exactly one node is Validating, it signs, and all others are Voting;
    /// returns the leader's index.
    pub fn wait_steady(&self, limit: Duration) -> anyhow::Result<usize> {
        let since = now_ms();
        wait::until(limit, "one signing leader, the others Voting", || {
            let states = self.states();
            let leaders: Vec<usize> = (0..states.len())
                .filter(|i| states[*i].as_deref() == Ok("Validating"))
                .collect();
            let voting = states
                .iter()
                .filter(|s| s.as_deref() == Ok("Voting"))
                .count();
            match leaders.as_slice() {
                [one] if voting + 1 == states.len() && self.signed_after(*one, since) => Ok(*one),
                _ => Err(states),
            }
        })
    }

    /// Whether node `i` signed a height after `after_ms`.
    pub fn signed_after(&self, i: usize, after_ms: u64) -> bool {
        let id = &self.nodes[i].id;
        self.entries()
            .iter()
            .any(|e| &e.node == id && e.time_ms > after_ms)
    }

    /// All ledger entries so far.
    pub fn entries(&self) -> Vec<neard_sim::ledger::Entry> {
        if !self.ledger.exists() {
            return Vec::new();
        }
        neard_sim::ledger::read(&self.ledger).unwrap_or_default()
    }

    /// The oracle's verdict on the ledger.
    pub fn report(&self) -> neard_sim::ledger::Report {
        neard_sim::ledger::analyze(&self.entries(), &self.account)
    }

    /// Stops every node (kuutamod gracefully, then any neard left behind).
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        self.kill_orphans();
    }

    /// Kills simulators whose kuutamod is gone (a SIGKILLed supervisor may leave its child).
    pub fn kill_orphans(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            if self
                .nodes
                .iter()
                .any(|n| cmd.contains("neard-sim") && cmd.contains(&*n.home.to_string_lossy()))
            {
                signal(pid, Signal::SIGKILL);
            }
        }
    }

    /// The tails of every node's log.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut g) = n.guard.take() {
                g.kill();
            }
        }
        self.kill_orphans();
    }
}

impl Node {
    /// Starts kuutamod (in its namespace, if any), output to the node's log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.guard.is_none(), "{} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs the program: the pid stays kuutamod's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(kuutamod_bin());
                c
            }
            None => Command::new(kuutamod_bin()),
        };
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start kuutamod")?;
        self.guard = Some(Guard::new(child));
        Ok(())
    }

    /// kuutamod's pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.guard.as_ref().and_then(Guard::pid)
    }

    /// Sends `sig` to kuutamod.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// Whether kuutamod has exited.
    pub fn exited(&mut self) -> bool {
        self.guard.as_mut().is_none_or(Guard::exited)
    }

    /// Stops kuutamod gracefully (SIGCONT, SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.stop();
        }
    }

    /// SIGKILLs kuutamod and forgets it (its neard may live on: that is the point).
    pub fn kill(&mut self) {
        if let Some(mut g) = self.guard.take() {
            g.kill();
        }
    }

    /// The Prometheus metrics, as `name{labels}` -> value.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let body = http_get(&format!("http://{}/metrics", self.exporter))?;
        Ok(parse_metrics(&body))
    }

    /// The current state (the `kuutamod_state` series that is 1).
    pub fn state(&self) -> Result<String, String> {
        state_of(&self.metrics()?)
    }

    /// pid of the supervised neard (from `/neard-pid`).
    pub fn neard_pid(&self) -> Option<i32> {
        let pid: i32 = http_get(&format!("http://{}/neard-pid", self.exporter))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// Sets the simulator's fault knobs.
    pub fn control(&self, control: &neard_sim::control::Control) -> anyhow::Result<()> {
        control.write(&self.home.join("neard-sim-control.json"))?;
        Ok(())
    }

    /// The last `n` lines of kuutamod's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.id,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }
}

/// Parses Prometheus text into `name{labels}` -> value.
pub fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The state whose `kuutamod_state{type=...}` series is 1.
pub fn state_of(m: &BTreeMap<String, f64>) -> Result<String, String> {
    m.iter()
        .find(|(k, v)| k.starts_with("kuutamod_state{") && **v == 1.0)
        .and_then(|(k, _)| k.split('"').nth(1).map(str::to_string))
        .ok_or_else(|| "no state is 1".to_string())
}
