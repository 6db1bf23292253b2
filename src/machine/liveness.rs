//! Liveness: a lock holder that cannot sign gives the lock to a node that can.
//!
//! One rule for every reason a holder does not sign (docs/failover.md, "Liveness"): it holds
//! the lock, another node's fresh record says that node is ready, and for
//! [`Timing::progress_grace`](crate::timing::Timing::progress_grace) either its neard reported
//! syncing while the key was not live yet, or its neard's head stayed put while a ready node's
//! record shows a higher head, or its head moved but stayed [`LAG_HEIGHTS`] or more below the
//! head a ready node's record had shown before each poll (a neard that lags while it reports
//! itself in sync). A stalled chain never triggers it: there every node's head stays
//! put alike, and no ready node shows a higher one. The ready nodes publish that evidence
//! themselves: a standby whose head is above the head the holder's records have shown on two
//! heartbeats republishes its record at once ([`Machine::holder_evidence`]).
//!
//! Giving the lock away keeps every safety wait. A holder whose key may be live is fenced
//! first and releases as after any step-down. A holder whose key never went live waits until
//! its fence's wait for the previous leader is over, and then releases with a released record
//! carrying what its fence still waits for of that leader (its horizon and stale window), so
//! the ready node needs no TTL wait, only the height fence.

use std::time::Duration;

use super::progress::{Letgo, Phase, Proc};
use super::vocabulary::{Command, StepDown, Stuck};
use super::{Machine, Soonest, LAG_HEIGHTS, PEER_FRESH};

impl Machine {
    /// How long this node has held the lock without signing: promoting with its key not live
    /// yet (since the acquisition), or with a live key whose neard reports syncing or shows an
    /// unchanged head (since then). Zero otherwise (`kuutamod_not_signing_seconds`).
    pub fn not_signing_for(&self) -> Duration {
        let since = match (&self.phase, &self.proc, &self.lease) {
            (_, _, None) => None,
            (Phase::Promoting(p), _, _) if !self.activated && !self.key_live => Some(p.acquired),
            (Phase::Promoting(_) | Phase::Validating, Proc::Up(up), _) if self.key_live => {
                up.syncing_since.or(up.behind_since).or(up.head_since)
            }
            _ => None,
        };
        since.map_or(Duration::ZERO, |s| self.now.saturating_duration_since(s))
    }

    /// Whether our wall clock may be read against the chain's block timestamps
    /// (`kuutamod_wall_clock_trusted`).
    pub fn wall_clock_trusted(&self) -> bool {
        self.wall_trusted()
    }

    /// Why this lock holder has not been signing for the grace while another node is ready.
    pub(super) fn stuck(&self) -> Option<Stuck> {
        if self.lease.is_none()
            || !matches!(self.phase, Phase::Promoting(_) | Phase::Validating)
            || self.cfg.mutations.on(|m| m.no_progress_rule)
        {
            return None;
        }
        let Proc::Up(up) = &self.proc else {
            return None;
        };
        self.ready_peers().next()?;
        let (now, grace) = (self.now, self.cfg.timing.progress_grace);
        let live = self.key_live || self.activated;
        if !live && up.syncing_since.is_some_and(|s| now >= s + grace) {
            return Some(Stuck::Syncing);
        }
        // Our head, unchanged from `since` up to our last poll, which came after a ready node's
        // record showed a higher one: a poll older than that record may only be late.
        let (own, since, last) = (up.poll?.head, up.head_since?, up.last_ok?);
        let peer = self
            .ready()
            .filter(|p| p.changed < last)
            .filter_map(|p| p.record.head)
            .max()?;
        if peer > own && last >= since + grace {
            return Some(Stuck::Head { own, peer, live });
        }
        // A head that moves, but lags a ready node's by LAG_HEIGHTS or more at every poll for
        // the grace.
        let behind = up.behind_since?;
        (last >= behind + grace).then_some(Stuck::Behind { own, peer, live })
    }

    /// When [`Self::stuck`] may next change by time alone.
    pub(super) fn progress_deadlines(&self, d: &mut Soonest) {
        let grace = self.cfg.timing.progress_grace;
        if let (Proc::Up(up), Some(_)) = (&self.proc, &self.lease) {
            d.extend(up.syncing_since.map(|s| s + grace));
            d.extend(up.head_since.map(|s| s + grace));
            d.extend(up.behind_since.map(|s| s + grace));
        }
        for p in &self.peers {
            d.push(p.changed + PEER_FRESH);
        }
    }

    /// A holder that cannot sign gives the lock to a ready node, keeping every safety wait.
    pub(super) fn reconcile_progress(&mut self, out: &mut Vec<Command>) {
        let Some(stuck) = self.stuck() else {
            return;
        };
        match &self.phase {
            Phase::Promoting(p) if !self.activated && !self.key_live => {
                // The previous leader's wait comes first: once it is over that leader is
                // fenced, and a released record may pass on what is left (the height fence).
                if self.now < p.fence.not_before() {
                    return;
                }
                let inherited = p.fence.inherited();
                out.push(Command::SteppedDown(StepDown::NoProgress(stuck)));
                self.last_step_down = Some(StepDown::NoProgress(stuck));
                self.start_release(Letgo::GiveBack(inherited), self.after_standby(true));
            }
            Phase::Promoting(_) | Phase::Validating => {
                self.step_down(StepDown::NoProgress(stuck), out);
            }
            _ => {}
        }
    }

    /// As a ready standby: whether the lock holder's records have shown one head on two
    /// heartbeats while our neard's head is above it, or a head [`LAG_HEIGHTS`] or more below
    /// ours on two records in a row, and our published record does not say so yet. Then our
    /// record, with our head, is published at once: it is what the holder needs to see that it
    /// is not signing (at most once per heartbeat of the holder, and only while it lags).
    pub(super) fn holder_evidence(&self, own_head: Option<u64>) -> bool {
        let (Some(h), Some(own)) = (&self.holder, own_head) else {
            return false;
        };
        let published = self.published.as_ref().and_then(|p| p.head);
        // Frozen: one head on two heartbeats, and ours above it.
        let frozen = h.seq > h.first_seq && own > h.head && published.is_none_or(|p| p <= h.head);
        // Lagging: two records in a row well below our head, and our record no longer shows
        // a head that far above its latest.
        let lagging = h.behind >= 2
            && own >= h.head + LAG_HEIGHTS
            && published.is_none_or(|p| p < h.head + LAG_HEIGHTS);
        (frozen || lagging) && self.may_take_over()
    }
}
