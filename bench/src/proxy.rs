//! A TCP proxy between kuutamod and Consul that counts requests and can delay every chunk:
//! the kernel here has no netem, so "slow Consul" latency comes from this.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// Listens on `listen` (port 0 picks one) and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || accept_loop(listener, upstream, s));
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
