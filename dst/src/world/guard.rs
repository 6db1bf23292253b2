//! The guard process, neard's parent (`src/guard.rs`): orders through its pipe (acknowledged,
//! or refused for a pid that is not its neard), the spawns of neard it performs (answered with
//! the pid), neard's exits it reports, its timer that kills its neard at the armed deadline on
//! its own clock, and its death, which takes its neard along (`PR_SET_PDEATHSIG`), as
//! kuutamod's death takes the guard along. Its notes reach kuutamod in order, as lines of a
//! pipe do.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;

use kuutamod::guard::Note;
use kuutamod::machine::GuardOrder;
use kuutamod::neard::Role;
use kuutamod::supervisor::conductor::SpawnError;

use super::events::Ev;
use super::{Mutation, World};
use crate::clock::MS;

/// An order in the guard's pipe.
pub(super) enum Order {
    /// One of the machine's, with its sequence number.
    Machine(u64, GuardOrder),
    /// Start neard in this role (the supervisor's `spawn` order, with its id).
    Spawn(u64, Role),
}

pub(super) struct Guard {
    gen: u64,
    alive: bool,
    pub(super) stopped: bool,
    pipe: VecDeque<Order>,
    /// The armed deadline (host clock, ns): it holds for whichever neard this guard runs, also
    /// one it starts after the order.
    armed: Option<u64>,
    tgen: u64,
    /// Exits of its neard not reported yet (the guard reports them when it runs).
    exits: Vec<u32>,
    /// When its last note reaches kuutamod: notes keep their order, as lines of a pipe.
    last_note: u64,
}

impl Guard {
    /// The guard process exists (not killed).
    pub(super) fn alive(&self) -> bool {
        self.alive
    }
}

impl World {
    fn guard_runnable(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        host.guard.as_ref().is_some_and(|g| g.alive && !g.stopped)
            && !host.suspended
            && !(host.group_stopped && self.settings.mutation == Mutation::GuardInGroup)
    }

    /// Whether the host's neard is a child of the guard of generation `gen`.
    fn neard_of(&self, h: usize, gen: u64) -> bool {
        self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.parent == gen)
    }

    /// Writes an order into the guard's pipe, as the supervisor does: never blocking (unless
    /// the mutation says so); a full pipe is an error (the supervisor then gives the guard up).
    pub(super) fn guard_write(&mut self, h: usize, order: Order) -> Result<(), SpawnError> {
        let Some(gen) = self.hosts[h]
            .guard
            .as_ref()
            .filter(|g| g.alive)
            .map(|g| g.gen)
        else {
            return Err(match order {
                Order::Spawn(..) => SpawnError::NoGuard,
                Order::Machine(..) => SpawnError::Guard("no guard".into()),
            });
        };
        let blocking = self.settings.mutation == Mutation::BlockingGuardPipe;
        let capacity = self.settings.guard_pipe;
        let g = self.hosts[h].guard.as_mut().expect("a guard");
        if g.pipe.len() >= capacity {
            if blocking {
                // The write blocks kuutamod until the guard reads.
                g.pipe.push_back(order);
                if let Some(k) = self.hosts[h].kd.as_mut() {
                    k.blocked = true;
                }
                self.trace(|| format!("host {h} kuutamod blocks on the guard's pipe"));
                return Ok(());
            }
            self.trace(|| format!("host {h} guard's pipe is full"));
            return Err(SpawnError::Guard("the guard's pipe is full".into()));
        }
        g.pipe.push_back(order);
        if self.guard_runnable(h) {
            let d = self.rng.range(MS / 20, MS / 2);
            self.after(d, Ev::GuardRun { h, gen });
        }
        Ok(())
    }

    /// What the supervisor does with a guard it gives up on: neard killed (through its own
    /// pidfd, whether the guard is still there or not), the guard SIGKILLed and reaped (a neard
    /// being started dies with it).
    pub(super) fn guard_drop(&mut self, h: usize, known: Option<u32>) {
        let g = self.hosts[h].guard.take();
        let neard = self.hosts[h].neard.as_ref().filter(|n| n.alive);
        let dies = neard
            .is_some_and(|n| Some(n.pid) == known || g.as_ref().is_some_and(|g| n.parent == g.gen));
        if dies {
            self.trace(|| format!("host {h} kuutamod kills neard and its guard"));
            self.neard_dies(h);
        }
        if let Some(k) = self.hosts[h].kd.as_mut() {
            k.blocked = false;
        }
    }

    /// kuutamod starts a guard of generation `gen`.
    pub(super) fn guard_spawn(&mut self, h: usize, gen: u64) {
        self.hosts[h].guard = Some(Guard {
            gen,
            alive: true,
            stopped: false,
            pipe: VecDeque::new(),
            armed: None,
            tgen: 0,
            exits: Vec::new(),
            last_note: 0,
        });
    }

    /// A note of guard `gen` to kuutamod, after the ones before it.
    fn guard_note(&mut self, h: usize, gen: u64, note: Note, delay: u64) {
        let Some(inst) = self.hosts[h].kd.as_ref().map(|k| k.inst) else {
            return;
        };
        let t = match self.hosts[h].guard.as_mut().filter(|g| g.gen == gen) {
            Some(g) => {
                g.last_note = g.last_note.max(self.t + delay);
                g.last_note
            }
            None => self.t + delay,
        };
        self.at(
            t,
            Ev::ToKd {
                h,
                inst,
                input: Box::new(kuutamod::supervisor::conductor::Input::Guard(note)),
            },
        );
    }

    pub(super) fn guard_run(&mut self, h: usize, gen: u64) {
        if !self.guard_runnable(h) || self.hosts[h].guard.as_ref().map(|g| g.gen) != Some(gen) {
            return;
        }
        let exits = std::mem::take(&mut self.hosts[h].guard.as_mut().expect("runs").exits);
        for pid in exits {
            let d = self.rng.range(MS / 20, MS / 2);
            let note = Note::Exited {
                generation: gen,
                pid,
                status: std::process::ExitStatus::from_raw(0),
            };
            self.guard_note(h, gen, note, d);
        }
        while let Some(order) = self.hosts[h]
            .guard
            .as_mut()
            .and_then(|g| g.pipe.pop_front())
        {
            let note = match order {
                Order::Machine(seq, GuardOrder::Arm { pid, deadline }) => {
                    // Its neard, running or exited and not yet reaped.
                    let ours = self.neard_of(h, gen)
                        && self.hosts[h].neard.as_ref().is_some_and(|n| n.pid == pid);
                    let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                    g.tgen += 1;
                    if ours {
                        g.armed = Some(deadline.as_nanos());
                        let tgen = g.tgen;
                        let t = self.clock_reaches(h, deadline.as_nanos());
                        self.at(t, Ev::GuardTimer { h, gen, tgen });
                        Note::Ack {
                            generation: gen,
                            seq,
                        }
                    } else {
                        // As the real guard: a pid that is not its neard is refused, and the
                        // deadline it held is dropped.
                        g.armed = None;
                        Note::Nack {
                            generation: gen,
                            seq,
                            why: format!("neard {pid} is not the guard's"),
                        }
                    }
                }
                Order::Machine(seq, GuardOrder::Disarm) => {
                    let g = self.hosts[h].guard.as_mut().expect("runnable guard");
                    g.armed = None;
                    g.tgen += 1;
                    Note::Ack {
                        generation: gen,
                        seq,
                    }
                }
                Order::Machine(seq, GuardOrder::Ping) => Note::Ack {
                    generation: gen,
                    seq,
                },
                Order::Spawn(id, role) => {
                    if self.hosts[h].neard.as_ref().is_some_and(|n| n.alive) {
                        // One neard at a time.
                        Note::SpawnFailed {
                            generation: gen,
                            id,
                            why: "a neard runs already".into(),
                        }
                    } else {
                        let pid = self.neard_start(h, role, gen);
                        Note::Spawned {
                            generation: gen,
                            id,
                            pid,
                        }
                    }
                }
            };
            let d = self.rng.range(MS / 20, MS / 2);
            self.guard_note(h, gen, note, d);
        }
        let unblock = self.hosts[h].kd.as_ref().is_some_and(|k| k.blocked);
        if unblock {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.blocked = false;
            }
            self.kd_resume(h, 0);
        }
        self.guard_timer_due(h);
    }

    /// neard exited: its guard reports it when it runs (a dead guard reports nothing; kuutamod
    /// learns of neard's end from the guard's loss).
    pub(super) fn guard_neard_exited(&mut self, h: usize, pid: u32) {
        let Some(parent) = self.hosts[h].neard.as_ref().map(|n| n.parent) else {
            return;
        };
        let Some(g) = self.hosts[h]
            .guard
            .as_mut()
            .filter(|g| g.alive && g.gen == parent)
        else {
            return;
        };
        g.exits.push(pid);
        if self.guard_runnable(h) {
            let d = self.rng.range(MS / 20, MS / 2);
            self.after(d, Ev::GuardRun { h, gen: parent });
        }
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

    /// The guard's timerfd: kills its neard (whichever it runs) once the armed deadline passed
    /// on the guard's clock.
    fn guard_timer_due(&mut self, h: usize) {
        if !self.guard_runnable(h) {
            return;
        }
        let now = self.clock_now(h);
        let Some((gen, deadline)) = self.hosts[h]
            .guard
            .as_ref()
            .and_then(|g| g.armed.map(|d| (g.gen, d)))
        else {
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
        if self.neard_of(h, gen) && self.hosts[h].neard.as_ref().is_some_and(|n| n.alive) {
            let pid = self.hosts[h].neard.as_ref().map_or(0, |n| n.pid);
            self.trace(|| format!("host {h} guard kills neard {pid} at its deadline"));
            self.neard_dies(h);
        }
    }

    /// The guard dies (SIGKILL, or with kuutamod): its neard dies with it at once (its
    /// parent-death signal), stopped kuutamod or not; a kuutamod that runs sees the pipe close.
    pub(super) fn guard_kill(&mut self, h: usize) {
        let Some(g) = self.hosts[h].guard.as_mut() else {
            return;
        };
        g.alive = false;
        let gen = g.gen;
        let pdeathsig = self.settings.mutation != Mutation::NoGuardPdeathsig;
        if pdeathsig
            && self.neard_of(h, gen)
            && self.hosts[h].neard.as_ref().is_some_and(|n| n.alive)
        {
            self.trace(|| format!("host {h} neard dies with its guard"));
            self.neard_dies(h);
        }
        let note = Note::Lost {
            generation: gen,
            why: "its pipe closed".into(),
        };
        self.guard_note(h, gen, note, MS / 10);
        self.hosts[h].guard = None;
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
