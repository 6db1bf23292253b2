//! "The rest of the network": the canonical chain, the approval and chunk pools, and the
//! virtual validators, as a pure state machine driven by messages and clock ticks.
//!
//! The chain process (`neard-sim chain`) runs one [`Network`] behind a Unix socket; a node run
//! without a chain process embeds a private one. Nodes send what they sign (approvals, chunks,
//! blocks of their account); the network broadcasts what it accepts.
//!
//! Virtual validators are honest, deterministic nodes with no network delay: each runs its own
//! [`Doomslug`] on the chain head with the spec's timers, approves while online, produces the
//! chunks assigned to it when the head changes, and produces its blocks as soon as doomslug
//! allows (approvals from more than 2/3 of the stake on the head; with missing chunks after
//! `get_delay/6` more), at most once per height (client_actor `handle_block_production` with
//! `latest_known`). An offline virtual validator keeps its timers but signs nothing.
//!
//! The chain never reorganizes: a block is accepted only on the current head, at a greater
//! height, from the height's assigned producer, carrying approvals of more than 2/3 of the
//! stake; the first such block wins. (nearcore's fork choice would also accept a higher block on
//! an older parent; with honest virtual validators that follow the head at once, such a block
//! cannot gather a quorum.)
//!
//! Longer than ~500 lines on purpose: [`Network`] is one pure state machine (the chain, the
//! pools and the virtual validators that act on them, about 380 lines with this description);
//! the rest are its unit tests, which drive it tick by tick.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::blocks::{Approval, Block, Chunk};
use crate::doomslug::{ApprovalPool, Doomslug};
use crate::epoch::{Decided, EpochStats, Epochs};
use crate::spec::ChainSpec;

/// Canonical blocks kept in memory (a node joining late only needs the head).
const KEEP_BLOCKS: usize = 64;

/// What a node learns when it (re)joins: the spec, the head, and the state around it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The chain's genesis.
    pub spec: ChainSpec,
    /// The current head.
    pub head: Block,
    /// Approvals held for targets above the head.
    pub approvals: Vec<Approval>,
    /// Chunks held on the head.
    pub chunks: Vec<Chunk>,
    /// Production counters of the head's epoch.
    pub stats: EpochStats,
}

/// Why a message from a node was not accepted (logged by the chain process).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// A block not on the current head (late, or a competing block at a height already taken).
    #[error("block {height} by {producer} is not on the head ({head})")]
    NotOnHead {
        /// Its height.
        height: u64,
        /// Its producer.
        producer: String,
        /// The head height.
        head: u64,
    },
    /// A block from an account that is not the height's producer.
    #[error("block {height} by {producer}, but {assigned} is the producer")]
    WrongProducer {
        /// Its height.
        height: u64,
        /// Its producer.
        producer: String,
        /// The assigned producer.
        assigned: String,
    },
    /// A block without approvals of more than 2/3 of the stake.
    #[error("block {height} carries approvals of {approved} of {total} stake")]
    NotEnoughApprovals {
        /// Its height.
        height: u64,
        /// Approving stake.
        approved: u128,
        /// Total stake.
        total: u128,
    },
    /// A chunk not on the head, from the wrong producer, or a second chunk for a shard.
    #[error("chunk for shard {shard} at {height} by {producer} not taken")]
    Chunk {
        /// Shard.
        shard: u64,
        /// Its height.
        height: u64,
        /// Its producer.
        producer: String,
    },
}

/// What the network did in one step: messages for the nodes and decided heights.
#[derive(Debug, Default)]
pub struct Output {
    /// Blocks, approvals and chunks to broadcast.
    pub broadcast: Vec<Broadcast>,
    /// Heights decided by accepted blocks, with the unix ms of the decision.
    pub decided: Vec<(u64, Decided)>,
}

/// A message every node should hear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Broadcast {
    /// An accepted block.
    Block(Block),
    /// An approval.
    Approval(Approval),
    /// A chunk on the head.
    Chunk(Chunk),
}

#[derive(Debug, Clone)]
struct Virtual {
    account: String,
    ds: Doomslug,
    latest_known: u64,
}

/// The chain and the virtual validators.
#[derive(Debug, Clone)]
pub struct Network {
    epochs: Epochs,
    head: Block,
    blocks: BTreeMap<u64, Block>,
    pool: ApprovalPool,
    chunks: BTreeMap<u64, Chunk>,
    virtuals: Vec<Virtual>,
    offline: BTreeSet<String>,
    stats: EpochStats,
}

impl Network {
    /// A chain at genesis (stamped `now_ms`), virtual validators for every non-`ours` account.
    pub fn new(spec: ChainSpec, now: Instant, now_ms: u64) -> Network {
        let head = Block::genesis(&spec.genesis_hash(), spec.genesis_height, now_ms);
        let virtuals = spec
            .validators
            .iter()
            .filter(|v| !v.ours)
            .map(|v| Virtual {
                account: v.account_id.clone(),
                ds: Doomslug::new(spec.genesis_height, &spec.consensus, now),
                latest_known: spec.genesis_height,
            })
            .collect();
        Network {
            epochs: Epochs::new(spec),
            blocks: BTreeMap::from([(head.height, head.clone())]),
            head,
            pool: ApprovalPool::default(),
            chunks: BTreeMap::new(),
            virtuals,
            offline: BTreeSet::new(),
            stats: EpochStats::default(),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &ChainSpec {
        self.epochs.spec()
    }

    /// The head.
    pub fn head(&self) -> &Block {
        &self.head
    }

    /// The block at `height`, if recent and canonical.
    pub fn block_at(&self, height: u64) -> Option<&Block> {
        self.blocks.get(&height)
    }

    /// The production counters so far.
    pub fn stats(&self) -> &EpochStats {
        &self.stats
    }

    /// Switches virtual validators off (they stop signing) or back on.
    pub fn set_offline(&mut self, offline: BTreeSet<String>) {
        self.offline = offline;
    }

    /// The virtual validators that are offline.
    pub fn offline(&self) -> &BTreeSet<String> {
        &self.offline
    }

    /// What a (re)joining node is told.
    pub fn welcome(&self) -> Welcome {
        let mut stats = self.stats.clone();
        stats.keep_from(self.head.epoch);
        Welcome {
            spec: self.spec().clone(),
            head: self.head.clone(),
            approvals: self.pool.pending(self.head.height),
            chunks: self.chunks.values().cloned().collect(),
            stats,
        }
    }

    fn stake(&self, account: &str) -> u128 {
        self.spec().stake_of(account)
    }

    fn add_approval(&mut self, a: &Approval, now: Instant) -> bool {
        if a.target_height <= self.head.height {
            return false;
        }
        let stake = self.stake(&a.account_id);
        if stake == 0 {
            return false;
        }
        let total = self.spec().total_stake();
        self.pool.add(a, stake, total, now);
        true
    }

    /// An approval from a node: kept and passed on if it targets a height above the head.
    pub fn on_approval(&mut self, a: Approval, now: Instant) -> Output {
        let mut out = Output::default();
        if self.add_approval(&a, now) {
            out.broadcast.push(Broadcast::Approval(a));
        }
        out
    }

    /// A chunk from a node: kept if it is built on the head, by the assigned producer, and the
    /// first for its shard.
    pub fn on_chunk(&mut self, c: Chunk) -> Result<Output, Rejected> {
        let assigned = self.epochs.chunk_producer(c.prev_height + 1, c.shard);
        if c.prev_hash != self.head.hash
            || assigned != c.producer
            || self.chunks.contains_key(&c.shard)
            || c.shard >= self.spec().num_shards
        {
            return Err(Rejected::Chunk {
                shard: c.shard,
                height: c.height_created(),
                producer: c.producer,
            });
        }
        self.chunks.insert(c.shard, c.clone());
        Ok(Output {
            broadcast: vec![Broadcast::Chunk(c)],
            decided: Vec::new(),
        })
    }

    /// A block from a node (for an `ours` account).
    pub fn on_block(&mut self, b: Block, now_ms: u64) -> Result<Output, Rejected> {
        if b.prev_hash != self.head.hash || b.height <= self.head.height {
            return Err(Rejected::NotOnHead {
                height: b.height,
                producer: b.producer,
                head: self.head.height,
            });
        }
        let assigned = self.epochs.block_producer(b.height);
        if assigned != b.producer {
            return Err(Rejected::WrongProducer {
                height: b.height,
                producer: b.producer.clone(),
                assigned: assigned.to_owned(),
            });
        }
        let approvers: BTreeSet<&String> = b.approvals.iter().collect();
        let approved: u128 = approvers.iter().map(|a| self.stake(a)).sum();
        let total = self.spec().total_stake();
        if approved <= total * 2 / 3 {
            return Err(Rejected::NotEnoughApprovals {
                height: b.height,
                approved,
                total,
            });
        }
        Ok(self.accept(b, now_ms))
    }

    fn accept(&mut self, b: Block, now_ms: u64) -> Output {
        let decided = self.stats.record(&self.epochs, &b);
        self.stats.keep_from(b.epoch.saturating_sub(1));
        self.head = b.clone();
        self.blocks.insert(b.height, b.clone());
        while self.blocks.len() > KEEP_BLOCKS {
            self.blocks.pop_first();
        }
        self.pool.prune(b.height);
        self.chunks.clear();
        Output {
            broadcast: vec![Broadcast::Block(b)],
            decided: decided.into_iter().map(|d| (now_ms, d)).collect(),
        }
    }

    /// Runs the virtual validators: doomslug timers, chunks on a new head, blocks when ready.
    pub fn tick(&mut self, now: Instant, now_ms: u64) -> Output {
        let mut out = Output::default();
        let head = self.head.clone();
        let shards = self.spec().num_shards;
        let mut approvals = Vec::new();
        let mut chunks = Vec::new();
        for v in &mut self.virtuals {
            let online = !self.offline.contains(&v.account);
            if v.ds.tip().0 != head.hash {
                v.ds.set_tip(now, &head.hash, head.height, head.last_final_height);
                if online {
                    for shard in 0..shards {
                        if self.epochs.chunk_producer(head.height + 1, shard) == v.account {
                            chunks.push(Chunk::new(&head, shard, &v.account, "chain", now_ms));
                        }
                    }
                }
            }
            let signer = online.then_some(v.account.as_str());
            approvals.extend(v.ds.process_timer(now, signer));
        }
        for c in chunks {
            if let Ok(o) = self.on_chunk(c) {
                out.broadcast.extend(o.broadcast);
            }
        }
        for a in approvals {
            if self.add_approval(&a, now) {
                out.broadcast.push(Broadcast::Approval(a));
            }
        }
        if let Some(b) = self.virtual_block(now, now_ms) {
            let o = self.accept(b, now_ms);
            out.broadcast.extend(o.broadcast);
            out.decided.extend(o.decided);
        }
        out
    }

    /// A block an online virtual validator may produce now, if any.
    fn virtual_block(&mut self, now: Instant, now_ms: u64) -> Option<Block> {
        let head = &self.head;
        let enough_chunks =
            (0..self.epochs.spec().num_shards).all(|s| self.chunks.contains_key(&s));
        let top = self.pool.largest_threshold_height();
        for v in &mut self.virtuals {
            if self.offline.contains(&v.account) {
                continue;
            }
            for h in v.latest_known.max(head.height) + 1..=top {
                if self.epochs.block_producer(h) != v.account {
                    continue;
                }
                let wait = v.ds.missing_chunks_wait();
                if !self
                    .pool
                    .ready(&head.hash, head.height, h, enough_chunks, wait, now)
                {
                    continue;
                }
                v.latest_known = h;
                let approvals = self.pool.approvers(&head.hash, head.height, h);
                let chunks = self.chunks.values().map(Chunk::header).collect();
                return Some(Block::child(
                    head,
                    h,
                    self.epochs.epoch_of(h),
                    &v.account,
                    "chain",
                    now_ms,
                    approvals,
                    chunks,
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::{Timers, ValidatorSpec};

    pub(crate) fn spec(validators: &[(&str, u128, bool)], shards: u64) -> ChainSpec {
        ChainSpec {
            chain_id: "t".into(),
            genesis_height: 0,
            epoch_length: 10_000,
            num_shards: shards,
            seed: 3,
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

    /// Runs the network for `ms` milliseconds of simulated time in 10 ms ticks.
    fn run(net: &mut Network, t0: Instant, from_ms: u64, ms: u64) -> Vec<(u64, Decided)> {
        let mut decided = Vec::new();
        let mut t = from_ms;
        while t < from_ms + ms {
            t += 10;
            decided.extend(net.tick(t0 + Duration::from_millis(t), t).decided);
        }
        decided
    }

    #[test]
    fn four_validators_keep_producing_with_one_offline_and_stall_with_two() {
        let t0 = Instant::now();
        let mut net = Network::new(
            spec(
                &[
                    ("a", 1, false),
                    ("b", 1, false),
                    ("c", 1, false),
                    ("d", 1, false),
                ],
                1,
            ),
            t0,
            0,
        );
        run(&mut net, t0, 0, 3000);
        let h1 = net.head().height;
        assert!(h1 >= 20, "all online: head {h1} after 3 s of 60 ms blocks");

        net.set_offline(BTreeSet::from(["d".to_owned()]));
        let decided = run(&mut net, t0, 3000, 5000);
        let h2 = net.head().height;
        assert!(h2 >= h1 + 20, "one offline: head {h1} -> {h2}");
        // d's heights are skipped, everybody else's produced.
        let skipped: Vec<&Decided> = decided
            .iter()
            .map(|(_, d)| d)
            .filter(|d| !d.produced)
            .collect();
        assert!(!skipped.is_empty());
        assert!(
            skipped.iter().all(|d| d.block_producer == "d"),
            "{skipped:?}"
        );

        net.set_offline(BTreeSet::from(["c".to_owned(), "d".to_owned()]));
        run(&mut net, t0, 8000, 1000);
        let h3 = net.head().height;
        run(&mut net, t0, 9000, 5000);
        assert_eq!(net.head().height, h3, "two of four offline: stalled");
        // Skips keep coming with growing targets.
        assert!(net.pool.largest_approval_height() > h3 + 5);

        net.set_offline(BTreeSet::new());
        run(&mut net, t0, 14_000, 2000);
        assert!(net.head().height > h3, "resumed");
    }

    #[test]
    fn blocks_of_ours_need_a_node_and_count_as_missed() {
        let t0 = Instant::now();
        // ours has half the stake: nothing moves without it.
        let mut net = Network::new(spec(&[("ours", 1, true), ("v", 1, false)], 1), t0, 0);
        run(&mut net, t0, 0, 3000);
        assert_eq!(net.head().height, 0);
        // ours with a quarter: the chain moves, ours' heights are skipped.
        let mut net = Network::new(
            spec(
                &[
                    ("ours", 1, true),
                    ("v1", 1, false),
                    ("v2", 1, false),
                    ("v3", 1, false),
                ],
                2,
            ),
            t0,
            0,
        );
        let decided = run(&mut net, t0, 0, 4000);
        assert!(net.head().height > 20);
        let ours_blocks: Vec<&Decided> = decided
            .iter()
            .map(|(_, d)| d)
            .filter(|d| d.block_producer == "ours")
            .collect();
        assert!(!ours_blocks.is_empty() && ours_blocks.iter().all(|d| !d.produced));
        let c = net.stats().get(0, "ours");
        assert_eq!(c.blocks_produced, 0);
        assert_eq!(c.blocks_expected, ours_blocks.len() as u64);
        assert_eq!(c.chunks_produced, 0);
        assert!(c.chunks_expected > 0);
        let v1 = net.stats().get(0, "v1");
        assert_eq!(v1.blocks_produced, v1.blocks_expected);
    }

    #[test]
    fn a_node_block_is_checked() {
        let t0 = Instant::now();
        let mut net = Network::new(spec(&[("ours", 3, true), ("v", 1, false)], 1), t0, 0);
        let g = net.head().clone();
        let h = (1..100)
            .find(|h| net.epochs.block_producer(*h) == "ours")
            .expect("ours has heights");
        let wrong = (1..100)
            .find(|h| net.epochs.block_producer(*h) == "v")
            .expect("v has heights");
        let b = |height: u64, producer: &str, approvals: &[&str]| {
            Block::child(
                &g,
                height,
                0,
                producer,
                "n",
                5,
                approvals.iter().map(|a| (*a).to_owned()).collect(),
                vec![],
            )
        };
        assert!(matches!(
            net.on_block(b(wrong, "ours", &["ours", "v"]), 5),
            Err(Rejected::WrongProducer { .. })
        ));
        assert!(matches!(
            net.on_block(b(h, "ours", &["v"]), 5),
            Err(Rejected::NotEnoughApprovals { .. })
        ));
        let out = net.on_block(b(h, "ours", &["ours"]), 5).expect("accepted");
        assert_eq!(out.decided.len() as u64, h);
        assert_eq!(net.head().height, h);
        assert!(matches!(
            net.on_block(b(h + 1, "ours", &["ours"]), 6),
            Err(Rejected::NotOnHead { .. })
        ));
    }
}
