//! The guard: a small process outside kuutamod that kills a validating neard when kuutamod
//! cannot do it itself in time.
//!
//! kuutamod enforces its lease in its own event loop, which is enough while kuutamod runs. A
//! kuutamod that is paused (SIGSTOP of its process group, a debugger, a stalled page fault)
//! cannot stop its neard, and a standby activates its key one TTL after the last heartbeat it
//! saw. The guard closes that gap. It is the same binary, re-executed with `KUUTAMOD_GUARD=1`
//! from a file descriptor opened at start ([`Exe`]), so it can be started again after an
//! upgrade replaced the binary on disk. It puts itself in its own session and process group
//! and ignores job-control and terminal signals, so stopping kuutamod's process group (a
//! terminal's Ctrl-Z, `kill -STOP -<pgid>`) does not stop it.
//!
//! # Protocol
//!
//! Orders go to the guard's stdin, one line each, written without ever blocking kuutamod (a
//! full pipe is an error, which counts as a lost guard):
//!
//! - `arm <seq> <pid> <deadline>`: neard `pid` holds (or is about to hold) the validator key;
//!   kill it at `deadline` (`CLOCK_BOOTTIME` nanoseconds, so a host suspend counts) unless told
//!   otherwise first. kuutamod sends its lease deadline plus the stop grace: the moment by which
//!   kuutamod itself would have had neard fenced, still a margin before a standby may activate.
//! - `disarm <seq>`: nothing to enforce.
//! - `ping <seq>`: only answer.
//!
//! The guard answers `ack <seq>` once an order is in force (for `arm`, once it holds a pidfd of
//! neard, so a recycled pid can never be hit), or `nack <seq> <reason>`. kuutamod treats a
//! missing acknowledgement, or a refusal of its latest arm or disarm, as a lost guard: it steps
//! down if it validates, and starts a new guard (a refused `arm` of a neard that has exited
//! since, followed by an order for the next one, is only stale). If its stdin closes (kuutamod exited or was killed), an armed guard kills neard at
//! once and exits.

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::machine::GuardOrder;

/// The environment variable that turns the kuutamod binary into the guard.
pub const GUARD_ENV: &str = "KUUTAMOD_GUARD";

/// The kuutamod executable, held open from start: `/proc/self/exe` may name a file that an
/// upgrade has since replaced or deleted, but the open descriptor keeps the running version.
#[derive(Debug)]
pub struct Exe {
    _file: std::fs::File,
    path: PathBuf,
}

impl Exe {
    /// Opens the running executable.
    pub fn pin() -> std::io::Result<Exe> {
        let file = std::fs::File::open("/proc/self/exe")?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        Ok(Exe { _file: file, path })
    }

    /// A path that executes the pinned binary (valid while this process lives).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What the guard said, tagged with the guard's generation so that a note of a replaced guard
/// is recognised as stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Orders up to `seq` are in force.
    Ack {
        /// The guard's generation.
        generation: u64,
        /// The sequence number.
        seq: u64,
    },
    /// The guard refused order `seq`.
    Nack {
        /// The guard's generation.
        generation: u64,
        /// The refused order.
        seq: u64,
        /// Why.
        why: String,
    },
    /// The guard is gone.
    Lost {
        /// The guard's generation.
        generation: u64,
        /// Why.
        why: String,
    },
}

/// kuutamod's side: the guard process and the pipe to it.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    stdin: ChildStdin,
    generation: u64,
}

impl Guard {
    /// Starts a guard from `exe`; its answers go to `notes`.
    pub fn spawn(
        exe: &Path,
        generation: u64,
        notes: tokio::sync::mpsc::UnboundedSender<Note>,
    ) -> std::io::Result<Guard> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(exe)
            .arg0("kuutamod-guard")
            .env(GUARD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("guard has no stdin"))?;
        set_nonblocking(stdin.as_fd())?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("guard has no stdout"))?;
        std::thread::Builder::new()
            .name("guard-reader".into())
            .spawn(move || read_notes(stdout, generation, &notes))?;
        Ok(Guard {
            child,
            stdin,
            generation,
        })
    }

    /// The guard's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// This guard's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Sends an order. Never blocks: a full pipe (a stopped or starved guard) or a closed one
    /// is an error.
    pub fn order(&mut self, seq: u64, order: GuardOrder) -> std::io::Result<()> {
        let line = order_line(seq, order);
        // One write of less than PIPE_BUF bytes: all or nothing.
        match self.stdin.write(line.as_bytes()) {
            Ok(n) if n == line.len() => Ok(()),
            Ok(n) => Err(std::io::Error::other(format!(
                "short write to the guard ({n} of {} bytes)",
                line.len()
            ))),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGKILL works on a stopped guard too; reap it so no zombie is left.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn order_line(seq: u64, order: GuardOrder) -> String {
    match order {
        GuardOrder::Arm { pid, deadline } => {
            format!("arm {seq} {pid} {}\n", deadline.as_nanos().max(1))
        }
        GuardOrder::Disarm => format!("disarm {seq}\n"),
        GuardOrder::Ping => format!("ping {seq}\n"),
    }
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

fn read_notes(
    stdout: std::process::ChildStdout,
    generation: u64,
    notes: &tokio::sync::mpsc::UnboundedSender<Note>,
) {
    let reader = std::io::BufReader::new(stdout);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let note = match words.as_slice() {
            ["ack", seq] => match seq.parse() {
                Ok(seq) => Note::Ack { generation, seq },
                Err(_) => continue,
            },
            ["nack", seq, why @ ..] => match seq.parse() {
                Ok(seq) => Note::Nack {
                    generation,
                    seq,
                    why: why.join(" "),
                },
                Err(_) => Note::Lost {
                    generation,
                    why: format!("unreadable answer {line:?}"),
                },
            },
            _ => continue,
        };
        if notes.send(note).is_err() {
            return;
        }
    }
    let _ = notes.send(Note::Lost {
        generation,
        why: "the guard exited".into(),
    });
}

// ----- the guard process ---------------------------------------------------------------------

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
}

fn kill_armed(armed: Armed, why: &str) {
    match pidfd_kill(&armed.fd) {
        Ok(()) => eprintln!("kuutamod guard: {why}; killed neard (pid {})", armed.pid),
        // ESRCH: neard is already gone, which is what we want.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        Err(e) => eprintln!("kuutamod guard: cannot kill neard (pid {}): {e}", armed.pid),
    }
}

/// What one order line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Arm { seq: u64, pid: u32, deadline: u64 },
    Disarm { seq: u64 },
    Ping { seq: u64 },
}

fn parse_order(line: &str) -> Option<Parsed> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["arm", seq, pid, deadline] => Some(Parsed::Arm {
            seq: seq.parse().ok()?,
            pid: pid.parse().ok()?,
            deadline: deadline.parse().ok()?,
        }),
        ["disarm", seq] => Some(Parsed::Disarm {
            seq: seq.parse().ok()?,
        }),
        ["ping", seq] => Some(Parsed::Ping {
            seq: seq.parse().ok()?,
        }),
        _ => None,
    }
}

struct GuardState {
    armed: Option<Armed>,
    timer: TimerFd,
    out: std::io::Stdout,
}

impl GuardState {
    fn answer(&mut self, text: &str) {
        // stdout is non-blocking: if kuutamod does not read (it is stopped), answers are
        // dropped rather than the guard blocking before its deadline.
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn apply(&mut self, line: &str) {
        match parse_order(line) {
            Some(Parsed::Arm { seq, pid, deadline }) => {
                let fd = match self.armed.take() {
                    Some(a) if a.pid == pid => Ok(a.fd),
                    _ => pidfd_open(pid),
                };
                match fd {
                    Ok(fd) => {
                        self.armed = Some(Armed { pid, fd });
                        let at = TimeSpec::from_duration(std::time::Duration::from_nanos(
                            deadline.max(1),
                        ));
                        match self.timer.set(
                            Expiration::OneShot(at),
                            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                        ) {
                            Ok(()) => self.answer(&format!("ack {seq}\n")),
                            Err(e) => {
                                self.answer(&format!("nack {seq} cannot set the timer: {e}\n"))
                            }
                        }
                    }
                    Err(e) => {
                        let _ = self.timer.unset();
                        self.answer(&format!("nack {seq} cannot watch neard (pid {pid}): {e}\n"));
                    }
                }
            }
            Some(Parsed::Disarm { seq }) => {
                self.armed = None;
                let _ = self.timer.unset();
                self.answer(&format!("ack {seq}\n"));
            }
            Some(Parsed::Ping { seq }) => self.answer(&format!("ack {seq}\n")),
            None => eprintln!("kuutamod guard: bad order {line:?}"),
        }
    }
}

fn ignore_signals() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [
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
    ] {
        #[allow(unsafe_code)]
        // SAFETY: SIG_IGN installs no handler code; nothing runs in signal context.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// The guard's main loop (runs in the re-executed process; never returns).
pub fn run_guard() -> ! {
    // Its own session and process group: stopping or signalling kuutamod's group does not
    // reach the guard.
    let _ = nix::unistd::setsid();
    // Started through /proc/<pid>/fd/<n>, its command name would be the descriptor number.
    let _ = nix::sys::prctl::set_name(c"kuutamod-guard");
    ignore_signals();
    let _ = set_nonblocking(std::io::stdout().as_fd());
    let timer = match TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_CLOEXEC) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("kuutamod guard: cannot create a CLOCK_BOOTTIME timer: {e}");
            std::process::exit(1);
        }
    };
    let mut st = GuardState {
        armed: None,
        timer,
        out: std::io::stdout(),
    };
    let stdin = std::io::stdin();
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            st.apply(&String::from_utf8_lossy(&line));
        }
        let (input_ready, timer_fired) = {
            let mut fds = [
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                PollFd::new(st.timer.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("kuutamod guard: poll failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if timer_fired {
            let _ = nix::unistd::read(st.timer.as_fd().as_raw_fd(), &mut [0u8; 8]);
            if let Some(a) = st.armed.take() {
                kill_armed(
                    a,
                    "kuutamod did not stop its validating neard before the lease ran out",
                );
            }
        }
        if !input_ready {
            continue;
        }
        match nix::unistd::read(stdin.as_raw_fd(), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EBADF) => {
                if let Some(a) = st.armed.take() {
                    kill_armed(a, "kuutamod exited while its neard held the validator key");
                }
                std::process::exit(0);
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => {
                eprintln!("kuutamod guard: read failed: {e}; exiting");
                if let Some(a) = st.armed.take() {
                    kill_armed(a, "the guard cannot hear kuutamod any more");
                }
                std::process::exit(1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
