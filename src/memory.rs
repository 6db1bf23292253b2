//! What kuutamod remembers across restarts, in its state directory: the newest record of the
//! lock it has seen ([`LockMemory`]), so that a Consul whose state was rewound (a snapshot
//! restore) cannot show it an old record, a *released* one above all, as if it were current.
//! Written atomically (temp file, fsync, rename, fsync of the directory) by one writer at a
//! time, the newest value last.

use std::path::{Path, PathBuf};

use tokio::sync::watch;

use crate::lease::LockMemory;

/// The file that holds `account`'s lock memory in `state_dir`.
pub fn path(state_dir: &Path, account: &str) -> PathBuf {
    state_dir.join(format!("kuutamod-lock-{account}.json"))
}

/// Why the lock memory could not be read. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Unreadable.
    #[error("cannot read kuutamod's lock memory {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not what kuutamod writes.
    #[error("kuutamod's lock memory {path} is not valid ({source}); it is rewritten once this node sees the lock")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// Reads the lock memory; `None` when there is none yet.
pub fn load(path: &Path) -> Result<Option<LockMemory>, MemoryError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| MemoryError::Parse {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MemoryError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `m` to `path` atomically (mode 0600).
pub fn save(path: &Path, m: &LockMemory) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(m).map_err(std::io::Error::other)?;
    crate::keys::write_atomic(path, &bytes, 0o600)
}

/// Writes the newest memory the machine hands over, one write at a time (off the event loop:
/// an fsync may take a while), until the sender is gone.
pub async fn keep(path: PathBuf, mut rx: watch::Receiver<Option<LockMemory>>) {
    let mut failing = false;
    while rx.changed().await.is_ok() {
        let Some(m) = *rx.borrow_and_update() else {
            continue;
        };
        let p = path.clone();
        let done = tokio::task::spawn_blocking(move || save(&p, &m)).await;
        match done {
            Ok(Ok(())) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                log::error!(
                    "cannot write kuutamod's lock memory {}: {e}; a restarted kuutamod would not recognise a rewound Consul",
                    path.display()
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_round_trips_and_a_missing_or_bad_file_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = path(dir.path(), "pool.near");
        assert!(p.ends_with("kuutamod-lock-pool.near.json"));
        assert_eq!(load(&p).expect("missing is fine"), None);
        let m = LockMemory {
            term: 3,
            seq: 40,
            index: 1234,
        };
        save(&p, &m).expect("save");
        assert_eq!(load(&p).expect("load"), Some(m));
        std::fs::write(&p, b"garbage").expect("write");
        let e = load(&p).expect_err("garbage");
        assert!(
            e.to_string().contains("kuutamod-lock-pool.near.json"),
            "{e}"
        );
    }
}
