//! Unit tests of [`super`]: the conductor driven by a host that records what it is asked, on
//! virtual time.

use std::time::Duration;

use super::*;
use crate::backoff::BackoffConfig;
use crate::consul::KvEntry;
use crate::guard::Note;
use crate::lease::LockMemory;
use crate::machine::{GuardOrder, Mutations};
use crate::neard::rpc::NeardMetrics;
use crate::timing::Timing;

const KEY: &str = "ed25519:ours";

/// What the conductor asked of the host.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    Store(u64, StoreOp),
    Status(u64),
    Metrics(u64),
    Spawn(u64, Role),
    Order(u64, GuardOrder),
    SpawnGuard(u64),
    DropGuard(Option<u32>),
    Other,
}

#[derive(Default)]
struct Fake {
    calls: Vec<Call>,
}

impl Host for Fake {
    fn store(&mut self, id: u64, op: StoreOp, _: Meter) {
        self.calls.push(Call::Store(id, op));
    }
    fn status(&mut self, id: u64) {
        self.calls.push(Call::Status(id));
    }
    fn metrics(&mut self, id: u64) {
        self.calls.push(Call::Metrics(id));
    }
    fn windows(&mut self, _: u64) {
        self.calls.push(Call::Other);
    }
    fn save_memory(&mut self, _: u64, _: LockMemory) {
        self.calls.push(Call::Other);
    }
    fn spawn_neard(&mut self, id: u64, role: Role) -> Result<(), SpawnError> {
        self.calls.push(Call::Spawn(id, role));
        Ok(())
    }
    fn signal_neard(&mut self, _: u32, _: NeardSignal) -> Result<(), String> {
        self.calls.push(Call::Other);
        Ok(())
    }
    fn install_key(&mut self) {}
    fn remove_key(&mut self) {}
    fn guard_order(&mut self, seq: u64, order: GuardOrder) -> Result<(), String> {
        self.calls.push(Call::Order(seq, order));
        Ok(())
    }
    fn adopt_neard(&mut self, _: u32) -> Result<(), String> {
        Ok(())
    }
    fn reap_neard(&mut self, _: u32) -> Result<(), String> {
        Ok(())
    }
    fn drop_guard(&mut self, neard: Option<u32>) {
        self.calls.push(Call::DropGuard(neard));
    }
    fn spawn_guard(&mut self, generation: u64) -> Result<(), String> {
        self.calls.push(Call::SpawnGuard(generation));
        Ok(())
    }
    fn hook(&mut self, _: State, _: State) {}
    fn report(&mut self, _: Report) {}
}

fn settings(check_node_id: bool) -> Settings {
    Settings {
        machine: Config {
            node_id: "n1".into(),
            hostname: "h1".into(),
            account: "pool.near".into(),
            hot_swap: true,
            timing: Timing::new(Duration::from_secs(3), Duration::from_millis(500))
                .expect("timing"),
            syncing_grace: Duration::from_secs(2),
            backoff: BackoffConfig::DEFAULT,
            priority: 1,
            doppelganger_heights: 20,
            block_delays: crate::fence::BlockDelays::NEARD,
            remembered: None,
            mutations: Mutations::default(),
        },
        validator_key: KEY.into(),
        instance: "me".into(),
        check_node_id,
    }
}

/// A conductor on a virtual clock.
struct T {
    c: Conductor,
    host: Fake,
    now: Now,
    /// The `/status` read in flight, as the calls so far show.
    status: Option<u64>,
    /// Calls already looked at for orders to acknowledge.
    seen: usize,
    /// The generation of the guard started last.
    generation: u64,
}

impl T {
    fn new(check_node_id: bool) -> T {
        T::with(check_node_id, ConductorMutations::default())
    }

    fn with(check_node_id: bool, mutations: ConductorMutations) -> T {
        let now = Now {
            boot: Instant::from_nanos(1_000_000_000),
            mono: 1_000_000_000,
            wall_ms: 1_750_000_000_000,
        };
        let mut t = T {
            c: Conductor::new(settings(check_node_id), now).with_mutations(mutations),
            host: Fake::default(),
            now,
            status: None,
            seen: 0,
            generation: 0,
        };
        t.c.start(now, &mut t.host);
        t.ack();
        t
    }

    fn feed(&mut self, input: Input) {
        self.c.feed(input, self.now, &mut self.host);
        self.ack();
    }

    /// Acknowledges the orders given since the last look.
    fn ack(&mut self) {
        while self.seen < self.host.calls.len() {
            let call = self.host.calls[self.seen].clone();
            self.seen += 1;
            match call {
                Call::SpawnGuard(g) => self.generation = g,
                Call::Order(seq, _) => {
                    let generation = self.generation;
                    self.c.feed(
                        Input::Guard(Note::Ack { generation, seq }),
                        self.now,
                        &mut self.host,
                    );
                }
                _ => {}
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now.boot = self.now.boot + d;
        self.now.mono += u64::try_from(d.as_nanos()).expect("short");
        self.now.wall_ms += u64::try_from(d.as_millis()).expect("short");
        self.feed(Input::Tick);
    }

    fn take(&mut self) -> Vec<Call> {
        self.seen = 0;
        let calls = std::mem::take(&mut self.host.calls);
        for c in &calls {
            if let Call::Status(id) = c {
                self.status = Some(*id);
            }
        }
        calls
    }

    /// The writes of our status record among `calls`: (call id, record).
    fn record_writes(calls: &[Call]) -> Vec<(u64, NodeRecord)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Store(id, StoreOp::Put { key, value }) if key.ends_with("/nodes/n1") => {
                    Some((*id, NodeRecord::parse(value).expect("a record")))
                }
                _ => None,
            })
            .collect()
    }

    fn find(calls: &[Call], f: impl Fn(&StoreOp) -> bool) -> Option<u64> {
        calls.iter().find_map(|c| match c {
            Call::Store(id, op) if f(op) => Some(*id),
            _ => None,
        })
    }

    /// The guard starts neard (pid `pid`) as ordered; returns the calls since.
    fn spawned(&mut self, calls: &[Call], pid: u32) -> Vec<Call> {
        let id = calls
            .iter()
            .find_map(|c| match c {
                Call::Spawn(id, _) => Some(*id),
                _ => None,
            })
            .expect("a spawn order");
        self.feed(Input::Guard(Note::Spawned {
            generation: 1,
            id,
            pid,
        }));
        self.take()
    }

    /// Answers the poll in flight (status, then metrics when asked) for a synced neard.
    fn answer_poll(&mut self, head: u64, reloads: u64) -> Vec<Call> {
        let id = self.status.take().expect("a status read");
        self.feed(Input::Status {
            id,
            result: Ok(StatusAnswer {
                syncing: false,
                head,
                block_ms: Some(self.now.wall_ms - 10),
                validator_key: None,
                version: Some("2.6.0".into()),
                hot_swap_capable: Some(true),
            }),
        });
        let mut out = self.take();
        if let Some(id) = out.iter().find_map(|c| match c {
            Call::Metrics(id) => Some(*id),
            _ => None,
        }) {
            self.feed(Input::Metrics {
                id,
                result: Ok(NeardMetrics {
                    largest_target: Some(head + 1),
                    config_reloads: Some(reloads),
                    production: None,
                }),
            });
            out.extend(self.take());
        }
        out
    }
}

#[test]
fn the_start_orders_a_guard_then_neard_and_watches_the_key_and_the_records() {
    let mut t = T::new(false);
    let calls = t.take();
    assert!(calls.contains(&Call::SpawnGuard(1)), "{calls:?}");
    assert!(calls.contains(&Call::Spawn(1, Role::Voter)), "{calls:?}");
    assert!(
        T::find(&calls, |op| matches!(op, StoreOp::GetKey { key, blocking: None, consistent: false } if key == "kuutamod-leader/pool.near")).is_some(),
        "{calls:?}"
    );
    assert!(
        T::find(&calls, |op| matches!(op, StoreOp::GetPrefix { prefix, blocking: None } if prefix == "kuutamod/pool.near/")).is_some(),
        "{calls:?}"
    );
    assert_eq!(T::record_writes(&calls).len(), 1, "{calls:?}");
}

#[test]
fn status_records_are_written_one_at_a_time_the_newest_last() {
    let mut t = T::new(false);
    let calls = t.take();
    let writes = T::record_writes(&calls);
    let (first, rec) = writes[0].clone();
    assert_eq!(rec.state, "Startup");
    // The first write is slow; neard starts and syncs meanwhile: newer records.
    t.spawned(&calls, 100);
    let calls = t.answer_poll(50, 1);
    assert!(
        T::find(&calls, |op| matches!(op, StoreOp::CreateSession { .. })).is_some(),
        "{calls:?}"
    );
    assert!(
        T::record_writes(&calls).is_empty(),
        "nothing is written while a write is in flight: {calls:?}"
    );
    // The first write lands: the newest record follows, and only it.
    t.feed(Input::Store {
        id: first,
        result: Ok(StoreReply::Done),
    });
    let writes = T::record_writes(&t.take());
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].1.state, "Registering");
}

#[cfg(feature = "mutations")]
#[test]
fn with_the_old_writer_a_record_is_written_while_an_older_one_is_in_flight() {
    let mut t = T::with(
        false,
        ConductorMutations {
            records_overtake: true,
            ..ConductorMutations::default()
        },
    );
    let calls = t.take();
    assert_eq!(T::record_writes(&calls).len(), 1);
    t.spawned(&calls, 100);
    let calls = t.answer_poll(50, 1);
    let writes = T::record_writes(&calls);
    assert!(
        !writes.is_empty(),
        "a second write while the first is in flight: {calls:?}"
    );
}

#[test]
fn a_failed_status_record_write_is_retried_with_the_newest_record() {
    let mut t = T::new(false);
    let calls = t.take();
    let (first, _) = T::record_writes(&calls)[0].clone();
    t.feed(Input::Store {
        id: first,
        result: Err(Failure::Failed("unreachable".into())),
    });
    assert!(T::record_writes(&t.take()).is_empty());
    t.advance(WATCH_RETRY / 2);
    assert!(
        T::record_writes(&t.take()).is_empty(),
        "not before the retry delay"
    );
    t.advance(WATCH_RETRY / 2);
    let writes = T::record_writes(&t.take());
    assert_eq!(writes.len(), 1, "retried after the delay");
    assert!(!t.c.flushed());
    t.feed(Input::Store {
        id: writes[0].0,
        result: Ok(StoreReply::Done),
    });
    assert!(t.c.flushed());
}

fn leader_entry(index: u64) -> KvEntry {
    KvEntry {
        key: "kuutamod-leader/pool.near".into(),
        value: None,
        session: None,
        lock_index: 0,
        modify_index: index,
    }
}

/// The watch query in `calls`: its id and index.
fn watch_query(calls: &[Call]) -> Option<(u64, Option<u64>)> {
    calls.iter().find_map(|c| match c {
        Call::Store(id, StoreOp::GetKey { key, blocking, .. })
            if key == "kuutamod-leader/pool.near" =>
        {
            Some((*id, blocking.map(|(i, _)| i)))
        }
        _ => None,
    })
}

#[test]
fn the_leader_watch_blocks_on_the_last_index_pauses_when_unchanged_and_starts_over_when_it_goes_back(
) {
    let mut t = T::new(false);
    let (id, index) = watch_query(&t.take()).expect("a watch query");
    assert_eq!(index, None, "the first read does not block");
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Key(Some(leader_entry(10)), 10)),
    });
    let (id, index) = watch_query(&t.take()).expect("queried again at once");
    assert_eq!(index, Some(10));
    // The wait ran out without a change: a pause before the next query.
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Key(Some(leader_entry(10)), 10)),
    });
    assert_eq!(watch_query(&t.take()), None);
    t.advance(WATCH_IDLE);
    let (id, index) = watch_query(&t.take()).expect("after the pause");
    assert_eq!(index, Some(10));
    // The index went back (a restore): the watch starts over, without blocking.
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Key(Some(leader_entry(7)), 7)),
    });
    let (id, index) = watch_query(&t.take()).expect("at once");
    assert_eq!(index, None);
    // A failure: a longer pause, then a read from scratch.
    t.feed(Input::Store {
        id,
        result: Err(Failure::Failed("unreachable".into())),
    });
    t.advance(WATCH_IDLE);
    assert_eq!(watch_query(&t.take()), None);
    t.advance(WATCH_RETRY);
    assert_eq!(watch_query(&t.take()).map(|(_, i)| i), Some(None));
}

#[test]
fn metrics_are_read_with_the_first_poll_then_every_interval_and_a_previous_neard_s_poll_is_dropped()
{
    let mut t = T::new(false);
    let calls = t.take();
    t.spawned(&calls, 100);
    let calls = t.answer_poll(50, 1);
    assert!(calls.iter().any(|c| matches!(c, Call::Metrics(_))));
    assert_eq!(t.c.machine().last_poll().map(|p| p.reloads), Some(Some(1)));
    let first = t.now.boot;
    eprintln!("after first: {:?} {:?}", t.status, t.c.poller);
    // The polls of the next five seconds come without /metrics (the machine keeps the reload
    // counter it saw); then it is read again.
    let mut reads = Vec::new();
    for i in 0..14u64 {
        t.advance(crate::timing::STATUS_INTERVAL / 2);
        t.take();
        if t.status.is_some() {
            let calls = t.answer_poll(51 + i, 1);
            let metrics = calls.iter().any(|c| matches!(c, Call::Metrics(_)));
            reads.push((t.now.boot.saturating_duration_since(first), metrics));
        }
    }
    let with: Vec<_> = reads
        .iter()
        .filter(|(_, m)| *m)
        .map(|(at, _)| *at)
        .collect();
    assert!(reads.len() >= 5, "{reads:?}");
    assert_eq!(with, vec![METRICS_INTERVAL], "{reads:?}");
    assert_eq!(t.c.machine().last_poll().map(|p| p.reloads), Some(Some(1)));
    // A poll in flight when neard exits is not the new neard's.
    t.advance(crate::timing::STATUS_INTERVAL);
    t.take();
    let status = t.status.take().expect("a poll");
    t.feed(Input::Guard(Note::Exited {
        generation: 1,
        pid: 100,
        status: std::os::unix::process::ExitStatusExt::from_raw(9),
    }));
    assert_eq!(t.c.neard(), None);
    t.feed(Input::Status {
        id: status,
        result: Ok(StatusAnswer {
            syncing: false,
            head: 99,
            block_ms: None,
            validator_key: Some(KEY.into()),
            version: None,
            hot_swap_capable: None,
        }),
    });
    assert_eq!(
        t.c.machine().last_poll(),
        None,
        "neard is gone for the machine"
    );
}

#[test]
fn the_start_is_refused_next_to_a_live_kuutamod_of_our_node_id_on_another_host() {
    let mut t = T::new(true);
    let calls = t.take();
    assert_eq!(calls.len(), 1, "only the check: {calls:?}");
    let id = T::find(
        &calls,
        |op| matches!(op, StoreOp::GetKey { key, .. } if key == "kuutamod/pool.near/nodes/n1"),
    )
    .expect("the check");
    let theirs = NodeRecord {
        node_id: "n1".into(),
        hostname: "other".into(),
        session: Some("s9".into()),
        ..NodeRecord::default()
    };
    let entry = KvEntry {
        key: "kuutamod/pool.near/nodes/n1".into(),
        value: Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            theirs.to_bytes(),
        )),
        session: None,
        lock_index: 0,
        modify_index: 5,
    };
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Key(Some(entry), 5)),
    });
    let calls = t.take();
    let id = T::find(
        &calls,
        |op| matches!(op, StoreOp::SessionInfo { session } if session == "s9"),
    )
    .expect("asks for the other host's session");
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Info(Some(crate::consul::SessionInfo {
            id: "s9".into(),
            name: "n1".into(),
            ttl: "3s".into(),
            node: "other".into(),
        }))),
    });
    assert!(t.c.exited());
    assert!(
        t.c.refused().is_some_and(|why| why.contains("host other")),
        "{:?}",
        t.c.refused()
    );
    assert!(t.take().is_empty(), "nothing started");
}

#[test]
fn the_start_goes_on_when_the_other_host_s_session_is_gone() {
    let mut t = T::new(true);
    let calls = t.take();
    let id = calls
        .iter()
        .find_map(|c| match c {
            Call::Store(id, _) => Some(*id),
            _ => None,
        })
        .expect("the check");
    t.feed(Input::Store {
        id,
        result: Err(Failure::Failed("unreachable".into())),
    });
    assert!(!t.c.exited());
    assert!(t.take().contains(&Call::SpawnGuard(1)));
}

#[test]
fn a_lost_guard_takes_neard_along() {
    let mut t = T::new(false);
    let calls = t.take();
    t.spawned(&calls, 100);
    assert_eq!(t.c.neard(), Some(100));
    t.feed(Input::Guard(Note::Lost {
        generation: 1,
        why: "gone".into(),
    }));
    let calls = t.take();
    assert_eq!(
        calls.first(),
        Some(&Call::DropGuard(Some(100))),
        "{calls:?}"
    );
    assert!(
        calls.contains(&Call::SpawnGuard(2)),
        "a new guard: {calls:?}"
    );
    // A note of the old guard is not the new one's.
    t.feed(Input::Guard(Note::Lost {
        generation: 1,
        why: "gone".into(),
    }));
    assert!(!t.take().iter().any(|c| matches!(c, Call::DropGuard(_))));
}

#[test]
fn a_new_neard_s_first_poll_reads_its_metrics_also_within_five_seconds_of_the_last_read() {
    // Found by the deterministic simulation (seed 117): a neard restarted under a new guard was
    // polled without /metrics (they had been read within five seconds, of the old neard), the
    // lock came at once, and the hot swap could never be confirmed: its reload counter before
    // the SIGHUP was unknown. A fallback to a restart, and a missed block.
    let mut t = T::new(false);
    let calls = t.take();
    t.spawned(&calls, 100);
    let calls = t.answer_poll(50, 1);
    assert!(calls.iter().any(|c| matches!(c, Call::Metrics(_))));
    // neard exits and is started again at once.
    t.feed(Input::Guard(Note::Exited {
        generation: 1,
        pid: 100,
        status: std::os::unix::process::ExitStatusExt::from_raw(9),
    }));
    t.advance(Duration::from_secs(1));
    let calls = t.take();
    let id = calls
        .iter()
        .find_map(|c| match c {
            Call::Spawn(id, _) => Some(*id),
            _ => None,
        })
        .expect("neard started again");
    t.feed(Input::Guard(Note::Spawned {
        generation: 1,
        id,
        pid: 101,
    }));
    t.take();
    let calls = t.answer_poll(51, 1);
    assert!(
        calls.iter().any(|c| matches!(c, Call::Metrics(_))),
        "the new neard's first poll: {calls:?}"
    );
}

/// The cluster watch's answer in `calls`, answered with our record `mine` and index `index`.
fn answer_cluster(t: &mut T, calls: &[Call], mine: &NodeRecord, index: u64) {
    let id = calls
        .iter()
        .find_map(|c| match c {
            Call::Store(id, StoreOp::GetPrefix { .. }) => Some(*id),
            _ => None,
        })
        .expect("a cluster query");
    let entry = KvEntry {
        key: "kuutamod/pool.near/nodes/n1".into(),
        value: Some(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            mine.to_bytes(),
        )),
        session: None,
        lock_index: 0,
        modify_index: index,
    };
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Prefix(vec![entry], index)),
    });
}

#[test]
fn a_stale_record_of_ours_in_consul_is_written_again() {
    // Found by the deterministic simulation (seed 113): a write that timed out (its agent cut
    // off) landed after the newer record that followed it, and Consul showed the node as it
    // was seconds before, until its next change.
    let mut t = T::new(false);
    let calls = t.take();
    let (id, first) = T::record_writes(&calls)[0].clone();
    let cluster = calls.clone();
    t.feed(Input::Store {
        id,
        result: Ok(StoreReply::Done),
    });
    t.spawned(&calls, 100);
    let mut calls = t.answer_poll(50, 1);
    // Every write lands; the last one is the newest record.
    let mut newest = None;
    while let Some((id, r)) = T::record_writes(&calls).last().cloned() {
        newest = Some(r);
        t.feed(Input::Store {
            id,
            result: Ok(StoreReply::Done),
        });
        calls = t.take();
    }
    let newest = newest.expect("a newer record");
    assert_ne!(newest, first);
    // The watch shows the newest: nothing to do. It shows the first one (the late write): the
    // newest is written again.
    answer_cluster(&mut t, &cluster, &newest, 10);
    let calls = t.take();
    assert!(T::record_writes(&calls).is_empty(), "{calls:?}");
    answer_cluster(&mut t, &calls, &first, 11);
    let writes = T::record_writes(&t.take());
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].1, newest);
}
