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
//!
//! # Layout
//!
//! This file builds a cluster ([`Cluster::start`]) and owns its processes.
//!
//! - `spec`: what to build: [`Spec`], [`Opts`] (timing and failover mode), [`ChainOpts`].
//! - `node`: one node's handle ([`Node`]): start, signal, stop kuutamod; read its metrics,
//!   state, pids and log.
//! - `running`: what tests and scenarios ask of a started cluster: state waits, the ledger and
//!   the chain log, `kuutamoctl`, stopping it.
//! - `oracle`: the bar a ledger must pass: no conflicting signature, no message slot signed by
//!   two nodes ([`two_node_slots`], [`check_report`]), skips re-signed in turn apart
//!   ([`resigned_skips`]).

mod node;
mod oracle;
mod running;
mod spec;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::consul::{Agent, AgentSpec, Ports, Role, Servers, START_LIMIT};
use crate::netns::Host;
use crate::procs::{free_port, kuutamoctl_bin, kuutamod_bin, neard_sim_bin, OwnedChild};
use crate::proxy::Proxy;
use crate::wait;

pub use node::{parse_metrics, state_of, Node};
pub use oracle::{check_report, resigned_skips, two_node_slots, TURNS_WINDOW_MS};
pub use spec::{Backend, ChainOpts, Opts, Spec};

/// The simulator's `--speed-up`: neard's default consensus timers divided by ten (60 ms / 200 ms
/// / 600 ms), for the chain's virtual validators and every node's config.json alike, so that
/// takeovers are measured in heights that matter (the targets are stated for ~100 ms heights)
/// and kuutamod's height fence reads the same timers the chain runs on.
pub const SPEED_UP: u32 = 10;

/// Lines of each log shown when a wait fails.
const LOG_LINES: usize = 40;

/// How long the chain process may take to open its socket.
const CHAIN_START_LIMIT: Duration = Duration::from_secs(20);

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
        let hosts: Vec<Host> = (0..spec.nodes)
            .map(|i| {
                spec.hosts
                    .get(i % spec.hosts.len().max(1))
                    .cloned()
                    .unwrap_or_else(Host::loopback)
            })
            .collect();
        let (servers, agents) = match &spec.backend {
            Backend::Consul => {
                let servers = Servers::start(spec.servers, &spec.server_ips, &dir)?;
                let agents = start_agents(&servers, &hosts, &dir)?;
                (servers, agents.into_iter().map(Some).collect())
            }
            Backend::Etcd { bin } => {
                let bin = match bin {
                    Some(b) => b.clone(),
                    None => crate::etcd::etcd_bin()?,
                };
                (
                    Servers::start_etcd(spec.servers, &etcd_places(&spec), &bin, &dir)?,
                    hosts.iter().map(|_| None).collect::<Vec<_>>(),
                )
            }
        };
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
            // Consul: the node's own client agent, on its host's loopback. etcd: its local
            // member (the one on its host, else one of the others).
            let (member, upstream) = match &agent {
                Some(a) => (
                    None,
                    SocketAddr::new(IpAddr::from([127, 0, 0, 1]), a.spec.ports.http),
                ),
                None => {
                    let m = i % servers.agents.len();
                    let s = &servers.agents[m].spec;
                    let ip = if s.netns.is_some() && s.netns == host.netns {
                        IpAddr::from([127, 0, 0, 1])
                    } else {
                        s.bind
                    };
                    (Some(m), SocketAddr::new(ip, s.ports.http))
                }
            };
            let proxy = Proxy::start(host.netns.as_deref(), upstream)?;
            let consul_url = format!("http://{}", proxy.addr);
            let o = &spec.opts;
            let store_env: Vec<(String, String)> = match member {
                None => vec![("KUUTAMO_CONSUL_URL".into(), consul_url.clone())],
                Some(_) => vec![
                    ("KUUTAMO_LOCK_BACKEND".into(), "etcd".into()),
                    ("KUUTAMO_ETCD_ENDPOINTS".into(), consul_url.clone()),
                ],
            };
            let mut env: Vec<(String, String)> = vec![
                ("KUUTAMO_NODE_ID".into(), id.clone()),
                ("KUUTAMO_ACCOUNT_ID".into(), spec.account.clone()),
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
            env.extend(store_env);
            env.extend(spec.env.iter().cloned());
            env.extend(spec.node_env.get(&i).into_iter().flatten().cloned());
            let wall_offset_ms = spec.node_clock.get(&i).copied().unwrap_or(0);
            if wall_offset_ms != 0 {
                env.extend(faketime_env(wall_offset_ms)?);
            }
            nodes.push(Node {
                log: dir.join(format!("{id}.log")),
                id,
                host,
                agent,
                member,
                proxy,
                consul_url,
                home,
                exporter,
                rpc_port,
                validator_port,
                voter_port,
                bin: bin.clone(),
                env,
                wall_offset_ms,
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
}

/// One Consul client agent per host, each joined to `servers`, waiting until each serves.
fn start_agents(servers: &Servers, hosts: &[Host], dir: &Path) -> anyhow::Result<Vec<Agent>> {
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
            dir: dir.to_path_buf(),
            hcl: Vec::new(),
            token: None,
        })?);
    }
    for a in &mut agents {
        a.ready_or_repick(START_LIMIT)?;
    }
    Ok(agents)
}

/// Where each etcd member runs: member `i` on host `i` of the spec when that host is a network
/// namespace (node `i` lives there too and talks to the member on its own host, as production
/// runs it), else on the servers' addresses (the LAN's, or loopback, where every member has
/// its own ports).
fn etcd_places(spec: &Spec) -> Vec<(IpAddr, Option<String>)> {
    (0..spec.servers)
        .map(|i| match spec.hosts.get(i) {
            Some(h) if h.netns.is_some() => (h.ip, h.netns.clone()),
            _ => (spec.server_ips[i % spec.server_ips.len()], None),
        })
        .collect()
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
            if let Some(a) = &n.agent {
                a.signal(Signal::SIGCONT);
            }
        }
        self.kill_orphans();
    }
}

/// libfaketime's preload library, as Debian's `libfaketime` installs it.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs a program with its wall clock `offset_ms` off through
/// libfaketime: `CLOCK_REALTIME` only (`DONT_FAKE_MONOTONIC`), and not in the neard simulator
/// or the guard it starts (`FAKETIME_SKIP_CMDS`, by `argv[0]`), so that only kuutamod's clock
/// is off. (libfaketime also shifts absolute timer deadlines: the guard's `CLOCK_BOOTTIME`
/// timer would fire ten minutes early or late.)
fn faketime_env(offset_ms: i64) -> anyhow::Result<Vec<(String, String)>> {
    anyhow::ensure!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: a wall-clock offset needs libfaketime (apt-get install faketime)"
    );
    let neard = crate::procs::neard_sim_bin();
    let neard = neard
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(vec![
        ("LD_PRELOAD".into(), LIBFAKETIME.into()),
        ("FAKETIME".into(), format!("{:+}", offset_ms / 1000)),
        ("DONT_FAKE_MONOTONIC".into(), "1".into()),
        (
            "FAKETIME_SKIP_CMDS".into(),
            format!("{neard},kuutamod-guard"),
        ),
    ])
}
