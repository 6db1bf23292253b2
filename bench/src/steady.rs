//! The steady-state row, with kuutamod's DEFAULT timing (TTL 30 s), in the production
//! topology (each node's kuutamod talks to its own Consul client agent): Consul requests per
//! minute per node, leader and standby apart (from `kuutamod_consul_requests_total`, per
//! operation, and independently counted at the proxy in front of the agent), kuutamod's
//! resident memory (VmRSS) and its CPU use in % of one core.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use std::collections::BTreeMap;

use crate::cluster::{Cluster, Node, Opts};
use crate::procs::{cpu_and_rss, CLOCK_TICKS};
use crate::scenario::World;

/// kuutamod's default session TTL (settings.rs), so the row shows production behaviour.
const DEFAULT_TTL: Duration = Duration::from_secs(30);
/// kuutamod's default neard stop grace.
const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// kuutamod's default syncing grace.
const DEFAULT_SYNCING_GRACE: Duration = Duration::from_secs(30);
/// Settling time after the steady state is reached and before counting starts.
const SETTLE: Duration = Duration::from_secs(5);

/// One node's steady-state figures.
#[derive(Debug, Clone, Serialize)]
pub struct NodeSteady {
    /// `leader` or `standby`.
    pub role: String,
    /// From kuutamod_consul_requests_total deltas.
    pub consul_requests_per_min: f64,
    /// The same per operation (`op` label).
    pub per_op_per_min: BTreeMap<String, f64>,
    /// Counted at the proxy (HTTP request lines).
    pub proxy_requests_per_min: f64,
    /// Largest VmRSS seen (kB).
    pub rss_max_kb: u64,
    /// utime + stime over the window, in % of one core.
    pub cpu_percent: f64,
}

/// `kuutamod_consul_requests_total` per `op`.
fn requests_by_op(node: &Node) -> anyhow::Result<BTreeMap<String, f64>> {
    let m = node.metrics().map_err(anyhow::Error::msg)?;
    Ok(m.iter()
        .filter_map(|(k, v)| {
            let op = k.strip_prefix("kuutamod_consul_requests_total{op=\"")?;
            Some((op.trim_end_matches("\"}").to_string(), *v))
        })
        .collect())
}

/// Measures a two-node cluster over `window`.
pub fn measure(world: &mut World, window: Duration, mode: &str) -> anyhow::Result<Vec<NodeSteady>> {
    let dir = world.dir.join(format!("steady-{mode}"));
    let opts = Opts {
        ttl: DEFAULT_TTL,
        stop_grace: DEFAULT_STOP_GRACE,
        syncing_grace: DEFAULT_SYNCING_GRACE,
        failover_mode: mode.into(),
        boot_delay_ms: 1000,
    };
    let mut spec = world.spec(&dir, opts, false);
    spec.account = format!("steady{}{mode}.bench.near", std::process::id()).replace('-', "");
    let mut cluster = Cluster::start(spec)?;
    cluster.start_all()?;
    // The first election of a fresh cluster waits one TTL after the acquisition.
    let leader = cluster.wait_steady(DEFAULT_TTL * 4)?;
    std::thread::sleep(SETTLE);
    let n = cluster.nodes.len();
    let pids: Vec<i32> = cluster
        .nodes
        .iter()
        .map(|x| x.pid().context("kuutamod pid"))
        .collect::<anyhow::Result<_>>()?;
    let req0: Vec<BTreeMap<String, f64>> = cluster
        .nodes
        .iter()
        .map(requests_by_op)
        .collect::<anyhow::Result<_>>()?;
    let prox0: Vec<u64> = cluster.nodes.iter().map(|x| x.proxy.requests()).collect();
    let cpu0: Vec<(u64, u64)> = pids
        .iter()
        .map(|p| cpu_and_rss(*p).unwrap_or((0, 0)))
        .collect();
    let start = Instant::now();
    let mut rss_max = vec![0u64; n];
    while start.elapsed() < window {
        for (i, p) in pids.iter().enumerate() {
            if let Some((_, rss)) = cpu_and_rss(*p) {
                rss_max[i] = rss_max[i].max(rss);
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let secs = start.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for i in 0..n {
        let req1 = requests_by_op(&cluster.nodes[i])?;
        let (cpu1, _) = cpu_and_rss(pids[i]).context("kuutamod exited")?;
        let per_op_per_min: BTreeMap<String, f64> = req1
            .iter()
            .map(|(op, v)| {
                let before = req0[i].get(op).copied().unwrap_or(0.0);
                (op.clone(), (v - before) * 60.0 / secs)
            })
            .filter(|(_, v)| *v > 0.0)
            .collect();
        out.push(NodeSteady {
            role: if i == leader { "leader" } else { "standby" }.into(),
            consul_requests_per_min: per_op_per_min.values().sum(),
            per_op_per_min,
            proxy_requests_per_min: (cluster.nodes[i].proxy.requests() - prox0[i]) as f64 * 60.0
                / secs,
            rss_max_kb: rss_max[i],
            cpu_percent: (cpu1 - cpu0[i].0) as f64 / CLOCK_TICKS as f64 / secs * 100.0,
        });
    }
    cluster.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
