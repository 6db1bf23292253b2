//! Aggregation of runs into the benchmark table (printed) and the JSON file.

use serde::Serialize;

use crate::scenario::RunResult;

/// One row: a scenario in one mode over all its runs.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Failover mode.
    pub mode: String,
    /// Runs (for the election race: repetitions).
    pub runs: usize,
    /// Runs in which another node took over.
    pub moved: usize,
    /// Takeover percentiles over the runs that moved (ms); for the election race, start to
    /// the first signed height.
    pub takeover_p50_ms: Option<u64>,
    /// Median signing gap over the runs that moved (ms): the old leader's last signature to
    /// the new leader's first.
    pub gap_p50_ms: Option<u64>,
    /// 95th percentile (nearest rank).
    pub takeover_p95_ms: Option<u64>,
    /// Maximum.
    pub takeover_max_ms: Option<u64>,
    /// Blocks assigned to our account among the heights decided from the fault to the end of
    /// the observation (the chain log), summed over runs.
    pub blocks_expected: u64,
    /// Of those, skipped.
    pub blocks_missed: u64,
    /// Chunks charged to our account in the same window, summed over runs.
    pub chunks_expected: u64,
    /// Of those, not included.
    pub chunks_missed: u64,
    /// Conflicting signatures of our account, summed over runs. The bar is zero.
    pub conflicting: usize,
    /// Heights at which two nodes signed anything, summed over runs (reported).
    pub double_signed: usize,
    /// Message slots signed by two nodes, summed over runs. The bar is zero.
    pub two_node_slots: usize,
    /// Skips re-signed by the next key holder after the previous one stopped, summed over
    /// runs (reported).
    pub resigned_skips: usize,
    /// The longest time without a block on the chain after the fault, largest over the runs
    /// (ms).
    pub stall_max_ms: Option<u64>,
    /// Sampled moments with two validators, summed over runs.
    pub two_validators_seen: usize,
    /// Runs in which no node signed again within the limit.
    pub stuck: usize,
    /// Runs that failed in the harness.
    pub errors: usize,
    /// The bound stated for the takeover (ms), if any (the largest over the runs).
    pub bound_ms: Option<u64>,
    /// The largest takeover measured against the bound (ms).
    pub bounded_max_ms: Option<u64>,
    /// Consul's write outage (7a-c), largest over the runs (ms).
    pub consul_outage_max_ms: Option<u64>,
    /// The longest time our account signed nothing after the fault, largest over the runs
    /// (ms).
    pub silent_max_ms: Option<u64>,
    /// neard starts per minute in a crash loop (13d), largest over the runs.
    pub neard_starts_per_min_max: Option<f64>,
    /// Every scenario check that failed, over the runs.
    pub failures: Vec<String>,
    /// Runs that failed the bar ([`RunResult::passed`]): any of the above, or a lock that
    /// stayed with a leader that had to give it up.
    pub failed_runs: usize,
}

impl Row {
    /// The CI bar for this row.
    pub fn passed(&self) -> bool {
        self.failed_runs == 0
    }
}

/// Nearest-rank percentile of sorted `v`.
pub fn percentile(v: &[u64], p: f64) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

/// Groups runs by (scenario, mode), in first-seen order.
pub fn rows(runs: &[RunResult]) -> Vec<Row> {
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in runs {
        let k = (r.scenario.clone(), r.mode.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(scenario, mode)| {
            let rs: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.scenario == scenario && r.mode == mode)
                .collect();
            let mut t: Vec<u64> = rs.iter().filter_map(|r| r.takeover_ms).collect();
            t.sort_unstable();
            Row {
                runs: rs.len(),
                moved: rs.iter().filter(|r| r.moved).count(),
                takeover_p50_ms: percentile(&t, 50.0),
                gap_p50_ms: {
                    let mut g: Vec<u64> = rs.iter().filter_map(|r| r.gap_ms).collect();
                    g.sort_unstable();
                    percentile(&g, 50.0)
                },
                takeover_p95_ms: percentile(&t, 95.0),
                takeover_max_ms: t.last().copied(),
                blocks_expected: rs.iter().map(|r| r.missed.blocks_expected).sum(),
                blocks_missed: rs.iter().map(|r| r.missed.blocks_missed).sum(),
                chunks_expected: rs.iter().map(|r| r.missed.chunks_expected).sum(),
                chunks_missed: rs.iter().map(|r| r.missed.chunks_missed).sum(),
                conflicting: rs.iter().map(|r| r.conflicting).sum(),
                stall_max_ms: rs.iter().filter_map(|r| r.stall_ms).max(),
                double_signed: rs.iter().map(|r| r.double_signed.len()).sum(),
                two_node_slots: rs.iter().map(|r| r.two_node_slots).sum(),
                resigned_skips: rs.iter().map(|r| r.resigned_skips).sum(),
                two_validators_seen: rs.iter().map(|r| r.two_validators_seen).sum(),
                stuck: rs
                    .iter()
                    .filter(|r| !r.recovered && r.error.is_none())
                    .count(),
                errors: rs.iter().filter(|r| r.error.is_some()).count(),
                failed_runs: rs.iter().filter(|r| !r.passed()).count(),
                bound_ms: rs.iter().filter_map(|r| r.bound_ms).max(),
                bounded_max_ms: rs.iter().filter_map(|r| r.bounded_ms).max(),
                consul_outage_max_ms: rs.iter().filter_map(|r| r.consul_outage_ms).max(),
                silent_max_ms: rs.iter().filter_map(|r| r.silent_ms).max(),
                neard_starts_per_min_max: rs
                    .iter()
                    .filter_map(|r| r.neard_starts_per_min)
                    .reduce(f64::max),
                failures: rs.iter().flat_map(|r| r.failures.clone()).collect(),
                scenario,
                mode,
            }
        })
        .collect()
}

/// A pause of the chain worth a note: ten heights at the sped-up timers' ~60 ms.
const STALL_NOTE_MS: u64 = 600;

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// The row's scenario-specific figures, in words.
fn notes(r: &Row) -> String {
    let mut out = Vec::new();
    if let (Some(b), Some(m)) = (r.bound_ms, r.bounded_max_ms) {
        let verdict = if m <= b { "within" } else { "OVER" };
        out.push(format!("bound {b} ms: max {m} ms, {verdict}"));
    }
    if let Some(o) = r.consul_outage_max_ms {
        out.push(format!("Consul outage max {o} ms"));
    }
    if let Some(s) = r.silent_max_ms.filter(|s| *s >= STALL_NOTE_MS) {
        out.push(format!("account silent for up to {s} ms"));
    }
    if let Some(s) = r.stall_max_ms.filter(|s| *s >= STALL_NOTE_MS) {
        out.push(format!("chain without a block for up to {s} ms"));
    }
    if let Some(s) = r.neard_starts_per_min_max {
        out.push(format!("neard starts {s:.1}/min"));
    }
    let mut failures = r.failures.clone();
    failures.dedup();
    for f in failures.iter().take(2) {
        out.push(format!("FAILED: {}", f.replace('|', "/")));
    }
    out.join("; ")
}

/// The table as printed (Markdown, so it pastes into the docs).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | mode | runs | moved | takeover p50 ms | p95 ms | max ms | signing gap p50 ms | missed blocks | missed chunks | conflicting | slots signed twice | skips re-signed | heights signed twice | two validators seen | stuck | errors | failed | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {}/{} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.mode,
            r.runs,
            r.moved,
            ms(r.takeover_p50_ms),
            ms(r.takeover_p95_ms),
            ms(r.takeover_max_ms),
            ms(r.gap_p50_ms),
            r.blocks_missed,
            r.blocks_expected,
            r.chunks_missed,
            r.chunks_expected,
            r.conflicting,
            r.two_node_slots,
            r.resigned_skips,
            r.double_signed,
            r.two_validators_seen,
            r.stuck,
            r.errors,
            r.failed_runs,
            notes(r)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), Some(10));
        assert_eq!(percentile(&v, 95.0), Some(19));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
