//! How events become facts: what each event tells the machine, before any decision.

use std::time::Duration;

use crate::fence::{self, Fence, OwnView};
use crate::lease::{Horizon, Lease, LockMemory, Lost, Record};
use crate::records::NodeRecord;
use crate::timing::{STATUS_INTERVAL, STATUS_TIMEOUT};

use super::progress::{
    After, HolderProgress, Letgo, Peer, Phase, Proc, PromoteStep, Promotion, Session, Up,
};
use super::vocabulary::{Command, Event, GuardOrder, Poll, Role, StepDown};
use super::{Machine, GUARD_RETRY, LAG_HEIGHTS, PEER_FRESH, WALL_DISTRUST};

impl Machine {
    pub(super) fn apply(&mut self, event: Event, out: &mut Vec<Command>) {
        let now = self.now;
        // Whether Consul answered (a refusal is an answer) or failed: a standby that cannot
        // reach Consul does not call itself ready.
        match &event {
            Event::SessionCreated(_)
            | Event::Renewed { .. }
            | Event::SessionGone(_)
            | Event::HeartbeatAcked { .. }
            | Event::HeartbeatRejected
            | Event::KeyObserved { .. }
            | Event::Acquired { .. }
            | Event::AcquireRejected
            | Event::Released(_)
            | Event::Destroyed { ok: true, .. }
            | Event::ClusterObserved { .. } => self.consul_ok = true,
            Event::SessionCreateFailed
            | Event::RenewFailed { .. }
            | Event::HeartbeatFailed
            | Event::AcquireFailed
            | Event::ReleaseFailed
            | Event::Destroyed { ok: false, .. }
            | Event::WatchFailed => self.consul_ok = false,
            _ => {}
        }
        match event {
            Event::Tick | Event::StatusFailed => {}
            Event::NeardSpawned { pid, role } => {
                if !matches!(self.proc, Proc::Spawning(_)) {
                    return; // not ours to believe: no spawn was asked for
                }
                self.backoff.started(now);
                self.proc = Proc::Up(Up {
                    pid,
                    role,
                    started: now,
                    last_ok: None,
                    poll: None,
                    syncing_since: None,
                    head_since: None,
                    behind_since: None,
                    tip_after: None,
                });
                self.key_live = role == Role::Validator;
                // Announce the polling again for the new process.
                self.polling = None;
            }
            Event::NeardSpawnFailed => {
                if !matches!(self.proc, Proc::Spawning(_)) {
                    return;
                }
                let wait = self.backoff.failed(now);
                self.proc = Proc::Down(Some((Role::Voter, now + wait)));
                self.neard_gone(StepDown::NeardExited, out);
            }
            Event::NeardExited { pid } => {
                if self.neard_pid() != Some(pid) {
                    return;
                }
                let deliberate = matches!(self.proc, Proc::Stopping { .. } | Proc::Dying { .. });
                if deliberate {
                    self.proc = Proc::Down(self.then_start.take().map(|r| (r, now)));
                    self.key_live = false;
                } else {
                    let wait = self.backoff.failed(now);
                    self.proc = Proc::Down(Some((Role::Voter, now + wait)));
                    self.neard_gone(StepDown::NeardExited, out);
                }
            }
            Event::NeardKilled { pid } => {
                if self.neard_pid() == Some(pid) {
                    self.key_live = false;
                    self.proc = Proc::Dying { pid };
                }
            }
            Event::Status(poll) => {
                self.on_poll(poll);
                if let Some(p) = poll.production {
                    let cluster = self.cluster_view();
                    // Heights for the alarm's silence: the doomslug target moves on while the
                    // chain is stalled, the head does not.
                    let height = poll.head.max(poll.target.unwrap_or(0));
                    if let Some(change) = self.doppelganger.observe(now, height, p, cluster) {
                        out.push(Command::Doppelganger(change));
                    }
                }
            }
            Event::SessionCreated(id) => {
                let valid_from = match self.session {
                    Session::Creating { sent } => sent,
                    _ => now,
                };
                self.session = Session::Live {
                    id,
                    renew_at: now + self.cfg.timing.renew_interval,
                    renewing: None,
                    valid_from,
                };
            }
            Event::SessionCreateFailed => {
                self.session = Session::None {
                    retry_at: now + self.cfg.timing.retry,
                };
            }
            Event::Renewed { session } => {
                if let Session::Live {
                    id,
                    renewing,
                    valid_from,
                    ..
                } = &mut self.session
                {
                    if *id == session {
                        if let Some(sent) = renewing.take() {
                            *valid_from = sent.max(*valid_from);
                        }
                        if self.cfg.mutations.on(|m| m.lease_from_renew) {
                            if let Some(lease) = self.lease.as_mut() {
                                lease.renewed(now);
                            }
                        }
                    }
                }
            }
            Event::RenewFailed { session } => {
                let retry = self.cfg.timing.retry;
                if let Session::Live {
                    id,
                    renewing,
                    renew_at,
                    ..
                } = &mut self.session
                {
                    if *id == session {
                        *renewing = None;
                        *renew_at = now + retry;
                    }
                }
            }
            Event::SessionGone(id) => {
                if self.session() == Some(id.as_str()) {
                    self.session = Session::None { retry_at: now };
                    self.rejoin();
                    if self.exiting {
                        self.exit_destroy = Some(true);
                    }
                    self.lock_lost(Lost::SessionGone, out);
                }
            }
            Event::HeartbeatAcked { seq, sent, index } => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.acked(seq, sent, index);
                }
                if let Some(l) = &self.lease {
                    let (order, index) = (l.record().order(), l.index());
                    self.remember(order, index, out);
                }
            }
            Event::HeartbeatRejected => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.unacknowledged();
                }
                if !self.cfg.mutations.on(|m| m.leader_ignores_key) {
                    self.lock_lost(Lost::CheckFailed, out);
                }
            }
            Event::HeartbeatFailed => {
                if let Some(lease) = self.lease.as_mut() {
                    lease.unacknowledged();
                }
                self.beat_at = self.beat_at.min(now + self.cfg.timing.retry);
            }
            Event::KeyObserved { key, index } => {
                self.reading = false;
                if key.as_ref().and_then(|k| k.session.as_deref()) != self.destroying.as_deref() {
                    self.destroying = None;
                }
                self.rejoining = match self.rejoining {
                    Some(None) => Some(Some(index)),
                    Some(Some(first)) if index > first => None,
                    other => other,
                };
                self.observer.observe(key, index, now);
                self.observe_holder();
                self.remember_key(out);
                let lost = match (&self.lease, self.observer.seen()) {
                    (Some(lease), Some(seen)) => lease.check(seen).err(),
                    _ => None,
                };
                if let Some(lost) = lost {
                    if !self.cfg.mutations.on(|m| m.leader_ignores_key) {
                        self.lock_lost(lost, out);
                    }
                }
            }
            Event::WatchFailed => {}
            Event::WatchReset => {
                self.reading = false;
                self.observer.reset();
            }
            Event::ReadFailed => {
                // Keep what was seen (a release of our own session, or a wait, still works from
                // it); read again after the retry delay.
                self.reading = false;
                self.read_retry_at = now + self.cfg.timing.retry;
            }
            Event::Acquired { sent, index } => {
                if let Some((plan, record)) = self.acquiring.take() {
                    self.rejoining = None;
                    self.activated = false;
                    self.acquired_switchover = self.acquiring_switchover.take();
                    self.remember(record.order(), index, out);
                    self.lease = Some(Lease::new(
                        record,
                        index,
                        sent,
                        self.cfg.timing.step_down_after,
                    ));
                    self.beat_at = sent + self.cfg.timing.heartbeat_interval;
                    if self.exiting || !matches!(self.phase, Phase::Idle) || !self.synced() {
                        // Not ready to lead any more: give it back, value unchanged.
                        self.start_release(Letgo::Unchanged, self.after_standby(false));
                    } else {
                        let mut activation = plan.activation;
                        if self.cfg.mutations.on(|m| m.no_standby_wait) {
                            activation = crate::lease::Activation::Clean(Horizon {
                                exact: true,
                                ..self
                                    .observer
                                    .record()
                                    .map(|r| r.horizon)
                                    .unwrap_or_default()
                            });
                        }
                        self.phase = Phase::Promoting(Promotion {
                            fence: Fence::new(
                                activation,
                                now,
                                self.own_view(),
                                STATUS_INTERVAL + STATUS_TIMEOUT,
                                &self.fence_params(),
                            ),
                            acquired: now,
                            head0: self.own_view().map(|v| v.head),
                            step: PromoteStep::Fencing,
                        });
                    }
                }
            }
            Event::AcquireRejected => {
                if let Some((plan, _)) = self.acquiring.take() {
                    if !self.cfg.mutations.on(|m| m.blind_after_restore) {
                        self.acquire_refused = Some((plan.expected_index, now, false));
                    }
                }
            }
            Event::AcquireFailed => self.acquiring = None,
            Event::Released(_) => {
                // Released, or the key was not as we left it (taken, released by Consul, or
                // moved by a heartbeat of ours whose answer was lost): in the last case the
                // watch shows our session on it and the standby's ReleaseOwn gives it back.
                if let Some(index) = self.releasing_own.take() {
                    self.released_own = Some((index, None));
                }
                if let Phase::Releasing(r) = &self.phase {
                    let after = r.after;
                    self.finish_release(after);
                }
            }
            Event::ReleaseFailed => {
                let retry = now + self.cfg.timing.retry;
                if let Some(index) = self.releasing_own.take() {
                    self.released_own = Some((index, Some(retry)));
                }
                if let Phase::Releasing(r) = &mut self.phase {
                    r.in_flight = false;
                    r.retry_at = retry;
                }
            }
            Event::Destroyed { session, ok } => {
                // Keep a destroyed holder in mind until the watch shows the key without it, so
                // that a stale read does not destroy it again; forget it if the destroy failed.
                if !ok && self.destroying.as_deref() == Some(session.as_str()) {
                    self.destroying = None;
                }
                if self.exiting && self.session() == Some(session.as_str()) {
                    self.exit_destroy = Some(true);
                }
            }
            Event::GuardAck(seq) => {
                let g = &mut self.guard;
                if let Some(pos) = g.pending.iter().rposition(|(s, _, _)| *s <= seq) {
                    for (_, order, _) in g.pending.drain(..=pos) {
                        if order != GuardOrder::Ping {
                            g.acked = Some(order);
                        }
                    }
                }
            }
            Event::GuardNack(seq) => {
                // A refusal matters unless a later arm or disarm replaced the order (an arm of
                // a neard that exited before the guard read it): that one's answer decides.
                let g = &mut self.guard;
                let replaced = g
                    .pending
                    .iter()
                    .any(|(s, order, _)| *s > seq && *order != GuardOrder::Ping);
                if replaced {
                    g.pending.retain(|(s, _, _)| *s != seq);
                } else {
                    self.guard_lost(out);
                }
            }
            Event::GuardLost => self.guard_lost(out),
            Event::GuardSpawned => {
                let g = &mut self.guard;
                g.alive = true;
                g.respawning = false;
                g.pending.clear();
                g.last = None;
                g.acked = Some(GuardOrder::Disarm);
                g.last_sent = now;
            }
            Event::GuardSpawnFailed => {
                let g = &mut self.guard;
                g.alive = false;
                g.respawning = false;
                g.retry_at = now + GUARD_RETRY;
            }
            Event::ClockJump(_) => {
                if self.key_live {
                    self.step_down(StepDown::ClockJump, out);
                }
            }
            Event::Shutdown => {
                if !self.exiting {
                    self.exiting = true;
                    self.then_start = None;
                    match &self.phase {
                        Phase::Validating => self.step_down(StepDown::Shutdown, out),
                        Phase::Promoting(_) => {
                            if self.key_live {
                                self.step_down(StepDown::Shutdown, out);
                            } else {
                                out.push(Command::SteppedDown(StepDown::Shutdown));
                                self.start_release(Letgo::Unchanged, After::Exit);
                            }
                        }
                        Phase::Demoting(_) => self.step_down(StepDown::Shutdown, out),
                        Phase::Releasing(_) | Phase::Idle => {
                            if let Phase::Releasing(r) = &mut self.phase {
                                r.after = After::Exit;
                                r.give_up_at = Some(now + self.cfg.timing.heartbeat_interval);
                            }
                        }
                    }
                }
            }
            Event::HandOver => match &self.phase {
                Phase::Validating => self.step_down(StepDown::HandOver, out),
                // The key is being installed: hand over all the same.
                Phase::Promoting(_) if self.key_live => self.step_down(StepDown::HandOver, out),
                Phase::Promoting(_) => {
                    out.push(Command::SteppedDown(StepDown::HandOver));
                    self.start_release(Letgo::Unchanged, self.after_standby(true));
                }
                _ => {}
            },
            Event::ClusterObserved { control, peers } => {
                if control.switchover.is_none() {
                    self.switchover = None;
                    self.windows = None;
                }
                self.control = control;
                self.observe_peers(peers);
            }
            Event::NeardVersion(v) => self.neard_version = Some(v),
            Event::Windows(w) => {
                self.windows_pending = false;
                self.windows_at = now;
                self.windows = Some(w);
            }
        }
    }

    pub(super) fn on_poll(&mut self, poll: Poll) {
        let now = self.now;
        let ahead = self
            .ready()
            .filter(|p| p.changed < now)
            .filter_map(|p| p.record.head)
            .max();
        let Proc::Up(up) = &mut self.proc else {
            return;
        };
        match up.poll {
            Some(prev) if prev.head == poll.head => {}
            prev => {
                up.head_since = Some(now);
                up.tip_after = prev.and(up.last_ok);
            }
        }
        // A block stamped later than our wall clock: our clock is behind the chain's (or a
        // producer's is ahead). The fence's "caught up" rule reads block timestamps against
        // our clock; it is not used until the clocks have agreed for a while.
        if poll
            .block_ms
            .is_some_and(|tip| tip > poll.wall_ms + millis(fence::WALL_SKEW))
        {
            self.wall_behind_until = Some(now + WALL_DISTRUST);
        }
        up.last_ok = Some(now);
        // Behind a ready node: its record, seen before this poll, shows a head ours has not
        // reached by LAG_HEIGHTS or more.
        up.behind_since = match ahead {
            Some(peer) if poll.head + LAG_HEIGHTS <= peer => up.behind_since.or(Some(now)),
            _ => None,
        };
        up.syncing_since = match (poll.syncing, up.syncing_since) {
            (false, _) => None,
            (true, since) => since.or(Some(now)),
        };
        // `/metrics` is read only now and then: a poll without it keeps the reload counter
        // this neard last showed (it only grows), so that a hot swap started right after a
        // poll without `/metrics` can still be confirmed.
        let mut poll = poll;
        if poll.reloads.is_none() && !self.cfg.mutations.on(|m| m.forget_reload_counter) {
            poll.reloads = up.poll.and_then(|p| p.reloads);
        }
        up.poll = Some(poll);
        if poll.hot_swap_capable.is_some() {
            self.hot_swap_capable = poll.hot_swap_capable;
        }
        if self.key_live || matches!(self.phase, Phase::Promoting(_)) {
            self.horizon = self.horizon.max(Horizon {
                head: Some(poll.head),
                target: poll.target,
                exact: false,
                stale_ms: None,
            });
            // Only a neard in sync bounds what it signs next by the chain's pace: a syncing one
            // may catch up in a burst and sign far above what it showed (seed 43238 of the
            // simulation: a neard syncing after its restart with the key joined, caught up and
            // produced a block nine targets above its last poll before the syncing step-down
            // killed it, and the successor's fence, counting from that poll, signed the same
            // height). Its horizon grows stale from the last poll in sync.
            if !poll.syncing {
                self.horizon_at = Some(now);
            }
        }
    }

    /// The newest `(Term, Seq)` of the lock this node has seen, unless the simulation switched
    /// the check off; while the node rejoins (see `rejoining`), newer than any record.
    pub(super) fn remembered(&self) -> Option<(u64, u64)> {
        if self.cfg.mutations.on(|m| m.trust_rewound_records) {
            return None;
        }
        if self.rejoining.is_some() && !self.cfg.mutations.on(|m| m.rejoin_trusts_records) {
            return Some((u64::MAX, u64::MAX));
        }
        self.memory.map(|m| m.order())
    }

    /// This node may have missed writes to the key (its session is gone): it forgets what it saw
    /// and counts every record as foreign until it follows the key again (see `rejoining`).
    pub(super) fn rejoin(&mut self) {
        self.rejoining = Some(None);
        self.observer.reset();
    }

    /// Takes in what the key shows: a newer record is remembered (and persisted); an older one
    /// at a lower index than remembered is Consul's state rewound, reported once.
    pub(super) fn remember_key(&mut self, out: &mut Vec<Command>) {
        let Some((key, record)) = self
            .observer
            .key()
            .and_then(|k| Some((k.clone(), Record::parse(&k.value)?)))
        else {
            return;
        };
        self.remember(record.order(), key.index, out);
        self.horizon_seen = self
            .horizon_seen
            .max(record.horizon)
            .max(record.inherited.unwrap_or_default());
        if let Some(m) = self.memory {
            if record.order() < m.order()
                && key.index < m.index
                && self.rewind_reported != Some(key.index)
            {
                self.rewind_reported = Some(key.index);
                // The key's history was rewound: an index at which this node gave its own key
                // back, or was told the key had moved on, may name another state now (a
                // restore brings back old indexes). A key under our session is given back
                // again.
                if !self.cfg.mutations.on(|m| m.blind_after_restore) {
                    self.released_own = None;
                }
                out.push(Command::ConsulRewound {
                    seen: (record.term, record.seq, key.index),
                    remembered: m,
                });
            }
        }
    }

    /// Remembers `(term, seq)` at `index` if it is newer than what we remembered.
    pub(super) fn remember(&mut self, order: (u64, u64), index: u64, out: &mut Vec<Command>) {
        if self.memory.is_some_and(|m| order <= m.order()) {
            return;
        }
        let m = LockMemory {
            term: order.0,
            seq: order.1,
            index,
        };
        self.memory = Some(m);
        out.push(Command::Remember(m));
    }

    /// Takes in the other nodes' records: a record that differs from what we had of that node
    /// (every write changes its time stamp) is fresh from now, by our clock.
    pub(super) fn observe_peers(&mut self, records: Vec<NodeRecord>) {
        let now = self.now;
        let old = std::mem::take(&mut self.peers);
        self.peers = records
            .into_iter()
            .filter(|r| r.node_id != self.cfg.node_id)
            .map(|record| {
                let changed = old
                    .iter()
                    .find(|p| p.record == record)
                    .map_or(now, |p| p.changed);
                Peer { record, changed }
            })
            .collect();
    }

    /// The other nodes whose fresh records say they would take the lock now.
    pub(super) fn ready_peers(&self) -> impl Iterator<Item = &NodeRecord> {
        self.ready().map(|p| &p.record)
    }

    /// [`Self::ready_peers`], with when each record last changed.
    pub(super) fn ready(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(|p| {
            self.now < p.changed + PEER_FRESH && p.record.may_take_over && p.record.priority > 0
        })
    }

    /// As a standby: follows the head the lock holder's records show, and since which of its
    /// records.
    pub(super) fn observe_holder(&mut self) {
        let own = self.session().map(str::to_string);
        let seen = self.observer.key().and_then(|k| {
            let session = k.session.clone()?;
            let record = Record::parse(&k.value)?;
            let head = record.horizon.head?;
            (Some(&session) != own.as_ref()).then_some((session, head, record.seq))
        });
        // Our head when the holder's record arrives, against the head it shows (a record's
        // head is from the holder's poll before it: one height more of room).
        let ours = self.own_view().map(|v| v.head);
        let lags = |head: u64| ours.is_some_and(|o| o > head + LAG_HEIGHTS);
        self.holder = match (seen, self.holder.take()) {
            (None, _) => None,
            // The same record again: nothing new.
            (Some((session, _, seq)), Some(h)) if h.session == session && h.seq == seq => Some(h),
            (Some((session, head, seq)), Some(h)) if h.session == session => {
                let behind = if lags(head) { h.behind + 1 } else { 0 };
                let first_seq = if h.head == head { h.first_seq } else { seq };
                Some(HolderProgress {
                    session,
                    head,
                    first_seq,
                    seq,
                    behind,
                })
            }
            (Some((session, head, seq)), _) => Some(HolderProgress {
                session,
                head,
                first_seq: seq,
                seq,
                behind: u32::from(lags(head)),
            }),
        };
    }

    /// Whether our wall clock may be read against block timestamps (no block from our
    /// clock's future lately).
    pub(super) fn wall_trusted(&self) -> bool {
        self.wall_behind_until.is_none_or(|until| self.now >= until)
    }

    pub(super) fn synced(&self) -> bool {
        self.own_view().is_some()
    }

    pub(super) fn own_view(&self) -> Option<OwnView> {
        match &self.proc {
            Proc::Up(Up {
                poll: Some(p),
                tip_after,
                ..
            }) if !p.syncing => Some(OwnView {
                head: p.head,
                target: p.target,
                tip_ms: p.block_ms,
                wall_ms: p.wall_ms,
                arrived_after: *tip_after,
                wall_trusted: self.wall_trusted(),
            }),
            _ => None,
        }
    }

    pub(super) fn after_standby(&self, handover: bool) -> After {
        if self.exiting {
            return After::Exit;
        }
        let t = &self.cfg.timing;
        let hold = if handover {
            t.handover_holdoff
        } else {
            t.retake_holdoff
        };
        After::Standby(self.now + hold)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
