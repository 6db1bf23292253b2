//! The supervised `neard`: its home and `config.json`, its `/status` and `/metrics`, and the
//! child process.

pub mod config;
pub mod home;
pub mod process;
pub mod rpc;
pub mod status;

use clap::ValueEnum;

pub use crate::machine::Role;

/// How a voter is promoted to validator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailoverMode {
    /// Stop neard and start it again with the validator key (works with any neard).
    Restart,
    /// Write the key into the running neard's home and send SIGHUP (neard >= 2.3).
    HotSwap,
}

/// How the voter's `config.json` tracks shards, so that it is ready to validate (hot swap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShardTracking {
    /// Leave the shard-tracking fields of config.json as the operator wrote them.
    None,
    /// `tracked_shards_config: {"ShadowValidator": <account>}` (neard >= 2.6).
    ShadowValidator,
    /// `tracked_shadow_validator: <account>` with `tracked_shards: []` (neard 2.0 - 2.5).
    TrackedShadowValidator,
}
