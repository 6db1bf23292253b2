//! Consul's JSON shapes that kuutamod reads: KV entries and sessions.

use base64::Engine;
use serde::Deserialize;

use crate::lease::KeyState;

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

/// Session information.
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

/// An ACL token as `/v1/acl/token/self` shows it (the secret is not kept).
#[derive(Debug, Clone, Deserialize)]
pub struct TokenInfo {
    /// What its creator wrote about it.
    #[serde(rename = "Description", default)]
    pub description: String,
    /// Its policies.
    #[serde(rename = "Policies", default)]
    pub policies: Option<Vec<TokenPolicy>>,
}

/// A policy linked to a token.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenPolicy {
    /// The policy's name.
    #[serde(rename = "Name", default)]
    pub name: String,
}
