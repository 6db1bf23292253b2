//! The signing ledger and the double-signing oracle.
//!
//! While a simulator holds a validator key and is synced, it appends one JSON line per height
//! it signs: `{"height","node","account","public_key","time_ms"}`. Each line is one `write(2)`
//! on a file opened with `O_APPEND`, which POSIX makes atomic for regular files, so any number
//! of simulators can share one ledger without interleaving. The oracle ([`analyze`]) reads the
//! lines back and answers the question failover tests care about: did two nodes ever sign the
//! same height for one account, where were the gaps, and who signed when.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One signed height.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The height signed.
    pub height: u64,
    /// The signing node's id (`NEARD_SIM_NODE_ID`).
    pub node: String,
    /// Validator account of the key used.
    pub account: String,
    /// Validator public key used.
    pub public_key: String,
    /// Unix wall time (ms) of the signing.
    pub time_ms: u64,
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

/// The oracle's verdict on one validator account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Heights signed by two or more distinct nodes, with the nodes. Must be empty.
    pub double_signed: BTreeMap<u64, BTreeSet<String>>,
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
    /// True when no height was signed by two nodes.
    pub fn is_safe(&self) -> bool {
        self.double_signed.is_empty()
    }

    /// The first entry signed at or after `time_ms` (by `node`, or by anyone): for takeover
    /// measurements ("how long after the primary died did someone sign again?").
    pub fn first_signed_after(&self, node: Option<&str>, time_ms: u64) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.time_ms >= time_ms && node.is_none_or(|n| e.node == n))
    }

    /// Number of heights in gaps.
    pub fn missed_heights(&self) -> u64 {
        self.gaps.iter().map(|(a, b)| b - a + 1).sum()
    }
}

/// Analyzes the entries of `account`: double signs, gaps and signing intervals.
pub fn analyze(entries: &[Entry], account: &str) -> Report {
    let mut mine: Vec<Entry> = entries
        .iter()
        .filter(|e| e.account == account)
        .cloned()
        .collect();
    mine.sort_by_key(|e| (e.time_ms, e.height));

    let mut by_height: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut by_node: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for e in &mine {
        by_height
            .entry(e.height)
            .or_default()
            .insert(e.node.clone());
        by_node.entry(e.node.clone()).or_default().insert(e.height);
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
mod tests {
    use super::*;

    fn e(height: u64, node: &str, time_ms: u64) -> Entry {
        Entry {
            height,
            node: node.into(),
            account: "pool.near".into(),
            public_key: "ed25519:x".into(),
            time_ms,
        }
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
        std::fs::write(&path, "{\"height\": 1}\n").expect("write");
        let err = read(&path).expect_err("bad line").to_string();
        assert!(err.contains("ledger.jsonl line 1"), "{err}");
    }
}
