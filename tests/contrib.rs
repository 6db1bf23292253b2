//! Checks of the operator files in `contrib/` against the real programs.
//!
//! - Every metric that the Prometheus rules (`contrib/prometheus/kuutamod-alerts.yml`) and the
//!   Grafana dashboard (`contrib/grafana/kuutamod.json`) name is exported by a running kuutamod,
//!   or is one of neard's metrics listed in `contrib/neard-metrics.txt`, or Prometheus' own
//!   `up`. Label values the rules match on (`type`, `reason`, `op`, `kind`) exist too.
//! - The Consul ACL policies in `contrib/consul/` are enough: kuutamod runs against a Consul with
//!   ACLs on (default deny) holding only a token of `kuutamod-policy.hcl`, takes the lock,
//!   validates, hands over and takes it again; `kuutamoctl` works with a token of
//!   `kuutamoctl-policy.hcl`.
//!
//! Real parts only: a Consul dev agent, the kuutamod and kuutamoctl binaries, and the neard
//! simulator that kuutamod supervises. `promtool check/test rules` run in `scripts/check-contrib`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kuutamod_bench::procs::{free_port, kuutamod_bin, neard_sim_bin};

/// The validator account of the test.
const ACCOUNT: &str = "pool.near";

/// Consul node name of the dev agent; the policies' `@CONSUL_NODE_PREFIX@` is its prefix.
const CONSUL_NODE: &str = "contrib-test-0";
const CONSUL_NODE_PREFIX: &str = "contrib-test-";

/// The ACL bootstrap token of the dev agent (`acl.tokens.master`).
const MASTER_TOKEN: &str = "b0a5c9d2-2f5e-4f1a-9a59-0e0c6c1e7a11";

/// How long Consul, kuutamod and the simulator may take for each step. Generous: these are
/// bounds on a 2-core machine shared with builds, not timing claims.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// How often the waits poll.
const POLL: Duration = Duration::from_millis(100);

/// Metrics that Prometheus itself makes for every target.
const PROMETHEUS_BUILTIN: &[&str] = &["up"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// PromQL: metric names and label matchers
// ---------------------------------------------------------------------------------------------

/// One label matcher of a selector: `metric{label op "value"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Matcher {
    metric: String,
    label: String,
    op: String,
    value: String,
}

/// Aggregation operators and keywords: identifiers that are never metric names.
const NOT_METRICS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression selects, and the label matchers of its selectors. A small
/// scanner, not a PromQL parser: it skips strings, `[...]` ranges, label lists after
/// `by`/`on`/..., function and aggregation names (an identifier followed by `(`), numbers and
/// Grafana variables (`$name`); what is left are metric names.
fn scan(expr: &str) -> (BTreeSet<String>, Vec<Matcher>) {
    let s: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut matchers = Vec::new();
    let mut i = 0;
    let next_non_space = |mut j: usize| {
        while j < s.len() && s[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_to = |j: usize, close: char| {
        let mut k = j;
        while k < s.len() && s[k] != close {
            if s[k] == '"' || s[k] == '\'' || s[k] == '`' {
                let q = s[k];
                k += 1;
                while k < s.len() && s[k] != q {
                    k += if s[k] == '\\' { 2 } else { 1 };
                }
            }
            k += 1;
        }
        k + 1
    };
    let mut last_metric: Option<String> = None;
    while i < s.len() {
        let c = s[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut k = i + 1;
            while k < s.len() && s[k] != c {
                k += if s[k] == '\\' { 2 } else { 1 };
            }
            i = k + 1;
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '{' {
            let end = skip_to(i, '}');
            let body: String = s[i + 1..end.saturating_sub(1).max(i + 1)].iter().collect();
            if let Some(metric) = last_metric.take() {
                matchers.extend(parse_matchers(&metric, &body));
            }
            i = end;
        } else if c == '$' {
            i += 1;
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < s.len() && (s[i].is_alphanumeric() || s[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '_' || s[i] == ':') {
                i += 1;
            }
            let ident: String = s[start..i].iter().collect();
            let j = next_non_space(i);
            let followed_by_paren = s.get(j) == Some(&'(');
            if LABEL_LISTS.contains(&ident.as_str()) {
                if followed_by_paren {
                    i = skip_to(j, ')');
                }
                last_metric = None;
            } else if NOT_METRICS.contains(&ident.to_lowercase().as_str()) || followed_by_paren {
                last_metric = None;
            } else {
                names.insert(ident.clone());
                last_metric = Some(ident);
                continue;
            }
        } else {
            i += 1;
        }
    }
    (names, matchers)
}

/// Parses `label op "value", ...` of one selector.
fn parse_matchers(metric: &str, body: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let Some(op_at) = rest.find(['=', '!']) else {
            break;
        };
        let label = rest[..op_at].trim().to_string();
        let after = &rest[op_at..];
        let op_len =
            if after.starts_with("=~") || after.starts_with("!~") || after.starts_with("!=") {
                2
            } else {
                1
            };
        let op = after[..op_len].to_string();
        let after = after[op_len..].trim_start();
        let Some(q) = after.chars().next() else {
            break;
        };
        let Some(end) = after[1..].find(q) else {
            break;
        };
        out.push(Matcher {
            metric: metric.to_string(),
            label,
            op,
            value: after[1..1 + end].to_string(),
        });
        rest = after[end + 2..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

/// The `expr` of every rule. The rules file keeps each `expr` on one line or in a `|` block
/// (its header says so); the count is checked against the rules so none is missed.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let own = indent(line);
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > own)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join(" ").trim().to_string());
        } else {
            exprs.push(rest.trim_matches(|c| c == '"' || c == '\'').to_string());
        }
    }
    let rules = lines
        .iter()
        .filter(|l| {
            let t = l.trim_start();
            t.starts_with("- alert:") || t.starts_with("- record:")
        })
        .count();
    assert_eq!(
        exprs.len(),
        rules,
        "the rules file has {rules} rules but {} `expr:` lines were read; keep each expr on one line or in a `|` block",
        exprs.len()
    );
    exprs
}

/// Every PromQL expression of the dashboard: panel targets' `expr`, and template variable
/// queries (`label_values(<selector>, <label>)`).
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        ("definition" | "query", serde_json::Value::String(q))
                            if q.starts_with("label_values(") =>
                        {
                            let inner = &q["label_values(".len()..q.len() - 1];
                            let selector = inner.rsplit_once(',').map_or(inner, |(s, _)| s);
                            out.push(selector.to_string());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// What the rules and the dashboard use, each name with where it is used.
struct Used {
    names: BTreeMap<String, BTreeSet<String>>,
    matchers: BTreeSet<Matcher>,
}

fn used_by_contrib() -> Used {
    let mut used = Used {
        names: BTreeMap::new(),
        matchers: BTreeSet::new(),
    };
    let rules_path = "contrib/prometheus/kuutamod-alerts.yml";
    let dash_path = "contrib/grafana/kuutamod.json";
    let rules = rule_exprs(&read(&repo().join(rules_path)));
    let dashboard: serde_json::Value = serde_json::from_str(&read(&repo().join(dash_path)))
        .unwrap_or_else(|e| panic!("{dash_path} is not valid JSON: {e}"));
    let dash = dashboard_exprs(&dashboard);
    assert!(rules.len() >= 10, "only {} rules found", rules.len());
    assert!(
        dash.len() >= 10,
        "only {} dashboard queries found",
        dash.len()
    );
    for (file, exprs) in [(rules_path, rules), (dash_path, dash)] {
        for e in exprs {
            let (names, matchers) = scan(&e);
            assert!(!names.is_empty(), "{file}: no metric found in `{e}`");
            for n in names {
                used.names.entry(n).or_default().insert(file.to_string());
            }
            used.matchers.extend(matchers);
        }
    }
    used
}

/// Metric names in Prometheus text (`# HELP`/`# TYPE` lines and samples; histogram series
/// `_bucket`, `_sum`, `_count` count as names of their own, as PromQL sees them).
fn exported_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// Values of `label` on `metric` in Prometheus text.
fn label_values(text: &str, metric: &str, label: &str) -> BTreeSet<String> {
    let key = format!("{label}=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(metric)?.strip_prefix('{'))
        .filter_map(|l| {
            let at = l.find(&key)? + key.len();
            Some(l[at..].split('"').next()?.to_string())
        })
        .collect()
}

/// The neard metric names that the rules and dashboard may use.
fn neard_list() -> BTreeSet<String> {
    read(&repo().join("contrib/neard-metrics.txt"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Every Rust source text of the daemon, to look up label values it writes.
fn daemon_sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push_str(&read(&p));
            }
        }
    }
    let mut out = String::new();
    walk(&repo().join("src"), &mut out);
    out
}

/// Names used by contrib that are not exported: returns (name, where used, why) for each.
fn missing(used: &Used, kuutamod: &BTreeSet<String>) -> Vec<String> {
    let listed = neard_list();
    let mut out = Vec::new();
    for (name, files) in &used.names {
        let files = files.iter().cloned().collect::<Vec<_>>().join(", ");
        if PROMETHEUS_BUILTIN.contains(&name.as_str()) || kuutamod.contains(name) {
            continue;
        }
        if name.starts_with("near_") {
            if !listed.contains(name) {
                out.push(format!(
                    "{name} (in {files}): a neard metric not listed in contrib/neard-metrics.txt"
                ));
            }
            continue;
        }
        out.push(format!(
            "{name} (in {files}): not exported by the running kuutamod"
        ));
    }
    out
}

/// Label values used by the rules and dashboard that do not exist: `type` against the states
/// kuutamod exports, `reason`, `op` and `kind` against the string literals in `src/`.
fn bad_label_values(used: &Used, kuutamod_text: &str) -> Vec<String> {
    let states = label_values(kuutamod_text, "kuutamod_state", "type");
    let sources = daemon_sources();
    let mut out = Vec::new();
    for m in &used.matchers {
        if !m.metric.starts_with("kuutamod_") || !matches!(m.op.as_str(), "=" | "=~") {
            continue;
        }
        let values: Vec<&str> = if m.op == "=~" {
            m.value.split('|').collect()
        } else {
            vec![m.value.as_str()]
        };
        for v in values {
            let ok = match m.label.as_str() {
                "type" => states.contains(v),
                "reason" | "op" | "kind" => sources.contains(&format!("\"{v}\"")),
                _ => true,
            };
            if !ok {
                out.push(format!(
                    "{}{{{}{}\"{}\"}}: no such {} value",
                    m.metric, m.label, m.op, m.value, m.label
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process killed (SIGKILL) and reaped on drop, even when the test panics.
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, what: &str, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            child,
            what: what.into(),
            log: log.into(),
        }
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits")
    }

    /// Panics with the log's tail when the process has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "{} exited ({status}); its log ends:\n{}",
                self.what,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

/// Polls `f` until it returns `Some`, or panics after `limit` with `what` and the last
/// observation.
fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last = String::from("nothing observed yet");
    while start.elapsed() < limit {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(POLL);
    }
    panic!("timed out after {limit:?} waiting for {what}; last: {last}");
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

fn get(url: &str) -> Result<String, String> {
    let resp = http().get(url).send().map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body = resp.text().map_err(|e| format!("{url}: {e}"))?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{url}: {status} {body}"))
    }
}

/// A Consul dev agent with ACLs on (default deny), on ports chosen for this test.
struct Consul {
    url: String,
    proc: Proc,
}

impl Consul {
    fn start(dir: &Path) -> Consul {
        let consul = kuutamod_bench::consul::consul_bin().expect("consul binary");
        let acl = format!(
            "acl {{ enabled = true, default_policy = \"deny\", down_policy = \"extend-cache\", \
             tokens {{ master = \"{MASTER_TOKEN}\", agent = \"{MASTER_TOKEN}\" }} }}"
        );
        // Retry on a port clash: the ports are free when picked, not reserved.
        for attempt in 0..3 {
            let http_port = free_port();
            let mut cmd = Command::new(&consul);
            cmd.arg("agent")
                .arg("-dev")
                .arg(format!("-node={CONSUL_NODE}"))
                .args(["-bind=127.0.0.1", "-client=127.0.0.1"])
                .arg(format!("-http-port={http_port}"))
                .arg(format!("-serf-lan-port={}", free_port()))
                .arg(format!("-serf-wan-port={}", free_port()))
                .arg(format!("-server-port={}", free_port()))
                .args(["-dns-port=-1", "-grpc-port=-1", "-log-level=warn"])
                .args(["-hcl", "session_ttl_min = \"1s\""])
                .args(["-hcl", &acl]);
            let log = dir.join(format!("consul-{attempt}.log"));
            let mut proc = Proc::spawn(cmd, "consul", &log);
            let url = format!("http://127.0.0.1:{http_port}");
            let start = Instant::now();
            while start.elapsed() < STEP_LIMIT {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                // Ready when the ACL system answers to the master token.
                let ok = http()
                    .get(format!("{url}/v1/acl/token/self"))
                    .header("X-Consul-Token", MASTER_TOKEN)
                    .send()
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    return Consul { url, proc };
                }
                std::thread::sleep(POLL);
            }
            proc.assert_running();
        }
        panic!(
            "Consul did not start in 3 attempts (logs in {})",
            dir.display()
        );
    }

    /// Creates a policy from a contrib file with its placeholders filled in, and a token
    /// holding only that policy. Returns the token's secret.
    fn token_for(&self, policy_file: &str, name: &str) -> String {
        let rules = read(&repo().join(policy_file))
            .replace("@ACCOUNT_ID@", ACCOUNT)
            .replace("@NODE_ID@", "node-a")
            .replace("@CONSUL_NODE_PREFIX@", CONSUL_NODE_PREFIX)
            .replace("@CONSUL_NODE@", CONSUL_NODE);
        assert!(!rules.contains('@'), "{policy_file}: a placeholder is left");
        let put = |path: &str, body: serde_json::Value| -> serde_json::Value {
            let resp = http()
                .put(format!("{}{path}", self.url))
                .header("X-Consul-Token", MASTER_TOKEN)
                .body(body.to_string())
                .send()
                .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
            let status = resp.status();
            let text = resp.text().unwrap_or_default();
            assert!(status.is_success(), "PUT {path}: {status} {text}");
            serde_json::from_str(&text).expect("Consul answers JSON")
        };
        put(
            "/v1/acl/policy",
            serde_json::json!({"Name": name, "Rules": rules}),
        );
        let token = put(
            "/v1/acl/token",
            serde_json::json!({"Description": name, "Policies": [{"Name": name}]}),
        );
        token["SecretID"]
            .as_str()
            .expect("a token has a SecretID")
            .to_string()
    }
}

/// The test's directory, kept after the test when `CONTRIB_TEST_KEEP` is set (for its logs).
fn scopeguard(dir: tempfile::TempDir) -> Kept {
    Kept(Some(dir))
}

/// See [`scopeguard`].
struct Kept(Option<tempfile::TempDir>);

impl Kept {
    fn path(&self) -> &Path {
        self.0.as_ref().expect("dir").path()
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        if std::env::var_os("CONTRIB_TEST_KEEP").is_some() {
            if let Some(d) = self.0.take() {
                let _ = d.keep();
            }
        }
    }
}

/// Runs `neard-sim --home <home> init` for a localnet home with a validator key for ACCOUNT.
fn sim_init(home: &Path) {
    let out = Command::new(neard_sim_bin())
        .arg("--home")
        .arg(home)
        .args(["init", "--chain-id", "localnet", "--account-id", ACCOUNT])
        .output()
        .expect("cannot run neard-sim");
    assert!(
        out.status.success(),
        "neard-sim init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kuutamod_state` of a scrape, the state whose value is 1.
fn state_of(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("kuutamod_state{type=\"")?;
        let (state, value) = rest.split_once("\"} ")?;
        (value.trim() == "1").then(|| state.to_string())
    })
}

/// The value of an unlabelled sample, or of the first series whose line starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(prefix)?
            .trim()
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn the_scanner_finds_metrics_and_matchers() {
    let (names, matchers) = scan(
        r#"sum by (validator) (kuutamod_state{job="kuutamod", type="Validating"}) > 1
           or on (validator) histogram_quantile(0.9, sum by (le) (rate(kuutamod_failover_duration_seconds_bucket{validator=~"$validator"}[$__range])))
           and ignoring (type) up{job="x"} offset 5m unless label_replace(near_sync_status, "a", "$1", "b", "(.*)") * 1e3"#,
    );
    let want: BTreeSet<String> = [
        "kuutamod_state",
        "kuutamod_failover_duration_seconds_bucket",
        "up",
        "near_sync_status",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
    assert!(matchers.contains(&Matcher {
        metric: "kuutamod_state".into(),
        label: "type".into(),
        op: "=".into(),
        value: "Validating".into(),
    }));
    let (names, matchers) =
        scan(r#"increase(kuutamod_step_downs_total{reason=~"lease_expired|key_lost"}[15m]) > 0"#);
    assert_eq!(names.len(), 1);
    assert_eq!(matchers[0].value, "lease_expired|key_lost");
    assert_eq!(matchers[0].op, "=~");
}

#[test]
fn the_rules_reader_reads_every_expr() {
    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: a_metric > 1\n        for: 1m\n      - alert: B\n        expr: |\n          b_metric\n            or c_metric\n        labels: {}\n";
    assert_eq!(
        rule_exprs(yaml),
        vec!["a_metric > 1", "b_metric or c_metric"]
    );
}

/// Starts one kuutamod (hot swap, simulator) against a Consul with ACLs on and only the
/// shipped policy's token, drives it through a promotion that falls back to a restart, a
/// hand-over and a second promotion (so that its event counters exist), then compares what it
/// exports with every metric the rules and dashboard use.
#[test]
fn every_metric_in_the_rules_and_dashboard_is_exported_and_the_acl_policies_suffice() {
    let used = used_by_contrib();
    let dir = tempfile::tempdir().expect("tempdir");
    if std::env::var_os("CONTRIB_TEST_KEEP").is_some() {
        eprintln!("keeping {}", dir.path().display());
    }
    let dir = scopeguard(dir);
    let mut consul = Consul::start(dir.path());
    let kuutamod_token = consul.token_for("contrib/consul/kuutamod-policy.hcl", "kuutamod-node-a");
    let ctl_token = consul.token_for("contrib/consul/kuutamoctl-policy.hcl", "kuutamoctl");

    // neard's home and the keys, as docs/operations.md lays them out.
    let home = dir.path().join("neard");
    let keys = dir.path().join("keys");
    sim_init(&home);
    std::fs::create_dir_all(&keys).expect("keys dir");
    std::fs::rename(
        home.join("validator_key.json"),
        keys.join("validator_key.json"),
    )
    .expect("move the validator key out of neard's home");
    std::fs::copy(home.join("node_key.json"), keys.join("voter_node_key.json"))
        .expect("voter node key");
    let rpc_port = free_port();
    let config_path = home.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&read(&config_path)).expect("config.json is JSON");
    config["rpc"]["addr"] = format!("127.0.0.1:{rpc_port}").into();
    std::fs::write(&config_path, config.to_string()).expect("write config.json");
    // The first promotion's hot swap cannot be confirmed (the simulator ignores SIGHUP), so
    // kuutamod falls back to a restart: kuutamod_hot_swap_fallbacks_total appears.
    let control = home.join("neard-sim-control.json");
    std::fs::write(&control, r#"{"ignore_sighup": true}"#).expect("control file");

    let exporter: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let mut cmd = Command::new(kuutamod_bin());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("KUUTAMO_NODE_ID", "node-a")
        .env("KUUTAMO_CONSUL_URL", &consul.url)
        .env("KUUTAMO_CONSUL_TOKEN", &kuutamod_token)
        .env("KUUTAMO_EXPORTER_ADDRESS", exporter.to_string())
        .env("KUUTAMO_VALIDATOR_KEY", keys.join("validator_key.json"))
        .env("KUUTAMO_VOTER_NODE_KEY", keys.join("voter_node_key.json"))
        .env("KUUTAMO_NEARD_HOME", &home)
        .env("KUUTAMO_NEARD_BIN", neard_sim_bin())
        .env(
            "KUUTAMO_VOTER_NETWORK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env(
            "KUUTAMO_VALIDATOR_NETWORK_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("KUUTAMO_SESSION_TTL", "3s")
        .env("KUUTAMO_NEARD_STOP_GRACE", "1s")
        .env("NEARD_SIM_BOOT_DELAY_MS", "200");
    let mut kuutamod = Proc::spawn(cmd, "kuutamod", &dir.path().join("kuutamod.log"));
    let metrics_url = format!("http://{exporter}/metrics");
    let scrape = |kuutamod: &mut Proc| {
        kuutamod.assert_running();
        get(&metrics_url)
    };

    // Validating with the key confirmed live (kuutamod_state says Validating from the moment
    // the key is handed over; a SIGUSR1 before the promotion is complete is not acted on).
    until(
        STEP_LIMIT,
        "kuutamod to validate after a hot-swap fallback",
        || {
            let m = scrape(&mut kuutamod)?;
            let promotions = sample(&m, "kuutamod_failover_duration_seconds_count").unwrap_or(0.0);
            let fallbacks = m.contains("kuutamod_hot_swap_fallbacks_total{");
            match (state_of(&m).as_deref(), promotions >= 1.0, fallbacks) {
                (Some("Validating"), true, true) => Ok(()),
                (s, p, f) => Err(format!("state {s:?}, promoted {p}, fallback counted {f}")),
            }
        },
    );
    // A hand-over with SIGHUP working again; with no other node, the same node takes the lock
    // back after its hold-off: kuutamod_step_downs_total appears, the promotion count grows.
    std::fs::remove_file(&control).expect("remove the control file");
    signal(kuutamod.pid(), nix::sys::signal::Signal::SIGUSR1);
    until(STEP_LIMIT, "the hand-over and a second promotion", || {
        let m = scrape(&mut kuutamod)?;
        let promotions = sample(&m, "kuutamod_failover_duration_seconds_count").unwrap_or(0.0);
        let hand_overs = sample(&m, "kuutamod_step_downs_total{reason=\"hand_over\"}");
        match (state_of(&m).as_deref(), hand_overs, promotions >= 2.0) {
            (Some("Validating"), Some(_), true) => Ok(()),
            (s, h, p) => Err(format!("state {s:?}, hand-overs {h:?}, two promotions {p}")),
        }
    });

    // kuutamoctl with the operator's token only: read, pause, resume.
    let ctl = |args: &[&str]| {
        let out = Command::new(kuutamod_bench::procs::workspace_bin(
            "kuutamoctl",
            "KUUTAMOCTL_BIN",
        ))
        .args(args)
        .env_clear()
        .env("KUUTAMO_CONSUL_URL", &consul.url)
        .env("KUUTAMO_CONSUL_TOKEN", &ctl_token)
        .env("KUUTAMO_ACCOUNT_ID", ACCOUNT)
        .output()
        .expect("run kuutamoctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for args in [
        &["active-validator"][..],
        &["status"][..],
        &["pause"][..],
        &["resume"][..],
    ] {
        let (code, out) = ctl(args);
        assert_eq!(
            code,
            Some(0),
            "kuutamoctl {args:?} with the kuutamoctl policy: {out}"
        );
    }
    let (_, out) = ctl(&["active-validator"]);
    assert!(out.contains("node-a"), "kuutamoctl names the leader: {out}");

    // kuutamod may be restarting neard at this moment (a hot swap it could not confirm falls
    // back to a restart), so the simulator's metrics are polled, not read once.
    let sim_metrics = format!("http://127.0.0.1:{rpc_port}/metrics");
    let sim = until(STEP_LIMIT, "the simulator's metrics", || {
        kuutamod.assert_running();
        get(&sim_metrics)
    });
    // The simulator exports our account's production (`near_validators_*`, as real neard
    // does), so every `kuutamod_validator_*` series the rules and dashboard use must be there.
    for kind in ["blocks", "chunks"] {
        for what in ["produced", "expected"] {
            let series = format!("near_validators_{kind}_{what}{{account_id=\"{ACCOUNT}\"");
            assert!(sim.contains(&series), "the simulator lacks {series}: {sim}");
        }
    }
    until(
        STEP_LIMIT,
        "kuutamod to re-export our account's production",
        || {
            let m = scrape(&mut kuutamod)?;
            m.contains("kuutamod_validator_kickout_margin{")
                .then_some(())
                .ok_or_else(|| "no kuutamod_validator_kickout_margin yet".to_string())
        },
    );
    // Consul goes away: kuutamod_consul_up drops to 0 and kuutamod_consul_errors_total{op}
    // appears (it has no series before the first error).
    let _ = consul.proc.child.kill();
    let _ = consul.proc.child.wait();
    let text = until(STEP_LIMIT, "kuutamod to count Consul errors", || {
        let m = scrape(&mut kuutamod)?;
        let errors = m.contains("kuutamod_consul_errors_total{");
        let down = sample(&m, "kuutamod_consul_up") == Some(0.0);
        if errors && down {
            Ok(m)
        } else {
            Err(format!("errors counted {errors}, consul_up 0 {down}"))
        }
    });
    let exported = exported_names(&text);
    let sim_names = exported_names(&sim);

    let missing_names = missing(&used, &exported);
    let bad_values = bad_label_values(&used, &text);
    for name in neard_list() {
        eprintln!(
            "neard metric {name}: {}",
            if sim_names.contains(&name) {
                "exported by the simulator too"
            } else {
                "not exported by the simulator (real neard does)"
            }
        );
    }
    assert!(
        missing_names.is_empty() && bad_values.is_empty(),
        "contrib uses metrics or label values that do not exist:\n  {}\nkuutamod exported: {:?}",
        missing_names
            .iter()
            .chain(&bad_values)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        exported
    );

    // The check itself must be able to fail: a made-up name in a rule is reported.
    let mut wrong = Used {
        names: used.names.clone(),
        matchers: BTreeSet::new(),
    };
    wrong.names.insert(
        "kuutamod_validators_total".into(),
        ["a rule".to_string()].into(),
    );
    wrong
        .names
        .insert("near_no_such_metric".into(), ["a panel".to_string()].into());
    let reported = missing(&wrong, &exported);
    assert_eq!(reported.len(), 2, "{reported:?}");
}
