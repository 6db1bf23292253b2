//! A node's consensus client: its view of the chain, its doomslug, and what it signs.
//!
//! Pure state (no I/O): the node feeds it what it receives from the chain and calls the two
//! periodic steps neard's client actor runs (`check_triggers`): the doomslug timer every
//! `doomslug_step_period`, block production every `block_production_tracking_delay`. Each call
//! returns [`Effects`]: messages to send and ledger lines to append (written at signing time,
//! whether or not the messages are delivered).
//!
//! Rules, with their nearcore sources:
//! - The tip is the highest block received (or produced); doomslug's tip follows it at the next
//!   step (`check_and_update_doomslug_tip`).
//! - Approvals come from [`Doomslug::process_timer`], signed only when the node may sign, and
//!   only for an account that is a validator (`try_doomslug_timer` sends approvals only if
//!   `is_validator`); the node keeps its own approvals in its pool (a producer approves its own
//!   block).
//! - Chunks: when the tip changes to `h`, for every shard whose chunk producer at `h + 1` is
//!   the node's account, it produces a chunk on `h` (client `produce_chunks` on an accepted
//!   block, `next_height = h + 1`). A key that arrives later does not produce the chunk for a
//!   tip it already had.
//! - Blocks: for each height from `max(latest_known, tip) + 1` up to the largest height that
//!   crossed the 2/3 threshold, if the node's account is the producer and doomslug says ready
//!   (`handle_block_production`, `ready_to_produce_block`), it produces the block on its tip,
//!   including the chunks it has for the tip, and takes it as its tip. At most once per height
//!   (`latest_known`). Not while syncing (the node does not call the step then).
//!
//! Longer than ~500 lines on purpose: the client is one state machine, about 380 lines with
//! the rules above, and splitting it would separate rules that share its view; the rest are its
//! unit tests, which need a small lock-step harness of their own (a [`crate::network::Network`]
//! and nodes in 10 ms ticks, each with its delivery delay) to show stalls and conflicts.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::blocks::{Approval, Block, Chunk};
use crate::doomslug::{ApprovalPool, Doomslug};
use crate::epoch::{Counters, EpochStats, Epochs};
use crate::keys::Key;
use crate::ledger::{Entry, Signer};
use crate::network::Welcome;
use crate::spec::{ChainSpec, Timers};
use crate::wire::{ToChain, ToNode};

/// What a step wants done.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Messages for the chain.
    pub send: Vec<ToChain>,
    /// Ledger lines, in signing order.
    pub ledger: Vec<Entry>,
}

impl Effects {
    fn extend(&mut self, other: Effects) {
        self.send.extend(other.send);
        self.ledger.extend(other.ledger);
    }
}

#[derive(Debug, Clone)]
struct View {
    epochs: Epochs,
    tip: Block,
    earliest: Block,
    ds: Doomslug,
    pool: ApprovalPool,
    chunks: BTreeMap<u64, Chunk>,
    stats: EpochStats,
    latest_known: u64,
}

/// One node's consensus state.
#[derive(Debug, Clone)]
pub struct Client {
    node_id: String,
    timers: Timers,
    stored_target: u64,
    view: Option<View>,
    blocks_produced: u64,
    chunks_produced: u64,
}

impl Client {
    /// A client for node `node_id` with its config's `timers` and the largest target height
    /// from its store.
    pub fn new(node_id: &str, timers: Timers, stored_target: u64) -> Client {
        Client {
            node_id: node_id.to_owned(),
            timers,
            stored_target,
            view: None,
            blocks_produced: 0,
            chunks_produced: 0,
        }
    }

    /// Whether the node has heard from the chain (before that it is "awaiting peers").
    pub fn has_view(&self) -> bool {
        self.view.is_some()
    }

    /// The chain spec, once known.
    pub fn spec(&self) -> Option<&ChainSpec> {
        self.view.as_ref().map(|v| v.epochs.spec())
    }

    /// The assignment, once known.
    pub fn epochs(&self) -> Option<&Epochs> {
        self.view.as_ref().map(|v| &v.epochs)
    }

    /// The tip.
    pub fn tip(&self) -> Option<&Block> {
        self.view.as_ref().map(|v| &v.tip)
    }

    /// The first block this node had.
    pub fn earliest(&self) -> Option<&Block> {
        self.view.as_ref().map(|v| &v.earliest)
    }

    /// doomslug's largest target height (the store's value before the first tip).
    pub fn largest_target_height(&self) -> u64 {
        self.view
            .as_ref()
            .map_or(self.stored_target, |v| v.ds.largest_target_height())
    }

    /// doomslug's largest final height.
    pub fn largest_final_height(&self) -> u64 {
        self.view
            .as_ref()
            .map_or(0, |v| v.ds.largest_final_height())
    }

    /// Largest target that crossed the 2/3 threshold in this node's pool.
    pub fn largest_threshold_height(&self) -> u64 {
        self.view
            .as_ref()
            .map_or(0, |v| v.pool.largest_threshold_height())
    }

    /// Largest target of an approval this node received.
    pub fn largest_approval_height(&self) -> u64 {
        self.view
            .as_ref()
            .map_or(0, |v| v.pool.largest_approval_height())
    }

    /// Blocks this node produced.
    pub fn blocks_produced(&self) -> u64 {
        self.blocks_produced
    }

    /// Chunks this node produced.
    pub fn chunks_produced(&self) -> u64 {
        self.chunks_produced
    }

    /// Counters of `account` in the tip's epoch.
    pub fn counters(&self, account: &str) -> Counters {
        self.view
            .as_ref()
            .map_or_else(Counters::default, |v| v.stats.get(v.tip.epoch, account))
    }

    fn signer<'a>(&'a self, key: Option<&'a Key>) -> Option<Signer<'a>> {
        let key = key?;
        let spec = self.spec()?;
        spec.is_validator(&key.account_id).then_some(Signer {
            node: &self.node_id,
            account: &key.account_id,
            public_key: &key.public_key,
        })
    }

    /// Applies a message from the chain. `key` is the key the node may sign with now (none
    /// while it must not sign); it matters for chunks of a new tip.
    pub fn on_message(
        &mut self,
        m: ToNode,
        now: Instant,
        now_ms: u64,
        key: Option<&Key>,
    ) -> Effects {
        match m {
            ToNode::Welcome(w) => self.on_welcome(*w, now, now_ms, key),
            ToNode::Block(b) => {
                let newer = self.view.as_ref().is_some_and(|v| b.height > v.tip.height);
                if newer {
                    self.adopt(b, now_ms, key)
                } else {
                    Effects::default()
                }
            }
            ToNode::Approval(a) => {
                self.add_approval(&a, now);
                Effects::default()
            }
            ToNode::Chunk(c) => {
                if let Some(v) = self.view.as_mut() {
                    if c.prev_hash == v.tip.hash {
                        v.chunks.entry(c.shard).or_insert(c);
                    }
                }
                Effects::default()
            }
        }
    }

    fn add_approval(&mut self, a: &Approval, now: Instant) {
        if let Some(v) = self.view.as_mut() {
            if a.target_height > v.tip.height {
                let spec = v.epochs.spec();
                v.pool
                    .add(a, spec.stake_of(&a.account_id), spec.total_stake(), now);
            }
        }
    }

    fn on_welcome(&mut self, w: Welcome, now: Instant, now_ms: u64, key: Option<&Key>) -> Effects {
        let mut fx = Effects::default();
        let adopt = match &self.view {
            None => {
                self.view = Some(View {
                    epochs: Epochs::new(w.spec.clone()),
                    tip: w.head.clone(),
                    earliest: w.head.clone(),
                    ds: Doomslug::new(self.stored_target, &self.timers, now),
                    pool: ApprovalPool::default(),
                    chunks: BTreeMap::new(),
                    stats: w.stats.clone(),
                    latest_known: w.head.height,
                });
                false
            }
            Some(v) => {
                if v.epochs.spec() != &w.spec {
                    // A different chain: start over (the store's largest target stays).
                    let stored = v.ds.largest_target_height();
                    self.stored_target = self.stored_target.max(stored);
                    self.view = None;
                    return self.on_welcome(w, now, now_ms, key);
                }
                w.head.height > v.tip.height
                    || (w.head.height == v.tip.height && w.head.hash != v.tip.hash)
            }
        };
        if adopt {
            fx.extend(self.adopt(w.head.clone(), now_ms, key));
            if let Some(v) = self.view.as_mut() {
                v.stats = w.stats.clone();
            }
        }
        for a in &w.approvals {
            self.add_approval(a, now);
        }
        if let Some(v) = self.view.as_mut() {
            for c in w.chunks {
                if c.prev_hash == v.tip.hash {
                    v.chunks.entry(c.shard).or_insert(c);
                }
            }
        }
        fx
    }

    /// Takes `b` as the tip; produces this node's chunks for the next height.
    fn adopt(&mut self, b: Block, now_ms: u64, key: Option<&Key>) -> Effects {
        let Some(v) = self.view.as_mut() else {
            return Effects::default();
        };
        v.stats.record(&v.epochs, &b);
        v.stats.keep_from(b.epoch.saturating_sub(1));
        v.latest_known = v.latest_known.max(b.height);
        v.pool.prune(b.height);
        v.chunks.retain(|_, c| c.prev_hash == b.hash);
        v.tip = b;
        self.produce_chunks(now_ms, key)
    }

    fn produce_chunks(&mut self, now_ms: u64, key: Option<&Key>) -> Effects {
        let mut fx = Effects::default();
        let Some(signer) = self.signer(key) else {
            return fx;
        };
        let Some(v) = self.view.as_ref() else {
            return fx;
        };
        let tip = &v.tip;
        let mut made = Vec::new();
        for shard in v.epochs.chunk_shards_of(signer.account, tip.height + 1) {
            let c = Chunk::new(tip, shard, signer.account, &self.node_id, now_ms);
            fx.ledger.push(Entry::chunk(&signer, &c, now_ms));
            fx.send.push(ToChain::Chunk(c.clone()));
            made.push(c);
        }
        self.chunks_produced += made.len() as u64;
        if let Some(v) = self.view.as_mut() {
            for c in made {
                v.chunks.entry(c.shard).or_insert(c);
            }
        }
        fx
    }

    fn sync_doomslug_tip(&mut self, now: Instant) {
        if let Some(v) = self.view.as_mut() {
            if v.ds.tip().0 != v.tip.hash {
                v.ds.set_tip(now, &v.tip.hash, v.tip.height, v.tip.last_final_height);
            }
        }
    }

    /// The doomslug step (`try_doomslug_timer`): follow the tip, run the timer, sign the
    /// approvals it makes when `key` is given.
    pub fn doomslug_step(&mut self, now: Instant, now_ms: u64, key: Option<&Key>) -> Effects {
        self.sync_doomslug_tip(now);
        let mut fx = Effects::default();
        let account = self.signer(key).map(|s| s.account.to_owned());
        let Some(v) = self.view.as_mut() else {
            return fx;
        };
        let approvals = v.ds.process_timer(now, account.as_deref());
        let (tip_hash, tip_height) = {
            let (h, t) = v.ds.tip();
            (h.to_owned(), t)
        };
        for a in approvals {
            if let Some(signer) = self.signer(key) {
                fx.ledger
                    .push(Entry::approval(&signer, &a, &tip_hash, tip_height, now_ms));
            }
            self.add_approval(&a, now);
            fx.send.push(ToChain::Approval(a));
        }
        fx
    }

    /// The block production step (`handle_block_production`).
    pub fn production_step(&mut self, now: Instant, now_ms: u64, key: Option<&Key>) -> Effects {
        self.sync_doomslug_tip(now);
        let Some(signer) = self.signer(key) else {
            return Effects::default();
        };
        let account = signer.account.to_owned();
        let Some(v) = self.view.as_mut() else {
            return Effects::default();
        };
        let tip = v.tip.clone();
        let enough_chunks = (0..v.epochs.spec().num_shards).all(|s| v.chunks.contains_key(&s));
        let wait = v.ds.missing_chunks_wait();
        let from = v.latest_known.max(tip.height) + 1;
        let top = v.pool.largest_threshold_height();
        let Some(h) = (from..=top).find(|h| {
            v.epochs.block_producer(*h) == account
                && v.pool
                    .ready(&tip.hash, tip.height, *h, enough_chunks, wait, now)
        }) else {
            return Effects::default();
        };
        let block = Block::child(
            &tip,
            h,
            v.epochs.epoch_of(h),
            &account,
            &self.node_id,
            now_ms,
            v.pool.approvers(&tip.hash, tip.height, h),
            v.chunks.values().map(Chunk::header).collect(),
        );
        v.latest_known = h;
        self.blocks_produced += 1;
        let mut fx = Effects::default();
        if let Some(signer) = self.signer(key) {
            fx.ledger.push(Entry::block(&signer, &block, now_ms));
        }
        fx.send.push(ToChain::Block(block.clone()));
        fx.extend(self.adopt(block, now_ms, key));
        fx
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::blocks::ApprovalInner;
    use crate::ledger::SignedKind;
    use crate::network::Network;
    use crate::spec::ValidatorSpec;

    fn spec(validators: &[(&str, u128, bool)]) -> ChainSpec {
        ChainSpec {
            chain_id: "t".into(),
            genesis_height: 0,
            epoch_length: 10_000,
            num_shards: 1,
            seed: 11,
            validators: validators
                .iter()
                .map(|(a, s, ours)| ValidatorSpec {
                    account_id: (*a).into(),
                    stake: *s,
                    ours: *ours,
                    public_key: None,
                })
                .collect(),
            consensus: Timers::sped_up(10),
        }
    }

    fn key(account: &str) -> Key {
        Key {
            account_id: account.into(),
            public_key: "ed25519:k".into(),
        }
    }

    /// A network and nodes driven in lock step in 10 ms ticks, with a per-node delivery delay
    /// (ms) and a per-node offline flag.
    struct World {
        t0: Instant,
        t: u64,
        net: Network,
        nodes: Vec<(Client, Option<Key>, u64, bool)>,
        inbox: Vec<Vec<(u64, ToNode)>>,
        ledger: Vec<Entry>,
    }

    impl World {
        fn new(spec: ChainSpec, nodes: Vec<(&str, Option<Key>, u64)>) -> World {
            let t0 = Instant::now();
            let net = Network::new(spec.clone(), t0, 0);
            let n = nodes.len();
            let mut w = World {
                t0,
                t: 0,
                net,
                nodes: nodes
                    .into_iter()
                    .map(|(id, k, lag)| (Client::new(id, spec.consensus, 0), k, lag, false))
                    .collect(),
                inbox: vec![Vec::new(); n],
                ledger: Vec::new(),
            };
            for i in 0..n {
                let welcome = ToNode::Welcome(Box::new(w.net.welcome()));
                w.inbox[i].push((0, welcome));
            }
            w
        }

        fn deliver(&mut self, from: Option<usize>, out: crate::network::Output) {
            for m in out.broadcast {
                let own_block = matches!(m, crate::network::Broadcast::Block(_));
                for i in 0..self.nodes.len() {
                    if Some(i) != from || own_block {
                        self.inbox[i].push((self.t, ToNode::from(m.clone())));
                    }
                }
            }
        }

        fn step(&mut self) {
            self.t += 10;
            let now = self.t0 + Duration::from_millis(self.t);
            let out = self.net.tick(now, self.t);
            self.deliver(None, out);
            for i in 0..self.nodes.len() {
                let (lag, offline) = (self.nodes[i].2, self.nodes[i].3);
                let due: Vec<ToNode> = {
                    let t = self.t;
                    let inbox = &mut self.inbox[i];
                    let (due, later): (Vec<_>, Vec<_>) =
                        inbox.drain(..).partition(|(at, _)| at + lag <= t);
                    *inbox = later;
                    due.into_iter().map(|(_, m)| m).collect()
                };
                let mut fx = Effects::default();
                let key = self.nodes[i].1.clone();
                let client = &mut self.nodes[i].0;
                if !offline {
                    for m in due {
                        fx.extend(client.on_message(m, now, self.t, key.as_ref()));
                    }
                }
                fx.extend(client.doomslug_step(now, self.t, key.as_ref()));
                fx.extend(client.production_step(now, self.t, key.as_ref()));
                self.ledger.extend(fx.ledger);
                if offline {
                    continue;
                }
                for m in fx.send {
                    let out = match m {
                        ToChain::Approval(a) => Ok(self.net.on_approval(a, now)),
                        ToChain::Chunk(c) => self.net.on_chunk(c),
                        ToChain::Block(b) => self.net.on_block(b, self.t),
                        ToChain::Hello { .. } => Ok(Default::default()),
                    };
                    if let Ok(out) = out {
                        self.deliver(Some(i), out);
                    }
                }
            }
        }

        fn run(&mut self, ms: u64) {
            for _ in 0..ms / 10 {
                self.step();
            }
        }
    }

    #[test]
    fn a_two_validator_chain_stalls_without_ours_and_resumes_with_a_key_holder() {
        let s = spec(&[("ours", 1, true), ("v", 1, false)]);
        let mut w = World::new(s, vec![("n0", None, 0)]);
        w.run(3000);
        assert_eq!(w.net.head().height, 0, "stalled without ours");
        let t_before = w.nodes[0].0.largest_target_height();
        assert!(t_before > 5, "keyless timers ran: {t_before}");
        assert!(w.ledger.is_empty());
        w.nodes[0].1 = Some(key("ours"));
        w.run(3000);
        let h = w.net.head().height;
        assert!(h > 10, "resumed: head {h}");
        assert_eq!(w.nodes[0].0.tip().map(|b| b.height), Some(h));
        assert!(w.nodes[0].0.blocks_produced() > 0);
        let r = crate::ledger::analyze(&w.ledger, "ours");
        assert!(r.no_conflicts() && r.is_safe());
        // It never endorsed below the largest target it had reached without a key.
        assert!(w
            .ledger
            .iter()
            .filter(|e| matches!(e.approval, Some(ApprovalInner::Endorsement(_))))
            .all(|e| e.height > t_before));
    }

    #[test]
    fn two_key_holders_sign_conflicts_when_one_view_lags() {
        // ours holds a quarter: the chain moves without it; both nodes hold its key.
        let s = spec(&[
            ("ours", 1, true),
            ("v1", 1, false),
            ("v2", 1, false),
            ("v3", 1, false),
        ]);
        let mut w = World::new(
            s,
            vec![("a", Some(key("ours")), 0), ("b", Some(key("ours")), 0)],
        );
        w.run(2000);
        let calm = crate::ledger::analyze(&w.ledger, "ours");
        assert!(
            !calm.duplicates.is_empty(),
            "same view: identical approvals"
        );
        // b's view starts lagging by 500 ms (a network hiccup).
        w.nodes[1].2 = 500;
        w.run(3000);
        let r = crate::ledger::analyze(&w.ledger, "ours");
        let approval_conflicts: Vec<_> = r
            .conflicting
            .iter()
            .filter(|c| c.slot.kind == SignedKind::Approval)
            .collect();
        assert!(!approval_conflicts.is_empty(), "{:?}", r.conflicting);
        let c = approval_conflicts[0];
        let inners: BTreeSet<&str> = c
            .signatures
            .iter()
            .filter_map(|e| e.approval.as_ref().map(ApprovalInner::name))
            .collect();
        assert!(inners.contains("endorsement"), "{c:?}");
        assert_eq!(c.nodes.len(), 2);
    }

    #[test]
    fn a_partitioned_key_holder_keeps_signing_skips() {
        let s = spec(&[
            ("ours", 1, true),
            ("v1", 1, false),
            ("v2", 1, false),
            ("v3", 1, false),
        ]);
        let mut w = World::new(
            s,
            vec![("a", Some(key("ours")), 0), ("b", Some(key("ours")), 0)],
        );
        w.run(1000);
        w.nodes[0].3 = true;
        let before = w.ledger.len();
        w.run(2000);
        let a_after: Vec<&Entry> = w.ledger[before..]
            .iter()
            .filter(|e| e.node == "a")
            .collect();
        assert!(
            a_after
                .iter()
                .filter(|e| matches!(e.approval, Some(ApprovalInner::Skip(_))))
                .count()
                >= 3,
            "a partitioned node signs skips from its stale tip"
        );
        let r = crate::ledger::analyze(&w.ledger, "ours");
        assert!(r
            .conflicting
            .iter()
            .any(|c| c.slot.kind == SignedKind::Approval));
    }
}
