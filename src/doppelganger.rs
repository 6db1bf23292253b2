//! Doppelganger detection: our validator key signing somewhere this cluster does not know of
//! (a key copied by hand to another machine, a second kuutamod cluster on another Consul).
//!
//! The Consul lock cannot see such a signer. The chain can: neard counts, per validator
//! account and epoch, the blocks and chunks produced (`near_validators_{blocks,chunks}_produced`),
//! and, per process, what this neard produced itself. Two rules, both on those counters:
//!
//! - **Nobody of ours validates** (the lock is free, released, or held by a holder silent for
//!   longer than the TTL, and this node is not validating): once that has lasted a grace
//!   period (the last blocks of a leader that just stopped are counted a little later), any
//!   increase of our account's counters was signed by someone else.
//! - **This node validates**: our account's counters may grow only as fast as this neard's own
//!   (within a small tolerance for blocks counted late); anything more was signed elsewhere.
//!
//! A raised alarm shows in `kuutamod_doppelganger` and the log, and the node does not promote
//! until our account has been seen silent (no unexplained production) for a configured number
//! of heights: the heights before a leaderless baseline's first reading after its grace do not
//! count as silent. A validating node is only alarmed, not stepped down: stepping down would leave the
//! account to the other signer; the operator must find it. Pure: the caller passes the time
//! and what neard showed.

use std::time::Duration;

use crate::clock::Instant;

/// What our validator account produced this epoch (`near_validators_*{account_id}`), and what
/// this neard process produced since it started (`near_{block,chunk}_produced_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Production {
    /// Blocks our account produced this epoch.
    pub blocks_produced: u64,
    /// Blocks our account was assigned this epoch (so far).
    pub blocks_expected: u64,
    /// Chunks our account produced this epoch.
    pub chunks_produced: u64,
    /// Chunks our account was assigned this epoch (so far).
    pub chunks_expected: u64,
    /// Blocks this process produced since it started.
    pub own_blocks: u64,
    /// Chunks this process produced since it started.
    pub own_chunks: u64,
}

/// Blocks and chunks of ours that may be counted after this node's own counters moved (late
/// inclusion, a previous leader's last block with its chunks) before the leader rule alarms.
pub const LEADER_TOLERANCE: u64 = 8;

/// What this cluster is doing, as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    /// This node validates.
    Leading,
    /// No node of ours validates.
    Leaderless,
    /// Another node of ours validates (a live holder).
    OtherLeads,
}

/// A change of the alarm, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Raised, with the evidence.
    Raised(String),
    /// Cleared: our account was silent long enough.
    Cleared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Baseline {
    None,
    Leaderless {
        since: Instant,
        account: Option<u64>,
    },
    Leading {
        account: u64,
        own: u64,
        excess: u64,
    },
}

/// The detector.
#[derive(Debug, Clone)]
pub struct Doppelganger {
    heights: u64,
    grace: Duration,
    baseline: Baseline,
    last_account: Option<u64>,
    last_own: Option<u64>,
    alarm: Option<String>,
    /// Head at the last unexplained production (the alarm clears `heights` after it).
    evidence_head: u64,
    /// Head from which the current baseline counts silent heights: a leaderless baseline from
    /// its first reading after the grace (`None` before it), a leading one from its start, and
    /// while another node of ours leads, from when it began (the leader's own rule watches
    /// then). The alarm clears only `heights` after it, never on the reading that starts a
    /// leaderless baseline.
    judged_from: Option<u64>,
}

impl Doppelganger {
    /// A detector that clears after `heights` silent heights (0 disables it) and waits `grace`
    /// after the cluster became leaderless before it counts.
    pub fn new(heights: u64, grace: Duration) -> Doppelganger {
        Doppelganger {
            heights,
            grace,
            baseline: Baseline::None,
            last_account: None,
            last_own: None,
            alarm: None,
            evidence_head: 0,
            judged_from: None,
        }
    }

    /// Whether the alarm is raised.
    pub fn alarmed(&self) -> bool {
        self.alarm.is_some()
    }

    /// The evidence of the raised alarm.
    pub fn evidence(&self) -> Option<&str> {
        self.alarm.as_deref()
    }

    /// One reading of neard's counters at `head`, while the cluster is as `cluster` says.
    pub fn observe(
        &mut self,
        now: Instant,
        head: u64,
        p: Production,
        cluster: Cluster,
    ) -> Option<Change> {
        if self.heights == 0 {
            return None;
        }
        let account = p.blocks_produced + p.chunks_produced;
        let own = p.own_blocks + p.own_chunks;
        // A new epoch resets the account's counters, a restarted neard its own: start over.
        let reset = self.last_account.is_some_and(|a| account < a)
            || self.last_own.is_some_and(|o| own < o);
        self.last_account = Some(account);
        self.last_own = Some(own);
        let fits = matches!(
            (self.baseline, cluster),
            (Baseline::Leaderless { .. }, Cluster::Leaderless)
                | (Baseline::Leading { .. }, Cluster::Leading)
                | (Baseline::None, Cluster::OtherLeads)
        );
        if reset || !fits {
            self.judged_from = (cluster != Cluster::Leaderless).then_some(head);
            self.baseline = match cluster {
                Cluster::Leaderless => Baseline::Leaderless {
                    since: now,
                    account: None,
                },
                Cluster::Leading => Baseline::Leading {
                    account,
                    own,
                    excess: 0,
                },
                Cluster::OtherLeads => Baseline::None,
            };
        }
        let mut evidence = None;
        match &mut self.baseline {
            Baseline::Leaderless {
                since,
                account: base,
            } => {
                if now >= *since + self.grace {
                    match base {
                        None => {
                            *base = Some(account);
                            self.judged_from = Some(head);
                        }
                        Some(b) if account > *b => {
                            evidence = Some(format!(
                                "our account produced {} blocks and chunks while no node of this cluster validated",
                                account - *b
                            ));
                            *b = account;
                        }
                        Some(_) => {}
                    }
                }
            }
            Baseline::Leading {
                account: a0,
                own: o0,
                excess,
            } => {
                let now_excess = (account - *a0).saturating_sub(own - *o0);
                if now_excess > *excess + LEADER_TOLERANCE {
                    evidence = Some(format!(
                        "our account produced {} more blocks and chunks than this node's neard",
                        now_excess - *excess
                    ));
                    *excess = now_excess;
                }
            }
            Baseline::None => {}
        }
        match (evidence, &self.alarm) {
            (Some(e), None) => {
                self.evidence_head = head;
                self.alarm = Some(e.clone());
                Some(Change::Raised(e))
            }
            (Some(e), Some(_)) => {
                self.evidence_head = head;
                self.alarm = Some(e);
                None
            }
            (None, Some(_))
                if self
                    .judged_from
                    .is_some_and(|from| head >= from.max(self.evidence_head) + self.heights) =>
            {
                self.alarm = None;
                Some(Change::Cleared)
            }
            (None, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn prod(account: u64, own: u64) -> Production {
        Production {
            blocks_produced: account,
            chunks_produced: 0,
            blocks_expected: account,
            chunks_expected: 0,
            own_blocks: own,
            own_chunks: 0,
        }
    }

    const GRACE: Duration = Duration::from_secs(1);

    #[test]
    fn production_while_nobody_of_ours_validates_raises_and_silence_clears() {
        let mut d = Doppelganger::new(20, GRACE);
        assert_eq!(d.observe(t(0), 100, prod(5, 0), Cluster::Leaderless), None);
        // The old leader's last block is counted during the grace: no alarm.
        assert_eq!(
            d.observe(t(500), 105, prod(6, 0), Cluster::Leaderless),
            None
        );
        assert_eq!(
            d.observe(t(1000), 110, prod(6, 0), Cluster::Leaderless),
            None
        );
        assert!(matches!(
            d.observe(t(2000), 120, prod(7, 0), Cluster::Leaderless),
            Some(Change::Raised(_))
        ));
        assert!(d.alarmed());
        assert_eq!(
            d.observe(t(3000), 130, prod(7, 0), Cluster::Leaderless),
            None
        );
        assert_eq!(
            d.observe(t(4000), 140, prod(7, 0), Cluster::Leaderless),
            Some(Change::Cleared),
            "20 silent heights"
        );
    }

    /// Seen in the integration test: a standby raised the alarm, saw the other standby hold the
    /// lock for a moment (no judgement), and its next reading, 5 s of heights later and the
    /// first of a new leaderless baseline, cleared the alarm while the doppelganger still signed.
    #[test]
    fn heights_nobody_judged_do_not_clear_the_alarm() {
        let mut d = Doppelganger::new(30, GRACE);
        d.observe(t(0), 10, prod(5, 0), Cluster::Leaderless);
        d.observe(t(1000), 20, prod(5, 0), Cluster::Leaderless);
        assert!(matches!(
            d.observe(t(1100), 21, prod(6, 0), Cluster::Leaderless),
            Some(Change::Raised(_))
        ));
        assert_eq!(
            d.observe(t(1200), 22, prod(6, 0), Cluster::OtherLeads),
            None
        );
        // Far more than 30 heights later, but the first reading of a new leaderless baseline.
        assert_eq!(
            d.observe(t(6200), 100, prod(20, 0), Cluster::Leaderless),
            None
        );
        assert!(d.alarmed());
        assert_eq!(
            d.observe(t(6300), 101, prod(20, 0), Cluster::Leaderless),
            None
        );
        assert!(d.alarmed(), "the grace of the new baseline judges nothing");
        // Judged from here: the doppelganger signs again, then falls silent.
        assert_eq!(
            d.observe(t(7300), 110, prod(20, 0), Cluster::Leaderless),
            None
        );
        assert_eq!(
            d.observe(t(8300), 120, prod(22, 0), Cluster::Leaderless),
            None
        );
        assert_eq!(
            d.observe(t(9300), 149, prod(22, 0), Cluster::Leaderless),
            None
        );
        assert_eq!(
            d.observe(t(9400), 150, prod(22, 0), Cluster::Leaderless),
            Some(Change::Cleared),
            "30 heights judged silent"
        );
    }

    /// Seen in the integration test, with the first version of `judged_from`: every reading
    /// while another node of ours led started the count again, and the alarm never cleared.
    #[test]
    fn an_alarm_clears_while_another_node_of_ours_leads() {
        let mut d = Doppelganger::new(30, GRACE);
        d.observe(t(0), 10, prod(5, 0), Cluster::Leaderless);
        d.observe(t(1000), 20, prod(5, 0), Cluster::Leaderless);
        assert!(matches!(
            d.observe(t(1100), 21, prod(6, 0), Cluster::Leaderless),
            Some(Change::Raised(_))
        ));
        assert_eq!(
            d.observe(t(2000), 40, prod(9, 0), Cluster::OtherLeads),
            None
        );
        assert_eq!(
            d.observe(t(3000), 60, prod(12, 0), Cluster::OtherLeads),
            None
        );
        assert_eq!(
            d.observe(t(4000), 70, prod(14, 0), Cluster::OtherLeads),
            Some(Change::Cleared),
            "30 heights since another node of ours leads"
        );
    }

    #[test]
    fn a_leader_is_alarmed_when_its_account_outgrows_its_own_neard() {
        let mut d = Doppelganger::new(20, GRACE);
        d.observe(t(0), 100, prod(10, 0), Cluster::Leading);
        // Our own blocks, counted late: fine.
        assert_eq!(d.observe(t(1000), 110, prod(18, 5), Cluster::Leading), None);
        assert!(matches!(
            d.observe(t(2000), 120, prod(40, 10), Cluster::Leading),
            Some(Change::Raised(_))
        ));
    }

    #[test]
    fn another_leader_of_ours_or_a_new_epoch_is_no_evidence() {
        let mut d = Doppelganger::new(20, GRACE);
        d.observe(t(0), 100, prod(5, 0), Cluster::OtherLeads);
        assert_eq!(
            d.observe(t(5000), 200, prod(50, 0), Cluster::OtherLeads),
            None
        );
        d.observe(t(6000), 210, prod(50, 0), Cluster::Leaderless);
        d.observe(t(8000), 220, prod(50, 0), Cluster::Leaderless);
        assert_eq!(
            d.observe(t(9000), 230, prod(2, 0), Cluster::Leaderless),
            None,
            "epoch reset"
        );
        assert!(!d.alarmed());
        let mut off = Doppelganger::new(0, GRACE);
        off.observe(t(0), 1, prod(1, 0), Cluster::Leaderless);
        assert_eq!(
            off.observe(t(5000), 9, prod(9, 0), Cluster::Leaderless),
            None
        );
    }
}
