//! One node's handle: starting, signalling, stopping and killing its kuutamod; reading its
//! metrics, state, pids, key file and log; turning its simulator's fault knobs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::consul::{http_get, Agent};
use crate::netns::Host;
use crate::procs::{alive, guard_of, signal, OwnedChild};
use crate::proxy::Proxy;
use crate::wait;

/// One host: its Consul client agent (or, on etcd, the member it talks to), a proxy in front
/// of it, kuutamod and its neard.
pub struct Node {
    /// Node id (also the simulator's ledger id).
    pub id: String,
    /// Where it lives.
    pub host: Host,
    /// Its own Consul client agent (`None` on etcd, where kuutamod talks to a member).
    pub agent: Option<Agent>,
    /// On etcd: the index in the cluster's `servers` of the member it talks to.
    pub member: Option<usize>,
    /// The proxy kuutamod talks through (counts requests, can delay them).
    pub proxy: Proxy,
    /// KUUTAMO_CONSUL_URL (the proxy, on the host's loopback).
    pub consul_url: String,
    /// neard's home.
    pub home: PathBuf,
    /// Exporter address (reachable from the harness).
    pub exporter: SocketAddr,
    /// The simulator's RPC port (on the host's loopback).
    pub rpc_port: u16,
    /// network.addr port as validator.
    pub validator_port: u16,
    /// network.addr port as voter.
    pub voter_port: u16,
    /// kuutamod's log (appended to across restarts).
    pub log: PathBuf,
    pub(super) bin: PathBuf,
    pub(super) env: Vec<(String, String)>,
    /// How far this node's kuutamod's wall clock is off (ms; [`crate::cluster::Spec::node_clock`]):
    /// its log's time stamps are corrected by it.
    pub wall_offset_ms: i64,
    pub(super) child: Option<OwnedChild>,
}

impl Node {
    /// Starts kuutamod (in the host's namespace, if any) as the leader of its own process
    /// group, output appended to the node's log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} already running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match &self.host.netns {
            // `ip netns exec` execs the program: the pid stays kuutamod's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("CREDENTIALS_DIRECTORY")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start kuutamod")?;
        self.child = Some(OwnedChild::new(child));
        Ok(())
    }

    /// kuutamod's pid (also its process group), while it runs.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(OwnedChild::pid)
    }

    /// Sends `sig` to kuutamod.
    pub fn signal(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal(pid, sig);
        }
    }

    /// Sends `sig` to kuutamod's process group (`kill -SIG -<pgid>`).
    pub fn signal_group(&self, sig: Signal) {
        if let Some(pid) = self.pid() {
            signal(-pid, sig);
        }
    }

    /// Whether kuutamod has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(OwnedChild::exited)
    }

    /// Waits for kuutamod to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("kuutamod is not running")?;
        let status = wait::until(limit, "kuutamod to exit", || {
            child.try_status().ok_or("running")
        })?;
        self.child = None;
        Ok(status)
    }

    /// Stops kuutamod gracefully (SIGCONT, SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop();
        }
    }

    /// SIGKILLs kuutamod and forgets it (its neard may live on: that is the point).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }

    /// Sets an environment variable for this node's next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
    }

    /// The Prometheus metrics, as `name{labels}` -> value.
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let body = http_get(&format!("http://{}/metrics", self.exporter))?;
        Ok(parse_metrics(&body))
    }

    /// The sum of every series of metric `name` (all label values), or an error when the
    /// exporter does not answer.
    pub fn metric_sum(&self, name: &str) -> Result<f64, String> {
        let m = self.metrics()?;
        Ok(m.iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum())
    }

    /// The current state (the `kuutamod_state` series that is 1).
    pub fn state(&self) -> Result<String, String> {
        state_of(&self.metrics()?)
    }

    /// pid of the supervised neard (from `/neard-pid`).
    pub fn neard_pid(&self) -> Option<i32> {
        let pid: i32 = http_get(&format!("http://{}/neard-pid", self.exporter))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        alive(pid).then_some(pid)
    }

    /// pid of kuutamod's fencing process (`kuutamod-guard`), if it runs.
    pub fn guard_pid(&self) -> Option<i32> {
        guard_of(self.pid()?)
    }

    /// Whether the validator key file is in neard's home.
    pub fn has_validator_key(&self) -> bool {
        self.home.join("validator_key.json").exists()
    }

    /// Sets the simulator's fault knobs.
    pub fn control(&self, control: &neard_sim::control::Control) -> anyhow::Result<()> {
        control.write(&self.home.join("neard-sim-control.json"))?;
        Ok(())
    }

    /// kuutamod's whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// When (Unix ms, by the line's timestamp, corrected by the node's wall-clock offset)
    /// kuutamod last logged a line containing `needle`.
    pub fn last_logged(&self, needle: &str) -> Option<u64> {
        self.logged(needle).next_back()
    }

    /// When kuutamod last logged a line containing `needle` before `before_ms`.
    pub fn logged_before(&self, needle: &str, before_ms: u64) -> Option<u64> {
        self.logged(needle).rfind(|t| *t < before_ms)
    }

    /// When kuutamod first logged a line containing `needle` at `after_ms` or later.
    pub fn first_logged_after(&self, needle: &str, after_ms: u64) -> Option<u64> {
        self.logged(needle).find(|t| *t >= after_ms)
    }

    /// The (corrected) time stamps of the lines containing `needle`, in order.
    fn logged(&self, needle: &str) -> impl DoubleEndedIterator<Item = u64> {
        let offset = self.wall_offset_ms;
        self.log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| unix_ms(l.split(' ').next()?))
            .filter_map(move |t| u64::try_from(i64::try_from(t).ok()? - offset).ok())
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The last `took` of a line `neard validates with the key <took> after acquiring the
    /// lock`: this node's last promotion, from the lock to the live key (the height fence's
    /// wait and the hot swap or neard's boot).
    pub fn last_activation(&self) -> Option<Duration> {
        let text = self.log_text();
        let line = text
            .lines()
            .rfind(|l| l.contains("neard validates with the key"))?;
        let took = line
            .split("neard validates with the key ")
            .nth(1)?
            .split(' ')
            .next()?;
        debug_duration(took)
    }

    /// The last `n` lines of kuutamod's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<_> = text.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.id,
            lines[lines.len().saturating_sub(n)..].join("\n")
        )
    }
}

/// Parses a `Duration`'s `Debug` form (`3.010087466s`, `8.172588ms`, `312µs`, `40ns`).
pub fn debug_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" | "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Parses Prometheus text into `name{labels}` -> value.
pub fn parse_metrics(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The state whose `kuutamod_state{type=...}` series is 1.
pub fn state_of(m: &BTreeMap<String, f64>) -> Result<String, String> {
    m.iter()
        .find(|(k, v)| k.starts_with("kuutamod_state{") && **v == 1.0)
        .and_then(|(k, _)| k.split('"').nth(1).map(str::to_string))
        .ok_or_else(|| "no state is 1".to_string())
}

/// Unix ms of a log timestamp in RFC 3339 UTC (`2026-11-29T05:16:45.104Z`, any number of
/// fraction digits), as env_logger writes it.
pub fn unix_ms(stamp: &str) -> Option<u64> {
    let (date, time) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days from 1970-01-01 to a Gregorian date, counting years from March so that the leap
    // day is the last day of the year.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from((((days * 24 + h) * 60 + min) * 60 + s) * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::{debug_duration, unix_ms};
    use std::time::Duration;

    #[test]
    fn debug_durations_parse() {
        assert_eq!(debug_duration("3.5s"), Some(Duration::from_millis(3500)));
        assert_eq!(debug_duration("8.25ms"), Some(Duration::from_micros(8250)));
        assert_eq!(debug_duration("312µs"), Some(Duration::from_micros(312)));
        assert_eq!(debug_duration("40ns"), Some(Duration::from_nanos(40)));
        assert_eq!(debug_duration("3 s"), None);
        assert_eq!(debug_duration("fast"), None);
    }

    #[test]
    fn log_timestamps_convert_to_unix_ms() {
        assert_eq!(unix_ms("1970-01-01T00:00:00.000Z"), Some(0));
        // Leap days, a century that is not a leap year, nanosecond fractions.
        assert_eq!(unix_ms("2000-02-29T23:59:59.999Z"), Some(951_868_799_999));
        assert_eq!(unix_ms("2100-03-01T00:00:00Z"), Some(4_107_542_400_000));
        assert_eq!(
            unix_ms("2026-11-29T05:16:45.104000000Z"),
            Some(1_795_929_405_104)
        );
        assert_eq!(unix_ms("2026-11-29 05:16:45"), None);
        assert_eq!(unix_ms("INFO"), None);
    }
}
