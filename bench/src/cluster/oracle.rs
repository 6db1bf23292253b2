//! The oracle's bar on a signing ledger: no conflicting signature and no message slot signed
//! by two nodes, with the skips a node re-signed in turn after the previous key holder stopped
//! counted apart (reported, not failed).

use std::collections::{BTreeMap, BTreeSet};

/// Message slots (kind, target height, shard) of our account that two or more nodes signed,
/// identically or not: two key holders signing the same message slot. This is the strict bar
/// (beside [`neard_sim::ledger::Report::conflicting`]). The oracle's per-height
/// `double_signed` also counts a height at which one node signed one kind of message and
/// another node another kind, which an honest hand-over does (the old leader's endorsement of
/// target `H + 1`, then the new leader's block at `H + 1`, which Lemma 3 of docs/failover.md
/// allows), so it is reported, not failed on.
///
/// Left out: skips that a node signed again after the node that signed them first had
/// stopped ([`resigned_skips`]).
pub fn two_node_slots(
    report: &neard_sim::ledger::Report,
) -> Vec<(neard_sim::ledger::Slot, BTreeSet<String>)> {
    let resigned: BTreeSet<_> = resigned_skips(report).into_iter().map(|(s, _)| s).collect();
    slots_by_nodes(report)
        .into_iter()
        .filter(|(slot, n)| n.len() >= 2 && !resigned.contains(slot))
        .collect()
}

/// How long before a slot's first signature and after its last [`resigned_skips`] checks that the signers took
/// turns. Two key holders signing at once alternate within one skip period (a few hundred ms
/// on the sped-up timers, 2 s to 6 s on neard's).
pub const TURNS_WINDOW_MS: u64 = 6_000;

/// Skip approvals signed by two nodes *in turn*: every signature of our account from
/// [`TURNS_WINDOW_MS`] before the slot's first signature to as long after its last is by one
/// node, then by the next, never back. This is what a neard started with the key does after the previous key
/// holder stopped: nearcore's doomslug sends a skip for each height above its tip on the skip
/// timer, whatever targets it (or anyone) approved before, so a restarted neard on a stalled
/// chain re-sends the skips the previous one sent (identical messages), and on a newer tip
/// skips from that tip (docs/failover.md, Lemma 3). Slots with an endorsement are never
/// included (an endorsement and another approval for one target conflict), nor are blocks
/// and chunks. Reported in the bench; not a failure.
pub fn resigned_skips(
    report: &neard_sim::ledger::Report,
) -> Vec<(neard_sim::ledger::Slot, BTreeSet<String>)> {
    use neard_sim::{blocks::ApprovalInner, ledger::SignedKind};
    let mut out = Vec::new();
    for (slot, nodes) in slots_by_nodes(report) {
        if nodes.len() < 2 || slot.kind != SignedKind::Approval {
            continue;
        }
        let signed: Vec<_> = report.entries.iter().filter(|e| e.slot() == slot).collect();
        if !signed
            .iter()
            .all(|e| matches!(e.approval, Some(ApprovalInner::Skip(_))))
        {
            continue;
        }
        let from = signed
            .iter()
            .map(|e| e.time_ms)
            .min()
            .unwrap_or(0)
            .saturating_sub(TURNS_WINDOW_MS);
        let to = signed.iter().map(|e| e.time_ms).max().unwrap_or(0) + TURNS_WINDOW_MS;
        if in_turns(
            report
                .entries
                .iter()
                .filter(|e| (from..=to).contains(&e.time_ms))
                .map(|e| e.node.as_str()),
        ) {
            out.push((slot, nodes));
        }
    }
    out
}

/// Whether a sequence of signers (in signing order) has each node in one run: `a a b b c`,
/// not `a b a`.
fn in_turns<'a>(signers: impl Iterator<Item = &'a str>) -> bool {
    let mut done = BTreeSet::new();
    let mut current: Option<&str> = None;
    for node in signers {
        if current == Some(node) {
            continue;
        }
        if !done.insert(node) {
            return false;
        }
        current = Some(node);
    }
    true
}

fn slots_by_nodes(
    report: &neard_sim::ledger::Report,
) -> BTreeMap<neard_sim::ledger::Slot, BTreeSet<String>> {
    let mut by_slot: BTreeMap<neard_sim::ledger::Slot, BTreeSet<String>> = BTreeMap::new();
    for e in &report.entries {
        by_slot.entry(e.slot()).or_default().insert(e.node.clone());
    }
    by_slot
}

/// The oracle's bar on a report: no conflicting signature and no message slot signed by two
/// nodes ([`two_node_slots`]).
pub fn check_report(report: &neard_sim::ledger::Report) -> anyhow::Result<()> {
    let conflicts: Vec<String> = report
        .conflicting
        .iter()
        .take(10)
        .map(|c| {
            format!(
                "{} {}{} by {:?}",
                c.slot.kind.name(),
                c.slot.height,
                c.slot
                    .shard
                    .map_or(String::new(), |s| format!(" shard {s}")),
                c.nodes
            )
        })
        .collect();
    anyhow::ensure!(
        report.conflicting.is_empty(),
        "{} conflicting signatures: {conflicts:?}",
        report.conflicting.len()
    );
    let twice = two_node_slots(report);
    anyhow::ensure!(
        twice.is_empty(),
        "message slots signed by two nodes: {:?}",
        twice.iter().take(10).collect::<Vec<_>>()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use neard_sim::ledger::{Entry, SignedKind};

    fn signed(node: &str, height: u64, kind: SignedKind, content: &str) -> Entry {
        Entry {
            height,
            node: node.into(),
            account: "a".into(),
            public_key: "k".into(),
            time_ms: height,
            kind: Some(kind),
            approval: None,
            shard: None,
            parent_hash: None,
            parent_height: None,
            content: Some(content.into()),
        }
    }

    fn skip(node: &str, target: u64, parent: u64, time_ms: u64) -> Entry {
        Entry {
            time_ms,
            approval: Some(neard_sim::blocks::ApprovalInner::Skip(parent)),
            ..signed(
                node,
                target,
                SignedKind::Approval,
                &format!("skip{target}-{parent}"),
            )
        }
    }

    #[test]
    fn skips_re_signed_in_turn_pass_skips_signed_at_once_fail() {
        // The old leader skipped 12 and 13 from tip 10 and died; the new one, started with
        // the key on the same stalled tip, skips 12, 13 (identical) and 14.
        let in_turn = neard_sim::ledger::analyze(
            &[
                skip("old", 12, 10, 1_000),
                skip("old", 13, 10, 1_200),
                skip("new", 12, 10, 5_000),
                skip("new", 13, 10, 5_200),
                skip("new", 14, 10, 5_400),
            ],
            "a",
        );
        assert_eq!(resigned_skips(&in_turn).len(), 2);
        assert!(two_node_slots(&in_turn).is_empty());
        assert!(check_report(&in_turn).is_ok());
        // Two key holders on one stalled tip: the same skips, alternating.
        let at_once = neard_sim::ledger::analyze(
            &[
                skip("old", 12, 10, 1_000),
                skip("new", 12, 10, 1_050),
                skip("old", 13, 10, 1_200),
                skip("new", 13, 10, 1_250),
            ],
            "a",
        );
        assert!(resigned_skips(&at_once).is_empty());
        assert_eq!(two_node_slots(&at_once).len(), 2);
        assert!(check_report(&at_once).is_err());
        // The old leader signs again (within the window) after the new one began: not in turn.
        let back = neard_sim::ledger::analyze(
            &[
                skip("old", 12, 10, 1_000),
                skip("new", 12, 10, 5_000),
                skip("old", 13, 10, 5_000 + TURNS_WINDOW_MS),
            ],
            "a",
        );
        assert!(check_report(&back).is_err());
        // An endorsement signed by two nodes in turn is no re-sent skip.
        let endorsed = neard_sim::ledger::analyze(
            &[
                Entry {
                    approval: Some(neard_sim::blocks::ApprovalInner::Endorsement("h".into())),
                    time_ms: 1_000,
                    ..signed("old", 11, SignedKind::Approval, "e11")
                },
                Entry {
                    approval: Some(neard_sim::blocks::ApprovalInner::Endorsement("h".into())),
                    time_ms: 5_000,
                    ..signed("new", 11, SignedKind::Approval, "e11")
                },
            ],
            "a",
        );
        assert!(resigned_skips(&endorsed).is_empty());
        assert!(check_report(&endorsed).is_err());
    }

    #[test]
    fn a_slot_signed_by_two_nodes_fails_an_approval_and_a_block_at_one_height_do_not() {
        // A hand-over: the old leader endorsed target 73, the new one produced block 73.
        let handover = neard_sim::ledger::analyze(
            &[
                signed("old", 73, SignedKind::Approval, "e73"),
                signed("new", 73, SignedKind::Block, "b73"),
            ],
            "a",
        );
        assert_eq!(
            handover.double_signed.len(),
            1,
            "the per-height count sees it"
        );
        assert!(two_node_slots(&handover).is_empty());
        assert!(check_report(&handover).is_ok());
        // The same approval signed by both (identical): two key holders signed one message.
        let twice = neard_sim::ledger::analyze(
            &[
                signed("old", 90, SignedKind::Approval, "s90"),
                signed("new", 90, SignedKind::Approval, "s90"),
            ],
            "a",
        );
        assert_eq!(two_node_slots(&twice).len(), 1);
        assert!(check_report(&twice).is_err());
        // Two different blocks at one height by one node: a conflict.
        let conflict = neard_sim::ledger::analyze(
            &[
                signed("one", 5, SignedKind::Block, "x"),
                signed("one", 5, SignedKind::Block, "y"),
            ],
            "a",
        );
        assert!(two_node_slots(&conflict).is_empty());
        assert!(check_report(&conflict).is_err());
    }
}
