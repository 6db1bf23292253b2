//! `neard-sim`: the command line of the neard stand-in (`init`, `localnet`, `run`).
//!
//! Thin on purpose: parse the CLI like neard's, then call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use neard_sim::{config, node, settings::Settings};

/// A stand-in for neard 2.x, for tests and trials only.
#[derive(Parser)]
#[command(name = "neard-sim", version, about)]
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
        /// Accepted for compatibility with neard; block times come from
        /// NEARD_SIM_BLOCK_TIME_MS.
        #[arg(long)]
        fast: bool,
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
        /// Ledger file for signed heights (overrides NEARD_SIM_LEDGER).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// The oracle: read ledger files and report double-signed heights, gaps and each node's
    /// signing intervals for one account. Exits 1 if any height was signed by two nodes.
    Ledger {
        /// Ledger files (JSON Lines, as written by `run`).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Validator account to judge.
        #[arg(long)]
        account: String,
    },
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
            fast: _,
        } => report(
            "init",
            config::init(&cli.home, chain_id.as_deref(), account_id.as_deref()),
        ),
        Cmd::Ledger { files, account } => ledger_report(&files, &account),
        Cmd::Localnet { validators, prefix } => {
            report("localnet", config::localnet(&cli.home, validators, &prefix))
        }
        Cmd::Run {
            boot_nodes,
            rpc_addr,
            network_addr,
            ledger,
        } => {
            let settings =
                Settings::from_env(&cli.home).unwrap_or_else(|e| node::abort(&e.to_string()));
            let args = node::RunArgs {
                home: cli.home,
                boot_nodes,
                rpc_addr,
                network_addr,
                ledger,
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

fn ledger_report(files: &[PathBuf], account: &str) -> ExitCode {
    let entries = match neard_sim::ledger::read_all(files) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(2);
        }
    };
    let r = neard_sim::ledger::analyze(&entries, account);
    let (Some(first), Some(last)) = (r.first_height, r.last_height) else {
        println!("{account}: no signed heights in {} entries", entries.len());
        return ExitCode::SUCCESS;
    };
    println!(
        "{account}: heights {first}..={last}, {} signatures, {} missed heights in {} gaps, {} double-signed heights",
        r.entries.len(),
        r.missed_heights(),
        r.gaps.len(),
        r.double_signed.len()
    );
    for (node, runs) in &r.intervals {
        let shown: Vec<String> = runs.iter().map(|(a, b)| format!("{a}..={b}")).collect();
        println!("  {node}: {}", shown.join(", "));
    }
    for (height, nodes) in r.double_signed.iter().take(20) {
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        println!("  DOUBLE SIGNED height {height}: {}", nodes.join(", "));
    }
    if r.is_safe() {
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
