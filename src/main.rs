//! The kuutamod binary: parse settings, set up logging, serve metrics, run the supervisor
//! until SIGTERM or SIGINT; or, with `--check` / `--check-local`, check everything kuutamod
//! would need and exit.

use std::io::Write;

use kuutamod::exporter::{self, Published};
use kuutamod::machine::State;
use kuutamod::metrics::Metrics;
use kuutamod::settings::{parse_args, Args, Settings};

fn main() {
    // The guard first, before anything could start a thread: it starts neard from this thread,
    // and neard's parent-death signal fires when it exits.
    if std::env::var_os(kuutamod::guard::GUARD_ENV).is_some() {
        kuutamod::guard::run_guard();
    }
    // One thread on purpose: the guard is started from this (main) thread, and Linux's
    // parent-death signal fires when the starting *thread* exits, so it fires exactly when
    // kuutamod dies (and the guard's death kills neard).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kuutamod: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(kuutamod_main());
}

async fn kuutamod_main() {
    // A parent may have blocked signals, and the mask survives exec: kuutamod must see
    // SIGTERM, SIGINT and SIGUSR1 (and the guard and neard, which inherit the mask, SIGTERM
    // and SIGHUP).
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => fail(&e),
    };
    if args.check || args.check_local {
        let scope = if args.check {
            kuutamod::check::Scope::All
        } else {
            kuutamod::check::Scope::Local
        };
        let report = kuutamod::check::run(&args, scope).await;
        print!("{report}");
        std::process::exit(if report.passed() { 0 } else { 1 });
    }
    let node_id = args.node_id.clone();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            writeln!(
                buf,
                "{} {:5} [{}] {}",
                buf.timestamp_millis(),
                record.level(),
                node_id,
                record.args()
            )
        })
        .init();
    if let Err(e) = run(args).await {
        fail(&format!("{e:#}"));
    }
}

/// Prints the error once, as one line (not as a log line and again), and exits 1: the status
/// of every settings error and failure.
fn fail(e: &str) -> ! {
    eprintln!("kuutamod: {e}");
    std::process::exit(1);
}

async fn run(args: Args) -> anyhow::Result<()> {
    let settings = Settings::from_args(args).map_err(anyhow::Error::msg)?;
    let listener = exporter::bind(settings.exporter_address)
        .await
        .map_err(anyhow::Error::msg)?;
    let metrics = Metrics::new();
    let (published, watch) = tokio::sync::watch::channel(Published {
        state: State::Startup,
        neard_pid: None,
        may_take_over: false,
    });
    tokio::spawn(exporter::serve(listener, metrics.clone(), watch));
    log::info!(
        "kuutamod {} starting: account {}, lock store {}, neard home {}, TTL {}, step-down {} after the last acknowledged heartbeat",
        env!("CARGO_PKG_VERSION"),
        settings.account_id,
        settings.lock_store.location(),
        settings.neard_home.display(),
        kuutamod::duration::display(settings.timing.ttl),
        kuutamod::duration::display(settings.timing.step_down_after),
    );
    kuutamod::supervisor::run(settings, metrics, published, shutdown_signal()?).await?;
    log::info!("stopped");
    Ok(())
}

fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM received"),
            _ = int.recv() => log::info!("SIGINT received"),
        }
    })
}
