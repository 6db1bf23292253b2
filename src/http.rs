//! What went wrong on an HTTP connection, in words for the operator: shared by kuutamod's
//! three HTTP clients (Consul, etcd's JSON gateway and neard's RPC).

/// Names the cause of a transport error: refused, timed out, TLS, DNS, reset, with the chain
/// of underlying errors (reqwest's own message alone says only "error sending request").
pub fn describe_transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else if e.is_request() {
        "the request failed"
    } else {
        "transport error"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = s.source();
    }
    if causes.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({})", causes.join(": "))
    }
}
