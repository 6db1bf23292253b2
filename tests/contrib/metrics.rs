//! Prometheus text against what contrib uses: the names and label values the rules and the
//! dashboard use, the names kuutamod exports and neard's listed ones, what is missing, and the
//! readings of a scrape the test waits on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::promql::{dashboard_exprs, rule_exprs, scan, Matcher};
use super::{read, repo, PROMETHEUS_BUILTIN};

/// What the rules and the dashboard use, each name with where it is used.
pub(super) struct Used {
    pub(super) names: BTreeMap<String, BTreeSet<String>>,
    pub(super) matchers: BTreeSet<Matcher>,
}

pub(super) fn used_by_contrib() -> Used {
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
pub(super) fn exported_names(text: &str) -> BTreeSet<String> {
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
pub(super) fn neard_list() -> BTreeSet<String> {
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
pub(super) fn missing(used: &Used, kuutamod: &BTreeSet<String>) -> Vec<String> {
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
pub(super) fn bad_label_values(used: &Used, kuutamod_text: &str) -> Vec<String> {
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

/// `kuutamod_state` of a scrape, the state whose value is 1.
pub(super) fn state_of(metrics: &str) -> Option<String> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("kuutamod_state{type=\"")?;
        let (state, value) = rest.split_once("\"} ")?;
        (value.trim() == "1").then(|| state.to_string())
    })
}

/// The value of an unlabelled sample, or of the first series whose line starts with `prefix`.
pub(super) fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(prefix)?
            .trim()
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    })
}
