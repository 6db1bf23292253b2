//! Real Consul agents on ports chosen per run: a dev agent, and a three-server cluster on
//! 127.0.0.2, .3 and .4 with one client agent per kuutamod node on .5, .6, ... (how a
//! production host runs: kuutamod talks to its local agent, the agent to the servers).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::procs::{free_port_on, Guard};
use crate::wait;

/// Shortest session TTL the agents accept (the default floor is 10 s; the quick subset runs
/// with 3 s).
const SESSION_TTL_MIN: &str = "session_ttl_min = \"1s\"";

/// Raft timing of the server cluster: multiplier 1 is Consul's production recommendation
/// (the default 5 is for tiny development VMs) and elects a new leader within ~2 s.
const RAFT_TIMING: &str = "performance { raft_multiplier = 1 }";

/// How long agents may take to come up and elect a leader.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Timeout of the harness's own HTTP calls.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// The `consul` binary: `$CONSUL_BIN`, else `consul` on PATH. Missing Consul is an error:
/// the benchmark is about a real Consul (scripts/install-consul.sh fetches one).
pub fn consul_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("CONSUL_BIN") {
        return Ok(p.into());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("consul"))
                .find(|p| p.is_file())
        })
        .context("no `consul` binary: put it on PATH or set CONSUL_BIN (scripts/install-consul.sh fetches one)")
}

/// What an agent is.
#[derive(Debug, Clone)]
pub enum Role {
    /// `-dev`: a single in-memory server.
    Dev,
    /// One of `bootstrap_expect` servers, joining `join` (serf LAN addresses).
    Server {
        /// Number of servers.
        bootstrap_expect: usize,
        /// Serf LAN addresses of the others.
        join: Vec<String>,
    },
    /// A client agent joining `join`.
    Client {
        /// Serf LAN addresses of the servers.
        join: Vec<String>,
    },
}

/// The ports of one agent, chosen per run.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// HTTP API.
    pub http: u16,
    /// Serf LAN gossip.
    pub serf_lan: u16,
    /// Serf WAN gossip.
    pub serf_wan: u16,
    /// Server RPC (Raft).
    pub server: u16,
}

impl Ports {
    /// Free ports on `ip`.
    pub fn pick(ip: IpAddr) -> Ports {
        Ports {
            http: free_port_on(ip),
            serf_lan: free_port_on(ip),
            serf_wan: free_port_on(ip),
            server: free_port_on(ip),
        }
    }
}

/// A running agent, killed on drop.
pub struct Agent {
    /// Node name.
    pub name: String,
    /// Bind address.
    pub ip: IpAddr,
    /// Its ports.
    pub ports: Ports,
    /// `http://<ip>:<http>`.
    pub url: String,
    /// The process (None after [`Agent::kill`]).
    pub guard: Guard,
    /// Its log.
    pub log: PathBuf,
}

impl Agent {
    /// Starts an agent bound to `ip`, its HTTP API also listening on `extra_clients` (the
    /// root-side veth addresses of the namespaces; never 0.0.0.0).
    pub fn start(
        name: &str,
        role: &Role,
        ip: IpAddr,
        ports: Ports,
        extra_clients: &[IpAddr],
        dir: &Path,
    ) -> anyhow::Result<Agent> {
        let data = dir.join(format!("consul-{name}"));
        std::fs::create_dir_all(&data)?;
        let log = dir.join(format!("consul-{name}.log"));
        let out = std::fs::File::create(&log)?;
        let clients = std::iter::once(ip)
            .chain(extra_clients.iter().copied())
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(consul_bin()?);
        cmd.arg("agent")
            .arg(format!("-node={name}"))
            .arg(format!("-bind={ip}"))
            .arg(format!("-client={clients}"))
            .arg(format!("-http-port={}", ports.http))
            .arg(format!("-serf-lan-port={}", ports.serf_lan))
            .arg(format!("-serf-wan-port={}", ports.serf_wan))
            .arg(format!("-server-port={}", ports.server))
            .args(["-dns-port=-1", "-grpc-port=-1", "-log-level=warn"])
            .args(["-hcl", SESSION_TTL_MIN])
            .arg(format!("-data-dir={}", data.display()));
        match role {
            Role::Dev => {
                cmd.arg("-dev");
            }
            Role::Server {
                bootstrap_expect,
                join,
            } => {
                cmd.args(["-server", "-hcl", RAFT_TIMING])
                    .arg(format!("-bootstrap-expect={bootstrap_expect}"));
                for j in join {
                    cmd.arg(format!("-retry-join={j}"));
                }
            }
            Role::Client { join } => {
                for j in join {
                    cmd.arg(format!("-retry-join={j}"));
                }
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start consul")?;
        Ok(Agent {
            name: name.into(),
            ip,
            ports,
            url: format!("http://{ip}:{}", ports.http),
            guard: Guard::new(child),
            log,
        })
    }

    /// The Raft leader this agent knows (`ip:server-port`), if any.
    pub fn leader(&self) -> Result<String, String> {
        let body = http_get(&format!("{}/v1/status/leader", self.url))?;
        let leader = body.trim().trim_matches('"').to_string();
        if leader.is_empty() {
            Err("no leader".into())
        } else {
            Ok(leader)
        }
    }

    /// Waits until this agent knows a leader and serves KV writes.
    pub fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let url = format!("{}/v1/kv/kuutamod-bench/ready", self.url);
        wait::until(
            limit,
            &format!("Consul agent {} to serve writes", self.name),
            || {
                self.leader()?;
                http_put(&url, "1")
            },
        )
        .map(|_| ())
    }
}

/// A dev agent on 127.0.0.1 whose HTTP API also listens on `extra_clients`.
pub fn dev_agent(dir: &Path, extra_clients: &[IpAddr]) -> anyhow::Result<Agent> {
    let ip = IpAddr::from([127, 0, 0, 1]);
    let agent = Agent::start("dev", &Role::Dev, ip, Ports::pick(ip), extra_clients, dir)?;
    agent.wait_ready(START_LIMIT)?;
    Ok(agent)
}

/// Three servers on 127.0.0.2..4 and `clients` client agents on 127.0.0.5.., all joined.
pub struct ServerCluster {
    /// The servers.
    pub servers: Vec<Agent>,
    /// The client agents, one per kuutamod node.
    pub clients: Vec<Agent>,
}

impl ServerCluster {
    /// Starts the servers and clients and waits for a leader and writable KV on every client.
    pub fn start(dir: &Path, clients: usize) -> anyhow::Result<ServerCluster> {
        let ips: Vec<IpAddr> = (2..5u8).map(|i| IpAddr::from([127, 0, 0, i])).collect();
        let ports: Vec<Ports> = ips.iter().map(|ip| Ports::pick(*ip)).collect();
        let lan: Vec<String> = ips
            .iter()
            .zip(&ports)
            .map(|(ip, p)| format!("{ip}:{}", p.serf_lan))
            .collect();
        let mut servers = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let join = lan
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.clone())
                .collect();
            let role = Role::Server {
                bootstrap_expect: ips.len(),
                join,
            };
            servers.push(Agent::start(
                &format!("server{i}"),
                &role,
                *ip,
                ports[i],
                &[],
                dir,
            )?);
        }
        let mut agents = Vec::new();
        for i in 0..clients {
            let ip = IpAddr::from([127, 0, 0, 5 + i as u8]);
            let role = Role::Client { join: lan.clone() };
            agents.push(Agent::start(
                &format!("client{i}"),
                &role,
                ip,
                Ports::pick(ip),
                &[],
                dir,
            )?);
        }
        let cluster = ServerCluster {
            servers,
            clients: agents,
        };
        for a in cluster.servers.iter().chain(&cluster.clients) {
            a.wait_ready(START_LIMIT)?;
        }
        Ok(cluster)
    }

    /// Index of the current Raft leader among the servers.
    pub fn leader(&self) -> Result<usize, String> {
        let mut last = String::new();
        for s in self.servers.iter().filter(|s| s.guard.pid().is_some()) {
            match s.leader() {
                Ok(addr) => {
                    return self
                        .servers
                        .iter()
                        .position(|x| addr == format!("{}:{}", x.ip, x.ports.server))
                        .ok_or(format!("unknown leader {addr}"))
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn client() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// A blocking GET; any non-2xx status is an error.
pub fn http_get(url: &str) -> Result<String, String> {
    let resp = client()?.get(url).send().map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: {status}: {body}"))
    }
}

/// A blocking PUT; any non-2xx status is an error.
pub fn http_put(url: &str, body: &str) -> Result<String, String> {
    let resp = client()?
        .put(url)
        .body(body.to_string())
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{url}: {status}: {text}"))
    }
}
