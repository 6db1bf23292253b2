//! kuutamod's decisions, as a pure state machine: [`Machine::step`] takes an event (and the
//! current monotonic time) and returns the new state and the actions to carry out, in order.
//! It does no I/O, so unit tests drive it without processes, sockets or sleeps; the
//! [`supervisor`](crate::supervisor) feeds it events and carries out its actions.
//!
//! Order within one step's actions is part of the safety argument: whenever the node gives up
//! the validator role, the action that stops neard from validating ([`Action::Demote`] or
//! [`Action::StopNeard`]) comes before [`Action::DestroySession`], which lets another node take
//! the lock at once.

use std::time::Duration;

use tokio::time::Instant;

use crate::neard::Role;

/// kuutamod's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// neard was (re)started and has not answered `/status` yet.
    Startup,
    /// neard answers but is not in sync with the network.
    Syncing,
    /// neard is in sync; a Consul session is being created.
    Registering,
    /// A session exists; this node is a standby, watching the leader key.
    Voting,
    /// This node holds the lock; its neard has the validator key.
    Validating,
    /// Stopping.
    Shutdown,
}

impl State {
    /// Every state, in order.
    pub const ALL: [State; 6] = [
        State::Startup,
        State::Syncing,
        State::Registering,
        State::Voting,
        State::Validating,
        State::Shutdown,
    ];

    /// The name used in logs and in `kuutamod_state{type=...}`.
    pub fn name(self) -> &'static str {
        match self {
            State::Startup => "Startup",
            State::Syncing => "Syncing",
            State::Registering => "Registering",
            State::Voting => "Voting",
            State::Validating => "Validating",
            State::Shutdown => "Shutdown",
        }
    }
}

/// What the last `/status` poll said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeardStatus {
    /// Answered, not syncing.
    Synced,
    /// Answered, `sync_info.syncing` is true.
    Syncing,
    /// No answer in time, an error status, or garbage.
    Failed,
}

/// Inputs to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A `/status` poll result.
    Status(NeardStatus),
    /// neard was (re)started.
    NeardStarted,
    /// neard exited (crashed or was killed from outside).
    NeardExited,
    /// The session was created.
    SessionCreated,
    /// Creating the session failed (Consul unreachable); retried on a later status.
    SessionFailed,
    /// Consul says the session no longer exists.
    SessionGone,
    /// The leader could not renew its session before its own step-down deadline.
    LeaseExpired,
    /// The watch of the leader key saw it free (`true`) or held (`false`).
    LockObserved {
        /// No session holds the key.
        free: bool,
    },
    /// Result of [`Action::TryAcquire`]: whether this node holds the lock now.
    Acquired(bool),
    /// [`Action::TryAcquire`] could not reach a verdict (Consul error); retried later.
    AcquireFailed,
    /// SIGTERM or SIGINT.
    Shutdown,
    /// SIGUSR1: a leader hands the lock over and stays a voter, not acquiring again for the
    /// hand-over hold-off.
    HandOver,
}

/// What the supervisor must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Prepare the home for the role and start neard (it is not running).
    StartNeard(Role),
    /// Stop neard (SIGTERM, SIGKILL after the grace, reap) and remove the validator key.
    StopNeard,
    /// Make neard the validator (restart with the key, or hot swap).
    Promote,
    /// Make neard stop validating, provably, before the next action: restart it as voter, or
    /// hot-swap the key out with confirmation, falling back to killing it.
    Demote,
    /// Create a Consul session.
    CreateSession,
    /// Destroy the session (releasing the lock).
    DestroySession,
    /// Renew the session, then try to acquire the lock; reports [`Event::Acquired`].
    TryAcquire,
    /// Exit the process (status 0).
    Exit,
}

/// Settings of the machine.
#[derive(Debug, Clone, Copy)]
pub struct MachineConfig {
    /// How long a validating neard may report syncing before stepping down.
    pub syncing_grace: Duration,
    /// Consecutive failed `/status` polls that count as neard having failed.
    pub failure_limit: u32,
    /// Whether [`Action::Demote`] keeps neard running (hot swap); then a validating node demotes
    /// and releases the lock *before* stopping neard on shutdown, for a faster hand-over.
    pub demote_keeps_neard: bool,
    /// After a hand-over, how long this node does not try to take the lock back.
    pub handover_holdoff: Duration,
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// Actions to carry out, in order.
    pub actions: Vec<Action>,
    /// Why the state changed (for the log line), when it changed.
    pub reason: &'static str,
}

/// The machine.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    config: MachineConfig,
    status_failures: u32,
    answered_since_start: bool,
    neard_synced: bool,
    syncing_since: Option<Instant>,
    has_session: bool,
    session_pending: bool,
    lock_free: bool,
    acquire_pending: bool,
    holdoff_until: Option<Instant>,
    now: Instant,
}

impl Machine {
    /// A machine in `Startup`, with neard about to be started as voter.
    pub fn new(config: MachineConfig) -> Self {
        Machine {
            state: State::Startup,
            config,
            status_failures: 0,
            answered_since_start: false,
            neard_synced: false,
            syncing_since: None,
            has_session: false,
            session_pending: false,
            lock_free: false,
            acquire_pending: false,
            holdoff_until: None,
            now: Instant::now(),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether the machine believes a session exists.
    pub fn has_session(&self) -> bool {
        self.has_session
    }

    /// Feeds one event; returns the transition and the actions.
    pub fn step(&mut self, event: Event, now: Instant) -> Step {
        let from = self.state;
        self.now = now;
        let mut actions = Vec::new();
        let reason = self.decide(event, now, &mut actions);
        Step {
            from,
            to: self.state,
            actions,
            reason,
        }
    }

    /// Steps down from Validating: stop validating first, then release the lock.
    fn step_down(&mut self, to: State, actions: &mut Vec<Action>, demote: Action) {
        actions.push(demote);
        if self.has_session {
            actions.push(Action::DestroySession);
            self.has_session = false;
        }
        self.session_pending = false;
        self.acquire_pending = false;
        self.state = to;
    }

    fn maybe_acquire(&mut self, actions: &mut Vec<Action>) {
        if self.state == State::Voting
            && self.lock_free
            && self.neard_synced
            && self.has_session
            && !self.acquire_pending
            && self.holdoff_until.is_none_or(|h| self.now >= h)
        {
            self.acquire_pending = true;
            actions.push(Action::TryAcquire);
        }
    }

    fn maybe_register(&mut self, actions: &mut Vec<Action>) {
        if self.has_session {
            self.state = State::Voting;
            self.maybe_acquire(actions);
        } else {
            self.state = State::Registering;
            if !self.session_pending {
                self.session_pending = true;
                actions.push(Action::CreateSession);
            }
        }
    }

    fn decide(&mut self, event: Event, now: Instant, actions: &mut Vec<Action>) -> &'static str {
        use State::*;
        if self.state == Shutdown {
            return "";
        }
        match event {
            Event::Shutdown => {
                if self.state == Validating && self.config.demote_keeps_neard {
                    // Demote (confirmed) and release first, so the standby takes over without
                    // waiting for neard's shutdown.
                    actions.extend([Action::Demote, Action::DestroySession, Action::StopNeard]);
                } else {
                    actions.push(Action::StopNeard);
                    if self.has_session || self.session_pending {
                        actions.push(Action::DestroySession);
                    }
                }
                actions.push(Action::Exit);
                self.has_session = false;
                self.state = Shutdown;
                "asked to stop"
            }
            Event::HandOver => {
                if self.state != Validating {
                    return "";
                }
                self.holdoff_until = Some(now + self.config.handover_holdoff);
                self.step_down(Registering, actions, Action::Demote);
                "asked to hand over (SIGUSR1)"
            }
            Event::NeardStarted => {
                self.answered_since_start = false;
                self.neard_synced = false;
                self.status_failures = 0;
                self.syncing_since = None;
                ""
            }
            Event::NeardExited => {
                if self.state == Validating {
                    // neard is dead already; StopNeard reaps it and removes the key.
                    self.step_down(Startup, actions, Action::StopNeard);
                } else {
                    self.state = Startup;
                }
                actions.push(Action::StartNeard(Role::Voter));
                "neard exited"
            }
            Event::Status(NeardStatus::Failed) => {
                self.neard_synced = false;
                if !self.answered_since_start {
                    return ""; // still booting
                }
                self.status_failures += 1;
                if self.status_failures < self.config.failure_limit {
                    return "";
                }
                self.answered_since_start = false;
                self.status_failures = 0;
                match self.state {
                    Validating => {
                        self.step_down(Startup, actions, Action::StopNeard);
                        actions.push(Action::StartNeard(Role::Voter));
                        "neard's /status failed repeatedly"
                    }
                    Startup => "",
                    _ => {
                        self.state = Startup;
                        "neard's /status failed repeatedly"
                    }
                }
            }
            Event::Status(status) => {
                let synced = status == NeardStatus::Synced;
                self.answered_since_start = true;
                self.status_failures = 0;
                self.neard_synced = synced;
                match (self.state, synced) {
                    (Startup, false) => {
                        self.state = Syncing;
                        "neard answers /status and is syncing"
                    }
                    (Startup | Syncing, true) => {
                        self.maybe_register(actions);
                        "neard is in sync"
                    }
                    (Syncing, false) => "",
                    (Registering, true) => {
                        self.maybe_register(actions);
                        ""
                    }
                    (Voting, true) => {
                        self.maybe_acquire(actions);
                        ""
                    }
                    (Registering | Voting, false) => {
                        self.state = Syncing;
                        "neard reports syncing"
                    }
                    (Validating, true) => {
                        self.syncing_since = None;
                        ""
                    }
                    (Validating, false) => {
                        let since = *self.syncing_since.get_or_insert(now);
                        if now.duration_since(since) < self.config.syncing_grace {
                            return "";
                        }
                        self.syncing_since = None;
                        self.step_down(Syncing, actions, Action::Demote);
                        "neard kept reporting syncing past the syncing grace"
                    }
                    (Shutdown, _) => "",
                }
            }
            Event::SessionCreated => {
                self.session_pending = false;
                self.has_session = true;
                if self.state == Registering {
                    self.state = Voting;
                    self.maybe_acquire(actions);
                    "Consul session created"
                } else {
                    ""
                }
            }
            Event::SessionFailed => {
                self.session_pending = false;
                ""
            }
            Event::SessionGone => {
                self.has_session = false;
                self.acquire_pending = false;
                match self.state {
                    Validating => {
                        self.step_down(Registering, actions, Action::Demote);
                        "Consul says the session is gone"
                    }
                    Voting => {
                        self.state = Registering;
                        if self.neard_synced {
                            self.session_pending = true;
                            actions.push(Action::CreateSession);
                        }
                        "Consul says the session is gone"
                    }
                    _ => "",
                }
            }
            Event::LeaseExpired => {
                if self.state != Validating {
                    return "";
                }
                // The session may still exist: keep it, renewing decides. Never destroy it here:
                // Consul is probably unreachable, and the demotion alone is the fence. The lock
                // may still be held by this session, which no other node can take over: so
                // count it as free for this node, and acquire it again (after a fresh renew)
                // once neard is in sync, or learn from Consul that the session is gone.
                actions.push(Action::Demote);
                self.acquire_pending = false;
                self.lock_free = true;
                self.state = Voting;
                "the session could not be renewed before the step-down deadline"
            }
            Event::LockObserved { free } => {
                self.lock_free = free;
                self.maybe_acquire(actions);
                ""
            }
            Event::Acquired(true) => {
                self.acquire_pending = false;
                self.lock_free = false;
                if self.state == Voting {
                    self.state = Validating;
                    self.syncing_since = None;
                    actions.push(Action::Promote);
                    "acquired the leader lock"
                } else {
                    // The node left Voting while acquiring: give the lock back at once.
                    if self.has_session {
                        actions.push(Action::DestroySession);
                        self.has_session = false;
                    }
                    ""
                }
            }
            Event::Acquired(false) => {
                self.acquire_pending = false;
                self.lock_free = false;
                ""
            }
            Event::AcquireFailed => {
                self.acquire_pending = false;
                ""
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Event::*;
    use NeardStatus::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn machine() -> Machine {
        Machine::new(MachineConfig {
            syncing_grace: GRACE,
            failure_limit: 3,
            demote_keeps_neard: false,
            handover_holdoff: HOLDOFF,
        })
    }

    const HOLDOFF: Duration = Duration::from_secs(30);

    /// Feeds events and returns all actions of the last one.
    fn feed(m: &mut Machine, events: &[Event]) -> Vec<Action> {
        let now = Instant::now();
        let mut last = Vec::new();
        for e in events {
            last = m.step(*e, now).actions;
        }
        last
    }

    fn to_validating() -> Machine {
        let mut m = machine();
        assert_eq!(feed(&mut m, &[NeardStarted, Status(Failed)]), vec![]);
        assert_eq!(m.state(), State::Startup, "boot failures do not count");
        assert_eq!(feed(&mut m, &[Status(Syncing)]), vec![]);
        assert_eq!(m.state(), State::Syncing);
        assert_eq!(feed(&mut m, &[Status(Synced)]), vec![CreateSession]);
        assert_eq!(m.state(), State::Registering);
        assert_eq!(
            feed(&mut m, &[Status(Synced)]),
            vec![],
            "no second create while pending"
        );
        assert_eq!(feed(&mut m, &[SessionCreated]), vec![]);
        assert_eq!(m.state(), State::Voting);
        assert_eq!(
            feed(&mut m, &[LockObserved { free: true }]),
            vec![TryAcquire]
        );
        assert_eq!(
            feed(&mut m, &[Status(Synced)]),
            vec![],
            "one acquire at a time"
        );
        assert_eq!(feed(&mut m, &[Acquired(true)]), vec![Promote]);
        assert_eq!(m.state(), State::Validating);
        m
    }

    #[test]
    fn happy_path_reaches_validating() {
        to_validating();
    }

    #[test]
    fn lost_race_stays_voting_and_retries_when_free_again() {
        let mut m = machine();
        feed(&mut m, &[Status(Synced), SessionCreated]);
        assert_eq!(
            feed(&mut m, &[LockObserved { free: true }]),
            vec![TryAcquire]
        );
        assert_eq!(feed(&mut m, &[Acquired(false)]), vec![]);
        assert_eq!(
            feed(&mut m, &[Status(Synced)]),
            vec![],
            "held by another: no retry"
        );
        assert_eq!(
            feed(&mut m, &[LockObserved { free: true }]),
            vec![TryAcquire]
        );
        assert_eq!(
            feed(&mut m, &[AcquireFailed, Status(Synced)]),
            vec![TryAcquire]
        );
        assert_eq!(m.state(), State::Voting);
    }

    #[test]
    fn no_acquire_while_neard_is_not_synced() {
        let mut m = machine();
        feed(&mut m, &[Status(Synced), SessionCreated, Status(Syncing)]);
        assert_eq!(m.state(), State::Syncing);
        assert_eq!(feed(&mut m, &[LockObserved { free: true }]), vec![]);
        assert_eq!(feed(&mut m, &[Status(Synced)]), vec![TryAcquire]);
        assert_eq!(m.state(), State::Voting);
    }

    #[test]
    fn neard_exit_while_validating_stops_then_releases_then_restarts() {
        let mut m = to_validating();
        assert_eq!(
            feed(&mut m, &[NeardExited]),
            vec![StopNeard, DestroySession, StartNeard(Role::Voter)]
        );
        assert_eq!(m.state(), State::Startup);
        assert!(!m.has_session());
    }

    #[test]
    fn three_failed_polls_while_validating_step_down() {
        let mut m = to_validating();
        assert_eq!(
            feed(&mut m, &[Status(Synced), Status(Failed), Status(Failed)]),
            vec![]
        );
        assert_eq!(m.state(), State::Validating);
        assert_eq!(
            feed(&mut m, &[Status(Failed)]),
            vec![StopNeard, DestroySession, StartNeard(Role::Voter)]
        );
        assert_eq!(m.state(), State::Startup);
    }

    #[test]
    fn failures_must_be_consecutive() {
        let mut m = to_validating();
        feed(
            &mut m,
            &[
                Status(Synced),
                Status(Failed),
                Status(Failed),
                Status(Synced),
            ],
        );
        assert_eq!(feed(&mut m, &[Status(Failed), Status(Failed)]), vec![]);
        assert_eq!(m.state(), State::Validating);
    }

    #[test]
    fn voter_with_failing_status_goes_back_to_startup() {
        let mut m = machine();
        feed(&mut m, &[Status(Synced), SessionCreated]);
        feed(&mut m, &[Status(Failed), Status(Failed), Status(Failed)]);
        assert_eq!(m.state(), State::Startup);
        assert!(m.has_session(), "the session of a standby is kept");
        assert_eq!(feed(&mut m, &[Status(Synced)]), vec![]);
        assert_eq!(m.state(), State::Voting);
    }

    #[test]
    fn syncing_leader_steps_down_only_after_the_grace() {
        let mut m = to_validating();
        let t0 = Instant::now();
        assert_eq!(m.step(Status(Syncing), t0).actions, vec![]);
        assert_eq!(m.step(Status(Syncing), t0 + GRACE / 2).actions, vec![]);
        assert_eq!(m.state(), State::Validating);
        let step = m.step(Status(Syncing), t0 + GRACE);
        assert_eq!(step.actions, vec![Demote, DestroySession]);
        assert_eq!(step.to, State::Syncing);
    }

    #[test]
    fn syncing_grace_restarts_when_synced_again() {
        let mut m = to_validating();
        let t0 = Instant::now();
        m.step(Status(Syncing), t0);
        m.step(Status(Synced), t0 + GRACE / 2);
        assert_eq!(m.step(Status(Syncing), t0 + GRACE).actions, vec![]);
        assert_eq!(m.state(), State::Validating);
    }

    #[test]
    fn lease_expiry_demotes_without_touching_consul() {
        let mut m = to_validating();
        assert_eq!(feed(&mut m, &[LeaseExpired]), vec![Demote]);
        assert_eq!(m.state(), State::Voting);
        assert!(m.has_session());
    }

    #[test]
    fn after_a_lease_expiry_the_node_takes_its_own_lock_back() {
        let mut m = to_validating();
        feed(&mut m, &[LeaseExpired, NeardStarted]);
        assert_eq!(m.state(), State::Voting);
        assert_eq!(feed(&mut m, &[Status(Synced)]), vec![TryAcquire]);
        assert_eq!(
            feed(&mut m, &[AcquireFailed, Status(Synced)]),
            vec![TryAcquire],
            "retried"
        );
        assert_eq!(feed(&mut m, &[Acquired(true)]), vec![Promote]);
    }

    #[test]
    fn session_gone_demotes_then_registers_again() {
        let mut m = to_validating();
        assert_eq!(feed(&mut m, &[SessionGone]), vec![Demote]);
        assert_eq!(m.state(), State::Registering);
        assert_eq!(
            feed(&mut m, &[NeardStarted, Status(Synced)]),
            vec![CreateSession]
        );
    }

    #[test]
    fn shutdown_stops_neard_before_the_session_goes() {
        let mut m = to_validating();
        assert_eq!(
            feed(&mut m, &[Shutdown]),
            vec![StopNeard, DestroySession, Exit]
        );
        assert_eq!(m.state(), State::Shutdown);
        assert_eq!(
            feed(&mut m, &[NeardExited, Status(Synced)]),
            vec![],
            "final"
        );
        let mut fresh = machine();
        assert_eq!(feed(&mut fresh, &[Shutdown]), vec![StopNeard, Exit]);
    }

    #[test]
    fn hot_swap_shutdown_releases_before_stopping_neard() {
        let mut m = to_validating();
        m.config.demote_keeps_neard = true;
        assert_eq!(
            feed(&mut m, &[Shutdown]),
            vec![Demote, DestroySession, StopNeard, Exit]
        );
    }

    #[test]
    fn hand_over_demotes_releases_and_holds_off() {
        let mut m = to_validating();
        let t0 = Instant::now();
        let step = m.step(HandOver, t0);
        assert_eq!(step.actions, vec![Demote, DestroySession]);
        assert_eq!(step.to, State::Registering);
        assert_eq!(m.step(Status(Synced), t0).actions, vec![CreateSession]);
        assert_eq!(m.step(SessionCreated, t0).actions, vec![]);
        assert_eq!(
            m.step(LockObserved { free: true }, t0).actions,
            vec![],
            "held off"
        );
        assert_eq!(m.step(Status(Synced), t0 + HOLDOFF / 2).actions, vec![]);
        assert_eq!(
            m.step(Status(Synced), t0 + HOLDOFF).actions,
            vec![TryAcquire]
        );
        let mut voter = machine();
        assert_eq!(
            feed(&mut voter, &[Status(Synced), HandOver]),
            vec![],
            "only a leader hands over"
        );
    }

    #[test]
    fn lock_won_after_leaving_voting_is_given_back() {
        let mut m = machine();
        feed(
            &mut m,
            &[Status(Synced), SessionCreated, LockObserved { free: true }],
        );
        feed(&mut m, &[Status(Syncing)]);
        assert_eq!(feed(&mut m, &[Acquired(true)]), vec![DestroySession]);
        assert_eq!(m.state(), State::Syncing);
    }

    #[test]
    fn releasing_before_stopping_is_impossible() {
        // Whatever the event, a step never destroys the session before demoting/stopping.
        let events = [
            NeardExited,
            Status(Failed),
            SessionGone,
            LeaseExpired,
            Shutdown,
            HandOver,
            Status(Syncing),
        ];
        for (e, hot) in events.iter().flat_map(|e| [(*e, false), (*e, true)]) {
            let mut m = to_validating();
            m.config.demote_keeps_neard = hot;
            let t = Instant::now() + GRACE * 2;
            m.step(Status(Syncing), Instant::now());
            for _ in 0..3 {
                let acts = m.step(e, t).actions;
                if let Some(d) = acts.iter().position(|a| *a == DestroySession) {
                    let fence = acts.iter().position(|a| matches!(a, StopNeard | Demote));
                    assert!(fence.is_some_and(|f| f < d), "{e:?}: {acts:?}");
                }
            }
        }
    }
}
