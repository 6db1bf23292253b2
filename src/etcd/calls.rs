//! What each [`LockStore`](crate::lock_store::LockStore) call asks etcd, and what etcd's answer
//! means for it, as pure functions of the request's arguments and the answer's shapes
//! ([`super::wire`]): the client ([`super::Etcd`]) sends what they build over HTTP and reads
//! the answers with them, and the deterministic simulation's model of etcd (`dst/`) evaluates
//! the same requests on its state and reads its answers with the same functions, so that the
//! mapping of the lock onto etcd (the module documentation of [`super`]) is one piece of code.

use std::time::Duration;

use serde_json::{json, Value};

use super::wire::{
    absent, at, b64, delete, holds, prefix_end, put, range, txn, KeepAliveMessage, LeaseGrant,
    RangeResponse, TimeToLive, TxnResponse, WatchResponse,
};
use super::{holder_key, lease_id, lease_name};
use crate::consul::{KvEntry, SessionInfo};
use crate::lock_store::StoreError;

/// The path of a transaction (every lock call but the prefix read and a plain put).
pub const TXN: &str = "/v3/kv/txn";
/// The path of a range read.
pub const RANGE: &str = "/v3/kv/range";
/// The path of a plain put.
pub const PUT: &str = "/v3/kv/put";
/// The path of a lease grant.
pub const GRANT: &str = "/v3/lease/grant";
/// The path of a lease keep-alive.
pub const KEEPALIVE: &str = "/v3/lease/keepalive";
/// The path of a lease revoke.
pub const REVOKE: &str = "/v3/lease/revoke";
/// The path of a lease's time-to-live query.
pub const TIME_TO_LIVE: &str = "/v3/lease/timetolive";
/// The path of a watch.
pub const WATCH: &str = "/v3/watch";

/// The message etcd answers a request that names a lease it does not know with.
pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

/// The TTL, in whole seconds, a session of `ttl` is granted as a lease with (rounded up, at
/// least 1).
pub fn lease_ttl_secs(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis().div_ceil(1000).max(1)).unwrap_or(u64::MAX)
}

/// The body of a lease grant for a session of `ttl`.
pub fn grant(ttl: Duration) -> Value {
    json!({"TTL": lease_ttl_secs(ttl).to_string()})
}

/// A grant's answer as a session id, or [`StoreError::Rejected`] when no lease was granted.
pub fn granted(url: &str, g: &LeaseGrant) -> Result<String, StoreError> {
    if !g.error.is_empty() || g.id == 0 {
        return Err(StoreError::Rejected {
            url: url.to_string(),
            what: format!("no lease granted: {}", g.error),
        });
    }
    Ok(lease_name(g.id))
}

/// The body of a keep-alive, revoke or time-to-live request for lease `lease`.
pub fn lease_request(lease: i64) -> Value {
    json!({"ID": lease.to_string()})
}

/// The first message of a keep-alive's answer: `Ok` while the lease lives,
/// [`StoreError::SessionGone`] once it is gone. `raw` is the message as it came, for the error
/// of a message without a result.
pub fn kept_alive(url: &str, id: &str, m: &KeepAliveMessage, raw: &[u8]) -> Result<(), StoreError> {
    match &m.result {
        Some(k) if k.ttl > 0 => Ok(()),
        Some(_) => Err(StoreError::SessionGone(id.to_string())),
        None => Err(StoreError::Garbage {
            url: url.to_string(),
            reason: format!(
                "a keep-alive answer without a result: {}",
                String::from_utf8_lossy(raw)
            ),
        }),
    }
}

/// What a revoke's answer means: a lease that no longer exists is not an error (as Consul's
/// destroy of an unknown session).
pub fn revoked<T>(answer: Result<T, StoreError>) -> Result<(), StoreError> {
    match answer {
        Ok(_) => Ok(()),
        Err(e) if lease_not_found(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A time-to-live answer as session `id`'s information (`None`: the lease does not exist).
/// etcd knows no name or node of a lease: those stay empty.
pub fn session_of(id: &str, t: &TimeToLive) -> Option<SessionInfo> {
    (t.ttl >= 0).then(|| SessionInfo {
        id: id.to_string(),
        name: String::new(),
        ttl: format!("{}s", t.granted),
        node: String::new(),
    })
}

/// The transaction of a lock (an acquisition or a heartbeat): the record at `key` has
/// `mod_revision` `expected` (`None`: it does not exist), and, with `expected`, the holder
/// names our lease or does not exist; then put the record and the holder attached to our lease.
/// [`StoreError::SessionGone`] for a session that is not a lease name.
pub fn lock(
    key: &str,
    expected: Option<u64>,
    session: &str,
    value: &[u8],
) -> Result<Value, StoreError> {
    let Some(lease) = lease_id(session) else {
        return Err(StoreError::SessionGone(session.to_string()));
    };
    let holder = holder_key(key);
    let writes = vec![
        put(key, value, None),
        put(&holder, session.as_bytes(), Some(lease)),
    ];
    Ok(match expected {
        None => txn(vec![absent(key)], writes, vec![range(key, None)]),
        Some(index) => {
            let free = txn(
                vec![absent(&holder)],
                writes.clone(),
                vec![range(&holder, None)],
            );
            let ours = txn(
                vec![holds(&holder, session.as_bytes())],
                writes,
                vec![json!({ "request_txn": free })],
            );
            txn(
                vec![at(key, index)],
                vec![json!({ "request_txn": ours })],
                vec![range(key, None)],
            )
        }
    })
}

/// What a lock transaction's answer means: the record's new `mod_revision`,
/// [`StoreError::Rejected`] when a comparison failed, [`StoreError::SessionGone`] when etcd
/// did not know the lease.
pub fn locked(
    url: &str,
    expected: Option<u64>,
    session: &str,
    answer: Result<TxnResponse, StoreError>,
) -> Result<u64, StoreError> {
    let answer = match answer {
        Ok(a) => a,
        Err(e) if lease_not_found(&e) => return Err(StoreError::SessionGone(session.to_string())),
        Err(e) => return Err(e),
    };
    let revision = u64::try_from(answer.header.revision).unwrap_or(0);
    if !answer.succeeded {
        return Err(StoreError::Rejected {
            url: url.to_string(),
            what: describe_record(expected, answer.range(0)),
        });
    }
    if expected.is_none() {
        return Ok(revision);
    }
    let ours = answer.txn(0);
    let free = ours.and_then(|t| t.txn(0));
    match (ours, free) {
        (Some(o), _) if o.succeeded => Ok(revision),
        (_, Some(f)) if f.succeeded => Ok(revision),
        (_, Some(f)) => Err(StoreError::Rejected {
            url: url.to_string(),
            what: format!(
                "the lock is held by lease {}",
                f.range(0)
                    .and_then(|r| r.kvs.first())
                    .map(|kv| String::from_utf8_lossy(&kv.value_bytes()).into_owned())
                    .unwrap_or_else(|| "?".into())
            ),
        }),
        _ => Err(StoreError::Garbage {
            url: url.to_string(),
            reason: "a lock transaction's answer without its nested answers".into(),
        }),
    }
}

/// The transaction of a release: the record is at `expected` and the holder is our lease;
/// then put the record and delete the holder (the lease lives on). It applied when the
/// answer's `succeeded` is set.
pub fn release(key: &str, expected: u64, session: &str, value: &[u8]) -> Value {
    let holder = holder_key(key);
    txn(
        vec![at(key, expected), holds(&holder, session.as_bytes())],
        vec![put(key, value, None), delete(&holder)],
        vec![],
    )
}

/// The read of lock key `key`: the record and its holder, in one read-only transaction.
pub fn read_key(key: &str) -> Value {
    txn(
        vec![],
        vec![range(key, None), range(&holder_key(key), None)],
        vec![],
    )
}

/// A [`read_key`] answer as the entry (`None`: no record) as Consul shows a key (value, the
/// holder's lease as its session, the record's `mod_revision` as its index) and the read's
/// revision.
pub fn key_entry(key: &str, answer: &TxnResponse) -> (Option<KvEntry>, u64) {
    let revision = u64::try_from(answer.header.revision).unwrap_or(0);
    let record = answer.range(0).and_then(|r| r.kvs.first());
    let session = answer
        .range(1)
        .and_then(|r| r.kvs.first())
        .map(|kv| String::from_utf8_lossy(&kv.value_bytes()).into_owned());
    let entry = record.map(|kv| KvEntry {
        key: key.to_string(),
        value: Some(kv.value.clone()),
        session,
        lock_index: u64::try_from(kv.version).unwrap_or(0),
        modify_index: u64::try_from(kv.mod_revision).unwrap_or(0),
    });
    (entry, revision)
}

/// The range a blocking read of lock key `key` watches: from the record to the end of the
/// holder's prefix (only the record and the holder are relevant: [`key_relevant`]).
pub fn key_watch_end(key: &str) -> Vec<u8> {
    prefix_end(holder_key(key).as_bytes())
}

/// Whether a change of `changed` wakes a blocking read of lock key `key`.
pub fn key_relevant(key: &str, changed: &str) -> bool {
    changed == key || changed == holder_key(key)
}

/// The read of every key under `prefix`.
pub fn read_prefix(prefix: &str) -> Value {
    json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))})
}

/// A [`read_prefix`] answer as the entries and the read's revision.
pub fn prefix_entries(r: &RangeResponse) -> (Vec<KvEntry>, u64) {
    let entries = r
        .kvs
        .iter()
        .map(|kv| KvEntry {
            key: kv.key_text(),
            value: Some(kv.value.clone()),
            session: None,
            lock_index: 0,
            modify_index: u64::try_from(kv.mod_revision).unwrap_or(0),
        })
        .collect();
    (entries, u64::try_from(r.header.revision).unwrap_or(0))
}

/// The creation of a watch of `[key, end)` from the revision after `index` (it misses no
/// change after `index`).
pub fn watch(key: &str, end: &[u8], index: u64) -> Value {
    json!({"create_request": {
        "key": b64(key.as_bytes()),
        "range_end": b64(end),
        "start_revision": (index + 1).to_string(),
    }})
}

/// Whether a watch message ends a blocking read from `index`: the watch was cancelled (its
/// start revision compacted away, the member lost its leader), the store's revision is below
/// `index` (a restored snapshot), or a key that `relevant` accepts changed. The caller reads
/// afresh after it.
pub fn watch_wakes(r: &WatchResponse, index: u64, relevant: impl Fn(&str) -> bool) -> bool {
    r.canceled
        || r.compact_revision > 0
        || (r.created && u64::try_from(r.header.revision).unwrap_or(0) < index)
        || r.events.iter().any(|e| relevant(&e.kv.key_text()))
}

/// The transaction of a check-and-set write: `cas` 0 creates `key` only if absent, another
/// revision replaces it only if its `mod_revision` is still that. It applied when the
/// answer's `succeeded` is set.
pub fn put_cas(key: &str, value: &[u8], cas: u64) -> Value {
    let check = if cas == 0 { absent(key) } else { at(key, cas) };
    txn(vec![check], vec![put(key, value, None)], vec![])
}

/// The body of a plain put (records that are not the lock).
pub fn put_plain(key: &str, value: &[u8]) -> Value {
    json!({"key": b64(key.as_bytes()), "value": b64(value)})
}

/// Whether etcd said that a lease does not exist.
pub fn lease_not_found(e: &StoreError) -> bool {
    matches!(e, StoreError::Status { body, .. } if body.contains("lease not found"))
}

/// etcd's answer to a request naming a lease it does not know, as the client sees it (the
/// gateway maps gRPC's "not found" to HTTP 404).
pub fn lease_not_found_error(url: &str) -> StoreError {
    StoreError::Status {
        url: url.to_string(),
        status: reqwest::StatusCode::NOT_FOUND,
        body: LEASE_NOT_FOUND.to_string(),
    }
}

/// Why a lock transaction's record comparison failed, from the record it read instead.
fn describe_record(expected: Option<u64>, found: Option<&RangeResponse>) -> String {
    let now = found.and_then(|r| r.kvs.first()).map(|kv| kv.mod_revision);
    match (expected, now) {
        (Some(i), Some(m)) => format!("the record is at revision {m}, not {i}"),
        (Some(i), None) => format!("the record no longer exists (expected revision {i})"),
        (None, Some(m)) => format!("the record exists (revision {m})"),
        (None, None) => "the record's comparison failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::wire::{Event, Header, Kv};

    #[test]
    fn a_lock_compares_the_record_then_the_holder_and_writes_both() {
        let session = lease_name(7);
        let first = lock("k", None, &session, b"v").expect("a lease name");
        assert_eq!(first["compare"][0]["target"], "CREATE");
        assert_eq!(first["compare"][0]["create_revision"], "0");
        let puts = first["success"].as_array().expect("writes");
        assert_eq!(puts.len(), 2);
        assert!(
            puts[0]["request_put"].get("lease").is_none(),
            "the record has no lease"
        );
        assert_eq!(puts[1]["request_put"]["lease"], "7");
        assert_eq!(puts[1]["request_put"]["key"], b64(b"k/holder"));
        let again = lock("k", Some(5), &session, b"v").expect("a lease name");
        assert_eq!(again["compare"][0]["mod_revision"], "5");
        let ours = &again["success"][0]["request_txn"];
        assert_eq!(ours["compare"][0]["target"], "VALUE");
        let free = &ours["failure"][0]["request_txn"];
        assert_eq!(free["compare"][0]["target"], "CREATE");
        assert!(matches!(
            lock("k", None, "not a lease", b"v"),
            Err(StoreError::SessionGone(_))
        ));
    }

    #[test]
    fn a_lock_s_answer_is_an_index_a_refusal_or_a_gone_lease() {
        let ok = TxnResponse {
            header: Header { revision: 9 },
            succeeded: true,
            responses: vec![],
        };
        assert_eq!(locked(TXN, None, "s", Ok(ok)).expect("locked"), 9);
        let refused = TxnResponse::default();
        let e = locked(TXN, Some(3), "s", Ok(refused)).expect_err("refused");
        assert!(matches!(e, StoreError::Rejected { .. }), "{e}");
        let gone = locked(TXN, Some(3), "s", Err(lease_not_found_error(TXN)));
        assert!(matches!(gone, Err(StoreError::SessionGone(s)) if s == "s"));
    }

    #[test]
    fn a_watch_wakes_on_a_relevant_change_a_cancel_or_a_rewound_store() {
        let relevant = |k: &str| key_relevant("k", k);
        let created = |revision| WatchResponse {
            header: Header { revision },
            created: true,
            ..WatchResponse::default()
        };
        assert!(!watch_wakes(&created(5), 5, relevant));
        assert!(watch_wakes(&created(4), 5, relevant), "below the index");
        let cancelled = WatchResponse {
            canceled: true,
            compact_revision: 3,
            ..WatchResponse::default()
        };
        assert!(watch_wakes(&cancelled, 5, relevant));
        let change = |key: &str| WatchResponse {
            events: vec![Event {
                kind: None,
                kv: Kv {
                    key: b64(key.as_bytes()),
                    ..Kv::default()
                },
            }],
            ..WatchResponse::default()
        };
        assert!(watch_wakes(&change("k/holder"), 5, relevant));
        assert!(!watch_wakes(&change("k/other"), 5, relevant));
    }
}
