//! The Consul model: the servers' replicated state (sessions and the KV store) as a pure
//! state machine, with Consul's own rules for what kuutamod uses.
//!
//! What it keeps, and the rule it follows for each (Consul's session and KV documentation, and
//! the state store in `agent/consul/state/kvs.go` and `session.go` of hashicorp/consul):
//!
//! - **One Raft index** for every write; a write gives the key a strictly larger `ModifyIndex`.
//!   A write that changes nothing (same value, same session) keeps the index (`kvsSetTxn`).
//! - **Sessions** belong to a node (an agent) and have a TTL and a lock-delay. Consul ends a
//!   session at some moment between TTL and 2 x TTL after its last renew (the timer runs for
//!   2 x TTL and is reset on a leader election); the caller draws the moment. A node's
//!   graceful leave and a destroy end its sessions at once. Ending a session releases its
//!   locks (`Behavior: release`: the key keeps its value, loses its `Session`, gets a new
//!   index) and starts the session's lock-delay on those keys.
//! - **Transactions** (`/v1/txn`): `check-index` (the key exists with exactly that
//!   `ModifyIndex`) or `check-not-exists`, then `lock`, all or nothing. `lock` fails for an
//!   unknown session ("invalid session"), for a key another session holds, and for a key in
//!   lock-delay; it counts a new holder in `LockIndex`.
//! - **Release** (`?release=`) writes the value and clears the session only if that session
//!   holds the key; otherwise it writes nothing (`kvsUnlockTxn`). A release is not delayed.
//! - **Plain writes** by outsiders (`PUT` without `acquire`) keep the key's session; a delete
//!   removes the key (a tombstone keeps the table index from going back, until it is reaped).
//! - **Reads** return the entry and `X-Consul-Index`: the entry's `ModifyIndex`, or for a
//!   missing key the table's largest index including tombstones (`kvs_endpoint.go` /
//!   `kvsMaxIndex`).
//!
//! Delivery (latency, loss, agents, partitions, elections, quorum, blocking queries that wait)
//! is the world's business (`world/delivery.rs`); this module only says what a request does
//! once a server applies it. [`Server`] is the store as kuutamod's supervisor sees it: it
//! implements kuutamod's [`LockStore`], so the supervisor's own calls are what a server
//! applies.
//!
//! A snapshot restore ([`Store::restore`]) brings back the KV entries with their old indexes,
//! the sessions and their lock-delays as they were; the Raft index goes on from where it was
//! (writes after the restore get higher indexes than any before it).
//!
//! Longer than ~500 lines on purpose: the store is one state machine whose rules lean on each
//! other (every write's index, sessions and their lock-delay, tombstones), about 430 lines with
//! the list above; the rest are its unit tests, one or two per rule, kept beside the rules they
//! pin down.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use kuutamod::consul::{ConsulError, KvEntry, SessionInfo};
use kuutamod::lease::KeyState;
use kuutamod::lock_store::LockStore;

/// Who owns a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// The agent of host `n`.
    Host(usize),
    /// Someone outside the cluster (an operator, another program).
    Outsider,
}

/// A session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its owner.
    pub owner: Owner,
    /// Its name (kuutamod: the node id).
    pub name: String,
    /// TTL (ns).
    pub ttl: u64,
    /// Lock-delay (ns).
    pub lock_delay: u64,
    /// True time at which Consul ends it unless renewed (or the timers are reset) first.
    pub expires: u64,
    /// Bumped by every renew and timer reset, so stale expiry events are ignored.
    pub generation: u64,
}

/// A KV entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Value bytes.
    pub value: Vec<u8>,
    /// The lock holder.
    pub session: Option<String>,
    /// `ModifyIndex`.
    pub modify_index: u64,
    /// `LockIndex`: how often the lock was acquired.
    pub lock_index: u64,
}

impl Entry {
    /// The entry as kuutamod's lock logic sees it.
    pub fn state(&self) -> KeyState {
        KeyState {
            index: self.modify_index,
            session: self.session.clone(),
            value: self.value.clone(),
        }
    }

    /// The entry as Consul's HTTP API returns it.
    pub fn kv(&self, key: &str) -> KvEntry {
        KvEntry {
            key: key.to_string(),
            value: Some(base64::engine::general_purpose::STANDARD.encode(&self.value)),
            session: self.session.clone(),
            lock_index: self.lock_index,
            modify_index: self.modify_index,
        }
    }
}

/// Why a transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnError {
    /// A check failed or the lock was refused (HTTP 409).
    Rejected,
    /// The session does not exist (HTTP 409 with "invalid session").
    InvalidSession,
}

/// The servers' state.
#[derive(Debug, Clone, Default)]
pub struct Store {
    index: u64,
    kv: BTreeMap<String, Entry>,
    /// Deleted keys whose tombstones are not reaped yet, with the index of the delete.
    tombstones: BTreeMap<String, u64>,
    sessions: BTreeMap<String, Session>,
    next_session: u64,
    lock_delay_until: BTreeMap<String, u64>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store {
            index: 1,
            ..Store::default()
        }
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// The current Raft index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// A session exists.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// Every session, by id.
    pub fn sessions(&self) -> impl Iterator<Item = (&String, &Session)> {
        self.sessions.iter()
    }

    /// Creates a session for `owner` that Consul ends `expire_after` after now unless renewed.
    pub fn create_session(
        &mut self,
        owner: Owner,
        name: &str,
        ttl: u64,
        lock_delay: u64,
        now: u64,
        expire_after: u64,
    ) -> String {
        self.next_session += 1;
        let id = format!("s{}", self.next_session);
        self.next_index();
        self.sessions.insert(
            id.clone(),
            Session {
                owner,
                name: name.to_string(),
                ttl,
                lock_delay,
                expires: now + expire_after,
                generation: 0,
            },
        );
        id
    }

    /// Renews a session: it now ends `expire_after` after `now`. `false`: unknown (404).
    pub fn renew(&mut self, id: &str, now: u64, expire_after: u64) -> bool {
        match self.sessions.get_mut(id) {
            Some(s) => {
                s.expires = now + expire_after;
                s.generation += 1;
                true
            }
            None => false,
        }
    }

    /// Resets every session's timer (a new Raft leader): each ends `expire_after(ttl)` after
    /// `now`.
    pub fn reset_timers(&mut self, now: u64, mut expire_after: impl FnMut(u64) -> u64) {
        for s in self.sessions.values_mut() {
            s.expires = now + expire_after(s.ttl);
            s.generation += 1;
        }
    }

    /// Ends session `id` (TTL, destroy, its node leaving): releases its locks, value kept,
    /// and starts its lock-delay on them. `false` if it did not exist.
    pub fn invalidate(&mut self, id: &str, now: u64) -> bool {
        let Some(s) = self.sessions.remove(id) else {
            return false;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let idx = self.next_index();
        for k in held {
            if let Some(e) = self.kv.get_mut(&k) {
                e.session = None;
                e.modify_index = idx;
            }
            if s.lock_delay > 0 {
                self.lock_delay_until.insert(k, now + s.lock_delay);
            }
        }
        true
    }

    /// Ends every session of `owner` (its agent left gracefully); returns how many.
    pub fn invalidate_owner(&mut self, owner: Owner, now: u64) -> usize {
        let ids: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.owner == owner)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.invalidate(id, now);
        }
        ids.len()
    }

    /// Ends the sessions whose timers have run out by `now`.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let due: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            self.invalidate(id, now);
        }
        due
    }

    /// Until when `key` is in lock-delay (0: it is not).
    pub fn lock_delay(&self, key: &str) -> u64 {
        self.lock_delay_until.get(key).copied().unwrap_or(0)
    }

    /// The earliest session expiry, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.sessions.values().map(|s| s.expires).min()
    }

    fn lock_allowed(&self, key: &str, session: &str, now: u64) -> Result<(), TxnError> {
        if !self.sessions.contains_key(session) {
            return Err(TxnError::InvalidSession);
        }
        match self.kv.get(key) {
            Some(e) if e.session.as_deref() == Some(session) => Ok(()),
            Some(e) if e.session.is_some() => Err(TxnError::Rejected),
            _ => {
                if self.lock_delay_until.get(key).is_some_and(|u| now < *u) {
                    Err(TxnError::Rejected)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn lock(&mut self, key: &str, session: &str, value: &[u8]) -> u64 {
        let changed = match self.kv.get(key) {
            Some(e) => e.session.as_deref() != Some(session) || e.value != value,
            None => true,
        };
        if !changed {
            return self.kv.get(key).map_or(0, |e| e.modify_index);
        }
        let idx = self.next_index();
        let e = self.kv.entry(key.to_owned()).or_insert(Entry {
            value: Vec::new(),
            session: None,
            modify_index: idx,
            lock_index: 0,
        });
        if e.session.as_deref() != Some(session) {
            e.lock_index += 1;
        }
        e.session = Some(session.to_owned());
        e.value = value.to_vec();
        e.modify_index = idx;
        idx
    }

    /// `/v1/txn` with a check (`Some(i)`: check-index `i`; `None`: check-not-exists) and a
    /// lock. Returns the key's new index.
    pub fn check_and_lock(
        &mut self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
        now: u64,
    ) -> Result<u64, TxnError> {
        let check = match (expected, self.kv.get(key)) {
            (Some(i), Some(e)) => e.modify_index == i,
            (Some(_), None) => false,
            (None, e) => e.is_none(),
        };
        // Consul checks the session of a lock verb as it applies it; a failed check before it
        // rolls the transaction back first.
        if !check {
            return Err(TxnError::Rejected);
        }
        self.lock_allowed(key, session, now)?;
        Ok(self.lock(key, session, value))
    }

    /// `PUT ?acquire=`: lock without a check. `Err(InvalidSession)` for an unknown session;
    /// `Ok(false)` when refused.
    pub fn acquire(
        &mut self,
        key: &str,
        session: &str,
        value: &[u8],
        now: u64,
    ) -> Result<bool, TxnError> {
        match self.lock_allowed(key, session, now) {
            Ok(()) => {
                self.lock(key, session, value);
                Ok(true)
            }
            Err(TxnError::Rejected) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `PUT ?release=`: writes `value` and clears the lock if `session` holds `key`.
    pub fn release(&mut self, key: &str, session: &str, value: &[u8]) -> bool {
        self.release_at(key, None, session, value)
    }

    /// A release as kuutamod sends it: a transaction that checks the key's index first
    /// (`check-index` + `unlock`); `None` is a plain `?release=`.
    pub fn release_at(
        &mut self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> bool {
        match self.kv.get(key) {
            Some(e)
                if e.session.as_deref() == Some(session)
                    && expected.is_none_or(|i| i == e.modify_index) => {}
            _ => return false,
        }
        let idx = self.next_index();
        if let Some(e) = self.kv.get_mut(key) {
            e.session = None;
            e.value = value.to_vec();
            e.modify_index = idx;
        }
        true
    }

    /// A plain `PUT`: the value changes, the session stays.
    pub fn put(&mut self, key: &str, value: &[u8]) -> u64 {
        if let Some(e) = self.kv.get(key) {
            if e.value == value {
                return e.modify_index;
            }
        }
        let idx = self.next_index();
        let e = self.kv.entry(key.to_owned()).or_insert(Entry {
            value: Vec::new(),
            session: None,
            modify_index: idx,
            lock_index: 0,
        });
        e.value = value.to_vec();
        e.modify_index = idx;
        idx
    }

    /// `DELETE`: removes the key, leaving a tombstone. `false` if it did not exist.
    pub fn delete(&mut self, key: &str) -> bool {
        if !self.kv.contains_key(key) {
            return false;
        }
        let idx = self.next_index();
        self.kv.remove(key);
        self.tombstones.insert(key.to_owned(), idx);
        true
    }

    /// Reaps the tombstones (Consul's tombstone GC): the index of a read of a missing key may
    /// go backwards afterwards.
    pub fn reap_tombstones(&mut self) {
        self.tombstones.clear();
    }

    fn kv_max_index(&self) -> u64 {
        self.kv
            .values()
            .map(|e| e.modify_index)
            .chain(self.tombstones.values().copied())
            .max()
            .unwrap_or(0)
    }

    /// A read: the entry and `X-Consul-Index`.
    pub fn get(&self, key: &str) -> (Option<&Entry>, u64) {
        match self.kv.get(key) {
            Some(e) => (Some(e), e.modify_index),
            None => (None, self.kv_max_index().max(1)),
        }
    }

    /// A read of every key under `prefix`: the entries and `X-Consul-Index` (the largest
    /// index of an entry or an unreaped tombstone under the prefix; the table's index when
    /// there is neither), as `kvsListTxn` computes it.
    pub fn list(&self, prefix: &str) -> (Vec<KvEntry>, u64) {
        let entries: Vec<KvEntry> = self
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| e.kv(k))
            .collect();
        (entries, self.list_index(prefix))
    }

    /// The index a read of `prefix` answers with.
    pub fn list_index(&self, prefix: &str) -> u64 {
        let under = |m: &BTreeMap<String, u64>| -> u64 {
            m.range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, i)| *i)
                .max()
                .unwrap_or(0)
        };
        let entries = self
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e.modify_index)
            .max()
            .unwrap_or(0);
        let index = entries.max(under(&self.tombstones));
        if index == 0 {
            self.kv_max_index().max(1)
        } else {
            index
        }
    }

    /// `PUT ?cas=`: writes `value` if `key` is at `index` (0: absent). `false`: it was not.
    pub fn put_cas(&mut self, key: &str, value: &[u8], index: u64) -> bool {
        let current = self.kv.get(key).map(|e| e.modify_index);
        let ok = match (index, current) {
            (0, None) => true,
            (i, Some(c)) => i == c,
            (_, None) => false,
        };
        if ok {
            self.put(key, value);
        }
        ok
    }

    /// A snapshot restore: the KV entries (with their indexes), the tombstones, the sessions
    /// and the lock-delays of `snapshot` come back. The Raft index goes on from where it was.
    pub fn restore(&mut self, snapshot: &Store) {
        let index = self.index.max(snapshot.index);
        let next_session = self.next_session.max(snapshot.next_session);
        *self = snapshot.clone();
        self.index = index;
        self.next_session = next_session;
    }
}

/// The servers' store as a client sees it: kuutamod's [`LockStore`], applied at once. What a
/// server knows besides the request (whose agent sent it, the time, when Consul would end a
/// session renewed now) comes with it.
pub struct Server<'a> {
    /// The store.
    pub store: &'a mut Store,
    /// The agent (host) the request came through.
    pub owner: Owner,
    /// True time.
    pub now: u64,
    /// When Consul ends a session created or renewed now, after `now` (drawn by the caller).
    pub expire_after: u64,
}

fn rejected(what: &str) -> ConsulError {
    ConsulError::Rejected {
        url: "/v1/txn".into(),
        what: what.into(),
    }
}

impl Server<'_> {
    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }
}

impl LockStore for Server<'_> {
    async fn create_session(&mut self, name: &str, ttl: Duration) -> Result<String, ConsulError> {
        Ok(self.store.create_session(
            self.owner,
            name,
            Self::nanos(ttl),
            0,
            self.now,
            self.expire_after,
        ))
    }

    async fn renew(&mut self, id: &str) -> Result<(), ConsulError> {
        if self.store.renew(id, self.now, self.expire_after) {
            Ok(())
        } else {
            Err(ConsulError::SessionGone(id.to_string()))
        }
    }

    async fn destroy_session(&mut self, id: &str) -> Result<(), ConsulError> {
        self.store.invalidate(id, self.now);
        Ok(())
    }

    async fn session_info(&mut self, id: &str) -> Result<Option<SessionInfo>, ConsulError> {
        Ok(self.store.session(id).map(|s| SessionInfo {
            id: id.to_string(),
            name: s.name.clone(),
            ttl: String::new(),
            node: match s.owner {
                Owner::Host(h) => format!("h{h}"),
                Owner::Outsider => "outside".into(),
            },
        }))
    }

    async fn check_and_lock(
        &mut self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> Result<u64, ConsulError> {
        match self
            .store
            .check_and_lock(key, expected, session, value, self.now)
        {
            Ok(i) => Ok(i),
            Err(TxnError::Rejected) => Err(rejected("check or lock failed")),
            Err(TxnError::InvalidSession) => Err(ConsulError::SessionGone(session.to_string())),
        }
    }

    async fn release(
        &mut self,
        key: &str,
        expected: u64,
        session: &str,
        value: &[u8],
    ) -> Result<bool, ConsulError> {
        Ok(self.store.release_at(key, Some(expected), session, value))
    }

    async fn get_key(
        &mut self,
        key: &str,
        _blocking: Option<(u64, Duration)>,
        _consistent: bool,
    ) -> Result<(Option<KvEntry>, u64), ConsulError> {
        let (e, index) = self.store.get(key);
        Ok((e.map(|e| e.kv(key)), index))
    }

    async fn get_prefix(
        &mut self,
        prefix: &str,
        _blocking: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64), ConsulError> {
        Ok(self.store.list(prefix))
    }

    async fn put(&mut self, key: &str, value: &[u8]) -> Result<(), ConsulError> {
        self.store.put(key, value);
        Ok(())
    }

    async fn put_cas(&mut self, key: &str, value: &[u8], index: u64) -> Result<bool, ConsulError> {
        Ok(self.store.put_cas(key, value, index))
    }
}

/// Runs a future that never waits (the model applies every call at once) to its end.
pub fn now_or_never<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("the Consul model never waits"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 3_000;

    fn store_with(owner: Owner) -> (Store, String) {
        let mut s = Store::new();
        let id = s.create_session(owner, "n", TTL, 0, 0, 2 * TTL);
        (s, id)
    }

    #[test]
    fn a_check_not_exists_acquisition_wins_once() {
        let (mut s, a) = store_with(Owner::Host(0));
        let b = s.create_session(Owner::Host(1), "n", TTL, 0, 0, TTL);
        let i = s.check_and_lock("k", None, &a, b"v1", 0).expect("free");
        assert_eq!(
            s.check_and_lock("k", None, &b, b"v2", 0),
            Err(TxnError::Rejected)
        );
        let (e, idx) = s.get("k");
        assert_eq!(idx, i);
        assert_eq!(e.and_then(|e| e.session.clone()), Some(a));
        assert_eq!(e.map(|e| e.lock_index), Some(1));
    }

    #[test]
    fn check_index_fails_after_any_write_and_on_a_missing_key() {
        let (mut s, a) = store_with(Owner::Host(0));
        let i = s.check_and_lock("k", None, &a, b"v1", 0).expect("free");
        let j = s
            .check_and_lock("k", Some(i), &a, b"v2", 0)
            .expect("heartbeat");
        assert!(j > i, "every write moves the index");
        assert_eq!(
            s.check_and_lock("k", Some(i), &a, b"v3", 0),
            Err(TxnError::Rejected)
        );
        s.put("k", b"outsider");
        assert_eq!(
            s.check_and_lock("k", Some(j), &a, b"v3", 0),
            Err(TxnError::Rejected),
            "an outsider's write fails the holder's next heartbeat"
        );
        assert!(s.delete("k"));
        assert_eq!(
            s.check_and_lock("k", Some(j), &a, b"v3", 0),
            Err(TxnError::Rejected)
        );
    }

    #[test]
    fn a_plain_put_keeps_the_holder_and_a_delete_keeps_the_index_from_going_back() {
        let (mut s, a) = store_with(Owner::Host(0));
        let i = s.check_and_lock("k", None, &a, b"v1", 0).expect("free");
        let j = s.put("k", b"junk");
        let (e, idx) = s.get("k");
        assert_eq!(e.and_then(|e| e.session.clone()), Some(a));
        assert_eq!(idx, j);
        assert!(j > i);
        s.delete("k");
        let (e, idx) = s.get("k");
        assert!(e.is_none());
        assert!(idx > j, "the tombstone's index");
        s.reap_tombstones();
        assert!(s.get("k").1 < idx, "after reaping the index may go back");
    }

    #[test]
    fn an_unknown_session_is_invalid_and_a_renew_of_it_is_404() {
        let mut s = Store::new();
        assert_eq!(
            s.check_and_lock("k", None, "nope", b"v", 0),
            Err(TxnError::InvalidSession)
        );
        assert!(!s.renew("nope", 0, TTL));
    }

    #[test]
    fn ending_a_session_releases_its_lock_keeping_the_value() {
        let (mut s, a) = store_with(Owner::Host(0));
        let i = s.check_and_lock("k", None, &a, b"hb", 0).expect("free");
        assert_eq!(s.expire(2 * TTL - 1), Vec::<String>::new());
        assert_eq!(s.expire(2 * TTL), vec![a.clone()]);
        let (e, idx) = s.get("k");
        let e = e.expect("kept");
        assert_eq!((e.session.clone(), e.value.as_slice()), (None, &b"hb"[..]));
        assert!(idx > i, "the release moves the index");
        assert!(!s.renew(&a, 0, TTL));
    }

    #[test]
    fn a_graceful_leave_ends_only_that_node_s_sessions() {
        let mut s = Store::new();
        let a = s.create_session(Owner::Host(0), "n", TTL, 0, 0, TTL);
        let b = s.create_session(Owner::Host(1), "n", TTL, 0, 0, TTL);
        s.check_and_lock("k", None, &a, b"v", 0).expect("free");
        assert_eq!(s.invalidate_owner(Owner::Host(0), 1), 1);
        assert!(s.session(&a).is_none() && s.session(&b).is_some());
        assert_eq!(s.get("k").0.and_then(|e| e.session.clone()), None);
    }

    #[test]
    fn lock_delay_blocks_every_acquisition_after_an_invalidation_but_not_after_a_release() {
        let mut s = Store::new();
        let o = s.create_session(Owner::Outsider, "o", TTL, 15_000, 0, TTL);
        let a = s.create_session(Owner::Host(0), "n", TTL, 0, 0, TTL);
        assert_eq!(s.acquire("k", &o, b"x", 0), Ok(true));
        s.invalidate(&o, 100);
        let i = s.get("k").1;
        assert_eq!(
            s.check_and_lock("k", Some(i), &a, b"v", 10_000),
            Err(TxnError::Rejected)
        );
        assert!(s.check_and_lock("k", Some(i), &a, b"v", 15_100).is_ok());
        // A release starts no lock-delay.
        let o2 = s.create_session(Owner::Outsider, "o", TTL, 15_000, 0, TTL);
        assert_eq!(s.acquire("k2", &o2, b"x", 0), Ok(true));
        assert!(s.release("k2", &o2, b"y"));
        let i = s.get("k2").1;
        assert!(s.check_and_lock("k2", Some(i), &a, b"v", 1).is_ok());
    }

    #[test]
    fn a_release_by_a_session_that_does_not_hold_the_key_writes_nothing() {
        let (mut s, a) = store_with(Owner::Host(0));
        let b = s.create_session(Owner::Host(1), "n", TTL, 0, 0, TTL);
        let i = s.check_and_lock("k", None, &a, b"v", 0).expect("free");
        assert!(!s.release("k", &b, b"w"));
        assert_eq!(s.get("k").1, i);
        assert!(s.release("k", &a, b"w"));
        assert!(!s.release("missing", &a, b"w"));
    }

    #[test]
    fn an_unchanged_lock_keeps_the_index_and_a_new_holder_counts() {
        let (mut s, a) = store_with(Owner::Host(0));
        let i = s.check_and_lock("k", None, &a, b"v", 0).expect("free");
        assert_eq!(s.check_and_lock("k", Some(i), &a, b"v", 0), Ok(i));
        assert!(s.release("k", &a, b"v"));
        // A release that checks an index of an earlier term of the same session does nothing
        // (the case a plain `?release=`, applied late, got wrong).
        let released = s.get("k").1;
        let term2 = s
            .check_and_lock("k", Some(released), &a, b"again", 0)
            .expect("free again");
        assert!(!s.release_at("k", Some(i), &a, b"stale"));
        assert_eq!(s.get("k").1, term2);
        assert!(s.release_at("k", Some(term2), &a, b"done"));
        let b = s.create_session(Owner::Host(1), "n", TTL, 0, 0, TTL);
        let j = s.get("k").1;
        s.check_and_lock("k", Some(j), &b, b"v", 0)
            .expect("free again");
        assert_eq!(
            s.get("k").0.map(|e| e.lock_index),
            Some(3),
            "a, a again (a new term), then b"
        );
    }

    #[test]
    fn a_new_leader_resets_every_session_timer() {
        let (mut s, a) = store_with(Owner::Host(0));
        s.reset_timers(5_000, |ttl| 2 * ttl);
        assert_eq!(s.session(&a).map(|x| x.expires), Some(11_000));
        assert!(s.expire(6_000).is_empty());
    }

    #[test]
    fn a_prefix_read_answers_with_the_largest_index_under_it_and_cas_checks_the_index() {
        let mut s = Store::new();
        let lock = s.put("kuutamod-leader/a", b"l");
        assert!(s.put_cas("kuutamod/a/control", b"c1", 0), "absent: created");
        assert!(
            !s.put_cas("kuutamod/a/control", b"c2", 0),
            "not absent any more"
        );
        let c = s.get("kuutamod/a/control").1;
        let n = s.put("kuutamod/a/nodes/n0", b"r");
        let (entries, index) = s.list("kuutamod/a/");
        assert_eq!(entries.len(), 2);
        assert_eq!(index, n);
        assert!(s.put_cas("kuutamod/a/control", b"c3", c));
        assert!(!s.put_cas("kuutamod/a/control", b"c4", c), "moved on");
        // A write outside the prefix does not move its index.
        let before = s.list_index("kuutamod/a/");
        s.put("kuutamod-leader/a", b"l2");
        assert_eq!(s.list_index("kuutamod/a/"), before);
        assert!(lock < before);
        assert_eq!(
            s.list("kuutamod/a/").0[0].bytes(),
            b"c3".to_vec(),
            "values as Consul's API returns them (base64)"
        );
    }

    #[test]
    fn a_restore_brings_back_old_indexes_and_sessions_and_the_raft_index_goes_on() {
        let (mut s, a) = store_with(Owner::Host(0));
        let i = s.check_and_lock("k", None, &a, b"term1", 0).expect("free");
        let snapshot = s.clone();
        s.release_at("k", Some(i), &a, b"released");
        let b = s.create_session(Owner::Host(1), "n1", TTL, 0, 0, TTL);
        let j = s
            .check_and_lock("k", Some(s.get("k").1), &b, b"term2", 0)
            .expect("free");
        assert!(j > i);
        s.restore(&snapshot);
        let (e, index) = s.get("k");
        assert_eq!(index, i, "the old index is back");
        assert_eq!(e.map(|e| e.value.clone()), Some(b"term1".to_vec()));
        assert!(s.session(&a).is_some() && s.session(&b).is_none());
        // The next write gets an index above everything before the restore.
        let k = s.put("other", b"x");
        assert!(k > j);
    }
}
