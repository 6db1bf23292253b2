//! The lock store, as one seam: every call kuutamod makes to the store that holds its lock and
//! its records ([`LockStore`]), the same calls as data ([`StoreOp`], [`StoreReply`]) for code
//! that decides what to ask without doing it, and [`execute`] between the two.
//!
//! Consul ([`crate::consul::Consul`]) and etcd ([`crate::etcd::Etcd`]) implement it, and so
//! does [`crate::store::Store`], whichever of the two the settings name; so do the
//! deterministic simulation's models of Consul and of etcd (`dst/`; the etcd model answers the
//! requests [`crate::etcd::calls`] builds), which is how the simulation runs kuutamod's real
//! supervisor ([`crate::supervisor::conductor`]) against its simulated store.
//! Each method takes `&mut self`: a client that keeps per-call state needs it, a shared client
//! is cloned per call, and a model changes its state in place.
//!
//! What each call means is the contract the safety argument relies on (docs/failover.md, "The
//! lock and its record", and "etcd" for how etcd keeps it): indexes grow with every write, a
//! check-and-lock applies whole or not at all, a session that ends releases its locks keeping
//! their values.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::lease::KeyState;

pub mod error;

pub use error::StoreError;

/// A key as the lock store returns it, in the shape of Consul's KV entry (the etcd client
/// builds the same from etcd's answer).
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
    /// The index of the last write.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
}

impl KvEntry {
    /// The decoded value (empty when absent or not base64).
    pub fn bytes(&self) -> Vec<u8> {
        self.value
            .as_deref()
            .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            .unwrap_or_default()
    }

    /// The entry as the lock logic sees it.
    pub fn state(&self) -> KeyState {
        KeyState {
            index: self.modify_index,
            session: self.session.clone().filter(|s| !s.is_empty()),
            value: self.bytes(),
        }
    }
}

/// A session (Consul) or lease (etcd), in the shape of Consul's session information.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
    /// The Consul node (agent) the session belongs to.
    #[serde(rename = "Node", default)]
    pub node: String,
}

/// The calls kuutamod makes to its lock store, with their result types. Errors are typed:
/// [`StoreError::SessionGone`] and [`StoreError::Rejected`] are answers (the session is gone;
/// a check failed or the lock was refused), every other variant means no usable answer.
pub trait LockStore {
    /// Creates a session named `name` that the store ends `ttl` after its last renewal (at the
    /// earliest), releasing its locks and keeping their values. Returns its id.
    fn create_session(
        &mut self,
        name: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;

    /// Renews session `id`, or [`StoreError::SessionGone`].
    fn renew(&mut self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends session `id`; its locks are released, their values kept.
    fn destroy_session(&mut self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Session `id`, or `None` when it does not exist (any more).
    fn session_info(
        &mut self,
        id: &str,
    ) -> impl Future<Output = Result<Option<SessionInfo>, StoreError>> + Send;

    /// One transaction: `key` is at index `expected` (`None`: it does not exist), then lock it
    /// for `session` with `value`. Returns the key's new index; [`StoreError::Rejected`] when
    /// the check or the lock failed, [`StoreError::SessionGone`] for a session that does not
    /// exist.
    fn check_and_lock(
        &mut self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// One transaction: `key` is at index `expected` and held by `session`, then release it
    /// writing `value`. `Ok(false)`: it was not, and nothing was written.
    fn release(
        &mut self,
        key: &str,
        expected: u64,
        session: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Reads `key`: the entry (`None`: absent) and the store's index for it. With `blocking`
    /// (an index and a wait), answers once that index is passed or the wait is over; with
    /// `consistent`, only after the store has confirmed it is current.
    fn get_key(
        &mut self,
        key: &str,
        blocking: Option<(u64, Duration)>,
        consistent: bool,
    ) -> impl Future<Output = Result<(Option<KvEntry>, u64), StoreError>> + Send;

    /// Reads every key under `prefix` (blocking as [`LockStore::get_key`]): the entries and
    /// the store's index for them.
    fn get_prefix(
        &mut self,
        prefix: &str,
        blocking: Option<(u64, Duration)>,
    ) -> impl Future<Output = Result<(Vec<KvEntry>, u64), StoreError>> + Send;

    /// Writes `value` to `key`, without a lock (a record that is not the lock).
    fn put(
        &mut self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes `value` to `key` if it is still at `index` (0: only if absent). `Ok(false)`: it
    /// changed meanwhile, nothing was written.
    fn put_cas(
        &mut self,
        key: &str,
        value: &[u8],
        index: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// A call of [`LockStore`] as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// [`LockStore::create_session`].
    CreateSession {
        /// The session's name.
        name: String,
        /// Its TTL.
        ttl: Duration,
    },
    /// [`LockStore::renew`].
    Renew {
        /// The session.
        session: String,
    },
    /// [`LockStore::destroy_session`].
    DestroySession {
        /// The session.
        session: String,
    },
    /// [`LockStore::session_info`].
    SessionInfo {
        /// The session.
        session: String,
    },
    /// [`LockStore::check_and_lock`].
    CheckAndLock {
        /// The key.
        key: String,
        /// The index it must have (`None`: absent).
        expected: Option<u64>,
        /// The session to lock it for.
        session: String,
        /// The value.
        value: Vec<u8>,
    },
    /// [`LockStore::release`].
    Release {
        /// The key.
        key: String,
        /// The index it must have.
        expected: u64,
        /// The session that holds it.
        session: String,
        /// The value.
        value: Vec<u8>,
    },
    /// [`LockStore::get_key`].
    GetKey {
        /// The key.
        key: String,
        /// Index and wait of a blocking query.
        blocking: Option<(u64, Duration)>,
        /// A consistent read.
        consistent: bool,
    },
    /// [`LockStore::get_prefix`].
    GetPrefix {
        /// The prefix.
        prefix: String,
        /// Index and wait of a blocking query.
        blocking: Option<(u64, Duration)>,
    },
    /// [`LockStore::put`].
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// [`LockStore::put_cas`].
    PutCas {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// The index it must have (0: absent).
        index: u64,
    },
}

impl StoreOp {
    /// Whether it is a blocking query (it may wait as long as its wait, not a request's
    /// timeout).
    pub fn blocking(&self) -> bool {
        matches!(
            self,
            StoreOp::GetKey {
                blocking: Some(_),
                ..
            } | StoreOp::GetPrefix {
                blocking: Some(_),
                ..
            }
        )
    }
}

/// What a [`StoreOp`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreReply {
    /// A new session's id.
    Session(String),
    /// Done (renew, destroy, put).
    Done,
    /// A session's information (`None`: it does not exist).
    Info(Option<SessionInfo>),
    /// A key's new index (check-and-lock).
    Index(u64),
    /// Whether a release or a check-and-set write applied.
    Applied(bool),
    /// A key's entry and the index.
    Key(Option<KvEntry>, u64),
    /// A prefix's entries and the index.
    Prefix(Vec<KvEntry>, u64),
}

/// Carries out `op` on `store`.
pub async fn execute<S: LockStore>(store: &mut S, op: &StoreOp) -> Result<StoreReply, StoreError> {
    Ok(match op {
        StoreOp::CreateSession { name, ttl } => {
            StoreReply::Session(store.create_session(name, *ttl).await?)
        }
        StoreOp::Renew { session } => {
            store.renew(session).await?;
            StoreReply::Done
        }
        StoreOp::DestroySession { session } => {
            store.destroy_session(session).await?;
            StoreReply::Done
        }
        StoreOp::SessionInfo { session } => StoreReply::Info(store.session_info(session).await?),
        StoreOp::CheckAndLock {
            key,
            expected,
            session,
            value,
        } => StoreReply::Index(store.check_and_lock(key, *expected, session, value).await?),
        StoreOp::Release {
            key,
            expected,
            session,
            value,
        } => StoreReply::Applied(store.release(key, *expected, session, value).await?),
        StoreOp::GetKey {
            key,
            blocking,
            consistent,
        } => {
            let (entry, index) = store.get_key(key, *blocking, *consistent).await?;
            StoreReply::Key(entry, index)
        }
        StoreOp::GetPrefix { prefix, blocking } => {
            let (entries, index) = store.get_prefix(prefix, *blocking).await?;
            StoreReply::Prefix(entries, index)
        }
        StoreOp::Put { key, value } => {
            store.put(key, value).await?;
            StoreReply::Done
        }
        StoreOp::PutCas { key, value, index } => {
            StoreReply::Applied(store.put_cas(key, value, *index).await?)
        }
    })
}

/// A failed call, as kuutamod's decisions tell failures apart: the session is gone, the
/// store refused (a failed check, a lock held by another), or no usable answer came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The session does not exist.
    SessionGone(String),
    /// A check failed or a lock was refused: the store's reason.
    Rejected(String),
    /// No usable answer (unreachable, timed out, an error status, garbage, denied).
    Failed(String),
}

impl Failure {
    /// Whether the store gave no usable answer (a refusal or a gone session is an answer).
    pub fn is_failure(&self) -> bool {
        matches!(self, Failure::Failed(_))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::SessionGone(id) => write!(f, "session {id} no longer exists"),
            Failure::Rejected(what) | Failure::Failed(what) => f.write_str(what),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::SessionGone(id) => Failure::SessionGone(id),
            StoreError::Rejected { what, .. } => Failure::Rejected(what),
            other => Failure::Failed(other.to_string()),
        }
    }
}

/// Implements [`LockStore`] for a client whose inherent methods of the same names take `&self`
/// and return the same results (Consul, etcd, and [`Store`], which forwards to one of them):
/// each call clones nothing and forwards.
macro_rules! forward_lock_store {
    ($client:ty) => {
        impl $crate::lock_store::LockStore for $client {
            fn create_session(
                &mut self,
                name: &str,
                ttl: std::time::Duration,
            ) -> impl std::future::Future<Output = Result<String, $crate::lock_store::StoreError>> + Send {
                <$client>::create_session(self, name, ttl)
            }

            fn renew(&mut self, id: &str) -> impl std::future::Future<Output = Result<(), $crate::lock_store::StoreError>> + Send {
                <$client>::renew(self, id)
            }

            fn destroy_session(
                &mut self,
                id: &str,
            ) -> impl std::future::Future<Output = Result<(), $crate::lock_store::StoreError>> + Send {
                <$client>::destroy_session(self, id)
            }

            fn session_info(
                &mut self,
                id: &str,
            ) -> impl std::future::Future<Output = Result<Option<$crate::lock_store::SessionInfo>, $crate::lock_store::StoreError>> + Send {
                <$client>::session_info(self, id)
            }

            fn check_and_lock(
                &mut self,
                key: &str,
                expected: Option<u64>,
                session: &str,
                value: &[u8],
            ) -> impl std::future::Future<Output = Result<u64, $crate::lock_store::StoreError>> + Send {
                <$client>::check_and_lock(self, key, expected, session, value)
            }

            fn release(
                &mut self,
                key: &str,
                expected: u64,
                session: &str,
                value: &[u8],
            ) -> impl std::future::Future<Output = Result<bool, $crate::lock_store::StoreError>> + Send {
                <$client>::release(self, key, expected, session, value)
            }

            fn get_key(
                &mut self,
                key: &str,
                blocking: Option<(u64, std::time::Duration)>,
                consistent: bool,
            ) -> impl std::future::Future<Output = Result<(Option<$crate::lock_store::KvEntry>, u64), $crate::lock_store::StoreError>> + Send {
                <$client>::get_key(self, key, blocking, consistent)
            }

            fn get_prefix(
                &mut self,
                prefix: &str,
                blocking: Option<(u64, std::time::Duration)>,
            ) -> impl std::future::Future<Output = Result<(Vec<$crate::lock_store::KvEntry>, u64), $crate::lock_store::StoreError>> + Send {
                <$client>::get_prefix(self, prefix, blocking)
            }

            fn put(
                &mut self,
                key: &str,
                value: &[u8],
            ) -> impl std::future::Future<Output = Result<(), $crate::lock_store::StoreError>> + Send {
                <$client>::put(self, key, value)
            }

            fn put_cas(
                &mut self,
                key: &str,
                value: &[u8],
                index: u64,
            ) -> impl std::future::Future<Output = Result<bool, $crate::lock_store::StoreError>> + Send {
                <$client>::put_cas(self, key, value, index)
            }
        }
    };
}

pub(crate) use forward_lock_store;
