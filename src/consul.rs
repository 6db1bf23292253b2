//! A small Consul HTTP client: exactly the calls kuutamod's lock needs.
//!
//! Sessions are created without health checks (`NodeChecks: []`, `Checks: []`): with the default
//! `serfHealth` check a gossip hiccup could invalidate the leader's session long before its TTL,
//! and the safety argument (docs/failover.md) rests on the TTL alone. Every request has a
//! timeout; blocking queries get theirs from their `wait`.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Timeout of every non-blocking Consul request. Short, because the renewer must notice a dead
/// Consul long before the lease runs out; long enough for a Raft write under load.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Extra time a blocking query may take beyond its `wait` (Consul adds up to wait/16 jitter).
const BLOCKING_SLACK: Duration = Duration::from_secs(5);

/// Consul errors that callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The session does not exist (any more): renew answered 404, or acquire was refused because
    /// the session is invalid.
    #[error("Consul session {0} no longer exists")]
    SessionGone(String),
    /// Consul could not be reached or did not answer in time.
    #[error("Consul at {url} is unreachable: {source}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// Consul answered with an error status or an unexpected body.
    #[error("Consul at {url} answered {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The body, cut short.
        body: String,
    },
    /// The answer could not be parsed.
    #[error("Consul at {url} sent an unexpected answer: {reason}")]
    Garbage {
        /// The endpoint.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

/// The value kuutamod stores in the leader key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderValue {
    /// Host name of the leader.
    #[serde(rename = "Hostname")]
    pub hostname: String,
    /// kuutamod node id of the leader.
    #[serde(rename = "NodeId")]
    pub node_id: String,
}

/// A KV entry as Consul returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KvEntry {
    /// The key.
    #[serde(rename = "Key")]
    pub key: String,
    /// Base64 of the value.
    #[serde(rename = "Value", default)]
    pub value: Option<String>,
    /// The session holding the lock, if any.
    #[serde(rename = "Session", default)]
    pub session: Option<String>,
    /// How often the lock was acquired.
    #[serde(rename = "LockIndex", default)]
    pub lock_index: u64,
}

impl KvEntry {
    /// The decoded value, when it is a kuutamod leader value.
    pub fn leader(&self) -> Option<LeaderValue> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(self.value.as_deref()?)
            .ok()?;
        serde_json::from_slice(&raw).ok()
    }
}

/// Session information.
#[derive(Debug, Clone, Deserialize)]
pub struct SessionInfo {
    /// Session id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Session name (kuutamod: the node id).
    #[serde(rename = "Name", default)]
    pub name: String,
    /// TTL as Consul writes it (`30s`).
    #[serde(rename = "TTL", default)]
    pub ttl: String,
}

/// The client.
#[derive(Debug, Clone)]
pub struct Consul {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Consul {
    /// A client for the agent at `base` (e.g. `http://localhost:8500`), sending `token` as
    /// `X-Consul-Token` when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Consul {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>), ConsulError> {
        let url = self.url(path);
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(token) = &self.token {
            req = req.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let unreachable = |source| ConsulError::Unreachable {
            url: url.clone(),
            source,
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(unreachable)?.to_vec();
        Ok((status, headers, body))
    }

    fn status_error(&self, path: &str, status: reqwest::StatusCode, body: &[u8]) -> ConsulError {
        ConsulError::Status {
            url: self.url(path),
            status,
            body: String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string(),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &[u8],
    ) -> Result<T, ConsulError> {
        serde_json::from_slice(body).map_err(|e| ConsulError::Garbage {
            url: self.url(path),
            reason: e.to_string(),
        })
    }

    /// Creates a session named `name` with `ttl`, `Behavior: delete`, `LockDelay: 0` and no
    /// health checks. Returns its id.
    pub async fn create_session(&self, name: &str, ttl: Duration) -> Result<String, ConsulError> {
        let path = "/v1/session/create";
        let body = serde_json::json!({
            "Name": name,
            "TTL": crate::duration::consul(ttl),
            "Behavior": "delete",
            "LockDelay": "0s",
            "NodeChecks": [],
            "Checks": [],
        });
        let (status, _, body) = self
            .send(
                reqwest::Method::PUT,
                path,
                Some(body.to_string().into_bytes()),
                REQUEST_TIMEOUT,
            )
            .await?;
        if !status.is_success() {
            return Err(self.status_error(path, status, &body));
        }
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = self.parse(path, &body)?;
        Ok(created.id)
    }

    /// Renews a session. Returns the TTL Consul now applies (it may be higher than requested
    /// under load), or [`ConsulError::SessionGone`].
    pub async fn renew(&self, id: &str) -> Result<Option<Duration>, ConsulError> {
        let path = format!("/v1/session/renew/{id}");
        let (status, _, body) = self
            .send(reqwest::Method::PUT, &path, None, REQUEST_TIMEOUT)
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ConsulError::SessionGone(id.to_string()));
        }
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        let sessions: Vec<SessionInfo> = self.parse(&path, &body)?;
        match sessions.first() {
            None => Err(ConsulError::SessionGone(id.to_string())),
            Some(s) => Ok(crate::duration::parse(&s.ttl).ok()),
        }
    }

    /// Destroys a session; its locks are released (with `Behavior: delete`, its keys deleted).
    pub async fn destroy_session(&self, id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/session/destroy/{id}");
        let (status, _, body) = self
            .send(reqwest::Method::PUT, &path, None, REQUEST_TIMEOUT)
            .await?;
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        Ok(())
    }

    /// Session info, or `None` if the session does not exist.
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>, ConsulError> {
        let path = format!("/v1/session/info/{id}");
        let (status, _, body) = self
            .send(reqwest::Method::GET, &path, None, REQUEST_TIMEOUT)
            .await?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        let sessions: Option<Vec<SessionInfo>> = self.parse(&path, &body)?;
        Ok(sessions.and_then(|s| s.into_iter().next()))
    }

    /// Tries to acquire `key` for session `id` with `value`. `Ok(true)` if this session holds the
    /// lock now; `Ok(false)` if another session holds it. An invalid session gives
    /// [`ConsulError::SessionGone`].
    pub async fn acquire(
        &self,
        key: &str,
        id: &str,
        value: &LeaderValue,
    ) -> Result<bool, ConsulError> {
        let path = format!("/v1/kv/{key}?acquire={id}");
        let body = serde_json::to_vec(value).map_err(|e| ConsulError::Garbage {
            url: self.url(&path),
            reason: e.to_string(),
        })?;
        let (status, _, body) = self
            .send(reqwest::Method::PUT, &path, Some(body), REQUEST_TIMEOUT)
            .await?;
        if status == reqwest::StatusCode::INTERNAL_SERVER_ERROR
            && String::from_utf8_lossy(&body).contains("invalid session")
        {
            return Err(ConsulError::SessionGone(id.to_string()));
        }
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        self.parse(&path, &body)
    }

    /// Reads `key`. With `index` (and `wait`), a blocking query that returns when the key changes
    /// past `index` or `wait` passes. Returns the entry (None if absent) and Consul's index.
    pub async fn get_key(
        &self,
        key: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(Option<KvEntry>, u64), ConsulError> {
        let (path, timeout) = match blocking {
            Some((index, wait)) => (
                format!(
                    "/v1/kv/{key}?index={index}&wait={}",
                    crate::duration::consul(wait)
                ),
                wait + wait / 16 + BLOCKING_SLACK,
            ),
            None => (format!("/v1/kv/{key}"), REQUEST_TIMEOUT),
        };
        let (status, headers, body) = self
            .send(reqwest::Method::GET, &path, None, timeout)
            .await?;
        let index = headers
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok((None, index));
        }
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        let entries: Vec<KvEntry> = self.parse(&path, &body)?;
        Ok((entries.into_iter().next(), index))
    }
}
