//! How nodes talk to the chain: JSON-lines messages over a Unix domain socket, or the same
//! messages over in-process channels when a node embeds its own chain.
//!
//! A Unix socket in the filesystem reaches nodes in every network namespace, so cutting a node
//! off Consul (a netns firewall) does not cut it off the NEAR network; cutting it off the chain
//! is a separate knob (`network_offline`). The [`Engine`] task owns the [`Network`]: it ticks it,
//! applies node messages in arrival order and fans out what the network broadcasts.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::blocks::{Approval, Block, Chunk};
use crate::network::{Broadcast, Network, Output, Welcome};

/// How long a node waits before reconnecting to a chain socket that is not there (yet).
pub const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// A message from a node to the chain (one JSON object per line, externally tagged:
/// `{"approval": {...}}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToChain {
    /// "I am here (again)": the chain answers with a [`ToNode::Welcome`].
    Hello {
        /// Node id (for the chain's log).
        node: String,
    },
    /// An approval the node signed.
    Approval(Approval),
    /// A chunk the node produced.
    Chunk(Chunk),
    /// A block the node produced.
    Block(Block),
}

/// A message from the chain to a node. (Externally tagged: an internally tagged enum would
/// buffer its content and then fail on the integer map keys of the epoch counters.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToNode {
    /// The answer to [`ToChain::Hello`].
    Welcome(Box<Welcome>),
    /// A block the chain accepted.
    Block(Block),
    /// An approval.
    Approval(Approval),
    /// A chunk on the head.
    Chunk(Chunk),
}

impl From<Broadcast> for ToNode {
    fn from(b: Broadcast) -> ToNode {
        match b {
            Broadcast::Block(b) => ToNode::Block(b),
            Broadcast::Approval(a) => ToNode::Approval(a),
            Broadcast::Chunk(c) => ToNode::Chunk(c),
        }
    }
}

/// Events the engine's owner may want: decided heights (for the chain log) and rejections.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// Heights decided by an accepted block: `(unix ms, decided)`.
    Decided(Vec<(u64, crate::epoch::Decided)>),
    /// A node's message was not taken.
    Rejected {
        /// Node id of the sender.
        node: String,
        /// Why.
        reason: String,
    },
    /// A node said hello.
    Joined {
        /// Node id.
        node: String,
    },
}

enum EngineMsg {
    Connect(u64, UnboundedSender<ToNode>),
    FromNode(u64, ToChain),
    Disconnect(u64),
    SetOffline(BTreeSet<String>),
}

/// A handle on a running engine.
#[derive(Clone)]
pub struct Engine {
    tx: UnboundedSender<EngineMsg>,
    next_id: Arc<AtomicU64>,
}

/// One node's connection to an engine: what it sends, what it receives.
pub struct Conn {
    /// Messages to the chain.
    pub to_chain: UnboundedSender<ToChain>,
    /// Messages from the chain.
    pub from_chain: UnboundedReceiver<ToNode>,
}

impl Engine {
    /// Starts the engine task (on the current tokio runtime) around `network`, ticking every
    /// `step`. Decided heights and rejections go to `events`.
    pub fn spawn(network: Network, step: Duration, events: UnboundedSender<EngineEvent>) -> Engine {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(engine_task(network, step, rx, events));
        Engine {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Connects an in-process node.
    pub fn connect(&self) -> Conn {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (to_node_tx, from_chain) = mpsc::unbounded_channel();
        let _ = self.tx.send(EngineMsg::Connect(id, to_node_tx));
        let (to_chain, mut rx) = mpsc::unbounded_channel::<ToChain>();
        let engine = self.tx.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if engine.send(EngineMsg::FromNode(id, m)).is_err() {
                    return;
                }
            }
            let _ = engine.send(EngineMsg::Disconnect(id));
        });
        Conn {
            to_chain,
            from_chain,
        }
    }

    /// Switches virtual validators offline (the others online).
    pub fn set_offline(&self, offline: BTreeSet<String>) {
        let _ = self.tx.send(EngineMsg::SetOffline(offline));
    }

    /// Serves nodes on a Unix socket until the listener fails.
    pub async fn serve(&self, listener: UnixListener) -> io::Result<()> {
        loop {
            let (stream, _) = listener.accept().await?;
            let conn = self.connect();
            tokio::spawn(pump_socket(stream, conn));
        }
    }
}

/// Copies lines between a socket and a connection until either side closes.
async fn pump_socket(stream: UnixStream, conn: Conn) {
    let Conn {
        to_chain,
        mut from_chain,
    } = conn;
    let (read, mut write) = stream.into_split();
    let reader = async move {
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<ToChain>(&line) {
                Ok(m) => {
                    if to_chain.send(m).is_err() {
                        return;
                    }
                }
                Err(e) => crate::node::log("WARN", "chain", &format!("bad message {line:?}: {e}")),
            }
        }
    };
    let writer = async move {
        while let Some(m) = from_chain.recv().await {
            let Ok(mut line) = serde_json::to_vec(&m) else {
                continue;
            };
            line.push(b'\n');
            if write.write_all(&line).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

async fn engine_task(
    mut net: Network,
    step: Duration,
    mut rx: UnboundedReceiver<EngineMsg>,
    events: UnboundedSender<EngineEvent>,
) {
    let mut nodes: BTreeMap<u64, (String, UnboundedSender<ToNode>)> = BTreeMap::new();
    let mut tick = tokio::time::interval(step.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let out = net.tick(Instant::now(), crate::chain::now_ms());
                fan_out(&nodes, None, out, &events);
            }
            m = rx.recv() => match m {
                None => return,
                Some(EngineMsg::Connect(id, tx)) => {
                    nodes.insert(id, (format!("conn{id}"), tx));
                }
                Some(EngineMsg::Disconnect(id)) => {
                    nodes.remove(&id);
                }
                Some(EngineMsg::SetOffline(set)) => net.set_offline(set),
                Some(EngineMsg::FromNode(id, m)) => {
                    let node = nodes.get(&id).map(|n| n.0.clone()).unwrap_or_default();
                    let result = match m {
                        ToChain::Hello { node } => {
                            if let Some(n) = nodes.get_mut(&id) {
                                n.0 = node.clone();
                                let _ = n.1.send(ToNode::Welcome(Box::new(net.welcome())));
                            }
                            let _ = events.send(EngineEvent::Joined { node });
                            Ok(Output::default())
                        }
                        ToChain::Approval(a) => Ok(net.on_approval(a, Instant::now())),
                        ToChain::Chunk(c) => net.on_chunk(c),
                        ToChain::Block(b) => net.on_block(b, crate::chain::now_ms()),
                    };
                    match result {
                        Ok(out) => fan_out(&nodes, Some(id), out, &events),
                        Err(e) => {
                            let _ = events.send(EngineEvent::Rejected { node, reason: e.to_string() });
                        }
                    }
                }
            }
        }
    }
}

fn fan_out(
    nodes: &BTreeMap<u64, (String, UnboundedSender<ToNode>)>,
    from: Option<u64>,
    out: Output,
    events: &UnboundedSender<EngineEvent>,
) {
    for m in out.broadcast {
        // A node's own block goes back to it as well: that is how it learns the chain took it.
        let to_sender = matches!(m, Broadcast::Block(_));
        for (id, (_, tx)) in nodes {
            if Some(*id) != from || to_sender {
                let _ = tx.send(ToNode::from(m.clone()));
            }
        }
    }
    if !out.decided.is_empty() {
        let _ = events.send(EngineEvent::Decided(out.decided));
    }
}

/// Connects a node to a chain socket, reconnecting whenever the connection fails, and says
/// hello on every connection. Returns the node's side of the link.
pub fn connect_socket(path: PathBuf, node: String) -> Conn {
    let (to_chain, mut out_rx) = mpsc::unbounded_channel::<ToChain>();
    let (in_tx, from_chain) = mpsc::unbounded_channel::<ToNode>();
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            let stream = match UnixStream::connect(&path).await {
                Ok(s) => s,
                Err(e) => {
                    if !warned {
                        crate::node::log(
                            "WARN",
                            "network",
                            &format!(
                                "cannot reach the chain at {}: {e}; retrying",
                                path.display()
                            ),
                        );
                        warned = true;
                    }
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    // Messages signed while disconnected are not delivered.
                    while out_rx.try_recv().is_ok() {}
                    continue;
                }
            };
            warned = false;
            crate::node::log(
                "INFO",
                "network",
                &format!("connected to the chain at {}", path.display()),
            );
            let (read, mut write) = stream.into_split();
            let hello = ToChain::Hello { node: node.clone() };
            if write_line(&mut write, &hello).await.is_err() {
                continue;
            }
            let in_tx2 = in_tx.clone();
            let mut reader = tokio::spawn(async move {
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<ToNode>(&line) {
                        Ok(m) => {
                            if in_tx2.send(m).is_err() {
                                return;
                            }
                        }
                        Err(e) => crate::node::log(
                            "WARN",
                            "network",
                            &format!("unreadable message from the chain: {e}"),
                        ),
                    }
                }
            });
            loop {
                tokio::select! {
                    _ = &mut reader => break,
                    m = out_rx.recv() => match m {
                        None => return,
                        Some(m) => {
                            if write_line(&mut write, &m).await.is_err() {
                                break;
                            }
                        }
                    },
                }
            }
            reader.abort();
            tokio::time::sleep(RECONNECT_DELAY).await;
        }
    });
    Conn {
        to_chain,
        from_chain,
    }
}

async fn write_line(w: &mut tokio::net::unix::OwnedWriteHalf, m: &ToChain) -> io::Result<()> {
    let mut line = serde_json::to_vec(m).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Binds the chain socket at `path`, replacing a stale socket file left by a dead chain.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::ApprovalInner;

    #[test]
    fn messages_are_tagged_json_lines() {
        let m = ToChain::Approval(Approval {
            account_id: "a".into(),
            inner: ApprovalInner::Skip(3),
            target_height: 5,
        });
        let s = serde_json::to_string(&m).expect("json");
        assert_eq!(
            s,
            r#"{"approval":{"account_id":"a","inner":{"skip":3},"target_height":5}}"#
        );
        assert_eq!(serde_json::from_str::<ToChain>(&s).expect("back"), m);
        let b = ToNode::from(Broadcast::Approval(Approval {
            account_id: "a".into(),
            inner: ApprovalInner::Endorsement("h".into()),
            target_height: 5,
        }));
        let s = serde_json::to_string(&b).expect("json");
        assert_eq!(serde_json::from_str::<ToNode>(&s).expect("back"), b);
        // A welcome (with epoch counters keyed by integers) survives the trip.
        let net = crate::network::Network::new(
            crate::spec::ChainSpec::from_home(None, crate::spec::Timers::sped_up(10), Some("a")),
            std::time::Instant::now(),
            0,
        );
        let mut w = net.welcome();
        w.stats
            .epochs
            .entry(3)
            .or_default()
            .insert("a".into(), Default::default());
        let m = ToNode::Welcome(Box::new(w));
        let s = serde_json::to_string(&m).expect("json");
        assert_eq!(serde_json::from_str::<ToNode>(&s).expect("back"), m);
    }
}
