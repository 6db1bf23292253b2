//! The Consul snapshot restore scenarios (18a, 18b): Consul's state rewound under a running
//! cluster, bringing back a *released* record of an earlier term. A node must never take it at
//! its word when it has seen a newer one (its lock memory survives its restart).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use super::measure::{longest_silence, RunResult};
use super::run::{World, OBSERVE_AFTER};
use super::{Scenario, Timing};
use crate::cluster::Cluster;
use crate::procs::now_ms;
use crate::sampler::Sampler;

/// `consul snapshot save|restore <file>` against the cluster's first server.
fn snapshot(cluster: &Cluster, verb: &str, file: &Path) -> anyhow::Result<()> {
    let out = Command::new("consul")
        .args(["snapshot", verb, "-http-addr"])
        .arg(cluster.servers.url())
        .arg(file)
        .output()
        .context("cannot run consul (scripts/bench puts it on PATH)")?;
    anyhow::ensure!(
        out.status.success(),
        "consul snapshot {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl World {
    /// Runs 18a or 18b once.
    pub(super) fn restore(
        &mut self,
        scenario: Scenario,
        dir: &Path,
        mode: &str,
        timing: &Timing,
    ) -> anyhow::Result<RunResult> {
        let spec = self.spec(dir, Self::opts(mode, timing), false);
        let limit = timing.limit();
        let mut cluster = Cluster::start(spec)?;
        cluster.start_all()?;
        let first = cluster.wait_steady(limit).context("steady state")?;
        // A snapshot that holds a released record: the standby stops, then the leader hands
        // over to nobody (SIGTERM fences, releases and exits).
        cluster.nodes[1 - first].stop();
        cluster.nodes[first].stop();
        let snap = cluster.dir.join("released.snap");
        snapshot(&cluster, "save", &snap)?;
        // The cluster runs on, at a newer term; both nodes have seen it.
        cluster.start_all()?;
        let leader = cluster.wait_steady(limit).context("steady state again")?;
        let standby = 1 - leader;
        let sampler = Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_secs(1));
        let mut failures = Vec::new();
        let t0 = now_ms();
        match scenario {
            // The standby stopped across the restore, started right after it.
            Scenario::RestoreStandbyStopped => {
                cluster.nodes[standby].stop();
                snapshot(&cluster, "restore", &snap)?;
                cluster.nodes[standby].start()?;
            }
            // As 18a, and the leader's Consul agent frozen at the restore too (its heartbeats
            // cannot land: it validates on until its lease runs out), thawed after 2 x TTL + 1 s.
            Scenario::RestoreAgentFrozen => {
                cluster.nodes[standby].stop();
                cluster.local_store(leader).signal(Signal::SIGSTOP);
                snapshot(&cluster, "restore", &snap)?;
                cluster.nodes[standby].start()?;
                std::thread::sleep(timing.beyond_ttl());
                cluster.local_store(leader).signal(Signal::SIGCONT);
            }
            other => anyhow::bail!("{} is not a restore scenario", other.name()),
        }
        // The old leader steps down (its heartbeat refused on the rewound key, or its lease
        // run out behind its frozen agent); only then is the recovery worth checking.
        let stepped_down = "kuutamod_step_downs_total";
        let gave_up = cluster.until(limit, "the old leader to step down", || {
            match cluster.nodes[leader].metric_sum(stepped_down) {
                Ok(n) if n >= 1.0 => Ok(()),
                other => Err(other),
            }
        });
        if let Err(e) = gave_up {
            failures.push(format!("{e:#}").lines().next().unwrap_or("").to_string());
        }
        let recovered = cluster
            .until(limit, "exactly one node validating and signing", || {
                let states = cluster.states();
                let v: Vec<usize> = (0..states.len())
                    .filter(|i| states[*i].as_deref() == Ok("Validating"))
                    .collect();
                match v.as_slice() {
                    [one] if cluster.signed_after(*one, t0) => Ok(()),
                    _ => Err(states),
                }
            })
            .is_ok();
        let rewinds = cluster.until(limit, "a node to report the rewound Consul", || {
            let n: f64 = cluster
                .nodes
                .iter()
                .filter_map(|n| n.metric_sum("kuutamod_consul_rewinds_total").ok())
                .sum();
            if n >= 1.0 {
                Ok(())
            } else {
                Err(n)
            }
        });
        if rewinds.is_err() {
            failures
                .push("no node reported the rewound Consul (kuutamod_consul_rewinds_total)".into());
        }
        std::thread::sleep(OBSERVE_AFTER);
        let end = now_ms();
        let timelines = sampler.finish();
        cluster.local_store(leader).signal(Signal::SIGCONT);
        cluster.stop_all();
        let report = cluster.report();
        let mut r = RunResult::empty(scenario, mode);
        r.judge(&report, &timelines);
        r.recovered = recovered;
        r.moved = report
            .entries
            .iter()
            .any(|e| e.node != cluster.nodes[leader].id && e.time_ms > t0 && e.time_ms <= end);
        r.missed =
            neard_sim::chainlog::missed_assigned(&cluster.chain_log(), &cluster.account, t0, end);
        r.silent_ms = longest_silence(&report.entries, t0, end);
        r.failures = failures;
        Ok(r)
    }
}
