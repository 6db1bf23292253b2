//! kuutamod's neard poller: `/status` at the machine's interval, `/metrics` when asked for or
//! at least every `METRICS_INTERVAL`; a poll of a neard that does not answer times out.

use kuutamod::machine::{Event, KeyShown, Poll};
use kuutamod::neard::rpc::Production;

use super::events::{Ev, Inc};
use super::neard::is_ours;
use super::{World, ACCOUNT, METRICS_INTERVAL, STATUS_TIMEOUT};
use crate::clock::MS;

#[derive(Default)]
pub(super) struct Poller {
    pub(super) interval: u64,
    pub(super) metrics: bool,
    gen: u64,
    busy: bool,
    changed: bool,
    metrics_at: Option<u64>,
    version: Option<String>,
}

impl Poller {
    /// A poller that has not polled yet, polling every `interval` (ns).
    pub(super) fn new(interval: u64) -> Poller {
        Poller {
            interval,
            ..Poller::default()
        }
    }
}

impl World {
    pub(super) fn poll_target_changed(&mut self, h: usize) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        if k.poll.busy {
            k.poll.changed = true;
        } else {
            k.poll.gen += 1;
            let (inst, gen) = (k.inst, k.poll.gen);
            self.after(0, Ev::PollTick { h, inst, gen });
        }
    }

    pub(super) fn poll_tick(&mut self, h: usize, inst: u64, gen: u64) {
        let Some(k) = self.hosts[h].kd.as_ref() else {
            return;
        };
        if k.inst != inst || k.poll.gen != gen {
            return;
        }
        if !self.kd_runnable(h) {
            if let Some(k) = self.hosts[h].kd.as_mut() {
                k.deferred.push(Ev::PollTick { h, inst, gen });
            }
            return;
        }
        let Some(pid) = k.neard else {
            return;
        };
        let metrics_due = k.poll.metrics
            || k.poll
                .metrics_at
                .is_none_or(|m| self.t >= m + METRICS_INTERVAL);
        let (answer, delay) = match self.neard_answers(h) {
            Some(n) if n.pid == pid => {
                let poll = self.make_poll(h, metrics_due);
                let version = if self.sched.scenario.old_neard[h] {
                    "2.2.1"
                } else {
                    "2.6.0"
                };
                (
                    Some((poll, version.to_string())),
                    self.rng.range(MS / 2, 3 * MS),
                )
            }
            _ => {
                let alive = self.hosts[h]
                    .neard
                    .as_ref()
                    .is_some_and(|n| n.pid == pid && n.alive && n.rpc_up);
                (None, if alive { STATUS_TIMEOUT } else { MS })
            }
        };
        if let Some(k) = self.hosts[h].kd.as_mut() {
            k.poll.busy = true;
            if metrics_due && answer.is_some() {
                k.poll.metrics_at = Some(self.t);
            }
            let gen = k.poll.gen;
            self.after(
                delay,
                Ev::ToKd {
                    h,
                    inst,
                    inc: Inc::PollDone {
                        pid,
                        gen,
                        poll: answer,
                    },
                },
            );
        }
    }

    pub(super) fn poll_done(&mut self, h: usize, pid: u32, gen: u64, poll: Option<(Poll, String)>) {
        let Some(k) = self.hosts[h].kd.as_mut() else {
            return;
        };
        if k.poll.gen != gen {
            return;
        }
        k.poll.busy = false;
        let changed = std::mem::take(&mut k.poll.changed);
        k.poll.gen += 1;
        let (inst, gen2, interval) = (k.inst, k.poll.gen, k.poll.interval);
        let current = k.neard == Some(pid);
        let mut version_event = None;
        if let Some((_, v)) = &poll {
            if k.poll.version.as_deref() != Some(v.as_str()) {
                k.poll.version = Some(v.clone());
                version_event = Some(v.clone());
            }
        }
        self.after(
            if changed { 0 } else { interval },
            Ev::PollTick { h, inst, gen: gen2 },
        );
        if !current {
            return;
        }
        if let Some(v) = version_event {
            self.kd_feed(h, Event::NeardVersion(v));
        }
        match poll {
            Some((p, _)) => self.kd_feed(h, Event::Status(p)),
            None => self.kd_feed(h, Event::StatusFailed),
        }
    }

    fn make_poll(&self, h: usize, metrics: bool) -> Poll {
        let host = &self.hosts[h];
        let n = host.neard.as_ref().expect("make_poll needs a neard");
        let tip = n.client.tip();
        let c = n.client.counters(ACCOUNT);
        Poll {
            syncing: self.neard_syncing(h),
            head: tip.map_or(0, |b| b.height),
            block_ms: tip.map(|b| b.time_ms),
            wall_ms: host.clock.wall_ms(self.t),
            key: match &n.key {
                None => KeyShown::None,
                Some(k) if is_ours(k) => KeyShown::Ours,
                Some(_) => KeyShown::Other,
            },
            hot_swap_capable: Some(!self.sched.scenario.old_neard[h]),
            target: metrics.then(|| n.client.largest_target_height()),
            reloads: metrics.then_some(n.reloads),
            production: metrics.then_some(Production {
                blocks_produced: c.blocks_produced,
                blocks_expected: c.blocks_expected,
                chunks_produced: c.chunks_produced,
                chunks_expected: c.chunks_expected,
                own_blocks: n.client.blocks_produced(),
                own_chunks: n.client.chunks_produced(),
            }),
        }
    }
}
