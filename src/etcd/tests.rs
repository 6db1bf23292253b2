//! Unit tests of [`super`] that need no etcd (the client against real etcd members:
//! `tests/it/etcd_store.rs`).

use super::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn an_unreachable_member_is_named_and_the_next_one_asked() {
    let (a, b) = (free_port(), free_port());
    let endpoints = vec![
        format!("http://127.0.0.1:{a}"),
        format!("http://127.0.0.1:{b}"),
    ];
    let c = Etcd::new(&endpoints, Tls::default(), None).expect("client");
    let err = c
        .renew(&lease_name(7))
        .await
        .expect_err("nobody listens")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "etcd at http://127.0.0.1:{a}/v3/lease/keepalive is unreachable: cannot connect"
        )),
        "{err}"
    );
    let err = c
        .get_key("kuutamod-leader/pool.near", None, false)
        .await
        .expect_err("nobody listens")
        .to_string();
    assert!(
        err.starts_with(&format!(
            "etcd at http://127.0.0.1:{b}/v3/kv/txn is unreachable"
        )),
        "the second endpoint is asked after the first failed: {err}"
    );
}

#[test]
fn bad_tls_files_are_refused_with_their_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let endpoints = vec!["https://etcd:2379".to_string()];
    let err = |tls: Tls<'_>| {
        Etcd::new(&endpoints, tls, None)
            .expect_err("refused")
            .to_string()
    };
    let e = err(Tls {
        ca_file: Some(&missing),
        ..Tls::default()
    });
    assert!(
        e.contains("etcd CA file") && e.contains("missing.pem"),
        "{e}"
    );
    let e = err(Tls {
        ca_file: Some(&junk),
        ..Tls::default()
    });
    assert!(e.contains("junk.pem"), "{e}");
    let e = err(Tls {
        cert_file: Some(&junk),
        key_file: Some(&junk),
        ..Tls::default()
    });
    assert!(
        e.contains("client key file") && e.contains("junk.pem"),
        "{e}"
    );
    let e = err(Tls {
        cert_file: Some(&junk),
        ..Tls::default()
    });
    assert!(e.contains("KUUTAMO_ETCD_KEY_FILE"), "{e}");
}

#[test]
fn the_password_is_never_shown() {
    let c = Credentials {
        user: "kuutamod".into(),
        password: "hunter2".into(),
    };
    let shown = format!("{c:?}");
    assert!(
        shown.contains("kuutamod") && !shown.contains("hunter2"),
        "{shown}"
    );
    let e = Etcd::new(&["http://127.0.0.1:1".into()], Tls::default(), Some(c)).expect("client");
    assert!(!format!("{e:?}").contains("hunter2"));
}

#[test]
fn lease_names_round_trip() {
    for id in [1_i64, 0x694d_7c4a_8a5b_5c0a, i64::MAX] {
        assert_eq!(lease_id(&lease_name(id)), Some(id));
    }
    assert_eq!(lease_name(255), "00000000000000ff");
    assert_eq!(lease_id("not-a-lease"), None);
    assert_eq!(
        holder_key("kuutamod-leader/a.near"),
        "kuutamod-leader/a.near/holder"
    );
}
