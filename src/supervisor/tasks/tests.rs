//! Unit tests of [`super`] against a stand-in for Consul's KV endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::publish_records;
use crate::consul::Consul;
use crate::metrics::Metrics;
use crate::records::NodeRecord;

/// How the stand-in answers the n-th PUT (from 0): after a delay, with a status.
type Answer = fn(usize) -> (Duration, u16);

/// A KV endpoint that answers PUTs as `answer` says and keeps, in the order it applied them, the
/// `updated_ms` of every record it accepted (a 200 answer). Each connection is served on its own
/// task, as Consul serves them: a slow request does not hold up a later one.
async fn stand_in(answer: Answer) -> (String, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let applied = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let kept = applied.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (applied, seen) = (kept.clone(), seen.clone());
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().expect("a length");
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    conn.read_exact(&mut body).await.expect("body");
                    let n = {
                        let mut seen = seen.lock().expect("lock");
                        *seen += 1;
                        *seen - 1
                    };
                    let (delay, status) = answer(n);
                    tokio::time::sleep(delay).await;
                    if status == 200 {
                        let record: NodeRecord = serde_json::from_slice(&body).expect("a record");
                        applied.lock().expect("lock").push(record.updated_ms);
                    }
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: 4\r\n\r\ntrue"
                    );
                    conn.get_mut()
                        .write_all(reply.as_bytes())
                        .await
                        .expect("reply");
                }
            });
        }
    });
    (url, applied)
}

fn record(updated_ms: u64) -> Option<NodeRecord> {
    Some(NodeRecord {
        node_id: "node1".into(),
        updated_ms,
        ..NodeRecord::default()
    })
}

/// Publishes `records` (a pause after each, so each write is on its way before the next), then
/// drops the sender and waits for the publisher to finish; returns what the stand-in applied.
async fn publish(answer: Answer, records: &[u64]) -> Vec<u64> {
    let (url, applied) = stand_in(answer).await;
    let consul = Consul::new(&url, None).expect("client");
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(publish_records(
        crate::store::Store::Consul(consul),
        "kuutamod/a/nodes/node1".into(),
        rx,
        Metrics::new(),
    ));
    for r in records {
        tx.send_replace(record(*r));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the publisher ends once its sender is gone")
        .expect("the publisher does not panic");
    let applied = applied.lock().expect("lock").clone();
    applied
}

#[tokio::test]
async fn a_slow_write_is_not_overtaken_by_a_later_record() {
    // The first write takes 300 ms; the second record is made 50 ms in.
    let applied = publish(
        |n| (Duration::from_millis(if n == 0 { 300 } else { 0 }), 200),
        &[1, 2],
    )
    .await;
    assert_eq!(
        applied.last(),
        Some(&2),
        "applied in this order: {applied:?}"
    );
}

#[tokio::test]
async fn a_failed_write_is_retried() {
    let applied = publish(|n| (Duration::ZERO, if n == 0 { 500 } else { 200 }), &[7]).await;
    assert_eq!(applied, vec![7]);
}
