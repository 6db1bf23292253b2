//! A paused kuutamod cannot stop its neard; the guard process must, before the lock moves.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::failover::{steady_pair, LIMIT};
use crate::helper::{alive, now_ms, Must, Opts};

fn paused_leader(mode: &'static str) {
    let (cluster, leader, standby) = steady_pair(Opts::test().mode(mode));
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

    // Paused past 2 x TTL, then resumed: it must rejoin as a standby, never validate again.
    std::thread::sleep(
        Duration::from_secs(7).saturating_sub(Duration::from_millis(now_ms() - fault)),
    );
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
