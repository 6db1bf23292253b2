//! The command line: `init`, `localnet`, and the ways `run` refuses to start.

use std::path::Path;
use std::process::Command;

use crate::helper::{free_ports, run_to_end, Home, Sim};

fn home_arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn init_writes_a_home_and_never_overwrites_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("h");
    let (st, err) = run_to_end(
        &["--home", home_arg(&home), "init", "--chain-id", "localnet"],
        &[],
    );
    assert!(st.success(), "{err}");
    for f in [
        "config.json",
        "node_key.json",
        "validator_key.json",
        "genesis.json",
    ] {
        assert!(home.join(f).exists(), "{f} missing");
    }
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("validator_key.json")).expect("key"))
            .expect("json");
    assert_eq!(key["account_id"], "test.near");
    let node: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("node_key.json")).expect("key"))
            .expect("json");
    assert_eq!(node["account_id"], "node");
    let secret = bs58::decode(
        key["secret_key"]
            .as_str()
            .expect("str")
            .trim_start_matches("ed25519:"),
    )
    .into_vec()
    .expect("base58");
    let public = bs58::decode(
        key["public_key"]
            .as_str()
            .expect("str")
            .trim_start_matches("ed25519:"),
    )
    .into_vec()
    .expect("base58");
    assert_eq!((secret.len(), &secret[32..]), (64, &public[..]));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("config.json")).expect("config"))
            .expect("json");
    assert_eq!(config["rpc"]["addr"], "0.0.0.0:3030");
    assert_eq!(config["network"]["addr"], "0.0.0.0:24567");
    assert_eq!(config["consensus"]["max_block_production_delay"]["secs"], 2);

    let before = std::fs::read(home.join("validator_key.json")).expect("key");
    let (st, err) = run_to_end(&["--home", home_arg(&home), "init"], &[]);
    assert!(st.success(), "{err}");
    assert_eq!(
        before,
        std::fs::read(home.join("validator_key.json")).expect("key")
    );
}

#[test]
fn localnet_makes_n_homes_with_concrete_ports() {
    for flag in ["-v", "--v", "--validators"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (st, err) = run_to_end(
            &[
                "--home",
                home_arg(dir.path()),
                "localnet",
                flag,
                "2",
                "--prefix",
                "n",
            ],
            &[],
        );
        assert!(st.success(), "{flag}: {err}");
        let c0 = neard_sim::config::Config::load(&dir.path().join("n0")).expect("n0");
        let c1 = neard_sim::config::Config::load(&dir.path().join("n1")).expect("n1");
        assert!(!dir.path().join("n2").exists());
        assert_ne!(c0.rpc_addr.map(|a| a.port()), Some(0));
        assert_ne!(c0.network_addr.port(), 0);
        assert!(
            c1.boot_nodes.ends_with(&format!("@{}", c0.network_addr)),
            "{}",
            c1.boot_nodes
        );
    }
}

#[test]
fn port_zero_is_refused() {
    let home = Home::new();
    let (st, err) = run_to_end(
        &[
            "--home",
            home_arg(&home.path()),
            "run",
            "--rpc-addr",
            "127.0.0.1:0",
        ],
        &[("NEARD_SIM_BOOT_DELAY_MS", "0")],
    );
    assert!(!st.success());
    assert!(err.contains("using an any port (i.e. 0)"), "{err}");
    home.edit_config(|c| c["network"]["addr"] = "127.0.0.1:0".into());
    let (st, err) = run_to_end(&["--home", home_arg(&home.path()), "run"], &[]);
    assert!(!st.success());
    assert!(err.contains("network.addr"), "{err}");
}

#[test]
fn unparsable_config_is_refused_naming_the_file() {
    let home = Home::new();
    std::fs::write(home.path().join("config.json"), "{ \"rpc\": ").expect("write");
    let (st, err) = run_to_end(&["--home", home_arg(&home.path()), "run"], &[]);
    assert!(!st.success());
    assert!(err.contains("Error loading config"), "{err}");
    assert!(
        err.contains(&home.path().join("config.json").display().to_string()),
        "{err}"
    );
}

#[test]
fn missing_node_key_is_refused_naming_the_file() {
    let home = Home::new();
    std::fs::remove_file(home.path().join("node_key.json")).expect("rm");
    let (st, err) = run_to_end(&["--home", home_arg(&home.path()), "run"], &[]);
    assert!(!st.success());
    assert!(err.contains("node_key.json"), "{err}");
}

#[test]
fn a_taken_port_is_reported() {
    let mut home = Home::new();
    let _first = Sim::start(&mut home, &[]);
    let (other_net, _) = free_ports();
    let (st, err) = run_to_end(
        &[
            "--home",
            home_arg(&home.path()),
            "run",
            "--network-addr",
            &format!("127.0.0.1:{other_net}"),
        ],
        &[("NEARD_SIM_BOOT_DELAY_MS", "0")],
    );
    assert!(!st.success());
    assert!(
        err.contains(&format!("127.0.0.1:{}", home.rpc_port)),
        "{err}"
    );
}

#[test]
fn unknown_config_fields_only_warn() {
    let mut home = Home::new();
    home.edit_config(|c| c["some_future_field"] = true.into());
    let sim = Sim::start(&mut home, &[]);
    assert!(sim.stderr_text().contains("some_future_field"));
}

#[test]
fn ledger_subcommand_judges_a_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.jsonl");
    let line = |h: u64, node: &str| {
        format!(
            "{{\"height\":{h},\"node\":\"{node}\",\"account\":\"a.near\",\"public_key\":\"ed25519:x\",\"time_ms\":{}}}\n",
            h * 100
        )
    };
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_neard-sim"))
            .args([
                "ledger",
                path.to_str().expect("utf8"),
                "--account",
                "a.near",
            ])
            .output()
            .expect("run")
    };
    std::fs::write(
        &path,
        [line(1, "n0"), line(2, "n0"), line(4, "n1")].concat(),
    )
    .expect("write");
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 missed heights") && text.contains("0 double-signed"),
        "{text}"
    );
    assert!(
        text.contains("n0: 1..=2") && text.contains("n1: 4..=4"),
        "{text}"
    );

    std::fs::write(
        &path,
        [line(1, "n0"), line(2, "n0"), line(2, "n1")].concat(),
    )
    .expect("write");
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("DOUBLE SIGNED height 2: n0, n1"), "{text}");

    std::fs::write(&path, "not json\n").expect("write");
    let out = run();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ledger.jsonl"));
}

#[test]
fn ledger_subcommand_separates_conflicts_from_duplicates() {
    use neard_sim::blocks::{Approval, ApprovalInner};
    use neard_sim::ledger::{Entry, Signer, Writer};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.jsonl");
    let approval = |node: &str, inner: ApprovalInner, t: u64| {
        let a = Approval {
            account_id: "a.near".into(),
            inner,
            target_height: 9,
        };
        let s = Signer {
            node,
            account: "a.near",
            public_key: "ed25519:x",
        };
        Entry::approval(&s, &a, "tip", 8, t)
    };
    let run = |strict: bool| {
        let mut args = vec![
            "ledger",
            path.to_str().expect("utf8"),
            "--account",
            "a.near",
        ];
        if strict {
            args.push("--strict");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_neard-sim"))
            .args(&args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let mut w = Writer::open(&path).expect("open");
    let e = ApprovalInner::Endorsement("h8".into());
    w.append(&approval("n0", e.clone(), 100)).expect("append");
    w.append(&approval("n1", e, 110)).expect("append");
    let (code, text) = run(false);
    assert_eq!(
        code,
        Some(0),
        "identical approvals are not a conflict: {text}"
    );
    assert!(text.contains("0 conflicting, 1 duplicated"), "{text}");
    assert!(
        text.contains("duplicate approval 9: identical from n0, n1"),
        "{text}"
    );
    assert_eq!(run(true).0, Some(1), "--strict fails on two signers");
    w.append(&approval("n1", ApprovalInner::Skip(7), 200))
        .expect("append");
    let (code, text) = run(false);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("CONFLICTING approval 9: n0 (endorsement of h8) vs n1 (skip from 7)"),
        "{text}"
    );
}

#[test]
fn init_and_chain_init_take_the_simulators_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("h");
    let (st, err) = run_to_end(
        &[
            "--home",
            home_arg(&home),
            "init",
            "--chain-id",
            "localnet",
            "--speed-up",
            "10",
            "--num-shards",
            "3",
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    let c = neard_sim::config::Config::load(&home).expect("config");
    assert_eq!(c.timers, neard_sim::spec::Timers::sped_up(10));
    let g = neard_sim::config::Genesis::load(&home.join("genesis.json")).expect("genesis");
    assert_eq!(g.num_shards, 3);

    let chain = dir.path().join("chain");
    let d = chain.to_str().expect("utf8");
    let (st, err) = run_to_end(
        &[
            "chain",
            "init",
            "--dir",
            d,
            "--ours",
            "pool.near:3",
            "--validator",
            "v1",
            "--seed",
            "9",
        ],
        &[],
    );
    assert!(st.success(), "{err}");
    let spec = neard_sim::spec::ChainSpec::read(&chain.join("chain.json")).expect("spec");
    assert_eq!(spec.seed, 9);
    assert_eq!(
        spec.validators
            .iter()
            .map(|v| (v.account_id.as_str(), v.stake, v.ours))
            .collect::<Vec<_>>(),
        [("pool.near", 3, true), ("v1", 100, false)]
    );
    let (st, err) = run_to_end(&["chain", "init", "--dir", d, "--ours", "x:lots"], &[]);
    assert!(!st.success() && err.contains("not a number"), "{err}");
    let (st, err) = run_to_end(&["chain", "init", "--dir", d], &[]);
    assert!(!st.success() && err.contains("no validators"), "{err}");
}
