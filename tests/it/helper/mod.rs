//! Test helpers: a real Consul dev agent, clusters of real kuutamod processes supervising the
//! neard simulator, bounded waits, metrics scraping. Every process a test starts is stopped by a
//! guard on drop, even when the test panics. The generic pieces (binaries, ports, Consul
//! agents, polling, metrics parsing) come from the benchmark harness's library
//! (`kuutamod-bench`), so the tests and the benchmark run processes the same way.

pub mod cluster;
pub mod consul;
pub mod wait;

use std::path::PathBuf;

pub use kuutamod_bench::procs::{free_port, neard_sim_bin};

/// The kuutamod binary under test.
pub fn kuutamod_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kuutamod"))
}

/// The kuutamoctl binary under test.
pub fn kuutamoctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kuutamoctl"))
}
