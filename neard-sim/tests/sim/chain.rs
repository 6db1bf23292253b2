//! A chain process shared by several simulator processes: stake and stalls, key holders,
//! partitions and lag, the chain log, and the RPCs that read the chain.

use neard_sim::blocks::ApprovalInner;
use neard_sim::control::Control;
use neard_sim::ledger::{self, SignedKind};
use serde_json::json;

use crate::helper::{get, labelled_metric, ledger_entries, rpc_with, wait_for, Chain, Home, Sim};

/// Environment of a node on `chain` writing `ledger` as `id`.
fn node_env(chain: &Chain, ledger: &std::path::Path, id: &str) -> Vec<(String, String)> {
    vec![
        (
            "NEARD_SIM_CHAIN".into(),
            chain.socket().display().to_string(),
        ),
        ("NEARD_SIM_LEDGER".into(), ledger.display().to_string()),
        ("NEARD_SIM_NODE_ID".into(), id.into()),
    ]
}

fn start(home: &mut Home, env: &[(String, String)]) -> Sim {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Sim::start(home, &env)
}

/// Waits until the node's head is at least `h`; returns it.
fn wait_head(sim: &Sim, what: &str, h: u64) -> u64 {
    wait_for(what, |seen| {
        let got = sim.head();
        *seen = format!("head {got}");
        (got >= h).then_some(got)
    })
}

/// Waits until /health answers `code`.
fn wait_health(sim: &Sim, code: u16) {
    wait_for(&format!("/health {code}"), |seen| {
        let got = get(sim.rpc_port, "/health");
        *seen = format!("{got:?}");
        got.ok().filter(|(c, _)| *c == code).map(|_| ())
    });
}

#[test]
fn a_two_validator_chain_stalls_without_ours_and_resumes_when_a_key_holder_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = Chain::start(dir.path(), &["--ours", "pool.near", "--validator", "v1"]);
    let ledger_path = dir.path().join("ledger.jsonl");

    // A keyless node: the chain cannot move (v1 alone is half the stake), but its doomslug
    // timers and largest target height do.
    let mut a_home = Home::new();
    std::fs::remove_file(a_home.validator_key()).expect("rm key");
    let a = start(&mut a_home, &node_env(&chain, &ledger_path, "a"));
    wait_for("the keyless node's largest target to advance", |seen| {
        let t = a.metric("near_largest_target_height");
        *seen = format!("target {t}, head {}", a.head());
        (t >= 3.0).then_some(())
    });
    assert_eq!(a.head(), 0, "no blocks without ours");
    assert_eq!(a.status()["sync_info"]["syncing"], false);

    // A key holder joins: blocks.
    let mut b_home = Home::new();
    let b = start(&mut b_home, &node_env(&chain, &ledger_path, "b"));
    let h1 = wait_head(&a, "the chain to move with a key holder", 10);

    // The key holder dies: every node's head stays, /health turns 503 after 10 x 200 ms.
    drop(b);
    wait_health(&a, 503);
    let stalled = a.head();
    assert!(stalled >= h1);
    assert_eq!(
        a.status()["sync_info"]["latest_block_height"],
        stalled,
        "status keeps answering with the frozen head"
    );

    // It comes back: the chain resumes.
    let _b = start(&mut b_home, &node_env(&chain, &ledger_path, "b"));
    wait_head(&a, "the chain to resume", stalled + 5);
    wait_health(&a, 200);
    let r = ledger::analyze(&ledger_entries(&ledger_path), "pool.near");
    assert!(r.no_conflicts(), "{:?}", r.conflicting);
}

#[test]
fn four_validators_survive_one_offline_and_stall_with_two() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = Chain::start(
        dir.path(),
        &[
            "--ours",
            "pool.near",
            "--validator",
            "v1",
            "--validator",
            "v2",
            "--validator",
            "v3",
        ],
    );
    let mut home = Home::new();
    let sim = start(
        &mut home,
        &node_env(&chain, &dir.path().join("l.jsonl"), "n"),
    );
    let h0 = wait_head(&sim, "blocks", 5);

    chain.offline(&["v3"]);
    wait_for("v3 to be reported offline", |seen| {
        *seen = "no log line yet".into();
        chain.stderr_text().contains("\"v3\"").then_some(())
    });
    let h1 = wait_head(&sim, "blocks with v3 offline", h0 + 15);
    // v3's heights were skipped, the others produced.
    let log = chain.log();
    let skipped: Vec<_> = log
        .iter()
        .filter(|l| l.height > h0 && l.height <= h1 && !l.produced)
        .collect();
    assert!(
        skipped.iter().all(|l| l.block_producer == "v3"),
        "{skipped:?}"
    );

    chain.offline(&["v2", "v3"]);
    wait_health(&sim, 503);
    let stalled = sim.head();
    chain.offline(&[]);
    wait_head(&sim, "the chain to resume", stalled + 5);
}

#[test]
fn two_processes_holding_one_key_sign_conflicting_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = Chain::start(
        dir.path(),
        &[
            "--ours",
            "pool.near:1",
            "--validator",
            "v1:1",
            "--validator",
            "v2:1",
            "--validator",
            "v3:1",
        ],
    );
    let ledger_path = dir.path().join("ledger.jsonl");
    let mut a_home = Home::new();
    let mut b_home = Home::new();
    std::fs::copy(a_home.validator_key(), b_home.validator_key()).expect("copy key");
    let _a = start(&mut a_home, &node_env(&chain, &ledger_path, "a"));
    let b = start(&mut b_home, &node_env(&chain, &ledger_path, "b"));
    wait_head(&b, "blocks", 5);

    // Same view: their approvals are identical (duplicates); their chunks are not.
    wait_for("identical approvals from both", |seen| {
        let r = ledger::analyze(&ledger_entries(&ledger_path), "pool.near");
        *seen = format!("{} duplicates", r.duplicates.len());
        r.duplicates
            .iter()
            .any(|d| d.slot.kind == SignedKind::Approval)
            .then_some(())
    });

    // b's view of the chain starts lagging by 600 ms: it skips from its stale head while a
    // endorses the blocks it sees (the case a per-height oracle cannot tell from a duplicate).
    b_home.control(&Control {
        lag_ms: 600,
        ..Control::default()
    });
    let r = wait_for("a skip and an endorsement for one target", |seen| {
        let r = ledger::analyze(&ledger_entries(&ledger_path), "pool.near");
        *seen = format!("{} conflicting", r.conflicting.len());
        r.conflicting
            .iter()
            .any(|c| {
                c.slot.kind == SignedKind::Approval
                    && c.nodes.len() == 2
                    && c.signatures
                        .iter()
                        .any(|e| matches!(e.approval, Some(ApprovalInner::Skip(_))))
                    && c.signatures
                        .iter()
                        .any(|e| matches!(e.approval, Some(ApprovalInner::Endorsement(_))))
            })
            .then_some(r)
    });
    assert!(!r.is_safe(), "the strict bar sees two signers too");
}

#[test]
fn a_partitioned_node_keeps_signing_from_its_stale_head_and_rejoins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = Chain::start(
        dir.path(),
        &[
            "--ours",
            "pool.near",
            "--validator",
            "v1",
            "--validator",
            "v2",
            "--validator",
            "v3",
        ],
    );
    let ledger_path = dir.path().join("ledger.jsonl");
    let mut home = Home::new();
    let sim = start(&mut home, &node_env(&chain, &ledger_path, "n"));
    wait_head(&sim, "blocks", 5);
    home.control(&Control {
        network_offline: true,
        ..Control::default()
    });
    let cut = wait_for("the node to stop following the chain", |seen| {
        let (h1, c1) = (sim.head(), chain.head());
        *seen = format!("node {h1}, chain {c1}");
        (c1 > h1 + 5).then_some(h1)
    });
    // It still signs: skips from its stale head, growing targets.
    wait_for("skips from the stale head", |seen| {
        let skips = ledger_entries(&ledger_path)
            .into_iter()
            .filter(|e| e.approval == Some(ApprovalInner::Skip(cut)))
            .count();
        *seen = format!("{skips} skips from {cut}");
        (skips >= 3).then_some(())
    });
    home.control(&Control::default());
    let c = chain.head();
    wait_head(&sim, "the node to rejoin at the chain's head", c);
}

#[test]
fn metrics_rpcs_and_missed_assigned_blocks_and_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = Chain::start(
        dir.path(),
        &[
            "--ours",
            "pool.near",
            "--validator",
            "v1",
            "--validator",
            "v2",
            "--validator",
            "v3",
            "--shards",
            "2",
            "--epoch-length",
            "100000",
        ],
    );
    let mut home = Home::new();
    let sim = start(
        &mut home,
        &node_env(&chain, &dir.path().join("l.jsonl"), "n"),
    );
    wait_for("blocks and chunks produced by this node", |seen| {
        let m = sim.metrics();
        let b = labelled_metric(&m, "near_block_produced_total").unwrap_or(0.0);
        let c = labelled_metric(&m, "near_chunk_produced_total").unwrap_or(0.0);
        *seen = format!("{b} blocks, {c} chunks");
        (b >= 2.0 && c >= 2.0).then_some(())
    });
    let m = sim.metrics();
    for v in ["pool.near", "v1", "v2", "v3"] {
        for name in [
            "near_validators_blocks_produced",
            "near_validators_blocks_expected",
            "near_validators_chunks_produced",
            "near_validators_chunks_expected",
        ] {
            let key = format!("{name}{{account_id=\"{v}\"}}");
            assert!(labelled_metric(&m, &key).is_some(), "{key} missing:\n{m}");
        }
    }
    let target = labelled_metric(&m, "near_largest_target_height").expect("target");
    assert!(target >= labelled_metric(&m, "near_block_height_head").expect("head"));
    assert!(labelled_metric(&m, "near_final_block_height").is_some());

    // Maintenance windows: ranges [start, end) from the head to the end of the epoch in which
    // pool.near produces nothing; a non-validator gets the rest of the epoch.
    let head = sim.head();
    let w = rpc_with(
        sim.rpc_port,
        "EXPERIMENTAL_maintenance_windows",
        json!({"account_id": "pool.near"}),
    );
    let ranges = w["result"].as_array().expect("result array").clone();
    assert!(!ranges.is_empty(), "{w}");
    for r in &ranges {
        let (s, e) = (
            r["start"].as_u64().expect("start"),
            r["end"].as_u64().expect("end"),
        );
        assert!(s >= head && s < e && e <= 100_001, "{r}");
    }
    let other = rpc_with(
        sim.rpc_port,
        "maintenance_windows",
        json!({"account_id": "nobody"}),
    );
    assert_eq!(other["result"].as_array().map(Vec::len), Some(1), "{other}");
    assert_eq!(other["result"][0]["end"], 100_001);

    let v = rpc_with(sim.rpc_port, "validators", json!([null]));
    let current = v["result"]["current_validators"]
        .as_array()
        .expect("validators")
        .clone();
    assert_eq!(current.len(), 4, "{v}");
    assert!(current
        .iter()
        .all(|c| c["num_expected_blocks"].is_u64() && c["stake"].is_string()));

    // The node dies: its heights and chunks are missed from then on.
    let t_kill = neard_sim::chain::now_ms();
    drop(sim);
    let missed = wait_for("missed blocks and chunks of pool.near", |seen| {
        let m =
            neard_sim::chainlog::missed_assigned(&chain.log(), "pool.near", t_kill + 300, u64::MAX);
        *seen = format!("{m:?}");
        (m.blocks_missed >= 2 && m.chunks_missed >= 2).then_some(m)
    });
    assert_eq!(missed.blocks_missed, missed.blocks_expected, "{missed:?}");
    assert_eq!(missed.chunks_missed, missed.chunks_expected, "{missed:?}");
    let before = neard_sim::chainlog::missed_assigned(&chain.log(), "pool.near", 0, t_kill - 500);
    assert!(
        before.blocks_expected > 0 && before.blocks_missed == 0,
        "{before:?}"
    );
}
