//! The ledger's and its oracle's unit tests: what conflicts and what is only a duplicate,
//! clean hand-overs against overlapping signers, and lines that round-trip.

use super::*;

/// An old (v1) line: a signed height, nothing more.
fn e(height: u64, node: &str, time_ms: u64) -> Entry {
    Entry {
        height,
        node: node.into(),
        account: "pool.near".into(),
        public_key: "ed25519:x".into(),
        time_ms,
        kind: None,
        approval: None,
        shard: None,
        parent_hash: None,
        parent_height: None,
        content: None,
    }
}

fn signer(node: &str) -> Signer<'_> {
    Signer {
        node,
        account: "pool.near",
        public_key: "ed25519:x",
    }
}

fn approval(node: &str, target: u64, inner: ApprovalInner, t: u64) -> Entry {
    let a = Approval {
        account_id: "pool.near".into(),
        inner,
        target_height: target,
    };
    Entry::approval(&signer(node), &a, "tip", target - 1, t)
}

#[test]
fn identical_approvals_from_two_nodes_are_duplicates_not_conflicts() {
    let e5 = ApprovalInner::Endorsement("h4".into());
    let entries = vec![approval("a", 5, e5.clone(), 100), approval("b", 5, e5, 120)];
    let r = analyze(&entries, "pool.near");
    assert!(r.no_conflicts(), "{:?}", r.conflicting);
    assert_eq!(r.duplicates.len(), 1);
    assert_eq!(r.duplicates[0].slot.kind, SignedKind::Approval);
    assert_eq!(r.duplicates[0].nodes.len(), 2);
    assert!(!r.is_safe(), "two nodes signed height 5: the strict bar");
    assert_eq!(r.double_signed.keys().copied().collect::<Vec<_>>(), [5]);
}

#[test]
fn a_skip_and_an_endorsement_for_one_target_conflict() {
    let entries = vec![
        approval("a", 7, ApprovalInner::Skip(5), 100),
        approval("b", 7, ApprovalInner::Endorsement("h6".into()), 150),
    ];
    let r = analyze(&entries, "pool.near");
    assert_eq!(r.conflicting.len(), 1);
    let c = &r.conflicting[0];
    assert_eq!((c.slot.kind, c.slot.height), (SignedKind::Approval, 7));
    assert_eq!(c.signatures.len(), 2);
    assert!(r.duplicates.is_empty());
    // Also from one node (a node that lost its store): still a conflict.
    let one = vec![
        approval("a", 7, ApprovalInner::Skip(5), 100),
        approval("a", 7, ApprovalInner::Endorsement("h6".into()), 150),
    ];
    assert_eq!(analyze(&one, "pool.near").conflicting.len(), 1);
}

#[test]
fn two_skips_for_one_target_are_a_reskip_not_a_conflict() {
    let entries = vec![
        approval("a", 9, ApprovalInner::Skip(5), 100),
        approval("a", 9, ApprovalInner::Skip(7), 300),
    ];
    let r = analyze(&entries, "pool.near");
    assert!(r.no_conflicts());
    assert_eq!(r.reskipped.len(), 1);
    assert!(r.is_safe());
}

#[test]
fn two_blocks_or_chunks_at_one_height_conflict() {
    let g = Block::genesis("g", 0, 0);
    let x = Block::child(&g, 1, 0, "pool.near", "a", 10, vec![], vec![]);
    let y = Block::child(&g, 1, 0, "pool.near", "b", 11, vec![], vec![]);
    let cx = Chunk::new(&g, 0, "pool.near", "a", 10);
    let cy = Chunk::new(&g, 0, "pool.near", "b", 11);
    let other_shard = Chunk::new(&g, 1, "pool.near", "b", 11);
    let entries = vec![
        Entry::block(&signer("a"), &x, 10),
        Entry::block(&signer("b"), &y, 11),
        Entry::chunk(&signer("a"), &cx, 10),
        Entry::chunk(&signer("b"), &cy, 11),
        Entry::chunk(&signer("b"), &other_shard, 11),
    ];
    let r = analyze(&entries, "pool.near");
    let kinds: Vec<(SignedKind, u64, Option<u64>)> = r
        .conflicting
        .iter()
        .map(|c| (c.slot.kind, c.slot.height, c.slot.shard))
        .collect();
    assert_eq!(
        kinds,
        [
            (SignedKind::Block, 1, None),
            (SignedKind::Chunk, 1, Some(0))
        ]
    );
    assert_eq!(
        r.first_of_kind_after(SignedKind::Chunk, Some("b"), 0)
            .map(|e| e.time_ms),
        Some(11)
    );
}

#[test]
fn a_clean_handover_has_no_double_sign() {
    let entries = vec![
        e(10, "a", 1000),
        e(11, "a", 1100),
        e(12, "a", 1200),
        e(15, "b", 1500),
        e(16, "b", 1600),
    ];
    let r = analyze(&entries, "pool.near");
    assert!(r.is_safe());
    assert_eq!(r.gaps, vec![(13, 14)]);
    assert_eq!(r.missed_heights(), 2);
    assert_eq!(r.intervals["a"], vec![(10, 12)]);
    assert_eq!(r.intervals["b"], vec![(15, 16)]);
    assert_eq!((r.first_height, r.last_height), (Some(10), Some(16)));
    assert_eq!(r.first_signed_after(None, 1250).map(|e| e.height), Some(15));
    assert_eq!(r.first_signed_after(Some("a"), 1250), None);
}

#[test]
fn overlapping_signers_are_a_double_sign() {
    let entries = vec![
        e(10, "a", 1000),
        e(11, "a", 1100),
        e(11, "b", 1101),
        e(12, "b", 1200),
        e(12, "a", 1201),
        e(13, "b", 1300),
        e(20, "a", 2000),
    ];
    let r = analyze(&entries, "pool.near");
    assert!(!r.is_safe());
    let both: BTreeSet<String> = ["a".to_owned(), "b".to_owned()].into();
    assert_eq!(
        r.double_signed.keys().copied().collect::<Vec<_>>(),
        [11, 12]
    );
    assert_eq!(r.double_signed[&11], both);
    assert_eq!(r.gaps, vec![(14, 19)]);
    assert_eq!(r.intervals["a"], vec![(10, 12), (20, 20)]);
    assert_eq!(r.intervals["b"], vec![(11, 13)]);
    // Old lines of two nodes at one height are conflicting blocks (their content is unknown).
    assert_eq!(r.conflicting.len(), 2);
    assert!(r.duplicates.is_empty());
}

#[test]
fn other_accounts_and_one_node_repeating_are_not_double_signs() {
    let mut other = e(10, "b", 1000);
    other.account = "other.near".into();
    let entries = vec![e(10, "a", 1000), other, e(10, "a", 5000)];
    let r = analyze(&entries, "pool.near");
    assert!(r.is_safe());
    assert!(r.gaps.is_empty());
    assert_eq!(r.entries.len(), 2);
    let empty = analyze(&[], "pool.near");
    assert_eq!((empty.first_height, empty.last_height), (None, None));
}

#[test]
fn lines_round_trip_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ledger.jsonl");
    let mut w = Writer::open(&path).expect("open");
    w.append(&e(1, "a", 1)).expect("append");
    let mut w2 = Writer::open(&path).expect("open twice");
    w2.append(&e(2, "b", 2)).expect("append");
    let read_back = read(&path).expect("read");
    assert_eq!(read_back, vec![e(1, "a", 1), e(2, "b", 2)]);
    let all = read_all(&[&path, &path]).expect("read_all");
    assert_eq!(all.len(), 4);
    // A v2 line round-trips too, and a v1 line is a block of unknown content.
    let v2 = approval("c", 3, ApprovalInner::Skip(1), 3);
    w2.append(&v2).expect("append");
    assert_eq!(read(&path).expect("read").last(), Some(&v2));
    let old = r#"{"height":1,"node":"n","account":"a","public_key":"p","time_ms":1}"#;
    let parsed: Entry = serde_json::from_str(old).expect("v1 line");
    assert_eq!(parsed.kind_or_block(), SignedKind::Block);
    std::fs::write(&path, "{\"height\": 1}\n").expect("write");
    let err = read(&path).expect_err("bad line").to_string();
    assert!(err.contains("ledger.jsonl line 1"), "{err}");
}
