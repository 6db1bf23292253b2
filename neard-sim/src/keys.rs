//! Key files: `node_key.json` and `validator_key.json`.
//!
//! The format is neard's `KeyFile`: `{"account_id", "public_key": "ed25519:<base58 32 bytes>",
//! "secret_key": "ed25519:<base58 64 bytes>"}`, written pretty-printed with mode 0600. The 64
//! secret bytes are seed || public key as in ed25519; the simulator derives the public half from
//! the seed with a stable non-cryptographic function (nothing here verifies signatures), but
//! it does insist that the public key is the secret's last 32 bytes, like newer neard.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Key type prefix of every key string.
const ED25519: &str = "ed25519:";

/// A key file as written to disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Account the key belongs to (`"node"` for node keys).
    pub account_id: String,
    /// `ed25519:<base58 of 32 bytes>`.
    pub public_key: String,
    /// `ed25519:<base58 of 64 bytes>` (seed || public key).
    pub secret_key: String,
}

/// A key that was read and checked; the secret is not kept (nothing signs for real).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Account id from the file.
    pub account_id: String,
    /// Public key, `ed25519:<base58>`.
    pub public_key: String,
}

/// Why a key file could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not a key file (bad JSON, missing field, bad key encoding).
    #[error("invalid key file {path}: {reason}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which kind of key file is being read: they differ in what neard accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `node_key.json`: needs `secret_key` (no `private_key` alias), `account_id` may be empty.
    Node,
    /// `validator_key.json`: `secret_key` or its alias `private_key`, non-empty `account_id`.
    Validator,
}

/// What neard's `KeyFile` deserializer sees, before checking.
#[derive(Deserialize)]
struct RawKeyFile {
    #[serde(default)]
    account_id: String,
    public_key: Option<String>,
    secret_key: Option<String>,
    private_key: Option<String>,
}

impl KeyFile {
    /// A fresh random key for `account_id`.
    pub fn generate(account_id: &str) -> io::Result<KeyFile> {
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(KeyFile::from_seed(account_id, &seed))
    }

    /// The key for `account_id` with the given 32-byte seed (deterministic).
    pub fn from_seed(account_id: &str, seed: &[u8; 32]) -> KeyFile {
        let public = crate::chain::hash_bytes(seed, 0x0065_6432_3535_3139);
        let mut secret = Vec::with_capacity(64);
        secret.extend_from_slice(seed);
        secret.extend_from_slice(&public);
        KeyFile {
            account_id: account_id.to_owned(),
            public_key: format!("{ED25519}{}", bs58::encode(public).into_string()),
            secret_key: format!("{ED25519}{}", bs58::encode(secret).into_string()),
        }
    }

    /// Writes the key to `path` atomically (temp file, fsync, rename) with mode 0600.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut body = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        body.push(b'\n');
        write_private_atomic(path, &body)
    }
}

/// Writes `body` to `path` via a 0600 temp file in the same directory, fsync and rename.
pub fn write_private_atomic(path: &Path, body: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_path(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A temp file name next to `path`, unique per process.
pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Reads and checks a key file.
pub fn read(path: &Path, kind: Kind) -> Result<Key, KeyError> {
    let invalid = |reason: String| KeyError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let body = std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let raw: RawKeyFile = serde_json::from_slice(&body).map_err(|e| invalid(e.to_string()))?;
    let secret = match (kind, raw.secret_key, raw.private_key) {
        (_, Some(s), _) => s,
        (Kind::Validator, None, Some(s)) => s,
        _ => return Err(invalid("missing field `secret_key`".into())),
    };
    let secret = decode(&secret, 64).map_err(|e| invalid(format!("secret_key: {e}")))?;
    let public = match raw.public_key {
        Some(p) => {
            let bytes = decode(&p, 32).map_err(|e| invalid(format!("public_key: {e}")))?;
            if bytes[..] != secret[32..] {
                return Err(invalid("public_key does not match secret_key".into()));
            }
            p
        }
        None => format!("{ED25519}{}", bs58::encode(&secret[32..]).into_string()),
    };
    let account_id = match (kind, raw.account_id.is_empty()) {
        (Kind::Validator, true) => return Err(invalid("empty account_id".into())),
        (Kind::Node, true) => "node".to_owned(),
        (_, false) => raw.account_id,
    };
    Ok(Key {
        account_id,
        public_key: public,
    })
}

/// Reads an optional key file: `Ok(None)` when it does not exist (neard: "No validator key").
pub fn read_optional(path: &Path, kind: Kind) -> Result<Option<Key>, KeyError> {
    match read(path, kind) {
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// Decodes `ed25519:<base58>` of exactly `len` bytes.
fn decode(s: &str, len: usize) -> Result<Vec<u8>, String> {
    let b58 = s
        .strip_prefix(ED25519)
        .ok_or_else(|| format!("{s:?} does not start with {ED25519:?}"))?;
    let bytes = bs58::decode(b58)
        .into_vec()
        .map_err(|e| format!("bad base58: {e}"))?;
    if bytes.len() != len {
        return Err(format!("{} bytes, expected {len}", bytes.len()));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("validator_key.json");
        let key = KeyFile::generate("pool.near").expect("urandom");
        key.write(&path).expect("write");
        let read = read(&path, Kind::Validator).expect("valid");
        assert_eq!(read.account_id, "pool.near");
        assert_eq!(read.public_key, key.public_key);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn private_key_alias_only_for_validator_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.json");
        let key = KeyFile::from_seed("a", &[7; 32]);
        let body = serde_json::json!({"account_id": "a", "public_key": key.public_key,
            "private_key": key.secret_key});
        std::fs::write(&path, body.to_string()).expect("write");
        assert!(read(&path, Kind::Validator).is_ok());
        let err = read(&path, Kind::Node).expect_err("node keys need secret_key");
        assert!(err.to_string().contains("k.json"), "{err}");
    }

    #[test]
    fn mismatched_or_garbage_keys_are_invalid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.json");
        let a = KeyFile::from_seed("a", &[1; 32]);
        let b = KeyFile::from_seed("a", &[2; 32]);
        let mixed = KeyFile {
            public_key: b.public_key,
            ..a
        };
        std::fs::write(&path, serde_json::to_vec(&mixed).expect("json")).expect("write");
        assert!(read(&path, Kind::Validator).is_err());
        std::fs::write(&path, "{not json").expect("write");
        assert!(read(&path, Kind::Validator).is_err());
        assert!(
            read_optional(&dir.path().join("absent.json"), Kind::Validator)
                .expect("absent is fine")
                .is_none()
        );
    }
}
