//! A paused kuutamod cannot stop its neard; the guard process must, before the lock moves.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::failover::{steady_pair, LIMIT};
use crate::helper::cluster::{alive, now_ms, Opts};
use crate::helper::wait;

fn paused_leader(mode: &'static str) {
    let opts = Opts {
        failover_mode: mode,
        ..Opts::default()
    };
    let (_consul, cluster, leader, standby) = steady_pair(&opts);
    let neard = cluster.nodes[leader].neard_pid().expect("leader's neard");
    let fault = now_ms();
    cluster.nodes[leader].signal(Signal::SIGSTOP);
    let first_new = cluster.wait_for_signing(standby, fault, LIMIT);
    assert!(!alive(neard), "the paused leader's neard still runs");
    let old_id = cluster.nodes[leader].id.clone();
    let last_old = cluster
        .entries()
        .iter()
        .filter(|e| e.node == old_id)
        .map(|e| e.time_ms)
        .max()
        .expect("the old leader signed before");
    assert!(
        last_old < first_new,
        "old leader signed at {last_old}, new at {first_new}"
    );
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
    wait::until(LIMIT, "the resumed node to vote", || {
        match cluster.nodes[leader].state() {
            Ok(s) if s == "Voting" => Ok(()),
            other => Err(other),
        }
    });
    assert_eq!(cluster.nodes[standby].state().as_deref(), Ok("Validating"));
    cluster.assert_no_double_signing();
}

#[test]
fn paused_leader_is_fenced_by_the_guard_restart_mode() {
    paused_leader("restart");
}

#[test]
fn paused_leader_is_fenced_by_the_guard_hot_swap_mode() {
    paused_leader("hot-swap");
}
