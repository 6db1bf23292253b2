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
//! - [`timing`]: every timing of the protocol, derived once from the TTL and the stop grace.
//! - [`keys`]: NEAR key files (read, validate, install atomically with mode 0600).
//! - [`neard`]: everything about the supervised `neard`: its home and `config.json`, its
//!   `/status` and `/metrics`, the child process itself.
//! - [`lock_store`]: the calls kuutamod makes to its lock store, as one trait
//!   ([`lock_store::LockStore`], its errors [`store::StoreError`]) that Consul, etcd and the
//!   simulation's model of Consul implement; [`store`]: the store kuutamod was configured with
//!   (`KUUTAMO_LOCK_BACKEND`), Consul or etcd, as one type; [`consul`]: the small Consul HTTP
//!   client (sessions, check-and-lock transactions, blocking queries); [`etcd`]: the etcd
//!   client over its JSON gateway (leases, a record outside them, watches).
//! - Pure decisions, no I/O, time passed in: [`machine`] (every decision, as one state
//!   machine), [`lease`] (the lock record, the leader's lease and a standby's wait),
//!   [`fence`] (the height fence against neard's signing horizon), [`doppelganger`] (our key
//!   signing elsewhere), [`backoff`], and
//!   [`clock`] (the `CLOCK_BOOTTIME` instant they use).
//! - [`memory`]: what kuutamod remembers across restarts (the newest lock record it saw).
//! - [`records`]: what the nodes tell each other and the operator besides the lock (status
//!   records, pause, planned switchover); [`ctl`]: the operator's commands on them (`kuutamoctl
//!   pause`, `resume`, `switchover`), as plain code that kuutamoctl and the simulation run.
//! - [`supervisor`]: the conductor (every decision around the machine: watches, the poller,
//!   the status record, the guard's notes) as plain code without I/O, and the tokio loop that
//!   carries out what it asks.
//! - [`guard`]: the process between kuutamod and neard: it starts neard, kills it at the lease
//!   deadline if kuutamod is paused, and takes it down when it dies; [`pidfd`]: the process
//!   handles both use to signal neard.
//! - [`metrics`] and [`exporter`]: the Prometheus metrics and the HTTP endpoint serving them.
//! - [`http`]: a transport error described for people, for every HTTP client above.
//! - [`duration`]: parsing of durations such as `30s` and `500ms`, and printing them back.
//! - [`check`]: `kuutamod --check`, every setting, key, neard and the Consul token checked
//!   without starting anything.

pub mod backoff;
pub mod check;
pub mod clock;
pub mod consul;
pub mod ctl;
pub mod doppelganger;
pub mod duration;
pub mod etcd;
pub mod exporter;
pub mod fence;
pub mod guard;
pub mod http;
pub mod keys;
pub mod lease;
pub mod lock_store;
pub mod machine;
pub mod memory;
pub mod metrics;
pub mod neard;
pub mod pidfd;
pub mod records;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod timing;
