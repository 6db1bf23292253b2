//! What neard does before it starts serving and that can fail with a panic in neard: reading
//! the config, the command-line overrides, the addresses, the keys, the genesis, the ledger.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{log, read_largest_target};
use crate::config::{Config, ConfigError, Genesis};
use crate::keys::{self, Key, KeyError, Kind};
use crate::ledger;
use crate::settings::Settings;

/// Overrides `run` takes on the command line.
#[derive(Debug, Clone, Default)]
pub struct RunArgs {
    /// The home directory.
    pub home: PathBuf,
    /// `--boot-nodes`.
    pub boot_nodes: Option<String>,
    /// `--rpc-addr`.
    pub rpc_addr: Option<String>,
    /// `--network-addr`.
    pub network_addr: Option<String>,
    /// `--ledger` (wins over `NEARD_SIM_LEDGER`).
    pub ledger: Option<PathBuf>,
    /// `--chain` (wins over `NEARD_SIM_CHAIN`).
    pub chain: Option<PathBuf>,
}

/// Why the node cannot start. neard panics (and, built with `panic = abort`, aborts) on all of
/// these.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `config.json` missing or unparsable.
    #[error("Error loading config: {0}")]
    Config(#[from] ConfigError),
    /// A command-line address does not parse.
    #[error("Error loading config: {flag} {value:?} is not an ip:port address")]
    BadAddr {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// A listen address with port 0.
    #[error("using an any port (i.e. 0) for the tcp::ListenerAddr is allowed only in tests ({what} = {addr})")]
    AnyPort {
        /// Which address (`rpc.addr`, `network.addr`).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// `network.boot_nodes` or `--boot-nodes` has an entry that is not `pk@host:port`.
    #[error("Failed to parse PeerInfo {0:?} (expected ed25519:<key>@<host>:<port>)")]
    BootNodes(String),
    /// node_key.json missing or invalid.
    #[error("Error loading config: node key: {0}")]
    NodeKey(KeyError),
    /// validator_key.json present but invalid.
    #[error("Error loading config: Failed initializing validator signer: {0}")]
    ValidatorKey(KeyError),
    /// The ledger cannot be opened.
    #[error("cannot open ledger {path}: {source}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A node ready to run: config, keys and genesis read and checked.
#[derive(Debug)]
pub struct Prepared {
    pub(super) home: PathBuf,
    pub(super) settings: Settings,
    pub(super) config: Config,
    pub(super) node_key: Key,
    pub(super) validator_key: Option<Key>,
    pub(super) genesis: Option<Genesis>,
    pub(super) ledger: Option<ledger::Writer>,
    pub(super) stored_target: u64,
}

impl Prepared {
    /// The effective `rpc.addr` (after `--rpc-addr`).
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.config.rpc_addr
    }
}

fn parse_addr(flag: &'static str, value: &str) -> Result<SocketAddr, StartError> {
    value.parse().map_err(|_| StartError::BadAddr {
        flag,
        value: value.to_owned(),
    })
}

fn check_boot_nodes(s: &str) -> Result<(), StartError> {
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let ok = entry.split_once('@').is_some_and(|(pk, addr)| {
            pk.starts_with("ed25519:")
                && addr
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
        if !ok {
            return Err(StartError::BootNodes(entry.to_owned()));
        }
    }
    Ok(())
}

/// Reads and checks everything `run` needs, applying the command-line overrides.
pub fn prepare(args: RunArgs, mut settings: Settings) -> Result<Prepared, StartError> {
    let home = args.home;
    let mut config = Config::load(&home)?;
    for field in &config.unknown_fields {
        log(
            "WARN",
            "neard",
            &format!("config.json: encountered unrecognised field: {field}"),
        );
    }
    if let Some(a) = &args.rpc_addr {
        config.rpc_addr = Some(parse_addr("--rpc-addr", a)?);
    }
    if let Some(a) = &args.network_addr {
        config.network_addr = parse_addr("--network-addr", a)?;
    }
    if let Some(b) = args.boot_nodes {
        config.boot_nodes = b;
    }
    check_boot_nodes(&config.boot_nodes)?;
    if let Some(addr) = config.rpc_addr.filter(|a| a.port() == 0) {
        return Err(StartError::AnyPort {
            what: "rpc.addr",
            addr,
        });
    }
    if config.network_addr.port() == 0 {
        return Err(StartError::AnyPort {
            what: "network.addr",
            addr: config.network_addr,
        });
    }
    let node_key =
        keys::read(&home.join(&config.node_key_file), Kind::Node).map_err(StartError::NodeKey)?;
    let validator_key =
        keys::read_optional(&home.join(&config.validator_key_file), Kind::Validator)
            .map_err(StartError::ValidatorKey)?;
    let genesis = Genesis::load(&home.join(&config.genesis_file));
    if let Some(p) = args.ledger {
        settings.ledger = Some(p);
    }
    if let Some(p) = args.chain {
        settings.chain = Some(p);
    }
    let ledger = match &settings.ledger {
        Some(path) => Some(
            ledger::Writer::open(path).map_err(|source| StartError::Ledger {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let stored_target = read_largest_target(&home);
    Ok(Prepared {
        home,
        settings,
        config,
        node_key,
        validator_key,
        genesis,
        ledger,
        stored_target,
    })
}
