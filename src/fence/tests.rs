//! Unit tests of [`super`].

use super::*;

fn t(ms: u64) -> Instant {
    Instant::from_nanos(ms * 1_000_000)
}

/// Our view at poll time `now_ms` (our wall clock = 1_000_000 + now_ms): head, target, and
/// the tip's block time on the same wall clock.
fn own(head: u64, target: Option<u64>, tip_wall: u64, now_ms: u64) -> OwnView {
    OwnView {
        head,
        target,
        tip_ms: Some(1_000_000 + tip_wall),
        wall_ms: 1_000_000 + now_ms,
        // It arrived when it was produced, on a clock that agrees with the chain's.
        arrived_after: Some(t(tip_wall)),
        wall_trusted: true,
    }
}

const P: FenceParams = FenceParams {
    floor: Horizon {
        head: None,
        target: None,
        exact: false,
        stale_ms: None,
    },
    delays: BlockDelays::NEARD,
    heartbeat_staleness: Duration::from_secs(31),
    ttl: Duration::from_secs(30),
    trust_any_tip: false,
};

fn exact(head: u64, target: u64) -> Horizon {
    Horizon {
        head: Some(head),
        target: Some(target),
        exact: true,
        stale_ms: None,
    }
}

#[test]
fn an_exact_horizon_needs_only_head_and_target() {
    let f = Fence::new(
        Activation::Clean(exact(100, 103)),
        t(0),
        None,
        Duration::ZERO,
        &P,
    );
    assert_eq!(
        f.check(t(0), own(99, Some(103), 0, 0), &P),
        Err(Closed::Head { own: 99, need: 100 })
    );
    assert_eq!(
        f.check(t(0), own(100, Some(102), 0, 0), &P),
        Err(Closed::Target {
            own: 102,
            need: 103
        })
    );
    assert_eq!(f.check(t(0), own(100, Some(103), 0, 0), &P), Ok(()));
    // A neard without the metric: its next endorsement targets head + 1.
    assert!(f.check(t(0), own(102, None, 0, 0), &P).is_err());
    assert_eq!(f.check(t(0), own(103, None, 0, 0), &P), Ok(()));
}

#[test]
fn a_stalled_chain_opens_on_the_standby_s_own_timers() {
    // The old leader sent skips up to 107 from head 100; the chain stalls at 100 without
    // us. The keyless standby's doomslug reaches 107 on the same timers.
    let f = Fence::new(
        Activation::Clean(exact(100, 107)),
        t(0),
        None,
        Duration::ZERO,
        &P,
    );
    assert!(f.check(t(0), own(100, Some(105), 0, 0), &P).is_err());
    assert_eq!(f.check(t(0), own(100, Some(107), 0, 0), &P), Ok(()));
}

#[test]
fn a_stale_horizon_opens_once_we_have_a_block_from_after_the_old_leader_stopped() {
    let hb = Horizon {
        head: Some(50),
        target: Some(51),
        exact: false,
        stale_ms: None,
    };
    let f = Fence::new(
        Activation::NotBefore {
            at: t(30_000),
            horizon: hb,
            inherited: None,
        },
        t(1000),
        None,
        Duration::ZERO,
        &P,
    );
    assert_eq!(
        f.check(t(29_999), own(80, Some(81), 29_900, 29_999), &P),
        Err(Closed::Time(t(30_000)))
    );
    // Our tip is older than the fence (plus the skew): our view may lag behind.
    assert!(matches!(
        f.check(t(30_400), own(80, Some(81), 30_200, 30_400), &P),
        Err(Closed::Stale { .. })
    ));
    assert_eq!(
        f.check(t(30_600), own(81, Some(82), 30_500, 30_600), &P),
        Ok(())
    );
    // A fresh tip, but the old leader, cut off from blocks, may have skipped ahead for the
    // 31 s its heartbeat's values were stale: one skip per 2 s at most, so 51 + 16 + 1.
    assert!(matches!(
        f.check(t(30_600), own(66, Some(67), 30_500, 30_600), &P),
        Err(Closed::Stale { .. })
    ));
    assert_eq!(
        f.check(t(30_600), own(67, Some(68), 30_500, 30_600), &P),
        Ok(())
    );
}

#[test]
fn caught_up_needs_a_tip_that_arrived_after_the_fence_and_a_clock_that_agrees_with_the_chain() {
    let hb = Horizon {
        head: Some(50),
        target: Some(51),
        exact: false,
        stale_ms: Some(0),
    };
    let f = Fence::new(
        Activation::NotBefore {
            at: t(30_000),
            horizon: hb,
            inherited: None,
        },
        t(1000),
        None,
        Duration::ZERO,
        &P,
    );
    let fresh = own(81, Some(82), 30_500, 30_600);
    assert_eq!(f.check(t(30_600), fresh, &P), Ok(()));
    // The same timestamps, but the tip arrived before the old leader stopped (our clock is
    // wrong, or the tip's producer's is): it cannot have been produced after.
    let early = OwnView {
        arrived_after: Some(t(29_000)),
        ..fresh
    };
    assert!(matches!(
        f.check(t(30_600), early, &P),
        Err(Closed::Stale { .. })
    ));
    // Unknown arrival (the first poll of this neard): not caught up either.
    let unknown = OwnView {
        arrived_after: None,
        ..fresh
    };
    assert!(f.check(t(30_600), unknown, &P).is_err());
    // A wall clock behind the chain's (blocks arrived stamped from our future): the timestamps
    // say nothing; only the outrun rule may open (51 + ceil(30 s / 600 ms) + 1 = 102).
    let skewed = OwnView {
        wall_trusted: false,
        ..fresh
    };
    assert!(matches!(
        f.check(t(30_600), skewed, &P),
        Err(Closed::Stale {
            outrun: Some(102),
            ..
        })
    ));
    let outrun = OwnView {
        target: Some(102),
        ..skewed
    };
    assert_eq!(f.check(t(30_600), outrun, &P), Ok(()));
}

#[test]
fn a_stale_horizon_in_a_stalled_chain_opens_when_our_target_outruns_it() {
    // The old leader's neard died; its last poll (target 107) was read 1 s before: it
    // could have added ceil(1000 / 600) = 2 targets, so 107 + 2 + 1 = 110 outruns it.
    let released = Horizon {
        head: Some(100),
        target: Some(107),
        exact: false,
        stale_ms: Some(1000),
    };
    let f = Fence::new(
        Activation::Clean(released),
        t(5000),
        None,
        Duration::ZERO,
        &P,
    );
    // The chain is stalled at 100, its tip from long ago.
    let stalled = |target| own(100, Some(target), 0, 5000);
    assert_eq!(
        f.check(t(5000), stalled(109), &P),
        Err(Closed::Stale {
            own: 109,
            outrun: Some(110)
        })
    );
    assert_eq!(f.check(t(5000), stalled(110), &P), Ok(()));
}

#[test]
fn an_absent_key_waits_a_full_wait_then_for_a_fresh_block() {
    let f = Fence::new(
        Activation::AfterAck {
            wait: Duration::from_secs(3),
        },
        t(1000),
        None,
        Duration::ZERO,
        &P,
    );
    assert!(f.check(t(3999), own(9, Some(10), 3900, 3999), &P).is_err());
    assert!(
        matches!(
            f.check(t(4000), own(9, Some(10), 3900, 4000), &P),
            Err(Closed::Stale { outrun: None, .. })
        ),
        "no horizon: only a fresh block opens it"
    );
    assert_eq!(f.check(t(4600), own(10, Some(11), 4550, 4600), &P), Ok(()));
}

#[test]
fn an_absent_key_in_a_stalled_chain_outruns_our_own_view_at_the_acquisition() {
    // A fresh chain that needs our stake: stalled at genesis, our target 18 at the
    // acquisition (read at most 1 s before it). A leader that existed saw the same chain,
    // and could have skipped ceil(4000 / 2000) = 2 targets until fenced: 18 + 2 + 1 = 21.
    let before = own(0, Some(18), 0, 999);
    let f = Fence::new(
        Activation::AfterAck {
            wait: Duration::from_secs(3),
        },
        t(1000),
        Some(before),
        Duration::from_secs(1),
        &P,
    );
    let stalled = |target| own(0, Some(target), 0, 9000);
    assert_eq!(
        f.check(t(9000), stalled(20), &P),
        Err(Closed::Stale {
            own: 20,
            outrun: Some(21)
        })
    );
    assert_eq!(f.check(t(9000), stalled(21), &P), Ok(()));
}

#[test]
fn a_heartbeat_s_horizon_is_stale_by_its_age_plus_the_ttl() {
    let hb = |stale_ms| Horizon {
        head: Some(100),
        target: Some(107),
        exact: false,
        stale_ms,
    };
    let outrun = |h| {
        let f = Fence::new(
            Activation::NotBefore {
                at: t(0),
                horizon: h,
                inherited: None,
            },
            t(0),
            None,
            Duration::ZERO,
            &P,
        );
        match f.check(t(0), own(100, Some(107), 0, 0), &P) {
            Err(Closed::Stale { outrun, .. }) => outrun,
            other => panic!("{other:?}"),
        }
    };
    // 1.5 s old when sent, and its writer signed for at most 30 s more: ceil(31.5 / 0.6).
    assert_eq!(outrun(hb(Some(1500))), Some(107 + 53 + 1));
    // A record that does not say: the most a heartbeat's horizon can be (31 s here).
    assert_eq!(outrun(hb(None)), Some(107 + 52 + 1));
}

#[test]
fn the_next_holder_after_a_give_back_still_waits_for_the_first_leader() {
    // A validated up to head 100, target 103 (its last heartbeat, values 2 s old). B acquired
    // with its own neard far behind (80) and gave the lock back before its fence opened,
    // leaving its own record. C then acquires from B's record.
    let a = Horizon {
        head: Some(100),
        target: Some(103),
        exact: false,
        stale_ms: Some(2000),
    };
    let b = Fence::new(
        Activation::NotBefore {
            at: t(30_000),
            horizon: a,
            inherited: None,
        },
        t(1000),
        Some(own(80, Some(81), 900, 1000)),
        Duration::ZERO,
        &P,
    );
    let inherited = b.inherited();
    assert_eq!(
        inherited,
        Horizon {
            head: Some(100),
            target: Some(103),
            exact: false,
            stale_ms: Some(2000 + 30_000),
        }
    );
    let b_own = Horizon {
        head: Some(80),
        target: Some(81),
        exact: false,
        stale_ms: Some(1100),
    };
    let c_fence = |inherited| {
        Fence::new(
            Activation::NotBefore {
                at: t(70_000),
                horizon: b_own,
                inherited,
            },
            t(40_000),
            None,
            Duration::ZERO,
            &P,
        )
    };
    // C's neard: a live chain (tip after F + WALL_SKEW), head 95 and target 99, below A's.
    let c_view = own(95, Some(99), 70_600, 71_000);
    // From B's own view alone, C's fence would open below what A signed.
    assert_eq!(c_fence(None).check(t(71_000), c_view, &P), Ok(()));
    // With what B inherited, it waits for A's head ...
    let c = c_fence(Some(inherited));
    assert_eq!(
        c.check(t(71_000), c_view, &P),
        Err(Closed::Head { own: 95, need: 100 })
    );
    // ... and for A's whole window, once: B's own part gets its TTL, the inherited none, so
    // the window does not grow with each give-back.
    assert_eq!(c.inherited().stale_ms, Some(32_000));
    assert_eq!(
        c_fence(Some(Horizon {
            stale_ms: Some(1000),
            ..inherited
        }))
        .inherited()
        .stale_ms,
        Some(1100 + 30_000)
    );
    // An exact horizon is passed on as exact.
    let clean = Fence::new(
        Activation::Clean(exact(100, 103)),
        t(0),
        None,
        Duration::ZERO,
        &P,
    );
    assert_eq!(clean.inherited(), exact(100, 103));
}

/// Seed 188963 of the simulation: a foreign value (here a record that a restore rewound) names
/// no horizon, and our own neard's view stands in for it; but our neard lagged 39 heights
/// behind, below blocks the erased term's leader (whose heartbeats we had seen) had signed.
/// The highest horizon we saw is a floor: our head must reach it, and our target pass it.
#[test]
fn a_foreign_value_s_stand_in_horizon_has_the_highest_horizon_seen_as_its_floor() {
    let lagging = own(31, Some(32), 0, 999);
    let fence = |params: &FenceParams| {
        Fence::new(
            Activation::NotBefore {
                at: t(1000),
                horizon: Horizon::default(),
                inherited: None,
            },
            t(1000),
            Some(lagging),
            Duration::from_secs(1),
            params,
        )
    };
    let params = FenceParams {
        floor: exact(70, 71),
        ..P
    };
    assert_eq!(
        fence(&params).check(t(5000), own(40, Some(41), 0, 5000), &params),
        Err(Closed::Head { own: 40, need: 70 })
    );
    // Without the floor, the lagging view itself would have been the bar.
    assert_ne!(
        fence(&P).check(t(5000), own(40, Some(41), 0, 5000), &P),
        Err(Closed::Head { own: 40, need: 70 })
    );
}
