//! Requests to neard's RPC: `/status`, and the few metrics kuutamod reads from `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::neard::status::{parse, Status};

/// Why a request to neard failed. Each names the URL and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No connection, no answer in time, or the body was cut off.
    #[error("neard {url}: {}", crate::consul::describe_transport(source))]
    Transport {
        /// The URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// An error status.
    #[error("neard {url} answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
    },
    /// An answer that is not what neard sends.
    #[error("neard {url}: {reason}")]
    Garbage {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// The metrics kuutamod reads from neard's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeardMetrics {
    /// `near_largest_target_height`: the largest height neard's doomslug approved or would
    /// approve (its signing horizon).
    pub largest_target: Option<u64>,
    /// `near_config_reloads_total`: successful config reloads (1 after boot).
    pub config_reloads: Option<u64>,
}

/// A client for one neard's RPC address.
#[derive(Debug, Clone)]
pub struct NeardRpc {
    http: reqwest::Client,
    base: String,
}

impl NeardRpc {
    /// A client for `addr`, each request limited to `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
        Ok(NeardRpc {
            http,
            base: format!("http://{addr}"),
        })
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, RpcError> {
        let url = format!("{}{path}", self.base);
        let transport = |source| RpcError::Transport {
            url: url.clone(),
            source,
        };
        let resp = self.http.get(&url).send().await.map_err(transport)?;
        if !resp.status().is_success() {
            return Err(RpcError::Status {
                url,
                status: resp.status(),
            });
        }
        Ok(resp.bytes().await.map_err(transport)?.to_vec())
    }

    /// GET `/status`, parsed.
    pub async fn status(&self) -> Result<Status, RpcError> {
        let body = self.get("/status").await?;
        parse(&body).map_err(|e| RpcError::Garbage {
            url: format!("{}/status", self.base),
            reason: e.to_string(),
        })
    }

    /// GET `/metrics`: the values kuutamod reads.
    pub async fn metrics(&self) -> Result<NeardMetrics, RpcError> {
        let body = self.get("/metrics").await?;
        let text = String::from_utf8_lossy(&body);
        let read = |name| metric(&text, name).and_then(|v| (v >= 0.0).then_some(v as u64));
        Ok(NeardMetrics {
            largest_target: read("near_largest_target_height"),
            config_reloads: read("near_config_reloads_total"),
        })
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
