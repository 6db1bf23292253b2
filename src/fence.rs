//! The height fence: when a new leader's neard may get the key, so that it never signs
//! anything the old leader's neard signed differently. Pure: the caller passes what its neard
//! shows and the time.
//!
//! # What neard signs, and when (docs/neard.md §8, nearcore `doomslug.rs`)
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
//! When the horizon is not *exact* (the old leader's neard died or was killed, or the old leader
//! vanished, and its last published values may be stale), the new leader also waits, after the
//! moment `F` by which the old leader has certainly stopped, for one of:
//!
//! - **caught up**: its own tip is a block produced after `F` (the block's timestamp is past `F`
//!   on our wall clock plus [`WALL_SKEW`]), so it extends every block the old leader saw, and
//!   endorsed, before it stopped; and its largest target is above `T` by as many skips as the
//!   old leader could have sent while its values were stale (skips come at most one per
//!   `max_block_production_delay`). This is what opens the fence in a live chain, within a
//!   block or two;
//! - **outrun**: its largest target is above `T` by as many targets as the old leader's
//!   doomslug could have added while its values were stale, endorsing or skipping (at most one
//!   per `min_block_production_delay`, nearcore's endorsement rate). This opens the fence in a
//!   chain stalled for want of our validator, where no new block can come: the keyless
//!   standby's timers keep advancing its target.
//!
//! No rule activates on a timeout alone.

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
    /// The head block's timestamp (unix ms), when known.
    pub tip_ms: Option<u64>,
    /// Our wall clock (unix ms) at the poll.
    pub wall_ms: u64,
    /// Our tip arrived after this instant (our own clock): the poll before the one that first
    /// showed this head. `None` when unknown (the first poll of a neard).
    pub arrived_after: Option<Instant>,
    /// Whether our wall clock agrees with the chain's block timestamps, as far as recent blocks
    /// show: a block that arrives stamped later than our wall clock (by more than
    /// [`WALL_SKEW`]) says our clock is behind the block producers'.
    pub wall_trusted: bool,
}

impl OwnView {
    /// The height above which its next approval will be: its largest target, or, when that
    /// is unknown, its head (its next endorsement targets `head + 1`).
    fn approvals_above(&self) -> u64 {
        self.target.unwrap_or(self.head)
    }
}

/// How far apart the wall clocks of our host and of the block producers may be (NTP keeps them
/// within milliseconds; this errs long). Only the "caught up" rule uses wall clocks.
pub const WALL_SKEW: Duration = Duration::from_millis(500);

/// neard's block production delays (`consensus.min_block_production_delay` and
/// `consensus.max_block_production_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDelays {
    /// A neard endorses a block this long after the previous one at the earliest: its largest
    /// target grows at most one per this.
    pub min: Duration,
    /// A neard sends a skip this long after its previous approval at the earliest: without
    /// blocks, its largest target grows at most one per this.
    pub max: Duration,
}

impl BlockDelays {
    /// neard's defaults (also localnet's): 600 ms and 2 s.
    pub const NEARD: BlockDelays = BlockDelays {
        min: Duration::from_millis(600),
        max: Duration::from_secs(2),
    };
}

/// What the stale-horizon rules need to know about the chain and the timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceParams {
    /// neard's block production delays.
    pub delays: BlockDelays,
    /// How stale a heartbeat's horizon can be when the old leader is fenced, for records that
    /// do not say how old it was: the TTL plus the longest neard may go unanswered before its
    /// leader steps down, plus a poll's timeout.
    pub heartbeat_staleness: Duration,
    /// The TTL: a heartbeat's writer stopped signing within this after sending it.
    pub ttl: Duration,
    /// The deterministic simulation's mutation (`Mutations::caught_up_any_tip`): the "caught
    /// up" rule trusts any tip and any wall clock, as it did before. Always false otherwise.
    pub trust_any_tip: bool,
    /// The highest horizon any record showed this node: a lower bound of what some leader
    /// signed. Where no horizon is known (a foreign value), our neard must at least reach it.
    pub floor: Horizon,
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
    /// How stale the horizon may be (for the "outrun" rule); `None`: unbounded.
    stale: Option<Duration>,
    /// Whether the old leader may have received blocks we have not (then its target may have
    /// grown at the endorsement rate); `false` only for the stand-in horizon of an absent key.
    unseen_blocks: bool,
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
    /// The horizon is stale: our view has not caught up past the old leader's fence, and our
    /// target has not outrun what it could have reached.
    Stale {
        /// Our target.
        own: u64,
        /// The target that would outrun it (`None`: no bound).
        outrun: Option<u64>,
    },
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Closed::Time(_) => write!(f, "the previous leader may still be validating"),
            Closed::Head { own, need } => write!(f, "head {own} below the previous leader's {need}"),
            Closed::Target { own, need } => write!(
                f,
                "largest approval target {own} below the previous leader's {need}"
            ),
            Closed::Stale { own, outrun } => match outrun {
                Some(t) => write!(
                    f,
                    "waiting for a block produced after the previous leader stopped, or for our target ({own}) to reach {t}"
                ),
                None => write!(
                    f,
                    "waiting for a block produced after the previous leader stopped"
                ),
            },
        }
    }
}

impl Fence {
    /// The fence for a lock acquired (acknowledged) at `acquired` under `activation`; `own` is
    /// our neard's last view before the acquisition, read at most `own_age` before it.
    pub fn new(
        activation: Activation,
        acquired: Instant,
        own: Option<OwnView>,
        own_age: Duration,
        params: &FenceParams,
    ) -> Fence {
        let fence = match activation {
            // A clean release came after the old neard was fenced, so before our acquisition.
            Activation::Clean(horizon) => Fence {
                horizon,
                acquired,
                fenced_by: (!horizon.exact).then_some(acquired),
                stale: horizon.stale_ms.map(Duration::from_millis),
                unseen_blocks: true,
            },
            // A heartbeat's horizon was `StaleMs` old when sent, and its writer stopped
            // signing within the TTL after (records without the field: the most it can be).
            // What a promoting writer inherited is a whole window already (no TTL added): the
            // fence waits for the larger of both.
            Activation::NotBefore {
                at,
                horizon,
                inherited,
            } => {
                let own = horizon.stale_ms.map_or(params.heartbeat_staleness, |age| {
                    Duration::from_millis(age) + params.ttl
                });
                let before = match inherited {
                    None => Duration::ZERO,
                    Some(i) if i.exact => Duration::ZERO,
                    Some(i) => i
                        .stale_ms
                        .map_or(params.heartbeat_staleness, Duration::from_millis),
                };
                Fence {
                    horizon: inherited.map_or(horizon, |i| horizon.max(i)),
                    acquired,
                    fenced_by: Some(at),
                    stale: Some(own.max(before)),
                    unseen_blocks: true,
                }
            }
            Activation::AfterAck { wait } => Fence {
                horizon: Horizon::default(),
                acquired,
                fenced_by: Some(acquired + wait),
                stale: None,
                unseen_blocks: true,
            },
        };
        if fence.horizon.head.is_some() || fence.horizon.target.is_some() {
            return fence;
        }
        // No horizon: no leader ever ran, or the key was deleted or overwritten. Our own view
        // stands in for it, as stale as the time until that leader was surely fenced: a leader
        // that existed saw the same chain (so, without new blocks, it could only have skipped).
        // (Our neard may lag far behind what a leader whose records we saw signed: that
        // leader's highest horizon is a floor, seed 188963 of the simulation.)
        let Some(own) = own else { return fence };
        let fenced_by = fence.fenced_by.unwrap_or(acquired);
        Fence {
            horizon: Horizon {
                head: params.floor.head,
                target: Some(own.approvals_above().max(params.floor.target.unwrap_or(0))),
                exact: false,
                stale_ms: None,
            },
            fenced_by: Some(fenced_by),
            stale: Some(fenced_by.saturating_duration_since(acquired) + own_age),
            unseen_blocks: false,
            ..fence
        }
    }

    /// The earliest time the fence can open (for timers).
    pub fn not_before(&self) -> Instant {
        self.fenced_by
            .map_or(self.acquired, |f| f.max(self.acquired))
    }

    /// The old leader's horizon this fence waits for.
    pub fn horizon(&self) -> Horizon {
        self.horizon
    }

    /// What this fence knows of the previous leader, as a horizon for our own record while our
    /// key is not live. A node that gives the lock back before its fence opened leaves its own
    /// record (the value unchanged), and the next holder's fence reads only that: our own view
    /// may lag the previous leader's, which is why we might give the lock back at all. The
    /// stale window is the whole one this fence counts (the next holder adds no TTL to it, only
    /// to our own horizon), and the next holder's `F` is later than ours (Lemma 2 chains).
    pub fn inherited(&self) -> Horizon {
        Horizon {
            exact: self.fenced_by.is_none(),
            stale_ms: self.stale.map(millis),
            ..self.horizon
        }
    }

    /// Whether the key may go live now.
    pub fn check(&self, now: Instant, own: OwnView, params: &FenceParams) -> Result<(), Closed> {
        let at = self.not_before();
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
        let own_target = own.approvals_above();
        if let Some(need) = need {
            if own_target < need {
                return Err(Closed::Target {
                    own: own_target,
                    need,
                });
            }
        }
        let Some(fenced_by) = self.fenced_by else {
            return Ok(()); // exact
        };
        // Targets the old leader may have added while its values were stale, at one per
        // `per` at most.
        let beyond = |per: Duration| -> Option<u64> {
            let (need, stale) = (need?, self.stale?);
            let steps = stale.as_nanos().div_ceil(per.as_nanos().max(1));
            Some(need + u64::try_from(steps).unwrap_or(u64::MAX / 2) + 1)
        };
        // Caught up: our tip was produced after the old leader stopped, so it extends every
        // block the old leader saw (and endorsed) before; and our target is above the skips it
        // could have sent meanwhile without blocks. "Produced after" is read from the block's
        // timestamp against our wall clock, so it is trusted only when our clock agrees with
        // the chain's, and only for a tip that arrived after the old leader stopped (by our own
        // clock): a block that arrived before cannot have been produced after.
        let fence_wall = own
            .wall_ms
            .saturating_sub(millis(now.saturating_duration_since(fenced_by)));
        let trusted = params.trust_any_tip
            || (own.wall_trusted && own.arrived_after.is_some_and(|a| a >= fenced_by));
        let after_fence = trusted
            && own
                .tip_ms
                .is_some_and(|tip| tip >= fence_wall + millis(WALL_SKEW));
        if after_fence && beyond(params.delays.max).is_none_or(|t| own_target >= t) {
            return Ok(());
        }
        // Outrun: our target is past anything the old leader could have reached, endorsing
        // or skipping.
        let outrun = beyond(if self.unseen_blocks {
            params.delays.min
        } else {
            params.delays.max
        });
        match outrun {
            Some(t) if own_target >= t => Ok(()),
            _ => Err(Closed::Stale {
                own: own_target,
                outrun,
            }),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
