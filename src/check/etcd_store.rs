//! The checks of an etcd lock store: the members reachable with a leader, the user
//! authenticated (or etcd's authentication off, a warning), a lease granted, kept alive and
//! revoked, and the user's role allowed exactly what kuutamod does, asked without writing
//! ([`Etcd::probe`]).

use super::{Report, Verdict};
use crate::etcd::{holder_key, lease_id, Etcd};
use crate::records::{control_key, node_key};
use crate::settings::{leader_key, Args};
use crate::store::StoreError;

/// The checks that talk to etcd, in order.
pub(super) const ETCD_CHECKS: [&str; 5] = [
    "etcd",
    "etcd auth",
    "etcd lease",
    "etcd lock key",
    "etcd status records",
];

/// Where the role kuutamod needs is described.
const ROLE: &str = "(docs/operations.md, etcd: the kuutamod role)";

fn skip_rest(report: &mut Report, from: usize, why: &str) {
    for name in &ETCD_CHECKS[from..] {
        report.push(Verdict::Skip, name, why);
    }
}

fn failure(e: &StoreError) -> String {
    e.to_string()
}

pub(super) async fn etcd_store(report: &mut Report, c: &Etcd, args: &Args, account: Option<&str>) {
    // Every member named: reachable, and with a leader.
    let mut answered = Vec::new();
    let mut problems = Vec::new();
    for endpoint in c.endpoints() {
        match c.status_of(endpoint).await {
            Ok(s) if s.has_leader() => answered.push(format!("{endpoint} (etcd {})", s.version)),
            Ok(s) => problems.push(format!(
                "{endpoint} (etcd {}) has no Raft leader (no quorum): kuutamod can neither take nor keep the lock",
                s.version
            )),
            Err(e) => problems.push(failure(&e)),
        }
    }
    match (answered.is_empty(), problems.is_empty()) {
        (false, true) => report.push(
            Verdict::Ok,
            "etcd",
            format!("answers with a leader: {}", answered.join(", ")),
        ),
        (false, false) => report.push(
            Verdict::Warn,
            "etcd",
            format!(
                "answers with a leader: {}; but {}",
                answered.join(", "),
                problems.join("; ")
            ),
        ),
        (true, _) => {
            report.push(Verdict::Fail, "etcd", problems.join("; "));
            skip_rest(report, 1, "no etcd member answers with a leader");
            return;
        }
    }
    // The user.
    match c.authenticate().await {
        Ok(true) => report.push(Verdict::Ok, "etcd auth", "authenticated as the user given"),
        Ok(false) => match c.anonymous_refused().await {
            Ok(true) => {
                report.push(
                    Verdict::Fail,
                    "etcd auth",
                    "etcd's authentication is on but no user is given: set KUUTAMO_ETCD_USER and KUUTAMO_ETCD_PASSWORD_FILE",
                );
                skip_rest(report, 2, "no user");
                return;
            }
            _ => report.push(
                Verdict::Warn,
                "etcd auth",
                "etcd's authentication is off: anyone who reaches it can write the lock; turn it on for a validator (docs/operations.md, etcd)",
            ),
        },
        Err(e) => {
            report.push(Verdict::Fail, "etcd auth", failure(&e));
            skip_rest(report, 2, "the user could not authenticate");
            return;
        }
    }
    // A lease, as kuutamod grants, keeps alive and revokes its own.
    let name = format!("kuutamod --check {}", args.node_id);
    let lease = match c.create_session(&name, args.session_ttl).await {
        Ok(id) => {
            let line = match (c.renew(&id).await, c.destroy_session(&id).await) {
                (Ok(()), Ok(())) => (
                    Verdict::Ok,
                    format!(
                        "granted, kept alive and revoked a lease (TTL {})",
                        crate::duration::display(args.session_ttl)
                    ),
                ),
                (Err(e), _) => (
                    Verdict::Fail,
                    format!("cannot keep a lease alive: {}", failure(&e)),
                ),
                (_, Err(e)) => (
                    Verdict::Fail,
                    format!(
                        "cannot revoke a lease: {} (it expires after its TTL)",
                        failure(&e)
                    ),
                ),
            };
            report.push(line.0, "etcd lease", line.1);
            lease_id(&id)
        }
        Err(e) => {
            report.push(
                Verdict::Fail,
                "etcd lease",
                format!("cannot grant a lease: {}", failure(&e)),
            );
            None
        }
    };
    let Some(account) = account else {
        for name in ["etcd lock key", "etcd status records"] {
            report.push(
                Verdict::Skip,
                name,
                "no account (the validator key could not be read)",
            );
        }
        return;
    };
    let lock = leader_key(account);
    let holder = holder_key(&lock);
    let now = match c.get_key(&lock, None, true).await {
        Ok((Some(e), _)) => match &e.session {
            Some(s) => format!("; held now by lease {s}"),
            None => "; free, with a record".into(),
        },
        Ok((None, _)) => "; no node has taken it yet".into(),
        Err(_) => String::new(),
    };
    let line = match c
        .probe(&[&lock, &holder], &[(&lock, None), (&holder, lease)])
        .await
    {
        Ok((Ok(()), Ok(()))) => Ok(format!(
            "may read and write {lock} and {holder} (asked without writing){now}"
        )),
        Ok((r, w)) => Err(format!(
            "the user may not {} {ROLE}",
            [r.err(), w.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", nor ")
        )),
        Err(e) => Err(failure(&e)),
    };
    report.result("etcd lock key", line);

    let control = control_key(account);
    let own = node_key(account, &args.node_id);
    let prefix = crate::records::prefix(account);
    let line = match c.probe(&[&control], &[(&own, None)]).await {
        Ok((Ok(()), Ok(()))) => Ok(format!(
            "may read {prefix} and write {own} (asked without writing)"
        )),
        Ok((r, w)) => Err(format!(
            "the user may not {} {ROLE}",
            [r.err(), w.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", nor ")
        )),
        Err(e) => Err(failure(&e)),
    };
    report.result("etcd status records", line);
}
