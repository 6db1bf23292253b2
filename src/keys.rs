//! NEAR key files: reading and checking them at start, installing them into neard's home.
//!
//! A key file is `{"account_id": .., "public_key": "ed25519:..", "secret_key": "ed25519:.."}`
//! (`private_key` is accepted for `secret_key`, as neard does). kuutamod checks every key file at
//! start, so a typo is reported before any failover depends on it: the secret key must be a
//! 64-byte ed25519 key whose second half is the public key. Secret material is never logged
//! (the `Debug` output redacts it) and is written only with mode 0600, atomically.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A checked key file.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The account the key belongs to (for node keys usually `node`, or empty).
    pub account_id: String,
    /// `ed25519:<base58 32 bytes>`.
    pub public_key: String,
    secret_key: String,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("account_id", &self.account_id)
            .field("public_key", &self.public_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// What is wrong with a key file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file is missing or unreadable.
    #[error("cannot read {what} key file {path}: {source}; check the path (or $CREDENTIALS_DIRECTORY) and its permissions")]
    Read {
        /// Which key this is (validator, validator node, voter node).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a key file.
    #[error("{what} key file {path} is malformed: {reason}; expected {{\"account_id\", \"public_key\", \"secret_key\"}} as written by neard")]
    Malformed {
        /// Which key this is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (never contains secret material).
        reason: String,
    },
    /// Installing a key into neard's home failed.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The destination.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct RawKeyFile {
    #[serde(default)]
    account_id: String,
    public_key: String,
    #[serde(alias = "private_key")]
    secret_key: String,
}

fn decode_ed25519(value: &str, len: usize) -> Result<Vec<u8>, String> {
    let body = value
        .strip_prefix("ed25519:")
        .ok_or_else(|| "key does not start with \"ed25519:\"".to_string())?;
    let bytes = bs58::decode(body)
        .into_vec()
        .map_err(|_| "key is not valid base58".to_string())?;
    if bytes.len() != len {
        return Err(format!("key has {} bytes, expected {len}", bytes.len()));
    }
    Ok(bytes)
}

impl KeyFile {
    /// Reads and checks the key file at `path`; `what` names it in errors ("validator").
    pub fn read(what: &'static str, path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read(path).map_err(|source| KeyError::Read {
            what,
            path: path.to_owned(),
            source,
        })?;
        let malformed = |reason: String| KeyError::Malformed {
            what,
            path: path.to_owned(),
            reason,
        };
        // serde_json's error text quotes no input for these structural errors, only positions.
        let raw: RawKeyFile = serde_json::from_slice(&text)
            .map_err(|e| malformed(format!("not a JSON key file ({})", e.classify_msg())))?;
        let public = decode_ed25519(&raw.public_key, 32)
            .map_err(|e| malformed(format!("public_key: {e}")))?;
        let secret = decode_ed25519(&raw.secret_key, 64)
            .map_err(|e| malformed(format!("secret_key: {e}")))?;
        if secret[32..] != public[..] {
            return Err(malformed(
                "secret_key does not belong to public_key".to_string(),
            ));
        }
        Ok(KeyFile {
            account_id: raw.account_id,
            public_key: raw.public_key,
            secret_key: raw.secret_key,
        })
    }

    /// Writes the key to `dest` atomically (temp file in the same directory, fsync, rename) with
    /// mode 0600, in neard's format.
    pub fn install(&self, dest: &Path) -> Result<(), KeyError> {
        let body = serde_json::json!({
            "account_id": self.account_id,
            "public_key": self.public_key,
            "secret_key": self.secret_key,
        });
        let mut text = serde_json::to_vec_pretty(&body).map_err(|e| KeyError::Write {
            path: dest.to_owned(),
            source: e.into(),
        })?;
        text.push(b'\n');
        write_atomic(dest, &text, 0o600).map_err(|source| KeyError::Write {
            path: dest.to_owned(),
            source,
        })
    }
}

trait ClassifyMsg {
    fn classify_msg(&self) -> &'static str;
}

impl ClassifyMsg for serde_json::Error {
    fn classify_msg(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "file ends early",
        }
    }
}

/// Writes `data` to `dest` atomically with permissions `mode`: a temp file in the same directory
/// (created with `mode` from the start, so the content is never readable by others), fsynced,
/// renamed over `dest`, and the directory fsynced.
pub fn write_atomic(dest: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".kuutamod-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(dest).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes `path` if it exists and fsyncs its directory, so the removal survives a crash.
/// Returns whether a file was removed.
pub fn remove_durably(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A syntactically valid key (secret = 32 bytes of `seed` then the public key) for tests.
    pub(crate) fn sample_key(account: &str, seed: u8) -> String {
        let public = [seed.wrapping_add(1); 32];
        let mut secret = vec![seed; 32];
        secret.extend_from_slice(&public);
        serde_json::json!({
            "account_id": account,
            "public_key": format!("ed25519:{}", bs58::encode(public).into_string()),
            "secret_key": format!("ed25519:{}", bs58::encode(secret).into_string()),
        })
        .to_string()
    }

    #[test]
    fn reads_checks_and_installs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("k.json");
        std::fs::write(&src, sample_key("pool.near", 7)).expect("write");
        let key = KeyFile::read("validator", &src).expect("valid key");
        assert_eq!(key.account_id, "pool.near");
        assert!(!format!("{key:?}").contains(&key.secret_key));

        let dest = dir.path().join("validator_key.json");
        key.install(&dest).expect("install");
        let mode = std::fs::metadata(&dest).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(KeyFile::read("installed", &dest).expect("reads back"), key);
        assert!(remove_durably(&dest).expect("remove"));
        assert!(!remove_durably(&dest).expect("remove again"));
    }

    #[test]
    fn private_key_alias_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("k.json");
        let text = sample_key("a", 1).replace("secret_key", "private_key");
        std::fs::write(&src, text).expect("write");
        KeyFile::read("validator", &src).expect("private_key alias");
    }

    #[test]
    fn bad_files_name_the_file_and_leak_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("k.json");
        let missing = KeyFile::read("voter node", &src)
            .expect_err("must fail")
            .to_string();
        assert!(
            missing.contains("voter node key file") && missing.contains("k.json"),
            "{missing}"
        );

        let good = sample_key("a", 3);
        let v: serde_json::Value = serde_json::from_str(&good).expect("json");
        let secret = v["secret_key"].as_str().expect("secret").to_string();
        for (text, expect) in [
            ("{not json".to_string(), "invalid JSON"),
            (r#"{"account_id":"a"}"#.to_string(), "missing or mistyped"),
            (good.replace("ed25519:", "secp256k1:"), "does not start"),
            (good.replace(&secret, "ed25519:abc"), "bytes, expected 64"),
            (
                good.replace(&secret, &format!("{}0", &secret[..secret.len() - 1])),
                "base58",
            ),
            (good.replace(&secret, ""), "secret_key"),
        ] {
            std::fs::write(&src, &text).expect("write");
            let err = KeyFile::read("validator", &src)
                .expect_err("must fail")
                .to_string();
            assert!(
                err.contains(expect) && err.contains("k.json"),
                "{err} for {text}"
            );
            assert!(!err.contains(&secret[8..]), "error leaks the secret: {err}");
        }

        let other = sample_key("a", 4);
        let other_secret: serde_json::Value = serde_json::from_str(&other).expect("json");
        let mismatched = good.replace(&secret, other_secret["secret_key"].as_str().expect("s"));
        std::fs::write(&src, mismatched).expect("write");
        let err = KeyFile::read("validator", &src)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
    }
}
