//! The neard child process: spawn it so that it can never outlive kuutamod, stop it with
//! SIGTERM and then SIGKILL after a grace period, and reap it.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// A running neard.
#[derive(Debug)]
pub struct Neard {
    child: Child,
    pid: u32,
    started: Instant,
}

impl Neard {
    /// Starts `<bin> --home <home> run [--boot-nodes <boot_nodes>]`.
    ///
    /// The child gets `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when the thread that
    /// forked it exits. kuutamod forks from its only runtime thread (the main thread, see
    /// `main.rs`), so that fires exactly when kuutamod dies, even by SIGKILL. The child also gets
    /// its own process group, so a Ctrl-C in a terminal reaches kuutamod only, which then stops
    /// neard in the safe order.
    pub fn spawn(bin: &Path, home: &Path, boot_nodes: Option<&str>) -> std::io::Result<Self> {
        let mut cmd = Command::new(bin);
        cmd.arg("--home").arg(home).arg("run");
        if let Some(nodes) = boot_nodes {
            cmd.arg("--boot-nodes").arg(nodes);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let parent = std::process::id();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-
        // safe system calls (prctl, getppid, setpgid); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // kuutamod may have died between fork and prctl: then nobody would kill us.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    return Err(std::io::Error::other(
                        "kuutamod exited while starting neard",
                    ));
                }
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("neard exited before its pid was read"))?;
        Ok(Neard {
            child,
            pid,
            started: Instant::now(),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the process to exit (cancel safe).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Whether the process has exited (it is then reaped).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills neard at once (SIGKILL) and reaps it: the fence when there is no time for SIGTERM.
    pub async fn kill(mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.start_kill()?;
        self.child.wait().await
    }

    /// Sends a signal (SIGHUP for a key reload); an error if it has already exited and been
    /// reaped.
    pub fn signal(&mut self, signal: Signal) -> std::io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Err(std::io::Error::other("neard has already exited"));
        }
        kill(Pid::from_raw(self.pid as i32), signal).map_err(std::io::Error::from)
    }

    /// Stops neard: SIGTERM, then SIGKILL once `grace` has passed. Returns when the process is
    /// reaped, so on return it is certain that neard no longer runs. Never blocks the runtime.
    pub async fn stop(mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // The child cannot have been reaped between try_wait and here: only we wait on it.
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                log::warn!(
                    "neard (pid {}) did not exit within {:?} of SIGTERM; sending SIGKILL",
                    self.pid,
                    grace
                );
                self.child.start_kill()?;
                self.child.wait().await
            }
        }
    }
}

/// Describes an exit status for logs: `exit code 0`, `signal 9 (SIGKILL)`.
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("signal {sig} ({s})"),
            Err(_) => format!("signal {sig}"),
        },
        _ => format!("{status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in "neard" script: ignores its arguments, traps SIGTERM as told.
    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-neard");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[tokio::test]
    async fn stop_escalates_to_sigkill_after_the_grace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "trap '' TERM\nwhile true; do sleep 0.05; done");
        let neard = Neard::spawn(&bin, dir.path(), None).expect("spawn");
        // give the shell time to install its trap
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let status = neard.stop(Duration::from_millis(300)).await.expect("stop");
        assert_eq!(describe(&status), "signal 9 (SIGKILL)");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn stop_is_graceful_when_neard_obeys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "exec sleep 30");
        let neard = Neard::spawn(&bin, dir.path(), Some("ed25519:x@127.0.0.1:1")).expect("spawn");
        let status = neard.stop(Duration::from_secs(5)).await.expect("stop");
        assert_eq!(describe(&status), "signal 15 (SIGTERM)");
    }

    #[tokio::test]
    async fn wait_reports_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "exit 3");
        let mut neard = Neard::spawn(&bin, dir.path(), None).expect("spawn");
        let status = neard.wait().await.expect("wait");
        assert_eq!(describe(&status), "exit code 3");
        assert!(neard.signal(Signal::SIGHUP).is_err());
    }
}
