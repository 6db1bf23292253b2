//! PromQL as the rules and the dashboard write it: the metric names an expression uses and
//! the label matchers it applies, and the expressions of the rules file and the dashboard.

use std::collections::BTreeSet;

/// One label matcher of a selector: `metric{label op "value"}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Matcher {
    pub(super) metric: String,
    pub(super) label: String,
    pub(super) op: String,
    pub(super) value: String,
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
pub(super) fn scan(expr: &str) -> (BTreeSet<String>, Vec<Matcher>) {
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
pub(super) fn rule_exprs(yaml: &str) -> Vec<String> {
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
pub(super) fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
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
