//! The operator-command scenarios (17a-h): `kuutamoctl switchover`, `pause` and `resume`
//! racing faults and each other. Each run counts the hand-overs the ledger shows (the changes
//! of the signing node after the first command), compares them with what was asked, checks
//! that `switchover --wait` printed what the run observed (the node validating at the end), and
//! bounds the longest time the account signed nothing.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use super::measure::{longest_silence, RunResult};
use super::run::{World, OBSERVE_AFTER};
use super::{Scenario, Timing};
use crate::cluster::Cluster;
use crate::procs::{now_ms, signal};
use crate::sampler::Sampler;

/// `--timeout` of the switchovers these scenarios request.
const TIMEOUT: &str = "30s";

/// `--timeout` of a switchover that is expected to time out.
const SHORT_TIMEOUT: &str = "8s";

/// Slack for one hand-over beyond the stop grace and neard's boot: the release, the
/// acquisition, the height fence against an exact horizon and the hot swap's reload.
const HANDOVER_SLACK: Duration = Duration::from_secs(1);

/// A kuutamoctl command run in the background: (exit code, output).
type Ctl = JoinHandle<anyhow::Result<(i32, String)>>;

/// Runs `kuutamoctl <args>` on a thread of its own.
fn ctl(cluster: &Cluster, args: &[&str]) -> Ctl {
    let bin = cluster.kuutamoctl_bin.clone();
    let store = cluster.store_env();
    let account = cluster.account.clone();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let out = std::process::Command::new(bin)
            .env_clear()
            .envs(store)
            .env("KUUTAMO_ACCOUNT_ID", account)
            .args(&args)
            .output()
            .context("cannot run kuutamoctl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.code().unwrap_or(-1), text))
    })
}

fn join(c: Ctl) -> anyhow::Result<(i32, String)> {
    c.join()
        .map_err(|_| anyhow::anyhow!("kuutamoctl's thread panicked"))?
}

/// What a scenario expects, and what it ran.
struct Plan {
    /// Hand-overs the ledger must show after `t0`.
    handovers: usize,
    /// `switchover --wait` commands whose report must match the outcome.
    waits: Vec<(i32, String)>,
    /// From when the silence is bounded (default: `t0`).
    silence_from: Option<u64>,
    /// The silence bound beyond one hand-over (a target that does not come: the heartbeat
    /// interval in which the lock is reserved for it).
    extra: Duration,
    /// The leader crashed instead of handing over: the successor's height fence may wait for
    /// its neard to reach the crashed leader's last block (in a hand-over it catches up while
    /// the leader stops), so the bound is at least that promotion plus the slack.
    crashed: bool,
    failures: Vec<String>,
}

impl World {
    /// Runs one operator scenario.
    pub(super) fn operator(
        &mut self,
        scenario: Scenario,
        dir: &Path,
        mode: &str,
        timing: &Timing,
    ) -> anyhow::Result<RunResult> {
        let nodes = if scenario == Scenario::TwoSwitchovers {
            3
        } else {
            2
        };
        let spec = self.spec_of(dir, Self::opts(mode, timing), false, nodes);
        let limit = timing.limit();
        let mut cluster = Cluster::start(spec)?;
        cluster.start_all()?;
        let leader = cluster.wait_steady(limit).context("steady state")?;
        let others: Vec<usize> = (0..nodes).filter(|i| *i != leader).collect();
        let sampler = Sampler::start(&cluster.nodes.iter().map(|n| n.exporter).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_secs(1));
        let t0 = now_ms();
        let plan = act(scenario, &mut cluster, leader, &others, timing)?;
        let recovered = cluster
            .until(limit, "exactly one node validating and signing", || {
                let states = cluster.states();
                let v: Vec<usize> = (0..states.len())
                    .filter(|i| states[*i].as_deref() == Ok("Validating"))
                    .collect();
                match v.as_slice() {
                    [one] if cluster.signed_after(*one, t0) => Ok(*one),
                    _ => Err(states),
                }
            })
            .ok();
        std::thread::sleep(OBSERVE_AFTER);
        let end = now_ms();
        let timelines = sampler.finish();
        cluster.stop_all();
        let report = cluster.report();
        let mut r = RunResult::empty(scenario, mode);
        r.judge(&report, &timelines);
        r.recovered = recovered.is_some();
        r.missed =
            neard_sim::chainlog::missed_assigned(&cluster.chain_log(), &cluster.account, t0, end);
        r.failures = plan.failures;
        // The hand-overs: the changes of the signing node after t0 and before the teardown
        // (stopping the nodes one by one hands the lock over too: with three nodes, the first
        // one stopped may be the leader).
        let mut entries: Vec<_> = report
            .entries
            .iter()
            .filter(|e| e.time_ms > t0 && e.time_ms <= end)
            .collect();
        entries.sort_by_key(|e| e.time_ms);
        let mut signers: Vec<&str> = Vec::new();
        for e in &entries {
            if signers.last() != Some(&e.node.as_str()) {
                signers.push(&e.node);
            }
        }
        let last_before = report
            .entries
            .iter()
            .filter(|e| e.time_ms <= t0)
            .max_by_key(|e| e.time_ms)
            .map(|e| e.node.as_str());
        let mut chain: Vec<&str> = last_before.into_iter().collect();
        for s in &signers {
            if chain.last() != Some(s) {
                chain.push(s);
            }
        }
        let handovers = chain.len().saturating_sub(1);
        r.moved = handovers > 0;
        if handovers != plan.handovers {
            r.failures.push(format!(
                "{handovers} hand-overs ({}), {} asked for",
                chain.join(" -> "),
                plan.handovers
            ));
        }
        // `--wait` reports only what happened: the node validating at the end.
        let last = recovered.map(|i| cluster.nodes[i].id.clone());
        for (code, out) in &plan.waits {
            let said = if *code == 0 {
                out.lines()
                    .find_map(|l| l.strip_prefix("switched over: "))
                    .and_then(|l| l.split(" -> ").nth(1))
                    .and_then(|t| t.split(' ').next())
                    .map(str::to_string)
            } else {
                out.lines()
                    .find_map(|l| l.split("; now ").nth(1))
                    .and_then(|t| t.strip_suffix(" validates"))
                    .map(str::to_string)
            };
            if said.is_none() || said != last {
                r.failures.push(format!(
                    "switchover --wait (exit {code}) said {:?}, but {:?} validates: {}",
                    said,
                    last,
                    out.trim().replace('\n', " / ")
                ));
            }
        }
        // No gap longer than one hand-over (plus the reserve of a target that did not come).
        let from = plan.silence_from.unwrap_or(t0);
        r.silent_ms = longest_silence(&report.entries, from, end);
        let mut bound = timing.stop_grace + timing.boot(mode) + HANDOVER_SLACK + plan.extra;
        if plan.crashed {
            let took = recovered.and_then(|i| cluster.nodes[i].last_activation());
            bound = bound.max(took.unwrap_or_default() + HANDOVER_SLACK);
        }
        r.bound_ms = Some(bound.as_millis() as u64);
        r.bounded_ms = r.silent_ms;
        if let Some(s) = r.silent_ms.filter(|s| *s > bound.as_millis() as u64) {
            r.failures.push(format!(
                "the account signed nothing for {s} ms, longer than one hand-over ({} ms)",
                bound.as_millis()
            ));
        }
        Ok(r)
    }
}

/// Carries out `scenario`'s commands and faults on a steady cluster.
fn act(
    scenario: Scenario,
    cluster: &mut Cluster,
    leader: usize,
    others: &[usize],
    timing: &Timing,
) -> anyhow::Result<Plan> {
    let b = others[0];
    let b_id = cluster.nodes[b].id.clone();
    let mut plan = Plan {
        handovers: 1,
        waits: Vec::new(),
        silence_from: None,
        extra: Duration::ZERO,
        crashed: false,
        failures: Vec::new(),
    };
    let wait = ["--wait", "--timeout", TIMEOUT];
    match scenario {
        // Issue 20, fault 1: without --to the target is chosen now; one hand-over, no bounce.
        Scenario::SwitchoverAny => {
            let w = ctl(cluster, &[&["switchover"], &wait[..]].concat());
            plan.waits.push(join(w)?);
        }
        // Issue 20, fault 3: a pause right after the switchover request must not leave a
        // released lock that nobody may take.
        Scenario::SwitchoverThenPause => {
            let (code, out) = cluster.kuutamoctl(&["switchover", "--to", &b_id])?;
            anyhow::ensure!(code == 0, "switchover: {out}");
            let (code, out) = cluster.kuutamoctl(&["pause"])?;
            if code != 0 && !out.contains("in flight") {
                plan.failures
                    .push(format!("pause exited {code} without saying why: {out}"));
            }
            wait_validating(cluster, b, timing)?;
            if code == 0 {
                cluster.kuutamoctl(&["resume"])?;
            }
        }
        // The leader's neard crashes while its switchover waits for a maintenance window.
        Scenario::SwitchoverCrash => {
            let w = ctl(
                cluster,
                &[&["switchover", "--to", &b_id, "--in-window"], &wait[..]].concat(),
            );
            std::thread::sleep(Duration::from_millis(100));
            let pid = cluster.nodes[leader].neard_pid().context("neard pid")?;
            signal(pid, Signal::SIGKILL);
            plan.waits.push(join(w)?);
            plan.crashed = true;
        }
        // Two switchovers at once, to different targets: one of them is carried out. (In a
        // maintenance window, so that the first is still in flight when the second arrives: a
        // hot swap outside one is over before the second kuutamoctl has started.)
        Scenario::TwoSwitchovers => {
            let c_id = cluster.nodes[others[1]].id.clone();
            let w1 = ctl(
                cluster,
                &[&["switchover", "--in-window", "--to", &b_id], &wait[..]].concat(),
            );
            let w2 = ctl(
                cluster,
                &[&["switchover", "--in-window", "--to", &c_id], &wait[..]].concat(),
            );
            let outs = [join(w1)?, join(w2)?];
            let refused = outs
                .iter()
                .filter(|(c, o)| *c != 0 && o.contains("in flight"))
                .count();
            if refused != 1 {
                plan.failures.push(format!(
                    "of two switchovers at once, {refused} were refused as in flight (1 expected): {outs:?}"
                ));
            }
            plan.waits
                .extend(outs.into_iter().filter(|(_, o)| !o.contains("in flight")));
        }
        // The target dies just before the request (its session and its record still say it
        // is ready): the leader hands over, the lock is the target's for a heartbeat interval,
        // then the leader takes it back; --wait says so.
        Scenario::SwitchoverTargetDies => {
            cluster.nodes[b].kill();
            let w = ctl(
                cluster,
                &[&["switchover", "--to", &b_id], &wait[..]].concat(),
            );
            plan.waits.push(join(w)?);
            plan.handovers = 0;
            plan.extra = timing.heartbeat_interval();
        }
        // SIGUSR1 to the leader and a switchover at once: one hand-over.
        Scenario::SwitchoverAndSigusr1 => {
            let w = ctl(
                cluster,
                &[&["switchover", "--to", &b_id, "--in-window"], &wait[..]].concat(),
            );
            cluster.nodes[leader].signal(Signal::SIGUSR1);
            plan.waits.push(join(w)?);
        }
        // pause and resume while the standby takes over after a crash: the takeover happens
        // by the resume at the latest.
        Scenario::PauseDuringTakeover => {
            let pid = cluster.nodes[leader].neard_pid().context("neard pid")?;
            signal(pid, Signal::SIGKILL);
            let (code, out) = cluster.kuutamoctl(&["pause"])?;
            anyhow::ensure!(code == 0, "pause: {out}");
            std::thread::sleep(timing.ttl);
            let (code, out) = cluster.kuutamoctl(&["resume"])?;
            anyhow::ensure!(code == 0, "resume: {out}");
            // Taken over before the pause landed, or at once after the resume: then a whole
            // takeover of a crashed leader (its horizon stale, neard's boot in restart mode),
            // which may take a TTL more than a planned hand-over.
            plan.silence_from = Some(now_ms());
            plan.extra = timing.ttl;
            wait_validating(cluster, b, timing)?;
        }
        // The target is restarted with priority 0 right after the request (the leader's
        // kuutamod is stopped for that moment, so that it has not handed over before): the
        // leader either hands over to the target's old record and takes the lock back when the
        // target does not come, or waits for a target that is not ready until the request times
        // out. Either way no hand-over, and --wait says so.
        Scenario::SwitchoverPriorityZero => {
            cluster.nodes[leader].signal(Signal::SIGSTOP);
            let w = ctl(
                cluster,
                &[
                    "switchover",
                    "--to",
                    &b_id,
                    "--wait",
                    "--timeout",
                    SHORT_TIMEOUT,
                ],
            );
            let requested =
                cluster.until(timing.limit(), "the switchover request", || {
                    match cluster.kuutamoctl(&["status"]) {
                        Ok((0, out)) if out.contains("in flight") => Ok(()),
                        other => Err(other.map(|(_, o)| o).unwrap_or_default()),
                    }
                });
            cluster.nodes[b].kill();
            cluster.nodes[b].set_env("KUUTAMO_PRIORITY", "0");
            let started = cluster.nodes[b].start();
            cluster.nodes[leader].signal(Signal::SIGCONT);
            requested?;
            started?;
            plan.waits.push(join(w)?);
            plan.handovers = 0;
            plan.extra = timing.heartbeat_interval();
        }
        other => anyhow::bail!("{} is not an operator scenario", other.name()),
    }
    Ok(plan)
}

/// Waits until node `i` validates.
fn wait_validating(cluster: &Cluster, i: usize, timing: &Timing) -> anyhow::Result<()> {
    cluster.wait_state(i, "Validating", timing.limit())
}
