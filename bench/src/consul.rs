//! Real Consul agents on ports chosen per cluster: one dev server or three servers, and one
//! client agent per kuutamod host (production's topology: kuutamod talks to its local agent,
//! the agent to the servers). An agent can be signalled, stopped gracefully (a client agent
//! *leaves*, deregistering its node), killed, and started again with the same name, ports and
//! data directory.
//!
//! The same handle runs an etcd member ([`Role::Etcd`]) for kuutamod's etcd backend: its
//! command line, readiness and leader are etcd's own (`crate::etcd`); [`Servers::start_etcd`]
//! starts one member or a three-member cluster, each where the cluster builder places it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::procs::{free_port_on, signal, OwnedChild};
use crate::wait;

/// Shortest session TTL the servers accept (the default floor is 10 s; the scenarios run
/// with 3 s).
const SESSION_TTL_MIN: &str = "session_ttl_min = \"1s\"";

/// Raft timing of the server cluster: multiplier 1 is Consul's production recommendation
/// (the default 5 is for tiny development VMs) and elects a new leader within ~2 s.
const RAFT_TIMING: &str = "performance { raft_multiplier = 1 }";

/// How long agents may take to come up, join and elect a leader.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// How long a gracefully stopped agent may take to leave and exit.
const LEAVE_LIMIT: Duration = Duration::from_secs(15);

/// Starts of one agent before its start-up failures are an error.
const START_TRIES: usize = 3;

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
    /// Not Consul: an etcd member of the cluster `initial_cluster` (`name=peer-url,...`), run
    /// from `bin`. Its client port is [`Ports::http`], its peer port [`Ports::server`].
    Etcd {
        /// etcd's `--initial-cluster`.
        initial_cluster: String,
        /// The etcd binary.
        bin: PathBuf,
    },
}

/// The ports of one agent, chosen per cluster.
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
    /// Free ports on `ip`; for an address of another namespace (where every port is free),
    /// the root namespace's loopback stands in for the choice.
    pub fn pick(ip: IpAddr) -> Ports {
        let ip = if std::net::TcpListener::bind((ip, 0)).is_ok() {
            ip
        } else {
            IpAddr::from([127, 0, 0, 1])
        };
        Ports {
            http: free_port_on(ip),
            serf_lan: free_port_on(ip),
            serf_wan: free_port_on(ip),
            server: free_port_on(ip),
        }
    }
}

/// Everything needed to start (and start again) one agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Node name.
    pub name: String,
    /// Server or client.
    pub role: Role,
    /// Bind (gossip and RPC) address.
    pub bind: IpAddr,
    /// Addresses the HTTP API listens on (never 0.0.0.0).
    pub http_addrs: Vec<IpAddr>,
    /// Its ports.
    pub ports: Ports,
    /// Network namespace to run in, if any.
    pub netns: Option<String>,
    /// Data directory and log live here.
    pub dir: PathBuf,
    /// More of Consul's configuration, one `-hcl` each (ACLs, for instance).
    pub hcl: Vec<String>,
    /// The token the harness's own requests to the agent carry (with ACLs on).
    pub token: Option<String>,
}

/// A running (or stopped) agent; killed on drop.
pub struct Agent {
    /// How it was started.
    pub spec: AgentSpec,
    /// `http://<bind>:<http>`, reachable from the harness.
    pub url: String,
    /// Its log (appended to across restarts).
    pub log: PathBuf,
    child: Option<OwnedChild>,
}

impl Agent {
    /// Starts an agent.
    pub fn start(spec: AgentSpec) -> anyhow::Result<Agent> {
        let kind = if spec.is_etcd() { "etcd" } else { "consul" };
        let mut agent = Agent {
            url: format!("http://{}:{}", spec.bind, spec.ports.http),
            log: spec.dir.join(format!("{kind}-{}.log", spec.name)),
            spec,
            child: None,
        };
        agent.launch()?;
        Ok(agent)
    }

    /// Waits until the agent is ready; if it exited at start (a port another process took
    /// between the choice and the bind, TCP or UDP), picks new ports and starts it again, up
    /// to [`START_TRIES`] times. Only for agents whose ports nobody else was told yet.
    pub fn ready_or_repick(&mut self, limit: Duration) -> anyhow::Result<()> {
        let mut tries = 1;
        loop {
            match self.wait_ready(limit) {
                Err(e) if !self.running() && tries < START_TRIES => {
                    eprintln!(
                        "consul agent {} failed to start ({e:#}); new ports",
                        self.spec.name
                    );
                    tries += 1;
                    self.spec.ports = Ports::pick(self.spec.bind);
                    self.url = format!("http://{}:{}", self.spec.bind, self.spec.ports.http);
                    self.launch()?;
                }
                other => return other,
            }
        }
    }

    /// Starts the process again (same name, ports, data directory) if it is not running.
    pub fn launch(&mut self) -> anyhow::Result<()> {
        if self.running() {
            return Ok(());
        }
        let s = &self.spec;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        if let Role::Etcd {
            initial_cluster,
            bin,
        } = &s.role
        {
            let data = s.dir.join(format!("etcd-{}", s.name));
            let child = crate::etcd::command(s, bin, initial_cluster, &data)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("cannot start etcd ({})", bin.display()))?;
            self.child = Some(OwnedChild::new(child));
            return Ok(());
        }
        let data = s.dir.join(format!("consul-{}", s.name));
        std::fs::create_dir_all(&data)?;
        let http = s
            .http_addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = match &s.netns {
            // `ip netns exec` execs consul: the pid stays the agent's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(consul_bin()?);
                c
            }
            None => Command::new(consul_bin()?),
        };
        cmd.arg("agent")
            .arg(format!("-node={}", s.name))
            .arg(format!("-bind={}", s.bind))
            .arg(format!("-client={http}"))
            .arg(format!("-http-port={}", s.ports.http))
            .arg(format!("-serf-lan-port={}", s.ports.serf_lan))
            .arg(format!("-serf-wan-port={}", s.ports.serf_wan))
            .arg(format!("-server-port={}", s.ports.server))
            .args(["-dns-port=-1", "-grpc-port=-1", "-log-level=info"])
            .args(["-hcl", SESSION_TTL_MIN])
            .arg(format!("-data-dir={}", data.display()));
        for h in &s.hcl {
            cmd.args(["-hcl", h]);
        }
        match &s.role {
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
            Role::Etcd { .. } => unreachable!("started above"),
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot start consul")?;
        self.child = Some(OwnedChild::new(child));
        Ok(())
    }

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| !c.exited())
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(OwnedChild::pid)
    }

    /// Sends `sig` (SIGSTOP, SIGCONT, ...).
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// SIGKILL: the agent *fails* (its node stays registered; sessions live on).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// SIGTERM and wait for the exit: a client agent *leaves* (its node is deregistered and
    /// every session of the node invalidated).
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        signal(pid, Signal::SIGCONT);
        signal(pid, Signal::SIGTERM);
        let name = self.spec.name.clone();
        let child = self.child.as_mut().context("agent")?;
        wait::until(LEAVE_LIMIT, &format!("agent {name} to leave"), || {
            if child.exited() {
                Ok(())
            } else {
                Err("running")
            }
        })?;
        self.child = None;
        Ok(())
    }

    /// The Raft leader this agent knows (`ip:server-port`; an etcd member: the leader's member
    /// id), if any.
    pub fn leader(&self) -> Result<String, String> {
        if self.spec.is_etcd() {
            let (_, leader) = crate::etcd::member_and_leader(&self.url)?;
            return if leader.is_empty() || leader == "0" || leader == "null" {
                Err("no leader".into())
            } else {
                Ok(leader)
            };
        }
        let body = http_get(&format!("{}/v1/status/leader", self.url))?;
        let leader = body.trim().trim_matches('"').to_string();
        if leader.is_empty() {
            Err("no leader".into())
        } else {
            Ok(leader)
        }
    }

    /// Waits until this agent serves KV writes and, for a client, its node is in the catalog
    /// (a session can be created on it); fails at once if the agent exited.
    pub fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let client = matches!(self.spec.role, Role::Client { .. });
        let etcd = self.spec.is_etcd();
        let node = format!("{}/v1/catalog/node/{}", self.url, self.spec.name);
        let name = self.spec.name.clone();
        let token = self.spec.token.clone();
        let child = self.child.as_mut().context("agent not started")?;
        let exited = std::cell::Cell::new(false);
        let agent_url = self.url.clone();
        let me = |path: &str| format!("{agent_url}{path}");
        let r = wait::until(
            limit,
            &format!("lock-store process {name} to serve writes"),
            || {
                if exited.get() || child.exited() {
                    exited.set(true);
                    return Ok(());
                }
                if etcd {
                    return crate::etcd::healthy(&agent_url);
                }
                let token = token.as_deref();
                http_get_with(&me("/v1/status/leader"), token).and_then(|l| {
                    if l.trim().trim_matches('"').is_empty() {
                        Err("no leader".into())
                    } else {
                        Ok(())
                    }
                })?;
                http_put_with(&me("/v1/kv/kuutamod-bench/ready"), "1", token)?;
                if client && http_get_with(&node, token)?.trim() == "null" {
                    return Err("node not in the catalog yet".to_string());
                }
                Ok(())
            },
        )
        .with_context(|| format!("see {}", self.log.display()));
        if exited.get() {
            anyhow::bail!(
                "lock-store process {name} exited at start; see {}",
                self.log.display()
            );
        }
        r
    }
}

impl AgentSpec {
    /// Whether this is an etcd member.
    pub fn is_etcd(&self) -> bool {
        matches!(self.role, Role::Etcd { .. })
    }
}

/// The Consul servers of one cluster: a dev agent, or three servers (or, for the etcd
/// backend, its members).
pub struct Servers {
    /// The servers.
    pub agents: Vec<Agent>,
}

impl Servers {
    /// Starts `count` servers (1: a dev agent; 3: a Raft cluster) bound to `ips` (one each; on
    /// loopback they may repeat) and waits for a leader.
    pub fn start(count: usize, ips: &[IpAddr], dir: &Path) -> anyhow::Result<Servers> {
        anyhow::ensure!(
            count == 1 || count == 3,
            "1 or 3 Consul servers, not {count}"
        );
        let ips: Vec<IpAddr> = (0..count).map(|i| ips[i % ips.len()]).collect();
        let ports: Vec<Ports> = ips.iter().map(|ip| Ports::pick(*ip)).collect();
        let lan: Vec<String> = ips
            .iter()
            .zip(&ports)
            .map(|(ip, p)| format!("{ip}:{}", p.serf_lan))
            .collect();
        let mut agents = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let role = if count == 1 {
                Role::Dev
            } else {
                Role::Server {
                    bootstrap_expect: count,
                    join: lan
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, a)| a.clone())
                        .collect(),
                }
            };
            agents.push(Agent::start(AgentSpec {
                name: format!("server{i}"),
                role,
                bind: *ip,
                http_addrs: vec![*ip],
                ports: ports[i],
                netns: None,
                dir: dir.to_path_buf(),
                hcl: Vec::new(),
                token: None,
            })?);
        }
        let mut servers = Servers { agents };
        for a in &mut servers.agents {
            if count == 1 {
                a.ready_or_repick(START_LIMIT)?;
            } else {
                a.wait_ready(START_LIMIT)?;
            }
        }
        Ok(servers)
    }

    /// Starts `count` etcd members (1 or 3) from `bin`, member `i` at `places[i]` (its
    /// address and network namespace), and waits until each is healthy.
    pub fn start_etcd(
        count: usize,
        places: &[(IpAddr, Option<String>)],
        bin: &Path,
        dir: &Path,
    ) -> anyhow::Result<Servers> {
        anyhow::ensure!(count == 1 || count == 3, "1 or 3 etcd members, not {count}");
        let ports: Vec<Ports> = places.iter().map(|(ip, _)| Ports::pick(*ip)).collect();
        let initial_cluster = places
            .iter()
            .zip(&ports)
            .enumerate()
            .map(|(i, ((ip, _), p))| format!("etcd{i}={}", crate::etcd::peer_url(*ip, p.server)))
            .collect::<Vec<_>>()
            .join(",");
        let mut agents = Vec::new();
        for (i, (ip, netns)) in places.iter().enumerate() {
            let mut http_addrs = vec![*ip];
            if netns.is_some() {
                http_addrs.push(IpAddr::from([127, 0, 0, 1]));
            }
            agents.push(Agent::start(AgentSpec {
                name: format!("etcd{i}"),
                role: Role::Etcd {
                    initial_cluster: initial_cluster.clone(),
                    bin: bin.to_path_buf(),
                },
                bind: *ip,
                http_addrs,
                ports: ports[i],
                netns: netns.clone(),
                dir: dir.to_path_buf(),
                hcl: Vec::new(),
                token: None,
            })?);
        }
        let mut servers = Servers { agents };
        for a in &mut servers.agents {
            a.wait_ready(START_LIMIT)?;
        }
        Ok(servers)
    }

    /// Serf LAN addresses of the servers (what a client agent joins).
    pub fn lan(&self) -> Vec<String> {
        self.agents
            .iter()
            .map(|a| format!("{}:{}", a.spec.bind, a.spec.ports.serf_lan))
            .collect()
    }

    /// HTTP URL of the first running server (an outsider's way in).
    pub fn url(&self) -> String {
        self.agents
            .iter()
            .find(|a| a.pid().is_some())
            .unwrap_or(&self.agents[0])
            .url
            .clone()
    }

    /// Index of the current Raft leader.
    pub fn leader(&self) -> Result<usize, String> {
        if self.agents.first().is_some_and(|a| a.spec.is_etcd()) {
            return self.etcd_leader();
        }
        let mut last = String::from("no server answers");
        for s in self.agents.iter().filter(|s| s.pid().is_some()) {
            match s.leader() {
                Ok(addr) => {
                    return self
                        .agents
                        .iter()
                        .position(|x| addr == format!("{}:{}", x.spec.bind, x.spec.ports.server))
                        .ok_or(format!("unknown leader {addr}"))
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Servers {
    /// Index of the etcd member that leads, as the running members say.
    fn etcd_leader(&self) -> Result<usize, String> {
        let mut ids = Vec::new();
        let mut leader = None;
        let mut last = String::from("no member answers");
        for (i, a) in self.agents.iter().enumerate() {
            if a.pid().is_none() {
                continue;
            }
            match crate::etcd::member_and_leader(&a.url) {
                Ok((me, l)) => {
                    ids.push((i, me));
                    if l != "0" && !l.is_empty() {
                        leader = Some(l);
                    }
                }
                Err(e) => last = e,
            }
        }
        let leader = leader.ok_or(last)?;
        ids.into_iter()
            .find(|(_, me)| *me == leader)
            .map(|(i, _)| i)
            .ok_or(format!("leader {leader} is not a running member"))
    }
}

fn client() -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

fn answer(url: &str, resp: reqwest::blocking::Response) -> Result<String, String> {
    let status = resp.status();
    let body = resp.text().map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: {status}: {body}"))
    }
}

/// A blocking GET; any non-2xx status is an error.
pub fn http_get(url: &str) -> Result<String, String> {
    http_get_with(url, None)
}

/// A blocking GET carrying Consul's ACL `token`, if any.
pub fn http_get_with(url: &str, token: Option<&str>) -> Result<String, String> {
    let mut req = client()?.get(url);
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    answer(url, req.send().map_err(|e| e.to_string())?)
}

/// A blocking PUT; any non-2xx status is an error.
pub fn http_put(url: &str, body: &str) -> Result<String, String> {
    http_put_with(url, body, None)
}

/// A blocking PUT carrying Consul's ACL `token`, if any.
pub fn http_put_with(url: &str, body: &str, token: Option<&str>) -> Result<String, String> {
    let mut req = client()?.put(url).body(body.to_string());
    if let Some(t) = token {
        req = req.header("X-Consul-Token", t);
    }
    answer(url, req.send().map_err(|e| e.to_string())?)
}

/// A blocking POST; any non-2xx status is an error.
pub fn http_post(url: &str, body: &str) -> Result<String, String> {
    let resp = client()?
        .post(url)
        .body(body.to_string())
        .send()
        .map_err(|e| e.to_string())?;
    answer(url, resp)
}

/// A blocking DELETE; any non-2xx status is an error.
pub fn http_delete(url: &str) -> Result<String, String> {
    answer(
        url,
        client()?.delete(url).send().map_err(|e| e.to_string())?,
    )
}
