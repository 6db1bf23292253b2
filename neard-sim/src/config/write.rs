//! Writing a home's `config.json`, `genesis.json` and key files, as `neard init` and `neard
//! localnet` do: existing files are never overwritten.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::{
    CONFIG_FILE, DEFAULT_MAX_BLOCK_PRODUCTION_DELAY, DEFAULT_MIN_BLOCK_PRODUCTION_DELAY,
    DEFAULT_NETWORK_ADDR, DEFAULT_RPC_ADDR,
};
use crate::chain;
use crate::keys::{self, KeyFile, Kind};
use crate::spec::Timers;

/// Stake given to each genesis validator (neard's `TESTING_INIT_STAKE`, 50 000 NEAR).
const TESTING_INIT_STAKE: &str = "50000000000000000000000000000";

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
