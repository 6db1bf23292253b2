//! Fault schedules: what a seed means.
//!
//! A [`Schedule`] is a [`Scenario`] (the cluster: hosts, failover mode, stakes, clocks,
//! latencies) and a list of [`Fault`]s at true times. Both are derived from the seed by
//! [`Schedule::generate`]; both print as readable lines and parse back ([`Schedule::parse`]),
//! so a shrunk schedule can be replayed from a file. The world's own randomness (latencies,
//! the moment Consul ends a session, ...) comes from the seed too, in separate streams, so a
//! seed and a schedule together replay bit for bit.
//!
//! The text form (printing and parsing) is in `schedule/text.rs`.

mod text;

use crate::rng::Rng;

/// The cluster a schedule runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Number of hosts (kuutamod nodes).
    pub hosts: usize,
    /// Hot-swap failover (else restart mode).
    pub hot_swap: bool,
    /// Our validator holds more than 1/3 of the stake: the chain stalls without it.
    pub stall: bool,
    /// Per host: neard older than 2.3 (no hot swap; kuutamod restarts it with the key).
    pub old_neard: Vec<bool>,
    /// Per host: kuutamod priority.
    pub priority: Vec<u32>,
    /// Per host: clock rate error, ppm.
    pub drift_ppm: Vec<i64>,
    /// Per host: wall clock offset, ms.
    pub wall_offset_ms: Vec<i64>,
    /// Per host: neard boot time (until its RPC answers), ms.
    pub boot_ms: Vec<u64>,
    /// Per host: network latency between its neard and the rest of the chain, ms.
    pub lag_ms: Vec<u64>,
    /// Per host: kuutamod's wall clock minus the host's, ms (a clock set wrong for kuutamod
    /// alone, as libfaketime does in the bench; neard's block timestamps are not affected).
    pub kd_wall_ms: Vec<i64>,
    /// A host configured with host 0's node id (two hosts with one `KUUTAMO_NODE_ID`).
    pub same_id: Option<usize>,
}

/// How a neard handles SIGHUP during a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    /// Applies it seconds late.
    Slow,
    /// Ignores it.
    Ignore,
    /// Fails it (an invalid config: key unchanged, no reload counted).
    Fail,
}

/// One fault. Every field means the same in every variant: `host` is the host's index, `dur`
/// how long the fault lasts (ms), `down` how long what it stopped stays down before it is
/// started again (ms); the others are documented where they occur.
#[allow(missing_docs)] // the fields, described once above
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// neard exits (a crash).
    NeardCrash { host: usize },
    /// neard's RPC stops answering (consensus goes on).
    NeardHang { host: usize, dur: u64 },
    /// neard reports syncing (and signs nothing).
    NeardSyncing { host: usize, dur: u64 },
    /// SIGHUPs are applied late, ignored or fail.
    NeardReload {
        host: usize,
        dur: u64,
        mode: ReloadMode,
    },
    /// neard's view of the chain lags by `lag` ms.
    NeardLag { host: usize, dur: u64, lag: u64 },
    /// neard takes seconds to exit after SIGTERM.
    NeardSlowStop { host: usize, dur: u64 },
    /// kuutamod is SIGKILLed; systemd starts it again after `down` ms.
    KuutamodKill { host: usize, down: u64 },
    /// kuutamod alone is SIGSTOPped.
    KuutamodStop { host: usize, dur: u64 },
    /// kuutamod's process group is SIGSTOPped.
    GroupStop { host: usize, dur: u64 },
    /// The guard is SIGSTOPped.
    GuardStop { host: usize, dur: u64 },
    /// The guard is SIGKILLed (the guard dies alone: neard dies with it).
    GuardKill { host: usize },
    /// kuutamod's process group is SIGSTOPped, and its guard SIGKILLed `after` ms into the
    /// stop (`after` < `dur`): issue #21's double fault, in which nobody is left to act on
    /// the host but the kernel.
    GroupStopGuardKill { host: usize, dur: u64, after: u64 },
    /// The host's Consul agent restarts (a graceful leave: its sessions end).
    AgentRestart { host: usize, down: u64 },
    /// The agent is SIGKILLed and started again after `down` ms (its sessions stay).
    AgentKill { host: usize, down: u64 },
    /// The agent is SIGSTOPped.
    AgentPause { host: usize, dur: u64 },
    /// The agent cannot reach the servers (requests and answers wait in TCP).
    AgentPartition { host: usize, dur: u64 },
    /// A Raft leader election: requests wait, session timers restart.
    Election { dur: u64 },
    /// The servers lose quorum: nothing is applied, no session ends.
    QuorumLoss { dur: u64 },
    /// Every message between agents and servers is delayed up to `max` ms.
    ConsulSlow { dur: u64, max: u64 },
    /// Requests and answers are lost with probability `permille`/1000.
    ConsulLossy { dur: u64, permille: u64 },
    /// An outsider deletes the leader key.
    KvDelete,
    /// An outsider overwrites the leader key's value (its session stays).
    KvOverwrite,
    /// An outsider's session (lock-delay 15 s) acquires the free key and releases it after
    /// `dur` ms, unless kuutamod destroys it first.
    KvForeignAcquire { dur: u64 },
    /// Consul reaps its tombstones (a missing key's index may go back).
    TombstoneReap,
    /// The host is suspended (BOOTTIME runs on, MONOTONIC stops, nothing runs).
    HostSuspend { host: usize, dur: u64 },
    /// SIGUSR1 to kuutamod.
    HandOver { host: usize },
    /// SIGTERM to kuutamod; systemd starts it again after `down` ms.
    Sigterm { host: usize, down: u64 },
    /// `kuutamoctl pause`, then `resume` after `dur` ms.
    CtlPause { dur: u64 },
    /// `kuutamoctl switchover [--to host] [--wait]`.
    CtlSwitchover { to: Option<usize>, wait: bool },
    /// `kuutamoctl switchover --cancel`.
    CtlCancel,
    /// kuutamod is stopped (SIGTERM) and started again `down` ms later with another
    /// `KUUTAMO_PRIORITY`.
    PriorityChange {
        host: usize,
        priority: u32,
        down: u64,
    },
    /// neard receives the chain `heights` blocks late (a neard that lags while it reports
    /// itself in sync).
    NeardBehind { host: usize, dur: u64, heights: u64 },
    /// neard reports syncing (and signs nothing) for `spell` ms, then is in sync for `spell`
    /// ms, and so on.
    NeardSyncSpells { host: usize, dur: u64, spell: u64 },
    /// neard's head is frozen (its client takes in no block and signs nothing) while `/status`
    /// answers and says it is in sync.
    NeardFreeze { host: usize, dur: u64 },
    /// kuutamod's wall clock is stepped by `step` ms (NTP, or an operator), and back after
    /// `dur` ms.
    WallStep { host: usize, dur: u64, step: i64 },
    /// A snapshot of Consul's state (KV and sessions) is taken, and restored `dur` ms later.
    ConsulRestore { dur: u64 },
}

/// A fault at a true time (ms since the start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// When, ms.
    pub at: u64,
    /// What.
    pub kind: FaultKind,
}

impl Fault {
    /// When the fault is over (ms): its end, or when what it broke is started again.
    pub fn heals_at(&self) -> u64 {
        use FaultKind::*;
        self.at
            + match self.kind {
                NeardHang { dur, .. }
                | NeardSyncing { dur, .. }
                | NeardReload { dur, .. }
                | NeardLag { dur, .. }
                | NeardSlowStop { dur, .. }
                | KuutamodStop { dur, .. }
                | GroupStop { dur, .. }
                | GroupStopGuardKill { dur, .. }
                | GuardStop { dur, .. }
                | AgentPause { dur, .. }
                | AgentPartition { dur, .. }
                | Election { dur }
                | QuorumLoss { dur }
                | ConsulSlow { dur, .. }
                | ConsulLossy { dur, .. }
                | KvForeignAcquire { dur }
                | HostSuspend { dur, .. }
                | CtlPause { dur }
                | NeardBehind { dur, .. }
                | NeardSyncSpells { dur, .. }
                | NeardFreeze { dur, .. }
                | WallStep { dur, .. }
                | ConsulRestore { dur } => dur,
                KuutamodKill { down, .. }
                | AgentRestart { down, .. }
                | AgentKill { down, .. }
                | Sigterm { down, .. }
                | PriorityChange { down, .. } => down,
                NeardCrash { .. }
                | GuardKill { .. }
                | KvDelete
                | KvOverwrite
                | TombstoneReap
                | HandOver { .. }
                | CtlSwitchover { .. }
                | CtlCancel => 0,
            }
    }

    /// The host the fault concerns, if one.
    pub fn host(&self) -> Option<usize> {
        use FaultKind::*;
        match self.kind {
            NeardCrash { host }
            | NeardHang { host, .. }
            | NeardSyncing { host, .. }
            | NeardReload { host, .. }
            | NeardLag { host, .. }
            | NeardSlowStop { host, .. }
            | KuutamodKill { host, .. }
            | KuutamodStop { host, .. }
            | GroupStop { host, .. }
            | GroupStopGuardKill { host, .. }
            | GuardStop { host, .. }
            | GuardKill { host }
            | AgentRestart { host, .. }
            | AgentKill { host, .. }
            | AgentPause { host, .. }
            | AgentPartition { host, .. }
            | HostSuspend { host, .. }
            | HandOver { host }
            | Sigterm { host, .. }
            | PriorityChange { host, .. }
            | NeardBehind { host, .. }
            | NeardSyncSpells { host, .. }
            | NeardFreeze { host, .. }
            | WallStep { host, .. } => Some(host),
            _ => None,
        }
    }
}

/// A scenario and its faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The cluster.
    pub scenario: Scenario,
    /// The faults, by time.
    pub faults: Vec<Fault>,
}

/// The knobs of schedule generation.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Largest clock rate error, ppm.
    pub drift_ppm: u64,
    /// Largest number of faults.
    pub max_faults: u64,
    /// Faults start within this window (ms), after the first second.
    pub window_ms: u64,
    /// The session TTL (ms), to size fault durations.
    pub ttl_ms: u64,
    /// Also generate neard block-receipt lag faults (the runner always does).
    pub lag_faults: bool,
}

impl Schedule {
    /// The schedule of `seed`.
    pub fn generate(seed: u64, shape: &Shape) -> Schedule {
        let mut r = Rng::new(seed).fork(1);
        let hosts = if r.chance(300) { 3 } else { 2 };
        let per_host = |r: &mut Rng, f: &mut dyn FnMut(&mut Rng) -> u64| -> Vec<u64> {
            (0..hosts).map(|_| f(r)).collect()
        };
        let priorities = if r.chance(200) {
            per_host(&mut r, &mut |r| r.range(1, 3))
        } else {
            vec![1; hosts]
        };
        let scenario = Scenario {
            hosts,
            hot_swap: r.chance(750),
            stall: r.chance(500),
            old_neard: per_host(&mut r, &mut |r| u64::from(r.chance(100)))
                .into_iter()
                .map(|x| x == 1)
                .collect(),
            priority: priorities.into_iter().map(|p| p as u32).collect(),
            drift_ppm: (0..hosts).map(|_| r.signed(shape.drift_ppm)).collect(),
            wall_offset_ms: (0..hosts).map(|_| r.signed(10)).collect(),
            boot_ms: per_host(&mut r, &mut |r| r.range(200, 1500)),
            lag_ms: per_host(&mut r, &mut |r| r.range(2, 30)),
            kd_wall_ms: Vec::new(),
            same_id: None,
        };
        // Drawn from a stream of their own, so that they leave every other draw of a seed as
        // it was.
        let mut w = Rng::new(seed).fork(4);
        let mut scenario = scenario;
        scenario.kd_wall_ms = (0..hosts)
            .map(|_| if w.chance(150) { wall_error(&mut w) } else { 0 })
            .collect();
        scenario.same_id = (hosts == 3 && w.chance(100)).then_some(2);
        let n = r.range(0, shape.max_faults);
        let mut faults: Vec<Fault> = (0..n)
            .map(|_| {
                let at = 1000 + r.below(shape.window_ms);
                Fault {
                    at,
                    kind: random_kind(&mut r, hosts, shape.ttl_ms, shape.lag_faults),
                }
            })
            .collect();
        // Half of the guard stops are followed, a second or more later while the guard is
        // still stopped, by a stop of kuutamod's process group: kuutamod must have noticed the
        // silent guard by then (its acknowledgements) and taken neard down. Drawn from a stream
        // of their own.
        let mut g = Rng::new(seed).fork(5);
        let then: Vec<Fault> = faults
            .iter()
            .filter_map(|f| match f.kind {
                FaultKind::GuardStop { host, dur } if dur > 1100 && g.chance(500) => Some(Fault {
                    at: f.at + 1000 + g.below(dur - 1000),
                    kind: FaultKind::GroupStop {
                        host,
                        dur: g.range(200, 2 * shape.ttl_ms),
                    },
                }),
                _ => None,
            })
            .collect();
        faults.extend(then);
        // An operator's `pause` right after a switchover request (0 to 150 ms later, half of
        // them held for 4 to 10 TTLs), and a snapshot restore as the bench's 18a stages it
        // (both nodes stopped by SIGTERM when the snapshot is taken, so that it holds a released
        // record; both running again at a newer term; one of them stopped across the restore
        // and started right after it, half the time with the other one's agent frozen at the
        // restore, as 18b does). Drawn from a stream of their own.
        let mut o = Rng::new(seed).fork(6);
        let ttl = shape.ttl_ms;
        let mut staged: Vec<Fault> = Vec::new();
        for f in &faults {
            match f.kind {
                FaultKind::CtlSwitchover { .. } if o.chance(250) => staged.push(Fault {
                    at: f.at + o.below(150),
                    kind: FaultKind::CtlPause {
                        dur: if o.chance(500) {
                            o.range(4 * ttl, 10 * ttl)
                        } else {
                            o.range(100, 2 * ttl + 1000)
                        },
                    },
                }),
                FaultKind::ConsulRestore { dur } if dur >= 4000 && hosts == 2 && o.chance(500) => {
                    for h in 0..2 {
                        staged.push(Fault {
                            at: f.at.saturating_sub(900 - 100 * h as u64),
                            kind: FaultKind::Sigterm {
                                host: h,
                                down: 1000 + o.below(300),
                            },
                        });
                    }
                    let x = o.below(2) as usize;
                    staged.push(Fault {
                        at: f.at + dur - 300,
                        kind: FaultKind::Sigterm {
                            host: x,
                            down: 400 + o.below(400),
                        },
                    });
                    // Half the time, as in 18b, the other host's agent is frozen at the restore,
                    // so that its leader cannot learn of it.
                    if o.chance(500) {
                        staged.push(Fault {
                            at: f.at + dur - 100,
                            kind: FaultKind::AgentPause {
                                host: 1 - x,
                                dur: 2000 + o.below(2000),
                            },
                        });
                    }
                }
                _ => {}
            }
        }
        faults.extend(staged);
        faults.sort_by_key(|f| f.at);
        let faults = within_claim(faults);
        Schedule { scenario, faults }
    }

    /// When every fault is over (ms).
    pub fn healed_at(&self) -> u64 {
        self.faults.iter().map(Fault::heals_at).max().unwrap_or(0)
    }
}

/// Whether `faults` are all within the claim (what [`within_claim`] would keep).
pub fn is_within_claim(faults: &[Fault]) -> bool {
    within_claim(faults.to_vec()).len() == faults.len()
}

/// Drops the faults that would leave a host with neither kuutamod nor its guard able to act
/// while neard runs (`docs/failover.md`, assumption 5: the guard and kuutamod are not both
/// *stopped*): a guard stopped while kuutamod or its process group is stopped, or kuutamod
/// stopped within a second of its guard's stop (before it could notice and start a new one).
/// A guard *killed* at any time is within the claim: neard dies with it.
fn within_claim(faults: Vec<Fault>) -> Vec<Fault> {
    use FaultKind::*;
    let mut kept: Vec<Fault> = Vec::new();
    for f in faults {
        // Nothing happens to a suspended host's processes until it resumes.
        let suspended = f.host().is_some_and(|h| {
            kept.iter().any(|g| {
                matches!(g.kind, HostSuspend { host, .. } if host == h)
                    && g.at <= f.at
                    && f.at < g.heals_at()
            })
        });
        if suspended {
            continue;
        }
        let span = |g: &Fault| -> Option<(usize, u64, u64, bool)> {
            match g.kind {
                KuutamodStop { host, .. } | GroupStop { host, .. } => {
                    Some((host, g.at, g.heals_at(), true))
                }
                GroupStopGuardKill { host, .. } => Some((host, g.at, g.heals_at(), true)),
                GuardStop { host, .. } => Some((host, g.at, g.heals_at(), false)),
                _ => None,
            }
        };
        // Outside the claim: the guard stopped while kuutamod is stopped, or kuutamod stopped
        // before it could notice a guard that stopped answering (an armed guard is pinged every
        // guard_ack/2 and late after guard_ack: 900 ms at TTL 3 s; the window has 100 ms of
        // room).
        let clash = span(&f).is_some_and(|(h, a, b, kd)| {
            kept.iter().filter_map(span).any(|(h2, a2, b2, kd2)| {
                let (k, g) = if kd { ((a, b), a2) } else { ((a2, b2), a) };
                h == h2 && kd != kd2 && ((k.0 <= g && g < k.1) || (g <= k.0 && k.0 < g + 1000))
            })
        });
        if !clash {
            kept.push(f);
        }
    }
    kept
}

/// A wall-clock error of kuutamod's: around the fence's 500 ms skew (up to 2 s), or beyond the
/// six minutes after which a peer's record counted as gone by its writer's wall clock (up to
/// 15 minutes), either way.
fn wall_error(r: &mut Rng) -> i64 {
    let ms = if r.chance(500) {
        r.range(600, 2000)
    } else {
        r.range(6 * 60_000, 15 * 60_000)
    };
    let ms = i64::try_from(ms).unwrap_or(0);
    if r.chance(500) {
        ms
    } else {
        -ms
    }
}

fn random_kind(r: &mut Rng, hosts: usize, ttl: u64, lag_faults: bool) -> FaultKind {
    use FaultKind::*;
    let host = r.below(hosts as u64) as usize;
    // Durations: mostly within the interesting range around the lease (up to 2 x TTL + 1 s).
    let dur = |r: &mut Rng| r.range(100, 2 * ttl + 1000);
    let down = |r: &mut Rng| r.range(200, 2 * ttl);
    // A quarter of the spells of a neard that cannot sign and of the pauses last 4 to 10 TTLs:
    // longer than the bound of "a ready node means a validator", so that the holder must give
    // the lock up (issue #19 saw these faults last for good).
    let long = |r: &mut Rng| {
        if r.chance(250) {
            r.range(4 * ttl, 10 * ttl)
        } else {
            dur(r)
        }
    };
    match r.below(35) {
        0 | 1 => NeardCrash { host },
        2 => NeardHang { host, dur: dur(r) },
        3 => NeardSyncing { host, dur: long(r) },
        4 | 5 => NeardReload {
            host,
            dur: dur(r),
            mode: match r.below(3) {
                0 => ReloadMode::Slow,
                1 => ReloadMode::Ignore,
                _ => ReloadMode::Fail,
            },
        },
        // A neard that receives blocks late for a while (generated with `Shape::lag_faults`,
        // which every run of the runner sets; off, the draw is a neard crash).
        6 if lag_faults => NeardLag {
            host,
            dur: dur(r),
            lag: r.range(50, 1500),
        },
        6 => NeardCrash { host },
        7 => NeardSlowStop { host, dur: dur(r) },
        8 | 9 => KuutamodKill {
            host,
            down: down(r),
        },
        10 | 11 => KuutamodStop { host, dur: dur(r) },
        // A group stop; a third of them with the guard killed during it (issue #21).
        12 => {
            let dur = dur(r);
            if r.chance(333) {
                GroupStopGuardKill {
                    host,
                    dur,
                    after: r.below(dur),
                }
            } else {
                GroupStop { host, dur }
            }
        }
        13 => GuardStop { host, dur: dur(r) },
        14 => GuardKill { host },
        15 => AgentRestart {
            host,
            down: r.range(100, 2000),
        },
        16 => AgentKill {
            host,
            down: down(r),
        },
        17 => AgentPause { host, dur: dur(r) },
        18 | 19 => AgentPartition { host, dur: dur(r) },
        20 => Election {
            dur: r.range(50, 2000),
        },
        21 => QuorumLoss { dur: dur(r) },
        22 => {
            if r.chance(500) {
                ConsulSlow {
                    dur: dur(r),
                    max: r.range(100, 3000),
                }
            } else {
                ConsulLossy {
                    dur: dur(r),
                    permille: r.range(50, 500),
                }
            }
        }
        23 => KvDelete,
        24 => {
            if r.chance(500) {
                KvOverwrite
            } else {
                KvForeignAcquire { dur: dur(r) }
            }
        }
        25 => {
            if r.chance(300) {
                TombstoneReap
            } else {
                HostSuspend { host, dur: dur(r) }
            }
        }
        26 => HandOver { host },
        27 => Sigterm {
            host,
            down: down(r),
        },
        28 => CtlPause { dur: long(r) },
        29 => CtlSwitchover {
            to: r.chance(500).then(|| r.below(hosts as u64) as usize),
            wait: r.chance(500),
        },
        30 => {
            if r.chance(500) {
                CtlCancel
            } else {
                PriorityChange {
                    host,
                    priority: r.range(0, 3) as u32,
                    down: down(r),
                }
            }
        }
        31 => {
            if r.chance(500) {
                // A long spell lags by more than kuutamod's comparison of heads can resolve
                // (two polls and two heights, docs/failover.md "Liveness"); a short one by
                // anything.
                let dur = long(r);
                let heights = if dur > 2 * ttl + 1000 {
                    r.range(15, 40)
                } else {
                    r.range(3, 30)
                };
                NeardBehind { host, dur, heights }
            } else {
                NeardSyncSpells {
                    host,
                    dur: long(r),
                    spell: r.range(200, ttl),
                }
            }
        }
        32 => NeardFreeze { host, dur: long(r) },
        33 => WallStep {
            host,
            dur: dur(r),
            step: wall_error(r),
        },
        _ => ConsulRestore {
            dur: r.range(200, 2 * ttl + 1000),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            drift_ppm: 10_000,
            max_faults: 8,
            window_ms: 15_000,
            ttl_ms: 3000,
            lag_faults: true,
        }
    }

    #[test]
    fn schedules_print_and_parse_back() {
        for seed in 0..300 {
            let s = Schedule::generate(seed, &shape());
            let text = s.to_string();
            assert_eq!(Schedule::parse(&text), Ok(s), "{text}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        assert_eq!(
            Schedule::generate(42, &shape()),
            Schedule::generate(42, &shape())
        );
        assert_ne!(
            Schedule::generate(42, &shape()),
            Schedule::generate(43, &shape())
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let e = Schedule::parse("scenario hosts=1 hot_swap=1 stall=0 old_neard=0 priority=1 drift_ppm=0 wall_offset_ms=0 boot_ms=1 lag_ms=1\n5 neard-crash host=3\n")
            .expect_err("no host 3");
        assert!(e.contains("host that does not exist"), "{e}");
        let e = Schedule::parse("scenario hosts=1\n").expect_err("lists");
        assert!(e.contains("per-host"), "{e}");
        let e = Schedule::parse("scenario hosts=1 hot_swap=1 stall=0 old_neard=0 priority=1 drift_ppm=0 wall_offset_ms=0 boot_ms=1 lag_ms=1\n5 bogus\n")
            .expect_err("unknown");
        assert!(e.contains("line 2"), "{e}");
    }
}
