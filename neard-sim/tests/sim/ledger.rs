//! The ledger the simulator writes, and the oracle's verdict on one real process.

use neard_sim::ledger::{self, SignedKind};
use nix::sys::signal::Signal;

use crate::helper::{ledger_entries, wait_for, Home, Sim};

#[test]
fn ledger_lines_only_while_validating() {
    let mut home = Home::new();
    let ledger_path = home.ledger();
    let ledger_env = ledger_path.to_str().expect("utf-8").to_owned();
    let sim = Sim::start(
        &mut home,
        &[
            ("NEARD_SIM_LEDGER", &ledger_env),
            ("NEARD_SIM_NODE_ID", "a"),
            ("NEARD_SIM_SYNC_DELAY_MS", "500"),
        ],
    );
    // Nothing is signed while syncing.
    let synced_at = wait_for("the node to finish syncing", |seen| {
        let s = sim.status();
        *seen = s["sync_info"].to_string();
        if s["sync_info"]["syncing"] == true {
            assert!(
                ledger_entries(&ledger_path).is_empty(),
                "signed while syncing"
            );
            return None;
        }
        Some(neard_sim::chain::now_ms())
    });
    wait_for("five signed heights", |seen| {
        let n = ledger_entries(&ledger_path).len();
        *seen = format!("{n} lines");
        (n >= 5).then_some(())
    });

    // Drop the key; once status shows no key, no further line may appear.
    std::fs::remove_file(home.validator_key()).expect("rm key");
    sim.signal(Signal::SIGHUP);
    wait_for("the key to be dropped", |seen| {
        let s = sim.status();
        *seen = s["validator_account_id"].to_string();
        s["validator_account_id"].is_null().then_some(())
    });
    let dropped_at = neard_sim::chain::now_ms();
    let lines_at_drop = ledger_entries(&ledger_path).len();
    // Its chain (a single validator) stalls without the key, but doomslug's timers keep
    // running without a key: five more targets pass unsigned.
    let t0 = sim.metric("near_largest_target_height");
    wait_for("five more doomslug targets without a key", |seen| {
        let t = sim.metric("near_largest_target_height");
        *seen = format!("largest target {t} (was {t0})");
        (t >= t0 + 5.0).then_some(())
    });
    let entries = ledger_entries(&ledger_path);
    assert_eq!(
        entries.len(),
        lines_at_drop,
        "signed after the key was dropped"
    );
    assert!(entries
        .iter()
        .all(|e| e.time_ms >= synced_at.saturating_sub(200)));
    assert!(entries.iter().all(|e| e.time_ms <= dropped_at));

    let report = ledger::analyze(&entries, "pool.near");
    assert!(report.is_safe());
    assert_eq!(report.intervals.len(), 1);
    assert_eq!(
        report.intervals["a"].len(),
        1,
        "one run: {:?}",
        report.intervals
    );
    assert!(report.gaps.is_empty(), "{:?}", report.gaps);
    assert!(entries
        .iter()
        .all(|e| e.node == "a" && e.account == "pool.near"));
}

#[test]
fn every_kind_is_in_the_ledger_with_its_content() {
    let mut home = Home::new();
    let ledger_path = home.ledger();
    let ledger_env = ledger_path.to_str().expect("utf-8").to_owned();
    let _sim = Sim::start(
        &mut home,
        &[
            ("NEARD_SIM_LEDGER", &ledger_env),
            ("NEARD_SIM_NODE_ID", "a"),
        ],
    );
    let entries = wait_for("blocks, chunks and approvals in the ledger", |seen| {
        let e = ledger_entries(&ledger_path);
        let count = |k| e.iter().filter(|x| x.kind == Some(k)).count();
        let (b, c, a) = (
            count(SignedKind::Block),
            count(SignedKind::Chunk),
            count(SignedKind::Approval),
        );
        *seen = format!("{b} blocks, {c} chunks, {a} approvals");
        (b >= 3 && c >= 3 && a >= 3).then_some(e)
    });
    for e in &entries {
        assert!(e.content.is_some() && e.parent_hash.is_some(), "{e:?}");
        match e.kind {
            Some(SignedKind::Approval) => assert!(e.approval.is_some(), "{e:?}"),
            Some(SignedKind::Chunk) => {
                assert_eq!(e.shard, Some(0));
                assert_eq!(e.parent_height.map(|p| p + 1), Some(e.height));
            }
            _ => {}
        }
    }
    let r = ledger::analyze(&entries, "pool.near");
    assert!(r.no_conflicts() && r.is_safe() && r.duplicates.is_empty());
}
