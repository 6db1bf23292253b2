//! The neard process: what kuutamod asks the guard to start ([`SpawnSpec`]), how the guard
//! starts it ([`spawn`], so that it can never outlive the guard), and kuutamod's handle on it
//! ([`Neard`]: its pid and a pidfd to signal it). When to start, stop or kill it is the
//! [`machine`](crate::machine)'s decision; the process chain is described in
//! [`guard`](crate::guard).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::pidfd::Pidfd;

/// The signals the guard ignores (job control, the terminal's, kuutamod's own). Ignored
/// dispositions survive `exec`, so [`spawn`] sets them back to their defaults in the child:
/// neard must stop on SIGTERM and reload on SIGHUP whether or not it installs handlers.
pub const GUARD_IGNORES: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
];

/// How to start neard: kuutamod sends this to the guard (one JSON line), which starts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// The binary (looked up in `PATH` when it has no slash).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Changes to the guard's environment (which is kuutamod's): set to a value, or removed
    /// (`None`).
    pub env: Vec<(String, Option<String>)>,
    /// Its working directory (`None`: the guard's, which is kuutamod's).
    pub cwd: Option<PathBuf>,
}

impl SpawnSpec {
    /// `<bin> --home <home> run [--boot-nodes <boot_nodes>]`, without the guard's marker
    /// variable `remove_env` (neard is not a guard).
    pub fn neard(
        bin: &Path,
        home: &Path,
        boot_nodes: Option<&str>,
        remove_env: &str,
    ) -> std::io::Result<SpawnSpec> {
        let home = home.to_str().ok_or_else(|| {
            std::io::Error::other(format!(
                "neard's home {} is not valid UTF-8",
                home.display()
            ))
        })?;
        let mut args = vec!["--home".to_string(), home.to_string(), "run".to_string()];
        if let Some(nodes) = boot_nodes {
            args.push("--boot-nodes".into());
            args.push(nodes.into());
        }
        Ok(SpawnSpec {
            program: bin.to_path_buf(),
            args,
            env: vec![(remove_env.to_string(), None)],
            cwd: None,
        })
    }

    /// The spec as one line of JSON (no newline in it: JSON escapes them).
    pub fn to_json(&self) -> std::io::Result<String> {
        serde_json::to_string(self).map_err(|e| {
            std::io::Error::other(format!(
                "cannot encode how to start {}: {e}",
                self.program.display()
            ))
        })
    }

    /// Parses [`Self::to_json`]'s line.
    pub fn from_json(line: &str) -> Result<SpawnSpec, String> {
        serde_json::from_str(line).map_err(|e| format!("unreadable spawn order: {e}"))
    }
}

/// Starts the process `spec` describes as a child of the calling thread: the guard's main
/// (only) thread, so that the parent-death signal below fires exactly when the guard dies.
///
/// The child gets `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills it when the thread that
/// forked it exits, whatever ends it (SIGKILL, a crash), also while kuutamod is stopped. It
/// checks, after setting it, that its parent is still the process that forked it (the parent
/// may have died in between, and then nobody would kill it). It gets its own process group,
/// so a signal to the guard's group does not reach it either. Its stdout and stderr go to the
/// caller's stderr (kuutamod's stderr, the journal): the caller's stdout is the guard's note
/// pipe and must never carry neard's output. Its stdin is `/dev/null`. The signals in
/// [`GUARD_IGNORES`] get their default dispositions back.
pub fn spawn(spec: &SpawnSpec) -> std::io::Result<std::process::Child> {
    use std::os::fd::AsFd;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    for (key, value) in &spec.env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    cmd.stdin(Stdio::null()).stdout(Stdio::from(stderr));
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-
    // safe system calls (prctl, getppid, setpgid, sigaction); it allocates nothing (its errors
    // carry only an errno, which is all the standard library passes back to the parent
    // anyway). SIG_DFL installs no handler code.
    unsafe {
        cmd.pre_exec(move || {
            for sig in GUARD_IGNORES {
                nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl)?;
            }
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The parent may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid().as_raw().unsigned_abs() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// kuutamod's handle on the running neard: its pid, and a pidfd through which kuutamod signals
/// it itself (the guard need not be running for a SIGKILL to land, and a recycled pid can never
/// be hit). The guard is its parent and reports its exit.
#[derive(Debug)]
pub struct Neard {
    pidfd: Pidfd,
}

impl Neard {
    /// The handle for a neard the guard started, with a pidfd opened while the pid was known
    /// to name it (see [`crate::guard::Guard::adopt`]).
    pub fn new(pidfd: Pidfd) -> Neard {
        Neard { pidfd }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pidfd.pid()
    }

    /// Sends a signal; an error if neard has already exited and been reaped.
    pub fn signal(&self, signal: Signal) -> std::io::Result<()> {
        self.pidfd.signal(signal).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                std::io::Error::other("neard has already exited")
            } else {
                e
            }
        })
    }

    /// SIGKILL: `Ok` once delivered, or when neard is gone already.
    pub fn kill(&self) -> std::io::Result<()> {
        self.pidfd.kill()
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
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    /// Generous bound for anything the guard does at once (the test machine is shared).
    pub(crate) const PROMPT: Duration = Duration::from_secs(5);

    /// Polls `probe` until it gives a value, or panics after [`PROMPT`] naming `what`.
    pub(crate) fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let start = std::time::Instant::now();
        loop {
            if let Some(v) = probe() {
                return v;
            }
            assert!(start.elapsed() < PROMPT, "{what}: not within {PROMPT:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A stand-in "neard" script that ignores its arguments.
    pub(crate) fn script(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-neard");
        write_script(&path, body);
        path
    }

    /// The workspace's one script writer (the harness's), for this crate's tests.
    pub(crate) use kuutamod_bench::procs::write_script;

    #[test]
    fn the_spec_round_trips_and_names_what_it_cannot_encode() {
        let spec = SpawnSpec::neard(
            Path::new("/bin/neard"),
            Path::new("/var/lib/kuutamod"),
            Some("ed25519:x@127.0.0.1:1"),
            "KUUTAMOD_GUARD",
        )
        .expect("spec");
        let line = spec.to_json().expect("json");
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(SpawnSpec::from_json(&line), Ok(spec.clone()));
        assert_eq!(
            spec.args,
            [
                "--home",
                "/var/lib/kuutamod",
                "run",
                "--boot-nodes",
                "ed25519:x@127.0.0.1:1"
            ]
        );
        assert!(SpawnSpec::from_json("{\"program\": 1}")
            .expect_err("bad")
            .contains("unreadable spawn order"));
        use std::os::unix::ffi::OsStrExt;
        let bad = Path::new(std::ffi::OsStr::from_bytes(b"/home/\xff"));
        let e = SpawnSpec::neard(Path::new("neard"), bad, None, "X").expect_err("not UTF-8");
        assert!(e.to_string().contains("neard's home"), "{e}");
    }

    #[test]
    fn a_child_runs_in_its_own_process_group_without_the_removed_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("env");
        let bin = script(
            dir.path(),
            &format!("env > {}; exec sleep 30", out.display()),
        );
        // A variable of ours (not PATH: the script needs it) that the child must not get.
        let (removed, _) = std::env::vars()
            .find(|(k, _)| k != "PATH")
            .expect("the test runs with some environment");
        let mut spec = SpawnSpec::neard(&bin, dir.path(), None, &removed).expect("spec");
        spec.env
            .push(("KUUTAMOD_TEST_SET".into(), Some("yes".into())));
        let mut child = spawn(&spec).expect("spawn");
        let pid = child.id();
        let pgid = nix::unistd::getpgid(Some(Pid::from_raw(pid as i32))).expect("pgid");
        assert_eq!(pgid.as_raw().unsigned_abs(), pid);
        let env = eventually("the child's environment", || {
            std::fs::read_to_string(&out)
                .ok()
                .filter(|s| s.contains("KUUTAMOD_TEST_SET"))
        });
        assert!(env.contains("KUUTAMOD_TEST_SET=yes"), "{env}");
        assert!(
            !env.lines().any(|l| l.starts_with(&format!("{removed}="))),
            "{removed} was passed on: {env}"
        );
        child.kill().expect("kill");
        child.wait().expect("wait");
    }

    #[test]
    fn a_missing_binary_is_an_error_not_a_child() {
        let spec = SpawnSpec::neard(
            Path::new("/nonexistent/neard"),
            Path::new("/tmp"),
            None,
            "X",
        )
        .expect("spec");
        let e = spawn(&spec).expect_err("no such binary");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
    }
}
