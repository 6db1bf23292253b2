//! The lock store kuutamod talks to: Consul or etcd (`KUUTAMO_LOCK_BACKEND`), behind one type
//! whose methods are those of [`LockStore`](crate::lock_store::LockStore) (which it implements
//! by forwarding to the client it holds), with the same meaning and the same errors
//! ([`StoreError`], the seam's one error type). The daemon's supervisor (its conductor's calls,
//! carried out in `supervisor/io.rs`), kuutamoctl (`ctl.rs`'s commands and its reads) and
//! `kuutamod --check` hold a [`Store`] and never ask which backend it is, except where a
//! backend's own checks differ (`--check`). How each backend implements the lock:
//! [`crate::consul`] and [`crate::etcd`]; `docs/failover.md` argues the safety of both.

use std::time::Duration;

pub use crate::lock_store::{KvEntry, SessionInfo, StoreError};

use crate::consul::Consul;
use crate::etcd::Etcd;

/// A lock-store client.
#[derive(Debug, Clone)]
pub enum Store {
    /// Consul's HTTP API (sessions with `Behavior: release`).
    Consul(Consul),
    /// etcd's v3 API through its JSON gateway (leases, and a record outside them).
    Etcd(Etcd),
}

/// Forwards a call to whichever client this is.
macro_rules! both {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Store::Consul($c) => $call.await,
            Store::Etcd($c) => $call.await,
        }
    };
}

impl Store {
    /// The backend's name, for messages: `Consul` or `etcd`.
    pub fn name(&self) -> &'static str {
        match self {
            Store::Consul(_) => "Consul",
            Store::Etcd(_) => "etcd",
        }
    }

    /// Creates a session (Consul) or grants a lease (etcd) of `ttl`; returns its id.
    pub async fn create_session(&self, name: &str, ttl: Duration) -> Result<String, StoreError> {
        both!(self, c => c.create_session(name, ttl))
    }

    /// Renews a session or keeps a lease alive, or [`StoreError::SessionGone`].
    pub async fn renew(&self, id: &str) -> Result<(), StoreError> {
        both!(self, c => c.renew(id))
    }

    /// Ends a session or lease; the lock it held is released with its value kept.
    pub async fn destroy_session(&self, id: &str) -> Result<(), StoreError> {
        both!(self, c => c.destroy_session(id))
    }

    /// The session, or `None` if it does not exist.
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>, StoreError> {
        both!(self, c => c.session_info(id))
    }

    /// Checks that `key` is at index `expected` (`None`: absent) and locks it for `session`
    /// with `value`, in one transaction; returns the key's new index.
    pub async fn check_and_lock(
        &self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> Result<u64, StoreError> {
        both!(self, c => c.check_and_lock(key, expected, session, value))
    }

    /// Releases `key` held by `session` with `value`, if it is at index `expected`.
    pub async fn release(
        &self,
        key: &str,
        expected: u64,
        session: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        both!(self, c => c.release(key, expected, session, value))
    }

    /// Reads `key`, blocking past an index when asked; returns the entry and the read's index.
    pub async fn get_key(
        &self,
        key: &str,
        blocking: Option<(u64, Duration)>,
        consistent: bool,
    ) -> Result<(Option<KvEntry>, u64), StoreError> {
        both!(self, c => c.get_key(key, blocking, consistent))
    }

    /// Reads every key under `prefix`, blocking past an index when asked.
    pub async fn get_prefix(
        &self,
        prefix: &str,
        blocking: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64), StoreError> {
        both!(self, c => c.get_prefix(prefix, blocking))
    }

    /// Writes `key` with check-and-set (`cas` 0: only if absent).
    pub async fn put_cas(&self, key: &str, value: &[u8], cas: u64) -> Result<bool, StoreError> {
        both!(self, c => c.put_cas(key, value, cas))
    }

    /// Writes `key` without a lock.
    pub async fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        both!(self, c => c.put(key, value))
    }
}

crate::lock_store::forward_lock_store!(Store);
