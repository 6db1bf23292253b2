//! What to build: the node count, hosts, Consul servers, every node's timing and failover
//! mode, the chain the nodes join, and environment for every node or one node.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::netns::Host;

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

/// The lock store the nodes use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Consul: servers, and a client agent per node.
    Consul,
    /// etcd: `servers` members (1 or 3) from `bin` (`None`: [`crate::etcd::etcd_bin`]); each
    /// node talks to one member, the one on its host where there is one.
    Etcd {
        /// The etcd binary.
        bin: Option<PathBuf>,
    },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The lock store.
    pub backend: Backend,
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
    /// Per node index: how far (ms, signed) its kuutamod's wall clock is off
    /// ([`Spec::node_clock`]).
    pub node_clock: BTreeMap<usize, i64>,
    /// The kuutamod binary; `None`: [`kuutamod_bin`](crate::procs::kuutamod_bin) (beside the running executable).
    pub kuutamod_bin: Option<PathBuf>,
    /// The chain the nodes join.
    pub chain: ChainOpts,
    /// The kuutamoctl binary; `None`: [`kuutamoctl_bin`](crate::procs::kuutamoctl_bin) (beside the running executable).
    pub kuutamoctl_bin: Option<PathBuf>,
}

impl Spec {
    /// `nodes` nodes on loopback against one dev server, each with its own client agent.
    pub fn new(nodes: usize, account: &str, opts: Opts) -> Spec {
        Spec {
            backend: Backend::Consul,
            dir: None,
            account: account.into(),
            nodes,
            hosts: Vec::new(),
            servers: 1,
            server_ips: vec![IpAddr::from([127, 0, 0, 1])],
            opts,
            env: Vec::new(),
            node_env: BTreeMap::new(),
            node_clock: BTreeMap::new(),
            kuutamod_bin: None,
            chain: ChainOpts::live(),
            kuutamoctl_bin: None,
        }
    }

    /// The same on etcd members run from `bin` (`None`: `$ETCD_BIN` or `etcd` on PATH).
    pub fn etcd(self, bin: Option<PathBuf>) -> Spec {
        Spec {
            backend: Backend::Etcd { bin },
            ..self
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

    /// Runs node `i`'s kuutamod (and its guard, not its neard) with a wall clock `offset_ms`
    /// off the host's, through libfaketime (Debian's `faketime` package; the cluster fails to
    /// start without it): `CLOCK_REALTIME` only, monotonic and boot-time clocks stay true.
    pub fn node_clock(mut self, i: usize, offset_ms: i64) -> Spec {
        self.node_clock.insert(i, offset_ms);
        self
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
