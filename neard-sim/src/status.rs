//! The `StatusResponse` body and the health verdict, as pure functions of a node's view
//! ([`StatusView`]; [`Snapshot`] is the older clock-driven description, still accepted).
//!
//! Shape and types follow neard's `StatusResponse` (docs/neard.md §1.2) exactly: every field present,
//! `validator_account_id`/`validator_public_key`/`node_key` `null` without a key, `node_key`
//! equal to `validator_public_key`, `detailed_debug_status` absent.

use std::time::Duration;

use serde_json::{json, Value};

use crate::chain;

/// neard's version string reported by the simulator (a 2.x with dynamic key removal).
pub const NEARD_VERSION: &str = "2.6.0";

/// neard's `STATUS_WAIT_TIME_MULTIPLIER`: the health check fails when the head is older than
/// `max_block_production_delay` × this.
pub const STATUS_WAIT_TIME_MULTIPLIER: u32 = 10;

/// Everything `/status` reports, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Genesis chain id.
    pub chain_id: String,
    /// Genesis "hash".
    pub genesis_hash: String,
    /// `rpc.addr` as configured, `None` when RPC is disabled.
    pub rpc_addr: Option<String>,
    /// Current block producers (account ids).
    pub validators: Vec<String>,
    /// `(account_id, public_key)` of the loaded validator key.
    pub validator: Option<(String, String)>,
    /// Public key of node_key.json.
    pub node_public_key: String,
    /// Head height.
    pub head_height: u64,
    /// Block time in ms (to compute the head's timestamp).
    pub block_time_ms: u64,
    /// Lowest height this node has (its first head).
    pub earliest_height: u64,
    /// Whether the node reports itself syncing.
    pub syncing: bool,
    /// Seconds since the process started.
    pub uptime_sec: i64,
}

impl Snapshot {
    /// Unix ms of the head block.
    pub fn head_time_ms(&self) -> u64 {
        chain::height_time_ms(self.head_height, self.block_time_ms)
    }
}

/// A block as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    /// Height.
    pub height: u64,
    /// Hash (base58).
    pub hash: String,
    /// Header timestamp, unix ms.
    pub time_ms: u64,
}

/// Everything `/status` reports, at one instant, from a node's view of its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// Genesis chain id.
    pub chain_id: String,
    /// Genesis "hash".
    pub genesis_hash: String,
    /// `rpc.addr` as configured, `None` when RPC is disabled.
    pub rpc_addr: Option<String>,
    /// Current block producers (account ids).
    pub validators: Vec<String>,
    /// `(account_id, public_key)` of the loaded validator key.
    pub validator: Option<(String, String)>,
    /// Public key of node_key.json.
    pub node_public_key: String,
    /// The node's head.
    pub head: BlockRef,
    /// The oldest block the node has.
    pub earliest: BlockRef,
    /// Epoch id (base58).
    pub epoch_id: String,
    /// First height of the head's epoch.
    pub epoch_start_height: u64,
    /// Whether the node reports itself syncing.
    pub syncing: bool,
    /// Seconds since the process started.
    pub uptime_sec: i64,
}

impl StatusView {
    /// The view a clock-driven [`Snapshot`] describes (heights from the shared clock).
    pub fn from_snapshot(s: &Snapshot) -> StatusView {
        let epoch_start = chain::epoch_start(s.head_height);
        StatusView {
            chain_id: s.chain_id.clone(),
            genesis_hash: s.genesis_hash.clone(),
            rpc_addr: s.rpc_addr.clone(),
            validators: s.validators.clone(),
            validator: s.validator.clone(),
            node_public_key: s.node_public_key.clone(),
            head: BlockRef {
                height: s.head_height,
                hash: chain::hash("block", s.head_height),
                time_ms: s.head_time_ms(),
            },
            earliest: BlockRef {
                height: s.earliest_height,
                hash: chain::hash("block", s.earliest_height),
                time_ms: chain::height_time_ms(s.earliest_height, s.block_time_ms),
            },
            epoch_id: chain::hash("epoch", epoch_start),
            epoch_start_height: epoch_start,
            syncing: s.syncing,
            uptime_sec: s.uptime_sec,
        }
    }
}

/// The bare `StatusResponse` object (GET /status body; JSON-RPC `status` result) of a
/// clock-driven snapshot.
pub fn response(s: &Snapshot) -> Value {
    render(&StatusView::from_snapshot(s))
}

/// The bare `StatusResponse` object of a node's view.
pub fn render(s: &StatusView) -> Value {
    let (account, public_key) = match &s.validator {
        Some((a, p)) => (json!(a), json!(p)),
        None => (Value::Null, Value::Null),
    };
    let mut v = json!({
        "version": {
            "version": NEARD_VERSION,
            "build": concat!("neard-sim-", env!("CARGO_PKG_VERSION")),
            "commit": "0000000000000000000000000000000000000000",
            "rustc_version": "1.80.0"
        },
        "chain_id": s.chain_id,
        "protocol_version": chain::PROTOCOL_VERSION,
        "latest_protocol_version": chain::PROTOCOL_VERSION,
        "rpc_addr": s.rpc_addr,
        "validators": s.validators.iter()
            .map(|a| json!({"account_id": a, "is_slashed": false}))
            .collect::<Vec<_>>(),
        "sync_info": {
            "latest_block_hash": s.head.hash,
            "latest_block_height": s.head.height,
            "latest_state_root": chain::hash(&format!("state:{}", s.head.hash), s.head.height),
            "latest_block_time": chain::rfc3339(s.head.time_ms),
            "syncing": s.syncing,
            "earliest_block_hash": s.earliest.hash,
            "earliest_block_height": s.earliest.height,
            "earliest_block_time": chain::rfc3339(s.earliest.time_ms),
            "epoch_id": s.epoch_id,
            "epoch_start_height": s.epoch_start_height
        },
        "validator_account_id": account,
        "validator_public_key": public_key,
        "node_public_key": s.node_public_key,
        "node_key": public_key,
        "uptime_sec": s.uptime_sec,
        "genesis_hash": s.genesis_hash
    });
    if s.rpc_addr.is_none() {
        if let Some(o) = v.as_object_mut() {
            o.remove("rpc_addr");
        }
    }
    v
}

/// Why the health check fails (neard's `RpcStatusError` variants that apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unhealthy {
    /// The node is syncing.
    NodeIsSyncing,
    /// The head is older than the limit.
    NoNewBlocks {
        /// Age of the head.
        elapsed: Duration,
    },
}

impl Unhealthy {
    /// The JSON-RPC error object neard returns for `health` (a handler error with the cause).
    pub fn rpc_error(&self) -> Value {
        let cause = match self {
            Unhealthy::NodeIsSyncing => json!({"name": "NODE_IS_SYNCING", "info": {}}),
            Unhealthy::NoNewBlocks { elapsed } => json!({"name": "NO_NEW_BLOCKS",
                "info": {"elapsed": {"secs": elapsed.as_secs(), "nanos": elapsed.subsec_nanos()}}}),
        };
        let data = match self {
            Unhealthy::NodeIsSyncing => "Node is syncing".to_owned(),
            Unhealthy::NoNewBlocks { elapsed } => {
                format!("No blocks for {:?}", elapsed)
            }
        };
        json!({"name": "HANDLER_ERROR", "cause": cause, "code": -32000,
               "message": "Server error", "data": data})
    }
}

/// neard's health rule: healthy iff not syncing and the head is younger than
/// `max_block_production_delay` × [`STATUS_WAIT_TIME_MULTIPLIER`].
pub fn health(
    s: &Snapshot,
    now_ms: u64,
    max_block_production_delay: Duration,
) -> Result<(), Unhealthy> {
    health_of(
        &StatusView::from_snapshot(s),
        now_ms,
        max_block_production_delay,
    )
}

/// [`health`] of a node's view: the head's header timestamp against the local clock.
pub fn health_of(
    s: &StatusView,
    now_ms: u64,
    max_block_production_delay: Duration,
) -> Result<(), Unhealthy> {
    if s.syncing {
        return Err(Unhealthy::NodeIsSyncing);
    }
    let elapsed = Duration::from_millis(now_ms.saturating_sub(s.head.time_ms));
    if elapsed > max_block_production_delay * STATUS_WAIT_TIME_MULTIPLIER {
        return Err(Unhealthy::NoNewBlocks { elapsed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            chain_id: "localnet".into(),
            genesis_hash: chain::hash("genesis", 0),
            rpc_addr: Some("127.0.0.1:3030".into()),
            validators: vec!["node0".into()],
            validator: None,
            node_public_key: "ed25519:n".into(),
            head_height: 1000,
            block_time_ms: 100,
            earliest_height: 900,
            syncing: false,
            uptime_sec: 3,
        }
    }

    #[test]
    fn keyless_status_has_nulls_and_every_field() {
        let v = response(&snapshot());
        for k in ["validator_account_id", "validator_public_key", "node_key"] {
            assert!(v[k].is_null(), "{k}");
        }
        assert_eq!(v["sync_info"]["latest_block_height"], 1000);
        assert_eq!(v["validators"][0]["is_slashed"], false);
        assert!(v.get("detailed_debug_status").is_none());
        let mut no_rpc = snapshot();
        no_rpc.rpc_addr = None;
        assert!(response(&no_rpc).get("rpc_addr").is_none());
    }

    #[test]
    fn node_key_mirrors_the_validator_key() {
        let mut s = snapshot();
        s.validator = Some(("pool".into(), "ed25519:v".into()));
        let v = response(&s);
        assert_eq!(v["validator_account_id"], "pool");
        assert_eq!(v["node_key"], v["validator_public_key"]);
    }

    #[test]
    fn health_rules() {
        let mut s = snapshot();
        let head = s.head_time_ms();
        let max = Duration::from_secs(2);
        assert_eq!(health(&s, head + 50, max), Ok(()));
        assert!(matches!(
            health(&s, head + 20_001, max),
            Err(Unhealthy::NoNewBlocks { .. })
        ));
        s.syncing = true;
        assert_eq!(health(&s, head, max), Err(Unhealthy::NodeIsSyncing));
        assert_eq!(
            Unhealthy::NodeIsSyncing.rpc_error()["cause"]["name"],
            "NODE_IS_SYNCING"
        );
    }
}
