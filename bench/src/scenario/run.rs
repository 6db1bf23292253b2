//! One run of a scenario: a fresh cluster, a steady state, the fault at `t0`, the wait until
//! exactly one node validates and signs again, a little longer to watch, and the oracle's
//! verdict on the ledger, the chain log and the sampler's timelines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::inject::{inject, thaw, Fault};
use super::measure::{longest_silence, longest_stall, signing_gap, RunResult};
use super::{Scenario, Timing};
use crate::cluster::{Backend, Cluster, Opts, Spec};
use crate::netns::Lan;
use crate::procs::now_ms;
use crate::sampler::Sampler;

/// Time to watch after recovery, so a signer left behind by the fault shows in the ledger.
pub(super) const OBSERVE_AFTER: Duration = Duration::from_secs(2);

/// Steady state observed before the fault (a baseline for the sampler).
const BASELINE: Duration = Duration::from_secs(1);

/// How long the offline virtual validator of 14a/b is out before the fault, so that our
/// leader has signed skips over its heights (tens of heights at ~60 ms).
const SKIPS_BEFORE: Duration = Duration::from_secs(2);

/// The virtual validator 14a/b take offline.
const OFFLINE_VALIDATOR: &str = "v1";

/// The signing gap of a hot-swap switchover stated as the target (median).
const SWITCHOVER_GAP_TARGET: Duration = Duration::from_millis(300);

/// How long a node with a bad configuration may take to refuse to start.
const REFUSE_LIMIT: Duration = Duration::from_secs(10);

/// What all runs share: the base directory and, when enabled, the LAN of namespaces.
pub struct World {
    /// Base directory of all runs.
    pub dir: PathBuf,
    /// The LAN (none without namespaces).
    pub lan: Option<Lan>,
    /// The lock store every run's cluster uses.
    pub backend: Backend,
    runs: usize,
}

/// Hosts on the LAN: two nodes in most scenarios, three in 17d.
const SLOTS: u8 = 3;

/// Nodes of a scenario's cluster, unless it says otherwise.
const NODES: usize = 2;

impl World {
    /// Creates the LAN with `use_netns` (failing loudly when namespaces or nft are
    /// unavailable).
    pub fn new(dir: &Path, use_netns: bool, backend: Backend) -> anyhow::Result<World> {
        let lan = if use_netns {
            Some(Lan::create(SLOTS).context(
                "network namespaces (run as root with iproute2 and nftables, or pass --no-netns to skip partitions)",
            )?)
        } else {
            None
        };
        Ok(World {
            dir: dir.to_path_buf(),
            lan,
            backend,
            runs: 0,
        })
    }

    fn next_dir(&mut self, name: &str, mode: &str) -> PathBuf {
        self.runs += 1;
        self.dir.join(format!("run{:03}-{name}-{mode}", self.runs))
    }

    /// The cluster of a run in `dir`: two nodes on the LAN's hosts (or loopback), one Consul
    /// server (three for `three_servers`) or three etcd members, a fresh account.
    pub fn spec(&self, dir: &Path, opts: Opts, three_servers: bool) -> Spec {
        self.spec_of(dir, opts, three_servers, NODES)
    }

    /// [`World::spec`] with `nodes` nodes.
    pub fn spec_of(&self, dir: &Path, opts: Opts, three_servers: bool, nodes: usize) -> Spec {
        let tag = dir
            .file_name()
            .map(|n| n.to_string_lossy().replace(['-', '_'], ""))
            .unwrap_or_default();
        let mut spec = Spec::new(
            nodes,
            &format!("{tag}{}.bench.near", std::process::id()),
            opts,
        );
        spec.dir = Some(dir.to_path_buf());
        if three_servers {
            spec.servers = 3;
        }
        // etcd: always three members, one on each of the LAN's hosts (kuutamod talks to the
        // member on its own host).
        if self.backend != Backend::Consul {
            spec.backend = self.backend.clone();
            spec.servers = 3;
        }
        if let Some(lan) = &self.lan {
            spec.hosts = lan.hosts.clone();
            spec.server_ips = lan.server_ips.clone();
        }
        spec
    }

    /// Runs `scenario` once in `mode`.
    pub fn run(&mut self, scenario: Scenario, mode: &str, timing: &Timing) -> Vec<RunResult> {
        let dir = self.next_dir(scenario.name(), mode);
        let result = match scenario {
            Scenario::ElectionRace => self.election_race(&dir, mode, timing),
            Scenario::WrongAccount => self.wrong_account(&dir, mode, timing).map(|r| vec![r]),
            s if s.operator() => self.operator(s, &dir, mode, timing).map(|r| vec![r]),
            s if s.restore() => self.restore(s, &dir, mode, timing).map(|r| vec![r]),
            _ => self.run_one(scenario, &dir, mode, timing).map(|r| vec![r]),
        };
        let mut results = result.unwrap_or_else(|e| {
            let mut r = RunResult::empty(scenario, mode);
            r.error = Some(format!("{e:#}"));
            vec![r]
        });
        // KUUTAMOD_BENCH_KEEP=1 keeps every run's logs, for a closer look at one that passed.
        let keep = results.iter().any(|r| !r.passed())
            || std::env::var_os("KUUTAMOD_BENCH_KEEP").is_some();
        for r in &mut results {
            if keep {
                r.kept = Some(dir.clone());
            }
        }
        if !keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        results
    }

    pub(super) fn opts(mode: &str, timing: &Timing) -> Opts {
        Opts {
            ttl: timing.ttl,
            stop_grace: timing.stop_grace,
            syncing_grace: timing.syncing_grace,
            failover_mode: mode.into(),
            boot_delay_ms: timing.boot_delay_ms,
        }
    }

    fn run_one(
        &mut self,
        scenario: Scenario,
        dir: &Path,
        mode: &str,
        timing: &Timing,
    ) -> anyhow::Result<RunResult> {
        anyhow::ensure!(
            !scenario.needs_netns() || self.lan.is_some(),
            "{} needs network namespaces",
            scenario.name()
        );
        let limit = timing.limit_of(scenario);
        let mut spec = self.spec(
            dir,
            Self::opts(mode, timing),
            scenario.needs_three_servers(),
        );
        if scenario.stall_chain() {
            spec = spec.stall_chain();
        }
        if scenario == Scenario::PriorityZero {
            spec = spec.node_env(1, "KUUTAMO_PRIORITY", "0");
        }
        if scenario == Scenario::PromotingSyncs {
            // The doppelganger check takes the old leader's last block, produced just before
            // the deletion, for a signer outside the cluster (nobody holds the key then) and
            // holds both nodes back for its silent heights: 11c shows that; here it would
            // hide the promotion this scenario is about.
            for i in 0..NODES {
                spec = spec.node_env(i, "KUUTAMO_DOPPELGANGER_HEIGHTS", "0");
            }
        }
        if scenario == Scenario::SameNodeId {
            spec = spec.node_env(1, "KUUTAMO_NODE_ID", "node0");
        }
        if scenario.node0_clock() != 0 {
            spec = spec.node_clock(0, scenario.node0_clock());
        }
        let mut cluster = Cluster::start(spec)?;
        if scenario.node0_leads() {
            cluster.nodes[0].start()?;
            cluster.wait_for_signing(0, 0, limit)?;
            cluster.nodes[1].start()?;
        } else {
            cluster.start_all()?;
        }
        let leader = cluster
            .wait_steady(limit)
            .context("steady state before the fault")?;
        let standby = 1 - leader;
        let sampler = Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
        std::thread::sleep(BASELINE);
        if matches!(
            scenario,
            Scenario::SkipsNeardKill | Scenario::SkipsKuutamodKill
        ) {
            // The leader approves skips over the offline validator's heights from here on.
            cluster.set_offline(&[OFFLINE_VALIDATOR])?;
            std::thread::sleep(SKIPS_BEFORE);
        }
        let t0 = now_ms();
        let observed = inject(
            scenario,
            Fault {
                cluster: &mut cluster,
                leader,
                standby,
                t0,
                timing,
                mode,
            },
        )?;
        let heal = now_ms();
        let recovered = cluster
            .until(
                limit,
                "exactly one node validating and signing again",
                || {
                    let states = cluster.states();
                    let validating: Vec<usize> = (0..states.len())
                        .filter(|i| states[*i].as_deref() == Ok("Validating"))
                        .collect();
                    match validating.as_slice() {
                        [one] if cluster.signed_after(*one, heal) => Ok(()),
                        _ => Err(states),
                    }
                },
            )
            .is_ok();
        std::thread::sleep(OBSERVE_AFTER);
        let end = now_ms();
        let timelines = sampler.finish();
        thaw(&cluster, leader);
        cluster.stop_all();
        let report = cluster.report();
        let old = &cluster.nodes[leader].id;
        // What was signed before the teardown: stopping the nodes one by one hands the lock
        // over too (CI saw 6-standby-partition "move" when the healed standby took the lock
        // from the leader stopped first).
        let observed_entries: Vec<_> = report
            .entries
            .iter()
            .filter(|e| e.time_ms <= end)
            .cloned()
            .collect();
        let takeover = observed_entries
            .iter()
            .filter(|e| &e.node != old && e.time_ms > t0)
            .map(|e| e.time_ms - t0)
            .min();
        let mut r = RunResult::empty(scenario, mode);
        r.takeover_ms = takeover;
        r.moved = takeover.is_some();
        r.gap_ms = signing_gap(&observed_entries, old, t0);
        let chain = cluster.chain_log();
        r.missed = neard_sim::chainlog::missed_assigned(&chain, &cluster.account, t0, end);
        r.stall_ms = longest_stall(&chain, t0, end);
        r.silent_ms = longest_silence(&report.entries, t0, end);
        r.judge(&report, &timelines);
        r.recovered = recovered;
        r.consul_outage_ms = observed.consul_outage_ms;
        r.neard_starts_per_min = observed.neard_starts_per_min;
        r.failures = observed.failures;
        if let Some((bound, measured)) = observed.bounded {
            r.bound_ms = Some(bound);
            r.bounded_ms = Some(measured);
        } else if matches!(scenario, Scenario::KuutamodKill | Scenario::HostFreeze) {
            r.bound_ms = Some(timing.host_loss_bound(mode).as_millis() as u64);
            r.bounded_ms = takeover;
        } else if scenario == Scenario::Switchover && mode == "hot-swap" {
            r.bound_ms = Some(SWITCHOVER_GAP_TARGET.as_millis() as u64);
            r.bounded_ms = r.gap_ms;
        }
        match scenario {
            // A planned hot-swap hand-over in a maintenance window costs no block of ours.
            Scenario::Switchover if mode == "hot-swap" && r.missed.blocks_missed > 0 => {
                r.failures.push(format!(
                    "the switchover missed assigned blocks at heights {:?}",
                    r.missed.missed_block_heights
                ));
            }
            Scenario::PriorityZero => {
                let low = &cluster.nodes[1].id;
                if report.intervals.contains_key(low) {
                    r.failures
                        .push(format!("{low} (KUUTAMO_PRIORITY=0) signed"));
                }
                if leader != 0 {
                    r.failures
                        .push(format!("{low} (KUUTAMO_PRIORITY=0) led before the fault"));
                }
            }
            _ => {}
        }
        // A lock that moves where nothing forced it to.
        let no_move_expected = match scenario {
            Scenario::StandbyPartition => Some("the standby's host was cut off".to_string()),
            Scenario::PriorityZero => Some("the standby has priority 0".to_string()),
            Scenario::EtcdCompaction => {
                Some("a compaction changes nothing the lock needs".to_string())
            }
            Scenario::ConsulLeaderKill | Scenario::QuorumLossShort => {
                let survivable = timing.survivable_outage().as_millis() as u64;
                match r.consul_outage_ms {
                    Some(o) if o < survivable => Some(format!(
                        "Consul's outage ({o} ms) was shorter than the leader survives in any heartbeat phase ({survivable} ms)"
                    )),
                    _ => None,
                }
            }
            _ => None,
        };
        if let (true, Some(why)) = (r.moved, no_move_expected) {
            r.failures.push(format!("the lock moved, but {why}"));
        }
        Ok(r)
    }

    /// 11f: node1's KUUTAMO_ACCOUNT_ID differs from its validator key's account: it must
    /// exit 1 with one error line naming the variable, and node0 must validate alone.
    fn wrong_account(
        &mut self,
        dir: &Path,
        mode: &str,
        timing: &Timing,
    ) -> anyhow::Result<RunResult> {
        let spec = self.spec(dir, Self::opts(mode, timing), false);
        let mut typo = spec.account.clone();
        typo.insert(1, 'x');
        let spec = spec.node_env(1, "KUUTAMO_ACCOUNT_ID", &typo);
        let mut cluster = Cluster::start(spec)?;
        let sampler = Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
        cluster.start_all()?;
        let mut r = RunResult::empty(Scenario::WrongAccount, mode);
        match cluster.nodes[1].wait_exit(REFUSE_LIMIT) {
            Ok(status) => {
                let log = cluster.nodes[1].log_text();
                let errors: Vec<&str> = log
                    .lines()
                    .filter(|l| l.starts_with("kuutamod: "))
                    .collect();
                if status.code() != Some(1) {
                    r.failures
                        .push(format!("node1 exited with {status}, not 1"));
                }
                if errors.len() != 1 || !errors[0].contains("KUUTAMO_ACCOUNT_ID") {
                    r.failures.push(format!(
                        "expected one `kuutamod: ` line naming KUUTAMO_ACCOUNT_ID, got {errors:?}"
                    ));
                }
            }
            Err(e) => r.failures.push(format!(
                "node1 with KUUTAMO_ACCOUNT_ID={typo} did not refuse to start: {e}"
            )),
        }
        let t0 = now_ms();
        r.recovered = cluster
            .until(
                timing.limit(),
                "node0 validating and signing",
                || match cluster.nodes[0].state() {
                    Ok(s) if s == "Validating" && cluster.signed_after(0, t0) => Ok(()),
                    other => Err(other),
                },
            )
            .is_ok();
        std::thread::sleep(OBSERVE_AFTER);
        let timelines = sampler.finish();
        cluster.stop_all();
        let report = cluster.report();
        if report.intervals.contains_key(&cluster.nodes[1].id) {
            r.failures.push("node1 signed".into());
        }
        r.judge(&report, &timelines);
        Ok(r)
    }

    /// 10b: both nodes started at once, `race_repeats` times; one result per repetition,
    /// "takeover" being start to the first signed height.
    fn election_race(
        &mut self,
        dir: &Path,
        mode: &str,
        timing: &Timing,
    ) -> anyhow::Result<Vec<RunResult>> {
        let mut out = Vec::new();
        for k in 0..timing.race_repeats {
            let sub = dir.join(format!("race{k}"));
            let mut spec = self.spec(&sub, Self::opts(mode, timing), false);
            spec.account = format!("r{k}{}", spec.account);
            let mut cluster = Cluster::start(spec)?;
            let sampler =
                Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
            let t0 = now_ms();
            cluster.start_all()?;
            let recovered = cluster.wait_steady(timing.limit()).is_ok();
            std::thread::sleep(OBSERVE_AFTER);
            let timelines = sampler.finish();
            cluster.stop_all();
            let report = cluster.report();
            let mut r = RunResult::empty(Scenario::ElectionRace, mode);
            r.takeover_ms = report
                .entries
                .iter()
                .map(|e| e.time_ms - t0.min(e.time_ms))
                .min();
            r.missed = cluster.missed_assigned(t0, now_ms());
            r.judge(&report, &timelines);
            r.recovered = recovered;
            out.push(r);
        }
        Ok(out)
    }
}
