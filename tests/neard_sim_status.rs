//! kuutamod's `/status` parser against the neard simulator's `StatusResponse`.
//!
//! The simulator's own tests run its binary and parse the live body with this parser; this
//! test pins the same contract from kuutamod's side without processes: whatever the
//! simulator can report (with or without a key, syncing or not) parses, and the values
//! kuutamod decides on come through unchanged.

use neard_sim::status::{response, Snapshot};

fn snapshot(validator: Option<(&str, &str)>, syncing: bool) -> Snapshot {
    Snapshot {
        chain_id: "localnet".into(),
        genesis_hash: neard_sim::chain::hash("genesis", 0),
        rpc_addr: Some("127.0.0.1:3030".into()),
        validators: vec!["pool.near".into()],
        validator: validator.map(|(a, k)| (a.to_owned(), k.to_owned())),
        node_public_key: "ed25519:8Y7rN3ZfTnXg6sa3sK5q6WXBhmXJ7eAgmcrE4e1r9x4e".into(),
        head_height: 123_456,
        block_time_ms: 100,
        earliest_height: 123_000,
        syncing,
        uptime_sec: 42,
    }
}

#[test]
fn a_validating_simulator_status_parses() {
    let key = "ed25519:6DSjZ8mvsRZDvFqFxo8tCKePG96omXW7eVYVSySmDk8e";
    let body = response(&snapshot(Some(("pool.near", key)), false)).to_string();
    let s = kuutamod::neard::status::parse(body.as_bytes()).expect("parses");
    assert_eq!(s.sync_info.latest_block_height, 123_456);
    assert!(!s.sync_info.syncing);
    assert_eq!(s.validator_account_id.as_deref(), Some("pool.near"));
    assert_eq!(s.validator_public_key.as_deref(), Some(key));
}

#[test]
fn a_keyless_syncing_simulator_status_parses() {
    let body = response(&snapshot(None, true)).to_string();
    let s = kuutamod::neard::status::parse(body.as_bytes()).expect("parses");
    assert!(s.sync_info.syncing);
    assert_eq!(s.validator_account_id, None);
    assert_eq!(s.validator_public_key, None);
}
