//! The guard process: orders through its pipe (acknowledged, or refused for a neard that is
//! gone), its timer that kills an armed neard at the deadline on its own clock, its exit when
//! kuutamod is gone, and its death.

use std::collections::VecDeque;

use kuutamod::machine::{Event, GuardOrder};

use super::events::{Ev, Inc};
use super::{Mutation, World};
use crate::clock::MS;

pub(super) struct Guard {
    gen: u64,
    alive: bool,
    pub(super) stopped: bool,
    pipe: VecDeque<(u64, GuardOrder)>,
    armed: Option<(u32, u64)>,
    tgen: u64,
    pub(super) exit_pending: bool,
}

impl World {
    fn guard_runnable(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.guard.as_ref().is_some_and(|g| g.alive && !g.stopped)
            && !host.suspended
            && !(host.group_stopped && self.settings.mutation == Mutation::GuardInGroup)
    }

    pub(super) fn guard_write(&mut self, h: usize, seq: u64, order: GuardOrder) -> Option<Event> {
        let gen = self.hosts[h].kd.as_ref()?.guard_gen;
        let blocking = self.settings.mutation == Mutation::BlockingGuardPipe;
        let ok = match self.hosts[h].guard.as_mut() {
            Some(g) if g.alive && g.gen == gen => {
                if g.pipe.len() >= self.settings.guard_pipe {
                    if blocking {
                        // The write blocks kuutamod until the guard reads.
                        g.pipe.push_back((seq, order));
                        if let Some(k) = self.hosts[h].kd.as_mut() {
                            k.blocked = true;
                        }
                        self.trace(|| format!("host {h} kuutamod blocks on the guard's pipe"));
                        return None;
                    }
                    false
                } else {
                    g.pipe.push_back((seq, order));
                    true
                }
            }
            _ => false,
        };
        if !ok {
            return Some(Event::GuardLost);
        }
        if self.guard_runnable(h) {
            let d = self.rng.range(MS / 20, MS / 2);
            self.after(d, Ev::GuardRun { h, gen });
        }
        None
    }

    pub(super) fn guard_respawn(&mut self, h: usize) -> Event {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return Event::GuardSpawnFailed;
        };
        k.guard_gen += 1;
        k.blocked = false;
        let gen = k.guard_gen;
        self.hosts[h].guard = Some(Guard {
            gen,
            alive: true,
            stopped: false,
            pipe: VecDeque::new(),
            armed: None,
            tgen: 0,
            exit_pending: false,
        });
        Event::GuardSpawned
    }

    pub(super) fn guard_run(&mut self, h: usize, gen: u64) {
        if !self.guard_runnable(h) || self.hosts[h].guard.as_ref().map(|g| g.gen) != Some(gen) {
            return;
        }
        let inst = self.hosts[h].kd.as_ref().map(|k| k.inst);
        while let Some((seq, order)) = self.hosts[h]
            .guard
            .as_mut()
            .and_then(|g| g.pipe.pop_front())
        {
            let note = match order {
                GuardOrder::Arm { pid, deadline } => {
                    let alive = self.hosts[h].neard.as_ref().is_some_and(|n| n.pid == pid);
                    if alive {
                        let t = self.clock_reaches(h, deadline.as_nanos());
                        let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                        g.armed = Some((pid, deadline.as_nanos()));
                        g.tgen += 1;
                        let tgen = g.tgen;
                        self.at(t, Ev::GuardTimer { h, gen, tgen });
                        Ok(seq)
                    } else {
                        // As the real guard: no pidfd for a neard that is gone; it drops what
                        // it held and refuses.
                        let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                        g.armed = None;
                        g.tgen += 1;
                        Err(seq)
                    }
                }
                GuardOrder::Disarm => {
                    let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                    g.armed = None;
                    g.tgen += 1;
                    Ok(seq)
                }
                GuardOrder::Ping => Ok(seq),
            };
            if let Some(inst) = inst {
                let d = self.rng.range(MS / 20, MS / 2);
                self.after(
                    d,
                    Ev::ToKd {
                        h,
                        inst,
                        inc: Inc::GuardNote {
                            gen,
                            ack: Some(note),
                        },
                    },
                );
            }
        }
        let unblock = self.hosts[h].kd.as_ref().is_some_and(|k| k.blocked);
        if unblock {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.blocked = false;
            }
            self.kd_resume(h, 0);
        }
        self.guard_timer_due(h);
        self.guard_exit_if_orphan(h);
    }

    pub(super) fn guard_timer(&mut self, h: usize, gen: u64, tgen: u64) {
        let current = self.hosts[h]
            .guard
            .as_ref()
            .is_some_and(|g| g.gen == gen && g.tgen == tgen);
        if current {
            self.guard_timer_due(h);
        }
    }

    /// The guard's timerfd: kills an armed neard whose deadline passed on the guard's clock.
    fn guard_timer_due(&mut self, h: usize) {
        if !self.guard_runnable(h) {
            return;
        }
        let now = self.clock_now(h);
        let Some((pid, deadline)) = self.hosts[h].guard.as_ref().and_then(|g| g.armed) else {
            return;
        };
        if now < deadline {
            // An early wake (a suspend stopped MONOTONIC): wait again.
            let t = self.clock_reaches(h, deadline);
            let g = self.hosts[h].guard.as_mut().expect("guard");
            g.tgen += 1;
            let (gen, tgen) = (g.gen, g.tgen);
            self.at(t, Ev::GuardTimer { h, gen, tgen });
            return;
        }
        if let Some(g) = self.hosts[h].guard.as_mut() {
            g.armed = None;
        }
        if self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            self.trace(|| format!("host {h} guard kills neard {pid} at its deadline"));
            self.neard_dies(h);
        }
    }

    /// A guard whose kuutamod is gone kills an armed neard and exits, once it runs.
    pub(super) fn guard_exit_if_orphan(&mut self, h: usize) {
        if !self.guard_runnable(h) || !self.hosts[h].guard.as_ref().is_some_and(|g| g.exit_pending)
        {
            return;
        }
        let armed = self.hosts[h].guard.as_ref().and_then(|g| g.armed);
        if let Some((pid, _)) = armed {
            if self.hosts[h]
                .neard
                .as_ref()
                .is_some_and(|n| n.pid == pid && n.alive)
            {
                self.neard_dies(h);
            }
        }
        self.hosts[h].guard = None;
    }

    pub(super) fn guard_kill(&mut self, h: usize) {
        let Some(g) = self.hosts[h].guard.as_mut() else {
            return;
        };
        g.alive = false;
        let gen = g.gen;
        self.hosts[h].guard = None;
        if let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) {
            self.after(
                MS / 10,
                Ev::ToKd {
                    h,
                    inst,
                    inc: Inc::GuardNote { gen, ack: None },
                },
            );
        }
        let unblock = self.hosts[h].kd.as_ref().is_some_and(|k| k.blocked);
        if unblock {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.blocked = false;
            }
            self.kd_resume(h, 0);
        }
    }

    pub(super) fn guard_resume(&mut self, h: usize) {
        if let Some(gen) = self.hosts[h].guard.as_ref().map(|g| g.gen) {
            self.guard_run(h, gen);
        }
    }
}
