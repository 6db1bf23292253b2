//! kuutamod's integration tests: real kuutamod binaries, real Consul (a server and one client
//! agent per node, built by the benchmark's cluster builder), and the neard simulator as the
//! one stand-in. All compiled into one test binary (see `helper`).

mod helper;

mod bad_input;
mod consul_faults;
mod doppelganger;
mod etcd_failover;
mod etcd_store;
mod failover;
mod guard;
mod hot_swap;
mod kuutamoctl;
