//! `kuutamod --check` against a Consul with ACLs on (default deny): it passes with a token of
//! the shipped kuutamod policy and changes nothing in Consul; each failing check prints its
//! line: a wrong ACL token (kuutamoctl's, and one Consul does not know), an unreachable Consul,
//! a mismatched key, a missing neard.

use std::path::{Path, PathBuf};
use std::process::Command;

use kuutamod_bench::procs::{free_port, kuutamod_bin, neard_sim_bin};

use super::procs::{sim_init, Consul};
use super::{ACCOUNT, MASTER_TOKEN};

/// A host's files for kuutamod, as docs/operations.md lays them out: neard's home (from
/// `neard-sim init`) and the keys outside it.
struct Host {
    dir: tempfile::TempDir,
    home: PathBuf,
    keys: PathBuf,
}

fn host() -> Host {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("neard");
    let keys = dir.path().join("keys");
    let scratch = dir.path().join("scratch");
    sim_init(&home);
    sim_init(&scratch);
    std::fs::create_dir_all(&keys).expect("keys dir");
    std::fs::rename(
        home.join("validator_key.json"),
        keys.join("validator_key.json"),
    )
    .expect("move the validator key");
    std::fs::copy(
        scratch.join("node_key.json"),
        keys.join("voter_node_key.json"),
    )
    .expect("voter node key");
    std::fs::copy(
        home.join("node_key.json"),
        keys.join("validator_node_key.json"),
    )
    .expect("validator node key");
    Host { dir, home, keys }
}

impl Host {
    /// `kuutamod <mode>` for this host against `consul_url`, holding `token`.
    fn check(&self, mode: &str, consul_url: &str, token: &str) -> Command {
        let mut cmd = Command::new(kuutamod_bin());
        cmd.arg(mode)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUUTAMO_NODE_ID", "node-a")
            .env("KUUTAMO_CONSUL_URL", consul_url)
            .env("KUUTAMO_CONSUL_TOKEN", token)
            .env(
                "KUUTAMO_EXPORTER_ADDRESS",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "KUUTAMO_VALIDATOR_KEY",
                self.keys.join("validator_key.json"),
            )
            .env(
                "KUUTAMO_VOTER_NODE_KEY",
                self.keys.join("voter_node_key.json"),
            )
            .env("KUUTAMO_NEARD_HOME", &self.home)
            .env("KUUTAMO_NEARD_BIN", neard_sim_bin())
            .env("KUUTAMO_SESSION_TTL", "3s")
            .env("KUUTAMO_NEARD_STOP_GRACE", "1s");
        cmd
    }
}

/// Runs a check; returns its exit code and stdout (the report).
fn run(mut cmd: Command) -> (i32, String) {
    let out = cmd.output().expect("run kuutamod --check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().expect("exit code"), stdout)
}

/// The report's line of check `name`.
fn line<'a>(report: &'a str, name: &str) -> &'a str {
    report
        .lines()
        .find(|l| {
            l.get(5..)
                .is_some_and(|rest| rest.starts_with(&format!("{name}: ")))
        })
        .unwrap_or_else(|| panic!("no line for {name:?} in:\n{report}"))
}

fn assert_line(report: &str, name: &str, verdict: &str, needles: &[&str]) {
    let l = line(report, name);
    assert!(
        l.starts_with(&format!("{verdict:<4} {name}: ")),
        "{l}\nin:\n{report}"
    );
    for needle in needles {
        assert!(l.contains(needle), "{needle:?} not in {l}\nin:\n{report}");
    }
}

/// A Consul key as the management token reads it: (ModifyIndex, value), or None.
fn kv(consul: &Consul, key: &str) -> Option<(u64, String)> {
    let resp = reqwest::blocking::Client::new()
        .get(format!("{}/v1/kv/{key}", consul.url))
        .header("X-Consul-Token", MASTER_TOKEN)
        .send()
        .expect("read Consul");
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    let entries: serde_json::Value = resp.json().expect("Consul answers JSON");
    Some((
        entries[0]["ModifyIndex"].as_u64().expect("an index"),
        entries[0]["Value"].as_str().unwrap_or_default().to_string(),
    ))
}

fn sessions(consul: &Consul) -> usize {
    let list: serde_json::Value = reqwest::blocking::Client::new()
        .get(format!("{}/v1/session/list", consul.url))
        .header("X-Consul-Token", MASTER_TOKEN)
        .send()
        .and_then(|r| r.json())
        .expect("Consul lists sessions");
    list.as_array().map_or(0, Vec::len)
}

#[test]
fn check_passes_with_the_kuutamod_policy_and_changes_nothing_in_consul() {
    let h = host();
    let consul = Consul::start(h.dir.path());
    let token = consul.token_for("contrib/consul/kuutamod-policy.hcl", "kuutamod-node-a");
    let lock = format!("kuutamod-leader/{ACCOUNT}");
    let own = format!("kuutamod/{ACCOUNT}/nodes/node-a");

    let (code, report) = run(h.check("--check", &consul.url, &token));
    assert_eq!(code, 0, "{report}");
    for name in [
        "settings",
        "validator key",
        "account",
        "voter node key",
        "keys differ",
    ] {
        assert_line(&report, name, "ok", &[]);
    }
    assert_line(&report, "neard version", "ok", &["neard 2.6.0"]);
    assert_line(
        &report,
        "consul acl token",
        "ok",
        &["policies: kuutamod-node-a"],
    );
    assert_line(
        &report,
        "consul session",
        "ok",
        &["created, renewed and destroyed a session", "contrib-test-0"],
    );
    assert_line(
        &report,
        "consul lock key",
        "ok",
        &[
            &format!("may read and lock {lock}"),
            "no node has taken it yet",
        ],
    );
    assert_line(
        &report,
        "consul status records",
        "ok",
        &[&format!("write {own}")],
    );
    assert!(!report.contains("least privilege"), "{report}");
    assert_eq!(kv(&consul, &lock), None, "the check wrote the lock key");
    assert_eq!(kv(&consul, &own), None, "the check wrote the status record");
    assert_eq!(sessions(&consul), 0, "the check left a session");

    // With a value in the lock key, the probes leave it as it is too.
    let put = reqwest::blocking::Client::new()
        .put(format!("{}/v1/kv/{lock}", consul.url))
        .header("X-Consul-Token", MASTER_TOKEN)
        .body("not a kuutamod record")
        .send()
        .expect("write the lock key");
    assert!(put.status().is_success());
    let before = kv(&consul, &lock);
    let (code, report) = run(h.check("--check", &consul.url, &token));
    assert_eq!(code, 0, "{report}");
    assert_line(
        &report,
        "consul lock key",
        "ok",
        &["free, with a value that is not a kuutamod record"],
    );
    assert_eq!(kv(&consul, &lock), before, "the check changed the lock key");
}

#[test]
fn check_fails_with_a_wrong_acl_token() {
    let h = host();
    let consul = Consul::start(h.dir.path());
    // kuutamoctl's token: it may read everything, but neither lock nor hold a session.
    let ctl = consul.token_for("contrib/consul/kuutamoctl-policy.hcl", "kuutamoctl");
    let (code, report) = run(h.check("--check", &consul.url, &ctl));
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "consul session",
        "FAIL",
        &[
            "cannot create a session: Consul denied it (Permission denied)",
            "session write",
        ],
    );
    assert_line(
        &report,
        "consul lock key",
        "FAIL",
        &[&format!(
            "the token may not lock kuutamod-leader/{ACCOUNT} (Permission denied)"
        )],
    );
    assert_line(
        &report,
        "consul status records",
        "FAIL",
        &[&format!(
            "the token may not write kuutamod/{ACCOUNT}/nodes/node-a (Permission denied)"
        )],
    );
    // A token Consul does not know.
    let (code, report) = run(h.check(
        "--check",
        &consul.url,
        "00000000-1111-2222-3333-444444444444",
    ));
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "consul acl token",
        "FAIL",
        &["Consul does not know this token (ACL not found)"],
    );
    assert_line(
        &report,
        "consul lock key",
        "skip",
        &["the token is not known"],
    );
}

#[test]
fn check_fails_on_an_unreachable_consul_and_check_local_leaves_consul_out() {
    let h = host();
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (code, report) = run(h.check("--check", &nobody, "t"));
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "consul",
        "FAIL",
        &[&format!(
            "Consul at {nobody}/v1/status/leader is unreachable: cannot connect"
        )],
    );
    for name in ["consul acl token", "consul session", "consul lock key"] {
        assert_line(&report, name, "skip", &["Consul is unreachable"]);
    }
    // Everything local is fine: --check-local passes, and asks nothing of Consul.
    let (code, report) = run(h.check("--check-local", &nobody, "t"));
    assert_eq!(code, 0, "{report}");
    assert!(!report.contains("consul:"), "{report}");
}

#[test]
fn check_fails_on_mismatched_keys() {
    let h = host();
    let url = "http://127.0.0.1:1";
    // A validator key whose secret half belongs to another key.
    let key_path = h.keys.join("validator_key.json");
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&key_path).expect("key")).expect("json");
    let other: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(h.keys.join("voter_node_key.json")).expect("key"),
    )
    .expect("json");
    key["secret_key"] = other["secret_key"].clone();
    let bad = h.dir.path().join("mismatched.json");
    std::fs::write(&bad, key.to_string()).expect("write");
    let mut cmd = h.check("--check-local", url, "t");
    cmd.env("KUUTAMO_VALIDATOR_KEY", &bad);
    let (code, report) = run(cmd);
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "validator key",
        "FAIL",
        &[
            "mismatched.json",
            "secret_key does not belong to public_key",
        ],
    );
    assert_line(&report, "keys differ", "skip", &[]);

    // The account named differs from the key's.
    let mut cmd = h.check("--check-local", url, "t");
    cmd.env("KUUTAMO_ACCOUNT_ID", "pool.naer");
    let (code, report) = run(cmd);
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "account",
        "FAIL",
        &["KUUTAMO_ACCOUNT_ID=\"pool.naer\" differs from the validator key's account \"pool.near\""],
    );

    // The voter node key is the validator node key: two hosts with one network identity.
    let mut cmd = h.check("--check-local", url, "t");
    cmd.env(
        "KUUTAMO_VALIDATOR_NODE_KEY",
        h.keys.join("validator_node_key.json"),
    )
    .env(
        "KUUTAMO_VOTER_NODE_KEY",
        h.keys.join("validator_node_key.json"),
    );
    let (code, report) = run(cmd);
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "keys differ",
        "FAIL",
        &["KUUTAMO_VOTER_NODE_KEY is the same key as KUUTAMO_VALIDATOR_NODE_KEY"],
    );
}

#[test]
fn check_fails_on_a_missing_neard_or_one_that_is_not_neard() {
    let h = host();
    let url = "http://127.0.0.1:1";
    let missing = h.dir.path().join("no-such-neard");
    let mut cmd = h.check("--check-local", url, "t");
    cmd.env("KUUTAMO_NEARD_BIN", &missing);
    let (code, report) = run(cmd);
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "neard binary",
        "FAIL",
        &[&format!(
            "KUUTAMO_NEARD_BIN={} is not an executable file",
            missing.display()
        )],
    );
    assert_line(&report, "neard version", "skip", &["no neard binary"]);

    // An executable that is not neard: no version.
    let fake = h.dir.path().join("not-neard");
    std::fs::write(&fake, "#!/bin/sh\necho hello\n").expect("write");
    make_executable(&fake);
    let mut cmd = h.check("--check-local", url, "t");
    cmd.env("KUUTAMO_NEARD_BIN", &fake);
    let (code, report) = run(cmd);
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "neard version",
        "FAIL",
        &["printed no neard version", "is it neard?"],
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// An etcd member (etcd 3.4, `$ETCD_BIN`) with authentication on: `root`, and `kuutamod-node-a`
/// (password `pw`) whose role is docs/operations.md's kuutamod role for node-a; and a user
/// `reader` (password `pw`) that may only read. Killed with the returned servers.
fn etcd_with_roles(dir: &Path) -> kuutamod_bench::consul::Servers {
    use kuutamod_bench::consul::http_post;
    use serde_json::json;
    let servers = kuutamod_bench::consul::Servers::start_etcd(
        1,
        &[(std::net::IpAddr::from([127, 0, 0, 1]), None)],
        &kuutamod_bench::etcd::etcd_bin().expect("etcd 3.4 (scripts/install-etcd.sh)"),
        dir,
    )
    .expect("an etcd member");
    let url = servers.agents[0].url.clone();
    let b64 = |s: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let end = |p: &str| b64(&kuutamod::etcd::wire::prefix_end(p.as_bytes()));
    let lock = format!("kuutamod-leader/{ACCOUNT}");
    let records = format!("kuutamod/{ACCOUNT}/");
    let own = format!("kuutamod/{ACCOUNT}/nodes/node-a");
    let grant = |role: &str, perm: &str, key: &str, range_end: Option<String>| {
        let mut p = json!({"permType": perm, "key": b64(key.as_bytes())});
        if let Some(e) = range_end {
            p["range_end"] = e.into();
        }
        ("/v3/auth/role/grant", json!({"name": role, "perm": p}))
    };
    let mut calls = vec![
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "rootpw"}),
        ),
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
    ];
    for user in ["kuutamod-node-a", "reader"] {
        calls.push(("/v3/auth/user/add", json!({"name": user, "password": "pw"})));
        calls.push(("/v3/auth/role/add", json!({"name": user})));
        calls.push(("/v3/auth/user/grant", json!({"user": user, "role": user})));
    }
    calls.push(grant(
        "kuutamod-node-a",
        "READWRITE",
        &lock,
        Some(end(&lock)),
    ));
    calls.push(grant(
        "kuutamod-node-a",
        "READ",
        &records,
        Some(end(&records)),
    ));
    calls.push(grant("kuutamod-node-a", "READWRITE", &own, None));
    calls.push(grant("reader", "READ", &lock, Some(end(&lock))));
    calls.push(grant("reader", "READ", &records, Some(end(&records))));
    calls.push(("/v3/auth/enable", json!({})));
    for (path, body) in calls {
        http_post(&format!("{url}{path}"), &body.to_string())
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    servers
}

#[test]
fn check_on_etcd_passes_with_the_kuutamod_role_and_names_what_is_wrong() {
    let h = host();
    let servers = etcd_with_roles(h.dir.path());
    let url = servers.agents[0].url.clone();
    let password = h.dir.path().join("etcd_password");
    std::fs::write(&password, "pw\n").expect("password file");
    let check = |user: &str| {
        let mut cmd = h.check("--check", "http://unused.invalid:1", "");
        cmd.env_remove("KUUTAMO_CONSUL_URL")
            .env_remove("KUUTAMO_CONSUL_TOKEN")
            .env("KUUTAMO_LOCK_BACKEND", "etcd")
            .env("KUUTAMO_ETCD_ENDPOINTS", &url)
            .env("KUUTAMO_ETCD_USER", user)
            .env("KUUTAMO_ETCD_PASSWORD_FILE", &password);
        run(cmd)
    };
    let lock = format!("kuutamod-leader/{ACCOUNT}");

    let (code, report) = check("kuutamod-node-a");
    assert_eq!(code, 0, "{report}");
    assert_line(
        &report,
        "etcd settings",
        "ok",
        &[&url, "user \"kuutamod-node-a\""],
    );
    assert_line(&report, "etcd", "ok", &["etcd 3.4"]);
    assert_line(&report, "etcd auth", "ok", &["authenticated"]);
    assert_line(
        &report,
        "etcd lease",
        "ok",
        &["granted, kept alive and revoked"],
    );
    assert_line(
        &report,
        "etcd lock key",
        "ok",
        &[
            &format!("may read and write {lock} and {lock}/holder"),
            "no node has taken it yet",
        ],
    );
    assert_line(&report, "etcd status records", "ok", &["write kuutamod/"]);
    assert!(!report.contains("pw"), "the password is shown: {report}");
    // Nothing was written: the lock and the status record do not exist.
    let root = kuutamod::etcd::Etcd::new(
        std::slice::from_ref(&url),
        kuutamod::etcd::Tls::default(),
        Some(kuutamod::etcd::Credentials {
            user: "root".into(),
            password: "rootpw".into(),
        }),
    )
    .expect("client");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (entries, _) = rt
        .block_on(root.get_prefix("kuutamod", None))
        .expect("read as root");
    assert!(entries.is_empty(), "the check wrote {entries:?}");

    // A user that may only read: both probes say what it may not do.
    let (code, report) = check("reader");
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "etcd lock key",
        "FAIL",
        &[
            "the user may not write",
            "permission denied",
            "the kuutamod role",
        ],
    );
    assert_line(
        &report,
        "etcd status records",
        "FAIL",
        &["the user may not write"],
    );

    // A wrong password: the auth line names the user and the files to check, never the
    // password; the rest is skipped.
    std::fs::write(&password, "wrong\n").expect("password file");
    let (code, report) = check("kuutamod-node-a");
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "etcd auth",
        "FAIL",
        &[
            "\"kuutamod-node-a\"",
            "KUUTAMO_ETCD_PASSWORD_FILE",
            "authentication failed",
        ],
    );
    assert!(!report.contains("wrong"), "the password is shown: {report}");
    assert_line(&report, "etcd lease", "skip", &[]);

    // Nobody listening: the etcd line names the endpoint.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let mut cmd = h.check("--check", "http://unused.invalid:1", "");
    cmd.env("KUUTAMO_LOCK_BACKEND", "etcd")
        .env("KUUTAMO_ETCD_ENDPOINTS", &nobody);
    let (code, report) = run(cmd);
    assert_eq!(code, 1, "{report}");
    assert_line(
        &report,
        "etcd",
        "FAIL",
        &[&format!(
            "etcd at {nobody}/v3/maintenance/status is unreachable: cannot connect"
        )],
    );
}
