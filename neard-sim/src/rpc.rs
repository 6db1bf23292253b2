//! The node's HTTP surface: `/status`, `/health`, `/metrics` and JSON-RPC (`status`,
//! `health`, `validators`, `EXPERIMENTAL_maintenance_windows` / `maintenance_windows`).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::chain;
use crate::control::StatusMode;
use crate::node::{log, Shared};
use crate::status;

/// Serves HTTP on `listener` until RPC goes down at shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let mut down = shared.rpc_down.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    log("WARN", "network", &format!("accept on rpc.addr failed: {e}"));
                    continue;
                }
            },
            _ = down.wait_for(|d| *d) => return,
        };
        let shared = shared.clone();
        let mut down = shared.rpc_down.subscribe();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = down.wait_for(|d| *d) => {}
            }
        });
    }
}

type Resp = Response<Full<Bytes>>;

fn respond(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_resp(v: &Value) -> Resp {
    respond(StatusCode::OK, "application/json", v.to_string())
}

fn empty(code: StatusCode) -> Resp {
    respond(code, "text/plain", Bytes::new())
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    shared.wait_unfrozen().await;
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let resp = match (req.uri().path(), get, req.method() == Method::POST) {
        ("/status", true, _) => match status_mode(&shared) {
            StatusMode::Ok => json_resp(&status::render(&shared.view(chain::now_ms()).0)),
            StatusMode::Error503 => empty(StatusCode::SERVICE_UNAVAILABLE),
            StatusMode::Hang => std::future::pending().await,
        },
        ("/health", true, _) => {
            let now = chain::now_ms();
            let (view, max) = shared.view(now);
            match status::health_of(&view, now, max) {
                Ok(()) => json_resp(&Value::Null),
                Err(_) => empty(StatusCode::SERVICE_UNAVAILABLE),
            }
        }
        ("/metrics", true, _) => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics(&shared),
        ),
        ("/", _, true) => {
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            json_resp(&jsonrpc(&shared, body.ok().as_deref().unwrap_or_default()).await)
        }
        _ => empty(StatusCode::NOT_FOUND),
    };
    Ok(resp)
}

fn status_mode(shared: &Shared) -> StatusMode {
    shared.control.borrow().status
}

/// JSON-RPC error for bad params (neard's `REQUEST_VALIDATION_ERROR` / `PARSE_ERROR`).
fn bad_params(msg: &str) -> Value {
    json!({"name": "REQUEST_VALIDATION_ERROR",
        "cause": {"name": "PARSE_ERROR", "info": {"error_message": msg}},
        "code": -32700, "message": "Parse error", "data": msg})
}

/// The node has no chain view yet (neard: the head is unknown while awaiting peers).
fn no_chain() -> Value {
    json!({"name": "HANDLER_ERROR",
        "cause": {"name": "INTERNAL_ERROR", "info": {"error_message": "no head yet"}},
        "code": -32000, "message": "Server error", "data": "no head yet"})
}

/// `account_id` from params given as an object or as a one-element array of an object.
fn account_param(params: Option<&Value>) -> Option<String> {
    let p = match params? {
        Value::Array(a) => a.first()?,
        other => other,
    };
    p.get("account_id")?.as_str().map(str::to_owned)
}

/// Answers a JSON-RPC request.
async fn jsonrpc(shared: &Shared, body: &[u8]) -> Value {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700,
                "message": "Parse error", "data": e.to_string(),
                "name": "REQUEST_VALIDATION_ERROR", "cause": {"name": "PARSE_ERROR", "info": {}}}})
        }
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let method = req
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let result = match method {
        "status" => match status_mode(shared) {
            StatusMode::Ok => Ok(status::render(&shared.view(chain::now_ms()).0)),
            StatusMode::Hang => std::future::pending().await,
            StatusMode::Error503 => Err(json!({"name": "HANDLER_ERROR",
                "cause": {"name": "INTERNAL_ERROR", "info": {"error_message": "simulated failure"}},
                "code": -32000, "message": "Server error", "data": "simulated failure"})),
        },
        "health" => {
            let now = chain::now_ms();
            let (view, max) = shared.view(now);
            status::health_of(&view, now, max)
                .map(|()| Value::Null)
                .map_err(|u| u.rpc_error())
        }
        "EXPERIMENTAL_maintenance_windows" | "maintenance_windows" => {
            match account_param(req.get("params")) {
                None => Err(bad_params("expected params {\"account_id\": ...}")),
                Some(account) => maintenance_windows(shared, &account),
            }
        }
        "validators" => validators(shared),
        other => Err(json!({"name": "REQUEST_VALIDATION_ERROR",
            "cause": {"name": "METHOD_NOT_FOUND", "info": {"method_name": other}},
            "code": -32601, "message": "Method not found", "data": other})),
    };
    match result {
        Ok(r) => json!({"jsonrpc": "2.0", "result": r, "id": id}),
        Err(e) => json!({"jsonrpc": "2.0", "error": e, "id": id}),
    }
}

/// nearcore's maintenance windows from this node's head: `Vec<Range<u64>>`, which serde
/// writes as `[{"start": a, "end": b}, ...]` (end exclusive).
fn maintenance_windows(shared: &Shared, account: &str) -> Result<Value, Value> {
    let st = shared.state();
    let (Some(epochs), Some(tip)) = (st.client.epochs(), st.client.tip()) else {
        return Err(no_chain());
    };
    Ok(Value::Array(
        epochs
            .maintenance_windows(account, tip.height)
            .into_iter()
            .map(|(start, end)| json!({"start": start, "end": end}))
            .collect(),
    ))
}

/// The `validators` RPC for the head's epoch, in nearcore's `EpochValidatorInfo` shape (the
/// parts the simulator has; endorsement counters are zero).
fn validators(shared: &Shared) -> Result<Value, Value> {
    let st = shared.state();
    let (Some(epochs), Some(tip)) = (st.client.epochs(), st.client.tip()) else {
        return Err(no_chain());
    };
    let spec = epochs.spec();
    let shards: Vec<u64> = (0..spec.num_shards).collect();
    let pk = |v: &crate::spec::ValidatorSpec| {
        v.public_key.clone().unwrap_or_else(|| {
            format!(
                "ed25519:{}",
                chain::hash(&format!("pk:{}", v.account_id), 0)
            )
        })
    };
    let current: Vec<Value> = spec
        .validators
        .iter()
        .map(|v| {
            let c = st.client.counters(&v.account_id);
            json!({
                "account_id": v.account_id,
                "public_key": pk(v),
                "is_slashed": false,
                "stake": v.stake.to_string(),
                "shards": shards,
                "shards_produced": shards,
                "shards_endorsed": shards,
                "num_produced_blocks": c.blocks_produced,
                "num_expected_blocks": c.blocks_expected,
                "num_produced_chunks": c.chunks_produced,
                "num_expected_chunks": c.chunks_expected,
                "num_produced_endorsements": 0,
                "num_expected_endorsements": 0,
            })
        })
        .collect();
    let next: Vec<Value> = spec
        .validators
        .iter()
        .map(|v| {
            json!({"account_id": v.account_id, "public_key": pk(v),
            "stake": v.stake.to_string(), "shards": shards})
        })
        .collect();
    let e = epochs.epoch_of(tip.height);
    Ok(json!({
        "current_validators": current,
        "next_validators": next,
        "current_fishermen": [],
        "next_fishermen": [],
        "current_proposals": [],
        "prev_epoch_kickout": [],
        "epoch_start_height": epochs.epoch_start(e),
        "epoch_height": e + 1,
    }))
}

/// Prometheus text exposition of the `near_*` metrics kuutamod and operators look at.
fn metrics(shared: &Shared) -> String {
    let now = chain::now_ms();
    let (view, _) = shared.view(now);
    let st = shared.state();
    let c = &st.client;
    let is_validator = st
        .key
        .as_ref()
        .is_some_and(|k| c.spec().is_none_or(|s| s.is_validator(&k.account_id)));
    let tip = c.tip();
    let gauge = |v: u64| v.to_string();
    let lines: Vec<(&str, &str, &str, String)> = vec![
        (
            "near_block_height_head",
            "gauge",
            "Height of the current head of the blockchain",
            gauge(view.head.height),
        ),
        (
            "near_sync_status",
            "gauge",
            "Node sync status (0 = NoSync, 1 = AwaitingPeers, 4 = HeaderSync)",
            if !view.syncing {
                "0"
            } else if c.has_view() {
                "4"
            } else {
                "1"
            }
            .to_owned(),
        ),
        (
            "near_is_validator",
            "gauge",
            "Bool to denote if it is validating in the current epoch",
            u8::from(is_validator).to_string(),
        ),
        (
            "near_is_block_producer",
            "gauge",
            "Bool to denote if the node is a block producer in the current epoch",
            u8::from(is_validator).to_string(),
        ),
        (
            "near_block_produced_total",
            "counter",
            "Total number of blocks produced since starting this node",
            gauge(c.blocks_produced()),
        ),
        (
            "near_chunk_produced_total",
            "counter",
            "Total number of chunks produced since starting this node",
            gauge(c.chunks_produced()),
        ),
        (
            "near_largest_target_height",
            "gauge",
            "The largest height for which we sent an approval (or skip)",
            gauge(c.largest_target_height()),
        ),
        (
            "near_largest_final_height",
            "gauge",
            "Largest final height known to doomslug",
            gauge(c.largest_final_height()),
        ),
        (
            "near_largest_threshold_height",
            "gauge",
            "Largest height for which we received enough approvals",
            gauge(c.largest_threshold_height()),
        ),
        (
            "near_largest_approval_height",
            "gauge",
            "Largest height for which we received an approval",
            gauge(c.largest_approval_height()),
        ),
        (
            "near_final_block_height",
            "gauge",
            "Last block that has full BFT finality",
            gauge(tip.map_or(0, |t| t.last_final_height)),
        ),
        (
            "near_final_doomslug_block_height",
            "gauge",
            "Last block that has doomslug finality",
            gauge(tip.map_or(0, |t| t.last_ds_final_height)),
        ),
        (
            "near_epoch_height",
            "gauge",
            "Height of the epoch at the head of the blockchain",
            gauge(
                c.epochs()
                    .zip(tip)
                    .map_or(0, |(e, t)| e.epoch_of(t.height) + 1),
            ),
        ),
        (
            "near_config_reloads_total",
            "counter",
            "Number of times the dynamic configs were reloaded (1 at startup)",
            gauge(st.reloads_total),
        ),
        (
            "near_config_reload_timestamp_seconds",
            "gauge",
            "Timestamp of the last successful reload of dynamic configs",
            format!("{:.3}", st.reload_timestamp_ms as f64 / 1000.0),
        ),
        (
            "near_config_correct",
            "gauge",
            "Are the current dynamically loadable configs correct",
            u8::from(st.config_correct).to_string(),
        ),
        (
            "near_boot_time_seconds",
            "gauge",
            "Unix timestamp of the node's start",
            gauge(shared.started_ms / 1000),
        ),
        (
            "near_node_protocol_version",
            "gauge",
            "Max protocol version supported by the node",
            chain::PROTOCOL_VERSION.to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, value) in lines {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    }
    if let Some(spec) = c.spec() {
        let per = [
            (
                "near_validators_blocks_produced",
                "Number of blocks produced by a validator in the current epoch",
            ),
            (
                "near_validators_blocks_expected",
                "Number of blocks expected to be produced by a validator in the current epoch",
            ),
            (
                "near_validators_chunks_produced",
                "Number of chunks produced by a validator in the current epoch",
            ),
            (
                "near_validators_chunks_expected",
                "Number of chunks expected to be produced by a validator in the current epoch",
            ),
        ];
        for (i, (name, help)) in per.iter().enumerate() {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
            for v in &spec.validators {
                let k = c.counters(&v.account_id);
                let value = [
                    k.blocks_produced,
                    k.blocks_expected,
                    k.chunks_produced,
                    k.chunks_expected,
                ][i];
                let _ = writeln!(out, "{name}{{account_id=\"{}\"}} {value}", v.account_id);
            }
        }
    }
    let _ = writeln!(
        out,
        "# HELP near_build_info Metric whose labels indicate node's version\n# TYPE near_build_info gauge\nnear_build_info{{release=\"{}\",build=\"neard-sim-{}\",rustc_version=\"1.80.0\"}} 1",
        status::NEARD_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    out
}
