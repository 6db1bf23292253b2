//! `neard-sim`: the command line of the neard stand-in (`init`, `localnet`, `run`), of the
//! chain process (`chain init`, `chain run`) and of the oracle (`ledger`).
//!
//! Thin on purpose: parse the CLI like neard's, then call into the library.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use neard_sim::spec::{ChainSpec, Timers, ValidatorSpec, DEFAULT_EPOCH_LENGTH};
use neard_sim::{chaind, config, node, settings::Settings};

/// What `--version` prints after the name, in neard's shape (nearcore `neard/src/main.rs`,
/// `NEARD_VERSION_STRING`): `(release R) (build B) (rustc V) (protocol P) (db D)`, so that
/// `kuutamod --check` reads the release as it reads real neard's. The release and protocol are
/// the ones `/status` reports ([`neard_sim::status::NEARD_VERSION`],
/// [`neard_sim::chain::PROTOCOL_VERSION`]); the simulator has no database (db 0).
const VERSION: &str = concat!(
    "(release 2.6.0) (build neard-sim-",
    env!("CARGO_PKG_VERSION"),
    ") (rustc 1.80.0) (protocol 73) (db 0)"
);

/// A stand-in for neard 2.x, for tests and trials only.
#[derive(Parser)]
#[command(name = "neard-sim", version = VERSION, about)]
struct Cli {
    /// Home directory (config.json, keys, genesis.json).
    #[arg(long, global = true, default_value_os_t = default_home())]
    home: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write config.json, node_key.json, validator_key.json and genesis.json for a test chain.
    Init {
        /// Chain id (random `test-chain-XXXXX` if absent).
        #[arg(long)]
        chain_id: Option<String>,
        /// Account of the validator key (default `test.near`).
        #[arg(long)]
        account_id: Option<String>,
        /// neard's `--fast`: min/max block production delay 120/500 ms, epochs of 60.
        #[arg(long)]
        fast: bool,
        /// Number of shards in genesis.json.
        #[arg(long, default_value_t = 1)]
        num_shards: u64,
        /// Simulator only: write neard's default consensus timers divided by N into
        /// config.json (10: 60 ms / 200 ms / 600 ms, steps of 10 ms).
        #[arg(long, value_name = "N")]
        speed_up: Option<u32>,
    },
    /// Write N homes <home>/<prefix>0.. for a local network.
    Localnet {
        /// Number of validators.
        #[arg(
            short = 'v',
            long = "validators",
            visible_alias = "v",
            default_value_t = 4
        )]
        validators: usize,
        /// Prefix of the home directories and validator accounts.
        #[arg(long, default_value = "node")]
        prefix: String,
        /// Number of shards.
        #[arg(short = 's', long, default_value_t = 1)]
        shards: u64,
        /// Simulator only: neard's default consensus timers divided by N.
        #[arg(long, value_name = "N")]
        speed_up: Option<u32>,
    },
    /// Run the node.
    Run {
        /// Boot nodes (`ed25519:<pk>@<ip>:<port>,...`), overrides network.boot_nodes.
        #[arg(long)]
        boot_nodes: Option<String>,
        /// Overrides rpc.addr.
        #[arg(long)]
        rpc_addr: Option<String>,
        /// Overrides network.addr.
        #[arg(long)]
        network_addr: Option<String>,
        /// Ledger file for signed messages (overrides NEARD_SIM_LEDGER).
        #[arg(long)]
        ledger: Option<PathBuf>,
        /// The chain process's socket (overrides NEARD_SIM_CHAIN); without either, the node
        /// runs a private chain.
        #[arg(long)]
        chain: Option<PathBuf>,
    },
    /// The oracle: read ledger files and report, for one account, conflicting signatures,
    /// identical signatures by two nodes, heights signed by two nodes, gaps and each node's
    /// signing intervals. Exits 1 on any conflicting signature (with --strict also on any
    /// height signed by two nodes), 2 on an unreadable ledger.
    Ledger {
        /// Ledger files (JSON Lines, as written by `run`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Validator account to judge.
        #[arg(long)]
        account: String,
        /// Also fail when two nodes signed anything (even identical) for one height.
        #[arg(long)]
        strict: bool,
        /// A moment to explain the gaps by, as unix milliseconds and a label (repeatable):
        /// each gap names the events inside it, and an event without a gap is said so.
        #[arg(long = "event", value_name = "MS=LABEL")]
        events: Vec<neard_sim::ledger::explain::Event>,
    },
    /// The chain process: the rest of a localnet's network, shared by several nodes.
    Chain {
        #[command(subcommand)]
        cmd: ChainCmd,
    },
}

#[derive(Subcommand)]
enum ChainCmd {
    /// Write DIR/chain.json: the localnet's validators, shards, epochs, seed and timers.
    Init {
        /// The chain directory.
        #[arg(long)]
        dir: PathBuf,
        /// Chain id.
        #[arg(long, default_value = "localnet")]
        chain_id: String,
        /// A validator signed only by nodes holding its key: ACCOUNT or ACCOUNT:STAKE
        /// (repeatable).
        #[arg(long, value_name = "ACCOUNT[:STAKE]")]
        ours: Vec<String>,
        /// A virtual validator played by the chain: ACCOUNT or ACCOUNT:STAKE (repeatable).
        #[arg(long, value_name = "ACCOUNT[:STAKE]")]
        validator: Vec<String>,
        /// Number of shards.
        #[arg(long, default_value_t = 1)]
        shards: u64,
        /// Epoch length in heights.
        #[arg(long, default_value_t = DEFAULT_EPOCH_LENGTH)]
        epoch_length: u64,
        /// Seed of the block and chunk producer assignment.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// neard's default consensus timers divided by N for the virtual validators.
        #[arg(long, value_name = "N")]
        speed_up: Option<u32>,
    },
    /// Run the chain of DIR, serving nodes on DIR/chain.sock.
    Run {
        /// The chain directory.
        #[arg(long)]
        dir: PathBuf,
        /// Socket path (default DIR/chain.sock; a Unix socket path must stay under 108 bytes).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
}

/// Stake of a validator given without one.
const DEFAULT_STAKE: u128 = 100;

fn parse_validator(s: &str, ours: bool) -> Result<ValidatorSpec, String> {
    let (account, stake) = match s.split_once(':') {
        Some((a, st)) => (
            a,
            st.parse::<u128>()
                .map_err(|_| format!("{s:?}: stake {st:?} is not a number"))?,
        ),
        None => (s, DEFAULT_STAKE),
    };
    if account.is_empty() {
        return Err(format!("{s:?}: empty account"));
    }
    Ok(ValidatorSpec {
        account_id: account.to_owned(),
        stake,
        ours,
        public_key: None,
    })
}

fn chain_cmd(cmd: ChainCmd) -> ExitCode {
    match cmd {
        ChainCmd::Init {
            dir,
            chain_id,
            ours,
            validator,
            shards,
            epoch_length,
            seed,
            speed_up,
        } => {
            let validators: Result<Vec<ValidatorSpec>, String> = ours
                .iter()
                .map(|s| parse_validator(s, true))
                .chain(validator.iter().map(|s| parse_validator(s, false)))
                .collect();
            let spec = validators.and_then(|validators| {
                let spec = ChainSpec {
                    chain_id,
                    genesis_height: 0,
                    epoch_length,
                    num_shards: shards,
                    seed,
                    validators,
                    consensus: speed_up.map_or_else(Timers::neard, Timers::sped_up),
                };
                spec.validate().map(|()| spec)
            });
            let spec = match spec {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("Error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let path = dir.join(chaind::SPEC_FILE);
            match std::fs::create_dir_all(&dir).and_then(|()| spec.write(&path)) {
                Ok(()) => {
                    eprintln!("chain init: wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("Error: {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        ChainCmd::Run { dir, socket } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("Error: cannot start tokio: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(chaind::run(&dir, socket)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("Error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn default_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
        .join(".near")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Init {
            chain_id,
            account_id,
            fast,
            num_shards,
            speed_up,
        } => report(
            "init",
            config::init_with(
                &cli.home,
                chain_id.as_deref(),
                account_id.as_deref(),
                &config::InitOptions {
                    num_shards,
                    fast,
                    speed_up,
                },
            ),
        ),
        Cmd::Ledger {
            files,
            account,
            strict,
            events,
        } => ledger_report(&files, &account, strict, &events),
        Cmd::Chain { cmd } => chain_cmd(cmd),
        Cmd::Localnet {
            validators,
            prefix,
            shards,
            speed_up,
        } => report(
            "localnet",
            config::localnet_with(
                &cli.home,
                validators,
                &prefix,
                &config::InitOptions {
                    num_shards: shards,
                    fast: false,
                    speed_up,
                },
            ),
        ),
        Cmd::Run {
            boot_nodes,
            rpc_addr,
            network_addr,
            ledger,
            chain,
        } => {
            let settings =
                Settings::from_env(&cli.home).unwrap_or_else(|e| node::abort(&e.to_string()));
            let args = node::RunArgs {
                home: cli.home,
                boot_nodes,
                rpc_addr,
                network_addr,
                ledger,
                chain,
            };
            let prepared =
                node::prepare(args, settings).unwrap_or_else(|e| node::abort(&e.to_string()));
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| node::abort(&format!("cannot start tokio: {e}")));
            rt.block_on(node::run(prepared));
            ExitCode::SUCCESS
        }
    }
}

fn ledger_report(
    files: &[PathBuf],
    account: &str,
    strict: bool,
    events: &[neard_sim::ledger::explain::Event],
) -> ExitCode {
    // A reader that stops early (`| head`) ends the report, not the verdict.
    let mut out = std::io::stdout().lock();
    let entries = match neard_sim::ledger::read_all(files) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    let r = neard_sim::ledger::analyze(&entries, account);
    let (Some(first), Some(last)) = (r.first_height, r.last_height) else {
        let _ = writeln!(
            out,
            "{account}: no signed heights in {} entries",
            entries.len()
        );
        return ExitCode::SUCCESS;
    };
    let _ = writeln!(
        out,
        "{account}: heights {first}..={last}, {} signatures, {} missed heights in {} gaps, {} double-signed heights, {} conflicting, {} duplicated",
        r.entries.len(),
        r.missed_heights(),
        r.gaps.len(),
        r.double_signed.len(),
        r.conflicting.len(),
        r.duplicates.len(),
    );
    for (node, runs) in &r.intervals {
        let shown: Vec<String> = runs.iter().map(|(a, b)| format!("{a}..={b}")).collect();
        let _ = writeln!(out, "  {node}: {}", shown.join(", "));
    }
    use neard_sim::ledger::explain;
    for line in explain::gaps(&r, events)
        .into_iter()
        .chain(explain::gapless(&r, events))
        .chain(explain::doubles(&r))
    {
        let _ = writeln!(out, "  {line}");
    }
    for c in r.conflicting.iter().take(20) {
        let sigs: Vec<String> = c
            .signatures
            .iter()
            .map(|e| {
                let what = match &e.approval {
                    Some(neard_sim::blocks::ApprovalInner::Endorsement(h)) => {
                        format!("endorsement of {h}")
                    }
                    Some(neard_sim::blocks::ApprovalInner::Skip(p)) => format!("skip from {p}"),
                    None => e
                        .content
                        .clone()
                        .unwrap_or_else(|| "unknown content".into()),
                };
                format!("{} ({what})", e.node)
            })
            .collect();
        let shard = c
            .slot
            .shard
            .map_or(String::new(), |s| format!(" shard {s}"));
        let _ = writeln!(
            out,
            "  CONFLICTING {} {}{shard}: {}",
            c.slot.kind.name(),
            c.slot.height,
            sigs.join(" vs ")
        );
    }
    for d in r.duplicates.iter().take(10) {
        let nodes: Vec<&str> = d.nodes.iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  duplicate {} {}: identical from {}",
            d.slot.kind.name(),
            d.slot.height,
            nodes.join(", ")
        );
    }
    for (height, nodes) in r.double_signed.iter().take(20) {
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let _ = writeln!(out, "  DOUBLE SIGNED height {height}: {}", nodes.join(", "));
    }
    if r.no_conflicts() && (!strict || r.is_safe()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(what: &str, r: std::io::Result<config::InitReport>) -> ExitCode {
    match r {
        Ok(r) => {
            for p in &r.written {
                eprintln!("{what}: wrote {}", p.display());
            }
            for p in &r.kept {
                eprintln!("{what}: kept existing {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: Failed to initialize configs: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VERSION;

    #[test]
    fn version_says_what_status_says() {
        let release = format!("(release {}) ", neard_sim::status::NEARD_VERSION);
        let protocol = format!("(protocol {}) ", neard_sim::chain::PROTOCOL_VERSION);
        assert!(VERSION.starts_with(&release), "{VERSION}");
        assert!(VERSION.contains(&protocol), "{VERSION}");
    }
}
