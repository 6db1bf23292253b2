//! The invariants, and what a broken one looks like.
//!
//! Checked after every event of a run ([`crate::world`]):
//!
//! 1. **No conflicting signatures** for our account: the neard simulator's ledger oracle
//!    (`neard_sim::ledger::analyze`, its `conflicting` list), applied incrementally to every
//!    entry as it is signed: two different blocks at one height, two different chunks at one
//!    height and shard, or for one approval target an endorsement and any other approval.
//!    Different skips for one target are not conflicts (honest doomslug re-skips).
//! 2. **One key holder**: at no instant do two neard processes that can still run (not
//!    SIGKILLed, not exited) have our validator key loaded. This is claim (1) of
//!    `docs/failover.md` stated about the world, and stronger than (1): it catches an overlap
//!    even when the chain happens not to show a conflict.
//! 3. **No key without a recent lock**: a neard has our key loaded only while its node's
//!    session holds the leader key in Consul's store, or held it within the last TTL of true
//!    time (the time a standby waits before its key may go live).
//! 4. **Liveness**: once every fault is over, within a bound derived from the timing, exactly
//!    one neard holds our key, it is in sync and it has signed an approval within the last
//!    two seconds.

use std::collections::BTreeMap;
use std::fmt;

use neard_sim::blocks::ApprovalInner;
use neard_sim::ledger::{Entry, SignedKind};

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two conflicting signatures for one slot.
    Conflict {
        /// True time (ms).
        at_ms: u64,
        /// What: kind, height, and the two signers.
        what: String,
    },
    /// Two neards held our key at once.
    TwoHolders {
        /// True time (ms).
        at_ms: u64,
        /// The hosts.
        hosts: Vec<usize>,
    },
    /// A neard held our key without a recent lock.
    StaleHolder {
        /// True time (ms).
        at_ms: u64,
        /// The host.
        host: usize,
        /// When its node last held the lock (ms), if ever.
        last_lock_ms: Option<u64>,
    },
    /// No single validator after the faults healed.
    Liveness {
        /// True time (ms).
        at_ms: u64,
        /// What was seen.
        what: String,
    },
    /// A node was ready to take over for longer than the liveness bound, and our account
    /// signed nothing meanwhile.
    Unsigned {
        /// True time (ms).
        at_ms: u64,
        /// What was seen.
        what: String,
    },
    /// A switchover did not do what was asked, or `kuutamoctl switchover --wait` reported
    /// what did not happen.
    Switchover {
        /// True time (ms).
        at_ms: u64,
        /// What was seen.
        what: String,
    },
    /// After the faults healed, a node's status record in Consul is not the one it last
    /// published (`kuutamoctl status` shows a stale node).
    StaleStatus {
        /// True time (ms).
        at_ms: u64,
        /// What was seen.
        what: String,
    },
    /// A hot swap on a healthy neard fell back to a restart.
    Fallback {
        /// True time (ms).
        at_ms: u64,
        /// The host.
        host: usize,
    },
    /// Two hosts ran with one node id and neither said so.
    SilentIdConflict {
        /// True time (ms).
        at_ms: u64,
    },
    /// The decision code or the simulation panicked.
    Panic(String),
}

impl Violation {
    /// A short name (for counts).
    pub fn name(&self) -> &'static str {
        match self {
            Violation::Conflict { .. } => "conflict",
            Violation::TwoHolders { .. } => "two-holders",
            Violation::StaleHolder { .. } => "stale-holder",
            Violation::Liveness { .. } => "liveness",
            Violation::Unsigned { .. } => "unsigned",
            Violation::Switchover { .. } => "switchover",
            Violation::StaleStatus { .. } => "stale-status",
            Violation::Fallback { .. } => "fallback",
            Violation::SilentIdConflict { .. } => "silent-id-conflict",
            Violation::Panic(_) => "panic",
        }
    }

    /// Whether it is a safety violation: two signers, conflicting signatures, a key without
    /// the lock, or a panic (the others are what an operator sees missing: a validator, a
    /// switchover as asked, a current status).
    pub fn is_safety(&self) -> bool {
        matches!(
            self,
            Violation::Conflict { .. }
                | Violation::TwoHolders { .. }
                | Violation::StaleHolder { .. }
                | Violation::Panic(_)
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Conflict { at_ms, what } => {
                write!(f, "t={at_ms}ms conflicting signatures: {what}")
            }
            Violation::TwoHolders { at_ms, hosts } => {
                write!(f, "t={at_ms}ms two neards hold the key: hosts {hosts:?}")
            }
            Violation::StaleHolder {
                at_ms,
                host,
                last_lock_ms,
            } => write!(
                f,
                "t={at_ms}ms host {host}'s neard holds the key, its node last held the lock at {}",
                last_lock_ms.map_or("never".to_string(), |t| format!("{t}ms"))
            ),
            Violation::Liveness { at_ms, what } => write!(f, "t={at_ms}ms liveness: {what}"),
            Violation::Unsigned { at_ms, what } => {
                write!(f, "t={at_ms}ms a node ready, nobody signing: {what}")
            }
            Violation::Switchover { at_ms, what } => write!(f, "t={at_ms}ms switchover: {what}"),
            Violation::StaleStatus { at_ms, what } => {
                write!(f, "t={at_ms}ms stale status record: {what}")
            }
            Violation::Fallback { at_ms, host } => write!(
                f,
                "t={at_ms}ms host {host}'s hot swap fell back to a restart on a healthy neard"
            ),
            Violation::SilentIdConflict { at_ms } => write!(
                f,
                "t={at_ms}ms two hosts run with one node id and neither reports it"
            ),
            Violation::Panic(p) => write!(f, "panic: {p}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Signed {
    content: u64,
    endorsement: bool,
    node: String,
}

/// The incremental conflict check (invariant 1).
#[derive(Debug, Default)]
pub struct Conflicts {
    slots: BTreeMap<(u8, u64, u64), Vec<Signed>>,
    /// Every entry seen, kept only when asked for (tests cross-check with the batch oracle).
    pub kept: Option<Vec<Entry>>,
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Conflicts {
    /// An empty check; `keep` keeps every entry for a cross-check.
    pub fn new(keep: bool) -> Conflicts {
        Conflicts {
            slots: BTreeMap::new(),
            kept: keep.then(Vec::new),
        }
    }

    /// Records one signed entry of our account; returns a description of the conflict it
    /// makes, if any.
    pub fn record(&mut self, e: &Entry) -> Option<String> {
        if let Some(k) = self.kept.as_mut() {
            k.push(e.clone());
        }
        let kind = e.kind_or_block();
        let kind_code = match kind {
            SignedKind::Block => 0u8,
            SignedKind::Chunk => 1,
            SignedKind::Approval => 2,
        };
        let slot = (kind_code, e.height, e.shard.unwrap_or(0));
        let content = fnv(e.content.as_deref().unwrap_or(&e.node));
        let endorsement = matches!(e.approval, Some(ApprovalInner::Endorsement(_)));
        let seen = self.slots.entry(slot).or_default();
        if seen.iter().any(|s| s.content == content) {
            return None;
        }
        let clash = seen.iter().find(|s| match kind {
            SignedKind::Block | SignedKind::Chunk => true,
            SignedKind::Approval => endorsement || s.endorsement,
        });
        let what = clash.map(|s| {
            format!(
                "{} at height {} signed by {} and differently by {}",
                kind.name(),
                e.height,
                s.node,
                e.node
            )
        });
        seen.push(Signed {
            content,
            endorsement,
            node: e.node.clone(),
        });
        what
    }
}
