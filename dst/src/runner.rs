//! Running many seeds: a shared counter hands seeds to worker threads, each run is
//! independent, and the figures (schedules and events per second, violations by invariant)
//! are summed at the end. Results do not depend on the number of threads: a seed's outcome is
//! a function of the seed and the backend alone. Each seed runs once per backend asked for
//! (Consul, etcd), on the same schedule.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::oracle::Violation;
use crate::schedule::{Schedule, Shape};
use crate::world::{run, Backend, Settings, TTL};

/// The shape of generated schedules used everywhere (CLI, CI, tests).
pub fn shape(drift_ppm: u64) -> Shape {
    Shape {
        drift_ppm,
        max_faults: 6,
        window_ms: 12_000,
        ttl_ms: TTL.as_millis() as u64,
        lag_faults: true,
    }
}

/// One failing seed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The lock store it ran against.
    pub backend: Backend,
    /// What broke.
    pub violation: Violation,
}

/// The figures of a range of seeds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Schedules run.
    pub schedules: u64,
    /// Events processed, over all schedules.
    pub events: u64,
    /// Virtual time simulated, ms.
    pub virtual_ms: u64,
    /// Wall time, seconds.
    pub wall_secs: f64,
    /// Failing seeds, ascending (at most `keep` of them kept).
    pub failures: Vec<Failure>,
    /// Number of failing seeds.
    pub failed: u64,
    /// The lowest failing seed.
    pub first_failure: Option<u64>,
    /// Largest time from the last fault's heal to the first activation after it, ms.
    pub max_recovery_ms: u64,
    /// Runs whose liveness check was skipped because the chain model has no fork choice.
    pub model_stalls: u64,
    /// Runs whose liveness was not judged because every node had priority 0 at the end.
    pub no_candidates: u64,
    /// The longest time a node was ready while our account signed nothing (ms).
    pub max_unsigned_ms: u64,
    /// Runs that ended before their liveness bound, liveness having held for the quiescence
    /// window after the last fault.
    pub quiesced: u64,
    /// Per backend: its runs, events, violations and the time its runs took (summed over the
    /// threads, seconds).
    pub per_backend: Vec<BackendFigures>,
}

/// The figures of one backend's runs.
#[derive(Debug, Clone, Copy)]
pub struct BackendFigures {
    /// The backend.
    pub backend: Backend,
    /// Its runs.
    pub schedules: u64,
    /// Their events.
    pub events: u64,
    /// Its failing runs.
    pub failed: u64,
    /// Time spent in its runs, summed over the threads, seconds.
    pub busy_secs: f64,
}

impl BackendFigures {
    fn new(backend: Backend) -> Self {
        BackendFigures {
            backend,
            schedules: 0,
            events: 0,
            failed: 0,
            busy_secs: 0.0,
        }
    }

    fn add(&mut self, o: &BackendFigures) {
        self.schedules += o.schedules;
        self.events += o.events;
        self.failed += o.failed;
        self.busy_secs += o.busy_secs;
    }
}

/// How a range of seeds is run.
#[derive(Clone, Copy, Debug)]
pub struct How {
    /// Worker threads.
    pub threads: usize,
    /// Clock drift bound of the generated schedules, in parts per million.
    pub drift_ppm: u64,
    /// Stop handing out seeds after the first failure.
    pub stop_at_first: bool,
    /// How many failures the summary keeps.
    pub keep: usize,
    /// Count a liveness violation only where the unmutated daemon passes the seed.
    pub safety_only: bool,
    /// The lock stores each seed runs against, in order.
    pub backends: &'static [Backend],
}

/// Runs seeds `from..to` on `how.threads` threads. Stops handing out seeds after the first
/// failure when `stop_at_first` (the lowest failing seed is still exact: seeds are handed out
/// in order and every seed below a failure is run). With `safety_only`, a liveness violation
/// counts only if the unmutated daemon passes the same seed (a mutation must be found by what
/// it breaks, not by what the daemon misses anyway).
pub fn run_range(from: u64, to: u64, settings: Settings, how: &How) -> Summary {
    let How {
        threads,
        drift_ppm,
        stop_at_first,
        keep,
        safety_only,
        backends,
    } = *how;
    let next = AtomicU64::new(from);
    let stop_below = AtomicU64::new(u64::MAX);
    let total = Mutex::new(Summary::default());
    let started = Instant::now();
    let sh = shape(drift_ppm);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut local = Summary {
                    per_backend: backends.iter().map(|b| BackendFigures::new(*b)).collect(),
                    ..Summary::default()
                };
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= to || seed > stop_below.load(Ordering::Relaxed) {
                        break;
                    }
                    let sched = Schedule::generate(seed, &sh);
                    for (b, &backend) in backends.iter().enumerate() {
                        let settings = Settings {
                            backend,
                            ..settings
                        };
                        let started = Instant::now();
                        let o = run(seed, &sched, settings);
                        local.schedules += 1;
                        local.events += o.events;
                        local.virtual_ms += o.end_ms;
                        local.max_recovery_ms =
                            local.max_recovery_ms.max(o.recovery_ms.unwrap_or(0));
                        local.model_stalls += u64::from(o.model_stall);
                        local.no_candidates += u64::from(o.no_candidate);
                        local.max_unsigned_ms = local.max_unsigned_ms.max(o.max_unsigned_ms);
                        local.quiesced += u64::from(o.quiesced);
                        // A liveness violation counts for a mutation only where the daemon as
                        // it is passes the same schedule.
                        let counts = |v: &Violation| {
                            !safety_only
                                || v.is_safety()
                                || run(
                                    seed,
                                    &sched,
                                    Settings {
                                        mutation: crate::world::Mutation::None,
                                        ..settings
                                    },
                                )
                                .violation
                                .is_none()
                        };
                        let failed = o.violation.filter(counts);
                        let fig = &mut local.per_backend[b];
                        fig.schedules += 1;
                        fig.events += o.events;
                        fig.busy_secs += started.elapsed().as_secs_f64();
                        if let Some(v) = failed {
                            fig.failed += 1;
                            local.failed += 1;
                            local.failures.push(Failure {
                                seed,
                                backend,
                                violation: v,
                            });
                            if stop_at_first {
                                stop_below.fetch_min(seed, Ordering::Relaxed);
                            }
                        }
                    }
                }
                let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                t.schedules += local.schedules;
                t.events += local.events;
                t.virtual_ms += local.virtual_ms;
                t.failed += local.failed;
                t.model_stalls += local.model_stalls;
                t.no_candidates += local.no_candidates;
                t.max_unsigned_ms = t.max_unsigned_ms.max(local.max_unsigned_ms);
                t.quiesced += local.quiesced;
                t.max_recovery_ms = t.max_recovery_ms.max(local.max_recovery_ms);
                t.failures.extend(local.failures);
                if t.per_backend.is_empty() {
                    t.per_backend = local.per_backend;
                } else {
                    for (a, b) in t.per_backend.iter_mut().zip(&local.per_backend) {
                        a.add(b);
                    }
                }
            });
        }
    });
    let mut t = total.into_inner().unwrap_or_else(|p| p.into_inner());
    t.wall_secs = started.elapsed().as_secs_f64();
    t.failures.sort_by_key(|f| (f.seed, f.backend.name()));
    t.first_failure = t.failures.first().map(|f| f.seed);
    t.failures.truncate(keep);
    t
}
