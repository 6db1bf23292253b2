//! The processes the test starts, each stopped on drop even when the test panics (the
//! harness's own kit, `kuutamod_bench`: its process guard, its bounded wait, its Consul
//! launcher): a Consul dev agent with ACLs on (and tokens for the shipped policies), kuutamod;
//! the test's kept directory; neard-sim's `init`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use kuutamod_bench::consul::{Agent, AgentSpec, Ports, Role};
use kuutamod_bench::procs::{neard_sim_bin, OwnedChild};

use super::{read, repo, ACCOUNT, CONSUL_NODE, CONSUL_NODE_PREFIX, MASTER_TOKEN, STEP_LIMIT};

pub(super) use kuutamod_bench::consul::http_get as get;
pub(super) use kuutamod_bench::procs::signal;
pub(super) use kuutamod_bench::wait::must as until;

/// A child process (the harness's [`OwnedChild`]: killed and reaped on drop, even when the
/// test panics) with its log, shown when it exits unexpectedly.
pub(super) struct Proc {
    child: OwnedChild,
    what: String,
    log: PathBuf,
}

impl Proc {
    pub(super) fn spawn(mut cmd: Command, what: &str, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child: OwnedChild::new(child),
            what: what.into(),
            log: log.into(),
        }
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.pid().expect("the process runs")
    }

    /// Panics with the log's tail when the process has exited.
    pub(super) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_status() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.what,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// A Consul dev agent with ACLs on (default deny), on ports chosen for this test (the
/// harness's launcher).
pub(super) struct Consul {
    pub(super) url: String,
    pub(super) agent: Agent,
}

impl Consul {
    pub(super) fn start(dir: &Path) -> Consul {
        let acl = format!(
            "acl {{ enabled = true, default_policy = \"deny\", down_policy = \"extend-cache\", \
             tokens {{ master = \"{MASTER_TOKEN}\", agent = \"{MASTER_TOKEN}\" }} }}"
        );
        let lo = IpAddr::from([127, 0, 0, 1]);
        let mut agent = Agent::start(AgentSpec {
            name: CONSUL_NODE.into(),
            role: Role::Dev,
            bind: lo,
            http_addrs: vec![lo],
            ports: Ports::pick(lo),
            netns: None,
            dir: dir.to_path_buf(),
            hcl: vec![acl],
            token: Some(MASTER_TOKEN.into()),
        })
        .unwrap_or_else(|e| panic!("cannot start Consul: {e:#}"));
        // Ready when it serves KV writes under the master token (the ACL system is up).
        agent
            .ready_or_repick(STEP_LIMIT)
            .unwrap_or_else(|e| panic!("Consul did not start: {e:#}"));
        Consul {
            url: agent.url.clone(),
            agent,
        }
    }

    /// Creates a policy from a contrib file with its placeholders filled in, and a token
    /// holding only that policy. Returns the token's secret.
    pub(super) fn token_for(&self, policy_file: &str, name: &str) -> String {
        let rules = read(&repo().join(policy_file))
            .replace("@ACCOUNT_ID@", ACCOUNT)
            .replace("@NODE_ID@", "node-a")
            .replace("@CONSUL_NODE_PREFIX@", CONSUL_NODE_PREFIX)
            .replace("@CONSUL_NODE@", CONSUL_NODE);
        assert!(!rules.contains('@'), "{policy_file}: a placeholder is left");
        let put = |path: &str, body: serde_json::Value| -> serde_json::Value {
            let resp = http()
                .put(format!("{}{path}", self.url))
                .header("X-Consul-Token", MASTER_TOKEN)
                .body(body.to_string())
                .send()
                .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            assert!(status.is_success(), "PUT {path}: {status} {text}");
            serde_json::from_str(&text).expect("Consul answers JSON")
        };
        put(
            "/v1/acl/policy",
            serde_json::json!({"Name": name, "Rules": rules}),
        );
        let token = put(
            "/v1/acl/token",
            serde_json::json!({"Description": name, "Policies": [{"Name": name}]}),
        );
        token["SecretID"]
            .as_str()
            .expect("a token has a SecretID")
            .to_string()
    }
}

/// The test's directory, kept after the test when `CONTRIB_TEST_KEEP` is set (for its logs).
pub(super) fn scopeguard(dir: tempfile::TempDir) -> Kept {
    Kept(Some(dir))
}

/// See [`scopeguard`].
pub(super) struct Kept(Option<tempfile::TempDir>);

impl Kept {
    pub(super) fn path(&self) -> &Path {
        self.0.as_ref().expect("dir").path()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if std::env::var_os("CONTRIB_TEST_KEEP").is_some() {
            if let Some(d) = self.0.take() {
                let _ = d.keep();
            }
        }
    }
}

/// Runs `neard-sim --home <home> init` for a localnet home with a validator key for ACCOUNT.
pub(super) fn sim_init(home: &Path) {
    let out = Command::new(neard_sim_bin())
        .arg("--home")
        .arg(home)
        .args(["init", "--chain-id", "localnet", "--account-id", ACCOUNT])
        .output()
        .expect("cannot run neard-sim");
    assert!(
        out.status.success(),
        "neard-sim init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
