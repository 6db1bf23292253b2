//! The HTTP endpoint:
//!
//! - `GET /metrics`: Prometheus text.
//! - `GET /health`: 200 while kuutamod runs, the state as text (a liveness probe).
//! - `GET /leader`: 200 while this node validates, else 503 (for load balancers and monitors
//!   that must find the validator).
//! - `GET /standby`: 200 while this node is a synced standby that would take over now (a
//!   session, a guard, priority above 0, the cluster not paused), else 503.
//! - `GET /neard-pid`: pid of the supervised neard, 404 when none runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::machine::State;
use crate::metrics::Metrics;

/// What the supervisor publishes for the exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Current state.
    pub state: State,
    /// pid of the running neard.
    pub neard_pid: Option<u32>,
    /// Whether this node would take over now.
    pub may_take_over: bool,
}

/// Binds the exporter address; a clear error if it is taken.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        format!("cannot listen on KUUTAMO_EXPORTER_ADDRESS {addr}: {e}; choose a free address")
    })
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// 200 when `yes`, else 503; the body names the state either way.
fn role(yes: bool, state: State) -> Response<Full<Bytes>> {
    let status = if yes {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond(status, "text/plain", format!("{}\n", state.name()))
}

fn handle(
    req: &Request<Incoming>,
    metrics: &Metrics,
    published: &watch::Receiver<Published>,
) -> Response<Full<Bytes>> {
    let now = *published.borrow();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        (&Method::GET, "/health") => respond(
            StatusCode::OK,
            "text/plain",
            format!("{}\n", now.state.name()),
        ),
        (&Method::GET, "/leader") => role(now.state == State::Validating, now.state),
        (&Method::GET, "/standby") => role(now.may_take_over, now.state),
        (&Method::GET, "/neard-pid") => match now.neard_pid {
            Some(pid) => respond(StatusCode::OK, "text/plain", format!("{pid}\n")),
            None => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "neard is not running\n".into(),
            ),
        },
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves until the listener fails; each connection in its own task.
pub async fn serve(listener: TcpListener, metrics: Metrics, published: watch::Receiver<Published>) {
    let shared = Arc::new((metrics, published));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                log::warn!("exporter: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&req, &shared.0, &shared.1)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                log::debug!("exporter: connection error: {e}");
            }
        });
    }
}
