//! The supervisor's child processes: the guard, and neard through it (see [`crate::guard`] for
//! the chain `kuutamod -> guard -> neard`): starting neard in a role, signalling it through
//! kuutamod's own pidfd, taking note of its exit, and losing and replacing the guard.

use super::*;

impl Supervisor {
    pub(super) fn poll_target(&self) {
        let pid = self.neard.as_ref().map(Neard::pid);
        self.poll_tx.send_modify(|t| t.pid = pid);
    }

    pub(super) fn signal_neard(&mut self, sig: nix::sys::signal::Signal) -> bool {
        match self.neard.as_ref() {
            Some(n) => match n.signal(sig) {
                Ok(()) => true,
                Err(e) => {
                    log::warn!("cannot send {sig} to neard (pid {}): {e}", n.pid());
                    false
                }
            },
            None => false,
        }
    }

    /// SIGKILL to neard, certain once this returns: through kuutamod's pidfd, or, if that
    /// fails, by killing the guard (neard dies with it).
    pub(super) fn kill_neard(&mut self, follow: &mut VecDeque<Event>) {
        let Some(n) = self.neard.as_ref() else {
            return;
        };
        let pid = n.pid();
        match n.kill() {
            Ok(()) => {
                log::info!("SIGKILL sent to neard (pid {pid})");
                follow.push_back(Event::NeardKilled { pid });
            }
            Err(e) => {
                log::error!(
                    "cannot SIGKILL neard (pid {pid}): {e}; killing its guard, which takes it down"
                );
                self.drop_guard();
                follow.push_back(Event::NeardKilled { pid });
                follow.push_back(Event::GuardLost);
            }
        }
    }

    /// Asks the guard to start neard in `role`; the outcome comes as a note
    /// ([`Self::on_note`]).
    pub(super) fn start_neard(&mut self, role: Role, follow: &mut VecDeque<Event>) {
        let failed = |sup: &mut Supervisor| {
            if role == Role::Validator {
                if let Err(e) = sup.home.remove_key() {
                    log::error!("{e:#}");
                }
            }
            Event::NeardSpawnFailed
        };
        if let Err(e) = self.home.prepare(role) {
            log::error!("cannot prepare neard's home for the {role:?} role: {e:#}");
            follow.push_back(failed(self));
            return;
        }
        let s = &self.settings;
        let spec = match SpawnSpec::neard(
            &s.neard_bin,
            &s.neard_home,
            s.neard_bootnodes.as_deref(),
            GUARD_ENV,
        ) {
            Ok(spec) => spec,
            Err(e) => {
                log::error!("cannot start neard {}: {e}", s.neard_bin.display());
                follow.push_back(failed(self));
                return;
            }
        };
        let Some(guard) = self.guard.as_mut() else {
            log::error!("cannot start neard: no guard process runs to start it");
            follow.push_back(failed(self));
            return;
        };
        self.next_spawn += 1;
        let id = self.next_spawn;
        match guard.spawn_neard(id, &spec) {
            Ok(()) => self.spawning = Some((id, role)),
            Err(e) => {
                log::error!("cannot give the guard the order to start neard: {e}");
                self.drop_guard();
                follow.push_back(Event::GuardLost);
            }
        }
    }

    /// A note of the guard, as the event it means for the machine (`None`: nothing to tell).
    pub(super) fn on_note(&mut self, note: Note) -> Option<Event> {
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
                self.drop_guard();
                Some(Event::GuardLost)
            }
            Note::Spawned { id, pid, .. } => {
                let Some((wanted, role)) = self.spawning.take().filter(|(w, _)| *w == id) else {
                    // A neard nobody asked for would run outside the machine's knowledge.
                    log::error!("the guard started neard (pid {pid}) for an order kuutamod did not give ({id})");
                    self.drop_guard();
                    return Some(Event::GuardLost);
                };
                let adopted = match self.guard.as_mut() {
                    Some(g) => g.adopt(pid),
                    None => Err(std::io::Error::other("no guard")),
                };
                match adopted {
                    Ok(pidfd) => {
                        if self.neard_starts > 0 {
                            self.metrics.neard_restarts.inc();
                        }
                        self.neard_starts += 1;
                        log::info!("started neard as {role:?} (pid {pid}, order {wanted})");
                        self.neard = Some(Neard::new(pidfd));
                        self.poll_target();
                        Some(Event::NeardSpawned { pid, role })
                    }
                    Err(e) => {
                        log::error!("cannot watch the new neard (pid {pid}): {e}");
                        self.drop_guard();
                        Some(Event::GuardLost)
                    }
                }
            }
            Note::SpawnFailed { id, why, .. } => {
                let (_, role) = self.spawning.take().filter(|(w, _)| *w == id)?;
                log::error!(
                    "cannot start neard {}: {why}",
                    self.settings.neard_bin.display()
                );
                if role == Role::Validator {
                    if let Err(e) = self.home.remove_key() {
                        log::error!("{e:#}");
                    }
                }
                Some(Event::NeardSpawnFailed)
            }
            Note::Exited { pid, status, .. } => {
                // Reaped once the machine has taken note and /neard-pid no longer shows it.
                self.to_reap.push(pid);
                if self.neard.as_ref().map(Neard::pid) != Some(pid) {
                    return None;
                }
                self.neard = None;
                log::warn!("neard (pid {pid}) exited: {}", describe(&status));
                self.poll_target();
                Some(Event::NeardExited { pid })
            }
        }
    }

    /// Lets the guard reap the neards whose exit the machine has taken note of; a failed order
    /// is a lost guard.
    pub(super) fn send_reaps(&mut self, follow: &mut VecDeque<Event>) {
        for pid in std::mem::take(&mut self.to_reap) {
            let Some(guard) = self.guard.as_mut() else {
                return;
            };
            if let Err(e) = guard.reap(pid) {
                log::error!("cannot give the guard an order: {e}");
                self.drop_guard();
                follow.push_back(Event::GuardLost);
                return;
            }
        }
    }

    /// The guard is lost, or is to be replaced: neard is killed first (through kuutamod's own
    /// pidfd), then the guard is killed and reaped, by which time the kernel has sent neard its
    /// parent-death SIGKILL as well (a neard being started dies the same way). The machine
    /// counts neard as gone with the guard.
    pub(super) fn drop_guard(&mut self) {
        if let Some(n) = self.neard.take() {
            match n.kill() {
                Ok(()) => log::warn!("killed neard (pid {}) with its guard", n.pid()),
                Err(e) => log::error!(
                    "cannot SIGKILL neard (pid {}): {e}; it dies with its guard",
                    n.pid()
                ),
            }
        }
        self.spawning = None;
        self.to_reap.clear();
        // Dropping the guard kills and reaps it (a stopped one too).
        self.guard = None;
        self.poll_target();
    }

    pub(super) fn respawn_guard(&mut self) -> Event {
        self.drop_guard();
        self.guard_generation += 1;
        match Guard::spawn(
            self.exe.path(),
            self.guard_generation,
            self.notes_tx.clone(),
        ) {
            Ok(g) => {
                log::info!("guard process started (pid {})", g.pid());
                self.guard = Some(g);
                Event::GuardSpawned
            }
            Err(e) => {
                log::error!(
                    "cannot start the guard process from {}: {e}",
                    self.exe.path().display()
                );
                Event::GuardSpawnFailed
            }
        }
    }
}
