//! The supervised `neard`: its home and `config.json`, its `/status` and `/metrics`, and the
//! child process.

pub mod config;
pub mod home;
pub mod process;
pub mod rpc;
pub mod status;

/// The role neard is started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Without the validator key, with this host's own (voter) node key and the voter address.
    Voter,
    /// With the validator key, the validator node key and the validator address.
    Validator,
}
