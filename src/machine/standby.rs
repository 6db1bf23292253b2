//! The session, heartbeats, a standby's moves (acquire, destroy a silent holder), priorities,
//! the doppelganger check, planned switchovers, and the node's status record.

use std::time::Duration;

use crate::doppelganger::Cluster;
use crate::fence::Fence;
use crate::lease::{Horizon, Lost, Record, RecordState, StandbyMove};
use crate::records::SwitchoverStatus;
use crate::timing::{RECORD_INTERVAL, STATUS_INTERVAL, STATUS_TIMEOUT, SWITCHOVER_WINDOW};

use super::progress::{After, Phase, Session};
use super::vocabulary::{Command, NodeFacts, StepDown};
use super::{Machine, WINDOWS_REFRESH};

impl Machine {
    pub(super) fn reconcile_session(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let t = self.cfg.timing;
        let synced = self.synced();
        let leading = matches!(self.phase, Phase::Promoting(_) | Phase::Validating);
        match &mut self.session {
            Session::None { retry_at } => {
                if synced && !self.exiting && now >= *retry_at {
                    self.session = Session::Creating { sent: now };
                    out.push(Command::CreateSession);
                }
            }
            Session::Creating { .. } => {}
            Session::Live {
                id,
                renew_at,
                renewing,
                valid_from,
            } => {
                let id = id.clone();
                // Not renewed for a TTL: Consul may have invalidated the session (and the lock
                // with it), and another node may have taken the lock. A restored snapshot can
                // bring the session back holding the lock as it was: seed 157122 of the
                // simulation, a leader cut off from its agent across a restore released and
                // re-acquired its own resurrected lock and activated at once beside the node
                // that had taken over meanwhile. Drop it: a new session starts afresh.
                // A leader keeps it until its lease has stepped it down: the lease deadline comes
                // first or within moments, and it decides when the key stops (13d-crash-loop
                // waits for that step-down).
                if now >= *valid_from + t.ttl
                    && !leading
                    && !self.cfg.mutations.on(|m| m.keep_stale_session)
                {
                    self.session = Session::None { retry_at: now };
                    out.push(Command::SessionAbandoned(id));
                    self.lock_lost(Lost::SessionGone, out);
                    self.rejoin();
                    return;
                }
                if now >= *renew_at && renewing.is_none() {
                    *renewing = Some(now);
                    *renew_at = now + t.renew_interval;
                    out.push(Command::Renew(id.clone()));
                }
                let beating = matches!(self.phase, Phase::Promoting(_) | Phase::Validating);
                let horizon = self.horizon_now();
                let inherited = self.record_inherited();
                if let (true, Some(lease)) = (beating, self.lease.as_mut()) {
                    if now >= self.beat_at && !lease.in_flight() {
                        self.beat_at = now + t.heartbeat_interval;
                        let beat = lease.beat(horizon, inherited);
                        out.push(Command::Heartbeat {
                            session: id,
                            expected_index: beat.expected_index,
                            value: beat.value,
                            seq: beat.seq,
                        });
                    }
                }
            }
        }
    }

    /// Whether this node would take the lock now if it were free: a synced standby with a
    /// session and a guard, a priority above 0, in an unpaused cluster.
    pub fn may_take_over(&self) -> bool {
        matches!(self.phase, Phase::Idle)
            && !self.exiting
            && self.synced()
            && self.session().is_some()
            && self.guard.alive
            && self.cfg.priority > 0
            && !self.control.paused
            && !self.doppelganger.alarmed()
            && self.consul_ok
    }

    /// Whether the doppelganger alarm is raised (and why).
    pub fn doppelganger(&self) -> Option<&str> {
        self.doppelganger.evidence()
    }

    /// What this cluster is doing, for the doppelganger check: this node validates; another
    /// node of ours may (it holds the lock and heartbeated within the TTL); or nobody of ours
    /// validates.
    pub(super) fn cluster_view(&self) -> Cluster {
        // Whenever our neard may hold the key (a hot swap not confirmed yet, a demotion not
        // confirmed yet), what our account produces may be ours.
        if self.key_live {
            return Cluster::Leading;
        }
        // A holder that stopped heartbeating may still sign until its lease runs out: its own
        // step-down and its guard's deadline come within the TTL after its last heartbeat.
        let live_other = self.observer.seen().is_some_and(|s| {
            s.key.as_ref().is_some_and(|k| {
                k.session.is_some()
                    && k.session.as_deref() != self.session()
                    && self.now < s.value_since + self.cfg.timing.ttl
            })
        });
        if live_other {
            Cluster::OtherLeads
        } else {
            Cluster::Leaderless
        }
    }

    /// Whether a peer with a higher priority would take the lock now.
    pub(super) fn better_peer(&self) -> bool {
        self.ready_peers().any(|p| p.priority > self.cfg.priority)
    }

    pub(super) fn reconcile_standby(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        if self.exiting
            || !matches!(self.phase, Phase::Idle)
            || self.acquiring.is_some()
            || self.releasing_own.is_some()
        {
            return;
        }
        let Some(own) = self.session().map(str::to_string) else {
            return;
        };
        // Back from a lost session (see `rejoining`), the key is read afresh: the watch
        // answers only when the key changes.
        if self.rejoining == Some(None)
            && self.observer.seen().is_none()
            && !self.reading
            && now >= self.read_retry_at
        {
            self.reading = true;
            out.push(Command::ReadKey);
            return;
        }
        // Our own session on the key while we do not lead (a release refused because a
        // heartbeat landed first, an acquisition whose answer was lost): give it back whatever
        // our neard's state, or it holds the lock until someone destroys our session.
        if !self
            .cfg
            .mutations
            .on(|m| m.keep_lock_after_step_down || m.release_races_heartbeat)
            && self
                .observer
                .key()
                .is_some_and(|k| k.session.as_deref() == Some(own.as_str()))
        {
            self.release_own(own, out);
            return;
        }
        if !self.guard.alive {
            return;
        }
        let Some(view) = self.own_view() else {
            return;
        };
        let me = self.cfg.node_id.clone();
        let movement = self.observer.standby_move(
            &own,
            &me,
            now,
            self.cfg.timing.ttl,
            self.cfg.timing.heartbeat_interval,
            self.remembered(),
        );
        let automatic =
            self.cfg.priority > 0 && !self.control.paused && !self.doppelganger.alarmed();
        match movement {
            StandbyMove::Wait => {}
            StandbyMove::Acquire(plan) => {
                // Refused at this index: the key moved on, and the watch shows where, unless
                // the store was rewound under it (after a snapshot restore a blocking query sees
                // nothing until the index passes the one it had). So the key is read afresh
                // first, and the acquisition tried again at the same index only after the retry
                // delay (a key in lock-delay refuses every acquisition until the delay is over).
                if let Some((index, at, reread)) = self.acquire_refused {
                    if index == plan.expected_index {
                        if !reread {
                            if !self.reading {
                                self.acquire_refused = Some((index, at, true));
                                self.reading = true;
                                out.push(Command::ReadKey);
                            }
                            return;
                        }
                        if now < at + self.cfg.timing.retry {
                            return;
                        }
                    }
                }
                let for_me = self
                    .observer
                    .record()
                    .and_then(|r| r.successor)
                    .is_some_and(|s| s == me);
                // The successor of a switchover takes the lock it was handed also in a paused
                // cluster (a pause that raced the switchover): a released lock nobody may
                // take is no validator at all.
                let named = for_me
                    && self.cfg.priority > 0
                    && !self.doppelganger.alarmed()
                    && !self.cfg.mutations.on(|m| m.pause_during_switchover);
                if !automatic && !named {
                    return;
                }
                if !for_me {
                    if self.holdoff_until.is_some_and(|h| now < h) {
                        return;
                    }
                    // A better standby gets the first chance.
                    let since = self.observer.seen().map_or(now, |s| s.value_since);
                    if self.better_peer() && now < since + self.cfg.timing.heartbeat_interval {
                        return;
                    }
                }
                let inherit = !self.cfg.mutations.on(|m| m.no_inherited_horizon);
                let record = Record {
                    hostname: self.cfg.hostname.clone(),
                    node_id: me,
                    account: self.cfg.account.clone(),
                    session: own.clone(),
                    seq: 1,
                    // One more than any term seen here or in the key: a record of this
                    // acquisition is newer than everything any node has seen.
                    term: self
                        .memory
                        .map_or(0, |m| m.term)
                        .max(self.observer.record().map_or(0, |r| r.term))
                        + 1,
                    state: RecordState::Active,
                    horizon: Horizon {
                        head: Some(view.head),
                        target: view.target,
                        exact: false,
                        // Our last poll, at most this old.
                        stale_ms: Some(
                            u64::try_from((STATUS_INTERVAL + STATUS_TIMEOUT).as_millis())
                                .unwrap_or(u64::MAX),
                        ),
                    },
                    successor: None,
                    switchover: None,
                    // What we inherit of the previous leader until our fence opens.
                    inherited: inherit.then(|| {
                        Fence::new(
                            plan.activation,
                            now,
                            Some(view),
                            STATUS_INTERVAL + STATUS_TIMEOUT,
                            &self.fence_params(),
                        )
                        .inherited()
                    }),
                };
                out.push(Command::Acquire {
                    session: own,
                    expected_index: plan.expected_index,
                    value: record.to_bytes(),
                });
                self.acquiring = Some((plan, record));
                // A switchover's hand-over to us: its id, for ending the request once we
                // validate.
                self.acquiring_switchover = self
                    .observer
                    .record()
                    .filter(|r| r.state == RecordState::Released && for_me)
                    .and_then(|r| r.switchover);
            }
            StandbyMove::DestroyHolder(s) => {
                if automatic && self.destroying.as_deref() != Some(s.as_str()) {
                    self.destroying = Some(s.clone());
                    out.push(Command::DestroySession(s));
                }
            }
            StandbyMove::Reread => {
                if automatic && !self.reading && now >= self.read_retry_at {
                    self.reading = true;
                    out.push(Command::ReadKey);
                }
            }
            StandbyMove::ReleaseOwn if self.cfg.mutations.on(|m| m.keep_lock_after_step_down) => {
                // The old way: take our own lock back once neard is in sync.
                if let (Some(key), Some(r)) = (self.observer.key(), self.observer.record()) {
                    let record = Record {
                        seq: r.seq + 1,
                        ..r
                    };
                    out.push(Command::Acquire {
                        session: own,
                        expected_index: Some(key.index),
                        value: record.to_bytes(),
                    });
                    let plan = crate::lease::AcquirePlan {
                        expected_index: Some(key.index),
                        activation: crate::lease::Activation::Clean(Horizon {
                            exact: true,
                            ..record.horizon
                        }),
                    };
                    self.acquiring = Some((plan, record));
                }
            }
            StandbyMove::ReleaseOwn => self.release_own(own, out),
        }
    }

    /// Releases the key our session holds although we do not lead, value unchanged; once per
    /// index seen (after a failure, again after the retry delay).
    fn release_own(&mut self, own: String, out: &mut Vec<Command>) {
        let Some(key) = self.observer.key() else {
            return;
        };
        if let Some((index, retry)) = self.released_own {
            if index == key.index && retry.is_none_or(|at| self.now < at) {
                // Refused at this index: the key moved on, and the watch shows where, unless
                // the store was rewound under it (after a snapshot restore a blocking query
                // sees nothing until the index passes the one it had): read it afresh, once.
                if retry.is_none()
                    && self.reread_own != Some(index)
                    && !self.reading
                    && !self.cfg.mutations.on(|m| m.blind_after_restore)
                {
                    self.reread_own = Some(index);
                    self.reading = true;
                    out.push(Command::ReadKey);
                }
                return;
            }
        }
        self.releasing_own = Some(key.index);
        out.push(Command::Release {
            session: own,
            expected_index: key.index,
            value: key.value.clone(),
        });
    }

    /// A planned switchover (docs/operations.md, "kuutamoctl switchover"). Only the node that
    /// validated when it was requested (`from`, with the same session) carries it out, once:
    /// it waits for its target to be ready (and for a maintenance window if asked), then hands
    /// over with the target and the request's id in its released record. The first node that
    /// validates otherwise ends the request (moves it to the control record's `done`), saying
    /// whether the hand-over happened as asked: no node ever acts on it again.
    pub(super) fn reconcile_switchover(&mut self, out: &mut Vec<Command>) {
        let Some(sw) = self.control.switchover.clone() else {
            return;
        };
        let first_seen = match &self.switchover_seen {
            Some((id, at)) if *id == sw.id => *at,
            _ => {
                self.switchover_seen = Some((sw.id.clone(), self.now));
                self.now
            }
        };
        if self.finished_switchover.as_deref() == Some(sw.id.as_str())
            || !matches!(self.phase, Phase::Validating)
            || !self.activated
        {
            return;
        }
        let me = self.cfg.node_id.clone();
        let to = sw.to.clone().unwrap_or_default();
        let ours = self.cfg.mutations.on(|m| m.switchover_without_identity)
            || (sw.from == me
                && sw
                    .from_session
                    .as_deref()
                    .is_none_or(|s| Some(s) == self.session()));
        let expired =
            sw.timeout_ms > 0 && self.now >= first_seen + Duration::from_millis(sw.timeout_ms);
        let handled = self.handled_switchover.as_deref() == Some(sw.id.as_str());
        if !ours || handled || expired || self.control.paused {
            let (ok, outcome) = if !ours && me == to {
                let planned = self.acquired_switchover.as_deref() == Some(sw.id.as_str());
                if planned {
                    (true, format!("{} -> {me}", sw.from))
                } else {
                    (
                        false,
                        format!(
                            "{me} validates, but not by the hand-over from {} (it stopped validating for another reason first)",
                            sw.from
                        ),
                    )
                }
            } else if !ours && sw.from == me {
                (false, format!("{me} restarted before it handed over"))
            } else if !ours {
                (false, format!("{me} validates, not {to}"))
            } else if handled {
                (
                    false,
                    format!("{to} did not take the lock; {me} validates again"),
                )
            } else if expired {
                let why = self
                    .switchover
                    .as_ref()
                    .filter(|s| s.id == sw.id)
                    .map_or("no progress".to_string(), |s| s.status.clone());
                (false, format!("timed out on {me}: {why}"))
            } else {
                (
                    false,
                    "the cluster was paused before the hand-over".to_string(),
                )
            };
            self.finished_switchover = Some(sw.id.clone());
            self.switchover = Some(SwitchoverStatus {
                id: sw.id.clone(),
                status: outcome.clone(),
                failed: !ok,
            });
            out.push(Command::FinishSwitchover(crate::records::SwitchoverDone {
                id: sw.id,
                ok,
                leader: Some(me),
                outcome,
            }));
            return;
        }
        let status = |text: String, failed: bool| SwitchoverStatus {
            id: sw.id.clone(),
            status: text,
            failed,
        };
        // Requests from an older kuutamoctl name no target: the best standby, chosen now.
        let target = match &sw.to {
            Some(to) => self.ready_peers().find(|p| &p.node_id == to),
            None => self.ready_peers().max_by_key(|p| p.priority),
        }
        .map(|p| p.node_id.clone());
        let Some(target) = target else {
            let who = sw.to.clone().unwrap_or_else(|| "any node".into());
            self.switchover = Some(status(
                format!("waiting: {who} is not a synced standby that may take over"),
                false,
            ));
            return;
        };
        if sw.in_window {
            match &self.windows {
                None => {
                    if !self.windows_pending {
                        self.windows_pending = true;
                        out.push(Command::QueryWindows);
                    }
                    self.switchover =
                        Some(status("waiting for a maintenance window".into(), false));
                    return;
                }
                Some(Err(e)) => {
                    let outcome = format!(
                        "neard cannot tell its maintenance windows ({e}); switch over without --in-window"
                    );
                    self.switchover = Some(status(outcome.clone(), true));
                    self.finished_switchover = Some(sw.id.clone());
                    out.push(Command::FinishSwitchover(crate::records::SwitchoverDone {
                        id: sw.id,
                        ok: false,
                        leader: Some(me),
                        outcome,
                    }));
                    return;
                }
                Some(Ok(windows)) => {
                    let head = self.own_view().map_or(0, |v| v.head);
                    let inside = windows
                        .iter()
                        .any(|(a, b)| *a <= head + 1 && head + SWITCHOVER_WINDOW < *b);
                    if !inside {
                        // The windows hold for the epoch: check them against each new head,
                        // and ask again when they are used up or old.
                        let used_up = windows.iter().all(|(_, b)| *b <= head + 1);
                        if (used_up || self.now >= self.windows_at + WINDOWS_REFRESH)
                            && !self.windows_pending
                        {
                            self.windows_pending = true;
                            out.push(Command::QueryWindows);
                        }
                        self.switchover =
                            Some(status("waiting for a maintenance window".into(), false));
                        return;
                    }
                }
            }
        }
        self.switchover = Some(status(format!("handing over to {target}"), false));
        self.handled_switchover = Some(sw.id.clone());
        self.successor = Some((target, sw.id));
        self.step_down(StepDown::HandOver, out);
        // The target has the lock to itself for a heartbeat interval; if it does not come, this
        // node may take it back after that, not after a whole TTL.
        let back = After::Standby(self.now + self.cfg.timing.heartbeat_interval);
        match &mut self.phase {
            Phase::Demoting(d) => d.after = back,
            Phase::Releasing(r) => r.after = back,
            _ => {}
        }
    }

    /// This node's status record, published on every change and every [`RECORD_INTERVAL`].
    pub(super) fn reconcile_publish(&mut self, out: &mut Vec<Command>) {
        // A fence just now is news: publish it at once (a switchover measures its gap by it).
        let fresh_fence = self.fenced_at == Some(self.now);
        let due = fresh_fence
            || self.now >= self.published_at + RECORD_INTERVAL
            || self.holder_evidence(self.own_view().map(|v| v.head));
        if !due
            && self
                .published
                .as_ref()
                .is_some_and(|p| !self.facts_differ(p))
        {
            return;
        }
        let facts = self.facts();
        self.published_at = self.now;
        self.published = Some(facts.clone());
        out.push(Command::Publish(facts));
    }

    /// What this node's status record says now.
    fn facts(&self) -> NodeFacts {
        NodeFacts {
            state: self.state(),
            synced: self.synced(),
            head: self.own_view().map(|v| v.head),
            neard_version: self.neard_version.clone(),
            priority: self.cfg.priority,
            paused: self.control.paused,
            may_take_over: self.may_take_over(),
            session: self.session().map(str::to_string),
            validating_for: match (&self.phase, self.activated_at) {
                (Phase::Validating, Some(at)) => Some(self.now.saturating_duration_since(at)),
                _ => None,
            },
            switchover: self.switchover.clone(),
            fenced_for: self
                .fenced_at
                .map(|at| self.now.saturating_duration_since(at)),
        }
    }

    /// Whether the facts now say something new against the published `p`: anything but the
    /// head and how long a duration has run (they move all the time and are refreshed every
    /// [`RECORD_INTERVAL`]). Compared without building the facts: this runs on every pass of
    /// every event.
    fn facts_differ(&self, p: &NodeFacts) -> bool {
        let validating = matches!(
            (&self.phase, self.activated_at),
            (Phase::Validating, Some(_))
        );
        p.state != self.state()
            || p.synced != self.synced()
            || p.neard_version != self.neard_version
            || p.priority != self.cfg.priority
            || p.paused != self.control.paused
            || p.may_take_over != self.may_take_over()
            || p.session.as_deref() != self.session()
            || p.validating_for.is_some() != validating
            || p.switchover != self.switchover
            || p.fenced_for.is_some() != self.fenced_at.is_some()
    }
}
