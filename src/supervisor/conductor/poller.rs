//! neard's poller: `/status` at the rate the machine asks for, one read at a time; `/metrics`
//! with it when the machine asks, with the first poll of every new neard, and at least every
//! [`METRICS_INTERVAL`](super::METRICS_INTERVAL) for our account's production; a change of
//! neard's version as an event of its own. A new neard, or a new rate, is polled at once
//! (after the read in flight). A poll of a neard that is no longer the current one is
//! dropped.

use std::collections::VecDeque;

use super::{Conductor, Host, Report, StatusAnswer, METRICS_INTERVAL};
use crate::clock::Instant;
use crate::machine::{Event, KeyShown, Poll, Polling};
use crate::neard::rpc::NeardMetrics;
use crate::timing::STATUS_INTERVAL;

/// A poll in progress.
#[derive(Debug, Clone)]
struct Run {
    /// The read in flight (`/status`, then `/metrics`).
    id: u64,
    /// The neard polled.
    pid: u32,
    /// The rate asked for when it started.
    polling: Polling,
    /// `/status`'s answer, while `/metrics` is read.
    status: Option<StatusAnswer>,
}

/// The poller's state.
#[derive(Debug, Clone)]
pub(super) struct Poller {
    polling: Polling,
    version: Option<String>,
    metrics_at: Option<Instant>,
    run: Option<Run>,
    /// The target changed during the run: poll again at once after it.
    changed: bool,
    /// When the next poll starts (once there is a neard).
    next_at: Instant,
}

impl Poller {
    pub(super) fn new(now: Instant) -> Poller {
        Poller {
            polling: Polling {
                interval: STATUS_INTERVAL,
                metrics: false,
            },
            version: None,
            metrics_at: None,
            run: None,
            changed: false,
            next_at: now,
        }
    }

    /// The machine announces the rate it wants (it does so when the rate or neard changes):
    /// poll at once at that rate.
    pub(super) fn set_polling(&mut self, polling: Polling) {
        self.polling = polling;
        self.target_changed();
    }

    /// A new neard: its first poll reads `/metrics` too (its reload counter, which a hot
    /// swap needs, is its own), and comes at once (after the read in flight).
    pub(super) fn new_neard(&mut self) {
        self.metrics_at = None;
        self.target_changed();
    }

    /// A new rate or a new neard: poll again at once (after the read in flight).
    pub(super) fn target_changed(&mut self) {
        if self.run.is_some() {
            self.changed = true;
        } else {
            self.next_at = Instant::from_nanos(0);
        }
    }

    pub(super) fn due(&self) -> Option<Instant> {
        self.run.is_none().then_some(self.next_at)
    }
}

impl Conductor {
    /// Starts a poll if one is due and there is a neard to poll.
    pub(super) fn poll(&mut self, host: &mut impl Host) {
        let now = self.now.boot;
        let Some(pid) = self.neard else {
            return;
        };
        if self.poller.run.is_some() || now < self.poller.next_at {
            return;
        }
        let id = self.id();
        self.poller.run = Some(Run {
            id,
            pid,
            polling: self.poller.polling,
            status: None,
        });
        host.status(id);
    }

    /// `/status` answered: a new version is an event at once; `/metrics` is read when due.
    pub(super) fn on_status(
        &mut self,
        id: u64,
        result: Result<StatusAnswer, String>,
        follow: &mut VecDeque<Event>,
        host: &mut impl Host,
    ) {
        let now = self.now.boot;
        let p = &mut self.poller;
        let Some(run) = p.run.as_mut().filter(|r| r.id == id && r.status.is_none()) else {
            return;
        };
        let pid = run.pid;
        let status = match result {
            Ok(s) => s,
            Err(e) => {
                log::debug!("{e}");
                self.poll_done(pid, None, follow, host);
                return;
            }
        };
        if status.version.is_some() && status.version != p.version {
            p.version = status.version.clone();
            if self.neard == Some(pid) {
                follow.push_back(Event::NeardVersion(
                    status.version.clone().unwrap_or_default(),
                ));
            }
        }
        // /metrics when the machine asks, and every METRICS_INTERVAL for the production
        // counters (re-exported, and the doppelganger check).
        let due = run.polling.metrics
            || p.metrics_at
                .is_none_or(|t| now.saturating_duration_since(t) >= METRICS_INTERVAL);
        if due {
            p.metrics_at = Some(now);
            let next = self.id();
            if let Some(run) = self.poller.run.as_mut() {
                run.id = next;
                run.status = Some(status);
            }
            host.metrics(next);
        } else {
            self.poll_done(pid, Some((status, None)), follow, host);
        }
    }

    /// `/metrics` answered: the poll is complete.
    pub(super) fn on_metrics(
        &mut self,
        id: u64,
        result: Result<NeardMetrics, String>,
        follow: &mut VecDeque<Event>,
        host: &mut impl Host,
    ) {
        let Some(run) = self.poller.run.as_mut().filter(|r| r.id == id) else {
            return;
        };
        let Some(status) = run.status.take() else {
            return;
        };
        let pid = run.pid;
        let metrics = result.map_err(|e| log::debug!("{e}")).ok();
        self.poll_done(pid, Some((status, metrics)), follow, host);
    }

    /// The poll is over: its event for the machine (if it polled the current neard), and the
    /// next poll's time.
    fn poll_done(
        &mut self,
        pid: u32,
        answer: Option<(StatusAnswer, Option<NeardMetrics>)>,
        follow: &mut VecDeque<Event>,
        host: &mut impl Host,
    ) {
        let now = self.now.boot;
        let p = &mut self.poller;
        let Some(run) = p.run.take() else {
            return;
        };
        p.next_at = if std::mem::take(&mut p.changed) {
            now
        } else {
            now + run.polling.interval
        };
        if self.neard != Some(pid) {
            return; // a poll of a previous neard
        }
        let Some((s, m)) = answer else {
            follow.push_back(Event::StatusFailed);
            return;
        };
        let key = match s.validator_key.as_deref() {
            None => KeyShown::None,
            Some(k) if k == self.settings.validator_key => KeyShown::Ours,
            Some(_) => KeyShown::Other,
        };
        let m = m.unwrap_or_default();
        let poll = Poll {
            syncing: s.syncing,
            head: s.head,
            block_ms: s.block_ms,
            wall_ms: self.now.wall_ms,
            key,
            hot_swap_capable: s.hot_swap_capable,
            target: m.largest_target,
            reloads: m.config_reloads,
            production: m.production,
        };
        if let Some(p) = m.production {
            host.report(Report::Production(p));
        }
        follow.push_back(Event::Status(poll));
    }
}
