//! Unit tests of [`super`].

use super::*;

const TTL: Duration = Duration::from_secs(30);

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

fn record(session: &str, seq: u64, state: RecordState) -> Record {
    Record {
        hostname: "h".into(),
        node_id: "n0".into(),
        account: "pool.near".into(),
        session: session.into(),
        seq,
        term: 0,
        state,
        horizon: Horizon {
            head: Some(10 + seq),
            target: Some(11 + seq),
            exact: state == RecordState::Released,
            stale_ms: None,
        },
        successor: None,
        switchover: None,
        inherited: None,
    }
}

fn key(index: u64, session: Option<&str>, r: &Record) -> Option<KeyState> {
    Some(KeyState {
        index,
        session: session.map(str::to_string),
        value: r.to_bytes(),
    })
}

/// A read at `now` returning `key`, answered at the key's own index (or `index` if absent).
fn read(key: Option<KeyState>, index: u64, now: Instant) -> Seen {
    Seen {
        index: key.as_ref().map_or(index, |k| k.index),
        key,
        value_since: now,
        read_at: now,
    }
}

#[test]
fn the_lease_runs_from_the_last_acknowledged_heartbeat_sent() {
    let mut l = Lease::new(
        record("s1", 1, RecordState::Active),
        5,
        t(1000),
        Duration::from_secs(22),
    );
    assert_eq!(l.deadline(), t(23_000));
    let beat = l.beat(Horizon::default(), None);
    assert_eq!((beat.expected_index, beat.seq), (5, 2));
    l.unacknowledged();
    assert_eq!(l.deadline(), t(23_000), "no verdict, no extension");
    let beat = l.beat(Horizon::default(), None);
    l.acked(beat.seq + 1, t(10_000), 8);
    assert_eq!(l.deadline(), t(23_000), "not the heartbeat in flight");
    l.acked(beat.seq, t(11_000), 9);
    assert_eq!(l.deadline(), t(33_000));
    assert_eq!(l.index(), 9);
    assert_eq!(l.beat(Horizon::default(), None).expected_index, 9);
}

#[test]
fn a_leader_sees_every_change_to_its_key() {
    let r = record("s1", 3, RecordState::Active);
    let l = Lease::new(r.clone(), 7, t(0), TTL);
    let now = t(0);
    assert_eq!(l.check(&read(key(7, Some("s1"), &r), 0, now)), Ok(()));
    assert_eq!(
        l.check(&read(None, 6, now)),
        Ok(()),
        "a read from before our write"
    );
    assert_eq!(l.check(&read(None, 9, now)), Err(Lost::Deleted));
    assert_eq!(
        l.check(&read(key(8, None, &r), 0, now)),
        Err(Lost::Released)
    );
    assert_eq!(
        l.check(&read(key(8, Some("s2"), &r), 0, now)),
        Err(Lost::TakenBy)
    );
    let junk = Some(KeyState {
        index: 8,
        session: Some("s1".into()),
        value: b"junk".to_vec(),
    });
    assert_eq!(l.check(&read(junk, 0, now)), Err(Lost::Overwritten));
}

#[test]
fn a_released_record_allows_activation_at_once() {
    let mut o = Observer::default();
    let r = record("s1", 9, RecordState::Released);
    o.observe(key(20, None, &r), 20, t(0));
    assert_eq!(
        o.standby_move("me", "n9", t(1), TTL, TTL, None),
        StandbyMove::Acquire(AcquirePlan {
            expected_index: Some(20),
            activation: Activation::Clean(r.horizon),
        })
    );
}

#[test]
fn a_switchover_leaves_the_lock_to_its_successor_for_a_ttl() {
    let mut o = Observer::default();
    let r = Record {
        successor: Some("n2".into()),
        ..record("s1", 9, RecordState::Released)
    };
    o.observe(key(20, None, &r), 20, t(0));
    assert_eq!(
        o.standby_move("me", "n9", t(1), TTL, TTL, None),
        StandbyMove::Wait
    );
    assert!(matches!(
        o.standby_move("me", "n2", t(1), TTL, TTL, None),
        StandbyMove::Acquire(_)
    ));
    assert!(
        matches!(
            o.standby_move("me", "n9", t(30_000), TTL, TTL, None),
            StandbyMove::Acquire(_)
        ),
        "a successor that does not come is replaced after a TTL"
    );
}

#[test]
fn a_heartbeat_bounds_activation_from_when_it_was_first_seen() {
    let mut o = Observer::default();
    let hb = record("s1", 4, RecordState::Active);
    o.observe(key(20, Some("s1"), &hb), 20, t(1000));
    assert_eq!(
        o.standby_move("me", "n9", t(2000), TTL, TTL, None),
        StandbyMove::Wait
    );
    // Consul ends the session (the leader's agent restarts): the value stays, the
    // session goes, the index moves. The first sight of the value still counts.
    o.observe(key(21, None, &hb), 21, t(5000));
    assert_eq!(
        o.standby_move("me", "n9", t(5000), TTL, TTL, None),
        StandbyMove::Acquire(AcquirePlan {
            expected_index: Some(21),
            activation: Activation::NotBefore {
                at: t(31_000),
                horizon: hb.horizon,
                inherited: None,
            },
        })
    );
}

#[test]
fn a_new_heartbeat_restarts_the_clock() {
    let mut o = Observer::default();
    let hb = |seq| record("s1", seq, RecordState::Active);
    o.observe(key(20, Some("s1"), &hb(4)), 20, t(0));
    o.observe(key(22, Some("s1"), &hb(5)), 22, t(10_000));
    assert_eq!(o.seen().map(|s| s.value_since), Some(t(10_000)));
    // A blocking query returning without a change refreshes the read, not the value.
    o.observe(key(22, Some("s1"), &hb(5)), 22, t(39_500));
    assert_eq!(
        o.standby_move("me", "n9", t(39_999), TTL, TTL, None),
        StandbyMove::Wait
    );
    assert_eq!(
        o.standby_move("me", "n9", t(40_000), TTL, TTL, None),
        StandbyMove::DestroyHolder("s1".into()),
        "silent for a full TTL, and freshly read"
    );
    assert_eq!(
        o.standby_move("me", "n9", t(40_600), TTL, TTL, None),
        StandbyMove::Reread,
        "a standby cut off from Consul must read again before it destroys anything"
    );
}

#[test]
fn an_absent_key_waits_a_full_ttl_after_the_acquisition() {
    let mut o = Observer::default();
    o.observe(None, 5, t(0));
    assert_eq!(
        o.standby_move("me", "n9", t(50_000), TTL, TTL, None),
        StandbyMove::Acquire(AcquirePlan {
            expected_index: None,
            activation: Activation::AfterAck { wait: TTL },
        })
    );
}

#[test]
fn our_own_session_on_the_key_is_released_when_we_do_not_lead() {
    let mut o = Observer::default();
    o.observe(
        key(3, Some("me"), &record("me", 1, RecordState::Active)),
        3,
        t(0),
    );
    assert_eq!(
        o.standby_move("me", "n9", t(0), TTL, TTL, None),
        StandbyMove::ReleaseOwn
    );
}

#[test]
fn foreign_values_are_bounded_like_heartbeats() {
    let mut o = Observer::default();
    o.observe(
        Some(KeyState {
            index: 4,
            session: None,
            value: b"junk".to_vec(),
        }),
        4,
        t(100),
    );
    assert_eq!(
        o.standby_move("me", "n9", t(100), TTL, TTL, None),
        StandbyMove::Acquire(AcquirePlan {
            expected_index: Some(4),
            activation: Activation::NotBefore {
                at: t(30_100),
                horizon: Horizon::default(),
                inherited: None,
            },
        })
    );
}

#[test]
fn records_round_trip_and_old_values_parse() {
    let r = record("s", 2, RecordState::Released);
    assert_eq!(Record::parse(&r.to_bytes()), Some(r));
    // The value older kuutamods wrote: treated as an active record without a horizon.
    let old = Record::parse(br#"{"Hostname":"h","NodeId":"n"}"#).expect("parses");
    assert_eq!(old.state, RecordState::Active);
    assert_eq!(old.horizon, Horizon::default());
}

#[test]
fn a_promoting_holder_s_record_passes_on_what_it_inherited() {
    let plain = record("s1", 3, RecordState::Active);
    let bytes = String::from_utf8(plain.to_bytes()).expect("utf-8");
    assert!(
        !bytes.contains("Inherited"),
        "a leader's record reads as before: {bytes}"
    );
    let before = Horizon {
        head: Some(100),
        target: Some(103),
        exact: false,
        stale_ms: Some(32_000),
    };
    let promoting = Record {
        inherited: Some(before),
        ..plain.clone()
    };
    let bytes = promoting.to_bytes();
    assert_eq!(Record::parse(&bytes), Some(promoting.clone()));
    // A standby that takes over from it gets both horizons.
    let mut o = Observer::default();
    o.observe(key(30, None, &promoting), 30, t(0));
    assert_eq!(
        o.standby_move("me", "n9", t(1), TTL, TTL, None),
        StandbyMove::Acquire(AcquirePlan {
            expected_index: Some(30),
            activation: Activation::NotBefore {
                at: t(30_000),
                horizon: promoting.horizon,
                inherited: Some(before),
            },
        })
    );
    // A released record (only after the key went live) carries nothing inherited.
    let lease = Lease::new(promoting, 30, t(0), Duration::from_secs(22));
    assert_eq!(lease.released(before, None).inherited, None);
}
