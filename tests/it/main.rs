//! kuutamod's integration tests: real kuutamod binaries, a real Consul dev agent, and the neard
//! simulator as the one stand-in. All compiled into one test binary (see `helper`).

mod helper;

mod bad_input;
mod failover;
mod guard;
mod hot_swap;
mod kuutamoctl;
