//! Doomslug, as nearcore runs it (chain/chain/src/doomslug.rs), without the chain around it.
//!
//! [`Doomslug`] is one node's timer state: its tip, the timer height, and the largest target
//! height it ever approved. Every node runs it, with or without a validator key: the timers and
//! `largest_target_height` advance either way, approvals are only *created* when a signer is
//! given (nearcore 2.x `process_timer(&mut self, signer)`). The rules, all from doomslug.rs:
//!
//! - `set_tip(hash, height, last_final_height)`: timer height = tip + 1, timer restarted,
//!   endorsement pending.
//! - `process_timer(now)`, at most 20 steps (`MAX_TIMER_ITERS`) per call:
//!   - a pending endorsement is due `min_block_production_delay` after the *previous*
//!     endorsement; it is sent for target tip + 1 only if `tip >= largest_target_height`
//!     (never endorse a height already skipped to), and `largest_target_height` becomes tip + 1;
//!   - a skip is due `get_delay(timer.height - largest_final_height)` after the timer started;
//!     it targets `timer.height + 1`, raises `largest_target_height` to at least that, and the
//!     timer moves one height on from where it was due (not from now).
//! - `get_delay(n) = min(max_block_wait_delay, max_block_production_delay + (max/10)(n-2))`.
//!
//! Consequence worth knowing: after a late block at `h` arrives, the node skips to `h+2`,
//! `h+3`... again, even if it skipped to those targets from an older tip before; nearcore's own
//! unit test `test_endorsements_and_skips_basic` shows it (`Skip(6)` to 8 after skips from 5 had
//! reached past 8). So one honest node can sign two different *skips* for one target; it never
//! signs an endorsement for a target it approved before, nor two endorsements for one target.
//!
//! [`ApprovalPool`] is the receiving side: one approval per (account, target), the later one
//! replacing the earlier (`last_approval_per_account`, `withdraw_approval`), stake summed per
//! (target, inner), a block ready when the approving stake is strictly more than 2/3 of the
//! total (`get_block_production_readiness`, `TwoThirds` mode).
//!
//! Longer than ~500 lines on purpose: the code, about 300 lines, is the port of one nearcore
//! file and reads against it; the rest are its unit tests, one or more per rule above (one of
//! them nearcore's own `test_endorsements_and_skips_basic`), kept beside the rules they pin
//! down.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::blocks::{Approval, ApprovalInner};
use crate::spec::Timers;

/// nearcore's `MAX_TIMER_ITERS`: steps per `process_timer` call, so a long pause cannot loop
/// forever.
pub const MAX_TIMER_ITERS: usize = 20;

/// One node's doomslug timer state.
#[derive(Debug, Clone)]
pub struct Doomslug {
    tip_hash: String,
    tip_height: u64,
    largest_target_height: u64,
    largest_final_height: u64,
    endorsement_pending: bool,
    timer_started: Instant,
    last_endorsement_sent: Instant,
    timer_height: u64,
    endorsement_delay: Duration,
    min_delay: Duration,
    delay_step: Duration,
    max_delay: Duration,
}

impl Doomslug {
    /// A fresh instance; `largest_target_height` comes from the node's store (nearcore persists
    /// it before sending approvals, `save_largest_target_height`, and reads it back at start).
    pub fn new(largest_target_height: u64, timers: &Timers, now: Instant) -> Doomslug {
        Doomslug {
            tip_hash: String::new(),
            tip_height: 0,
            largest_target_height,
            largest_final_height: 0,
            endorsement_pending: false,
            timer_started: now,
            last_endorsement_sent: now,
            timer_height: 0,
            endorsement_delay: timers.min_block_production_delay,
            min_delay: timers.max_block_production_delay,
            delay_step: timers.delay_step(),
            max_delay: timers.max_block_wait_delay,
        }
    }

    /// `get_delay(n)`: the skip delay `n` heights after the last final block.
    pub fn get_delay(&self, n: u64) -> Duration {
        let n32 = u32::try_from(n).unwrap_or(u32::MAX);
        std::cmp::min(
            self.max_delay,
            self.min_delay + self.delay_step.saturating_mul(n32.saturating_sub(2)),
        )
    }

    /// The delay a producer with enough approvals but missing chunks waits
    /// (`ready_to_produce_block`: `get_delay(timer.height - largest_final_height) / 6`).
    pub fn missing_chunks_wait(&self) -> Duration {
        self.get_delay(self.timer_height.saturating_sub(self.largest_final_height)) / 6
    }

    /// Updates the tip and restarts the timer (`set_tip`).
    pub fn set_tip(&mut self, now: Instant, hash: &str, height: u64, last_final_height: u64) {
        self.tip_hash = hash.to_owned();
        self.tip_height = height;
        self.largest_final_height = last_final_height;
        self.timer_height = height + 1;
        self.timer_started = now;
        self.endorsement_pending = true;
    }

    /// Runs the timer (`process_timer`); approvals are created only with a signer (its
    /// account), but the state advances either way.
    pub fn process_timer(&mut self, now: Instant, signer: Option<&str>) -> Vec<Approval> {
        let mut out = Vec::new();
        for _ in 0..MAX_TIMER_ITERS {
            let skip_delay =
                self.get_delay(self.timer_height.saturating_sub(self.largest_final_height));
            let tip = self.tip_height;
            if self.endorsement_pending
                && now >= self.last_endorsement_sent + self.endorsement_delay
            {
                if tip >= self.largest_target_height {
                    self.largest_target_height = tip + 1;
                    out.extend(self.create(tip + 1, signer));
                }
                self.last_endorsement_sent = now;
                self.endorsement_pending = false;
            }
            if now >= self.timer_started + skip_delay {
                self.largest_target_height = self.largest_target_height.max(self.timer_height + 1);
                out.extend(self.create(self.timer_height + 1, signer));
                self.timer_started += skip_delay;
                self.timer_height += 1;
            } else {
                break;
            }
        }
        out
    }

    fn create(&self, target: u64, signer: Option<&str>) -> Option<Approval> {
        signer.map(|account| Approval {
            account_id: account.to_owned(),
            inner: ApprovalInner::new(&self.tip_hash, self.tip_height, target),
            target_height: target,
        })
    }

    /// Largest target height approved (or that would have been, without a signer).
    pub fn largest_target_height(&self) -> u64 {
        self.largest_target_height
    }

    /// Largest final height known from the tip.
    pub fn largest_final_height(&self) -> u64 {
        self.largest_final_height
    }

    /// The tip `(hash, height)`.
    pub fn tip(&self) -> (&str, u64) {
        (&self.tip_hash, self.tip_height)
    }

    /// The timer height (the next skip targets one above it).
    pub fn timer_height(&self) -> u64 {
        self.timer_height
    }
}

#[derive(Debug, Clone, Default)]
struct Tracker {
    witness: BTreeSet<String>,
    approved: u128,
    total: u128,
    ready_since: Option<Instant>,
}

impl Tracker {
    /// `approved > total * 2 / 3`, nearcore's `TwoThirds` threshold (with the next epoch's
    /// stake equal to this one's, its second check is the same).
    fn over_threshold(&self) -> bool {
        self.approved > self.total * 2 / 3
    }
}

#[derive(Debug, Clone, Default)]
struct AtTarget {
    last: BTreeMap<String, ApprovalInner>,
    trackers: BTreeMap<ApprovalInner, Tracker>,
}

/// Approvals received, per target height.
#[derive(Debug, Clone, Default)]
pub struct ApprovalPool {
    targets: BTreeMap<u64, AtTarget>,
    largest_threshold_height: u64,
    largest_approval_height: u64,
}

impl ApprovalPool {
    /// Records `approval` (one per account and target: a different inner withdraws the
    /// earlier one). `stake` is the approver's stake, `total` the epoch's; approvals from
    /// non-validators (stake 0) are ignored.
    pub fn add(&mut self, approval: &Approval, stake: u128, total: u128, now: Instant) {
        if stake == 0 {
            return;
        }
        let at = self.targets.entry(approval.target_height).or_default();
        if let Some(old) = at.last.get(&approval.account_id) {
            if *old == approval.inner {
                return;
            }
            let old = old.clone();
            let mut empty = false;
            if let Some(t) = at.trackers.get_mut(&old) {
                if t.witness.remove(&approval.account_id) {
                    t.approved -= stake;
                }
                empty = t.witness.is_empty();
            }
            if empty {
                at.trackers.remove(&old);
            }
        }
        at.last
            .insert(approval.account_id.clone(), approval.inner.clone());
        let t = at.trackers.entry(approval.inner.clone()).or_default();
        t.total = total;
        if t.witness.insert(approval.account_id.clone()) {
            t.approved += stake;
        }
        if t.over_threshold() && t.ready_since.is_none() {
            t.ready_since = Some(now);
        }
        if t.over_threshold() {
            self.largest_threshold_height =
                self.largest_threshold_height.max(approval.target_height);
        }
        self.largest_approval_height = self.largest_approval_height.max(approval.target_height);
    }

    fn tracker(&self, parent_hash: &str, parent_height: u64, target: u64) -> Option<&Tracker> {
        self.targets.get(&target)?.trackers.get(&ApprovalInner::new(
            parent_hash,
            parent_height,
            target,
        ))
    }

    /// Whether a block at `target` on the parent can be produced now
    /// (`ready_to_produce_block`): more than 2/3 approved now, and either all chunks are there
    /// or `chunk_wait` has passed since the threshold was first crossed.
    pub fn ready(
        &self,
        parent_hash: &str,
        parent_height: u64,
        target: u64,
        has_enough_chunks: bool,
        chunk_wait: Duration,
        now: Instant,
    ) -> bool {
        match self
            .tracker(parent_hash, parent_height, target)
            .filter(|t| t.over_threshold())
            .and_then(|t| t.ready_since)
        {
            None => false,
            Some(_) if has_enough_chunks => true,
            Some(since) => now > since + chunk_wait,
        }
    }

    /// Accounts approving a block at `target` on the parent.
    pub fn approvers(&self, parent_hash: &str, parent_height: u64, target: u64) -> Vec<String> {
        self.tracker(parent_hash, parent_height, target)
            .map(|t| t.witness.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stake approving a block at `target` on the parent.
    pub fn approved_stake(&self, parent_hash: &str, parent_height: u64, target: u64) -> u128 {
        self.tracker(parent_hash, parent_height, target)
            .map_or(0, |t| t.approved)
    }

    /// Largest target that crossed the threshold (`near_largest_threshold_height`).
    pub fn largest_threshold_height(&self) -> u64 {
        self.largest_threshold_height
    }

    /// Largest target of any approval received (`near_largest_approval_height`).
    pub fn largest_approval_height(&self) -> u64 {
        self.largest_approval_height
    }

    /// Forgets targets at or below the new tip (they can no longer make a block on it).
    pub fn prune(&mut self, tip_height: u64) {
        self.targets = self.targets.split_off(&(tip_height + 1));
    }

    /// Every approval held, for targets above `tip_height` (what a joining node is told).
    pub fn pending(&self, tip_height: u64) -> Vec<Approval> {
        self.targets
            .range(tip_height + 1..)
            .flat_map(|(target, at)| {
                at.last.iter().map(move |(account, inner)| Approval {
                    account_id: account.clone(),
                    inner: inner.clone(),
                    target_height: *target,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// nearcore's test timers: endorsement 400 ms, skips from 1 s in steps of 100 ms up to 3 s.
    fn timers() -> Timers {
        Timers {
            min_block_production_delay: ms(400),
            max_block_production_delay: ms(1000),
            max_block_wait_delay: ms(3000),
            doomslug_step_period: ms(10),
            block_production_tracking_delay: ms(10),
        }
    }

    #[test]
    fn get_delay_grows_from_max_production_delay_to_max_wait() {
        let ds = Doomslug::new(0, &timers(), Instant::now());
        assert_eq!(ds.get_delay(0), ms(1000));
        assert_eq!(ds.get_delay(2), ms(1000));
        assert_eq!(ds.get_delay(3), ms(1100));
        assert_eq!(ds.get_delay(7), ms(1500));
        assert_eq!(ds.get_delay(1000), ms(3000));
        let d = Doomslug::new(0, &crate::spec::Timers::sped_up(10), Instant::now());
        assert_eq!(
            (d.get_delay(2), d.get_delay(12), d.get_delay(99)),
            (ms(200), ms(400), ms(600))
        );
    }

    #[test]
    fn endorsements_and_skips_like_nearcores_basic_test() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let me = Some("test");
        let mut ds = Doomslug::new(0, &timers(), t0);
        // A new tip: the endorsement is due 400 ms after the last one.
        ds.set_tip(at(0), "h1", 1, 1);
        assert!(ds.process_timer(at(399), me).is_empty());
        let a = ds.process_timer(at(400), me);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].inner.clone(), a[0].target_height),
            (ApprovalInner::Endorsement("h1".into()), 2)
        );
        assert!(
            ds.process_timer(at(400), me).is_empty(),
            "same tip, no approval"
        );
        // The skip to 3 is due 1 s after the tip.
        assert!(ds.process_timer(at(999), me).is_empty());
        let a = ds.process_timer(at(1000), me);
        assert_eq!(
            (a[0].inner.clone(), a[0].target_height),
            (ApprovalInner::Skip(1), 3)
        );
        // A block at 2 arrives after we skipped to 3: no endorsement of 3.
        ds.set_tip(at(1000), "h2", 2, 0);
        assert!(ds.process_timer(at(1400), me).is_empty());
        assert_eq!(ds.largest_target_height(), 3);
        // A block at 3: endorse 4.
        ds.set_tip(at(2000), "h3", 3, 0);
        let a = ds.process_timer(at(2400), me);
        assert_eq!(
            (a[0].inner.clone(), a[0].target_height),
            (ApprovalInner::Endorsement("h3".into()), 4)
        );
        // Skips from 3 with growing delays: n = timer height - final (0): 4 -> 1.2 s, 5 -> 1.3 s.
        assert!(ds.process_timer(at(2000 + 1199), me).is_empty());
        let a = ds.process_timer(at(2000 + 1200), me);
        assert_eq!(
            (a[0].inner.clone(), a[0].target_height),
            (ApprovalInner::Skip(3), 5)
        );
        assert!(ds.process_timer(at(3200 + 1299), me).is_empty());
        let a = ds.process_timer(at(3200 + 1300), me);
        assert_eq!(
            (a[0].inner.clone(), a[0].target_height),
            (ApprovalInner::Skip(3), 6)
        );
    }

    #[test]
    fn timers_and_largest_target_advance_without_a_key() {
        let t0 = Instant::now();
        let mut ds = Doomslug::new(0, &timers(), t0);
        ds.set_tip(t0, "h10", 10, 10);
        assert!(ds.process_timer(t0 + ms(400), None).is_empty());
        assert_eq!(
            ds.largest_target_height(),
            11,
            "endorsement target without a key"
        );
        assert!(ds.process_timer(t0 + ms(5000), None).is_empty());
        // Skips to 12 (1 s), 13 (+1 s), 14 (+1.1 s), 15 (+1.2 s) are due by 4.3 s.
        assert_eq!(ds.largest_target_height(), 15);
        // A key arrives: the next approval continues from there, no endorsement of 11 again.
        let a = ds.process_timer(t0 + ms(5600), Some("k"));
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].inner.clone(), a[0].target_height),
            (ApprovalInner::Skip(10), 16)
        );
        // A late block 12: the node is past it, so it does not endorse 13.
        ds.set_tip(t0 + ms(5600), "h12", 12, 10);
        let a = ds.process_timer(t0 + ms(6000), Some("k"));
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn never_two_endorsements_or_an_endorsement_after_a_skip() {
        // Drive a node with random-ish tips and times; check every approval it makes.
        let t0 = Instant::now();
        let mut ds = Doomslug::new(0, &timers(), t0);
        let mut approved: BTreeMap<u64, Vec<ApprovalInner>> = BTreeMap::new();
        let mut tip = 0;
        let mut now = 0;
        for step in 0..3000u64 {
            now += 37 + (step * 7919) % 211;
            if step % 5 == 0 {
                tip += 1 + (step / 5) % 3;
                let final_h = tip.saturating_sub(2 + step % 4);
                ds.set_tip(t0 + ms(now), &format!("h{tip}"), tip, final_h);
            }
            for a in ds.process_timer(t0 + ms(now), Some("k")) {
                approved.entry(a.target_height).or_default().push(a.inner);
            }
        }
        for (target, inners) in &approved {
            let endorsements = inners
                .iter()
                .filter(|i| matches!(i, ApprovalInner::Endorsement(_)))
                .count();
            assert!(
                endorsements <= 1,
                "two endorsements for {target}: {inners:?}"
            );
            if endorsements == 1 {
                assert!(
                    matches!(inners[0], ApprovalInner::Endorsement(_)),
                    "endorsed {target} after approving it: {inners:?}"
                );
                assert_eq!(inners.len(), 1, "{target}: {inners:?}");
            }
        }
    }

    #[test]
    fn a_late_block_makes_an_honest_node_skip_to_a_target_again() {
        // Like nearcore's basic test: skips from 10 reach 14, then block 12 arrives; the skip
        // from 12 targets 14 again, with another parent.
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let mut ds = Doomslug::new(0, &timers(), t0);
        ds.set_tip(at(0), "h10", 10, 10);
        let mut got = ds.process_timer(at(3100), Some("k"));
        assert_eq!(
            got.iter().map(|a| a.target_height).collect::<Vec<_>>(),
            [11, 12, 13, 14]
        );
        ds.set_tip(at(3200), "h12", 12, 10);
        got = ds.process_timer(at(4299), Some("k"));
        assert!(
            got.is_empty(),
            "no endorsement of 13 after skipping to 14: {got:?}"
        );
        got = ds.process_timer(at(4300), Some("k"));
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].inner.clone(), got[0].target_height),
            (ApprovalInner::Skip(12), 14)
        );
    }

    #[test]
    fn pool_counts_stake_once_per_account_and_needs_more_than_two_thirds() {
        let now = Instant::now();
        let mut pool = ApprovalPool::default();
        let ap = |acc: &str, inner: ApprovalInner| Approval {
            account_id: acc.into(),
            inner,
            target_height: 5,
        };
        let e = ApprovalInner::Endorsement("h4".into());
        // Stakes a=2, b=1, c=3, d=1 (total 7, threshold > 4).
        pool.add(&ap("c", e.clone()), 3, 7, now);
        pool.add(&ap("d", e.clone()), 1, 7, now);
        assert!(!pool.ready("h4", 4, 5, true, ms(0), now));
        pool.add(&ap("d", e.clone()), 1, 7, now);
        assert_eq!(pool.approved_stake("h4", 4, 5), 4, "counted once");
        pool.add(&ap("b", e.clone()), 1, 7, now);
        assert!(pool.ready("h4", 4, 5, true, ms(0), now));
        assert_eq!(pool.largest_threshold_height(), 5);
        // d changes its mind to a skip: its stake moves, the block is no longer ready.
        pool.add(&ap("d", ApprovalInner::Skip(3)), 1, 7, now);
        assert_eq!(pool.approved_stake("h4", 4, 5), 4);
        assert_eq!(pool.approved_stake("h3", 3, 5), 1);
        assert_eq!(pool.approvers("h4", 4, 5), ["b", "c"]);
        assert!(!pool.ready("h4", 4, 5, true, ms(0), now));
        pool.add(&ap("a", e.clone()), 2, 7, now);
        // Missing chunks: wait (from when the threshold was first crossed).
        assert!(!pool.ready("h4", 4, 5, false, ms(50), now + ms(50)));
        assert!(pool.ready("h4", 4, 5, false, ms(50), now + ms(51)));
        assert_eq!(pool.pending(4).len(), 4);
        pool.prune(5);
        assert!(pool.pending(0).is_empty());
        // Non-validators are ignored.
        pool.add(&ap("x", e), 0, 7, now);
        assert!(pool.pending(0).is_empty());
    }
}
