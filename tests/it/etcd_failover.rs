//! kuutamod end to end on etcd (`KUUTAMO_LOCK_BACKEND=etcd`): real kuutamod binaries, each
//! talking through its proxy to an etcd member, the neard simulator on one shared chain. The
//! failovers of `failover.rs` (a crashed neard on both etcd versions, a graceful stop, a killed
//! kuutamod whose lease must expire), and etcd's own faults: the lock's record deleted, its
//! holder key deleted, a compaction of the whole history, the leader's member killed and
//! restarted, a three-member cluster losing its Raft leader and its quorum, a snapshot
//! restored under a running pair; and kuutamoctl on etcd. Every test ends with the ledger's
//! verdict: nothing signed twice.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::failover::LIMIT;
use crate::helper::{
    alive, now_ms, spec_cluster, timing, wait, Cluster, Must, Opts, Spec, ACCOUNT,
};
use kuutamod_bench::consul::http_post;

/// Two nodes on `servers` etcd members of `bin` (`None`: etcd 3.4), one validating and
/// signing, the other a synced standby.
fn etcd_pair(opts: Opts, bin: Option<PathBuf>, servers: usize) -> (Cluster, usize, usize) {
    let mut spec = Spec::new(2, ACCOUNT, opts).etcd(bin);
    spec.servers = servers;
    let mut cluster = spec_cluster(spec);
    cluster.start_all().must();
    let leader = cluster.wait_for_leader(LIMIT).must();
    let standby = 1 - leader;
    cluster.wait_for_signing(leader, 0, LIMIT).must();
    cluster.wait_state(standby, "Voting", LIMIT).must();
    (cluster, leader, standby)
}

/// A POST to the first running member's JSON gateway (an outsider's or operator's tool).
fn post(cluster: &Cluster, path: &str, body: serde_json::Value) -> serde_json::Value {
    let answer = http_post(
        &format!("{}{path}", cluster.servers.url()),
        &body.to_string(),
    )
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&answer).expect("json")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Waits until `node` counts a step-down for `reason`, then until exactly one node validates
/// and signs after `fault`; checks the ledger.
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
    one_validator_signing_after(cluster, fault);
}

fn one_validator_signing_after(cluster: &Cluster, fault: u64) -> usize {
    let one = cluster
        .until(LIMIT, "one node validating and signing again", || {
            let leaders: Vec<usize> = (0..cluster.nodes.len())
                .filter(|i| cluster.nodes[*i].state().as_deref() == Ok("Validating"))
                .collect();
            match leaders.as_slice() {
                [one] if cluster.signed_after(*one, fault) => Ok(*one),
                _ => Err(cluster.describe()),
            }
        })
        .must();
    cluster.check_no_double_signing().must();
    one
}

#[test]
fn on_both_etcd_versions_a_crashed_neard_fails_over_and_a_stop_hands_over() {
    for (version, bin) in kuutamod_bench::etcd::tested_versions().must() {
        let (mut cluster, leader, standby) = etcd_pair(Opts::test().mode("hot-swap"), Some(bin), 1);
        // kuutamoctl sees the same lock on etcd.
        let (code, out) = cluster.kuutamoctl(&["active-validator"]).must();
        assert_eq!(code, 0, "{version}: {out}");
        assert!(
            out.starts_with(&cluster.nodes[leader].id),
            "{version}: {out}"
        );
        let pid = cluster.nodes[leader]
            .neard_pid()
            .expect("leader's neard pid");
        let fault = now_ms();
        kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill neard");
        cluster.wait_for_signing(standby, fault, LIMIT).must();
        cluster.wait_state(leader, "Voting", LIMIT).must();
        cluster.check_no_double_signing().must();
        // A graceful stop of the new leader hands back over, released with a record.
        let fault = now_ms();
        cluster.nodes[standby].signal(Signal::SIGTERM);
        let status = cluster.nodes[standby].wait_exit(LIMIT).must();
        assert_eq!(
            status.code(),
            Some(0),
            "{version}: {}",
            cluster.nodes[standby].log_tail(30)
        );
        let first = cluster.wait_for_signing(leader, fault, LIMIT).must();
        cluster.check_stopped_before(standby, first).must();
        cluster.check_no_double_signing().must();
        let t = timing(&Opts::test());
        assert!(
            first - fault < u64::try_from(t.ttl.as_millis()).unwrap_or(u64::MAX),
            "{version}: a released record needs no TTL's wait: {} ms",
            first - fault
        );
    }
}

#[test]
fn a_killed_kuutamod_s_lock_moves_only_after_its_lease_s_ttl() {
    let (mut cluster, leader, standby) = etcd_pair(Opts::test(), None, 1);
    let neard = cluster.nodes[leader]
        .neard_pid()
        .expect("leader's neard pid");
    let fault = now_ms();
    cluster.nodes[leader].signal(Signal::SIGKILL);
    cluster.nodes[leader].wait_exit(LIMIT).must();
    wait::until(Duration::from_secs(2), "neard to die with kuutamod", || {
        if alive(neard) {
            Err("alive")
        } else {
            Ok(())
        }
    });
    let first_new = cluster.wait_for_signing(standby, fault, LIMIT).must();
    cluster.check_no_double_signing().must();
    // The record outlived the lease; the standby counted a TTL from when it first saw the
    // last heartbeat's bytes, however the lease ended.
    let t = timing(&Opts::test());
    let earliest = fault + u64::try_from((t.ttl - t.heartbeat_interval).as_millis()).unwrap_or(0);
    assert!(
        first_new >= earliest,
        "signed {} ms after the kill, before the TTL could pass",
        first_new - fault
    );
}

#[test]
fn an_outsider_deleting_the_record_or_the_holder_demotes_the_leader() {
    let (cluster, leader, _) = etcd_pair(Opts::test().mode("hot-swap"), None, 1);
    let key = cluster.lock_key();
    let fault = now_ms();
    post(
        &cluster,
        "/v3/kv/deleterange",
        serde_json::json!({"key": b64(&key)}),
    );
    demoted_then_one_validator(&cluster, leader, "key_lost", fault);
    // Now the holder key alone (what an expired lease does, done by hand, the lease alive):
    // the lock looks free with the last heartbeat's record. Whichever writes the record first
    // wins: the leader's next heartbeat (which locks an unheld key at its own index, as
    // Consul's `lock` does) or, a TTL after it first saw that record, the standby. Either way
    // one node validates afterwards, the holder names its lease, and nothing is signed twice.
    one_validator_signing_after(&cluster, fault);
    let holder = format!("{key}/holder");
    let fault = now_ms();
    post(
        &cluster,
        "/v3/kv/deleterange",
        serde_json::json!({"key": b64(&holder)}),
    );
    let t = timing(&Opts::test());
    std::thread::sleep(t.ttl * 2);
    let now = one_validator_signing_after(&cluster, fault);
    let r = post(
        &cluster,
        "/v3/kv/range",
        serde_json::json!({"key": b64(&holder)}),
    );
    let lease = r["kvs"][0]["value"].as_str().map(|v| {
        use base64::Engine;
        String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD
                .decode(v)
                .unwrap_or_default(),
        )
        .into_owned()
    });
    let (code, out) = cluster.kuutamoctl(&["active-validator", "--json"]).must();
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["node_id"], cluster.nodes[now].id.as_str(), "{out}");
    assert_eq!(
        lease.as_deref(),
        v["session"].as_str(),
        "the holder names the validator's lease: {out}"
    );
}

#[test]
fn a_compaction_of_all_history_changes_nothing() {
    let (cluster, leader, standby) = etcd_pair(Opts::test(), None, 1);
    let status = post(&cluster, "/v3/maintenance/status", serde_json::json!({}));
    let revision = status["header"]["revision"]
        .as_str()
        .expect("revision")
        .to_string();
    post(
        &cluster,
        "/v3/kv/compaction",
        serde_json::json!({"revision": revision, "physical": true}),
    );
    // Heartbeats go on for several TTLs, the standby's watch past the compaction included.
    let t = timing(&Opts::test());
    let since = now_ms();
    std::thread::sleep(t.ttl * 3);
    assert!(
        cluster.signed_after(leader, since),
        "{}",
        cluster.describe()
    );
    assert_eq!(cluster.nodes[leader].state().as_deref(), Ok("Validating"));
    assert_eq!(cluster.nodes[standby].state().as_deref(), Ok("Voting"));
    let steps = cluster.nodes[leader]
        .metric_sum("kuutamod_step_downs_total")
        .expect("metrics");
    assert_eq!(steps, 0.0, "{}", cluster.nodes[leader].log_tail(30));
    // And a failover after it still works.
    let pid = cluster.nodes[leader].neard_pid().expect("neard");
    let fault = now_ms();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill neard");
    cluster.wait_for_signing(standby, fault, LIMIT).must();
    cluster.check_no_double_signing().must();
}

#[test]
fn the_leader_s_member_killed_and_restarted() {
    let (mut cluster, leader, _) = etcd_pair(Opts::test().mode("hot-swap"), None, 3);
    let fault = now_ms();
    cluster.local_store_mut(leader).kill();
    // Cut off from its member, the leader cannot heartbeat: it steps down at its lease
    // deadline, and the standby (its own member in the quorum) takes over a TTL after the
    // last heartbeat.
    demoted_then_one_validator(&cluster, leader, "lease_expired", fault);
    let m = cluster.local_store_mut(leader);
    m.launch().must();
    m.wait_ready(LIMIT).must();
    // Back with its member, the old leader is a synced standby again.
    cluster
        .until(LIMIT, "the old leader a standby again", || {
            match cluster.nodes[leader].state().as_deref() {
                Ok("Voting") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .must();
    cluster.check_no_double_signing().must();
}

#[test]
fn the_raft_leader_member_killed_then_quorum_lost_and_regained() {
    let (mut cluster, _, _) = etcd_pair(Opts::test().mode("hot-swap"), None, 3);
    // The Raft leader killed: a new one is elected within etcd's election timeout, well
    // inside the lease; whoever's member it was rides it out or fails over cleanly.
    let l = cluster
        .until(LIMIT, "an etcd leader", || cluster.servers.leader())
        .must();
    let fault = now_ms();
    cluster.servers.agents[l].kill();
    one_validator_signing_after(&cluster, fault);
    cluster.servers.agents[l].launch().must();
    cluster.servers.agents[l].wait_ready(LIMIT).must();
    // Two of three members stopped: no quorum, no heartbeat; the leader steps down at its
    // lease deadline and nobody takes the lock until the quorum is back.
    let current = one_validator_signing_after(&cluster, fault);
    let stopped: Vec<usize> = (0..3)
        .filter(|i| *i != cluster.nodes[current].member.unwrap_or(0))
        .collect();
    let fault = now_ms();
    for i in &stopped {
        cluster.servers.agents[*i].signal(Signal::SIGSTOP);
    }
    let t = timing(&Opts::test());
    std::thread::sleep(t.ttl * 2);
    let validating: Vec<usize> = (0..2)
        .filter(|i| cluster.nodes[*i].state().as_deref() == Ok("Validating"))
        .collect();
    assert!(
        validating.is_empty(),
        "validating without a quorum: {}",
        cluster.describe()
    );
    for i in &stopped {
        cluster.servers.agents[*i].signal(Signal::SIGCONT);
    }
    one_validator_signing_after(&cluster, fault);
}

#[test]
fn kuutamoctl_status_switchover_and_pause_on_etcd() {
    let (cluster, leader, standby) = etcd_pair(Opts::test().mode("hot-swap"), None, 1);
    let status = |cluster: &Cluster| -> serde_json::Value {
        let (code, out) = cluster.kuutamoctl(&["status", "--json"]).must();
        assert_eq!(code, 0, "{out}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let v = status(&cluster);
    assert_eq!(v["leader"], cluster.nodes[leader].id.as_str(), "{v}");
    assert_eq!(v["paused"], false, "{v}");
    // The standby's status record reaches etcd: it is ready for a switchover.
    let to = cluster.nodes[standby].id.clone();
    let fault = now_ms();
    let (code, out) = cluster
        .kuutamoctl(&["switchover", "--to", &to, "--wait", "--timeout", "60s"])
        .must();
    assert_eq!(code, 0, "{out}");
    cluster.wait_for_signing(standby, fault, LIMIT).must();
    cluster.check_no_double_signing().must();
    assert_eq!(status(&cluster)["leader"], to.as_str());
    // Pause reaches every node through the control record; resume lifts it.
    cluster.pause(LIMIT).must();
    assert_eq!(status(&cluster)["paused"], true);
    let (code, out) = cluster.kuutamoctl(&["resume"]).must();
    assert_eq!(code, 0, "{out}");
    cluster
        .until(LIMIT, "every node to see the resume", || {
            let paused: Vec<Result<f64, String>> = cluster
                .nodes
                .iter()
                .map(|n| n.metric_sum("kuutamod_paused"))
                .collect();
            if paused.iter().all(|p| p.as_ref() == Ok(&0.0)) {
                Ok(())
            } else {
                Err(paused)
            }
        })
        .must();
}

/// As the bench's 18a on Consul: a snapshot holding a *released* record of an earlier term is
/// restored under a running pair (the store's revisions go back). Both nodes remember a newer
/// record, so neither takes the old one at its word: they report the rewind, the leader's next
/// heartbeat fails, and the lock moves only a TTL after the restored record was first seen.
#[test]
fn a_restored_etcd_snapshot_is_a_rewound_store_and_its_old_record_is_foreign() {
    let mut spec = Spec::new(2, ACCOUNT, Opts::test().mode("hot-swap")).etcd(None);
    spec.servers = 1;
    let mut cluster = spec_cluster(spec);
    cluster.start_all().must();
    let first = cluster.wait_steady(LIMIT).must();
    // A snapshot whose record is released: the standby stops, then the leader hands over to
    // nobody (SIGTERM fences, releases and exits).
    cluster.nodes[1 - first].stop();
    cluster.nodes[first].stop();
    let snap = cluster.dir.join("released.snap");
    let bin = kuutamod_bench::etcd::etcd_bin().must();
    kuutamod_bench::etcd::snapshot_save(&bin, &cluster.servers.url(), &snap).must();
    // The cluster runs on at a newer term, which both nodes see and remember.
    cluster.start_all().must();
    let leader = cluster.wait_steady(LIMIT).must();
    cluster.wait_for_signing(leader, now_ms(), LIMIT).must();
    kuutamod_bench::etcd::snapshot_restore(&mut cluster.servers.agents[0], &snap).must();
    let restored = now_ms();
    cluster
        .until(LIMIT, "a node to report the rewound store", || {
            let n: f64 = cluster
                .nodes
                .iter()
                .filter_map(|n| n.metric_sum("kuutamod_consul_rewinds_total").ok())
                .sum();
            if n >= 1.0 {
                Ok(())
            } else {
                Err(cluster.describe())
            }
        })
        .must();
    // Measured from the key's going live after the restore, not from the first signature after
    // it: the leader of before the restore signs on until its step-down (its lease lost to the
    // restore) is through, and it may be the validator again at the end (CI, 2026-12-07: it
    // signed 49 ms after the restore, then took the lock back a TTL later).
    let (_, activated) = cluster
        .until(
            LIMIT,
            "one node, promoted after the restore, validating and signing",
            || {
                let validating: Vec<usize> = (0..cluster.nodes.len())
                    .filter(|i| cluster.nodes[*i].state().as_deref() == Ok("Validating"))
                    .collect();
                let promoted = |i: usize| {
                    cluster.nodes[i]
                        .first_logged_after("-> Validating", restored)
                        .filter(|at| cluster.signed_after(i, *at))
                };
                match validating.as_slice() {
                    [one] => promoted(*one)
                        .map(|at| (*one, at))
                        .ok_or_else(|| cluster.describe()),
                    _ => Err(cluster.describe()),
                }
            },
        )
        .must();
    cluster.check_no_double_signing().must();
    let t = timing(&Opts::test());
    assert!(
        activated >= restored + u64::try_from(t.ttl.as_millis()).unwrap_or(0),
        "the key went live {} ms after the restore: the restored released record was taken at its word",
        activated - restored
    );
}
