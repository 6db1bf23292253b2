//! The genesis of a simulated localnet: validators and stakes, which accounts are "ours",
//! shards, epoch length, assignment seed and the consensus timers.
//!
//! A chain process (`neard-sim chain`) reads it from `<dir>/chain.json`; a node without a chain
//! process derives one from its home ([`ChainSpec::from_home`]). Validators not marked `ours`
//! are played by the chain itself (virtual, honest); `ours` accounts are signed only by nodes
//! that hold their key, which is the point: a failover moves that key between nodes.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// neard's localnet/default `consensus.min_block_production_delay` (nearcore/src/config.rs;
/// docs/neard.md §5): the endorsement delay of doomslug.
pub const NEARD_MIN_BLOCK_PRODUCTION_DELAY: Duration = Duration::from_millis(600);
/// neard's default `consensus.max_block_production_delay` (2 s): the first skip delay.
pub const NEARD_MAX_BLOCK_PRODUCTION_DELAY: Duration = Duration::from_secs(2);
/// neard's default `consensus.max_block_wait_delay` (6 s): the largest skip delay.
pub const NEARD_MAX_BLOCK_WAIT_DELAY: Duration = Duration::from_secs(6);
/// neard's default `consensus.doomslug_step_period` (100 ms): how often the client runs the
/// doomslug timer (client_actor `check_triggers`).
pub const NEARD_DOOMSLUG_STEP_PERIOD: Duration = Duration::from_millis(100);
/// neard's default `consensus.block_production_tracking_delay` (100 ms): how often the client
/// checks whether it can produce a block (client_actor `check_triggers`).
pub const NEARD_BLOCK_PRODUCTION_TRACKING_DELAY: Duration = Duration::from_millis(100);

/// Default epoch length in heights (`init`'s genesis; neard's `EXPECTED_EPOCH_LENGTH` is
/// larger, a test chain wants to see epochs end).
pub const DEFAULT_EPOCH_LENGTH: u64 = 500;

/// The consensus timers (config.json `consensus`, durations as `{"secs","nanos"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    /// Endorsement delay (doomslug `endorsement_delay`).
    #[serde(with = "json_duration")]
    pub min_block_production_delay: Duration,
    /// First skip delay (doomslug `min_delay`); ×10 is the health check's staleness limit.
    #[serde(with = "json_duration")]
    pub max_block_production_delay: Duration,
    /// Largest skip delay (doomslug `max_delay`).
    #[serde(with = "json_duration")]
    pub max_block_wait_delay: Duration,
    /// Period of the doomslug timer.
    #[serde(with = "json_duration", default = "default_step")]
    pub doomslug_step_period: Duration,
    /// Period of the block production check.
    #[serde(with = "json_duration", default = "default_step")]
    pub block_production_tracking_delay: Duration,
}

fn default_step() -> Duration {
    NEARD_DOOMSLUG_STEP_PERIOD
}

impl Default for Timers {
    fn default() -> Self {
        Timers::neard()
    }
}

impl Timers {
    /// neard's defaults (600 ms / 2 s / 6 s, steps of 100 ms).
    pub fn neard() -> Timers {
        Timers {
            min_block_production_delay: NEARD_MIN_BLOCK_PRODUCTION_DELAY,
            max_block_production_delay: NEARD_MAX_BLOCK_PRODUCTION_DELAY,
            max_block_wait_delay: NEARD_MAX_BLOCK_WAIT_DELAY,
            doomslug_step_period: NEARD_DOOMSLUG_STEP_PERIOD,
            block_production_tracking_delay: NEARD_BLOCK_PRODUCTION_TRACKING_DELAY,
        }
    }

    /// neard's defaults divided by `n` (`--speed-up N`; 10 gives 60 ms / 200 ms / 600 ms with
    /// 10 ms steps, a block about every 60-70 ms).
    pub fn sped_up(n: u32) -> Timers {
        let n = n.max(1);
        let t = Timers::neard();
        Timers {
            min_block_production_delay: t.min_block_production_delay / n,
            max_block_production_delay: t.max_block_production_delay / n,
            max_block_wait_delay: t.max_block_wait_delay / n,
            doomslug_step_period: t.doomslug_step_period / n,
            block_production_tracking_delay: t.block_production_tracking_delay / n,
        }
    }

    /// doomslug's `delay_step`: `max_block_production_delay / 10` (chain/client/src/client.rs,
    /// `Doomslug::new(...)`).
    pub fn delay_step(&self) -> Duration {
        self.max_block_production_delay / 10
    }
}

/// neard's `{"secs": N, "nanos": M}` duration encoding.
pub mod json_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Raw {
        secs: u64,
        #[serde(default)]
        nanos: u32,
    }

    /// Serializes as `{"secs","nanos"}`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        Raw {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
        .serialize(s)
    }

    /// Deserializes `{"secs","nanos"}` (nanos optional).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let r = Raw::deserialize(d)?;
        Ok(Duration::new(r.secs, r.nanos))
    }
}

/// One validator of the localnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSpec {
    /// Account id.
    pub account_id: String,
    /// Stake (any unit; only ratios matter). Written as a string, like neard's `amount`.
    #[serde(with = "u128_string")]
    pub stake: u128,
    /// Signed only by nodes holding its key (never by the chain).
    #[serde(default)]
    pub ours: bool,
    /// Public key, if known (shown by the `validators` RPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

mod u128_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(u64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => s.parse().map_err(D::Error::custom),
            Raw::N(n) => Ok(u128::from(n)),
        }
    }
}

/// The genesis of a localnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainSpec {
    /// Chain id.
    pub chain_id: String,
    /// Height of the genesis block.
    #[serde(default)]
    pub genesis_height: u64,
    /// Epoch length in heights.
    pub epoch_length: u64,
    /// Number of shards.
    pub num_shards: u64,
    /// Seed of the block and chunk producer assignment.
    pub seed: u64,
    /// The validators (block and chunk producers of every epoch).
    pub validators: Vec<ValidatorSpec>,
    /// Timers of the virtual validators (nodes use their own config.json).
    #[serde(default)]
    pub consensus: Timers,
}

/// Why a chain spec is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Cannot read or write the file.
    #[error("chain spec {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: io::Error,
    },
    /// Not a chain spec.
    #[error("chain spec {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl ChainSpec {
    /// A localnet spec (chain id `localnet`, genesis height 0, default epoch length, one
    /// shard, seed 0): `ours` accounts are signed only by key holders, `virtuals` by the chain.
    /// Change the public fields for more.
    pub fn localnet(ours: &[(&str, u128)], virtuals: &[(&str, u128)], timers: Timers) -> ChainSpec {
        let v = |(a, s): &(&str, u128), ours: bool| ValidatorSpec {
            account_id: (*a).to_owned(),
            stake: *s,
            ours,
            public_key: None,
        };
        ChainSpec {
            chain_id: "localnet".to_owned(),
            genesis_height: 0,
            epoch_length: DEFAULT_EPOCH_LENGTH,
            num_shards: 1,
            seed: 0,
            validators: ours
                .iter()
                .map(|x| v(x, true))
                .chain(virtuals.iter().map(|x| v(x, false)))
                .collect(),
            consensus: timers,
        }
    }

    /// Checks the invariants the rest of the simulator relies on.
    pub fn validate(&self) -> Result<(), String> {
        if self.validators.is_empty() {
            return Err("no validators".into());
        }
        if self.validators.iter().any(|v| v.stake == 0) {
            return Err("a validator has zero stake".into());
        }
        if self.epoch_length == 0 || self.num_shards == 0 {
            return Err("epoch_length and num_shards must be positive".into());
        }
        let mut names: Vec<&str> = self
            .validators
            .iter()
            .map(|v| v.account_id.as_str())
            .collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err("a validator is listed twice".into());
        }
        Ok(())
    }

    /// Total stake of the validators.
    pub fn total_stake(&self) -> u128 {
        self.validators.iter().map(|v| v.stake).sum()
    }

    /// Stake of `account` (0 for a non-validator).
    pub fn stake_of(&self, account: &str) -> u128 {
        self.validators
            .iter()
            .find(|v| v.account_id == account)
            .map_or(0, |v| v.stake)
    }

    /// Whether `account` is a validator.
    pub fn is_validator(&self, account: &str) -> bool {
        self.validators.iter().any(|v| v.account_id == account)
    }

    /// Hash of the genesis block.
    pub fn genesis_hash(&self) -> String {
        crate::chain::hash(&format!("genesis:{}:{}", self.chain_id, self.seed), 0)
    }

    /// Reads a spec file.
    pub fn read(path: &Path) -> Result<ChainSpec, SpecError> {
        let body = std::fs::read(path).map_err(|source| SpecError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let spec: ChainSpec = serde_json::from_slice(&body).map_err(|e| SpecError::Invalid {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        spec.validate().map_err(|reason| SpecError::Invalid {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(spec)
    }

    /// Writes the spec atomically (temp file, fsync, rename).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut body = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        body.push(b'\n');
        let tmp = crate::keys::tmp_path(path);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The private chain of a node run without a chain process: validators and stakes from
    /// the home's genesis, timers from its config.json, seed from the chain id. "Ours" is the
    /// account of the validator key the node starts with; without a key (or a key for an
    /// account that is not a genesis validator) every genesis validator is ours, so no virtual
    /// validator signs for an account this node might be given the key of. A genesis without
    /// validators gives one validator, `key_account` (or `test.near`).
    pub fn from_home(
        genesis: Option<&crate::config::Genesis>,
        timers: Timers,
        key_account: Option<&str>,
    ) -> ChainSpec {
        let chain_id = genesis.map_or("localnet".to_owned(), |g| g.chain_id.clone());
        let mut validators: Vec<ValidatorSpec> = genesis
            .map(|g| {
                g.stakes
                    .iter()
                    .map(|(account, stake)| ValidatorSpec {
                        account_id: account.clone(),
                        stake: (*stake).max(1),
                        ours: false,
                        public_key: None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if validators.is_empty() {
            validators.push(ValidatorSpec {
                account_id: key_account.unwrap_or("test.near").to_owned(),
                stake: 1,
                ours: true,
                public_key: None,
            });
        }
        let key_is_validator =
            key_account.is_some_and(|k| validators.iter().any(|v| v.account_id == k));
        for v in &mut validators {
            v.ours = !key_is_validator || Some(v.account_id.as_str()) == key_account;
        }
        ChainSpec {
            seed: u64::from_le_bytes(
                crate::chain::hash_bytes(chain_id.as_bytes(), 0)[..8]
                    .try_into()
                    .unwrap_or([0; 8]),
            ),
            chain_id,
            genesis_height: 0,
            epoch_length: genesis.map_or(DEFAULT_EPOCH_LENGTH, |g| g.epoch_length.max(1)),
            num_shards: genesis.map_or(1, |g| g.num_shards.max(1)),
            validators,
            consensus: timers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_validates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chain.json");
        let spec = ChainSpec {
            chain_id: "localnet".into(),
            genesis_height: 0,
            epoch_length: 100,
            num_shards: 2,
            seed: 7,
            validators: vec![
                ValidatorSpec {
                    account_id: "pool.near".into(),
                    stake: 50_000_000_000_000_000_000_000_000_000,
                    ours: true,
                    public_key: None,
                },
                ValidatorSpec {
                    account_id: "v1".into(),
                    stake: 1,
                    ours: false,
                    public_key: None,
                },
            ],
            consensus: Timers::sped_up(10),
        };
        spec.write(&path).expect("write");
        assert_eq!(ChainSpec::read(&path).expect("read"), spec);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"nanos\": 60000000"), "{text}");
        assert!(text.contains("\"50000000000000000000000000000\""), "{text}");
        let l = ChainSpec::localnet(&[("pool.near", 1)], &[("v1", 3)], Timers::sped_up(10));
        assert_eq!(
            (l.total_stake(), l.stake_of("v1"), l.validators[0].ours),
            (4, 3, true)
        );
        assert!(l.validate().is_ok());
        let mut bad = spec.clone();
        bad.validators[1].account_id = "pool.near".into();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn sped_up_timers_divide_neards_defaults() {
        let t = Timers::sped_up(10);
        assert_eq!(t.min_block_production_delay, Duration::from_millis(60));
        assert_eq!(t.max_block_production_delay, Duration::from_millis(200));
        assert_eq!(t.max_block_wait_delay, Duration::from_millis(600));
        assert_eq!(t.doomslug_step_period, Duration::from_millis(10));
        assert_eq!(t.delay_step(), Duration::from_millis(20));
    }
}
