//! The supervisor: kuutamod's [`conductor`] (every decision around the [`machine`]) run on
//! tokio.
//!
//! One loop: wait for the next input (an answer of a call in flight, a note of the guard, a
//! signal, or the conductor's next deadline), feed it to the conductor with the clocks' time,
//! and let the daemon's host ([`io`]) carry out what the conductor asks. Everything that waits
//! on the network or the disk runs in a task of its own, so the loop always gets to a deadline
//! in time. This file and [`io`] decide nothing: the deterministic simulation (`dst/`) runs the
//! same conductor on its simulated world.
//!
//! [`machine`]: crate::machine

pub mod conductor;
pub mod hook;
mod io;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::exporter::Published;
use crate::guard::Exe;
use crate::machine::Config;
use crate::metrics::Metrics;
use crate::neard::rpc::NeardRpc;
use crate::settings::{FailoverMode, Settings};
use crate::timing::STATUS_TIMEOUT;
use conductor::{Conductor, Input, Now};
use io::TokioHost;

/// The loop wakes at least this often, to notice a host suspend (a jump of `CLOCK_BOOTTIME`
/// past `CLOCK_MONOTONIC`) even when no deadline is near.
pub const TICK: Duration = Duration::from_millis(250);

/// How long a stopping kuutamod waits for its last status record and lock memory to be
/// written.
pub const RECORD_FLUSH: Duration = Duration::from_secs(1);

/// The clocks now.
fn now() -> Now {
    let mono = clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        })
        .unwrap_or(0);
    Now {
        boot: clock::now(),
        mono,
        wall_ms: clock::wall_ms(),
    }
}

/// Runs kuutamod until `shutdown` resolves and the machine has fenced, released and stopped.
pub async fn run(
    settings: Settings,
    metrics: Metrics,
    published: watch::Sender<Published>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // The guard's parent-death signal is tied to the thread that starts it: it must be the one
    // thread that lives as long as kuutamod (main.rs runs everything on the main thread).
    if nix::unistd::gettid() != nix::unistd::getpid() {
        anyhow::bail!(
            "the supervisor must run on kuutamod's main thread (the guard's parent-death signal is tied to the thread that starts it)"
        );
    }
    let store = settings.lock_store.client()?;
    let rpc = NeardRpc::new(settings.neard_config.rpc_addr()?, STATUS_TIMEOUT)?;
    let exe = Exe::pin().map_err(|e| anyhow::anyhow!("cannot open kuutamod's own binary: {e}"))?;
    let hooks = settings.on_role_change.clone().map(|cmd| {
        let (hook_tx, hook_rx) = mpsc::unbounded_channel();
        tokio::spawn(hook::run_hooks(
            cmd,
            settings.node_id.clone(),
            settings.account_id.clone(),
            hook_rx,
        ));
        hook_tx
    });
    metrics.priority.set(i64::from(settings.priority));
    let memory_path = crate::memory::path(&settings.state_dir, &settings.account_id);
    let remembered = match crate::memory::load(&memory_path) {
        Ok(m) => m,
        Err(e) => {
            // As a node that never ran: it learns the lock anew from Consul.
            log::error!("{e}");
            None
        }
    };
    if let Some(m) = remembered {
        log::info!(
            "remembered the lock at term {}, heartbeat {}, Consul index {} ({})",
            m.term,
            m.seq,
            m.index,
            memory_path.display()
        );
    }
    let config = Config {
        node_id: settings.node_id.clone(),
        hostname: hostname(),
        account: settings.account_id.clone(),
        hot_swap: settings.failover_mode == FailoverMode::HotSwap,
        timing: settings.timing,
        syncing_grace: settings.syncing_grace,
        backoff: crate::backoff::BackoffConfig::DEFAULT,
        priority: settings.priority,
        doppelganger_heights: settings.doppelganger_heights,
        block_delays: settings.neard_config.block_delays()?,
        remembered,
        mutations: crate::machine::Mutations::default(),
    };
    let mut conductor = Conductor::new(
        conductor::Settings {
            machine: config,
            validator_key: settings.validator_key.public_key.clone(),
            instance: crate::records::new_instance(),
            check_node_id: true,
        },
        now(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    let mut host = TokioHost {
        home: settings.home(),
        settings,
        store,
        rpc,
        metrics,
        tx,
        exe,
        guard: None,
        notes_tx,
        neards: HashMap::new(),
        hooks,
        memory_path,
    };
    let mut handover =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    tokio::pin!(shutdown);
    let mut shutdown_seen = false;
    conductor.start(now(), &mut host);
    show(&conductor, &host.metrics, &published);
    while !conductor.exited() {
        let sleep = conductor.next_deadline().map_or(TICK, |d| {
            d.saturating_duration_since(clock::now()).min(TICK)
        });
        let input = tokio::select! {
            biased;
            _ = &mut shutdown, if !shutdown_seen => {
                shutdown_seen = true;
                Input::Shutdown
            }
            Some(note) = notes.recv() => Input::Guard(note),
            Some(input) = rx.recv() => input,
            Some(()) = handover.recv() => Input::HandOver,
            _ = tokio::time::sleep(sleep) => Input::Tick,
        };
        conductor.feed(input, now(), &mut host);
        show(&conductor, &host.metrics, &published);
    }
    if let Some(why) = conductor.refused() {
        anyhow::bail!("{why}");
    }
    // The last record (`Shutdown`) and the lock memory get a moment to be written, so
    // `kuutamoctl status` shows a stopped node as stopped.
    let flush = tokio::time::sleep(RECORD_FLUSH);
    tokio::pin!(flush);
    while !conductor.flushed() {
        let sleep = conductor.next_deadline().map_or(TICK, |d| {
            d.saturating_duration_since(clock::now()).min(TICK)
        });
        let input = tokio::select! {
            _ = &mut flush => {
                log::warn!("this node's last status record was not published within {RECORD_FLUSH:?}");
                break;
            }
            Some(input) = rx.recv() => input,
            _ = tokio::time::sleep(sleep) => Input::Tick,
        };
        conductor.feed(input, now(), &mut host);
    }
    Ok(())
}

/// The gauges and the exporter's view of what the conductor knows now.
fn show(conductor: &Conductor, metrics: &Metrics, published: &watch::Sender<Published>) {
    let m = conductor.machine();
    let state = m.state();
    metrics.set_state(state);
    let may_take_over = m.may_take_over();
    metrics.may_take_over.set(i64::from(may_take_over));
    metrics.paused.set(i64::from(m.paused()));
    metrics.guard_up.set(i64::from(m.guard_ok()));
    metrics.lock_held.set(i64::from(m.holds_lock()));
    metrics.not_signing.set(m.not_signing_for().as_secs_f64());
    let trusted = m.wall_clock_trusted();
    if i64::from(trusted) != metrics.wall_clock_trusted.get() {
        if trusted {
            log::info!("this host's wall clock agrees with the chain's block timestamps again");
        } else {
            log::warn!(
                "neard shows a block stamped later than this host's wall clock: the clock is behind the chain's (check NTP); \
                 the height fence ignores block timestamps for {:?}",
                crate::machine::WALL_DISTRUST
            );
        }
        metrics.wall_clock_trusted.set(i64::from(trusted));
    }
    published.send_replace(Published {
        state,
        neard_pid: conductor.neard(),
        may_take_over,
    });
}

/// The host name, for the leader key's value.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
