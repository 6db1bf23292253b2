//! Unit tests of [`super`]: the order and note lines, and the guard's loop ([`serve`]) run on
//! a thread of the test process with pipes for its stdin and stdout, so that the neards it
//! starts are children of this process and their zombies can be seen. The process chain
//! itself (parent-death signals between real processes) is tested against the kuutamod binary
//! in `tests/it/guard.rs`.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::clock::Instant;
use crate::neard::process::tests::{eventually, PROMPT};
use crate::neard::process::{Neard, SpawnSpec};

/// The state letter of `pid` in `/proc` (`Z`: a zombie), `None` once it is gone (reaped).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` is a live process: neither gone nor a zombie (a process just spawned may be in
/// uninterruptible sleep, 'D', while it execs under load).
fn runs(pid: u32) -> bool {
    proc_state(pid).is_some_and(|s| !matches!(s, 'Z' | 'X'))
}

/// A stand-in neard: a shell script that ignores its arguments.
fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    crate::neard::process::tests::write_script(&path, body);
    path
}

fn spec(bin: &std::path::Path) -> SpawnSpec {
    SpawnSpec::neard(bin, std::path::Path::new("/tmp"), None, GUARD_ENV).expect("spec")
}

/// The guard's loop on a thread: kuutamod's end of both pipes.
struct Harness {
    orders: Option<std::fs::File>,
    notes: mpsc::Receiver<String>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    fn start() -> Harness {
        let (orders_r, orders_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let (notes_r, notes_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let thread = std::thread::spawn(move || serve(orders_r, notes_w));
        let (tx, notes) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(std::fs::File::from(notes_r)).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Harness {
            orders: Some(std::fs::File::from(orders_w)),
            notes,
            thread: Some(thread),
        }
    }

    fn send(&mut self, line: &str) {
        let w = self.orders.as_mut().expect("orders open");
        w.write_all(line.as_bytes()).expect("write order");
    }

    fn next(&self) -> String {
        self.notes
            .recv_timeout(PROMPT)
            .unwrap_or_else(|e| panic!("no note from the guard within {PROMPT:?}: {e}"))
    }

    /// Starts `bin` as neard (order `id`) and returns its pid.
    fn spawn(&mut self, id: u64, bin: &std::path::Path) -> u32 {
        let json = spec(bin).to_json().expect("json");
        self.send(&format!("spawn {id} {json}\n"));
        let note = self.next();
        match parse_note(&note, 0) {
            Some(Note::Spawned { id: got, pid, .. }) if got == id => pid,
            other => panic!("expected `spawned {id} <pid>`, got {note:?} ({other:?})"),
        }
    }

    /// Closes kuutamod's end of the order pipe and waits for the loop to end.
    fn close(&mut self) -> std::io::Result<()> {
        self.orders = None;
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the guard's loop panicked")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.close();
        }
    }
}

#[test]
fn orders_round_trip() {
    let arm = GuardOrder::Arm {
        pid: 42,
        deadline: Instant::from_nanos(7_000_000_000),
    };
    assert_eq!(
        parse_order(&order_line(3, arm)),
        Some(Parsed::Arm {
            seq: 3,
            pid: 42,
            deadline: 7_000_000_000
        })
    );
    assert_eq!(
        parse_order(&order_line(4, GuardOrder::Disarm)),
        Some(Parsed::Disarm { seq: 4 })
    );
    assert_eq!(
        parse_order(&order_line(5, GuardOrder::Ping)),
        Some(Parsed::Ping { seq: 5 })
    );
    assert_eq!(
        parse_order("spawn 6 {\"a\": \"b c\"}\n"),
        Some(Parsed::Spawn {
            id: 6,
            spec: "{\"a\": \"b c\"}".into()
        })
    );
    assert_eq!(parse_order("reap 77\n"), Some(Parsed::Reap { pid: 77 }));
    assert_eq!(parse_order("arm x 1 2"), None);
    assert_eq!(parse_order("spawn x {}"), None);
    assert_eq!(parse_order("reap -1"), None);
}

#[test]
fn notes_parse_and_unreadable_ones_mean_a_lost_guard() {
    assert_eq!(
        parse_note("ack 3", 7),
        Some(Note::Ack {
            generation: 7,
            seq: 3
        })
    );
    assert_eq!(
        parse_note("spawned 2 1234", 7),
        Some(Note::Spawned {
            generation: 7,
            id: 2,
            pid: 1234
        })
    );
    assert_eq!(
        parse_note("spawn-failed 2 /bin/x: No such file", 7),
        Some(Note::SpawnFailed {
            generation: 7,
            id: 2,
            why: "/bin/x: No such file".into()
        })
    );
    let status = |line: &str| match parse_note(line, 1) {
        Some(Note::Exited { pid: 9, status, .. }) => crate::neard::process::describe(&status),
        other => panic!("{line}: {other:?}"),
    };
    assert_eq!(status("exited 9 code 3"), "exit code 3");
    assert_eq!(status("exited 9 signal 9"), "signal 9 (SIGKILL)");
    assert_eq!(status("exited 9 signal 11 core"), "signal 11 (SIGSEGV)");
    for bad in [
        "exited 9 code",
        "exited 9 maybe 3",
        "exited x code 1",
        "spawned 2 x",
        "nack x why",
    ] {
        assert!(
            matches!(parse_note(bad, 1), Some(Note::Lost { .. })),
            "{bad}"
        );
    }
    assert_eq!(parse_note("running 1 test", 1), None, "not a note");
}

/// A guard that never reads (stopped) must not block kuutamod: once the pipe is full an
/// order fails at once.
#[test]
fn orders_never_block_on_a_full_pipe() {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::piped())
        .spawn()
        .expect("sleep");
    let stdin = child.stdin.take().expect("stdin");
    set_nonblocking(stdin.as_fd()).expect("nonblocking");
    let mut guard = Guard {
        child,
        stdin,
        generation: 1,
    };
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let err = loop {
        match guard.order(sent, GuardOrder::Ping) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the pipe never filled");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    assert!(
        sent > 1000,
        "a 64 KiB pipe holds thousands of orders ({sent})"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// The guard starts neard, says its pid, says how it ended, and keeps it a zombie until
/// kuutamod says `reap`: the pid kuutamod knows is never recycled under it.
#[test]
fn neard_s_exit_is_reported_and_it_is_reaped_only_on_kuutamod_s_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = script(dir.path(), "neard", "exit 3");
    let mut g = Harness::start();
    let pid = g.spawn(1, &bin);
    assert_eq!(g.next(), format!("exited {pid} code 3"));
    // Not reaped: still there, a zombie, for as long as kuutamod says nothing.
    g.send("ping 1\n");
    assert_eq!(g.next(), "ack 1");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(proc_state(pid), Some('Z'), "neard {pid} must stay unreaped");
    g.send(&format!("reap {pid}\n"));
    eventually("the reaped neard to be gone", || {
        proc_state(pid).is_none().then_some(())
    });
    g.close().expect("the loop ends cleanly");
}

/// kuutamod signals neard itself through a pidfd; the guard reports the signal it died of.
/// Once reaped, the pidfd cannot reach anything any more (no recycled pid).
#[test]
fn kuutamod_signals_neard_through_its_own_pidfd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = script(dir.path(), "neard", "exec sleep 30");
    let mut g = Harness::start();
    let pid = g.spawn(1, &bin);
    let neard = Neard::new(Pidfd::open(pid).expect("pidfd of an unreaped child"));
    neard.signal(Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(g.next(), format!("exited {pid} signal 15"));
    neard
        .signal(Signal::SIGHUP)
        .expect("a zombie can still be signalled (to no effect)");
    g.send(&format!("reap {pid}\n"));
    eventually("the reaped neard to be gone", || {
        proc_state(pid).is_none().then_some(())
    });
    let e = neard.signal(Signal::SIGHUP).expect_err("reaped");
    assert!(e.to_string().contains("already exited"), "{e}");
    neard
        .kill()
        .expect("SIGKILL of a neard that is gone is not an error");
}

/// At an armed deadline the guard kills neard (and only reports it; kuutamod reaps). An arm
/// holds for a neard started after it, too (a restart with the key).
#[test]
fn an_armed_deadline_kills_neard_also_one_started_after_the_arm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let quick = script(dir.path(), "voter", "exit 0");
    let bin = script(dir.path(), "neard", "exec sleep 30");
    let mut g = Harness::start();
    let voter = g.spawn(1, &quick);
    assert_eq!(g.next(), format!("exited {voter} code 0"));
    let deadline = crate::clock::now() + Duration::from_millis(700);
    g.send(&format!("arm 1 {voter} {}\n", deadline.as_nanos()));
    assert_eq!(g.next(), "ack 1", "an exited, unreaped neard can be armed");
    g.send(&format!("reap {voter}\n"));
    let pid = g.spawn(2, &bin);
    assert_eq!(
        g.next(),
        format!("exited {pid} signal 9"),
        "killed at the deadline"
    );
    assert!(
        crate::clock::now() >= deadline,
        "killed before its deadline"
    );
    assert_eq!(proc_state(pid), Some('Z'), "the guard does not reap it");
    g.send("disarm 2\n");
    assert_eq!(g.next(), "ack 2");
    g.close().expect("clean end");
    assert_eq!(proc_state(pid), None, "reaped when kuutamod is gone");
}

/// A disarmed guard kills nothing at the old deadline.
#[test]
fn a_disarmed_deadline_kills_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = script(dir.path(), "neard", "exec sleep 30");
    let mut g = Harness::start();
    let pid = g.spawn(1, &bin);
    let deadline = crate::clock::now() + Duration::from_millis(200);
    g.send(&format!("arm 1 {pid} {}\n", deadline.as_nanos()));
    g.send("disarm 2\n");
    assert_eq!(g.next(), "ack 1");
    assert_eq!(g.next(), "ack 2");
    std::thread::sleep(Duration::from_millis(500));
    assert!(runs(pid), "neard must still run: {:?}", proc_state(pid));
    g.close().expect("clean end");
}

/// When kuutamod's pipe closes the guard kills neard, armed or not, reaps it, and ends.
#[test]
fn a_closed_order_pipe_kills_neard_armed_or_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = script(dir.path(), "neard", "exec sleep 30");
    let mut g = Harness::start();
    let pid = g.spawn(1, &bin);
    assert!(runs(pid), "{:?}", proc_state(pid));
    g.close().expect("clean end");
    assert_eq!(proc_state(pid), None, "killed and reaped");
}

/// The guard runs one neard at a time, and refuses what it cannot do with a reason, without
/// ending: bad lines, an arm of a pid that is not its neard, a spawn it cannot perform.
#[test]
fn bad_and_impossible_orders_are_refused_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = script(dir.path(), "neard", "exec sleep 30");
    let mut g = Harness::start();
    let pid = g.spawn(1, &bin);
    g.send("spawn 2 ");
    g.send(&format!("{}\n", spec(&bin).to_json().expect("json")));
    let refused = g.next();
    assert!(
        refused.starts_with("spawn-failed 2 ")
            && refused.contains(&format!("(pid {pid}) still runs")),
        "{refused}"
    );
    g.send("arm x y z\nreap 1\n");
    g.send(&format!("arm 3 {} 1\n", pid + 100_000));
    let nack = g.next();
    assert!(nack.starts_with("nack 3 no neard with pid"), "{nack}");
    g.send("spawn 4 {not json\n");
    let refused = g.next();
    assert!(
        refused.starts_with("spawn-failed 4 unreadable spawn order"),
        "{refused}"
    );
    g.send(&format!("reap {pid}\nping 5\n"));
    assert_eq!(g.next(), "ack 5", "a reap of a running neard is refused");
    assert!(runs(pid), "still runs: {:?}", proc_state(pid));
    // The one that runs is killed by its signal; then a missing binary is refused by name.
    Pidfd::open(pid).expect("pidfd").kill().expect("kill");
    assert_eq!(g.next(), format!("exited {pid} signal 9"));
    g.send(&format!("reap {pid}\n"));
    let missing = dir.path().join("no-such-neard");
    g.send(&format!(
        "spawn 6 {}\n",
        spec(&missing).to_json().expect("json")
    ));
    let refused = g.next();
    assert!(
        refused.starts_with("spawn-failed 6 ") && refused.contains("no-such-neard"),
        "{refused}"
    );
    g.close().expect("clean end");
}

/// neard's stdout and stderr go to kuutamod's stderr, never into the note pipe.
#[test]
fn neard_s_output_never_reaches_the_note_pipe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let done = dir.path().join("done");
    let bin = script(
        dir.path(),
        "neard",
        &format!(
            "echo neard-says-hello; echo neard-complains >&2; touch {}; exec sleep 30",
            done.display()
        ),
    );
    let mut g = Harness::start();
    g.spawn(1, &bin);
    eventually("neard to have written", || done.exists().then_some(()));
    g.send("ping 1\n");
    assert_eq!(g.next(), "ack 1", "nothing of neard's before the answer");
    g.close().expect("clean end");
    let rest: Vec<String> = g.notes.try_iter().collect();
    assert!(
        rest.iter().all(|l| !l.contains("neard-")),
        "neard's output in the notes: {rest:?}"
    );
}
