//! `config.json` and `genesis.json`: reading them for `run`, writing them for `init` and
//! `localnet`.
//!
//! Only the fields the simulator acts on are typed; everything else in a real neard config is
//! accepted and ignored, and unknown top-level fields only produce a warning, as in neard.
//!
//! This file reads them; `config/write.rs` writes them (and the key files) for `init` and
//! `localnet`.

mod write;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::chain;
use crate::spec::Timers;

pub use write::{
    default_config_json, free_ports, genesis_json, genesis_json_with, init, init_with, localnet,
    localnet_with, InitOptions, InitReport,
};

/// Name of the config file in the home.
pub const CONFIG_FILE: &str = "config.json";

/// Default `rpc.addr` (neard's).
pub const DEFAULT_RPC_ADDR: &str = "0.0.0.0:3030";

/// Default `network.addr` (neard's).
pub const DEFAULT_NETWORK_ADDR: &str = "0.0.0.0:24567";

/// Default `consensus.max_block_production_delay` (neard's default and localnet value).
pub const DEFAULT_MAX_BLOCK_PRODUCTION_DELAY: Duration = Duration::from_secs(2);

/// Default `consensus.min_block_production_delay` (neard's default).
pub const DEFAULT_MIN_BLOCK_PRODUCTION_DELAY: Duration = Duration::from_millis(600);

/// The parts of `config.json` the simulator uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `rpc.addr`; `None` when the `rpc` section is absent or null (RPC disabled).
    pub rpc_addr: Option<SocketAddr>,
    /// `network.addr`.
    pub network_addr: SocketAddr,
    /// `network.boot_nodes` (comma separated `pk@ip:port`).
    pub boot_nodes: String,
    /// `genesis_file`, relative to the home.
    pub genesis_file: String,
    /// `validator_key_file`, relative to the home.
    pub validator_key_file: String,
    /// `node_key_file`, relative to the home.
    pub node_key_file: String,
    /// `consensus.min_block_production_delay`.
    pub min_block_production_delay: Duration,
    /// `consensus.max_block_production_delay`; ×10 is the health check's staleness limit.
    pub max_block_production_delay: Duration,
    /// All consensus timers the simulator uses (`consensus.min_block_production_delay`,
    /// `max_block_production_delay`, `max_block_wait_delay`, `doomslug_step_period`,
    /// `block_production_tracking_delay`; neard's defaults for absent fields).
    pub timers: Timers,
    /// Top-level fields the simulator does not know (neard warns about these).
    pub unknown_fields: Vec<String>,
}

/// Why `config.json` could not be loaded. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Could not read the file.
    #[error("Failed to read config from {path}: {source}")]
    Io {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Not valid JSON, or a known field has the wrong type or value.
    #[error("Failed to deserialize config from {path}: {source}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// neard's `{"secs": N, "nanos": M}` duration encoding.
#[derive(Deserialize)]
struct JsonDuration {
    secs: u64,
    #[serde(default)]
    nanos: u32,
}

impl From<JsonDuration> for Duration {
    fn from(d: JsonDuration) -> Duration {
        Duration::new(d.secs, d.nanos)
    }
}

#[derive(Deserialize)]
struct RawRpc {
    addr: SocketAddr,
}

#[derive(Deserialize)]
struct RawNetwork {
    #[serde(default = "default_network_addr")]
    addr: SocketAddr,
    #[serde(default)]
    boot_nodes: String,
}

impl Default for RawNetwork {
    fn default() -> Self {
        RawNetwork {
            addr: default_network_addr(),
            boot_nodes: String::new(),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawConsensus {
    min_block_production_delay: Option<JsonDuration>,
    max_block_production_delay: Option<JsonDuration>,
    max_block_wait_delay: Option<JsonDuration>,
    doomslug_step_period: Option<JsonDuration>,
    block_production_tracking_delay: Option<JsonDuration>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default = "default_genesis_file")]
    genesis_file: String,
    #[serde(default = "default_validator_key_file")]
    validator_key_file: String,
    #[serde(default = "default_node_key_file")]
    node_key_file: String,
    #[serde(default)]
    rpc: Option<RawRpc>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    consensus: RawConsensus,
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

fn default_network_addr() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 24567))
}
fn default_genesis_file() -> String {
    "genesis.json".into()
}
fn default_validator_key_file() -> String {
    "validator_key.json".into()
}
fn default_node_key_file() -> String {
    "node_key.json".into()
}

/// Top-level fields of neard 2.x's `Config` that are not in [`default_config_json`] (older or
/// optional ones), so they do not produce an "unrecognised field" warning.
const OTHER_KNOWN_FIELDS: &[&str] = &[
    "genesis_records_file",
    "tracked_shards",
    "tracked_accounts",
    "tracked_shadow_validator",
    "tracked_shard_schedule",
    "expected_shutdown",
    "cold_store",
    "split_storage",
    "rosetta_rpc",
    "save_trie_changes",
    "state_sync",
    "epoch_sync",
    "telemetry",
    "resharding_config",
    "gc_blocks_limit",
    "gc_fork_clean_step",
    "gc_num_epochs_to_keep",
];

impl Config {
    /// Reads `<home>/config.json`.
    pub fn load(home: &Path) -> Result<Config, ConfigError> {
        let path = home.join(CONFIG_FILE);
        let body = std::fs::read(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        Config::parse(&body).map_err(|source| ConfigError::Parse { path, source })
    }

    /// Parses a `config.json` body.
    pub fn parse(body: &[u8]) -> Result<Config, serde_json::Error> {
        let raw: RawConfig = serde_json::from_slice(body)?;
        let neard = Timers::neard();
        let c = raw.consensus;
        let timers = Timers {
            min_block_production_delay: c
                .min_block_production_delay
                .map_or(neard.min_block_production_delay, Duration::from),
            max_block_production_delay: c
                .max_block_production_delay
                .map_or(neard.max_block_production_delay, Duration::from),
            max_block_wait_delay: c
                .max_block_wait_delay
                .map_or(neard.max_block_wait_delay, Duration::from),
            doomslug_step_period: c
                .doomslug_step_period
                .map_or(neard.doomslug_step_period, Duration::from),
            block_production_tracking_delay: c
                .block_production_tracking_delay
                .map_or(neard.block_production_tracking_delay, Duration::from),
        };
        let template = default_config_json(DEFAULT_RPC_ADDR, DEFAULT_NETWORK_ADDR, "");
        let unknown_fields = raw
            .rest
            .keys()
            .filter(|k| template.get(k.as_str()).is_none())
            .filter(|k| !OTHER_KNOWN_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        Ok(Config {
            rpc_addr: raw.rpc.map(|r| r.addr),
            network_addr: raw.network.addr,
            boot_nodes: raw.network.boot_nodes,
            genesis_file: raw.genesis_file,
            validator_key_file: raw.validator_key_file,
            node_key_file: raw.node_key_file,
            min_block_production_delay: timers.min_block_production_delay,
            max_block_production_delay: timers.max_block_production_delay,
            timers,
            unknown_fields,
        })
    }
}

/// What the simulator takes from `genesis.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Genesis {
    /// `chain_id`.
    pub chain_id: String,
    /// Account ids of the genesis validators, in file order.
    pub validators: Vec<String>,
    /// The genesis validators with their stakes (`amount`), in file order.
    pub stakes: Vec<(String, u128)>,
    /// `epoch_length` ([`crate::spec::DEFAULT_EPOCH_LENGTH`] if absent).
    pub epoch_length: u64,
    /// Number of shards (`shard_layout`, 1 if absent).
    pub num_shards: u64,
    /// A stable hash of the file's chain id and validators (stands in for the genesis block
    /// hash).
    pub hash: String,
}

impl Genesis {
    /// Reads `path`; a missing or unreadable genesis gives `None` (the simulator then reports
    /// chain id `localnet` and no genesis validators).
    pub fn load(path: &Path) -> Option<Genesis> {
        let body = std::fs::read(path).ok()?;
        let v: Value = serde_json::from_slice(&body).ok()?;
        let chain_id = v.get("chain_id")?.as_str()?.to_owned();
        let stakes: Vec<(String, u128)> = v
            .get("validators")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter_map(|x| {
                        let account = x.get("account_id")?.as_str()?.to_owned();
                        let amount = match x.get("amount") {
                            Some(Value::String(s)) => s.parse().unwrap_or(1),
                            Some(Value::Number(n)) => n.as_u64().map_or(1, u128::from),
                            _ => 1,
                        };
                        Some((account, amount))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let validators: Vec<String> = stakes.iter().map(|(a, _)| a.clone()).collect();
        let hash = chain::hash(&format!("genesis:{chain_id}:{}", validators.join(",")), 0);
        let num_shards = v
            .pointer("/shard_layout/V0/num_shards")
            .and_then(Value::as_u64)
            .or_else(|| {
                v.get("num_block_producer_seats_per_shard")
                    .and_then(Value::as_array)
                    .map(|a| a.len() as u64)
            })
            .unwrap_or(1)
            .max(1);
        Some(Genesis {
            chain_id,
            validators,
            stakes,
            epoch_length: v
                .get("epoch_length")
                .and_then(Value::as_u64)
                .unwrap_or(crate::spec::DEFAULT_EPOCH_LENGTH)
                .max(1),
            num_shards,
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{self, Kind};

    #[test]
    fn default_config_round_trips() {
        let v = default_config_json("127.0.0.1:1234", "127.0.0.1:1235", "");
        let c = Config::parse(v.to_string().as_bytes()).expect("parses");
        assert_eq!(c.rpc_addr, Some("127.0.0.1:1234".parse().expect("addr")));
        assert_eq!(c.max_block_production_delay, Duration::from_secs(2));
        assert!(c.unknown_fields.is_empty(), "{:?}", c.unknown_fields);
    }

    #[test]
    fn unknown_fields_are_listed_and_rpc_may_be_absent() {
        let c =
            Config::parse(br#"{"bogus": 1, "network": {"addr": "127.0.0.1:9"}}"#).expect("parses");
        assert_eq!(c.unknown_fields, vec!["bogus".to_owned()]);
        assert_eq!(c.rpc_addr, None);
        assert!(Config::parse(br#"{"rpc": {"addr": "nonsense"}}"#).is_err());
    }

    #[test]
    fn init_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = init(dir.path(), Some("localnet"), Some("pool.near")).expect("init");
        assert_eq!(r.written.len(), 4);
        let before = std::fs::read(dir.path().join("validator_key.json")).expect("key");
        let r = init(dir.path(), Some("localnet"), Some("pool.near")).expect("init again");
        assert_eq!(r.written.len(), 0);
        assert_eq!(
            before,
            std::fs::read(dir.path().join("validator_key.json")).expect("key")
        );
        assert!(init(dir.path(), Some("localnet"), Some("other.near")).is_err());
    }

    #[test]
    fn localnet_homes_boot_from_node0() {
        let dir = tempfile::tempdir().expect("tempdir");
        localnet(dir.path(), 3, "node").expect("localnet");
        let c0 = Config::load(&dir.path().join("node0")).expect("node0");
        let c2 = Config::load(&dir.path().join("node2")).expect("node2");
        assert_eq!(c0.boot_nodes, "");
        assert!(c2.boot_nodes.ends_with(&format!("@{}", c0.network_addr)));
        assert_ne!(c0.rpc_addr, c2.rpc_addr);
        let g = Genesis::load(&dir.path().join("node1/genesis.json")).expect("genesis");
        assert_eq!(g.validators, ["node0", "node1", "node2"]);
        let k = keys::read(
            &dir.path().join("node1/validator_key.json"),
            Kind::Validator,
        )
        .expect("key");
        assert_eq!(k.account_id, "node1");
    }
}
