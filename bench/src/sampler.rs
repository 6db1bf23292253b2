//! The second oracle: one thread per node polls its `/metrics` and records its state over
//! time; afterwards, any sampled moment at which two nodes were `Validating` is reported.
//!
//! A moment counts only when the other node's samples just before *and* just after it were
//! both `Validating`, so sampling skew during a clean hand-over cannot produce a false alarm.
//! A node whose exporter does not answer (a paused kuutamod) is unknown, not Validating: the
//! ledger is the oracle for that case.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::cluster::{parse_metrics, state_of};
use crate::procs::now_ms;

/// Time between two samples of one node.
const INTERVAL: Duration = Duration::from_millis(50);

/// Timeout of one scrape; a paused exporter must not stall the timeline for long.
const SCRAPE_TIMEOUT: Duration = Duration::from_millis(500);

/// One node's samples: (unix ms, state or None when the exporter did not answer).
pub type Timeline = Vec<(u64, Option<String>)>;

/// Running samplers; [`Sampler::finish`] stops them.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Timeline>>,
}

impl Sampler {
    /// Starts sampling `exporters`.
    pub fn start(exporters: &[SocketAddr]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = exporters
            .iter()
            .map(|addr| {
                let stop = stop.clone();
                let url = format!("http://{addr}/metrics");
                std::thread::spawn(move || sample(&url, &stop))
            })
            .collect();
        Sampler { stop, threads }
    }

    /// Stops sampling and returns every node's timeline.
    pub fn finish(self) -> Vec<Timeline> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

fn sample(url: &str, stop: &AtomicBool) -> Timeline {
    let client = reqwest::blocking::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .expect("http client");
    let mut out = Timeline::new();
    while !stop.load(Ordering::SeqCst) {
        let state = client
            .get(url)
            .send()
            .and_then(|r| r.text())
            .ok()
            .and_then(|body| state_of(&parse_metrics(&body)).ok());
        out.push((now_ms(), state));
        std::thread::sleep(INTERVAL);
    }
    out
}

fn validating(s: &Option<String>) -> bool {
    s.as_deref() == Some("Validating")
}

/// Sampled moments (unix ms) at which two or more nodes were Validating.
pub fn two_validators(timelines: &[Timeline]) -> Vec<u64> {
    let mut moments = Vec::new();
    for (a, ta) in timelines.iter().enumerate() {
        for (t, s) in ta {
            if !validating(s) {
                continue;
            }
            let others = timelines.iter().enumerate().filter(|(b, _)| *b != a);
            let overlap = others.into_iter().any(|(_, tb)| {
                let before = tb.iter().rev().find(|(u, _)| u <= t);
                let after = tb.iter().find(|(u, _)| u >= t);
                matches!((before, after), (Some((_, x)), Some((_, y))) if validating(x) && validating(y))
            });
            if overlap {
                moments.push(*t);
            }
        }
    }
    moments.sort_unstable();
    moments.dedup();
    moments
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tl(points: &[(u64, Option<&str>)]) -> Timeline {
        points
            .iter()
            .map(|(t, s)| (*t, s.map(str::to_string)))
            .collect()
    }

    #[test]
    fn clean_hand_over_is_not_two_validators() {
        let a = tl(&[(0, Some("Validating")), (100, Some("Voting"))]);
        let b = tl(&[(10, Some("Voting")), (110, Some("Validating"))]);
        assert!(two_validators(&[a, b]).is_empty());
    }

    #[test]
    fn overlap_is_reported() {
        let a = tl(&[(0, Some("Validating")), (100, Some("Validating"))]);
        let b = tl(&[
            (10, Some("Voting")),
            (60, Some("Validating")),
            (110, Some("Validating")),
        ]);
        assert_eq!(two_validators(&[a, b]), vec![60, 100]);
    }

    #[test]
    fn unknown_is_not_validating() {
        let a = tl(&[
            (0, Some("Validating")),
            (100, None),
            (200, Some("Validating")),
        ]);
        let b = tl(&[(50, Some("Validating")), (150, Some("Validating"))]);
        assert!(
            two_validators(&[a, b]).is_empty(),
            "an unanswered sample breaks the overlap"
        );
    }
}
