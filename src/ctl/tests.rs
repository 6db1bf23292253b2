//! Unit tests of [`super`]: each command against a small store that answers its calls, on a
//! virtual clock.

use std::collections::BTreeMap;

use base64::Engine;

use super::*;
use crate::consul::{KvEntry, SessionInfo};
use crate::lease::{Horizon, RecordState};

const ACCOUNT: &str = "pool.near";

/// A store of keys (value, session, index) and live sessions.
#[derive(Default)]
struct Store {
    index: u64,
    kv: BTreeMap<String, (Vec<u8>, Option<String>, u64)>,
    sessions: Vec<String>,
    /// Something else writes the control record this many times, just before our writes.
    interfere: usize,
}

impl Store {
    fn put(&mut self, key: &str, value: Vec<u8>, session: Option<String>) {
        self.index += 1;
        self.kv.insert(key.into(), (value, session, self.index));
    }

    fn entry(&self, key: &str) -> Option<KvEntry> {
        self.kv.get(key).map(|(v, s, i)| KvEntry {
            key: key.into(),
            value: Some(base64::engine::general_purpose::STANDARD.encode(v)),
            session: s.clone(),
            lock_index: 1,
            modify_index: *i,
        })
    }

    fn answer(&mut self, op: &StoreOp) -> Result<StoreReply, Failure> {
        Ok(match op {
            StoreOp::GetKey { key, .. } => StoreReply::Key(self.entry(key), self.index),
            StoreOp::GetPrefix { prefix, .. } => StoreReply::Prefix(
                self.kv
                    .keys()
                    .filter(|k| k.starts_with(prefix.as_str()))
                    .filter_map(|k| self.entry(k))
                    .collect(),
                self.index,
            ),
            StoreOp::SessionInfo { session } => {
                StoreReply::Info(self.sessions.contains(session).then(|| SessionInfo {
                    id: session.clone(),
                    name: String::new(),
                    ttl: String::new(),
                    node: String::new(),
                }))
            }
            StoreOp::PutCas { key, value, index } => {
                if self.interfere > 0 {
                    self.interfere -= 1;
                    let v = self.kv.get(key).map(|e| e.0.clone()).unwrap_or_default();
                    self.put(key, v, None);
                }
                let now = self.kv.get(key).map_or(0, |e| e.2);
                if now == *index {
                    self.put(key, value.clone(), None);
                    StoreReply::Applied(true)
                } else {
                    StoreReply::Applied(false)
                }
            }
            other => panic!("kuutamoctl does not make this call: {other:?}"),
        })
    }

    fn control(&self) -> Control {
        self.kv
            .get(&control_key(ACCOUNT))
            .and_then(|(v, _, _)| Control::parse(v))
            .unwrap_or_default()
    }

    fn set_control(&mut self, c: &Control) {
        self.put(&control_key(ACCOUNT), c.to_bytes(), None);
    }

    /// `node` holds the lock with session `session`.
    fn leader(&mut self, node: &str, session: &str) {
        let r = Record {
            hostname: format!("host-{node}"),
            node_id: node.into(),
            account: ACCOUNT.into(),
            session: session.into(),
            seq: 5,
            term: 1,
            state: RecordState::Active,
            horizon: Horizon::default(),
            successor: None,
            switchover: None,
            inherited: None,
        };
        self.sessions.push(session.into());
        self.put(&leader_key(ACCOUNT), r.to_bytes(), Some(session.into()));
    }

    /// `node`'s status record.
    fn node(&mut self, node: &str, state: &str, ready: bool, priority: u32, session: &str) {
        if !self.sessions.iter().any(|s| s == session) {
            self.sessions.push(session.into());
        }
        let r = NodeRecord {
            node_id: node.into(),
            state: state.into(),
            may_take_over: ready,
            priority,
            session: Some(session.into()),
            validating_since_ms: (state == "Validating").then_some(1),
            ..NodeRecord::default()
        };
        self.put(&crate::records::node_key(ACCOUNT, node), r.to_bytes(), None);
    }
}

/// Runs `ctl` against `store` to its end; the lines it said on the way, and the outcome.
/// `between` runs before each answer (the world moving on while the command waits).
fn run(
    store: &mut Store,
    mut ctl: Ctl,
    mut between: impl FnMut(&mut Store, Instant),
) -> (Vec<String>, Outcome) {
    let mut now = Instant::from_nanos(1_000_000_000);
    let mut said = Vec::new();
    let mut step = ctl.start(now);
    for _ in 0..10_000 {
        step = match step {
            Step::Ask(op) => {
                if matches!(
                    op,
                    StoreOp::GetPrefix {
                        blocking: Some(_),
                        ..
                    }
                ) {
                    now = now + WAIT_POLL;
                }
                between(store, now);
                let a = store.answer(&op);
                ctl.step(Some(a), now)
            }
            Step::Say(line) => {
                said.push(line);
                ctl.step(None, now)
            }
            Step::Done(o) => return (said, o),
        };
    }
    panic!("the command did not end");
}

fn none(_: &mut Store, _: Instant) {}

#[test]
fn pause_is_refused_while_a_switchover_is_in_flight_and_resume_is_not() {
    let mut s = Store::default();
    s.set_control(&Control {
        switchover: Some(Switchover {
            id: "x".into(),
            from: "a".into(),
            from_session: Some("sa".into()),
            to: Some("b".into()),
            in_window: false,
            timeout_ms: 0,
        }),
        ..Control::default()
    });
    let (_, o) = run(
        &mut s,
        Ctl::pause(ACCOUNT, true, Mutations::default()),
        none,
    );
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr[0].contains("switchover x (a -> b) is in flight"),
        "{o:?}"
    );
    assert!(!s.control().paused);
    let (_, o) = run(&mut s, Ctl::cancel(ACCOUNT, Mutations::default()), none);
    assert_eq!(o.stdout, vec!["switchover x cancelled".to_string()]);
    let (_, o) = run(
        &mut s,
        Ctl::pause(ACCOUNT, true, Mutations::default()),
        none,
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(s.control().paused);
    let c = s.control();
    assert_eq!(
        c.done.map(|d| d.outcome),
        Some("cancelled by kuutamoctl".into())
    );
}

#[cfg(feature = "mutations")]
#[test]
fn with_the_old_pause_a_pause_is_taken_during_a_switchover() {
    let mut s = Store::default();
    s.set_control(&Control {
        switchover: Some(Switchover {
            id: "x".into(),
            from: "a".into(),
            from_session: None,
            to: Some("b".into()),
            in_window: false,
            timeout_ms: 0,
        }),
        ..Control::default()
    });
    let m = Mutations {
        pause_during_switchover: true,
        ..Mutations::default()
    };
    let (_, o) = run(&mut s, Ctl::pause(ACCOUNT, true, m), none);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(s.control().paused);
}

#[test]
fn a_change_is_retried_while_the_record_changes_under_it() {
    let mut s = Store {
        interfere: 3,
        ..Store::default()
    };
    s.set_control(&Control::default());
    let (_, o) = run(
        &mut s,
        Ctl::pause(ACCOUNT, true, Mutations::default()),
        none,
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(s.control().paused);
    let mut s = Store {
        interfere: CAS_TRIES,
        ..Store::default()
    };
    let (_, o) = run(
        &mut s,
        Ctl::pause(ACCOUNT, true, Mutations::default()),
        none,
    );
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.stderr[0].contains("kept changing"), "{o:?}");
}

fn cluster_of_three() -> Store {
    let mut s = Store::default();
    s.leader("a", "sa");
    s.node("a", "Validating", false, 1, "sa");
    s.node("b", "Voting", true, 1, "sb");
    s.node("c", "Voting", true, 2, "sc");
    s
}

#[test]
fn a_switchover_names_its_leader_and_the_best_ready_standby_chosen_now() {
    let mut s = cluster_of_three();
    let ctl = Ctl::switchover(
        ACCOUNT,
        None,
        false,
        false,
        Duration::from_secs(120),
        "r1".into(),
        Mutations::default(),
    );
    let (_, o) = run(&mut s, ctl, none);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout,
        vec!["switchover r1 requested: a -> c".to_string()]
    );
    let sw = s.control().switchover.expect("the request");
    assert_eq!(
        (
            sw.from.as_str(),
            sw.from_session.as_deref(),
            sw.to.as_deref()
        ),
        ("a", Some("sa"), Some("c"))
    );
    // A second one is refused while this one is in flight.
    let ctl = Ctl::switchover(
        ACCOUNT,
        Some("b".into()),
        false,
        false,
        Duration::from_secs(120),
        "r2".into(),
        Mutations::default(),
    );
    let (_, o) = run(&mut s, ctl, none);
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(s.control().switchover.map(|s| s.id), Some("r1".into()));
}

#[test]
fn a_switchover_to_a_node_that_is_not_ready_or_in_a_paused_cluster_is_refused() {
    let mut s = cluster_of_three();
    // c's session is gone: its record is not taken for a ready standby.
    s.sessions.retain(|x| x != "sc");
    let ctl = |to: &str| {
        Ctl::switchover(
            ACCOUNT,
            Some(to.into()),
            false,
            false,
            Duration::from_secs(120),
            "r".into(),
            Mutations::default(),
        )
    };
    let (_, o) = run(&mut s, ctl("c"), none);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr[0].contains("c is not a synced standby"), "{o:?}");
    s.set_control(&Control {
        paused: true,
        ..Control::default()
    });
    let (_, o) = run(&mut s, ctl("b"), none);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(o.stderr[0].contains("paused"), "{o:?}");
    assert_eq!(s.control().switchover, None);
}

#[test]
fn wait_reports_the_switch_only_once_the_target_holds_the_lock_with_its_key_confirmed() {
    let mut s = cluster_of_three();
    let ctl = Ctl::switchover(
        ACCOUNT,
        Some("b".into()),
        false,
        true,
        Duration::from_secs(120),
        "r".into(),
        Mutations::default(),
    );
    // The world, once the request is there: a fences, then b takes the lock, ends the
    // request, and shows its key live a few reads later.
    let mut t = 0;
    let (said, o) = run(&mut s, ctl, |s, _| {
        if t == 0 && s.control().switchover.is_none() {
            return;
        }
        t += 1;
        match t {
            1 => s.node("a", "Voting", true, 1, "sa"),
            2 => {
                s.leader("b", "sb");
                let mut c = s.control();
                c.finish(&SwitchoverDone {
                    id: "r".into(),
                    ok: true,
                    leader: Some("b".into()),
                    outcome: "a -> b".into(),
                });
                s.set_control(&c);
                s.node("b", "Promoting", false, 1, "sb");
            }
            8 => s.node("b", "Validating", false, 1, "sb"),
            _ => {}
        }
    });
    assert!(
        said[0].starts_with("switchover r requested: a -> b"),
        "{said:?}"
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.switched_to.as_deref(), Some("b"));
    assert!(o.stdout[0].starts_with("switched over: a -> b"), "{o:?}");
}

#[test]
fn wait_reports_what_happened_when_another_node_validates() {
    let mut s = cluster_of_three();
    let ctl = Ctl::switchover(
        ACCOUNT,
        Some("b".into()),
        false,
        true,
        Duration::from_secs(120),
        "r".into(),
        Mutations::default(),
    );
    let mut done = false;
    let (_, o) = run(&mut s, ctl, |s, _| {
        if !done && s.control().switchover.is_some() {
            done = true;
            s.leader("c", "sc");
            s.node("c", "Validating", false, 2, "sc");
            let mut c = s.control();
            c.finish(&SwitchoverDone {
                id: "r".into(),
                ok: false,
                leader: Some("c".into()),
                outcome: "c validates, not b".into(),
            });
            s.set_control(&c);
        }
    });
    assert_eq!(o.code, 1, "{o:?}");
    assert_eq!(o.switched_to, None);
    assert!(o.stderr[0].contains("now c validates"), "{o:?}");
}

#[test]
fn wait_withdraws_the_request_at_its_timeout() {
    let mut s = cluster_of_three();
    let ctl = Ctl::switchover(
        ACCOUNT,
        Some("b".into()),
        false,
        true,
        Duration::from_secs(2),
        "r".into(),
        Mutations::default(),
    );
    let (_, o) = run(&mut s, ctl, none);
    assert_eq!(o.code, 1, "{o:?}");
    assert!(
        o.stderr[0].contains("did not end within 2s (request withdrawn)"),
        "{o:?}"
    );
    let c = s.control();
    assert_eq!(c.switchover, None);
    assert!(c.done.is_some_and(|d| d.id == "r" && !d.ok));
}
