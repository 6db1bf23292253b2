//! Parsing neard's `/status` answer.
//!
//! kuutamod reads only what it decides on: whether neard is syncing, its head height, and which
//! validator key it has loaded (for hot-swap confirmation). Everything else in the
//! `StatusResponse` is ignored, so the parser accepts neard 1.x and 2.x bodies alike (see the
//! fixtures in `tests/fixtures/`), and a field neard adds later cannot break it.

use serde::Deserialize;

/// The part of neard's `StatusResponse` (GET `/status`, or JSON-RPC `status` `result`) that
/// kuutamod uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    /// Chain and head information.
    pub sync_info: SyncInfo,
    /// Account of the validator key neard has loaded; `None` when it holds no key (or, in old
    /// versions, when the field is absent).
    #[serde(default)]
    pub validator_account_id: Option<String>,
    /// Public key (`ed25519:...`) of the loaded validator key; `None` without a key.
    #[serde(default)]
    pub validator_public_key: Option<String>,
    /// neard's version, when reported.
    #[serde(default)]
    pub version: Option<Version>,
}

/// `version` of the status answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    /// Release, e.g. `2.5.0` or `1.14.0-rc.1`.
    pub version: String,
}

impl Status {
    /// Whether this neard can drop its validator key on SIGHUP (nearcore PR #12011, first in
    /// 2.3.0). `None` when the version is absent or not `major.minor...`.
    pub fn supports_key_hot_swap(&self) -> Option<bool> {
        let v = &self.version.as_ref()?.version;
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let major: u64 = parts.next()?.parse().ok()?;
        let minor: u64 = parts.next()?.parse().ok()?;
        Some((major, minor) >= (2, 3))
    }
}

/// `sync_info` of the status answer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SyncInfo {
    /// Height of the head block.
    pub latest_block_height: u64,
    /// True while neard is not in sync with the network (also while it awaits peers).
    pub syncing: bool,
    /// Timestamp of the head block (RFC 3339, UTC), when reported.
    #[serde(default)]
    pub latest_block_time: Option<String>,
}

impl SyncInfo {
    /// The head block's timestamp as unix milliseconds, when it is present and parses.
    pub fn latest_block_ms(&self) -> Option<u64> {
        rfc3339_ms(self.latest_block_time.as_deref()?)
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (what neard writes) into unix milliseconds.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    // Days since 1970-01-01 (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + hh) * 60 + mm) * 60 + ss)
        .ok()?
        .checked_mul(1000)?
        .checked_add(u64::try_from(ms).ok()?)
}

/// Why a status body could not be used.
#[derive(Debug, thiserror::Error)]
#[error("neard's /status answer is not a StatusResponse ({source}); body starts with {prefix:?}")]
pub struct StatusParseError {
    source: serde_json::Error,
    prefix: String,
}

/// Parses a `/status` body. Garbage gives an error that quotes the start of the body.
pub fn parse(body: &[u8]) -> Result<Status, StatusParseError> {
    serde_json::from_slice(body).map_err(|source| StatusParseError {
        source,
        prefix: String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TESTNET: &str = include_str!("../../tests/fixtures/neard-status-testnet.json");
    const V1: &str = include_str!("../../tests/fixtures/neard-status-1x.json");

    #[test]
    fn parses_a_2x_rpc_node() {
        let s = parse(TESTNET.as_bytes()).expect("testnet fixture parses");
        assert_eq!(s.sync_info.latest_block_height, 187456272);
        assert!(!s.sync_info.syncing);
        assert_eq!(s.validator_account_id, None);
        assert_eq!(s.validator_public_key, None);
        assert_eq!(s.supports_key_hot_swap(), Some(true));
    }

    #[test]
    fn hot_swap_needs_2_3() {
        let with = |v: &str| Status {
            version: Some(Version { version: v.into() }),
            ..parse(TESTNET.as_bytes()).expect("fixture")
        };
        assert_eq!(with("2.2.1").supports_key_hot_swap(), Some(false));
        assert_eq!(with("2.3.0-rc.1").supports_key_hot_swap(), Some(true));
        assert_eq!(with("10.0.0").supports_key_hot_swap(), Some(true));
        assert_eq!(with("trunk").supports_key_hot_swap(), None);
    }

    #[test]
    fn parses_a_1x_syncing_validator() {
        let s = parse(V1.as_bytes()).expect("1.x fixture parses");
        assert!(s.sync_info.syncing);
        assert_eq!(s.validator_account_id.as_deref(), Some("node0"));
        assert_eq!(s.validator_public_key, None);
        assert_eq!(s.supports_key_hot_swap(), Some(false));
    }

    #[test]
    fn block_times_parse_to_unix_ms() {
        assert_eq!(
            rfc3339_ms("2025-02-12T22:10:10.530341781Z"),
            Some(1_739_398_210_530)
        );
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
        assert_eq!(rfc3339_ms("2025-13-01T00:00:00Z"), None);
        assert_eq!(rfc3339_ms("yesterday"), None);
        let s = parse(TESTNET.as_bytes()).expect("fixture");
        assert_eq!(s.sync_info.latest_block_ms(), Some(1_739_398_210_530));
    }

    #[test]
    fn garbage_names_what_it_got() {
        let err = parse(b"<html>502 Bad Gateway</html>")
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("502 Bad Gateway"), "{err}");
        assert!(parse(b"{\"sync_info\":{}}").is_err());
        assert!(parse(b"").is_err());
    }
}
