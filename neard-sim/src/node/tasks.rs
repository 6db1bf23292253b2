//! The node's tasks once it runs: the control file's poller, boot (listeners, the link to the
//! chain), the network listener, the consensus loop that signs into the ledger, and SIGHUP
//! reloads of the config and the validator key.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{abort, log, read_largest_target, write_largest_target, Shared};
use crate::chain;
use crate::client::Effects;
use crate::config::Config;
use crate::control::{self, Control};
use crate::keys::{self, Key, Kind};
use crate::wire::{self, Conn, ToChain, ToNode};

/// Longest the client loop sleeps when nothing is due (it also wakes on every message).
const MAX_IDLE: Duration = Duration::from_millis(50);

/// Watches the control file and applies changes (abort at once).
pub(super) async fn poll_control(shared: Arc<Shared>) {
    let path = shared.settings.control.clone();
    let mut seen: Option<control::FileStamp> = None;
    let mut tick = tokio::time::interval(control::POLL_INTERVAL);
    loop {
        tick.tick().await;
        let meta = control::stamp(&path);
        if seen.as_ref() == Some(&meta) {
            continue;
        }
        seen = Some(meta);
        let c = match Control::read(&path) {
            Ok(c) => c,
            Err(e) => {
                log("WARN", "neard_sim", &format!("ignoring {e}"));
                continue;
            }
        };
        if c.abort {
            abort("abort requested by the control file");
        }
        if *shared.control.borrow() != c {
            log("INFO", "neard_sim", &format!("control knobs now {c:?}"));
            shared.control.send_replace(c);
        }
    }
}

/// After the boot delay, binds the RPC and network listeners, links up with the chain and
/// starts serving.
pub(super) async fn boot(shared: Arc<Shared>) {
    tokio::time::sleep(shared.settings.boot_delay).await;
    if shared.state().stopping {
        return;
    }
    let network = bind(shared.network_addr, "network.addr").await;
    let rpc = match shared.rpc_addr {
        Some(a) => Some(bind(a, "rpc.addr").await),
        None => None,
    };
    shared.state().booted_ms = Some(chain::now_ms());
    let conn = match (&shared.embedded, &shared.settings.chain) {
        (Some(engine), _) => {
            let conn = engine.connect();
            let _ = conn.to_chain.send(ToChain::Hello {
                node: shared.settings.node_id.clone(),
            });
            conn
        }
        (None, Some(path)) => wire::connect_socket(path.clone(), shared.settings.node_id.clone()),
        (None, None) => abort("neither a chain process nor a private chain"),
    };
    tokio::spawn(client_loop(shared.clone(), conn));
    tokio::spawn(serve_network(shared.clone(), network));
    if let Some(listener) = rpc {
        log(
            "INFO",
            "network",
            &format!(
                "Starting http server at {}",
                shared.rpc_addr.map_or(String::new(), |a| a.to_string())
            ),
        );
        tokio::spawn(crate::rpc::serve(shared.clone(), listener));
    }
}

async fn bind(addr: SocketAddr, what: &str) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => abort(&format!("failed to bind {what} {addr}: {e}")),
    }
}

/// Accepts peer connections and drops them (enough for port checks); stops accepting while
/// frozen, and for good once RPC goes down at shutdown.
async fn serve_network(shared: Arc<Shared>, listener: TcpListener) {
    let mut down = shared.rpc_down.subscribe();
    loop {
        shared.wait_unfrozen().await;
        tokio::select! {
            r = listener.accept() => drop(r),
            _ = down.wait_for(|d| *d) => return,
        }
    }
}

/// The node's consensus loop: receives from the chain (late by `lag_ms`, not at all while
/// `network_offline` or `stall`), runs the doomslug and block production steps at their
/// periods, appends what it signs to the ledger and sends it (unless offline).
async fn client_loop(shared: Arc<Shared>, conn: Conn) {
    let Conn {
        to_chain,
        mut from_chain,
    } = conn;
    let mut queue: VecDeque<(u64, ToNode)> = VecDeque::new();
    let mut next_ds = Instant::now();
    let mut next_bp = Instant::now();
    let mut was_offline = false;
    let mut stored_target = read_largest_target(&shared.home);
    loop {
        shared.wait_unfrozen().await;
        let c = shared.control.borrow().clone();
        let now_ms = chain::now_ms();
        if c.network_offline && !was_offline {
            log("INFO", "network", "cut off the chain (network_offline)");
            queue.clear();
        }
        if !c.network_offline && was_offline {
            log("INFO", "network", "back on the chain");
            let _ = to_chain.send(ToChain::Hello {
                node: shared.settings.node_id.clone(),
            });
        }
        was_offline = c.network_offline;
        while let Ok(m) = from_chain.try_recv() {
            if !c.network_offline && !c.stall {
                queue.push_back((now_ms, m));
            }
        }
        let (effects, target) = {
            let mut st = shared.state();
            let now = Instant::now();
            let key = shared.signing_key(&st, now_ms);
            let mut fx = Effects::default();
            while queue
                .front()
                .is_some_and(|(at, _)| at.saturating_add(c.lag_ms) <= now_ms)
            {
                if let Some((_, m)) = queue.pop_front() {
                    let e = st.client.on_message(m, now, now_ms, key.as_ref());
                    fx.send.extend(e.send);
                    fx.ledger.extend(e.ledger);
                }
            }
            if now >= next_ds {
                let e = st.client.doomslug_step(now, now_ms, key.as_ref());
                fx.send.extend(e.send);
                fx.ledger.extend(e.ledger);
                next_ds = now + st.config.timers.doomslug_step_period;
            }
            if now >= next_bp {
                let e = st.client.production_step(now, now_ms, key.as_ref());
                fx.send.extend(e.send);
                fx.ledger.extend(e.ledger);
                next_bp = now + st.config.timers.block_production_tracking_delay;
            }
            if let Some(w) = st.ledger.as_mut() {
                for entry in &fx.ledger {
                    if let Err(e) = w.append(entry) {
                        log(
                            "ERROR",
                            "neard_sim",
                            &format!("ledger {}: {e}", w.path().display()),
                        );
                    }
                }
            }
            (fx, st.client.largest_target_height())
        };
        // neard saves the largest target height before sending the approvals.
        if target != stored_target {
            if let Err(e) = write_largest_target(&shared.home, target) {
                log(
                    "WARN",
                    "neard_sim",
                    &format!("cannot store the largest target height: {e}"),
                );
            }
            stored_target = target;
        }
        if !c.network_offline {
            for m in effects.send {
                let _ = to_chain.send(m);
            }
        }
        let now = Instant::now();
        let mut wake = next_ds.min(next_bp).min(now + MAX_IDLE);
        if let Some((at, _)) = queue.front() {
            let due_ms = at.saturating_add(c.lag_ms).saturating_sub(chain::now_ms());
            wake = wake.min(now + Duration::from_millis(due_ms));
        }
        let mut control = shared.control.subscribe();
        tokio::select! {
            m = from_chain.recv() => {
                if let Some(m) = m {
                    let c = shared.control.borrow();
                    if !c.network_offline && !c.stall {
                        queue.push_back((chain::now_ms(), m));
                    }
                } else {
                    tokio::time::sleep_until(wake.into()).await;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = control.changed() => {}
        }
    }
}

/// Applies SIGHUPs one after the other, each after the reload delay, like neard >= 2.3.
pub(super) async fn reload_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(shared.settings.reload_delay).await;
        if shared.state().stopping {
            continue;
        }
        reload(&shared);
    }
}

fn reload(shared: &Arc<Shared>) {
    let not_valid = |e: &dyn std::fmt::Display| {
        log(
            "WARN",
            "neard",
            &format!("Dynamically updatable configs are not valid. Please fix this ASAP otherwise the node will be unable to restart: {e}"),
        );
        shared.state().config_correct = false;
    };
    let config = match Config::load(&shared.home) {
        Ok(c) => c,
        Err(e) => return not_valid(&e),
    };
    let path = shared.home.join(&config.validator_key_file);
    let key = match keys::read_optional(&path, Kind::Validator) {
        Ok(k) => k,
        Err(e) => return not_valid(&e),
    };
    match &key {
        Some(_) => log(
            "INFO",
            "neard",
            &format!("Hot loading validator key {}.", path.display()),
        ),
        None => log(
            "INFO",
            "neard",
            &format!("No validator key {}.", path.display()),
        ),
    }
    let generation = {
        let mut st = shared.state();
        st.config_correct = true;
        st.reloads_total += 1;
        st.reload_timestamp_ms = chain::now_ms();
        st.key_generation += 1;
        st.key_generation
    };
    let drop_delay = shared.settings.key_drop_delay;
    if key.is_none() && !drop_delay.is_zero() {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(drop_delay).await;
            set_key(&shared, None, generation);
        });
    } else {
        set_key(shared, key, generation);
    }
}

/// Installs `key` unless a later reload has happened since (its generation moved on).
fn set_key(shared: &Shared, key: Option<Key>, generation: u64) {
    let mut st = shared.state();
    if st.key_generation != generation {
        return;
    }
    if st.key != key {
        let show = |k: &Option<Key>| {
            k.as_ref().map_or("None".to_owned(), |k| {
                format!("{}:{}", k.account_id, k.public_key)
            })
        };
        log(
            "INFO",
            "config",
            &format!(
                "Updated config field 'validator_signer' from {} to {}",
                show(&st.key),
                show(&key)
            ),
        );
        log("INFO", "client", "Updated validator key");
        st.key = key;
    }
}
