//! Hashes, wall-clock time and calendar helpers, plus the old clock-driven height model.
//!
//! The simulator's chain is now a real (simulated) chain: heights come from doomslug and block
//! production ([`crate::network`], [`crate::client`]). What stays here: deterministic
//! hash stand-ins, `now_ms`, RFC 3339 formatting, the protocol version, and the old
//! "height = clock / block time" helpers that [`crate::status::Snapshot`] (an older,
//! still-public description of a status) uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time (ms) of height 0. A fixed instant in the past keeps heights positive and
/// comparable across processes.
pub const GENESIS_UNIX_MS: u64 = 1_600_000_000_000;

/// Protocol version reported as both current-epoch and latest (testnet's in early 2025).
pub const PROTOCOL_VERSION: u32 = 73;

/// Epoch length written into genesis (`init`, `localnet`) and used by the old clock model.
pub const EPOCH_LENGTH: u64 = 500;

/// Current unix wall time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Head height at unix time `unix_ms` for a chain with `block_time_ms` between blocks.
pub fn height_at(unix_ms: u64, block_time_ms: u64) -> u64 {
    unix_ms.saturating_sub(GENESIS_UNIX_MS) / block_time_ms.max(1)
}

/// Unix time (ms) at which `height` was produced.
pub fn height_time_ms(height: u64, block_time_ms: u64) -> u64 {
    GENESIS_UNIX_MS.saturating_add(height.saturating_mul(block_time_ms.max(1)))
}

/// First height of the epoch containing `height`.
pub fn epoch_start(height: u64) -> u64 {
    height - height % EPOCH_LENGTH
}

/// A deterministic base58 CryptoHash-like string (32 bytes) for `(tag, n)`: the same in every
/// process, different for every tag and number.
pub fn hash(tag: &str, n: u64) -> String {
    bs58::encode(hash_bytes(tag.as_bytes(), n)).into_string()
}

/// 32 pseudo-random bytes derived from `(data, n)` (not cryptographic; a simulator needs only
/// stable, distinct values).
pub fn hash_bytes(data: &[u8], n: u64) -> [u8; 32] {
    // FNV-1a over the data, then splitmix64 to spread it over 32 bytes.
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        seed ^= u64::from(*b);
        seed = seed.wrapping_mul(0x0100_0000_01b3);
    }
    seed ^= n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    out
}

/// RFC 3339 UTC time with nanoseconds, as neard prints block times
/// (`2025-02-12T22:10:10.530000000Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let nanos = (unix_ms % 1000) * 1_000_000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Calendar date of a day count since 1970-01-01 (H. Hinnant's `civil_from_days`, for
/// non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_follow_the_clock() {
        assert_eq!(height_at(GENESIS_UNIX_MS - 5, 100), 0);
        assert_eq!(height_at(GENESIS_UNIX_MS + 199, 100), 1);
        assert_eq!(height_at(GENESIS_UNIX_MS + 200, 100), 2);
        assert_eq!(height_time_ms(2, 100), GENESIS_UNIX_MS + 200);
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_739_398_210_530), "2025-02-12T22:10:10.530000000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn hashes_are_stable_and_distinct() {
        assert_eq!(hash("block", 7), hash("block", 7));
        assert_ne!(hash("block", 7), hash("block", 8));
        assert_ne!(hash("block", 7), hash("state", 7));
        let decoded = bs58::decode(hash("block", 7)).into_vec().expect("base58");
        assert_eq!(decoded.len(), 32);
    }
}
