//! neard's home as kuutamod prepares it for a role: which node key, which network address,
//! which shard tracking, and whether the validator key is there.
//!
//! The validator key is written only for [`Role::Validator`] and removed for every other start,
//! so a neard started as voter can never find a key left behind by an earlier run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::keys::KeyFile;
use crate::neard::config::NeardConfig;
use crate::neard::Role;
use crate::neard::{FailoverMode, ShardTracking};

/// What kuutamod writes into neard's home.
#[derive(Debug, Clone)]
pub struct Home {
    pub(crate) dir: PathBuf,
    pub(crate) fallback: NeardConfig,
    pub(crate) failover_mode: FailoverMode,
    pub(crate) validator_key: KeyFile,
    pub(crate) validator_node_key: Option<KeyFile>,
    pub(crate) voter_node_key: KeyFile,
    pub(crate) validator_addr: SocketAddr,
    pub(crate) voter_addr: SocketAddr,
    pub(crate) shard_tracking: ShardTracking,
    pub(crate) account: String,
}

impl Home {
    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// config.json as it is now, or as read at start if it cannot be read now.
    fn config(&self) -> NeardConfig {
        match NeardConfig::load(&self.dir) {
            Ok(c) => c,
            Err(e) => {
                log::error!("{e}; using the config.json read at start");
                self.fallback.clone()
            }
        }
    }

    /// Where neard reads the validator key.
    pub fn validator_key_path(&self) -> PathBuf {
        self.config().validator_key_path()
    }

    /// Writes the validator key (hot swap).
    pub fn install_key(&self) -> anyhow::Result<()> {
        self.validator_key.install(&self.validator_key_path())?;
        Ok(())
    }

    /// Removes the validator key, durably; true if there was one.
    pub fn remove_key(&self) -> anyhow::Result<bool> {
        let path = self.validator_key_path();
        crate::keys::remove_durably(&path)
            .map_err(|e| anyhow::anyhow!("cannot remove the validator key {}: {e}", path.display()))
    }

    /// Writes the home for `role`: keys, network address, shard tracking.
    pub fn prepare(&self, role: Role) -> anyhow::Result<()> {
        let mut config = self.config();
        let validator_key = config.validator_key_path();
        let node_key = config.node_key_path();
        let (addr, node) = match role {
            Role::Voter => (self.voter_addr, &self.voter_node_key),
            Role::Validator => match (self.failover_mode, &self.validator_node_key) {
                (FailoverMode::Restart, Some(key)) => (self.validator_addr, key),
                // A hot swap cannot change the node key or address of a running neard, so in
                // hot-swap mode the host keeps its own identity in both roles (also when a
                // failed hot swap falls back to a restart).
                _ => (self.voter_addr, &self.voter_node_key),
            },
        };
        if role == Role::Voter {
            crate::keys::remove_durably(&validator_key)
                .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", validator_key.display()))?;
        }
        node.install(&node_key)?;
        config.set_network_addr(addr);
        match self.shard_tracking {
            ShardTracking::None => {}
            ShardTracking::ShadowValidator => {
                config.set_field(
                    "tracked_shards_config",
                    serde_json::json!({ "ShadowValidator": self.account }),
                );
            }
            ShardTracking::TrackedShadowValidator => {
                config.set_field("tracked_shadow_validator", serde_json::json!(self.account));
                config.set_field("tracked_shards", serde_json::json!([]));
            }
        }
        config.save()?;
        if role == Role::Validator {
            self.validator_key.install(&validator_key)?;
        }
        Ok(())
    }
}
