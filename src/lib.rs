//! kuutamod: a distributed supervisor that gives NEAR validators active-passive failover.
//!
//! Several hosts each run kuutamod and `neard`. Exactly one `neard` at a time holds the validator
//! key; the others run in sync without it (as *voters*), ready to take over. Leadership is a
//! Consul session lock on `kuutamod-leader/<account_id>`. See `docs/failover.md` for the
//! algorithm and its safety argument.
//!
//! # Layout
//!
//! - [`settings`]: configuration from `KUUTAMO_*` variables and flags, checked at start.
//! - [`keys`]: NEAR key files (read, validate, install atomically with mode 0600).
//! - [`neard`]: everything about the supervised `neard`: its `config.json`, its `/status`, the
//!   child process itself.
//! - [`consul`]: the small Consul HTTP client (sessions, lock, blocking queries).
//! - [`machine`]: the state machine as a pure function, `(state, event) -> (state, actions)`.
//! - [`supervisor`]: the I/O loop that feeds events to the machine and carries out its actions.
//! - [`guard`]: the process outside kuutamod that kills a validating neard if kuutamod is paused.
//! - [`metrics`] and [`exporter`]: the Prometheus metrics and the HTTP endpoint serving them.
//! - [`duration`]: parsing of durations such as `30s` and `500ms`.
//! - [`clock`], [`timing`], [`lease`], [`fence`], [`backoff`]: the pure pieces of the fencing
//!   protocol (not yet wired into the supervisor).

pub mod backoff;
pub mod clock;
pub mod consul;
pub mod duration;
pub mod exporter;
pub mod fence;
pub mod guard;
pub mod keys;
pub mod lease;
pub mod machine;
pub mod metrics;
pub mod neard;
pub mod settings;
pub mod supervisor;
pub mod timing;
