//! neard's `config.json`: the few fields kuutamod reads or sets, every other field preserved.
//!
//! The file is parsed as a generic JSON value (in its original key order) so that kuutamod never
//! drops or reorders settings it does not know, and it is written back atomically.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::fence::BlockDelays;
use crate::keys::write_atomic;

/// Errors reading or writing `config.json`. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Missing or unreadable.
    #[error("cannot read neard config {path}: {source}; run `neard --home <home> init` (or install the config) before starting kuutamod")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not JSON, or not an object.
    #[error("neard config {path} is not valid JSON: {reason}; fix the file (kuutamod needs plain JSON without comments)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A field kuutamod needs has the wrong type or value.
    #[error("neard config {path}: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error("cannot write neard config {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// neard's `config.json`, loaded.
#[derive(Debug, Clone)]
pub struct NeardConfig {
    path: PathBuf,
    home: PathBuf,
    value: Map<String, Value>,
}

impl NeardConfig {
    /// Loads `<home>/config.json`.
    pub fn load(home: &Path) -> Result<Self, ConfigError> {
        let path = home.join("config.json");
        let text = std::fs::read(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let value: Value = serde_json::from_slice(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let Value::Object(value) = value else {
            return Err(ConfigError::Parse {
                path,
                reason: "the top level is not an object".into(),
            });
        };
        let config = NeardConfig {
            path,
            home: home.to_owned(),
            value,
        };
        // Check now what the supervisor will need later.
        config.rpc_addr()?;
        config.file_name("validator_key_file", "validator_key.json")?;
        config.file_name("node_key_file", "node_key.json")?;
        config.block_delays()?;
        Ok(config)
    }

    /// The file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn field_error(&self, reason: String) -> ConfigError {
        ConfigError::Field {
            path: self.path.clone(),
            reason,
        }
    }

    /// Where to reach neard's RPC from this host: `rpc.addr`, with an unspecified address
    /// (`0.0.0.0`, `::`) replaced by loopback.
    pub fn rpc_addr(&self) -> Result<SocketAddr, ConfigError> {
        let addr = self
            .value
            .get("rpc")
            .and_then(|rpc| rpc.get("addr"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.field_error(
                    "rpc.addr is missing; kuutamod needs neard's RPC to watch it (set \"rpc\": {\"addr\": \"127.0.0.1:3030\"})".into(),
                )
            })?;
        let mut addr: SocketAddr = addr.parse().map_err(|_| {
            self.field_error(format!("rpc.addr {addr:?} is not an ip:port address"))
        })?;
        if addr.port() == 0 {
            return Err(self.field_error("rpc.addr has port 0, which neard refuses".into()));
        }
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        Ok(addr)
    }

    /// `consensus.min_block_production_delay` and `consensus.max_block_production_delay`
    /// (`{"secs": N, "nanos": M}`; neard's defaults when absent): how fast neard's largest
    /// approval target can grow, which the height fence counts in.
    pub fn block_delays(&self) -> Result<BlockDelays, ConfigError> {
        let min = self.consensus_duration("min_block_production_delay", BlockDelays::NEARD.min)?;
        let max = self.consensus_duration("max_block_production_delay", BlockDelays::NEARD.max)?;
        if max < min {
            return Err(self.field_error(format!(
                "consensus.max_block_production_delay ({max:?}) is below consensus.min_block_production_delay ({min:?}); neard needs min <= max"
            )));
        }
        Ok(BlockDelays { min, max })
    }

    fn consensus_duration(&self, field: &str, default: Duration) -> Result<Duration, ConfigError> {
        let Some(value) = self.value.get("consensus").and_then(|c| c.get(field)) else {
            return Ok(default);
        };
        let secs = value.get("secs").and_then(Value::as_u64);
        let nanos = match value.get("nanos") {
            None => Some(0),
            Some(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        };
        match (secs, nanos) {
            (Some(secs), Some(nanos)) if nanos < 1_000_000_000 && (secs, nanos) != (0, 0) => {
                Ok(Duration::new(secs, nanos))
            }
            _ => Err(self.field_error(format!(
                "consensus.{field} {value} is not a positive {{\"secs\": N, \"nanos\": M}} duration"
            ))),
        }
    }

    fn file_name(&self, field: &str, default: &str) -> Result<PathBuf, ConfigError> {
        match self.value.get(field) {
            None | Some(Value::Null) => Ok(self.home.join(default)),
            Some(Value::String(s)) if !s.is_empty() => Ok(self.home.join(s)),
            Some(other) => {
                Err(self.field_error(format!("{field} must be a file name, not {other}")))
            }
        }
    }

    /// Path of the validator key file neard loads (`validator_key_file`, relative to home).
    pub fn validator_key_path(&self) -> PathBuf {
        self.file_name("validator_key_file", "validator_key.json")
            .unwrap_or_else(|_| self.home.join("validator_key.json"))
    }

    /// Path of the node key file neard loads (`node_key_file`, relative to home).
    pub fn node_key_path(&self) -> PathBuf {
        self.file_name("node_key_file", "node_key.json")
            .unwrap_or_else(|_| self.home.join("node_key.json"))
    }

    fn object_mut(&mut self, key: &str) -> &mut Map<String, Value> {
        let entry = self
            .value
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        match entry {
            Value::Object(map) => map,
            _ => unreachable!("replaced by an object above"),
        }
    }

    /// Sets `network.addr`.
    pub fn set_network_addr(&mut self, addr: SocketAddr) {
        self.object_mut("network")
            .insert("addr".into(), Value::String(addr.to_string()));
    }

    /// The current `network.addr`, if set.
    pub fn network_addr(&self) -> Option<&str> {
        self.value.get("network")?.get("addr")?.as_str()
    }

    /// Sets a top-level field (used for shard-tracking settings).
    pub fn set_field(&mut self, key: &str, value: Value) {
        self.value.insert(key.to_string(), value);
    }

    /// Removes a top-level field.
    pub fn remove_field(&mut self, key: &str) {
        self.value.remove(key);
    }

    /// A top-level field.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.value.get(key)
    }

    /// Writes the config back atomically, keeping the file's permissions at 0644 like neard.
    pub fn save(&self) -> Result<(), ConfigError> {
        let mut text = serde_json::to_vec_pretty(&self.value).map_err(|e| ConfigError::Write {
            path: self.path.clone(),
            source: e.into(),
        })?;
        text.push(b'\n');
        write_atomic(&self.path, &text, 0o644).map_err(|source| ConfigError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("config.json"), config).expect("write");
        dir
    }

    #[test]
    fn rewrites_preserving_every_other_field() {
        let dir = home_with(
            r#"{"zeta": 1, "rpc": {"addr": "0.0.0.0:3030", "x": [1,2]}, "network": {"addr": "0.0.0.0:24567", "boot_nodes": "b"}, "alpha": {"deep": null}}"#,
        );
        let mut c = NeardConfig::load(dir.path()).expect("loads");
        assert_eq!(
            c.rpc_addr().expect("rpc"),
            "127.0.0.1:3030".parse().expect("addr")
        );
        c.set_network_addr("0.0.0.0:24568".parse().expect("addr"));
        c.save().expect("save");
        let text = std::fs::read_to_string(dir.path().join("config.json")).expect("read");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["network"]["addr"], "0.0.0.0:24568");
        assert_eq!(v["network"]["boot_nodes"], "b");
        assert_eq!(v["rpc"]["x"], serde_json::json!([1, 2]));
        assert_eq!(v["alpha"]["deep"], Value::Null);
        // key order is kept
        assert!(text.find("zeta") < text.find("alpha"));
        assert_eq!(
            c.validator_key_path(),
            dir.path().join("validator_key.json")
        );
        assert_eq!(c.block_delays().expect("default"), BlockDelays::NEARD);
        let dir = home_with(
            r#"{"rpc": {"addr": "127.0.0.1:1"}, "consensus": {"min_block_production_delay": {"secs": 1, "nanos": 300000000}}}"#,
        );
        let c = NeardConfig::load(dir.path()).expect("loads");
        assert_eq!(
            c.block_delays().expect("set"),
            BlockDelays {
                min: Duration::from_millis(1300),
                max: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn bad_configs_name_the_file() {
        let missing = tempfile::tempdir().expect("tempdir");
        let err = NeardConfig::load(missing.path())
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("config.json") && err.contains("init"), "{err}");
        for (text, expect) in [
            ("{ // comment\n}", "not valid JSON"),
            ("[1]", "not an object"),
            ("{}", "rpc.addr is missing"),
            (r#"{"rpc": {"addr": "localhost"}}"#, "not an ip:port"),
            (r#"{"rpc": {"addr": "127.0.0.1:0"}}"#, "port 0"),
            (
                r#"{"rpc": {"addr": "127.0.0.1:1"}, "node_key_file": 5}"#,
                "node_key_file",
            ),
            (
                r#"{"rpc": {"addr": "127.0.0.1:1"}, "consensus": {"min_block_production_delay": 600}}"#,
                "min_block_production_delay",
            ),
            (
                r#"{"rpc": {"addr": "127.0.0.1:1"}, "consensus": {"min_block_production_delay": {"secs": 0, "nanos": 0}}}"#,
                "min_block_production_delay",
            ),
            (
                r#"{"rpc": {"addr": "127.0.0.1:1"}, "consensus": {"min_block_production_delay": {"secs": 3}}}"#,
                "max_block_production_delay",
            ),
        ] {
            let dir = home_with(text);
            let err = NeardConfig::load(dir.path())
                .expect_err("must fail")
                .to_string();
            assert!(
                err.contains(expect) && err.contains("config.json"),
                "{err} for {text}"
            );
        }
    }
}
