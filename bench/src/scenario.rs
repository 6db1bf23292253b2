//! The scenarios, one run at a time, and what each run measured.
//!
//! Every run builds a fresh cluster ([`crate::cluster`]: its own Consul servers, a client
//! agent per node, its own validator account), waits for a steady state (one signing leader,
//! the others Voting), starts the sampler, injects the fault at `t0`, heals it where the
//! scenario heals, waits until exactly one node validates and signs again, watches a little
//! longer, and hands the ledger to the oracle. A run fails on a double-signed height, a sampled
//! moment with two validators, a harness error, no single validator again (stuck), a lock that
//! stayed where it had to move, a lock that moved where it must not, or a scenario's own check
//! ([`RunResult::failures`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use neard_sim::chainlog::{Line, Missed};
use neard_sim::control::{Control, StatusMode};
use neard_sim::ledger::Entry;
use nix::sys::signal::Signal;
use serde::Serialize;

use crate::cluster::{resigned_skips, two_node_slots, Cluster, Opts, Spec};
use crate::consul::{http_delete, http_put, Agent, START_LIMIT};
use crate::netns::Lan;
use crate::procs::{now_ms, signal};
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

/// Extra time a stalled chain may take to resume under a new leader: its fence waits until the
/// new leader's own target outruns everything the old leader could have signed while its
/// horizon was stale, one target per `min_block_production_delay` of staleness, and in a stall
/// those targets come only by skips, one per `max_block_wait_delay` at most (600 ms at the
/// sped-up timers). Measured and reported, not a pass/fail bound.
const STALL_RECOVERY: Duration = Duration::from_secs(120);

/// How long the offline virtual validator of 14a/b is out before the fault, so that our
/// leader has signed skips over its heights (tens of heights at ~60 ms).
const SKIPS_BEFORE: Duration = Duration::from_secs(2);

/// The virtual validator 14a/b take offline.
const OFFLINE_VALIDATOR: &str = "v1";

/// How long kuutamoctl's switchover may wait for a maintenance window and the hand-over.
const SWITCHOVER_TIMEOUT: &str = "60s";

/// The signing gap of a hot-swap switchover stated as the target (median).
const SWITCHOVER_GAP_TARGET: Duration = Duration::from_millis(300);

/// How long a node with a bad configuration may take to refuse to start.
const REFUSE_LIMIT: Duration = Duration::from_secs(10);

/// How long after the step-down deadline the crash-loop scenario keeps its partition: "just
/// longer than the deadline".
const JUST_LONGER: Duration = Duration::from_millis(500);

/// Most neard starts per minute a crash loop may cause ("a few dozen"; kuutamod's back-off,
/// 1 s doubling to 30 s, gives about six).
pub const MAX_STARTS_PER_MIN: f64 = 30.0;

/// Lifetime of an outsider's session that steals the lock: far longer than any scenario, so
/// the lock only comes back if kuutamod destroys the silent session itself.
const OUTSIDER_SESSION_TTL: &str = "300s";

/// Pause between the harness's Consul write probes during an outage.
const PROBE_PAUSE: Duration = Duration::from_millis(20);

/// Timeout of one write probe: a probe stuck in a paused server is abandoned this soon, so the
/// outage is measured to within about this much.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 1: SIGKILL of the leader's neard.
    NeardKill,
    /// 2: SIGTERM of the leader's kuutamod (graceful hand-over).
    KuutamodTerm,
    /// 3: SIGKILL of the leader's kuutamod (host loss; its neard dies with it).
    KuutamodKill,
    /// 4: SIGSTOP of the leader's kuutamod alone for 2 x TTL + 1 s, then SIGCONT.
    KuutamodStop,
    /// 5: the leader's host cut off from the LAN for 2 x TTL + 1 s, then healed.
    LeaderPartition,
    /// 6: the standby's host cut off for 2 x TTL + 1 s: no failover may happen.
    StandbyPartition,
    /// 7a: the Consul leader server of three killed (quorum kept).
    ConsulLeaderKill,
    /// 7b: two of three servers paused for half the outage a leader survives in any heartbeat
    /// phase (with Consul's re-election, the outage stays shorter than that).
    QuorumLossShort,
    /// 7c: two of three servers paused for 2 x TTL + 1 s.
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
    /// 11a: the leader's agent stopped gracefully (it leaves; Consul invalidates its
    /// sessions) and started again.
    AgentLeave,
    /// 11b: the leader's agent SIGKILLed (it fails; sessions live on) and started again.
    AgentKill,
    /// 11c: an outsider DELETEs the leader key.
    KeyDelete,
    /// 11d: an outsider overwrites the leader key with a plain PUT.
    KeyOverwrite,
    /// 11e: an outsider deletes the key and acquires it with its own session (one
    /// transaction), then never renews nor writes again.
    KeyStolen,
    /// 11f: one node's KUUTAMO_ACCOUNT_ID has a typo: it must refuse to start.
    WrongAccount,
    /// 12: the whole leader host frozen: kuutamod, its guard, neard and the Consul agent
    /// SIGSTOPped (not resumed: host loss).
    HostFreeze,
    /// 13a: `kill -STOP -<pgid>` of the leader's kuutamod for 2 x TTL + 1 s, then SIGCONT.
    GroupStop,
    /// 13b: the leader's guard SIGSTOPped while validating.
    GuardStop,
    /// 13c: the leader's guard SIGKILLed while validating.
    GuardKill,
    /// 13d: the leader cut off just longer than the step-down deadline, and its neard then
    /// crashes at every start.
    CrashLoop,
    /// 14a: a virtual validator offline, so that our leader signs skips ahead of the head;
    /// then the leader's neard SIGKILLed (the chain stalls until the new leader signs: the
    /// others lack 2/3 without us).
    SkipsNeardKill,
    /// 14b: as 14a, but the leader's kuutamod SIGKILLed (its guard kills neard).
    SkipsKuutamodKill,
    /// 14c: a chain that stalls without us (ours 2 of 4), the whole leader host frozen.
    StallHostFreeze,
    /// 14d: a hand-over (SIGUSR1 to the leader) in the four-validator localnet.
    HandOver,
    /// 15a: `kuutamoctl switchover --to <standby> --in-window --wait`.
    Switchover,
    /// 15b: `kuutamoctl pause`, the leader's neard SIGKILLed and the pause held for 2 x TTL +
    /// 1 s (nobody may take over), then `kuutamoctl resume`.
    PauseNeardKill,
    /// 15c: the standby runs with `KUUTAMO_PRIORITY=0`; the leader's neard SIGKILLed: the
    /// standby must never validate, the old leader validates again.
    PriorityZero,
    /// 12r (opt-in, not in [`ALL`]): the frozen host of 12 resumes once the standby signs,
    /// neard first (a VM resume wakes every process at once; neard first is the worst order).
    HostResume,
}

/// Scenarios run only when named (`--scenario 12r`): faults whose expectation is not settled.
pub const OPT_IN: [Scenario; 1] = [Scenario::HostResume];

/// Every scenario, in order.
pub const ALL: [Scenario; 33] = [
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
    Scenario::AgentLeave,
    Scenario::AgentKill,
    Scenario::KeyDelete,
    Scenario::KeyOverwrite,
    Scenario::KeyStolen,
    Scenario::WrongAccount,
    Scenario::HostFreeze,
    Scenario::GroupStop,
    Scenario::GuardStop,
    Scenario::GuardKill,
    Scenario::CrashLoop,
    Scenario::SkipsNeardKill,
    Scenario::SkipsKuutamodKill,
    Scenario::StallHostFreeze,
    Scenario::HandOver,
    Scenario::Switchover,
    Scenario::PauseNeardKill,
    Scenario::PriorityZero,
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
            Scenario::AgentLeave => "11a-agent-leave",
            Scenario::AgentKill => "11b-agent-kill",
            Scenario::KeyDelete => "11c-key-delete",
            Scenario::KeyOverwrite => "11d-key-overwrite",
            Scenario::KeyStolen => "11e-key-stolen",
            Scenario::WrongAccount => "11f-wrong-account",
            Scenario::HostFreeze => "12-host-freeze",
            Scenario::GroupStop => "13a-group-stop",
            Scenario::GuardStop => "13b-guard-stop",
            Scenario::GuardKill => "13c-guard-kill",
            Scenario::CrashLoop => "13d-crash-loop",
            Scenario::HostResume => "12r-host-resume",
            Scenario::SkipsNeardKill => "14a-skips-neard-kill",
            Scenario::SkipsKuutamodKill => "14b-skips-kuutamod-kill",
            Scenario::StallHostFreeze => "14c-stall-host-freeze",
            Scenario::HandOver => "14d-hand-over",
            Scenario::Switchover => "15a-switchover",
            Scenario::PauseNeardKill => "15b-pause-neard-kill",
            Scenario::PriorityZero => "15c-priority-zero",
        }
    }

    /// Finds a scenario by its name or its number prefix (`5`, `7b`).
    pub fn parse(s: &str) -> Option<Scenario> {
        ALL.iter()
            .chain(&OPT_IN)
            .copied()
            .find(|x| x.name() == s || x.name().split('-').next() == Some(s))
    }

    /// Whether the lock must move to the other node: the leader's neard, kuutamod, guard or
    /// host is gone, stopped, cut off or unhealthy while the standby is fine. A run of such a
    /// scenario in which the old leader kept signing has failed, however safe it was.
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
                | Scenario::HostFreeze
                | Scenario::HostResume
                | Scenario::SkipsNeardKill
                | Scenario::SkipsKuutamodKill
                | Scenario::StallHostFreeze
                | Scenario::HandOver
                | Scenario::Switchover
                | Scenario::GroupStop
                | Scenario::GuardStop
                | Scenario::GuardKill
                | Scenario::CrashLoop
        )
    }

    /// Whether the scenario cuts a host off (needs namespaces).
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Scenario::LeaderPartition | Scenario::StandbyPartition | Scenario::CrashLoop
        )
    }

    /// Whether the chain stalls without our account ([`crate::cluster::ChainOpts::stall`]).
    fn stall_chain(self) -> bool {
        self == Scenario::StallHostFreeze
    }

    /// Whether the 3-server Consul cluster is used.
    fn needs_three_servers(self) -> bool {
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
    /// How long the crash-loop scenario counts neard starts.
    pub crash_window: Duration,
}

impl Timing {
    /// The leader's heartbeat (and renew) interval: TTL / 3 (kuutamod's timing.rs).
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }

    /// kuutamod's step-down deadline after the last acknowledged heartbeat was sent:
    /// `ttl - stop_grace - ttl/10` (timing.rs).
    pub fn step_down_after(&self) -> Duration {
        self.ttl.saturating_sub(self.stop_grace + self.ttl / 10)
    }

    /// The longest Consul outage the leader survives whatever its heartbeat phase: its last
    /// acknowledged heartbeat may have been sent up to one interval before the outage began.
    pub fn survivable_outage(&self) -> Duration {
        self.step_down_after().saturating_sub(self.renew_interval())
    }

    /// A fault held past the lease: 2 x TTL + 1 s.
    pub fn beyond_ttl(&self) -> Duration {
        self.ttl * 2 + BEYOND_TTL
    }

    /// Takeover bound after host loss: 1.3 x TTL, plus neard's boot in restart mode.
    pub fn host_loss_bound(&self, mode: &str) -> Duration {
        self.ttl * 13 / 10 + self.boot(mode)
    }

    /// neard's boot when the mode restarts it for a promotion.
    fn boot(&self, mode: &str) -> Duration {
        if mode == "restart" {
            Duration::from_millis(self.boot_delay_ms)
        } else {
            Duration::ZERO
        }
    }

    fn limit(&self) -> Duration {
        self.ttl * 3 + Duration::from_millis(self.boot_delay_ms * 3) + self.syncing_grace + SLACK
    }

    /// The limit of a scenario: a stalled chain adds [`STALL_RECOVERY`].
    fn limit_of(&self, scenario: Scenario) -> Duration {
        if scenario.stall_chain()
            || scenario == Scenario::SkipsNeardKill
            || scenario == Scenario::SkipsKuutamodKill
        {
            self.limit() + STALL_RECOVERY
        } else {
            self.limit()
        }
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
    /// The signing gap of a moved run: from the old leader's last signature before the new
    /// leader's first to that first signature (ms).
    pub gap_ms: Option<u64>,
    /// What our account was assigned and missed among the heights the chain decided from the
    /// fault to the end of the observation (the chain log).
    pub missed: Missed,
    /// The longest time the chain decided no block from the last block before the fault to
    /// the end of the observation (ms): a stall.
    pub stall_ms: Option<u64>,
    /// Heights at which two nodes signed anything (the oracle's `double_signed`; reported:
    /// an honest hand-over can sign an approval and a block at one height on two nodes).
    pub double_signed: Vec<u64>,
    /// Message slots (kind, height, shard) signed by two nodes (the strict bar; fails).
    pub two_node_slots: usize,
    /// Skips a node signed again after the previous key holder stopped
    /// ([`crate::cluster::resigned_skips`]; reported, as neard does after a restart).
    pub resigned_skips: usize,
    /// Conflicting signatures of our account (the oracle's `conflicting`: the double signing
    /// that is slashed).
    pub conflicting: usize,
    /// Sampled moments with two nodes Validating.
    pub two_validators_seen: usize,
    /// Whether exactly one node validated and signed again after the fault within the limit.
    pub recovered: bool,
    /// The bound the takeover is compared with (ms), where the scenario states one.
    pub bound_ms: Option<u64>,
    /// The takeover measured against [`RunResult::bound_ms`] (ms; for the crash loop: from
    /// the step-down, not from the fault).
    pub bounded_ms: Option<u64>,
    /// Consul's write outage as a client agent saw it (7a-c), ms.
    pub consul_outage_ms: Option<u64>,
    /// neard starts per minute during a crash loop (13d).
    pub neard_starts_per_min: Option<f64>,
    /// Scenario checks that failed (each fails the run).
    pub failures: Vec<String>,
    /// A harness error (setup failed), if any.
    pub error: Option<String>,
    /// Where the run's logs and ledger were kept (runs with a problem only).
    pub kept: Option<PathBuf>,
}

impl RunResult {
    fn empty(scenario: Scenario, mode: &str) -> RunResult {
        RunResult {
            scenario: scenario.name().into(),
            mode: mode.into(),
            takeover_ms: None,
            moved: false,
            gap_ms: None,
            missed: Missed::default(),
            stall_ms: None,
            double_signed: Vec::new(),
            two_node_slots: 0,
            resigned_skips: 0,
            conflicting: 0,
            two_validators_seen: 0,
            recovered: false,
            bound_ms: None,
            bounded_ms: None,
            consul_outage_ms: None,
            neard_starts_per_min: None,
            failures: Vec::new(),
            error: None,
            kept: None,
        }
    }

    /// The CI bar: no conflicting signature and no message slot signed by two nodes, never
    /// two validators, no harness error, a validator
    /// again after every fault (not stuck), the lock moved where it must, and every scenario
    /// check held (including "the lock did not move" where it must not).
    pub fn passed(&self) -> bool {
        let must_move = Scenario::parse(&self.scenario).is_some_and(Scenario::must_move);
        self.two_node_slots == 0
            && self.conflicting == 0
            && self.two_validators_seen == 0
            && self.error.is_none()
            && self.recovered
            && (self.moved || !must_move)
            && self.failures.is_empty()
    }
}

/// What all runs share: the base directory and, when enabled, the LAN of namespaces.
pub struct World {
    /// Base directory of all runs.
    pub dir: PathBuf,
    /// The LAN (none without namespaces).
    pub lan: Option<Lan>,
    runs: usize,
}

/// Node slots a scenario may use.
const SLOTS: u8 = 2;

/// What the fault injection itself observed.
#[derive(Default)]
struct Observed {
    consul_outage_ms: Option<u64>,
    neard_starts_per_min: Option<f64>,
    /// (bound, measured) in ms.
    bounded: Option<(u64, u64)>,
    failures: Vec<String>,
}

impl World {
    /// Creates the LAN with `use_netns` (failing loudly when namespaces or nft are
    /// unavailable).
    pub fn new(dir: &Path, use_netns: bool) -> anyhow::Result<World> {
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
            runs: 0,
        })
    }

    fn next_dir(&mut self, name: &str, mode: &str) -> PathBuf {
        self.runs += 1;
        self.dir.join(format!("run{:03}-{name}-{mode}", self.runs))
    }

    /// The cluster of a run in `dir`: two nodes on the LAN's hosts (or loopback), one Consul
    /// server (three for `three_servers`), a fresh account.
    pub fn spec(&self, dir: &Path, opts: Opts, three_servers: bool) -> Spec {
        let tag = dir
            .file_name()
            .map(|n| n.to_string_lossy().replace(['-', '_'], ""))
            .unwrap_or_default();
        let mut spec = Spec::new(
            SLOTS as usize,
            &format!("{tag}{}.bench.near", std::process::id()),
            opts,
        );
        spec.dir = Some(dir.to_path_buf());
        if three_servers {
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

    fn opts(mode: &str, timing: &Timing) -> Opts {
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
        let mut cluster = Cluster::start(spec)?;
        cluster.start_all()?;
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
        let takeover = report
            .entries
            .iter()
            .filter(|e| &e.node != old && e.time_ms > t0)
            .map(|e| e.time_ms - t0)
            .min();
        let mut r = RunResult::empty(scenario, mode);
        r.takeover_ms = takeover;
        r.moved = takeover.is_some();
        r.gap_ms = signing_gap(&report.entries, old, t0);
        let chain = cluster.chain_log();
        r.missed = neard_sim::chainlog::missed_assigned(&chain, &cluster.account, t0, end);
        r.stall_ms = longest_stall(&chain, t0, end);
        r.double_signed = report.double_signed.keys().copied().collect();
        r.conflicting = report.conflicting.len();
        r.two_node_slots = two_node_slots(&report).len();
        r.resigned_skips = resigned_skips(&report).len();
        r.two_validators_seen = two_validators(&timelines).len();
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
        r.double_signed = report.double_signed.keys().copied().collect();
        r.conflicting = report.conflicting.len();
        r.two_node_slots = two_node_slots(&report).len();
        r.resigned_skips = resigned_skips(&report).len();
        r.two_validators_seen = two_validators(&timelines).len();
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
            r.double_signed = report.double_signed.keys().copied().collect();
            r.conflicting = report.conflicting.len();
            r.two_node_slots = two_node_slots(&report).len();
            r.resigned_skips = resigned_skips(&report).len();
            r.resigned_skips = resigned_skips(&report).len();
            r.two_validators_seen = two_validators(&timelines).len();
            r.recovered = recovered;
            out.push(r);
        }
        Ok(out)
    }
}

/// The signing gap after `t0`: from `old`'s last signature before another node's first one
/// to that first signature (ms), if another node signed.
pub fn signing_gap(entries: &[Entry], old: &str, t0: u64) -> Option<u64> {
    let first_new = entries
        .iter()
        .filter(|e| e.node != old && e.time_ms > t0)
        .map(|e| e.time_ms)
        .min()?;
    let last_old = entries
        .iter()
        .filter(|e| e.node == old && e.time_ms <= first_new)
        .map(|e| e.time_ms)
        .max()?;
    Some(first_new - last_old)
}

/// The longest interval without a produced block among the chain's decisions in `[from_ms,
/// to_ms)`, counted from the last block before `from_ms` and up to `to_ms`.
pub fn longest_stall(lines: &[Line], from_ms: u64, to_ms: u64) -> Option<u64> {
    let mut last = lines
        .iter()
        .filter(|l| l.produced && l.time_ms < from_ms)
        .map(|l| l.time_ms)
        .max()?;
    let mut longest = 0;
    for l in lines
        .iter()
        .filter(|l| l.produced && l.time_ms >= from_ms && l.time_ms < to_ms)
    {
        longest = longest.max(l.time_ms.saturating_sub(last));
        last = l.time_ms;
    }
    Some(longest.max(to_ms.saturating_sub(last)))
}

/// Resumes whatever a scenario left stopped on the old leader's host, so that stopping the
/// cluster is clean (a host-loss run ends with the host still frozen until here).
fn thaw(cluster: &Cluster, leader: usize) {
    let n = &cluster.nodes[leader];
    n.agent.signal(Signal::SIGCONT);
    n.signal_group(Signal::SIGCONT);
}

/// Probes Consul writes through the agent at `agent_url`, one after the other from `t0` on;
/// returns when the first of them succeeded (ms after `t0`): Consul's write outage as a
/// client agent sees it, to within [`PROBE_TIMEOUT`].
fn outage_probe(agent_url: String, t0: u64) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let url = format!("{agent_url}/v1/kv/kuutamod-bench/probe");
        let client = reqwest::blocking::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .ok()?;
        let limit = now_ms() + 120_000;
        while now_ms() < limit {
            let ok = client
                .put(&url)
                .body("1")
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Some(now_ms() - t0);
            }
            std::thread::sleep(PROBE_PAUSE);
        }
        None
    })
}

/// The leader key's URL on the first live server (an outsider's view).
fn key_url(cluster: &Cluster) -> String {
    format!("{}/v1/kv/{}", cluster.servers.url(), cluster.lock_key())
}

/// Stops and restarts `agent`, waiting until it serves again.
fn restart_agent(agent: &mut Agent, graceful: bool) -> anyhow::Result<()> {
    if graceful {
        agent.terminate()?;
    } else {
        agent.kill();
    }
    agent.launch()?;
    agent.wait_ready(START_LIMIT)
}

/// A steady cluster at the moment of the fault.
struct Fault<'a> {
    cluster: &'a mut Cluster,
    leader: usize,
    standby: usize,
    /// When the fault is injected (unix ms).
    t0: u64,
    timing: &'a Timing,
    mode: &'a str,
}

/// Injects `scenario`'s fault into a steady cluster at `t0`, holds it, and heals it.
fn inject(scenario: Scenario, f: Fault<'_>) -> anyhow::Result<Observed> {
    let mut seen = Observed::default();
    if scenario == Scenario::CrashLoop {
        crash_loop(&f, &mut seen)?;
        return Ok(seen);
    }
    let (leader, standby, t0, timing) = (f.leader, f.standby, f.t0, f.timing);
    let cluster = f.cluster;
    let limit = timing.limit_of(scenario);
    match scenario {
        Scenario::NeardKill | Scenario::SkipsNeardKill | Scenario::PriorityZero => {
            let pid = cluster.nodes[leader]
                .neard_pid()
                .context("leader's neard pid")?;
            signal(pid, Signal::SIGKILL);
        }
        Scenario::KuutamodTerm => cluster.nodes[leader].signal(Signal::SIGTERM),
        Scenario::KuutamodKill | Scenario::SkipsKuutamodKill => cluster.nodes[leader].kill(),
        Scenario::HandOver => cluster.nodes[leader].signal(Signal::SIGUSR1),
        Scenario::Switchover => {
            let (code, out) = cluster.switchover_in_window(standby, SWITCHOVER_TIMEOUT)?;
            if code != 0 {
                seen.failures.push(format!(
                    "kuutamoctl switchover exited {code}: {}",
                    out.trim()
                ));
            }
        }
        Scenario::PauseNeardKill => pause_neard_kill(cluster, leader, standby, timing, &mut seen)?,
        Scenario::KuutamodStop => {
            cluster.nodes[leader].signal(Signal::SIGSTOP);
            std::thread::sleep(timing.beyond_ttl());
            cluster.nodes[leader].signal(Signal::SIGCONT);
        }
        Scenario::GroupStop => {
            let node = &cluster.nodes[leader];
            let guard = node.guard_pid().context("leader's guard pid")?;
            node.signal_group(Signal::SIGSTOP);
            std::thread::sleep(timing.beyond_ttl());
            if !crate::procs::alive(guard) {
                seen.failures
                    .push("the guard died with kuutamod's process group".into());
            }
            node.signal_group(Signal::SIGCONT);
            if !node.log_text().contains("killed neard") {
                seen.failures
                    .push("no `kuutamod guard: ... killed neard` line in the leader's log".into());
            }
        }
        Scenario::LeaderPartition | Scenario::StandbyPartition => {
            let victim = if scenario == Scenario::LeaderPartition {
                leader
            } else {
                standby
            };
            let node = &cluster.nodes[victim];
            node.host.partition(node.exporter.port())?;
            std::thread::sleep(timing.beyond_ttl());
            node.host.heal()?;
        }
        Scenario::ConsulLeaderKill => {
            let l = wait::until(limit, "a Consul leader", || cluster.servers.leader())?;
            let probe = outage_probe(cluster.nodes[leader].agent.url.clone(), now_ms());
            cluster.servers.agents[l].kill();
            seen.consul_outage_ms = probe.join().ok().flatten();
            std::thread::sleep(timing.beyond_ttl());
        }
        Scenario::QuorumLossShort | Scenario::QuorumLossLong => {
            let l = wait::until(limit, "a Consul leader", || cluster.servers.leader())?;
            let paused: Vec<i32> = [l, (l + 1) % 3]
                .iter()
                .filter_map(|i| cluster.servers.agents[*i].pid())
                .collect();
            let start = now_ms();
            for p in &paused {
                signal(*p, Signal::SIGSTOP);
            }
            let probe = outage_probe(cluster.nodes[leader].agent.url.clone(), start);
            std::thread::sleep(if scenario == Scenario::QuorumLossShort {
                timing.survivable_outage() / 2
            } else {
                timing.beyond_ttl()
            });
            for p in &paused {
                signal(*p, Signal::SIGCONT);
            }
            seen.consul_outage_ms = probe.join().ok().flatten();
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
            for n in &cluster.nodes {
                n.proxy.set_delay(delay);
            }
            std::thread::sleep(timing.beyond_ttl());
            for n in &cluster.nodes {
                n.proxy.set_delay(Duration::ZERO);
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
        Scenario::AgentLeave => restart_agent(&mut cluster.nodes[leader].agent, true)?,
        Scenario::AgentKill => restart_agent(&mut cluster.nodes[leader].agent, false)?,
        Scenario::KeyDelete => {
            http_delete(&key_url(cluster)).map_err(anyhow::Error::msg)?;
        }
        Scenario::KeyOverwrite => {
            let body = serde_json::json!({
                "Hostname": "outsider", "NodeId": "outsider", "Account": cluster.account,
                "Session": "", "Seq": 1u64 << 40, "State": "active", "Horizon": 0,
            });
            http_put(&key_url(cluster), &body.to_string()).map_err(anyhow::Error::msg)?;
        }
        Scenario::KeyStolen => steal_key(cluster).context("the outsider's theft")?,
        Scenario::HostFreeze | Scenario::HostResume | Scenario::StallHostFreeze => {
            let node = &cluster.nodes[leader];
            let pids = [
                node.agent.pid(),
                node.pid(),
                node.guard_pid(),
                node.neard_pid(),
            ];
            anyhow::ensure!(pids.iter().all(Option::is_some), "host pids: {pids:?}");
            for pid in pids.into_iter().flatten() {
                signal(pid, Signal::SIGSTOP);
            }
            // Held (the host is lost) until the standby signs; 12 resumes it only in `thaw`.
            let _ = wait::until(limit, "the standby to sign", || {
                if cluster.signed_after(standby, t0) {
                    Ok(())
                } else {
                    Err(cluster.states())
                }
            });
            if scenario == Scenario::HostResume {
                for pid in pids.into_iter().rev().flatten() {
                    signal(pid, Signal::SIGCONT);
                }
            }
        }
        Scenario::GuardStop | Scenario::GuardKill => {
            let node = &cluster.nodes[leader];
            let guard = node.guard_pid().context("leader's guard pid")?;
            let sig = if scenario == Scenario::GuardStop {
                Signal::SIGSTOP
            } else {
                Signal::SIGKILL
            };
            signal(guard, sig);
            let replaced = cluster.until(
                limit,
                "the leader to step down and replace its guard",
                || {
                    let step_downs =
                        node.metric_sum("kuutamod_step_downs_total{reason=\"guard_lost\"}")?;
                    match node.guard_pid() {
                        Some(g) if g != guard && step_downs >= 1.0 => Ok(g),
                        other => Err(format!(
                            "guard {other:?}, guard_lost step-downs {step_downs}"
                        )),
                    }
                },
            );
            if let Err(e) = replaced {
                seen.failures
                    .push(format!("{e:#}").lines().next().unwrap_or("").to_string());
            }
            if crate::procs::alive(guard) {
                // kuutamod left the silenced guard behind: not a failure of the fence (the
                // new guard is armed), but worth knowing.
                eprintln!(
                    "note: {}: the old guard (pid {guard}) still exists",
                    scenario.name()
                );
                signal(guard, Signal::SIGKILL);
            }
        }
        Scenario::CrashLoop | Scenario::WrongAccount | Scenario::ElectionRace => {
            unreachable!("handled elsewhere")
        }
    }
    Ok(seen)
}

/// 15b: `kuutamoctl pause`, then the leader's neard SIGKILLed; for 2 x TTL + 1 s nobody may
/// sign or validate (no takeover, no neard restart); then `kuutamoctl resume`, after which a
/// node must validate again (the run's recovery check).
fn pause_neard_kill(
    cluster: &Cluster,
    leader: usize,
    standby: usize,
    timing: &Timing,
    seen: &mut Observed,
) -> anyhow::Result<()> {
    cluster.pause(timing.limit())?;
    let pid = cluster.nodes[leader]
        .neard_pid()
        .context("leader's neard pid")?;
    let killed = now_ms();
    signal(pid, Signal::SIGKILL);
    std::thread::sleep(timing.beyond_ttl());
    let resumed = now_ms();
    let signed: Vec<String> = cluster
        .entries()
        .iter()
        .filter(|e| e.time_ms > killed && e.time_ms < resumed)
        .map(|e| format!("{} at {}", e.node, e.height))
        .take(5)
        .collect();
    if !signed.is_empty() {
        seen.failures
            .push(format!("signed while paused after the crash: {signed:?}"));
    }
    if cluster.nodes[standby].state().as_deref() == Ok("Validating") {
        seen.failures
            .push("the standby validated while paused".to_string());
    }
    let (code, out) = cluster.kuutamoctl(&["resume"])?;
    anyhow::ensure!(code == 0, "kuutamoctl resume exited {code}: {out}");
    Ok(())
}

/// 11e: one transaction deletes the key and locks it with an outsider's session (created on
/// a server's node, no checks, a TTL longer than the run) that never writes again.
fn steal_key(cluster: &Cluster) -> anyhow::Result<()> {
    let server = cluster.servers.url();
    let body = serde_json::json!({
        "Name": "outsider", "TTL": OUTSIDER_SESSION_TTL, "Behavior": "release",
        "LockDelay": "0s", "NodeChecks": [],
    });
    let created = http_put(&format!("{server}/v1/session/create"), &body.to_string())
        .map_err(anyhow::Error::msg)?;
    let id = serde_json::from_str::<serde_json::Value>(&created)?["ID"]
        .as_str()
        .context("session id")?
        .to_string();
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let key = cluster.lock_key();
    let txn = serde_json::json!([
        {"KV": {"Verb": "delete", "Key": key}},
        {"KV": {"Verb": "lock", "Key": key, "Value": b64("outsider"), "Session": id}},
    ]);
    http_put(&format!("{server}/v1/txn"), &txn.to_string()).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// 13d: the leader's host cut off until just after its lease step-down; from the step-down
/// on, its neard aborts at every start. The standby must sign within 2 x TTL of the step-down
/// (plus a neard boot in restart mode), and the crashing neard must be started at most
/// [`MAX_STARTS_PER_MIN`] times a minute.
fn crash_loop(f: &Fault<'_>, seen: &mut Observed) -> anyhow::Result<()> {
    let cluster: &Cluster = f.cluster;
    let (leader, standby, t0, timing, mode) = (f.leader, f.standby, f.t0, f.timing, f.mode);
    let node = &cluster.nodes[leader];
    let lease_expired = "kuutamod_step_downs_total{reason=\"lease_expired\"}";
    node.host.partition(node.exporter.port())?;
    let step_down = cluster.until(
        timing.limit(),
        "the leader's lease step-down",
        || match node.metric_sum(lease_expired) {
            Ok(v) if v >= 1.0 => Ok((now_ms(), node.metric_sum("kuutamod_neard_restarts")?)),
            other => Err(format!("{other:?}")),
        },
    );
    node.control(&Control {
        abort: true,
        ..Control::default()
    })?;
    let heal_at = t0 + (timing.step_down_after() + JUST_LONGER).as_millis() as u64;
    std::thread::sleep(Duration::from_millis(heal_at.saturating_sub(now_ms())));
    node.host.heal()?;
    let (step_down, restarts0) = step_down?;
    let bound = timing.ttl * 2 + timing.boot(mode);
    match cluster.wait_for_signing(standby, t0, timing.limit()) {
        Ok(first) => {
            seen.bounded = Some((bound.as_millis() as u64, first.saturating_sub(step_down)))
        }
        Err(_) => seen.failures.push("the standby never signed".into()),
    }
    std::thread::sleep(
        timing
            .crash_window
            .saturating_sub(Duration::from_millis(now_ms() - step_down)),
    );
    let restarts1 = node
        .metric_sum("kuutamod_neard_restarts")
        .map_err(anyhow::Error::msg)?;
    let minutes = (now_ms() - step_down) as f64 / 60_000.0;
    let per_min = (restarts1 - restarts0) / minutes;
    seen.neard_starts_per_min = Some(per_min);
    if per_min > MAX_STARTS_PER_MIN {
        seen.failures.push(format!(
            "the crashing neard was started {per_min:.1} times a minute (at most {MAX_STARTS_PER_MIN})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(height: u64, time_ms: u64, produced: bool) -> Line {
        Line {
            height,
            time_ms,
            epoch: 0,
            block_producer: "v1".into(),
            produced,
            chunks: Vec::new(),
        }
    }

    #[test]
    fn the_longest_stall_counts_from_the_last_block_before_the_window_to_its_end() {
        let lines = [
            line(1, 100, true),
            line(2, 1000, false),
            line(3, 1000, true),
            line(4, 1100, true),
        ];
        // 100 -> 1000 (900 ms), 1000 -> 1100, then 1100 -> the end at 1500 (400 ms).
        assert_eq!(longest_stall(&lines, 500, 1500), Some(900));
        // Nothing decided after 1100: the stall runs to the end.
        assert_eq!(longest_stall(&lines, 1200, 3000), Some(1900));
        // No block before the window: unknown.
        assert_eq!(longest_stall(&lines, 50, 3000), None);
    }

    fn entry(node: &str, time_ms: u64) -> Entry {
        Entry {
            height: time_ms / 10,
            node: node.into(),
            account: "a".into(),
            public_key: "k".into(),
            time_ms,
            kind: None,
            approval: None,
            shard: None,
            parent_hash: None,
            parent_height: None,
            content: None,
        }
    }

    #[test]
    fn the_signing_gap_is_the_old_leaders_last_signature_to_the_new_leaders_first() {
        let entries = [
            entry("old", 100),
            entry("old", 200),
            entry("new", 450),
            entry("old", 500),
            entry("new", 600),
        ];
        assert_eq!(signing_gap(&entries, "old", 150), Some(250));
        assert_eq!(signing_gap(&entries, "old", 600), None);
        assert_eq!(signing_gap(&entries, "nobody", 0), None);
    }
}
