//! The processes around the decisions: the guard's orders, neard's start and health, how
//! neard is polled, and the exit.

use std::time::Duration;

use crate::timing::{FAST_POLL, STATUS_FAIL_AFTER, STATUS_INTERVAL, VALIDATOR_BOOT_LIMIT};

use super::progress::{DemoteStep, Phase, Proc, PromoteStep};
use super::vocabulary::{Command, GuardOrder, Polling, Role, StepDown};
use super::Machine;

impl Machine {
    /// The order the guard should hold: armed with the lease's kill time while the key is or
    /// may soon be live, disarmed otherwise.
    ///
    /// The guard's deadline holds for whichever neard it runs, also one it starts after the
    /// order (`crate::guard`). So between two neards of a restart with the key, the last arm
    /// stays in force: the validator neard holds the key from its first instruction, before
    /// kuutamod hears its pid and can name it in an order, and a kuutamod stopped in that
    /// moment must still leave it armed.
    pub(super) fn guard_want(&self) -> GuardOrder {
        let t = &self.cfg.timing;
        let holding = self.key_live
            || matches!(
                self.phase,
                Phase::Promoting(_) | Phase::Validating | Phase::Demoting(_)
            );
        match (holding, self.neard_pid(), &self.lease) {
            (true, Some(pid), Some(l)) => GuardOrder::Arm {
                pid,
                deadline: l.kill_at(t.guard_after),
            },
            // A live key without a lease cannot happen; if it does, kill at once.
            (true, Some(pid), None) if self.key_live => GuardOrder::Arm {
                pid,
                deadline: self.now,
            },
            (true, None, _) => match self.guard.last {
                Some(arm @ GuardOrder::Arm { .. }) => arm,
                _ => GuardOrder::Disarm,
            },
            _ => GuardOrder::Disarm,
        }
    }

    pub(super) fn reconcile_guard(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        let t = self.cfg.timing;
        if !self.guard.alive {
            if !self.guard.respawning && now >= self.guard.retry_at {
                self.guard.respawning = true;
                out.push(Command::RespawnGuard);
            }
            return;
        }
        if let Some((_, _, sent)) = self.guard.pending.first() {
            if now >= *sent + t.guard_ack && !self.cfg.mutations.on(|m| m.no_guard_ack) {
                self.guard_lost(out);
                return;
            }
        }
        let want = self.guard_want();
        let ping = self.guard_ping_interval();
        let g = &mut self.guard;
        let order = if g.last != Some(want) {
            Some(want)
        } else if g.pending.is_empty() && now >= g.last_sent + ping {
            Some(GuardOrder::Ping)
        } else {
            None
        };
        if let Some(order) = order {
            let seq = g.next_seq;
            g.next_seq += 1;
            g.pending.push((seq, order, now));
            g.last_sent = now;
            if order != GuardOrder::Ping {
                g.last = Some(order);
            }
            out.push(Command::Guard { seq, order });
        }
    }

    /// How often the guard is pinged: while it is armed, often enough that a stopped guard is
    /// noticed within `1.5 x guard_ack` (then it is lost: the supervisor kills neard and the
    /// guard, and a new guard starts; a kuutamod stopped within that window after its guard,
    /// both stopped, is what the safety argument excludes); otherwise once a heartbeat
    /// interval.
    pub(super) fn guard_ping_interval(&self) -> Duration {
        let t = &self.cfg.timing;
        match self.guard.last {
            Some(GuardOrder::Arm { .. }) => t.guard_ack / 2,
            _ => t.heartbeat_interval,
        }
    }

    /// Whether the guard has acknowledged a kill deadline for the current neard.
    pub(super) fn guard_armed(&self) -> bool {
        if self.cfg.mutations.on(|m| m.no_guard_ack) {
            return self.guard.alive;
        }
        let g = &self.guard;
        match (g.acked, self.neard_pid()) {
            (Some(GuardOrder::Arm { pid, .. }), Some(p)) => {
                pid == p && g.alive && g.last == g.acked
            }
            _ => false,
        }
    }

    /// Starts neard when it is due (after a stop, or a crash's back-off), through a guard that
    /// runs: neard is the guard's child and dies with it.
    pub(super) fn reconcile_neard_start(&mut self, out: &mut Vec<Command>) {
        if let Proc::Down(Some((role, at))) = self.proc {
            if self.now < at || self.exiting || !self.guard.alive {
                return;
            }
            let restarting_with_key = role == Role::Validator
                && matches!(&self.phase, Phase::Promoting(p) if p.step == PromoteStep::Restarting);
            if self.control.paused && self.started_once && !restarting_with_key {
                return; // paused: kuutamod restarts no neard
            }
            self.started_once = true;
            // A validator start belongs to a promotion that is still on.
            let promoting = matches!(
                &self.phase,
                Phase::Promoting(p) if p.step == PromoteStep::Restarting
            );
            let role = if promoting { role } else { Role::Voter };
            self.proc = Proc::Spawning(role);
            if role == Role::Validator {
                self.key_live = true;
            }
            out.push(Command::StartNeard(role));
        }
    }

    /// neard's health: SIGKILL after the stop grace, and the step-downs a sick neard causes.
    pub(super) fn reconcile_neard_health(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        match self.proc.clone() {
            Proc::Stopping { kill_at, pid } if now >= kill_at => {
                out.push(Command::KillNeard);
                self.proc = Proc::Dying { pid };
            }
            Proc::Up(up) => {
                let failed = up.last_ok.is_some_and(|ok| now >= ok + STATUS_FAIL_AFTER);
                let boot_timeout = up.role == Role::Validator
                    && up.last_ok.is_none()
                    && now >= up.started + VALIDATOR_BOOT_LIMIT;
                let syncing_too_long = up
                    .syncing_since
                    .is_some_and(|s| now >= s + self.cfg.syncing_grace);
                let leading = self.key_live || matches!(self.phase, Phase::Promoting(_));
                if leading && failed {
                    self.step_down(StepDown::NeardFailed, out);
                } else if leading && boot_timeout {
                    self.step_down(StepDown::BootTimeout, out);
                } else if syncing_too_long && matches!(self.phase, Phase::Validating) {
                    self.step_down(StepDown::Syncing, out);
                } else if failed && !leading && !self.control.paused {
                    // A standby whose neard hangs: start it again (not while paused).
                    self.stop_neard(true, out);
                }
            }
            _ => {}
        }
    }

    pub(super) fn reconcile_polling(&mut self, out: &mut Vec<Command>) {
        let waiting_for_window = matches!(self.phase, Phase::Validating)
            && self.control.switchover.as_ref().is_some_and(|s| {
                s.in_window && self.handled_switchover.as_deref() != Some(s.id.as_str())
            });
        let fast = waiting_for_window
            || match &self.phase {
                Phase::Promoting(p) => p.step != PromoteStep::Restarting,
                Phase::Demoting(d) => matches!(d.step, DemoteStep::Unloading { .. }),
                _ => false,
            };
        let want = Polling {
            interval: if fast { FAST_POLL } else { STATUS_INTERVAL },
            metrics: fast || self.key_live || !matches!(self.phase, Phase::Idle),
        };
        if self.polling != Some(want) {
            self.polling = Some(want);
            out.push(Command::SetPolling(want));
        }
    }

    pub(super) fn reconcile_exit(&mut self, out: &mut Vec<Command>) {
        if !self.exiting || self.key_live || !matches!(self.phase, Phase::Idle) {
            return;
        }
        // Fenced and released: destroy the session, stop neard, exit.
        if let Some(id) = self.session().map(str::to_string) {
            if self.exit_destroy.is_none() {
                self.exit_destroy = Some(false);
                out.push(Command::DestroySession(id));
            }
        }
        if let Proc::Up(_) = self.proc {
            self.stop_neard(false, out);
        }
        let neard_gone = matches!(self.proc, Proc::Down(_));
        let destroyed = self.session().is_none() || self.exit_destroy == Some(true);
        if neard_gone && destroyed {
            self.exited = true;
            out.push(Command::Exit);
        }
    }
}
