//! Which lock store, and where etcd is and with what: `KUUTAMO_LOCK_BACKEND` (`consul`, the
//! default, or `etcd`), `KUUTAMO_ETCD_ENDPOINTS`, its TLS files and its user and password file.
//! kuutamod and kuutamoctl share the flags ([`StoreFlags`]) and their resolution
//! ([`StoreAccess::resolve`]).

use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::ConsulAccess;
use crate::etcd::{Credentials, Etcd, Tls};
use crate::store::Store;

/// etcd's endpoint when `KUUTAMO_ETCD_ENDPOINTS` names none: the local member, at etcd's
/// default client port.
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";

/// Which store holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockBackend {
    /// Consul's sessions and KV store.
    Consul,
    /// etcd's leases and KV store (v3 API, etcd >= 3.4).
    Etcd,
}

/// The lock-store flags besides Consul's own (which each binary declares as it always has).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreFlags {
    /// The lock store: consul or etcd. Every node of a cluster must use the same one.
    #[arg(
        long,
        global = true,
        env = "KUUTAMO_LOCK_BACKEND",
        value_enum,
        default_value = "consul"
    )]
    pub lock_backend: LockBackend,
    /// etcd's client URLs, comma-separated (http:// or https://): the local member first
    /// [default: http://127.0.0.1:2379].
    #[arg(long, global = true, env = "KUUTAMO_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// PEM file of the CA that signed the etcd members' certificates.
    #[arg(long, global = true, env = "KUUTAMO_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd's client certificate authentication.
    #[arg(long, global = true, env = "KUUTAMO_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate (a credential: e.g.
    /// $CREDENTIALS_DIRECTORY/etcd_client_key).
    #[arg(long, global = true, env = "KUUTAMO_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user (etcd's authentication); needs KUUTAMO_ETCD_PASSWORD_FILE.
    #[arg(long, global = true, env = "KUUTAMO_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (a credential: e.g.
    /// $CREDENTIALS_DIRECTORY/etcd_password).
    #[arg(long, global = true, env = "KUUTAMO_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

/// How to reach etcd: endpoints, TLS files and credentials, checked.
#[derive(Debug, Clone)]
pub struct EtcdAccess {
    /// Client URLs, in order.
    pub endpoints: Vec<String>,
    /// The setting the endpoints came from, for messages.
    pub endpoints_from: &'static str,
    /// CA file.
    pub ca_file: Option<PathBuf>,
    /// Client certificate file.
    pub cert_file: Option<PathBuf>,
    /// Client key file.
    pub key_file: Option<PathBuf>,
    /// User and password (read from its file).
    pub credentials: Option<Credentials>,
}

/// Checks the endpoints `KUUTAMO_ETCD_ENDPOINTS` gave: comma-separated http(s) URLs with a host.
pub fn etcd_endpoints(given: Option<&str>) -> Result<(Vec<String>, &'static str), String> {
    let Some(list) = given.filter(|l| !l.trim().is_empty()) else {
        return Ok((vec![DEFAULT_ETCD_ENDPOINT.to_string()], "the default"));
    };
    let var = "KUUTAMO_ETCD_ENDPOINTS";
    let mut endpoints = Vec::new();
    for e in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = reqwest::Url::parse(e).map_err(|err| {
            format!("{var}: {e:?} is not a URL ({err}); e.g. {DEFAULT_ETCD_ENDPOINT},http://10.0.0.2:2379")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!(
                "{var}: {e:?} must be an http:// or https:// client URL with a host"
            ));
        }
        if parsed.path() != "/" {
            return Err(format!(
                "{var}: {e:?} has a path; give the member's client URL (scheme, host and port)"
            ));
        }
        endpoints.push(e.trim_end_matches('/').to_string());
    }
    if endpoints.is_empty() {
        return Err(format!("{var}={list:?} names no endpoint"));
    }
    Ok((endpoints, var))
}

/// The etcd user and its password from the file: both or neither.
pub fn etcd_credentials(
    user: Option<&str>,
    password_file: Option<&Path>,
) -> Result<Option<Credentials>, String> {
    match (user.filter(|u| !u.is_empty()), password_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(
            "KUUTAMO_ETCD_USER is set without KUUTAMO_ETCD_PASSWORD_FILE: name the file holding its password"
                .into(),
        ),
        (None, Some(p)) => Err(format!(
            "KUUTAMO_ETCD_PASSWORD_FILE={} is set without KUUTAMO_ETCD_USER: name the etcd user",
            p.display()
        )),
        (Some(user), Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!("cannot read KUUTAMO_ETCD_PASSWORD_FILE {}: {e}", path.display())
            })?;
            let password = text.trim_end_matches(['\n', '\r']).to_string();
            if password.is_empty() {
                return Err(format!(
                    "KUUTAMO_ETCD_PASSWORD_FILE {} is empty: it must hold the password of etcd user {user:?}",
                    path.display()
                ));
            }
            Ok(Some(Credentials {
                user: user.to_string(),
                password,
            }))
        }
    }
}

impl EtcdAccess {
    /// Resolves and checks the endpoints, TLS files and credentials (reading every file), or
    /// one line naming the setting at fault.
    pub fn resolve(flags: &StoreFlags) -> Result<Self, String> {
        let (endpoints, endpoints_from) = etcd_endpoints(flags.etcd_endpoints.as_deref())?;
        let credentials = etcd_credentials(
            flags.etcd_user.as_deref(),
            flags.etcd_password_file.as_deref(),
        )?;
        let access = EtcdAccess {
            endpoints,
            endpoints_from,
            ca_file: flags.etcd_ca_file.clone(),
            cert_file: flags.etcd_cert_file.clone(),
            key_file: flags.etcd_key_file.clone(),
            credentials,
        };
        access.client().map_err(|e| format!("{e:#}"))?;
        Ok(access)
    }

    /// A client for these members.
    pub fn client(&self) -> anyhow::Result<Etcd> {
        Etcd::new(
            &self.endpoints,
            Tls {
                ca_file: self.ca_file.as_deref(),
                cert_file: self.cert_file.as_deref(),
                key_file: self.key_file.as_deref(),
            },
            self.credentials.clone(),
        )
    }
}

/// Where the lock store is: Consul's settings or etcd's, as `KUUTAMO_LOCK_BACKEND` says.
#[derive(Debug, Clone)]
pub enum StoreAccess {
    /// Consul.
    Consul(ConsulAccess),
    /// etcd.
    Etcd(EtcdAccess),
}

impl StoreAccess {
    /// Resolves the store `flags` name: etcd's settings, or Consul's through `consul` (only
    /// called for Consul, so that stray Consul variables never stop an etcd node).
    pub fn resolve(
        flags: &StoreFlags,
        consul: impl FnOnce() -> Result<ConsulAccess, String>,
    ) -> Result<Self, String> {
        match flags.lock_backend {
            LockBackend::Consul => consul().map(StoreAccess::Consul),
            LockBackend::Etcd => EtcdAccess::resolve(flags).map(StoreAccess::Etcd),
        }
    }

    /// A client.
    pub fn client(&self) -> anyhow::Result<Store> {
        Ok(match self {
            StoreAccess::Consul(c) => Store::Consul(c.client()?),
            StoreAccess::Etcd(e) => Store::Etcd(e.client()?),
        })
    }

    /// Where it is, for messages: Consul's URL, or etcd's endpoints.
    pub fn location(&self) -> String {
        match self {
            StoreAccess::Consul(c) => format!("Consul at {}", c.url),
            StoreAccess::Etcd(e) => format!("etcd at {}", e.endpoints.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_and_named() {
        assert_eq!(
            etcd_endpoints(None).expect("default").0,
            vec![DEFAULT_ETCD_ENDPOINT.to_string()]
        );
        let (e, from) =
            etcd_endpoints(Some("http://10.0.0.1:2379, https://etcd-b:2379/")).expect("valid");
        assert_eq!(e, vec!["http://10.0.0.1:2379", "https://etcd-b:2379"]);
        assert_eq!(from, "KUUTAMO_ETCD_ENDPOINTS");
        for bad in [
            "10.0.0.1:2379",
            "unix:///run/etcd.sock",
            "http://x:2379/v3",
            " , ",
        ] {
            let err = etcd_endpoints(Some(bad)).expect_err(bad);
            assert!(err.starts_with("KUUTAMO_ETCD_ENDPOINTS"), "{err}");
        }
    }

    #[test]
    fn credentials_need_both_and_never_show_the_password() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").expect("write");
        let c = etcd_credentials(Some("kuutamod"), Some(&file))
            .expect("valid")
            .expect("some");
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("kuutamod", "s3cret")
        );
        let err = etcd_credentials(Some("kuutamod"), None).expect_err("no file");
        assert!(err.contains("KUUTAMO_ETCD_PASSWORD_FILE"), "{err}");
        let err = etcd_credentials(None, Some(&file)).expect_err("no user");
        assert!(err.contains("KUUTAMO_ETCD_USER"), "{err}");
        let missing = dir.path().join("missing");
        let err = etcd_credentials(Some("u"), Some(&missing)).expect_err("missing");
        assert!(err.contains("missing") && !err.contains("s3cret"), "{err}");
        std::fs::write(&file, "\n").expect("write");
        let err = etcd_credentials(Some("u"), Some(&file)).expect_err("empty");
        assert!(err.contains("is empty"), "{err}");
    }
}
