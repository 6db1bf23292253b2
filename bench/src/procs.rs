//! Processes: where the binaries are, free ports, [`OwnedChild`] (a child the harness stops
//! when it drops it), `/proc` readings (RSS, CPU, children) and clean-up on Ctrl-C.
//!
//! "Guard" is not used for anything here: in this project it names kuutamod's fencing process
//! (`kuutamod-guard`), which [`guard_of`] finds.

use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a stopped child may take to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The ports the harness hands to programs that bind them later: below Linux's default
/// ephemeral range (32768-60999). A port the kernel chose for a `bind(0)` comes from that
/// range, and by the time the program binds it, the local end of some outgoing connection may
/// hold it (seen as neard-sim's repeated "Address already in use" on a restart, with etcd's
/// watches opening a connection per wake-up); no connection's local end is ever below it.
const HANDED_PORTS: std::ops::Range<u32> = 20_000..32_768;

/// Where the next [`free_port_on`] starts looking, so that two calls in one process never hand
/// out the same port (until the range wraps). The harness's only shared state: the ports it
/// handed out are a fact of the whole process, as the kernel's own port allocator is.
static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A free TCP port on `ip` (bound, then released, for programs that cannot bind port 0), from
/// [`HANDED_PORTS`], starting at an offset of this process's own so that two harness
/// processes rarely look at the same ports.
pub fn free_port_on(ip: IpAddr) -> u16 {
    let span = HANDED_PORTS.end - HANDED_PORTS.start;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = HANDED_PORTS.start + (offset + n) % span;
        let port = u16::try_from(port).unwrap_or(u16::MAX);
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip} in {HANDED_PORTS:?}")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_port_on(IpAddr::from([127, 0, 0, 1]))
}

/// A binary of this workspace: `$<env>` if set, else next to the running executable (the
/// benchmark binary sits in `target/<profile>/`, a test binary in `target/<profile>/deps/`).
pub fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().map(PathBuf::from).expect("exe has a parent");
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{name} is not built at {}; run `cargo build --workspace` (scripts/bench does) or set {env}",
        path.display()
    );
    path
}

/// The kuutamoctl binary (`$KUUTAMOCTL_BIN` or beside this executable).
pub fn kuutamoctl_bin() -> PathBuf {
    workspace_bin("kuutamoctl", "KUUTAMOCTL_BIN")
}

/// The kuutamod binary (`$KUUTAMOD_BIN` or beside this executable).
pub fn kuutamod_bin() -> PathBuf {
    workspace_bin("kuutamod", "KUUTAMOD_BIN")
}

/// The neard simulator (`$NEARD_SIM_BIN` or beside this executable).
pub fn neard_sim_bin() -> PathBuf {
    workspace_bin("neard-sim", "NEARD_SIM_BIN")
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// A child process the harness owns: SIGKILLed and reaped when dropped, even when a test
/// panics.
pub struct OwnedChild {
    child: Option<Child>,
}

impl OwnedChild {
    /// Takes ownership of `child`.
    pub fn new(child: Child) -> OwnedChild {
        OwnedChild { child: Some(child) }
    }

    /// The child's pid, if it was not reaped yet.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Whether the child has exited (reaping it).
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        }
    }

    /// The exit status, once the child has exited (reaping it; `None` while it runs).
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Resumes (in case it is stopped), SIGTERMs, and kills the child after a grace.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let pid = c.id() as i32;
        signal(pid, Signal::SIGCONT);
        signal(pid, Signal::SIGTERM);
        let start = std::time::Instant::now();
        while start.elapsed() < STOP_GRACE {
            if !matches!(c.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(crate::wait::POLL);
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU time (user + system) of `pid` in clock ticks, and its resident set in kB.
pub fn cpu_and_rss(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((utime + stime, rss))
}

/// Clock ticks per second in `/proc/<pid>/stat` (`USER_HZ`, fixed at 100 in Linux's ABI on
/// every architecture this runs on).
pub const CLOCK_TICKS: u64 = 100;

/// Wall-clock milliseconds since the Unix epoch (the ledger's time base).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// `(pid, ppid, argv[0])` of every process, read from `/proc`.
fn processes() -> Vec<(u32, u32, String)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4 (ppid) follows the parenthesised command name.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let argv0 = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|c| {
                c.split(|b| *b == 0)
                    .next()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
            })
            .unwrap_or_default();
        out.push((pid, ppid, argv0));
    }
    out
}

/// argv[0] of kuutamod's fencing process (guard.rs re-executes kuutamod under this name).
pub const KUUTAMOD_GUARD_ARGV0: &str = "kuutamod-guard";

/// pid of the live `kuutamod-guard` child of kuutamod `pid`, if any.
pub fn guard_of(pid: i32) -> Option<i32> {
    processes()
        .into_iter()
        .find(|(p, pp, a)| *pp as i32 == pid && a == KUUTAMOD_GUARD_ARGV0 && alive(*p as i32))
        .map(|(p, _, _)| p as i32)
}

/// Pids of every descendant of `root`, read from `/proc`.
fn descendants(root: u32) -> Vec<u32> {
    let parent_of: Vec<(u32, u32)> = processes().into_iter().map(|(p, pp, _)| (p, pp)).collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Set by the SIGINT/SIGTERM handler; read by the cleanup thread.
static STOP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(sig, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGINT and SIGTERM stop the benchmark cleanly: every process it started (Consul
/// agents, kuutamod nodes and their neards, in any namespace) is killed and the network
/// namespaces it created are deleted, then it exits with status 130.
///
/// A handler sets a flag that a thread polls. Blocking the signals instead would be inherited
/// by every child (the signal mask survives exec), and kuutamod would never see its SIGTERM;
/// a handler is reset to the default on exec.
pub fn cleanup_on_signal() -> anyhow::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        #[allow(unsafe_code)]
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            sigaction(sig, &action)?;
        }
    }
    std::thread::spawn(move || {
        let sig = loop {
            let sig = STOP.load(std::sync::atomic::Ordering::SeqCst);
            if sig != 0 {
                break Signal::try_from(sig).map_or("a signal", |s| s.as_str());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!("\nbench: {sig}: stopping every process and namespace it started");
        let me = std::process::id();
        for pid in descendants(me) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        if let Ok(out) = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
        {
            let prefix = format!("kb{me}n");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(name) = line
                    .split_whitespace()
                    .next()
                    .filter(|n| n.starts_with(&prefix))
                {
                    let _ = std::process::Command::new("ip")
                        .args(["netns", "del", name])
                        .status();
                }
            }
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &crate::netns::bridge_name(me)])
            .status();
        std::process::exit(130);
    });
    Ok(())
}

/// Writes the shell script `body` to `path`, executable (a stand-in neard for the tests). A
/// child process writes it: a file this process held open for writing would be inherited by
/// whatever another thread forks at that moment, and exec'ing the script would then fail with
/// "Text file busy" (ETXTBSY) for as long as that child holds it.
pub fn write_script(path: &std::path::Path, body: &str) {
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            "printf '#!/bin/sh\\n%s\\n' \"$1\" > \"$2\" && chmod 755 \"$2\"",
        ])
        .arg("sh")
        .arg(body)
        .arg(path)
        .status()
        .expect("run sh to write a script");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
}
