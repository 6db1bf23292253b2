//! `kuutamod --check`: everything kuutamod needs, checked without starting neard or taking the
//! lock, one line per check, so that an operator sees every problem at once before the first
//! start (and a unit's `ExecStartPre` refuses to start a node that cannot work).
//!
//! The checks, in order: the settings; each key file (format, the account, that the node keys
//! differ); neard's home, binary and version (hot swap needs 2.x); the exporter address; the
//! clock; then, unless [`Scope::Local`], Consul: reachable with a leader, the ACL token known,
//! and allowed exactly what kuutamod does with it. The token is tested on the real keys without
//! changing them: a session is created, renewed and destroyed (it holds no lock), and every
//! write is asked as a transaction that cannot apply ([`Consul::probe_lock`]).
//!
//! Verdicts: `ok`; `warn` (kuutamod runs, but something deserves a look); `skip` (not checked,
//! and why); `FAIL` (kuutamod cannot work: `kuutamod --check` exits 1).

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::consul::{Access, Consul, ConsulError, Probe};
use crate::keys::KeyFile;
use crate::lease::Record;
use crate::neard::config::NeardConfig;
use crate::records::{control_key, node_key};
use crate::settings::{
    account_of, addresses, distinct_keys, leader_key, read_key, resolve_neard_bin,
    wants_validator_node_key, Args, ConsulAccess, FailoverMode, ShardTracking,
};
use crate::timing::Timing;

/// How long `neard --version` may take: it prints a constant string, so seconds mean a
/// binary that hangs.
const NEARD_VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A host's kernel clock is fine when its estimated maximum error is at most this: half of
/// the 500 ms by which kuutamod assumes two hosts' wall clocks agree
/// ([`crate::fence::WALL_SKEW`]), since two hosts' errors add up.
const CLOCK_MAX_ERROR: Duration = Duration::from_millis(250);

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

    /// The line of the check `name`, if it ran.
    pub fn line(&self, name: &str) -> Option<&Line> {
        self.lines.iter().find(|l| l.name == name)
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
    let consul = ConsulAccess::resolve(
        args.consul_url.as_deref(),
        args.consul_token.as_deref(),
        args.consul_token_file.as_deref(),
        args.consul_ca_file.as_deref(),
    );
    report.result(
        "consul settings",
        consul.as_ref().map(describe_access).map_err(Clone::clone),
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
    report.result("neard home", neard_home(&args.neard_home));
    let bin = resolve_neard_bin(&args.neard_bin);
    report.result(
        "neard binary",
        bin.as_ref()
            .map(|p| p.display().to_string())
            .map_err(Clone::clone),
    );
    match &bin {
        Ok(bin) => {
            let (verdict, detail) = neard_version(bin, args).await;
            report.push(verdict, "neard version", detail);
        }
        Err(_) => report.push(Verdict::Skip, "neard version", "no neard binary"),
    }

    // This host.
    let (verdict, detail) = exporter(args).await;
    report.push(verdict, "exporter address", detail);
    let (verdict, detail) = clock();
    report.push(verdict, "clock", detail);

    if scope == Scope::Local {
        return report;
    }
    let client = consul
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|c| c.client().map_err(|e| format!("{e:#}")));
    match client {
        Ok(client) => {
            let account = account.ok().or_else(|| args.account_id.clone());
            lock_store(&mut report, &client, args, account.as_deref()).await;
        }
        Err(_) => {
            for name in CONSUL_CHECKS {
                report.push(Verdict::Skip, name, "the Consul settings are not valid");
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

fn neard_home(home: &Path) -> Result<String, String> {
    let config = NeardConfig::load(home).map_err(|e| e.to_string())?;
    let genesis = config
        .field("genesis_file")
        .and_then(|v| v.as_str())
        .unwrap_or("genesis.json");
    let genesis = home.join(genesis);
    std::fs::File::open(&genesis).map_err(|e| {
        format!(
            "cannot read {}: {e}; install the chain's genesis (neard init --download-genesis)",
            genesis.display()
        )
    })?;
    // kuutamod writes the keys and config.json there.
    tempfile::Builder::new()
        .prefix(".kuutamod-check-")
        .tempfile_in(home)
        .map_err(|e| {
            format!(
                "cannot write in {}: {e}; kuutamod writes the keys and config.json there",
                home.display()
            )
        })?;
    let rpc = config.rpc_addr().map_err(|e| e.to_string())?;
    let store = config
        .field("store")
        .and_then(|s| s.get("path"))
        .and_then(|v| v.as_str())
        .unwrap_or("data");
    let data = if home.join(store).is_dir() {
        format!("a database in {store}/")
    } else {
        format!("no database yet ({store}/ is absent: neard syncs from the start, see the runbook's initial sync)")
    };
    let key = if config.validator_key_path().exists() {
        "; it holds validator_key.json, which kuutamod removes before it starts neard as a voter"
    } else {
        ""
    };
    Ok(format!(
        "{}: config.json (rpc {rpc}) and {} in place, writable; {data}{key}",
        home.display(),
        genesis
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    ))
}

/// The release in `neard --version`'s output: `neard (release 2.6.3) (build ...) ...` since
/// 1.2x (nearcore `neard/src/main.rs`, `NEARD_VERSION_STRING`); older builds printed
/// `neard 1.x.y (build ...)`.
pub fn release_of(version_output: &str) -> Option<String> {
    let line = version_output.lines().next()?;
    if let Some(rest) = line.split("(release ").nth(1) {
        return rest.split(')').next().map(str::to_string);
    }
    line.split_whitespace()
        .nth(1)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `major.minor` of a release (`2.6.3-rc.1` -> (2, 6)).
pub fn major_minor(release: &str) -> Option<(u64, u64)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// What the failover mode and the shard tracking need of neard's version (docs/neard.md).
pub fn judge_version(
    release: &str,
    mode: FailoverMode,
    tracking: ShardTracking,
) -> (Verdict, String) {
    let Some(v) = major_minor(release) else {
        return (
            Verdict::Warn,
            format!("release {release:?} is not a version number (a development build?): cannot tell what it supports"),
        );
    };
    let mut notes = Vec::new();
    let mut verdict = Verdict::Ok;
    if mode == FailoverMode::HotSwap {
        if v < (2, 0) {
            return (
                Verdict::Fail,
                format!("neard {release} cannot hot-swap a validator key (SIGHUP key reload came with neard 2.0): upgrade neard or set KUUTAMO_FAILOVER_MODE=restart"),
            );
        }
        if v < (2, 3) {
            verdict = Verdict::Warn;
            notes.push("hot swap promotes, but below 2.3 neard cannot drop a key on SIGHUP, so kuutamod demotes by restarting it");
        }
    }
    match tracking {
        ShardTracking::ShadowValidator if v < (2, 6) => {
            return (
                Verdict::Fail,
                format!("KUUTAMO_VOTER_SHARD_TRACKING=shadow-validator needs neard >= 2.6 (tracked_shards_config), this is {release}: use tracked-shadow-validator"),
            );
        }
        ShardTracking::TrackedShadowValidator if v < (2, 0) => {
            return (
                Verdict::Fail,
                format!("KUUTAMO_VOTER_SHARD_TRACKING=tracked-shadow-validator needs neard >= 2.0, this is {release}"),
            );
        }
        ShardTracking::TrackedShadowValidator if v >= (2, 6) => {
            verdict = Verdict::Warn;
            notes.push("neard >= 2.6 has tracked_shards_config: prefer KUUTAMO_VOTER_SHARD_TRACKING=shadow-validator");
        }
        _ => {}
    }
    let mut detail = format!("neard {release}");
    if !notes.is_empty() {
        detail.push_str(": ");
        detail.push_str(&notes.join("; "));
    }
    (verdict, detail)
}

async fn neard_version(bin: &Path, args: &Args) -> (Verdict, String) {
    let run = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(NEARD_VERSION_TIMEOUT, run).await {
        Err(_) => {
            return (
                Verdict::Fail,
                format!(
                    "`{} --version` did not answer within {}",
                    bin.display(),
                    crate::duration::display(NEARD_VERSION_TIMEOUT)
                ),
            )
        }
        Ok(Err(e)) => return (Verdict::Fail, format!("cannot run {}: {e}", bin.display())),
        Ok(Ok(out)) => out,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), release_of(&text)) {
        (true, Some(release)) => {
            judge_version(&release, args.failover_mode, args.voter_shard_tracking)
        }
        _ => (
            Verdict::Fail,
            format!(
                "`{} --version` printed no neard version ({}; output {:?}): is it neard?",
                bin.display(),
                out.status,
                text.trim()
            ),
        ),
    }
}

async fn exporter(args: &Args) -> (Verdict, String) {
    let Ok((addr, _, _)) = addresses(args) else {
        return (
            Verdict::Skip,
            "the address is not valid (see settings)".into(),
        );
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => (Verdict::Ok, format!("{addr} is free")),
        Err(e) => (
            Verdict::Fail,
            format!("cannot listen on KUUTAMO_EXPORTER_ADDRESS {addr}: {e}; choose a free address (is kuutamod already running here?)"),
        ),
    }
}

/// The kernel's view of the wall clock (adjtimex(2), read only).
fn clock() -> (Verdict, String) {
    // kuutamod's deadlines run on CLOCK_BOOTTIME (crate::clock); it must be there.
    if let Err(e) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        return (
            Verdict::Fail,
            format!("CLOCK_BOOTTIME is not available: {e}"),
        );
    }
    #[allow(unsafe_code)]
    // SAFETY: timex is a plain C struct of integers, for which all-zero bytes are valid.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    // SAFETY: `tx` is a valid, exclusively borrowed timex; `modes` 0 makes the call read the
    // kernel's clock state and change nothing.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        let e = std::io::Error::last_os_error();
        return (
            Verdict::Skip,
            format!("cannot read the kernel's clock state (adjtimex: {e}; a sandbox such as systemd's ProtectClock hides it)"),
        );
    }
    let max_error = Duration::from_micros(u64::try_from(tx.maxerror).unwrap_or(u64::MAX));
    let unsynced = state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
    let wanted = "kuutamod assumes the hosts' wall clocks agree within 500 ms (docs/failover.md, assumption 2): run an NTP client such as chrony or systemd-timesyncd";
    if unsynced {
        (
            Verdict::Warn,
            format!("the kernel reports the wall clock as not synchronized; {wanted}"),
        )
    } else if max_error > CLOCK_MAX_ERROR {
        (
            Verdict::Warn,
            format!(
                "synchronized, but with a maximum error of {}; {wanted}",
                crate::duration::display(max_error)
            ),
        )
    } else {
        (
            Verdict::Ok,
            format!(
                "synchronized (maximum error {})",
                crate::duration::display(max_error)
            ),
        )
    }
}

/// What a failed request means for the check's line.
fn consul_failure(e: &ConsulError) -> String {
    match e {
        ConsulError::Denied { reason, .. } if reason.contains("ACL not found") => format!(
            "Consul does not know this token ({reason}): check KUUTAMO_CONSUL_TOKEN_FILE, or whichever token setting `kuutamod --help` says is used"
        ),
        ConsulError::Denied { reason, .. } => format!("Consul denied it ({reason})"),
        _ => e.to_string(),
    }
}

fn access(what: &str, a: &Access) -> Result<(), String> {
    match a {
        Access::Allowed => Ok(()),
        Access::Denied(why) => Err(format!("{what} ({why})")),
    }
}

fn judge_probe(p: &Probe, read: &str, write: &str) -> Result<(), String> {
    let denied: Vec<String> = [access(read, &p.read), access(write, &p.write)]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if denied.is_empty() {
        Ok(())
    } else {
        Err(format!("the token may not {}", denied.join(", nor ")))
    }
}

async fn lock_store(report: &mut Report, c: &Consul, args: &Args, account: Option<&str>) {
    let policy = "(contrib/consul/kuutamod-policy.hcl; docs/operations.md, ACLs)";
    // Reachable, with a leader.
    match c.leader().await {
        Ok(Some(leader)) => report.push(
            Verdict::Ok,
            "consul",
            format!("answers, Raft leader {leader}"),
        ),
        Ok(None) => {
            report.push(
                Verdict::Fail,
                "consul",
                "answers, but its servers have no leader (no quorum): kuutamod can neither take nor keep the lock",
            );
            skip_rest(report, 1, "Consul has no leader");
            return;
        }
        Err(e) => {
            report.push(Verdict::Fail, "consul", consul_failure(&e));
            skip_rest(report, 1, "Consul is unreachable");
            return;
        }
    }
    // The token.
    let acl_on = match c.token_self().await {
        Ok(Some(t)) => {
            let policies: Vec<String> = t
                .policies
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.name)
                .collect();
            report.push(
                Verdict::Ok,
                "consul acl token",
                format!(
                    "{:?}, policies: {}",
                    t.description,
                    if policies.is_empty() {
                        "none".into()
                    } else {
                        policies.join(", ")
                    }
                ),
            );
            true
        }
        Ok(None) => {
            report.push(
                Verdict::Warn,
                "consul acl token",
                "Consul's ACLs are off: anyone who reaches it can write the lock; turn them on for a validator (docs/operations.md, ACLs)",
            );
            false
        }
        Err(e) => {
            report.push(Verdict::Fail, "consul acl token", consul_failure(&e));
            skip_rest(report, 2, "the token is not known");
            return;
        }
    };
    // A session, as kuutamod creates, renews and destroys its own.
    let name = format!("kuutamod --check {}", args.node_id);
    let session = match c.create_session(&name, args.session_ttl).await {
        Ok(id) => id,
        Err(e) => {
            let hint = match &e {
                ConsulError::Denied { .. } => {
                    format!(": the token needs session write on this agent's node name {policy}")
                }
                ConsulError::Status { body, .. } if body.contains("TTL") => {
                    " (Consul's session_ttl_min must not exceed KUUTAMO_SESSION_TTL)".into()
                }
                _ => String::new(),
            };
            report.push(
                Verdict::Fail,
                "consul session",
                format!("cannot create a session: {}{hint}", consul_failure(&e)),
            );
            // The lock probe still needs a session id; Consul checks the ACL before it.
            probes(
                report,
                c,
                args,
                account,
                "00000000-0000-0000-0000-000000000000",
                acl_on,
                policy,
            )
            .await;
            return;
        }
    };
    let node = c
        .session_info(&session)
        .await
        .ok()
        .flatten()
        .map(|s| s.node)
        .unwrap_or_default();
    let renewed = c.renew(&session).await;
    probes(report, c, args, account, &session, acl_on, policy).await;
    let destroyed = c.destroy_session(&session).await;
    // Reported before the probes' lines would read better, but the probes use the session.
    let line = match (renewed, destroyed) {
        (Ok(()), Ok(())) => (
            Verdict::Ok,
            format!(
                "created, renewed and destroyed a session (TTL {}) on agent node {node:?}",
                crate::duration::display(args.session_ttl)
            ),
        ),
        (Err(e), _) => (
            Verdict::Fail,
            format!("cannot renew a session: {}", consul_failure(&e)),
        ),
        (_, Err(e)) => (
            Verdict::Fail,
            format!(
                "cannot destroy a session: {} (it expires after its TTL)",
                consul_failure(&e)
            ),
        ),
    };
    let at = report
        .lines
        .iter()
        .position(|l| l.name == "consul lock key")
        .unwrap_or(report.lines.len());
    report.lines.insert(
        at,
        Line {
            verdict: line.0,
            name: "consul session",
            detail: line.1,
        },
    );
}

fn skip_rest(report: &mut Report, from: usize, why: &str) {
    for name in &CONSUL_CHECKS[from..] {
        report.push(Verdict::Skip, name, why);
    }
}

async fn probes(
    report: &mut Report,
    c: &Consul,
    args: &Args,
    account: Option<&str>,
    session: &str,
    acl_on: bool,
    policy: &str,
) {
    let Some(account) = account else {
        for name in ["consul lock key", "consul status records"] {
            report.push(
                Verdict::Skip,
                name,
                "no account (the validator key could not be read)",
            );
        }
        return;
    };
    let lock = leader_key(account);
    let holder = match c.get_key(&lock, None, false).await {
        Ok((Some(e), _)) => {
            let who = Record::parse(&e.bytes())
                .map_or("a value that is not a kuutamod record".to_string(), |r| {
                    format!("{}'s record", r.node_id)
                });
            if e.session.as_deref().is_some_and(|s| !s.is_empty()) {
                format!("; held now, with {who}")
            } else {
                format!("; free, with {who}")
            }
        }
        Ok((None, _)) => "; no node has taken it yet".to_string(),
        Err(_) => String::new(), // the probe below says why
    };
    let line = match c.probe_lock(&lock, session).await {
        Ok(p) => judge_probe(&p, &format!("read {lock}"), &format!("lock {lock}"))
            .map(|()| format!("may read and lock {lock} (asked without writing){holder}"))
            .map_err(|e| format!("{e} {policy}")),
        Err(e) => Err(consul_failure(&e)),
    };
    let may_lock = line.is_ok();
    report.result("consul lock key", line);

    let control = control_key(account);
    let own = node_key(account, &args.node_id);
    let line = match c.probe_set(&control, &own).await {
        Ok(p) => judge_probe(
            &p,
            &format!("read {control} (the records under kuutamod/{account}/)"),
            &format!("write {own}"),
        )
        .map(|()| format!("may read kuutamod/{account}/ and write {own} (asked without writing)"))
        .map_err(|e| format!("{e} {policy}")),
        Err(e) => Err(consul_failure(&e)),
    };
    report.result("consul status records", line);

    // More than kuutamod needs: the control record is kuutamoctl's.
    if acl_on && may_lock {
        if let Ok(p) = c.probe_set(&control, &control).await {
            if p.write == Access::Allowed {
                report.push(
                    Verdict::Warn,
                    "consul least privilege",
                    format!("this token may also write {control} (pause, switchover): more than kuutamod needs {policy}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_from_every_version_format() {
        let v = "neard (release 2.6.3) (build 2.6.3) (rustc 1.84.0) (protocol 75) (db 42)\n";
        assert_eq!(release_of(v).as_deref(), Some("2.6.3"));
        assert_eq!(
            release_of("neard (release trunk) (build abc)").as_deref(),
            Some("trunk")
        );
        assert_eq!(
            release_of("neard 1.26.1 (build 1.26.1) (protocol 52) (db 31)").as_deref(),
            Some("1.26.1")
        );
        assert_eq!(release_of("neard-sim 0.1.0"), Some("0.1.0".into()));
        assert_eq!(release_of("something else"), None);
        assert_eq!(major_minor("2.3.0-rc.1"), Some((2, 3)));
        assert_eq!(major_minor("trunk"), None);
    }

    #[test]
    fn versions_are_judged_by_what_the_mode_needs() {
        use FailoverMode::{HotSwap, Restart};
        use ShardTracking::{None as Plain, ShadowValidator, TrackedShadowValidator};
        let verdict = |r, m, t| judge_version(r, m, t).0;
        assert_eq!(verdict("2.6.3", HotSwap, ShadowValidator), Verdict::Ok);
        assert_eq!(verdict("1.40.0", HotSwap, Plain), Verdict::Fail);
        assert_eq!(verdict("1.40.0", Restart, Plain), Verdict::Ok);
        assert_eq!(verdict("2.2.1", HotSwap, Plain), Verdict::Warn);
        assert_eq!(verdict("2.5.0", HotSwap, ShadowValidator), Verdict::Fail);
        assert_eq!(
            verdict("2.5.0", HotSwap, TrackedShadowValidator),
            Verdict::Ok
        );
        assert_eq!(
            verdict("2.7.0", HotSwap, TrackedShadowValidator),
            Verdict::Warn
        );
        assert_eq!(verdict("trunk", HotSwap, Plain), Verdict::Warn);
        let (_, detail) = judge_version("1.40.0", HotSwap, Plain);
        assert!(detail.contains("KUUTAMO_FAILOVER_MODE=restart"), "{detail}");
    }

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
