//! A small etcd v3 client over etcd's JSON gateway (`/v3/...`, served by every etcd >= 3.4 on
//! its client port): exactly the calls kuutamod's lock needs, the methods of
//! [`LockStore`](crate::lock_store::LockStore) (which it implements) with the same error
//! semantics as [`crate::consul::Consul`], so that [`crate::store::Store`] can hand either to
//! the supervisor's conductor, kuutamoctl and `kuutamod --check`.
//!
//! # The lock on etcd
//!
//! etcd has no sessions that hold keys and keep their values; it has leases, and a lease's keys
//! are *deleted* when it ends. So a Consul session is an etcd **lease** (granted with the TTL,
//! kept alive by `renew`, revoked by `destroy_session`), and the lock key is two keys:
//!
//! - the **record** at the lock key itself (`kuutamod-leader/<account>`), attached to no lease:
//!   it outlives every lease, as a Consul key with `Behavior: release` keeps its value when its
//!   session ends;
//! - the **holder** at `<lock key>/holder` ([`holder_key`]), attached to the holder's lease, its
//!   value the lease id: etcd deletes it when the lease expires or is revoked, which is exactly
//!   Consul releasing the key (the value kept, no session).
//!
//! Both are written by one transaction, guarded by revision comparisons: an acquisition or a
//! heartbeat compares the record's `mod_revision` with the index this node last saw or wrote
//! (or `create_revision` 0: it does not exist), and the holder with our lease id (or
//! `create_revision` 0: nobody holds it), then puts both; a release compares the same and puts
//! the record and deletes the holder. The "index" kuutamod checks is the record's
//! `mod_revision`, which only these transactions (and outsiders' writes) change, never the end
//! of a lease. `docs/failover.md` ("etcd") argues why the safety argument holds unchanged.
//!
//! A blocking query is a watch from the revision after the one last read (it misses no change
//! after it), used only as a wake-up: when a watched key changes, when the watch is cancelled
//! (its start revision compacted away) or when the wait ends, the keys are read afresh with a
//! linearizable read and that read's revision is the index returned. A store whose revision is
//! below the index asked for (a restored snapshot) answers at once with its lower revision, so
//! the caller sees the index go backwards, as with a rewound Consul.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::consul::{KvEntry, SessionInfo};
use crate::lock_store::StoreError;

pub mod calls;
pub mod wire;

use wire::{
    b64, put, txn, ErrorAnswer, KeepAliveMessage, LeaseGrant, RangeResponse, TimeToLive,
    TxnResponse, WatchMessage,
};

/// Timeout of every non-blocking etcd request: the same as Consul's, for the same reason (the
/// lease must notice a dead store long before it runs out).
pub const REQUEST_TIMEOUT: Duration = crate::consul::REQUEST_TIMEOUT;

/// Extra time a blocking query may take beyond its `wait` (the fresh read after the watch).
const BLOCKING_SLACK: Duration = Duration::from_secs(5);

/// The holder key of lock key `key`: attached to the holder's lease, deleted with it.
pub fn holder_key(key: &str) -> String {
    format!("{key}/holder")
}

/// A lease id as kuutamod shows it (and `etcdctl lease` takes it): 16 hex digits.
pub fn lease_name(id: i64) -> String {
    format!("{:016x}", id as u64)
}

/// The lease id a session name stands for (`None`: not one of ours).
pub fn lease_id(session: &str) -> Option<i64> {
    u64::from_str_radix(session, 16).ok().map(|v| v as i64)
}

/// TLS settings for `https://` endpoints: a CA to trust, and a client certificate and key.
#[derive(Debug, Clone, Default)]
pub struct Tls<'a> {
    /// PEM CA bundle that signed the members' certificates.
    pub ca_file: Option<&'a Path>,
    /// PEM client certificate (etcd's `--client-cert-auth`).
    pub cert_file: Option<&'a Path>,
    /// PEM private key of the client certificate.
    pub key_file: Option<&'a Path>,
}

/// User and password for etcd's authentication (the password is never logged or shown).
#[derive(Clone)]
pub struct Credentials {
    /// The etcd user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <hidden> }}",
            self.user
        )
    }
}

/// The client. Clones share the endpoint rotation and the auth token.
#[derive(Debug, Clone)]
pub struct Etcd {
    http: reqwest::Client,
    endpoints: Arc<Vec<String>>,
    /// The endpoint requests go to; moves on to the next after a transport failure.
    current: Arc<AtomicUsize>,
    credentials: Option<Arc<Credentials>>,
    /// The auth token of the last authentication (etcd's simple tokens expire: renewed when
    /// etcd says it is invalid).
    token: Arc<Mutex<Option<String>>>,
}

/// Reads a PEM file named in the message as `what`.
fn read_pem(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read the etcd {what} {}: {e}", path.display()))
}

impl Etcd {
    /// A client for the members at `endpoints` (`http://` or `https://` client URLs), with
    /// `tls` for https and `credentials` for etcd's authentication. Every file is read and
    /// checked here: an error names the file and what is wrong with it.
    pub fn new(
        endpoints: &[String],
        tls: Tls<'_>,
        credentials: Option<Credentials>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no etcd endpoint given");
        let mut builder = reqwest::Client::builder()
            .connect_timeout(REQUEST_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(path) = tls.ca_file {
            let pem = read_pem("CA file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "the etcd CA file {} is not a PEM certificate: {e}",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                !certs.is_empty(),
                "the etcd CA file {} holds no PEM certificate",
                path.display()
            );
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        match (tls.cert_file, tls.key_file) {
            (Some(cert), Some(key)) => {
                let mut pem = read_pem("client certificate file", cert)?;
                let key_pem = read_pem("client key file", key)?;
                anyhow::ensure!(
                    String::from_utf8_lossy(&key_pem).contains("PRIVATE KEY-----"),
                    "the etcd client key file {} holds no PEM private key",
                    key.display()
                );
                anyhow::ensure!(
                    String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
                    "the etcd client certificate file {} holds no PEM certificate",
                    cert.display()
                );
                pem.push(b'\n');
                pem.extend_from_slice(&key_pem);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "the etcd client certificate {} and key {} do not make a TLS identity: {e}",
                        cert.display(),
                        key.display()
                    )
                })?;
                builder = builder.identity(identity);
            }
            (Some(cert), None) => anyhow::bail!(
                "the etcd client certificate {} has no key file: set KUUTAMO_ETCD_KEY_FILE too",
                cert.display()
            ),
            (None, Some(key)) => anyhow::bail!(
                "the etcd client key {} has no certificate file: set KUUTAMO_ETCD_CERT_FILE too",
                key.display()
            ),
            (None, None) => {}
        }
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
        Ok(Etcd {
            http,
            endpoints: Arc::new(
                endpoints
                    .iter()
                    .map(|e| e.trim_end_matches('/').to_string())
                    .collect(),
            ),
            current: Arc::new(AtomicUsize::new(0)),
            credentials: credentials.map(Arc::new),
            token: Arc::new(Mutex::new(None)),
        })
    }

    /// The endpoints, in order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn endpoint(&self) -> (usize, &str) {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        (i, &self.endpoints[i])
    }

    /// After a transport failure at endpoint `i`, the next request goes to the next one.
    fn rotate(&self, i: usize) {
        let next = (i + 1) % self.endpoints.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint().1, path)
    }

    fn cached_token(&self) -> Option<String> {
        self.token.lock().map(|t| t.clone()).unwrap_or(None)
    }

    fn set_token(&self, token: Option<String>) {
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
    }

    /// Sends one POST to the current endpoint; a transport failure moves on to the next one.
    async fn post(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
        token: Option<&str>,
    ) -> Result<(String, reqwest::Response), StoreError> {
        let (i, base) = self.endpoint();
        let url = format!("{base}{path}");
        let mut req = self
            .http
            .post(&url)
            .timeout(timeout)
            .header("Content-Type", "application/json")
            // A watch on a member that lost its leader is cancelled instead of waiting in
            // silence (etcd's `WithRequireLeader`; grpc-gateway forwards the header as gRPC
            // metadata).
            .header("Grpc-Metadata-hasleader", "true")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.header("Authorization", t);
        }
        match req.send().await {
            Ok(resp) => Ok((url, resp)),
            Err(source) => {
                self.rotate(i);
                Err(StoreError::Unreachable { url, source })
            }
        }
    }

    /// The token to send: the cached one, else a new authentication (none without
    /// credentials, or when etcd's authentication is off).
    async fn token(&self) -> Result<Option<String>, StoreError> {
        let Some(c) = &self.credentials else {
            return Ok(None);
        };
        if let Some(t) = self.cached_token() {
            return Ok(Some(t));
        }
        let path = "/v3/auth/authenticate";
        let body = json!({"name": c.user, "password": c.password});
        let (url, resp) = self.post(path, &body, REQUEST_TIMEOUT, None).await?;
        let status = resp.status();
        let bytes = self.bytes(&url, resp).await?;
        if !status.is_success() {
            let e: ErrorAnswer = serde_json::from_slice(&bytes).unwrap_or_default();
            if e.text().contains("authentication is not enabled") {
                return Ok(None);
            }
            return Err(StoreError::Denied {
                url,
                reason: format!("user {:?}: {}", c.user, error_text(&e, &bytes)),
            });
        }
        #[derive(serde::Deserialize)]
        struct Authenticated {
            token: String,
        }
        let a: Authenticated = parse(&url, &bytes)?;
        self.set_token(Some(a.token.clone()));
        Ok(Some(a.token))
    }

    async fn bytes(&self, url: &str, resp: reqwest::Response) -> Result<Vec<u8>, StoreError> {
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|source| StoreError::Unreachable {
                url: url.to_string(),
                source,
            })
    }

    /// One request with authentication: on an expired or unknown token (etcd's simple tokens
    /// live five minutes by default), authenticates again and retries once. Returns the URL
    /// asked and the response, whose status is a success.
    async fn request(
        &self,
        path: &str,
        body: &Value,
        timeout: Duration,
    ) -> Result<(String, reqwest::Response), StoreError> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let (url, resp) = self.post(path, body, timeout, token.as_deref()).await?;
            if resp.status().is_success() {
                return Ok((url, resp));
            }
            let status = resp.status();
            let bytes = self.bytes(&url, resp).await?;
            let e: ErrorAnswer = serde_json::from_slice(&bytes).unwrap_or_default();
            let text = error_text(&e, &bytes);
            if e.code == wire::CODE_UNAUTHENTICATED && self.credentials.is_some() && !retried {
                self.set_token(None);
                retried = true;
                continue;
            }
            if e.code == wire::CODE_PERMISSION_DENIED
                || e.code == wire::CODE_UNAUTHENTICATED
                || text.contains("permission denied")
                || text.contains("user name is empty")
            {
                return Err(StoreError::Denied { url, reason: text });
            }
            return Err(StoreError::Status {
                url,
                status,
                body: text,
            });
        }
    }

    /// A request whose whole answer is one JSON value of type `T`.
    async fn call<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, StoreError> {
        let (url, resp) = self.request(path, body, REQUEST_TIMEOUT).await?;
        let bytes = self.bytes(&url, resp).await?;
        parse(&url, &bytes)
    }

    async fn run_txn(&self, body: &Value) -> Result<TxnResponse, StoreError> {
        self.call(calls::TXN, body).await
    }

    /// Grants a lease of `ttl` (whole seconds, rounded up; etcd may raise it to its minimum)
    /// and returns its id as kuutamod names sessions ([`lease_name`]). etcd's leases have no
    /// name: `name` is not kept.
    pub async fn create_session(&self, _name: &str, ttl: Duration) -> Result<String, StoreError> {
        let g: LeaseGrant = self.call(calls::GRANT, &calls::grant(ttl)).await?;
        calls::granted(&self.url(calls::GRANT), &g)
    }

    /// Keeps a lease alive, or [`StoreError::SessionGone`].
    pub async fn renew(&self, id: &str) -> Result<(), StoreError> {
        let Some(lease) = lease_id(id) else {
            return Err(StoreError::SessionGone(id.to_string()));
        };
        let (url, resp) = self
            .request(
                calls::KEEPALIVE,
                &calls::lease_request(lease),
                REQUEST_TIMEOUT,
            )
            .await?;
        let bytes = self.bytes(&url, resp).await?;
        // A stream of messages, one per line; ours is the first.
        let first = bytes
            .split(|b| *b == b'\n')
            .find(|l| !l.iter().all(u8::is_ascii_whitespace))
            .unwrap_or_default();
        let m: KeepAliveMessage = parse(&url, first)?;
        calls::kept_alive(&url, id, &m, first)
    }

    /// Revokes a lease: etcd deletes its holder key (the record stays). A lease that no
    /// longer exists is not an error (as Consul's destroy of an unknown session).
    pub async fn destroy_session(&self, id: &str) -> Result<(), StoreError> {
        let Some(lease) = lease_id(id) else {
            return Ok(());
        };
        calls::revoked(
            self.call::<Value>(calls::REVOKE, &calls::lease_request(lease))
                .await,
        )
    }

    /// The lease as a session, or `None` if it does not exist. etcd knows no name or node of
    /// a lease: those stay empty.
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>, StoreError> {
        let Some(lease) = lease_id(id) else {
            return Ok(None);
        };
        let t: TimeToLive = self
            .call(calls::TIME_TO_LIVE, &calls::lease_request(lease))
            .await?;
        Ok(calls::session_of(id, &t))
    }

    /// One transaction ([`calls::lock`]): the record at `key` has `mod_revision` `expected`
    /// (`None`: it does not exist), and the holder key names our lease or does not exist; then
    /// both are written (the record with `value`, the holder attached to our lease). Returns
    /// the new revision, the record's `mod_revision`; [`StoreError::Rejected`] when a
    /// comparison failed, [`StoreError::SessionGone`] when the lease does not exist.
    ///
    /// With `expected` `None` the holder is not compared: without a record there is no lock
    /// (as a Consul key that does not exist has no session), and a holder key left behind by
    /// an outsider's delete of the record is replaced.
    pub async fn check_and_lock(
        &self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> Result<u64, StoreError> {
        let body = calls::lock(key, expected, session, value)?;
        let answer = self.run_txn(&body).await;
        calls::locked(&self.url(calls::TXN), expected, session, answer)
    }

    /// Releases the lock at `key` held by lease `session`, writing the record `value`, in one
    /// transaction that first checks that the record is at `expected` and the holder is our
    /// lease; the holder key is deleted (the lease lives on). `Ok(false)`: it was not, and
    /// nothing was written.
    pub async fn release(
        &self,
        key: &str,
        expected: u64,
        session: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let body = calls::release(key, expected, session, value);
        Ok(self.run_txn(&body).await?.succeeded)
    }

    /// Reads the lock key `key` (record and holder, at one revision). With `blocking` (index
    /// and wait), waits first until the record or holder changes after `index` or the wait
    /// passes. Every read is linearizable (`consistent` is etcd's default read). Returns the
    /// entry (`None` when there is no record) as Consul shows a key (value, session, the
    /// record's `mod_revision` as its index) and the read's revision.
    pub async fn get_key(
        &self,
        key: &str,
        blocking: Option<(u64, Duration)>,
        _consistent: bool,
    ) -> Result<(Option<KvEntry>, u64), StoreError> {
        if let Some((index, wait)) = blocking {
            let end = calls::key_watch_end(key);
            self.wait_for_change(key, &end, index, wait, |k| calls::key_relevant(key, k))
                .await?;
        }
        let answer = self.run_txn(&calls::read_key(key)).await?;
        Ok(calls::key_entry(key, &answer))
    }

    /// Reads every key under `prefix`, after waiting for a change past `index` when
    /// `blocking`. Returns the entries and the read's revision.
    pub async fn get_prefix(
        &self,
        prefix: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64), StoreError> {
        if let Some((index, wait)) = blocking {
            let end = wire::prefix_end(prefix.as_bytes());
            self.wait_for_change(prefix, &end, index, wait, |_| true)
                .await?;
        }
        let r: RangeResponse = self.call(calls::RANGE, &calls::read_prefix(prefix)).await?;
        Ok(calls::prefix_entries(&r))
    }

    /// Waits until a key in `[key, end)` that `relevant` accepts changes after revision
    /// `index`, or the watch is cancelled (its start revision compacted away, the member lost
    /// its leader), or the store's revision is below `index` (a restored snapshot), or `wait`
    /// passes ([`calls::watch_wakes`]). The caller reads afresh after any of these.
    async fn wait_for_change(
        &self,
        key: &str,
        end: &[u8],
        index: u64,
        wait: Duration,
        relevant: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        let create = calls::watch(key, end, index);
        let watch = async {
            let (url, mut resp) = self
                .request(calls::WATCH, &create, wait + BLOCKING_SLACK)
                .await?;
            let mut buffer = Vec::new();
            loop {
                let chunk = match resp.chunk().await {
                    Ok(Some(c)) => c,
                    // The stream ended (the member went away): read afresh.
                    Ok(None) => return Ok(()),
                    Err(source) => return Err(StoreError::Unreachable { url, source }),
                };
                buffer.extend_from_slice(&chunk);
                while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=at).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let m: WatchMessage = parse(&url, &line)?;
                    if let Some(e) = m.error {
                        return Err(StoreError::Status {
                            url,
                            status: reqwest::StatusCode::OK,
                            body: format!("the watch failed: {e}"),
                        });
                    }
                    let Some(r) = m.result else { continue };
                    if calls::watch_wakes(&r, index, &relevant) {
                        return Ok(());
                    }
                }
            }
        };
        match tokio::time::timeout(wait, watch).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// Writes `value` to `key` with check-and-set: `cas` 0 creates it only if absent, another
    /// revision replaces it only if its `mod_revision` is still that. `Ok(false)`: the key
    /// changed meanwhile.
    pub async fn put_cas(&self, key: &str, value: &[u8], cas: u64) -> Result<bool, StoreError> {
        Ok(self
            .run_txn(&calls::put_cas(key, value, cas))
            .await?
            .succeeded)
    }

    /// Writes `value` to `key` without any lock (records that are not the lock).
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.call::<Value>(calls::PUT, &calls::put_plain(key, value))
            .await
            .map(|_| ())
    }

    /// Authenticates now (`kuutamod --check`): `Ok(true)` with a fresh token, `Ok(false)`
    /// without credentials or when etcd's authentication is off.
    pub async fn authenticate(&self) -> Result<bool, StoreError> {
        self.set_token(None);
        Ok(self.token().await?.is_some())
    }

    /// Whether a read without any credentials is refused (etcd's authentication is on).
    pub async fn anonymous_refused(&self) -> Result<bool, StoreError> {
        let anonymous = Etcd {
            credentials: None,
            token: Arc::new(Mutex::new(None)),
            ..self.clone()
        };
        match anonymous
            .call::<Value>("/v3/kv/range", &json!({"key": b64(b"kuutamod --check")}))
            .await
        {
            Ok(_) => Ok(false),
            Err(StoreError::Denied { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The status of the member at `endpoint` (one of [`Etcd::endpoints`]), asked without
    /// credentials (etcd answers it to anyone), so that a member that answers is told apart
    /// from a user that cannot authenticate.
    pub async fn status_of(&self, endpoint: &str) -> Result<MemberStatus, StoreError> {
        let one = Etcd {
            endpoints: Arc::new(vec![endpoint.to_string()]),
            current: Arc::new(AtomicUsize::new(0)),
            credentials: None,
            token: Arc::new(Mutex::new(None)),
            ..self.clone()
        };
        one.status().await
    }

    /// The member's status (`/v3/maintenance/status`): its version and the Raft leader's
    /// member id (0: none).
    pub async fn status(&self) -> Result<MemberStatus, StoreError> {
        self.call("/v3/maintenance/status", &json!({})).await
    }

    /// Whether the credentials may read `read_keys` and write `write` (a put of each key, the
    /// holder's with `lease`), asked without changing anything (`kuutamod --check`): the reads
    /// as a range each, the writes as a transaction whose only comparison (a `mod_revision`
    /// below 0) never holds. etcd checks the permissions of every operation of both branches
    /// before it evaluates the comparison, so a denied write answers "permission denied" and
    /// an allowed one answers "not succeeded", writing nothing.
    pub async fn probe(
        &self,
        read_keys: &[&str],
        write: &[(&str, Option<i64>)],
    ) -> Result<(Result<(), String>, Result<(), String>), StoreError> {
        let mut read = Ok(());
        for k in read_keys {
            match self
                .call::<Value>("/v3/kv/range", &json!({"key": b64(k.as_bytes())}))
                .await
            {
                Ok(_) => {}
                Err(StoreError::Denied { reason, .. }) => {
                    read = Err(format!("read {k} ({reason})"));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let never = wire::compare(write[0].0, "MOD", "LESS", json!("0"));
        let puts = write
            .iter()
            .map(|(k, lease)| put(k, b"kuutamod --check probe: never written", *lease))
            .collect();
        let write_keys: Vec<&str> = write.iter().map(|(k, _)| *k).collect();
        let written = match self.run_txn(&txn(vec![never], puts, vec![])).await {
            Ok(t) if !t.succeeded => Ok(()),
            Ok(_) => {
                return Err(StoreError::Garbage {
                    url: self.url("/v3/kv/txn"),
                    reason:
                        "a probe transaction applied, which a mod_revision below 0 must prevent"
                            .into(),
                })
            }
            Err(StoreError::Denied { reason, .. }) => {
                Err(format!("write {} ({reason})", write_keys.join(" and ")))
            }
            Err(e) => return Err(e),
        };
        Ok((read, written))
    }
}

/// A member's status, as `/v3/maintenance/status` answers.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct MemberStatus {
    /// Its header (the member's id).
    #[serde(default)]
    pub header: wire::Header,
    /// The server version.
    #[serde(default)]
    pub version: String,
    /// The Raft leader's member id, as a string (absent or "0": no leader).
    #[serde(default)]
    pub leader: Option<Value>,
}

impl MemberStatus {
    /// Whether the member knows a Raft leader.
    pub fn has_leader(&self) -> bool {
        match &self.leader {
            Some(Value::String(s)) => !s.is_empty() && s != "0",
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            _ => false,
        }
    }
}

fn error_text(e: &ErrorAnswer, bytes: &[u8]) -> String {
    if e.text().is_empty() {
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            .trim()
            .to_string()
    } else {
        e.text().to_string()
    }
}

fn parse<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(body).map_err(|e| StoreError::Garbage {
        url: url.to_string(),
        reason: format!(
            "{e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    })
}

crate::lock_store::forward_lock_store!(Etcd);

#[cfg(test)]
mod tests;
