//! kuutamod-dst: a deterministic simulation of kuutamod's failover protocol.
//!
//! The real decision code (`kuutamod::machine::Machine`, with its lease, fence, guard
//! deadlines and back-off) runs on several simulated hosts against a model of Consul or of
//! etcd (each schedule against both by default), the
//! neard simulator's chain model (`neard_sim::network`, `neard_sim::client`), virtual clocks
//! and simulated processes, under fault schedules derived from a seed. Every invariant is
//! checked after every event; a failing seed replays bit for bit and shrinks to a minimal
//! schedule. `docs/dst.md` describes the models, their assumptions and the results.
//!
//! # Layout
//!
//! - [`rng`]: the seedable generator every random draw comes from.
//! - [`clock`]: true time and each host's `CLOCK_BOOTTIME`, `CLOCK_MONOTONIC` and wall clock.
//! - [`consul`]: the Consul servers' state (sessions, KV, transactions) as a pure model.
//! - [`etcd`]: an etcd cluster's state (revisions, leases, transactions, watches) as a pure
//!   model answering the requests kuutamod's etcd client builds.
//! - [`schedule`]: scenarios and fault schedules, from a seed or from text.
//! - [`oracle`]: the invariants and their violations.
//! - [`world`]: hosts, processes, delivery, faults: the discrete-event simulation.
//! - [`shrink`]: reducing a failing schedule to a minimal one.
//! - [`runner`]: many seeds on several threads, with figures.

pub mod clock;
pub mod consul;
pub mod etcd;
pub mod oracle;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod shrink;
pub mod world;
