//! The checks of the lock store: Consul reachable with a leader, the ACL token known, and
//! allowed exactly what kuutamod does with it, asked without changing anything.

use super::{Line, Report, Verdict, CONSUL_CHECKS};
use crate::consul::{Access, Consul, ConsulError, Probe};
use crate::lease::Record;
use crate::records::{control_key, node_key};
use crate::settings::{leader_key, Args};

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

pub(super) async fn lock_store(
    report: &mut Report,
    c: &Consul,
    args: &Args,
    account: Option<&str>,
) {
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
