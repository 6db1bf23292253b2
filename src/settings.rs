//! kuutamod's configuration: `KUUTAMO_*` environment variables (each also a flag), checked at
//! start so that every bad input fails at once with one line naming the variable or file.
//!
//! The checks are small functions ([`ConsulAccess::resolve`], [`read_key`], [`distinct_keys`],
//! [`account_of`], [`resolve_neard_bin`], ...) that [`Settings::from_args`] runs in order and
//! that `kuutamod --check` ([`crate::check`]) runs one by one, to report every problem at once.
//! Beside this file: `cli.rs` ([`parse_args`]: clap's errors as one line naming the variable)
//! and `consul.rs` (where Consul is: kuutamo's settings, then the consul CLI's variables).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::keys::KeyFile;
use crate::neard::config::NeardConfig;
use crate::neard::home::Home;
pub use crate::neard::{FailoverMode, ShardTracking};
use crate::timing::Timing;

mod cli;
mod consul;
mod etcd;

pub use cli::{parse_args, parse_args_from};
pub use consul::{
    check_consul_url, consul_ca_file, consul_http_addr, consul_token, consul_url, ConsulAccess,
    ConsulFlags, DEFAULT_CONSUL_URL,
};
pub use etcd::{
    etcd_credentials, etcd_endpoints, EtcdAccess, LockBackend, StoreAccess, StoreFlags,
    DEFAULT_ETCD_ENDPOINT,
};

/// `KUUTAMO_DOPPELGANGER_HEIGHTS`'s default: the heights our account must be silent after a
/// signature this cluster did not make before this node promotes.
pub const DOPPELGANGER_HEIGHTS: u64 = 20;

/// `kuutamod --help`'s closing text: the formats and rules no single flag shows.
const AFTER_HELP: &str = "\
Durations (KUUTAMO_SESSION_TTL, KUUTAMO_NEARD_STOP_GRACE, KUUTAMO_SYNCING_GRACE): a number with a
unit (500ms, 30s, 2m, 1h, or 1m30s), or a bare number of seconds (30 is 30s, as systemd reads it).

Consul: the URL is --consul-url / KUUTAMO_CONSUL_URL, else CONSUL_HTTP_ADDR (with CONSUL_HTTP_SSL,
as the consul CLI reads them), else http://localhost:8500. The ACL token is KUUTAMO_CONSUL_TOKEN,
else the file KUUTAMO_CONSUL_TOKEN_FILE, else CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN. The
CA file is KUUTAMO_CONSUL_CA_FILE, else CONSUL_CACERT.

etcd (KUUTAMO_LOCK_BACKEND=etcd): KUUTAMO_ETCD_ENDPOINTS, comma-separated client URLs, the local
member first (default http://127.0.0.1:2379); KUUTAMO_ETCD_CA_FILE, KUUTAMO_ETCD_CERT_FILE and
KUUTAMO_ETCD_KEY_FILE for TLS; KUUTAMO_ETCD_USER and KUUTAMO_ETCD_PASSWORD_FILE for etcd's
authentication. Every node of a cluster must use the same store.

Logging: RUST_LOG sets what is logged to stderr (env_logger's syntax; default `info`), e.g.
RUST_LOG=debug or RUST_LOG=kuutamod=debug,info.

--check validates everything kuutamod needs without starting neard or taking the lock (it
creates and destroys one Consul session to test the token), one line per check; --check-local
leaves Consul out (for a unit's ExecStartPre: kuutamod itself rides out an unreachable Consul).

Exit status: 0 after SIGTERM or SIGINT (neard fenced and stopped, the lock released); 1 on a bad
setting (one line naming the variable or file, and the fix), on a failure, or when a check fails.";

/// Command-line flags and environment variables.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "kuutamod",
    version,
    about = "Distributed supervisor for neard: Consul-locked active-passive failover for NEAR validators",
    after_help = AFTER_HELP
)]
pub struct Args {
    /// Check every setting, key, neard, the Consul lock store and the ACL token, the clock and
    /// the exporter address, one line each; start nothing, take no lock; exit 1 if any fails.
    #[arg(long, conflicts_with = "check_local")]
    pub check: bool,
    /// Like --check, without the checks that need Consul (for ExecStartPre).
    #[arg(long)]
    pub check_local: bool,
    /// This node's id, in logs and in the leader key's value.
    #[arg(long, env = "KUUTAMO_NODE_ID", default_value = "node")]
    pub node_id: String,
    /// NEAR account of the validator. The lock (`kuutamod-leader/<account>`) belongs to the
    /// validator key's account; when set, this must name the same account (a check against
    /// typos: kuutamod refuses to start otherwise).
    #[arg(long, env = "KUUTAMO_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Consul's URL, ACL token and CA file.
    #[command(flatten)]
    pub consul: ConsulFlags,
    /// The lock store and etcd's settings.
    #[command(flatten)]
    pub store: StoreFlags,
    /// Where kuutamod serves /metrics, /health (the state), /leader (200 while validating),
    /// /standby (200 while ready to take over) and /neard-pid.
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
    /// Where kuutamod keeps what it must remember across restarts (the newest lock record it
    /// has seen, to recognise a rewound Consul) [default: $STATE_DIRECTORY, else neard's home].
    #[arg(long, env = "KUUTAMO_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
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
    /// TTL of the Consul session (a duration, see below). The lock can move this long after the
    /// last renew at the earliest; see docs/failover.md for how the other timings derive from
    /// it.
    #[arg(long, env = "KUUTAMO_SESSION_TTL", default_value = "30s", value_parser = crate::duration::parse)]
    pub session_ttl: Duration,
    /// How long neard may take to exit after SIGTERM before it is killed (at most 0.4 x the
    /// TTL).
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
    #[arg(long, env = "KUUTAMO_DOPPELGANGER_HEIGHTS", default_value_t = DOPPELGANGER_HEIGHTS)]
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
    /// The lock store (Consul or etcd) and how to reach it.
    pub lock_store: StoreAccess,
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
    /// kuutamod's state directory.
    pub state_dir: PathBuf,
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

/// Where a key file is: the variable's path, else `$CREDENTIALS_DIRECTORY/<file>` (systemd's
/// `LoadCredential`).
pub fn key_path(given: Option<&Path>, var: &str, file: &str) -> Result<PathBuf, String> {
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

/// Reads and checks the key file `var` names (or `file` in `$CREDENTIALS_DIRECTORY`).
pub fn read_key(
    what: &'static str,
    given: Option<&Path>,
    var: &str,
    file: &str,
) -> Result<KeyFile, String> {
    let path = key_path(given, var, file)?;
    KeyFile::read(what, &path).map_err(|e| e.to_string())
}

/// Whether this node needs the validator node key: always in restart mode (neard validates
/// with it), in hot-swap mode only when one is given (a hot swap keeps the host's own).
pub fn wants_validator_node_key(args: &Args) -> bool {
    args.failover_mode == FailoverMode::Restart
        || args.validator_node_key.is_some()
        || std::env::var_os("CREDENTIALS_DIRECTORY")
            .is_some_and(|d| Path::new(&d).join("validator_node_key.json").exists())
}

/// The three keys must be three different keys: the voter node key is this host's own network
/// identity; sharing it with the validator role, or using the validator key as a node key,
/// breaks the hand-over (two hosts with one network identity).
pub fn distinct_keys(
    validator: &KeyFile,
    validator_node: Option<&KeyFile>,
    voter_node: &KeyFile,
) -> Result<(), String> {
    if validator_node.is_some_and(|k| k.public_key == voter_node.public_key) {
        return Err(
            "KUUTAMO_VOTER_NODE_KEY is the same key as KUUTAMO_VALIDATOR_NODE_KEY; \
             each host needs its own voter node key (generate one with `neard init` in a scratch home)"
                .into(),
        );
    }
    if voter_node.public_key == validator.public_key {
        return Err(
            "KUUTAMO_VOTER_NODE_KEY is the validator key; use a node key of this host's own".into(),
        );
    }
    if validator_node.is_some_and(|k| k.public_key == validator.public_key) {
        return Err(
            "KUUTAMO_VALIDATOR_NODE_KEY is the validator key; the validator role's node key is \
             a node key (node_key.json), not validator_key.json"
                .into(),
        );
    }
    Ok(())
}

/// Parses `value` of `var` as an `ip:port`; the error shows an example fit for that variable.
pub fn socket_addr(var: &str, value: &str) -> Result<SocketAddr, String> {
    let example = match var {
        "KUUTAMO_EXPORTER_ADDRESS" => "127.0.0.1:2233",
        "KUUTAMO_VOTER_NETWORK_ADDR" => "0.0.0.0:24568",
        _ => "0.0.0.0:24567",
    };
    value
        .parse()
        .map_err(|_| format!("{var}={value:?} is not an ip:port address (e.g. {example})"))
}

/// The three listen addresses: exporter, validator network, voter network.
pub fn addresses(args: &Args) -> Result<(SocketAddr, SocketAddr, SocketAddr), String> {
    Ok((
        socket_addr("KUUTAMO_EXPORTER_ADDRESS", &args.exporter_address)?,
        socket_addr(
            "KUUTAMO_VALIDATOR_NETWORK_ADDR",
            &args.validator_network_addr,
        )?,
        socket_addr("KUUTAMO_VOTER_NETWORK_ADDR", &args.voter_network_addr)?,
    ))
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

impl Settings {
    /// What kuutamod writes into neard's home, from these settings.
    pub fn home(&self) -> Home {
        Home {
            dir: self.neard_home.clone(),
            fallback: self.neard_config.clone(),
            failover_mode: self.failover_mode,
            validator_key: self.validator_key.clone(),
            validator_node_key: self.validator_node_key.clone(),
            voter_node_key: self.voter_node_key.clone(),
            validator_addr: self.validator_network_addr,
            voter_addr: self.voter_network_addr,
            shard_tracking: self.voter_shard_tracking,
            account: self.account_id.clone(),
        }
    }

    /// Checks `args`: parses addresses, reads and checks every key file and neard's
    /// config.json. The error is one line naming the variable or file and the fix.
    pub fn from_args(args: Args) -> Result<Self, String> {
        if args.node_id.is_empty() {
            return Err("KUUTAMO_NODE_ID is empty; give each host a distinct node id".into());
        }
        let lock_store = StoreAccess::resolve(&args.store, || args.consul.access())?;
        let (exporter_address, validator_network_addr, voter_network_addr) = addresses(&args)?;
        let timing = Timing::new(args.session_ttl, args.neard_stop_grace)?;

        let validator_key = read_key(
            "validator",
            args.validator_key.as_deref(),
            "KUUTAMO_VALIDATOR_KEY",
            "validator_key.json",
        )?;
        let validator_node_key = if wants_validator_node_key(&args) {
            Some(read_key(
                "validator node",
                args.validator_node_key.as_deref(),
                "KUUTAMO_VALIDATOR_NODE_KEY",
                "validator_node_key.json",
            )?)
        } else {
            None
        };
        let voter_node_key = read_key(
            "voter node",
            args.voter_node_key.as_deref(),
            "KUUTAMO_VOTER_NODE_KEY",
            "voter_node_key.json",
        )?;
        distinct_keys(&validator_key, validator_node_key.as_ref(), &voter_node_key)?;
        let account_id = account_of(&validator_key, args.account_id.as_deref())?;
        let neard_config = NeardConfig::load(&args.neard_home).map_err(|e| e.to_string())?;
        let neard_bin = resolve_neard_bin(&args.neard_bin)?;
        Ok(Settings {
            node_id: args.node_id,
            account_id,
            lock_store,
            exporter_address,
            validator_key,
            validator_node_key,
            voter_node_key,
            state_dir: args
                .state_dir
                .filter(|d| !d.as_os_str().is_empty())
                .or_else(|| {
                    // systemd may list several directories, separated by colons.
                    let dirs = std::env::var("STATE_DIRECTORY").ok()?;
                    dirs.split(':')
                        .next()
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| args.neard_home.clone()),
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
    use clap::CommandFactory;

    #[test]
    fn address_errors_show_an_example_for_that_address() {
        let err = socket_addr("KUUTAMO_EXPORTER_ADDRESS", "everywhere").expect_err("bad");
        assert!(err.contains("e.g. 127.0.0.1:2233"), "{err}");
        let err = socket_addr("KUUTAMO_VOTER_NETWORK_ADDR", "0.0.0.0").expect_err("bad");
        assert!(err.contains("e.g. 0.0.0.0:24568"), "{err}");
    }

    #[test]
    fn help_documents_durations_logging_consul_and_every_endpoint() {
        let help = Args::command().render_long_help().to_string();
        for needle in [
            "bare number of seconds (30 is 30s",
            "RUST_LOG",
            "CONSUL_HTTP_ADDR",
            "CONSUL_CACERT",
            "/metrics",
            "/health",
            "/leader",
            "/standby",
            "/neard-pid",
            "--check",
            "Exit status",
        ] {
            assert!(help.contains(needle), "{needle:?} not in --help:\n{help}");
        }
    }
}
