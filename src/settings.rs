//! kuutamod's configuration: `KUUTAMO_*` environment variables (each also a flag), checked at
//! start so that every bad input fails at once with one line naming the variable or file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::keys::KeyFile;
use crate::neard::config::NeardConfig;
use crate::timing::Timing;

/// How a voter is promoted to validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailoverMode {
    /// Stop neard and start it again with the validator key (works with any neard).
    Restart,
    /// Write the key into the running neard's home and send SIGHUP (neard >= 2.3).
    HotSwap,
}

/// How the voter's `config.json` tracks shards, so that it is ready to validate (hot swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShardTracking {
    /// Leave the shard-tracking fields of config.json as the operator wrote them.
    None,
    /// `tracked_shards_config: {"ShadowValidator": <account>}` (neard >= 2.6).
    ShadowValidator,
    /// `tracked_shadow_validator: <account>` with `tracked_shards: []` (neard 2.0 - 2.5).
    TrackedShadowValidator,
}

/// Command-line flags and environment variables.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kuutamod",
    version,
    about = "Distributed supervisor for neard: Consul-locked active-passive failover for NEAR validators"
)]
pub struct Args {
    /// This node's id, in logs and in the leader key's value.
    #[arg(long, env = "KUUTAMO_NODE_ID", default_value = "node")]
    pub node_id: String,
    /// NEAR account of the validator. The lock (`kuutamod-leader/<account>`) belongs to the
    /// validator key's account; when set, this must name the same account (a check against
    /// typos: kuutamod refuses to start otherwise).
    #[arg(long, env = "KUUTAMO_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Consul HTTP API (http or https).
    #[arg(
        long,
        env = "KUUTAMO_CONSUL_URL",
        default_value = "http://localhost:8500"
    )]
    pub consul_url: String,
    /// Consul ACL token (else CONSUL_HTTP_TOKEN, else the token file).
    #[arg(long, env = "KUUTAMO_CONSUL_TOKEN", hide_env_values = true)]
    pub consul_token: Option<String>,
    /// File holding the Consul ACL token.
    #[arg(long, env = "KUUTAMO_CONSUL_TOKEN_FILE")]
    pub consul_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed Consul's HTTPS certificate (for an https URL with a
    /// private CA).
    #[arg(long, env = "KUUTAMO_CONSUL_CA_FILE")]
    pub consul_ca_file: Option<PathBuf>,
    /// Where /metrics, /health and /neard-pid are served.
    #[arg(
        long,
        env = "KUUTAMO_EXPORTER_ADDRESS",
        default_value = "127.0.0.1:2233"
    )]
    pub exporter_address: String,
    /// Validator key file [default: $CREDENTIALS_DIRECTORY/validator_key.json].
    #[arg(long, env = "KUUTAMO_VALIDATOR_KEY")]
    pub validator_key: Option<PathBuf>,
    /// Validator node key file, the same on every host; used in restart mode only (a hot swap
    /// keeps the host's own node key) [default: $CREDENTIALS_DIRECTORY/validator_node_key.json].
    #[arg(long, env = "KUUTAMO_VALIDATOR_NODE_KEY")]
    pub validator_node_key: Option<PathBuf>,
    /// Voter node key file, unique to this host [default:
    /// $CREDENTIALS_DIRECTORY/voter_node_key.json].
    #[arg(long, env = "KUUTAMO_VOTER_NODE_KEY")]
    pub voter_node_key: Option<PathBuf>,
    /// neard's home, with config.json and genesis.json in place.
    #[arg(long, env = "KUUTAMO_NEARD_HOME", default_value = ".")]
    pub neard_home: PathBuf,
    /// Passed to neard as --boot-nodes.
    #[arg(long, env = "KUUTAMO_NEARD_BOOTNODES")]
    pub neard_bootnodes: Option<String>,
    /// network.addr of neard as validator.
    #[arg(
        long,
        env = "KUUTAMO_VALIDATOR_NETWORK_ADDR",
        default_value = "0.0.0.0:24567"
    )]
    pub validator_network_addr: String,
    /// network.addr of neard as voter.
    #[arg(
        long,
        env = "KUUTAMO_VOTER_NETWORK_ADDR",
        default_value = "0.0.0.0:24568"
    )]
    pub voter_network_addr: String,
    /// The neard binary.
    #[arg(long, env = "KUUTAMO_NEARD_BIN", default_value = "neard")]
    pub neard_bin: PathBuf,
    /// TTL of the Consul session. The lock can move this long after the last renew at the
    /// earliest; see docs/failover.md for how the other timings derive from it.
    #[arg(long, env = "KUUTAMO_SESSION_TTL", default_value = "30s", value_parser = crate::duration::parse)]
    pub session_ttl: Duration,
    /// How long neard may take to exit after SIGTERM before it is killed.
    #[arg(long, env = "KUUTAMO_NEARD_STOP_GRACE", default_value = "5s", value_parser = crate::duration::parse)]
    pub neard_stop_grace: Duration,
    /// How long the validating neard may report `syncing` before this node steps down.
    #[arg(long, env = "KUUTAMO_SYNCING_GRACE", default_value = "30s", value_parser = crate::duration::parse)]
    pub syncing_grace: Duration,
    /// How a voter becomes validator.
    #[arg(
        long,
        env = "KUUTAMO_FAILOVER_MODE",
        value_enum,
        default_value = "hot-swap"
    )]
    pub failover_mode: FailoverMode,
    /// Shard tracking written into the voter's config.json.
    #[arg(
        long,
        env = "KUUTAMO_VOTER_SHARD_TRACKING",
        value_enum,
        default_value = "none"
    )]
    pub voter_shard_tracking: ShardTracking,
    /// Priority among the standbys: a standby leaves a free lock to a synced standby with a
    /// higher priority for a moment; 0 means this node never takes the lock.
    #[arg(long, env = "KUUTAMO_PRIORITY", default_value_t = 1)]
    pub priority: u32,
    /// Doppelganger detection: after our account produced blocks or chunks this cluster did
    /// not sign, do not promote until it has been silent for this many heights. 0 turns the
    /// detection off.
    #[arg(long, env = "KUUTAMO_DOPPELGANGER_HEIGHTS", default_value_t = 20)]
    pub doppelganger_heights: u64,
    /// Kickout threshold for produced/expected blocks, in percent (mainnet: 80), for
    /// `kuutamod_validator_kickout_margin`.
    #[arg(long, env = "KUUTAMO_KICKOUT_THRESHOLD_BLOCKS", default_value_t = 80)]
    pub kickout_threshold_blocks: u8,
    /// Kickout threshold for produced/expected chunks, in percent (mainnet: 80).
    #[arg(long, env = "KUUTAMO_KICKOUT_THRESHOLD_CHUNKS", default_value_t = 80)]
    pub kickout_threshold_chunks: u8,
    /// A command run (with `sh -c`) on every role change, with the old and the new state as
    /// arguments and in KUUTAMO_ROLE_OLD / KUUTAMO_ROLE_NEW; it may run for 30 s and never
    /// delays kuutamod.
    #[arg(long, env = "KUUTAMO_ON_ROLE_CHANGE")]
    pub on_role_change: Option<String>,
}

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Node id.
    pub node_id: String,
    /// Validator account: the validator key's.
    pub account_id: String,
    /// Consul base URL.
    pub consul_url: String,
    /// Consul ACL token.
    pub consul_token: Option<String>,
    /// CA file for Consul's HTTPS.
    pub consul_ca_file: Option<PathBuf>,
    /// Exporter listen address.
    pub exporter_address: SocketAddr,
    /// The validator key.
    pub validator_key: KeyFile,
    /// The validator node key (required in restart mode; unused by hot swaps).
    pub validator_node_key: Option<KeyFile>,
    /// This host's voter node key.
    pub voter_node_key: KeyFile,
    /// neard's home.
    pub neard_home: PathBuf,
    /// neard's config.json as found at start.
    pub neard_config: NeardConfig,
    /// Boot nodes for neard.
    pub neard_bootnodes: Option<String>,
    /// Validator network address.
    pub validator_network_addr: SocketAddr,
    /// Voter network address.
    pub voter_network_addr: SocketAddr,
    /// neard binary.
    pub neard_bin: PathBuf,
    /// Derived timing.
    pub timing: Timing,
    /// Syncing grace for the leader.
    pub syncing_grace: Duration,
    /// Failover mode.
    pub failover_mode: FailoverMode,
    /// Voter shard tracking.
    pub voter_shard_tracking: ShardTracking,
    /// Priority among the standbys (0: never takes the lock).
    pub priority: u32,
    /// The role-change hook.
    pub on_role_change: Option<String>,
    /// Doppelganger silence in heights (0: off).
    pub doppelganger_heights: u64,
    /// Kickout thresholds (percent) for blocks and chunks.
    pub kickout_thresholds: (u8, u8),
}

/// The account the lock belongs to: the validator key's. `given` (`KUUTAMO_ACCOUNT_ID`) must
/// name the same account: two hosts with different account ids would lock different keys and
/// both validate.
pub fn account_of(key: &KeyFile, given: Option<&str>) -> Result<String, String> {
    let account = key.account_id.as_str();
    if account.is_empty() || account.contains('/') {
        return Err(format!(
            "the validator key's account_id {account:?} is not a NEAR account id; \
             the key file must name the validator (staking pool) account"
        ));
    }
    match given {
        Some(g) if g != account => Err(format!(
            "KUUTAMO_ACCOUNT_ID={g:?} differs from the validator key's account {account:?}; \
             the lock belongs to the key's account: fix KUUTAMO_ACCOUNT_ID or the key file"
        )),
        _ => Ok(account.to_string()),
    }
}

/// The Consul key holding the lock for `account_id`.
pub fn leader_key(account_id: &str) -> String {
    format!("kuutamod-leader/{account_id}")
}

fn key_path(given: Option<&Path>, var: &str, file: &str) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    match std::env::var_os("CREDENTIALS_DIRECTORY") {
        Some(dir) => Ok(Path::new(&dir).join(file)),
        None => Err(format!(
            "{var} is not set and there is no $CREDENTIALS_DIRECTORY to find {file} in; \
             set {var} to the key file's path"
        )),
    }
}

fn socket_addr(var: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{var}={value:?} is not an ip:port address (e.g. 0.0.0.0:24567)"))
}

/// Resolves the neard binary: a path must be an executable file; a bare name is looked up on
/// PATH, as the process spawn would.
pub fn resolve_neard_bin(bin: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if bin.components().count() > 1 {
        return if executable(bin) {
            Ok(bin.to_owned())
        } else {
            Err(format!(
                "KUUTAMO_NEARD_BIN={} is not an executable file; point it at neard",
                bin.display()
            ))
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(bin))
                .find(|p| executable(p))
        })
        .ok_or_else(|| {
            format!(
                "KUUTAMO_NEARD_BIN={} is not found on PATH; install neard or set KUUTAMO_NEARD_BIN to its path",
                bin.display()
            )
        })
}

/// Checks a Consul URL: http(s), with a host.
pub fn check_consul_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("KUUTAMO_CONSUL_URL={url:?} is not a URL ({e}); e.g. http://localhost:8500")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "KUUTAMO_CONSUL_URL={url:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(())
}

/// The ACL token: the flag/`KUUTAMO_CONSUL_TOKEN`, else `CONSUL_HTTP_TOKEN`, else the token file.
pub fn consul_token(given: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(t) = given.filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_string()));
    }
    if let Ok(t) = std::env::var("CONSUL_HTTP_TOKEN") {
        if !t.is_empty() {
            return Ok(Some(t));
        }
    }
    match file {
        None => Ok(None),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read KUUTAMO_CONSUL_TOKEN_FILE {}: {e}",
                    path.display()
                )
            })?;
            Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
        }
    }
}

impl Settings {
    /// Checks `args`: parses addresses, reads and checks every key file and neard's
    /// config.json. The error is one line naming the variable or file and the fix.
    pub fn from_args(args: Args) -> Result<Self, String> {
        if args.node_id.is_empty() {
            return Err("KUUTAMO_NODE_ID is empty; give each host a distinct node id".into());
        }
        check_consul_url(&args.consul_url)?;
        let consul_token = consul_token(
            args.consul_token.as_deref(),
            args.consul_token_file.as_deref(),
        )?;
        let exporter_address = socket_addr("KUUTAMO_EXPORTER_ADDRESS", &args.exporter_address)?;
        let validator_network_addr = socket_addr(
            "KUUTAMO_VALIDATOR_NETWORK_ADDR",
            &args.validator_network_addr,
        )?;
        let voter_network_addr =
            socket_addr("KUUTAMO_VOTER_NETWORK_ADDR", &args.voter_network_addr)?;
        let timing = Timing::new(args.session_ttl, args.neard_stop_grace)?;

        let read = |what, given: &Option<PathBuf>, var, file| -> Result<KeyFile, String> {
            let path = key_path(given.as_deref(), var, file)?;
            KeyFile::read(what, &path).map_err(|e| e.to_string())
        };
        let validator_key = read(
            "validator",
            &args.validator_key,
            "KUUTAMO_VALIDATOR_KEY",
            "validator_key.json",
        )?;
        let validator_node_key_given = args.validator_node_key.is_some()
            || std::env::var_os("CREDENTIALS_DIRECTORY")
                .is_some_and(|d| Path::new(&d).join("validator_node_key.json").exists());
        let validator_node_key =
            if args.failover_mode == FailoverMode::Restart || validator_node_key_given {
                Some(read(
                    "validator node",
                    &args.validator_node_key,
                    "KUUTAMO_VALIDATOR_NODE_KEY",
                    "validator_node_key.json",
                )?)
            } else {
                None
            };
        let voter_node_key = read(
            "voter node",
            &args.voter_node_key,
            "KUUTAMO_VOTER_NODE_KEY",
            "voter_node_key.json",
        )?;
        if validator_node_key
            .as_ref()
            .is_some_and(|k| k.public_key == voter_node_key.public_key)
        {
            return Err(
                "KUUTAMO_VOTER_NODE_KEY is the same key as KUUTAMO_VALIDATOR_NODE_KEY; \
                 each host needs its own voter node key (generate one with `neard init` in a scratch home)"
                    .into(),
            );
        }
        if voter_node_key.public_key == validator_key.public_key {
            return Err(
                "KUUTAMO_VOTER_NODE_KEY is the validator key; use a node key of this host's own"
                    .into(),
            );
        }
        let account_id = account_of(&validator_key, args.account_id.as_deref())?;
        let neard_config = NeardConfig::load(&args.neard_home).map_err(|e| e.to_string())?;
        let neard_bin = resolve_neard_bin(&args.neard_bin)?;
        Ok(Settings {
            node_id: args.node_id,
            account_id,
            consul_url: args.consul_url,
            consul_token,
            consul_ca_file: args.consul_ca_file,
            exporter_address,
            validator_key,
            validator_node_key,
            voter_node_key,
            neard_home: args.neard_home,
            neard_config,
            neard_bootnodes: args.neard_bootnodes.filter(|b| !b.is_empty()),
            validator_network_addr,
            voter_network_addr,
            neard_bin,
            timing,
            syncing_grace: args.syncing_grace,
            failover_mode: args.failover_mode,
            voter_shard_tracking: args.voter_shard_tracking,
            priority: args.priority,
            on_role_change: args.on_role_change.filter(|c| !c.trim().is_empty()),
            doppelganger_heights: args.doppelganger_heights,
            kickout_thresholds: (args.kickout_threshold_blocks, args.kickout_threshold_chunks),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_consul_url("http://localhost:8500").is_ok());
        assert!(check_consul_url("https://consul.example:8501").is_ok());
        assert!(check_consul_url("localhost:8500").is_err());
        assert!(check_consul_url("ftp://x").is_err());
    }
}
