//! The chain log: what the chain produced, one JSON line per decided height, and what an
//! account missed of what was assigned to it.
//!
//! A height is decided when a block at or above it is accepted: the block's own height is
//! produced, the heights between it and its parent are skipped (nearcore counts them the same
//! way, `EpochInfoAggregator::update_tail`). A produced line lists, per shard, the chunk producer
//! charged for that block's chunk and whether the chunk was included:
//!
//! ```json
//! {"height":57,"time_ms":1795754731001,"epoch":0,"block_producer":"pool.near","produced":true,
//!  "chunks":[{"shard":0,"producer":"v1","included":true}]}
//! ```
//!
//! `time_ms` is when the chain decided the height (accepted the block), so a window
//! `[from_ms, to_ms)` in [`missed_assigned`] selects heights decided in it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::epoch::{Decided, DecidedChunk};

/// File name of the chain log in the chain's directory.
pub const FILE: &str = "chain-log.jsonl";

/// One decided height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The height.
    pub height: u64,
    /// Unix ms of the decision.
    pub time_ms: u64,
    /// Epoch index.
    pub epoch: u64,
    /// The block producer assigned to the height.
    pub block_producer: String,
    /// Whether a block was produced at the height.
    pub produced: bool,
    /// Per shard, the chunk the block was expected to include (empty for skipped heights).
    pub chunks: Vec<DecidedChunk>,
}

impl Line {
    /// The line for `d`, decided at `time_ms`.
    pub fn new(time_ms: u64, d: Decided) -> Line {
        Line {
            height: d.height,
            time_ms,
            epoch: d.epoch,
            block_producer: d.block_producer,
            produced: d.produced,
            chunks: d.chunks,
        }
    }
}

/// An open chain log, appended to by the chain process.
#[derive(Debug)]
pub struct Writer {
    file: File,
}

impl Writer {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> io::Result<Writer> {
        Ok(Writer {
            file: OpenOptions::new().append(true).create(true).open(path)?,
        })
    }

    /// Appends a line with one `write(2)`.
    pub fn append(&mut self, line: &Line) -> io::Result<()> {
        let mut body = serde_json::to_vec(line).map_err(io::Error::other)?;
        body.push(b'\n');
        self.file.write_all(&body)
    }
}

/// A chain log that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChainLogError {
    /// The file could not be read.
    #[error("cannot read chain log {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line is not a [`Line`].
    #[error("chain log {path} line {line}: {source}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// Reads a chain log (empty lines skipped).
pub fn read(path: &Path) -> Result<Vec<Line>, ChainLogError> {
    let body = std::fs::read_to_string(path).map_err(|source| ChainLogError::Io {
        path: path.to_owned(),
        source,
    })?;
    body.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| ChainLogError::Line {
                path: path.to_owned(),
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// What an account was assigned in a window and what it missed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Missed {
    /// Heights decided in the window whose block producer was the account.
    pub blocks_expected: u64,
    /// Of those, skipped ones.
    pub blocks_missed: u64,
    /// Chunks charged to the account by blocks decided in the window.
    pub chunks_expected: u64,
    /// Of those, not included.
    pub chunks_missed: u64,
    /// The skipped heights.
    pub missed_block_heights: Vec<u64>,
    /// `(block height, shard)` of the missing chunks.
    pub missed_chunks: Vec<(u64, u64)>,
}

/// What `account` was assigned and missed among the heights decided in `[from_ms, to_ms)`.
pub fn missed_assigned(lines: &[Line], account: &str, from_ms: u64, to_ms: u64) -> Missed {
    let mut m = Missed::default();
    for l in lines
        .iter()
        .filter(|l| l.time_ms >= from_ms && l.time_ms < to_ms)
    {
        if l.block_producer == account {
            m.blocks_expected += 1;
            if !l.produced {
                m.blocks_missed += 1;
                m.missed_block_heights.push(l.height);
            }
        }
        for c in l.chunks.iter().filter(|c| c.producer == account) {
            m.chunks_expected += 1;
            if !c.included {
                m.chunks_missed += 1;
                m.missed_chunks.push((l.height, c.shard));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(height: u64, time_ms: u64, bp: &str, produced: bool, chunks: &[(&str, bool)]) -> Line {
        Line {
            height,
            time_ms,
            epoch: 0,
            block_producer: bp.into(),
            produced,
            chunks: chunks
                .iter()
                .enumerate()
                .map(|(s, (p, i))| DecidedChunk {
                    shard: s as u64,
                    producer: (*p).into(),
                    included: *i,
                })
                .collect(),
        }
    }

    #[test]
    fn counts_only_the_window_and_the_account() {
        let lines = vec![
            line(1, 100, "a", true, &[("a", true), ("b", true)]),
            line(2, 300, "a", false, &[]),
            line(3, 300, "b", true, &[("a", false), ("a", true)]),
            line(4, 900, "a", false, &[]),
        ];
        let m = missed_assigned(&lines, "a", 200, 900);
        assert_eq!(
            (
                m.blocks_expected,
                m.blocks_missed,
                m.chunks_expected,
                m.chunks_missed
            ),
            (1, 1, 2, 1)
        );
        assert_eq!(m.missed_block_heights, [2]);
        assert_eq!(m.missed_chunks, [(3, 0)]);
        let all = missed_assigned(&lines, "a", 0, u64::MAX);
        assert_eq!((all.blocks_expected, all.blocks_missed), (3, 2));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let mut w = Writer::open(&path).expect("open");
        for l in &lines {
            w.append(l).expect("append");
        }
        assert_eq!(read(&path).expect("read"), lines);
    }
}
