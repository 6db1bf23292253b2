//! Integration tests of the neard simulator: each test runs the real `neard-sim` binary in its
//! own tempdir, on concrete free ports, and checks it against neard's behaviour as
//! `docs/neard.md` describes it.
//!
//! One test binary (pueue style): helpers in [`helper`], cases by subject in the other modules.

mod chain;
mod cli;
mod helper;
mod http;
mod ledger;
mod sighup;
