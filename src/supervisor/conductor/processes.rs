//! The guard and neard, as the conductor keeps track of them (the chain `kuutamod -> guard ->
//! neard`, see [`crate::guard`]): starting neard in a role through the guard, signalling it
//! through kuutamod's own pidfd, the guard's notes, reaping, and losing and replacing the
//! guard.

use std::collections::VecDeque;

use super::{Conductor, Host, NeardSignal, Report, SpawnError};
use crate::guard::Note;
use crate::machine::Event;
use crate::neard::process::describe;
use crate::neard::Role;

impl Conductor {
    pub(super) fn signal_neard(&mut self, signal: NeardSignal, host: &mut impl Host) {
        if let Some(pid) = self.neard {
            if let Err(e) = host.signal_neard(pid, signal) {
                log::warn!("cannot send {signal:?} to neard (pid {pid}): {e}");
            }
        }
    }

    /// SIGKILL to neard, certain once this returns: through kuutamod's pidfd, or, if that
    /// fails, by killing the guard (neard dies with it).
    pub(super) fn kill_neard(&mut self, follow: &mut VecDeque<Event>, host: &mut impl Host) {
        let Some(pid) = self.neard else {
            return;
        };
        match host.signal_neard(pid, NeardSignal::Kill) {
            Ok(()) => {
                log::info!("SIGKILL sent to neard (pid {pid})");
                follow.push_back(Event::NeardKilled { pid });
            }
            Err(e) => {
                log::error!(
                    "cannot SIGKILL neard (pid {pid}): {e}; killing its guard, which takes it down"
                );
                self.drop_guard(host);
                follow.push_back(Event::NeardKilled { pid });
                follow.push_back(Event::GuardLost);
            }
        }
    }

    /// Asks the guard to start neard in `role`; the outcome comes as a note.
    pub(super) fn start_neard(
        &mut self,
        role: Role,
        follow: &mut VecDeque<Event>,
        host: &mut impl Host,
    ) {
        self.next_spawn += 1;
        let id = self.next_spawn;
        let error = match host.spawn_neard(id, role) {
            Ok(()) => {
                self.spawning = Some((id, role));
                return;
            }
            Err(e) => e,
        };
        match error {
            SpawnError::Guard(e) => {
                log::error!("cannot give the guard the order to start neard: {e}");
                self.drop_guard(host);
                follow.push_back(Event::GuardLost);
            }
            other => {
                match other {
                    SpawnError::NoGuard => {
                        log::error!("cannot start neard: no guard process runs to start it")
                    }
                    SpawnError::Prepare(e) => log::error!("{e}"),
                    SpawnError::Guard(_) => {}
                }
                if role == Role::Validator {
                    host.remove_key();
                }
                follow.push_back(Event::NeardSpawnFailed);
            }
        }
    }

    /// A note of the guard, as the event it means for the machine (`None`: nothing to tell).
    pub(super) fn on_note(&mut self, note: Note, host: &mut impl Host) -> Option<Event> {
        if note.generation() != self.guard_generation {
            return None; // a replaced guard's
        }
        match note {
            Note::Ack { seq, .. } => Some(Event::GuardAck(seq)),
            Note::Nack { seq, why, .. } => {
                log::warn!("the guard refused order {seq}: {why}");
                Some(Event::GuardNack(seq))
            }
            Note::Lost { why, .. } => {
                log::error!("the guard process is lost: {why}");
                self.drop_guard(host);
                Some(Event::GuardLost)
            }
            Note::Spawned { id, pid, .. } => {
                let Some((wanted, role)) = self.spawning.take().filter(|(w, _)| *w == id) else {
                    // A neard nobody asked for would run outside the machine's knowledge.
                    log::error!(
                        "the guard started neard (pid {pid}) for an order kuutamod did not give ({id})"
                    );
                    self.drop_guard(host);
                    return Some(Event::GuardLost);
                };
                match host.adopt_neard(pid) {
                    Ok(()) => {
                        host.report(Report::NeardStarted {
                            restart: self.neard_starts > 0,
                        });
                        self.neard_starts += 1;
                        log::info!("started neard as {role:?} (pid {pid}, order {wanted})");
                        self.neard = Some(pid);
                        if self.mutations.metrics_once_per_interval {
                            self.poller.target_changed();
                        } else {
                            self.poller.new_neard();
                        }
                        Some(Event::NeardSpawned { pid, role })
                    }
                    Err(e) => {
                        log::error!("cannot watch the new neard (pid {pid}): {e}");
                        self.drop_guard(host);
                        Some(Event::GuardLost)
                    }
                }
            }
            Note::SpawnFailed { id, why, .. } => {
                let (_, role) = self.spawning.take().filter(|(w, _)| *w == id)?;
                log::error!("cannot start neard: {why}");
                if role == Role::Validator {
                    host.remove_key();
                }
                Some(Event::NeardSpawnFailed)
            }
            Note::Exited { pid, status, .. } => {
                // Reaped once the machine has taken note and /neard-pid no longer shows it.
                self.to_reap.push(pid);
                if self.neard != Some(pid) {
                    return None;
                }
                self.neard = None;
                log::warn!("neard (pid {pid}) exited: {}", describe(&status));
                self.poller.target_changed();
                Some(Event::NeardExited { pid })
            }
        }
    }

    /// Lets the guard reap the neards whose exit the machine has taken note of; a failed order
    /// is a lost guard.
    pub(super) fn send_reaps(&mut self, follow: &mut VecDeque<Event>, host: &mut impl Host) {
        for pid in std::mem::take(&mut self.to_reap) {
            if !self.guard_up {
                return;
            }
            if let Err(e) = host.reap_neard(pid) {
                log::error!("cannot give the guard an order: {e}");
                self.drop_guard(host);
                follow.push_back(Event::GuardLost);
                return;
            }
        }
    }

    /// The guard is lost, or is to be replaced: neard is killed first (through kuutamod's own
    /// pidfd), then the guard is killed and reaped. The machine counts neard as gone with the
    /// guard.
    pub(super) fn drop_guard(&mut self, host: &mut impl Host) {
        host.drop_guard(self.neard.take());
        self.guard_up = false;
        self.spawning = None;
        self.to_reap.clear();
        self.poller.target_changed();
    }

    pub(super) fn respawn_guard(&mut self, host: &mut impl Host) -> Event {
        self.drop_guard(host);
        self.guard_generation += 1;
        match host.spawn_guard(self.guard_generation) {
            Ok(()) => {
                log::info!(
                    "guard process started (generation {})",
                    self.guard_generation
                );
                self.guard_up = true;
                Event::GuardSpawned
            }
            Err(e) => {
                log::error!("cannot start the guard process: {e}");
                Event::GuardSpawnFailed
            }
        }
    }
}
