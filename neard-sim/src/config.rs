//! `config.json` and `genesis.json`: reading them for `run`, writing them for `init` and
//! `localnet`.
//!
//! Only the fields the simulator acts on are typed; everything else in a real neard config is
//! accepted and ignored, and unknown top-level fields only produce a warning, as in neard.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::chain;
use crate::keys::{self, KeyFile, Kind};
use crate::spec::Timers;

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

/// Stake given to each genesis validator (neard's `TESTING_INIT_STAKE`, 50 000 NEAR).
const TESTING_INIT_STAKE: &str = "50000000000000000000000000000";

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

fn duration_json(d: Duration) -> Value {
    json!({"secs": d.as_secs(), "nanos": d.subsec_nanos()})
}

/// A neard 2.x-shaped `config.json` with the given addresses and boot nodes.
pub fn default_config_json(rpc_addr: &str, network_addr: &str, boot_nodes: &str) -> Value {
    json!({
        "genesis_file": "genesis.json",
        "genesis_records_file": null,
        "validator_key_file": "validator_key.json",
        "node_key_file": "node_key.json",
        "rpc": {
            "addr": rpc_addr,
            "prometheus_addr": null,
            "cors_allowed_origins": ["*"],
            "polling_config": {
                "polling_interval": {"secs": 0, "nanos": 500_000_000},
                "polling_timeout": {"secs": 10, "nanos": 0}
            },
            "limits_config": {"json_payload_max_size": 10_485_760},
            "enable_debug_rpc": false,
            "experimental_debug_pages_src_path": null
        },
        "telemetry": {"endpoints": []},
        "network": {
            "addr": network_addr,
            "external_address": "",
            "boot_nodes": boot_nodes,
            "whitelist_nodes": "",
            "max_num_peers": 40,
            "minimum_outbound_peers": 5,
            "ideal_connections_lo": 30,
            "ideal_connections_hi": 35,
            "peer_recent_time_window": {"secs": 600, "nanos": 0},
            "safe_set_size": 20,
            "archival_peer_connections_lower_bound": 10,
            "handshake_timeout": {"secs": 20, "nanos": 0},
            "skip_sync_wait": true,
            "ban_window": {"secs": 10800, "nanos": 0},
            "blacklist": [],
            "ttl_account_id_router": {"secs": 3600, "nanos": 0},
            "peer_stats_period": {"secs": 5, "nanos": 0},
            "monitor_peers_max_period": {"secs": 60, "nanos": 0},
            "peer_states_cache_size": 1000,
            "peer_expiration_duration": {"secs": 604_800, "nanos": 0},
            "public_addrs": [],
            "allow_private_ip_in_public_addrs": false,
            "trusted_stun_servers": [],
            "experimental": {}
        },
        "consensus": {
            "min_num_peers": 3,
            "block_production_tracking_delay": {"secs": 0, "nanos": 100_000_000},
            "min_block_production_delay": duration_json(DEFAULT_MIN_BLOCK_PRODUCTION_DELAY),
            "max_block_production_delay": duration_json(DEFAULT_MAX_BLOCK_PRODUCTION_DELAY),
            "max_block_wait_delay": {"secs": 6, "nanos": 0},
            "produce_empty_blocks": true,
            "block_fetch_horizon": 50,
            "block_header_fetch_horizon": 50,
            "catchup_step_period": {"secs": 0, "nanos": 100_000_000},
            "chunk_request_retry_period": {"secs": 0, "nanos": 400_000_000},
            "header_sync_initial_timeout": {"secs": 10, "nanos": 0},
            "header_sync_progress_timeout": {"secs": 2, "nanos": 0},
            "header_sync_stall_ban_timeout": {"secs": 120, "nanos": 0},
            "state_sync_external_timeout": {"secs": 60, "nanos": 0},
            "state_sync_p2p_timeout": {"secs": 10, "nanos": 0},
            "state_sync_retry_backoff": {"secs": 1, "nanos": 0},
            "state_sync_external_backoff": {"secs": 60, "nanos": 0},
            "header_sync_expected_height_per_second": 10,
            "sync_check_period": {"secs": 10, "nanos": 0},
            "sync_step_period": {"secs": 0, "nanos": 10_000_000},
            "doomslug_step_period": {"secs": 0, "nanos": 100_000_000},
            "sync_height_threshold": 1
        },
        "tracked_shards_config": "AllShards",
        "archive": false,
        "log_summary_style": "colored",
        "log_summary_period": {"secs": 10, "nanos": 0},
        "gc": {"gc_blocks_limit": 2, "gc_fork_clean_step": 100, "gc_num_epochs_to_keep": 5},
        "view_client_threads": 4,
        "view_client_throttle_period": {"secs": 30, "nanos": 0},
        "trie_viewer_state_size_limit": 50000,
        "store": {
            "path": "data",
            "enable_statistics": false,
            "enable_statistics_export": true,
            "max_open_files": 10000,
            "col_state_cache_size": 536_870_912,
            "block_size": 16384,
            "trie_cache": {"default_max_bytes": 50_000_000, "per_shard_max_bytes": {}, "shard_cache_deletions_queue_capacity": 100_000},
            "view_trie_cache": {"default_max_bytes": 50_000_000, "per_shard_max_bytes": {}, "shard_cache_deletions_queue_capacity": 100_000},
            "enable_receipt_prefetching": true,
            "load_mem_tries_for_tracked_shards": false,
            "state_snapshot_config": {"state_snapshot_type": "ForReshardingOnly"}
        },
        "state_sync_enabled": true,
        "transaction_pool_size_limit": 100_000_000,
        "enable_multiline_logging": true,
        "produce_chunk_add_transactions_time_limit": {"secs": 0, "nanos": 200_000_000},
        "max_loaded_contracts": 256,
        "save_untracked_partial_chunks_parts": true
    })
}

/// A genesis for a test chain whose validators are `validators` (account, public key), with
/// equal stakes, one shard.
pub fn genesis_json(chain_id: &str, validators: &[(String, String)]) -> Value {
    genesis_json_with(chain_id, validators, &InitOptions::default())
}

/// Options of `init` and `localnet` beyond neard's basic ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Number of shards (`init --num-shards`, `localnet --shards`); 0 means 1.
    pub num_shards: u64,
    /// neard's `init --fast`: min/max block production delay 120/500 ms and an epoch of 60
    /// heights (nearcore `FAST_MIN_BLOCK_PRODUCTION_DELAY`, `FAST_MAX_BLOCK_PRODUCTION_DELAY`,
    /// `FAST_EPOCH_LENGTH`).
    pub fast: bool,
    /// Simulator only (`--speed-up N`): every consensus timer of neard's defaults divided by N
    /// (10: 60 ms / 200 ms / 600 ms, steps of 10 ms).
    pub speed_up: Option<u32>,
}

/// nearcore's `FAST_EPOCH_LENGTH`.
const FAST_EPOCH_LENGTH: u64 = 60;

impl InitOptions {
    fn shards(&self) -> u64 {
        self.num_shards.max(1)
    }

    fn epoch_length(&self) -> u64 {
        if self.fast {
            FAST_EPOCH_LENGTH
        } else {
            chain::EPOCH_LENGTH
        }
    }

    /// Applies the timer options to a config.json value.
    fn apply(&self, config: &mut Value) {
        if self.fast {
            config["consensus"]["min_block_production_delay"] =
                duration_json(Duration::from_millis(120));
            config["consensus"]["max_block_production_delay"] =
                duration_json(Duration::from_millis(500));
        }
        if let Some(n) = self.speed_up {
            let t = Timers::sped_up(n);
            let c = &mut config["consensus"];
            c["min_block_production_delay"] = duration_json(t.min_block_production_delay);
            c["max_block_production_delay"] = duration_json(t.max_block_production_delay);
            c["max_block_wait_delay"] = duration_json(t.max_block_wait_delay);
            c["doomslug_step_period"] = duration_json(t.doomslug_step_period);
            c["block_production_tracking_delay"] = duration_json(t.block_production_tracking_delay);
        }
    }
}

/// [`genesis_json`] with the shard count and epoch length of `opts`.
pub fn genesis_json_with(
    chain_id: &str,
    validators: &[(String, String)],
    opts: &InitOptions,
) -> Value {
    let shards = opts.shards();
    let seats = vec![json!(50); shards as usize];
    let hidden = vec![json!(0); shards as usize];
    let vs: Vec<Value> = validators
        .iter()
        .map(|(account, pk)| json!({"account_id": account, "public_key": pk, "amount": TESTING_INIT_STAKE}))
        .collect();
    let records: Vec<Value> = validators
        .iter()
        .flat_map(|(account, pk)| {
            [
                json!({"Account": {"account_id": account, "account": {
                    "amount": "1000000000000000000000000000000000", "locked": TESTING_INIT_STAKE,
                    "code_hash": "11111111111111111111111111111111", "storage_usage": 0, "version": "V1"}}}),
                json!({"AccessKey": {"account_id": account, "public_key": pk,
                    "access_key": {"nonce": 0, "permission": "FullAccess"}}}),
            ]
        })
        .collect();
    json!({
        "protocol_version": chain::PROTOCOL_VERSION,
        "genesis_time": chain::rfc3339(chain::GENESIS_UNIX_MS),
        "chain_id": chain_id,
        "genesis_height": 0,
        "num_block_producer_seats": 50,
        "num_block_producer_seats_per_shard": seats,
        "avg_hidden_validator_seats_per_shard": hidden,
        "dynamic_resharding": false,
        "epoch_length": opts.epoch_length(),
        "gas_limit": 1_000_000_000_000_000u64,
        "min_gas_price": "100000000",
        "max_gas_price": "10000000000000000000000",
        "block_producer_kickout_threshold": 90,
        "chunk_producer_kickout_threshold": 90,
        "chunk_validator_only_kickout_threshold": 80,
        "online_min_threshold": [9, 10],
        "online_max_threshold": [99, 100],
        "gas_price_adjustment_rate": [1, 100],
        "validators": vs,
        "transaction_validity_period": 100,
        "protocol_reward_rate": [1, 10],
        "max_inflation_rate": [1, 20],
        "total_supply": "2050000000000000000000000000000000",
        "num_blocks_per_year": 31_536_000,
        "protocol_treasury_account": "test.near",
        "fishermen_threshold": "10000000000000000000000000",
        "minimum_stake_divisor": 10,
        "shard_layout": {"V0": {"num_shards": shards, "version": 0}},
        "records": records
    })
}

/// What `init` or `localnet` did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// Writes `path` (pretty JSON) atomically unless it exists.
fn write_new_json(path: &Path, v: &Value, report: &mut InitReport) -> io::Result<()> {
    if path.exists() {
        report.kept.push(path.to_owned());
        return Ok(());
    }
    let mut body = serde_json::to_vec_pretty(v).map_err(io::Error::other)?;
    body.push(b'\n');
    let tmp = keys::tmp_path(path);
    std::fs::write(&tmp, &body)?;
    std::fs::rename(&tmp, path)?;
    report.written.push(path.to_owned());
    Ok(())
}

/// Writes a new key file for `account` unless one exists; returns its public key either way.
/// An existing key for another account is an error, as in neard.
fn ensure_key(
    path: &Path,
    kind: Kind,
    account: &str,
    report: &mut InitReport,
) -> io::Result<String> {
    if path.exists() {
        let key = keys::read(path, kind).map_err(io::Error::other)?;
        if kind == Kind::Validator && key.account_id != account {
            return Err(io::Error::other(format!(
                "{} contains key for {} but expecting key for {account}",
                path.display(),
                key.account_id
            )));
        }
        report.kept.push(path.to_owned());
        return Ok(key.public_key);
    }
    let key = KeyFile::generate(account)?;
    key.write(path)?;
    report.written.push(path.to_owned());
    Ok(key.public_key)
}

/// A random chain id like neard's (`test-chain-XXXXX`) for `init` without `--chain-id`.
fn random_chain_id() -> io::Result<String> {
    let key = KeyFile::generate("x")?;
    let suffix: String = key
        .public_key
        .chars()
        .skip(8)
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect();
    Ok(format!("test-chain-{suffix}"))
}

/// `neard init` for a test chain: config.json, node_key.json (account `node`),
/// validator_key.json (`account_id`, default `test.near`) and genesis.json with that single
/// validator. Existing files are never overwritten (missing keys are still created).
pub fn init(
    home: &Path,
    chain_id: Option<&str>,
    account_id: Option<&str>,
) -> io::Result<InitReport> {
    init_with(home, chain_id, account_id, &InitOptions::default())
}

/// [`init`] with [`InitOptions`] (shards, `--fast`, `--speed-up`).
pub fn init_with(
    home: &Path,
    chain_id: Option<&str>,
    account_id: Option<&str>,
    opts: &InitOptions,
) -> io::Result<InitReport> {
    std::fs::create_dir_all(home)?;
    let mut report = InitReport::default();
    let account = account_id.unwrap_or("test.near");
    let chain_id = match chain_id {
        Some(c) if !c.is_empty() => c.to_owned(),
        Some(_) => return Err(io::Error::other("--chain-id must not be empty")),
        None => random_chain_id()?,
    };
    let mut config = default_config_json(DEFAULT_RPC_ADDR, DEFAULT_NETWORK_ADDR, "");
    opts.apply(&mut config);
    write_new_json(&home.join(CONFIG_FILE), &config, &mut report)?;
    ensure_key(&home.join("node_key.json"), Kind::Node, "node", &mut report)?;
    let pk = ensure_key(
        &home.join("validator_key.json"),
        Kind::Validator,
        account,
        &mut report,
    )?;
    write_new_json(
        &home.join("genesis.json"),
        &genesis_json_with(&chain_id, &[(account.to_owned(), pk)], opts),
        &mut report,
    )?;
    Ok(report)
}

/// Reserves `n` distinct free loopback ports (all bound at once, then released).
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// `neard localnet`: `n` homes `<home>/<prefix>0..` with keys (validator accounts
/// `<prefix>i`), a shared genesis listing all of them, concrete free loopback ports for
/// `rpc.addr` and `network.addr`, and `network.boot_nodes` of every node but the first pointing
/// at node 0. Refuses to touch a home that already has a config.json.
pub fn localnet(home: &Path, n: usize, prefix: &str) -> io::Result<InitReport> {
    localnet_with(home, n, prefix, &InitOptions::default())
}

/// [`localnet`] with [`InitOptions`] (shards, `--speed-up`).
pub fn localnet_with(
    home: &Path,
    n: usize,
    prefix: &str,
    opts: &InitOptions,
) -> io::Result<InitReport> {
    if n == 0 {
        return Err(io::Error::other("localnet needs at least one validator"));
    }
    let mut report = InitReport::default();
    let dirs: Vec<PathBuf> = (0..n).map(|i| home.join(format!("{prefix}{i}"))).collect();
    if let Some(d) = dirs.iter().find(|d| d.join(CONFIG_FILE).exists()) {
        return Err(io::Error::other(format!(
            "{} already exists; localnet does not overwrite homes",
            d.join(CONFIG_FILE).display()
        )));
    }
    let ports = free_ports(2 * n)?;
    let mut validators = Vec::new();
    let mut node0_pk = String::new();
    for (i, dir) in dirs.iter().enumerate() {
        std::fs::create_dir_all(dir)?;
        let node_pk = ensure_key(&dir.join("node_key.json"), Kind::Node, "node", &mut report)?;
        let account = format!("{prefix}{i}");
        let pk = ensure_key(
            &dir.join("validator_key.json"),
            Kind::Validator,
            &account,
            &mut report,
        )?;
        validators.push((account, pk));
        if i == 0 {
            node0_pk = node_pk;
        }
    }
    let genesis = genesis_json_with("localnet", &validators, opts);
    for (i, dir) in dirs.iter().enumerate() {
        let boot_nodes = if i == 0 {
            String::new()
        } else {
            format!("{node0_pk}@127.0.0.1:{}", ports[1])
        };
        let mut config = default_config_json(
            &format!("127.0.0.1:{}", ports[2 * i]),
            &format!("127.0.0.1:{}", ports[2 * i + 1]),
            &boot_nodes,
        );
        config["rpc"]["enable_debug_rpc"] = json!(true);
        config["network"]["skip_sync_wait"] = json!(n == 1);
        config["consensus"]["min_num_peers"] = json!((n - 1).min(3));
        opts.apply(&mut config);
        write_new_json(&dir.join(CONFIG_FILE), &config, &mut report)?;
        write_new_json(&dir.join("genesis.json"), &genesis, &mut report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
