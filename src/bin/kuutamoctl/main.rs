//! kuutamoctl: inspect and steer a kuutamod cluster through Consul, from any host with a Consul
//! agent (no access to the validator hosts needed).
//!
//! - `active-validator [--json]`: the node holding the lock. Exit 0: a node holds it; 1: none
//!   does; 2: the key names a session that no longer exists; 3: Consul errors.
//! - `status [--json]`: every node's status record, the lock holder and how long it has been
//!   validating, whether the cluster is paused, a pending switchover.
//! - `pause` / `resume`: no automatic failover and no neard restarts while paused (safety fences
//!   stay active).
//! - `switchover [--to NODE] [--in-window] [--wait] [--timeout D] [--cancel]`: a planned hand-over to a
//!   synced standby, carried out by the leader with the same fencing as every hand-over.
//!   `--in-window` waits for a height range in which our account has nothing to produce
//!   (neard's `maintenance_windows` RPC); `--wait` reports the new leader and the gap.
//!
//! Conventions: the global options go before or after the subcommand; Consul is found as the
//! consul CLI finds it when kuutamoctl's own variables are unset (`CONSUL_HTTP_ADDR`,
//! `CONSUL_HTTP_SSL`, `CONSUL_CACERT`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_TOKEN`); a bad
//! command line exits 64 (`EX_USAGE`), never 2, which `active-validator` uses; an account
//! nothing in Consul knows of is said so (most often a typo or the wrong Consul).

use std::time::Duration;

use clap::{Parser, Subcommand};
use kuutamod::clock::wall_ms;
use kuutamod::lease::{Record, RecordState};
use kuutamod::records::{prefix, Control, NodeRecord};
use kuutamod::settings::{account_of, leader_key, read_key, ConsulFlags, StoreAccess, StoreFlags};
use kuutamod::store::{KvEntry, Store as Consul};

mod control;
use control::{cancel_switchover, set_paused, switchover};

/// Exit status of a bad command line: sysexits' `EX_USAGE`. clap's own 2 would read as
/// `active-validator`'s "the holder's session is gone".
const EXIT_USAGE: i32 = 64;

/// Exit status when Consul cannot be asked or a setting is wrong.
const EXIT_ERROR: i32 = 3;

/// `kuutamoctl --help`'s closing text.
const AFTER_HELP: &str = "\
Consul: the URL is --consul-url / KUUTAMO_CONSUL_URL, else CONSUL_HTTP_ADDR (with CONSUL_HTTP_SSL,
as the consul CLI reads them), else http://localhost:8500. The ACL token is KUUTAMO_CONSUL_TOKEN,
else the file KUUTAMO_CONSUL_TOKEN_FILE, else CONSUL_HTTP_TOKEN_FILE, else CONSUL_HTTP_TOKEN. The
CA file is KUUTAMO_CONSUL_CA_FILE, else CONSUL_CACERT. Options go before or after the command.

etcd (KUUTAMO_LOCK_BACKEND=etcd): KUUTAMO_ETCD_ENDPOINTS (default http://127.0.0.1:2379), the TLS
files KUUTAMO_ETCD_CA_FILE, KUUTAMO_ETCD_CERT_FILE, KUUTAMO_ETCD_KEY_FILE, and KUUTAMO_ETCD_USER
with KUUTAMO_ETCD_PASSWORD_FILE, as kuutamod reads them.

Exit status: 0 done; 1 the command could not do what was asked (no leader, no ready standby, an
account nothing in Consul knows of); active-validator adds 2; 3 Consul could not be asked
(unreachable, the token refused) or a setting is wrong; 64 a bad command line.";

/// `kuutamoctl active-validator --help`'s closing text: its exit status is its answer.
const ACTIVE_VALIDATOR_EXIT: &str = "\
Exit status (for scripts and monitoring):
  0  a node holds the lock: it validates (printed: node id and host name)
  1  no node holds the lock: nobody validates right now
  2  the lock names a Consul session that no longer exists (usually a hand-over in progress:
     ask again)
  3  Consul could not be asked (unreachable, the token refused) or a setting is wrong
 64  a bad command line";

#[derive(Parser)]
#[command(
    name = "kuutamoctl",
    version,
    about = "Inspect and steer a kuutamod cluster",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Validator account (else the account of the validator key file).
    #[arg(long, global = true, env = "KUUTAMO_ACCOUNT_ID")]
    account_id: Option<String>,
    /// Validator key file, to read the account from [default:
    /// $CREDENTIALS_DIRECTORY/validator_key.json].
    #[arg(long, global = true, env = "KUUTAMO_VALIDATOR_KEY")]
    validator_key: Option<std::path::PathBuf>,
    /// Consul's URL, ACL token and CA file, as kuutamod reads them.
    #[command(flatten)]
    consul: ConsulFlags,
    /// The lock store (KUUTAMO_LOCK_BACKEND) and etcd's settings.
    #[command(flatten)]
    store: StoreFlags,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the node that holds the validator lock (its exit status says the same).
    #[command(after_help = ACTIVE_VALIDATOR_EXIT)]
    ActiveValidator {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show every node of the account, the lock holder, pause and switchover.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop automatic failover and neard restarts (cluster-wide) until `resume`.
    Pause {
        /// Also pause an account that no kuutamod has registered yet (before the first
        /// start, as the migration runbook does); without it kuutamoctl refuses, as a guard
        /// against a mistyped account.
        #[arg(long)]
        force: bool,
    },
    /// Resume automatic failover.
    Resume,
    /// Hand the validator role over to a synced standby (refused while paused or while another
    /// switchover is in flight).
    Switchover {
        /// The node to hand over to (default: the synced standby with the highest priority,
        /// chosen now).
        #[arg(long)]
        to: Option<String>,
        /// End the switchover in flight without a hand-over.
        #[arg(long, conflicts_with_all = ["to", "in_window", "wait"])]
        cancel: bool,
        /// Wait until our account has no block or chunk to produce for a few heights.
        #[arg(long)]
        in_window: bool,
        /// Wait until the switchover ends, and report who validates then (exit 0 only if it is
        /// the target, its key confirmed live) and the signing gap the status records showed.
        #[arg(long)]
        wait: bool,
        /// The request lapses this long after a node first saw it; `--wait` gives up then.
        #[arg(long, default_value = "120s", value_parser = kuutamod::duration::parse)]
        timeout: Duration,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let _ = e.print();
            std::process::exit(EXIT_USAGE);
        }
    };
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kuutamoctl: {e}");
            EXIT_ERROR
        }
    };
    std::process::exit(code);
}

fn account(cli: &Cli) -> Result<String, String> {
    if let Some(a) = cli.account_id.as_ref().filter(|a| !a.is_empty()) {
        return Ok(a.clone());
    }
    let key = read_key(
        "validator",
        cli.validator_key.as_deref(),
        "KUUTAMO_VALIDATOR_KEY",
        "validator_key.json",
    )
    .map_err(|e| {
        format!(
            "no account (set KUUTAMO_ACCOUNT_ID or --account-id, or fix the validator key): {e}"
        )
    })?;
    account_of(&key, None)
}

async fn run(cli: Cli) -> Result<i32, String> {
    let access = StoreAccess::resolve(&cli.store, || cli.consul.access())?;
    let consul = access.client().map_err(|e| format!("{e:#}"))?;
    let account = account(&cli)?;
    let location = access.location();
    let unknown = |what: &str| unknown_account(&account, &location, what);
    match cli.command {
        Command::ActiveValidator { json } => {
            let code = active_validator(&consul, &account, json).await?;
            if code == 1 && !registered(&consul, &account).await? {
                eprintln!("{}", unknown("none holds its lock"));
            }
            Ok(code)
        }
        Command::Status { json } => {
            if registered(&consul, &account).await? {
                return status(&consul, &account, json).await;
            }
            if json {
                status(&consul, &account, true).await?;
            }
            eprintln!("{}", unknown("there is nothing to show"));
            Ok(1)
        }
        Command::Pause { force } => {
            if !force && !registered(&consul, &account).await? {
                eprintln!(
                    "{}",
                    unknown("nothing was paused (`kuutamoctl pause --force` pauses it before its first kuutamod starts)")
                );
                return Ok(1);
            }
            set_paused(&consul, &account, true).await
        }
        Command::Resume => {
            if !registered(&consul, &account).await? {
                eprintln!("{}", unknown("nothing was resumed"));
                return Ok(1);
            }
            set_paused(&consul, &account, false).await
        }
        Command::Switchover { cancel: true, .. } => cancel_switchover(&consul, &account).await,
        Command::Switchover {
            to,
            in_window,
            wait,
            timeout,
            ..
        } => switchover(&consul, &account, to, in_window, wait, timeout).await,
    }
}

/// Whether Consul knows anything of `account`: its lock key, or any record under
/// `kuutamod/<account>/` (a node's status, the control record).
async fn registered(consul: &Consul, account: &str) -> Result<bool, String> {
    let (lock, _) = consul
        .get_key(&leader_key(account), None, false)
        .await
        .map_err(|e| e.to_string())?;
    if lock.is_some() {
        return Ok(true);
    }
    let (entries, _) = consul
        .get_prefix(&prefix(account), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(!entries.is_empty())
}

/// The warning for an account nothing in Consul knows of: most often a mistyped account or
/// the wrong Consul, which an empty answer would hide.
fn unknown_account(account: &str, location: &str, outcome: &str) -> String {
    format!(
        "kuutamoctl: warning: {location} knows nothing of account {account:?} (no lock key {} \
         and no records under {}), so {outcome}. Check the account (KUUTAMO_ACCOUNT_ID or the \
         validator key's), that this is the cluster's Consul, that the token may read them, and \
         that a kuutamod of this account has started.",
        leader_key(account),
        prefix(account),
    )
}

/// The lock: its entry, its record, and whether its session is alive.
struct Lock {
    entry: Option<KvEntry>,
    record: Option<Record>,
    holder: Option<String>,
    alive: bool,
}

async fn lock(consul: &Consul, account: &str) -> Result<Lock, String> {
    let (entry, _) = consul
        .get_key(&leader_key(account), None, false)
        .await
        .map_err(|e| e.to_string())?;
    let holder = entry
        .as_ref()
        .and_then(|e| e.session.clone())
        .filter(|s| !s.is_empty());
    let record = entry.as_ref().and_then(|e| Record::parse(&e.bytes()));
    let alive = match &holder {
        Some(s) => consul
            .session_info(s)
            .await
            .map_err(|e| e.to_string())?
            .is_some(),
        None => false,
    };
    Ok(Lock {
        entry,
        record,
        holder,
        alive,
    })
}

async fn active_validator(consul: &Consul, account: &str, json: bool) -> Result<i32, String> {
    let key = leader_key(account);
    let l = lock(consul, account).await?;
    let code = match (&l.entry, &l.holder) {
        (Some(_), Some(_)) if l.alive => 0,
        (Some(_), Some(_)) => 2,
        _ => 1,
    };
    let leader = l.record.as_ref().filter(|_| l.holder.is_some());
    if json {
        let out = serde_json::json!({
            "account_id": account,
            "key": key,
            "node_id": leader.map(|r| r.node_id.clone()),
            "hostname": leader.map(|r| r.hostname.clone()),
            "session": l.holder,
            "session_alive": l.alive,
            "released": l.record.as_ref().is_some_and(|r| r.state == RecordState::Released),
        });
        println!("{out}");
    } else {
        match (code, leader) {
            (0, Some(r)) => println!("{} ({})", r.node_id, r.hostname),
            (0, None) => println!(
                "held by session {} (value is not a kuutamod record)",
                l.holder.unwrap_or_default()
            ),
            (2, _) => println!(
                "no active validator: {key} names session {} which no longer exists",
                l.holder.unwrap_or_default()
            ),
            _ => println!("no active validator for {account}"),
        }
    }
    Ok(code)
}

/// The control record and its index (0 when absent), and every node record.
async fn cluster(
    consul: &Consul,
    account: &str,
) -> Result<(Control, u64, Vec<NodeRecord>), String> {
    let (entries, _) = consul
        .get_prefix(&prefix(account), None)
        .await
        .map_err(|e| e.to_string())?;
    Ok(kuutamod::ctl::cluster(account, &entries))
}

fn age(ms: u64) -> String {
    let s = wall_ms().saturating_sub(ms) / 1000;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else {
        format!("{}h", s / 3600)
    }
}

async fn status(consul: &Consul, account: &str, json: bool) -> Result<i32, String> {
    let l = lock(consul, account).await?;
    let (control, _, nodes) = cluster(consul, account).await?;
    let holder = l
        .record
        .as_ref()
        .filter(|_| l.holder.is_some())
        .map(|r| r.node_id.clone());
    let since = holder.as_ref().and_then(|h| {
        nodes
            .iter()
            .find(|n| &n.node_id == h)
            .and_then(|n| n.validating_since_ms)
    });
    if json {
        let out = serde_json::json!({
            "account_id": account,
            "leader": holder,
            "leader_session_alive": l.alive,
            "validating_since_ms": since,
            "paused": control.paused,
            "switchover": control.switchover,
            "switchover_done": control.done,
            "nodes": nodes,
        });
        println!("{out}");
        return Ok(0);
    }
    match (&holder, l.alive) {
        (Some(h), true) => println!(
            "leader: {h}{}",
            since.map_or(String::new(), |s| format!(", validating for {}", age(s)))
        ),
        (Some(h), false) => println!("leader: {h} (its session no longer exists)"),
        (None, _) => println!("leader: none"),
    }
    println!(
        "automatic failover: {}",
        if control.paused { "PAUSED" } else { "on" }
    );
    if let Some(sw) = &control.switchover {
        println!(
            "switchover {} in flight: {} -> {}{}",
            sw.id,
            if sw.from.is_empty() {
                "the leader"
            } else {
                &sw.from
            },
            sw.to.as_deref().unwrap_or("the best standby"),
            if sw.in_window {
                " in a maintenance window"
            } else {
                ""
            }
        );
    }
    if let Some(d) = &control.done {
        println!(
            "last switchover {}: {}{}",
            d.id,
            d.outcome,
            if d.ok { "" } else { " (not as asked)" }
        );
    }
    println!(
        "{:<12} {:<16} {:<11} {:<6} {:>10} {:<10} {:<8} {:>3} {:<6} {:<6} {:>6}",
        "node", "host", "state", "synced", "head", "neard", "mode", "pri", "paused", "ready", "age"
    );
    for n in &nodes {
        println!(
            "{:<12} {:<16} {:<11} {:<6} {:>10} {:<10} {:<8} {:>3} {:<6} {:<6} {:>6}",
            n.node_id,
            n.hostname,
            n.state,
            n.synced,
            n.head.map_or("-".into(), |h| h.to_string()),
            n.neard_version.as_deref().unwrap_or("-"),
            n.failover_mode,
            n.priority,
            n.paused,
            n.may_take_over,
            age(n.updated_ms),
        );
        if let Some(sw) = &n.switchover {
            println!("  switchover {}: {}", sw.id, sw.status);
        }
    }
    Ok(0)
}
