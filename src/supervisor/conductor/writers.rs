//! What the conductor writes besides the lock, each one write at a time:
//!
//! - this node's status record (`kuutamod/<account>/nodes/<node>`), always the newest: two
//!   writes of one key in flight at once may reach the store in either order, and the older
//!   one landing last would show a stale record (a ready standby shown not ready, so
//!   `kuutamoctl switchover` refuses it) until the next change. A failed write is retried every
//!   [`WATCH_RETRY`] with the newest record. A write that timed out may still land after a
//!   newer one, and a snapshot restore brings an old record back: whenever the cluster watch
//!   shows a record of ours that is not the newest and no write is under way, the newest is
//!   written again.
//! - the lock memory in the state directory (an fsync may take a while), the newest last.
//! - the end of a switchover in the control record: the request replaced by its outcome with
//!   check-and-set, retried while the record changes under it (a `pause`, another node),
//!   nothing done if the request is no longer there.

use super::store::{describe, Pending};
use super::{Conductor, Host, Meter, FINISH_TRIES, WATCH_RETRY};
use crate::clock::Instant;
use crate::lease::LockMemory;
use crate::lock_store::{Failure, StoreOp, StoreReply};
use crate::records::{control_key, Control, NodeRecord, SwitchoverDone};

/// The status-record writer.
#[derive(Debug, Clone)]
pub(super) struct RecordWriter {
    key: String,
    /// The newest record.
    newest: Option<NodeRecord>,
    /// `newest` has not been sent yet.
    dirty: bool,
    /// A write is in flight.
    writing: bool,
    /// After a failure: when to write the newest record again.
    retry_at: Option<Instant>,
    failing: bool,
}

impl RecordWriter {
    pub(super) fn new(key: String) -> RecordWriter {
        RecordWriter {
            key,
            newest: None,
            dirty: false,
            writing: false,
            retry_at: None,
            failing: false,
        }
    }

    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// A new record to write.
    pub(super) fn publish(&mut self, record: NodeRecord) {
        self.newest = Some(record);
        self.dirty = true;
    }

    /// A record written by other means (the old writer of [`super::ConductorMutations`]).
    pub(super) fn published(&mut self, record: NodeRecord) {
        self.newest = Some(record);
    }

    /// Consul shows `stored` as our record: if the writer is idle and it is not the newest
    /// record, the newest is written again.
    pub(super) fn stored(&mut self, stored: &NodeRecord) {
        if self.writing || self.dirty || self.retry_at.is_some() {
            return;
        }
        if self.newest.as_ref().is_some_and(|n| n != stored) {
            self.dirty = true;
        }
    }

    /// The newest record.
    pub(super) fn newest(&self) -> Option<&NodeRecord> {
        self.newest.as_ref()
    }

    /// The write to start now, if any.
    pub(super) fn next(&mut self, now: Instant) -> Option<StoreOp> {
        if self.writing {
            return None;
        }
        match self.retry_at {
            Some(at) if now < at => return None,
            Some(_) => self.retry_at = None,
            None if !self.dirty => return None,
            None => {}
        }
        let record = self.newest.as_ref()?;
        self.dirty = false;
        self.writing = true;
        Some(StoreOp::Put {
            key: self.key.clone(),
            value: record.to_bytes(),
        })
    }

    /// The write's answer.
    pub(super) fn written(&mut self, result: Result<StoreReply, Failure>, now: Instant) {
        self.writing = false;
        match result {
            Ok(_) => {
                if self.failing {
                    log::info!("this node's status record is published again");
                }
                self.failing = false;
            }
            Err(e) => {
                if !self.failing {
                    log::warn!("cannot publish this node's status record (retrying): {e}");
                }
                self.failing = true;
                self.retry_at = Some(now + WATCH_RETRY);
            }
        }
    }

    pub(super) fn due(&self) -> Option<Instant> {
        self.retry_at.filter(|_| !self.writing)
    }

    /// The newest record is written.
    pub(super) fn flushed(&self) -> bool {
        !self.writing && !self.dirty && self.retry_at.is_none()
    }
}

/// The lock-memory keeper.
#[derive(Debug, Clone, Default)]
pub(super) struct MemoryKeeper {
    newest: Option<LockMemory>,
    dirty: bool,
    /// The write in flight.
    writing: Option<u64>,
    failing: bool,
}

impl MemoryKeeper {
    /// A newer memory to write.
    pub(super) fn keep(&mut self, m: LockMemory) {
        self.newest = Some(m);
        self.dirty = true;
    }

    /// The memory to write now, if any.
    pub(super) fn next(&mut self) -> Option<LockMemory> {
        if self.writing.is_some() || !self.dirty {
            return None;
        }
        self.dirty = false;
        self.newest
    }

    pub(super) fn sent(&mut self, id: u64) {
        self.writing = Some(id);
    }

    /// Write `id` is done.
    pub(super) fn saved(&mut self, id: u64, result: Result<(), String>) {
        if self.writing != Some(id) {
            return;
        }
        self.writing = None;
        match result {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    log::error!(
                        "cannot write kuutamod's lock memory: {e}; a restarted kuutamod would not recognise a rewound Consul"
                    );
                }
                self.failing = true;
            }
        }
    }

    pub(super) fn flushed(&self) -> bool {
        self.writing.is_none() && !self.dirty
    }
}

/// Where the end of one switchover stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Read the control record at this instant.
    ReadAt(Instant),
    /// The read is in flight.
    Reading,
    /// The check-and-set write is in flight.
    Writing,
}

/// The end of one switchover, in the control record.
#[derive(Debug, Clone)]
pub(super) struct Finisher {
    /// Its number (its lock-store calls carry it).
    n: u64,
    done: SwitchoverDone,
    tries: usize,
    step: Step,
}

impl Finisher {
    pub(super) fn new(n: u64, done: SwitchoverDone, now: Instant) -> Finisher {
        Finisher {
            n,
            done,
            tries: 0,
            step: Step::ReadAt(now),
        }
    }

    pub(super) fn due(&self) -> Option<Instant> {
        match self.step {
            Step::ReadAt(t) => Some(t),
            _ => None,
        }
    }
}

impl Conductor {
    /// Starts the next try of every switchover end that is due; gives up on the ones out of
    /// tries.
    pub(super) fn finish_pump(&mut self, host: &mut impl Host) {
        let now = self.now.boot;
        let key = control_key(&self.settings.machine.account);
        let mut reads = Vec::new();
        self.finishers.retain_mut(|f| match f.step {
            Step::ReadAt(t) if now >= t => {
                if f.tries >= FINISH_TRIES {
                    log::warn!(
                        "gave up ending switchover {} after {FINISH_TRIES} tries: `kuutamoctl switchover --cancel` clears it",
                        f.done.id
                    );
                    return false;
                }
                f.tries += 1;
                f.step = Step::Reading;
                reads.push(f.n);
                true
            }
            _ => true,
        });
        for n in reads {
            self.request(
                StoreOp::GetKey {
                    key: key.clone(),
                    blocking: None,
                    consistent: true,
                },
                Pending::Finish(n),
                Meter::Publish,
                host,
            );
        }
    }

    /// An answer for switchover end number `n`.
    pub(super) fn finish_answer(
        &mut self,
        n: u64,
        result: Result<StoreReply, Failure>,
        host: &mut impl Host,
    ) {
        let now = self.now.boot;
        let key = control_key(&self.settings.machine.account);
        let Some(i) = self.finishers.iter().position(|f| f.n == n) else {
            return;
        };
        let f = &mut self.finishers[i];
        match (f.step, result) {
            (Step::Reading, Ok(StoreReply::Key(entry, _))) => {
                let Some(entry) = entry else {
                    self.finishers.remove(i);
                    return;
                };
                let mut control = Control::parse(&entry.bytes()).unwrap_or_default();
                if !control.finish(&f.done) {
                    // Ended already (or cancelled).
                    self.finishers.remove(i);
                    return;
                }
                f.step = Step::Writing;
                let op = StoreOp::PutCas {
                    key,
                    value: control.to_bytes(),
                    index: entry.modify_index,
                };
                self.request(op, Pending::Finish(n), Meter::Publish, host);
            }
            (Step::Reading, r) => {
                log::warn!(
                    "cannot read {key} to end switchover {}: {}",
                    f.done.id,
                    describe(r)
                );
                f.step = Step::ReadAt(now + WATCH_RETRY);
            }
            (Step::Writing, Ok(StoreReply::Applied(true))) => {
                let d = &f.done;
                log::info!(
                    "switchover {} ended: {}{}",
                    d.id,
                    d.outcome,
                    if d.ok { "" } else { " (not as asked)" }
                );
                self.finishers.remove(i);
            }
            // The record changed under the write: try again at once.
            (Step::Writing, Ok(_)) => f.step = Step::ReadAt(now),
            (Step::Writing, r) => {
                log::warn!("cannot end switchover {}: {}", f.done.id, describe(r));
                f.step = Step::ReadAt(now + WATCH_RETRY);
            }
            (Step::ReadAt(_), _) => {}
        }
    }
}
