//! Fault knobs, turned at run time through a control file.
//!
//! A test writes a [`Control`] (JSON) to the control file (default
//! `<home>/neard-sim-control.json`, or `NEARD_SIM_CONTROL`); the simulator polls the file's
//! metadata every [`POLL_INTERVAL`] and applies a changed file at once. An absent file means
//! all knobs off. [`Control::write`] replaces the file atomically, so the simulator never
//! reads half a file.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often the simulator checks the control file. Short enough that a knob takes effect
/// well within one default block time (100 ms); a `stat` is cheap.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// File name of the control file in the home, unless `NEARD_SIM_CONTROL` says otherwise.
pub const DEFAULT_FILE: &str = "neard-sim-control.json";

/// What `GET /status` and JSON-RPC `status` do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusMode {
    /// Answer normally.
    #[default]
    Ok,
    /// Never answer (the connection stays open; the client must time out).
    Hang,
    /// `/status`: HTTP 503 with an empty body; JSON-RPC `status`: an internal error.
    Error503,
}

/// The fault knobs. Every field is optional in the file; the default is "no fault".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Control {
    /// Report `syncing: true` (and fail the health check), and stop signing.
    pub force_syncing: bool,
    /// Behaviour of `/status` and JSON-RPC `status`.
    pub status: StatusMode,
    /// Ignore SIGHUP (log it, reload nothing), like a neard too old to hot-swap keys.
    pub ignore_sighup: bool,
    /// Wedge the process: no HTTP answers, no signing, the network listener stops accepting,
    /// and signals are deferred until the knob is turned off again.
    pub freeze: bool,
    /// Abort the process at once (SIGABRT), like a crash.
    pub abort: bool,
    /// The chain stalls for this node: the head stops advancing and nothing is signed, while
    /// RPC keeps answering, so `/health` turns 503 after `max_block_production_delay` × 10.
    /// (An addition to the knobs named in the issue.)
    pub stall: bool,
    /// This node receives everything from the chain this many milliseconds late (its head
    /// lags the chain); what it sends is not delayed.
    pub lag_ms: u64,
    /// Cut off the chain, like a partitioned neard: nothing is received, nothing sent arrives,
    /// but the node still signs what its own doomslug says (into the ledger). Turned off, the
    /// node says hello again and jumps to the chain's head.
    pub network_offline: bool,
}

/// Why a control file could not be read. Names the file.
#[derive(Debug, thiserror::Error)]
#[error("control file {path}: {reason}")]
pub struct ControlError {
    /// The control file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

impl Control {
    /// Reads the control file; an absent file gives the default (all off).
    pub fn read(path: &Path) -> Result<Control, ControlError> {
        let err = |reason: String| ControlError {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read(path) {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Control::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the knobs to `path` atomically (temp file in the same directory, fsync, rename).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let tmp = crate::keys::tmp_path(path);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// File name of the chain's control file in its directory.
pub const CHAIN_FILE: &str = "chain-control.json";

/// The chain process's knobs (`<dir>/chain-control.json`): which virtual validators are offline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChainControl {
    /// Accounts of virtual validators that sign nothing (their timers keep running).
    pub offline: Vec<String>,
}

impl ChainControl {
    /// Reads the chain control file; an absent file gives the default (all online).
    pub fn read(path: &Path) -> Result<ChainControl, ControlError> {
        let err = |reason: String| ControlError {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read(path) {
            Ok(body) => serde_json::from_slice(&body).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ChainControl::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the knobs atomically.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let body = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        let tmp = crate::keys::tmp_path(path);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// Identity and version of a file (device, inode, mtime s, mtime ns, size), or `None` when
/// it does not exist: a rename gives a new inode, so an atomic replacement is seen even within
/// one mtime tick.
pub type FileStamp = Option<(u64, u64, i64, i64, u64)>;

/// The [`FileStamp`] of `path` now.
pub fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_file_is_all_off_and_writes_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.json");
        assert_eq!(Control::read(&path).expect("absent"), Control::default());
        let c = Control {
            status: StatusMode::Error503,
            freeze: true,
            ..Control::default()
        };
        c.write(&path).expect("write");
        assert_eq!(Control::read(&path).expect("read"), c);
        std::fs::write(&path, r#"{"status": "hang"}"#).expect("write");
        assert_eq!(Control::read(&path).expect("read").status, StatusMode::Hang);
        std::fs::write(&path, r#"{"status": "sideways"}"#).expect("write");
        assert!(Control::read(&path).is_err());
        std::fs::write(&path, r#"{"lag_ms": 300, "network_offline": true}"#).expect("write");
        let c = Control::read(&path).expect("read");
        assert_eq!((c.lag_ms, c.network_offline), (300, true));
        let cc = ChainControl {
            offline: vec!["v1".into()],
        };
        let cpath = dir.path().join(CHAIN_FILE);
        assert_eq!(
            ChainControl::read(&cpath).expect("absent"),
            ChainControl::default()
        );
        cc.write(&cpath).expect("write");
        assert_eq!(ChainControl::read(&cpath).expect("read"), cc);
    }
}
