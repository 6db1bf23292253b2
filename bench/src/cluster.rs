//! The one cluster builder, used by the benchmark and by the integration tests: real Consul
//! servers, and per node a *host* (a network namespace on the LAN, or the root namespace's
//! loopback) running that node's own Consul client agent, a request-counting proxy in front of
//! the agent, and kuutamod supervising the neard simulator. All nodes share one validator key
//! and one signing ledger, and every node's neard joins **one chain**: a `neard-sim chain run`
//! process per cluster (our account plus virtual validators, [`ChainOpts`]), reached through its
//! Unix socket, which crosses network namespaces. The ledger oracle tells conflicting and
//! double-signed messages; the chain log tells what our account missed of what it was assigned.
//!
//! [`Spec`] says what to build (node count, hosts, server count, timing, the chain, environment
//! for every node or one node); [`Cluster::start`] starts Consul, the agents and the chain and
//! prepares the nodes; [`Node::start`] starts a kuutamod. [`Cluster::spawn_aux`] owns a further
//! process of the cluster and its log (the chain is one).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::consul::{http_get, Agent, AgentSpec, Ports, Role, Servers, START_LIMIT};
use crate::netns::Host;
use crate::procs::{
    alive, free_port, guard_of, kuutamoctl_bin, kuutamod_bin, neard_sim_bin, now_ms, signal,
    OwnedChild, KUUTAMOD_GUARD_ARGV0,
};
use crate::proxy::Proxy;
use crate::wait;

/// The simulator's `--speed-up`: neard's default consensus timers divided by ten (60 ms / 200 ms
/// / 600 ms), for the chain's virtual validators and every node's config.json alike, so that
/// takeovers are measured in heights that matter (the targets are stated for ~100 ms heights)
/// and kuutamod's height fence reads the same timers the chain runs on.
pub const SPEED_UP: u32 = 10;

/// Lines of each log shown when a wait fails.
const LOG_LINES: usize = 40;

/// How long the chain process may take to open its socket.
const CHAIN_START_LIMIT: Duration = Duration::from_secs(20);

/// The chain every node of a cluster joins: our account's stake and the virtual validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainOpts {
    /// Stake of our account (the cluster's shared validator key).
    pub ours: u128,
    /// Virtual validators played by the chain process: (account, stake).
    pub validators: Vec<(String, u128)>,
}

impl ChainOpts {
    /// The default, a live chain: our account and three virtual validators of equal stake.
    /// Ours holds a quarter, below a third, so the other three (3/4, more than 2/3) keep the
    /// chain going while ours is down; a failover shows as skipped heights and missed chunks
    /// of ours.
    pub fn live() -> ChainOpts {
        ChainOpts {
            ours: 1,
            validators: vec![("v1".into(), 1), ("v2".into(), 1), ("v3".into(), 1)],
        }
    }

    /// A chain that stalls without us: ours 2 of 4 (a half, above a third), two virtual
    /// validators of 1: nothing is produced while no node of ours approves.
    pub fn stall() -> ChainOpts {
        ChainOpts {
            ours: 2,
            validators: vec![("v1".into(), 1), ("v2".into(), 1)],
        }
    }

    /// Whether the chain needs our account's approvals to reach more than 2/3 of the stake.
    pub fn stalls_without_us(&self) -> bool {
        let others: u128 = self.validators.iter().map(|(_, s)| s).sum();
        let total = others + self.ours;
        // Nothing is produced without strictly more than 2/3 (`approved > total*2/3`).
        others * 3 <= total * 2
    }
}

/// Timing and failover settings of every node.
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
}

impl Opts {
    /// The integration tests' timing: TTL 3 s, stop grace 500 ms, syncing grace 2 s, a 300 ms
    /// neard boot, restart mode.
    pub fn test() -> Opts {
        Opts {
            ttl: Duration::from_secs(3),
            stop_grace: Duration::from_millis(500),
            syncing_grace: Duration::from_secs(2),
            failover_mode: "restart".into(),
            boot_delay_ms: 300,
        }
    }

    /// The same in `mode`.
    pub fn mode(self, mode: &str) -> Opts {
        Opts {
            failover_mode: mode.into(),
            ..self
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Where keys, homes, Consul data and logs go; `None`: a temporary directory the cluster
    /// owns (deleted with it).
    pub dir: Option<PathBuf>,
    /// The validator account (also names the Consul lock).
    pub account: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Host of each node (index modulo length); empty: every node on the root namespace's
    /// loopback.
    pub hosts: Vec<Host>,
    /// Consul servers: 1 (a dev agent) or 3.
    pub servers: usize,
    /// Addresses the servers bind (the LAN's, or loopback).
    pub server_ips: Vec<IpAddr>,
    /// Timing and mode.
    pub opts: Opts,
    /// Extra environment for every node (after the defaults, so it overrides them).
    pub env: Vec<(String, String)>,
    /// Extra environment per node index (after [`Spec::env`]).
    pub node_env: BTreeMap<usize, Vec<(String, String)>>,
    /// The kuutamod binary; `None`: [`kuutamod_bin`] (beside the running executable).
    pub kuutamod_bin: Option<PathBuf>,
    /// The chain the nodes join.
    pub chain: ChainOpts,
    /// The kuutamoctl binary; `None`: [`kuutamoctl_bin`] (beside the running executable).
    pub kuutamoctl_bin: Option<PathBuf>,
}

impl Spec {
    /// `nodes` nodes on loopback against one dev server, each with its own client agent.
    pub fn new(nodes: usize, account: &str, opts: Opts) -> Spec {
        Spec {
            dir: None,
            account: account.into(),
            nodes,
            hosts: Vec::new(),
            servers: 1,
            server_ips: vec![IpAddr::from([127, 0, 0, 1])],
            opts,
            env: Vec::new(),
            node_env: BTreeMap::new(),
            kuutamod_bin: None,
            chain: ChainOpts::live(),
            kuutamoctl_bin: None,
        }
    }

    /// The same on a chain that stalls without us ([`ChainOpts::stall`]).
    pub fn stall_chain(self) -> Spec {
        self.chain(ChainOpts::stall())
    }

    /// The same on `chain`.
    pub fn chain(self, chain: ChainOpts) -> Spec {
        Spec { chain, ..self }
    }

    /// Sets `key=value` for node `i`.
    pub fn node_env(mut self, i: usize, key: &str, value: &str) -> Spec {
        self.node_env
            .entry(i)
            .or_default()
            .push((key.into(), value.into()));
        self
    }
}

/// A set of nodes sharing one validator key, with their Consul.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The shared signing ledger.
    pub ledger: PathBuf,
    /// The validator account.
    pub account: String,
    /// Keys, homes and logs.
    pub dir: PathBuf,
    /// The Consul servers.
    pub servers: Servers,
    /// The chain's directory (`chain.json`, `chain.sock`, `chain-log.jsonl`,
    /// `chain-control.json`).
    pub chain_dir: PathBuf,
    /// The chain the nodes are on.
    pub chain: ChainOpts,
    /// The kuutamoctl binary.
    pub kuutamoctl_bin: PathBuf,
    /// Further processes of the cluster (name, process), stopped with it; the chain is
    /// `chain`.
    pub aux: Vec<(String, OwnedChild)>,
    _tmp: Option<tempfile::TempDir>,
}

/// One host: its Consul client agent, a proxy in front of it, kuutamod and its neard.
pub struct Node {
    /// Node id (also the simulator's ledger id).
    pub id: String,
    /// Where it lives.
    pub host: Host,
    /// Its own Consul client agent.
    pub agent: Agent,
    /// The proxy kuutamod talks through (counts requests, can delay them).
    pub proxy: Proxy,
    /// KUUTAMO_CONSUL_URL (the proxy, on the host's loopback).
    pub consul_url: String,
    /// neard's home.
    pub home: PathBuf,
    /// Exporter address (reachable from the harness).
    pub exporter: SocketAddr,
    /// The simulator's RPC port (on the host's loopback).
    pub rpc_port: u16,
    /// network.addr port as validator.
    pub validator_port: u16,
    /// network.addr port as voter.
    pub voter_port: u16,
    /// kuutamod's log (appended to across restarts).
    pub log: PathBuf,
    bin: PathBuf,
    env: Vec<(String, String)>,
    child: Option<OwnedChild>,
}

/// `neard-sim --home <home> init --speed-up 10` for a localnet home whose validator key is for
/// `account`: config.json carries the sped-up consensus timers, which kuutamod's height fence
/// reads (`min_block_production_delay`, `max_block_production_delay`).
pub fn sim_init(home: &Path, account: &str) -> anyhow::Result<()> {
    let out = Command::new(neard_sim_bin())
        .arg("--home")
        .arg(home)
        .args(["init", "--chain-id", "localnet", "--account-id", account])
        .args(["--speed-up", &SPEED_UP.to_string()])
        .output()
        .context("cannot run neard-sim")?;
    anyhow::ensure!(
        out.status.success(),
        "neard-sim init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `neard-sim chain init --dir <dir>` for `account` (ours) and `chain`'s virtual validators.
pub fn chain_init(dir: &Path, account: &str, chain: &ChainOpts) -> anyhow::Result<()> {
    let mut cmd = Command::new(neard_sim_bin());
    cmd.args(["chain", "init", "--dir"]).arg(dir).args([
        "--chain-id",
        "localnet",
        "--ours",
        &format!("{account}:{}", chain.ours),
        "--speed-up",
        &SPEED_UP.to_string(),
    ]);
    for (v, stake) in &chain.validators {
        cmd.args(["--validator", &format!("{v}:{stake}")]);
    }
    let out = cmd.output().context("cannot run neard-sim chain init")?;
    anyhow::ensure!(
        out.status.success(),
        "neard-sim chain init failed: {}",
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

fn p(path: &Path) -> String {
    path.display().to_string()
}

impl Cluster {
    /// Starts the Consul servers and one client agent per node (waiting until each serves
    /// writes), and prepares every node (not started).
    pub fn start(spec: Spec) -> anyhow::Result<Cluster> {
        let (tmp, dir) = match &spec.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kuutamod-cluster")
                    .tempdir()?;
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        std::fs::create_dir_all(&dir)?;
        let servers = Servers::start(spec.servers, &spec.server_ips, &dir)?;
        let hosts: Vec<Host> = (0..spec.nodes)
            .map(|i| {
                spec.hosts
                    .get(i % spec.hosts.len().max(1))
                    .cloned()
                    .unwrap_or_else(Host::loopback)
            })
            .collect();
        let mut agents = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let mut http_addrs = vec![IpAddr::from([127, 0, 0, 1])];
            if host.netns.is_some() {
                http_addrs.push(host.ip);
            }
            agents.push(Agent::start(AgentSpec {
                name: format!("host{i}"),
                role: Role::Client {
                    join: servers.lan(),
                },
                bind: host.ip,
                http_addrs,
                ports: Ports::pick(host.ip),
                netns: host.netns.clone(),
                dir: dir.clone(),
            })?);
        }
        for a in &mut agents {
            a.ready_or_repick(START_LIMIT)?;
        }
        // The chain, before the nodes: every node's neard joins it through its socket.
        let chain_dir = dir.join("chain");
        chain_init(&chain_dir, &spec.account, &spec.chain)?;
        let socket = chain_dir.join(neard_sim::chaind::SOCKET_FILE);
        let mut aux = Vec::new();
        let mut chain_cmd = Command::new(neard_sim_bin());
        chain_cmd.args(["chain", "run", "--dir"]).arg(&chain_dir);
        aux.push(("chain".to_string(), spawn_logged(&dir, "chain", chain_cmd)?));
        wait::until(CHAIN_START_LIMIT, "the chain process's socket", || {
            if socket.exists() {
                Ok(())
            } else if aux[0].1.exited() {
                Err(format!(
                    "the chain process exited: {}",
                    tail(&dir.join("chain.log"), LOG_LINES)
                ))
            } else {
                Err("no socket yet".into())
            }
        })?;
        let shared = dir.join("keys/shared");
        sim_init(&shared, &spec.account)?;
        let ledger = dir.join("ledger.jsonl");
        let bin = spec.kuutamod_bin.clone().unwrap_or_else(kuutamod_bin);
        let mut nodes = Vec::new();
        for (i, (host, agent)) in hosts.into_iter().zip(agents).enumerate() {
            let id = format!("node{i}");
            let home = dir.join(&id);
            sim_init(&home, &spec.account)?;
            let voter_key = dir.join(format!("keys/{id}-voter_node_key.json"));
            std::fs::copy(home.join("node_key.json"), &voter_key)?;
            // Inside a namespace every port is free; outside, the kernel's choice is free.
            let rpc_port = free_port();
            set_rpc_addr(&home, rpc_port)?;
            let exporter = SocketAddr::new(host.ip, free_port());
            let validator_port = free_port();
            let voter_port = free_port();
            let upstream = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), agent.spec.ports.http);
            let proxy = Proxy::start(host.netns.as_deref(), upstream)?;
            let consul_url = format!("http://{}", proxy.addr);
            let o = &spec.opts;
            let mut env: Vec<(String, String)> = vec![
                ("KUUTAMO_NODE_ID".into(), id.clone()),
                ("KUUTAMO_ACCOUNT_ID".into(), spec.account.clone()),
                ("KUUTAMO_CONSUL_URL".into(), consul_url.clone()),
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
                    format!("127.0.0.1:{validator_port}"),
                ),
                (
                    "KUUTAMO_VOTER_NETWORK_ADDR".into(),
                    format!("127.0.0.1:{voter_port}"),
                ),
                ("KUUTAMO_SESSION_TTL".into(), ms(o.ttl)),
                ("KUUTAMO_NEARD_STOP_GRACE".into(), ms(o.stop_grace)),
                ("KUUTAMO_SYNCING_GRACE".into(), ms(o.syncing_grace)),
                ("KUUTAMO_FAILOVER_MODE".into(), o.failover_mode.clone()),
                ("NEARD_SIM_LEDGER".into(), p(&ledger)),
                ("NEARD_SIM_NODE_ID".into(), id.clone()),
                (
                    "NEARD_SIM_BOOT_DELAY_MS".into(),
                    o.boot_delay_ms.to_string(),
                ),
                ("NEARD_SIM_CHAIN".into(), p(&socket)),
                ("RUST_LOG".into(), "info".into()),
            ];
            env.extend(spec.env.iter().cloned());
            env.extend(spec.node_env.get(&i).into_iter().flatten().cloned());
            nodes.push(Node {
                log: dir.join(format!("{id}.log")),
                id,
                host,
                agent,
                proxy,
                consul_url,
                home,
                exporter,
                rpc_port,
                validator_port,
                voter_port,
                bin: bin.clone(),
                env,
                child: None,
            });
        }
        Ok(Cluster {
            nodes,
            ledger,
            account: spec.account,
            dir,
            servers,
            chain_dir,
            chain: spec.chain,
            kuutamoctl_bin: spec.kuutamoctl_bin.unwrap_or_else(kuutamoctl_bin),
            aux,
            _tmp: tmp,
        })
    }

    /// Starts `cmd` as a further process of the cluster, output to `<dir>/<name>.log`.
    pub fn spawn_aux(&mut self, name: &str, cmd: Command) -> anyhow::Result<()> {
        let child = spawn_logged(&self.dir, name, cmd)?;
        self.aux.push((name.into(), child));
        Ok(())
    }

    /// The further process `name`, if it was started.
    pub fn aux(&mut self, name: &str) -> Option<&mut OwnedChild> {
        self.aux.iter_mut().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The chain process's socket (`NEARD_SIM_CHAIN` of every node).
    pub fn chain_socket(&self) -> PathBuf {
        self.chain_dir.join(neard_sim::chaind::SOCKET_FILE)
    }

    /// What the chain decided so far, one line per height (empty before the first).
    pub fn chain_log(&self) -> Vec<neard_sim::chainlog::Line> {
        neard_sim::chainlog::read(&self.chain_dir.join(neard_sim::chainlog::FILE))
            .unwrap_or_default()
    }

    /// What our account was assigned and missed among the heights the chain decided in
    /// `[from_ms, to_ms)`.
    pub fn missed_assigned(&self, from_ms: u64, to_ms: u64) -> neard_sim::chainlog::Missed {
        neard_sim::chainlog::missed_assigned(&self.chain_log(), &self.account, from_ms, to_ms)
    }

    /// The chain's highest decided height and whether a block was produced there.
    pub fn chain_head(&self) -> Option<u64> {
        self.chain_log()
            .iter()
            .filter(|l| l.produced)
            .map(|l| l.height)
            .max()
    }

    /// Takes the named virtual validators offline (they sign nothing; the others back online).
    pub fn set_offline(&self, validators: &[&str]) -> anyhow::Result<()> {
        neard_sim::control::ChainControl {
            offline: validators.iter().map(|v| v.to_string()).collect(),
        }
        .write(&self.chain_dir.join(neard_sim::control::CHAIN_FILE))?;
        Ok(())
    }

    /// Runs `kuutamoctl <args>` against the first live Consul server for the cluster's
    /// account; returns its exit code and its output (stdout, then stderr).
    pub fn kuutamoctl(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let out = Command::new(&self.kuutamoctl_bin)
            .env_clear()
            .env("KUUTAMO_CONSUL_URL", self.servers.url())
            .env("KUUTAMO_ACCOUNT_ID", &self.account)
            .args(args)
            .output()
            .context("cannot run kuutamoctl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// `kuutamoctl switchover --to <node i> --in-window --wait --timeout <timeout>`: a planned
    /// hand-over in a maintenance window of our account; returns kuutamoctl's exit code and
    /// output.
    pub fn switchover_in_window(&self, i: usize, timeout: &str) -> anyhow::Result<(i32, String)> {
        let to = self.nodes[i].id.clone();
        self.kuutamoctl(&[
            "switchover",
            "--to",
            &to,
            "--in-window",
            "--wait",
            "--timeout",
            timeout,
        ])
    }

    /// `kuutamoctl pause`, then waits until every node reports `kuutamod_paused` 1.
    pub fn pause(&self, limit: Duration) -> anyhow::Result<()> {
        let (code, out) = self.kuutamoctl(&["pause"])?;
        anyhow::ensure!(code == 0, "kuutamoctl pause exited {code}: {out}");
        self.until(limit, "every node to see the pause", || {
            let paused: Vec<Result<f64, String>> = self
                .nodes
                .iter()
                .map(|n| n.metric_sum("kuutamod_paused"))
                .collect();
            if paused.iter().all(|p| p.as_ref() == Ok(&1.0)) {
                Ok(())
            } else {
                Err(paused)
            }
        })
    }

    /// The Consul key of the lock (`kuutamod-leader/<account>`).
    pub fn lock_key(&self) -> String {
        format!("kuutamod-leader/{}", self.account)
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

    /// Each node's state, for messages.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.state().unwrap_or_else(|e| e)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Polls like [`wait::until`]; a timeout's error carries the tail of every node's log.
    pub fn until<T, E: std::fmt::Debug>(
        &self,
        limit: Duration,
        what: &str,
        probe: impl FnMut() -> Result<T, E>,
    ) -> anyhow::Result<T> {
        wait::until(limit, what, probe).with_context(|| self.logs(LOG_LINES))
    }

    /// Waits until exactly one node is Validating, it signs, and all others are Voting;
    /// returns the leader's index.
    pub fn wait_steady(&self, limit: Duration) -> anyhow::Result<usize> {
        let since = now_ms();
        self.until(limit, "one signing leader, the others Voting", || {
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

    /// Waits until exactly one node is Validating and returns its index.
    pub fn wait_for_leader(&self, limit: Duration) -> anyhow::Result<usize> {
        self.until(limit, "exactly one node in Validating", || {
            let states = self.states();
            let leaders: Vec<usize> = (0..states.len())
                .filter(|i| states[*i].as_deref() == Ok("Validating"))
                .collect();
            match leaders.as_slice() {
                [one] => Ok(*one),
                _ => Err(states),
            }
        })
    }

    /// Waits until node `i` signs a height after `after_ms`; returns that signature's time.
    pub fn wait_for_signing(
        &self,
        i: usize,
        after_ms: u64,
        limit: Duration,
    ) -> anyhow::Result<u64> {
        let id = self.nodes[i].id.clone();
        self.until(limit, &format!("{id} to sign a height"), || {
            self.first_signed_after(i, after_ms)
                .ok_or_else(|| self.describe())
        })
    }

    /// Waits until node `i` is in state `want`.
    pub fn wait_state(&self, i: usize, want: &str, limit: Duration) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        self.until(limit, &format!("{} to be {want}", node.id), || {
            match node.state() {
                Ok(s) if s == want => Ok(()),
                other => Err(other),
            }
        })
    }

    /// Whether node `i` signed a height after `after_ms`.
    pub fn signed_after(&self, i: usize, after_ms: u64) -> bool {
        self.first_signed_after(i, after_ms).is_some()
    }

    /// Time of node `i`'s first signature after `after_ms`.
    pub fn first_signed_after(&self, i: usize, after_ms: u64) -> Option<u64> {
        let id = &self.nodes[i].id;
        self.entries()
            .iter()
            .filter(|e| &e.node == id && e.time_ms > after_ms)
            .map(|e| e.time_ms)
            .min()
    }

    /// Time of node `i`'s last signature.
    pub fn last_signed(&self, i: usize) -> Option<u64> {
        let id = &self.nodes[i].id;
        self.entries()
            .iter()
            .filter(|e| &e.node == id)
            .map(|e| e.time_ms)
            .max()
    }

    /// All ledger entries so far (empty before the first signature).
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

    /// Fails on any conflicting signature of our account (two different blocks at a height,
    /// two different chunks at a height and shard, an endorsement and another approval for
    /// one target: the double signing that is slashed), and on any message slot signed by two
    /// nodes (the strict bar: two key holders signing one message, even identically;
    /// [`two_node_slots`]).
    pub fn check_no_double_signing(&self) -> anyhow::Result<()> {
        check_report(&self.report()).with_context(|| self.logs(LOG_LINES))
    }

    /// Fails unless node `old` signed for the last time before `first_new` (the new leader's
    /// first signature): the old leader stopped before the new one began.
    pub fn check_stopped_before(&self, old: usize, first_new: u64) -> anyhow::Result<()> {
        let last_old = self
            .last_signed(old)
            .context("the old leader never signed")?;
        anyhow::ensure!(
            last_old < first_new,
            "old leader signed at {last_old}, new at {first_new}"
        );
        Ok(())
    }

    /// Stops every node (kuutamod gracefully, then any neard left behind), then the further
    /// processes (the chain last, SIGTERM: it closes its log).
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        self.kill_orphans();
        for (_, c) in self.aux.iter_mut().rev() {
            c.stop();
        }
    }

    /// Kills what a node's kuutamod left behind (a SIGKILLed supervisor's neard, a frozen
    /// host's guard and neard): neard-sim processes whose command line names a node's home, and
    /// `kuutamod-guard` processes whose environment does. SIGKILL only: a stopped process must
    /// not run (and sign) again on its way out.
    pub fn kill_orphans(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        let homes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.home.to_string_lossy().into_owned())
            .collect();
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            let ours = if cmd.starts_with(KUUTAMOD_GUARD_ARGV0) {
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let env = String::from_utf8_lossy(&env);
                homes.iter().any(|h| {
                    env.split('\0')
                        .any(|kv| kv == format!("KUUTAMO_NEARD_HOME={h}"))
                })
            } else {
                cmd.contains("neard-sim") && homes.iter().any(|h| cmd.contains(h.as_str()))
            };
            if ours {
                signal(pid, Signal::SIGKILL);
            }
        }
    }

    /// The tails of every node's log and of the chain's.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_tail(lines))
            .chain([format!(
                "--- chain ---\n{}",
                tail(&self.dir.join("chain.log"), lines)
            )])
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Message slots (kind, target height, shard) of our account that two or more nodes signed,
/// identically or not: two key holders signing the same message slot. This is the strict bar
/// (beside [`neard_sim::ledger::Report::conflicting`]). The oracle's per-height
/// `double_signed` also counts a height at which one node signed one kind of message and
/// another node another kind, which an honest hand-over does (the old leader's endorsement of
/// target `H + 1`, then the new leader's block at `H + 1`, which Lemma 3 of docs/failover.md
/// allows), so it is reported, not failed on.
///
/// Left out: skips that a node signed again after the node that signed them first had
/// stopped ([`resigned_skips`]).
pub fn two_node_slots(
    report: &neard_sim::ledger::Report,
) -> Vec<(neard_sim::ledger::Slot, BTreeSet<String>)> {
    let resigned: BTreeSet<_> = resigned_skips(report).into_iter().map(|(s, _)| s).collect();
    slots_by_nodes(report)
        .into_iter()
        .filter(|(slot, n)| n.len() >= 2 && !resigned.contains(slot))
        .collect()
}

/// How long before a slot's first signature and after its last [`resigned_skips`] checks that the signers took
/// turns. Two key holders signing at once alternate within one skip period (a few hundred ms
/// on the sped-up timers, 2 s to 6 s on neard's).
pub const TURNS_WINDOW_MS: u64 = 6_000;

/// Skip approvals signed by two nodes *in turn*: every signature of our account from
/// [`TURNS_WINDOW_MS`] before the slot's first signature to as long after its last is by one
/// node, then by the next, never back. This is what a neard started with the key does after the previous key
/// holder stopped: nearcore's doomslug sends a skip for each height above its tip on the skip
/// timer, whatever targets it (or anyone) approved before, so a restarted neard on a stalled
/// chain re-sends the skips the previous one sent (identical messages), and on a newer tip
/// skips from that tip (docs/failover.md, Lemma 3). Slots with an endorsement are never
/// included (an endorsement and another approval for one target conflict), nor are blocks
/// and chunks. Reported in the bench; not a failure.
pub fn resigned_skips(
    report: &neard_sim::ledger::Report,
) -> Vec<(neard_sim::ledger::Slot, BTreeSet<String>)> {
    use neard_sim::{blocks::ApprovalInner, ledger::SignedKind};
    let mut out = Vec::new();
    for (slot, nodes) in slots_by_nodes(report) {
        if nodes.len() < 2 || slot.kind != SignedKind::Approval {
            continue;
        }
        let signed: Vec<_> = report.entries.iter().filter(|e| e.slot() == slot).collect();
        if !signed
            .iter()
            .all(|e| matches!(e.approval, Some(ApprovalInner::Skip(_))))
        {
            continue;
        }
        let from = signed
            .iter()
            .map(|e| e.time_ms)
            .min()
            .unwrap_or(0)
            .saturating_sub(TURNS_WINDOW_MS);
        let to = signed.iter().map(|e| e.time_ms).max().unwrap_or(0) + TURNS_WINDOW_MS;
        if in_turns(
            report
                .entries
                .iter()
                .filter(|e| (from..=to).contains(&e.time_ms))
                .map(|e| e.node.as_str()),
        ) {
            out.push((slot, nodes));
        }
    }
    out
}

/// Whether a sequence of signers (in signing order) has each node in one run: `a a b b c`,
/// not `a b a`.
fn in_turns<'a>(signers: impl Iterator<Item = &'a str>) -> bool {
    let mut done = BTreeSet::new();
    let mut current: Option<&str> = None;
    for node in signers {
        if current == Some(node) {
            continue;
        }
        if !done.insert(node) {
            return false;
        }
        current = Some(node);
    }
    true
}

fn slots_by_nodes(
    report: &neard_sim::ledger::Report,
) -> BTreeMap<neard_sim::ledger::Slot, BTreeSet<String>> {
    let mut by_slot: BTreeMap<neard_sim::ledger::Slot, BTreeSet<String>> = BTreeMap::new();
    for e in &report.entries {
        by_slot.entry(e.slot()).or_default().insert(e.node.clone());
    }
    by_slot
}

/// The oracle's bar on a report: no conflicting signature and no message slot signed by two
/// nodes ([`two_node_slots`]).
pub fn check_report(report: &neard_sim::ledger::Report) -> anyhow::Result<()> {
    let conflicts: Vec<String> = report
        .conflicting
        .iter()
        .take(10)
        .map(|c| {
            format!(
                "{} {}{} by {:?}",
                c.slot.kind.name(),
                c.slot.height,
                c.slot
                    .shard
                    .map_or(String::new(), |s| format!(" shard {s}")),
                c.nodes
            )
        })
        .collect();
    anyhow::ensure!(
        report.conflicting.is_empty(),
        "{} conflicting signatures: {conflicts:?}",
        report.conflicting.len()
    );
    let twice = two_node_slots(report);
    anyhow::ensure!(
        twice.is_empty(),
        "message slots signed by two nodes: {:?}",
        twice.iter().take(10).collect::<Vec<_>>()
    );
    Ok(())
}

/// Starts `cmd` with its output to `<dir>/<name>.log`.
fn spawn_logged(dir: &Path, name: &str, mut cmd: Command) -> anyhow::Result<OwnedChild> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(OwnedChild::new(child))
}

/// The last `n` lines of the file at `path` (empty when unreadable).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                c.kill();
            }
            n.agent.signal(Signal::SIGCONT);
        }
        self.kill_orphans();
    }
}

impl Node {
    /// Starts kuutamod (in the host's namespace, if any) as the leader of its own process
    /// group, output appended to the node's log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match &self.host.netns {
            // `ip netns exec` execs the program: the pid stays kuutamod's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("CREDENTIALS_DIRECTORY")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start kuutamod")?;
        self.child = Some(OwnedChild::new(child));
        Ok(())
    }

    /// kuutamod's pid (also its process group), while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(OwnedChild::pid)
    }

    /// Sends `sig` to kuutamod.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// Sends `sig` to kuutamod's process group (`kill -SIG -<pgid>`).
    pub fn signal_group(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal(-pid, sig);
        }
    }

    /// Whether kuutamod has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(OwnedChild::exited)
    }

    /// Waits for kuutamod to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("kuutamod is not running")?;
        let status = wait::until(limit, "kuutamod to exit", || {
            child.try_status().ok_or("running")
        })?;
        self.child = None;
        Ok(status)
    }

    /// Stops kuutamod gracefully (SIGCONT, SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop();
        }
    }

    /// SIGKILLs kuutamod and forgets it (its neard may live on: that is the point).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Sets an environment variable for this node's next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// The Prometheus metrics, as `name{labels}` -> value.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let body = http_get(&format!("http://{}/metrics", self.exporter))?;
        Ok(parse_metrics(&body))
    }

    /// The sum of every series of metric `name` (all label values), or an error when the
    /// exporter does not answer.
    pub fn metric_sum(&self, name: &str) -> Result<f64, String> {
        let m = self.metrics()?;
        Ok(m.iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum())
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

    /// pid of kuutamod's fencing process (`kuutamod-guard`), if it runs.
    pub fn guard_pid(&self) -> Option<i32> {
        guard_of(self.pid()?)
    }

    /// Whether the validator key file is in neard's home.
    pub fn has_validator_key(&self) -> bool {
        self.home.join("validator_key.json").exists()
    }

    /// Sets the simulator's fault knobs.
    pub fn control(&self, control: &neard_sim::control::Control) -> anyhow::Result<()> {
        control.write(&self.home.join("neard-sim-control.json"))?;
        Ok(())
    }

    /// kuutamod's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of kuutamod's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
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

#[cfg(test)]
mod tests {
    use super::*;
    use neard_sim::ledger::{Entry, SignedKind};

    fn signed(node: &str, height: u64, kind: SignedKind, content: &str) -> Entry {
        Entry {
            height,
            node: node.into(),
            account: "a".into(),
            public_key: "k".into(),
            time_ms: height,
            kind: Some(kind),
            approval: None,
            shard: None,
            parent_hash: None,
            parent_height: None,
            content: Some(content.into()),
        }
    }

    fn skip(node: &str, target: u64, parent: u64, time_ms: u64) -> Entry {
        Entry {
            time_ms,
            approval: Some(neard_sim::blocks::ApprovalInner::Skip(parent)),
            ..signed(
                node,
                target,
                SignedKind::Approval,
                &format!("skip{target}-{parent}"),
            )
        }
    }

    #[test]
    fn skips_re_signed_in_turn_pass_skips_signed_at_once_fail() {
        // The old leader skipped 12 and 13 from tip 10 and died; the new one, started with
        // the key on the same stalled tip, skips 12, 13 (identical) and 14.
        let in_turn = neard_sim::ledger::analyze(
            &[
                skip("old", 12, 10, 1_000),
                skip("old", 13, 10, 1_200),
                skip("new", 12, 10, 5_000),
                skip("new", 13, 10, 5_200),
                skip("new", 14, 10, 5_400),
            ],
            "a",
        );
        assert_eq!(resigned_skips(&in_turn).len(), 2);
        assert!(two_node_slots(&in_turn).is_empty());
        assert!(check_report(&in_turn).is_ok());
        // Two key holders on one stalled tip: the same skips, alternating.
        let at_once = neard_sim::ledger::analyze(
            &[
                skip("old", 12, 10, 1_000),
                skip("new", 12, 10, 1_050),
                skip("old", 13, 10, 1_200),
                skip("new", 13, 10, 1_250),
            ],
            "a",
        );
        assert!(resigned_skips(&at_once).is_empty());
        assert_eq!(two_node_slots(&at_once).len(), 2);
        assert!(check_report(&at_once).is_err());
        // The old leader signs again (within the window) after the new one began: not in turn.
        let back = neard_sim::ledger::analyze(
            &[
                skip("old", 12, 10, 1_000),
                skip("new", 12, 10, 5_000),
                skip("old", 13, 10, 5_000 + TURNS_WINDOW_MS),
            ],
            "a",
        );
        assert!(check_report(&back).is_err());
        // An endorsement signed by two nodes in turn is no re-sent skip.
        let endorsed = neard_sim::ledger::analyze(
            &[
                Entry {
                    approval: Some(neard_sim::blocks::ApprovalInner::Endorsement("h".into())),
                    time_ms: 1_000,
                    ..signed("old", 11, SignedKind::Approval, "e11")
                },
                Entry {
                    approval: Some(neard_sim::blocks::ApprovalInner::Endorsement("h".into())),
                    time_ms: 5_000,
                    ..signed("new", 11, SignedKind::Approval, "e11")
                },
            ],
            "a",
        );
        assert!(resigned_skips(&endorsed).is_empty());
        assert!(check_report(&endorsed).is_err());
    }

    #[test]
    fn a_slot_signed_by_two_nodes_fails_an_approval_and_a_block_at_one_height_do_not() {
        // A hand-over: the old leader endorsed target 73, the new one produced block 73.
        let handover = neard_sim::ledger::analyze(
            &[
                signed("old", 73, SignedKind::Approval, "e73"),
                signed("new", 73, SignedKind::Block, "b73"),
            ],
            "a",
        );
        assert_eq!(
            handover.double_signed.len(),
            1,
            "the per-height count sees it"
        );
        assert!(two_node_slots(&handover).is_empty());
        assert!(check_report(&handover).is_ok());
        // The same approval signed by both (identical): two key holders signed one message.
        let twice = neard_sim::ledger::analyze(
            &[
                signed("old", 90, SignedKind::Approval, "s90"),
                signed("new", 90, SignedKind::Approval, "s90"),
            ],
            "a",
        );
        assert_eq!(two_node_slots(&twice).len(), 1);
        assert!(check_report(&twice).is_err());
        // Two different blocks at one height by one node: a conflict.
        let conflict = neard_sim::ledger::analyze(
            &[
                signed("one", 5, SignedKind::Block, "x"),
                signed("one", 5, SignedKind::Block, "y"),
            ],
            "a",
        );
        assert!(two_node_slots(&conflict).is_empty());
        assert!(check_report(&conflict).is_err());
    }
}
