//! `/status`, JSON-RPC, `/health`, `/metrics` and the fault knobs that change them.

use neard_sim::control::{Control, StatusMode};
use serde_json::Value;

use crate::helper::{get, request, rpc, wait_for, Home, Sim};

/// JSON type names, to compare with neard's `StatusResponse` (docs/neard.md §1.2).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_u64() => "u64",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Asserts every §1.2 field with its type; `key` says whether a validator key is loaded.
fn assert_status_shape(s: &Value, key: bool) {
    let key_kind = if key { "string" } else { "null" };
    let top = [
        ("version", "object"),
        ("chain_id", "string"),
        ("protocol_version", "u64"),
        ("latest_protocol_version", "u64"),
        ("rpc_addr", "string"),
        ("validators", "array"),
        ("sync_info", "object"),
        ("validator_account_id", key_kind),
        ("validator_public_key", key_kind),
        ("node_public_key", "string"),
        ("node_key", key_kind),
        ("uptime_sec", "u64"),
        ("genesis_hash", "string"),
    ];
    for (field, want) in top {
        assert_eq!(kind(&s[field]), want, "status.{field} in {s}");
    }
    assert!(s.get("detailed_debug_status").is_none());
    assert_eq!(s["node_key"], s["validator_public_key"]);
    for field in ["version", "build", "commit", "rustc_version"] {
        assert_eq!(kind(&s["version"][field]), "string", "version.{field}");
    }
    let sync = [
        ("latest_block_hash", "string"),
        ("latest_block_height", "u64"),
        ("latest_state_root", "string"),
        ("latest_block_time", "string"),
        ("syncing", "bool"),
        ("earliest_block_hash", "string"),
        ("earliest_block_height", "u64"),
        ("earliest_block_time", "string"),
        ("epoch_id", "string"),
        ("epoch_start_height", "u64"),
    ];
    for (field, want) in sync {
        assert_eq!(
            kind(&s["sync_info"][field]),
            want,
            "sync_info.{field} in {s}"
        );
    }
    let v0 = &s["validators"][0];
    assert_eq!(
        (kind(&v0["account_id"]), kind(&v0["is_slashed"])),
        ("string", "bool")
    );
    let hash = s["sync_info"]["latest_block_hash"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        bs58::decode(hash).into_vec().map(|b| b.len()).ok(),
        Some(32)
    );
    let pk = s["node_public_key"].as_str().unwrap_or_default();
    assert!(pk.starts_with("ed25519:"), "{pk}");
}

#[test]
fn status_has_every_field_and_parses_with_kuutamods_parser() {
    let mut home = Home::new();
    let sim = Sim::start(&mut home, &[]);
    let (code, body) = get(sim.rpc_port, "/status").expect("GET /status");
    assert_eq!(code, 200);
    let parsed = kuutamod::neard::status::parse(body.as_bytes()).expect("kuutamod parses it");
    assert_eq!(parsed.validator_account_id.as_deref(), Some("pool.near"));
    assert!(!parsed.sync_info.syncing);
    let s: Value = serde_json::from_str(&body).expect("json");
    assert_status_shape(&s, true);
    assert_eq!(s["rpc_addr"], format!("127.0.0.1:{}", home.rpc_port));
    // The same code accepts the real testnet sample (the fixture kuutamod's tests use).
    let fixture = include_str!("../../../tests/fixtures/neard-status-testnet.json");
    kuutamod::neard::status::parse(fixture.as_bytes()).expect("fixture parses");

    // JSON-RPC status carries the same object.
    let r = rpc(sim.rpc_port, "status");
    assert_eq!(r["id"], "dontcare");
    assert_status_shape(&r["result"], true);
    assert_eq!(
        r["result"]["validator_public_key"],
        s["validator_public_key"]
    );

    // The head advances (the private chain of a single validator that holds its key).
    let h0 = parsed.sync_info.latest_block_height;
    wait_for("the head to advance", |seen| {
        let h = sim.status()["sync_info"]["latest_block_height"].as_u64()?;
        *seen = format!("height {h} (started at {h0})");
        (h >= h0 + 3).then_some(())
    });
}

#[test]
fn keyless_status_has_nulls() {
    let mut home = Home::new();
    std::fs::remove_file(home.validator_key()).expect("rm key");
    let sim = Sim::start(&mut home, &[]);
    let (_, body) = get(sim.rpc_port, "/status").expect("GET /status");
    let parsed = kuutamod::neard::status::parse(body.as_bytes()).expect("kuutamod parses it");
    assert_eq!(parsed.validator_account_id, None);
    assert_eq!(parsed.validator_public_key, None);
    assert_status_shape(&serde_json::from_str(&body).expect("json"), false);
    assert_eq!(sim.metric("near_is_validator"), 0.0);
}

#[test]
fn health_follows_sync_and_the_knobs() {
    let mut home = Home::new();
    // A short max delay so a stalled head is stale after 10 × 100 ms (and an endorsement
    // delay below half of it, as neard requires of its skip delays).
    home.edit_config(|c| {
        c["consensus"]["min_block_production_delay"] =
            serde_json::json!({"secs": 0, "nanos": 30_000_000});
        c["consensus"]["max_block_production_delay"] =
            serde_json::json!({"secs": 0, "nanos": 100_000_000});
    });
    let sim = Sim::start(&mut home, &[("NEARD_SIM_SYNC_DELAY_MS", "1500")]);
    let port = sim.rpc_port;

    // Syncing right after boot: 503 with an empty body, status says syncing.
    let (code, body) = get(port, "/health").expect("GET /health");
    assert_eq!((code, body.as_str()), (503, ""), "health while syncing");
    assert_eq!(sim.status()["sync_info"]["syncing"], true);
    assert_eq!(sim.metric("near_sync_status"), 4.0);
    let r = rpc(port, "health");
    assert_eq!(r["error"]["cause"]["name"], "NODE_IS_SYNCING", "{r}");

    // Synced: 200 null, JSON-RPC result null.
    wait_for("/health to turn 200", |seen| {
        let got = get(port, "/health").ok()?;
        *seen = format!("{got:?}");
        (got == (200, "null".to_owned())).then_some(())
    });
    assert_eq!(sim.status()["sync_info"]["syncing"], false);
    let r = rpc(port, "health");
    assert!(r["result"].is_null() && r.get("error").is_none(), "{r}");
    let (code, body) = request(port, "HEAD", "/health", "").expect("HEAD /health");
    assert_eq!((code, body.as_str()), (200, ""));

    // Forced syncing.
    home.control(&Control {
        force_syncing: true,
        ..Control::default()
    });
    wait_for("forced syncing to show", |seen| {
        let s = sim.status();
        *seen = s["sync_info"].to_string();
        (s["sync_info"]["syncing"] == true).then_some(())
    });
    assert_eq!(get(port, "/health").expect("health").0, 503);

    // A stalled chain: status keeps answering, the head stops, health fails once stale.
    home.control(&Control {
        stall: true,
        ..Control::default()
    });
    // /health, /status and JSON-RPC health are read one after the other: a 503 read just
    // before the knobs changed is the forced syncing's, so wait until the RPC says why.
    wait_for("/health to fail on a stalled head", |seen| {
        let got = get(port, "/health").ok()?;
        let why = rpc(port, "health")["error"]["cause"]["name"].clone();
        *seen = format!("{got:?}, {why}");
        (got.0 == 503 && why == "NO_NEW_BLOCKS" && sim.status()["sync_info"]["syncing"] == false)
            .then_some(())
    });
    let h1 = sim.status()["sync_info"]["latest_block_height"].clone();
    let r = rpc(port, "health");
    assert_eq!(r["error"]["cause"]["name"], "NO_NEW_BLOCKS", "{r}");
    assert_eq!(sim.status()["sync_info"]["latest_block_height"], h1);

    // Freeze: nothing answers; thawing brings it back.
    home.control(&Control {
        freeze: true,
        ..Control::default()
    });
    wait_for("a frozen simulator to stop answering", |seen| {
        let got = get(port, "/status");
        *seen = format!("{got:?}");
        got.is_err().then_some(())
    });
    home.control(&Control::default());
    wait_for("a thawed simulator to be healthy again", |seen| {
        let got = get(port, "/health").ok()?;
        *seen = format!("{got:?}");
        (got.0 == 200).then_some(())
    });
}

#[test]
fn status_knob_hangs_or_fails() {
    let mut home = Home::new();
    let sim = Sim::start(&mut home, &[]);
    home.control(&Control {
        status: StatusMode::Error503,
        ..Control::default()
    });
    wait_for("/status to answer 503", |seen| {
        let got = get(sim.rpc_port, "/status").ok()?;
        *seen = format!("{got:?}");
        (got == (503, String::new())).then_some(())
    });
    assert!(rpc(sim.rpc_port, "status")["error"].is_object());
    home.control(&Control {
        status: StatusMode::Hang,
        ..Control::default()
    });
    wait_for("/status to hang", |seen| {
        let got = get(sim.rpc_port, "/status");
        *seen = format!("{got:?}");
        got.is_err().then_some(())
    });
    // /health is not affected by the status knob.
    assert_eq!(get(sim.rpc_port, "/health").expect("health").0, 200);
}

#[test]
fn metrics_have_the_checklist_names() {
    let mut home = Home::new();
    let sim = Sim::start(&mut home, &[]);
    let (code, body) = get(sim.rpc_port, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for name in [
        "near_block_height_head",
        "near_sync_status",
        "near_is_validator",
        "near_block_produced_total",
        "near_chunk_produced_total",
        "near_config_reloads_total",
        "near_config_reload_timestamp_seconds",
        "near_config_correct",
    ] {
        assert!(
            crate::helper::metric_value(&body, name).is_some(),
            "{name} missing:\n{body}"
        );
    }
    assert_eq!(sim.metric("near_config_reloads_total"), 1.0);
    assert_eq!(sim.metric("near_config_correct"), 1.0);
    assert_eq!(sim.metric("near_is_validator"), 1.0);
    wait_for("blocks to be produced", |seen| {
        let n = sim.metric("near_block_produced_total");
        *seen = n.to_string();
        (n >= 2.0).then_some(())
    });
    // The network listener accepts connections.
    std::net::TcpStream::connect(("127.0.0.1", home.net_port)).expect("network.addr accepts");
}
