//! The machine's lock-store requests: each [`Command`] that asks the store something becomes a
//! call, and its answer the machine's events (a refusal or a gone session is an answer; no
//! usable answer is a failure of its own kind).

use std::collections::VecDeque;

use super::{Conductor, Host, Meter};
use crate::clock::Instant;
use crate::lock_store::{Failure, StoreOp, StoreReply};
use crate::machine::{Command, Event};

/// What a lock-store call in flight is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pending {
    /// [`Command::CreateSession`].
    Create,
    /// [`Command::Renew`].
    Renew(String),
    /// [`Command::Heartbeat`], sent at `sent`.
    Heartbeat {
        session: String,
        seq: u64,
        sent: Instant,
    },
    /// [`Command::Acquire`], sent at `sent`.
    Acquire { session: String, sent: Instant },
    /// [`Command::Release`].
    Release,
    /// [`Command::DestroySession`].
    Destroy(String),
    /// [`Command::ReadKey`].
    Read,
    /// The leader-key watch.
    LeaderWatch,
    /// The cluster watch.
    ClusterWatch,
    /// A status record.
    Publish,
    /// A step of the end of switchover (the finisher's number).
    Finish(u64),
    /// A step of the start's node-id check.
    NodeId,
    /// A call whose answer nobody waits for.
    Unanswered,
}

impl Conductor {
    /// Sends the lock-store request of a machine's command.
    pub(super) fn machine_request(&mut self, command: Command, host: &mut impl Host) {
        let key = self.key_watch.key().to_string();
        let sent = self.now.boot;
        let (op, purpose, label) = match command {
            Command::CreateSession => (
                StoreOp::CreateSession {
                    name: self.settings.machine.node_id.clone(),
                    ttl: self.settings.machine.timing.ttl,
                },
                Pending::Create,
                "create",
            ),
            Command::Renew(session) => (
                StoreOp::Renew {
                    session: session.clone(),
                },
                Pending::Renew(session),
                "renew",
            ),
            Command::Heartbeat {
                session,
                expected_index,
                value,
                seq,
            } => (
                StoreOp::CheckAndLock {
                    key,
                    expected: Some(expected_index),
                    session: session.clone(),
                    value,
                },
                Pending::Heartbeat { session, seq, sent },
                "heartbeat",
            ),
            Command::Acquire {
                session,
                expected_index,
                value,
            } => (
                StoreOp::CheckAndLock {
                    key,
                    expected: expected_index,
                    session: session.clone(),
                    value,
                },
                Pending::Acquire { session, sent },
                "acquire",
            ),
            Command::Release {
                session,
                expected_index,
                value,
            } => (
                StoreOp::Release {
                    key,
                    expected: expected_index,
                    session,
                    value,
                },
                Pending::Release,
                "release",
            ),
            Command::DestroySession(session) => (
                StoreOp::DestroySession {
                    session: session.clone(),
                },
                Pending::Destroy(session),
                "destroy",
            ),
            Command::ReadKey => (
                StoreOp::GetKey {
                    key,
                    blocking: None,
                    consistent: true,
                },
                Pending::Read,
                "read",
            ),
            other => {
                log::error!("not a lock-store request: {other:?}");
                return;
            }
        };
        self.request(op, purpose, Meter::Op(label), host);
    }

    /// The answer to a machine's request, as the machine's events.
    pub(super) fn machine_answer(
        &mut self,
        purpose: Pending,
        result: Result<StoreReply, Failure>,
        follow: &mut VecDeque<Event>,
    ) {
        let key = self.key_watch.key();
        let event = match (purpose, result) {
            (Pending::Create, Ok(StoreReply::Session(id))) => {
                log::info!("created Consul session {id}");
                Event::SessionCreated(id)
            }
            (Pending::Create, r) => {
                log::warn!("cannot create a Consul session: {}", describe(r));
                Event::SessionCreateFailed
            }
            (Pending::Renew(session), Ok(_)) => Event::Renewed { session },
            (Pending::Renew(_), Err(Failure::SessionGone(id))) => {
                log::warn!("Consul session {id} is gone");
                Event::SessionGone(id)
            }
            (Pending::Renew(session), r) => {
                log::warn!("renewing the Consul session failed: {}", describe(r));
                Event::RenewFailed { session }
            }
            (Pending::Heartbeat { seq, sent, .. }, Ok(StoreReply::Index(index))) => {
                Event::HeartbeatAcked { seq, sent, index }
            }
            (Pending::Heartbeat { .. }, Err(Failure::SessionGone(id))) => Event::SessionGone(id),
            (Pending::Heartbeat { .. }, Err(Failure::Rejected(what))) => {
                log::warn!("heartbeat refused: {what}");
                Event::HeartbeatRejected
            }
            (Pending::Heartbeat { .. }, r) => {
                log::warn!("heartbeat failed: {}", describe(r));
                Event::HeartbeatFailed
            }
            (Pending::Acquire { sent, .. }, Ok(StoreReply::Index(index))) => {
                Event::Acquired { sent, index }
            }
            (Pending::Acquire { .. }, Err(Failure::SessionGone(id))) => {
                follow.push_back(Event::AcquireRejected);
                Event::SessionGone(id)
            }
            (Pending::Acquire { .. }, Err(Failure::Rejected(what))) => {
                log::info!("acquiring {key} refused: {what}");
                Event::AcquireRejected
            }
            (Pending::Acquire { .. }, r) => {
                log::warn!("acquiring {key} failed: {}", describe(r));
                Event::AcquireFailed
            }
            (Pending::Release, Ok(StoreReply::Applied(released))) => {
                if released {
                    log::info!("released {key}");
                }
                Event::Released(released)
            }
            (Pending::Release, r) => {
                log::warn!("releasing {key} failed: {}", describe(r));
                Event::ReleaseFailed
            }
            (Pending::Destroy(session), Ok(_)) => {
                log::info!("destroyed Consul session {session}");
                Event::Destroyed { session, ok: true }
            }
            (Pending::Destroy(session), r) => {
                log::warn!("cannot destroy Consul session {session} ({})", describe(r));
                Event::Destroyed { session, ok: false }
            }
            (Pending::Read, Ok(StoreReply::Key(entry, index))) => Event::KeyObserved {
                key: entry.map(|e| e.state()),
                index,
            },
            (Pending::Read, r) => {
                log::warn!("reading {key} failed: {}", describe(r));
                Event::ReadFailed
            }
            (other, r) => {
                log::error!("an answer for {other:?} that is not one: {r:?}");
                return;
            }
        };
        follow.push_back(event);
    }
}

/// A failure (or an answer of the wrong kind) for a log line.
pub(super) fn describe(r: Result<StoreReply, Failure>) -> String {
    match r {
        Err(f) => f.to_string(),
        Ok(other) => format!("an unexpected answer ({other:?})"),
    }
}
