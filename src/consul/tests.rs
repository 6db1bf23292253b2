//! Unit tests of [`super`].

use super::*;
use crate::lease::KeyState;

#[tokio::test]
async fn unreachable_consul_names_the_endpoint_and_the_cause() {
    // A port nobody listens on (bound, then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let c = Consul::new(&format!("http://127.0.0.1:{port}"), None).expect("client");
    let err = c
        .renew("abc")
        .await
        .expect_err("nobody listens")
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}/v1/session/renew/abc")),
        "{err}"
    );
    assert!(err.contains("cannot connect"), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");

    // A plain read names the key's URL as it is, without a stray `?`.
    let err = c
        .get_key("kuutamod-leader/pool.near", None, false)
        .await
        .expect_err("nobody listens")
        .to_string();
    assert!(
        err.contains(&format!(
            "Consul at http://127.0.0.1:{port}/v1/kv/kuutamod-leader/pool.near is unreachable"
        )),
        "{err}"
    );
    let err = c
        .get_key("k", Some((7, std::time::Duration::from_secs(5))), true)
        .await
        .expect_err("nobody listens")
        .to_string();
    assert!(
        err.contains("/v1/kv/k?index=7&wait=5s&consistent "),
        "{err}"
    );
}

#[test]
fn a_bad_ca_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    let err = Consul::with_ca("https://consul:8501", None, Some(&missing))
        .expect_err("missing")
        .to_string();
    assert!(
        err.contains("Consul CA file") && err.contains("missing.pem"),
        "{err}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").expect("write");
    let err = Consul::with_ca("https://consul:8501", None, Some(&junk))
        .expect_err("junk")
        .to_string();
    assert!(err.contains("junk.pem"), "{err}");
}

#[test]
fn entries_decode_their_value() {
    let e: KvEntry = serde_json::from_str(
        r#"{"Key":"k","Value":"aGk=","Session":"s","LockIndex":1,"ModifyIndex":7}"#,
    )
    .expect("parses");
    assert_eq!(
        e.state(),
        KeyState {
            index: 7,
            session: Some("s".into()),
            value: b"hi".to_vec()
        }
    );
}
