//! The commands that steer the cluster through its control record: `pause`, `resume` and
//! `switchover`.

use super::*;

/// Reads, changes and writes the control record with check-and-set, retrying on a race.
async fn update_control(
    consul: &Consul,
    account: &str,
    change: impl Fn(&mut Control),
) -> Result<Control, String> {
    for _ in 0..10 {
        let (mut control, index, _) = cluster(consul, account).await?;
        change(&mut control);
        let bytes = serde_json::to_vec(&control).map_err(|e| e.to_string())?;
        if consul
            .put_cas(&control_key(account), &bytes, index)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(control);
        }
    }
    Err("the control record kept changing; try again".into())
}

pub(super) async fn set_paused(
    consul: &Consul,
    account: &str,
    paused: bool,
) -> Result<i32, String> {
    update_control(consul, account, |c| c.paused = paused).await?;
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

pub(super) async fn switchover(
    consul: &Consul,
    account: &str,
    to: Option<String>,
    in_window: bool,
    wait: bool,
    timeout: Duration,
) -> Result<i32, String> {
    let l = lock(consul, account).await?;
    let old = match (&l.record, &l.holder, l.alive) {
        (Some(r), Some(_), true) => r.node_id.clone(),
        _ => {
            eprintln!("kuutamoctl: no node validates for {account}; nothing to hand over");
            return Ok(1);
        }
    };
    let (control, _, nodes) = cluster(consul, account).await?;
    let now = wall_ms();
    if control.paused {
        eprintln!("kuutamoctl: automatic failover is paused; `kuutamoctl resume` first");
        return Ok(1);
    }
    let ready: Vec<&NodeRecord> = nodes
        .iter()
        .filter(|n| n.node_id != old && n.may_take_over && n.priority > 0 && n.is_fresh(now))
        .collect();
    match &to {
        Some(t) if *t == old => {
            println!("{t} already validates");
            return Ok(0);
        }
        Some(t) if !ready.iter().any(|n| &n.node_id == t) => {
            eprintln!(
                "kuutamoctl: {t} is not a synced standby that may take over (ready: {})",
                ready
                    .iter()
                    .map(|n| n.node_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(1);
        }
        None if ready.is_empty() => {
            eprintln!("kuutamoctl: no synced standby may take over");
            return Ok(1);
        }
        _ => {}
    }
    let id = format!("{:x}-{}", wall_ms(), std::process::id());
    let request = Switchover {
        id: id.clone(),
        to: to.clone(),
        in_window,
        expires_ms: wall_ms() + timeout.as_millis() as u64,
    };
    update_control(consul, account, |c| c.switchover = Some(request.clone())).await?;
    println!(
        "switchover {id} requested: {old} -> {}{}",
        to.as_deref().unwrap_or("the best standby"),
        if in_window {
            ", in a maintenance window"
        } else {
            ""
        }
    );
    if !wait {
        return Ok(0);
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut last_status = String::new();
    while std::time::Instant::now() < deadline {
        let l = lock(consul, account).await?;
        let (_, _, nodes) = cluster(consul, account).await?;
        if let Some(s) = nodes
            .iter()
            .find(|n| n.node_id == old)
            .and_then(|n| n.switchover.clone())
            .filter(|s| s.id == id)
        {
            if s.status != last_status {
                println!("{old}: {}", s.status);
                last_status = s.status.clone();
            }
            if s.failed {
                clear_switchover(consul, account, &id).await;
                return Ok(1);
            }
        }
        let new = l
            .record
            .as_ref()
            .filter(|r| l.holder.is_some() && r.node_id != old && r.state == RecordState::Active);
        if let Some(r) = new {
            if let Some(n) = nodes
                .iter()
                .find(|n| n.node_id == r.node_id && n.state == "Validating")
            {
                let gap = match (released_ms(&nodes, &old), n.validating_since_ms) {
                    (Some(a), Some(b)) => format!("{} ms", b.saturating_sub(a)),
                    _ => "unknown".into(),
                };
                println!(
                    "switched over: {old} -> {} (gap between the old leader stepping down and the new one validating: {gap})",
                    n.node_id
                );
                clear_switchover(consul, account, &id).await;
                return Ok(0);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("kuutamoctl: the switchover did not complete within {timeout:?}");
    clear_switchover(consul, account, &id).await;
    Ok(1)
}

/// When the old leader stepped down, from its status record.
fn released_ms(nodes: &[NodeRecord], old: &str) -> Option<u64> {
    nodes
        .iter()
        .find(|n| n.node_id == old)
        .and_then(|n| n.stepped_down_ms)
}

async fn clear_switchover(consul: &Consul, account: &str, id: &str) {
    let _ = update_control(consul, account, |c| {
        if c.switchover.as_ref().is_some_and(|s| s.id == id) {
            c.switchover = None;
        }
    })
    .await;
}
