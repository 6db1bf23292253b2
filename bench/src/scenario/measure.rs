//! What one run measured, its pass/fail bar, and the measures a run takes from the signing
//! ledger (the signing gap) and from the chain log (the longest stall).

use std::path::PathBuf;

use neard_sim::chainlog::{Line, Missed};
use neard_sim::ledger::{Entry, Report};
use serde::Serialize;

use super::Scenario;
use crate::cluster::{resigned_skips, two_node_slots};
use crate::sampler::{two_validators, Timeline};

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Failover mode.
    pub mode: String,
    /// Fault to the first height signed by a node other than the old leader (ms), if the
    /// leadership moved.
    pub takeover_ms: Option<u64>,
    /// Whether a node other than the old leader signed after the fault.
    pub moved: bool,
    /// The signing gap of a moved run: from the old leader's last signature before the new
    /// leader's first to that first signature (ms).
    pub gap_ms: Option<u64>,
    /// What our account was assigned and missed among the heights the chain decided from the
    /// fault to the end of the observation (the chain log).
    pub missed: Missed,
    /// The longest time the chain decided no block from the last block before the fault to
    /// the end of the observation (ms): a stall.
    pub stall_ms: Option<u64>,
    /// Heights at which two nodes signed anything (the oracle's `double_signed`; reported:
    /// an honest hand-over can sign an approval and a block at one height on two nodes).
    pub double_signed: Vec<u64>,
    /// Message slots (kind, height, shard) signed by two nodes (the strict bar; fails).
    pub two_node_slots: usize,
    /// Skips a node signed again after the previous key holder stopped
    /// ([`crate::cluster::resigned_skips`]; reported, as neard does after a restart).
    pub resigned_skips: usize,
    /// Conflicting signatures of our account (the oracle's `conflicting`: the double signing
    /// that is slashed).
    pub conflicting: usize,
    /// Sampled moments with two nodes Validating.
    pub two_validators_seen: usize,
    /// Whether exactly one node validated and signed again after the fault within the limit.
    pub recovered: bool,
    /// The bound the takeover is compared with (ms), where the scenario states one.
    pub bound_ms: Option<u64>,
    /// The takeover measured against [`RunResult::bound_ms`] (ms; for the crash loop: from
    /// the step-down, not from the fault).
    pub bounded_ms: Option<u64>,
    /// Consul's write outage as a client agent saw it (7a-c), ms.
    pub consul_outage_ms: Option<u64>,
    /// The longest time our account signed nothing, from its last signature before the
    /// fault to the end of the observation (ms).
    pub silent_ms: Option<u64>,
    /// neard starts per minute during a crash loop (13d).
    pub neard_starts_per_min: Option<f64>,
    /// Scenario checks that failed (each fails the run).
    pub failures: Vec<String>,
    /// A harness error (setup failed), if any.
    pub error: Option<String>,
    /// Where the run's logs and ledger were kept (runs with a problem only).
    pub kept: Option<PathBuf>,
}

impl RunResult {
    pub(super) fn empty(scenario: Scenario, mode: &str) -> RunResult {
        RunResult {
            scenario: scenario.name().into(),
            mode: mode.into(),
            takeover_ms: None,
            moved: false,
            gap_ms: None,
            missed: Missed::default(),
            stall_ms: None,
            double_signed: Vec::new(),
            two_node_slots: 0,
            resigned_skips: 0,
            conflicting: 0,
            two_validators_seen: 0,
            recovered: false,
            bound_ms: None,
            bounded_ms: None,
            consul_outage_ms: None,
            silent_ms: None,
            neard_starts_per_min: None,
            failures: Vec::new(),
            error: None,
            kept: None,
        }
    }

    /// Records the oracle's verdict on the run's ledger, and the moments two nodes reported
    /// `Validating` at once.
    pub(super) fn judge(&mut self, report: &Report, timelines: &[Timeline]) {
        self.double_signed = report.double_signed.keys().copied().collect();
        self.conflicting = report.conflicting.len();
        self.two_node_slots = two_node_slots(report).len();
        self.resigned_skips = resigned_skips(report).len();
        self.two_validators_seen = two_validators(timelines).len();
    }

    /// The CI bar: no conflicting signature and no message slot signed by two nodes, never
    /// two validators, no harness error, a validator
    /// again after every fault (not stuck), the lock moved where it must, and every scenario
    /// check held (including "the lock did not move" where it must not).
    pub fn passed(&self) -> bool {
        let must_move = Scenario::parse(&self.scenario).is_some_and(Scenario::must_move);
        self.two_node_slots == 0
            && self.conflicting == 0
            && self.two_validators_seen == 0
            && self.error.is_none()
            && self.recovered
            && (self.moved || !must_move)
            && self.failures.is_empty()
    }
}

/// The signing gap after `t0`: from `old`'s last signature before another node's first one
/// to that first signature (ms), if another node signed.
pub fn signing_gap(entries: &[Entry], old: &str, t0: u64) -> Option<u64> {
    let first_new = entries
        .iter()
        .filter(|e| e.node != old && e.time_ms > t0)
        .map(|e| e.time_ms)
        .min()?;
    let last_old = entries
        .iter()
        .filter(|e| e.node == old && e.time_ms <= first_new)
        .map(|e| e.time_ms)
        .max()?;
    Some(first_new - last_old)
}

/// The longest interval in which no node signed anything for our account, counted from the
/// last signature before `from_ms` up to `to_ms` (ms).
pub fn longest_silence(entries: &[Entry], from_ms: u64, to_ms: u64) -> Option<u64> {
    let mut times: Vec<u64> = entries.iter().map(|e| e.time_ms).collect();
    times.sort_unstable();
    let start = times.iter().rev().find(|t| **t <= from_ms).copied()?;
    let mut last = start;
    let mut longest = 0;
    for t in times.into_iter().filter(|t| *t > start && *t <= to_ms) {
        longest = longest.max(t - last);
        last = t;
    }
    Some(longest.max(to_ms.saturating_sub(last)))
}

/// The longest interval without a produced block among the chain's decisions in `[from_ms,
/// to_ms)`, counted from the last block before `from_ms` and up to `to_ms`.
pub fn longest_stall(lines: &[Line], from_ms: u64, to_ms: u64) -> Option<u64> {
    let mut last = lines
        .iter()
        .filter(|l| l.produced && l.time_ms < from_ms)
        .map(|l| l.time_ms)
        .max()?;
    let mut longest = 0;
    for l in lines
        .iter()
        .filter(|l| l.produced && l.time_ms >= from_ms && l.time_ms < to_ms)
    {
        longest = longest.max(l.time_ms.saturating_sub(last));
        last = l.time_ms;
    }
    Some(longest.max(to_ms.saturating_sub(last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(height: u64, time_ms: u64, produced: bool) -> Line {
        Line {
            height,
            time_ms,
            epoch: 0,
            block_producer: "v1".into(),
            produced,
            chunks: Vec::new(),
        }
    }

    #[test]
    fn the_longest_stall_counts_from_the_last_block_before_the_window_to_its_end() {
        let lines = [
            line(1, 100, true),
            line(2, 1000, false),
            line(3, 1000, true),
            line(4, 1100, true),
        ];
        // 100 -> 1000 (900 ms), 1000 -> 1100, then 1100 -> the end at 1500 (400 ms).
        assert_eq!(longest_stall(&lines, 500, 1500), Some(900));
        // Nothing decided after 1100: the stall runs to the end.
        assert_eq!(longest_stall(&lines, 1200, 3000), Some(1900));
        // No block before the window: unknown.
        assert_eq!(longest_stall(&lines, 50, 3000), None);
    }

    fn entry(node: &str, time_ms: u64) -> Entry {
        Entry {
            height: time_ms / 10,
            node: node.into(),
            account: "a".into(),
            public_key: "k".into(),
            time_ms,
            kind: None,
            approval: None,
            shard: None,
            parent_hash: None,
            parent_height: None,
            content: None,
        }
    }

    #[test]
    fn the_account_is_silent_from_its_last_signature_to_its_next_by_any_node() {
        let entries = [
            entry("a", 100),
            entry("a", 200),
            entry("b", 1200),
            entry("a", 1300),
        ];
        // 200 -> 1200 across the fault at 150 (1000 ms), then 1300 -> the end at 1500.
        assert_eq!(longest_silence(&entries, 150, 1500), Some(1000));
        // Nobody signs after 1300: the silence runs to the end.
        assert_eq!(longest_silence(&entries, 1250, 4000), Some(2700));
        // No signature before the window: unknown.
        assert_eq!(longest_silence(&entries, 50, 4000), None);
    }

    #[test]
    fn the_signing_gap_is_the_old_leaders_last_signature_to_the_new_leaders_first() {
        let entries = [
            entry("old", 100),
            entry("old", 200),
            entry("new", 450),
            entry("old", 500),
            entry("new", 600),
        ];
        assert_eq!(signing_gap(&entries, "old", 150), Some(250));
        assert_eq!(signing_gap(&entries, "old", 600), None);
        assert_eq!(signing_gap(&entries, "nobody", 0), None);
    }
}
