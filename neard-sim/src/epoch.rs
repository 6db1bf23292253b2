//! Epochs: who produces which block and chunk, and the per-epoch production counters.
//!
//! Assignment follows nearcore's `EpochInfo::sample_block_producer(height)` and
//! `sample_chunk_producer(height, shard)` (core/primitives/src/epoch_info.rs, V3/V4): a
//! stake-weighted draw seeded by the epoch's random seed and the height (and shard). The
//! simulator draws with its own hash instead of sha256 and the alias method, so the sequence
//! differs from neard's, but the distribution (proportional to stake) and determinism (the
//! same for every process that knows the genesis) are the same.
//!
//! Counters follow `EpochInfoAggregator::update_tail`
//! (chain/epoch-manager/src/epoch_info_aggregator.rs): for a block at height `h` on a parent
//! at `p`, every height in `p+1..=h` counts one expected block for its producer, and `h` one
//! produced; every shard counts one expected chunk for the producer sampled at `p+1`, produced
//! if the block has a new chunk for that shard. Skipped heights are only counted once a later
//! block is produced.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::blocks::Block;
use crate::spec::ChainSpec;

/// Assignment of heights to producers, a pure function of the spec.
#[derive(Debug, Clone)]
pub struct Epochs {
    spec: ChainSpec,
    total: u128,
}

impl Epochs {
    /// The assignment of `spec`.
    pub fn new(spec: ChainSpec) -> Epochs {
        let total = spec.total_stake().max(1);
        Epochs { spec, total }
    }

    /// The spec.
    pub fn spec(&self) -> &ChainSpec {
        &self.spec
    }

    /// Epoch index of `height`: heights `genesis+1 ..= genesis+L` are epoch 0, and so on; the
    /// genesis height itself is in epoch 0. (neard ends an epoch on finality, so its epochs
    /// can be a few heights longer; see docs/neard-sim.md.)
    pub fn epoch_of(&self, height: u64) -> u64 {
        let g = self.spec.genesis_height;
        if height <= g {
            0
        } else {
            (height - g - 1) / self.spec.epoch_length
        }
    }

    /// First height of epoch `e`.
    pub fn epoch_start(&self, e: u64) -> u64 {
        self.spec.genesis_height + 1 + e * self.spec.epoch_length
    }

    /// First height of the epoch after the one containing `height`.
    pub fn next_epoch_start(&self, height: u64) -> u64 {
        self.epoch_start(self.epoch_of(height) + 1)
    }

    /// Stake-weighted draw among the validators with `salt` and `height`.
    fn draw(&self, salt: &str, height: u64) -> &str {
        let bytes = crate::chain::hash_bytes(salt.as_bytes(), height);
        let mut r_bytes = [0u8; 16];
        r_bytes.copy_from_slice(&bytes[..16]);
        let mut r = u128::from_le_bytes(r_bytes) % self.total;
        for v in &self.spec.validators {
            if r < v.stake {
                return &v.account_id;
            }
            r -= v.stake;
        }
        // Unreachable with positive stakes; the last validator is a safe answer.
        self.spec
            .validators
            .last()
            .map_or("", |v| v.account_id.as_str())
    }

    /// The block producer of `height`.
    pub fn block_producer(&self, height: u64) -> &str {
        let e = self.epoch_of(height);
        self.draw(&format!("bp:{}:{e}", self.spec.seed), height)
    }

    /// The chunk producer of `shard` at `height` (the producer of the chunk built on a parent
    /// at `height - 1`).
    pub fn chunk_producer(&self, height: u64, shard: u64) -> &str {
        let e = self.epoch_of(height);
        self.draw(&format!("cp:{}:{e}:{shard}", self.spec.seed), height)
    }

    /// Shards for which `account` produces the chunk at `height`.
    pub fn chunk_shards_of(&self, account: &str, height: u64) -> Vec<u64> {
        (0..self.spec.num_shards)
            .filter(|s| self.chunk_producer(height, *s) == account)
            .collect()
    }

    /// nearcore's maintenance windows (chain/client/src/view_client_actor.rs
    /// `get_maintenance_windows`): from `head` to the end of its epoch, the maximal ranges
    /// `[start, end)` of heights at which `account` produces neither the block nor any chunk.
    /// A non-validator gets one range to the end of the epoch.
    pub fn maintenance_windows(&self, account: &str, head: u64) -> Vec<(u64, u64)> {
        let end = self.next_epoch_start(head);
        let mut out = Vec::new();
        let mut start: Option<u64> = None;
        for h in head..end {
            let busy = self.block_producer(h) == account
                || (0..self.spec.num_shards).any(|s| self.chunk_producer(h, s) == account);
            match (busy, start) {
                (false, None) => start = Some(h),
                (true, Some(s)) => {
                    out.push((s, h));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push((s, end));
        }
        out
    }
}

/// Production counters of one validator in one epoch (`near_validators_*` metrics, `validators`
/// RPC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Blocks produced.
    pub blocks_produced: u64,
    /// Blocks expected.
    pub blocks_expected: u64,
    /// Chunks produced.
    pub chunks_produced: u64,
    /// Chunks expected.
    pub chunks_expected: u64,
}

/// What a block decided, height by height: one [`Decided`] per height in `prev+1..=height`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    /// The height.
    pub height: u64,
    /// Epoch index of the deciding block.
    pub epoch: u64,
    /// Block producer assigned to the height.
    pub block_producer: String,
    /// Whether a block was produced at this height (false: skipped).
    pub produced: bool,
    /// Per shard, the chunk expected from the block (empty for skipped heights).
    pub chunks: Vec<DecidedChunk>,
}

/// One shard's chunk in a produced block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedChunk {
    /// Shard.
    pub shard: u64,
    /// Chunk producer assigned (sampled at the parent height + 1).
    pub producer: String,
    /// Whether the block includes a new chunk for the shard.
    pub included: bool,
}

/// Per-epoch counters, fed block by block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch index -> account -> counters.
    pub epochs: BTreeMap<u64, BTreeMap<String, Counters>>,
}

impl EpochStats {
    /// Accounts `block` (on a parent at `block.prev_height`) and returns what it decided.
    pub fn record(&mut self, epochs: &Epochs, block: &Block) -> Vec<Decided> {
        let e = block.epoch;
        let mut decided = Vec::new();
        for h in block.prev_height + 1..=block.height {
            let bp = epochs.block_producer(h).to_owned();
            let produced = h == block.height;
            let c = self.counters_mut(e, &bp);
            c.blocks_expected += 1;
            if produced {
                c.blocks_produced += 1;
            }
            decided.push(Decided {
                height: h,
                epoch: e,
                block_producer: bp,
                produced,
                chunks: Vec::new(),
            });
        }
        let mut chunks = Vec::new();
        for shard in 0..epochs.spec().num_shards {
            let cp = epochs
                .chunk_producer(block.prev_height + 1, shard)
                .to_owned();
            let included = block.has_chunk(shard);
            let c = self.counters_mut(e, &cp);
            c.chunks_expected += 1;
            if included {
                c.chunks_produced += 1;
            }
            chunks.push(DecidedChunk {
                shard,
                producer: cp,
                included,
            });
        }
        if let Some(last) = decided.last_mut() {
            last.chunks = chunks;
        }
        decided
    }

    fn counters_mut(&mut self, epoch: u64, account: &str) -> &mut Counters {
        self.epochs
            .entry(epoch)
            .or_default()
            .entry(account.to_owned())
            .or_default()
    }

    /// Counters of `account` in `epoch` (zeros if none).
    pub fn get(&self, epoch: u64, account: &str) -> Counters {
        self.epochs
            .get(&epoch)
            .and_then(|m| m.get(account))
            .copied()
            .unwrap_or_default()
    }

    /// Drops epochs before `epoch` (a node only reports the current one).
    pub fn keep_from(&mut self, epoch: u64) {
        self.epochs = self.epochs.split_off(&epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Timers, ValidatorSpec};

    pub(crate) fn spec(stakes: &[(&str, u128)], shards: u64) -> ChainSpec {
        ChainSpec {
            chain_id: "t".into(),
            genesis_height: 0,
            epoch_length: 1000,
            num_shards: shards,
            seed: 42,
            validators: stakes
                .iter()
                .map(|(a, s)| ValidatorSpec {
                    account_id: (*a).into(),
                    stake: *s,
                    ours: false,
                    public_key: None,
                })
                .collect(),
            consensus: Timers::sped_up(10),
        }
    }

    #[test]
    fn assignment_is_stake_weighted_and_deterministic() {
        let e = Epochs::new(spec(&[("a", 1), ("b", 3)], 2));
        let again = Epochs::new(spec(&[("a", 1), ("b", 3)], 2));
        let n = 4000;
        let mut a_blocks = 0;
        let mut a_chunks = 0;
        for h in 1..=n {
            assert_eq!(e.block_producer(h), again.block_producer(h));
            assert_eq!(e.chunk_producer(h, 1), again.chunk_producer(h, 1));
            a_blocks += u64::from(e.block_producer(h) == "a");
            a_chunks += u64::from(e.chunk_producer(h, 0) == "a");
        }
        // 25% of the stake: 1000 of 4000 expected; allow ±15% of that.
        for got in [a_blocks, a_chunks] {
            assert!((850..=1150).contains(&got), "a got {got} of {n}");
        }
        // Another seed gives another sequence.
        let mut other = spec(&[("a", 1), ("b", 3)], 2);
        other.seed = 43;
        let other = Epochs::new(other);
        assert!((1..=200).any(|h| other.block_producer(h) != e.block_producer(h)));
    }

    #[test]
    fn epochs_and_windows() {
        let mut s = spec(&[("a", 1), ("b", 1)], 1);
        s.epoch_length = 10;
        let e = Epochs::new(s);
        assert_eq!((e.epoch_of(0), e.epoch_of(1), e.epoch_of(10)), (0, 0, 0));
        assert_eq!(
            (e.epoch_of(11), e.epoch_start(1), e.next_epoch_start(5)),
            (1, 11, 11)
        );
        let w = e.maintenance_windows("a", 3);
        for (start, end) in &w {
            assert!(start < end && *end <= 11);
            for h in *start..*end {
                assert_ne!(e.block_producer(h), "a");
                assert_ne!(e.chunk_producer(h, 0), "a");
            }
        }
        // Every free height of [3, 11) is in exactly one window.
        let free: Vec<u64> = (3..11)
            .filter(|h| e.block_producer(*h) != "a" && e.chunk_producer(*h, 0) != "a")
            .collect();
        let covered: Vec<u64> = w.iter().flat_map(|(a, b)| *a..*b).collect();
        assert_eq!(free, covered);
        assert_eq!(e.maintenance_windows("nobody", 3), vec![(3, 11)]);
    }

    #[test]
    fn counters_charge_skipped_heights_and_missing_chunks() {
        let e = Epochs::new(spec(&[("a", 1), ("b", 1)], 1));
        let g = Block::genesis("g", 0, 0);
        let b3 = Block::child(&g, 3, 0, e.block_producer(3), "n", 1, vec![], vec![]);
        let mut stats = EpochStats::default();
        let decided = stats.record(&e, &b3);
        assert_eq!(decided.len(), 3);
        assert!(!decided[0].produced && !decided[1].produced && decided[2].produced);
        assert_eq!(decided[2].chunks.len(), 1);
        assert!(!decided[2].chunks[0].included);
        assert_eq!(decided[2].chunks[0].producer, e.chunk_producer(1, 0));
        let total: Counters = ["a", "b"].iter().fold(Counters::default(), |acc, a| {
            let c = stats.get(0, a);
            Counters {
                blocks_produced: acc.blocks_produced + c.blocks_produced,
                blocks_expected: acc.blocks_expected + c.blocks_expected,
                chunks_produced: acc.chunks_produced + c.chunks_produced,
                chunks_expected: acc.chunks_expected + c.chunks_expected,
            }
        });
        assert_eq!(
            total,
            Counters {
                blocks_produced: 1,
                blocks_expected: 3,
                chunks_produced: 0,
                chunks_expected: 1
            }
        );
    }
}
