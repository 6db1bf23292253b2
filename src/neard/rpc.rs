//! Requests to neard's RPC: `/status` and the one metric kuutamod reads from `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::neard::status::{parse, Status};

/// A client for one neard's RPC address.
#[derive(Debug, Clone)]
pub struct NeardRpc {
    http: reqwest::Client,
    base: String,
}

impl NeardRpc {
    /// A client for `addr`, each request limited to `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(NeardRpc {
            http,
            base: format!("http://{addr}"),
        })
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("neard {url} failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("neard {url} answered {}", resp.status()));
        }
        Ok(resp
            .bytes()
            .await
            .map_err(|e| format!("neard {url} failed: {e}"))?
            .to_vec())
    }

    /// GET `/status`, parsed.
    pub async fn status(&self) -> Result<Status, String> {
        let body = self.get("/status").await?;
        parse(&body).map_err(|e| format!("{}/status: {e}", self.base))
    }

    /// `near_config_reloads_total` from `/metrics` (successful config reloads, 1 after boot).
    pub async fn config_reloads(&self) -> Result<f64, String> {
        let body = self.get("/metrics").await?;
        metric(&String::from_utf8_lossy(&body), "near_config_reloads_total")
            .ok_or_else(|| format!("{}/metrics has no near_config_reloads_total", self.base))
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_metric() {
        let text = "# HELP near_config_reloads_total x\n# TYPE near_config_reloads_total counter\nnear_config_reloads_total 3\nnear_config_reloads_total_x 9\n";
        assert_eq!(super::metric(text, "near_config_reloads_total"), Some(3.0));
        assert_eq!(super::metric(text, "near_missing"), None);
        assert_eq!(
            super::metric(
                "near_config_reloads_total garbage",
                "near_config_reloads_total"
            ),
            None
        );
    }
}
