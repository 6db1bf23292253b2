//! `kuutamod-bench`: runs the fault-injection scenarios in both failover modes, prints the
//! table (and `N passed, M failed`), writes JSON, and exits non-zero on any double-signed
//! height or moment with two validators. See docs/fault-injection.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kuutamod_bench::cluster::Backend;
use kuutamod_bench::report;
use kuutamod_bench::scenario::{Scenario, Timing, World, ALL, ETCD_QUICK};
use kuutamod_bench::steady;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Fault-injection scenarios and failover benchmark for kuutamod")]
struct Args {
    /// Runs per scenario and mode.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The CI subset: each scenario once per mode, TTL 3 s, 1 s boot delay, 3 election races,
    /// no steady-state row.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only these scenarios (name or number, e.g. `5`, `7b`, `9-slow-consul`); repeatable.
    #[arg(long)]
    scenario: Vec<String>,
    /// Only these failover modes; repeatable [default: restart and hot-swap].
    #[arg(long)]
    mode: Vec<String>,
    /// Session TTL in ms [default: 3000].
    #[arg(long)]
    ttl_ms: Option<u64>,
    /// neard-sim boot delay in ms [default: 5000, a realistic localnet start; quick: 1000].
    #[arg(long)]
    boot_delay_ms: Option<u64>,
    /// Election-race repetitions per run [default: 20; quick: 3].
    #[arg(long)]
    race_repeats: Option<usize>,
    /// Steady-state window in seconds, per mode (0 skips) [default: 60; quick: 0].
    #[arg(long)]
    steady_secs: Option<u64>,
    /// How long the crash-loop scenario counts neard starts, in seconds [default: 60; quick: 20].
    #[arg(long)]
    crash_window_secs: Option<u64>,
    /// The lock store: consul (servers and a client agent per host) or etcd (three members, one
    /// per host, each node talking to its own).
    #[arg(long, default_value = "consul", value_parser = ["consul", "etcd"])]
    backend: String,
    /// Run every node in the root namespace (skips the partition scenarios 5, 6 and 13d).
    #[arg(long)]
    no_netns: bool,
    /// Where runs live (runs with a problem are kept) [default: a new temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kuutamod_bench::procs::cleanup_on_signal()?;
    let ttl = Duration::from_millis(args.ttl_ms.unwrap_or(3000));
    let timing = Timing {
        ttl,
        // The largest stop grace the daemon accepts is 0.4 x TTL; a sixth leaves margin.
        stop_grace: ttl / 6,
        syncing_grace: ttl * 2 / 3,
        boot_delay_ms: args
            .boot_delay_ms
            .unwrap_or(if args.quick { 1000 } else { 5000 }),
        race_repeats: args.race_repeats.unwrap_or(if args.quick { 3 } else { 20 }),
        crash_window: Duration::from_secs(args.crash_window_secs.unwrap_or(if args.quick {
            20
        } else {
            60
        })),
    };
    let started = std::time::Instant::now();
    let runs = if args.quick { 1 } else { args.runs };
    let steady_secs = args.steady_secs.unwrap_or(if args.quick { 0 } else { 60 });
    let modes = if args.mode.is_empty() {
        vec!["restart".to_string(), "hot-swap".to_string()]
    } else {
        args.mode.clone()
    };
    let backend = match args.backend.as_str() {
        "etcd" => Backend::Etcd { bin: None },
        _ => Backend::Consul,
    };
    let etcd = backend != Backend::Consul;
    let scenarios: Vec<Scenario> = if args.scenario.is_empty() && etcd && args.quick {
        ETCD_QUICK.to_vec()
    } else if args.scenario.is_empty() {
        ALL.iter().copied().filter(|s| s.runs_on(etcd)).collect()
    } else {
        args.scenario
            .iter()
            .map(|s| Scenario::parse(s).with_context(|| format!("unknown scenario {s:?}")))
            .collect::<anyhow::Result<_>>()?
    };
    if let Some(s) = scenarios.iter().find(|s| !s.runs_on(etcd)) {
        anyhow::bail!("{} does not run on {}", s.name(), args.backend);
    }
    let scenarios: Vec<Scenario> = scenarios
        .into_iter()
        .filter(|s| {
            let partition = s.needs_netns();
            if partition && args.no_netns {
                eprintln!("skipping {} (--no-netns)", s.name());
            }
            !(partition && args.no_netns)
        })
        .collect();
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("kuutamod-bench")
                .tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    eprintln!(
        "kuutamod-bench ({}): {runs} run(s) x {} scenario(s) x modes {modes:?}; TTL {ttl:?}, stop grace {:?}, syncing grace {:?}, neard boot {} ms, a chain of ours and three virtual validators, neard's timers / {}; in {}",
        args.backend,
        scenarios.len(),
        timing.stop_grace,
        timing.syncing_grace,
        timing.boot_delay_ms,
        kuutamod_bench::cluster::SPEED_UP,
        dir.display()
    );
    let mut world = World::new(&dir, !args.no_netns, backend.clone())?;
    let mut results = Vec::new();
    for scenario in &scenarios {
        for mode in &modes {
            for _ in 0..runs {
                for r in world.run(*scenario, mode, &timing) {
                    eprintln!(
                        "{:<22} {:<8} takeover {:>6} ms moved {} missed blocks {}/{} chunks {}/{} conflicting {} slots-twice {} skips-resigned {} heights-twice {} two-validators {} recovered {}{}{}{}",
                        r.scenario,
                        r.mode,
                        r.takeover_ms.map_or("-".into(), |t| t.to_string()),
                        r.moved,
                        r.missed.blocks_missed,
                        r.missed.blocks_expected,
                        r.missed.chunks_missed,
                        r.missed.chunks_expected,
                        r.conflicting,
                        r.two_node_slots,
                        r.resigned_skips,
                        r.double_signed.len(),
                        r.two_validators_seen,
                        r.recovered,
                        r.failures.iter().map(|f| format!(" FAILED {f}")).collect::<String>(),
                        r.error.as_ref().map_or(String::new(), |e| format!(" ERROR {e}")),
                        r.kept.as_ref().map_or(String::new(), |k| format!(" (kept {})", k.display())),
                    );
                    results.push(r);
                }
            }
        }
    }
    let rows = report::rows(&results);
    let mut steady_rows = Vec::new();
    if steady_secs > 0 {
        for mode in &modes {
            match steady::measure(&mut world, Duration::from_secs(steady_secs), mode) {
                Ok(nodes) => steady_rows.push((mode.clone(), nodes)),
                Err(e) => eprintln!("steady state ({mode}) failed: {e:#}"),
            }
        }
    }
    println!("{}", report::table(&rows));
    if !steady_rows.is_empty() {
        println!("Steady state, default timing (TTL 30 s), {steady_secs} s window:\n");
        println!("| mode | node | Consul req/min (metric) | by op | req/min (proxy) | RSS max kB | CPU % of a core |\n|---|---|---|---|---|---|---|");
        for (mode, nodes) in &steady_rows {
            for n in nodes {
                println!(
                    "| {mode} | {} | {:.1} | {} | {:.1} | {} | {:.2} |",
                    n.role,
                    n.consul_requests_per_min,
                    n.per_op_per_min
                        .iter()
                        .map(|(op, v)| format!("{op} {v:.1}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    n.proxy_requests_per_min,
                    n.rss_max_kb,
                    n.cpu_percent
                );
            }
        }
        println!();
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "timing": {
                "ttl_ms": timing.ttl.as_millis() as u64,
                "stop_grace_ms": timing.stop_grace.as_millis() as u64,
                "syncing_grace_ms": timing.syncing_grace.as_millis() as u64,
                "boot_delay_ms": timing.boot_delay_ms,
                "speed_up": kuutamod_bench::cluster::SPEED_UP,
                "race_repeats": timing.race_repeats,
                "crash_window_s": timing.crash_window.as_secs(),
            },
            "rows": rows,
            "steady": steady_rows.iter().map(|(m, n)| serde_json::json!({"mode": m, "nodes": n})).collect::<Vec<_>>(),
            "runs": results,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!(
        "bench took {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    println!("{} passed, {failed} failed", rows.len() - failed);
    // The namespaces and the bridge go with the world: before `exit`, which runs no drops.
    drop(world);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
