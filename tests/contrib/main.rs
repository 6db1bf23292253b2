//! Checks of the operator files in `contrib/` against the real programs.
//!
//! - Every metric that the Prometheus rules (`contrib/prometheus/kuutamod-alerts.yml`) and the
//!   Grafana dashboard (`contrib/grafana/kuutamod.json`) name is exported by a running kuutamod,
//!   or is one of neard's metrics listed in `contrib/neard-metrics.txt`, or Prometheus' own
//!   `up`. Label values the rules match on (`type`, `reason`, `op`, `kind`) exist too.
//! - The Consul ACL policies in `contrib/consul/` are enough: kuutamod runs against a Consul with
//!   ACLs on (default deny) holding only a token of `kuutamod-policy.hcl`, takes the lock,
//!   validates, hands over and takes it again; `kuutamoctl` works with a token of
//!   `kuutamoctl-policy.hcl`.
//! - `kuutamod --check` passes with a token of `kuutamod-policy.hcl` and changes nothing in
//!   Consul; each failing check prints its line (`check.rs`).
//!
//! Real parts only: a Consul dev agent, the kuutamod and kuutamoctl binaries, and the neard
//! simulator that kuutamod supervises. `promtool check/test rules` run in `scripts/check-contrib`.
//!
//! Helpers by purpose, beside this file: `promql.rs` (reading PromQL from the rules and the
//! dashboard), `metrics.rs` (what contrib uses against what is exported), `procs.rs` (the
//! processes the test starts: Consul with ACLs, kuutamod; bounded waits).

mod check;
mod metrics;
mod procs;
mod promql;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kuutamod_bench::procs::{free_port, kuutamod_bin, neard_sim_bin};

use metrics::{
    bad_label_values, exported_names, missing, neard_list, sample, state_of, used_by_contrib, Used,
};
use procs::{get, scopeguard, signal, sim_init, until, Consul, Proc};
use promql::{rule_exprs, scan, Matcher};

/// The validator account of the test.
const ACCOUNT: &str = "pool.near";

/// Consul node name of the dev agent; the policies' `@CONSUL_NODE_PREFIX@` is its prefix.
const CONSUL_NODE: &str = "contrib-test-0";
const CONSUL_NODE_PREFIX: &str = "contrib-test-";

/// The ACL bootstrap token of the dev agent (`acl.tokens.master`).
const MASTER_TOKEN: &str = "b0a5c9d2-2f5e-4f1a-9a59-0e0c6c1e7a11";

/// How long Consul, kuutamod and the simulator may take for each step. Generous: these are
/// bounds on a 2-core machine shared with builds, not timing claims.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Metrics that Prometheus itself makes for every target.
const PROMETHEUS_BUILTIN: &[&str] = &["up"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn the_scanner_finds_metrics_and_matchers() {
    let (names, matchers) = scan(
        r#"sum by (validator) (kuutamod_state{job="kuutamod", type="Validating"}) > 1
           or on (validator) histogram_quantile(0.9, sum by (le) (rate(kuutamod_failover_duration_seconds_bucket{validator=~"$validator"}[$__range])))
           and ignoring (type) up{job="x"} offset 5m unless label_replace(near_sync_status, "a", "$1", "b", "(.*)") * 1e3"#,
    );
    let want: BTreeSet<String> = [
        "kuutamod_state",
        "kuutamod_failover_duration_seconds_bucket",
        "up",
        "near_sync_status",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
    assert!(matchers.contains(&Matcher {
        metric: "kuutamod_state".into(),
        label: "type".into(),
        op: "=".into(),
        value: "Validating".into(),
    }));
    let (names, matchers) =
        scan(r#"increase(kuutamod_step_downs_total{reason=~"lease_expired|key_lost"}[15m]) > 0"#);
    assert_eq!(names.len(), 1);
    assert_eq!(matchers[0].value, "lease_expired|key_lost");
    assert_eq!(matchers[0].op, "=~");
}

/// contrib/neard-metrics.txt lists neard's metrics that contrib may use; each must be
/// documented, with its nearcore source, in docs/neard.md (section 2.2).
#[test]
fn every_listed_neard_metric_is_documented_in_docs_neard_md() {
    let doc = read(&repo().join("docs/neard.md"));
    let listed = neard_list();
    assert!(
        !listed.is_empty(),
        "contrib/neard-metrics.txt lists nothing"
    );
    let missing: Vec<&String> = listed
        .iter()
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "listed in contrib/neard-metrics.txt but not in docs/neard.md: {missing:?}"
    );
}

#[test]
fn the_rules_reader_reads_every_expr() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: a_metric > 1\n        for: 1m\n      - alert: B\n        expr: |\n          b_metric\n            or c_metric\n        labels: {}\n";
    assert_eq!(
        rule_exprs(yaml),
        vec!["a_metric > 1", "b_metric or c_metric"]
    );
}

/// Starts one kuutamod (hot swap, simulator) against a Consul with ACLs on and only the
/// shipped policy's token, drives it through a promotion that falls back to a restart, a
/// hand-over and a second promotion (so that its event counters exist), then compares what it
/// exports with every metric the rules and dashboard use.
#[test]
fn every_metric_in_the_rules_and_dashboard_is_exported_and_the_acl_policies_suffice() {
    let used = used_by_contrib();
    let dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("CONTRIB_TEST_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
    }
    let dir = scopeguard(dir);
    let mut consul = Consul::start(dir.path());
    let kuutamod_token = consul.token_for("contrib/consul/kuutamod-policy.hcl", "kuutamod-node-a");
    let ctl_token = consul.token_for("contrib/consul/kuutamoctl-policy.hcl", "kuutamoctl");

    // neard's home and the keys, as docs/operations.md lays them out.
    let home = dir.path().join("neard");
    let keys = dir.path().join("keys");
    sim_init(&home);
    std::fs::create_dir_all(&keys).expect("keys dir");
    std::fs::rename(
        home.join("validator_key.json"),
        keys.join("validator_key.json"),
    )
    .expect("move the validator key out of neard's home");
    std::fs::copy(home.join("node_key.json"), keys.join("voter_node_key.json"))
        .expect("voter node key");
    let rpc_port = free_port();
    let config_path = home.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&read(&config_path)).expect("config.json is JSON");
    config["rpc"]["addr"] = format!("127.0.0.1:{rpc_port}").into();
    std::fs::write(&config_path, config.to_string()).expect("write config.json");
    // The first promotion's hot swap cannot be confirmed (the simulator ignores SIGHUP), so
    // kuutamod falls back to a restart: kuutamod_hot_swap_fallbacks_total appears.
    let control = home.join("neard-sim-control.json");
    std::fs::write(&control, r#"{"ignore_sighup": true}"#).expect("control file");

    let exporter: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let mut cmd = Command::new(kuutamod_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("KUUTAMO_NODE_ID", "node-a")
        .env("KUUTAMO_CONSUL_URL", &consul.url)
        .env("KUUTAMO_CONSUL_TOKEN", &kuutamod_token)
        .env("KUUTAMO_EXPORTER_ADDRESS", exporter.to_string())
        .env("KUUTAMO_VALIDATOR_KEY", keys.join("validator_key.json"))
        .env("KUUTAMO_VOTER_NODE_KEY", keys.join("voter_node_key.json"))
        .env("KUUTAMO_NEARD_HOME", &home)
        .env("KUUTAMO_NEARD_BIN", neard_sim_bin())
        .env(
            "KUUTAMO_VOTER_NETWORK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "KUUTAMO_VALIDATOR_NETWORK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("KUUTAMO_SESSION_TTL", "3s")
        .env("KUUTAMO_NEARD_STOP_GRACE", "1s")
        .env("NEARD_SIM_BOOT_DELAY_MS", "200");
    let mut kuutamod = Proc::spawn(cmd, "kuutamod", &dir.path().join("kuutamod.log"));
    let metrics_url = format!("http://{exporter}/metrics");
    let scrape = |kuutamod: &mut Proc| {
        kuutamod.assert_running();
        get(&metrics_url)
    };

    // Validating with the key confirmed live (kuutamod_state says Validating from the moment
    // the key is handed over; a SIGUSR1 before the promotion is complete is not acted on).
    until(
        STEP_LIMIT,
        "kuutamod to validate after a hot-swap fallback",
        || {
            let m = scrape(&mut kuutamod)?;
            let promotions = sample(&m, "kuutamod_failover_duration_seconds_count").unwrap_or(0.0);
            let fallbacks = m.contains("kuutamod_hot_swap_fallbacks_total{");
            match (state_of(&m).as_deref(), promotions >= 1.0, fallbacks) {
                (Some("Validating"), true, true) => Ok(()),
                (s, p, f) => Err(format!("state {s:?}, promoted {p}, fallback counted {f}")),
            }
        },
    );
    // A hand-over with SIGHUP working again; with no other node, the same node takes the lock
    // back after its hold-off: kuutamod_step_downs_total appears, the promotion count grows.
    std::fs::remove_file(&control).expect("remove the control file");
    signal(kuutamod.pid(), nix::sys::signal::Signal::SIGUSR1);
    until(STEP_LIMIT, "the hand-over and a second promotion", || {
        let m = scrape(&mut kuutamod)?;
        let promotions = sample(&m, "kuutamod_failover_duration_seconds_count").unwrap_or(0.0);
        let hand_overs = sample(&m, "kuutamod_step_downs_total{reason=\"hand_over\"}");
        match (state_of(&m).as_deref(), hand_overs, promotions >= 2.0) {
            (Some("Validating"), Some(_), true) => Ok(()),
            (s, h, p) => Err(format!("state {s:?}, hand-overs {h:?}, two promotions {p}")),
        }
    });

    // kuutamoctl with the operator's token only: read, pause, resume.
    let ctl = |args: &[&str]| {
        let out = Command::new(kuutamod_bench::procs::workspace_bin(
            "kuutamoctl",
            "KUUTAMOCTL_BIN",
        ))
        .args(args)
        .env_clear()
        .env("KUUTAMO_CONSUL_URL", &consul.url)
        .env("KUUTAMO_CONSUL_TOKEN", &ctl_token)
        .env("KUUTAMO_ACCOUNT_ID", ACCOUNT)
        .output()
        .expect("run kuutamoctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for args in [
        &["active-validator"][..],
        &["status"][..],
        &["pause"][..],
        &["resume"][..],
    ] {
        let (code, out) = ctl(args);
        assert_eq!(
            code,
            Some(0),
            "kuutamoctl {args:?} with the kuutamoctl policy: {out}"
        );
    }
    let (_, out) = ctl(&["active-validator"]);
    assert!(out.contains("node-a"), "kuutamoctl names the leader: {out}");

    // kuutamod may be restarting neard at this moment (a hot swap it could not confirm falls
    // back to a restart), so the simulator's metrics are polled, not read once.
    let sim_metrics = format!("http://127.0.0.1:{rpc_port}/metrics");
    let sim = until(STEP_LIMIT, "the simulator's metrics", || {
        kuutamod.assert_running();
        get(&sim_metrics)
    });
    // The simulator exports our account's production (`near_validators_*`, as real neard
    // does), so every `kuutamod_validator_*` series the rules and dashboard use must be there.
    for kind in ["blocks", "chunks"] {
        for what in ["produced", "expected"] {
            let series = format!("near_validators_{kind}_{what}{{account_id=\"{ACCOUNT}\"");
            assert!(sim.contains(&series), "the simulator lacks {series}: {sim}");
        }
    }
    until(
        STEP_LIMIT,
        "kuutamod to re-export our account's production",
        || {
            let m = scrape(&mut kuutamod)?;
            m.contains("kuutamod_validator_kickout_margin{")
                .then_some(())
                .ok_or_else(|| "no kuutamod_validator_kickout_margin yet".to_string())
        },
    );
    // Consul goes away: kuutamod_consul_up drops to 0 and kuutamod_consul_errors_total{op}
    // appears (it has no series before the first error).
    consul.agent.kill();
    let text = until(STEP_LIMIT, "kuutamod to count Consul errors", || {
        let m = scrape(&mut kuutamod)?;
        let errors = m.contains("kuutamod_consul_errors_total{");
        let down = sample(&m, "kuutamod_consul_up") == Some(0.0);
        if errors && down {
            Ok(m)
        } else {
            Err(format!("errors counted {errors}, consul_up 0 {down}"))
        }
    });
    let exported = exported_names(&text);
    let sim_names = exported_names(&sim);

    let missing_names = missing(&used, &exported);
    let bad_values = bad_label_values(&used, &text);
    for name in neard_list() {
        eprintln!(
            "neard metric {name}: {}",
            if sim_names.contains(&name) {
                "exported by the simulator too"
            } else {
                "not exported by the simulator (real neard does)"
            }
        );
    }
    assert!(
        missing_names.is_empty() && bad_values.is_empty(),
        "contrib uses metrics or label values that do not exist:\n  {}\nkuutamod exported: {:?}",
        missing_names
            .iter()
            .chain(&bad_values)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        exported
    );

    // The check itself must be able to fail: a made-up name in a rule is reported.
    let mut wrong = Used {
        names: used.names.clone(),
        matchers: BTreeSet::new(),
    };
    wrong.names.insert(
        "kuutamod_validators_total".into(),
        ["a rule".to_string()].into(),
    );
    wrong
        .names
        .insert("near_no_such_metric".into(), ["a panel".to_string()].into());
    let reported = missing(&wrong, &exported);
    assert_eq!(reported.len(), 2, "{reported:?}");
}
