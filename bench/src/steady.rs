//! The steady-state row, with kuutamod's DEFAULT timing (TTL 30 s): Consul requests per
//! minute per node (from `kuutamod_consul_requests_total` and, independently, counted at the
//! proxy), kuutamod's resident memory (VmRSS) and its CPU use in % of one core.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::cluster::{Cluster, Opts};
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
    /// Counted at the proxy (HTTP request lines).
    pub proxy_requests_per_min: f64,
    /// Largest VmRSS seen (kB).
    pub rss_max_kb: u64,
    /// utime + stime over the window, in % of one core.
    pub cpu_percent: f64,
}

fn requests_total(cluster: &Cluster, i: usize) -> anyhow::Result<f64> {
    let m = cluster.nodes[i].metrics().map_err(anyhow::Error::msg)?;
    Ok(m.iter()
        .filter(|(k, _)| k.starts_with("kuutamod_consul_requests_total"))
        .map(|(_, v)| v)
        .sum())
}

/// Measures a two-node cluster over `window`.
pub fn measure(world: &mut World, window: Duration, mode: &str) -> anyhow::Result<Vec<NodeSteady>> {
    let dir = world.dir.join(format!("steady-{mode}"));
    let (proxies, wiring) = world.dev_wiring()?;
    let opts = Opts {
        ttl: DEFAULT_TTL,
        stop_grace: DEFAULT_STOP_GRACE,
        syncing_grace: DEFAULT_SYNCING_GRACE,
        failover_mode: mode.into(),
        boot_delay_ms: 1000,
        account: format!("steady{}{mode}.bench.near", std::process::id()).replace('-', ""),
    };
    let mut cluster = Cluster::new(&dir, &wiring, &opts)?;
    cluster.start_all()?;
    let leader = cluster
        .wait_steady(Duration::from_secs(120))
        .with_context(|| cluster.logs(20))?;
    std::thread::sleep(SETTLE);
    let n = cluster.nodes.len();
    let pids: Vec<i32> = cluster
        .nodes
        .iter()
        .map(|x| x.pid().context("kuutamod pid"))
        .collect::<anyhow::Result<_>>()?;
    let req0: Vec<f64> = (0..n)
        .map(|i| requests_total(&cluster, i))
        .collect::<anyhow::Result<_>>()?;
    let prox0: Vec<u64> = proxies.iter().map(|p| p.requests()).collect();
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
        let req1 = requests_total(&cluster, i)?;
        let (cpu1, _) = cpu_and_rss(pids[i]).context("kuutamod exited")?;
        out.push(NodeSteady {
            role: if i == leader { "leader" } else { "standby" }.into(),
            consul_requests_per_min: (req1 - req0[i]) * 60.0 / secs,
            proxy_requests_per_min: (proxies[i].requests() - prox0[i]) as f64 * 60.0 / secs,
            rss_max_kb: rss_max[i],
            cpu_percent: (cpu1 - cpu0[i].0) as f64 / CLOCK_TICKS as f64 / secs * 100.0,
        });
    }
    cluster.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
