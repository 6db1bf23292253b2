//! kuutamoctl: `active-validator` output and exit codes; `status` of a ready standby and a
//! stopped node; a `switchover` in a maintenance window, `pause` / `resume` around a crash, and
//! a node with priority 0, on the shared chain; the command-line conventions (options after the
//! command, the consul CLI's variables, exit 64 for a bad command line, an account Consul knows
//! nothing of).

use std::process::Command;
use std::time::Duration;

use neard_sim::chainlog::Missed;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::failover::{steady_pair, LIMIT};
use crate::helper::{
    cluster, free_port, kuutamoctl_bin, now_ms, spec_cluster, wait, Cluster, Must, Opts, Spec,
    ACCOUNT,
};

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
    // stdout is the JSON; stderr (after it) warns that Consul knows nothing of the account.
    let json = out.lines().next().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
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

/// Node `id`'s record in `kuutamoctl status --json`.
fn status_of(cluster: &Cluster, id: &str) -> Result<serde_json::Value, String> {
    let (code, out) = cluster
        .kuutamoctl(&["status", "--json"])
        .map_err(|e| format!("{e:#}"))?;
    if code != 0 {
        return Err(format!("exit {code}: {out}"));
    }
    let v: serde_json::Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    v["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node_id"] == id).cloned())
        .ok_or(out)
}

#[test]
fn status_shows_the_ready_standby_and_a_stopped_node_as_stopped() {
    let (mut cluster, leader, standby) = steady_pair(Opts::test());
    let (leader_id, id) = (
        cluster.nodes[leader].id.clone(),
        cluster.nodes[standby].id.clone(),
    );
    wait::until(
        LIMIT,
        "kuutamoctl status to show the standby ready",
        || match status_of(&cluster, &id) {
            Ok(n) if n["state"] == "Voting" && n["may_take_over"] == true => Ok(()),
            other => Err(other),
        },
    );
    let l = status_of(&cluster, &leader_id).expect("the leader's record");
    assert_eq!(l["state"], "Validating", "{l}");
    assert_eq!(l["may_take_over"], false, "{l}");
    cluster.nodes[standby].signal(Signal::SIGTERM);
    cluster.nodes[standby].wait_exit(LIMIT).must();
    // Its last record was written before it exited.
    let n = status_of(&cluster, &id).expect("the stopped node's record");
    assert_eq!(n["state"], "Shutdown", "{n}");
    assert_eq!(n["may_take_over"], false, "{n}");
}

/// Waits until the chain decided a block after `after_ms`, so that every height up to then is
/// decided (a skipped height counts only once a later block is in), and returns what our
/// account was assigned and missed in `[from_ms, after_ms)`.
fn missed_until(cluster: &Cluster, from_ms: u64, after_ms: u64) -> Missed {
    wait::until(
        LIMIT,
        "the chain to decide a block after the hand-over",
        || {
            cluster
                .chain_log()
                .iter()
                .any(|l| l.produced && l.time_ms > after_ms)
                .then_some(())
                .ok_or("no block yet")
        },
    );
    cluster.missed_assigned(from_ms, after_ms)
}

#[test]
fn switchover_in_a_window_hot_swaps_without_missing_an_assigned_block() {
    let (cluster, leader, standby) = steady_pair(Opts::test().mode("hot-swap"));
    let (old, to) = (
        cluster.nodes[leader].id.clone(),
        cluster.nodes[standby].id.clone(),
    );
    let t0 = now_ms();
    let (code, out) = cluster.switchover_in_window(standby, "60s").must();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("switched over: {old} -> {to}")),
        "{out}"
    );
    let first_new = cluster.wait_for_signing(standby, t0, LIMIT).must();
    cluster.wait_state(leader, "Voting", LIMIT).must();
    let m = missed_until(&cluster, t0, now_ms());
    // The hand-over ran inside a maintenance window of our account: no block of ours was
    // skipped. (Chunks are reported by the bench; the window covers them too.)
    assert_eq!(m.blocks_missed, 0, "{m:?}");
    assert_eq!(m.chunks_missed, 0, "{m:?}");
    cluster.check_stopped_before(leader, first_new).must();
    cluster.check_no_double_signing().must();
    let gap = kuutamod_bench::scenario::signing_gap(&cluster.report().entries, &old, t0);
    eprintln!("switchover: signing gap {gap:?} ms, {m:?}");
}

#[test]
fn pause_holds_through_a_leader_neard_crash_and_resume_restores_failover() {
    let (cluster, leader, standby) = steady_pair(Opts::test());
    cluster.pause(LIMIT).must();
    let pid = cluster.nodes[leader].neard_pid().expect("leader's neard");
    let crash = now_ms();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill neard");
    // Paused: nobody takes over and no neard is restarted, for longer than a TTL.
    wait::holds(Duration::from_secs(7), "no takeover while paused", || {
        let validating = cluster
            .states()
            .iter()
            .filter(|s| s.as_deref() == Ok("Validating"))
            .count();
        let signed = cluster.entries().iter().any(|e| e.time_ms > crash);
        if cluster.nodes[standby].state().as_deref() == Ok("Validating") || signed {
            Err(format!(
                "validating {validating}, signed after the crash {signed}"
            ))
        } else {
            Ok(())
        }
    });
    assert_eq!(
        cluster.nodes[leader].neard_pid(),
        None,
        "neard restarted while paused"
    );
    let (code, out) = cluster.kuutamoctl(&["resume"]).must();
    assert_eq!(code, 0, "{out}");
    let resumed = now_ms();
    let now_leader = cluster.wait_for_leader(LIMIT).must();
    cluster.wait_for_signing(now_leader, resumed, LIMIT).must();
    cluster.check_no_double_signing().must();
}

#[test]
fn a_priority_zero_node_never_validates_while_another_synced_node_exists() {
    priority_zero(Spec::new(2, ACCOUNT, Opts::test()));
}

/// The same with the lock in etcd (one member).
#[test]
fn on_etcd_a_priority_zero_node_never_validates_while_another_synced_node_exists() {
    priority_zero(Spec::new(2, ACCOUNT, Opts::test()).etcd(None));
}

fn priority_zero(spec: Spec) {
    let mut cluster = spec_cluster(spec.node_env(1, "KUUTAMO_PRIORITY", "0"));
    cluster.start_all().must();
    let mut low_validated = false;
    let mut watch = |cluster: &Cluster| {
        low_validated |= cluster.nodes[1].state().as_deref() == Ok("Validating");
    };
    let leader = cluster.wait_for_leader(LIMIT).must();
    assert_eq!(leader, 0, "the priority-0 node took the lock");
    cluster.wait_state(1, "Voting", LIMIT).must();
    let m = cluster.nodes[1].metrics().expect("metrics");
    assert_eq!(m["kuutamod_priority"], 0.0);
    assert_eq!(m["kuutamod_may_take_over"], 0.0);
    // The leader's neard crashes: node0 steps down and restarts it; node1, synced and free to
    // take the released lock, must leave it to node0.
    let pid = cluster.nodes[0].neard_pid().expect("node0's neard");
    let crash = now_ms();
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill neard");
    wait::until(LIMIT, "node0 to validate and sign again", || {
        watch(&cluster);
        if cluster.nodes[0].state().as_deref() == Ok("Validating") && cluster.signed_after(0, crash)
        {
            Ok(())
        } else {
            Err(cluster.describe())
        }
    });
    assert!(!low_validated, "node1 (priority 0) validated");
    assert!(
        !cluster
            .report()
            .intervals
            .contains_key(&cluster.nodes[1].id),
        "node1 (priority 0) signed"
    );
    cluster.check_no_double_signing().must();
}

/// Runs kuutamoctl with only `env` in its environment; returns its exit code, stdout, stderr.
fn ctl_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(kuutamoctl_bin())
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("kuutamoctl");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn options_go_after_the_command_and_consul_is_found_as_the_consul_cli_finds_it() {
    let cluster = cluster(1, Opts::test());
    let url = cluster.servers.url();
    let nobody = format!("127.0.0.1:{}", free_port());
    // Every option after the command.
    let (code, out, err) = ctl_env(
        &[
            "active-validator",
            "--consul-url",
            &url,
            "--account-id",
            ACCOUNT,
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("no active validator"), "{out}{err}");
    // CONSUL_HTTP_ADDR, without a scheme as the consul CLI takes it.
    let addr = url.trim_start_matches("http://");
    let (code, out, err) = ctl_env(
        &["active-validator"],
        &[("CONSUL_HTTP_ADDR", addr), ("KUUTAMO_ACCOUNT_ID", ACCOUNT)],
    );
    assert_eq!(code, 1, "{out}{err}");
    // kuutamoctl's own variable wins over the consul CLI's.
    let (code, out, err) = ctl_env(
        &["active-validator"],
        &[
            ("CONSUL_HTTP_ADDR", nobody.as_str()),
            ("KUUTAMO_CONSUL_URL", url.as_str()),
            ("KUUTAMO_ACCOUNT_ID", ACCOUNT),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let (code, _, err) = ctl_env(
        &["active-validator"],
        &[
            ("CONSUL_HTTP_ADDR", nobody.as_str()),
            ("KUUTAMO_ACCOUNT_ID", ACCOUNT),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("http://{nobody}/")), "{err}");
    // CONSUL_HTTP_SSL makes it https, as for the consul CLI (the agent speaks http: TLS fails).
    let (code, _, err) = ctl_env(
        &["active-validator"],
        &[
            ("CONSUL_HTTP_ADDR", addr),
            ("CONSUL_HTTP_SSL", "true"),
            ("KUUTAMO_ACCOUNT_ID", ACCOUNT),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&format!("https://{addr}/")), "{err}");
    // CONSUL_CACERT is read (and named when it is not a certificate).
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let (code, _, err) = ctl_env(
        &["status"],
        &[
            ("CONSUL_HTTP_ADDR", addr),
            ("CONSUL_CACERT", junk.to_str().expect("utf-8 path")),
            ("KUUTAMO_ACCOUNT_ID", ACCOUNT),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("CONSUL_CACERT") && err.contains("ca.pem"),
        "{err}"
    );
}

#[test]
fn an_account_consul_knows_nothing_of_is_warned_of_and_not_paused_by_mistake() {
    let cluster = cluster(1, Opts::test());
    let url = cluster.servers.url();
    let env = [
        ("KUUTAMO_CONSUL_URL", url.as_str()),
        ("KUUTAMO_ACCOUNT_ID", "pool.tset.near"),
    ];
    let (code, out, err) = ctl_env(&["status"], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.is_empty(), "no empty table: {out}");
    assert!(
        err.contains("warning") && err.contains("knows nothing of account \"pool.tset.near\""),
        "{err}"
    );
    let (code, out, err) = ctl_env(&["pause"], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nothing was paused"), "{err}");
    let (code, _, err) = ctl_env(&["resume"], &env);
    assert_eq!(code, 1, "{err}");
    // Before a first start, on purpose: --force.
    let (code, out, err) = ctl_env(&["pause", "--force"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = ctl_env(&["status"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("automatic failover: PAUSED"), "{out}");
    let (code, out, err) = ctl_env(&["resume"], &env);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_bad_command_line_exits_64_and_active_validator_help_lists_its_exit_codes() {
    // 2 would read as active-validator's "the holder's session no longer exists".
    let (code, _, err) = ctl_env(&["active-validator", "--jsn"], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("'--jsn'"), "{err}");
    let (code, out, _) = ctl_env(&["active-validator", "--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "Exit status",
        "0  a node holds the lock",
        "1  no node holds the lock",
        "2  the lock names a Consul session that no longer exists",
        "3  Consul could not be asked",
        "64  a bad command line",
    ] {
        assert!(out.contains(needle), "{needle:?} not in:\n{out}");
    }
    let (code, out, _) = ctl_env(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("CONSUL_HTTP_ADDR") && out.contains("CONSUL_CACERT") && out.contains("64"),
        "{out}"
    );
}
