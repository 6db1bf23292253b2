//! Requests to neard's RPC: `/status`, and the few metrics kuutamod reads from `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::doppelganger::Production;
use crate::neard::status::{parse, Status};

/// Why a request to neard failed. Each names the URL and the cause.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No connection, no answer in time, or the body was cut off.
    #[error("neard {url}: {}", crate::http::describe_transport(source))]
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
    /// Our account's production this epoch and this process's own, when neard exports them.
    pub production: Option<Production>,
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

    /// GET `/metrics`: the values kuutamod reads, with `account`'s production.
    pub async fn metrics(&self, account: &str) -> Result<NeardMetrics, RpcError> {
        let body = self.get("/metrics").await?;
        let text = String::from_utf8_lossy(&body);
        Ok(parse_metrics(&text, account))
    }
}

impl NeardRpc {
    /// JSON-RPC `maintenance_windows` (falling back to `EXPERIMENTAL_maintenance_windows`) for
    /// `account`: the height ranges `[start, end)` of the current epoch in which the account
    /// has no block and no chunk to produce.
    pub async fn maintenance_windows(&self, account: &str) -> Result<Vec<(u64, u64)>, RpcError> {
        let mut last = None;
        for method in ["maintenance_windows", "EXPERIMENTAL_maintenance_windows"] {
            match self
                .jsonrpc(method, serde_json::json!({ "account_id": account }))
                .await
            {
                Ok(result) => {
                    return parse_windows(&result).ok_or_else(|| RpcError::Garbage {
                        url: format!("{} ({method})", self.base),
                        reason: format!("not a list of height ranges: {result}"),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RpcError::Garbage {
            url: self.base.clone(),
            reason: "no maintenance_windows method".into(),
        }))
    }

    async fn jsonrpc(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, RpcError> {
        let url = format!("{}/", self.base);
        let body = serde_json::json!({"jsonrpc": "2.0", "id": "kuutamod", "method": method, "params": params});
        let transport = |source| RpcError::Transport {
            url: url.clone(),
            source,
        };
        let resp = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(RpcError::Status {
                url,
                status: resp.status(),
            });
        }
        let answer: serde_json::Value = resp.json().await.map_err(transport)?;
        if let Some(error) = answer.get("error") {
            return Err(RpcError::Garbage {
                url: format!("{url} ({method})"),
                reason: format!("error {error}"),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::Garbage {
                url: format!("{url} ({method})"),
                reason: "no result".into(),
            })
    }
}

/// Height ranges as `[[start, end], ...]` or `[{"start": .., "end": ..}, ...]`.
pub fn parse_windows(v: &serde_json::Value) -> Option<Vec<(u64, u64)>> {
    v.as_array()?
        .iter()
        .map(|w| match w {
            serde_json::Value::Array(a) if a.len() == 2 => Some((a[0].as_u64()?, a[1].as_u64()?)),
            serde_json::Value::Object(o) => {
                Some((o.get("start")?.as_u64()?, o.get("end")?.as_u64()?))
            }
            _ => None,
        })
        .collect()
}

/// The metrics kuutamod reads, from Prometheus text.
pub fn parse_metrics(text: &str, account: &str) -> NeardMetrics {
    let count = |v: f64| (v >= 0.0).then_some(v as u64);
    let read = |name| metric(text, name).and_then(count);
    let labelled = |name| account_metric(text, name, account).and_then(count);
    let production = (|| {
        Some(Production {
            blocks_produced: labelled("near_validators_blocks_produced")?,
            blocks_expected: labelled("near_validators_blocks_expected")?,
            chunks_produced: labelled("near_validators_chunks_produced")?,
            chunks_expected: labelled("near_validators_chunks_expected")?,
            own_blocks: read("near_block_produced_total")?,
            own_chunks: read("near_chunk_produced_total")?,
        })
    })();
    NeardMetrics {
        largest_target: read("near_largest_target_height"),
        config_reloads: read("near_config_reloads_total"),
        production,
    }
}

/// The value of `name{account_id="<account>"}` in Prometheus text (other labels allowed).
pub fn account_metric(text: &str, name: &str, account: &str) -> Option<f64> {
    let label = format!("account_id=\"{account}\"");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let labels = series.strip_prefix(name)?.strip_prefix('{')?;
        labels
            .split(',')
            .any(|kv| kv.trim_end_matches('}') == label)
            .then(|| value.trim().parse().ok())?
    })
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
    fn reads_windows_in_both_shapes() {
        let arrays = serde_json::json!([[1028, 1031], [1034, 1038]]);
        let ranges = serde_json::json!([{"start": 5, "end": 9}]);
        assert_eq!(
            super::parse_windows(&arrays),
            Some(vec![(1028, 1031), (1034, 1038)])
        );
        assert_eq!(super::parse_windows(&ranges), Some(vec![(5, 9)]));
        assert_eq!(super::parse_windows(&serde_json::json!([[1]])), None);
        assert_eq!(super::parse_windows(&serde_json::json!({})), None);
    }

    #[test]
    fn reads_our_account_s_production() {
        let text = "near_validators_blocks_produced{account_id=\"other\"} 9\n\
                    near_validators_blocks_produced{account_id=\"pool\"} 4\n\
                    near_validators_blocks_expected{account_id=\"pool\"} 5\n\
                    near_validators_chunks_produced{account_id=\"pool\",shard_id=\"0\"} 7\n\
                    near_validators_chunks_expected{account_id=\"pool\"} 8\n\
                    near_block_produced_total 2\nnear_chunk_produced_total 3\n\
                    near_largest_target_height 120\n";
        let m = super::parse_metrics(text, "pool");
        assert_eq!(m.largest_target, Some(120));
        assert_eq!(
            m.production,
            Some(super::Production {
                blocks_produced: 4,
                blocks_expected: 5,
                chunks_produced: 7,
                chunks_expected: 8,
                own_blocks: 2,
                own_chunks: 3,
            })
        );
        assert_eq!(super::parse_metrics(text, "nobody").production, None);
    }

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
