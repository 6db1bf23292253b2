//! Faults below kuutamod's Consul session, which only a client agent per node shows: the
//! leader's agent leaving (Consul invalidates the node's sessions at once) and an outsider
//! changing the leader key. The leader must demote at once; nothing may double-sign; one node
//! validates again.

use crate::failover::{steady_pair, LIMIT};
use crate::helper::{http_get, now_ms, Cluster, Must, Opts};
use kuutamod_bench::consul::{http_delete, http_put};

/// Waits until `node` counts a step-down for `reason`, then until exactly one node validates
/// and signs again; checks the ledger.
fn demoted_then_one_validator(cluster: &Cluster, node: usize, reason: &str, fault: u64) {
    let series = format!("kuutamod_step_downs_total{{reason=\"{reason}\"}}");
    cluster
        .until(LIMIT, &format!("a {reason} step-down"), || {
            match cluster.nodes[node].metric_sum(&series) {
                Ok(n) if n >= 1.0 => Ok(()),
                other => Err(other),
            }
        })
        .must();
    cluster
        .until(LIMIT, "one node validating and signing again", || {
            let leaders: Vec<usize> = (0..cluster.nodes.len())
                .filter(|i| cluster.nodes[*i].state().as_deref() == Ok("Validating"))
                .collect();
            match leaders.as_slice() {
                [one] if cluster.signed_after(*one, fault) => Ok(()),
                _ => Err(cluster.describe()),
            }
        })
        .must();
    cluster.check_no_double_signing().must();
}

#[test]
fn leader_agent_leaving_demotes_the_leader() {
    let (mut cluster, leader, _) = steady_pair(Opts::test());
    let fault = now_ms();
    cluster.local_store_mut(leader).terminate().must();
    cluster.local_store_mut(leader).launch().must();
    demoted_then_one_validator(&cluster, leader, "key_lost", fault);
    assert!(
        cluster.nodes[leader]
            .log_text()
            .contains("stepping down: the leader key lost our session"),
        "{}",
        cluster.nodes[leader].log_tail(30)
    );
}

#[test]
fn outsider_deleting_the_leader_key_demotes_the_leader() {
    let (cluster, leader, _) = steady_pair(Opts::test().mode("hot-swap"));
    let key = format!("{}/v1/kv/{}", cluster.servers.url(), cluster.lock_key());
    let fault = now_ms();
    http_delete(&key).expect("DELETE the leader key");
    demoted_then_one_validator(&cluster, leader, "key_lost", fault);
}

#[test]
fn outsider_overwriting_the_leader_key_demotes_the_leader() {
    let (cluster, leader, _) = steady_pair(Opts::test());
    let key = format!("{}/v1/kv/{}", cluster.servers.url(), cluster.lock_key());
    let fault = now_ms();
    http_put(&key, "outsider").expect("PUT the leader key");
    demoted_then_one_validator(&cluster, leader, "key_lost", fault);
    // The lock is held again, by a kuutamod's session, with a record of its own.
    let value = http_get(&format!("{key}?raw")).expect("read the key");
    assert_ne!(value, "outsider");
}
