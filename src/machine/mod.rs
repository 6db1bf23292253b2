//! Every decision kuutamod makes, as one pure state machine.
//!
//! [`Machine::handle`] takes an [`Event`] (a poll result, a Consul answer, a signal, the time
//! passing) with the current time and returns the [`Command`]s to carry out. It does no I/O: the
//! [`supervisor`](crate::supervisor) runs the commands and turns their outcomes into events, and
//! unit tests (and a simulator) drive it with virtual time. It is *level-triggered*: an event
//! only updates what the machine knows; [`Machine::reconcile`] then derives from that everything
//! that must happen now, so a lost or repeated event cannot leave a step undone.
//!
//! The order of reconciliation is the order of priorities: first the fence (a node whose neard
//! may hold the key and can no longer be sure it is the leader stops it), then the progress of
//! a promotion, demotion or release, then the session and the lease, and last a standby's
//! moves. The lock is released only after neard is fenced, and the key goes live only after
//! the guard has acknowledged its deadline and the [`fence`](crate::fence) has opened; see
//! `docs/failover.md` for the argument.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::clock::Instant;
use crate::doppelganger::Doppelganger;
use crate::fence::{Closed, FenceParams};
use crate::lease::{AcquirePlan, Horizon, Lease, LockMemory, Observer, Record};
use crate::records::{Control, SwitchoverStatus};
use crate::timing::{RECORD_INTERVAL, STATUS_FAIL_AFTER, STATUS_TIMEOUT, VALIDATOR_BOOT_LIMIT};

mod config;
mod facts;
mod fencing;
mod liveness;
mod process;
mod progress;
mod standby;
mod vocabulary;

pub use config::{Config, Mutations};
use progress::{DemoteStep, Guard, HolderProgress, Peer, Phase, Proc, PromoteStep, Session};
pub use vocabulary::*;

/// How often a switchover waiting for a maintenance window asks neard for them again (they
/// change with the epoch).
const WINDOWS_REFRESH: Duration = Duration::from_secs(10);

/// How long to wait before trying again to start a guard that could not be started.
const GUARD_RETRY: Duration = Duration::from_secs(1);

/// A peer's status record that has not changed for this long, as this node saw it (three
/// [`RECORD_INTERVAL`]s: a running node rewrites its record at least that often), describes a
/// node that is gone. Judged by our own clock, never by the writer's wall clock.
pub const PEER_FRESH: Duration = Duration::from_secs(3 * RECORD_INTERVAL.as_secs());

/// How many heights below a ready node's head our neard must be, at every poll for the
/// progress grace, for a lock holder to count as behind (`Stuck::Behind`): more than a block in
/// flight between two healthy neards.
pub const LAG_HEIGHTS: u64 = 2;

/// After a block arrived stamped later than our wall clock, the fence does not trust our wall
/// clock for this long (a clock that was behind once is suspect until NTP has had time).
pub const WALL_DISTRUST: Duration = Duration::from_secs(600);

/// The earliest instant after `now` among those pushed (the deadlines of
/// [`Machine::next_deadline`], gathered without a list).
struct Soonest {
    now: Instant,
    best: Option<Instant>,
}

impl Soonest {
    fn push(&mut self, t: Instant) {
        if t > self.now && self.best.is_none_or(|b| t < b) {
            self.best = Some(t);
        }
    }

    fn extend(&mut self, ts: impl IntoIterator<Item = Instant>) {
        for t in ts {
            self.push(t);
        }
    }
}

/// The machine.
#[derive(Debug, Clone)]
pub struct Machine {
    cfg: Config,
    now: Instant,
    proc: Proc,
    /// What to start once a deliberately stopped neard is gone.
    then_start: Option<Role>,
    backoff: Backoff,
    /// When the last poll that fed `horizon` was answered.
    horizon_at: Option<Instant>,
    /// The current neard may hold the validator key.
    key_live: bool,
    /// The key file is in neard's home.
    key_file: bool,
    hot_swap_capable: Option<bool>,
    /// The largest horizon seen while the key was live (or about to be).
    horizon: Horizon,
    session: Session,
    lease: Option<Lease>,
    /// When the leader's next heartbeat is due.
    beat_at: Instant,
    observer: Observer,
    acquiring: Option<(AcquirePlan, Record)>,
    destroying: Option<String>,
    reading: bool,
    /// After a failed read, when to read again.
    read_retry_at: Instant,
    /// A release of a key the watch shows under our own session (as a standby) in flight: the
    /// index it expects.
    releasing_own: Option<u64>,
    /// The last such release, answered: its index, and when it may be tried again (`None`:
    /// never, Consul said the key had moved on; the watch will show where).
    released_own: Option<(u64, Option<Instant>)>,
    /// The index of a refused give-back after which the key was read afresh.
    reread_own: Option<u64>,
    /// The last refused acquisition: the index it checked, when it was refused, and whether
    /// the key was read afresh since.
    acquire_refused: Option<(Option<u64>, Instant, bool)>,
    holdoff_until: Option<Instant>,
    phase: Phase,
    guard: Guard,
    exiting: bool,
    /// While exiting: None = session not yet destroyed, Some(false) = in flight, Some(true) =
    /// done (or failed: the TTL ends it).
    exit_destroy: Option<bool>,
    polling: Option<Polling>,
    exited: bool,
    control: Control,
    /// The other nodes' status records, with when each last changed (by our clock).
    peers: Vec<Peer>,
    /// As a standby: the lock holder's progress, as its records show it.
    holder: Option<HolderProgress>,
    /// The newest record seen of the lock (persisted: [`Command::Remember`]).
    memory: Option<LockMemory>,
    /// The last Consul index at which a rewind was reported (once per index).
    rewind_reported: Option<u64>,
    /// Whether this node may have missed writes to the key: since it started, or since it lost
    /// its session (not renewed for a TTL, or gone). A term that began and was erased by a
    /// snapshot restore while it was away is in no memory of its own, and its holder validates
    /// until its next heartbeat fails: until the node follows the key again, every record
    /// counts as foreign (the full wait from when the node first read it). `Some(None)`: no
    /// read since; `Some(Some(index))`: the first read was at `index`, and the next write
    /// after it ends the state (as does our own acquisition).
    rejoining: Option<Option<u64>>,
    /// The highest horizon any record in the key showed this node (its own or inherited): a
    /// lower bound of what some leader signed, the floor of a fence over a foreign value.
    horizon_seen: Horizon,
    /// Until when our wall clock is not trusted for the fence's "caught up" rule: a block
    /// arrived stamped later than our wall clock (plus [`fence::WALL_SKEW`]).
    wall_behind_until: Option<Instant>,
    /// The switchover request this node handed over for, by id.
    handled_switchover: Option<String>,
    /// The switchover request this node ended (moved to `done`), by id.
    finished_switchover: Option<String>,
    /// The switchover request seen last, and when this node first saw it (its timeout runs
    /// from then, by our clock).
    switchover_seen: Option<(String, Instant)>,
    /// The switchover whose hand-over released the lock this node acquired, if any.
    acquired_switchover: Option<String>,
    /// The same for the acquisition in flight.
    acquiring_switchover: Option<String>,
    /// The leader's progress on the current switchover.
    switchover: Option<SwitchoverStatus>,
    /// The node the next clean release is meant for, and the switchover's id.
    successor: Option<(String, String)>,
    windows: Option<Result<Vec<(u64, u64)>, String>>,
    windows_pending: bool,
    windows_at: Instant,
    published: Option<NodeFacts>,
    published_at: Instant,
    /// neard was started at least once (a paused cluster does not restart it).
    started_once: bool,
    neard_version: Option<String>,
    activated_at: Option<Instant>,
    fenced_at: Option<Instant>,
    doppelganger: Doppelganger,
    last_step_down: Option<StepDown>,
    /// Consul's last answer was usable.
    consul_ok: bool,
    /// The fence of the current term opened (its key went or may have gone live).
    activated: bool,
}
impl Machine {
    /// A machine at `now`: a guard is wanted at once, and neard is started as voter through it.
    pub fn new(cfg: Config, now: Instant) -> Machine {
        Machine {
            backoff: Backoff::new(cfg.backoff),
            cfg: cfg.clone(),
            now,
            proc: Proc::Down(Some((Role::Voter, now))),
            then_start: None,
            horizon_at: None,
            key_live: false,
            key_file: false,
            hot_swap_capable: None,
            horizon: Horizon::default(),
            session: Session::None { retry_at: now },
            lease: None,
            beat_at: now,
            observer: Observer::default(),
            acquiring: None,
            destroying: None,
            reading: false,
            read_retry_at: now,
            releasing_own: None,
            released_own: None,
            reread_own: None,
            acquire_refused: None,
            holdoff_until: None,
            phase: Phase::Idle,
            guard: Guard {
                alive: false,
                respawning: false,
                next_seq: 1,
                pending: Vec::new(),
                last: None,
                acked: None,
                last_sent: now,
                retry_at: now,
            },
            exiting: false,
            exit_destroy: None,
            polling: None,
            exited: false,
            control: Control::default(),
            peers: Vec::new(),
            holder: None,
            memory: cfg.remembered,
            rejoining: Some(None),
            horizon_seen: Horizon::default(),
            rewind_reported: None,
            wall_behind_until: None,
            handled_switchover: None,
            finished_switchover: None,
            switchover_seen: None,
            acquired_switchover: None,
            acquiring_switchover: None,
            switchover: None,
            successor: None,
            windows: None,
            windows_pending: false,
            windows_at: now,
            published: None,
            published_at: now,
            started_once: false,
            neard_version: None,
            activated_at: None,
            fenced_at: None,
            doppelganger: Doppelganger::new(
                cfg.doppelganger_heights,
                cfg.timing.heartbeat_interval,
            ),
            last_step_down: None,
            consul_ok: false,
            activated: false,
        }
    }

    /// The state to report. A node whose neard may hold the key reports Validating, also while
    /// it is being fenced: the state never claims neard is keyless before it is.
    pub fn state(&self) -> State {
        if self.key_live || matches!(self.phase, Phase::Validating | Phase::Demoting(_)) {
            return State::Validating;
        }
        if self.exiting {
            return State::Shutdown;
        }
        if let Phase::Promoting(_) = self.phase {
            return State::Promoting;
        }
        match &self.proc {
            Proc::Up(up) => match &up.poll {
                None => State::Startup,
                Some(p) if p.syncing => State::Syncing,
                Some(_) => match self.session {
                    Session::Live { .. } => State::Voting,
                    _ => State::Registering,
                },
            },
            _ => State::Startup,
        }
    }

    /// Our horizon as published now: `StaleMs` is how old its values may be (the poll's
    /// values were read up to its timeout before it was answered).
    fn horizon_now(&self) -> Horizon {
        Horizon {
            stale_ms: self.horizon_at.map(|at| {
                u64::try_from((self.now.saturating_duration_since(at) + STATUS_TIMEOUT).as_millis())
                    .unwrap_or(u64::MAX)
            }),
            ..self.horizon
        }
    }

    /// What our heartbeats carry of the previous leader until our fence opens (see
    /// [`Fence::inherited`]).
    fn record_inherited(&self) -> Option<Horizon> {
        match &self.phase {
            Phase::Promoting(p)
                if !self.activated && !self.cfg.mutations.on(|m| m.no_inherited_horizon) =>
            {
                Some(p.fence.inherited())
            }
            _ => None,
        }
    }

    /// What the height fence needs to know about the chain and the timing.
    fn fence_params(&self) -> FenceParams {
        FenceParams {
            delays: self.cfg.block_delays,
            heartbeat_staleness: self.cfg.timing.heartbeat_staleness,
            ttl: self.cfg.timing.ttl,
            trust_any_tip: self.cfg.mutations.on(|m| m.caught_up_any_tip),
            floor: if self.cfg.mutations.on(|m| m.rejoin_trusts_records) {
                Horizon::default()
            } else {
                self.horizon_seen
            },
        }
    }

    /// Whether the guard process runs and has acknowledged every order in time.
    pub fn guard_ok(&self) -> bool {
        self.guard.alive
            && self
                .guard
                .pending
                .first()
                .is_none_or(|(_, _, sent)| self.now < *sent + self.cfg.timing.guard_ack)
    }

    /// Whether the cluster is paused (`kuutamoctl pause`).
    pub fn paused(&self) -> bool {
        self.control.paused
    }

    /// Whether neard may hold the validator key now.
    pub fn key_live(&self) -> bool {
        self.key_live
    }

    /// Whether the node holds the lock (as far as it knows).
    pub fn holds_lock(&self) -> bool {
        self.lease.is_some()
    }

    /// Whether the machine has finished (after [`Command::Exit`]).
    pub fn exited(&self) -> bool {
        self.exited
    }

    /// The lease deadline, while it matters (the key is or will soon be live).
    pub fn lease_deadline(&self) -> Option<Instant> {
        let matters = self.key_live
            || matches!(
                self.phase,
                Phase::Promoting(_) | Phase::Validating | Phase::Demoting(_)
            );
        self.lease.as_ref().filter(|_| matters).map(Lease::deadline)
    }

    /// Our session, if any.
    pub fn session(&self) -> Option<&str> {
        match &self.session {
            Session::Live { id, .. } => Some(id),
            _ => None,
        }
    }

    /// neard's pid, while a process exists.
    pub fn neard_pid(&self) -> Option<u32> {
        match &self.proc {
            Proc::Up(up) => Some(up.pid),
            Proc::Stopping { pid, .. } | Proc::Dying { pid } => Some(*pid),
            _ => None,
        }
    }

    /// neard's last poll.
    pub fn last_poll(&self) -> Option<Poll> {
        match &self.proc {
            Proc::Up(up) => up.poll,
            _ => None,
        }
    }

    /// The fence of the promotion in progress, if any, and why it is still closed.
    pub fn fence_status(&self) -> Option<Result<(), Closed>> {
        let Phase::Promoting(p) = &self.phase else {
            return None;
        };
        let own = self.own_view()?;
        Some(p.fence.check(self.now, own, &self.fence_params()))
    }

    /// Feeds one event at `now`; returns the commands to carry out, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Command> {
        self.now = now.max(self.now);
        let mut out = Vec::new();
        if !self.exited {
            self.apply(event, &mut out);
            self.reconcile(&mut out);
        }
        out
    }

    /// The next instant at which time alone changes a decision.
    pub fn next_deadline(&self) -> Option<Instant> {
        let t = &self.cfg.timing;
        let mut d = Soonest {
            now: self.now,
            best: None,
        };
        match &self.proc {
            Proc::Down(Some((_, at))) => d.push(*at),
            Proc::Stopping { kill_at, .. } => d.push(*kill_at),
            Proc::Up(up) => {
                if let Some(ok) = up.last_ok {
                    d.push(ok + STATUS_FAIL_AFTER);
                }
                if let Some(s) = up.syncing_since {
                    d.push(s + self.cfg.syncing_grace);
                }
                if up.role == Role::Validator && up.last_ok.is_none() {
                    d.push(up.started + VALIDATOR_BOOT_LIMIT);
                }
            }
            _ => {}
        }
        match &self.session {
            Session::None { retry_at } => d.push(*retry_at),
            Session::Live {
                renew_at,
                valid_from,
                ..
            } => {
                d.push(*renew_at);
                d.push(*valid_from + self.cfg.timing.ttl);
            }
            Session::Creating { .. } => {}
        }
        if let Some(l) = self.lease_deadline() {
            d.push(l);
        }
        if self.lease.is_some() && matches!(self.phase, Phase::Promoting(_) | Phase::Validating) {
            d.push(self.beat_at);
        }
        if let Some((_, _, sent)) = self.guard.pending.first() {
            d.push(*sent + t.guard_ack);
        }
        if self.guard.alive {
            d.push(self.guard.last_sent + self.guard_ping_interval());
        } else {
            d.push(self.guard.retry_at);
        }
        if self.read_retry_at > self.now {
            d.push(self.read_retry_at);
        }
        if let Some((_, at, _)) = self.acquire_refused {
            d.push(at + t.retry);
        }
        match &self.phase {
            Phase::Promoting(p) => match &p.step {
                PromoteStep::Fencing => {
                    d.push(p.fence.not_before());
                    // The "caught up" rule opens with a poll; the polls are fast meanwhile.
                }
                PromoteStep::Swapping { deadline, .. } => d.push(*deadline),
                PromoteStep::Restarting => {}
            },
            Phase::Demoting(dm) => {
                if let DemoteStep::Unloading { deadline, .. } = dm.step {
                    d.push(deadline);
                }
            }
            Phase::Releasing(r) => {
                d.push(r.retry_at);
                d.push(r.beat_wait_until);
                if let Some(g) = r.give_up_at {
                    d.push(g);
                }
            }
            _ => {}
        }
        if let Some(h) = self.holdoff_until {
            d.push(h);
        }
        self.progress_deadlines(&mut d);
        d.push(self.published_at + RECORD_INTERVAL);
        if let Some(seen) = self.observer.seen() {
            // A switchover's successor that does not come, and the priority yield.
            d.push(seen.value_since + t.ttl);
            d.push(seen.value_since + t.heartbeat_interval);
        }
        if let Some(seen) = self.observer.seen() {
            if seen.key.as_ref().is_some_and(|k| k.session.is_some()) {
                d.push(seen.value_since + t.ttl);
            }
        }
        d.best
    }

    /// Derives everything that must happen now, repeating until nothing changes (a step that
    /// finishes, such as a fence, can enable the next, such as the release, at once).
    fn reconcile(&mut self, out: &mut Vec<Command>) {
        for _ in 0..8 {
            let before = (self.shape(), out.len());
            self.reconcile_guard(out);
            self.reconcile_neard_health(out);
            self.reconcile_lease(out);
            self.reconcile_phase(out);
            self.reconcile_progress(out);
            self.reconcile_neard_start(out);
            self.reconcile_guard(out);
            self.reconcile_session(out);
            self.reconcile_switchover(out);
            self.reconcile_standby(out);
            self.reconcile_polling(out);
            self.reconcile_publish(out);
            self.reconcile_exit(out);
            if (self.shape(), out.len()) == before || self.exited {
                return;
            }
        }
    }

    /// A summary of the state that one reconciliation pass can change.
    fn shape(
        &self,
    ) -> (
        std::mem::Discriminant<Phase>,
        std::mem::Discriminant<Proc>,
        bool,
        bool,
    ) {
        (
            std::mem::discriminant(&self.phase),
            std::mem::discriminant(&self.proc),
            self.key_live,
            self.lease.is_some(),
        )
    }
}

#[cfg(test)]
mod tests;
