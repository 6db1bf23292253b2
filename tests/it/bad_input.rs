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

/// Runs kuutamod and expects it to fail at once (exit 1, the status of every settings error)
/// with one error line containing every `needle`, printed once (not also as a log line).
/// Returns stderr.
fn fails_with(mut cmd: Command, needles: &[&str]) -> String {
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
    if let Some(needle) = needles.first() {
        let mentions = stderr.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(mentions, 1, "the error is printed once: {stderr}");
    }
    stderr
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
    // The example is an exporter address, not neard's p2p port.
    fails_with(
        cmd,
        &[
            "KUUTAMO_EXPORTER_ADDRESS",
            "everywhere",
            "e.g. 127.0.0.1:2233",
        ],
    );
    let mut cmd = s.command();
    cmd.env("KUUTAMO_VOTER_NETWORK_ADDR", "0.0.0.0");
    fails_with(cmd, &["KUUTAMO_VOTER_NETWORK_ADDR"]);
    let mut cmd = s.command();
    cmd.env("KUUTAMO_SESSION_TTL", "10s")
        .env("KUUTAMO_NEARD_STOP_GRACE", "9s");
    // 10 s / 3 + 10 s / 6 is 4.999999999 s in `Duration`'s arithmetic: printed as 5s.
    let stderr = fails_with(
        cmd,
        &[
            "KUUTAMO_NEARD_STOP_GRACE (9s)",
            "KUUTAMO_SESSION_TTL (10s)",
            "missed heartbeat (5s)",
            "at most 4s",
        ],
    );
    assert!(!stderr.contains("999"), "a float artefact: {stderr}");
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
    let taken = std::net::TcpListener::bind(("127.0.0.1", free_port())).expect("bind");
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
    cluster.local_store_mut(0).kill(); // now nothing answers behind the URL the node has
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

#[test]
fn a_bad_value_names_the_variable_the_user_set_and_exits_like_every_settings_error() {
    let s = setup();
    let mut cmd = s.command();
    cmd.env("KUUTAMO_SESSION_TTL", "30x");
    fails_with(
        cmd,
        &[
            "KUUTAMO_SESSION_TTL=\"30x\" is not valid",
            "unknown unit \"x\"",
        ],
    );
    let mut cmd = s.command();
    cmd.env("KUUTAMO_FAILOVER_MODE", "hotswap");
    fails_with(
        cmd,
        &[
            "KUUTAMO_FAILOVER_MODE=\"hotswap\" is not valid",
            "restart, hot-swap",
        ],
    );
    let mut cmd = s.command();
    cmd.env("KUUTAMO_PRIORITY", "high");
    fails_with(cmd, &["KUUTAMO_PRIORITY=\"high\" is not valid"]);
    // On the command line, the flag is named (and its variable).
    let mut cmd = s.command();
    cmd.args(["--session-ttl", "30x"]);
    fails_with(cmd, &["--session-ttl \"30x\" (or KUUTAMO_SESSION_TTL)"]);
    let mut cmd = s.command();
    cmd.arg("--no-such-flag");
    fails_with(cmd, &["'--no-such-flag'", "kuutamod --help"]);
}

#[test]
fn a_bare_number_is_seconds_as_help_says() {
    let s = setup();
    let out = Command::new(kuutamod_bin())
        .arg("--help")
        .output()
        .expect("kuutamod --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("bare number of seconds (30 is 30s"), "{help}");
    // 30 is accepted as 30 s: with a 5 s grace the timing rule holds (it would not for 30 ms),
    // and kuutamod gets to the next check (config.json, removed here).
    std::fs::remove_file(s.home.join("config.json")).expect("rm");
    let mut cmd = s.command();
    cmd.env("KUUTAMO_SESSION_TTL", "30")
        .env("KUUTAMO_NEARD_STOP_GRACE", "5");
    fails_with(cmd, &["config.json"]);
}

#[test]
fn help_lists_every_endpoint_rust_log_and_the_exit_status() {
    let out = Command::new(kuutamod_bin())
        .arg("--help")
        .output()
        .expect("kuutamod --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "/metrics",
        "/health",
        "/leader",
        "/standby",
        "/neard-pid",
        "RUST_LOG",
        "Exit status",
        "--check",
        "CONSUL_HTTP_ADDR",
    ] {
        assert!(
            help.contains(needle),
            "{needle:?} not in kuutamod --help:\n{help}"
        );
    }
}
