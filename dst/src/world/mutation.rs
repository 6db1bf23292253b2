//! The fixes a run may switch off (`--mutation`): kuutamod's own [`Mutations`], and the
//! harness-level ones the simulated environment models, each with its command-line name.

use kuutamod::machine::Mutations;
use kuutamod::supervisor::conductor::ConductorMutations;

/// A fix switched off: one of kuutamod's [`Mutations`], or a harness-level one that the
/// simulated environment models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mutation {
    /// None: the daemon as it is.
    #[default]
    None,
    /// `Mutations::no_standby_wait`.
    NoStandbyWait,
    /// `Mutations::leader_ignores_key` with `Mutations::lease_from_renew`.
    LeaderIgnoresKey,
    /// `Mutations::keep_lock_after_step_down`.
    KeepLockAfterStepDown,
    /// `Mutations::timeout_fence`.
    TimeoutFence,
    /// `Mutations::no_guard_ack`.
    NoGuardAck,
    /// The guard runs in kuutamod's process group: a group stop stops both.
    GuardInGroup,
    /// Orders block kuutamod while the guard's pipe is full (with `no_guard_ack`, as before
    /// the guard acknowledged orders).
    BlockingGuardPipe,
    /// kuutamod's deadlines and the guard's timer on `CLOCK_MONOTONIC`, no suspend detection.
    MonotonicDeadlines,
    /// One node is configured with a mistyped account (another lock key) and our key.
    AccountTypo,
    /// `Mutations::no_inherited_horizon`.
    NoInheritedHorizon,
    /// neard does not die with its guard (no parent-death signal on that link): issue #21, a
    /// guard killed while kuutamod is stopped leaves neard running with the key.
    NoGuardPdeathsig,
    /// `Mutations::no_progress_rule`: a lock holder that cannot sign keeps the lock (#19).
    NoProgressRule,
    /// `ConductorMutations::peers_by_wall_clock`: peers' records judged by their writers' wall
    /// clocks (#19).
    PeersByWallClock,
    /// `Mutations::caught_up_any_tip`: the fence's "caught up" rule trusts any wall clock and
    /// any tip (#19).
    CaughtUpAnyTip,
    /// `Mutations::release_races_heartbeat`: a release does not wait for the heartbeat on its
    /// way, and a node gives its own key back only while its neard is in sync (#19).
    ReleaseRacesHeartbeat,
    /// `Mutations::switchover_without_identity`: every validating node acts on a switchover
    /// request, whose target the new leader picks (#20).
    SwitchoverWithoutIdentity,
    /// `Mutations::pause_during_switchover`: `pause` not refused during a switchover, and its
    /// successor not taking the lock in a paused cluster (#20).
    PauseDuringSwitchover,
    /// `Mutations::trust_rewound_records`: no lock memory (#21).
    TrustRewoundRecords,
    /// `Mutations::blind_after_restore`: after a snapshot restore, a refused give-back or
    /// acquisition is not followed by a fresh read, and a rewind does not forget the verdict of
    /// an index (this work, found with the restore fault).
    BlindAfterRestore,
    /// `Mutations::keep_stale_session`: a session not renewed for a TTL is used on (found by
    /// the simulation, seed 157122: a resurrected session after a restore).
    KeepStaleSession,
    /// `Mutations::rejoin_trusts_records`: a node back from a gap trusts the key's records
    /// (found by the simulation, seed 182868: a restore erased a term the node never saw).
    RejoinTrustsRecords,
    /// `ConductorMutations::records_overtake`: a status record written by a request of its
    /// own, so that an older one may land last (the supervisor bug fixed in 4d88641).
    RecordsOvertake,
    /// `Mutations::forget_reload_counter`: a poll without `/metrics` forgets the reload
    /// counter (the supervisor bug fixed in 12b05d9).
    ForgetReloadCounter,
    /// `ConductorMutations::metrics_once_per_interval`: a new neard's first poll without
    /// `/metrics` when they were read within five seconds (this work).
    MetricsOncePerInterval,
}

impl Mutation {
    /// Every mutation, with its command-line name.
    pub const ALL: [(&'static str, Mutation); 24] = [
        ("no-standby-wait", Mutation::NoStandbyWait),
        ("leader-ignores-key", Mutation::LeaderIgnoresKey),
        ("keep-lock-after-step-down", Mutation::KeepLockAfterStepDown),
        ("timeout-fence", Mutation::TimeoutFence),
        ("no-guard-ack", Mutation::NoGuardAck),
        ("guard-in-group", Mutation::GuardInGroup),
        ("blocking-guard-pipe", Mutation::BlockingGuardPipe),
        ("monotonic-deadlines", Mutation::MonotonicDeadlines),
        ("account-typo", Mutation::AccountTypo),
        ("no-inherited-horizon", Mutation::NoInheritedHorizon),
        ("no-guard-pdeathsig", Mutation::NoGuardPdeathsig),
        ("no-progress-rule", Mutation::NoProgressRule),
        ("peers-by-wall-clock", Mutation::PeersByWallClock),
        ("caught-up-any-tip", Mutation::CaughtUpAnyTip),
        ("release-races-heartbeat", Mutation::ReleaseRacesHeartbeat),
        (
            "switchover-without-identity",
            Mutation::SwitchoverWithoutIdentity,
        ),
        ("pause-during-switchover", Mutation::PauseDuringSwitchover),
        ("trust-rewound-records", Mutation::TrustRewoundRecords),
        ("blind-after-restore", Mutation::BlindAfterRestore),
        ("keep-stale-session", Mutation::KeepStaleSession),
        ("rejoin-trusts-records", Mutation::RejoinTrustsRecords),
        ("records-overtake", Mutation::RecordsOvertake),
        ("forget-reload-counter", Mutation::ForgetReloadCounter),
        (
            "metrics-once-per-interval",
            Mutation::MetricsOncePerInterval,
        ),
    ];

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Mutation> {
        if name == "none" {
            return Some(Mutation::None);
        }
        Mutation::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Mutation::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("none", |(n, _)| n)
    }

    /// Whether it needs kuutamod built with its `mutations` feature.
    pub fn needs_feature(self) -> bool {
        self.machine() != Mutations::default() || self.conductor() != ConductorMutations::default()
    }

    /// The conductor's fixes it switches off.
    pub(super) fn conductor(self) -> ConductorMutations {
        let mut m = ConductorMutations::default();
        match self {
            Mutation::RecordsOvertake => m.records_overtake = true,
            Mutation::MetricsOncePerInterval => m.metrics_once_per_interval = true,
            Mutation::PeersByWallClock => m.peers_by_wall_clock = true,
            _ => {}
        }
        m
    }

    pub(super) fn machine(self) -> Mutations {
        let mut m = Mutations::default();
        match self {
            Mutation::NoStandbyWait => m.no_standby_wait = true,
            // The hole as it was: the old leader never looked at its key, and its lease ran
            // from its session renewals (which a deleted or overwritten key does not stop).
            Mutation::LeaderIgnoresKey => {
                m.leader_ignores_key = true;
                m.lease_from_renew = true;
            }
            Mutation::KeepLockAfterStepDown => m.keep_lock_after_step_down = true,
            Mutation::TimeoutFence => m.timeout_fence = true,
            Mutation::NoGuardAck | Mutation::BlockingGuardPipe => m.no_guard_ack = true,
            Mutation::NoInheritedHorizon => m.no_inherited_horizon = true,
            Mutation::NoProgressRule => m.no_progress_rule = true,
            Mutation::CaughtUpAnyTip => m.caught_up_any_tip = true,
            Mutation::ReleaseRacesHeartbeat => m.release_races_heartbeat = true,
            Mutation::SwitchoverWithoutIdentity => m.switchover_without_identity = true,
            Mutation::PauseDuringSwitchover => m.pause_during_switchover = true,
            Mutation::TrustRewoundRecords => m.trust_rewound_records = true,
            Mutation::BlindAfterRestore => m.blind_after_restore = true,
            Mutation::KeepStaleSession => m.keep_stale_session = true,
            Mutation::RejoinTrustsRecords => m.rejoin_trusts_records = true,
            Mutation::ForgetReloadCounter => m.forget_reload_counter = true,
            _ => {}
        }
        m
    }
}
