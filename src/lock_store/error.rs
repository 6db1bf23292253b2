//! What can go wrong talking to the lock store (Consul or etcd), each error naming the endpoint
//! and the cause. One type for both backends and for every implementation of
//! [`LockStore`](crate::lock_store::LockStore), so that the supervisor, kuutamoctl and
//! `kuutamod --check` branch on the cause the same way whichever store answers;
//! [`ConsulError`](crate::consul::ConsulError) is this type under its old name (the Consul
//! client and the simulation's model of Consul still call it that).

/// Lock-store errors that callers branch on. Each names the endpoint and the cause; the
/// store's name in the message comes from the endpoint's API path ([`store_of`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The session (Consul) or lease (etcd) does not exist (any more).
    #[error("lock-store session {0} no longer exists")]
    SessionGone(String),
    /// A transaction's check failed, or its lock was refused: the key is not as expected.
    #[error("{} at {url} refused the transaction: {what}", store_of(url))]
    Rejected {
        /// The endpoint.
        url: String,
        /// The store's reason.
        what: String,
    },
    /// The store could not be reached or did not answer in time.
    #[error(
        "{} at {url} is unreachable: {}",
        store_of(url),
        crate::http::describe_transport(source)
    )]
    Unreachable {
        /// The endpoint.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The store refused the request for its credentials: Consul's ACL token is unknown (`ACL
    /// not found`) or its policy lacks the permission (`Permission denied`), HTTP 403; etcd's
    /// user or password is wrong, or the user's role lacks the permission.
    #[error(
        "{} at {url} denied the request ({reason}): {}",
        store_of(url),
        denied_hint(url)
    )]
    Denied {
        /// The endpoint.
        url: String,
        /// The store's answer.
        reason: String,
    },
    /// The store answered with an error status.
    #[error("{} at {url} answered {status}: {body}", store_of(url))]
    Status {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The body, cut short.
        body: String,
    },
    /// The answer could not be parsed.
    #[error("{} at {url} sent an unexpected answer: {reason}", store_of(url))]
    Garbage {
        /// The endpoint.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

/// Which store an endpoint URL belongs to, by its API path: etcd's JSON gateway serves `/v3/`,
/// Consul's HTTP API `/v1/`.
pub fn store_of(url: &str) -> &'static str {
    if url.contains("/v3/") {
        "etcd"
    } else {
        "Consul"
    }
}

/// What to check when the store denied a request.
fn denied_hint(url: &str) -> &'static str {
    if url.contains("/v3/") {
        "check KUUTAMO_ETCD_USER, the password in KUUTAMO_ETCD_PASSWORD_FILE and the user's role (docs/operations.md, etcd)"
    } else {
        "check the ACL token and its policy"
    }
}
