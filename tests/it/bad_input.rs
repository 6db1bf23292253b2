//! Every bad input of the configuration fails at start with one clear line naming the file or
//! variable, and never a panic.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kuutamod_bench::cluster::sim_init;

use crate::helper::{cluster, free_port, kuutamod_bin, neard_sim_bin, wait, Must, Opts};

struct Setup {
    dir: tempfile::TempDir,
    home: PathBuf,
    keys: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    sim_init(&keys, "pool.near").must();
    let voter = dir.path().join("voter");
    sim_init(&voter, "pool.near").must();
    std::fs::copy(
        voter.join("node_key.json"),
        keys.join("voter_node_key.json"),
    )
    .expect("copy");
    std::fs::copy(
        keys.join("node_key.json"),
        keys.join("validator_node_key.json"),
    )
    .expect("copy");
    let home = dir.path().join("home");
    sim_init(&home, "pool.near").must();
    Setup { dir, home, keys }
}

impl Setup {
    fn command(&self) -> Command {
        let mut cmd = Command::new(kuutamod_bin());
        cmd.env_clear()
            .env("KUUTAMO_ACCOUNT_ID", "pool.near")
            .env("KUUTAMO_CONSUL_URL", "http://127.0.0.1:1")
            .env(
                "KUUTAMO_EXPORTER_ADDRESS",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("KUUTAMO_NEARD_HOME", &self.home)
            .env("KUUTAMO_NEARD_BIN", neard_sim_bin())
            .env(
                "KUUTAMO_VALIDATOR_KEY",
                self.keys.join("validator_key.json"),
            )
            .env(
                "KUUTAMO_VALIDATOR_NODE_KEY",
                self.keys.join("validator_node_key.json"),
            )
            .env(
                "KUUTAMO_VOTER_NODE_KEY",
                self.keys.join("voter_node_key.json"),
            );
        cmd
    }
}

/// How long a bad setting may take to stop kuutamod. Settings are checked before kuutamod
/// contacts Consul or starts neard, so this is process start-up; a kuutamod that got past the
/// checks would run on (it retries Consul), and is killed and failed at this bound.
const FAILS_AT_START: Duration = Duration::from_secs(10);

/// Runs kuutamod and expects it to fail at once with a message containing every `needle`.
fn fails_with(mut cmd: Command, needles: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let err_path = dir.path().join("stderr");
    let err_file = std::fs::File::create(&err_path).expect("stderr file");
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(err_file)
        .spawn()
        .expect("spawn kuutamod");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for kuutamod") {
            break status;
        }
        if started.elapsed() > FAILS_AT_START {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kuutamod still ran {FAILS_AT_START:?} after start for {needles:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err_path).expect("read stderr");
    assert_eq!(
        status.code(),
        Some(1),
        "exit status for {needles:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    let error_lines = stderr
        .lines()
        .filter(|l| l.starts_with("kuutamod: "))
        .count();
    assert_eq!(error_lines, 1, "one error line: {stderr}");
}

#[test]
fn missing_and_malformed_key_files() {
    let s = setup();
    let missing = s.dir.path().join("nope.json");
    let mut cmd = s.command();
    cmd.env("KUUTAMO_VALIDATOR_KEY", &missing);
    fails_with(cmd, &["validator key file", "nope.json"]);

    let bad = s.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"account_id\": \"pool.near\", \"public_key\": 3").expect("write");
    let mut cmd = s.command();
    cmd.env("KUUTAMO_VOTER_NODE_KEY", &bad);
    fails_with(cmd, &["voter node key file", "bad.json", "malformed"]);

    let mut cmd = s.command();
    cmd.env(
        "KUUTAMO_VOTER_NODE_KEY",
        s.keys.join("validator_node_key.json"),
    );
    fails_with(
        cmd,
        &[
            "KUUTAMO_VOTER_NODE_KEY",
            "KUUTAMO_VALIDATOR_NODE_KEY",
            "same key",
        ],
    );
}

#[test]
fn keys_fall_back_to_the_credentials_directory() {
    let s = setup();
    let mut cmd = s.command();
    cmd.env_remove("KUUTAMO_VALIDATOR_KEY")
        .env_remove("KUUTAMO_VALIDATOR_NODE_KEY")
        .env_remove("KUUTAMO_VOTER_NODE_KEY");
    fails_with(
        cmd,
        &["KUUTAMO_VALIDATOR_KEY is not set", "CREDENTIALS_DIRECTORY"],
    );

    // With the credentials directory the keys are found; the next check (config.json) fails.
    std::fs::remove_file(s.home.join("config.json")).expect("rm");
    let mut cmd = s.command();
    cmd.env_remove("KUUTAMO_VALIDATOR_KEY")
        .env_remove("KUUTAMO_VALIDATOR_NODE_KEY")
        .env_remove("KUUTAMO_VOTER_NODE_KEY")
        .env("CREDENTIALS_DIRECTORY", &s.keys);
    fails_with(cmd, &["config.json", "init"]);
}

#[test]
fn missing_or_unparsable_config_json() {
    let s = setup();
    std::fs::write(s.home.join("config.json"), "{ \"rpc\": ").expect("write");
    fails_with(
        s.command(),
        &["neard config", "config.json", "not valid JSON"],
    );
    std::fs::remove_file(s.home.join("config.json")).expect("rm");
    fails_with(s.command(), &["config.json", "cannot read"]);
}

#[test]
fn bad_urls_addresses_and_durations() {
    let s = setup();
    let mut cmd = s.command();
    cmd.env("KUUTAMO_CONSUL_URL", "localhost:8500");
    fails_with(cmd, &["KUUTAMO_CONSUL_URL"]);
    let mut cmd = s.command();
    cmd.env("KUUTAMO_EXPORTER_ADDRESS", "everywhere");
    fails_with(cmd, &["KUUTAMO_EXPORTER_ADDRESS", "everywhere"]);
    let mut cmd = s.command();
    cmd.env("KUUTAMO_VOTER_NETWORK_ADDR", "0.0.0.0");
    fails_with(cmd, &["KUUTAMO_VOTER_NETWORK_ADDR"]);
    let mut cmd = s.command();
    cmd.env("KUUTAMO_SESSION_TTL", "10s")
        .env("KUUTAMO_NEARD_STOP_GRACE", "9s");
    fails_with(cmd, &["KUUTAMO_NEARD_STOP_GRACE", "KUUTAMO_SESSION_TTL"]);
    let mut cmd = s.command();
    cmd.env("KUUTAMO_NEARD_BIN", s.dir.path().join("no-such-neard"));
    fails_with(cmd, &["KUUTAMO_NEARD_BIN", "no-such-neard"]);
}

#[test]
fn account_id_differing_from_the_key_is_refused() {
    let s = setup();
    let mut cmd = s.command();
    cmd.env("KUUTAMO_ACCOUNT_ID", "pool.naer");
    fails_with(cmd, &["KUUTAMO_ACCOUNT_ID", "pool.naer", "pool.near"]);
}

#[test]
fn exporter_address_in_use() {
    let s = setup();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut cmd = s.command();
    cmd.env(
        "KUUTAMO_EXPORTER_ADDRESS",
        taken.local_addr().expect("addr").to_string(),
    );
    fails_with(cmd, &["KUUTAMO_EXPORTER_ADDRESS", "choose a free address"]);
}

#[test]
fn unreachable_consul_keeps_the_node_registering_without_the_key_and_says_where() {
    let mut cluster = cluster(1, Opts::test());
    cluster.nodes[0].agent.kill(); // now nothing answers behind the URL the node has
    cluster.start_all().must();
    let node = &cluster.nodes[0];
    wait::until(
        Duration::from_secs(30),
        "kuutamod to report the unreachable Consul",
        || {
            let log = std::fs::read_to_string(&node.log).unwrap_or_default();
            if log.contains(&node.consul_url) && log.contains("unreachable") {
                Ok(())
            } else {
                Err(node.log_tail(5))
            }
        },
    );
    // Each URL as it is: no `?` left where a query was not added.
    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
    assert!(!log.contains("? is unreachable"), "{log}");
    wait::until(
        Duration::from_secs(30),
        "the node to reach Registering",
        || match node.state() {
            Ok(s) if s == "Registering" => Ok(()),
            other => Err(other),
        },
    );
    wait::holds(
        Duration::from_secs(2),
        "no validation without Consul",
        || match node.state() {
            Ok(s) if s == "Registering" && !node.has_validator_key() => Ok(()),
            other => Err(other),
        },
    );
}

#[test]
fn validator_node_key_is_needed_in_restart_mode_only() {
    let s = setup();
    let mut cmd = s.command();
    cmd.env_remove("KUUTAMO_VALIDATOR_NODE_KEY")
        .env("KUUTAMO_FAILOVER_MODE", "restart");
    fails_with(cmd, &["KUUTAMO_VALIDATOR_NODE_KEY is not set"]);

    // In hot-swap mode the host keeps its own node key: kuutamod gets past the keys and stops
    // only at the next check (config.json, removed here).
    std::fs::remove_file(s.home.join("config.json")).expect("rm");
    let mut cmd = s.command();
    cmd.env_remove("KUUTAMO_VALIDATOR_NODE_KEY")
        .env("KUUTAMO_FAILOVER_MODE", "hot-swap");
    fails_with(cmd, &["config.json"]);
}
