//! A real Consul dev agent on ports chosen for the test (`kuutamod_bench::consul`).

use std::time::Duration;

/// A running dev agent that accepts session TTLs down to 1 s, killed on drop. A missing
/// `consul` binary fails the test loudly: these tests are about a real Consul.
pub struct ConsulAgent {
    agent: kuutamod_bench::consul::Agent,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl ConsulAgent {
    /// Starts the agent and waits for it to elect itself.
    pub fn start() -> ConsulAgent {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = kuutamod_bench::consul::dev_agent(dir.path(), &[])
            .unwrap_or_else(|e| panic!("cannot start a Consul dev agent: {e:#}"));
        ConsulAgent {
            url: agent.url.clone(),
            agent,
            _dir: dir,
        }
    }
}

impl std::ops::Deref for ConsulAgent {
    type Target = kuutamod_bench::consul::Agent;
    fn deref(&self) -> &Self::Target {
        &self.agent
    }
}

/// A blocking HTTP GET with a short timeout (tests are synchronous); a 404 body counts as an
/// answer, as kuutamod's `/neard-pid` says "not running" that way.
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
