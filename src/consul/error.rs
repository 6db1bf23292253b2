//! What can go wrong talking to Consul, each error naming the endpoint and the cause.

/// Consul errors that callers branch on. Each names the endpoint and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The session does not exist (any more).
    #[error("Consul session {0} no longer exists")]
    SessionGone(String),
    /// A transaction's check failed, or its lock was refused: the key is not as expected.
    #[error("Consul at {url} refused the transaction: {what}")]
    Rejected {
        /// The endpoint.
        url: String,
        /// Consul's reason.
        what: String,
    },
    /// Consul could not be reached or did not answer in time.
    #[error("Consul at {url} is unreachable: {}", describe_transport(source))]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// Consul refused the request for its ACL token (HTTP 403): the token is unknown (`ACL not
    /// found`) or its policy lacks the permission (`Permission denied`).
    #[error("Consul at {url} denied the request ({reason}): check the ACL token and its policy")]
    Denied {
        /// The endpoint.
        url: String,
        /// Consul's answer.
        reason: String,
    },
    /// Consul answered with an error status.
    #[error("Consul at {url} answered {status}: {body}")]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The body, cut short.
        body: String,
    },
    /// The answer could not be parsed.
    #[error("Consul at {url} sent an unexpected answer: {reason}")]
    Garbage {
        /// The endpoint.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

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
