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
}

impl Mutation {
    /// Every mutation, with its command-line name.
    pub const ALL: [(&'static str, Mutation); 11] = [
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
        !self.machine().eq(&Mutations::default())
    }

    /// The conductor's fixes it switches off.
    pub(super) fn conductor(self) -> ConductorMutations {
        ConductorMutations::default()
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
            _ => {}
        }
        m
    }
}
