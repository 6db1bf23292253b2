//! Fencing and letting go: stepping down, stopping neard, the lease, promotion and demotion
//! steps, and the release of the lock.

use std::time::Duration;

use crate::lease::{Horizon, Lease, Lost};
use crate::timing::STATUS_TIMEOUT;

use super::progress::{
    After, DemoteStep, Demotion, Letgo, Phase, Proc, PromoteStep, Promotion, Release,
};
use super::vocabulary::{Command, KeyShown, Role, StepDown};
use super::Machine;

impl Machine {
    /// neard died on its own (or could not be started): it is fenced.
    pub(super) fn neard_gone(&mut self, why: StepDown, out: &mut Vec<Command>) {
        let was_live = self.key_live;
        self.key_live = false;
        match self.phase.clone() {
            Phase::Validating => {
                out.push(Command::SteppedDown(why));
                self.fenced(Letgo::Clean, self.after_standby(false), out);
            }
            Phase::Promoting(p) => {
                let keyed = was_live || p.step != PromoteStep::Fencing;
                out.push(Command::SteppedDown(why));
                let letgo = if keyed {
                    Letgo::Clean
                } else {
                    Letgo::Unchanged
                };
                self.fenced(letgo, self.after_standby(false), out);
            }
            Phase::Demoting(d) => self.fenced(d.letgo, d.after, out),
            Phase::Idle | Phase::Releasing(_) => {
                if self.key_file {
                    out.push(Command::RemoveKey);
                    self.key_file = false;
                }
            }
        }
    }

    /// The key is not ours any more (seen by the watch, a heartbeat or a renew).
    pub(super) fn lock_lost(&mut self, lost: Lost, out: &mut Vec<Command>) {
        if self.lease.is_none() {
            return;
        }
        match &mut self.phase {
            Phase::Validating => self.step_down(StepDown::KeyLost(lost), out),
            Phase::Promoting(_) if self.key_live => self.step_down(StepDown::KeyLost(lost), out),
            Phase::Promoting(_) => {
                out.push(Command::SteppedDown(StepDown::KeyLost(lost)));
                self.finish_release(self.after_standby(false));
            }
            Phase::Demoting(d) => d.letgo = Letgo::NotOurs,
            Phase::Releasing(r) => {
                let after = r.after;
                self.finish_release(after);
            }
            Phase::Idle => self.lease = None,
        }
    }

    pub(super) fn guard_lost(&mut self, out: &mut Vec<Command>) {
        let g = &mut self.guard;
        if g.respawning {
            return;
        }
        g.alive = false;
        g.respawning = true;
        g.pending.clear();
        g.last = None;
        g.acked = None;
        out.push(Command::RespawnGuard);
        self.neard_died_with_guard(out);
    }

    /// neard is the guard's child (`PR_SET_PDEATHSIG`): the supervisor kills it before it
    /// replaces a lost guard, and it would die with the guard anyway. A neard being stopped is
    /// as good as exited; one that ran (or was being started) is gone: the node steps down if
    /// it led, and starts a voter once a new guard runs (after the back-off, as for a crash).
    pub(super) fn neard_died_with_guard(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        match self.proc {
            Proc::Down(_) => {}
            Proc::Stopping { .. } | Proc::Dying { .. } => {
                self.proc = Proc::Down(self.then_start.take().map(|r| (r, now)));
                self.key_live = false;
            }
            Proc::Up(_) | Proc::Spawning(_) => {
                let wait = self.backoff.failed(now);
                self.proc = Proc::Down(Some((Role::Voter, now + wait)));
                self.neard_gone(StepDown::GuardLost, out);
            }
        }
    }

    /// Starts fencing a neard whose key may be live: the node gives up validating.
    pub(super) fn step_down(&mut self, reason: StepDown, out: &mut Vec<Command>) {
        if let Phase::Demoting(d) = &mut self.phase {
            // Already fencing; only where to go afterwards can change.
            if reason == StepDown::Shutdown {
                d.after = After::Exit;
            }
            if let StepDown::KeyLost(_) = reason {
                d.letgo = Letgo::NotOurs;
            }
            return;
        }
        if matches!(self.phase, Phase::Releasing(_) | Phase::Idle) && !self.key_live {
            return;
        }
        let letgo = match reason {
            StepDown::KeyLost(_) => Letgo::NotOurs,
            _ if self.lease.is_none() => Letgo::NotOurs,
            _ => Letgo::Clean,
        };
        let after = match reason {
            StepDown::Shutdown => After::Exit,
            StepDown::HandOver | StepDown::NoProgress(_) => self.after_standby(true),
            _ => self.after_standby(false),
        };
        out.push(Command::SteppedDown(reason));
        self.last_step_down = Some(reason);
        if !self.key_live {
            self.fenced(letgo, after, out);
            return;
        }
        // A hot-swap demotion needs a neard that drops keys on SIGHUP (>= 2.3), whose key was
        // confirmed loaded (so the reload counter is known), and that still answers.
        let reloads = self.last_poll().and_then(|p| p.reloads);
        let unload = match (&self.phase, &self.proc, reloads) {
            (Phase::Validating, Proc::Up(_), Some(r))
                if self.cfg.hot_swap
                    && self.hot_swap_capable == Some(true)
                    && !matches!(
                        reason,
                        StepDown::NeardFailed | StepDown::BootTimeout | StepDown::ClockJump
                    ) =>
            {
                Some(r)
            }
            _ => None,
        };
        match unload {
            Some(reloads_before) => {
                out.push(Command::RemoveKey);
                self.key_file = false;
                out.push(Command::Sighup);
                self.phase = Phase::Demoting(Demotion {
                    after,
                    letgo,
                    step: DemoteStep::Unloading {
                        deadline: self.now + self.cfg.timing.stop_grace,
                        reloads_before,
                    },
                });
            }
            None => {
                self.phase = Phase::Demoting(Demotion {
                    after,
                    letgo,
                    step: DemoteStep::Stopping,
                });
                // No time for a graceful stop when the lease or the guard is the reason, or
                // neard does not answer anyway.
                let kill = matches!(
                    reason,
                    StepDown::NeardFailed
                        | StepDown::LeaseExpired
                        | StepDown::GuardLost
                        | StepDown::ClockJump
                        | StepDown::KeyLost(_)
                );
                self.stop_neard(kill, out);
            }
        }
    }

    /// Stops neard (SIGTERM, SIGKILL after the grace; or SIGKILL at once); a voter is started
    /// again afterwards unless the node exits.
    pub(super) fn stop_neard(&mut self, kill_now: bool, out: &mut Vec<Command>) {
        self.then_start = (!self.exiting).then_some(Role::Voter);
        match &self.proc {
            Proc::Up(up) => {
                let pid = up.pid;
                if kill_now {
                    out.push(Command::KillNeard);
                    self.proc = Proc::Dying { pid };
                } else {
                    out.push(Command::TermNeard);
                    self.proc = Proc::Stopping {
                        pid,
                        kill_at: self.now + self.cfg.timing.stop_grace,
                    };
                }
            }
            Proc::Stopping { pid, .. } if kill_now => {
                let pid = *pid;
                out.push(Command::KillNeard);
                self.proc = Proc::Dying { pid };
            }
            _ => {}
        }
    }

    /// neard is fenced (confirmed keyless, killed, or dead): remove the key file (a restart
    /// with the key wrote one too) and let go.
    pub(super) fn fenced(&mut self, letgo: Letgo, after: After, out: &mut Vec<Command>) {
        self.key_live = false;
        self.fenced_at = Some(self.now);
        if !self.horizon.exact {
            // Read from a neard that could still sign afterwards: say how stale, at most (the
            // poll's values were read up to its timeout before it was answered). It signed
            // nothing after now, nor after the guard's deadline: a live key had the guard armed
            // for its neard, with at most the lease deadline plus the stop grace (this matters
            // when kuutamod was stopped and the guard killed neard long ago).
            let end = match &self.lease {
                Some(l) => self.now.min(l.deadline() + self.cfg.timing.stop_grace),
                None => self.now,
            };
            self.horizon.stale_ms = self.horizon_at.map(|at| {
                u64::try_from((end.saturating_duration_since(at) + STATUS_TIMEOUT).as_millis())
                    .unwrap_or(u64::MAX)
            });
        }
        out.push(Command::RemoveKey);
        self.key_file = false;
        if self.exiting {
            self.then_start = None;
        }
        let keep = self.cfg.mutations.on(|m| m.keep_lock_after_step_down)
            && self.last_step_down == Some(StepDown::LeaseExpired);
        match letgo {
            Letgo::NotOurs => self.finish_release(after),
            _ if keep => self.keep_lock(after),
            _ => self.start_release(letgo, after),
        }
    }

    pub(super) fn start_release(&mut self, letgo: Letgo, after: After) {
        if self.lease.is_none() {
            self.finish_release(after);
            return;
        }
        // Only a term whose fence opened may say "released": before that, the previous
        // leader's wait still holds, and the next one must inherit it (the value unchanged).
        let letgo = match letgo {
            Letgo::Clean if !self.activated => Letgo::Unchanged,
            l => l,
        };
        let successor = match letgo {
            Letgo::Clean => self.successor.take(),
            _ => None,
        };
        self.phase = Phase::Releasing(Release {
            letgo,
            successor,
            after,
            beat_wait_until: self.now + self.cfg.timing.retry,
            retry_at: self.now,
            in_flight: false,
            give_up_at: (after == After::Exit)
                .then(|| self.now + self.cfg.timing.heartbeat_interval),
        });
    }

    /// The value a release writes, from the last record Consul acknowledged.
    fn release_value(&self, lease: &Lease, r: &Release) -> Vec<u8> {
        match r.letgo {
            Letgo::Clean => lease.released(self.horizon, r.successor.clone()).to_bytes(),
            // Never live: what the next leader must wait for is only the previous leader's.
            Letgo::GiveBack(inherited) => lease.released(inherited, None).to_bytes(),
            _ => lease.record().to_bytes(),
        }
    }

    /// [`Mutations::keep_lock_after_step_down`]: forget the lease but leave the lock with our
    /// session, as kuutamod did before it released after every step-down.
    pub(super) fn keep_lock(&mut self, after: After) {
        self.lease = None;
        self.phase = Phase::Idle;
        self.horizon = Horizon::default();
        self.horizon_at = None;
        if let After::Standby(until) = after {
            self.holdoff_until = Some(until);
        }
    }

    pub(super) fn finish_release(&mut self, after: After) {
        self.lease = None;
        self.phase = Phase::Idle;
        self.horizon = Horizon::default();
        self.horizon_at = None;
        if let After::Standby(until) = after {
            self.holdoff_until = Some(until);
        }
    }

    /// The lease: a node whose key may be live and whose lease has run out stops at once.
    pub(super) fn reconcile_lease(&mut self, out: &mut Vec<Command>) {
        let Some(deadline) = self.lease_deadline() else {
            return;
        };
        if self.now < deadline {
            return;
        }
        match &self.phase {
            Phase::Validating => self.step_down(StepDown::LeaseExpired, out),
            Phase::Promoting(_) if self.key_live => self.step_down(StepDown::LeaseExpired, out),
            Phase::Promoting(_) => {
                out.push(Command::SteppedDown(StepDown::LeaseExpired));
                self.start_release(Letgo::Unchanged, self.after_standby(false));
            }
            _ => {}
        }
    }

    pub(super) fn reconcile_phase(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        match self.phase.clone() {
            Phase::Idle | Phase::Validating => {}
            Phase::Promoting(p) => match p.step {
                PromoteStep::Fencing => {
                    if self.doppelganger.alarmed() {
                        // Someone else signs with our key: do not add a second signer.
                        self.start_release(Letgo::Unchanged, self.after_standby(false));
                        return;
                    }
                    if !self.guard_armed() {
                        return;
                    }
                    let Some(own) = self.own_view() else { return };
                    let check = p.fence.check(now, own, &self.fence_params());
                    let open = if self.cfg.mutations.on(|m| m.timeout_fence) {
                        p.head0.is_some_and(|h| own.head > h)
                            || now >= p.acquired + Duration::from_secs(5)
                    } else {
                        check.is_ok()
                    };
                    if open {
                        self.activate(p, out);
                    }
                }
                PromoteStep::Swapping {
                    deadline,
                    reloads_before,
                } => {
                    let confirmed = self.last_poll().is_some_and(|poll| {
                        poll.key == KeyShown::Ours
                            && matches!((reloads_before, poll.reloads), (Some(b), Some(r)) if r > b)
                    });
                    if confirmed {
                        out.push(Command::Activated {
                            took: now.saturating_duration_since(p.acquired),
                            hot_swap: true,
                        });
                        self.activated_at = Some(now);
                        self.phase = Phase::Validating;
                    } else if now >= deadline {
                        out.push(Command::HotSwapFallback("unconfirmed"));
                        self.restart_with_key(p, out);
                    }
                }
                PromoteStep::Restarting => {
                    if matches!(&self.proc, Proc::Up(up) if up.role == Role::Validator) {
                        out.push(Command::Activated {
                            took: now.saturating_duration_since(p.acquired),
                            hot_swap: false,
                        });
                        self.activated_at = Some(now);
                        self.phase = Phase::Validating;
                    }
                }
            },
            Phase::Demoting(d) => match d.step {
                DemoteStep::Unloading {
                    deadline,
                    reloads_before,
                } => {
                    let keyless = self.last_poll().filter(|p| {
                        p.key == KeyShown::None && p.reloads.is_some_and(|r| r > reloads_before)
                    });
                    if let Some(p) = keyless {
                        // Read from a neard that holds no key any more: these bound all it
                        // signed, exactly when its largest target is known.
                        self.horizon = self.horizon.max(Horizon {
                            head: Some(p.head),
                            target: p.target,
                            exact: true,
                            stale_ms: None,
                        });
                        self.horizon.exact = p.target.is_some();
                        self.fenced(d.letgo, d.after, out);
                    } else if now >= deadline {
                        out.push(Command::HotSwapFallback("demotion_unconfirmed"));
                        self.phase = Phase::Demoting(Demotion {
                            step: DemoteStep::Stopping,
                            ..d
                        });
                        self.stop_neard(true, out);
                    }
                }
                DemoteStep::Stopping => match self.proc {
                    // Fenced once SIGKILL is sent (in order, before anything else) or neard is
                    // gone.
                    Proc::Dying { .. } | Proc::Down(_) => {
                        self.horizon.exact = false;
                        self.fenced(d.letgo, d.after, out);
                    }
                    // A neard that came up since (it was being spawned): kill it.
                    Proc::Up(_) if self.key_live => self.stop_neard(true, out),
                    Proc::Up(_) => {
                        self.horizon.exact = false;
                        self.fenced(d.letgo, d.after, out);
                    }
                    Proc::Stopping { .. } | Proc::Spawning(_) => {}
                },
            },
            Phase::Releasing(r) => {
                if r.give_up_at.is_some_and(|g| now >= g) {
                    self.finish_release(r.after);
                    return;
                }
                if r.in_flight || now < r.retry_at {
                    return;
                }
                match (self.session().map(str::to_string), &self.lease) {
                    // A heartbeat on its way would move the key past the index the release
                    // checks (and the release would be refused): its verdict first, for a
                    // while (a refused release is retried with the value unchanged).
                    (Some(_), Some(lease))
                        if lease.in_flight()
                            && now < r.beat_wait_until
                            && !self.cfg.mutations.on(|m| m.release_races_heartbeat) => {}
                    (Some(session), Some(lease)) => {
                        out.push(Command::Release {
                            session,
                            expected_index: lease.index(),
                            value: self.release_value(lease, &r),
                        });
                        if let Phase::Releasing(r) = &mut self.phase {
                            r.in_flight = true;
                        }
                    }
                    _ => self.finish_release(r.after),
                }
            }
        }
    }

    pub(super) fn activate(&mut self, p: Promotion, out: &mut Vec<Command>) {
        self.activated = true;
        let hot = self.cfg.hot_swap && self.hot_swap_capable != Some(false);
        if !hot {
            if self.cfg.hot_swap {
                out.push(Command::HotSwapFallback("neard_too_old"));
            }
            self.restart_with_key(p, out);
            return;
        }
        let reloads_before = self.last_poll().and_then(|poll| poll.reloads);
        out.push(Command::InstallKey);
        out.push(Command::Sighup);
        self.key_file = true;
        self.key_live = true;
        self.phase = Phase::Promoting(Promotion {
            step: PromoteStep::Swapping {
                deadline: self.now + self.cfg.timing.hot_swap_confirm,
                reloads_before,
            },
            ..p
        });
    }

    pub(super) fn restart_with_key(&mut self, p: Promotion, out: &mut Vec<Command>) {
        self.phase = Phase::Promoting(Promotion {
            step: PromoteStep::Restarting,
            ..p
        });
        if self.key_file {
            out.push(Command::RemoveKey);
            self.key_file = false;
        }
        // A running neard may hold the key (a hot swap that was not confirmed): stopping it is
        // a fence; the validator start comes once it is gone.
        match &self.proc {
            Proc::Up(_) | Proc::Stopping { .. } => {
                self.stop_neard(false, out);
                self.then_start = Some(Role::Validator);
            }
            Proc::Dying { .. } | Proc::Spawning(_) => self.then_start = Some(Role::Validator),
            Proc::Down(_) => self.proc = Proc::Down(Some((Role::Validator, self.now))),
        }
    }
}
