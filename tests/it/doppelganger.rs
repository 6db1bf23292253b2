//! A doppelganger: a neard outside the cluster (no kuutamod) holding our validator key and
//! producing on the same chain. The standby must notice (`kuutamod_doppelganger`), must not
//! promote while it signs, and must recover once it has been silent for
//! `KUUTAMO_DOPPELGANGER_HEIGHTS` heights.

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
/// three TTLs of the test timing, beyond the host-loss takeover of about one.
const HOLD: Duration = Duration::from_secs(9);

/// Starts a neard-sim with the cluster's validator key on the cluster's chain, signing into a
/// ledger of its own.
fn start_doppelganger(cluster: &mut Cluster) -> std::path::PathBuf {
    let home = cluster.dir.join("doppelganger");
    sim_init(&home, ACCOUNT).must();
    std::fs::copy(
        cluster.dir.join("keys/shared/validator_key.json"),
        home.join("validator_key.json"),
    )
    .expect("copy the validator key");
    let ledger = cluster.dir.join("doppelganger-ledger.jsonl");
    let mut cmd = Command::new(neard_sim_bin());
    cmd.arg("--home")
        .arg(&home)
        .arg("run")
        .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--network-addr", &format!("127.0.0.1:{}", free_port())])
        .env("NEARD_SIM_CHAIN", cluster.chain_socket())
        .env("NEARD_SIM_LEDGER", &ledger)
        .env("NEARD_SIM_NODE_ID", "doppelganger")
        .env("NEARD_SIM_BOOT_DELAY_MS", "0");
    cluster.spawn_aux("doppelganger", cmd).must();
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

#[test]
fn a_doppelganger_keeps_the_standby_from_promoting_until_it_is_silent() {
    let spec = Spec::new(2, ACCOUNT, Opts::test());
    let spec = Spec {
        env: vec![("KUUTAMO_DOPPELGANGER_HEIGHTS".into(), HEIGHTS.to_string())],
        ..spec
    };
    let mut cluster = spec_cluster(spec);
    cluster.start_all().must();
    let leader = cluster.wait_steady(LIMIT).must();
    let standby = 1 - leader;
    let ledger = start_doppelganger(&mut cluster);
    wait::until(LIMIT, "the doppelganger to produce", || {
        if produced(&ledger).is_empty() {
            Err(cluster.describe())
        } else {
            Ok(())
        }
    });

    // The leader's host is lost (kuutamod SIGKILLed, its guard kills neard): our account still
    // produces, so the standby must raise the alarm and stay a standby.
    let fault = now_ms();
    cluster.nodes[leader].kill();
    let node = &cluster.nodes[standby];
    wait::until(LIMIT, "the standby's doppelganger alarm", || {
        match node.metric_sum("kuutamod_doppelganger") {
            Ok(1.0) => Ok(()),
            other => Err(format!("{other:?}; {}", cluster.describe())),
        }
    });
    wait::holds(HOLD, "nobody of the cluster validates", || {
        let state = node.state();
        if state.as_deref() == Ok("Validating") || cluster.signed_after(standby, fault) {
            Err(format!(
                "{state:?}, signed {}",
                cluster.signed_after(standby, fault)
            ))
        } else {
            Ok(())
        }
    });
    assert!(
        node.log_text()
            .contains("DOPPELGANGER: our account produced"),
        "{}",
        node.log_tail(30)
    );

    // The doppelganger stops: after HEIGHTS silent heights the standby takes over.
    cluster
        .aux("doppelganger")
        .expect("the doppelganger runs")
        .stop();
    let stopped = now_ms();
    let node = &cluster.nodes[standby];
    let last = produced(&ledger).into_iter().max().expect("it produced");
    let first = cluster.wait_for_signing(standby, stopped, LIMIT).must();
    let first_height = cluster
        .entries()
        .iter()
        .filter(|e| e.node == node.id && e.time_ms == first)
        .map(|e| e.height)
        .min()
        .expect("the first signature");
    assert!(
        first_height > last + HEIGHTS,
        "the standby signed height {first_height}, {HEIGHTS} heights after the doppelganger's last production at {last} not yet passed"
    );
    wait::until(LIMIT, "the alarm to clear", || {
        match node.metric_sum("kuutamod_doppelganger") {
            Ok(0.0) => Ok(()),
            other => Err(other),
        }
    });
    cluster.check_no_double_signing().must();
}
