//! Each scenario's fault: how it is injected into a steady cluster, held and healed, and what
//! the injection itself observed (Consul's write outage, neard's restarts in a crash loop, a
//! scenario's own checks).

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use neard_sim::control::{Control, StatusMode};
use nix::sys::signal::Signal;

use super::{KillAt, Scenario, Timing};

/// 16g: how late the lagging leader's neard receives the chain: more than kuutamod's
/// comparison of heads resolves (two polls and two heights).
const LAGGING_LEADER_MS: u64 = 3000;
use crate::cluster::Cluster;
use crate::consul::{http_delete, http_put, Agent, START_LIMIT};
use crate::procs::{now_ms, signal};
use crate::wait;

/// How long kuutamoctl's switchover may wait for a maintenance window and the hand-over.
const SWITCHOVER_TIMEOUT: &str = "60s";

/// How long after the step-down deadline the crash-loop scenario keeps its partition: "just
/// longer than the deadline".
const JUST_LONGER: Duration = Duration::from_millis(500);

/// 13e-g: how soon neard must be gone after its guard was SIGKILLed (the kernel's parent-death
/// signal is sent as the guard exits; this only absorbs a loaded machine).
const NEARD_DIES_WITH_GUARD: Duration = Duration::from_millis(500);

/// Most neard starts per minute a crash loop may cause ("a few dozen"; kuutamod's back-off,
/// 1 s doubling to 30 s, gives about six).
pub const MAX_STARTS_PER_MIN: f64 = 30.0;

/// Lifetime of an outsider's session that steals the lock: far longer than any scenario, so
/// the lock only comes back if kuutamod destroys the silent session itself.
const OUTSIDER_SESSION_TTL: &str = "300s";

/// Pause between the harness's Consul write probes during an outage.
const PROBE_PAUSE: Duration = Duration::from_millis(20);

/// Timeout of one write probe: a probe stuck in a paused server is abandoned this soon, so the
/// outage is measured to within about this much.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// What the fault injection itself observed.
#[derive(Default)]
pub(super) struct Observed {
    pub(super) consul_outage_ms: Option<u64>,
    pub(super) neard_starts_per_min: Option<f64>,
    /// (bound, measured) in ms.
    pub(super) bounded: Option<(u64, u64)>,
    pub(super) failures: Vec<String>,
}

/// Resumes whatever a scenario left stopped on the old leader's host, so that stopping the
/// cluster is clean (a host-loss run ends with the host still frozen until here).
pub(super) fn thaw(cluster: &Cluster, leader: usize) {
    cluster.local_store(leader).signal(Signal::SIGCONT);
    cluster.nodes[leader].signal_group(Signal::SIGCONT);
}

/// Probes Consul writes through the agent at `agent_url` (etcd: through the member at
/// `agent_url`, when `etcd`), one after the other from `t0` on; returns when the first of them
/// succeeded (ms after `t0`): the store's write outage as a client agent (or the node's member)
/// sees it, to within [`PROBE_TIMEOUT`].
fn outage_probe(agent_url: String, t0: u64, etcd: bool) -> std::thread::JoinHandle<Option<u64>> {
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .ok()?;
        let limit = now_ms() + 120_000;
        while now_ms() < limit {
            let request = if etcd {
                let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
                client.post(format!("{agent_url}/v3/kv/put")).body(
                    serde_json::json!({"key": b64("kuutamod-bench/probe"), "value": b64("1")})
                        .to_string(),
                )
            } else {
                client
                    .put(format!("{agent_url}/v1/kv/kuutamod-bench/probe"))
                    .body("1")
            };
            let ok = request.send().is_ok_and(|r| r.status().is_success());
            if ok {
                return Some(now_ms() - t0);
            }
            std::thread::sleep(PROBE_PAUSE);
        }
        None
    })
}

/// The leader key's URL on the first live server (an outsider's view).
fn key_url(cluster: &Cluster) -> String {
    format!("{}/v1/kv/{}", cluster.servers.url(), cluster.lock_key())
}

/// An outsider deletes the leader key (on etcd: the record; the holder stays, and without a
/// record there is no lock, as a Consul DELETE takes the session with the key).
fn delete_key(cluster: &Cluster) -> anyhow::Result<()> {
    if cluster.is_etcd() {
        let key = b64(&cluster.lock_key());
        etcd_post(
            cluster,
            "/v3/kv/deleterange",
            serde_json::json!({ "key": key }),
        )?;
    } else {
        http_delete(&key_url(cluster)).map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// Stops and restarts `agent`, waiting until it serves again.
fn restart_agent(agent: &mut Agent, graceful: bool) -> anyhow::Result<()> {
    if graceful {
        agent.terminate()?;
    } else {
        agent.kill();
    }
    agent.launch()?;
    agent.wait_ready(START_LIMIT)
}

/// A steady cluster at the moment of the fault.
pub(super) struct Fault<'a> {
    pub(super) cluster: &'a mut Cluster,
    pub(super) leader: usize,
    pub(super) standby: usize,
    /// When the fault is injected (unix ms).
    pub(super) t0: u64,
    pub(super) timing: &'a Timing,
    pub(super) mode: &'a str,
}

/// Injects `scenario`'s fault into a steady cluster at `t0`, holds it, and heals it.
pub(super) fn inject(scenario: Scenario, f: Fault<'_>) -> anyhow::Result<Observed> {
    let mut seen = Observed::default();
    if scenario == Scenario::CrashLoop {
        crash_loop(&f, &mut seen)?;
        return Ok(seen);
    }
    let (leader, standby, t0, timing) = (f.leader, f.standby, f.t0, f.timing);
    let cluster = f.cluster;
    let limit = timing.limit_of(scenario);
    match scenario {
        Scenario::NeardKill | Scenario::SkipsNeardKill | Scenario::PriorityZero => {
            let pid = cluster.nodes[leader]
                .neard_pid()
                .context("leader's neard pid")?;
            signal(pid, Signal::SIGKILL);
        }
        Scenario::KuutamodTerm => cluster.nodes[leader].signal(Signal::SIGTERM),
        Scenario::KuutamodKill | Scenario::SkipsKuutamodKill => cluster.nodes[leader].kill(),
        Scenario::HandOver => cluster.nodes[leader].signal(Signal::SIGUSR1),
        Scenario::Switchover => {
            let (code, out) = cluster.switchover_in_window(standby, SWITCHOVER_TIMEOUT)?;
            if code != 0 {
                seen.failures.push(format!(
                    "kuutamoctl switchover exited {code}: {}",
                    out.trim()
                ));
            }
        }
        Scenario::PauseNeardKill => pause_neard_kill(cluster, leader, standby, timing, &mut seen)?,
        Scenario::KuutamodStop => {
            cluster.nodes[leader].signal(Signal::SIGSTOP);
            std::thread::sleep(timing.beyond_ttl());
            cluster.nodes[leader].signal(Signal::SIGCONT);
        }
        Scenario::GroupStop => {
            let node = &cluster.nodes[leader];
            let guard = node.guard_pid().context("leader's guard pid")?;
            node.signal_group(Signal::SIGSTOP);
            std::thread::sleep(timing.beyond_ttl());
            if !crate::procs::alive(guard) {
                seen.failures
                    .push("the guard died with kuutamod's process group".into());
            }
            node.signal_group(Signal::SIGCONT);
            if !node.log_text().contains("killed neard") {
                seen.failures
                    .push("no `kuutamod guard: ... killed neard` line in the leader's log".into());
            }
        }
        Scenario::LeaderPartition | Scenario::StandbyPartition => {
            let victim = if scenario == Scenario::LeaderPartition {
                leader
            } else {
                standby
            };
            let node = &cluster.nodes[victim];
            node.host.partition(node.exporter.port())?;
            std::thread::sleep(timing.beyond_ttl());
            node.host.heal()?;
        }
        Scenario::ConsulLeaderKill if cluster.is_etcd() => {
            // etcd: the Raft leader member killed, held beyond a TTL, started again. When it
            // is the leader node's own member, that node has lost its store (the lock must
            // move; no outage is measured); else the outage is what the leader's member saw.
            let l = wait::until(limit, "an etcd leader", || cluster.servers.leader())?;
            let own = cluster.nodes[leader].member == Some(l);
            let probe = (!own)
                .then(|| outage_probe(cluster.local_store(leader).url.clone(), now_ms(), true));
            cluster.servers.agents[l].kill();
            seen.consul_outage_ms = probe.and_then(|p| p.join().ok().flatten());
            std::thread::sleep(timing.beyond_ttl());
            restart_agent(&mut cluster.servers.agents[l], false)?;
        }
        Scenario::ConsulLeaderKill => {
            let l = wait::until(limit, "a Consul leader", || cluster.servers.leader())?;
            let probe = outage_probe(
                cluster.local_store(leader).url.clone(),
                now_ms(),
                cluster.is_etcd(),
            );
            cluster.servers.agents[l].kill();
            seen.consul_outage_ms = probe.join().ok().flatten();
            std::thread::sleep(timing.beyond_ttl());
        }
        Scenario::QuorumLossShort | Scenario::QuorumLossLong => {
            let l = wait::until(limit, "a Consul leader", || cluster.servers.leader())?;
            let paused: Vec<i32> = [l, (l + 1) % 3]
                .iter()
                .filter_map(|i| cluster.servers.agents[*i].pid())
                .collect();
            let start = now_ms();
            for p in &paused {
                signal(*p, Signal::SIGSTOP);
            }
            let probe = outage_probe(
                cluster.local_store(leader).url.clone(),
                start,
                cluster.is_etcd(),
            );
            std::thread::sleep(if scenario == Scenario::QuorumLossShort {
                timing.survivable_outage() / 2
            } else {
                timing.beyond_ttl()
            });
            for p in &paused {
                signal(*p, Signal::SIGCONT);
            }
            seen.consul_outage_ms = probe.join().ok().flatten();
        }
        Scenario::NeardSyncing | Scenario::StatusHang | Scenario::Status503 => {
            let control = match scenario {
                Scenario::NeardSyncing => Control {
                    force_syncing: true,
                    ..Control::default()
                },
                Scenario::StatusHang => Control {
                    status: StatusMode::Hang,
                    ..Control::default()
                },
                _ => Control {
                    status: StatusMode::Error503,
                    ..Control::default()
                },
            };
            cluster.nodes[leader].control(&control)?;
            // Held until another node signs (or the limit): then the sick neard is healed
            // so that it may serve as a standby again.
            let _ = wait::until(limit, "another node to sign", || {
                if cluster.signed_after(standby, t0) {
                    Ok(())
                } else {
                    Err(cluster.states())
                }
            });
            cluster.nodes[leader].control(&Control::default())?;
        }
        Scenario::SlowConsul => {
            // Each direction delayed by 60 % of the renew interval: every request takes
            // longer than the renew interval.
            let delay = timing.heartbeat_interval() * 3 / 5;
            for n in &cluster.nodes {
                n.proxy.set_delay(delay);
            }
            std::thread::sleep(timing.beyond_ttl());
            for n in &cluster.nodes {
                n.proxy.set_delay(Duration::ZERO);
            }
        }
        Scenario::StandbyRestart => {
            let pid = cluster.nodes[leader]
                .neard_pid()
                .context("leader's neard pid")?;
            signal(pid, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(200));
            cluster.nodes[standby].kill();
            cluster.nodes[standby].start()?;
        }
        Scenario::AgentLeave => restart_agent(cluster.local_store_mut(leader), true)?,
        Scenario::AgentKill => restart_agent(cluster.local_store_mut(leader), false)?,
        Scenario::KeyDelete => delete_key(cluster)?,
        Scenario::EtcdCompaction => {
            let status = etcd_post(cluster, "/v3/maintenance/status", serde_json::json!({}))?;
            let revision = status["header"]["revision"].clone();
            etcd_post(
                cluster,
                "/v3/kv/compaction",
                serde_json::json!({"revision": revision, "physical": true}),
            )?;
            // Two TTLs of heartbeats and watches past the compacted revision.
            std::thread::sleep(timing.beyond_ttl());
        }
        Scenario::KeyOverwrite if cluster.is_etcd() => {
            // A plain put of the record: the holder (the leader's lease) stays, as a Consul
            // PUT keeps the key's session.
            let body = serde_json::json!({
                "Hostname": "outsider", "NodeId": "outsider", "Account": cluster.account,
                "Session": "", "Seq": 1u64 << 40, "State": "active", "Horizon": 0,
            });
            etcd_post(
                cluster,
                "/v3/kv/put",
                serde_json::json!({"key": b64(&cluster.lock_key()), "value": b64(&body.to_string())}),
            )?;
        }
        Scenario::KeyOverwrite => {
            let body = serde_json::json!({
                "Hostname": "outsider", "NodeId": "outsider", "Account": cluster.account,
                "Session": "", "Seq": 1u64 << 40, "State": "active", "Horizon": 0,
            });
            http_put(&key_url(cluster), &body.to_string()).map_err(anyhow::Error::msg)?;
        }
        Scenario::KeyStolen if cluster.is_etcd() => {
            steal_key_etcd(cluster).context("the outsider's theft")?
        }
        Scenario::KeyStolen => steal_key(cluster).context("the outsider's theft")?,
        Scenario::HostFreeze | Scenario::HostResume | Scenario::StallHostFreeze => {
            let node = &cluster.nodes[leader];
            let pids = [
                cluster.local_store(leader).pid(),
                node.pid(),
                node.guard_pid(),
                node.neard_pid(),
            ];
            anyhow::ensure!(pids.iter().all(Option::is_some), "host pids: {pids:?}");
            for pid in pids.into_iter().flatten() {
                signal(pid, Signal::SIGSTOP);
            }
            // Held (the host is lost) until the standby signs; 12 resumes it only in `thaw`.
            let _ = wait::until(limit, "the standby to sign", || {
                if cluster.signed_after(standby, t0) {
                    Ok(())
                } else {
                    Err(cluster.states())
                }
            });
            if scenario == Scenario::HostResume {
                for pid in pids.into_iter().rev().flatten() {
                    signal(pid, Signal::SIGCONT);
                }
            }
        }
        Scenario::GuardStop | Scenario::GuardKill => {
            let node = &cluster.nodes[leader];
            let guard = node.guard_pid().context("leader's guard pid")?;
            let sig = if scenario == Scenario::GuardStop {
                Signal::SIGSTOP
            } else {
                Signal::SIGKILL
            };
            signal(guard, sig);
            let replaced = cluster.until(
                limit,
                "the leader to step down and replace its guard",
                || {
                    let step_downs =
                        node.metric_sum("kuutamod_step_downs_total{reason=\"guard_lost\"}")?;
                    match node.guard_pid() {
                        Some(g) if g != guard && step_downs >= 1.0 => Ok(g),
                        other => Err(format!(
                            "guard {other:?}, guard_lost step-downs {step_downs}"
                        )),
                    }
                },
            );
            if let Err(e) = replaced {
                seen.failures
                    .push(format!("{e:#}").lines().next().unwrap_or("").to_string());
            }
            if crate::procs::alive(guard) {
                // kuutamod left the silenced guard behind: not a failure of the fence (the
                // new guard is armed), but worth knowing.
                eprintln!(
                    "note: {}: the old guard (pid {guard}) still exists",
                    scenario.name()
                );
                signal(guard, Signal::SIGKILL);
            }
        }
        Scenario::FreezeGuardKill(at) => freeze_guard_kill(cluster, leader, timing, at, &mut seen)?,
        Scenario::PromotingSyncs => {
            delete_key(cluster)?;
            // The standby takes the absent key (a TTL to wait); its neard syncs from then on.
            wait::until(limit, "the standby to take the lock", || {
                match cluster.nodes[standby].state() {
                    Ok(s) if s == "Promoting" => Ok(()),
                    other => Err(other),
                }
            })?;
            let stuck = now_ms();
            cluster.nodes[standby].control(&Control {
                force_syncing: true,
                ..Control::default()
            })?;
            liveness(
                cluster,
                leader,
                Holder::Silent(standby),
                stuck,
                timing,
                limit,
                &mut seen,
            );
            cluster.nodes[standby].control(&Control::default())?;
        }
        Scenario::FrozenHead => {
            // neard's head stops and it signs nothing; `/status` says it is in sync.
            cluster.nodes[leader].control(&Control {
                stall: true,
                ..Control::default()
            })?;
            liveness(
                cluster,
                standby,
                Holder::Silent(leader),
                t0,
                timing,
                limit,
                &mut seen,
            );
            cluster.nodes[leader].control(&Control::default())?;
        }
        Scenario::LaggingLeader => {
            // neard's head moves, three seconds behind the chain; `/status` says it is in sync.
            // The lag grows in steps of 300 ms every 400 ms, so that the head never stands
            // still for the progress grace (that would be 16b, the frozen head); the bound is
            // measured from the moment the whole lag is reached. (What it signs meanwhile is
            // for heights the chain has left: not counted.)
            for step in 1..=LAGGING_LEADER_MS / 300 {
                cluster.nodes[leader].control(&Control {
                    lag_ms: step * 300,
                    ..Control::default()
                })?;
                std::thread::sleep(Duration::from_millis(400));
            }
            let lagging_from = now_ms();
            liveness(
                cluster,
                standby,
                Holder::Lagging(leader),
                lagging_from,
                timing,
                limit,
                &mut seen,
            );
            cluster.nodes[leader].control(&Control::default())?;
        }
        Scenario::StandbyBehind | Scenario::BehindSlowClock | Scenario::BehindFastClock => {
            cluster.nodes[standby].control(&Control {
                network_offline: true,
                ..Control::default()
            })?;
            // Its head falls behind the chain; then the leader's neard crashes once.
            std::thread::sleep(timing.ttl);
            let pid = cluster.nodes[leader]
                .neard_pid()
                .context("leader's neard pid")?;
            let crash = now_ms();
            signal(pid, Signal::SIGKILL);
            // The stuck standby stops making progress when it takes the lock.
            let took = wait::until(limit, "the stuck standby to take the lock", || {
                cluster.nodes[standby]
                    .first_logged_after("state Voting -> Promoting", crash)
                    .ok_or(())
            })?;
            liveness(
                cluster,
                leader,
                Holder::Silent(standby),
                took,
                timing,
                limit,
                &mut seen,
            );
            cluster.nodes[standby].control(&Control::default())?;
        }
        Scenario::SameNodeId => {
            // Both nodes write one status record: one of them must say so.
            let conflict = "kuutamod_node_id_conflict";
            let seen_by = cluster.until(limit, "a node to report the node id conflict", || {
                (0..cluster.nodes.len())
                    .find(|i| cluster.nodes[*i].metric_sum(conflict) == Ok(1.0))
                    .ok_or_else(|| cluster.states())
            });
            if let Err(e) = seen_by {
                seen.failures
                    .push(format!("{e:#}").lines().next().unwrap_or("").to_string());
            }
            let pid = cluster.nodes[leader]
                .neard_pid()
                .context("leader's neard pid")?;
            signal(pid, Signal::SIGKILL);
        }
        Scenario::CrashLoop
        | Scenario::WrongAccount
        | Scenario::ElectionRace
        | Scenario::SwitchoverAny
        | Scenario::SwitchoverThenPause
        | Scenario::SwitchoverCrash
        | Scenario::TwoSwitchovers
        | Scenario::SwitchoverTargetDies
        | Scenario::SwitchoverAndSigusr1
        | Scenario::PauseDuringTakeover
        | Scenario::SwitchoverPriorityZero
        | Scenario::RestoreStandbyStopped
        | Scenario::RestoreAgentFrozen => {
            anyhow::bail!("{} is run by its own function", scenario.name())
        }
    }
    Ok(seen)
}

/// 13e-g (issue #21): the leader kuutamod's process group SIGSTOPped, its guard SIGKILLed
/// `timing.guard_kill_after(at)` later (before the guard could have acted on its deadline), and
/// SIGCONT 2 x TTL + 1 s after the freeze. With nobody left to act on the host, neard must die
/// with its guard, within [`NEARD_DIES_WITH_GUARD`] (checked). A neard already dead when the
/// guard is killed fails the run too: it would not have tested the double fault.
fn freeze_guard_kill(
    cluster: &Cluster,
    leader: usize,
    timing: &Timing,
    at: KillAt,
    seen: &mut Observed,
) -> anyhow::Result<()> {
    let node = &cluster.nodes[leader];
    let guard = node.guard_pid().context("leader's guard pid")?;
    let neard = node.neard_pid().context("leader's neard pid")?;
    let frozen = std::time::Instant::now();
    node.signal_group(Signal::SIGSTOP);
    std::thread::sleep(timing.guard_kill_after(at));
    if !crate::procs::alive(neard) {
        seen.failures.push(format!(
            "neard (pid {neard}) was gone before the guard was killed ({} ms after the freeze)",
            frozen.elapsed().as_millis()
        ));
    }
    let kill_ms = frozen.elapsed().as_millis();
    signal(guard, Signal::SIGKILL);
    let killed = std::time::Instant::now();
    while crate::procs::alive(neard) && killed.elapsed() < NEARD_DIES_WITH_GUARD {
        std::thread::sleep(Duration::from_millis(1));
    }
    if crate::procs::alive(neard) {
        seen.failures.push(format!(
            "the frozen leader's neard (pid {neard}) outlived its guard by more than {} ms",
            NEARD_DIES_WITH_GUARD.as_millis()
        ));
    } else {
        eprintln!(
            "note: {}: guard killed {kill_ms} ms after the freeze; neard gone {} ms later",
            Scenario::FreezeGuardKill(at).name(),
            killed.elapsed().as_millis()
        );
    }
    std::thread::sleep(timing.beyond_ttl().saturating_sub(frozen.elapsed()));
    node.signal_group(Signal::SIGCONT);
    Ok(())
}

/// The lock holder that stopped making progress in a liveness scenario.
#[derive(Clone, Copy)]
enum Holder {
    /// It signs nothing any more (syncing, frozen, cut off): a signature of it fails the run.
    Silent(usize),
    /// It signs, for heights the chain has left (16g): not counted.
    Lagging(usize),
}

/// The liveness measure of 16a-g: node `ready` must sign again, and a silent `stuck` lock
/// holder, which stopped making progress at `stuck_ms`, never. Measured from `stuck_ms`, or from when
/// `ready` became a ready standby if that was later, to `ready`'s first signature, against
/// [`Timing::liveness_bound`] of `ready`'s own promotion (a run over it fails).
fn liveness(
    cluster: &Cluster,
    ready: usize,
    holder: Holder,
    stuck_ms: u64,
    timing: &Timing,
    limit: Duration,
    seen: &mut Observed,
) {
    let stuck = match holder {
        Holder::Silent(h) | Holder::Lagging(h) => h,
    };
    let Ok(first) = cluster.wait_for_signing(ready, stuck_ms, limit) else {
        seen.failures.push(format!(
            "{} never signed again while {} could not",
            cluster.nodes[ready].id, cluster.nodes[stuck].id
        ));
        return;
    };
    // A knob takes effect at the simulator's next look at its control file: what the stuck
    // node signed before that was signed before the fault.
    let knob = u64::try_from((neard_sim::control::POLL_INTERVAL * 4).as_millis()).unwrap_or(0);
    if matches!(holder, Holder::Silent(_)) && cluster.signed_after(stuck, stuck_ms + knob) {
        seen.failures.push(format!(
            "{}, which could not sign, signed",
            cluster.nodes[stuck].id
        ));
    }
    let node = &cluster.nodes[ready];
    let became_ready = node
        .logged_before("-> Voting", first)
        .filter(|t| *t > stuck_ms);
    let from = became_ready.unwrap_or(stuck_ms);
    let took = node.last_activation().unwrap_or_default();
    let bound = timing.liveness_bound(took).as_millis() as u64;
    let measured = first.saturating_sub(from);
    seen.bounded = Some((bound, measured));
    if measured > bound {
        seen.failures.push(format!(
            "{} signed {measured} ms after the holder stopped making progress{}; bound 1.5 x TTL + its promotion ({took:?}) = {bound} ms",
            node.id,
            if became_ready.is_some() { " (and it was ready)" } else { "" },
        ));
    }
}

/// 15b: `kuutamoctl pause`, then the leader's neard SIGKILLed; for 2 x TTL + 1 s nobody may
/// sign or validate (no takeover, no neard restart); then `kuutamoctl resume`, after which a
/// node must validate again (the run's recovery check).
fn pause_neard_kill(
    cluster: &Cluster,
    leader: usize,
    standby: usize,
    timing: &Timing,
    seen: &mut Observed,
) -> anyhow::Result<()> {
    cluster.pause(timing.limit())?;
    let pid = cluster.nodes[leader]
        .neard_pid()
        .context("leader's neard pid")?;
    let killed = now_ms();
    signal(pid, Signal::SIGKILL);
    std::thread::sleep(timing.beyond_ttl());
    let resumed = now_ms();
    let signed: Vec<String> = cluster
        .entries()
        .iter()
        .filter(|e| e.time_ms > killed && e.time_ms < resumed)
        .map(|e| format!("{} at {}", e.node, e.height))
        .take(5)
        .collect();
    if !signed.is_empty() {
        seen.failures
            .push(format!("signed while paused after the crash: {signed:?}"));
    }
    if cluster.nodes[standby].state().as_deref() == Ok("Validating") {
        seen.failures
            .push("the standby validated while paused".to_string());
    }
    let (code, out) = cluster.kuutamoctl(&["resume"])?;
    anyhow::ensure!(code == 0, "kuutamoctl resume exited {code}: {out}");
    Ok(())
}

/// 11e: one transaction deletes the key and locks it with an outsider's session (created on
/// a server's node, no checks, a TTL longer than the run) that never writes again.
fn steal_key(cluster: &Cluster) -> anyhow::Result<()> {
    let server = cluster.servers.url();
    let body = serde_json::json!({
        "Name": "outsider", "TTL": OUTSIDER_SESSION_TTL, "Behavior": "release",
        "LockDelay": "0s", "NodeChecks": [],
    });
    let created = http_put(&format!("{server}/v1/session/create"), &body.to_string())
        .map_err(anyhow::Error::msg)?;
    let id = serde_json::from_str::<serde_json::Value>(&created)?["ID"]
        .as_str()
        .context("session id")?
        .to_string();
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let key = cluster.lock_key();
    let txn = serde_json::json!([
        {"KV": {"Verb": "delete", "Key": key}},
        {"KV": {"Verb": "lock", "Key": key, "Value": b64("outsider"), "Session": id}},
    ]);
    http_put(&format!("{server}/v1/txn"), &txn.to_string()).map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Base64, as etcd's JSON gateway carries keys and values.
fn b64(v: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

/// A POST to etcd's JSON gateway on the first live member (an outsider's view).
fn etcd_post(
    cluster: &Cluster,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let answer = crate::consul::http_post(
        &format!("{}{path}", cluster.servers.url()),
        &body.to_string(),
    )
    .map_err(anyhow::Error::msg)?;
    Ok(serde_json::from_str(&answer)?)
}

/// 11e on etcd: an outsider's lease takes the lock in one transaction (the record and the
/// holder replaced), then is never kept alive nor written again.
fn steal_key_etcd(cluster: &Cluster) -> anyhow::Result<()> {
    let grant = etcd_post(
        cluster,
        "/v3/lease/grant",
        serde_json::json!({"TTL": "300"}),
    )?;
    let id = grant["ID"].as_str().context("lease id")?.to_string();
    let name = format!("{:016x}", id.parse::<u64>()?);
    let key = cluster.lock_key();
    let holder = format!("{key}/holder");
    let put = |k: &str, v: &str, lease: Option<&str>| {
        let mut p = serde_json::json!({"key": b64(k), "value": b64(v)});
        if let Some(l) = lease {
            p["lease"] = l.into();
        }
        serde_json::json!({"request_put": p})
    };
    etcd_post(
        cluster,
        "/v3/kv/txn",
        serde_json::json!({"success": [put(&key, "outsider", None), put(&holder, &name, Some(&id))]}),
    )?;
    Ok(())
}

/// 13d: the leader's host cut off until just after its lease step-down; from the step-down
/// on, its neard aborts at every start. The standby must sign within 2 x TTL of the step-down
/// (plus a neard boot in restart mode), and the crashing neard must be started at most
/// [`MAX_STARTS_PER_MIN`] times a minute.
fn crash_loop(f: &Fault<'_>, seen: &mut Observed) -> anyhow::Result<()> {
    let cluster: &Cluster = f.cluster;
    let (leader, standby, t0, timing, mode) = (f.leader, f.standby, f.t0, f.timing, f.mode);
    let node = &cluster.nodes[leader];
    let lease_expired = "kuutamod_step_downs_total{reason=\"lease_expired\"}";
    node.host.partition(node.exporter.port())?;
    let step_down = cluster.until(
        timing.limit(),
        "the leader's lease step-down",
        || match node.metric_sum(lease_expired) {
            Ok(v) if v >= 1.0 => Ok((now_ms(), node.metric_sum("kuutamod_neard_restarts")?)),
            other => Err(format!("{other:?}")),
        },
    );
    node.control(&Control {
        abort: true,
        ..Control::default()
    })?;
    let heal_at = t0 + (timing.step_down_after() + JUST_LONGER).as_millis() as u64;
    std::thread::sleep(Duration::from_millis(heal_at.saturating_sub(now_ms())));
    node.host.heal()?;
    let (step_down, restarts0) = step_down?;
    let bound = timing.ttl * 2 + timing.boot(mode);
    match cluster.wait_for_signing(standby, t0, timing.limit()) {
        Ok(first) => {
            seen.bounded = Some((bound.as_millis() as u64, first.saturating_sub(step_down)))
        }
        Err(_) => seen.failures.push("the standby never signed".into()),
    }
    std::thread::sleep(
        timing
            .crash_window
            .saturating_sub(Duration::from_millis(now_ms() - step_down)),
    );
    let restarts1 = node
        .metric_sum("kuutamod_neard_restarts")
        .map_err(anyhow::Error::msg)?;
    let minutes = (now_ms() - step_down) as f64 / 60_000.0;
    let per_min = (restarts1 - restarts0) / minutes;
    seen.neard_starts_per_min = Some(per_min);
    if per_min > MAX_STARTS_PER_MIN {
        seen.failures.push(format!(
            "the crashing neard was started {per_min:.1} times a minute (at most {MAX_STARTS_PER_MIN})"
        ));
    }
    Ok(())
}
