//! `kuutamoctl active-validator`: output and exit codes.

use std::process::Command;
use std::time::Duration;

use crate::helper::{cluster, free_port, kuutamoctl_bin, Must, Opts, ACCOUNT};

fn ctl(consul_url: &str, json: bool) -> (i32, String) {
    let mut cmd = Command::new(kuutamoctl_bin());
    cmd.env_clear().env("KUUTAMO_ACCOUNT_ID", ACCOUNT).args([
        "--consul-url",
        consul_url,
        "active-validator",
    ]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("kuutamoctl");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().expect("exit code"), text)
}

#[test]
fn active_validator_reports_holder_none_and_errors() {
    let mut cluster = cluster(2, Opts::test());
    let consul_url = cluster.servers.url();
    let (code, out) = ctl(&consul_url, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no active validator"), "{out}");
    let (code, out) = ctl(&consul_url, true);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["node_id"], serde_json::Value::Null);

    cluster.start_all().must();
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).must();
    let id = cluster.nodes[leader].id.clone();
    let (code, out) = ctl(&consul_url, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with(&id), "{out}");
    let (code, out) = ctl(&consul_url, true);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["node_id"], id.as_str());
    assert_eq!(v["session_alive"], true);
    assert_eq!(v["key"], format!("kuutamod-leader/{ACCOUNT}"));

    let (code, out) = ctl(&format!("http://127.0.0.1:{}", free_port()), false);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("unreachable"), "{out}");
    let (code, out) = ctl("not a url", false);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("KUUTAMO_CONSUL_URL"), "{out}");
}
