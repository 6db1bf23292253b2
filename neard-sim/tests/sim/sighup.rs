//! SIGHUP key hot swap (neard >= 2.3 semantics), SIGTERM, and the signal knobs.

use neard_sim::control::Control;
use neard_sim::keys::KeyFile;
use nix::sys::signal::Signal;

use crate::helper::{wait_for, Home, Sim};

/// Waits until /status reports `account` as the validator (or no validator for `None`).
fn wait_validator(sim: &Sim, account: Option<&str>) {
    wait_for(
        &format!("validator_account_id to become {account:?}"),
        |seen| {
            let s = sim.status();
            *seen = s["validator_account_id"].to_string();
            (s["validator_account_id"].as_str() == account).then_some(())
        },
    );
}

/// Waits until the reload counter reaches `n`.
fn wait_reloads(sim: &Sim, n: f64) {
    wait_for(&format!("near_config_reloads_total to reach {n}"), |seen| {
        let got = sim.metric("near_config_reloads_total");
        *seen = got.to_string();
        (got == n).then_some(())
    });
}

#[test]
fn sighup_adds_replaces_keeps_and_drops_the_key() {
    let mut home = Home::new();
    std::fs::remove_file(home.validator_key()).expect("rm key");
    let sim = Sim::start(&mut home, &[]);
    wait_validator(&sim, None);
    assert_eq!(sim.metric("near_config_reloads_total"), 1.0);

    // Add: a valid key appears, SIGHUP, the node validates with it.
    let key = KeyFile::generate("pool.near").expect("key");
    key.write(&home.validator_key()).expect("write key");
    sim.signal(Signal::SIGHUP);
    wait_validator(&sim, Some("pool.near"));
    assert_eq!(
        sim.status()["validator_public_key"],
        key.public_key.as_str()
    );
    wait_reloads(&sim, 2.0);
    assert_eq!(sim.metric("near_config_correct"), 1.0);
    assert_eq!(sim.metric("near_is_validator"), 1.0);

    // Invalid: the old key stays, config marked incorrect, counter unchanged.
    std::fs::write(
        home.validator_key(),
        "{\"account_id\": \"pool.near\", \"secret_key\": \"ed25519:xx\"}",
    )
    .expect("write garbage");
    sim.signal(Signal::SIGHUP);
    wait_for("near_config_correct to drop to 0", |seen| {
        let got = sim.metric("near_config_correct");
        *seen = got.to_string();
        (got == 0.0).then_some(())
    });
    assert_eq!(sim.metric("near_config_reloads_total"), 2.0);
    assert_eq!(
        sim.status()["validator_public_key"],
        key.public_key.as_str()
    );
    assert!(sim
        .stderr_text()
        .contains("Dynamically updatable configs are not valid"));

    // An unparsable config.json is just as invalid.
    key.write(&home.validator_key()).expect("rewrite key");
    let config = home.path().join("config.json");
    let good_config = std::fs::read(&config).expect("config");
    std::fs::write(&config, "{ nope").expect("break config");
    sim.signal(Signal::SIGHUP);
    // Restore only once the reload has read the broken file, which the log shows.
    wait_for("the broken config.json to be reported", |seen| {
        let n = sim.stderr_text().matches("not valid").count();
        *seen = format!("{n} reports");
        (n >= 2).then_some(())
    });
    std::fs::write(&config, good_config).expect("restore config");
    std::fs::remove_file(home.validator_key()).expect("rm key");
    assert_eq!(sim.status()["validator_account_id"], "pool.near");
    assert_eq!(sim.metric("near_config_reloads_total"), 2.0);

    // Remove: the key file is gone, SIGHUP drops the key and counts as a success.
    sim.signal(Signal::SIGHUP);
    wait_validator(&sim, None);
    wait_reloads(&sim, 3.0);
    assert_eq!(sim.metric("near_config_correct"), 1.0);
    assert_eq!(sim.status()["node_key"], serde_json::Value::Null);
    let log = sim.stderr_text();
    assert!(log.contains("Hot loading validator key"), "{log}");
    assert!(log.contains("No validator key"), "{log}");
}

#[test]
fn ignore_sighup_knob_keeps_the_key() {
    let mut home = Home::new();
    let sim = Sim::start(&mut home, &[]);
    home.control(&Control {
        ignore_sighup: true,
        ..Control::default()
    });
    wait_for("the knob to be applied", |seen| {
        *seen = "no log line yet".into();
        sim.stderr_text()
            .contains("ignore_sighup: true")
            .then_some(())
    });
    std::fs::remove_file(home.validator_key()).expect("rm key");
    sim.signal(Signal::SIGHUP);
    wait_for("the SIGHUP to be ignored", |seen| {
        *seen = "no log line yet".into();
        sim.stderr_text().contains("SIGHUP ignored").then_some(())
    });
    assert_eq!(sim.status()["validator_account_id"], "pool.near");
    assert_eq!(sim.metric("near_config_reloads_total"), 1.0);
}

#[test]
fn sigterm_exits_zero_after_the_stop_delay() {
    let mut home = Home::new();
    let mut sim = Sim::start(&mut home, &[("NEARD_SIM_STOP_DELAY_MS", "300")]);
    let asked = std::time::Instant::now();
    sim.signal(Signal::SIGTERM);
    let status = sim.wait_exit();
    assert!(status.success(), "{status}: {}", sim.stderr_text());
    assert!(asked.elapsed() >= std::time::Duration::from_millis(300));
    assert!(sim
        .stderr_text()
        .contains("SIGTERM, stopping... this may take a few minutes."));
}

#[test]
fn sigint_exits_zero() {
    let mut home = Home::new();
    let mut sim = Sim::start(&mut home, &[]);
    sim.signal(Signal::SIGINT);
    assert!(sim.wait_exit().success(), "{}", sim.stderr_text());
    assert!(sim.stderr_text().contains("SIGINT, stopping..."));
}

#[test]
fn abort_knob_crashes_with_sigabrt() {
    use std::os::unix::process::ExitStatusExt;
    let mut home = Home::new();
    let mut sim = Sim::start(&mut home, &[]);
    home.control(&Control {
        abort: true,
        ..Control::default()
    });
    let status = sim.wait_exit();
    assert_eq!(status.signal(), Some(libc_sigabrt()), "{status}");
}

fn libc_sigabrt() -> i32 {
    Signal::SIGABRT as i32
}

#[test]
fn a_slow_key_drop_keeps_signing_for_the_drop_delay() {
    let mut home = Home::new();
    let ledger_path = home.ledger();
    let ledger_env = ledger_path.to_str().expect("utf-8").to_owned();
    let sim = Sim::start(
        &mut home,
        &[
            ("NEARD_SIM_KEY_DROP_DELAY_MS", "2500"),
            ("NEARD_SIM_LEDGER", &ledger_env),
        ],
    );
    std::fs::remove_file(home.validator_key()).expect("rm key");
    sim.signal(Signal::SIGHUP);
    // The reload itself succeeds at once...
    wait_reloads(&sim, 2.0);
    let reloaded_at = neard_sim::chain::now_ms();
    // ...but the key is still used until the drop delay has passed.
    assert_eq!(sim.status()["validator_account_id"], "pool.near");
    wait_validator(&sim, None);
    let entries = crate::helper::ledger_entries(&ledger_path);
    assert!(
        entries.iter().any(|e| e.time_ms > reloaded_at),
        "no height signed after the reload"
    );
}

#[test]
fn rpc_is_refused_until_the_boot_delay_has_passed() {
    let home = Home::new();
    let started = std::time::Instant::now();
    let sim = Sim::spawn(&home, &[("NEARD_SIM_BOOT_DELAY_MS", "1500")], &[]);
    let early = std::net::TcpStream::connect(("127.0.0.1", home.rpc_port));
    assert!(
        early.is_err() || started.elapsed() >= std::time::Duration::from_millis(1500),
        "RPC accepted a connection before the boot delay"
    );
    wait_for("RPC to come up", |seen| {
        let got = crate::helper::get(sim.rpc_port, "/status");
        *seen = format!("{got:?}");
        got.ok().filter(|(code, _)| *code == 200)
    });
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
}
