//! The processes the test starts, each stopped on drop even when the test panics: a Consul
//! dev agent with ACLs on (and tokens for the shipped policies), kuutamod; the test's kept
//! directory; neard-sim's `init`; bounded waits and HTTP reads.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kuutamod_bench::procs::{free_port, neard_sim_bin};

use super::{read, repo, ACCOUNT, CONSUL_NODE, CONSUL_NODE_PREFIX, MASTER_TOKEN, POLL, STEP_LIMIT};

/// A child process killed (SIGKILL) and reaped on drop, even when the test panics.
pub(super) struct Proc {
    pub(super) child: Child,
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
            child,
            what: what.into(),
            log: log.into(),
        }
    }

    pub(super) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Panics with the log's tail when the process has exited.
    pub(super) fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
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

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Polls `f` until it returns `Some`, or panics after `limit` with `what` and the last
/// observation.
pub(super) fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last = String::from("nothing observed yet");
    while start.elapsed() < limit {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(POLL);
    }
    panic!("timed out after {limit:?} waiting for {what}; last: {last}");
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

pub(super) fn get(url: &str) -> Result<String, String> {
    let resp = http().get(url).send().map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().map_err(|e| format!("{url}: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: {status} {body}"))
    }
}

/// A Consul dev agent with ACLs on (default deny), on ports chosen for this test.
pub(super) struct Consul {
    pub(super) url: String,
    pub(super) proc: Proc,
}

impl Consul {
    pub(super) fn start(dir: &Path) -> Consul {
        let consul = kuutamod_bench::consul::consul_bin().expect("consul binary");
        let acl = format!(
            "acl {{ enabled = true, default_policy = \"deny\", down_policy = \"extend-cache\", \
             tokens {{ master = \"{MASTER_TOKEN}\", agent = \"{MASTER_TOKEN}\" }} }}"
        );
        // Retry on a port clash: the ports are free when picked, not reserved.
        for attempt in 0..3 {
            let http_port = free_port();
            let mut cmd = Command::new(&consul);
            cmd.arg("agent")
                .arg("-dev")
                .arg(format!("-node={CONSUL_NODE}"))
                .args(["-bind=127.0.0.1", "-client=127.0.0.1"])
                .arg(format!("-http-port={http_port}"))
                .arg(format!("-serf-lan-port={}", free_port()))
                .arg(format!("-serf-wan-port={}", free_port()))
                .arg(format!("-server-port={}", free_port()))
                .args(["-dns-port=-1", "-grpc-port=-1", "-log-level=warn"])
                .args(["-hcl", "session_ttl_min = \"1s\""])
                .args(["-hcl", &acl]);
            let log = dir.join(format!("consul-{attempt}.log"));
            let mut proc = Proc::spawn(cmd, "consul", &log);
            let url = format!("http://127.0.0.1:{http_port}");
            let start = Instant::now();
            while start.elapsed() < STEP_LIMIT {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                // Ready when the ACL system answers to the master token.
                let ok = http()
                    .get(format!("{url}/v1/acl/token/self"))
                    .header("X-Consul-Token", MASTER_TOKEN)
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    return Consul { url, proc };
                }
                std::thread::sleep(POLL);
            }
            proc.assert_running();
        }
        panic!(
            "Consul did not start in 3 attempts (logs in {})",
            dir.display()
        );
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
