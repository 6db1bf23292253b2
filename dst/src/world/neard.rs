//! neard's processes: start, death, SIGHUP reloads, the consensus client's steps and messages
//! (with the host's network lag), what it signs (recorded and checked for conflicts), and the
//! chain process they talk to.

use std::time::Duration;

use kuutamod::neard::Role;
use neard_sim::client::{Client, Effects};
use neard_sim::keys::Key;
use neard_sim::wire::{ToChain, ToNode};

use super::events::Ev;
use super::{fnv_mix, World, ACCOUNT, OUR_KEY};
use crate::clock::{MS, S};
use crate::oracle::Violation;
use crate::schedule::ReloadMode;

pub(super) struct Neard {
    pub(super) pid: u32,
    /// The generation of the guard that started it (its parent: it dies with it).
    pub(super) parent: u64,
    pub(super) alive: bool,
    pub(super) client: Client,
    pub(super) key: Option<Key>,
    pub(super) rpc_up: bool,
    pub(super) joined: bool,
    pub(super) rejoin: bool,
    pub(super) stopping: bool,
    pub(super) reloads: u64,
    pub(super) key_gen: u64,
    pub(super) pending_hups: u32,
    pub(super) last_signed: Option<u64>,
}

impl World {
    pub(super) fn neard_mut(&mut self, h: usize, pid: u32) -> Option<&mut Neard> {
        self.hosts[h].neard.as_mut().filter(|n| n.pid == pid)
    }

    /// The neard whose RPC answers now.
    pub(super) fn neard_answers(&self, h: usize) -> Option<&Neard> {
        let host = &self.hosts[h];
        if host.suspended || host.hang_until > self.t {
            return None;
        }
        host.neard.as_ref().filter(|n| n.alive && n.rpc_up)
    }

    pub(super) fn neard_syncing(&self, h: usize) -> bool {
        let host = &self.hosts[h];
        let spell = host.spells.is_some_and(|(since, len, until)| {
            self.t < until && ((self.t - since) / len.max(1)) % 2 == 0
        });
        host.syncing_until > self.t || spell || !host.neard.as_ref().is_some_and(|n| n.joined)
    }

    /// Whether neard's head is frozen now (it takes in nothing and signs nothing).
    fn neard_frozen(&self, h: usize) -> bool {
        self.hosts[h].frozen_until > self.t
    }

    /// A frozen neard runs again: it catches up with the chain.
    pub(super) fn neard_thaw(&mut self, h: usize) {
        let Some(pid) = self.hosts[h]
            .neard
            .as_ref()
            .filter(|n| n.alive && n.rpc_up)
            .map(|n| n.pid)
        else {
            return;
        };
        if !self.hosts[h].suspended {
            self.neard_hello(h, pid);
        }
    }

    /// The guard of generation `parent` starts neard in `role` (it runs no other neard);
    /// returns its pid.
    pub(super) fn neard_start(&mut self, h: usize, role: Role, parent: u64) -> u32 {
        let host = &mut self.hosts[h];
        host.next_pid += 1;
        let pid = host.next_pid;
        let client = Client::new(&format!("n{h}"), self.timers, host.stored_target);
        host.neard = Some(Neard {
            pid,
            parent,
            alive: true,
            client,
            key: host.key_file.then(our_key),
            rpc_up: false,
            joined: false,
            rejoin: false,
            stopping: false,
            reloads: 1,
            key_gen: 0,
            pending_hups: 0,
            last_signed: None,
        });
        let boot = host.boot_ms * MS;
        self.after(boot, Ev::NeardRpcUp { h, pid });
        let phase = self
            .rng
            .below(self.timers.doomslug_step_period.as_nanos() as u64);
        self.after(boot + phase, Ev::NeardStep { h, pid });
        let key = self.hosts[h].key_file;
        self.trace(|| format!("host {h} guard starts neard {pid} ({role:?}, key file {key})"));
        pid
    }

    /// neard is gone (exited, crashed, killed): it signs nothing more; its guard reports it.
    pub(super) fn neard_dies(&mut self, h: usize) {
        let Some(n) = self.hosts[h].neard.as_mut() else {
            return;
        };
        if !n.alive {
            return;
        }
        n.alive = false;
        let pid = n.pid;
        let target = n.client.largest_target_height();
        let host = &mut self.hosts[h];
        host.stored_target = host.stored_target.max(target);
        self.guard_neard_exited(h, pid);
    }

    pub(super) fn neard_hello(&mut self, h: usize, pid: u32) {
        let lag = self.lag(h);
        self.after(
            lag,
            Ev::ToChain {
                h,
                pid,
                msg: Box::new(ToChain::Hello {
                    node: format!("n{h}"),
                }),
            },
        );
    }

    fn lag(&mut self, h: usize) -> u64 {
        let host = &self.hosts[h];
        let extra = if host.lag_extra.1 > self.t {
            host.lag_extra.0
        } else {
            0
        };
        (host.lag_ms + extra) * MS + self.rng.below(MS)
    }

    fn signing_key(&self, h: usize) -> Option<Key> {
        let n = self.hosts[h].neard.as_ref()?;
        if !n.alive || self.neard_syncing(h) {
            return None;
        }
        n.key.clone()
    }

    fn instant(&self) -> std::time::Instant {
        self.base + Duration::from_nanos(self.t)
    }

    pub(super) fn neard_step(&mut self, h: usize, pid: u32) {
        if !self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            return;
        }
        if self.hosts[h].suspended {
            self.hosts[h].frozen.push(Ev::NeardStep { h, pid });
            return;
        }
        if self.neard_frozen(h) {
            let step = self.timers.doomslug_step_period.as_nanos() as u64;
            self.after(step, Ev::NeardStep { h, pid });
            return;
        }
        let key = self.signing_key(h);
        let now = self.instant();
        let ms = self.hosts[h].clock.wall_ms(self.t);
        let fx = {
            let n = self.hosts[h].neard.as_mut().expect("checked");
            let mut fx = n.client.doomslug_step(now, ms, key.as_ref());
            let p = n.client.production_step(now, ms, key.as_ref());
            fx.send.extend(p.send);
            fx.ledger.extend(p.ledger);
            fx
        };
        self.neard_effects(h, pid, fx);
        let tip = self.hosts[h]
            .neard
            .as_ref()
            .and_then(|n| n.client.tip().map(|b| b.height))
            .unwrap_or(0);
        self.max_node_tip = self.max_node_tip.max(tip);
        let step = self.timers.doomslug_step_period.as_nanos() as u64;
        self.after(step, Ev::NeardStep { h, pid });
    }

    fn neard_effects(&mut self, h: usize, pid: u32, fx: Effects) {
        for e in &fx.ledger {
            if e.account == ACCOUNT {
                if matches!(e.kind, Some(neard_sim::ledger::SignedKind::Approval)) {
                    let now = self.t;
                    if let Some(n) = self.neard_mut(h, pid) {
                        n.last_signed = Some(now);
                    }
                }
                self.out.hash = fnv_mix(self.out.hash, e.height ^ (h as u64) << 48);
                if let Some(what) = self.conflicts.record(e) {
                    self.violate(Violation::Conflict {
                        at_ms: self.t / MS,
                        what,
                    });
                }
            }
        }
        for m in fx.send {
            let lag = self.lag(h);
            self.after(
                lag,
                Ev::ToChain {
                    h,
                    pid,
                    msg: Box::new(m),
                },
            );
        }
    }

    pub(super) fn send_node(&mut self, h: usize, pid: u32, msg: ToNode) {
        if !self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            return;
        }
        if self.hosts[h].suspended || self.neard_frozen(h) {
            if let Some(n) = self.neard_mut(h, pid) {
                n.rejoin = true;
            }
            return;
        }
        let msg = if matches!(msg, ToNode::Welcome(_)) {
            if let Some(n) = self.neard_mut(h, pid) {
                n.joined = true;
            }
            // The handshake ends with the node synced to the chain as it is when the welcome
            // arrives (neard syncs to its peers' head), not as it was at the hello: blocks
            // decided in between were broadcast only to nodes that had joined.
            ToNode::Welcome(Box::new(self.net.welcome()))
        } else {
            msg
        };
        let key = self.signing_key(h);
        let now = self.instant();
        let ms = self.hosts[h].clock.wall_ms(self.t);
        let fx = match self.hosts[h].neard.as_mut() {
            Some(n) => n.client.on_message(msg, now, ms, key.as_ref()),
            None => return,
        };
        self.neard_effects(h, pid, fx);
    }

    pub(super) fn send_chain(&mut self, h: usize, pid: u32, msg: ToChain) {
        let now = self.instant();
        let ms = crate::clock::WALL_BASE_MS + self.t / MS;
        let out = match msg {
            ToChain::Hello { .. } => {
                let lag = self.lag(h);
                let w = ToNode::Welcome(Box::new(self.net.welcome()));
                self.after(
                    lag,
                    Ev::ToNode {
                        h,
                        pid,
                        msg: Box::new(w),
                    },
                );
                return;
            }
            ToChain::Approval(a) => {
                let ours = a.account_id == ACCOUNT;
                let out = self.net.on_approval(a, now);
                if ours && !out.broadcast.is_empty() {
                    self.signed_at = self.t;
                    self.hosts[h].signed_at = self.t;
                }
                out
            }
            ToChain::Chunk(c) => match self.net.on_chunk(c) {
                Ok(o) => o,
                Err(_) => return,
            },
            ToChain::Block(b) => {
                let ours = b.producer == ACCOUNT;
                match self.net.on_block(b, ms) {
                    Ok(o) => {
                        if ours {
                            self.signed_at = self.t;
                            self.hosts[h].signed_at = self.t;
                        }
                        o
                    }
                    Err(_) => return,
                }
            }
        };
        self.broadcast(out);
    }

    pub(super) fn chain_tick(&mut self) {
        let now = self.instant();
        let ms = crate::clock::WALL_BASE_MS + self.t / MS;
        let out = self.net.tick(now, ms);
        self.broadcast(out);
        let step = self.timers.doomslug_step_period.as_nanos() as u64;
        self.after(step, Ev::ChainTick);
    }

    fn broadcast(&mut self, out: neard_sim::network::Output) {
        let head = self.net.head().height;
        if head != self.chain_head {
            self.chain_head = head;
            self.chain_head_at = self.t;
        }
        if out.broadcast.is_empty() {
            return;
        }
        for h in 0..self.hosts.len() {
            let Some(pid) = self.hosts[h]
                .neard
                .as_ref()
                .filter(|n| n.alive && n.joined)
                .map(|n| n.pid)
            else {
                continue;
            };
            for m in &out.broadcast {
                let lag = self.lag(h);
                self.after(
                    lag,
                    Ev::ToNode {
                        h,
                        pid,
                        msg: Box::new(ToNode::from(m.clone())),
                    },
                );
            }
        }
    }

    pub(super) fn neard_sighup(&mut self, h: usize, pid: u32) {
        if self.hosts[h].suspended {
            if let Some(n) = self.neard_mut(h, pid) {
                n.pending_hups += 1;
            }
            return;
        }
        let mode = self.hosts[h]
            .reload_mode
            .filter(|(_, until)| *until > self.t)
            .map(|(m, _)| m);
        let d = match mode {
            Some(ReloadMode::Ignore) => return,
            Some(ReloadMode::Slow) => self.rng.range(S, 4 * S),
            _ => self.rng.range(MS, 20 * MS),
        };
        self.after(d, Ev::NeardReloadRead { h, pid });
    }

    pub(super) fn neard_reload_read(&mut self, h: usize, pid: u32) {
        if !self.hosts[h]
            .neard
            .as_ref()
            .is_some_and(|n| n.pid == pid && n.alive)
        {
            return;
        }
        if self.hosts[h].suspended {
            self.hosts[h].frozen.push(Ev::NeardReloadRead { h, pid });
            return;
        }
        let fail = self.hosts[h]
            .reload_mode
            .is_some_and(|(m, until)| m == ReloadMode::Fail && until > self.t);
        if fail {
            self.trace(|| format!("host {h} neard {pid} reload failed (config invalid)"));
            return;
        }
        let key = self.hosts[h].key_file;
        let d = self.rng.range(MS, 30 * MS);
        let n = self.neard_mut(h, pid).expect("checked");
        n.reloads += 1;
        n.key_gen += 1;
        let gen = n.key_gen;
        self.after(d, Ev::NeardReloadApply { h, pid, gen, key });
    }
}

pub(super) fn our_key() -> Key {
    Key {
        account_id: ACCOUNT.to_string(),
        public_key: OUR_KEY.to_string(),
    }
}

pub(super) fn is_ours(k: &Key) -> bool {
    k.public_key == OUR_KEY
}
