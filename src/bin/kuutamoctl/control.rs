//! The commands that steer the cluster through its control record: `pause`, `resume` and
//! `switchover`. Every change is a check-and-set of the control record, so two commands that
//! race are applied one after the other, each seeing what the other did.
//!
//! A switchover is one operation with an identity: the request names the node that validates
//! now (`from`, with its session) and the target chosen now (the named one, or the best ready
//! standby); only `from` carries it out, once; the node that validates afterwards ends it in the
//! control record's `done`, saying whether it happened as asked. `--wait` reports only what it
//! observed: the node holding the lock with its activation confirmed, and the signing gap as
//! the status records showed it.

use super::*;

/// How often `--wait` looks at the records (a blocking query returns at once on a change).
const WAIT_POLL: Duration = Duration::from_millis(200);

/// After a switchover ended, how long `--wait` waits for the lock holder's status record to
/// show its key confirmed live (a restart with the key takes neard's boot).
const CONFIRM_WAIT: Duration = Duration::from_secs(30);

/// Why a change of the control record was not made.
enum Refused {
    /// The change does not apply (said to the operator, exit 1).
    No(String),
    /// Consul failed.
    Err(String),
}

/// Reads, changes and writes the control record with check-and-set, retrying on a race.
/// `change` may refuse, with what to tell the operator.
async fn update_control(
    consul: &Consul,
    account: &str,
    change: impl Fn(&mut Control) -> Result<(), String>,
) -> Result<Control, Refused> {
    for _ in 0..10 {
        let (mut control, index, _) = cluster(consul, account).await.map_err(Refused::Err)?;
        change(&mut control).map_err(Refused::No)?;
        let bytes = serde_json::to_vec(&control).map_err(|e| Refused::Err(e.to_string()))?;
        if consul
            .put_cas(&control_key(account), &bytes, index)
            .await
            .map_err(|e| Refused::Err(e.to_string()))?
        {
            return Ok(control);
        }
    }
    Err(Refused::Err(
        "the control record kept changing; try again".into(),
    ))
}

/// The pending switchover, described for an operator.
fn describe(sw: &Switchover) -> String {
    format!(
        "switchover {} ({} -> {})",
        sw.id,
        sw.from,
        sw.to.as_deref().unwrap_or("the best standby")
    )
}

pub(super) async fn set_paused(
    consul: &Consul,
    account: &str,
    paused: bool,
) -> Result<i32, String> {
    let changed = update_control(consul, account, |c| {
        // A pause would leave a switchover's successor to decide alone whether a released
        // lock may be taken: refuse while one is in flight.
        if let (true, Some(sw)) = (paused, &c.switchover) {
            return Err(format!(
                "{} is in flight: wait for it to end (`kuutamoctl status`) or cancel it (`kuutamoctl switchover --cancel`), then pause",
                describe(sw)
            ));
        }
        c.paused = paused;
        Ok(())
    })
    .await;
    match changed {
        Ok(_) => {
            println!(
                "automatic failover for {account} is {}",
                if paused {
                    "paused (safety fences stay active; `kuutamoctl resume` to end)"
                } else {
                    "on"
                }
            );
            Ok(0)
        }
        Err(Refused::No(why)) => {
            eprintln!("kuutamoctl: {why}");
            Ok(1)
        }
        Err(Refused::Err(e)) => Err(e),
    }
}

/// `switchover --cancel`: ends a pending switchover without a hand-over (one already under
/// way completes; its outcome is then recorded by no one).
pub(super) async fn cancel_switchover(consul: &Consul, account: &str) -> Result<i32, String> {
    let changed = update_control(consul, account, |c| {
        let Some(sw) = c.switchover.take() else {
            return Err("no switchover is in flight".into());
        };
        c.done = Some(SwitchoverDone {
            id: sw.id,
            ok: false,
            leader: None,
            outcome: "cancelled by kuutamoctl".into(),
        });
        Ok(())
    })
    .await;
    match changed {
        Ok(c) => {
            let id = c.done.map(|d| d.id).unwrap_or_default();
            println!("switchover {id} cancelled");
            Ok(0)
        }
        Err(Refused::No(why)) => {
            eprintln!("kuutamoctl: {why}");
            Ok(1)
        }
        Err(Refused::Err(e)) => Err(e),
    }
}

/// The nodes that would take the lock now: a fresh status record that says so, judged by its
/// Consul session being alive (the node's kuutamod renews it), never by its wall-clock age.
async fn ready_nodes(
    consul: &Consul,
    nodes: &[NodeRecord],
    leader: &str,
) -> Result<Vec<NodeRecord>, String> {
    let mut ready = Vec::new();
    for n in nodes {
        if n.node_id == leader || !n.may_take_over || n.priority == 0 {
            continue;
        }
        let Some(session) = &n.session else { continue };
        if consul
            .session_info(session)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            ready.push(n.clone());
        }
    }
    Ok(ready)
}

pub(super) async fn switchover(
    consul: &Consul,
    account: &str,
    to: Option<String>,
    in_window: bool,
    wait: bool,
    timeout: Duration,
) -> Result<i32, String> {
    let l = lock(consul, account).await?;
    let (old, old_session) = match (&l.record, &l.holder, l.alive) {
        (Some(r), Some(s), true) => (r.node_id.clone(), s.clone()),
        _ => {
            eprintln!("kuutamoctl: no node validates for {account}; nothing to hand over");
            return Ok(1);
        }
    };
    let (_, _, nodes) = cluster(consul, account).await?;
    if to.as_deref() == Some(old.as_str()) {
        println!("{old} already validates");
        return Ok(0);
    }
    let ready = ready_nodes(consul, &nodes, &old).await?;
    let names = || {
        ready
            .iter()
            .map(|n| n.node_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    // The target is chosen now, never by the node that validates afterwards.
    let target = match &to {
        Some(t) if !ready.iter().any(|n| &n.node_id == t) => {
            eprintln!(
                "kuutamoctl: {t} is not a synced standby that may take over (ready: {})",
                names()
            );
            return Ok(1);
        }
        Some(t) => t.clone(),
        None => match ready
            .iter()
            .max_by(|a, b| a.priority.cmp(&b.priority).then(b.node_id.cmp(&a.node_id)))
        {
            Some(n) => n.node_id.clone(),
            None => {
                eprintln!("kuutamoctl: no synced standby may take over");
                return Ok(1);
            }
        },
    };
    let id = format!("{:x}-{}", wall_ms(), std::process::id());
    let request = Switchover {
        id: id.clone(),
        from: old.clone(),
        from_session: Some(old_session),
        to: Some(target.clone()),
        in_window,
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let requested = update_control(consul, account, |c| {
        if c.paused {
            return Err(
                "automatic failover is paused; `kuutamoctl resume` first, then switch over".into(),
            );
        }
        if let Some(sw) = &c.switchover {
            return Err(format!(
                "{} is in flight: wait for it to end, or `kuutamoctl switchover --cancel`",
                describe(sw)
            ));
        }
        c.switchover = Some(request.clone());
        Ok(())
    })
    .await;
    match requested {
        Ok(_) => {}
        Err(Refused::No(why)) => {
            eprintln!("kuutamoctl: {why}");
            return Ok(1);
        }
        Err(Refused::Err(e)) => return Err(e),
    }
    println!(
        "switchover {id} requested: {old} -> {target}{}",
        if in_window {
            ", in a maintenance window"
        } else {
            ""
        }
    );
    if !wait {
        return Ok(0);
    }
    wait_for(consul, account, &id, &old, &target, timeout).await
}

/// `--wait`: follows the records until the request ends or `timeout` passes, and reports what
/// it saw.
async fn wait_for(
    consul: &Consul,
    account: &str,
    id: &str,
    old: &str,
    target: &str,
    timeout: Duration,
) -> Result<i32, String> {
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    // When this command first saw the old leader's record leave Validating, and a node's record
    // show a confirmed activation after it: the signing gap as the records show it.
    let mut fenced: Option<std::time::Instant> = None;
    let mut live: Option<(String, std::time::Instant)> = None;
    let mut last_status = String::new();
    let mut index = 0u64;
    let mut ended_at: Option<std::time::Instant> = None;
    loop {
        let now = std::time::Instant::now();
        if now >= deadline {
            let cancelled = update_control(consul, account, |c| {
                if c.switchover.as_ref().is_some_and(|s| s.id == id) {
                    let sw = c.switchover.take();
                    c.done = sw.map(|sw| SwitchoverDone {
                        id: sw.id,
                        ok: false,
                        leader: None,
                        outcome: format!("timed out after {timeout:?} in kuutamoctl --wait"),
                    });
                }
                Ok(())
            })
            .await;
            let l = lock(consul, account).await?;
            let holder = l.record.filter(|_| l.alive).map(|r| r.node_id);
            eprintln!(
                "kuutamoctl: switchover {id} did not end within {timeout:?}{}; last status: {}; {} validates now",
                if cancelled.is_ok() { " (request withdrawn)" } else { "" },
                if last_status.is_empty() { "none" } else { &last_status },
                holder.as_deref().unwrap_or("no node"),
            );
            return Ok(1);
        }
        let blocking = (index > 0).then_some((index, WAIT_POLL.min(deadline - now)));
        let (entries, new_index) = consul
            .get_prefix(&prefix(account), blocking)
            .await
            .map_err(|e| e.to_string())?;
        index = new_index;
        let seen = std::time::Instant::now();
        let ckey = control_key(account);
        let mut control = Control::default();
        let mut nodes = Vec::new();
        for e in entries {
            if e.key == ckey {
                control = Control::parse(&e.bytes()).unwrap_or_default();
            } else if let Some(r) = NodeRecord::parse(&e.bytes()) {
                nodes.push(r);
            }
        }
        let state = |n: &str| nodes.iter().find(|r| r.node_id == n);
        if fenced.is_none() && state(old).is_some_and(|r| r.state != "Validating") {
            fenced = Some(seen);
        }
        if let (Some(_), None) = (fenced, &live) {
            if let Some(r) = nodes.iter().find(|r| {
                r.node_id != old && r.state == "Validating" && r.validating_since_ms.is_some()
            }) {
                live = Some((r.node_id.clone(), seen));
            }
        }
        if let Some(s) = state(old)
            .and_then(|r| r.switchover.clone())
            .filter(|s| s.id == id && s.status != last_status)
        {
            println!("{old}: {}", s.status);
            last_status = s.status;
        }
        let Some(done) = control.done.filter(|d| d.id == id) else {
            continue;
        };
        // Ended: who holds the lock now, with its activation confirmed?
        let l = lock(consul, account).await?;
        let holder = l.record.filter(|_| l.alive).map(|r| r.node_id);
        let confirmed = holder.as_deref().is_some_and(|h| {
            state(h).is_some_and(|r| r.state == "Validating" && r.validating_since_ms.is_some())
        });
        let gap = match (fenced, &live) {
            (Some(f), Some((n, t))) if holder.as_deref() == Some(n.as_str()) => {
                format!("{} ms", t.saturating_duration_since(f).as_millis())
            }
            _ => "not seen".into(),
        };
        // The node that ended the request writes its status record on its own: give it a
        // moment to show the confirmed activation.
        let ended = *ended_at.get_or_insert(seen);
        if holder.is_some() && !confirmed && seen < ended + CONFIRM_WAIT && seen < deadline {
            continue;
        }
        return if done.ok && confirmed && holder.as_deref() == Some(target) {
            println!(
                "switched over: {old} -> {target} (signing gap as the status records showed it: {gap})"
            );
            Ok(0)
        } else {
            eprintln!(
                "kuutamoctl: switchover {id} did not go as asked ({old} -> {target}): {}; now {}",
                done.outcome,
                match (&holder, confirmed) {
                    (Some(h), true) => format!("{h} validates"),
                    (Some(h), false) =>
                        format!("{h} holds the lock, its key not confirmed live yet"),
                    (None, _) => "no node holds the lock".to_string(),
                }
            );
            Ok(1)
        };
    }
}
