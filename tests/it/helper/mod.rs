//! Test helpers. The cluster builder is the benchmark's (`kuutamod_bench::cluster`): every
//! test cluster runs real Consul (a dev server) with **one client agent per node**, each
//! kuutamod talking to its own agent through a small proxy, as production hosts do; nodes live
//! on the root namespace's loopback (the benchmark adds network namespaces for partitions).
//! What is here is only what tests add to it: waits that fail the test, and [`Must`], which
//! turns the builder's errors (which carry the tail of every node's log) into test failures.
//! Every process a test starts is killed when its cluster drops, even when the test panics.

pub mod wait;

use std::path::PathBuf;

pub use kuutamod_bench::cluster::{Cluster, Opts, Spec};
pub use kuutamod_bench::consul::http_get;
pub use kuutamod_bench::procs::{alive, free_port, neard_sim_bin, now_ms, signal};

/// The validator account every test cluster shares (each test has its own Consul).
pub const ACCOUNT: &str = "pool.test.near";

/// The kuutamod binary under test.
pub fn kuutamod_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kuutamod"))
}

/// The kuutamoctl binary under test.
pub fn kuutamoctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kuutamoctl"))
}

/// The timings every node of a cluster built with `opts` derives (kuutamod's own
/// [`kuutamod::timing::Timing`]): test bounds come from here, not from hand arithmetic.
pub fn timing(opts: &Opts) -> kuutamod::timing::Timing {
    kuutamod::timing::Timing::new(opts.ttl, opts.stop_grace).expect("the test timing is valid")
}

/// Starts Consul and `n` client agents and prepares `n` nodes (not started) for [`ACCOUNT`].
pub fn cluster(n: usize, opts: Opts) -> Cluster {
    spec_cluster(Spec::new(n, ACCOUNT, opts))
}

/// Builds the cluster `spec` describes with the kuutamod under test, failing the test if it
/// cannot.
pub fn spec_cluster(mut spec: Spec) -> Cluster {
    spec.kuutamod_bin = Some(kuutamod_bin());
    spec.kuutamoctl_bin = Some(kuutamoctl_bin());
    Cluster::start(spec).must()
}

/// A builder result, or a test failure that says why.
pub trait Must<T> {
    /// The value, or a panic with the error and its context.
    fn must(self) -> T;
}

impl<T> Must<T> for anyhow::Result<T> {
    fn must(self) -> T {
        self.unwrap_or_else(|e| panic!("{e:#}"))
    }
}
