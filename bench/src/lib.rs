//! Fault-injection harness and failover benchmark for kuutamod.
//!
//! Builds clusters of real kuutamod processes, each supervising the neard simulator, against a
//! real Consul (one dev agent, or three servers with a client agent per node), optionally puts
//! every node in its own network namespace, injects the faults of the fault-injection issue,
//! and measures with two oracles: the simulators' shared signing ledger (double-signed heights,
//! gaps, first signature after the fault) and a sampler of every node's `/metrics` (any moment
//! with two nodes in `Validating`).
//!
//! # Layout
//!
//! - [`wait`]: bounded polls that fail with what was last observed.
//! - [`procs`]: binaries, free ports, process guards, `/proc` readings (RSS, CPU).
//! - [`consul`]: Consul agents (dev, server, client) and a three-server cluster; the same
//!   handle runs etcd members.
//! - [`etcd`]: etcd's binaries (3.4 and 3.5), command line, readiness and leader.
//! - [`netns`]: network namespaces with a veth pair each; packet-dropping partitions (nft).
//! - [`proxy`]: a delaying, request-counting TCP proxy ("slow Consul").
//! - [`cluster`]: kuutamod + neard-sim nodes sharing one validator key and one ledger, and the
//!   oracle's bar on that ledger.
//! - [`sampler`]: polls every node's state; reports moments with two validators.
//! - [`scenario`]: the scenarios, one run each (their faults injected and healed), and what a
//!   run measured.
//! - [`report`]: aggregation into the table and the JSON file.
//! - [`steady`]: the steady-state row (Consul requests per minute, RSS, idle CPU).

pub mod cluster;
pub mod consul;
pub mod etcd;
pub mod netns;
pub mod procs;
pub mod proxy;
pub mod report;
pub mod sampler;
pub mod scenario;
pub mod steady;
pub mod wait;
