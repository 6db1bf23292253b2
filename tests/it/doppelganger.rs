//! A doppelganger: a neard outside the cluster (no kuutamod) holding our validator key and
//! producing on the same chain. The standbys must notice (`kuutamod_doppelganger`), must not
//! promote while it signs, and must recover once it has been silent for
//! `KUUTAMO_DOPPELGANGER_HEIGHTS` heights; a validating leader is alarmed and keeps validating.

use std::process::Command;
use std::time::Duration;

use neard_sim::ledger::SignedKind;

use crate::failover::LIMIT;
use crate::helper::{free_port, neard_sim_bin, now_ms, spec_cluster, wait, Must, Opts, Spec};
use crate::helper::{Cluster, ACCOUNT};
use kuutamod_bench::cluster::sim_init;

/// Silent heights before the alarm clears (set explicitly, checked against the chain).
const HEIGHTS: u64 = 30;

/// How long the cluster is watched while the doppelganger signs and nobody of ours may:
/// three TTLs of the test timing (a fresh key activates a TTL after it is acquired).
const HOLD: Duration = Duration::from_secs(9);

/// Starts a neard-sim with the cluster's validator key on the cluster's chain, signing into a
/// ledger of its own.
fn start_doppelganger(cluster: &mut Cluster, name: &str) -> std::path::PathBuf {
    let home = cluster.dir.join(name);
    sim_init(&home, ACCOUNT).must();
    std::fs::copy(
        cluster.dir.join("keys/shared/validator_key.json"),
        home.join("validator_key.json"),
    )
    .expect("copy the validator key");
    let ledger = cluster.dir.join(format!("{name}-ledger.jsonl"));
    let mut cmd = Command::new(neard_sim_bin());
    cmd.arg("--home")
        .arg(&home)
        .arg("run")
        .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--network-addr", &format!("127.0.0.1:{}", free_port())])
        .env("NEARD_SIM_CHAIN", cluster.chain_socket())
        .env("NEARD_SIM_LEDGER", &ledger)
        .env("NEARD_SIM_NODE_ID", name)
        .env("NEARD_SIM_BOOT_DELAY_MS", "0");
    cluster.spawn_aux(name, cmd).must();
    ledger
}

/// Heights of the blocks and chunks the doppelganger signed.
fn produced(ledger: &std::path::Path) -> Vec<u64> {
    neard_sim::ledger::read(ledger)
        .unwrap_or_default()
        .iter()
        .filter(|e| matches!(e.kind_or_block(), SignedKind::Block | SignedKind::Chunk))
        .map(|e| e.height)
        .collect()
}

/// The value of `kuutamod_doppelganger` on node `i`.
fn alarm(cluster: &Cluster, i: usize) -> Result<f64, String> {
    cluster.nodes[i].metric_sum("kuutamod_doppelganger")
}

#[test]
fn a_doppelganger_keeps_the_standbys_from_promoting_until_it_is_silent() {
    doppelganger(Spec::new(2, ACCOUNT, Opts::test()));
}

/// The same with the lock in etcd (one member): the doppelganger check reads the chain and the
/// nodes' records, whichever store carries them.
#[test]
fn on_etcd_a_doppelganger_keeps_the_standbys_from_promoting_until_it_is_silent() {
    doppelganger(Spec::new(2, ACCOUNT, Opts::test()).etcd(None));
}

fn doppelganger(spec: Spec) {
    let spec = Spec {
        env: vec![("KUUTAMO_DOPPELGANGER_HEIGHTS".into(), HEIGHTS.to_string())],
        ..spec
    };
    let mut cluster = spec_cluster(spec);
    // Our key already signs on the chain, outside the cluster, when the cluster starts: the
    // lock is free, and nobody of ours validates.
    let ledger = start_doppelganger(&mut cluster, "doppelganger");
    wait::until(LIMIT, "the doppelganger to produce", || {
        if produced(&ledger).is_empty() {
            Err(cluster.describe())
        } else {
            Ok(())
        }
    });
    cluster.start_all().must();
    let started = now_ms();
    wait::until(LIMIT, "both standbys' doppelganger alarm", || {
        let alarms = [alarm(&cluster, 0), alarm(&cluster, 1)];
        if alarms.iter().all(|a| a.as_ref() == Ok(&1.0)) {
            Ok(())
        } else {
            Err(format!("{alarms:?}; {}", cluster.describe()))
        }
    });
    wait::holds(HOLD, "nobody of the cluster validates", || {
        let states = cluster.states();
        let signed = !cluster.entries().is_empty();
        if states.iter().any(|s| s.as_deref() == Ok("Validating")) || signed {
            Err(format!("{states:?}, signed {signed}"))
        } else {
            Ok(())
        }
    });
    for n in &cluster.nodes {
        assert!(
            n.log_text().contains("DOPPELGANGER: our account produced"),
            "{}",
            n.log_tail(30)
        );
    }

    // The doppelganger stops: after HEIGHTS silent heights a node of ours takes over.
    cluster
        .aux("doppelganger")
        .expect("the doppelganger runs")
        .stop();
    let last = produced(&ledger).into_iter().max().expect("it produced");
    let leader = cluster.wait_for_leader(LIMIT).must();
    let first = cluster.wait_for_signing(leader, started, LIMIT).must();
    let first_height = cluster
        .entries()
        .iter()
        .filter(|e| e.node == cluster.nodes[leader].id && e.time_ms == first)
        .map(|e| e.height)
        .min()
        .expect("the first signature");
    assert!(
        first_height > last + HEIGHTS,
        "the leader signed height {first_height}, {HEIGHTS} heights after the doppelganger's last production at {last} not yet passed"
    );
    wait::until(LIMIT, "the alarms to clear", || {
        let alarms = [alarm(&cluster, 0), alarm(&cluster, 1)];
        if alarms.iter().all(|a| a.as_ref() == Ok(&0.0)) {
            Ok(())
        } else {
            Err(alarms)
        }
    });
    cluster.check_no_double_signing().must();

    // It comes back while our leader validates: the leader is alarmed (our account outgrows
    // its own neard's production) and keeps validating, as documented; the standby leaves
    // the lock alone.
    let again = start_doppelganger(&mut cluster, "doppelganger-again");
    wait::until(LIMIT, "the leader's doppelganger alarm", || {
        match (alarm(&cluster, leader), cluster.nodes[leader].state()) {
            (Ok(1.0), Ok(s)) if s == "Validating" => Ok(()),
            other => Err(format!(
                "{other:?}, doppelganger produced {}",
                produced(&again).len()
            )),
        }
    });
    assert_eq!(
        cluster.nodes[1 - leader].state().as_deref(),
        Ok("Voting"),
        "{}",
        cluster.describe()
    );
}
