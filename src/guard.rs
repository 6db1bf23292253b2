//! The guard: a small process between kuutamod and neard that starts neard, kills it at the
//! lease deadline when kuutamod cannot, and takes it down with it when it dies.
//!
//! kuutamod enforces its lease in its own event loop, which is enough while kuutamod runs. A
//! kuutamod that is paused (SIGSTOP of its process group, a debugger, a stalled page fault)
//! cannot stop its neard, and a standby activates its key one TTL after the last heartbeat it
//! saw. The guard closes that gap. It is the same binary, re-executed with `KUUTAMOD_GUARD=1`
//! from a file descriptor opened at start ([`Exe`]), so it can be started again after an
//! upgrade replaced the binary on disk.
//!
//! # The process chain
//!
//! `kuutamod -> guard -> neard`, each link with `PR_SET_PDEATHSIG = SIGKILL`: the kernel kills
//! the child when the thread that forked it exits, however that happens (SIGKILL, a crash), and
//! SIGKILL works on a stopped process too.
//!
//! - kuutamod starts the guard ([`Guard::spawn`]) from its main thread, the one thread that
//!   lives exactly as long as kuutamod (its runtime runs on that thread alone; the supervisor
//!   checks it). So kuutamod's death kills the guard, even a stopped guard.
//! - The guard starts neard ([`crate::neard::process::spawn`]) from its only thread. So the
//!   guard's death kills neard at once, even while kuutamod is stopped and cannot notice.
//! - neard's key therefore never outlives both fences, in whatever order they fail: kuutamod
//!   stopped and then the guard killed (neard dies with the guard), the guard killed and then
//!   kuutamod stopped (the same), the guard stopped and then kuutamod killed (the guard dies
//!   with kuutamod, neard with the guard), both killed. Only both *stopped* at once (a frozen
//!   VM or cgroup) leaves nobody on the host to act: `docs/failover.md`, "What this does not
//!   cover".
//!
//! The guard puts itself in its own session (in the forked child, before it runs anything) and
//! ignores job-control and terminal signals, so stopping kuutamod's process group (a terminal's
//! Ctrl-Z, `kill -STOP -<pgid>`) does not stop it; neard gets a process group of its own inside
//! the guard's session. neard's stdout and stderr go to the guard's stderr, which is kuutamod's
//! (the journal); the guard's stdout is its note pipe and never carries neard's output.
//!
//! From kuutamod's side the rule is: **a guard that is lost is killed, and that kills neard**.
//! A guard that does not acknowledge in time, refuses an order that matters, exits, or whose
//! pipe is full is killed (and reaped) by kuutamod, which first kills neard itself through its
//! pidfd; the [`machine`](crate::machine) counts neard as gone with it. The cost: a lost guard
//! restarts neard, on a standby too.
//!
//! # Protocol
//!
//! Orders go to the guard's stdin, one line each, written without ever blocking kuutamod (a
//! full pipe is an error, which counts as a lost guard):
//!
//! - `spawn <id> <json>`: start neard as [`SpawnSpec`] (program, arguments, environment
//!   changes, working directory) says. The guard answers `spawned <id> <pid>`, or `spawn-failed
//!   <id> <reason>` (it starts no second neard while one runs).
//! - `arm <seq> <pid> <deadline>`: neard `pid` holds (or is about to hold) the validator key;
//!   kill it at `deadline` (`CLOCK_BOOTTIME` nanoseconds, so a host suspend counts) unless told
//!   otherwise first. kuutamod sends its lease deadline plus the stop grace: the moment by which
//!   kuutamod itself would have had neard fenced, still a margin before a standby may activate.
//!   The deadline holds for any neard the guard runs until the next `arm` or `disarm`, also
//!   one it starts later: in a restart with the key, the new neard holds the key from its
//!   first instruction, before kuutamod has heard its pid and could name it.
//! - `disarm <seq>`: nothing to enforce.
//! - `ping <seq>`: only answer.
//! - `reap <pid>`: kuutamod has taken note of neard's exit; the guard may reap it.
//!
//! The guard answers `arm`, `disarm` and `ping` with `ack <seq>` once the order is in force, or
//! `nack <seq> <reason>` (an `arm` of a pid that is not a neard it started, or one already
//! reaped). kuutamod treats a missing acknowledgement, or a refusal of its latest arm or
//! disarm, as a lost guard: it kills it (and neard with it) and starts a new one (a refused
//! `arm` followed by an order for the next neard is only stale). When neard exits the guard
//! says `exited <pid> code <n>` or `exited <pid> signal <n>` (with ` core` after a core dump).
//! If its stdin closes (kuutamod exited or was killed) the guard kills neard, armed or not,
//! and exits.
//!
//! # Why the guard reaps only on kuutamod's order
//!
//! kuutamod signals neard itself, through a pidfd it opens when it hears `spawned` (see
//! [`Guard::adopt`]): a SIGKILL (the fence) must land at once, also when the guard is stopped
//! at that very moment, and a signal relayed by another process is certain only once that
//! process ran. A pidfd can only be opened by pid, so the pid must still name neard when
//! kuutamod opens it: the guard never reaps neard before kuutamod said `reap` (a pid kuutamod
//! knows, on `/neard-pid` too, is never recycled under it), and a guard that died might have
//! let someone else reap it, so kuutamod checks after opening the pidfd that the guard is still
//! alive. The guard learns of neard's exit from its own pidfd (readable once neard exits) and
//! reads the status with `waitid(WNOWAIT)`, which leaves the zombie in place.

use std::io::{BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::machine::GuardOrder;
use crate::neard::process::SpawnSpec;
use crate::pidfd::Pidfd;

/// The environment variable that turns the kuutamod binary into the guard.
pub const GUARD_ENV: &str = "KUUTAMOD_GUARD";

/// The longest order line the guard accepts: far beyond any spawn order (a few KiB with a long
/// boot-node list); a line without end is a broken kuutamod, not an order.
const MAX_LINE: usize = 1 << 20;

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
    /// The guard started neard for spawn order `id`.
    Spawned {
        /// The guard's generation.
        generation: u64,
        /// The spawn order.
        id: u64,
        /// neard's pid.
        pid: u32,
    },
    /// The guard could not start neard for spawn order `id`.
    SpawnFailed {
        /// The guard's generation.
        generation: u64,
        /// The spawn order.
        id: u64,
        /// Why.
        why: String,
    },
    /// neard exited (the guard keeps it unreaped until told `reap`).
    Exited {
        /// The guard's generation.
        generation: u64,
        /// neard's pid.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The guard is gone (or said something unreadable).
    Lost {
        /// The guard's generation.
        generation: u64,
        /// Why.
        why: String,
    },
}

impl Note {
    /// The generation of the guard that said it.
    pub fn generation(&self) -> u64 {
        match self {
            Note::Ack { generation, .. }
            | Note::Nack { generation, .. }
            | Note::Spawned { generation, .. }
            | Note::SpawnFailed { generation, .. }
            | Note::Exited { generation, .. }
            | Note::Lost { generation, .. } => *generation,
        }
    }
}

/// kuutamod's side: the guard process and the pipe to it.
#[derive(Debug)]
pub struct Guard {
    child: Child,
    stdin: ChildStdin,
    generation: u64,
}

impl Guard {
    /// Starts a guard from `exe`; its notes go to `notes`.
    ///
    /// The guard gets `PR_SET_PDEATHSIG = SIGKILL`, tied to the calling *thread*: call this
    /// only from a thread that lives as long as the process (kuutamod's main thread), or the
    /// guard, and neard with it, dies when the thread ends. It checks, after setting it, that
    /// its parent is still alive, and it starts its own session before it runs anything.
    pub fn spawn(
        exe: &Path,
        generation: u64,
        notes: tokio::sync::mpsc::UnboundedSender<Note>,
    ) -> std::io::Result<Guard> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(exe);
        cmd.arg0("kuutamod-guard")
            .env(GUARD_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let parent = std::process::id();
        #[allow(unsafe_code)]
        // SAFETY: the closure runs in the forked child before exec and only makes async-signal-
        // safe system calls (prctl, getppid, setsid); it allocates nothing (its errors carry
        // only an errno, which is all the standard library passes back to the parent anyway).
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // kuutamod may have died between fork and prctl: then nobody would kill us.
                if nix::unistd::getppid().as_raw().unsigned_abs() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                // Its own session and process group, before a signal to kuutamod's group can
                // reach it as a member.
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
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
        self.send(&order_line(seq, order))
    }

    /// Orders the guard to start neard as `spec` says (answered by [`Note::Spawned`] or
    /// [`Note::SpawnFailed`] with `id`).
    pub fn spawn_neard(&mut self, id: u64, spec: &SpawnSpec) -> std::io::Result<()> {
        self.send(&format!("spawn {id} {}\n", spec.to_json()?))
    }

    /// Tells the guard that kuutamod has taken note of neard `pid`'s exit: it may reap it.
    pub fn reap(&mut self, pid: u32) -> std::io::Result<()> {
        self.send(&format!("reap {pid}\n"))
    }

    /// A pidfd for neard `pid`, which this guard said it started. The guard reaps neard only on
    /// our `reap`, so the pid still names it, unless the guard has died (then someone else may
    /// have reaped it, and the pid may name another process by now): hence the check, *after*
    /// opening, that the guard still runs. A guard found dead is an error; the caller treats it
    /// as lost (neard died with it).
    pub fn adopt(&mut self, pid: u32) -> std::io::Result<Pidfd> {
        let pidfd = Pidfd::open(pid)?;
        match self.child.try_wait()? {
            None => Ok(pidfd),
            Some(status) => Err(std::io::Error::other(format!(
                "the guard exited ({status}) before neard (pid {pid}) could be watched"
            ))),
        }
    }

    fn send(&mut self, line: &str) -> std::io::Result<()> {
        // A line of up to PIPE_BUF (4 KiB) bytes is written all or nothing. A longer one (a
        // spawn order with many boot nodes) is cut short only when the pipe is nearly full
        // (the guard has not read 60 KiB: it is stuck); that is an error, the caller kills the
        // guard, and the torn line is never read.
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
        // SIGKILL works on a stopped guard too; once it is reaped here, the kernel has sent
        // neard its parent-death SIGKILL (that happens as the guard exits, before it becomes a
        // zombie). Reaping also leaves no zombie behind.
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

fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
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
        let Some(note) = parse_note(&line, generation) else {
            continue;
        };
        let lost = matches!(note, Note::Lost { .. });
        if notes.send(note).is_err() || lost {
            return;
        }
    }
    let _ = notes.send(Note::Lost {
        generation,
        why: "the guard exited".into(),
    });
}

/// One line of the guard: a note, `Lost` for a known word with unreadable arguments (kuutamod
/// cannot go on trusting a guard it misunderstands), `None` for anything else.
fn parse_note(line: &str, generation: u64) -> Option<Note> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let lost = || Note::Lost {
        generation,
        why: format!("unreadable note {line:?}"),
    };
    let note = match words.as_slice() {
        ["ack", seq] => Note::Ack {
            generation,
            seq: seq.parse().ok()?,
        },
        ["nack", seq, why @ ..] => match seq.parse() {
            Ok(seq) => Note::Nack {
                generation,
                seq,
                why: why.join(" "),
            },
            Err(_) => lost(),
        },
        ["spawned", id, pid] => match (id.parse(), pid.parse()) {
            (Ok(id), Ok(pid)) => Note::Spawned {
                generation,
                id,
                pid,
            },
            _ => lost(),
        },
        ["spawn-failed", id, why @ ..] => match id.parse() {
            Ok(id) => Note::SpawnFailed {
                generation,
                id,
                why: why.join(" "),
            },
            Err(_) => lost(),
        },
        ["exited", pid, status @ ..] => match (pid.parse(), parse_status(status)) {
            (Ok(pid), Some(status)) => Note::Exited {
                generation,
                pid,
                status,
            },
            _ => lost(),
        },
        _ => return None,
    };
    Some(note)
}

/// `code <n>`, `signal <n>` or `signal <n> core`, as a wait status.
fn parse_status(words: &[&str]) -> Option<ExitStatus> {
    let raw = match words {
        ["code", n] => (n.parse::<i32>().ok()? & 0xff) << 8,
        ["signal", n] => n.parse::<i32>().ok()? & 0x7f,
        ["signal", n, "core"] => (n.parse::<i32>().ok()? & 0x7f) | 0x80,
        _ => return None,
    };
    Some(ExitStatus::from_raw(raw))
}

// ----- the guard process ---------------------------------------------------------------------

/// A neard the guard started.
struct Started {
    child: Child,
    pidfd: Pidfd,
    /// Its exit, once seen (`code 3`, `signal 9`): it is a zombie until kuutamod says `reap`.
    exit: Option<String>,
}

/// What one order line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Arm { seq: u64, pid: u32, deadline: u64 },
    Disarm { seq: u64 },
    Ping { seq: u64 },
    Spawn { id: u64, spec: String },
    Reap { pid: u32 },
}

fn parse_order(line: &str) -> Option<Parsed> {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(rest) = line.strip_prefix("spawn ") {
        let (id, spec) = rest.split_once(' ')?;
        return Some(Parsed::Spawn {
            id: id.parse().ok()?,
            spec: spec.to_string(),
        });
    }
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
        ["reap", pid] => Some(Parsed::Reap {
            pid: pid.parse().ok()?,
        }),
        _ => None,
    }
}

/// How a child ended, without reaping it: `waitid(P_PID, WEXITED | WNOHANG | WNOWAIT)`.
/// `None` while it runs.
fn peek_exit(pid: u32) -> std::io::Result<Option<String>> {
    let id = libc::id_t::from(pid);
    #[allow(unsafe_code)]
    // SAFETY: an all-zero siginfo_t is a valid value (a plain C struct of integers and
    // unions of them); waitid writes only into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    // SAFETY: waitid reads its arguments and writes the siginfo_t we own; WNOWAIT leaves the
    // child waitable (it is not reaped).
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(unsafe_code)]
    // SAFETY: after a successful waitid on a child, si_pid and si_status are the fields the
    // kernel filled (si_pid 0: nothing to report).
    let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
    if si_pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => format!("code {si_status}"),
        libc::CLD_DUMPED => format!("signal {si_status} core"),
        _ => format!("signal {si_status}"),
    }))
}

struct GuardState {
    started: Vec<Started>,
    /// The timer holds a deadline (for whichever neard runs when it fires).
    armed: bool,
    timer: TimerFd,
    /// Notes not yet written: the note pipe is non-blocking (a stopped kuutamod must not block
    /// the guard before its deadline), so what does not fit now is written when it can be.
    outbox: Vec<u8>,
}

impl GuardState {
    fn note(&mut self, text: &str) {
        self.outbox.extend_from_slice(text.as_bytes());
    }

    fn flush(&mut self, notes: BorrowedFd<'_>) {
        while !self.outbox.is_empty() {
            match nix::unistd::write(notes, &self.outbox) {
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(e) => {
                    // EPIPE: kuutamod is gone (its end closed); stdin closes too, and the loop
                    // ends there.
                    eprintln!("kuutamod guard: cannot write to kuutamod: {e}");
                    self.outbox.clear();
                    return;
                }
            }
        }
    }

    fn find(&self, pid: u32) -> Option<usize> {
        self.started.iter().position(|s| s.child.id() == pid)
    }

    fn running(&self) -> Option<&Started> {
        self.started.iter().find(|s| s.exit.is_none())
    }

    fn apply(&mut self, line: &str) {
        match parse_order(line) {
            Some(Parsed::Arm { seq, pid, deadline }) => match self.find(pid) {
                Some(_) => {
                    self.armed = true;
                    let at =
                        TimeSpec::from_duration(std::time::Duration::from_nanos(deadline.max(1)));
                    match self.timer.set(
                        Expiration::OneShot(at),
                        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                    ) {
                        // An exited (not yet reaped) neard signs nothing: the order holds too.
                        Ok(()) => self.note(&format!("ack {seq}\n")),
                        Err(e) => self.note(&format!("nack {seq} cannot set the timer: {e}\n")),
                    }
                }
                None => {
                    self.armed = false;
                    let _ = self.timer.unset();
                    self.note(&format!("nack {seq} no neard with pid {pid} here\n"));
                }
            },
            Some(Parsed::Disarm { seq }) => {
                self.armed = false;
                let _ = self.timer.unset();
                self.note(&format!("ack {seq}\n"));
            }
            Some(Parsed::Ping { seq }) => self.note(&format!("ack {seq}\n")),
            Some(Parsed::Spawn { id, spec }) => match self.spawn(&spec) {
                Ok(pid) => self.note(&format!("spawned {id} {pid}\n")),
                Err(e) => {
                    let why = e.replace('\n', " ");
                    eprintln!("kuutamod guard: cannot start neard: {why}");
                    self.note(&format!("spawn-failed {id} {why}\n"));
                }
            },
            Some(Parsed::Reap { pid }) => self.reap(pid),
            None => eprintln!("kuutamod guard: bad order {:?}", line.trim_end()),
        }
    }

    fn spawn(&mut self, spec: &str) -> Result<u32, String> {
        let spec = SpawnSpec::from_json(spec)?;
        if let Some(s) = self.running() {
            return Err(format!("neard (pid {}) still runs", s.child.id()));
        }
        let mut child = crate::neard::process::spawn(&spec)
            .map_err(|e| format!("{}: {e}", spec.program.display()))?;
        let pid = child.id();
        // Our own unreaped child: the pid cannot name anything else.
        match Pidfd::open(pid) {
            Ok(pidfd) => {
                self.started.push(Started {
                    child,
                    pidfd,
                    exit: None,
                });
                Ok(pid)
            }
            Err(e) => {
                // Unwatchable: we could not kill it at a deadline. Not ours to run.
                let _ = child.kill();
                let _ = child.wait();
                Err(format!("cannot watch neard (pid {pid}): {e}"))
            }
        }
    }

    fn reap(&mut self, pid: u32) {
        let Some(i) = self.find(pid) else {
            eprintln!("kuutamod guard: reap of pid {pid}, which is not a neard of this guard");
            return;
        };
        if self.started[i].exit.is_none() {
            eprintln!("kuutamod guard: reap of neard (pid {pid}), which still runs: refused");
            return;
        }
        let mut s = self.started.remove(i);
        if let Err(e) = s.child.wait() {
            eprintln!("kuutamod guard: cannot reap neard (pid {pid}): {e}");
        }
    }

    /// Reads the exit of the neard at `i`, whose pidfd became readable.
    fn exited(&mut self, i: usize) {
        let pid = self.started[i].child.id();
        match peek_exit(pid) {
            Ok(Some(status)) => {
                self.note(&format!("exited {pid} {status}\n"));
                self.started[i].exit = Some(status);
            }
            Ok(None) => {}
            Err(e) => {
                // Cannot happen for our own unreaped child; say it ended rather than loop.
                eprintln!("kuutamod guard: cannot read how neard (pid {pid}) ended: {e}");
                self.note(&format!("exited {pid} signal 9\n"));
                self.started[i].exit = Some("signal 9".into());
            }
        }
    }

    fn deadline(&mut self) {
        if !std::mem::take(&mut self.armed) {
            return;
        }
        for s in self.started.iter().filter(|s| s.exit.is_none()) {
            kill(
                s,
                "kuutamod did not stop its validating neard before the lease ran out",
            );
        }
    }

    /// Kills every neard that still runs and reaps them all: kuutamod is gone, or the guard
    /// cannot serve it any more.
    fn finish(&mut self, why: &str) {
        for s in &self.started {
            if s.exit.is_none() {
                kill(s, why);
            }
        }
        for mut s in self.started.drain(..) {
            let _ = s.child.wait();
        }
    }
}

fn kill(s: &Started, why: &str) {
    let pid = s.child.id();
    match s.pidfd.kill() {
        Ok(()) => eprintln!("kuutamod guard: {why}; killed neard (pid {pid})"),
        Err(e) => eprintln!("kuutamod guard: cannot kill neard (pid {pid}): {e}"),
    }
}

fn ignore_signals() {
    use nix::sys::signal::{signal, SigHandler};
    // Not SIGCHLD: ignoring it would make the kernel reap neard at once, and its pid could be
    // recycled before kuutamod took note (see the module's last section). neard gets these
    // back at their defaults (`spawn`).
    for sig in crate::neard::process::GUARD_IGNORES {
        #[allow(unsafe_code)]
        // SAFETY: SIG_IGN installs no handler code; nothing runs in signal context.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// The guard's main loop (runs in the re-executed process; never returns). Call it before
/// anything starts a thread: neard's parent-death signal is tied to this thread.
pub fn run_guard() -> ! {
    // kuutamod already made us a session leader (in the forked child); this only matters for
    // a guard started some other way.
    let _ = nix::unistd::setsid();
    // Started through /proc/<pid>/fd/<n>, its command name would be the descriptor number.
    let _ = nix::sys::prctl::set_name(c"kuutamod-guard");
    ignore_signals();
    let fds = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .and_then(|i| Ok((i, std::io::stdout().as_fd().try_clone_to_owned()?)));
    let result = fds.and_then(|(orders, notes)| serve(orders, notes));
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("kuutamod guard: {e}; exiting");
            std::process::exit(1)
        }
    }
}

/// The guard's loop: orders from `orders`, notes to `notes`. Returns when `orders` closes
/// (kuutamod is gone), after killing and reaping every neard it started; on an error, the
/// same, with the error.
pub(crate) fn serve(orders: OwnedFd, notes: OwnedFd) -> std::io::Result<()> {
    set_nonblocking(notes.as_fd())?;
    let timer = TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_CLOEXEC)
        .map_err(|e| std::io::Error::other(format!("cannot create a CLOCK_BOOTTIME timer: {e}")))?;
    let mut st = GuardState {
        started: Vec::new(),
        armed: false,
        timer,
        outbox: Vec::new(),
    };
    let result = serve_loop(&mut st, orders.as_fd(), notes.as_fd());
    let why = match &result {
        Ok(()) => "kuutamod is gone (its pipe closed)".to_string(),
        Err(e) => format!("the guard cannot hear kuutamod any more ({e})"),
    };
    st.finish(&why);
    result
}

fn serve_loop(
    st: &mut GuardState,
    orders: BorrowedFd<'_>,
    notes: BorrowedFd<'_>,
) -> std::io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            st.apply(&String::from_utf8_lossy(&line));
        }
        if pending.len() > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "an order line longer than {MAX_LINE} bytes"
            )));
        }
        st.flush(notes);
        let watched: Vec<usize> = (0..st.started.len())
            .filter(|i| st.started[*i].exit.is_none())
            .collect();
        let (input_ready, timer_fired, exited) = {
            let mut fds = vec![
                PollFd::new(orders, PollFlags::POLLIN),
                PollFd::new(st.timer.as_fd(), PollFlags::POLLIN),
            ];
            for i in &watched {
                fds.push(PollFd::new(st.started[*i].pidfd.as_fd(), PollFlags::POLLIN));
            }
            if !st.outbox.is_empty() {
                fds.push(PollFd::new(notes, PollFlags::POLLOUT));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::other(format!("poll failed: {e}"))),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let exited: Vec<usize> = watched
                .iter()
                .zip(&fds[2..])
                .filter(|(_, f)| ready(f))
                .map(|(i, _)| *i)
                .collect();
            (ready(&fds[0]), ready(&fds[1]), exited)
        };
        for i in exited {
            st.exited(i);
        }
        if timer_fired {
            let _ = nix::unistd::read(st.timer.as_fd().as_raw_fd(), &mut [0u8; 8]);
            st.deadline();
        }
        if !input_ready {
            continue;
        }
        match nix::unistd::read(orders.as_raw_fd(), &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(std::io::Error::other(format!("read failed: {e}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
