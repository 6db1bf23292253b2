//! A small Consul HTTP client: exactly the calls kuutamod's lock needs.
//!
//! Sessions are created without health checks (`NodeChecks: []`, `Checks: []`), with
//! `Behavior: release` (when Consul ends a session the key keeps its value, the last
//! heartbeat, and only loses its holder) and `LockDelay: 0s` (kuutamod's own fence, in
//! [`crate::lease`], decides when a new leader may act, whatever way the old session ended).
//! Acquisitions and heartbeats are transactions that check the key's index before they lock
//! it. Every request has a timeout; blocking queries get theirs from their `wait`.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

/// Timeout of every non-blocking Consul request. Short, because the lease must notice a dead
/// Consul long before it runs out; long enough for a Raft write under load.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Extra time a blocking query may take beyond its `wait` (Consul adds up to wait/16 jitter).
const BLOCKING_SLACK: Duration = Duration::from_secs(5);

mod wire;

pub use crate::lock_store::{KvEntry, SessionInfo};
pub use wire::{TokenInfo, TokenPolicy};

/// The lock store's error type under the name the Consul client has always used.
pub type ConsulError = crate::lock_store::StoreError;

/// The value a probe transaction carries (it is never written; see [`Consul::probe_lock`]).
const PROBE_VALUE: &[u8] = b"kuutamod --check probe: never written";

/// What a token may do, asked without doing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The ACL allows it.
    Allowed,
    /// The ACL denies it: Consul's words.
    Denied(String),
}

/// A probe's answer: may the token read the checked key, and do the write?
///
/// A probe is a transaction that cannot apply: first a check that the key is at index 0, which
/// no key ever is (an existing key's index is its last write's Raft index; a missing key fails
/// the check too), then the write. Consul applies a transaction whole or not at all, and
/// before applying it vets every operation against the token's ACL, naming each one denied
/// ("Permission denied" at its `OpIndex`): the check needs read on its key, the write its own
/// permission. Checked against Consul 1.8.7: an allowed probe answers 409 with the failed
/// check and writes nothing (`tests/contrib/check.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Read on the key the probe checks.
    pub read: Access,
    /// The write (lock or set).
    pub write: Access,
}

/// The client.
#[derive(Debug, Clone)]
pub struct Consul {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

type Answer = (reqwest::StatusCode, reqwest::header::HeaderMap, Vec<u8>);

impl Consul {
    /// A client for the agent at `base` (e.g. `http://localhost:8500`), sending `token` as
    /// `X-Consul-Token` when given.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        Self::with_ca(base, token, None)
    }

    /// Like [`Consul::new`], trusting the PEM certificate(s) in `ca` for an `https` URL (e.g.
    /// Consul's own CA).
    pub fn with_ca(
        base: &str,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read the Consul CA file {}: {e}", path.display())
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "the Consul CA file {} is not a PEM certificate: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                anyhow::bail!(
                    "the Consul CA file {} holds no PEM certificate",
                    path.display()
                );
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
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
    ) -> Result<Answer, ConsulError> {
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
        let body = String::from_utf8_lossy(&body[..body.len().min(200)])
            .trim()
            .to_string();
        if status == reqwest::StatusCode::FORBIDDEN {
            return ConsulError::Denied {
                url: self.url(path),
                reason: body,
            };
        }
        ConsulError::Status {
            url: self.url(path),
            status,
            body,
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

    /// Creates a session named `name` with `ttl`, `Behavior: release`, `LockDelay: 0s` and no
    /// health checks. Returns its id.
    pub async fn create_session(&self, name: &str, ttl: Duration) -> Result<String, ConsulError> {
        let path = "/v1/session/create";
        let body = serde_json::json!({
            "Name": name,
            "TTL": crate::duration::consul(ttl),
            "Behavior": "release",
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

    /// Renews a session, or [`ConsulError::SessionGone`].
    pub async fn renew(&self, id: &str) -> Result<(), ConsulError> {
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
        if sessions.is_empty() {
            return Err(ConsulError::SessionGone(id.to_string()));
        }
        Ok(())
    }

    /// Destroys a session; its locks are released, their values kept.
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

    /// One transaction: check that `key` has index `expected` (`None`: that it does not
    /// exist), then lock it for `session` with `value`. Returns the key's new index;
    /// [`ConsulError::Rejected`] when the check or the lock failed, and
    /// [`ConsulError::SessionGone`] for an invalid session.
    pub async fn check_and_lock(
        &self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> Result<u64, ConsulError> {
        let lock = serde_json::json!({"KV": {
            "Verb": "lock",
            "Key": key,
            "Session": session,
            "Value": base64::engine::general_purpose::STANDARD.encode(value),
        }});
        self.check_then(key, expected, lock).await
    }

    /// A transaction of two operations: check `key`'s index (or that it does not exist), then
    /// `op`. Returns the key's new index.
    async fn check_then(
        &self,
        key: &str,
        expected: Option<u64>,
        op: serde_json::Value,
    ) -> Result<u64, ConsulError> {
        let path = "/v1/txn";
        let check = match expected {
            Some(index) => {
                serde_json::json!({"KV": {"Verb": "check-index", "Key": key, "Index": index}})
            }
            None => serde_json::json!({"KV": {"Verb": "check-not-exists", "Key": key}}),
        };
        let body = serde_json::to_vec(&[check, op]).map_err(|e| ConsulError::Garbage {
            url: self.url(path),
            reason: e.to_string(),
        })?;
        let (status, _, body) = self
            .send(reqwest::Method::PUT, path, Some(body), REQUEST_TIMEOUT)
            .await?;
        #[derive(Deserialize)]
        struct TxnResult {
            #[serde(rename = "KV")]
            kv: Option<KvEntry>,
        }
        #[derive(Deserialize)]
        struct TxnError {
            #[serde(rename = "What", default)]
            what: String,
        }
        #[derive(Deserialize)]
        struct TxnAnswer {
            #[serde(rename = "Results", default)]
            results: Option<Vec<TxnResult>>,
            #[serde(rename = "Errors", default)]
            errors: Option<Vec<TxnError>>,
        }
        if status == reqwest::StatusCode::CONFLICT {
            let answer: TxnAnswer = self.parse(path, &body)?;
            let what = answer
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(|e| e.what)
                .collect::<Vec<_>>()
                .join("; ");
            if let Some(session) = what
                .split("invalid session \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                return Err(ConsulError::SessionGone(session.to_string()));
            }
            return Err(ConsulError::Rejected {
                url: self.url(path),
                what,
            });
        }
        if !status.is_success() {
            return Err(self.status_error(path, status, &body));
        }
        let answer: TxnAnswer = self.parse(path, &body)?;
        answer
            .results
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.kv)
            .map(|kv| kv.modify_index)
            .max()
            .ok_or_else(|| ConsulError::Garbage {
                url: self.url(path),
                reason: "a successful transaction without results".into(),
            })
    }

    /// Releases `key` held by `session`, writing `value`, in one transaction that first
    /// checks the key is at index `expected`. `Ok(false)`: it was not (or not held by
    /// `session`), and nothing was written. A plain `?release=` checks only the session: a
    /// release retried and applied late could release a later term of the same session.
    pub async fn release(
        &self,
        key: &str,
        expected: u64,
        session: &str,
        value: &[u8],
    ) -> Result<bool, ConsulError> {
        let unlock = serde_json::json!({"KV": {
            "Verb": "unlock",
            "Key": key,
            "Session": session,
            "Value": base64::engine::general_purpose::STANDARD.encode(value),
        }});
        match self.check_then(key, Some(expected), unlock).await {
            Ok(_) => Ok(true),
            Err(ConsulError::Rejected { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads `key`. With `blocking` (index and wait), a blocking query that returns when the
    /// key changes past the index or the wait passes; with `consistent`, a read that Consul
    /// answers only after confirming its leadership. Returns the entry (None if absent) and
    /// Consul's index.
    pub async fn get_key(
        &self,
        key: &str,
        blocking: Option<(u64, Duration)>,
        consistent: bool,
    ) -> Result<(Option<KvEntry>, u64), ConsulError> {
        let mut query = Vec::new();
        let timeout = match blocking {
            Some((index, wait)) => {
                query.push(format!("index={index}"));
                query.push(format!("wait={}", crate::duration::consul(wait)));
                wait + wait / 16 + BLOCKING_SLACK
            }
            None => REQUEST_TIMEOUT,
        };
        if consistent {
            query.push("consistent".to_string());
        }
        // No `?` without a query: the URL goes into error messages and logs as it is.
        let path = if query.is_empty() {
            format!("/v1/kv/{key}")
        } else {
            format!("/v1/kv/{key}?{}", query.join("&"))
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

    /// Reads every key under `prefix`, as a blocking query past `index` when given. Returns the
    /// entries (empty if none) and Consul's index.
    pub async fn get_prefix(
        &self,
        prefix: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64), ConsulError> {
        let (path, timeout) = match blocking {
            Some((index, wait)) => (
                format!(
                    "/v1/kv/{prefix}?recurse&index={index}&wait={}",
                    crate::duration::consul(wait)
                ),
                wait + wait / 16 + BLOCKING_SLACK,
            ),
            None => (format!("/v1/kv/{prefix}?recurse"), REQUEST_TIMEOUT),
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
            return Ok((Vec::new(), index));
        }
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        Ok((self.parse(&path, &body)?, index))
    }

    /// Writes `value` to `key` with check-and-set: `cas` 0 creates it only if absent, another
    /// index replaces it only if unchanged. `Ok(false)`: the key changed meanwhile.
    pub async fn put_cas(&self, key: &str, value: &[u8], cas: u64) -> Result<bool, ConsulError> {
        let path = format!("/v1/kv/{key}?cas={cas}");
        let (status, _, body) = self
            .send(
                reqwest::Method::PUT,
                &path,
                Some(value.to_vec()),
                REQUEST_TIMEOUT,
            )
            .await?;
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        self.parse(&path, &body)
    }

    /// Whether this token may read `key` and lock it for `session`, asked without changing
    /// anything (`kuutamod --check`); how, [`Probe`] says.
    pub async fn probe_lock(&self, key: &str, session: &str) -> Result<Probe, ConsulError> {
        let lock = serde_json::json!({"KV": {
            "Verb": "lock",
            "Key": key,
            "Session": session,
            "Value": base64::engine::general_purpose::STANDARD.encode(PROBE_VALUE),
        }});
        self.probe(key, lock).await
    }

    /// Whether this token may read `read_key` and write `key`, asked without changing anything
    /// (`kuutamod --check`); how, [`Probe`] says.
    pub async fn probe_set(&self, read_key: &str, key: &str) -> Result<Probe, ConsulError> {
        let set = serde_json::json!({"KV": {
            "Verb": "set",
            "Key": key,
            "Value": base64::engine::general_purpose::STANDARD.encode(PROBE_VALUE),
        }});
        self.probe(read_key, set).await
    }

    /// The probe transaction ([`Probe`]): a check that `read_key` is at index 0, then `op`.
    async fn probe(&self, read_key: &str, op: serde_json::Value) -> Result<Probe, ConsulError> {
        let path = "/v1/txn";
        let check = serde_json::json!({"KV": {"Verb": "check-index", "Key": read_key, "Index": 0}});
        let body = serde_json::to_vec(&[check, op]).map_err(|e| ConsulError::Garbage {
            url: self.url(path),
            reason: e.to_string(),
        })?;
        let (status, _, body) = self
            .send(reqwest::Method::PUT, path, Some(body), REQUEST_TIMEOUT)
            .await?;
        if status.is_success() {
            return Err(ConsulError::Garbage {
                url: self.url(path),
                reason: "a probe transaction applied, which a check of index 0 must prevent".into(),
            });
        }
        if status != reqwest::StatusCode::CONFLICT {
            return Err(self.status_error(path, status, &body));
        }
        #[derive(Deserialize)]
        struct TxnError {
            #[serde(rename = "OpIndex", default)]
            op_index: usize,
            #[serde(rename = "What", default)]
            what: String,
        }
        #[derive(Deserialize)]
        struct TxnAnswer {
            #[serde(rename = "Errors", default)]
            errors: Option<Vec<TxnError>>,
        }
        let answer: TxnAnswer = self.parse(path, &body)?;
        let errors = answer.errors.unwrap_or_default();
        let access = |index: usize| match errors
            .iter()
            .find(|e| e.op_index == index && e.what.contains("Permission denied"))
        {
            Some(e) => Access::Denied(e.what.clone()),
            None => Access::Allowed,
        };
        Ok(Probe {
            read: access(0),
            write: access(1),
        })
    }

    /// The token's own description and policy names (`/v1/acl/token/self`), `Ok(None)` when
    /// Consul's ACLs are off.
    pub async fn token_self(&self) -> Result<Option<TokenInfo>, ConsulError> {
        let path = "/v1/acl/token/self";
        let (status, _, body) = self
            .send(reqwest::Method::GET, path, None, REQUEST_TIMEOUT)
            .await?;
        // Consul answers 401 "ACL support disabled" when ACLs are off.
        if status == reqwest::StatusCode::UNAUTHORIZED
            && String::from_utf8_lossy(&body).contains("ACL support disabled")
        {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.status_error(path, status, &body));
        }
        self.parse(path, &body).map(Some)
    }

    /// The address of Consul's Raft leader (`/v1/status/leader`), `None` when the servers have
    /// no leader (no quorum).
    pub async fn leader(&self) -> Result<Option<String>, ConsulError> {
        let path = "/v1/status/leader";
        let (status, _, body) = self
            .send(reqwest::Method::GET, path, None, REQUEST_TIMEOUT)
            .await?;
        if !status.is_success() {
            return Err(self.status_error(path, status, &body));
        }
        let leader: String = self.parse(path, &body)?;
        Ok(Some(leader).filter(|l| !l.is_empty()))
    }

    /// Writes `value` to `key` without any lock (for records that are not the lock, such as a
    /// node's status).
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), ConsulError> {
        let path = format!("/v1/kv/{key}");
        let (status, _, body) = self
            .send(
                reqwest::Method::PUT,
                &path,
                Some(value.to_vec()),
                REQUEST_TIMEOUT,
            )
            .await?;
        if !status.is_success() {
            return Err(self.status_error(&path, status, &body));
        }
        Ok(())
    }
}

crate::lock_store::forward_lock_store!(Consul);

#[cfg(test)]
mod tests;
