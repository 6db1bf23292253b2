//! Run-time tuning from `NEARD_SIM_*` environment variables.
//!
//! kuutamod spawns `neard-sim --home H run` and the child inherits kuutamod's environment, so
//! a test tunes the simulator by setting these on the kuutamod process.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default of the ignored `NEARD_SIM_BLOCK_TIME_MS` (kept so old environments still parse).
pub const DEFAULT_BLOCK_TIME: Duration = Duration::from_millis(100);
/// Default delay before RPC and the network listener come up (real neard: seconds on a
/// localnet).
pub const DEFAULT_BOOT_DELAY: Duration = Duration::from_millis(1000);
/// Default time `syncing` stays true after boot.
pub const DEFAULT_SYNC_DELAY: Duration = Duration::ZERO;
/// Default time between SIGTERM and exit.
pub const DEFAULT_STOP_DELAY: Duration = Duration::ZERO;
/// Default time between SIGHUP and the reload taking effect (neard's client actor polls its
/// config updater sub-second).
pub const DEFAULT_RELOAD_DELAY: Duration = Duration::from_millis(50);
/// Default extra time a dropped key keeps signing.
pub const DEFAULT_KEY_DROP_DELAY: Duration = Duration::ZERO;

/// The simulator's tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `NEARD_SIM_BLOCK_TIME_MS`: the old clock-driven block time. Accepted and ignored: heights
    /// now come from the chain (doomslug timers in config.json `consensus`).
    pub block_time: Duration,
    /// `NEARD_SIM_CHAIN` (or `run --chain`): the chain process's Unix socket. Unset: the node
    /// embeds a private chain built from its home's genesis.
    pub chain: Option<PathBuf>,
    /// `NEARD_SIM_BOOT_DELAY_MS`: RPC is refused until this has passed.
    pub boot_delay: Duration,
    /// `NEARD_SIM_SYNC_DELAY_MS`: `syncing: true` for this long after boot.
    pub sync_delay: Duration,
    /// `NEARD_SIM_STOP_DELAY_MS`: SIGTERM/SIGINT exit after this.
    pub stop_delay: Duration,
    /// `NEARD_SIM_RELOAD_DELAY_MS`: SIGHUP takes effect after this.
    pub reload_delay: Duration,
    /// `NEARD_SIM_KEY_DROP_DELAY_MS`: a removed key keeps signing this much longer.
    pub key_drop_delay: Duration,
    /// `NEARD_SIM_LEDGER` (or `run --ledger`): where signed heights are appended; none = no
    /// ledger.
    pub ledger: Option<PathBuf>,
    /// `NEARD_SIM_NODE_ID`: the node id in ledger lines (default `<hostname>:<home>`).
    pub node_id: String,
    /// `NEARD_SIM_CONTROL`: the control file (default `<home>/neard-sim-control.json`).
    pub control: PathBuf,
}

/// A malformed environment variable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {name}={value:?} is not a number of milliseconds")]
pub struct SettingsError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
}

impl Settings {
    /// Settings from a variable lookup (`std::env::var` in the binary; a map in tests).
    pub fn from_lookup(
        home: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, SettingsError> {
        let ms = |name: &'static str, default: Duration| -> Result<Duration, SettingsError> {
            match lookup(name) {
                None => Ok(default),
                Some(value) => value
                    .trim()
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| SettingsError { name, value }),
            }
        };
        let mut block_time = ms("NEARD_SIM_BLOCK_TIME_MS", DEFAULT_BLOCK_TIME)?;
        if block_time.is_zero() {
            block_time = Duration::from_millis(1);
        }
        let node_id = lookup("NEARD_SIM_NODE_ID").unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", home.display())
        });
        Ok(Settings {
            block_time,
            chain: lookup("NEARD_SIM_CHAIN")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            boot_delay: ms("NEARD_SIM_BOOT_DELAY_MS", DEFAULT_BOOT_DELAY)?,
            sync_delay: ms("NEARD_SIM_SYNC_DELAY_MS", DEFAULT_SYNC_DELAY)?,
            stop_delay: ms("NEARD_SIM_STOP_DELAY_MS", DEFAULT_STOP_DELAY)?,
            reload_delay: ms("NEARD_SIM_RELOAD_DELAY_MS", DEFAULT_RELOAD_DELAY)?,
            key_drop_delay: ms("NEARD_SIM_KEY_DROP_DELAY_MS", DEFAULT_KEY_DROP_DELAY)?,
            ledger: lookup("NEARD_SIM_LEDGER")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            node_id,
            control: lookup("NEARD_SIM_CONTROL")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(crate::control::DEFAULT_FILE)),
        })
    }

    /// Settings from the process environment.
    pub fn from_env(home: &Path) -> Result<Settings, SettingsError> {
        Settings::from_lookup(home, |name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let home = Path::new("/h");
        let s = Settings::from_lookup(home, |_| None).expect("defaults");
        assert_eq!(s.block_time, DEFAULT_BLOCK_TIME);
        assert_eq!(s.control, home.join("neard-sim-control.json"));
        assert!(s.node_id.ends_with(":/h"));
        assert_eq!(s.ledger, None);
        let s = Settings::from_lookup(home, |n| match n {
            "NEARD_SIM_BLOCK_TIME_MS" => Some("250".into()),
            "NEARD_SIM_NODE_ID" => Some("a".into()),
            _ => None,
        })
        .expect("set");
        assert_eq!(s.block_time, Duration::from_millis(250));
        assert_eq!(s.node_id, "a");
        let e = Settings::from_lookup(home, |n| {
            (n == "NEARD_SIM_BOOT_DELAY_MS").then(|| "soon".into())
        });
        assert!(e.is_err());
    }
}
