//! `kuutamod --check`: everything kuutamod needs, checked without starting neard or taking the
//! lock, one line per check, so that an operator sees every problem at once before the first
//! start (and a unit's `ExecStartPre` refuses to start a node that cannot work).
//!
//! The checks, in order: the settings; each key file (format, the account, that the node keys
//! differ); neard's home, binary and version (hot swap needs 2.x); the exporter address; the
//! clock; then, unless [`Scope::Local`], Consul: reachable with a leader, the ACL token known,
//! and allowed exactly what kuutamod does with it. The token is tested on the real keys without
//! changing them: a session is created, renewed and destroyed (it holds no lock), and every
//! write is asked as a transaction that cannot apply ([`crate::consul::Probe`]).
//!
//! Verdicts: `ok`; `warn` (kuutamod runs, but something deserves a look); `skip` (not checked,
//! and why); `FAIL` (kuutamod cannot work: `kuutamod --check` exits 1).
//!
//! With `KUUTAMO_LOCK_BACKEND=etcd` the lock-store checks are etcd's: the members reachable
//! with a leader, the user authenticated, a lease granted, kept alive and revoked, and the
//! user's role allowed exactly kuutamod's keys, asked the same way without writing.
//!
//! This file holds the report and the order of the checks, with the settings and key checks;
//! `host.rs` checks neard and this host (exporter address, clock); `lock_store.rs` checks
//! Consul and the token; `etcd_store.rs` etcd and its user.

use std::fmt;

use crate::keys::KeyFile;
use crate::settings::{
    account_of, addresses, distinct_keys, leader_key, read_key, resolve_neard_bin,
    wants_validator_node_key, Args, ConsulAccess, EtcdAccess, FailoverMode, LockBackend,
    StoreAccess,
};
use crate::store::Store;
use crate::timing::Timing;

mod etcd_store;
mod host;
mod lock_store;

pub use host::{judge_version, major_minor, release_of};

/// Which checks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (`--check`).
    All,
    /// Everything but Consul (`--check-local`): for a unit's `ExecStartPre`, since kuutamod
    /// itself rides out an unreachable Consul (its neard keeps syncing as a voter meanwhile).
    Local,
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Ok,
    /// kuutamod works, but look at this.
    Warn,
    /// Not checked (the line says why).
    Skip,
    /// kuutamod cannot work like this.
    Fail,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Skip => "skip",
            Verdict::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The verdict.
    pub verdict: Verdict,
    /// What was checked (`validator key`, `consul acl token`, ...).
    pub name: &'static str,
    /// What was found, and for a failure what to do.
    pub detail: String,
}

/// Every check's line, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The lines.
    pub lines: Vec<Line>,
}

impl Report {
    fn push(&mut self, verdict: Verdict, name: &'static str, detail: impl Into<String>) {
        self.lines.push(Line {
            verdict,
            name,
            detail: detail.into(),
        });
    }

    fn result(&mut self, name: &'static str, r: Result<String, String>) {
        match r {
            Ok(d) => self.push(Verdict::Ok, name, d),
            Err(d) => self.push(Verdict::Fail, name, d),
        }
    }

    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.verdict != Verdict::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{:<4} {}: {}", l.verdict.word(), l.name, l.detail)?;
        }
        let count = |v| self.lines.iter().filter(|l| l.verdict == v).count();
        writeln!(
            f,
            "kuutamod --check: {} ok, {} warnings, {} skipped, {} failed",
            count(Verdict::Ok),
            count(Verdict::Warn),
            count(Verdict::Skip),
            count(Verdict::Fail)
        )
    }
}

/// Runs the checks of `scope` on `args`.
pub async fn run(args: &Args, scope: Scope) -> Report {
    let mut report = Report::default();

    report.result("settings", settings(args));
    let consul = StoreAccess::resolve(&args.store, || args.consul.access());
    let (settings_line, store_checks) = match args.store.lock_backend {
        LockBackend::Consul => ("consul settings", &CONSUL_CHECKS[..]),
        LockBackend::Etcd => ("etcd settings", &etcd_store::ETCD_CHECKS[..]),
    };
    report.result(
        settings_line,
        consul.as_ref().map(describe_store).map_err(Clone::clone),
    );

    // Keys.
    let validator = read_key(
        "validator",
        args.validator_key.as_deref(),
        "KUUTAMO_VALIDATOR_KEY",
        "validator_key.json",
    );
    report.result(
        "validator key",
        validator.as_ref().map(describe_key).map_err(Clone::clone),
    );
    let account = match &validator {
        Ok(key) => account_of(key, args.account_id.as_deref()),
        Err(_) => Err("the validator key could not be read (see above)".to_string()),
    };
    report.result(
        "account",
        account
            .as_ref()
            .map(|a| format!("{a} (the validator key's); the lock is {}", leader_key(a)))
            .map_err(Clone::clone),
    );
    let voter = read_key(
        "voter node",
        args.voter_node_key.as_deref(),
        "KUUTAMO_VOTER_NODE_KEY",
        "voter_node_key.json",
    );
    report.result(
        "voter node key",
        voter.as_ref().map(describe_key).map_err(Clone::clone),
    );
    let validator_node = if wants_validator_node_key(args) {
        let key = read_key(
            "validator node",
            args.validator_node_key.as_deref(),
            "KUUTAMO_VALIDATOR_NODE_KEY",
            "validator_node_key.json",
        );
        report.result(
            "validator node key",
            key.as_ref().map(describe_key).map_err(Clone::clone),
        );
        Some(key)
    } else {
        report.push(
            Verdict::Skip,
            "validator node key",
            "not used: a hot swap keeps this host's own node key",
        );
        None
    };
    match (&validator, &voter, &validator_node) {
        (Ok(v), Ok(n), None) => report.result(
            "keys differ",
            distinct_keys(v, None, n)
                .map(|()| "the validator key and the voter node key are different keys".into()),
        ),
        (Ok(v), Ok(n), Some(Ok(vn))) => report.result(
            "keys differ",
            distinct_keys(v, Some(vn), n).map(|()| {
                "the validator key, the voter node key and the validator node key are three different keys".into()
            }),
        ),
        _ => report.push(Verdict::Skip, "keys differ", "a key file could not be read"),
    }

    // neard.
    report.result("neard home", host::neard_home(&args.neard_home));
    let bin = resolve_neard_bin(&args.neard_bin);
    report.result(
        "neard binary",
        bin.as_ref()
            .map(|p| p.display().to_string())
            .map_err(Clone::clone),
    );
    match &bin {
        Ok(bin) => {
            let (verdict, detail) = host::neard_version(bin, args).await;
            report.push(verdict, "neard version", detail);
        }
        Err(_) => report.push(Verdict::Skip, "neard version", "no neard binary"),
    }

    // This host.
    let (verdict, detail) = host::exporter(args).await;
    report.push(verdict, "exporter address", detail);
    let (verdict, detail) = host::clock();
    report.push(verdict, "clock", detail);

    if scope == Scope::Local {
        return report;
    }
    let client = consul
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|c| c.client().map_err(|e| format!("{e:#}")));
    let account = account.ok().or_else(|| args.account_id.clone());
    match client {
        Ok(Store::Consul(client)) => {
            lock_store::lock_store(&mut report, &client, args, account.as_deref()).await;
        }
        Ok(Store::Etcd(client)) => {
            etcd_store::etcd_store(&mut report, &client, args, account.as_deref()).await;
        }
        Err(_) => {
            for name in store_checks {
                report.push(
                    Verdict::Skip,
                    name,
                    "the lock store's settings are not valid",
                );
            }
        }
    }
    report
}

/// The checks that talk to Consul, in order.
const CONSUL_CHECKS: [&str; 5] = [
    "consul",
    "consul acl token",
    "consul session",
    "consul lock key",
    "consul status records",
];

fn describe_store(s: &StoreAccess) -> String {
    match s {
        StoreAccess::Consul(c) => describe_access(c),
        StoreAccess::Etcd(e) => describe_etcd(e),
    }
}

fn describe_etcd(e: &EtcdAccess) -> String {
    let mut parts = vec![format!(
        "{} (from {})",
        e.endpoints.join(","),
        e.endpoints_from
    )];
    parts.push(match &e.credentials {
        Some(c) => format!("user {:?} with a password file", c.user),
        None => "no user".into(),
    });
    for (what, file) in [
        ("CA file", &e.ca_file),
        ("client certificate", &e.cert_file),
        ("client key", &e.key_file),
    ] {
        if let Some(f) = file {
            parts.push(format!("{what} {}", f.display()));
        }
    }
    parts.join(", ")
}

fn describe_access(c: &ConsulAccess) -> String {
    let token = if c.token.is_some() {
        "a token"
    } else {
        "no token"
    };
    let ca = c
        .ca_file
        .as_ref()
        .map_or(String::new(), |p| format!(", CA file {}", p.display()));
    format!("{} (from {}), {token}{ca}", c.url, c.url_from)
}

fn describe_key(k: &KeyFile) -> String {
    let account = if k.account_id.is_empty() {
        String::new()
    } else {
        format!("account {}, ", k.account_id)
    };
    format!("{account}public key {}", k.public_key)
}

fn settings(args: &Args) -> Result<String, String> {
    let mut problems = Vec::new();
    if args.node_id.is_empty() {
        problems.push("KUUTAMO_NODE_ID is empty; give each host a distinct node id".to_string());
    }
    if let Err(e) = addresses(args) {
        problems.push(e);
    }
    let timing = Timing::new(args.session_ttl, args.neard_stop_grace);
    if let Err(e) = &timing {
        problems.push(e.clone());
    }
    for (var, value) in [
        (
            "KUUTAMO_KICKOUT_THRESHOLD_BLOCKS",
            args.kickout_threshold_blocks,
        ),
        (
            "KUUTAMO_KICKOUT_THRESHOLD_CHUNKS",
            args.kickout_threshold_chunks,
        ),
    ] {
        if value > 100 {
            problems.push(format!("{var}={value} is a percentage; at most 100"));
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    let mode = match args.failover_mode {
        FailoverMode::HotSwap => "hot-swap",
        FailoverMode::Restart => "restart",
    };
    let step_down = timing.map_or_else(
        |_| "?".into(),
        |t| crate::duration::display(t.step_down_after),
    );
    Ok(format!(
        "node {}, {mode} mode, TTL {} (a leader steps down {step_down} after its last acknowledged heartbeat), priority {}",
        args.node_id,
        crate::duration::display(args.session_ttl),
        args.priority
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_passes_unless_a_check_fails() {
        let mut r = Report::default();
        r.push(Verdict::Ok, "a", "fine");
        r.push(Verdict::Warn, "b", "look");
        r.push(Verdict::Skip, "c", "not here");
        assert!(r.passed());
        r.push(Verdict::Fail, "d", "broken");
        assert!(!r.passed());
        let text = r.to_string();
        assert!(
            text.starts_with("ok   a: fine\nwarn b: look\nskip c: not here\nFAIL d: broken\n"),
            "{text}"
        );
        assert!(
            text.ends_with("1 ok, 1 warnings, 1 skipped, 1 failed\n"),
            "{text}"
        );
    }
}
