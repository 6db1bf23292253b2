//! The lock store a run models: Consul ([`crate::consul`]) or etcd ([`crate::etcd`]), behind
//! the few questions and moves the world needs of it besides kuutamod's own calls (who holds
//! the lock, a record's bytes, a session's timer, an outsider's writes, a snapshot). kuutamod's
//! calls themselves go through its [`LockStore`](kuutamod::lock_store::LockStore) seam on
//! either model's `Server`.

use kuutamod::lock_store::{execute, Failure, StoreOp, StoreReply};

use crate::consul::{self, now_or_never, Owner};
use crate::etcd;

/// Which lock store a run models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Consul (sessions, KV with `ModifyIndex`).
    #[default]
    Consul,
    /// etcd (leases, revisions, the record and its holder key).
    Etcd,
}

impl Backend {
    /// Every backend with its name, in the order `both` runs them.
    pub const ALL: [(&'static str, Backend); 2] =
        [("consul", Backend::Consul), ("etcd", Backend::Etcd)];

    /// The backend's name.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Consul => "consul",
            Backend::Etcd => "etcd",
        }
    }

    /// The backend called `name`.
    pub fn parse(name: &str) -> Option<Backend> {
        Backend::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
    }

    /// The backends `--backend NAME` runs: one by its name, or `both`.
    pub fn parse_list(name: &str) -> Option<&'static [Backend]> {
        match name {
            "consul" => Some(&[Backend::Consul]),
            "etcd" => Some(&[Backend::Etcd]),
            "both" => Some(&[Backend::Consul, Backend::Etcd]),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An etcd lease's revocation follows its expiry within the leader's check interval (500 ms)
/// and a Raft round (`lessor.go`'s `revokeExpiredLeases`, every 500 ms).
pub(super) const ETCD_REVOKE_WITHIN: u64 = 500_000_000;

/// The store's state.
#[derive(Clone)]
pub(super) enum Model {
    Consul(consul::Store),
    Etcd(etcd::Store),
}

/// What a call's timers need, drawn by the world before it is applied: for Consul when a
/// session created or renewed now ends, for etcd how long after a lease's expiry its
/// revocation comes.
pub(super) type Drawn = u64;

impl Model {
    pub(super) fn new(backend: Backend) -> Model {
        match backend {
            Backend::Consul => Model::Consul(consul::Store::new()),
            Backend::Etcd => Model::Etcd(etcd::Store::new()),
        }
    }

    pub(super) fn is_etcd(&self) -> bool {
        matches!(self, Model::Etcd(_))
    }

    /// Moves with every change of the key space (Consul: the Raft index, which a session's
    /// creation moves too; etcd: the revision).
    pub(super) fn version(&self) -> u64 {
        match self {
            Model::Consul(s) => s.index(),
            Model::Etcd(s) => s.revision(),
        }
    }

    /// Applies kuutamod's call `op` from `owner` at `now`.
    pub(super) fn apply(
        &mut self,
        op: &StoreOp,
        owner: Owner,
        now: u64,
        drawn: Drawn,
    ) -> Result<StoreReply, Failure> {
        match self {
            Model::Consul(store) => {
                let mut server = consul::Server {
                    store,
                    owner,
                    now,
                    expire_after: drawn,
                };
                now_or_never(execute(&mut server, op)).map_err(Failure::from)
            }
            Model::Etcd(store) => {
                let mut server = etcd::Server {
                    store,
                    owner,
                    now,
                    revoke_delay: drawn,
                };
                now_or_never(execute(&mut server, op)).map_err(Failure::from)
            }
        }
    }

    /// Whether blocking read `op` waits (Consul: its index is not passed; etcd: its watch,
    /// created now when `creating`, has sent nothing that wakes it).
    pub(super) fn waits(&self, op: &StoreOp, creating: bool) -> bool {
        match self {
            Model::Consul(store) => match op {
                StoreOp::GetKey {
                    key,
                    blocking: Some((min, _)),
                    ..
                } => store.get(key).1 <= *min,
                StoreOp::GetPrefix {
                    prefix,
                    blocking: Some((min, _)),
                } => store.list_index(prefix) <= *min,
                _ => false,
            },
            Model::Etcd(store) => etcd::waits(store, op, creating),
        }
    }

    /// Session (lease) `id` exists.
    pub(super) fn session_alive(&self, id: &str) -> bool {
        match self {
            Model::Consul(s) => s.session(id).is_some(),
            Model::Etcd(s) => s.lease(id).is_some(),
        }
    }

    /// The ids of every session (lease).
    pub(super) fn session_ids(&self) -> Vec<String> {
        match self {
            Model::Consul(s) => s.sessions().map(|(i, _)| i.clone()).collect(),
            Model::Etcd(s) => s.leases().map(|(i, _)| i).collect(),
        }
    }

    /// When session `id` ends unless renewed (etcd: when its revocation comes), and its
    /// generation.
    pub(super) fn timer(&self, id: &str) -> Option<(u64, u64)> {
        match self {
            Model::Consul(s) => s.session(id).map(|s| (s.expires, s.generation)),
            Model::Etcd(s) => s.lease(id).map(|l| (l.revoke_at, l.generation)),
        }
    }

    /// Ends session `id` if its timer of `generation` is due at `now`; returns whether it did.
    pub(super) fn expire(&mut self, id: &str, generation: u64, now: u64) -> bool {
        match self {
            Model::Consul(s) => {
                let due = s
                    .session(id)
                    .is_some_and(|s| s.generation == generation && s.expires <= now);
                due && s.invalidate(id, now)
            }
            Model::Etcd(s) => s.revoke_due(id, generation, now),
        }
    }

    /// A new leader: every session timer starts again (`draw(ttl)` for each: Consul when it
    /// ends, etcd how long after its expiry its revocation comes).
    pub(super) fn reset_timers(&mut self, now: u64, mut draw: impl FnMut(u64) -> u64) {
        match self {
            Model::Consul(s) => s.reset_timers(now, draw),
            Model::Etcd(s) => s.refresh_leases(now, || draw(0)),
        }
    }

    /// The lock at `key`: its bytes, and whether a session (lease) holds it.
    pub(super) fn lock(&self, key: &str) -> Option<(&[u8], bool)> {
        match self {
            Model::Consul(s) => s.get(key).0.map(|e| (&e.value[..], e.session.is_some())),
            Model::Etcd(s) => s.lock(key).map(|l| (l.record, l.holder.is_some())),
        }
    }

    /// The owner of the session holding the lock at `key`, if it exists.
    pub(super) fn holder(&self, key: &str) -> Option<Owner> {
        match self {
            Model::Consul(s) => {
                let session = s.get(key).0?.session.as_ref()?;
                s.session(session).map(|x| x.owner)
            }
            Model::Etcd(s) => s.holder(key).map(|l| l.owner),
        }
    }

    /// A key's bytes and index (Consul's `ModifyIndex`, etcd's `mod_revision`).
    pub(super) fn value(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        match self {
            Model::Consul(s) => s.get(key).0.map(|e| (e.value.clone(), e.modify_index)),
            Model::Etcd(s) => s
                .key(key)
                .map(|k| (k.value.clone(), u64::try_from(k.mod_revision).unwrap_or(0))),
        }
    }

    /// Until when `key` is in lock-delay (etcd has none).
    pub(super) fn lock_delay(&self, key: &str) -> u64 {
        match self {
            Model::Consul(s) => s.lock_delay(key),
            Model::Etcd(_) => 0,
        }
    }

    /// A snapshot restore of `snapshot`.
    pub(super) fn restore(&mut self, snapshot: &Model) {
        match (self, snapshot) {
            (Model::Consul(s), Model::Consul(snap)) => s.restore(snap),
            (Model::Etcd(s), Model::Etcd(snap)) => s.restore(snap),
            _ => unreachable!("a snapshot of another backend"),
        }
    }
}
