//! Fixtures (a simulator home and process), bounded waits, and a tiny HTTP client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use neard_sim::control::Control;
use serde_json::Value;

/// The simulator binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_neard-sim");

/// Generous bound for anything the simulator should do "soon" (a loaded CI machine).
pub const WAIT: Duration = Duration::from_secs(20);

/// How long an HTTP request may take before it counts as hanging.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

/// Poll interval of [`wait_for`].
const POLL: Duration = Duration::from_millis(20);

/// Polls `f` until it gives `Some`, or panics after [`WAIT`] naming `what` and the last
/// observation `f` recorded in its `String` argument.
pub fn wait_for<T>(what: &str, mut f: impl FnMut(&mut String) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut seen = String::new();
    loop {
        if let Some(t) = f(&mut seen) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; last seen: {seen}"
        );
        std::thread::sleep(POLL);
    }
}

/// Runs `neard-sim` to completion with `args` (for `init`, `localnet`, failing `run`s).
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn neard-sim");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two free loopback ports.
pub fn free_ports() -> (u16, u16) {
    let p = neard_sim::config::free_ports(2).expect("free ports");
    (p[0], p[1])
}

/// A simulator home made by `neard-sim init`, with concrete free loopback ports.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub rpc_port: u16,
    pub net_port: u16,
}

/// The speed-up every test home gets: neard's timers divided by 10 (a block about every
/// 100 ms, skips after 200 ms growing to 600 ms, /health stale after 2 s).
pub const SPEED_UP: &str = "10";

impl Home {
    /// `init --chain-id localnet --account-id pool.near --speed-up 10`, then free ports in
    /// config.json.
    pub fn new() -> Home {
        Home::for_account("pool.near")
    }

    /// Like [`Home::new`] with the validator key (and genesis validator) `account`.
    pub fn for_account(account: &str) -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let (status, err) = run_to_end(
            &[
                "--home",
                home.to_str().expect("utf-8"),
                "init",
                "--chain-id",
                "localnet",
                "--account-id",
                account,
                "--speed-up",
                SPEED_UP,
            ],
            &[],
        );
        assert!(status.success(), "init failed: {err}");
        let mut h = Home {
            dir,
            rpc_port: 0,
            net_port: 0,
        };
        h.new_ports();
        h
    }

    /// The home directory.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Picks new free ports and writes them into config.json.
    pub fn new_ports(&mut self) {
        let (rpc, net) = free_ports();
        self.rpc_port = rpc;
        self.net_port = net;
        self.edit_config(|c| {
            c["rpc"]["addr"] = format!("127.0.0.1:{rpc}").into();
            c["network"]["addr"] = format!("127.0.0.1:{net}").into();
        });
    }

    /// Rewrites config.json through `f`.
    pub fn edit_config(&self, f: impl FnOnce(&mut Value)) {
        let path = self.path().join("config.json");
        let mut c: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read config")).expect("json");
        f(&mut c);
        std::fs::write(&path, serde_json::to_vec_pretty(&c).expect("json")).expect("write");
    }

    /// The validator key file.
    pub fn validator_key(&self) -> PathBuf {
        self.path().join("validator_key.json")
    }

    /// The control file (the default location).
    pub fn control_file(&self) -> PathBuf {
        self.path().join("neard-sim-control.json")
    }

    /// Sets the fault knobs.
    pub fn control(&self, c: &Control) {
        c.write(&self.control_file()).expect("write control file");
    }

    /// Where a test's ledger goes.
    pub fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger.jsonl")
    }
}

/// A running simulator, killed (SIGKILL) and reaped on drop, even when the test panics.
pub struct Sim {
    pub child: Child,
    pub rpc_port: u16,
    pub stderr: PathBuf,
}

/// Default environment: fast boot so tests do not wait a second per start.
const FAST_BOOT: (&str, &str) = ("NEARD_SIM_BOOT_DELAY_MS", "100");

impl Sim {
    /// Starts `run` in `home` with `env` and waits until /status answers. Retries with new
    /// ports if another process grabbed ours in the meantime.
    pub fn start(home: &mut Home, env: &[(&str, &str)]) -> Sim {
        for _ in 0..3 {
            let mut sim = Sim::spawn(home, env, &[]);
            let up = wait_for("the simulator to answer /status or exit", |seen| {
                if let Ok(Some(st)) = sim.child.try_wait() {
                    return Some(Err(st));
                }
                match get(sim.rpc_port, "/status") {
                    Ok((200, _)) => Some(Ok(())),
                    other => {
                        *seen = format!("{other:?}");
                        None
                    }
                }
            });
            match up {
                Ok(()) => return sim,
                Err(st) if sim.stderr_text().contains("failed to bind") => {
                    eprintln!("port clash ({st}), retrying with new ports");
                    home.new_ports();
                }
                Err(st) => panic!("simulator exited with {st}: {}", sim.stderr_text()),
            }
        }
        panic!("could not find free ports in three tries");
    }

    /// Spawns `run` without waiting; extra `args` go after `run`.
    pub fn spawn(home: &Home, env: &[(&str, &str)], args: &[&str]) -> Sim {
        let stderr = home
            .dir
            .path()
            .join(format!("stderr-{}.log", std::process::id() ^ rand_u32()));
        let mut cmd = Command::new(BIN);
        cmd.arg("--home").arg(home.path()).arg("run").args(args);
        let env: BTreeMap<&str, &str> =
            [FAST_BOOT].into_iter().chain(env.iter().copied()).collect();
        cmd.envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        Sim {
            child: cmd.spawn().expect("spawn neard-sim"),
            rpc_port: home.rpc_port,
            stderr,
        }
    }

    /// What the simulator logged so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends `sig` to the simulator.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for("the simulator to exit", |seen| {
            *seen = "still running".into();
            self.child.try_wait().expect("try_wait")
        })
    }

    /// The node's head height.
    pub fn head(&self) -> u64 {
        self.status()["sync_info"]["latest_block_height"]
            .as_u64()
            .expect("height")
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        let (code, body) = get(self.rpc_port, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        body
    }

    /// GET /status as JSON.
    pub fn status(&self) -> Value {
        let (code, body) = get(self.rpc_port, "/status").expect("GET /status");
        assert_eq!(code, 200, "GET /status: {body}");
        serde_json::from_str(&body).expect("status is JSON")
    }

    /// The value of metric `name` (a line `name value`).
    pub fn metric(&self, name: &str) -> f64 {
        let (code, body) = get(self.rpc_port, "/metrics").expect("GET /metrics");
        assert_eq!(code, 200);
        metric_value(&body, name).unwrap_or_else(|| panic!("no metric {name} in:\n{body}"))
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A little randomness for file names, without a crate.
fn rand_u32() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Finds `name value` in a Prometheus text body.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// GET `path` on 127.0.0.1:`port`.
pub fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    request(port, "GET", path, "")
}

/// A minimal HTTP/1.1 request (`Connection: close`): status code and body. A server that
/// does not answer within [`HTTP_TIMEOUT`] gives a `TimedOut`/`WouldBlock` error.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((code, body.to_owned()))
}

/// JSON-RPC call; returns the whole response object.
pub fn rpc(port: u16, method: &str) -> Value {
    rpc_with(port, method, serde_json::json!([]))
}

/// JSON-RPC call with `params`.
pub fn rpc_with(port: u16, method: &str, params: Value) -> Value {
    let req =
        serde_json::json!({"jsonrpc": "2.0", "id": "dontcare", "method": method, "params": params});
    let (code, body) = request(port, "POST", "/", &req.to_string()).expect("POST /");
    assert_eq!(code, 200, "POST / {method}: {body}");
    serde_json::from_str(&body).expect("JSON-RPC answer is JSON")
}

/// A running chain process (`neard-sim chain run`), killed on drop.
pub struct Chain {
    pub dir: PathBuf,
    pub child: Child,
    pub stderr: PathBuf,
}

impl Chain {
    /// `chain init --dir <dir> <init_args> --speed-up 10`, then `chain run`; waits for the
    /// socket.
    pub fn start(dir: &Path, init_args: &[&str]) -> Chain {
        let d = dir.to_str().expect("utf-8");
        let mut args = vec!["chain", "init", "--dir", d, "--speed-up", SPEED_UP];
        args.extend_from_slice(init_args);
        let (st, err) = run_to_end(&args, &[]);
        assert!(st.success(), "chain init: {err}");
        let stderr = dir.join("chain-stderr.log");
        let child = Command::new(BIN)
            .args(["chain", "run", "--dir", d])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawn chain");
        let mut chain = Chain {
            dir: dir.to_owned(),
            child,
            stderr,
        };
        let socket = chain.socket();
        wait_for("the chain socket", |seen| {
            if let Ok(Some(st)) = chain.child.try_wait() {
                panic!("chain exited with {st}: {}", chain.stderr_text());
            }
            *seen = format!("{} absent", socket.display());
            socket.exists().then_some(())
        });
        chain
    }

    /// The socket nodes use (`NEARD_SIM_CHAIN`).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("chain.sock")
    }

    /// Takes virtual validators offline (the others online).
    pub fn offline(&self, accounts: &[&str]) {
        neard_sim::control::ChainControl {
            offline: accounts.iter().map(|a| (*a).to_owned()).collect(),
        }
        .write(&self.dir.join("chain-control.json"))
        .expect("write chain control");
    }

    /// The chain log so far.
    pub fn log(&self) -> Vec<neard_sim::chainlog::Line> {
        let path = self.dir.join("chain-log.jsonl");
        if !path.exists() {
            return Vec::new();
        }
        neard_sim::chainlog::read(&path).expect("chain log parses")
    }

    /// Highest decided height in the chain log.
    pub fn head(&self) -> u64 {
        self.log().iter().map(|l| l.height).max().unwrap_or(0)
    }

    /// What the chain logged so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a labelled metric `name{labels}` in a Prometheus text body.
pub fn labelled_metric(body: &str, name_and_labels: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(name_and_labels)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Reads a ledger (empty if it does not exist yet).
pub fn ledger_entries(path: &Path) -> Vec<neard_sim::ledger::Entry> {
    if !path.exists() {
        return Vec::new();
    }
    neard_sim::ledger::read(path).expect("ledger parses")
}
