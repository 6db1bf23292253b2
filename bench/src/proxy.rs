//! A TCP proxy between kuutamod and its Consul agent, on the node's host (inside its network
//! namespace: the proxy's thread enters it before it binds), that counts requests and can delay
//! every chunk: the kernel here has no netem, so "slow Consul" latency comes from this.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// Buffer size of one forwarded chunk.
const CHUNK: usize = 16 * 1024;

/// Shared state between the proxy's threads and its owner.
#[derive(Default)]
struct Shared {
    delay_ms: AtomicU64,
    requests: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops accepting on drop (open connections end with their peers).
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on 127.0.0.1 (a port the kernel picks) in `netns` (the root namespace if
    /// `None`) and forwards to `upstream`, connecting from the same namespace.
    pub fn start(netns: Option<&str>, upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let netns = netns.map(str::to_string);
        let (tx, rx) = std::sync::mpsc::channel();
        // One thread owns the listener and opens every upstream connection: entering a network
        // namespace changes only the calling thread's.
        std::thread::spawn(move || {
            let setup = || -> anyhow::Result<TcpListener> {
                if let Some(ns) = &netns {
                    let fd = std::fs::File::open(format!("/run/netns/{ns}"))
                        .with_context(|| format!("namespace {ns}"))?;
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                        .with_context(|| format!("entering namespace {ns}"))?;
                }
                // Keep the refused listeners open until one is ours, so that the kernel
                // does not hand the same port out again.
                let mut refused = Vec::new();
                loop {
                    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
                    if crate::procs::claim_port(listener.local_addr()?.port()) {
                        listener.set_nonblocking(true)?;
                        return Ok(listener);
                    }
                    refused.push(listener);
                }
            };
            match setup().and_then(|l| Ok((l.local_addr()?, l))) {
                Ok((addr, listener)) => {
                    let _ = tx.send(Ok(addr));
                    accept_loop(listener, upstream, s);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let addr = rx.recv().context("proxy thread died")??;
        Ok(Proxy { addr, shared })
    }

    /// Delays every chunk in both directions by `delay` from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// HTTP requests forwarded so far (request lines seen from the client).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let up = shared.clone();
                let down = shared.clone();
                std::thread::spawn(move || pump(client, server, up, true));
                std::thread::spawn(move || pump(s2, c2, down, false));
            }
            Err(_) => std::thread::sleep(crate::wait::POLL),
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>, count: bool) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if count {
            let chunk = &buf[..n];
            let lines = chunk.windows(10).filter(|w| w == b" HTTP/1.1\r").count();
            shared.requests.fetch_add(lines as u64, Ordering::SeqCst);
        }
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
