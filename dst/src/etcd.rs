//! The etcd model: an etcd cluster's replicated state (the MVCC key space and the leases) as a
//! pure state machine, answering the requests kuutamod's etcd client sends.
//!
//! The client's mapping of the lock onto etcd is not copied here: [`Server`] builds each
//! request with the client's own functions (`kuutamod::etcd::calls`, the JSON bodies the client
//! posts to etcd's gateway), evaluates that body on the model as etcd would, and reads the
//! answer with the client's own functions again. What the model keeps, and the rule it follows
//! for each (etcd's API documentation, "Key-Value API", "Lease API", "Watch API", "KV API
//! guarantees"; `server/etcdserver/apply.go`, `server/mvcc/`, `server/lease/lessor.go`):
//!
//! - **One revision** for the whole key space. A write transaction that changes anything
//!   advances it by one, and every key it puts gets that `mod_revision`; a transaction that
//!   changes nothing (read-only, failed comparisons with only reads, a delete of nothing)
//!   leaves it. A put of a key that exists keeps its `create_revision` and counts its
//!   `version` up; a put always writes (the same bytes too), and a put without a lease
//!   detaches the key from its lease.
//! - **Transactions**: comparisons of `create_revision`, `mod_revision`, `version`, `lease` or
//!   `value` (equal, not equal, greater, less); a missing key compares as zeros, except that a
//!   comparison of its value always fails (`applyCompare`). Then the success or the failure
//!   branch, nested transactions included. A put attached to a lease that does not exist, on
//!   the branch the comparisons choose, fails the whole transaction ("requested lease not
//!   found"), nothing written (`checkRequests`).
//! - **Leases**: granted with a TTL (at least etcd's minimum, 2 s with the default election
//!   timeout), kept alive (the TTL starts again), revoked (their keys deleted in one
//!   revision). The leader expires a lease its TTL after the last keep-alive; a keep-alive that
//!   comes later is refused (the lease counts as gone, `Renew` of an expired lease), and the
//!   revocation that deletes its keys follows within the leader's check interval (500 ms) plus
//!   a Raft round; until then the lease still exists for a transaction's lease check. No lease
//!   expires while there is no leader, and a new leader gives every lease its whole TTL again
//!   plus an election timeout (`Promote`). When the moments fall is the world's business (it
//!   draws them); the model keeps them.
//! - **Reads**: a range answers the keys and the store's revision in its header.
//! - **Watches**: a watch from a start revision sees every change of its range at or after it;
//!   its creation answers the store's revision; a start revision below the compacted one
//!   cancels it with the compacted revision. The model keeps every change (key and revision)
//!   since the last compaction, so a watch created late sees what a watch opened earlier would
//!   have seen.
//! - **Compaction** at a revision drops the history below it.
//! - **A snapshot restore** brings back the key space, the history and the leases of the
//!   snapshot, and its revision: revisions seen after the snapshot repeat (etcd's
//!   disaster-recovery guide; `etcdutl snapshot restore` without `--bump-revision`). Lease ids
//!   are not reused.
//!
//! Delivery (latency, loss, a member cut off, elections, quorum, how long a watch waits) is the
//! world's, as for Consul (`world/delivery.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use kuutamod::consul::{KvEntry, SessionInfo};
use kuutamod::etcd::calls;
use kuutamod::etcd::wire::{
    b64, unb64, Event, Header, KeepAlive, KeepAliveMessage, Kv, LeaseGrant, RangeResponse,
    ResponseOp, TimeToLive, TxnResponse, WatchResponse,
};
use kuutamod::etcd::{lease_id, lease_name};
use kuutamod::lock_store::LockStore;
use kuutamod::store::StoreError;
use serde_json::Value;

pub use crate::consul::Owner;

/// etcd's smallest lease TTL with the default heartbeat (100 ms) and election timeout (1 s):
/// `ceil(1.5 x election timeout)`, in seconds.
pub const MIN_TTL_SECS: u64 = 2;
/// How much a new leader adds to every lease's TTL (`Promote`'s extension: the election
/// timeout), ns.
pub const LEADER_EXTEND: u64 = 1_000_000_000;

const S: u64 = 1_000_000_000;

/// A key's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Its bytes.
    pub value: Vec<u8>,
    /// The revision that created it.
    pub create_revision: i64,
    /// The revision of its last change.
    pub mod_revision: i64,
    /// Writes since it was created.
    pub version: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// A lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who was granted it.
    pub owner: Owner,
    /// The TTL granted, seconds.
    pub ttl_secs: u64,
    /// True time from which it is expired: a keep-alive is refused.
    pub expires: u64,
    /// True time at which the leader's revocation deletes its keys (at or after `expires`).
    pub revoke_at: u64,
    /// Bumped by every keep-alive and timer reset, so stale revocation events are ignored.
    pub generation: u64,
}

/// The cluster's state.
#[derive(Debug, Clone)]
pub struct Store {
    revision: i64,
    compacted: i64,
    keys: BTreeMap<String, Key>,
    /// Every change since the compaction: its revision and key, in revision order.
    history: Vec<(i64, String)>,
    leases: BTreeMap<i64, Lease>,
    next_lease: i64,
    /// The last lock key the world asked about, and its holder key (the world asks after
    /// every event).
    holder_of: std::cell::RefCell<(String, String)>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

/// A field of a gateway body: an integer written as a string (or a number).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// A base64 field of a gateway body, as text.
fn text(v: &Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_str().and_then(unb64).unwrap_or_default()
}

/// etcd's answer to a request naming a lease it does not know.
fn lease_not_found(path: &str) -> StoreError {
    calls::lease_not_found_error(path)
}

impl Store {
    /// A new cluster: revision 1, as etcd starts.
    pub fn new() -> Store {
        Store {
            revision: 1,
            compacted: 0,
            keys: BTreeMap::new(),
            history: Vec::new(),
            leases: BTreeMap::new(),
            next_lease: 0x694d_0000_0000_0000,
            holder_of: Default::default(),
        }
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        u64::try_from(self.revision).unwrap_or(0)
    }

    /// Key `key`, if it exists.
    pub fn key(&self, key: &str) -> Option<&Key> {
        self.keys.get(key)
    }

    /// Lease `id` (a session name), if it exists.
    pub fn lease(&self, id: &str) -> Option<&Lease> {
        lease_id(id).and_then(|l| self.leases.get(&l))
    }

    /// Every lease, by session name.
    pub fn leases(&self) -> impl Iterator<Item = (String, &Lease)> {
        self.leases.iter().map(|(id, l)| (lease_name(*id), l))
    }

    /// Grants a lease of `ttl_secs` (raised to [`MIN_TTL_SECS`]) to `owner`, expiring
    /// `expire_after` after `now` and revoked `revoke_delay` after that unless kept alive.
    pub fn grant(
        &mut self,
        owner: Owner,
        ttl_secs: u64,
        now: u64,
        revoke_delay: u64,
    ) -> LeaseGrant {
        self.next_lease += 1;
        let id = self.next_lease;
        let ttl_secs = ttl_secs.max(MIN_TTL_SECS);
        let expires = now + ttl_secs * S;
        self.leases.insert(
            id,
            Lease {
                owner,
                ttl_secs,
                expires,
                revoke_at: expires + revoke_delay,
                generation: 0,
            },
        );
        LeaseGrant {
            id,
            ttl: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            error: String::new(),
        }
    }

    /// A keep-alive of lease `id` at `now`: the TTL left (the whole TTL again), or 0 when the
    /// lease does not exist or has expired.
    pub fn keep_alive(&mut self, id: i64, now: u64, revoke_delay: u64) -> KeepAliveMessage {
        let ttl = match self.leases.get_mut(&id) {
            Some(l) if now < l.expires => {
                l.expires = now + l.ttl_secs * S;
                l.revoke_at = l.expires + revoke_delay;
                l.generation += 1;
                i64::try_from(l.ttl_secs).unwrap_or(i64::MAX)
            }
            _ => 0,
        };
        KeepAliveMessage {
            result: Some(KeepAlive { ttl }),
        }
    }

    /// A time-to-live query: the seconds left (-1: no such lease) and the TTL granted.
    pub fn time_to_live(&self, id: i64, now: u64) -> TimeToLive {
        match self.leases.get(&id) {
            Some(l) => TimeToLive {
                ttl: i64::try_from(l.expires.saturating_sub(now) / S).unwrap_or(0),
                granted: i64::try_from(l.ttl_secs).unwrap_or(0),
            },
            None => TimeToLive {
                ttl: -1,
                granted: 0,
            },
        }
    }

    /// Revokes lease `id`: its keys are deleted, in one revision. `false`: no such lease.
    pub fn revoke(&mut self, id: i64) -> bool {
        if self.leases.remove(&id).is_none() {
            return false;
        }
        let attached: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, k)| k.lease == id)
            .map(|(name, _)| name.clone())
            .collect();
        if !attached.is_empty() {
            self.revision += 1;
            for k in attached {
                self.keys.remove(&k);
                self.history.push((self.revision, k));
            }
        }
        true
    }

    /// Revokes the lease named `id` if its revocation is due at `now` and `generation` is
    /// still its own (no keep-alive since). Returns whether it did.
    pub fn revoke_due(&mut self, id: &str, generation: u64, now: u64) -> bool {
        let Some(l) = lease_id(id) else {
            return false;
        };
        let due = self
            .leases
            .get(&l)
            .is_some_and(|x| x.generation == generation && x.revoke_at <= now);
        due && self.revoke(l)
    }

    /// A new leader (after an election, regained quorum, a restore): every lease expires its
    /// whole TTL plus the election timeout after `now`, and is revoked `revoke_delay(ttl)`
    /// after that.
    pub fn refresh_leases(&mut self, now: u64, mut revoke_delay: impl FnMut() -> u64) {
        for l in self.leases.values_mut() {
            l.expires = now + LEADER_EXTEND + l.ttl_secs * S;
            l.revoke_at = l.expires + revoke_delay();
            l.generation += 1;
        }
    }

    fn compare(&self, c: &Value) -> bool {
        let key = self.keys.get(&text(&c["key"]));
        let target = c["target"].as_str().unwrap_or("VALUE");
        let result = c["result"].as_str().unwrap_or("EQUAL");
        let ord = match target {
            "VALUE" => {
                let Some(k) = key else {
                    return false;
                };
                k.value.as_slice().cmp(bytes(&c["value"]).as_slice())
            }
            _ => {
                let (field, have) = match target {
                    "CREATE" => ("create_revision", key.map_or(0, |k| k.create_revision)),
                    "MOD" => ("mod_revision", key.map_or(0, |k| k.mod_revision)),
                    "VERSION" => ("version", key.map_or(0, |k| k.version)),
                    _ => ("lease", key.map_or(0, |k| k.lease)),
                };
                have.cmp(&int(&c[field]))
            }
        };
        match result {
            "EQUAL" => ord.is_eq(),
            "NOT_EQUAL" => ord.is_ne(),
            "GREATER" => ord.is_gt(),
            _ => ord.is_lt(),
        }
    }

    /// The operations a transaction carries out, its nested ones chosen as their comparisons
    /// say: whether it writes, and whether each of its puts names a lease that exists.
    fn path<'a>(&self, t: &'a Value, ops: &mut Vec<&'a Value>) -> bool {
        let ok = t["compare"]
            .as_array()
            .is_none_or(|cs| cs.iter().all(|c| self.compare(c)));
        let branch = if ok { &t["success"] } else { &t["failure"] };
        for op in branch.as_array().into_iter().flatten() {
            ops.push(op);
            if let Some(inner) = op.get("request_txn") {
                self.path(inner, ops);
            }
        }
        ok
    }

    fn kv(&self, name: &str, k: &Key) -> Kv {
        Kv {
            key: b64(name.as_bytes()),
            value: b64(&k.value),
            create_revision: k.create_revision,
            mod_revision: k.mod_revision,
            version: k.version,
            lease: k.lease,
        }
    }

    /// The keys of `[key, end)` (no `end`: `key` alone).
    fn range_of(&self, r: &Value) -> Vec<Kv> {
        let key = text(&r["key"]);
        match r.get("range_end") {
            Some(end) => {
                let end = text(end);
                self.keys
                    .range(key..end)
                    .map(|(n, k)| self.kv(n, k))
                    .collect()
            }
            None => self
                .keys
                .get(&key)
                .map(|k| self.kv(&key, k))
                .into_iter()
                .collect(),
        }
    }

    fn header(&self) -> Header {
        Header {
            revision: self.revision,
        }
    }

    fn put_key(&mut self, name: String, value: Vec<u8>, lease: i64, revision: i64) {
        let k = self.keys.entry(name.clone()).or_insert(Key {
            value: Vec::new(),
            create_revision: revision,
            mod_revision: revision,
            version: 0,
            lease: 0,
        });
        k.value = value;
        k.mod_revision = revision;
        k.version += 1;
        k.lease = lease;
        self.history.push((revision, name));
    }

    /// Carries out one transaction's branch at `revision` (the revision its writes get);
    /// returns its answers and whether anything changed.
    fn run(&mut self, t: &Value, revision: i64) -> (TxnResponse, bool) {
        let ok = t["compare"]
            .as_array()
            .is_none_or(|cs| cs.iter().all(|c| self.compare(c)));
        let branch = if ok { &t["success"] } else { &t["failure"] };
        let mut responses = Vec::new();
        let mut changed = false;
        for op in branch.as_array().into_iter().flatten() {
            let mut answer = ResponseOp::default();
            if let Some(r) = op.get("request_range") {
                answer.response_range = Some(RangeResponse {
                    header: self.header(),
                    kvs: self.range_of(r),
                });
            } else if let Some(p) = op.get("request_put") {
                let lease = p.get("lease").map_or(0, int);
                self.put_key(text(&p["key"]), bytes(&p["value"]), lease, revision);
                changed = true;
            } else if let Some(d) = op.get("request_delete_range") {
                let key = text(&d["key"]);
                if self.keys.remove(&key).is_some() {
                    self.history.push((revision, key));
                    changed = true;
                }
            } else if let Some(inner) = op.get("request_txn") {
                let (r, c) = self.run(inner, revision);
                changed |= c;
                answer.response_txn = Some(r);
            }
            responses.push(answer);
        }
        (
            TxnResponse {
                header: self.header(),
                succeeded: ok,
                responses,
            },
            changed,
        )
    }

    /// A transaction (`/v3/kv/txn`, its body as the gateway takes it): all or nothing.
    pub fn txn(&mut self, body: &Value) -> Result<TxnResponse, StoreError> {
        let mut ops = Vec::new();
        self.path(body, &mut ops);
        let unknown_lease = ops.iter().any(|op| {
            op.get("request_put")
                .map(|p| p.get("lease").map_or(0, int))
                .is_some_and(|l| l != 0 && !self.leases.contains_key(&l))
        });
        if unknown_lease {
            return Err(lease_not_found(calls::TXN));
        }
        let writes = ops
            .iter()
            .any(|op| op.get("request_put").is_some() || op.get("request_delete_range").is_some());
        let revision = if writes {
            self.revision + 1
        } else {
            self.revision
        };
        let before = self.history.len();
        let (mut answer, changed) = self.run(body, revision);
        if changed {
            self.revision = revision;
        } else {
            self.history.truncate(before);
        }
        answer.header = self.header();
        Ok(answer)
    }

    /// A range read (`/v3/kv/range`).
    pub fn range(&self, body: &Value) -> RangeResponse {
        RangeResponse {
            header: self.header(),
            kvs: self.range_of(body),
        }
    }

    /// A plain put (`/v3/kv/put`): always a new revision.
    pub fn put(&mut self, body: &Value) {
        self.revision += 1;
        let lease = body.get("lease").map_or(0, int);
        self.put_key(
            text(&body["key"]),
            bytes(&body["value"]),
            lease,
            self.revision,
        );
    }

    /// A delete of one key (an operator's `etcdctl del`). `false`: it did not exist.
    pub fn delete(&mut self, key: &str) -> bool {
        self.delete_keys(&[key])
    }

    /// A delete of several keys in one revision (`etcdctl del --prefix`). `false`: none
    /// existed.
    pub fn delete_keys(&mut self, keys: &[&str]) -> bool {
        let gone: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| self.keys.remove(*k).is_some())
            .collect();
        if gone.is_empty() {
            return false;
        }
        self.revision += 1;
        for k in gone {
            self.history.push((self.revision, k.to_string()));
        }
        true
    }

    /// Compacts the history below the current revision.
    pub fn compact(&mut self) {
        self.compacted = self.revision;
        let keep = self.compacted;
        self.history.retain(|(r, _)| *r >= keep);
    }

    /// What a watch created now from its body (`/v3/watch`'s `create_request`) sends: its
    /// creation (the store's revision), its cancellation if its start revision was compacted
    /// away (only when `creating`: a watch already open has seen everything up to now), and
    /// the changes of its range since its start revision.
    pub fn watch(&self, body: &Value, creating: bool) -> Vec<WatchResponse> {
        let c = &body["create_request"];
        let key = text(&c["key"]);
        let end = text(&c["range_end"]);
        let start = int(&c["start_revision"]);
        let mut out = vec![WatchResponse {
            header: self.header(),
            created: creating,
            ..WatchResponse::default()
        }];
        if creating && self.compacted > 0 && start < self.compacted {
            out.push(WatchResponse {
                header: self.header(),
                canceled: true,
                compact_revision: self.compacted,
                ..WatchResponse::default()
            });
            return out;
        }
        // The history is in revision order: only its tail can be at or after `start`.
        let events: Vec<Event> = self
            .history
            .iter()
            .rev()
            .take_while(|(r, _)| *r >= start)
            .filter(|(_, k)| *k >= key && *k < end)
            .map(|(_, k)| Event {
                kind: None,
                kv: Kv {
                    key: b64(k.as_bytes()),
                    ..Kv::default()
                },
            })
            .collect();
        if !events.is_empty() {
            out.push(WatchResponse {
                header: self.header(),
                events,
                ..WatchResponse::default()
            });
        }
        out
    }

    /// A snapshot restore: the key space, history, leases and revision of `snapshot` come
    /// back; lease ids go on from where they were.
    pub fn restore(&mut self, snapshot: &Store) {
        let next_lease = self.next_lease.max(snapshot.next_lease);
        *self = snapshot.clone();
        self.next_lease = next_lease;
    }

    /// The lock at `key` as the world reads it (`None`: no record).
    pub fn lock(&self, key: &str) -> Option<LockView<'_>> {
        let record = self.keys.get(key)?;
        let mut cache = self.holder_of.borrow_mut();
        if cache.0 != key {
            *cache = (key.to_string(), kuutamod::etcd::holder_key(key));
        }
        let holder = self.keys.get(&cache.1).map(|h| &h.value[..]);
        Some(LockView {
            record: &record.value,
            mod_revision: record.mod_revision,
            holder,
        })
    }

    /// The lease holding the lock at `key` (a record, and a holder naming a lease that
    /// exists), as kuutamod's read of the key would show it.
    pub fn holder(&self, key: &str) -> Option<&Lease> {
        let holder = self.lock(key)?.holder?;
        let id = lease_id(std::str::from_utf8(holder).ok()?)?;
        self.leases.get(&id)
    }
}

/// The lock's two keys as the world reads them.
#[derive(Debug, Clone, Copy)]
pub struct LockView<'a> {
    /// The record's bytes.
    pub record: &'a [u8],
    /// The record's `mod_revision`.
    pub mod_revision: i64,
    /// The holder's value (the holding lease's session name), when there is a holder.
    pub holder: Option<&'a [u8]>,
}

/// The cluster as a client sees it: kuutamod's [`LockStore`], each call the request kuutamod's
/// etcd client builds ([`calls`]), evaluated at once, its answer read as the client reads it.
pub struct Server<'a> {
    /// The store.
    pub store: &'a mut Store,
    /// Whose request (the lease's owner for a grant).
    pub owner: Owner,
    /// True time.
    pub now: u64,
    /// How long after a lease granted or kept alive now expires the leader's revocation
    /// follows (drawn by the caller).
    pub revoke_delay: u64,
}

impl LockStore for Server<'_> {
    async fn create_session(&mut self, _name: &str, ttl: Duration) -> Result<String, StoreError> {
        let body = calls::grant(ttl);
        let secs = u64::try_from(int(&body["TTL"])).unwrap_or(0);
        let g = self
            .store
            .grant(self.owner, secs, self.now, self.revoke_delay);
        calls::granted(calls::GRANT, &g)
    }

    async fn renew(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(lease) = lease_id(id) else {
            return Err(StoreError::SessionGone(id.to_string()));
        };
        let m = self.store.keep_alive(lease, self.now, self.revoke_delay);
        calls::kept_alive(calls::KEEPALIVE, id, &m, b"")
    }

    async fn destroy_session(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(lease) = lease_id(id) else {
            return Ok(());
        };
        let answer = if self.store.revoke(lease) {
            Ok(())
        } else {
            Err(lease_not_found(calls::REVOKE))
        };
        calls::revoked(answer)
    }

    async fn session_info(&mut self, id: &str) -> Result<Option<SessionInfo>, StoreError> {
        let Some(lease) = lease_id(id) else {
            return Ok(None);
        };
        Ok(calls::session_of(
            id,
            &self.store.time_to_live(lease, self.now),
        ))
    }

    async fn check_and_lock(
        &mut self,
        key: &str,
        expected: Option<u64>,
        session: &str,
        value: &[u8],
    ) -> Result<u64, StoreError> {
        let body = calls::lock(key, expected, session, value)?;
        let answer = self.store.txn(&body);
        calls::locked(calls::TXN, expected, session, answer)
    }

    async fn release(
        &mut self,
        key: &str,
        expected: u64,
        session: &str,
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let body = calls::release(key, expected, session, value);
        Ok(self.store.txn(&body)?.succeeded)
    }

    async fn get_key(
        &mut self,
        key: &str,
        _blocking: Option<(u64, Duration)>,
        _consistent: bool,
    ) -> Result<(Option<KvEntry>, u64), StoreError> {
        let answer = self.store.txn(&calls::read_key(key))?;
        Ok(calls::key_entry(key, &answer))
    }

    async fn get_prefix(
        &mut self,
        prefix: &str,
        _blocking: Option<(u64, Duration)>,
    ) -> Result<(Vec<KvEntry>, u64), StoreError> {
        Ok(calls::prefix_entries(
            &self.store.range(&calls::read_prefix(prefix)),
        ))
    }

    async fn put(&mut self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.put(&calls::put_plain(key, value));
        Ok(())
    }

    async fn put_cas(&mut self, key: &str, value: &[u8], index: u64) -> Result<bool, StoreError> {
        Ok(self
            .store
            .txn(&calls::put_cas(key, value, index))?
            .succeeded)
    }
}

/// Whether a blocking read `op` from the conductor still waits: the watch the client opens for
/// it (created now when `creating`, else open since then) has sent nothing that wakes it
/// ([`calls::watch_wakes`]). Not a blocking read: `false`.
pub fn waits(store: &Store, op: &kuutamod::lock_store::StoreOp, creating: bool) -> bool {
    use kuutamod::lock_store::StoreOp;
    let (messages, index, key) = match op {
        StoreOp::GetKey {
            key,
            blocking: Some((index, _)),
            ..
        } => (
            store.watch(
                &calls::watch(key, &calls::key_watch_end(key), *index),
                creating,
            ),
            *index,
            Some(key.as_str()),
        ),
        StoreOp::GetPrefix {
            prefix,
            blocking: Some((index, _)),
        } => (
            store.watch(
                &calls::watch(
                    prefix,
                    &kuutamod::etcd::wire::prefix_end(prefix.as_bytes()),
                    *index,
                ),
                creating,
            ),
            *index,
            None,
        ),
        _ => return false,
    };
    !messages.iter().any(|m| {
        calls::watch_wakes(m, index, |k| {
            key.is_none_or(|key| calls::key_relevant(key, k))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::now_or_never;
    use kuutamod::lock_store::StoreOp;

    const KEY: &str = "kuutamod-leader/pool.near";
    const TTL: Duration = Duration::from_secs(3);

    fn server(store: &mut Store, owner: usize, now: u64) -> Server<'_> {
        Server {
            store,
            owner: Owner::Host(owner),
            now,
            revoke_delay: 0,
        }
    }

    fn session(store: &mut Store, owner: usize) -> String {
        now_or_never(server(store, owner, 0).create_session("n", TTL)).expect("granted")
    }

    fn lock(
        store: &mut Store,
        expected: Option<u64>,
        s: &str,
        v: &[u8],
    ) -> Result<u64, StoreError> {
        now_or_never(server(store, 0, 0).check_and_lock(KEY, expected, s, v))
    }

    fn read(store: &mut Store) -> (Option<KvEntry>, u64) {
        now_or_never(server(store, 0, 0).get_key(KEY, None, true)).expect("read")
    }

    #[test]
    fn a_lock_writes_record_and_holder_at_one_revision_and_a_second_lease_is_refused() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let b = session(&mut s, 1);
        let i = lock(&mut s, None, &a, b"v1").expect("free");
        assert_eq!(i, 2, "one revision for both puts");
        let (e, rev) = read(&mut s);
        let e = e.expect("a record");
        assert_eq!(
            (e.session.as_deref(), e.modify_index, rev),
            (Some(&*a), i, i)
        );
        assert_eq!(e.bytes(), b"v1".to_vec());
        assert!(matches!(
            lock(&mut s, Some(i), &b, b"v2"),
            Err(StoreError::Rejected { .. })
        ));
        assert!(matches!(
            lock(&mut s, None, &b, b"v2"),
            Err(StoreError::Rejected { .. })
        ));
        assert_eq!(s.revision(), i, "refusals write nothing");
        let j = lock(&mut s, Some(i), &a, b"v1").expect("heartbeat");
        assert!(j > i, "a put of the same bytes still writes");
        assert!(matches!(
            lock(&mut s, Some(i), &a, b"v3"),
            Err(StoreError::Rejected { .. })
        ));
    }

    #[test]
    fn an_expired_lease_deletes_the_holder_keeps_the_record_and_fails_the_next_heartbeat() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let i = lock(&mut s, None, &a, b"hb").expect("free");
        assert!(now_or_never(server(&mut s, 0, 2 * S).renew(&a)).is_ok());
        assert!(matches!(
            now_or_never(server(&mut s, 0, 5 * S).renew(&a)),
            Err(StoreError::SessionGone(_))
        ));
        let g = s.lease(&a).expect("not revoked yet").generation;
        assert!(s.revoke_due(&a, g, 5 * S));
        let (e, rev) = read(&mut s);
        let e = e.expect("the record stays");
        assert_eq!((e.session, e.modify_index), (None, i));
        assert!(rev > i, "the holder's delete is a revision");
        assert!(matches!(
            lock(&mut s, Some(i), &a, b"hb2"),
            Err(StoreError::SessionGone(_))
        ));
        let b = session(&mut s, 1);
        assert!(lock(&mut s, Some(i), &b, b"b").is_ok(), "free at the index");
    }

    #[test]
    fn a_release_checks_record_and_holder_and_deletes_only_the_holder() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let b = session(&mut s, 1);
        let i = lock(&mut s, None, &a, b"v").expect("free");
        let rel = |s: &mut Store, at: u64, who: &str| {
            now_or_never(server(s, 0, 0).release(KEY, at, who, b"released")).expect("answer")
        };
        assert!(!rel(&mut s, i, &b), "not b's");
        assert!(!rel(&mut s, i - 1, &a), "not at that revision");
        assert!(rel(&mut s, i, &a));
        let (e, _) = read(&mut s);
        let e = e.expect("kept");
        assert_eq!((e.bytes(), e.session), (b"released".to_vec(), None));
        assert!(s.lease(&a).is_some(), "the lease lives on");
        assert!(!rel(&mut s, e.modify_index, &a), "not held any more");
    }

    #[test]
    fn an_unknown_lease_fails_the_whole_transaction_only_on_the_branch_taken() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let i = lock(&mut s, None, &a, b"v").expect("free");
        let gone = lease_name(12345);
        assert!(matches!(
            lock(&mut s, Some(i - 1), &gone, b"x"),
            Err(StoreError::Rejected { .. })
        ));
        assert!(s.delete(&kuutamod::etcd::holder_key(KEY)));
        let r = s.revision();
        assert!(matches!(
            lock(&mut s, Some(i), &gone, b"x"),
            Err(StoreError::SessionGone(_))
        ));
        assert_eq!(s.revision(), r, "nothing written");
        assert!(matches!(
            lock(&mut s, None, "not-a-lease", b"x"),
            Err(StoreError::SessionGone(_))
        ));
    }

    #[test]
    fn a_record_deleted_by_hand_is_locked_afresh_replacing_a_holder_left_behind() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let b = session(&mut s, 1);
        lock(&mut s, None, &a, b"v").expect("free");
        assert!(s.delete(KEY));
        assert_eq!(read(&mut s).0, None);
        assert!(lock(&mut s, None, &b, b"w").is_ok());
        assert_eq!(read(&mut s).0.and_then(|e| e.session), Some(b));
    }

    fn blocking(index: u64) -> StoreOp {
        StoreOp::GetKey {
            key: KEY.into(),
            blocking: Some((index, Duration::from_secs(10))),
            consistent: false,
        }
    }

    #[test]
    fn a_blocking_read_waits_for_a_change_of_record_or_holder_a_compaction_or_a_rewind() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let i = lock(&mut s, None, &a, b"v").expect("free");
        assert!(waits(&s, &blocking(i), true));
        assert!(
            !waits(&s, &blocking(i - 1), true),
            "a change after the index"
        );
        now_or_never(server(&mut s, 0, 0).put("kuutamod/pool.near/nodes/n", b"r")).expect("put");
        now_or_never(server(&mut s, 0, 0).put("kuutamod-leader/pool.near/other", b"x"))
            .expect("put");
        assert!(
            waits(&s, &blocking(i), false),
            "changes elsewhere do not wake it"
        );
        s.compact();
        assert!(
            waits(&s, &blocking(i), false),
            "an open watch is not cancelled"
        );
        assert!(!waits(&s, &blocking(i), true), "a new one is: compacted");
        let snapshot = s.clone();
        assert!(s.delete(&kuutamod::etcd::holder_key(KEY)));
        let at = s.revision();
        assert!(waits(&s, &blocking(at), true));
        s.restore(&snapshot);
        assert!(
            !waits(&s, &blocking(at), true),
            "the store is below the index"
        );
        assert_eq!(
            read(&mut s).0.and_then(|e| e.session),
            Some(a),
            "the holder is back"
        );
    }

    #[test]
    fn a_restore_rewinds_revisions_so_that_they_repeat_and_brings_leases_back() {
        let mut s = Store::new();
        let a = session(&mut s, 0);
        let i = lock(&mut s, None, &a, b"term1").expect("free");
        let snapshot = s.clone();
        assert!(now_or_never(server(&mut s, 0, 0).release(KEY, i, &a, b"rel")).expect("ok"));
        assert!(s.revoke(lease_id(&a).expect("a lease")));
        let b = session(&mut s, 1);
        s.restore(&snapshot);
        assert_eq!(s.revision(), i);
        assert!(s.lease(&a).is_some() && s.lease(&b).is_none());
        let c = session(&mut s, 1);
        assert_ne!(c, b, "lease ids are not reused");
        s.refresh_leases(10 * S, || 0);
        assert_eq!(
            s.lease(&a).map(|l| l.expires),
            Some(10 * S + LEADER_EXTEND + 3 * S)
        );
    }

    #[test]
    fn check_and_set_and_prefix_reads() {
        let mut s = Store::new();
        let mut srv = server(&mut s, 0, 0);
        let ctl = "kuutamod/pool.near/control";
        assert!(now_or_never(srv.put_cas(ctl, b"c1", 0)).expect("ok"));
        assert!(!now_or_never(srv.put_cas(ctl, b"c2", 0)).expect("ok"));
        let (entries, rev) = now_or_never(srv.get_prefix("kuutamod/pool.near/", None)).expect("ok");
        assert_eq!(entries.len(), 1);
        let at = entries[0].modify_index;
        assert_eq!(at, rev);
        assert!(now_or_never(srv.put_cas(ctl, b"c3", at)).expect("ok"));
        assert!(!now_or_never(srv.put_cas(ctl, b"c4", at)).expect("ok"));
    }

    #[test]
    fn a_keep_alive_after_expiry_is_refused_and_a_new_leader_extends_leases() {
        let mut s = Store::new();
        let g = s.grant(Owner::Host(0), 1, 0, 100);
        assert_eq!(g.ttl, 2, "raised to etcd's minimum");
        let name = lease_name(g.id);
        s.refresh_leases(S, || 7);
        let l = s.lease(&name).expect("there");
        assert_eq!(
            (l.expires, l.revoke_at),
            (S + LEADER_EXTEND + 2 * S, 4 * S + 7)
        );
        assert_eq!(s.keep_alive(g.id, 4 * S, 0).result.map(|k| k.ttl), Some(0));
        assert_eq!(s.time_to_live(g.id, 4 * S).ttl, 0);
        assert!(s.revoke(g.id));
        assert_eq!(s.time_to_live(g.id, 4 * S).ttl, -1);
    }
}
