//! `kuutamod-dst`: runs seeded fault schedules against kuutamod's decision code, and replays
//! and shrinks failing seeds. See `docs/dst.md`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

use kuutamod_dst::runner::{run_range, shape, How, Summary};
use kuutamod_dst::schedule::Schedule;
use kuutamod_dst::shrink::shrink;
use kuutamod_dst::world::{run, Backend, Mutation, Settings};

/// Deterministic simulation of kuutamod's failover protocol.
#[derive(Debug, Parser)]
#[command(name = "kuutamod-dst")]
struct Args {
    /// Seed range to run, `A..B` (B excluded).
    #[arg(long, value_parser = parse_range)]
    seeds: Option<(u64, u64)>,
    /// Replay one seed (its generated schedule, or --schedule), printing the outcome.
    #[arg(long)]
    replay: Option<u64>,
    /// With --replay: run this schedule file instead of the seed's own schedule.
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// With --replay: shrink a failing schedule and print the minimal one.
    #[arg(long)]
    shrink: bool,
    /// With --replay: print the trace of the run.
    #[arg(long)]
    trace: bool,
    /// Switch a fix off (`none`, or one of the names `--list-mutations` prints).
    #[arg(long, default_value = "none")]
    mutation: String,
    /// For each mutation (or the one given with --mutation): run seeds from 0 until one
    /// breaks a safety invariant, at most this many, and print the seed count (exit status 1
    /// if one is not found).
    #[arg(long)]
    find: Option<u64>,
    /// Print the mutation names.
    #[arg(long)]
    list_mutations: bool,
    /// Worker threads (default: the available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Largest clock rate error of a host, ppm (default 1 %).
    #[arg(long, default_value_t = 10_000)]
    drift_ppm: u64,
    /// Target time between blocks, ms.
    #[arg(long, default_value_t = 200)]
    block_ms: u64,
    /// Capacity of the guard's stdin pipe, in orders (default: 64 KiB, 1600 orders, which
    /// do not fill within a schedule; a few dozen fill during a guard stop).
    #[arg(long, default_value_t = kuutamod_dst::world::PIPE_ORDERS)]
    guard_pipe: usize,
    /// The lock store modelled: `consul`, `etcd`, or `both` (each seed once per backend).
    #[arg(long, default_value = "both")]
    backend: String,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("expected A..B, got {s:?}"))?;
    let a: u64 = a.parse().map_err(|_| format!("bad start {a:?}"))?;
    let b: u64 = b.parse().map_err(|_| format!("bad end {b:?}"))?;
    if b <= a {
        return Err(format!("empty range {s}"));
    }
    Ok((a, b))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list_mutations {
        for (name, m) in Mutation::ALL {
            let note = if m.needs_feature() {
                " (needs --features mutations)"
            } else {
                ""
            };
            println!("{name}{note}");
        }
        return Ok(());
    }
    let mutation = Mutation::parse(&args.mutation)
        .with_context(|| format!("unknown mutation {:?} (--list-mutations)", args.mutation))?;
    if mutation.needs_feature() && !cfg!(feature = "mutations") {
        bail!(
            "mutation {} switches a fix off inside kuutamod's machine: build with --features mutations (scripts/dst does)",
            mutation.name()
        );
    }
    let backends = Backend::parse_list(&args.backend)
        .with_context(|| format!("unknown backend {:?}: consul, etcd or both", args.backend))?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let settings = Settings {
        mutation,
        block_ms: args.block_ms,
        guard_pipe: args.guard_pipe,
        ..Settings::default()
    };
    if let Some(max) = args.find {
        return find(&args, max, threads, settings, backends);
    }
    if let Some(seed) = args.replay {
        return replay(&args, seed, settings, backends);
    }
    let Some((from, to)) = args.seeds else {
        bail!("give --seeds A..B, --replay SEED or --find N");
    };
    let how = How {
        threads,
        drift_ppm: args.drift_ppm,
        stop_at_first: false,
        keep: 20,
        safety_only: false,
        backends,
    };
    let s = run_range(from, to, settings, &how);
    print_summary(&s, from, to, mutation, threads);
    for f in &s.failures {
        println!("seed {} ({}): {}", f.seed, f.backend, f.violation);
        println!(
            "  replay: kuutamod-dst --replay {}{} --backend {} --shrink",
            f.seed,
            mutation_flag(mutation),
            f.backend
        );
    }
    if s.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn mutation_flag(m: Mutation) -> String {
    if m == Mutation::None {
        String::new()
    } else {
        format!(" --mutation {}", m.name())
    }
}

fn print_summary(s: &Summary, from: u64, to: u64, m: Mutation, threads: usize) {
    let secs = s.wall_secs.max(1e-9);
    println!(
        "seeds {from}..{to} (mutation {}, {threads} threads): {} schedules in {:.1} s",
        m.name(),
        s.schedules,
        s.wall_secs
    );
    println!(
        "schedules/s {:.0}  events/s {:.0}  virtual time {:.0} s ({:.0}x real time)",
        s.schedules as f64 / secs,
        s.events as f64 / secs,
        s.virtual_ms as f64 / 1000.0,
        s.virtual_ms as f64 / 1000.0 / secs
    );
    println!(
        "largest recovery after the last fault: {} ms",
        s.max_recovery_ms
    );
    println!(
        "longest time a node was ready while nothing was signed: {} ms",
        s.max_unsigned_ms
    );
    println!(
        "ended early, live for the quiescence window: {}",
        s.quiesced
    );
    println!(
        "liveness not checked (chain model without fork choice): {}",
        s.model_stalls
    );
    println!(
        "liveness not checked (every node given priority 0): {}",
        s.no_candidates
    );
    println!("violations: {}", s.failed);
    for b in &s.per_backend {
        // Each backend's share of the threads' time.
        let secs = (b.busy_secs / threads.max(1) as f64).max(1e-9);
        println!(
            "  {}: {} schedules, schedules/s {:.0}, events/s {:.0}, violations {}",
            b.backend,
            b.schedules,
            b.schedules as f64 / secs,
            b.events as f64 / secs,
            b.failed
        );
    }
}

fn replay(args: &Args, seed: u64, settings: Settings, backends: &[Backend]) -> anyhow::Result<()> {
    let sched = match &args.schedule {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            Schedule::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => Schedule::generate(seed, &shape(args.drift_ppm)),
    };
    print!("{sched}");
    let mut failed = false;
    for &backend in backends {
        let settings = Settings {
            trace: args.trace,
            backend,
            ..settings
        };
        failed |= replay_one(args, seed, &sched, settings)?;
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Replays `sched` against one backend; returns whether it broke an invariant.
fn replay_one(
    args: &Args,
    seed: u64,
    sched: &Schedule,
    settings: Settings,
) -> anyhow::Result<bool> {
    let backend = settings.backend;
    let o = run(seed, sched, settings);
    for line in &o.trace {
        println!("{line}");
    }
    println!(
        "seed {seed} ({backend}): {} events, ended at {} ms, trace hash {:016x}",
        o.events, o.end_ms, o.hash
    );
    let Some(v) = o.violation else {
        println!("no violation");
        return Ok(false);
    };
    println!("VIOLATION ({backend}): {v}");
    if args.shrink {
        let (small, sv, runs) = shrink(seed, sched, settings, &v);
        let file = match backend {
            Backend::Consul => format!("dst-{seed}.schedule"),
            Backend::Etcd => format!("dst-{seed}-{backend}.schedule"),
        };
        std::fs::write(&file, small.to_string()).with_context(|| format!("cannot write {file}"))?;
        println!("shrunk in {runs} runs to:");
        print!("{small}");
        println!("VIOLATION ({backend}): {sv}");
        println!(
            "replay: kuutamod-dst --replay {seed}{} --backend {backend} --schedule {file} --trace",
            mutation_flag(settings.mutation)
        );
    }
    Ok(true)
}

fn find(
    args: &Args,
    max: u64,
    threads: usize,
    settings: Settings,
    backends: &'static [Backend],
) -> anyhow::Result<()> {
    let which: Vec<Mutation> = if settings.mutation == Mutation::None {
        Mutation::ALL
            .iter()
            .map(|(_, m)| *m)
            .filter(|m| cfg!(feature = "mutations") || !m.needs_feature())
            .collect()
    } else {
        vec![settings.mutation]
    };
    println!("| mutation | backend | seeds until found | first failing seed | violation |");
    println!("|---|---|---|---|---|");
    let mut missing = 0;
    for (m, backend) in which
        .iter()
        .flat_map(|m| backends.iter().map(move |b| (*m, *b)))
    {
        let how = How {
            threads,
            drift_ppm: args.drift_ppm,
            stop_at_first: true,
            keep: 1,
            safety_only: true,
            backends: match backend {
                Backend::Consul => &[Backend::Consul],
                Backend::Etcd => &[Backend::Etcd],
            },
        };
        let s = run_range(
            0,
            max,
            Settings {
                mutation: m,
                ..settings
            },
            &how,
        );
        match s.failures.first() {
            Some(f) => println!(
                "| {} | {backend} | {} | {} | {} |",
                m.name(),
                f.seed + 1,
                f.seed,
                f.violation.name()
            ),
            None => {
                missing += 1;
                println!("| {} | {backend} | not found in {max} | - | - |", m.name());
            }
        }
    }
    if missing > 0 {
        std::process::exit(1);
    }
    Ok(())
}
