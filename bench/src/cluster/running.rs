//! What tests and scenarios ask of a started cluster: waits on the nodes' states, the signing
//! ledger and the oracle's verdict, the chain log and its control file, `kuutamoctl`, and
//! stopping everything (with what a killed kuutamod left behind).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use super::{check_report, tail, Cluster, Node, LOG_LINES};
use crate::procs::{now_ms, signal, KUUTAMOD_GUARD_ARGV0};
use crate::wait;

impl Cluster {
    /// The chain process's socket (`NEARD_SIM_CHAIN` of every node).
    pub fn chain_socket(&self) -> PathBuf {
        self.chain_dir.join(neard_sim::chaind::SOCKET_FILE)
    }

    /// What the chain decided so far, one line per height (empty before the first).
    pub fn chain_log(&self) -> Vec<neard_sim::chainlog::Line> {
        neard_sim::chainlog::read(&self.chain_dir.join(neard_sim::chainlog::FILE))
            .unwrap_or_default()
    }

    /// What our account was assigned and missed among the heights the chain decided in
    /// `[from_ms, to_ms)`.
    pub fn missed_assigned(&self, from_ms: u64, to_ms: u64) -> neard_sim::chainlog::Missed {
        neard_sim::chainlog::missed_assigned(&self.chain_log(), &self.account, from_ms, to_ms)
    }

    /// The chain's highest decided height and whether a block was produced there.
    pub fn chain_head(&self) -> Option<u64> {
        self.chain_log()
            .iter()
            .filter(|l| l.produced)
            .map(|l| l.height)
            .max()
    }

    /// Takes the named virtual validators offline (they sign nothing; the others back online).
    pub fn set_offline(&self, validators: &[&str]) -> anyhow::Result<()> {
        neard_sim::control::ChainControl {
            offline: validators.iter().map(|v| v.to_string()).collect(),
        }
        .write(&self.chain_dir.join(neard_sim::control::CHAIN_FILE))?;
        Ok(())
    }

    /// Runs `kuutamoctl <args>` against the first live Consul server for the cluster's
    /// account; returns its exit code and its output (stdout, then stderr).
    pub fn kuutamoctl(&self, args: &[&str]) -> anyhow::Result<(i32, String)> {
        let out = Command::new(&self.kuutamoctl_bin)
            .env_clear()
            .envs(self.store_env())
            .env("KUUTAMO_ACCOUNT_ID", &self.account)
            .args(args)
            .output()
            .context("cannot run kuutamoctl")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((out.status.code().unwrap_or(-1), text))
    }

    /// The lock-store process node `i` talks to: its Consul client agent, or its etcd member.
    pub fn local_store(&self, i: usize) -> &crate::consul::Agent {
        let n = &self.nodes[i];
        match (&n.agent, n.member) {
            (Some(a), _) => a,
            (None, Some(m)) => &self.servers.agents[m],
            (None, None) => unreachable!("every node has an agent or a member"),
        }
    }

    /// [`Cluster::local_store`], to stop or start it.
    pub fn local_store_mut(&mut self, i: usize) -> &mut crate::consul::Agent {
        let m = self.nodes[i].member;
        match m {
            Some(m) => &mut self.servers.agents[m],
            None => self.nodes[i]
                .agent
                .as_mut()
                .expect("every node has an agent or a member"),
        }
    }

    /// Whether the lock store is etcd.
    pub fn is_etcd(&self) -> bool {
        self.servers
            .agents
            .first()
            .is_some_and(|a| a.spec.is_etcd())
    }

    /// The environment that points kuutamoctl (from the root namespace) at this cluster's lock
    /// store: Consul's first live server, or etcd's first live member.
    pub fn store_env(&self) -> Vec<(&'static str, String)> {
        if self.is_etcd() {
            vec![
                ("KUUTAMO_LOCK_BACKEND", "etcd".into()),
                ("KUUTAMO_ETCD_ENDPOINTS", self.servers.url()),
            ]
        } else {
            vec![("KUUTAMO_CONSUL_URL", self.servers.url())]
        }
    }

    /// `kuutamoctl switchover --to <node i> --in-window --wait --timeout <timeout>`: a planned
    /// hand-over in a maintenance window of our account; returns kuutamoctl's exit code and
    /// output.
    pub fn switchover_in_window(&self, i: usize, timeout: &str) -> anyhow::Result<(i32, String)> {
        let to = self.nodes[i].id.clone();
        self.kuutamoctl(&[
            "switchover",
            "--to",
            &to,
            "--in-window",
            "--wait",
            "--timeout",
            timeout,
        ])
    }

    /// `kuutamoctl pause`, then waits until every node reports `kuutamod_paused` 1.
    pub fn pause(&self, limit: Duration) -> anyhow::Result<()> {
        let (code, out) = self.kuutamoctl(&["pause"])?;
        anyhow::ensure!(code == 0, "kuutamoctl pause exited {code}: {out}");
        self.until(limit, "every node to see the pause", || {
            let paused: Vec<Result<f64, String>> = self
                .nodes
                .iter()
                .map(|n| n.metric_sum("kuutamod_paused"))
                .collect();
            if paused.iter().all(|p| p.as_ref() == Ok(&1.0)) {
                Ok(())
            } else {
                Err(paused)
            }
        })
    }

    /// The Consul key of the lock (`kuutamod-leader/<account>`).
    pub fn lock_key(&self) -> String {
        format!("kuutamod-leader/{}", self.account)
    }

    /// Starts every node.
    pub fn start_all(&mut self) -> anyhow::Result<()> {
        for n in &mut self.nodes {
            n.start()?;
        }
        Ok(())
    }

    /// Each node's state (`Err` text when the exporter does not answer).
    pub fn states(&self) -> Vec<Result<String, String>> {
        self.nodes.iter().map(Node::state).collect()
    }

    /// Each node's state, for messages.
    pub fn describe(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}={}", n.id, n.state().unwrap_or_else(|e| e)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Polls like [`wait::until`]; a timeout's error carries the tail of every node's log.
    pub fn until<T, E: std::fmt::Debug>(
        &self,
        limit: Duration,
        what: &str,
        probe: impl FnMut() -> Result<T, E>,
    ) -> anyhow::Result<T> {
        wait::until(limit, what, probe).with_context(|| self.logs(LOG_LINES))
    }

    /// Waits until exactly one node is Validating, it signs, and all others are Voting;
    /// returns the leader's index.
    pub fn wait_steady(&self, limit: Duration) -> anyhow::Result<usize> {
        let since = now_ms();
        self.until(limit, "one signing leader, the others Voting", || {
            let states = self.states();
            let leaders: Vec<usize> = (0..states.len())
                .filter(|i| states[*i].as_deref() == Ok("Validating"))
                .collect();
            let voting = states
                .iter()
                .filter(|s| s.as_deref() == Ok("Voting"))
                .count();
            match leaders.as_slice() {
                [one] if voting + 1 == states.len() && self.signed_after(*one, since) => Ok(*one),
                _ => Err(states),
            }
        })
    }

    /// Waits until exactly one node is Validating and returns its index.
    pub fn wait_for_leader(&self, limit: Duration) -> anyhow::Result<usize> {
        self.until(limit, "exactly one node in Validating", || {
            let states = self.states();
            let leaders: Vec<usize> = (0..states.len())
                .filter(|i| states[*i].as_deref() == Ok("Validating"))
                .collect();
            match leaders.as_slice() {
                [one] => Ok(*one),
                _ => Err(states),
            }
        })
    }

    /// Waits until node `i` signs a height after `after_ms`; returns that signature's time.
    pub fn wait_for_signing(
        &self,
        i: usize,
        after_ms: u64,
        limit: Duration,
    ) -> anyhow::Result<u64> {
        let id = self.nodes[i].id.clone();
        self.until(limit, &format!("{id} to sign a height"), || {
            self.first_signed_after(i, after_ms)
                .ok_or_else(|| self.describe())
        })
    }

    /// Waits until node `i` is in state `want`.
    pub fn wait_state(&self, i: usize, want: &str, limit: Duration) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        self.until(limit, &format!("{} to be {want}", node.id), || {
            match node.state() {
                Ok(s) if s == want => Ok(()),
                other => Err(other),
            }
        })
    }

    /// Whether node `i` signed a height after `after_ms`.
    pub fn signed_after(&self, i: usize, after_ms: u64) -> bool {
        self.first_signed_after(i, after_ms).is_some()
    }

    /// Time of node `i`'s first signature after `after_ms`.
    pub fn first_signed_after(&self, i: usize, after_ms: u64) -> Option<u64> {
        let id = &self.nodes[i].id;
        self.entries()
            .iter()
            .filter(|e| &e.node == id && e.time_ms > after_ms)
            .map(|e| e.time_ms)
            .min()
    }

    /// Time of node `i`'s last signature.
    pub fn last_signed(&self, i: usize) -> Option<u64> {
        let id = &self.nodes[i].id;
        self.entries()
            .iter()
            .filter(|e| &e.node == id)
            .map(|e| e.time_ms)
            .max()
    }

    /// All ledger entries so far (empty before the first signature).
    pub fn entries(&self) -> Vec<neard_sim::ledger::Entry> {
        if !self.ledger.exists() {
            return Vec::new();
        }
        neard_sim::ledger::read(&self.ledger).unwrap_or_default()
    }

    /// The oracle's verdict on the ledger.
    pub fn report(&self) -> neard_sim::ledger::Report {
        neard_sim::ledger::analyze(&self.entries(), &self.account)
    }

    /// Fails on any conflicting signature of our account (two different blocks at a height,
    /// two different chunks at a height and shard, an endorsement and another approval for
    /// one target: the double signing that is slashed), and on any message slot signed by two
    /// nodes (the strict bar: two key holders signing one message, even identically;
    /// [`two_node_slots`](super::two_node_slots)).
    pub fn check_no_double_signing(&self) -> anyhow::Result<()> {
        check_report(&self.report()).with_context(|| self.logs(LOG_LINES))
    }

    /// Fails unless node `old` signed for the last time before `first_new` (the new leader's
    /// first signature): the old leader stopped before the new one began.
    pub fn check_stopped_before(&self, old: usize, first_new: u64) -> anyhow::Result<()> {
        let last_old = self
            .last_signed(old)
            .context("the old leader never signed")?;
        anyhow::ensure!(
            last_old < first_new,
            "old leader signed at {last_old}, new at {first_new}"
        );
        Ok(())
    }

    /// Stops every node (kuutamod gracefully, then any neard left behind), then the further
    /// processes (the chain last, SIGTERM: it closes its log).
    pub fn stop_all(&mut self) {
        for n in &mut self.nodes {
            n.stop();
        }
        self.kill_orphans();
        for (_, c) in self.aux.iter_mut().rev() {
            c.stop();
        }
    }

    /// Kills what a node's kuutamod left behind (a SIGKILLed supervisor's neard, a frozen
    /// host's guard and neard): neard-sim processes whose command line names a node's home, and
    /// `kuutamod-guard` processes whose environment does. SIGKILL only: a stopped process must
    /// not run (and sign) again on its way out.
    pub fn kill_orphans(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        let homes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.home.to_string_lossy().into_owned())
            .collect();
        for entry in procs.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            let ours = if cmd.starts_with(KUUTAMOD_GUARD_ARGV0) {
                let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                let env = String::from_utf8_lossy(&env);
                homes.iter().any(|h| {
                    env.split('\0')
                        .any(|kv| kv == format!("KUUTAMO_NEARD_HOME={h}"))
                })
            } else {
                cmd.contains("neard-sim") && homes.iter().any(|h| cmd.contains(h.as_str()))
            };
            if ours {
                signal(pid, Signal::SIGKILL);
            }
        }
    }

    /// The tails of every node's log and of the chain's.
    pub fn logs(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| n.log_tail(lines))
            .chain([format!(
                "--- chain ---\n{}",
                tail(&self.dir.join("chain.log"), lines)
            )])
            .collect::<Vec<_>>()
            .join("\n")
    }
}
