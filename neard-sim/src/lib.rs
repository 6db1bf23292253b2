//! A stand-in for `neard` 2.x, for kuutamod's tests and local trials, with a double-signing oracle.
//!
//! Real neard cannot be built or fetched where kuutamod is developed, so its tests run this
//! simulator instead. It follows `docs/neard.md` (the checklist of its section 9) on every
//! surface kuutamod touches: the CLI (`init`, `localnet`, `run`), the home's files, HTTP
//! `/status`, `/health`, `/metrics` and JSON-RPC, SIGHUP key hot swap and SIGTERM. The daemon
//! never imports this crate; only tests and trials do.
//!
//! # Layout
//!
//! - [`spec`]: a localnet's genesis: validators and stakes, "ours", shards, epochs, timers.
//! - [`blocks`]: what validators sign (approvals, blocks, chunks) and block finality.
//! - [`epoch`]: stake-weighted block and chunk producer assignment, per-epoch counters,
//!   maintenance windows.
//! - [`doomslug`]: nearcore's doomslug timer and approval counting.
//! - [`network`]: "the rest of the network": the canonical chain and the virtual validators.
//! - [`client`]: a node's consensus client (its view, doomslug, what it signs).
//! - [`wire`]: node <-> chain messages over a Unix socket or in-process channels.
//! - [`chaind`]: the chain process (`neard-sim chain run`).
//! - [`chainlog`]: the chain log and missed assigned blocks and chunks.
//! - [`chain`]: hashes, times and the old clock-driven height helpers.
//! - [`keys`]: key files (`node_key.json`, `validator_key.json`): generating, writing, reading.
//! - [`config`]: `config.json` and `genesis.json`: reading, and writing them for `init` and
//!   `localnet`.
//! - [`control`]: the fault knobs a test turns at run time through a control file.
//! - [`ledger`]: the signing ledger the simulator appends to, and the oracle that reads it
//!   (conflicting and duplicate signatures, double-signed heights, gaps, intervals).
//! - [`status`]: the `StatusResponse` JSON and the health verdict, as pure functions.
//! - [`settings`]: run-time tuning from `NEARD_SIM_*` environment variables.
//! - [`node`]: the running simulator (`run`): lifecycle, link to the chain, signing, signals.
//! - `rpc` (private): the node's HTTP and JSON-RPC surface.

pub mod blocks;
pub mod chain;
pub mod chaind;
pub mod chainlog;
pub mod client;
pub mod config;
pub mod control;
pub mod doomslug;
pub mod epoch;
pub mod keys;
pub mod ledger;
pub mod network;
pub mod node;
mod rpc;
pub mod settings;
pub mod spec;
pub mod status;
pub mod wire;
