//! The supervisor's background tasks: everything that waits on the network runs here and
//! reports through the event channel, so the main loop never blocks on neard or Consul.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::machine::{Event, KeyShown, Poll, Polling};
use crate::metrics::Metrics;
use crate::neard::rpc::NeardRpc;
use crate::records::NodeRecord;
use crate::store::{Store, StoreError as ConsulError};

/// `wait` of the leader-key blocking query. Long, so an idle standby costs Consul almost
/// nothing; a change (every heartbeat) still wakes it at once.
pub const WATCH_WAIT: Duration = Duration::from_secs(300);
/// Pause after a failed watch query, so an unreachable Consul is not hammered.
pub const WATCH_RETRY: Duration = Duration::from_secs(1);
/// Pause after a blocking query that returned without a change of index (its wait ran out, or
/// Consul woke it spuriously), so a misbehaving Consul cannot turn the watch into a busy loop.
pub const WATCH_IDLE: Duration = Duration::from_millis(100);

/// How often `/metrics` is read when the machine does not ask for it: often enough to follow
/// our account's production within a few blocks, rarely enough to cost neard nothing (its
/// `/metrics` is large).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);

/// An event for the main loop, with the neard pid it concerns (polls of a previous neard are
/// dropped).
#[derive(Debug)]
pub struct Report {
    /// The event.
    pub event: Event,
    /// For polls: the pid of the neard polled.
    pub pid: Option<u32>,
}

/// Unix milliseconds now.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// What the poller polls: the neard pid, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollTarget {
    /// The neard to poll (None: none runs).
    pub pid: Option<u32>,
    /// Rate and metrics.
    pub polling: Polling,
}

/// Polls neard's `/status` (and `/metrics` when asked) forever, one request at a time, at the
/// rate the machine asks for.
pub async fn poll_neard(
    rpc: NeardRpc,
    validator_key: String,
    account: String,
    mut target: watch::Receiver<PollTarget>,
    tx: mpsc::UnboundedSender<Report>,
) {
    let mut version: Option<String> = None;
    let mut metrics_at: Option<std::time::Instant> = None;
    loop {
        let PollTarget { pid, polling } = *target.borrow_and_update();
        if let Some(pid) = pid {
            let event = match rpc.status().await {
                Ok(status) => {
                    let v = status.version.as_ref().map(|v| v.version.clone());
                    if v.is_some() && v != version {
                        version = v.clone();
                        let event = Event::NeardVersion(v.unwrap_or_default());
                        if tx
                            .send(Report {
                                event,
                                pid: Some(pid),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    // /metrics when the machine asks, and every METRICS_INTERVAL for the
                    // production counters (re-exported, and the doppelganger check).
                    let due = metrics_at.is_none_or(|t| t.elapsed() >= METRICS_INTERVAL);
                    let metrics = if polling.metrics || due {
                        metrics_at = Some(std::time::Instant::now());
                        match rpc.metrics(&account).await {
                            Ok(m) => Some(m),
                            Err(e) => {
                                log::debug!("{e}");
                                None
                            }
                        }
                    } else {
                        None
                    };
                    let key = match status.validator_public_key.as_deref() {
                        None => KeyShown::None,
                        Some(k) if k == validator_key => KeyShown::Ours,
                        Some(_) => KeyShown::Other,
                    };
                    Event::Status(Poll {
                        syncing: status.sync_info.syncing,
                        head: status.sync_info.latest_block_height,
                        block_ms: status.sync_info.latest_block_ms(),
                        wall_ms: wall_ms(),
                        key,
                        hot_swap_capable: status.supports_key_hot_swap(),
                        target: metrics.and_then(|m| m.largest_target),
                        reloads: metrics.and_then(|m| m.config_reloads),
                        production: metrics.and_then(|m| m.production),
                    })
                }
                Err(e) => {
                    log::debug!("{e}");
                    Event::StatusFailed
                }
            };
            if tx
                .send(Report {
                    event,
                    pid: Some(pid),
                })
                .is_err()
            {
                return;
            }
        }
        // Sleep the interval, but wake at once when the target changes (a new neard, or a
        // promotion that needs fast polls).
        let _ = tokio::time::timeout(polling.interval, target.changed()).await;
    }
}

/// Watches the leader key with blocking queries and reports every answer (changed or not), so
/// the machine knows both what the key holds and how fresh its knowledge is.
pub async fn watch_leader(
    consul: Store,
    key: String,
    tx: mpsc::UnboundedSender<Report>,
    metrics: Metrics,
) {
    let mut index = 0u64;
    loop {
        let blocking = (index > 0).then_some((index, WATCH_WAIT));
        metrics.consul_requests.with_label_values(&["watch"]).inc();
        match consul.get_key(&key, blocking, false).await {
            Ok((entry, new_index)) => {
                let unchanged = index > 0 && new_index == index;
                // Consul's index can go backwards (a snapshot restore, a new cluster): start
                // over and forget what was seen.
                if new_index < index {
                    index = 0;
                    if tx
                        .send(Report {
                            event: Event::WatchReset,
                            pid: None,
                        })
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                index = new_index;
                let event = Event::KeyObserved {
                    key: entry.map(|e| e.state()),
                    index: new_index,
                };
                if tx.send(Report { event, pid: None }).is_err() {
                    return;
                }
                if unchanged {
                    tokio::time::sleep(WATCH_IDLE).await;
                }
            }
            Err(e) => {
                log::warn!("watching {key}: {e}");
                metrics.consul_up.set(0);
                metrics.consul_errors.with_label_values(&["watch"]).inc();
                if tx
                    .send(Report {
                        event: Event::WatchFailed,
                        pid: None,
                    })
                    .is_err()
                {
                    return;
                }
                index = 0;
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}

/// Watches the account's records (`kuutamod/<account>/`: the control record and every node's
/// status record) and reports the control record and the other nodes' records. Their
/// freshness is the machine's to judge, by when it saw them change: never by the writers' wall
/// clocks. A record of our own node id written by another kuutamod process (`instance`) is a
/// second host with our node id: logged as an error and counted in
/// `kuutamod_node_id_conflict`.
pub async fn watch_cluster(
    consul: Store,
    account: String,
    node_id: String,
    instance: String,
    tx: mpsc::UnboundedSender<Report>,
    metrics: Metrics,
) {
    use crate::records::{control_key, prefix, Control, NodeRecord, OwnId};
    let prefix = prefix(&account);
    let control_key = control_key(&account);
    let mut index = 0u64;
    let mut own = OwnId::default();
    loop {
        let blocking = (index > 0).then_some((index, WATCH_WAIT));
        metrics.consul_requests.with_label_values(&["watch"]).inc();
        match consul.get_prefix(&prefix, blocking).await {
            Ok((entries, new_index)) => {
                let unchanged = index > 0 && new_index == index;
                index = if new_index < index { 0 } else { new_index };
                let mut control = Control::default();
                let mut peers = Vec::new();
                for e in &entries {
                    if e.key == control_key {
                        control = Control::parse(&e.bytes()).unwrap_or_default();
                    } else if let Some(r) = NodeRecord::parse(&e.bytes()) {
                        if r.node_id != node_id {
                            peers.push(r);
                        } else if let Some(host) = own.observe(&r, &instance) {
                            log::error!(
                                "another kuutamod process (host {host}, instance {}) writes the status record of node id {node_id}: \
                                 two hosts run with KUUTAMO_NODE_ID={node_id}; give every host its own node id",
                                r.instance.as_deref().unwrap_or("unknown"),
                            );
                            metrics.node_id_conflict.set(1);
                        }
                    }
                }
                let event = Event::ClusterObserved { control, peers };
                if tx.send(Report { event, pid: None }).is_err() {
                    return;
                }
                if unchanged {
                    tokio::time::sleep(WATCH_IDLE).await;
                }
            }
            Err(e) => {
                log::warn!("watching {prefix}: {e}");
                metrics.consul_errors.with_label_values(&["watch"]).inc();
                index = 0;
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}

/// How many times a switchover's end is tried against a control record that keeps changing.
const FINISH_TRIES: usize = 20;

/// Ends switchover `done.id` in the account's control record: replaces the pending request by
/// its outcome with check-and-set, retrying while the record changes under it (a `pause`, a
/// status of another node); does nothing if the request is no longer there.
pub async fn finish_switchover(
    consul: Store,
    account: String,
    done: crate::records::SwitchoverDone,
    metrics: Metrics,
) {
    use crate::records::{control_key, Control};
    let key = control_key(&account);
    for _ in 0..FINISH_TRIES {
        metrics
            .consul_requests
            .with_label_values(&["publish"])
            .inc();
        let (entry, _) = match consul.get_key(&key, None, true).await {
            Ok(r) => r,
            Err(e) => {
                log::warn!("cannot read {key} to end switchover {}: {e}", done.id);
                tokio::time::sleep(WATCH_RETRY).await;
                continue;
            }
        };
        let Some(entry) = entry else { return };
        let mut control = Control::parse(&entry.bytes()).unwrap_or_default();
        if control.switchover.as_ref().is_none_or(|s| s.id != done.id) {
            return; // ended already (or cancelled)
        }
        control.switchover = None;
        control.done = Some(done.clone());
        let bytes = serde_json::to_vec(&control).unwrap_or_default();
        match consul.put_cas(&key, &bytes, entry.modify_index).await {
            Ok(true) => {
                log::info!(
                    "switchover {} ended: {}{}",
                    done.id,
                    done.outcome,
                    if done.ok { "" } else { " (not as asked)" }
                );
                return;
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!("cannot end switchover {}: {e}", done.id);
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
    log::warn!(
        "gave up ending switchover {} after {FINISH_TRIES} tries: `kuutamoctl switchover --cancel` clears it",
        done.id
    );
}

/// Refuses to start when another host runs a kuutamod with our node id: the status record of
/// our node id names another host, and its Consul session is alive. Consul unreachable or no
/// record: nothing to say here (the cluster watch notices a conflict later).
pub async fn check_node_id(
    consul: &Store,
    account: &str,
    node_id: &str,
    hostname: &str,
) -> anyhow::Result<()> {
    let key = crate::records::node_key(account, node_id);
    let Ok((Some(entry), _)) = consul.get_key(&key, None, false).await else {
        return Ok(());
    };
    let Some(record) = NodeRecord::parse(&entry.bytes()) else {
        return Ok(());
    };
    let Some(session) = record
        .session
        .as_deref()
        .filter(|_| record.hostname != hostname)
    else {
        return Ok(());
    };
    if let Ok(Some(_)) = consul.session_info(session).await {
        anyhow::bail!(
            "host {} already runs a kuutamod with KUUTAMO_NODE_ID={node_id} (its Consul session {session} is alive): \
             give every host its own node id",
            record.hostname
        );
    }
    Ok(())
}

/// Writes this node's status record (`kuutamod/<account>/nodes/<node>`): one PUT at a time,
/// always the newest record. Two PUTs of one key in flight at once may reach Consul in either
/// order, and the older one landing last would show a stale record (a ready standby shown not
/// ready, so `kuutamoctl switchover` refuses it) until the next change. A failed write is
/// retried every [`WATCH_RETRY`] with the newest record, also after the sender is gone (the
/// caller bounds that wait). Ends when the sender is dropped and the last record is written.
pub async fn publish_records(
    consul: Store,
    key: String,
    mut records: watch::Receiver<Option<NodeRecord>>,
    metrics: Metrics,
) {
    let mut failing = false;
    while records.changed().await.is_ok() {
        loop {
            let newest = records.borrow_and_update().clone();
            let Some(record) = newest else { break };
            metrics
                .consul_requests
                .with_label_values(&["publish"])
                .inc();
            match consul.put(&key, &record.to_bytes()).await {
                Ok(()) => {
                    if failing {
                        log::info!("this node's status record is published again");
                    }
                    failing = false;
                    break;
                }
                Err(e) => {
                    if !failing {
                        log::warn!("cannot publish this node's status record (retrying): {e}");
                    }
                    failing = true;
                    tokio::time::sleep(WATCH_RETRY).await;
                }
            }
        }
    }
}

/// Whether an error means Consul gave no usable answer (as opposed to a refusal).
fn is_failure(e: &ConsulError) -> bool {
    !matches!(
        e,
        ConsulError::SessionGone(_) | ConsulError::Rejected { .. }
    )
}

/// Sends `event` to the main loop (it only fails when the loop is gone).
fn report(tx: &mpsc::UnboundedSender<Report>, event: Event) {
    let _ = tx.send(Report { event, pid: None });
}

/// Runs one Consul request of the machine in its own task.
pub fn consul_request(
    consul: Store,
    key: String,
    cmd: crate::machine::Command,
    ttl: Duration,
    node_id: String,
    metrics: Metrics,
    tx: mpsc::UnboundedSender<Report>,
) {
    use crate::machine::Command as C;
    tokio::spawn(async move {
        let count = |op: &str| metrics.consul_requests.with_label_values(&[op]).inc();
        let started = std::time::Instant::now();
        let op = match &cmd {
            C::CreateSession => "create",
            C::Renew(_) => "renew",
            C::Heartbeat { .. } => "heartbeat",
            C::Acquire { .. } => "acquire",
            C::Release { .. } => "release",
            C::DestroySession(_) => "destroy",
            C::ReadKey => "read",
            _ => "other",
        };
        // Whether Consul gave a usable answer (a refusal or a gone session is one).
        let answered = |ok: bool| {
            metrics
                .consul_latency
                .with_label_values(&[op])
                .observe(started.elapsed().as_secs_f64());
            metrics.consul_up.set(i64::from(ok));
            if !ok {
                metrics.consul_errors.with_label_values(&[op]).inc();
            }
        };
        match cmd {
            C::CreateSession => {
                count("create");
                let r = consul.create_session(&node_id, ttl).await;
                answered(r.is_ok());
                match r {
                    Ok(id) => {
                        log::info!("created Consul session {id}");
                        report(&tx, Event::SessionCreated(id));
                    }
                    Err(e) => {
                        log::warn!("cannot create a Consul session: {e}");
                        report(&tx, Event::SessionCreateFailed);
                    }
                }
            }
            C::Renew(session) => {
                count("renew");
                let r = consul.renew(&session).await;
                answered(!matches!(r, Err(ref e) if is_failure(e)));
                match r {
                    Ok(()) => report(&tx, Event::Renewed { session }),
                    Err(ConsulError::SessionGone(id)) => {
                        log::warn!("Consul session {id} is gone");
                        report(&tx, Event::SessionGone(id));
                    }
                    Err(e) => {
                        log::warn!("renewing the Consul session failed: {e}");
                        report(&tx, Event::RenewFailed { session });
                    }
                }
            }
            C::Heartbeat {
                session,
                expected_index,
                value,
                seq,
            } => {
                count("heartbeat");
                let sent = clock::now();
                let r = consul
                    .check_and_lock(&key, Some(expected_index), &session, &value)
                    .await;
                answered(!matches!(r, Err(ref e) if is_failure(e)));
                match r {
                    Ok(index) => report(&tx, Event::HeartbeatAcked { seq, sent, index }),
                    Err(ConsulError::SessionGone(id)) => report(&tx, Event::SessionGone(id)),
                    Err(ConsulError::Rejected { what, .. }) => {
                        log::warn!("heartbeat refused: {what}");
                        report(&tx, Event::HeartbeatRejected);
                    }
                    Err(e) => {
                        log::warn!("heartbeat failed: {e}");
                        report(&tx, Event::HeartbeatFailed);
                    }
                }
            }
            C::Acquire {
                session,
                expected_index,
                value,
            } => {
                count("acquire");
                let sent = clock::now();
                let r = consul
                    .check_and_lock(&key, expected_index, &session, &value)
                    .await;
                answered(!matches!(r, Err(ref e) if is_failure(e)));
                match r {
                    Ok(index) => report(&tx, Event::Acquired { sent, index }),
                    Err(ConsulError::SessionGone(id)) => {
                        report(&tx, Event::AcquireRejected);
                        report(&tx, Event::SessionGone(id));
                    }
                    Err(ConsulError::Rejected { what, .. }) => {
                        log::info!("acquiring {key} refused: {what}");
                        report(&tx, Event::AcquireRejected);
                    }
                    Err(e) => {
                        log::warn!("acquiring {key} failed: {e}");
                        report(&tx, Event::AcquireFailed);
                    }
                }
            }
            C::Release {
                session,
                expected_index,
                value,
            } => {
                count("release");
                let r = consul.release(&key, expected_index, &session, &value).await;
                answered(r.is_ok());
                match r {
                    Ok(released) => {
                        if released {
                            log::info!("released {key}");
                        }
                        report(&tx, Event::Released(released));
                    }
                    Err(e) => {
                        log::warn!("releasing {key} failed: {e}");
                        report(&tx, Event::ReleaseFailed);
                    }
                }
            }
            C::DestroySession(session) => {
                count("destroy");
                let r = consul.destroy_session(&session).await;
                answered(r.is_ok());
                let ok = match r {
                    Ok(()) => {
                        log::info!("destroyed Consul session {session}");
                        true
                    }
                    Err(e) => {
                        log::warn!("cannot destroy Consul session {session} ({e})");
                        false
                    }
                };
                report(&tx, Event::Destroyed { session, ok });
            }
            C::ReadKey => {
                count("read");
                let r = consul.get_key(&key, None, true).await;
                answered(r.is_ok());
                match r {
                    Ok((entry, index)) => report(
                        &tx,
                        Event::KeyObserved {
                            key: entry.map(|e| e.state()),
                            index,
                        },
                    ),
                    Err(e) => {
                        log::warn!("reading {key} failed: {e}");
                        report(&tx, Event::ReadFailed);
                    }
                }
            }
            other => log::error!("not a Consul request: {other:?}"),
        }
    });
}

#[cfg(test)]
mod tests;
