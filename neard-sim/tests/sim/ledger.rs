//! The ledger the simulator writes, and the oracle's verdict on real processes.

use neard_sim::ledger;
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
    let h0 = sim.status()["sync_info"]["latest_block_height"]
        .as_u64()
        .expect("height");
    wait_for("five more heights", |seen| {
        let h = sim.status()["sync_info"]["latest_block_height"].as_u64()?;
        *seen = format!("height {h}");
        (h >= h0 + 5).then_some(())
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
fn two_processes_with_one_key_are_caught_double_signing() {
    let mut a_home = Home::new();
    let mut b_home = Home::new();
    std::fs::copy(a_home.validator_key(), b_home.validator_key()).expect("copy key");
    let ledger_path = a_home.ledger();
    let ledger_env = ledger_path.to_str().expect("utf-8").to_owned();
    let _a = Sim::start(
        &mut a_home,
        &[
            ("NEARD_SIM_LEDGER", &ledger_env),
            ("NEARD_SIM_NODE_ID", "a"),
        ],
    );
    let _b = Sim::start(
        &mut b_home,
        &[
            ("NEARD_SIM_LEDGER", &ledger_env),
            ("NEARD_SIM_NODE_ID", "b"),
        ],
    );
    let report = wait_for("both nodes to sign the same heights", |seen| {
        let r = ledger::analyze(&ledger_entries(&ledger_path), "pool.near");
        *seen = format!(
            "{} double-signed heights, intervals {:?}",
            r.double_signed.len(),
            r.intervals
        );
        (r.double_signed.len() >= 3).then_some(r)
    });
    assert!(!report.is_safe());
    for nodes in report.double_signed.values() {
        assert_eq!(
            nodes.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }
    assert!(report.first_signed_after(Some("b"), 0).is_some());
}
