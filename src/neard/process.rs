//! The neard child process: spawned so that it can never outlive kuutamod, signalled, waited
//! for. When to stop or kill it is the [`machine`](crate::machine)'s decision.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A running neard.
#[derive(Debug)]
pub struct Neard {
    child: Child,
    pid: u32,
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
        Ok(Neard { child, pid })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit (cancel safe).
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Sends a signal; an error if neard has already exited and been reaped.
    pub fn signal(&mut self, signal: Signal) -> std::io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Err(std::io::Error::other("neard has already exited"));
        }
        // Only this process reaps the child, so the pid cannot have been recycled since
        // try_wait saw it running.
        kill(Pid::from_raw(self.pid as i32), signal).map_err(std::io::Error::from)
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

    /// A stand-in "neard" script that ignores its arguments.
    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-neard");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    #[tokio::test]
    async fn signals_reach_neard_and_its_exit_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "exec sleep 30");
        let mut neard =
            Neard::spawn(&bin, dir.path(), Some("ed25519:x@127.0.0.1:1")).expect("spawn");
        neard.signal(Signal::SIGKILL).expect("signal");
        let status = neard.wait().await.expect("wait");
        assert_eq!(describe(&status), "signal 9 (SIGKILL)");
        assert!(
            neard.signal(Signal::SIGHUP).is_err(),
            "reaped: no more signals"
        );
    }

    #[tokio::test]
    async fn neard_runs_in_its_own_process_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "exec sleep 30");
        let mut neard = Neard::spawn(&bin, dir.path(), None).expect("spawn");
        let pgid = nix::unistd::getpgid(Some(Pid::from_raw(neard.pid() as i32))).expect("pgid");
        assert_eq!(pgid.as_raw() as u32, neard.pid());
        neard.signal(Signal::SIGKILL).expect("signal");
        neard.wait().await.expect("wait");
    }

    #[tokio::test]
    async fn wait_reports_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = script(dir.path(), "exit 3");
        let mut neard = Neard::spawn(&bin, dir.path(), None).expect("spawn");
        let status = neard.wait().await.expect("wait");
        assert_eq!(describe(&status), "exit code 3");
    }
}
