//! Test helpers: a real Consul dev agent, clusters of real kuutamod processes supervising the
//! neard simulator, bounded waits, metrics scraping. Every process a test starts is stopped by a
//! guard on drop, even when the test panics.

pub mod cluster;
pub mod consul;
pub mod wait;

use std::net::TcpListener;
use std::path::PathBuf;

/// A free TCP port on 127.0.0.1 (bound, then released; programs that cannot bind port 0
/// themselves get this).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0")
}

/// The `neard-sim` binary, built beside this test binary by `cargo build --workspace`.
pub fn neard_sim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NEARD_SIM_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/it-<hash> -> target/<profile>/neard-sim
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("neard-sim"))
        .expect("test binary has no parent directory");
    assert!(
        path.exists(),
        "the neard simulator is not built at {}; run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

/// The kuutamod binary under test.
pub fn kuutamod_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kuutamod"))
}

/// The kuutamoctl binary under test.
pub fn kuutamoctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kuutamoctl"))
}
