//! The invariants of [`crate::oracle`] on the world: after every event, at most one neard
//! signs with our key and only while its host holds the lock or held it within a TTL; at the
//! end, one node validates and signs again (within the liveness bound); and when a run may end
//! early (liveness held for the quiescence window after the last fault).

use super::liveness::liveness_bound_ms;
use super::neard::is_ours;
use super::World;
use crate::clock::{MS, S};
use crate::oracle::Violation;

impl World {
    pub(super) fn violate(&mut self, v: Violation) {
        if self.out.violation.is_none() {
            self.trace(|| format!("VIOLATION {v}"));
            self.out.violation = Some(v);
        }
    }

    /// The hosts whose neard can sign with our key now: alive, key loaded, host not
    /// suspended. (A suspended host's neard runs again only after its guard's expired timer
    /// has fired: see `docs/dst.md`, "Assumptions".)
    fn holders(&self) -> Vec<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter(|(_, h)| {
                !h.suspended
                    && h.neard
                        .as_ref()
                        .is_some_and(|n| n.alive && n.key.as_ref().is_some_and(is_ours))
            })
            .map(|(i, _)| i)
            .collect()
    }

    pub(super) fn check_safety(&mut self) {
        let holders = self.holders();
        if holders.len() >= 2 {
            self.violate(Violation::TwoHolders {
                at_ms: self.t / MS,
                hosts: holders,
            });
            return;
        }
        for h in holders {
            if self.servers.holder == Some(h) {
                self.validated_at[h] = Some(self.t);
            }
            let fresh = self.servers.holder == Some(h)
                || self.hosts[h]
                    .last_lock
                    .is_some_and(|l| l + self.timing.ttl.as_nanos() as u64 >= self.t);
            if !fresh {
                self.violate(Violation::StaleHolder {
                    at_ms: self.t / MS,
                    host: h,
                    last_lock_ms: self.hosts[h].last_lock.map(|l| l / MS),
                });
            }
        }
    }

    /// Whether the run may end early: past the last fault, liveness has held without a break
    /// for the quiescence window. Checked after every event.
    pub(super) fn quiesced(&mut self) -> bool {
        let Some(window) = self.quiesce else {
            return false;
        };
        if self.t < self.healed {
            return false;
        }
        if self.liveness().is_err() {
            self.live_since = None;
            return false;
        }
        let since = *self.live_since.get_or_insert(self.t);
        self.t >= since + window
    }

    /// One neard holds our key, has joined the chain and signed recently; or what is wrong.
    fn liveness(&self) -> Result<(), String> {
        let holders = self.holders();
        // A validator approves at least once per max_block_wait_delay, skipping, even while a
        // chain stalled without it recovers; twice that, with room for its network lag.
        let recent = (2 * S).max(2 * self.timers.max_block_wait_delay.as_nanos() as u64);
        let what = match holders.as_slice() {
            [h] => {
                let n = self.hosts[*h].neard.as_ref();
                let signing = n.and_then(|n| n.last_signed);
                if !n.is_some_and(|n| n.joined) {
                    Some(format!("host {h} holds the key but is not in sync"))
                } else if signing.is_none_or(|s| s + recent < self.t) {
                    Some(format!(
                        "host {h} holds the key but signed nothing for {} ms (last: {:?} ms)",
                        recent / MS,
                        signing.map(|s| s / MS)
                    ))
                } else {
                    None
                }
            }
            [] => Some("no neard holds the key".to_string()),
            _ => Some(format!("hosts {holders:?} hold the key")),
        };
        what.map_or(Ok(()), Err)
    }

    pub(super) fn check_liveness(&mut self) {
        self.check_status_records();
        if self.out.violation.is_some() {
            return;
        }
        if self.hosts.iter().all(|h| h.priority == 0) {
            // The operator gave every node priority 0: no node may take the lock.
            self.out.no_candidate = true;
            return;
        }
        let what = self.liveness().err();
        if what.is_some() && self.max_node_tip > self.net.head().height {
            // A neard of ours has a tip the chain never accepted: the chain model has no fork
            // choice (docs/neard-sim.md), so with our stake above 1/3 the chain stays below
            // that tip and a new leader's height fence waits for it forever. Real neard would
            // have taken the higher block. Counted, not reported as a violation.
            self.out.model_stall = true;
            return;
        }
        if let Some(what) = what {
            self.violate(Violation::Liveness {
                at_ms: self.t / MS,
                what: format!(
                    "{what} {} ms after the last fault healed (bound {} ms)",
                    (self.t - self.healed) / MS,
                    liveness_bound_ms(&self.sched, &self.timers)
                ),
            });
        }
    }
}
