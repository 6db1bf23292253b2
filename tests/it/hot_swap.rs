//! Hot-swap failover: promotion without a restart, fallback to a restart, and demotion as a
//! hard fence.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::failover::{steady_pair, LIMIT};
use crate::helper::{alive, cluster, http_get, now_ms, wait, Must, Opts, ACCOUNT};

/// docs/fault-injection.md's targets for hot swap: the new leader signs within 300 ms (median)
/// of a graceful stop, and within 500 ms (p95) of a neard crash. A benchmark measures them;
/// a test on a shared machine with a debug build allows ten times as much, which still
/// fails a takeover that waits for a lease or a TTL.
const HAND_OVER_TARGET_MS: u64 = 300;
const CRASH_TARGET_MS: u64 = 500;
const GENEROUS: u64 = 10;

fn hot() -> Opts {
    Opts::test().mode("hot-swap")
}

#[test]
fn promotion_keeps_the_running_neard() {
    let mut cluster = cluster(1, hot());
    cluster.start_all().must();
    let node = &cluster.nodes[0];
    let voter_pid = wait::until(LIMIT, "neard to run", || node.neard_pid().ok_or("no pid"));
    cluster.wait_for_leader(LIMIT).must();
    cluster.wait_for_signing(0, 0, LIMIT).must();
    assert_eq!(node.neard_pid(), Some(voter_pid), "neard was restarted");
    // neard signs as soon as the key is live; kuutamod records the failover when its next poll
    // confirms it, a few milliseconds later.
    let m = wait::until(LIMIT, "the failover to be recorded", || {
        let m = node.metrics()?;
        match m.get("kuutamod_failover_duration_seconds_count") {
            Some(n) if *n >= 1.0 => Ok(m),
            other => Err(format!("count {other:?}")),
        }
    });
    assert_eq!(m["kuutamod_neard_restarts"], 0.0);
    assert_eq!(m["kuutamod_failover_duration_seconds_count"], 1.0);
    // The labelled counter exists from the start (every reason at 0): no fallback counted.
    let fallbacks: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.starts_with("kuutamod_hot_swap_fallbacks_total{"))
        .collect();
    assert!(!fallbacks.is_empty(), "{m:?}");
    assert!(fallbacks.iter().all(|(_, v)| **v == 0.0), "{fallbacks:?}");
    let status: serde_json::Value = serde_json::from_str(
        &http_get(&format!("http://127.0.0.1:{}/status", node.rpc_port)).expect("status"),
    )
    .expect("json");
    assert_eq!(status["validator_account_id"], ACCOUNT);
}

#[test]
fn neard_ignoring_sighup_falls_back_to_a_restart() {
    let mut cluster = cluster(1, hot());
    cluster.nodes[0]
        .control(&neard_sim::control::Control {
            ignore_sighup: true,
            ..Default::default()
        })
        .must();
    cluster.start_all().must();
    cluster.wait_for_leader(LIMIT).must();
    cluster.wait_for_signing(0, 0, LIMIT).must();
    let m = cluster.nodes[0].metrics().expect("metrics");
    assert_eq!(m["kuutamod_neard_restarts"], 1.0);
    assert_eq!(
        m["kuutamod_hot_swap_fallbacks_total{reason=\"unconfirmed\"}"],
        1.0
    );
    let log = std::fs::read_to_string(&cluster.nodes[0].log).expect("log");
    assert!(
        log.contains("hot swap: unconfirmed; restarting neard instead"),
        "{log}"
    );
}

#[test]
fn graceful_stop_hands_over_without_double_signing() {
    let (mut cluster, leader, standby) = steady_pair(hot());
    let old_neard = cluster.nodes[leader].neard_pid().expect("pid");
    let standby_neard = cluster.nodes[standby].neard_pid().expect("pid");
    let fault = now_ms();
    cluster.nodes[leader].signal(Signal::SIGTERM);
    let first_new = cluster.wait_for_signing(standby, fault, LIMIT).must();
    assert_eq!(
        cluster.nodes[leader].wait_exit(LIMIT).must().code(),
        Some(0)
    );
    assert!(!alive(old_neard), "neard outlived kuutamod");
    assert_eq!(
        cluster.nodes[standby].neard_pid(),
        Some(standby_neard),
        "standby restarted neard"
    );
    cluster.check_no_double_signing().must();
    let took = first_new - fault;
    eprintln!("hot-swap hand-over: new leader signed {took} ms after SIGTERM");
    assert!(
        took <= GENEROUS * HAND_OVER_TARGET_MS,
        "hand-over took {took} ms; target {HAND_OVER_TARGET_MS} ms (x{GENEROUS} allowed here)"
    );
}

#[test]
fn hand_over_leaves_the_old_leader_a_synced_voter() {
    let (cluster, leader, standby) = steady_pair(hot());
    let old_neard = cluster.nodes[leader].neard_pid().expect("pid");
    let fault = now_ms();
    cluster.nodes[leader].signal(Signal::SIGUSR1);
    cluster.wait_for_signing(standby, fault, LIMIT).must();
    cluster.wait_state(leader, "Voting", LIMIT).must();
    assert_eq!(
        cluster.nodes[leader].neard_pid(),
        Some(old_neard),
        "old leader's neard restarted"
    );
    assert!(!cluster.nodes[leader].has_validator_key());
    // The hold-off (one TTL) passes; the old leader must not take the lock back.
    wait::holds(
        Duration::from_secs(4),
        "the new leader keeps the lock",
        || match cluster.nodes[standby].state() {
            Ok(s) if s == "Validating" => Ok(()),
            other => Err(other),
        },
    );
    cluster.check_no_double_signing().must();
}

#[test]
fn a_neard_slow_to_drop_the_key_is_killed_before_the_lock_moves() {
    let mut cluster = cluster(2, hot());
    // node0 starts alone so that it leads; its neard keeps a dropped key for 10 s.
    cluster.nodes[0].set_env("NEARD_SIM_KEY_DROP_DELAY_MS", "10000");
    cluster.nodes[0].start().must();
    cluster.wait_for_signing(0, 0, LIMIT).must();
    cluster.nodes[1].start().must();
    cluster.wait_state(1, "Voting", LIMIT).must();
    let old_neard = cluster.nodes[0].neard_pid().expect("pid");
    let fault = now_ms();
    cluster.nodes[0].signal(Signal::SIGUSR1);
    cluster.wait_for_signing(1, fault, LIMIT).must();
    assert!(!alive(old_neard), "the slow neard was not killed");
    let m = cluster.nodes[0].metrics().expect("metrics");
    assert_eq!(
        m["kuutamod_hot_swap_fallbacks_total{reason=\"demotion_unconfirmed\"}"],
        1.0
    );
    cluster.check_no_double_signing().must();
}

#[test]
fn leader_neard_crash_hot_swaps_the_standby() {
    let (cluster, leader, standby) = steady_pair(hot());
    let pid = cluster.nodes[leader].neard_pid().expect("pid");
    let standby_neard = cluster.nodes[standby].neard_pid().expect("pid");
    let fault = now_ms();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    let first_new = cluster.wait_for_signing(standby, fault, LIMIT).must();
    assert_eq!(cluster.nodes[standby].neard_pid(), Some(standby_neard));
    cluster.check_no_double_signing().must();
    let took = first_new - fault;
    eprintln!("hot-swap after neard crash: new leader signed {took} ms after the kill");
    assert!(
        took <= GENEROUS * CRASH_TARGET_MS,
        "takeover took {took} ms; target {CRASH_TARGET_MS} ms (x{GENEROUS} allowed here)"
    );
}

#[test]
fn neard_dying_during_a_hot_swap_hands_the_lock_on() {
    let mut cluster = cluster(2, hot());
    // node0's neard takes 3 s to apply a SIGHUP (longer than the confirmation limit), which
    // leaves a window in which to kill it mid-swap, and 5 s to boot, so that node0 cannot
    // simply win the lock back while node1 waits out its hand-over hold-off.
    cluster.nodes[0].set_env("NEARD_SIM_RELOAD_DELAY_MS", "3000");
    cluster.nodes[0].set_env("NEARD_SIM_BOOT_DELAY_MS", "5000");
    cluster.nodes[1].start().must();
    cluster.wait_for_signing(1, 0, LIMIT).must();
    cluster.nodes[0].start().must();
    cluster.wait_state(0, "Voting", LIMIT).must();
    cluster.nodes[1].signal(Signal::SIGUSR1); // hand over to node0
    let log = cluster.nodes[0].log.clone();
    wait::until(LIMIT, "node0 to start a hot swap", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("hot swap: validator key written") {
            Ok(())
        } else {
            Err(cluster.nodes[0].log_tail(3))
        }
    });
    let pid = cluster.nodes[0].neard_pid().expect("node0's neard");
    let fault = now_ms();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    cluster.wait_for_signing(1, fault, LIMIT).must();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("stepping down: neard exited"), "{text}");
    assert!(!text.contains("restarting neard instead"), "{text}");
    cluster.check_no_double_signing().must();
}
