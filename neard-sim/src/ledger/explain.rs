//! The oracle's report in words, for people watching a trial: what each gap in our account's
//! signing was (which node signed before and after it, how long it lasted, and which of the
//! events the caller names, such as the faults it injected, fell into it), which events left
//! no gap, and what each height signed by two nodes was.

use std::str::FromStr;

use crate::blocks::ApprovalInner;
use crate::ledger::{Entry, Report, SignedKind};

/// A moment the caller names: `MS=LABEL` on the command line (unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When it happened (unix ms, the ledger's clock).
    pub time_ms: u64,
    /// What happened ("1. the leader's neard crashed").
    pub label: String,
}

impl FromStr for Event {
    type Err = String;

    fn from_str(s: &str) -> Result<Event, String> {
        let (ms, label) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not MS=LABEL"))?;
        let time_ms = ms
            .parse()
            .map_err(|_| format!("{s:?}: {ms:?} is not unix milliseconds"))?;
        Ok(Event {
            time_ms,
            label: label.to_string(),
        })
    }
}

/// Milliseconds as people read them: `850 ms`, `2.3 s`.
fn span(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// The entries at `height`, in signing order.
fn at(report: &Report, height: u64) -> Vec<&Entry> {
    report
        .entries
        .iter()
        .filter(|e| e.height == height)
        .collect()
}

/// One line per gap: its heights, who signed right before and right after it and how much
/// later, and the events inside it (or that there was none).
pub fn gaps(report: &Report, events: &[Event]) -> Vec<String> {
    report
        .gaps
        .iter()
        .map(|&(first, last)| {
            let n = last - first + 1;
            let before = at(report, first - 1).into_iter().last();
            let after = at(report, last + 1).into_iter().next();
            let (Some(before), Some(after)) = (before, after) else {
                return format!("gap {first}..={last} ({n} heights)");
            };
            let inside: Vec<&str> = events
                .iter()
                .filter(|e| before.time_ms <= e.time_ms && e.time_ms <= after.time_ms)
                .map(|e| e.label.as_str())
                .collect();
            let cause = if !inside.is_empty() {
                inside.join("; ")
            } else if events.is_empty() {
                String::new()
            } else if before.node == after.node {
                format!(
                    "no event in between: {} signed before and after it",
                    before.node
                )
            } else {
                format!(
                    "no event in between: a hand-over from {} to {}",
                    before.node, after.node
                )
            };
            let heights = if n == 1 {
                format!("height {first}")
            } else {
                format!("heights {first}..={last}")
            };
            let line = format!(
                "{heights} missed ({n}): {} signed {}, then {} signed {} {} later",
                before.node,
                first - 1,
                after.node,
                last + 1,
                span(after.time_ms.saturating_sub(before.time_ms))
            );
            if cause.is_empty() {
                line
            } else {
                format!("{line}: {cause}")
            }
        })
        .collect()
}

/// One line per event that no gap holds: signing went on across it.
pub fn gapless(report: &Report, events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|ev| {
            !report.gaps.iter().any(|&(first, last)| {
                let before = at(report, first - 1).into_iter().last();
                let after = at(report, last + 1).into_iter().next();
                matches!((before, after), (Some(b), Some(a)) if b.time_ms <= ev.time_ms && ev.time_ms <= a.time_ms)
            })
        })
        .filter_map(|ev| {
            // Who signed before the event, and who first signed after it (another node, when
            // the event handed over); the old signer's last signature may come a little after
            // the event's moment (a signal takes a few milliseconds to land).
            let old = &report.entries.iter().rfind(|e| e.time_ms <= ev.time_ms)?.node;
            let new = report
                .entries
                .iter()
                .find(|e| e.time_ms > ev.time_ms && e.node != *old)
                .or_else(|| report.entries.iter().find(|e| e.time_ms > ev.time_ms))?;
            let last = report
                .entries
                .iter()
                .rfind(|e| e.node == *old && e.time_ms <= new.time_ms)?;
            Some(format!(
                "{}: no height missed ({old} signed up to {}, then {} from {}, {} later)",
                ev.label,
                last.height,
                new.node,
                new.height,
                span(new.time_ms.saturating_sub(last.time_ms))
            ))
        })
        .collect()
}

/// What one signature was: `approval endorsing 26`, `block on 26`, `chunk of shard 0`.
fn what(e: &Entry) -> String {
    match (e.kind_or_block(), &e.approval, e.parent_height) {
        (SignedKind::Approval, Some(ApprovalInner::Endorsement(_)), Some(p)) => {
            format!("an approval endorsing {p}")
        }
        (SignedKind::Approval, Some(ApprovalInner::Skip(p)), _) => {
            format!("an approval skipping from {p}")
        }
        (SignedKind::Block, _, Some(p)) => format!("the block on {p}"),
        (SignedKind::Chunk, _, _) => format!("a chunk of shard {}", e.shard.unwrap_or(0)),
        (kind, _, _) => format!("a {}", kind.name()),
    }
}

/// One line per height that two nodes signed: who signed what, in order, and whether the
/// oracle found a conflict there.
pub fn doubles(report: &Report) -> Vec<String> {
    report
        .double_signed
        .keys()
        .map(|&h| {
            let entries = at(report, h);
            let signed: Vec<String> = entries
                .iter()
                .map(|e| format!("{} {}", e.node, what(e)))
                .collect();
            let apart = match (entries.first(), entries.last()) {
                (Some(a), Some(b)) => span(b.time_ms.saturating_sub(a.time_ms)),
                _ => String::new(),
            };
            let verdict = if report.conflicting.iter().any(|c| c.slot.height == h) {
                "CONFLICTING".to_string()
            } else {
                "not conflicting: no two different messages for one slot (one neard signs such a \
                 pair too when it produces the block at a height it endorsed)"
                    .to_string()
            };
            format!(
                "height {h} signed by two nodes, {apart} apart: {}; {verdict}",
                signed.join(", then ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::analyze;

    fn entry(height: u64, node: &str, time_ms: u64, kind: SignedKind) -> Entry {
        Entry {
            height,
            node: node.into(),
            account: "pool".into(),
            public_key: "ed25519:k".into(),
            time_ms,
            kind: Some(kind),
            approval: (kind == SignedKind::Approval)
                .then(|| ApprovalInner::Endorsement(format!("hash-{}", height - 1))),
            shard: None,
            parent_hash: Some(format!("hash-{}", height - 1)),
            parent_height: Some(height - 1),
            content: Some(format!("{}-{height}-{node}", kind.name())),
        }
    }

    fn ev(time_ms: u64, label: &str) -> Event {
        Event {
            time_ms,
            label: label.into(),
        }
    }

    #[test]
    fn each_gap_says_who_signed_around_it_and_which_event_it_holds() {
        use SignedKind::{Approval, Block};
        let entries = vec![
            entry(10, "n0", 1_000, Block),
            // 11..=12: n0 signs on after it, no event inside.
            entry(13, "n0", 3_000, Approval),
            entry(14, "n0", 3_500, Approval),
            // The crash at 4 s: 15..=19 missed until n1 signs 20.
            entry(20, "n1", 9_000, Approval),
            // The hand-over at 10 s leaves no gap.
            entry(21, "n1", 9_900, Approval),
            entry(21, "n0", 10_300, Block),
            entry(22, "n0", 10_800, Approval),
        ];
        let r = analyze(&entries, "pool");
        let events = [ev(4_000, "1. crash"), ev(10_000, "2. hand-over")];
        let gaps = gaps(&r, &events);
        assert_eq!(
            gaps,
            [
                "heights 11..=12 missed (2): n0 signed 10, then n0 signed 13 2.0 s later: no event in between: n0 signed before and after it",
                "heights 15..=19 missed (5): n0 signed 14, then n1 signed 20 5.5 s later: 1. crash",
            ]
        );
        assert_eq!(
            gapless(&r, &events),
            ["2. hand-over: no height missed (n1 signed up to 21, then n0 from 21, 400 ms later)"]
        );
        let doubles = doubles(&r);
        assert_eq!(doubles.len(), 1, "{doubles:?}");
        assert!(
            doubles[0].starts_with("height 21 signed by two nodes, 400 ms apart: n1 an approval endorsing 20, then n0 the block on 20; not conflicting"),
            "{doubles:?}"
        );
    }

    #[test]
    fn events_parse_from_the_command_line() {
        assert_eq!("1700=1. crash".parse(), Ok(ev(1700, "1. crash")));
        assert!("1. crash".parse::<Event>().is_err());
        assert!("soon=x".parse::<Event>().is_err());
    }
}
