//! The guard: a small process outside kuutamod that kills a validating neard when kuutamod
//! cannot do it itself in time.
//!
//! kuutamod enforces its lease deadline in its own event loop, which is enough while kuutamod
//! runs. A kuutamod that is paused (SIGSTOP, a debugger, a stalled page fault) cannot stop its
//! neard, and Consul hands the lock on one TTL after the last renew, so another node would sign
//! while this neard still does. The guard closes that gap. kuutamod starts it once (the same
//! binary, re-executed with `KUUTAMOD_GUARD=1`) and tells it over a pipe, on every change:
//!
//! - `arm <pid> <deadline>`: neard `pid` holds the validator key; kill it at `deadline`
//!   (CLOCK_MONOTONIC nanoseconds) unless told otherwise before. kuutamod sends the lease
//!   deadline plus the stop grace: the moment by which kuutamod itself would have had neard dead,
//!   still `TTL/10` before the TTL.
//! - `disarm`: neard holds no key (or no longer runs).
//!
//! If the pipe closes (kuutamod exited or was killed), an armed guard kills neard at once and
//! exits. The guard holds a pidfd of neard, so it can never kill a recycled pid.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::time::{clock_gettime, ClockId};
use tokio::time::Instant;

/// The environment variable that turns the kuutamod binary into the guard.
pub const GUARD_ENV: &str = "KUUTAMOD_GUARD";

/// What the guard should enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Kill `pid` at `deadline` unless replaced.
    Arm {
        /// neard's pid.
        pid: u32,
        /// When to kill it.
        deadline: Instant,
    },
    /// Nothing to enforce.
    Disarm,
}

fn monotonic_ns() -> i128 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        .unwrap_or(0)
}

/// kuutamod's side: the guard process and the pipe to it.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    stdin: ChildStdin,
    last: Option<Order>,
}

impl Guard {
    /// Starts the guard (this executable with [`GUARD_ENV`] set).
    pub fn spawn() -> std::io::Result<Guard> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .env(GUARD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("guard has no stdin"))?;
        Ok(Guard {
            child,
            stdin,
            last: None,
        })
    }

    /// The guard's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `order` if it differs from the last one sent. A failed write (the guard died) is
    /// returned, so the caller can start a new guard.
    pub fn order(&mut self, order: Order) -> std::io::Result<()> {
        if self.last == Some(order) {
            return Ok(());
        }
        let line = match order {
            Order::Arm { pid, deadline } => {
                let left = deadline.saturating_duration_since(Instant::now());
                format!("arm {pid} {}\n", monotonic_ns() + left.as_nanos() as i128)
            }
            Order::Disarm => "disarm\n".to_string(),
        };
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.flush()?;
        self.last = Some(order);
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Closing stdin makes an idle guard exit; reap it so no zombie is left.
        let _ = self.order(Order::Disarm);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pidfd for `pid` (Linux >= 5.3).
fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    #[allow(unsafe_code)]
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: the kernel just returned this descriptor to us, so we own it exclusively.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn pidfd_kill(fd: &OwnedFd) -> std::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: pidfd_send_signal reads only its arguments; a null siginfo is allowed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

struct Armed {
    pid: u32,
    fd: OwnedFd,
    deadline_ns: i128,
}

fn kill_armed(armed: Armed, why: &str) {
    match pidfd_kill(&armed.fd) {
        Ok(()) => eprintln!("kuutamod guard: {why}; killed neard (pid {})", armed.pid),
        // ESRCH: neard is already gone, which is what we want.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => eprintln!("kuutamod guard: cannot kill neard (pid {}): {e}", armed.pid),
    }
}

fn apply(line: &str, armed: &mut Option<Armed>) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["arm", pid, deadline] => {
            let (Ok(pid), Ok(deadline_ns)) = (pid.parse::<u32>(), deadline.parse::<i128>()) else {
                eprintln!("kuutamod guard: bad order {line:?}");
                return;
            };
            let fd = match armed.take() {
                Some(a) if a.pid == pid => a.fd,
                _ => match pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) => {
                        eprintln!("kuutamod guard: cannot watch neard (pid {pid}): {e}");
                        return;
                    }
                },
            };
            *armed = Some(Armed {
                pid,
                fd,
                deadline_ns,
            });
        }
        ["disarm"] => *armed = None,
        _ => eprintln!("kuutamod guard: bad order {line:?}"),
    }
}

/// The guard's main loop (runs in the re-executed process; never returns).
pub fn run_guard() -> ! {
    let stdin = std::io::stdin();
    let mut armed: Option<Armed> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            apply(&String::from_utf8_lossy(&line), &mut armed);
        }
        let timeout = match &armed {
            None => PollTimeout::NONE,
            Some(a) => {
                let left = a.deadline_ns - monotonic_ns();
                if left <= 0 {
                    if let Some(a) = armed.take() {
                        kill_armed(
                            a,
                            "kuutamod did not stop its validating neard before the lease ran out",
                        );
                    }
                    continue;
                }
                let ms = Duration::from_nanos(left as u64)
                    .as_millis()
                    .clamp(1, 60_000);
                PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue, // timed out: re-check the deadline
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("kuutamod guard: poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EBADF) => {
                if let Some(a) = armed.take() {
                    kill_armed(a, "kuutamod exited while its neard held the validator key");
                }
                std::process::exit(0);
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => {
                eprintln!("kuutamod guard: read failed: {e}; exiting");
                if let Some(a) = armed.take() {
                    kill_armed(a, "the guard cannot hear kuutamod any more");
                }
                std::process::exit(1);
            }
        }
    }
}
