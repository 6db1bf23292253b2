//! Unit tests of the machine: scripted event sequences with virtual time, and a randomized test
//! of the safety invariants.
//!
//! Long on purpose: each scenario is spelled out event by event against one small driver, so
//! that a reader can follow it like a trace; splitting them would split the driver from them.

use super::*;
use crate::backoff::BackoffConfig;
use crate::doppelganger::Production;
use crate::lease::{KeyState, RecordState};
use crate::records::{Control, NodeRecord};
use crate::timing::Timing;

const TTL: Duration = Duration::from_secs(3);
const GRACE: Duration = Duration::from_millis(500);

fn config(hot_swap: bool) -> Config {
    Config {
        node_id: "n1".into(),
        hostname: "h1".into(),
        account: "pool.near".into(),
        hot_swap,
        timing: Timing::new(TTL, GRACE).expect("timing"),
        syncing_grace: Duration::from_secs(2),
        backoff: BackoffConfig::DEFAULT,
        priority: 1,
        doppelganger_heights: 20,
        block_delays: crate::fence::BlockDelays::NEARD,
        remembered: None,
        mutations: Mutations::default(),
    }
}

/// A machine with a clock, recording every command.
struct Driver {
    m: Machine,
    now: Instant,
    log: Vec<Command>,
    pid: u32,
    reloads: u64,
    key: KeyShown,
    head: u64,
    target: u64,
    /// Whether Consul acknowledges session renews (else each fails without a verdict).
    renews_ok: bool,
}

impl Driver {
    fn new(hot_swap: bool) -> Driver {
        let now = Instant::from_nanos(1_000_000_000);
        let mut m = Machine::new(config(hot_swap), now);
        // A node that has followed the key (the rule for one that may have missed writes has
        // tests of its own below).
        m.rejoining = None;
        Driver {
            m,
            now,
            log: Vec::new(),
            pid: 100,
            reloads: 1,
            key: KeyShown::None,
            head: 50,
            target: 51,
            renews_ok: true,
        }
    }

    /// Feeds `e`; Consul acknowledges every session renew at once.
    fn feed(&mut self, e: Event) -> Vec<Command> {
        let mut out = self.m.handle(e, self.now);
        self.log.extend(out.iter().cloned());
        let renews: Vec<String> = out
            .iter()
            .filter_map(|c| match c {
                Command::Renew(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        for session in renews {
            out.extend(self.feed(if self.renews_ok {
                Event::Renewed { session }
            } else {
                Event::RenewFailed { session }
            }));
        }
        out
    }

    fn advance(&mut self, d: Duration) -> Vec<Command> {
        self.now = self.now + d;
        self.feed(Event::Tick)
    }

    /// A poll of a live chain: the tip was produced 10 ms before the poll (on a wall clock that
    /// runs with the test's monotonic clock).
    fn poll(&self) -> Poll {
        let wall_ms = 1_000_000
            + self
                .now
                .saturating_duration_since(Instant::from_nanos(0))
                .as_millis() as u64;
        Poll {
            syncing: false,
            head: self.head,
            block_ms: Some(wall_ms - 10),
            wall_ms,
            key: self.key,
            hot_swap_capable: Some(true),
            target: Some(self.target),
            reloads: Some(self.reloads),
            production: None,
        }
    }

    fn status(&mut self) -> Vec<Command> {
        let p = self.poll();
        self.feed(Event::Status(p))
    }

    /// Starts the guard, then neard through it, syncs, and creates a session.
    fn reach_voting(&mut self) {
        let out = self.feed(Event::Tick);
        assert!(out.contains(&Command::RespawnGuard), "{out:?}");
        assert!(
            !out.contains(&Command::StartNeard(Role::Voter)),
            "neard is the guard's child: not before the guard runs: {out:?}"
        );
        let out = self.feed(Event::GuardSpawned);
        assert!(out.contains(&Command::StartNeard(Role::Voter)), "{out:?}");
        self.ack_guard();
        self.feed(Event::NeardSpawned {
            pid: self.pid,
            role: Role::Voter,
        });
        let out = self.status();
        assert!(out.contains(&Command::CreateSession), "{out:?}");
        self.feed(Event::SessionCreated("s1".into()));
        assert_eq!(self.m.state(), State::Voting);
    }

    /// Acknowledges the heartbeats among `out` at once, at index `base + seq`.
    fn ack_heartbeats(&mut self, out: &[Command], base: u64) {
        for c in out {
            if let Command::Heartbeat { seq, .. } = c {
                let (seq, sent) = (*seq, self.now);
                self.feed(Event::HeartbeatAcked {
                    seq,
                    sent,
                    index: base + seq,
                });
            }
        }
    }

    /// Acknowledges every guard order sent so far.
    fn ack_guard(&mut self) {
        let last = self
            .log
            .iter()
            .filter_map(|c| match c {
                Command::Guard { seq, .. } => Some(*seq),
                _ => None,
            })
            .max();
        if let Some(seq) = last {
            self.feed(Event::GuardAck(seq));
        }
    }

    /// 100 ms cut off from the lock store (every heartbeat and release fails; renews too
    /// unless `renews_ok`), neard answering and applying a demotion: what the machine said.
    fn cut_off_step(&mut self) -> Vec<Command> {
        let mut out = self.advance(Duration::from_millis(100));
        self.ack_guard();
        out.extend(self.status());
        let mut i = 0;
        while let Some(c) = out.get(i).cloned() {
            match c {
                Command::Heartbeat { .. } => out.extend(self.feed(Event::HeartbeatFailed)),
                Command::Release { .. } => out.extend(self.feed(Event::ReleaseFailed)),
                Command::Sighup => {
                    self.key = KeyShown::None;
                    self.reloads += 1;
                }
                _ => {}
            }
            i += 1;
        }
        out
    }

    fn observe(&mut self, key: Option<KeyState>, index: u64) -> Vec<Command> {
        self.feed(Event::KeyObserved { key, index })
    }

    fn released_key(&self, index: u64) -> KeyState {
        let r = n0_record(
            9,
            RecordState::Released,
            Horizon {
                head: Some(40),
                target: Some(41),
                exact: true,
                stale_ms: None,
            },
        );
        KeyState {
            index,
            session: None,
            value: r.to_bytes(),
        }
    }

    /// From Voting, a clean release by the previous leader: acquire, arm, hot swap, confirm.
    fn reach_validating(&mut self) {
        self.reach_validating_with(true);
    }

    /// [`Self::reach_validating`], where the polls just before the acquisition and before the
    /// SIGHUP carry `/metrics` or not (they are read every few seconds).
    fn reach_validating_with(&mut self, metrics: bool) {
        let poll = |d: &mut Driver| {
            let mut p = d.poll();
            if !metrics {
                p.reloads = None;
                p.target = None;
            }
            d.feed(Event::Status(p))
        };
        self.reach_voting();
        poll(self);
        let out = self.observe(Some(self.released_key(10)), 10);
        let acquire = out
            .iter()
            .find(|c| matches!(c, Command::Acquire { .. }))
            .cloned();
        assert!(
            matches!(
                acquire,
                Some(Command::Acquire {
                    expected_index: Some(10),
                    ..
                })
            ),
            "{out:?}"
        );
        let sent = self.now;
        let out = self.feed(Event::Acquired { sent, index: 11 });
        assert_eq!(self.m.state(), State::Promoting);
        assert!(
            !out.contains(&Command::InstallKey),
            "no key before the guard has acknowledged: {out:?}"
        );
        let before = self.log.len();
        self.ack_guard();
        poll(self);
        let out = &self.log[before..];
        assert!(out.contains(&Command::InstallKey), "{out:?}");
        assert!(out.contains(&Command::Sighup), "{out:?}");
        assert_eq!(self.m.state(), State::Validating, "the key may be live");
        self.key = KeyShown::Ours;
        self.reloads += 1;
        let out = self.status();
        assert!(
            out.iter()
                .any(|c| matches!(c, Command::Activated { hot_swap: true, .. })),
            "{out:?}"
        );
        assert!(self.m.key_live());
        self.ack_guard();
    }

    fn count(&self, f: impl Fn(&Command) -> bool) -> usize {
        self.log.iter().filter(|c| f(c)).count()
    }
}

/// Found by `scripts/bench --quick` (15a, hot swap): the last poll before a promotion whose
/// fence opened at once had no `/metrics`, so the reload counter before the SIGHUP was unknown,
/// the swap could never be confirmed, and it fell back to a restart (a missed block).
#[test]
fn a_hot_swap_after_a_poll_without_metrics_is_confirmed() {
    let mut d = Driver::new(true);
    d.reach_validating_with(false);
    assert_eq!(d.count(|c| matches!(c, Command::HotSwapFallback(_))), 0);
}

#[test]
fn a_block_produced_before_the_hot_swap_is_confirmed_is_not_a_doppelganger() {
    // Found by the bench (17e): the poll that confirmed the hot swap already counted the new
    // leader's first block, and the node, still promoting, took it for a foreign signer.
    let mut d = Driver::new(true);
    d.reach_voting();
    let produced = |n: u64| Production {
        blocks_produced: n,
        blocks_expected: n,
        chunks_produced: 0,
        chunks_expected: 0,
        own_blocks: n,
        own_chunks: 0,
    };
    // Leaderless for longer than the grace, no production.
    for _ in 0..(TTL.as_millis() / 500 + 2) {
        d.advance(Duration::from_millis(500));
        d.ack_guard();
        let mut p = d.poll();
        p.production = Some(produced(0));
        d.feed(Event::Status(p));
    }
    d.observe(Some(d.released_key(10)), 10);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 11 });
    d.ack_guard();
    d.status();
    assert!(d.log.contains(&Command::Sighup));
    // The confirming poll shows our key and our first block.
    d.key = KeyShown::Ours;
    d.reloads += 1;
    let mut p = d.poll();
    p.production = Some(produced(1));
    d.feed(Event::Status(p));
    assert!(d.m.key_live());
    assert_eq!(d.m.doppelganger(), None, "{:?}", d.log);
}

#[test]
fn a_clean_release_is_taken_over_without_waiting() {
    let mut d = Driver::new(true);
    d.reach_validating();
}

#[test]
fn an_absent_key_waits_a_full_ttl_after_the_acquisition() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let out = d.observe(None, 5);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Acquire {
                expected_index: None,
                ..
            }
        )),
        "{out:?}"
    );
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 6 });
    d.ack_guard();
    // Heartbeats keep the lease alive meanwhile; the chain makes a block every 600 ms.
    let mut installed = None;
    for i in 1..=60 {
        if i % 6 == 0 {
            d.head += 1;
            d.target += 1;
        }
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 7);
        d.ack_guard();
        d.status();
        if d.log.contains(&Command::InstallKey) {
            installed = Some(d.now.saturating_duration_since(sent));
            break;
        }
    }
    let waited = installed.expect("the key went live");
    // Nothing is known of a previous leader: after the TTL, our target must also be above our
    // acquisition-time target by the skips such a leader could have sent (51 + 3 + 1), which
    // the live chain reached by then.
    assert!(waited >= TTL, "activated after {waited:?}");
    assert!(waited < TTL + Duration::from_millis(200), "{waited:?}");
}

#[test]
fn the_leader_steps_down_at_its_lease_deadline_and_releases_cleanly() {
    let mut d = Driver::new(true);
    d.reach_validating();
    // No heartbeat is ever acknowledged: step down at acquisition + step_down_after.
    let t = Timing::new(TTL, GRACE).expect("timing");
    let acquired = d.now;
    let mut demoted = false;
    for _ in 0..40 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_guard();
        if out.contains(&Command::RemoveKey) && out.contains(&Command::Sighup) {
            demoted = true;
            assert!(d.now.saturating_duration_since(acquired) >= t.step_down_after);
            break;
        }
        assert!(!out.iter().any(|c| matches!(c, Command::Release { .. })));
    }
    assert!(demoted, "{:?}", d.log);
    assert_eq!(d.m.state(), State::Validating, "shown until fenced");
    // neard confirms it dropped the key (after a reload): the lock is released, cleanly.
    d.key = KeyShown::None;
    d.reloads += 1;
    d.head = 60;
    d.target = 62;
    d.status();
    // The release waits a moment for the verdict of the heartbeat on its way (none comes).
    let out = d.advance(t.retry);
    let release = out
        .iter()
        .find_map(|c| match c {
            Command::Release { value, .. } => Record::parse(value),
            _ => None,
        })
        .expect("released");
    assert_eq!(release.state, RecordState::Released);
    assert_eq!(
        release.horizon,
        Horizon {
            head: Some(60),
            target: Some(62),
            exact: true,
            stale_ms: None,
        }
    );
    assert!(!d.m.key_live());
    d.feed(Event::Released(true));
    assert_eq!(d.m.state(), State::Voting);
    assert!(!d.m.holds_lock());
}

#[test]
fn a_demotion_neard_does_not_confirm_ends_with_sigkill() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::HandOver);
    d.ack_guard();
    // A keyless answer without a reload is not a confirmation (it may predate the SIGHUP).
    d.key = KeyShown::None;
    let out = d.status();
    assert!(
        !out.iter().any(|c| matches!(c, Command::Release { .. })),
        "{out:?}"
    );
    let out = d.advance(GRACE);
    let kill = out.iter().position(|c| *c == Command::KillNeard);
    let release = out
        .iter()
        .position(|c| matches!(c, Command::Release { .. }));
    assert!(
        matches!((kill, release), (Some(k), Some(r)) if k < r),
        "SIGKILL, then the release: {out:?}"
    );
    let value = out
        .iter()
        .find_map(|c| match c {
            Command::Release { value, .. } => Record::parse(value),
            _ => None,
        })
        .expect("released after the kill");
    assert!(
        !value.horizon.exact,
        "a killed neard's horizon is not exact"
    );
    assert_eq!(
        d.count(|c| matches!(c, Command::HotSwapFallback("demotion_unconfirmed"))),
        1
    );
}

#[test]
fn a_leader_whose_key_changed_demotes_at_once_and_does_not_release() {
    let mut d = Driver::new(true);
    d.reach_validating();
    // Someone deletes the key (a higher index than our writes).
    let out = d.observe(None, 50);
    assert!(
        out.contains(&Command::RemoveKey) && out.contains(&Command::Sighup),
        "{out:?}"
    );
    d.key = KeyShown::None;
    d.reloads += 1;
    d.status();
    assert_eq!(
        d.count(|c| matches!(c, Command::Release { .. })),
        0,
        "the key is not ours to release"
    );
    assert!(!d.m.holds_lock());
    assert!(!d.m.key_live());
}

#[test]
fn a_stale_read_of_the_key_is_not_a_loss() {
    let mut d = Driver::new(true);
    d.reach_validating();
    // The watch answers with the state before our acquisition (index 10 < our 11).
    let key = d.released_key(10);
    let out = d.observe(Some(key), 10);
    assert!(!out.contains(&Command::RemoveKey), "{out:?}");
    assert!(d.m.key_live());
}

#[test]
fn neard_exiting_while_validating_releases_and_restarts_it_later() {
    let mut d = Driver::new(true);
    d.reach_validating();
    let out = d.feed(Event::NeardExited { pid: d.pid });
    let record = out
        .iter()
        .find_map(|c| match c {
            Command::Release { value, .. } => Record::parse(value),
            _ => None,
        })
        .expect("released at once");
    assert_eq!(record.state, RecordState::Released);
    assert!(out.contains(&Command::RemoveKey));
    assert!(
        !out.contains(&Command::StartNeard(Role::Voter)),
        "back-off first"
    );
    d.ack_guard();
    let out = d.advance(Duration::from_secs(1));
    assert!(out.contains(&Command::StartNeard(Role::Voter)), "{out:?}");
}

#[test]
fn a_guard_that_does_not_acknowledge_is_replaced_and_the_leader_steps_down() {
    let mut d = Driver::new(true);
    d.reach_validating();
    // The guard stops answering; the next heartbeat extends the lease and re-arms.
    let out = d.advance(Duration::from_secs(1));
    let seq = out.iter().find_map(|c| match c {
        Command::Heartbeat { seq, .. } => Some(*seq),
        _ => None,
    });
    let seq = seq.expect("a heartbeat");
    let sent = d.now;
    let out = d.feed(Event::HeartbeatAcked {
        seq,
        sent,
        index: 30,
    });
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Guard {
                order: GuardOrder::Arm { .. },
                ..
            }
        )),
        "{out:?}"
    );
    let out = d.advance(Duration::from_millis(600));
    assert!(out.contains(&Command::RespawnGuard), "{out:?}");
    assert!(
        out.contains(&Command::SteppedDown(StepDown::GuardLost)),
        "{out:?}"
    );
    assert_eq!(d.m.neard_pid(), None, "replacing the guard kills neard");
    assert!(!d.m.key_live());
}

/// neard is the guard's child: a lost guard takes it along. The leader's neard is gone at once
/// (no demotion to wait for, nothing to signal), so it releases with a released record, and a
/// voter is started only under the next guard.
#[test]
fn a_lost_guard_takes_neard_with_it_the_leader_releases_at_once() {
    let mut d = Driver::new(true);
    d.reach_validating();
    let out = d.feed(Event::GuardLost);
    let at = |f: &dyn Fn(&Command) -> bool| out.iter().position(f);
    let respawn = at(&|c| *c == Command::RespawnGuard).expect("a new guard");
    let release = at(&|c| matches!(c, Command::Release { .. })).expect("released at once");
    assert!(respawn < release, "the guard (and neard) first: {out:?}");
    assert!(out.contains(&Command::SteppedDown(StepDown::GuardLost)));
    assert!(
        !out.iter()
            .any(|c| matches!(c, Command::KillNeard | Command::TermNeard | Command::Sighup)),
        "neard is gone already: {out:?}"
    );
    let record = match &out[release] {
        Command::Release { value, .. } => Record::parse(value).expect("a record"),
        _ => unreachable!("found above"),
    };
    assert_eq!(record.state, RecordState::Released);
    assert!(!d.m.key_live());
    assert_eq!(d.m.neard_pid(), None);
    assert_eq!(d.m.state(), State::Startup);
    let out = d.advance(Duration::from_secs(2));
    assert!(
        !out.contains(&Command::StartNeard(Role::Voter)),
        "no neard without a guard: {out:?}"
    );
    let out = d.feed(Event::GuardSpawned);
    assert!(out.contains(&Command::StartNeard(Role::Voter)), "{out:?}");
}

/// The cost of the chain: a standby's neard dies with a lost guard too, and starts again (after
/// the crash back-off) under the new one. Nothing about the lock changes.
#[test]
fn a_standby_s_neard_dies_with_a_lost_guard_and_starts_again() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let out = d.feed(Event::GuardLost);
    assert!(out.contains(&Command::RespawnGuard), "{out:?}");
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::SteppedDown(_) | Command::Release { .. } | Command::Acquire { .. }
        )),
        "{out:?}"
    );
    assert_eq!(d.m.neard_pid(), None);
    assert_eq!(d.m.state(), State::Startup, "not a ready standby any more");
    assert!(!d.m.may_take_over());
    let out = d.feed(Event::GuardSpawned);
    assert!(
        !out.contains(&Command::StartNeard(Role::Voter)),
        "back-off first"
    );
    d.ack_guard();
    let out = d.advance(Duration::from_secs(1));
    assert!(out.contains(&Command::StartNeard(Role::Voter)), "{out:?}");
}

/// A guard lost while neard is being stopped: the stop is done (neard died with it), here the
/// last step before a stopping kuutamod exits; nothing is started again.
#[test]
fn a_guard_lost_during_a_stop_completes_it() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let out = d.feed(Event::Shutdown);
    assert!(out.contains(&Command::TermNeard), "{out:?}");
    d.feed(Event::Destroyed {
        session: "s1".into(),
        ok: true,
    });
    assert!(!d.m.exited(), "neard still stops");
    let out = d.feed(Event::GuardLost);
    assert!(out.contains(&Command::Exit), "{out:?}");
    assert!(!out.contains(&Command::StartNeard(Role::Voter)), "{out:?}");
    assert_eq!(d.m.neard_pid(), None);
}

#[test]
fn the_guard_is_armed_before_the_key_goes_live_and_disarmed_after() {
    let mut d = Driver::new(false);
    d.reach_voting();
    d.observe(Some(d.released_key(10)), 10);
    let sent = d.now;
    let out = d.feed(Event::Acquired { sent, index: 11 });
    let arm = out.iter().find_map(|c| match c {
        Command::Guard {
            order: GuardOrder::Arm { pid, deadline },
            ..
        } => Some((*pid, *deadline)),
        _ => None,
    });
    let t = Timing::new(TTL, GRACE).expect("timing");
    assert_eq!(arm, Some((d.pid, sent + t.step_down_after + t.stop_grace)));
    d.ack_guard();
    // Restart mode: the voter is stopped, then started with the key.
    d.status();
    assert!(d.log.contains(&Command::TermNeard), "{:?}", d.log);
    assert!(
        !d.m.key_live(),
        "restart mode: the voter being stopped holds no key"
    );
    let out = d.feed(Event::NeardExited { pid: d.pid });
    assert!(
        out.contains(&Command::StartNeard(Role::Validator)),
        "{out:?}"
    );
    // The validator neard has the key from its first instruction, before its pid is known: the
    // guard keeps the voter's deadline, which covers whatever neard it runs (no disarm).
    assert!(
        !out.iter().any(|c| matches!(
            c,
            Command::Guard {
                order: GuardOrder::Disarm,
                ..
            }
        )),
        "disarmed between the two neards: {out:?}"
    );
    assert!(matches!(d.m.guard.last, Some(GuardOrder::Arm { .. })));
    d.pid = 101;
    let out = d.feed(Event::NeardSpawned {
        pid: 101,
        role: Role::Validator,
    });
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Guard {
                order: GuardOrder::Arm { pid: 101, .. },
                ..
            }
        )),
        "the guard follows the new neard: {out:?}"
    );
    // Hand over: neard stopped (restart mode), then the guard disarmed and the lock released.
    d.ack_guard();
    d.status();
    let out = d.feed(Event::HandOver);
    assert!(out.contains(&Command::TermNeard), "{out:?}");
    let out = d.feed(Event::NeardExited { pid: 101 });
    let disarm = out.iter().position(|c| {
        matches!(
            c,
            Command::Guard {
                order: GuardOrder::Disarm,
                ..
            }
        )
    });
    let release = out
        .iter()
        .position(|c| matches!(c, Command::Release { .. }));
    assert!(disarm.is_some() && release.is_some(), "{out:?}");
}

#[test]
fn a_silent_holder_is_destroyed_only_on_a_fresh_read() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let hb = n0_record(
        4,
        RecordState::Active,
        Horizon {
            head: Some(45),
            target: Some(46),
            exact: false,
            stale_ms: None,
        },
    );
    let held = KeyState {
        index: 20,
        session: Some("s0".into()),
        value: hb.to_bytes(),
    };
    d.observe(Some(held.clone()), 20);
    // The watch is cut off (no more reads) for longer than a TTL; neard keeps answering.
    let mut out = Vec::new();
    for _ in 0..10 {
        out = d.advance(Duration::from_millis(500));
        d.ack_guard();
        d.status();
    }
    assert!(d.log.contains(&Command::ReadKey), "{:?}", d.log);
    assert!(!out.iter().any(|c| matches!(c, Command::DestroySession(_))));
    // A fresh read: still the same heartbeat.
    let out = d.observe(Some(held), 20);
    assert!(
        out.contains(&Command::DestroySession("s0".into())),
        "{out:?}"
    );
    // Consul releases the key (value unchanged): acquire, and activate at once (the silence
    // already lasted a TTL).
    let released = KeyState {
        index: 21,
        session: None,
        value: hb.to_bytes(),
    };
    let out = d.observe(Some(released), 21);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Acquire {
                expected_index: Some(21),
                ..
            }
        )),
        "{out:?}"
    );
    let sent = d.now;
    let before = d.log.len();
    d.feed(Event::Acquired { sent, index: 22 });
    d.ack_guard();
    // A block produced (and arrived) after the silent leader was fenced.
    d.head += 1;
    d.status();
    assert!(
        d.log[before..].contains(&Command::InstallKey),
        "the silence lasted a TTL already: {:?}",
        &d.log[before..]
    );
}

#[test]
fn a_crash_looping_standby_neard_is_restarted_with_back_off() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let mut starts = 0;
    for _ in 0..600 {
        // 100 ms steps for a minute; neard crashes right after every start.
        let out = d.advance(Duration::from_millis(100));
        d.ack_guard();
        if out.contains(&Command::StartNeard(Role::Voter)) {
            starts += 1;
            d.pid += 1;
            d.feed(Event::NeardSpawned {
                pid: d.pid,
                role: Role::Voter,
            });
        }
        if let Proc::Up(_) = d.m.proc {
            d.feed(Event::NeardExited { pid: d.pid });
        }
    }
    assert!((4..=7).contains(&starts), "{starts} starts in a minute");
}

#[test]
fn shutdown_of_a_leader_fences_releases_destroys_and_exits() {
    let mut d = Driver::new(true);
    d.reach_validating();
    let out = d.feed(Event::Shutdown);
    assert!(out.contains(&Command::RemoveKey) && out.contains(&Command::Sighup));
    d.key = KeyShown::None;
    d.reloads += 1;
    let out = d.status();
    assert!(
        out.iter().any(|c| matches!(c, Command::Release { .. })),
        "{out:?}"
    );
    let out = d.feed(Event::Released(true));
    assert!(
        out.contains(&Command::DestroySession("s1".into())),
        "{out:?}"
    );
    assert!(out.contains(&Command::TermNeard), "{out:?}");
    d.feed(Event::Destroyed {
        session: "s1".into(),
        ok: true,
    });
    let out = d.feed(Event::NeardExited { pid: d.pid });
    assert!(out.contains(&Command::Exit), "{out:?}");
    let order = |f: &dyn Fn(&Command) -> bool| d.log.iter().position(f).expect("present");
    let fence = order(&|c| *c == Command::Sighup);
    let release = order(&|c| matches!(c, Command::Release { .. }));
    assert!(fence < release);
}

#[test]
fn a_suspended_host_fences_at_once() {
    let mut d = Driver::new(true);
    d.reach_validating();
    let out = d.feed(Event::ClockJump(Duration::from_secs(1)));
    assert!(
        !out.contains(&Command::Sighup),
        "no time for a hot-swap demotion: {out:?}"
    );
    assert!(
        out.contains(&Command::SteppedDown(StepDown::ClockJump)),
        "{out:?}"
    );
    assert!(out.contains(&Command::KillNeard), "{out:?}");
}

// ----- randomized safety check ---------------------------------------------------------------

/// xorshift64*: a small deterministic generator, so a failure reproduces from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A plausible world for one machine: every command gets its answer (late, or lost, or
/// refused, at random), and faults come in between: neard crashing or hanging, the key
/// deleted or taken, the guard lost, the host suspended, signals. After every step the
/// machine's commands must respect the fence: the key goes live only with a lease that has not
/// run out and a guard that acknowledged the current neard; the lock is released only while
/// neard is fenced. The runs must also make progress (keys go live and locks are released
/// again), so a machine that never leads or never lets go fails it.
#[test]
fn random_schedules_never_break_the_fence() {
    let mut activations = 0;
    let mut releases = 0;
    for seed in 1..=400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut d = Driver::new(seed % 2 == 0);
        let mut index = 10u64;
        let mut key: Option<KeyState> = None;
        let mut pending: Vec<Event> = Vec::new();
        let mut guard_armed_pid: Option<u32> = None;
        // The world's truth, kept apart from the machine's beliefs: is the key file in the
        // home, and does the running neard hold the key?
        let mut file = false;
        let mut keyed = false;
        let mut out = d.feed(Event::Tick);
        for _ in 0..600 {
            // Answers to the commands just issued.
            for c in &out {
                let now = d.now;
                match c.clone() {
                    Command::StartNeard(role) => {
                        d.pid += 1;
                        pending.push(Event::NeardSpawned { pid: d.pid, role });
                        file = role == Role::Validator;
                        keyed = file;
                        d.key = if keyed {
                            KeyShown::Ours
                        } else {
                            KeyShown::None
                        };
                    }
                    Command::TermNeard => {
                        // neard stops when it gets to it; until then it may still sign.
                        pending.push(Event::NeardExited { pid: d.pid });
                    }
                    Command::KillNeard => {
                        keyed = false;
                        pending.insert(0, Event::NeardKilled { pid: d.pid });
                        pending.push(Event::NeardExited { pid: d.pid });
                    }
                    Command::InstallKey => file = true,
                    Command::RemoveKey => file = false,
                    Command::Sighup => {
                        d.reloads += 1;
                        keyed = file;
                        d.key = if keyed {
                            KeyShown::Ours
                        } else {
                            KeyShown::None
                        };
                    }
                    Command::CreateSession => pending.push(Event::SessionCreated("s1".into())),
                    Command::Renew(s) => pending.push(Event::Renewed { session: s }),
                    Command::Heartbeat {
                        expected_index,
                        value,
                        seq,
                        ..
                    } => pending.push(match &key {
                        Some(k)
                            if k.index == expected_index && k.session.as_deref() == Some("s1") =>
                        {
                            index += 1;
                            key = Some(KeyState {
                                index,
                                session: Some("s1".into()),
                                value,
                            });
                            Event::HeartbeatAcked {
                                seq,
                                sent: now,
                                index,
                            }
                        }
                        _ => Event::HeartbeatRejected,
                    }),
                    Command::Acquire {
                        expected_index,
                        value,
                        ..
                    } => {
                        let free = match (&key, expected_index) {
                            (None, None) => true,
                            (Some(k), Some(i)) => k.index == i && k.session.is_none(),
                            _ => false,
                        };
                        pending.push(if free {
                            index += 1;
                            key = Some(KeyState {
                                index,
                                session: Some("s1".into()),
                                value,
                            });
                            Event::Acquired { sent: now, index }
                        } else {
                            Event::AcquireRejected
                        });
                    }
                    Command::Release { value, .. } => {
                        let ours = key
                            .as_ref()
                            .is_some_and(|k| k.session.as_deref() == Some("s1"));
                        if ours {
                            index += 1;
                            key = Some(KeyState {
                                index,
                                session: None,
                                value,
                            });
                        }
                        pending.push(Event::Released(ours));
                    }
                    Command::DestroySession(s) => {
                        if key
                            .as_ref()
                            .is_some_and(|k| k.session.as_deref() == Some(s.as_str()))
                        {
                            index += 1;
                            if let Some(k) = key.as_mut() {
                                k.session = None;
                                k.index = index;
                            }
                        }
                        pending.push(Event::Destroyed {
                            session: s,
                            ok: true,
                        });
                    }
                    Command::ReadKey => pending.push(Event::KeyObserved {
                        key: key.clone(),
                        index,
                    }),
                    Command::Guard { seq, order } => {
                        if let GuardOrder::Arm { pid, .. } = order {
                            guard_armed_pid = Some(pid);
                        } else if order == GuardOrder::Disarm {
                            guard_armed_pid = None;
                        }
                        pending.push(Event::GuardAck(seq));
                    }
                    Command::RespawnGuard => {
                        // The old guard is killed, and neard, its child, with it (a neard being
                        // started too); nothing the old guard would have said arrives.
                        guard_armed_pid = None;
                        keyed = false;
                        pending.retain(|e| {
                            !matches!(
                                e,
                                Event::NeardSpawned { .. }
                                    | Event::NeardExited { .. }
                                    | Event::NeardKilled { .. }
                                    | Event::GuardAck(_)
                            )
                        });
                        pending.push(Event::GuardSpawned);
                    }
                    _ => {}
                }
            }
            let event = match rng.below(20) {
                0..=8 if !pending.is_empty() => {
                    let i = rng.below(pending.len() as u64) as usize;
                    let e = pending.remove(i);
                    // Some answers are lost or turn into failures.
                    match (&e, rng.below(12)) {
                        (Event::Renewed { session }, 0) => Event::RenewFailed {
                            session: session.clone(),
                        },
                        (Event::HeartbeatAcked { .. }, 0) => Event::HeartbeatFailed,
                        (Event::GuardAck(_), 0) => Event::Tick,
                        _ => e,
                    }
                }
                9..=11 => {
                    d.now = d.now + Duration::from_millis(rng.below(400));
                    Event::Tick
                }
                12..=14 => {
                    d.head += rng.below(3);
                    d.target = d.target.max(d.head + 1) + rng.below(2);
                    Event::Status(d.poll())
                }
                15 => Event::KeyObserved {
                    key: key.clone(),
                    index,
                },
                16 => match rng.below(6) {
                    0 => {
                        index += 1;
                        key = None;
                        Event::KeyObserved { key: None, index }
                    }
                    1 => {
                        index += 1;
                        key = Some(KeyState {
                            index,
                            session: Some("other".into()),
                            value: b"x".to_vec(),
                        });
                        Event::KeyObserved {
                            key: key.clone(),
                            index,
                        }
                    }
                    2 => match d.m.neard_pid() {
                        Some(pid) => Event::NeardExited { pid },
                        None => Event::Tick,
                    },
                    3 => Event::GuardLost,
                    4 => Event::ClockJump(Duration::from_secs(1)),
                    _ => Event::StatusFailed,
                },
                17 => match rng.below(3) {
                    0 => Event::HandOver,
                    1 => Event::SessionGone("s1".into()),
                    _ => {
                        // The key is released by someone (the session's agent left).
                        index += 1;
                        if let Some(k) = key.as_mut() {
                            k.session = None;
                            k.index = index;
                        }
                        Event::KeyObserved {
                            key: key.clone(),
                            index,
                        }
                    }
                },
                18 if seed % 7 == 0 => Event::Shutdown,
                _ => Event::Tick,
            };
            // The supervisor kills a lost guard, and neard with it, before it says so.
            if let Event::NeardExited { .. } | Event::GuardLost = event {
                keyed = false;
            }
            let was_live = d.m.key_live();
            let lease = d.m.lease_deadline();
            let now = d.now;
            out = d.feed(event.clone());
            for c in &out {
                match c {
                    // Carried out in order: a replaced guard takes neard with it.
                    Command::KillNeard | Command::RespawnGuard => keyed = false,
                    Command::InstallKey | Command::StartNeard(Role::Validator) => {
                        activations += 1;
                        let live = d.m.lease.as_ref().map(Lease::deadline).or(lease);
                        assert!(
                            live.is_some_and(|dl| now < dl),
                            "seed {seed}: key installed without a live lease after {event:?}"
                        );
                        assert!(
                            *c != Command::InstallKey || guard_armed_pid == d.m.neard_pid(),
                            "seed {seed}: key installed with the guard not armed for this neard"
                        );
                    }
                    Command::Release { .. } => {
                        releases += 1;
                        assert!(
                            !keyed,
                            "seed {seed}: lock released while neard holds the key, after {event:?}: {out:?}"
                        );
                    }
                    _ => {}
                }
            }
            if was_live && !d.m.key_live() {
                let by = matches!(
                    event,
                    Event::Status(_)
                        | Event::NeardKilled { .. }
                        | Event::NeardExited { .. }
                        | Event::GuardLost
                ) || out.contains(&Command::KillNeard)
                    || out.contains(&Command::RespawnGuard);
                assert!(by, "seed {seed}: the key was dropped by {event:?}: {out:?}");
            }
            if d.m.exited() {
                break;
            }
        }
    }
    // Every lost guard (injected, or one of the acknowledgements this world drops) takes neard
    // with it, and the node starts over from a voter: 43 activations in these seeds since a
    // lost session makes the next acquisition wait a TTL (75 before; 125 when a guard loss left
    // neard running).
    assert!(
        activations > 30,
        "the schedules must reach the key ({activations})"
    );
    assert!(releases > 100, "and let it go again ({releases})");
}

// ----- operator control ----------------------------------------------------------------------

/// A record of node n0 (session s0) for pool.near.
fn n0_record(seq: u64, state: RecordState, horizon: Horizon) -> Record {
    Record {
        hostname: "h0".into(),
        node_id: "n0".into(),
        account: "pool.near".into(),
        session: "s0".into(),
        seq,
        term: 1,
        state,
        horizon,
        successor: None,
        switchover: None,
        inherited: None,
    }
}

fn peer(id: &str, priority: u32, may_take_over: bool) -> NodeRecord {
    NodeRecord {
        node_id: id.into(),
        state: "Voting".into(),
        synced: true,
        priority,
        may_take_over,
        ..NodeRecord::default()
    }
}

fn paused() -> Control {
    Control {
        paused: true,
        ..Control::default()
    }
}

#[test]
fn a_paused_standby_does_not_take_a_free_lock_until_resumed() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: paused(),
        peers: vec![],
    });
    assert!(!d.m.may_take_over());
    let out = d.observe(Some(d.released_key(10)), 10);
    assert!(
        !out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
    let out = d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![],
    });
    assert!(
        out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
}

#[test]
fn a_paused_leader_whose_neard_crashes_fences_releases_and_does_not_restart_it() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: paused(),
        peers: vec![],
    });
    let out = d.feed(Event::NeardExited { pid: d.pid });
    assert!(
        out.iter().any(|c| matches!(c, Command::Release { .. })),
        "{out:?}"
    );
    d.ack_guard();
    for _ in 0..60 {
        let out = d.advance(Duration::from_secs(1));
        assert!(
            !out.contains(&Command::StartNeard(Role::Voter)),
            "restarted while paused"
        );
        d.ack_guard();
    }
    let out = d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![],
    });
    assert!(out.contains(&Command::StartNeard(Role::Voter)), "{out:?}");
}

#[test]
fn priority_zero_never_takes_the_lock() {
    let mut d = Driver::new(true);
    d.m.cfg.priority = 0;
    d.reach_voting();
    assert!(!d.m.may_take_over());
    d.observe(Some(d.released_key(10)), 10);
    d.advance(TTL * 3);
    assert_eq!(d.count(|c| matches!(c, Command::Acquire { .. })), 0);
}

#[test]
fn a_lower_priority_standby_leaves_a_free_lock_to_a_better_one_for_a_moment() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![peer("n2", 5, true)],
    });
    let out = d.observe(Some(d.released_key(10)), 10);
    assert!(
        !out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
    let out = d.advance(Duration::from_secs(1));
    assert!(
        out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "after a heartbeat interval it goes: {out:?}"
    );
}

/// A switchover request made while n1 (this Driver, session s1) validated.
fn switchover(to: Option<&str>, in_window: bool) -> Control {
    switchover_from("n1", "s1", to, in_window)
}

fn switchover_from(from: &str, session: &str, to: Option<&str>, in_window: bool) -> Control {
    Control {
        switchover: Some(crate::records::Switchover {
            id: "sw1".into(),
            from: from.into(),
            from_session: Some(session.into()),
            to: to.map(str::to_string),
            in_window,
            timeout_ms: 0,
        }),
        ..Control::default()
    }
}

fn finished(log: &[Command]) -> Vec<crate::records::SwitchoverDone> {
    log.iter()
        .filter_map(|c| match c {
            Command::FinishSwitchover(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn released_successor(out: &[Command]) -> Option<Option<String>> {
    out.iter().find_map(|c| match c {
        Command::Release { value, .. } => Record::parse(value).map(|r| r.successor),
        _ => None,
    })
}

#[test]
fn a_switchover_hands_over_to_the_named_standby() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: switchover(Some("n2"), false),
        peers: vec![peer("n2", 1, true), peer("n3", 9, true)],
    });
    d.key = KeyShown::None;
    d.reloads += 1;
    d.status();
    assert_eq!(released_successor(&d.log), Some(Some("n2".into())));
    assert_eq!(
        d.count(|c| *c == Command::SteppedDown(StepDown::HandOver)),
        1
    );
}

#[test]
fn a_switchover_without_a_target_picks_the_best_standby() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: switchover(None, false),
        peers: vec![
            peer("n2", 1, true),
            peer("n3", 9, true),
            peer("n4", 20, false),
        ],
    });
    d.key = KeyShown::None;
    d.reloads += 1;
    d.status();
    assert_eq!(released_successor(&d.log), Some(Some("n3".into())));
}

#[test]
fn a_switchover_in_a_window_waits_for_one() {
    let mut d = Driver::new(true);
    d.reach_validating();
    let out = d.feed(Event::ClusterObserved {
        control: switchover(Some("n2"), true),
        peers: vec![peer("n2", 1, true)],
    });
    assert!(out.contains(&Command::QueryWindows), "{out:?}");
    // Head 50: no window reaching 5 heights ahead yet; the next one starts at 52.
    let out = d.feed(Event::Windows(Ok(vec![(40, 45), (52, 60)])));
    assert!(!out.contains(&Command::Sighup), "{out:?}");
    assert!(
        !out.contains(&Command::QueryWindows),
        "no busy loop: {out:?}"
    );
    d.head = 51;
    let out = d.status();
    assert!(
        out.contains(&Command::Sighup),
        "hands over as the window begins: {out:?}"
    );
}

#[test]
fn a_switchover_in_a_window_fails_without_the_rpc() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: switchover(Some("n2"), true),
        peers: vec![peer("n2", 1, true)],
    });
    let out = d.feed(Event::Windows(Err("METHOD_NOT_FOUND".into())));
    assert!(!out.contains(&Command::Sighup));
    let failed = out.iter().find_map(|c| match c {
        Command::Publish(f) => f.switchover.clone(),
        _ => None,
    });
    assert!(failed.is_some_and(|s| s.failed && s.status.contains("METHOD_NOT_FOUND")));
    assert!(d.m.key_live(), "still validating");
}

#[test]
fn the_new_leader_ends_the_switchover_it_completed_and_never_hands_over_again() {
    // Issue 20, fault 1: the new leader took the request for its own and handed back at once.
    let mut d = Driver::new(true);
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: switchover_from("n0", "s0", Some("n1"), false),
        peers: vec![peer("n0", 1, true)],
    });
    let mut k = d.released_key(10);
    let mut r = Record::parse(&k.value).expect("record");
    r.successor = Some("n1".into());
    r.switchover = Some("sw1".into());
    k.value = r.to_bytes();
    d.observe(Some(k), 10);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 11 });
    d.ack_guard();
    d.status();
    d.key = KeyShown::Ours;
    d.reloads += 1;
    d.status();
    assert!(d.m.key_live());
    for _ in 0..20 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        d.status();
    }
    assert_eq!(
        finished(&d.log),
        vec![crate::records::SwitchoverDone {
            id: "sw1".into(),
            ok: true,
            leader: Some("n1".into()),
            outcome: "n0 -> n1".into(),
        }]
    );
    assert_eq!(
        d.count(|c| matches!(c, Command::SteppedDown(_))),
        0,
        "{:?}",
        d.log
    );
}

#[test]
fn a_leader_that_got_its_handed_over_lock_back_ends_the_switchover_as_failed() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: switchover(Some("n2"), false),
        peers: vec![peer("n2", 1, true)],
    });
    d.key = KeyShown::None;
    d.reloads += 1;
    d.status();
    d.feed(Event::Released(true));
    assert_eq!(d.m.state(), State::Voting);
    // n2 does not come: the lock (our released record naming n2) is ours to take back after
    // a heartbeat interval, not a TTL.
    let ours = released_value(&d).expect("released");
    assert_eq!(ours.successor.as_deref(), Some("n2"));
    assert_eq!(ours.switchover.as_deref(), Some("sw1"));
    let key = KeyState {
        index: 20,
        session: None,
        value: ours.to_bytes(),
    };
    let out = d.observe(Some(key), 20);
    assert!(!out.iter().any(|c| matches!(c, Command::Acquire { .. })));
    let before = d.log.len();
    for _ in 0..4 {
        d.ack_guard();
        d.advance(TTL / 12 + Duration::from_millis(5));
        d.status();
    }
    assert!(
        d.log[before..]
            .iter()
            .any(|c| matches!(c, Command::Acquire { .. })),
        "{:?}",
        &d.log[before..]
    );
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 21 });
    d.ack_guard();
    d.status();
    d.key = KeyShown::Ours;
    d.reloads += 1;
    d.status();
    assert!(d.m.key_live());
    let done = finished(&d.log);
    assert_eq!(done.len(), 1, "{done:?}");
    assert!(!done[0].ok);
    assert!(
        done[0].outcome.contains("n2 did not take the lock"),
        "{done:?}"
    );
    assert_eq!(
        d.count(|c| *c == Command::SteppedDown(StepDown::HandOver)),
        1
    );
}

#[test]
fn a_switchover_of_another_session_or_a_paused_cluster_is_ended_not_carried_out() {
    // A request made before this node restarted (another session of n1).
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: switchover_from("n1", "s-old", Some("n2"), false),
        peers: vec![peer("n2", 1, true)],
    });
    assert_eq!(d.count(|c| matches!(c, Command::SteppedDown(_))), 0);
    let done = finished(&d.log);
    assert!(done.len() == 1 && !done[0].ok, "{done:?}");
    // A request in a paused cluster (a pause that raced it): no released lock nobody takes.
    let mut d = Driver::new(true);
    d.reach_validating();
    let mut c = switchover(Some("n2"), false);
    c.paused = true;
    d.feed(Event::ClusterObserved {
        control: c,
        peers: vec![peer("n2", 1, true)],
    });
    assert_eq!(d.count(|c| matches!(c, Command::SteppedDown(_))), 0);
    let done = finished(&d.log);
    assert!(
        done.len() == 1 && done[0].outcome.contains("paused"),
        "{done:?}"
    );
}

#[test]
fn a_switchover_whose_target_never_becomes_ready_times_out_by_this_node_s_clock() {
    let mut d = Driver::new(true);
    d.reach_validating();
    let mut c = switchover(Some("n2"), false);
    if let Some(sw) = c.switchover.as_mut() {
        sw.timeout_ms = 2000;
    }
    d.feed(Event::ClusterObserved {
        control: c,
        peers: vec![peer("n2", 1, false)],
    });
    for _ in 0..15 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        d.status();
    }
    assert!(finished(&d.log).is_empty(), "not yet");
    for _ in 0..10 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        d.status();
    }
    let done = finished(&d.log);
    assert!(
        done.len() == 1 && done[0].outcome.contains("timed out"),
        "{done:?}"
    );
    assert_eq!(d.count(|c| matches!(c, Command::SteppedDown(_))), 0);
}

#[test]
fn the_named_successor_takes_its_lock_also_in_a_paused_cluster() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: paused(),
        peers: vec![],
    });
    let mut k = d.released_key(10);
    let mut r = Record::parse(&k.value).expect("record");
    r.successor = Some("n1".into());
    k.value = r.to_bytes();
    let out = d.observe(Some(k), 10);
    assert!(
        out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
}

#[test]
fn the_named_successor_takes_the_released_lock_at_once_others_wait() {
    let with_successor = |d: &Driver, to: &str| {
        let mut k = d.released_key(10);
        let mut r = Record::parse(&k.value).expect("record");
        r.successor = Some(to.into());
        k.value = r.to_bytes();
        k
    };
    let mut d = Driver::new(true);
    d.reach_voting();
    let k = with_successor(&d, "n1");
    let out = d.observe(Some(k), 10);
    assert!(
        out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
    let mut other = Driver::new(true);
    other.reach_voting();
    let k = with_successor(&other, "n2");
    let out = other.observe(Some(k), 10);
    assert!(
        !out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
}

#[test]
fn a_node_that_gives_the_lock_back_before_its_fence_opened_releases_the_value_unchanged() {
    // Found by the deterministic simulation (seed 27522): the previous leader's session ended
    // (its agent restarted) while it still validated; this node acquired, and its neard failed
    // before the wait was over. A "released" record would let the next node activate at once.
    let mut d = Driver::new(true);
    d.reach_voting();
    let hb = n0_record(4, RecordState::Active, Horizon::default());
    let key = KeyState {
        index: 25,
        session: None,
        value: hb.to_bytes(),
    };
    d.observe(Some(key.clone()), 25);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 26 });
    d.ack_guard();
    assert_eq!(d.m.state(), State::Promoting);
    // neard stops answering for 3 s: the node steps down before its fence opened.
    let out = d.advance(Duration::from_millis(3100));
    let released = out.iter().find_map(|c| match c {
        Command::Release { value, .. } => Record::parse(value),
        _ => None,
    });
    let released = released.expect("the lock is given back");
    assert_eq!(released.state, RecordState::Active, "{released:?}");
    assert_eq!(d.count(|c| *c == Command::InstallKey), 0);
}

#[test]
fn a_standby_gives_back_a_key_under_its_own_session_once_per_index() {
    // Found by the deterministic simulation (seed 133): a standby whose watch lagged showed the
    // key under its own session at an index Consul had moved past; each refused release was
    // retried at once, a request every few milliseconds until the watch caught up.
    let mut d = Driver::new(true);
    d.reach_voting();
    let mine = KeyState {
        index: 28,
        session: Some("s1".into()),
        value: b"{}".to_vec(),
    };
    let releases = |d: &Driver| d.count(|c| matches!(c, Command::Release { .. }));
    d.observe(Some(mine.clone()), 28);
    d.status();
    assert_eq!(releases(&d), 1, "{:?}", d.log);
    // Consul: the key is no longer at index 28.
    d.feed(Event::Released(false));
    for _ in 0..5 {
        d.advance(Duration::from_millis(10));
        d.status();
    }
    assert_eq!(
        releases(&d),
        1,
        "no retry of a refused release: {:?}",
        d.log
    );
    // The watch shows the key at a new index, still ours (a heartbeat answer was lost): give
    // it back, and after a transport failure, again only after the retry delay.
    d.observe(Some(KeyState { index: 31, ..mine }), 31);
    d.status();
    assert_eq!(releases(&d), 2);
    d.feed(Event::ReleaseFailed);
    d.status();
    assert_eq!(releases(&d), 2, "not at once after a failure");
    d.advance(Duration::from_secs(1));
    d.status();
    assert_eq!(releases(&d), 3, "retried after the delay");
}

#[test]
fn a_refused_arm_replaced_by_a_later_order_is_stale_one_not_replaced_is_a_lost_guard() {
    // Found by the deterministic simulation (seed 3510): in restart mode the leader re-armed the
    // guard for its voter neard just before replacing it with the validator neard; the guard
    // read the arm after the voter had exited and refused it, and the leader stepped down
    // although the next arm (for the new neard) was already on its way.
    let mut d = Driver::new(true);
    d.reach_validating();
    let arms = |d: &Driver| -> Vec<u64> {
        d.log
            .iter()
            .filter_map(|c| match c {
                Command::Guard {
                    seq,
                    order: GuardOrder::Arm { .. },
                } => Some(*seq),
                _ => None,
            })
            .collect()
    };
    let first = *arms(&d).last().expect("armed");
    // A heartbeat is acknowledged: the leader re-arms with the later deadline.
    let mut later = None;
    for _ in 0..30 {
        let out = d.advance(Duration::from_millis(100));
        for c in &out {
            if let Command::Heartbeat { seq, .. } = c {
                let (seq, sent) = (*seq, d.now);
                d.feed(Event::HeartbeatAcked {
                    seq,
                    sent,
                    index: 20 + seq,
                });
            }
        }
        if let Some(&a) = arms(&d).last().filter(|&&a| a > first) {
            later = Some(a);
            break;
        }
        d.ack_guard();
    }
    let later = later.expect("re-armed after a heartbeat");
    d.feed(Event::GuardNack(first));
    assert!(
        !d.log.iter().any(|c| matches!(c, Command::SteppedDown(_))),
        "a replaced order's refusal is stale"
    );
    let respawns = d.count(|c| *c == Command::RespawnGuard);
    d.feed(Event::GuardNack(later));
    assert_eq!(d.count(|c| *c == Command::RespawnGuard), respawns + 1);
    assert!(
        d.log
            .contains(&Command::SteppedDown(crate::machine::StepDown::GuardLost)),
        "the latest arm refused: step down"
    );
}

#[test]
fn a_leader_stopped_past_its_lease_says_its_horizon_is_stale_only_until_the_guard_s_deadline() {
    // Found by the deterministic simulation (seed 25782): kuutamod was stopped for 6 s while
    // the guard killed neard at the lease deadline; the released record said the horizon was
    // stale for the whole stop, and in a chain stalled without our stake the next leader
    // waited a minute for its target to outrun that.
    let mut d = Driver::new(true);
    d.reach_validating();
    d.status();
    let polled = d.now;
    // Stopped: nothing happens for 20 s; then neard is found dead (the guard killed it).
    d.now = d.now + Duration::from_secs(20);
    d.feed(Event::NeardExited { pid: d.pid });
    d.feed(Event::Tick);
    let released = d
        .log
        .iter()
        .rev()
        .find_map(|c| match c {
            Command::Release { value, .. } => Record::parse(value),
            _ => None,
        })
        .expect("released");
    let stale = Duration::from_millis(released.horizon.stale_ms.expect("stale horizon"));
    // At most: the lease deadline (< TTL after the last heartbeat, itself before the poll)
    // plus the stop grace, from the poll, plus the poll's timeout.
    let bound = TTL + GRACE + crate::timing::STATUS_TIMEOUT;
    assert!(stale <= bound, "{stale:?} > {bound:?}");
    assert!(d.now.saturating_duration_since(polled) > bound);
}

#[test]
fn heartbeats_say_how_old_their_horizon_is() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.status();
    let polled = d.now;
    let mut beat = None;
    for _ in 0..20 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_guard();
        beat = out.iter().find_map(|c| match c {
            Command::Heartbeat { value, .. } => Record::parse(value),
            _ => None,
        });
        if beat.is_some() {
            break;
        }
    }
    let beat = beat.expect("a heartbeat");
    let age = d.now.saturating_duration_since(polled) + crate::timing::STATUS_TIMEOUT;
    assert_eq!(
        beat.horizon.stale_ms,
        Some(age.as_millis() as u64),
        "{beat:?}"
    );
}

#[test]
fn a_failed_fresh_read_keeps_the_view_and_is_retried() {
    // Found by the deterministic simulation (seed 1325 with lag faults): a failed read made the
    // node forget the key; the watch, blocked on an index that no longer changed, would have
    // answered only after its 5 minute wait, and the silent holder was never destroyed.
    let mut d = Driver::new(true);
    d.reach_voting();
    let hb = n0_record(
        4,
        RecordState::Active,
        Horizon {
            head: Some(45),
            target: Some(46),
            exact: false,
            stale_ms: Some(1000),
        },
    );
    let held = KeyState {
        index: 20,
        session: Some("s0".into()),
        value: hb.to_bytes(),
    };
    d.observe(Some(held.clone()), 20);
    let reads = |d: &Driver| d.count(|c| *c == Command::ReadKey);
    for _ in 0..8 {
        d.advance(Duration::from_millis(500));
        d.ack_guard();
        d.status();
    }
    assert_eq!(reads(&d), 1, "a silent holder: read it fresh once");
    d.feed(Event::ReadFailed);
    d.status();
    assert_eq!(reads(&d), 1, "not again at once");
    d.advance(Duration::from_secs(1));
    d.ack_guard();
    d.status();
    assert_eq!(
        reads(&d),
        2,
        "again after the retry delay, from the view kept"
    );
    let out = d.observe(Some(held), 20);
    assert!(
        out.contains(&Command::DestroySession("s0".into())),
        "{out:?}"
    );
}

// ----- liveness: a holder that cannot sign gives the lock to a ready node --------------------

/// A ready peer whose record shows head `head`.
fn ready_at(id: &str, head: Option<u64>) -> NodeRecord {
    NodeRecord {
        head,
        ..peer(id, 1, true)
    }
}

/// From Voting with our neard at head 30 (the previous leader's record says 40), takes a clean
/// release and runs the promotion for `secs`, heartbeats and guard orders acknowledged, our
/// head frozen; returns when the lock was acquired.
fn promote_behind(d: &mut Driver, peers: Vec<NodeRecord>, secs: u64) -> Instant {
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers,
    });
    d.head = 30;
    d.target = 31;
    d.status();
    d.observe(Some(d.released_key(10)), 10);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 11 });
    assert_eq!(d.m.state(), State::Promoting);
    run_promotion(d, secs);
    sent
}

/// Runs a promotion for up to `secs` (heartbeats and guard orders acknowledged, a poll every
/// 100 ms) until the lock is released.
fn run_promotion(d: &mut Driver, secs: u64) {
    for _ in 0..secs * 10 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        d.status();
        if d.log.iter().any(|c| matches!(c, Command::Release { .. })) {
            break;
        }
    }
}

fn released_value(d: &Driver) -> Option<Record> {
    d.log.iter().find_map(|c| match c {
        Command::Release { value, .. } => Record::parse(value),
        _ => None,
    })
}

#[test]
fn a_new_leader_stuck_behind_gives_the_lock_to_a_ready_node_with_what_it_waited_for() {
    let mut d = Driver::new(true);
    let acquired = promote_behind(&mut d, vec![ready_at("n2", Some(45))], 4 * TTL.as_secs());
    let gave_back = d.now.saturating_duration_since(acquired);
    let grace = Timing::new(TTL, GRACE).expect("timing").progress_grace;
    assert!(
        d.log
            .contains(&Command::SteppedDown(StepDown::NoProgress(Stuck::Head {
                own: 30,
                peer: 45,
                live: false
            }))),
        "{:?}",
        d.log
    );
    assert!(
        gave_back >= grace && gave_back < grace + Duration::from_millis(200),
        "gave the lock back {gave_back:?} after acquiring it (grace {grace:?})"
    );
    assert!(
        !d.log.contains(&Command::InstallKey),
        "the key never went live"
    );
    // The previous leader released cleanly (exact horizon 40 / 41): that leader is fenced, and
    // our key never went live, so the record says "released" with what our fence waited for:
    // the ready node needs no TTL wait, only the same height fence.
    let value = released_value(&d).expect("a release");
    assert_eq!(value.state, RecordState::Released, "{value:?}");
    assert_eq!(
        value.horizon,
        Horizon {
            head: Some(40),
            target: Some(41),
            exact: true,
            stale_ms: None
        },
        "{value:?}"
    );
    assert_eq!(value.inherited, None);
    // And it leaves the lock to the ready node for a while.
    d.feed(Event::Released(true));
    let out = d.observe(Some(d.released_key(20)), 20);
    assert!(
        !out.iter().any(|c| matches!(c, Command::Acquire { .. })),
        "{out:?}"
    );
}

#[test]
fn a_new_leader_stuck_behind_keeps_the_lock_when_no_node_is_ready_and_ahead() {
    for peers in [
        vec![],
        vec![NodeRecord {
            head: Some(45),
            ..peer("n2", 1, false)
        }],
        vec![NodeRecord {
            head: Some(45),
            ..peer("n2", 0, true)
        }],
        // A stalled chain: the ready node is where we are.
        vec![ready_at("n2", Some(30))],
        vec![ready_at("n2", None)],
    ] {
        let mut d = Driver::new(true);
        promote_behind(&mut d, peers.clone(), 4 * TTL.as_secs());
        assert!(
            !d.log.iter().any(|c| matches!(c, Command::Release { .. })),
            "{peers:?}: {:?}",
            d.log
        );
        // Once our neard catches up, the fence opens.
        d.head = 45;
        d.target = 46;
        d.status();
        d.ack_guard();
        d.status();
        assert!(d.log.contains(&Command::InstallKey), "{peers:?}");
    }
}

/// The test of the test above: with the rule switched off (a mutation, compiled in only with
/// the `mutations` feature: `cargo test -p kuutamod --lib --features mutations`), it fails.
#[cfg(feature = "mutations")]
#[test]
fn with_the_rule_switched_off_a_stuck_new_leader_keeps_the_lock() {
    let mut d = Driver::new(true);
    d.m.cfg.mutations.no_progress_rule = true;
    promote_behind(&mut d, vec![ready_at("n2", Some(45))], 4 * TTL.as_secs());
    assert!(!d.log.iter().any(|c| matches!(c, Command::Release { .. })));
}

#[test]
fn a_promoting_node_whose_neard_syncs_gives_the_lock_back_once_the_wait_is_over() {
    // The leader key was deleted: we acquired an absent key and must wait a TTL. Our neard
    // starts syncing right after: the lock goes to the ready node once the TTL is over, with a
    // released record (our key never went live; the unknown leader is fenced by then).
    let mut d = Driver::new(true);
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![ready_at("n2", None)],
    });
    d.observe(None, 5);
    let acquired = d.now;
    d.feed(Event::Acquired {
        sent: acquired,
        index: 6,
    });
    d.ack_guard();
    let mut p = d.poll();
    p.syncing = true;
    for _ in 0..(2 * TTL.as_millis() / 100) {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 6);
        d.ack_guard();
        p.wall_ms += 100;
        d.feed(Event::Status(p));
        if released_value(&d).is_some() {
            break;
        }
    }
    let gave_back = d.now.saturating_duration_since(acquired);
    assert!(
        d.log
            .contains(&Command::SteppedDown(StepDown::NoProgress(Stuck::Syncing))),
        "{:?}",
        d.log
    );
    assert!(
        gave_back >= TTL && gave_back < TTL + Duration::from_millis(200),
        "gave back {gave_back:?} after acquiring; the wait was {TTL:?}"
    );
    let value = released_value(&d).expect("released");
    assert_eq!(value.state, RecordState::Released);
    // What our fence waited for: our own view at the acquisition (head 50, target 51) stood
    // in for the unknown leader, as stale as the wait.
    assert_eq!(value.horizon.target, Some(51), "{value:?}");
    assert!(!value.horizon.exact);
    assert!(value
        .horizon
        .stale_ms
        .is_some_and(|ms| ms >= TTL.as_millis() as u64));
    assert_eq!(d.count(|c| *c == Command::InstallKey), 0);
}

#[test]
fn a_syncing_promotion_without_a_ready_node_keeps_waiting() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.observe(None, 5);
    let acquired = d.now;
    d.feed(Event::Acquired {
        sent: acquired,
        index: 6,
    });
    d.ack_guard();
    let mut p = d.poll();
    p.syncing = true;
    for _ in 0..30 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 6);
        d.ack_guard();
        p.wall_ms += 100;
        d.feed(Event::Status(p));
    }
    assert!(released_value(&d).is_none(), "{:?}", d.log);
}

#[test]
fn a_give_back_waits_for_the_heartbeat_on_its_way_and_a_refused_release_is_retried_while_syncing() {
    // Found by the bench (16a): the give-back's release and a heartbeat left together; the
    // heartbeat landed first, the release's index check failed, and the node, its neard
    // syncing, never gave its own key back: a ready node had to wait a TTL to destroy it.
    let mut d = Driver::new(true);
    d.reach_voting();
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![ready_at("n2", None)],
    });
    d.observe(None, 5);
    let acquired = d.now;
    // Sent 100 ms before it was acknowledged: heartbeats fall due 100 ms before the whole
    // seconds at which the give-back is due.
    d.feed(Event::Acquired {
        sent: acquired - Duration::from_millis(100),
        index: 6,
    });
    d.ack_guard();
    let mut p = d.poll();
    p.syncing = true;
    // Heartbeats are acknowledged, but for the one that leaves just before the give-back.
    let mut held = None;
    while d.now < acquired + TTL * 2 {
        let out = d.advance(Duration::from_millis(100));
        if d.now >= acquired + TTL - Duration::from_millis(150) {
            held = held.or(out.iter().find_map(|c| match c {
                Command::Heartbeat { seq, .. } => Some(*seq),
                _ => None,
            }));
        } else {
            d.ack_heartbeats(&out, 6);
        }
        d.ack_guard();
        p.wall_ms += 100;
        d.feed(Event::Status(p));
        if out.iter().any(|c| matches!(c, Command::SteppedDown(_))) {
            break;
        }
    }
    assert!(d
        .log
        .contains(&Command::SteppedDown(StepDown::NoProgress(Stuck::Syncing))));
    let seq = held.expect("a heartbeat left just before the give-back");
    assert!(
        released_value(&d).is_none(),
        "no release while a heartbeat is on its way"
    );
    // The heartbeat lands (index 9): the release checks that index.
    d.feed(Event::HeartbeatAcked {
        seq,
        sent: d.now,
        index: 9,
    });
    let release = d.log.iter().rev().find_map(|c| match c {
        Command::Release {
            expected_index,
            value,
            ..
        } => Some((*expected_index, Record::parse(value).expect("a record"))),
        _ => None,
    });
    let (index, value) = release.expect("released once the heartbeat's verdict came");
    assert_eq!(index, 9);
    assert_eq!(value.state, RecordState::Released);
    assert_eq!(value.seq, seq + 1, "after the heartbeat's record");
    // Refused all the same (someone else moved the key): the watch shows our session on it,
    // and we give it back although our neard still syncs.
    d.feed(Event::Released(false));
    let mine = KeyState {
        index: 12,
        session: Some("s1".into()),
        value: b"{}".to_vec(),
    };
    let out = d.observe(Some(mine), 12);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Release {
                expected_index: 12,
                ..
            }
        )),
        "{out:?}"
    );
}

/// A validating leader whose neard's head stays at 50 while it reports itself in sync.
fn frozen_leader(peers: Vec<NodeRecord>) -> Driver {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers,
    });
    for _ in 0..30 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        d.status();
    }
    d
}

#[test]
fn a_leader_whose_head_froze_is_fenced_and_releases_when_a_ready_node_is_ahead() {
    let d = frozen_leader(vec![ready_at("n2", Some(57))]);
    assert!(
        d.log
            .contains(&Command::SteppedDown(StepDown::NoProgress(Stuck::Head {
                own: 50,
                peer: 57,
                live: true
            }))),
        "{:?}",
        d.log
    );
    // Fenced first: a hot-swap demotion (the key file removed, SIGHUP).
    let after = after_no_progress(&d);
    assert!(after.contains(&Command::RemoveKey));
    assert!(after.contains(&Command::Sighup));
}

/// What the machine did from its step-down for want of progress on.
fn after_no_progress(d: &Driver) -> &[Command] {
    let at = d
        .log
        .iter()
        .position(|c| matches!(c, Command::SteppedDown(StepDown::NoProgress(_))))
        .expect("stepped down");
    &d.log[at..]
}

#[test]
fn a_frozen_head_in_a_stalled_chain_or_without_a_ready_node_keeps_validating() {
    for peers in [
        vec![],
        vec![ready_at("n2", Some(50))],
        vec![NodeRecord {
            head: Some(57),
            ..peer("n2", 1, false)
        }],
    ] {
        let d = frozen_leader(peers.clone());
        assert!(
            !d.log.iter().any(|c| matches!(c, Command::SteppedDown(_))),
            "{peers:?}: {:?}",
            d.log
        );
        assert!(d.m.key_live());
    }
}

#[test]
fn a_peer_is_judged_by_when_this_node_saw_its_record_change_not_by_its_wall_clock() {
    // A ready peer whose wall clock is ten minutes off either way is ready all the same.
    for skew in [0, 600_000, u64::MAX / 2] {
        let d = frozen_leader(vec![NodeRecord {
            updated_ms: skew,
            ..ready_at("n2", Some(57))
        }]);
        assert!(
            d.log
                .iter()
                .any(|c| matches!(c, Command::SteppedDown(StepDown::NoProgress(_)))),
            "updated_ms {skew}"
        );
    }
    // A record this node has not seen change for three record intervals is a node that is
    // gone, whatever its clock says.
    let mut d = Driver::new(true);
    d.reach_validating();
    let gone = ready_at("n2", Some(57));
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![gone.clone()],
    });
    d.now = d.now + PEER_FRESH;
    d.feed(Event::ClusterObserved {
        control: Control::default(),
        peers: vec![gone],
    });
    assert_eq!(d.m.ready_peers().count(), 0);
}

/// The lock holder's heartbeat `seq`, head `head`, as a standby's watch sees it.
fn holder_beat(seq: u64, head: u64) -> KeyState {
    let mut r = n0_record(
        seq,
        RecordState::Active,
        Horizon {
            head: Some(head),
            target: Some(head + 1),
            exact: false,
            stale_ms: Some(1000),
        },
    );
    r.session = "s0".into();
    KeyState {
        index: 100 + seq,
        session: Some("s0".into()),
        value: r.to_bytes(),
    }
}

fn published_heads(out: &[Command]) -> Vec<Option<u64>> {
    out.iter()
        .filter_map(|c| match c {
            Command::Publish(f) => Some(f.head),
            _ => None,
        })
        .collect()
}

#[test]
fn a_ready_standby_publishes_its_head_when_the_holder_s_head_stays_put() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.head = 60;
    d.status();
    // A live chain: every heartbeat shows a new head; nothing to say.
    for (seq, head) in [(5, 55), (6, 58)] {
        let out = d.observe(Some(holder_beat(seq, head)), 100 + seq);
        assert_eq!(published_heads(&out), Vec::<Option<u64>>::new(), "{out:?}");
    }
    // Two heartbeats with head 58 while ours is 60: publish our head at once, once.
    let out = d.observe(Some(holder_beat(7, 58)), 107);
    assert_eq!(published_heads(&out), vec![Some(60)], "{out:?}");
    let out = d.observe(Some(holder_beat(8, 58)), 108);
    assert_eq!(published_heads(&out), Vec::<Option<u64>>::new(), "{out:?}");
    // A stalled chain: the holder's head stays where ours is; nothing to say.
    let mut d = Driver::new(true);
    d.reach_voting();
    d.head = 58;
    d.status();
    d.observe(Some(holder_beat(6, 58)), 106);
    let out = d.observe(Some(holder_beat(7, 58)), 107);
    assert_eq!(published_heads(&out), Vec::<Option<u64>>::new(), "{out:?}");
}

#[test]
fn a_ready_standby_publishes_its_head_while_the_holder_s_neard_lags() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.head = 70;
    d.status();
    // Two heartbeats in a row more than LAG_HEIGHTS below our head: publish it, once.
    let out = d.observe(Some(holder_beat(5, 60)), 105);
    assert_eq!(published_heads(&out), Vec::<Option<u64>>::new(), "{out:?}");
    let out = d.observe(Some(holder_beat(6, 62)), 106);
    assert_eq!(published_heads(&out), vec![Some(70)], "{out:?}");
    let out = d.observe(Some(holder_beat(7, 64)), 107);
    assert_eq!(published_heads(&out), Vec::<Option<u64>>::new(), "{out:?}");
    // The holder came within LAG_HEIGHTS of what we published, and still lags ours: again.
    d.head = 75;
    d.status();
    let out = d.observe(Some(holder_beat(8, 69)), 108);
    assert_eq!(published_heads(&out), vec![Some(75)], "{out:?}");
    // It caught up: nothing to say.
    d.head = 78;
    d.status();
    let out = d.observe(Some(holder_beat(9, 77)), 109);
    assert_eq!(published_heads(&out), Vec::<Option<u64>>::new(), "{out:?}");
}

/// A validating leader whose neard's head moves one height every 200 ms while a ready node's
/// record, republished every second, shows a head `ahead` heights above ours.
fn lagging_leader(ahead: u64) -> Driver {
    let mut d = Driver::new(true);
    d.reach_validating();
    for i in 0..30 {
        if i % 5 == 0 {
            d.feed(Event::ClusterObserved {
                control: Control::default(),
                peers: vec![ready_at("n2", Some(d.head + ahead))],
            });
        }
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        if i % 2 == 0 {
            d.head += 1;
        }
        d.status();
    }
    d
}

#[test]
fn a_leader_whose_neard_lags_while_in_sync_is_fenced_and_releases() {
    let d = lagging_leader(5);
    assert!(
        d.log.iter().any(|c| matches!(
            c,
            Command::SteppedDown(StepDown::NoProgress(Stuck::Behind { live: true, .. }))
        )),
        "{:?}",
        d.log
    );
    assert!(after_no_progress(&d).contains(&Command::RemoveKey));
}

#[test]
fn a_leader_a_block_behind_a_ready_node_keeps_validating() {
    for ahead in [0, 1] {
        let d = lagging_leader(ahead);
        assert!(
            !d.log.iter().any(|c| matches!(c, Command::SteppedDown(_))),
            "{ahead}: {:?}",
            d.log
        );
        assert!(d.m.key_live());
    }
}

/// The horizon a leader's heartbeats carry ages from its neard's last poll in sync: a syncing
/// neard may catch up in a burst and sign far above what it showed (seed 43238).
#[test]
fn a_syncing_leader_s_horizon_ages_from_its_last_poll_in_sync() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.status();
    let stale_of = |out: &[Command]| {
        out.iter().rev().find_map(|c| match c {
            Command::Heartbeat { value, .. } => Record::parse(value).map(|r| r.horizon.stale_ms),
            _ => None,
        })
    };
    let mut last = None;
    for _ in 0..15 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        let mut p = d.poll();
        p.syncing = true;
        d.feed(Event::Status(p));
        last = stale_of(&out).or(last);
    }
    let stale = last.flatten().expect("a heartbeat with a horizon");
    // Up to the poll's timeout (1 s) more than the time since the poll it counts from.
    assert!(
        stale >= 1900,
        "stale {stale} ms: counted from a syncing poll"
    );
    // In sync again: fresh.
    let mut fresh = None;
    for _ in 0..15 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 11);
        d.ack_guard();
        d.status();
        fresh = stale_of(&out).or(fresh);
    }
    let fresh = fresh.flatten().expect("a heartbeat with a horizon");
    assert!(fresh < 1500, "stale {fresh} ms once in sync again");
}

#[test]
fn a_block_stamped_after_our_wall_clock_stops_the_caught_up_rule() {
    let mut d = Driver::new(true);
    d.reach_voting();
    assert!(d.m.own_view().is_some_and(|v| v.wall_trusted));
    let mut p = d.poll();
    p.block_ms = Some(p.wall_ms + 600_000); // our clock ten minutes behind the chain's
    p.head += 1;
    d.feed(Event::Status(p));
    assert!(d.m.own_view().is_some_and(|v| !v.wall_trusted));
    // ... for a while, also once the stamps look plausible again.
    d.advance(Duration::from_secs(60));
    d.status();
    assert!(!d.m.wall_trusted());
    d.advance(WALL_DISTRUST);
    assert!(d.m.wall_trusted());
}

#[test]
fn records_carry_the_inherited_horizon_only_until_the_key_may_be_live() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.observe(Some(d.released_key(10)), 10);
    let acquire = d.log.iter().find_map(|c| match c {
        Command::Acquire { value, .. } => Record::parse(value),
        _ => None,
    });
    assert!(acquire.expect("an acquisition").inherited.is_some());
    let mut d = Driver::new(true);
    d.reach_validating();
    let before = d.log.len();
    d.advance(TTL / 3 + Duration::from_millis(100));
    let beat = d.log[before..].iter().find_map(|c| match c {
        Command::Heartbeat { value, .. } => Record::parse(value),
        _ => None,
    });
    assert_eq!(beat.expect("a heartbeat").inherited, None);
}

// ----- a rewound Consul: the lock memory ------------------------------------------------------

/// n0's record of `term` and `seq` at `index`, held by nobody.
fn n0_key(term: u64, seq: u64, state: RecordState, index: u64) -> KeyState {
    let mut r = n0_record(
        seq,
        state,
        Horizon {
            head: Some(40),
            target: Some(41),
            exact: state == RecordState::Released,
            stale_ms: None,
        },
    );
    r.term = term;
    KeyState {
        index,
        session: None,
        value: r.to_bytes(),
    }
}

fn remembered(log: &[Command]) -> Vec<crate::lease::LockMemory> {
    log.iter()
        .filter_map(|c| match c {
            Command::Remember(m) => Some(*m),
            _ => None,
        })
        .collect()
}

#[test]
fn a_node_remembers_the_newest_record_and_acquires_with_a_newer_term() {
    let mut d = Driver::new(true);
    d.reach_voting();
    d.observe(Some(n0_key(4, 9, RecordState::Active, 50)), 50);
    d.observe(Some(n0_key(4, 10, RecordState::Released, 51)), 51);
    let m = remembered(&d.log);
    assert_eq!(
        m.last().map(|m| (m.term, m.seq, m.index)),
        Some((4, 10, 51))
    );
    let acquire = d.log.iter().find_map(|c| match c {
        Command::Acquire { value, .. } => Record::parse(value),
        _ => None,
    });
    assert_eq!(acquire.expect("acquires the released lock").term, 5);
}

/// Issue 21, fault 2: a standby that saw term 5 (remembered on disk across its restart) finds
/// a restored snapshot's *released* record of term 3 at a lower index.
fn rewound_standby(memory: Option<crate::lease::LockMemory>) -> Driver {
    rewound_standby_after(memory, true)
}

/// A standby (with `memory` from its state directory) acquires a restored release; `followed`:
/// it has followed the key since it started (else it just started, and this is its first read).
fn rewound_standby_after(memory: Option<crate::lease::LockMemory>, followed: bool) -> Driver {
    let mut d = Driver::new(true);
    d.m = Machine::new(
        Config {
            remembered: memory,
            ..config(true)
        },
        d.now,
    );
    if followed {
        d.m.rejoining = None;
    }
    d.reach_voting();
    d.observe(Some(n0_key(3, 7, RecordState::Released, 30)), 30);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 60 });
    d.ack_guard();
    d
}

#[test]
fn a_released_record_older_than_remembered_is_foreign_and_waits_a_ttl() {
    let memory = crate::lease::LockMemory {
        term: 5,
        seq: 2,
        index: 55,
    };
    let mut d = rewound_standby(Some(memory));
    assert!(
        d.log.iter().any(|c| matches!(
            c,
            Command::ConsulRewound {
                seen: (3, 7, 30),
                ..
            }
        )),
        "{:?}",
        d.log
    );
    let acquire = d.log.iter().find_map(|c| match c {
        Command::Acquire { value, .. } => Record::parse(value),
        _ => None,
    });
    assert_eq!(
        acquire.expect("acquired").term,
        6,
        "newer than anything seen"
    );
    // Not the clean release it claims to be: a TTL's wait.
    waits_a_ttl_then_activates(&mut d);
}

/// A holder that took a record as foreign (heartbeats of its own acknowledged at index 60 and
/// on, its neard in sync and producing): no key for almost a TTL, then the key.
fn waits_a_ttl_then_activates(d: &mut Driver) {
    for _ in 0..(TTL.as_millis() / 100 - 2) {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 60);
        d.ack_guard();
        d.head += 1;
        d.status();
    }
    assert!(!d.log.contains(&Command::InstallKey), "{:?}", d.log);
    for _ in 0..10 {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 60);
        d.ack_guard();
        d.head += 1;
        d.target = d.head + 1;
        d.status();
    }
    assert!(d.log.contains(&Command::InstallKey), "after the TTL");
}

#[test]
fn without_memory_a_restored_release_looks_clean() {
    // What the memory is for: a node that followed the key and never saw anything newer takes
    // the record at its word (docs/failover.md, "What this does not cover").
    let mut d = rewound_standby(None);
    d.status();
    assert!(d.log.contains(&Command::InstallKey), "{:?}", d.log);
}

/// A node that just started (its state directory lost, or a new host) may have missed a term
/// that a restore erased: the first record it reads is foreign, released or not, until it has
/// seen the key written.
#[test]
fn a_node_that_just_started_takes_a_restored_release_as_foreign() {
    let mut d = rewound_standby_after(None, false);
    waits_a_ttl_then_activates(&mut d);
}

/// Seed 182868 of the simulation: a leader cut off from Consul for longer than a TTL stepped
/// down; meanwhile the other node took the lock, and a snapshot restore erased that. Back, the
/// leader found its own active record in the key (nothing newer in its memory) and activated at
/// once beside the other node, which validated until its next heartbeat failed. Having lost its
/// session, it counts the key's record as foreign: a TTL from its first read after the gap.
#[test]
fn a_node_back_from_a_lost_session_waits_a_ttl_even_on_its_own_record() {
    back_from_a_lost_session_waits_a_ttl(None);
    // Or on another node's release of a term newer than any it saw (a restore may bring back
    // the release of a term that began while it was away, and erase the term after it).
    let mut released = n0_record(
        9,
        RecordState::Released,
        Horizon {
            head: Some(40),
            target: Some(41),
            exact: true,
            stale_ms: None,
        },
    );
    released.term = 7;
    back_from_a_lost_session_waits_a_ttl(Some(released.to_bytes()));
}

/// The key after the gap holds `found`, or (`None`) our own last record.
fn back_from_a_lost_session_waits_a_ttl(found: Option<Vec<u8>>) {
    let mut d = Driver::new(true);
    d.reach_validating();
    let own = d
        .log
        .iter()
        .rev()
        .find_map(|c| match c {
            Command::Heartbeat { value, .. } | Command::Acquire { value, .. } => {
                Some(value.clone())
            }
            _ => None,
        })
        .expect("our record");
    let own = found.unwrap_or(own);
    d.renews_ok = false;
    for _ in 0..(2 * TTL.as_millis() / 100) {
        d.cut_off_step();
    }
    assert!(d.log.contains(&Command::SessionAbandoned("s1".into())));
    assert!(!d.m.key_live());
    // Back: a new session, and the key as the restore left it, our record, its session ended.
    d.renews_ok = true;
    d.key = KeyShown::None;
    d.feed(Event::SessionCreateFailed);
    let out = d.advance(Duration::from_millis(500));
    assert!(out.contains(&Command::CreateSession), "{out:?}");
    let mut out = d.feed(Event::SessionCreated("s2".into()));
    out.extend(d.advance(Duration::from_millis(10)));
    assert!(
        out.contains(&Command::ReadKey),
        "the watch answers only when the key changes: a fresh read: {out:?}"
    );
    let before = d.log.len();
    d.observe(
        Some(KeyState {
            index: 12,
            session: None,
            value: own,
        }),
        12,
    );
    let acquired = d.log[before..]
        .iter()
        .any(|c| matches!(c, Command::Acquire { .. }));
    assert!(acquired, "{:?}", &d.log[before..]);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 13 });
    d.ack_guard();
    for _ in 0..(TTL.as_millis() / 100 - 2) {
        let out = d.advance(Duration::from_millis(100));
        d.ack_heartbeats(&out, 20);
        d.ack_guard();
        d.head += 1;
        d.target = d.head + 1;
        d.status();
    }
    assert!(
        !d.log[before..].iter().any(|c| matches!(
            c,
            Command::InstallKey | Command::StartNeard(Role::Validator)
        )),
        "{:?}",
        &d.log[before..]
    );
}

#[cfg(feature = "mutations")]
#[test]
fn with_the_memory_switched_off_a_restored_release_is_trusted() {
    let memory = crate::lease::LockMemory {
        term: 5,
        seq: 2,
        index: 55,
    };
    let mut d = Driver::new(true);
    let mut cfg = config(true);
    cfg.remembered = Some(memory);
    cfg.mutations.trust_rewound_records = true;
    d.m = Machine::new(cfg, d.now);
    d.reach_voting();
    d.observe(Some(n0_key(3, 7, RecordState::Released, 30)), 30);
    let sent = d.now;
    d.feed(Event::Acquired { sent, index: 60 });
    d.ack_guard();
    d.status();
    assert!(d.log.contains(&Command::InstallKey));
}

/// Our session's key as a snapshot restore brings it back: term 1, an older record than the
/// node has seen since, at `index`.
fn own_key(term: u64, seq: u64, index: u64) -> KeyState {
    let mut r = n0_record(seq, RecordState::Active, Horizon::default());
    r.term = term;
    r.node_id = "n1".into();
    r.session = "s1".into();
    KeyState {
        index,
        session: Some("s1".into()),
        value: r.to_bytes(),
    }
}

#[test]
fn a_refused_give_back_reads_the_key_afresh_and_a_rewind_lets_it_give_back_again() {
    // Found by the deterministic simulation (seed 1260, a Consul snapshot restore): a node that
    // gave its own key back at index 6 was told the key had moved on (another node took it at
    // 15); the restore brought back index 6 under its session, and the node, having tried
    // index 6 once, never gave it back. Its watch saw nothing: Consul answers a blocking query
    // only once the index passes the one it had.
    let mut d = Driver::new(true);
    d.reach_voting();
    let reads = |d: &Driver| d.count(|c| *c == Command::ReadKey);
    let releases = |d: &Driver| d.count(|c| matches!(c, Command::Release { .. }));
    // The node has seen term 2 at index 15 (another node's acquisition).
    let mut newer = own_key(2, 1, 15);
    newer.session = Some("s9".into());
    d.observe(Some(newer), 15);
    d.observe(Some(own_key(1, 3, 6)), 6);
    d.status();
    let before = (reads(&d), releases(&d));
    // A give-back of index 6, refused: read the key afresh, once.
    d.feed(Event::Released(false));
    d.status();
    assert_eq!(reads(&d), before.0 + 1, "{:?}", d.log);
    d.observe(Some(own_key(1, 3, 6)), 6);
    d.status();
    d.advance(Duration::from_secs(1));
    assert_eq!(reads(&d), before.0 + 1, "once: {:?}", d.log);
    assert_eq!(releases(&d), before.1, "no retry at the same index");
    // The fresh read shows the rewound key (older than term 2, below index 15): given back
    // again.
    assert!(
        d.log
            .iter()
            .any(|c| matches!(c, Command::ConsulRewound { .. })),
        "{:?}",
        d.log
    );
}

#[test]
fn a_rewind_found_on_a_fresh_read_gives_our_key_back_again() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let releases = |d: &Driver| d.count(|c| matches!(c, Command::Release { .. }));
    // Our key at index 6, given back, refused (the key moved on to 15, term 2).
    d.observe(Some(own_key(1, 3, 6)), 6);
    d.status();
    assert_eq!(releases(&d), 1);
    d.feed(Event::Released(false));
    let mut theirs = own_key(2, 1, 15);
    theirs.session = Some("s9".into());
    d.observe(Some(theirs), 15);
    // A restore brings index 6 back under our session: the node notices the rewind and gives
    // it back again.
    let out = d.observe(Some(own_key(1, 3, 6)), 6);
    assert!(
        out.iter().any(|c| matches!(
            c,
            Command::Release {
                expected_index: 6,
                ..
            }
        )),
        "{out:?}"
    );
}

#[test]
fn a_refused_acquisition_reads_the_key_afresh_and_is_tried_again_only_after_the_retry_delay() {
    // Found by the deterministic simulation (seed 1433, a Consul snapshot restore): a standby
    // whose acquisition at index 19 was refused tried again at once, every few milliseconds,
    // while its watch, blind to the restore, kept showing index 19.
    let mut d = Driver::new(true);
    d.reach_voting();
    let acquires = |d: &Driver| d.count(|c| matches!(c, Command::Acquire { .. }));
    let reads = |d: &Driver| d.count(|c| *c == Command::ReadKey);
    d.observe(Some(d.released_key(19)), 19);
    assert_eq!(acquires(&d), 1);
    d.feed(Event::AcquireRejected);
    d.status();
    assert_eq!(acquires(&d), 1, "not at once: {:?}", d.log);
    assert_eq!(reads(&d), 1, "the key read afresh");
    // The read shows the same index (a lagging view): the acquisition waits for the delay.
    d.observe(Some(d.released_key(19)), 19);
    d.advance(TTL / 3 / 8);
    assert_eq!(acquires(&d), 1);
    d.advance(TTL / 3 / 4);
    assert_eq!(acquires(&d), 2, "after the retry delay: {:?}", d.log);
}

/// A standby counts what our account produces as a silent holder's for a TTL after the
/// holder's last heartbeat (its step-down and its guard's deadline come within it), not two
/// heartbeat intervals: the old leader's last blocks, counted while its neard still signed,
/// were taken for a doppelganger's. Production after that is a doppelganger's.
#[test]
fn a_silent_holder_s_production_is_its_own_for_a_ttl() {
    let mut d = Driver::new(true);
    d.reach_voting();
    let produced = |n: u64| Production {
        blocks_produced: n,
        blocks_expected: n,
        chunks_produced: 0,
        chunks_expected: 0,
        own_blocks: 0,
        own_chunks: 0,
    };
    let reading = |d: &mut Driver, n: u64| {
        let mut p = d.poll();
        p.production = Some(produced(n));
        d.feed(Event::Status(p));
    };
    let hb = n0_record(
        4,
        RecordState::Active,
        Horizon {
            head: Some(45),
            target: Some(46),
            exact: false,
            stale_ms: Some(100),
        },
    );
    d.observe(
        Some(KeyState {
            index: 20,
            session: Some("s0".into()),
            value: hb.to_bytes(),
        }),
        20,
    );
    reading(&mut d, 0);
    // The holder falls silent; its neard signs on until its lease runs out, and its last
    // blocks are counted a little later.
    let mut n = 0;
    for _ in 0..(TTL.as_millis() / 250 + 2) {
        d.advance(Duration::from_millis(250));
        d.ack_guard();
        n += 1;
        reading(&mut d, n);
        assert_eq!(d.m.doppelganger(), None, "at {n}: {:?}", d.log);
    }
    // A TTL and the grace later, without production; then production: a doppelganger's.
    for _ in 0..8 {
        d.advance(Duration::from_millis(250));
        d.ack_guard();
        reading(&mut d, n);
    }
    assert_eq!(d.m.doppelganger(), None, "{:?}", d.log);
    d.advance(Duration::from_millis(250));
    d.ack_guard();
    reading(&mut d, n + 1);
    assert!(d.m.doppelganger().is_some(), "{:?}", d.log);
}

/// A leader cut off from Consul (renews, heartbeats and releases all fail) drops its session a
/// TTL after the last renew Consul acknowledged, and never uses it again: Consul may have
/// invalidated it, and a snapshot restore could bring it back holding the lock another node took
/// meanwhile (seed 157122: the leader's release, retried after the restore, succeeded on the
/// resurrected session, and it re-acquired its own release and activated at once beside the
/// node that had taken over).
#[test]
fn a_session_not_renewed_for_a_ttl_is_dropped_and_never_used_again() {
    let mut d = Driver::new(true);
    d.reach_validating();
    d.renews_ok = false;
    let cut = d.now;
    let mut abandoned = None;
    let mut after = Vec::new();
    for _ in 0..(3 * TTL.as_millis() / 100) {
        let out = d.cut_off_step();
        if abandoned.is_some() {
            after.extend(out.iter().cloned());
        } else if out.contains(&Command::SessionAbandoned("s1".into())) {
            abandoned = Some(d.now);
        }
    }
    let at = abandoned.expect("the session is dropped");
    assert!(
        at <= cut + TTL,
        "dropped {:?} after the cut, more than a TTL",
        at.saturating_duration_since(cut)
    );
    assert!(!d.m.key_live(), "the key is not live without the session");
    let uses = |c: &Command| match c {
        Command::Renew(s) | Command::DestroySession(s) => s == "s1",
        Command::Heartbeat { session, .. }
        | Command::Acquire { session, .. }
        | Command::Release { session, .. } => session == "s1",
        _ => false,
    };
    assert!(!after.iter().any(uses), "{after:?}");
    assert_ne!(d.m.session(), Some("s1"));
}
