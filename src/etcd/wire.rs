//! etcd's JSON gateway shapes that kuutamod reads and writes (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch`, `/v3/lease/*`): the gateway is grpc-gateway over etcd's protobuf API, so
//! field names are the proto's (`mod_revision`), 64-bit integers are JSON strings, bytes are
//! base64, and fields at their default (0, false, empty) are left out.

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

/// Base64, as the gateway carries bytes.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes from base64 (`None`: not base64).
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// A 64-bit integer as the gateway writes it: a string, or (accepted too) a number.
fn de_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        I(i64),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

/// A response header: the store's revision when the request was served.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Header {
    /// The store's revision.
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

/// A key-value pair (`mvccpb.KeyValue`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Kv {
    /// Base64 of the key.
    #[serde(default)]
    pub key: String,
    /// Base64 of the value.
    #[serde(default)]
    pub value: String,
    /// The revision that created the key (0: it does not exist).
    #[serde(default, deserialize_with = "de_i64")]
    pub create_revision: i64,
    /// The revision of its last change.
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    /// How often it was written since it was created.
    #[serde(default, deserialize_with = "de_i64")]
    pub version: i64,
    /// The lease it is attached to (0: none).
    #[serde(default, deserialize_with = "de_i64")]
    pub lease: i64,
}

impl Kv {
    /// The key as text.
    pub fn key_text(&self) -> String {
        String::from_utf8_lossy(&unb64(&self.key).unwrap_or_default()).into_owned()
    }

    /// The value's bytes.
    pub fn value_bytes(&self) -> Vec<u8> {
        unb64(&self.value).unwrap_or_default()
    }
}

/// A range's answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RangeResponse {
    /// Its header.
    #[serde(default)]
    pub header: Header,
    /// The keys found.
    #[serde(default)]
    pub kvs: Vec<Kv>,
}

/// One operation's answer in a transaction.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResponseOp {
    /// A range's answer.
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
    /// A nested transaction's answer.
    #[serde(default)]
    pub response_txn: Option<TxnResponse>,
}

/// A transaction's answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TxnResponse {
    /// Its header (the revision after the transaction).
    #[serde(default)]
    pub header: Header,
    /// Whether every compare held (the success branch ran).
    #[serde(default)]
    pub succeeded: bool,
    /// The answers of the branch that ran.
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

impl TxnResponse {
    /// The `i`th answer's range result, if it is one.
    pub fn range(&self, i: usize) -> Option<&RangeResponse> {
        self.responses.get(i)?.response_range.as_ref()
    }

    /// The `i`th answer's nested transaction, if it is one.
    pub fn txn(&self, i: usize) -> Option<&TxnResponse> {
        self.responses.get(i)?.response_txn.as_ref()
    }
}

/// A watch stream's message (`{"result": WatchResponse}`, or `{"error": ...}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchMessage {
    /// The watch response.
    #[serde(default)]
    pub result: Option<WatchResponse>,
    /// A stream error (the gateway's).
    #[serde(default)]
    pub error: Option<Value>,
}

/// A watch response.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct WatchResponse {
    /// Its header.
    #[serde(default)]
    pub header: Header,
    /// The watch was created.
    #[serde(default)]
    pub created: bool,
    /// The watch was cancelled (compacted revision, no leader, ...).
    #[serde(default)]
    pub canceled: bool,
    /// Set when the start revision was compacted away.
    #[serde(default, deserialize_with = "de_i64")]
    pub compact_revision: i64,
    /// Why it was cancelled, if etcd says.
    #[serde(default)]
    pub cancel_reason: String,
    /// The changes.
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Event {
    /// `PUT` (left out, the default) or `DELETE`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The key after the change (for a delete: its key and the delete's revision).
    #[serde(default)]
    pub kv: Kv,
}

/// A lease grant's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct LeaseGrant {
    /// The lease id.
    #[serde(rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    /// The TTL granted, in seconds.
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
    /// etcd's complaint, if it refused.
    #[serde(default)]
    pub error: String,
}

/// A keep-alive stream's message (`{"result": {"ID": .., "TTL": ..}}`): TTL left out (0) when
/// the lease no longer exists.
#[derive(Debug, Clone, Deserialize)]
pub struct KeepAliveMessage {
    /// The answer.
    #[serde(default)]
    pub result: Option<KeepAlive>,
}

/// A keep-alive's answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KeepAlive {
    /// Remaining TTL in seconds (0: the lease is gone).
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
}

/// A time-to-live query's answer: TTL -1 for a lease that does not exist.
#[derive(Debug, Clone, Deserialize)]
pub struct TimeToLive {
    /// Remaining TTL in seconds (-1: not found).
    #[serde(rename = "TTL", default, deserialize_with = "de_i64")]
    pub ttl: i64,
    /// The TTL granted.
    #[serde(
        rename = "grantedTTL",
        alias = "granted_ttl",
        default,
        deserialize_with = "de_i64"
    )]
    pub granted: i64,
}

/// An error answer of the gateway (`{"error": .., "message": .., "code": ..}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorAnswer {
    /// The message (3.4 and 3.5 both set it).
    #[serde(default)]
    pub message: String,
    /// The same, as 3.4 also writes it.
    #[serde(default)]
    pub error: String,
    /// The gRPC code (5 not found, 7 permission denied, 16 unauthenticated, ...).
    #[serde(default)]
    pub code: i64,
}

impl ErrorAnswer {
    /// The message, from whichever field carries it.
    pub fn text(&self) -> &str {
        if self.message.is_empty() {
            &self.error
        } else {
            &self.message
        }
    }
}

/// gRPC's code for "not found" (a lease that does not exist).
pub const CODE_NOT_FOUND: i64 = 5;
/// gRPC's code for "permission denied" (the user's role lacks it).
pub const CODE_PERMISSION_DENIED: i64 = 7;
/// gRPC's code for "unauthenticated" (no token, or an expired one).
pub const CODE_UNAUTHENTICATED: i64 = 16;

/// A comparison of a transaction (`Compare`).
pub fn compare(key: &str, target: &str, result: &str, value: Value) -> Value {
    let field = match target {
        "CREATE" => "create_revision",
        "MOD" => "mod_revision",
        "VERSION" => "version",
        "LEASE" => "lease",
        _ => "value",
    };
    let mut c = json!({"key": b64(key.as_bytes()), "target": target, "result": result});
    c[field] = value;
    c
}

/// The key does not exist (its create revision is 0).
pub fn absent(key: &str) -> Value {
    compare(key, "CREATE", "EQUAL", json!("0"))
}

/// The key's last change was at `revision`.
pub fn at(key: &str, revision: u64) -> Value {
    compare(key, "MOD", "EQUAL", json!(revision.to_string()))
}

/// The key holds exactly `value`.
pub fn holds(key: &str, value: &[u8]) -> Value {
    compare(key, "VALUE", "EQUAL", json!(b64(value)))
}

/// A put, attached to `lease` when given.
pub fn put(key: &str, value: &[u8], lease: Option<i64>) -> Value {
    let mut p = json!({"key": b64(key.as_bytes()), "value": b64(value)});
    if let Some(l) = lease {
        p["lease"] = json!(l.to_string());
    }
    json!({ "request_put": p })
}

/// A delete of one key.
pub fn delete(key: &str) -> Value {
    json!({"request_delete_range": {"key": b64(key.as_bytes())}})
}

/// A range of one key, or of `[key, range_end)`.
pub fn range(key: &str, range_end: Option<&[u8]>) -> Value {
    let mut r = json!({"key": b64(key.as_bytes())});
    if let Some(end) = range_end {
        r["range_end"] = json!(b64(end));
    }
    json!({ "request_range": r })
}

/// A (nested) transaction.
pub fn txn(compares: Vec<Value>, success: Vec<Value>, failure: Vec<Value>) -> Value {
    json!({"compare": compares, "success": success, "failure": failure})
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff incremented, the bytes after it dropped; `\0` (every
/// key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_s_strings_and_defaults_parse() {
        let t: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"3","member_id":"12184598382837165569"},"responses":[{"response_range":
            {"header":{"revision":"3"},"kvs":[{"key":"aw==","create_revision":"2",
            "mod_revision":"3","version":"2","value":"djI="}],"count":"1"}}]}"#,
        )
        .expect("parses");
        assert!(!t.succeeded, "left out means false");
        assert_eq!(t.header.revision, 3);
        let kv = &t.range(0).expect("a range").kvs[0];
        assert_eq!(
            (kv.key_text(), kv.value_bytes()),
            ("k".into(), b"v2".to_vec())
        );
        assert_eq!((kv.create_revision, kv.mod_revision, kv.lease), (2, 3, 0));
        let w: WatchMessage = serde_json::from_str(
            r#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"3"}}"#,
        )
        .expect("parses");
        let w = w.result.expect("a result");
        assert!(w.canceled && !w.created);
        assert_eq!(w.compact_revision, 3);
    }

    #[test]
    fn prefix_ends_are_etcd_s() {
        assert_eq!(prefix_end(b"kuutamod/a/"), b"kuutamod/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
