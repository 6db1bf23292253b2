//! The supervisor's child processes: starting neard in a role, signalling it, waiting for its
//! exit, and replacing the guard.

use super::*;

pub(super) async fn wait_neard(
    neard: &mut Option<Neard>,
) -> (u32, std::io::Result<std::process::ExitStatus>) {
    match neard {
        Some(n) => {
            let status = n.wait().await;
            (n.pid(), status)
        }
        None => std::future::pending().await,
    }
}

impl Supervisor {
    pub(super) fn poll_target(&self) {
        let pid = self.neard.as_ref().map(Neard::pid);
        self.poll_tx.send_modify(|t| t.pid = pid);
    }

    pub(super) fn signal_neard(&mut self, sig: nix::sys::signal::Signal) -> bool {
        match self.neard.as_mut() {
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

    pub(super) fn start_neard(&mut self, role: Role) -> Event {
        if let Err(e) = self.home.prepare(role) {
            log::error!("cannot prepare neard's home for the {role:?} role: {e:#}");
            return Event::NeardSpawnFailed;
        }
        let s = &self.settings;
        match Neard::spawn(&s.neard_bin, &s.neard_home, s.neard_bootnodes.as_deref()) {
            Ok(neard) => {
                if self.neard_starts > 0 {
                    self.metrics.neard_restarts.inc();
                }
                self.neard_starts += 1;
                let pid = neard.pid();
                log::info!("started neard as {role:?} (pid {pid})");
                self.neard = Some(neard);
                self.poll_target();
                Event::NeardSpawned { pid, role }
            }
            Err(e) => {
                log::error!("cannot start neard {}: {e}", s.neard_bin.display());
                if role == Role::Validator {
                    if let Err(e) = self.home.remove_key() {
                        log::error!("{e:#}");
                    }
                }
                Event::NeardSpawnFailed
            }
        }
    }

    pub(super) fn respawn_guard(&mut self) -> Event {
        // Dropping the old guard kills and reaps it (a stopped one too).
        self.guard = None;
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
