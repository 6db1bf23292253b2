//! A paused kuutamod cannot stop its neard; the guard process must, before the lock moves.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::failover::{steady_pair, LIMIT};
use crate::helper::{alive, now_ms, Must, Opts};

fn paused_leader(mode: &'static str) {
    let opts = Opts::test().mode(mode);
    let (cluster, leader, standby) = steady_pair(opts.clone());
    let neard = cluster.nodes[leader].neard_pid().expect("leader's neard");
    let fault = now_ms();
    cluster.nodes[leader].signal(Signal::SIGSTOP);
    let first_new = cluster.wait_for_signing(standby, fault, LIMIT).must();
    assert!(!alive(neard), "the paused leader's neard still runs");
    cluster.check_stopped_before(leader, first_new).must();
    let log = std::fs::read_to_string(&cluster.nodes[leader].log).expect("log");
    assert!(
        log.contains("kuutamod guard:") && log.contains("killed neard"),
        "{log}"
    );

    // Paused until its session has surely ended (Consul ends a session between one and two
    // TTLs after its last renewal, before the pause), then resumed: it must rejoin as a
    // standby, never validate again.
    let session_over = fault + u64::try_from((2 * opts.ttl).as_millis()).expect("ms");
    std::thread::sleep(Duration::from_millis(
        (session_over + 1).saturating_sub(now_ms()),
    ));
    cluster.nodes[leader].signal(Signal::SIGCONT);
    cluster.wait_state(leader, "Voting", LIMIT).must();
    assert_eq!(cluster.nodes[standby].state().as_deref(), Ok("Validating"));
    cluster.check_no_double_signing().must();
}

#[test]
fn paused_leader_is_fenced_by_the_guard_restart_mode() {
    paused_leader("restart");
}

#[test]
fn paused_leader_is_fenced_by_the_guard_hot_swap_mode() {
    paused_leader("hot-swap");
}
