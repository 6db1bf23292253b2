//! Where Consul is and with what: kuutamo's own settings first, then the consul CLI's
//! variables (`CONSUL_HTTP_ADDR`, `CONSUL_HTTP_SSL`, `CONSUL_CACERT`, `CONSUL_HTTP_TOKEN_FILE`,
//! `CONSUL_HTTP_TOKEN`), read as the consul CLI reads them. kuutamod and kuutamoctl share it.

use std::path::{Path, PathBuf};

/// Consul's address when neither `KUUTAMO_CONSUL_URL` nor `CONSUL_HTTP_ADDR` names one: the
/// local agent, as the consul CLI assumes.
pub const DEFAULT_CONSUL_URL: &str = "http://localhost:8500";

/// Checks a Consul URL that `var` gave: http(s), with a host.
pub fn check_consul_url(var: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{var}={url:?} is not a URL ({e}); e.g. {DEFAULT_CONSUL_URL}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!(
            "{var}={url:?} must be an http:// or https:// URL with a host"
        ));
    }
    Ok(())
}

/// A non-empty environment variable.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Go's `strconv.ParseBool`, which the consul CLI reads `CONSUL_HTTP_SSL` with.
fn go_bool(var: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{var}={value:?} is not a boolean (true or false)")),
    }
}

/// The URL that `CONSUL_HTTP_ADDR` means to the consul CLI (hashicorp/consul `api/api.go`,
/// `DefaultConfig` and `NewClient`): `host:port`, `http://host:port` or `https://host:port`
/// (with an optional path prefix); without a scheme, https when `CONSUL_HTTP_SSL` is true;
/// `CONSUL_HTTP_SSL` true also turns an `http://` address into https. A `unix://` socket is
/// refused: kuutamod speaks to Consul over TCP.
pub fn consul_http_addr(addr: &str, ssl: bool) -> Result<String, String> {
    let (scheme, rest) = match addr.split_once("://") {
        None => (if ssl { "https" } else { "http" }, addr),
        Some(("http", rest)) => (if ssl { "https" } else { "http" }, rest),
        Some(("https", rest)) => ("https", rest),
        Some(("unix", _)) => {
            return Err(format!(
                "CONSUL_HTTP_ADDR={addr:?} is a Unix socket, which kuutamod and kuutamoctl cannot use; \
                 set KUUTAMO_CONSUL_URL to the agent's HTTP address, e.g. {DEFAULT_CONSUL_URL}"
            ))
        }
        Some((other, _)) => {
            return Err(format!(
                "CONSUL_HTTP_ADDR={addr:?} has the unknown scheme {other:?}; use http or https"
            ))
        }
    };
    Ok(format!("{scheme}://{rest}"))
}

/// Consul's URL and which setting gave it: `given` (`--consul-url`, `KUUTAMO_CONSUL_URL`),
/// else `CONSUL_HTTP_ADDR` (and `CONSUL_HTTP_SSL`) as the consul CLI reads them, else
/// [`DEFAULT_CONSUL_URL`].
pub fn consul_url(given: Option<&str>) -> Result<(String, &'static str), String> {
    if let Some(url) = given.filter(|u| !u.is_empty()) {
        check_consul_url("KUUTAMO_CONSUL_URL", url)?;
        return Ok((url.to_string(), "KUUTAMO_CONSUL_URL"));
    }
    if let Some(addr) = env_var("CONSUL_HTTP_ADDR") {
        let ssl = match env_var("CONSUL_HTTP_SSL") {
            Some(v) => go_bool("CONSUL_HTTP_SSL", &v)?,
            None => false,
        };
        let url = consul_http_addr(&addr, ssl)?;
        check_consul_url("CONSUL_HTTP_ADDR", &url)?;
        return Ok((url, "CONSUL_HTTP_ADDR"));
    }
    Ok((DEFAULT_CONSUL_URL.to_string(), "the default"))
}

/// The ACL token, kuutamod's own settings first: the flag/`KUUTAMO_CONSUL_TOKEN`, else the
/// file `KUUTAMO_CONSUL_TOKEN_FILE`, else the consul CLI's `CONSUL_HTTP_TOKEN_FILE`, else its
/// `CONSUL_HTTP_TOKEN`. (So an operator's shell with a management token in
/// `CONSUL_HTTP_TOKEN` still uses the kuutamoctl token file it names.)
pub fn consul_token(given: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(t) = given.filter(|t| !t.is_empty()) {
        return Ok(Some(t.to_string()));
    }
    let read = |var: &str, path: &Path| -> Result<Option<String>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {var} {}: {e}", path.display()))?;
        Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty()))
    };
    if let Some(path) = file {
        return read("KUUTAMO_CONSUL_TOKEN_FILE", path);
    }
    if let Some(path) = env_var("CONSUL_HTTP_TOKEN_FILE") {
        return read("CONSUL_HTTP_TOKEN_FILE", Path::new(&path));
    }
    Ok(env_var("CONSUL_HTTP_TOKEN"))
}

/// The CA file for Consul's HTTPS and which setting gave it: `given`
/// (`KUUTAMO_CONSUL_CA_FILE`), else the consul CLI's `CONSUL_CACERT`.
pub fn consul_ca_file(given: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    match given {
        Some(p) => Some((p.to_owned(), "KUUTAMO_CONSUL_CA_FILE")),
        None => env_var("CONSUL_CACERT").map(|p| (PathBuf::from(p), "CONSUL_CACERT")),
    }
}

/// How to reach Consul: URL, token and CA, each resolved as the functions above say.
#[derive(Debug, Clone)]
pub struct ConsulAccess {
    /// Consul's base URL.
    pub url: String,
    /// The setting the URL came from (`KUUTAMO_CONSUL_URL`, `CONSUL_HTTP_ADDR`, `the
    /// default`), for messages.
    pub url_from: &'static str,
    /// The ACL token.
    pub token: Option<String>,
    /// The CA file, checked to hold PEM certificates.
    pub ca_file: Option<PathBuf>,
}

/// Where Consul is and how to talk to it: the flags kuutamod and kuutamoctl share (global, so
/// that kuutamoctl takes them before or after its command).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConsulFlags {
    /// Consul HTTP API (http or https) [default: $CONSUL_HTTP_ADDR, else
    /// http://localhost:8500].
    #[arg(long, global = true, env = "KUUTAMO_CONSUL_URL")]
    pub consul_url: Option<String>,
    /// Consul ACL token [default: the token file, else $CONSUL_HTTP_TOKEN_FILE, else
    /// $CONSUL_HTTP_TOKEN].
    #[arg(
        long,
        global = true,
        env = "KUUTAMO_CONSUL_TOKEN",
        hide_env_values = true
    )]
    pub consul_token: Option<String>,
    /// File holding the Consul ACL token.
    #[arg(long, global = true, env = "KUUTAMO_CONSUL_TOKEN_FILE")]
    pub consul_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed Consul's HTTPS certificate, for an https URL with a
    /// private CA [default: $CONSUL_CACERT].
    #[arg(long, global = true, env = "KUUTAMO_CONSUL_CA_FILE")]
    pub consul_ca_file: Option<PathBuf>,
}

impl ConsulFlags {
    /// The flags resolved and checked ([`ConsulAccess::resolve`]).
    pub fn access(&self) -> Result<ConsulAccess, String> {
        ConsulAccess::resolve(
            self.consul_url.as_deref(),
            self.consul_token.as_deref(),
            self.consul_token_file.as_deref(),
            self.consul_ca_file.as_deref(),
        )
    }
}

impl ConsulAccess {
    /// Resolves and checks the URL, token and CA file (reading both files), or one line naming
    /// the setting at fault.
    pub fn resolve(
        url: Option<&str>,
        token: Option<&str>,
        token_file: Option<&Path>,
        ca_file: Option<&Path>,
    ) -> Result<Self, String> {
        let (url, url_from) = consul_url(url)?;
        let token = consul_token(token, token_file)?;
        let ca = consul_ca_file(ca_file);
        if let Some((path, var)) = &ca {
            crate::consul::Consul::with_ca(&url, None, Some(path))
                .map_err(|e| format!("{var}: {e:#}"))?;
        }
        Ok(ConsulAccess {
            url,
            url_from,
            token,
            ca_file: ca.map(|(p, _)| p),
        })
    }

    /// A client for this Consul.
    pub fn client(&self) -> anyhow::Result<crate::consul::Consul> {
        crate::consul::Consul::with_ca(&self.url, self.token.clone(), self.ca_file.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let var = "KUUTAMO_CONSUL_URL";
        assert!(check_consul_url(var, "http://localhost:8500").is_ok());
        assert!(check_consul_url(var, "https://consul.example:8501").is_ok());
        assert!(check_consul_url(var, "localhost:8500").is_err());
        let err = check_consul_url("CONSUL_HTTP_ADDR", "ftp://x").expect_err("ftp");
        assert!(err.starts_with("CONSUL_HTTP_ADDR="), "{err}");
    }

    #[test]
    fn consul_http_addr_reads_as_the_consul_cli_reads_it() {
        let ok = |addr, ssl| consul_http_addr(addr, ssl).expect("valid");
        assert_eq!(ok("127.0.0.1:8500", false), "http://127.0.0.1:8500");
        assert_eq!(ok("127.0.0.1:8500", true), "https://127.0.0.1:8500");
        assert_eq!(ok("http://consul:8500", false), "http://consul:8500");
        // "Never revert to http if TLS was explicitly requested."
        assert_eq!(ok("http://consul:8500", true), "https://consul:8500");
        assert_eq!(ok("https://consul:8501", false), "https://consul:8501");
        assert_eq!(ok("https://gw/consul", false), "https://gw/consul");
        let err = consul_http_addr("unix:///run/consul.sock", false).expect_err("unix");
        assert!(
            err.contains("Unix socket") && err.contains("KUUTAMO_CONSUL_URL"),
            "{err}"
        );
        assert!(consul_http_addr("tcp://x:1", false).is_err());
        assert_eq!(go_bool("V", "TRUE"), Ok(true));
        assert_eq!(go_bool("V", "0"), Ok(false));
        assert!(go_bool("V", "yes").is_err());
    }
}
