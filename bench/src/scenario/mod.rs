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
//!
//! # Layout
//!
//! This file is the catalogue: the scenarios, their names and properties, and the timing a
//! run derives its bounds from.
//!
//! - `run`: one run of a scenario: the cluster, the steady state, the fault, the recovery, the
//!   oracle's verdict.
//! - `inject`: each scenario's fault: how it is injected, held and healed, and what the
//!   injection itself observed.
//! - `measure`: what a run measured ([`RunResult`]) and the measures taken from the ledger and
//!   the chain log.

mod inject;
mod measure;
mod operator;
mod restore;
mod run;

use std::time::Duration;

use serde::Serialize;

pub use inject::MAX_STARTS_PER_MIN;
pub use measure::{longest_silence, longest_stall, signing_gap, RunResult};
pub use run::World;

/// Extra time beyond the TTL-derived bounds a fault is held, so it outlasts the lease.
const BEYOND_TTL: Duration = Duration::from_secs(1);

/// 13e: how soon after the freeze the guard is killed ("just after").
const JUST_AFTER_FREEZE: Duration = Duration::from_millis(100);

/// 13g: how long before the earliest moment the guard's deadline can come the guard is killed
/// ("just before"), so that it surely has not acted yet.
const JUST_BEFORE_DEADLINE: Duration = Duration::from_millis(200);

/// Slack for start-up and recovery beyond what the timing predicts (a shared 2-core machine).
const SLACK: Duration = Duration::from_secs(30);

/// The wall-clock offset of 16d and 16e: ten minutes.
const WALL_OFFSET_MS: i64 = 600_000;

/// Extra time a stalled chain may take to resume under a new leader: its fence waits until the
/// new leader's own target outruns everything the old leader could have signed while its
/// horizon was stale, one target per `min_block_production_delay` of staleness, and in a stall
/// those targets come only by skips, one per `max_block_wait_delay` at most (600 ms at the
/// sped-up timers). Measured and reported, not a pass/fail bound.
const STALL_RECOVERY: Duration = Duration::from_secs(120);

/// One scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// 1: SIGKILL of the leader's neard.
    NeardKill,
    /// 2: SIGTERM of the leader's kuutamod (graceful hand-over).
    KuutamodTerm,
    /// 3: SIGKILL of the leader's kuutamod (host loss; its guard dies with it, and neard with
    /// the guard).
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
    /// 13e-g (issue #21): `kill -STOP -<pgid>` of the leader's kuutamod, its guard SIGKILLed
    /// during the freeze (just after it, halfway to the guard's deadline, just before it), and
    /// SIGCONT after 2 x TTL + 1 s: neard must die with its guard.
    FreezeGuardKill(KillAt),
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
    /// 16a: the leader key deleted; as soon as the standby holds the absent key (and must wait a
    /// TTL), its neard reports syncing: it must give the lock to the old leader, ready again.
    PromotingSyncs,
    /// 16b: the leader's neard's head stops advancing while `/status` says it is in sync: the
    /// standby, whose head moves on, must take over.
    FrozenHead,
    /// 16g: the leader's neard receives the chain three seconds late (its head moves, but lags)
    /// while `/status` says it is in sync: the standby, ahead of it, must take over.
    LaggingLeader,
    /// 16c: the standby's neard is cut off from the chain (stuck, still "in sync"); the
    /// leader's neard is killed once; the stuck standby takes the lock and must give it back
    /// to the old leader once that one is ready again.
    StandbyBehind,
    /// 16d: 16c with the old leader's kuutamod wall clock ten minutes slow.
    BehindSlowClock,
    /// 16e: 16c with the old leader's kuutamod wall clock ten minutes fast.
    BehindFastClock,
    /// 16f: both nodes run with one `KUUTAMO_NODE_ID`: the conflict must be reported
    /// (`kuutamod_node_id_conflict`), and a crash of the leader's neard still taken over.
    SameNodeId,
    /// 17a: `kuutamoctl switchover --wait` without `--to`: one hand-over to the target chosen
    /// when it was asked, no hand-over back.
    SwitchoverAny,
    /// 17b: `switchover --to <standby>`, then at once `pause`: never a released lock nobody
    /// may take.
    SwitchoverThenPause,
    /// 17c: the leader's neard crashes while its `switchover --in-window --wait` waits.
    SwitchoverCrash,
    /// 17d: three nodes; two `switchover --wait` at once to different targets: one is
    /// carried out, the other refused.
    TwoSwitchovers,
    /// 17e: `switchover --to <standby> --wait`, the standby killed at once: the lock comes back.
    SwitchoverTargetDies,
    /// 17f: SIGUSR1 to the leader and `switchover --in-window --wait` at once.
    SwitchoverAndSigusr1,
    /// 17g: the leader's neard killed, `pause` at once, `resume` a TTL later.
    PauseDuringTakeover,
    /// 17h: `switchover --to <standby> --wait`, the standby restarted with priority 0 at once.
    SwitchoverPriorityZero,
    /// 18a: a Consul snapshot holding a released record of an earlier term is restored while
    /// the standby is stopped; the standby starts right after.
    RestoreStandbyStopped,
    /// 18b: as 18a, with the leader's Consul agent also frozen at the restore.
    RestoreAgentFrozen,
    /// 19 (etcd): the store's whole history compacted away (to the current revision) while
    /// the leader validates: every watch's start revision is gone; nothing may change.
    EtcdCompaction,
    /// 12r (opt-in, not in [`ALL`]): the frozen host of 12 resumes once the standby signs,
    /// neard first (a VM resume wakes every process at once; neard first is the worst order).
    HostResume,
}

/// When 13e-g kill the guard of a frozen kuutamod ([`Timing::guard_kill_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillAt {
    /// 13e: just after the freeze.
    Early,
    /// 13f: halfway to the earliest moment the guard's deadline can come.
    Halfway,
    /// 13g: just before that moment.
    Late,
}

/// Scenarios run only when named (`--scenario 12r`): faults whose expectation is not settled.
pub const OPT_IN: [Scenario; 1] = [Scenario::HostResume];

/// CI's subset on etcd (`--backend etcd --quick`), once per mode: the failovers of a neard
/// crash, a killed kuutamod (its lease must expire) and a partitioned leader host (its member
/// in the minority), and etcd's own faults: the Raft leader member killed, quorum lost for
/// longer than a TTL, the leader's member killed and restarted, the record deleted, the
/// history compacted.
pub const ETCD_QUICK: [Scenario; 8] = [
    Scenario::NeardKill,
    Scenario::KuutamodKill,
    Scenario::LeaderPartition,
    Scenario::ConsulLeaderKill,
    Scenario::QuorumLossLong,
    Scenario::AgentKill,
    Scenario::KeyDelete,
    Scenario::EtcdCompaction,
];

/// Every scenario, in order.
pub const ALL: [Scenario; 54] = [
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
    Scenario::FreezeGuardKill(KillAt::Early),
    Scenario::FreezeGuardKill(KillAt::Halfway),
    Scenario::FreezeGuardKill(KillAt::Late),
    Scenario::SkipsNeardKill,
    Scenario::SkipsKuutamodKill,
    Scenario::StallHostFreeze,
    Scenario::HandOver,
    Scenario::Switchover,
    Scenario::PauseNeardKill,
    Scenario::PriorityZero,
    Scenario::PromotingSyncs,
    Scenario::FrozenHead,
    Scenario::StandbyBehind,
    Scenario::BehindSlowClock,
    Scenario::BehindFastClock,
    Scenario::SameNodeId,
    Scenario::LaggingLeader,
    Scenario::SwitchoverAny,
    Scenario::SwitchoverThenPause,
    Scenario::SwitchoverCrash,
    Scenario::TwoSwitchovers,
    Scenario::SwitchoverTargetDies,
    Scenario::SwitchoverAndSigusr1,
    Scenario::PauseDuringTakeover,
    Scenario::SwitchoverPriorityZero,
    Scenario::RestoreStandbyStopped,
    Scenario::RestoreAgentFrozen,
    Scenario::EtcdCompaction,
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
            Scenario::FreezeGuardKill(KillAt::Early) => "13e-freeze-guard-kill-early",
            Scenario::FreezeGuardKill(KillAt::Halfway) => "13f-freeze-guard-kill-halfway",
            Scenario::FreezeGuardKill(KillAt::Late) => "13g-freeze-guard-kill-late",
            Scenario::HostResume => "12r-host-resume",
            Scenario::SkipsNeardKill => "14a-skips-neard-kill",
            Scenario::SkipsKuutamodKill => "14b-skips-kuutamod-kill",
            Scenario::StallHostFreeze => "14c-stall-host-freeze",
            Scenario::HandOver => "14d-hand-over",
            Scenario::Switchover => "15a-switchover",
            Scenario::PauseNeardKill => "15b-pause-neard-kill",
            Scenario::PriorityZero => "15c-priority-zero",
            Scenario::PromotingSyncs => "16a-promoting-syncs",
            Scenario::FrozenHead => "16b-frozen-head",
            Scenario::StandbyBehind => "16c-standby-behind",
            Scenario::BehindSlowClock => "16d-behind-slow-clock",
            Scenario::BehindFastClock => "16e-behind-fast-clock",
            Scenario::SameNodeId => "16f-same-node-id",
            Scenario::LaggingLeader => "16g-lagging-leader",
            Scenario::SwitchoverAny => "17a-switchover-any",
            Scenario::SwitchoverThenPause => "17b-switchover-then-pause",
            Scenario::SwitchoverCrash => "17c-switchover-crash",
            Scenario::TwoSwitchovers => "17d-two-switchovers",
            Scenario::SwitchoverTargetDies => "17e-switchover-target-dies",
            Scenario::SwitchoverAndSigusr1 => "17f-switchover-sigusr1",
            Scenario::PauseDuringTakeover => "17g-pause-during-takeover",
            Scenario::SwitchoverPriorityZero => "17h-switchover-priority-zero",
            Scenario::RestoreStandbyStopped => "18a-restore-standby-stopped",
            Scenario::RestoreAgentFrozen => "18b-restore-agent-frozen",
            Scenario::EtcdCompaction => "19-etcd-compaction",
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
                | Scenario::FreezeGuardKill(_)
                | Scenario::FrozenHead
                | Scenario::LaggingLeader
                | Scenario::SameNodeId
        )
    }

    /// The liveness scenarios of 16a-e and 16g: a lock holder that cannot sign while another node is
    /// ready. Each run measures the time from the holder's last progress to the ready node's
    /// first signature against [`Timing::liveness_bound`], and fails over it.
    pub fn liveness(self) -> bool {
        matches!(
            self,
            Scenario::PromotingSyncs
                | Scenario::FrozenHead
                | Scenario::LaggingLeader
                | Scenario::StandbyBehind
                | Scenario::BehindSlowClock
                | Scenario::BehindFastClock
        )
    }

    /// The operator scenarios of 17a-h ([`operator`]).
    fn operator(self) -> bool {
        matches!(
            self,
            Scenario::SwitchoverAny
                | Scenario::SwitchoverThenPause
                | Scenario::SwitchoverCrash
                | Scenario::TwoSwitchovers
                | Scenario::SwitchoverTargetDies
                | Scenario::SwitchoverAndSigusr1
                | Scenario::PauseDuringTakeover
                | Scenario::SwitchoverPriorityZero
        )
    }

    /// The Consul restore scenarios of 18a-b.
    fn restore(self) -> bool {
        matches!(
            self,
            Scenario::RestoreStandbyStopped | Scenario::RestoreAgentFrozen
        )
    }

    /// 16c-e: node 0 is started first, so that it leads (and carries the clock offset).
    fn node0_leads(self) -> bool {
        matches!(
            self,
            Scenario::StandbyBehind | Scenario::BehindSlowClock | Scenario::BehindFastClock
        )
    }

    /// How far node 0's kuutamod's wall clock is off (ms), for 16d and 16e.
    fn node0_clock(self) -> i64 {
        match self {
            Scenario::BehindSlowClock => -WALL_OFFSET_MS,
            Scenario::BehindFastClock => WALL_OFFSET_MS,
            _ => 0,
        }
    }

    /// Whether the scenario runs on etcd (`etcd`) or on Consul: the Consul snapshot restores
    /// (18a-b) are Consul's, the compaction (19) etcd's; every other fault has its
    /// counterpart (a Consul agent restarted is the host's etcd member restarted, the Consul
    /// leader server killed the Raft leader member).
    pub fn runs_on(self, etcd: bool) -> bool {
        match self {
            Scenario::RestoreStandbyStopped | Scenario::RestoreAgentFrozen => !etcd,
            Scenario::EtcdCompaction => etcd,
            _ => true,
        }
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
    /// kuutamod's own timing for this TTL and stop grace (`kuutamod::timing`): the bench takes
    /// every interval and deadline of the daemon from there, never re-derives one.
    pub fn daemon(&self) -> kuutamod::timing::Timing {
        kuutamod::timing::Timing::new(self.ttl, self.stop_grace)
            .unwrap_or_else(|e| panic!("the bench's own TTL and stop grace: {e}"))
    }

    /// The leader's heartbeat interval (a standby's TTL/3 check of the key, too).
    pub fn heartbeat_interval(&self) -> Duration {
        self.daemon().heartbeat_interval
    }

    /// kuutamod's step-down deadline after the last acknowledged heartbeat was sent.
    pub fn step_down_after(&self) -> Duration {
        self.daemon().step_down_after
    }

    /// The longest Consul outage the leader survives whatever its heartbeat phase: its last
    /// acknowledged heartbeat may have been sent up to one interval before the outage began.
    pub fn survivable_outage(&self) -> Duration {
        self.step_down_after()
            .saturating_sub(self.heartbeat_interval())
    }

    /// A fault held past the lease: 2 x TTL + 1 s.
    pub fn beyond_ttl(&self) -> Duration {
        self.ttl * 2 + BEYOND_TTL
    }

    /// The guard kills neard this long after the last acknowledged heartbeat was sent: the
    /// step-down deadline plus the stop grace.
    pub fn guard_after(&self) -> Duration {
        self.daemon().guard_after
    }

    /// The earliest moment, after a freeze of kuutamod, at which its guard's deadline can come:
    /// the last acknowledged heartbeat was sent at most one heartbeat interval before.
    pub fn earliest_guard_deadline(&self) -> Duration {
        self.guard_after().saturating_sub(self.heartbeat_interval())
    }

    /// How long after freezing kuutamod 13e-g kill its guard: always before the guard could
    /// have acted on its deadline.
    pub fn guard_kill_after(&self, at: KillAt) -> Duration {
        let earliest = self.earliest_guard_deadline();
        match at {
            KillAt::Early => JUST_AFTER_FREEZE,
            KillAt::Halfway => earliest / 2,
            KillAt::Late => earliest.saturating_sub(JUST_BEFORE_DEADLINE),
        }
    }

    /// Takeover bound after host loss: 1.3 x TTL, plus neard's boot in restart mode.
    pub fn host_loss_bound(&self, mode: &str) -> Duration {
        self.ttl * 13 / 10 + self.boot(mode)
    }

    /// The liveness bound (docs/failover.md, "Liveness"): from the moment a lock holder stops
    /// making progress (with a ready node) to the ready node's first signature, 1.5 x TTL plus
    /// that node's own promotion (`took`: its height fence's wait and the hot swap, or
    /// neard's boot in restart mode).
    pub fn liveness_bound(&self, took: Duration) -> Duration {
        self.ttl * 3 / 2 + took
    }

    /// neard's boot when the mode restarts it for a promotion.
    pub(super) fn boot(&self, mode: &str) -> Duration {
        if mode == "restart" {
            Duration::from_millis(self.boot_delay_ms)
        } else {
            Duration::ZERO
        }
    }

    pub(super) fn limit(&self) -> Duration {
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
