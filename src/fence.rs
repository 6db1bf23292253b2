//! The height fence: when a new leader's neard may get the key, so that it never signs
//! anything the old leader's neard signed differently. Pure: the caller passes what its neard
//! shows and the time.
//!
//! # What neard signs, and when (neard-interface.md §8, nearcore `doomslug.rs`)
//!
//! A validating neard signs approvals for *targets* ahead of its head: an endorsement of its tip
//! for `tip + 1`, and, while no next block arrives, skips for `tip + 2`, `tip + 3`, ... on
//! timers. It never approves a target at or below its own `largest_target_height`, which its
//! doomslug advances on the same timers *whether or not it holds a key*. It produces a block
//! only above its head and a chunk for `tip + 1` when its tip changes. Two approvals for one
//! target conflict when their parents differ; two blocks or chunks at one height always do.
//!
//! # The rule
//!
//! Let `H`, `T` be the old leader's head and largest target when it was fenced (its
//! *horizon*, published in the leader key). The new leader activates only when its own neard
//! shows
//!
//! - `head >= H`: every block it will produce is above `H`, every chunk above `H + 1`, and the
//!   old leader produced none above those;
//! - `largest_target >= T` (or, for a neard that does not export it, `head >= T`): every
//!   approval it will sign targets above `T`, above everything the old leader approved.
//!
//! This holds also while the chain is stalled because our validator is needed for 2/3 of the
//! stake: the head stays, but the keyless standby's doomslug timers advance its largest target
//! past `T`, and its first approval unstalls the chain above the old leader's.
//!
//! When the horizon is not *exact* (the old leader was killed, or vanished, and its last
//! published values may be stale), the new leader additionally waits, after the moment by
//! which the old leader has certainly stopped, for as long as its own neard lags in receiving
//! blocks ([`LagTracker`]): from then on its head and timers are at least where the old
//! leader's were when it stopped. No rule activates on a timeout alone.

use std::time::Duration;

use crate::clock::Instant;
use crate::lease::{Activation, Horizon};

/// What this node's neard shows at one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnView {
    /// Head height.
    pub head: u64,
    /// `near_largest_target_height`, when neard exports it.
    pub target: Option<u64>,
}

impl OwnView {
    /// The height above which its next approval will be: its largest target, or, when that
    /// is unknown, its head (its next endorsement targets `head + 1`).
    fn approvals_above(&self) -> u64 {
        self.target.unwrap_or(self.head)
    }
}

/// The fence of one promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    horizon: Horizon,
    /// When the lock was acquired (nothing opens before).
    acquired: Instant,
    /// By when the old leader has certainly stopped; `None` when its horizon is exact and no
    /// time needs to pass.
    fenced_by: Option<Instant>,
}

/// Why the fence is still closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// The old leader may not have stopped yet.
    Time(Instant),
    /// Our head is below the old leader's.
    Head {
        /// Ours.
        own: u64,
        /// Required.
        need: u64,
    },
    /// Our largest target is below the old leader's.
    Target {
        /// Ours (or our head).
        own: u64,
        /// Required.
        need: u64,
    },
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Time(_) => write!(f, "the previous leader may still be validating"),
            Closed::Head { own, need } => {
                write!(f, "head {own} below the previous leader's {need}")
            }
            Closed::Target { own, need } => write!(
                f,
                "largest approval target {own} below the previous leader's {need}"
            ),
        }
    }
}

impl Fence {
    /// The fence for a lock acquired (acknowledged) at `acquired` under `activation`.
    pub fn new(activation: Activation, acquired: Instant) -> Fence {
        let (horizon, fenced_by) = match activation {
            // A clean release came after the old neard was fenced, so before our acquisition.
            Activation::Clean(horizon) => (horizon, (!horizon.exact).then_some(acquired)),
            Activation::NotBefore { at, horizon } => (horizon, Some(at)),
            Activation::AfterAck { wait } => (Horizon::default(), Some(acquired + wait)),
        };
        Fence {
            horizon,
            acquired,
            fenced_by,
        }
    }

    /// The earliest time the fence can open (for timers): after the acquisition, and after
    /// the old leader has stopped plus our block-receipt lag.
    pub fn not_before(&self, lag: Duration) -> Instant {
        match self.fenced_by {
            Some(f) => self.acquired.max(f + lag),
            None => self.acquired,
        }
    }

    /// The old leader's horizon this fence waits for.
    pub fn horizon(&self) -> Horizon {
        self.horizon
    }

    /// Whether the key may go live now; `lag` is our neard's block-receipt lag.
    pub fn check(&self, now: Instant, own: OwnView, lag: Duration) -> Result<(), Closed> {
        let at = self.not_before(lag);
        if now < at {
            return Err(Closed::Time(at));
        }
        if let Some(need) = self.horizon.head {
            if own.head < need {
                return Err(Closed::Head {
                    own: own.head,
                    need,
                });
            }
        }
        // Without a published target, the old leader at least endorsed its head + 1.
        let need = self.horizon.target.or(self.horizon.head.map(|h| h + 1));
        if let Some(need) = need {
            let own = own.approvals_above();
            if own < need {
                return Err(Closed::Target { own, need });
            }
        }
        Ok(())
    }
}

/// Longest block-receipt lag believed; a larger measurement means a badly wrong clock, and is
/// capped so a promotion still ends (the head and target conditions still hold).
pub const MAX_LAG: Duration = Duration::from_secs(60);

/// Tips remembered for the lag estimate.
const LAG_SAMPLES: usize = 16;

/// Estimates how late this node's neard receives blocks: for each new tip, the wall time at
/// which kuutamod first saw it minus the block's timestamp (the producer's wall clock). The
/// estimate is the largest of the recent samples, so it includes kuutamod's polling delay and
/// errs long.
#[derive(Debug, Clone, Default)]
pub struct LagTracker {
    last_head: Option<u64>,
    samples: Vec<Duration>,
}

impl LagTracker {
    /// A poll showed `head`, produced at unix ms `block_ms`, at unix ms `wall_ms`. Only a tip
    /// that arrived since the previous poll of the same neard is a sample: the first tip a
    /// (re)started neard shows may be old (a stalled chain) without having arrived late.
    pub fn observe(&mut self, head: u64, block_ms: Option<u64>, wall_ms: u64) {
        let first = self.last_head.is_none();
        if self.last_head == Some(head) {
            return;
        }
        self.last_head = Some(head);
        if first {
            return;
        }
        let Some(block_ms) = block_ms else { return };
        let lag = Duration::from_millis(wall_ms.saturating_sub(block_ms)).min(MAX_LAG);
        if self.samples.len() == LAG_SAMPLES {
            self.samples.remove(0);
        }
        self.samples.push(lag);
    }

    /// A new neard process: its first tip is no sample.
    pub fn restart(&mut self) {
        self.last_head = None;
    }

    /// The estimate (zero before any sample with a block time).
    pub fn lag(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn own(head: u64, target: Option<u64>) -> OwnView {
        OwnView { head, target }
    }

    const NO_LAG: Duration = Duration::ZERO;

    #[test]
    fn an_exact_horizon_needs_only_head_and_target() {
        let f = Fence::new(
            Activation::Clean(Horizon {
                head: Some(100),
                target: Some(103),
                exact: true,
            }),
            t(0),
        );
        assert_eq!(
            f.check(t(0), own(99, Some(103)), NO_LAG),
            Err(Closed::Head { own: 99, need: 100 })
        );
        assert_eq!(
            f.check(t(0), own(100, Some(102)), NO_LAG),
            Err(Closed::Target {
                own: 102,
                need: 103
            })
        );
        assert_eq!(f.check(t(0), own(100, Some(103)), NO_LAG), Ok(()));
        // A neard without the metric: its next endorsement targets head + 1.
        assert!(f.check(t(0), own(102, None), NO_LAG).is_err());
        assert_eq!(f.check(t(0), own(103, None), NO_LAG), Ok(()));
    }

    #[test]
    fn a_stalled_chain_opens_on_the_standby_s_own_timers() {
        // The old leader sent skips up to 107 from head 100; the chain stalls at 100 without
        // us. The keyless standby's doomslug reaches 107 on the same timers.
        let f = Fence::new(
            Activation::Clean(Horizon {
                head: Some(100),
                target: Some(107),
                exact: true,
            }),
            t(0),
        );
        assert!(f.check(t(0), own(100, Some(105)), NO_LAG).is_err());
        assert_eq!(f.check(t(0), own(100, Some(107)), NO_LAG), Ok(()));
    }

    #[test]
    fn a_stale_horizon_also_waits_for_time_and_lag() {
        let hb = Horizon {
            head: Some(50),
            target: Some(51),
            exact: false,
        };
        let f = Fence::new(
            Activation::NotBefore {
                at: t(30_000),
                horizon: hb,
            },
            t(1000),
        );
        let lag = Duration::from_millis(400);
        assert_eq!(
            f.check(t(30_000), own(80, Some(81)), lag),
            Err(Closed::Time(t(30_400)))
        );
        assert_eq!(f.check(t(30_400), own(80, Some(81)), lag), Ok(()));
        // The lag counts from when the old leader stopped, not from the acquisition.
        let f = Fence::new(
            Activation::NotBefore {
                at: t(5000),
                horizon: hb,
            },
            t(9000),
        );
        assert_eq!(f.check(t(9000), own(80, Some(81)), lag), Ok(()));
        // A released record from a killed neard: not exact, so the lag wait applies from the
        // acquisition.
        let f = Fence::new(Activation::Clean(hb), t(1000));
        assert!(f.check(t(1399), own(80, Some(81)), lag).is_err());
        assert_eq!(f.check(t(1400), own(80, Some(81)), lag), Ok(()));
    }

    #[test]
    fn an_absent_key_waits_a_full_wait_after_the_acknowledgement() {
        let f = Fence::new(
            Activation::AfterAck {
                wait: Duration::from_secs(3),
            },
            t(1000),
        );
        assert!(f.check(t(3999), own(9, Some(10)), NO_LAG).is_err());
        assert_eq!(f.check(t(4000), own(9, Some(10)), NO_LAG), Ok(()));
    }

    #[test]
    fn the_first_tip_of_a_neard_is_no_sample() {
        // A neard started in a stalled chain shows a tip produced minutes ago.
        let mut l = LagTracker::default();
        l.observe(7, Some(1000), 300_000);
        assert_eq!(l.lag(), Duration::ZERO);
        l.observe(8, Some(300_050), 300_080);
        assert_eq!(l.lag(), Duration::from_millis(30));
        l.restart();
        l.observe(8, Some(300_050), 900_000);
        assert_eq!(l.lag(), Duration::from_millis(30));
    }

    #[test]
    fn the_lag_is_the_largest_recent_receipt_delay() {
        let mut l = LagTracker::default();
        l.observe(0, None, 0);
        l.observe(1, Some(1000), 1100);
        l.observe(1, Some(1000), 5000); // same tip seen again: no new sample
        l.observe(2, Some(2000), 2300);
        l.observe(3, None, 4000);
        assert_eq!(l.lag(), Duration::from_millis(300));
        l.observe(4, Some(9000), 8000); // clock skew: counts as zero
        assert_eq!(l.lag(), Duration::from_millis(300));
        for h in 5..30 {
            l.observe(h, Some(h * 100), h * 100 + 10);
        }
        assert_eq!(l.lag(), Duration::from_millis(10), "old samples age out");
    }
}
