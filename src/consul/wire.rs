//! Consul's JSON shapes that only the Consul client reads: ACL tokens. (KV entries and
//! sessions, which every lock store returns, are the seam's: [`crate::lock_store`].)

use serde::Deserialize;

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
