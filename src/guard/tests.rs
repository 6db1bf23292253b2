//! Unit tests of [`super`].

use super::*;
use crate::clock::Instant;

#[test]
fn orders_round_trip() {
    let arm = GuardOrder::Arm {
        pid: 42,
        deadline: Instant::from_nanos(7_000_000_000),
    };
    assert_eq!(
        parse_order(&order_line(3, arm)),
        Some(Parsed::Arm {
            seq: 3,
            pid: 42,
            deadline: 7_000_000_000
        })
    );
    assert_eq!(
        parse_order(&order_line(4, GuardOrder::Disarm)),
        Some(Parsed::Disarm { seq: 4 })
    );
    assert_eq!(
        parse_order(&order_line(5, GuardOrder::Ping)),
        Some(Parsed::Ping { seq: 5 })
    );
    assert_eq!(parse_order("arm x 1 2"), None);
}

/// A guard that never reads (stopped) must not block kuutamod: once the pipe is full an
/// order fails at once.
#[test]
fn orders_never_block_on_a_full_pipe() {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::piped())
        .spawn()
        .expect("sleep");
    let stdin = child.stdin.take().expect("stdin");
    set_nonblocking(stdin.as_fd()).expect("nonblocking");
    let mut guard = Guard {
        child,
        stdin,
        generation: 1,
    };
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    let err = loop {
        match guard.order(sent, GuardOrder::Ping) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the pipe never filled");
    };
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock, "{err}");
    assert!(
        sent > 1000,
        "a 64 KiB pipe holds thousands of orders ({sent})"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
