//! The chain process (`neard-sim chain run --dir DIR`): "the rest of the network" for a
//! localnet of several nodes.
//!
//! `DIR` holds:
//! - `chain.json`: the [`ChainSpec`] (`neard-sim chain init` writes it);
//! - `chain.sock`: the Unix socket nodes connect to (`NEARD_SIM_CHAIN=DIR/chain.sock`);
//! - `chain-log.jsonl`: one line per decided height ([`crate::chainlog`]);
//! - `chain-control.json`: which virtual validators are offline ([`ChainControl`]).
//!
//! It runs until SIGTERM or SIGINT, then removes the socket and exits 0.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::chainlog;
use crate::control::{self, ChainControl};
use crate::network::Network;
use crate::node::log;
use crate::spec::ChainSpec;
use crate::wire::{self, Engine, EngineEvent};

/// File name of the spec in the chain directory.
pub const SPEC_FILE: &str = "chain.json";
/// File name of the socket in the chain directory.
pub const SOCKET_FILE: &str = "chain.sock";

/// Why the chain process cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The spec is missing or invalid.
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    /// A file or the socket could not be set up.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

/// Runs the chain of `dir` on `socket` (default `dir/chain.sock`) until SIGTERM/SIGINT.
pub async fn run(dir: &Path, socket: Option<PathBuf>) -> Result<(), ChainError> {
    let spec = ChainSpec::read(&dir.join(SPEC_FILE))?;
    let socket = socket.unwrap_or_else(|| dir.join(SOCKET_FILE));
    let io_err = |what: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ChainError::Io { what, path, source }
    };
    let log_path = dir.join(chainlog::FILE);
    let mut chain_log =
        chainlog::Writer::open(&log_path).map_err(io_err("chain log", &log_path))?;
    let listener = wire::bind(&socket).map_err(io_err("chain socket", &socket))?;
    let mut term = signal(SignalKind::terminate()).map_err(io_err("SIGTERM handler", dir))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io_err("SIGINT handler", dir))?;

    log(
        "INFO",
        "chain",
        &format!(
            "chain {} on {}: {} validators ({} ours), {} shards, epochs of {}",
            spec.chain_id,
            socket.display(),
            spec.validators.len(),
            spec.validators.iter().filter(|v| v.ours).count(),
            spec.num_shards,
            spec.epoch_length
        ),
    );
    let step = spec
        .consensus
        .doomslug_step_period
        .min(spec.consensus.block_production_tracking_delay);
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let engine = Engine::spawn(
        Network::new(spec, Instant::now(), crate::chain::now_ms()),
        step,
        events_tx,
    );
    let server = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.serve(listener).await })
    };
    tokio::spawn(poll_control(dir.join(control::CHAIN_FILE), engine));

    let name = loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(EngineEvent::Decided(lines)) => {
                    for (time_ms, d) in lines {
                        if let Err(e) = chain_log.append(&chainlog::Line::new(time_ms, d)) {
                            log("ERROR", "chain", &format!("chain log {}: {e}", log_path.display()));
                        }
                    }
                }
                Some(EngineEvent::Rejected { node, reason }) => {
                    log("INFO", "chain", &format!("from {node}: {reason}"));
                }
                Some(EngineEvent::Joined { node }) => {
                    log("INFO", "chain", &format!("{node} joined"));
                }
                None => break "engine stopped",
            },
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };
    log("INFO", "chain", &format!("{name}, stopping"));
    server.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Applies `chain-control.json` whenever it changes.
async fn poll_control(path: PathBuf, engine: Engine) {
    let mut seen: Option<control::FileStamp> = None;
    let mut tick = tokio::time::interval(control::POLL_INTERVAL);
    loop {
        tick.tick().await;
        let stamp = control::stamp(&path);
        if seen.as_ref() == Some(&stamp) {
            continue;
        }
        seen = Some(stamp);
        match ChainControl::read(&path) {
            Ok(c) => {
                log(
                    "INFO",
                    "chain",
                    &format!("offline virtual validators: {:?}", c.offline),
                );
                engine.set_offline(c.offline.into_iter().collect::<BTreeSet<_>>());
            }
            Err(e) => log("WARN", "chain", &format!("ignoring {e}")),
        }
    }
}
