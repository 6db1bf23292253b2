//! The signing ledger and the double-signing oracle.
//!
//! Every message a simulator signs with a validator key (a block, a chunk, a doomslug
//! approval) is appended as one JSON line *when it is signed*, before and whether or not it is
//! delivered, so a partitioned node's signatures count. Each line is one `write(2)` on a file
//! opened with `O_APPEND`, which POSIX makes atomic for regular files, so any number of
//! simulators can share one ledger without interleaving.
//!
//! A line (ledger v2):
//!
//! ```json
//! {"height":57,"node":"node1","account":"pool.near","public_key":"ed25519:...","time_ms":1795754731001,
//!  "kind":"approval","approval":{"skip":55},"parent_hash":"...","parent_height":55,"content":"..."}
//! ```
//!
//! `height` is the *target* height: the block's height, the approval's target, the chunk's
//! `height_created` (its parent's height + 1). `content` is equal for identical messages and
//! different otherwise (see [`crate::blocks`]). Lines written by the old simulator (only
//! `height`, `node`, `account`, `public_key`, `time_ms`) still read; they count as blocks whose
//! content is unknown, so two nodes' old lines at one height conflict, as before.
//!
//! The oracle ([`analyze`]) answers what failover tests care about: did two key holders sign
//! *conflicting* messages (the double signing that matters), did they sign identical ones
//! (harmless, but two key holders), which heights did anybody sign, with gaps, and who signed
//! when.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blocks::{Approval, ApprovalInner, Block, Chunk};

pub mod explain;

/// What kind of message was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedKind {
    /// A block.
    Block,
    /// A chunk.
    Chunk,
    /// A doomslug approval (endorsement or skip).
    Approval,
}

impl SignedKind {
    /// `"block"`, `"chunk"` or `"approval"`.
    pub fn name(self) -> &'static str {
        match self {
            SignedKind::Block => "block",
            SignedKind::Chunk => "chunk",
            SignedKind::Approval => "approval",
        }
    }
}

/// One signed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The target height (block height, approval target, chunk `height_created`).
    pub height: u64,
    /// The signing node's id (`NEARD_SIM_NODE_ID`).
    pub node: String,
    /// Validator account of the key used.
    pub account: String,
    /// Validator public key used.
    pub public_key: String,
    /// Unix wall time (ms) of the signing.
    pub time_ms: u64,
    /// What was signed; `None` for a line of the old (v1) ledger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SignedKind>,
    /// For approvals: `{"endorsement": <parent hash>}` or `{"skip": <parent height>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalInner>,
    /// For chunks: the shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u64>,
    /// The parent block's hash (blocks, chunks; approvals: the signer's tip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_hash: Option<String>,
    /// The parent block's height (likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_height: Option<u64>,
    /// Content hash: equal for identical messages, different otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Who signed: the node id, account and public key of a ledger line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer<'a> {
    /// Node id.
    pub node: &'a str,
    /// Validator account.
    pub account: &'a str,
    /// Validator public key.
    pub public_key: &'a str,
}

impl Entry {
    fn new(s: &Signer<'_>, height: u64, time_ms: u64, kind: SignedKind) -> Entry {
        Entry {
            height,
            node: s.node.to_owned(),
            account: s.account.to_owned(),
            public_key: s.public_key.to_owned(),
            time_ms,
            kind: Some(kind),
            approval: None,
            shard: None,
            parent_hash: None,
            parent_height: None,
            content: None,
        }
    }

    /// The line for an approval signed on a tip `(tip_hash, tip_height)`.
    pub fn approval(
        s: &Signer<'_>,
        a: &Approval,
        tip_hash: &str,
        tip_height: u64,
        time_ms: u64,
    ) -> Entry {
        Entry {
            approval: Some(a.inner.clone()),
            parent_hash: Some(tip_hash.to_owned()),
            parent_height: Some(tip_height),
            content: Some(a.content_hash()),
            ..Entry::new(s, a.target_height, time_ms, SignedKind::Approval)
        }
    }

    /// The line for a block.
    pub fn block(s: &Signer<'_>, b: &Block, time_ms: u64) -> Entry {
        Entry {
            parent_hash: Some(b.prev_hash.clone()),
            parent_height: Some(b.prev_height),
            content: Some(b.hash.clone()),
            ..Entry::new(s, b.height, time_ms, SignedKind::Block)
        }
    }

    /// The line for a chunk.
    pub fn chunk(s: &Signer<'_>, c: &Chunk, time_ms: u64) -> Entry {
        Entry {
            shard: Some(c.shard),
            parent_hash: Some(c.prev_hash.clone()),
            parent_height: Some(c.prev_height),
            content: Some(c.hash.clone()),
            ..Entry::new(s, c.height_created(), time_ms, SignedKind::Chunk)
        }
    }

    /// The kind, old lines counting as blocks.
    pub fn kind_or_block(&self) -> SignedKind {
        self.kind.unwrap_or(SignedKind::Block)
    }

    /// The content, old lines getting one per node (two nodes' old lines always differ).
    fn content_key(&self) -> String {
        self.content
            .clone()
            .unwrap_or_else(|| format!("v1-line-of:{}", self.node))
    }

    /// What two signatures must share to be comparable: kind, target height, shard.
    pub fn slot(&self) -> Slot {
        Slot {
            kind: self.kind_or_block(),
            height: self.height,
            shard: self.shard,
        }
    }
}

/// A signing slot: one account may sign one message per slot; two different ones may conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// Kind of message.
    pub kind: SignedKind,
    /// Target height.
    pub height: u64,
    /// Shard (chunks).
    pub shard: Option<u64>,
}

/// A ledger that could not be read. Names the file, and the line for bad lines.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be read.
    #[error("cannot read ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line is not an [`Entry`].
    #[error("ledger {path} line {line}: {source}")]
    Line {
        /// The ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// An open ledger, appended to by one simulator.
#[derive(Debug)]
pub struct Writer {
    file: File,
    path: PathBuf,
}

impl Writer {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Writer> {
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(Writer {
            file,
            path: path.to_owned(),
        })
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line with a single `write(2)` (atomic under `O_APPEND`); a short
    /// write is reported as an error rather than completed by a second, non-atomic write.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        let n = self.file.write(&line)?;
        if n != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to ledger {}: {n} of {}",
                    self.path.display(),
                    line.len()
                ),
            ));
        }
        Ok(())
    }
}

/// Reads one ledger. Empty lines are skipped; a bad line is an error naming file and line.
pub fn read(path: &Path) -> Result<Vec<Entry>, LedgerError> {
    let body = std::fs::read_to_string(path).map_err(|source| LedgerError::Io {
        path: path.to_owned(),
        source,
    })?;
    body.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| LedgerError::Line {
                path: path.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// Reads several ledgers (e.g. one per machine) into one list, ordered by signing time.
pub fn read_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Entry>, LedgerError> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(read(p.as_ref())?);
    }
    all.sort_by_key(|e| (e.time_ms, e.height));
    Ok(all)
}

/// Two or more different messages signed by one account for one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The slot.
    pub slot: Slot,
    /// The first signature of each distinct content, in signing order.
    pub signatures: Vec<Entry>,
    /// Every node that signed anything for the slot.
    pub nodes: BTreeSet<String>,
}

/// One message signed identically by two or more nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The slot.
    pub slot: Slot,
    /// The message's content hash.
    pub content: String,
    /// The nodes that signed it.
    pub nodes: BTreeSet<String>,
}

/// The oracle's verdict on one validator account.
///
/// Heights here are target heights of every kind (block heights, approval targets, chunk
/// heights). A validator approves every target, so for a validating account the heights form
/// a run without holes while it signs; `gaps` are the targets it approved nothing for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Heights for which two or more distinct nodes signed anything (identical or not), with
    /// the nodes: the strict bar, "two key holders at once". Must be empty.
    pub double_signed: BTreeMap<u64, BTreeSet<String>>,
    /// Slots with conflicting signatures: two different blocks at one height, two different
    /// chunks at one height and shard, or for one target an endorsement and any other
    /// approval. The double signing that matters. Must be empty.
    pub conflicting: Vec<Conflict>,
    /// Messages signed identically by two or more nodes (harmless, but two key holders).
    pub duplicates: Vec<Duplicate>,
    /// Targets with two or more different *skips* and no endorsement: honest neard does this
    /// after a late block (doomslug re-skips from the new tip; see [`crate::doomslug`]), so
    /// it is not a conflict; listed for completeness.
    pub reskipped: Vec<Conflict>,
    /// Inclusive height ranges inside `[first_height, last_height]` that nobody signed.
    pub gaps: Vec<(u64, u64)>,
    /// Per node, maximal runs of consecutive signed heights (inclusive), ascending.
    pub intervals: BTreeMap<String, Vec<(u64, u64)>>,
    /// Lowest signed height, if any.
    pub first_height: Option<u64>,
    /// Highest signed height, if any.
    pub last_height: Option<u64>,
    /// The account's entries, ordered by signing time (then height).
    pub entries: Vec<Entry>,
}

impl Report {
    /// True when no height was signed by two nodes (the strict bar).
    pub fn is_safe(&self) -> bool {
        self.double_signed.is_empty()
    }

    /// True when nothing conflicting was signed.
    pub fn no_conflicts(&self) -> bool {
        self.conflicting.is_empty()
    }

    /// The first entry signed at or after `time_ms` (by `node`, or by anyone): for takeover
    /// measurements ("how long after the primary died did someone sign again?").
    pub fn first_signed_after(&self, node: Option<&str>, time_ms: u64) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.time_ms >= time_ms && node.is_none_or(|n| e.node == n))
    }

    /// Like [`Report::first_signed_after`], for one kind of message.
    pub fn first_of_kind_after(
        &self,
        kind: SignedKind,
        node: Option<&str>,
        time_ms: u64,
    ) -> Option<&Entry> {
        self.entries.iter().find(|e| {
            e.kind_or_block() == kind && e.time_ms >= time_ms && node.is_none_or(|n| e.node == n)
        })
    }

    /// Number of heights in gaps.
    pub fn missed_heights(&self) -> u64 {
        self.gaps.iter().map(|(a, b)| b - a + 1).sum()
    }
}

/// Whether differing contents in one slot conflict: always for blocks and chunks; for
/// approvals only when an endorsement is among them (skips from different parents are what
/// an honest doomslug re-signs).
fn contents_conflict(kind: SignedKind, firsts: &[Entry]) -> bool {
    match kind {
        SignedKind::Block | SignedKind::Chunk => true,
        SignedKind::Approval => firsts
            .iter()
            .any(|e| matches!(e.approval, Some(ApprovalInner::Endorsement(_)))),
    }
}

/// Analyzes the entries of `account`: conflicts, duplicates, double signs, gaps and signing
/// intervals.
pub fn analyze(entries: &[Entry], account: &str) -> Report {
    let mut mine: Vec<Entry> = entries
        .iter()
        .filter(|e| e.account == account)
        .cloned()
        .collect();
    mine.sort_by_key(|e| (e.time_ms, e.height));

    let mut by_height: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut by_node: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    // slot -> content -> (first entry, nodes)
    let mut by_slot: BTreeMap<Slot, BTreeMap<String, (Entry, BTreeSet<String>)>> = BTreeMap::new();
    for e in &mine {
        by_height
            .entry(e.height)
            .or_default()
            .insert(e.node.clone());
        by_node.entry(e.node.clone()).or_default().insert(e.height);
        by_slot
            .entry(e.slot())
            .or_default()
            .entry(e.content_key())
            .or_insert_with(|| (e.clone(), BTreeSet::new()))
            .1
            .insert(e.node.clone());
    }

    let mut conflicting = Vec::new();
    let mut reskipped = Vec::new();
    let mut duplicates = Vec::new();
    for (slot, contents) in &by_slot {
        for (content, (_, nodes)) in contents {
            if nodes.len() >= 2 && !content.starts_with("v1-line-of:") {
                duplicates.push(Duplicate {
                    slot: *slot,
                    content: content.clone(),
                    nodes: nodes.clone(),
                });
            }
        }
        if contents.len() >= 2 {
            let mut firsts: Vec<Entry> = contents.values().map(|(e, _)| e.clone()).collect();
            firsts.sort_by_key(|e| e.time_ms);
            let nodes = contents
                .values()
                .flat_map(|(_, n)| n.iter().cloned())
                .collect();
            let c = Conflict {
                slot: *slot,
                signatures: firsts,
                nodes,
            };
            if contents_conflict(slot.kind, &c.signatures) {
                conflicting.push(c);
            } else {
                reskipped.push(c);
            }
        }
    }

    let double_signed = by_height
        .iter()
        .filter(|(_, nodes)| nodes.len() >= 2)
        .map(|(h, nodes)| (*h, nodes.clone()))
        .collect();
    let gaps = runs(by_height.keys().copied())
        .windows(2)
        .map(|w| (w[0].1 + 1, w[1].0 - 1))
        .collect();
    let intervals = by_node
        .into_iter()
        .map(|(node, hs)| (node, runs(hs.into_iter())))
        .collect();

    Report {
        double_signed,
        conflicting,
        duplicates,
        reskipped,
        gaps,
        intervals,
        first_height: by_height.keys().next().copied(),
        last_height: by_height.keys().next_back().copied(),
        entries: mine,
    }
}

/// Maximal runs of consecutive numbers in an ascending, duplicate-free sequence.
fn runs(heights: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for h in heights {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == h => *end = h,
            _ => out.push((h, h)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
