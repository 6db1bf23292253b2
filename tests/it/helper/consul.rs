//! A real Consul dev agent on ports chosen for the test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait};

/// The `consul` binary: `$CONSUL_BIN`, else `consul` on PATH. Missing Consul fails the test
/// loudly: these tests are about a real Consul.
pub fn consul_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CONSUL_BIN") {
        return p.into();
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("consul"))
            .find(|p| p.is_file())
    });
    found.expect(
        "no `consul` binary: put it on PATH or set CONSUL_BIN (scripts/install-consul.sh fetches one; scripts/test does this)",
    )
}

/// A running dev agent, killed on drop.
pub struct ConsulAgent {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl ConsulAgent {
    /// Starts a dev agent that accepts session TTLs down to 1 s, and waits for its leader.
    pub fn start() -> ConsulAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let http = free_port();
        let log = std::fs::File::create(dir.path().join("consul.log")).expect("log file");
        let child = Command::new(consul_bin())
            .args([
                "agent",
                "-dev",
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
            ])
            .arg(format!("-http-port={http}"))
            .args(["-dns-port=-1", "-grpc-port=-1"])
            .arg(format!("-serf-lan-port={}", free_port()))
            .arg(format!("-serf-wan-port={}", free_port()))
            .arg(format!("-server-port={}", free_port()))
            .args(["-log-level=warn", "-hcl", "session_ttl_min = \"1s\""])
            .arg(format!("-data-dir={}", dir.path().join("data").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("cannot start consul");
        let agent = ConsulAgent {
            child,
            url: format!("http://127.0.0.1:{http}"),
            _dir: dir,
        };
        let leader_url = format!("{}/v1/status/leader", agent.url);
        wait::until(
            Duration::from_secs(30),
            "the Consul dev agent to elect itself",
            || {
                let body = ureq_get(&leader_url)?;
                if body.trim().len() > 2 {
                    Ok(())
                } else {
                    Err(format!("leader is {body:?}"))
                }
            },
        );
        agent
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP GET with a short timeout (tests are synchronous).
pub fn ureq_get(url: &str) -> Result<String, String> {
    let resp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?
        .get(url)
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.text().map_err(|e| e.to_string())?;
    if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
        Ok(body)
    } else {
        Err(format!("{url}: {status}: {body}"))
    }
}
