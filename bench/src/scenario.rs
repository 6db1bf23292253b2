//! The scenarios of the fault-injection issue, one run at a time, and what each run measured.
//!
//! Every run builds a fresh cluster (its own validator account, so its own Consul lock key),
//! waits for a steady state (one signing leader, the others Voting), starts the sampler,
//! injects the fault at `t0`, heals it where the scenario heals, waits until one node signs
//! again, watches a little longer, and hands the ledger to the oracle.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use neard_sim::control::{Control, StatusMode};
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::cluster::{Cluster, Opts, Wiring, BLOCK_TIME_MS};
use crate::consul::{self, Agent, ServerCluster};
use crate::netns::Netns;
use crate::procs::{now_ms, signal};
use crate::proxy::Proxy;
use crate::sampler::{two_validators, Sampler};
use crate::wait;

/// Time to watch after recovery, so a signer left behind by the fault shows in the ledger.
const OBSERVE_AFTER: Duration = Duration::from_secs(2);

/// Steady state observed before the fault (a baseline for the sampler).
const BASELINE: Duration = Duration::from_secs(1);

/// Extra time beyond the TTL-derived bounds a fault is held, so it outlasts the lease.
const BEYOND_TTL: Duration = Duration::from_secs(1);

/// Slack for start-up and recovery beyond what the timing predicts (a shared 2-core machine).
const SLACK: Duration = Duration::from_secs(30);

/// Height of the simulators at unix time `ms` (their shared clock-derived height).
fn height_at(ms: u64) -> u64 {
    ms.saturating_sub(1_600_000_000_000) / BLOCK_TIME_MS
}

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 1: SIGKILL of the leader's neard.
    NeardKill,
    /// 2: SIGTERM of the leader's kuutamod (graceful hand-over).
    KuutamodTerm,
    /// 3: SIGKILL of the leader's kuutamod.
    KuutamodKill,
    /// 4: SIGSTOP of the leader's kuutamod for 2 x TTL + 1 s, then SIGCONT.
    KuutamodStop,
    /// 5: the leader's packets to Consul dropped for 2 x TTL + 1 s, then healed.
    LeaderPartition,
    /// 6: the standby's packets to Consul dropped for 2 x TTL + 1 s: no failover may happen.
    StandbyPartition,
    /// 7a: the Consul leader server of three killed (quorum kept).
    ConsulLeaderKill,
    /// 7b: two of three servers paused for 0.4 x TTL (quorum lost for less than the TTL).
    QuorumLossShort,
    /// 7c: two of three servers paused for 2 x TTL + 1 s (quorum lost for more than the TTL).
    QuorumLossLong,
    /// 8a: the leader's neard reports syncing.
    NeardSyncing,
    /// 8b: the leader's neard `/status` hangs.
    StatusHang,
    /// 8c: the leader's neard `/status` answers 503.
    Status503,
    /// 9: every Consul request delayed beyond the renew interval for 2 x TTL + 1 s.
    SlowConsul,
    /// 10a: the leader's neard killed and the standby's kuutamod restarted during the failover.
    StandbyRestart,
    /// 10b: both nodes started at the same instant (election race), repeated.
    ElectionRace,
}

/// Every scenario, in the order.
pub const ALL: [Scenario; 15] = [
    Scenario::NeardKill,
    Scenario::KuutamodTerm,
    Scenario::KuutamodKill,
    Scenario::KuutamodStop,
    Scenario::LeaderPartition,
    Scenario::StandbyPartition,
    Scenario::ConsulLeaderKill,
    Scenario::QuorumLossShort,
    Scenario::QuorumLossLong,
    Scenario::NeardSyncing,
    Scenario::StatusHang,
    Scenario::Status503,
    Scenario::SlowConsul,
    Scenario::StandbyRestart,
    Scenario::ElectionRace,
];

impl Scenario {
    /// Short name (CLI and table).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NeardKill => "1-neard-kill",
            Scenario::KuutamodTerm => "2-kuutamod-term",
            Scenario::KuutamodKill => "3-kuutamod-kill",
            Scenario::KuutamodStop => "4-kuutamod-stop",
            Scenario::LeaderPartition => "5-leader-partition",
            Scenario::StandbyPartition => "6-standby-partition",
            Scenario::ConsulLeaderKill => "7a-consul-leader-kill",
            Scenario::QuorumLossShort => "7b-quorum-loss-short",
            Scenario::QuorumLossLong => "7c-quorum-loss-long",
            Scenario::NeardSyncing => "8a-neard-syncing",
            Scenario::StatusHang => "8b-status-hang",
            Scenario::Status503 => "8c-status-503",
            Scenario::SlowConsul => "9-slow-consul",
            Scenario::StandbyRestart => "10a-standby-restart",
            Scenario::ElectionRace => "10b-election-race",
        }
    }

    /// Finds a scenario by its name or its number prefix (`5`, `7b`).
    pub fn parse(s: &str) -> Option<Scenario> {
        ALL.iter()
            .copied()
            .find(|x| x.name() == s || x.name().split('-').next() == Some(s))
    }

    /// Whether the lock must move to the other node: the leader's neard or kuutamod is gone,
    /// stopped, cut off or unhealthy while the standby is fine. A run of such a scenario in
    /// which the old leader kept signing has failed, however safe it was.
    pub fn must_move(self) -> bool {
        matches!(
            self,
            Scenario::NeardKill
                | Scenario::KuutamodTerm
                | Scenario::KuutamodKill
                | Scenario::KuutamodStop
                | Scenario::LeaderPartition
                | Scenario::NeardSyncing
                | Scenario::StatusHang
                | Scenario::Status503
        )
    }

    /// Whether the TTL bound (takeover <= 2 x TTL + 1 s) applies: the leader is gone or cut
    /// off and nothing tells the standby early.
    pub fn ttl_bound_applies(self) -> bool {
        matches!(
            self,
            Scenario::KuutamodKill | Scenario::KuutamodStop | Scenario::LeaderPartition
        )
    }

    /// Whether the hot-swap target (new leader signs within 300 ms median, 500 ms p95)
    /// applies: a clean hand-over after neard crashed or the leader stopped gracefully.
    pub fn hot_swap_target_applies(self) -> bool {
        matches!(self, Scenario::NeardKill | Scenario::KuutamodTerm)
    }

    /// Whether the 3-server Consul cluster is used.
    fn needs_servers(self) -> bool {
        matches!(
            self,
            Scenario::ConsulLeaderKill | Scenario::QuorumLossShort | Scenario::QuorumLossLong
        )
    }
}

/// Timing of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// KUUTAMO_SESSION_TTL.
    pub ttl: Duration,
    /// KUUTAMO_NEARD_STOP_GRACE.
    pub stop_grace: Duration,
    /// KUUTAMO_SYNCING_GRACE.
    pub syncing_grace: Duration,
    /// NEARD_SIM_BOOT_DELAY_MS.
    pub boot_delay_ms: u64,
    /// Repetitions of the election race per run.
    pub race_repeats: usize,
}

impl Timing {
    fn renew_interval(&self) -> Duration {
        self.ttl / 4
    }

    fn beyond_ttl(&self) -> Duration {
        self.ttl * 2 + BEYOND_TTL
    }

    fn limit(&self) -> Duration {
        self.ttl * 3 + Duration::from_millis(self.boot_delay_ms * 3) + self.syncing_grace + SLACK
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Failover mode.
    pub mode: String,
    /// Fault to the first height signed by a node other than the old leader (ms), if the
    /// leadership moved.
    pub takeover_ms: Option<u64>,
    /// Whether a node other than the old leader signed after the fault.
    pub moved: bool,
    /// Heights after the fault that nobody signed.
    pub missed_heights: u64,
    /// Heights signed by two nodes.
    pub double_signed: Vec<u64>,
    /// Sampled moments with two nodes Validating.
    pub two_validators_seen: usize,
    /// Whether exactly one node signed again after the fault within the limit.
    pub recovered: bool,
    /// A harness error (setup failed), if any.
    pub error: Option<String>,
    /// Where the run's logs and ledger were kept (runs with a problem only).
    pub kept: Option<PathBuf>,
}

impl RunResult {
    /// The CI bar: no double signing, never two validators, no harness error, a validator
    /// again after every fault (not stuck), and the lock moved where it must.
    pub fn passed(&self) -> bool {
        let must_move = Scenario::parse(&self.scenario).is_some_and(Scenario::must_move);
        self.double_signed.is_empty()
            && self.two_validators_seen == 0
            && self.error.is_none()
            && self.recovered
            && (self.moved || !must_move)
    }
}

/// What all runs share: a dev Consul agent, and one namespace per node when enabled.
pub struct World {
    /// Base directory of all runs.
    pub dir: PathBuf,
    /// Namespaces, one per node slot (empty without namespaces).
    pub netns: Vec<Netns>,
    /// The dev agent.
    pub dev: Agent,
    runs: usize,
}

/// Node slots a scenario may use (the standby-restart scenario uses two, like the others).
const SLOTS: u8 = 2;

impl World {
    /// Starts the dev agent and, with `use_netns`, creates the namespaces (failing loudly when
    /// they, or nft, are unavailable).
    pub fn new(dir: &Path, use_netns: bool) -> anyhow::Result<World> {
        let netns = if use_netns {
            (0..SLOTS)
                .map(Netns::create)
                .collect::<anyhow::Result<Vec<_>>>()
                .context("network namespaces (run as root with iproute2 and nftables, or pass --no-netns to skip partitions)")?
        } else {
            Vec::new()
        };
        let extra: Vec<IpAddr> = netns.iter().map(|n| n.root_ip).collect();
        let dev = consul::dev_agent(dir, &extra)?;
        Ok(World {
            dir: dir.to_path_buf(),
            netns,
            dev,
            runs: 0,
        })
    }

    fn next_dir(&mut self, name: &str, mode: &str) -> PathBuf {
        self.runs += 1;
        self.dir.join(format!("run{:03}-{name}-{mode}", self.runs))
    }

    /// Runs `scenario` once in `mode`.
    pub fn run(&mut self, scenario: Scenario, mode: &str, timing: &Timing) -> Vec<RunResult> {
        let dir = self.next_dir(scenario.name(), mode);
        let result = if scenario == Scenario::ElectionRace {
            self.election_race(&dir, mode, timing)
        } else {
            self.run_one(scenario, &dir, mode, timing).map(|r| vec![r])
        };
        let mut results = result.unwrap_or_else(|e| {
            vec![RunResult {
                scenario: scenario.name().into(),
                mode: mode.into(),
                takeover_ms: None,
                moved: false,
                missed_heights: 0,
                double_signed: Vec::new(),
                two_validators_seen: 0,
                recovered: false,
                error: Some(format!("{e:#}")),
                kept: None,
            }]
        });
        // KUUTAMOD_BENCH_KEEP=1 keeps every run's logs, for a closer look at one that passed.
        let keep = results.iter().any(|r| !r.passed() || !r.recovered)
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

    fn opts(&self, mode: &str, timing: &Timing, dir: &Path) -> Opts {
        let tag = dir
            .file_name()
            .map(|n| n.to_string_lossy().replace(['-', '_'], ""))
            .unwrap_or_default();
        Opts {
            ttl: timing.ttl,
            stop_grace: timing.stop_grace,
            syncing_grace: timing.syncing_grace,
            failover_mode: mode.into(),
            boot_delay_ms: timing.boot_delay_ms,
            account: format!("{tag}{}.bench.near", std::process::id()),
        }
    }

    /// Proxies to the dev agent and the wiring of each node slot through them (a node in a
    /// namespace reaches its proxy on its root-side veth address).
    pub fn dev_wiring(&self) -> anyhow::Result<(Vec<Proxy>, Vec<Wiring>)> {
        let upstream: SocketAddr = self
            .dev
            .url
            .trim_start_matches("http://")
            .parse()
            .context("dev agent address")?;
        let mut proxies = Vec::new();
        let mut wiring = Vec::new();
        for i in 0..SLOTS as usize {
            let (listen, netns, exporter_ip) = match self.netns.get(i) {
                Some(ns) => (ns.root_ip, Some(ns.name.clone()), ns.ns_ip),
                None => {
                    let lo = IpAddr::from([127, 0, 0, 1]);
                    (lo, None, lo)
                }
            };
            let proxy = Proxy::start(SocketAddr::new(listen, 0), upstream)?;
            wiring.push(Wiring {
                consul_url: format!("http://{}", proxy.addr),
                netns,
                exporter_ip,
            });
            proxies.push(proxy);
        }
        Ok((proxies, wiring))
    }

    fn run_one(
        &mut self,
        scenario: Scenario,
        dir: &Path,
        mode: &str,
        timing: &Timing,
    ) -> anyhow::Result<RunResult> {
        let opts = self.opts(mode, timing, dir);
        let limit = timing.limit();
        // The 3-server scenarios: a client agent per node (root namespace, 127.0.0.5/6).
        let servers = if scenario.needs_servers() {
            Some(ServerCluster::start(dir, SLOTS as usize)?)
        } else {
            None
        };
        let (proxies, wiring) = match &servers {
            Some(s) => (
                Vec::new(),
                s.clients
                    .iter()
                    .map(|c| Wiring {
                        consul_url: c.url.clone(),
                        netns: None,
                        exporter_ip: IpAddr::from([127, 0, 0, 1]),
                    })
                    .collect(),
            ),
            None => self.dev_wiring()?,
        };
        let needs_netns = matches!(
            scenario,
            Scenario::LeaderPartition | Scenario::StandbyPartition
        );
        anyhow::ensure!(
            !needs_netns || !self.netns.is_empty(),
            "{} needs network namespaces",
            scenario.name()
        );
        let mut cluster = Cluster::new(dir, &wiring, &opts)?;
        cluster.start_all()?;
        let leader = cluster
            .wait_steady(limit)
            .with_context(|| format!("steady state before the fault\n{}", cluster.logs(20)))?;
        let standby = 1 - leader;
        let sampler = Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
        std::thread::sleep(BASELINE);
        let t0 = now_ms();
        let mut servers = servers;
        match scenario {
            Scenario::NeardKill => {
                let pid = cluster.nodes[leader]
                    .neard_pid()
                    .context("leader's neard pid")?;
                signal(pid, Signal::SIGKILL);
            }
            Scenario::KuutamodTerm => cluster.nodes[leader].signal(Signal::SIGTERM),
            Scenario::KuutamodKill => cluster.nodes[leader].kill(),
            Scenario::KuutamodStop => {
                cluster.nodes[leader].signal(Signal::SIGSTOP);
                std::thread::sleep(timing.beyond_ttl());
                cluster.nodes[leader].signal(Signal::SIGCONT);
            }
            Scenario::LeaderPartition | Scenario::StandbyPartition => {
                let victim = if scenario == Scenario::LeaderPartition {
                    leader
                } else {
                    standby
                };
                let ns = &self.netns[victim];
                ns.partition(proxies[victim].addr.port())?;
                std::thread::sleep(timing.beyond_ttl());
                ns.heal()?;
            }
            Scenario::ConsulLeaderKill => {
                let s = servers.as_mut().context("servers")?;
                let l = wait::until(limit, "a Consul leader", || s.leader())?;
                s.servers[l].guard.kill();
                std::thread::sleep(timing.beyond_ttl());
            }
            Scenario::QuorumLossShort | Scenario::QuorumLossLong => {
                let s = servers.as_mut().context("servers")?;
                let l = wait::until(limit, "a Consul leader", || s.leader())?;
                let paused: Vec<i32> = [l, (l + 1) % 3]
                    .iter()
                    .filter_map(|i| s.servers[*i].guard.pid())
                    .collect();
                for p in &paused {
                    signal(*p, Signal::SIGSTOP);
                }
                std::thread::sleep(if scenario == Scenario::QuorumLossShort {
                    timing.ttl * 2 / 5
                } else {
                    timing.beyond_ttl()
                });
                for p in &paused {
                    signal(*p, Signal::SIGCONT);
                }
            }
            Scenario::NeardSyncing | Scenario::StatusHang | Scenario::Status503 => {
                let control = match scenario {
                    Scenario::NeardSyncing => Control {
                        force_syncing: true,
                        ..Control::default()
                    },
                    Scenario::StatusHang => Control {
                        status: StatusMode::Hang,
                        ..Control::default()
                    },
                    _ => Control {
                        status: StatusMode::Error503,
                        ..Control::default()
                    },
                };
                cluster.nodes[leader].control(&control)?;
                // Held until another node signs (or the limit): then the sick neard is healed
                // so that it may serve as a standby again.
                let _ = wait::until(limit, "another node to sign", || {
                    if cluster.signed_after(standby, t0) {
                        Ok(())
                    } else {
                        Err(cluster.states())
                    }
                });
                cluster.nodes[leader].control(&Control::default())?;
            }
            Scenario::SlowConsul => {
                // Each direction delayed by 60 % of the renew interval: every request takes
                // longer than the renew interval.
                let delay = timing.renew_interval() * 3 / 5;
                for p in &proxies {
                    p.set_delay(delay);
                }
                std::thread::sleep(timing.beyond_ttl());
                for p in &proxies {
                    p.set_delay(Duration::ZERO);
                }
            }
            Scenario::StandbyRestart => {
                let pid = cluster.nodes[leader]
                    .neard_pid()
                    .context("leader's neard pid")?;
                signal(pid, Signal::SIGKILL);
                std::thread::sleep(Duration::from_millis(200));
                cluster.nodes[standby].kill();
                cluster.nodes[standby].start()?;
            }
            Scenario::ElectionRace => unreachable!("handled by election_race"),
        }
        let heal = now_ms();
        let recovered = wait::until(limit, "one node signing again", || {
            let states = cluster.states();
            let validating: Vec<usize> = (0..states.len())
                .filter(|i| states[*i].as_deref() == Ok("Validating"))
                .collect();
            match validating.as_slice() {
                [one] if cluster.signed_after(*one, heal) => Ok(()),
                _ => Err(states),
            }
        })
        .is_ok();
        std::thread::sleep(OBSERVE_AFTER);
        let end_height = height_at(now_ms());
        let timelines = sampler.finish();
        cluster.stop_all();
        drop(proxies);
        let report = cluster.report();
        let old = &cluster.nodes[leader].id;
        let takeover = report
            .entries
            .iter()
            .filter(|e| &e.node != old && e.time_ms > t0)
            .map(|e| e.time_ms - t0)
            .min();
        let fault_height = height_at(t0);
        let missed = report
            .gaps
            .iter()
            .filter(|(_, end)| *end >= fault_height)
            .map(|(start, end)| end - start.max(&fault_height) + 1)
            .sum::<u64>()
            // Heights after the last signature, up to the end of the observation.
            + end_height.saturating_sub(report.last_height.unwrap_or(end_height).max(fault_height));
        Ok(RunResult {
            scenario: scenario.name().into(),
            mode: mode.into(),
            takeover_ms: takeover,
            moved: takeover.is_some(),
            missed_heights: missed,
            double_signed: report.double_signed.keys().copied().collect(),
            two_validators_seen: two_validators(&timelines).len(),
            recovered,
            error: None,
            kept: None,
        })
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
            let opts = self.opts(mode, timing, &sub);
            let opts = Opts {
                account: format!("r{k}{}", opts.account),
                ..opts
            };
            let (proxies, wiring) = self.dev_wiring()?;
            let mut cluster = Cluster::new(&sub, &wiring, &opts)?;
            let sampler =
                Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
            let t0 = now_ms();
            cluster.start_all()?;
            let recovered = cluster.wait_steady(timing.limit()).is_ok();
            std::thread::sleep(OBSERVE_AFTER);
            let timelines = sampler.finish();
            cluster.stop_all();
            drop(proxies);
            let report = cluster.report();
            out.push(RunResult {
                scenario: Scenario::ElectionRace.name().into(),
                mode: mode.into(),
                takeover_ms: report
                    .entries
                    .iter()
                    .map(|e| e.time_ms - t0.min(e.time_ms))
                    .min(),
                moved: false,
                missed_heights: report.missed_heights(),
                double_signed: report.double_signed.keys().copied().collect(),
                two_validators_seen: two_validators(&timelines).len(),
                recovered,
                error: None,
                kept: None,
            });
        }
        Ok(out)
    }
}
