//! What validators sign: approvals, blocks and chunks, with their content hashes and the
//! finality rules of block headers.
//!
//! Hashes are deterministic stand-ins (see [`crate::chain::hash`]). What matters is which
//! messages are *identical*: two approvals with the same account, target and inner are the same
//! message (real approvals are deterministic signatures over exactly that); two blocks or
//! chunks made by two nodes never are (real ones carry their own timestamps and transactions),
//! so their hashes include the producing node and the time.

use serde::{Deserialize, Serialize};

use crate::chain;

/// What an approval approves (nearcore `ApprovalInner`, core/primitives/src/block.rs): an
/// endorsement of the parent block by hash, or a skip from the parent height.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalInner {
    /// Endorses the block with this hash (the target is its height + 1).
    Endorsement(String),
    /// Skips from the parent at this height to a target more than one height above it.
    Skip(u64),
}

impl ApprovalInner {
    /// nearcore's `ApprovalInner::new`: an endorsement when the target is right after the
    /// parent, a skip otherwise.
    pub fn new(parent_hash: &str, parent_height: u64, target_height: u64) -> ApprovalInner {
        if target_height == parent_height + 1 {
            ApprovalInner::Endorsement(parent_hash.to_owned())
        } else {
            ApprovalInner::Skip(parent_height)
        }
    }

    /// `"endorsement"` or `"skip"`.
    pub fn name(&self) -> &'static str {
        match self {
            ApprovalInner::Endorsement(_) => "endorsement",
            ApprovalInner::Skip(_) => "skip",
        }
    }
}

/// A doomslug approval (nearcore `Approval`, without the signature).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approving validator.
    pub account_id: String,
    /// Endorsement or skip.
    pub inner: ApprovalInner,
    /// The height of the block this approval is for.
    pub target_height: u64,
}

impl Approval {
    /// Content hash: equal for equal (account, target, inner), different otherwise.
    pub fn content_hash(&self) -> String {
        let inner = match &self.inner {
            ApprovalInner::Endorsement(h) => format!("e:{h}"),
            ApprovalInner::Skip(p) => format!("s:{p}"),
        };
        chain::hash(
            &format!("approval:{}:{}", self.account_id, inner),
            self.target_height,
        )
    }
}

/// The header of a chunk as a block carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHeader {
    /// Shard.
    pub shard: u64,
    /// Chunk hash.
    pub hash: String,
    /// Chunk producer.
    pub producer: String,
}

/// A chunk: built on a parent block, for the next height (`height_created = parent + 1`), and
/// included as a *new* chunk by whichever block is built on that parent (nearcore: the block
/// sets `height_included`; `EpochInfoAggregator::update_tail` charges the chunk to the
/// producer sampled at `prev_block_height + 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// Chunk hash (content hash).
    pub hash: String,
    /// Shard.
    pub shard: u64,
    /// Hash of the parent block.
    pub prev_hash: String,
    /// Height of the parent block.
    pub prev_height: u64,
    /// The chunk producer.
    pub producer: String,
    /// Unix ms of production.
    pub time_ms: u64,
}

impl Chunk {
    /// A chunk for `shard` on `prev`, made by `producer` on node `node` at `time_ms`.
    pub fn new(prev: &Block, shard: u64, producer: &str, node: &str, time_ms: u64) -> Chunk {
        Chunk {
            hash: chain::hash(
                &format!("chunk:{producer}:{}:{shard}:{node}:{time_ms}", prev.hash),
                prev.height + 1,
            ),
            shard,
            prev_hash: prev.hash.clone(),
            prev_height: prev.height,
            producer: producer.to_owned(),
            time_ms,
        }
    }

    /// The height the chunk was made for.
    pub fn height_created(&self) -> u64 {
        self.prev_height + 1
    }

    /// The header a block carries.
    pub fn header(&self) -> ChunkHeader {
        ChunkHeader {
            shard: self.shard,
            hash: self.hash.clone(),
            producer: self.producer.clone(),
        }
    }
}

/// A block header with what the simulator needs of the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Block hash (content hash).
    pub hash: String,
    /// Height.
    pub height: u64,
    /// Parent hash (empty for genesis).
    pub prev_hash: String,
    /// Parent height (the genesis height for genesis).
    pub prev_height: u64,
    /// Height of the last doomslug-final block (`last_ds_final_block`).
    pub last_ds_final_height: u64,
    /// Height of the last final block (`last_final_block`).
    pub last_final_height: u64,
    /// Epoch index.
    pub epoch: u64,
    /// Block producer (empty for genesis).
    pub producer: String,
    /// Unix ms of production (the header timestamp).
    pub time_ms: u64,
    /// Accounts whose approvals the block carries.
    pub approvals: Vec<String>,
    /// New chunks, by shard.
    pub chunks: Vec<ChunkHeader>,
}

impl Block {
    /// The genesis block of a chain with `genesis_hash` at `height`, stamped `time_ms`.
    pub fn genesis(genesis_hash: &str, height: u64, time_ms: u64) -> Block {
        Block {
            hash: genesis_hash.to_owned(),
            height,
            prev_hash: String::new(),
            prev_height: height,
            last_ds_final_height: height,
            last_final_height: height,
            epoch: 0,
            producer: String::new(),
            time_ms,
            approvals: Vec::new(),
            chunks: Vec::new(),
        }
    }

    /// A block at `height` on `prev`. Finality follows nearcore's `Block::produce`
    /// (core/primitives/src/block.rs): the parent is doomslug-final when this block is at the
    /// very next height; the grandparent is final when, in addition, the parent's own
    /// doomslug-final block was its parent.
    #[allow(clippy::too_many_arguments)]
    pub fn child(
        prev: &Block,
        height: u64,
        epoch: u64,
        producer: &str,
        node: &str,
        time_ms: u64,
        approvals: Vec<String>,
        chunks: Vec<ChunkHeader>,
    ) -> Block {
        let next = height == prev.height + 1;
        let last_ds_final_height = if next {
            prev.height
        } else {
            prev.last_ds_final_height
        };
        let last_final_height = if next && prev.last_ds_final_height == prev.prev_height {
            prev.prev_height
        } else {
            prev.last_final_height
        };
        Block {
            hash: chain::hash(
                &format!("block:{producer}:{}:{node}:{time_ms}", prev.hash),
                height,
            ),
            height,
            prev_hash: prev.hash.clone(),
            prev_height: prev.height,
            last_ds_final_height,
            last_final_height,
            epoch,
            producer: producer.to_owned(),
            time_ms,
            approvals,
            chunks,
        }
    }

    /// Whether the block includes a new chunk for `shard`.
    pub fn has_chunk(&self, shard: u64) -> bool {
        self.chunks.iter().any(|c| c.shard == shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(prev: &Block, h: u64) -> Block {
        Block::child(prev, h, 0, "p", "n", h, vec![], vec![])
    }

    #[test]
    fn finality_follows_consecutive_heights() {
        let g = Block::genesis("g", 0, 0);
        let b1 = child(&g, 1);
        let b2 = child(&b1, 2);
        let b3 = child(&b2, 3);
        assert_eq!((b2.last_ds_final_height, b2.last_final_height), (1, 0));
        assert_eq!((b3.last_ds_final_height, b3.last_final_height), (2, 1));
        // A skipped height: nothing new is final, until two consecutive blocks follow.
        let b5 = child(&b3, 5);
        assert_eq!((b5.last_ds_final_height, b5.last_final_height), (2, 1));
        let b6 = child(&b5, 6);
        assert_eq!((b6.last_ds_final_height, b6.last_final_height), (5, 1));
        let b7 = child(&b6, 7);
        assert_eq!((b7.last_ds_final_height, b7.last_final_height), (6, 5));
    }

    #[test]
    fn identical_approvals_hash_alike_blocks_never() {
        let a = Approval {
            account_id: "x".into(),
            inner: ApprovalInner::new("h", 4, 5),
            target_height: 5,
        };
        assert_eq!(a.inner, ApprovalInner::Endorsement("h".into()));
        assert_eq!(a.content_hash(), a.clone().content_hash());
        let skip = Approval {
            inner: ApprovalInner::new("h", 4, 6),
            target_height: 6,
            ..a.clone()
        };
        assert_eq!(skip.inner, ApprovalInner::Skip(4));
        let skip5 = Approval {
            inner: ApprovalInner::Skip(3),
            ..a.clone()
        };
        assert_ne!(a.content_hash(), skip5.content_hash());
        let g = Block::genesis("g", 0, 0);
        let x = Block::child(&g, 1, 0, "p", "node-a", 5, vec![], vec![]);
        let y = Block::child(&g, 1, 0, "p", "node-b", 5, vec![], vec![]);
        assert_ne!(x.hash, y.hash);
    }
}
