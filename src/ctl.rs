//! The operator's commands that steer the cluster through its control record (`kuutamoctl
//! pause`, `resume`, `switchover [--to] [--wait]`, `switchover --cancel`), as plain code
//! without I/O: each command is a [`Ctl`] that says which lock-store call it makes next and
//! takes the answer, so that `kuutamoctl` runs it against the lock store its settings name
//! (Consul or etcd) and the deterministic simulation against its model, the same code.
//!
//! Every change of the control record is a check-and-set ([`Change`]), so two commands that
//! race are applied one after the other, each seeing what the other did. A switchover is one
//! operation with an identity: the request names the node that validates now (`from`, with its
//! session) and the target chosen now (the named one, or the ready standby with the highest
//! priority); only `from` carries it out, once; the node that validates afterwards ends it in
//! the control record's `done`. `--wait` reports only what it observed: the node holding the
//! lock with its activation confirmed, and the signing gap as the status records showed it.

use std::time::Duration;

use crate::clock::Instant;
use crate::lease::Record;
use crate::lock_store::{Failure, StoreOp, StoreReply};
use crate::machine::Mutations;
use crate::records::{control_key, prefix, Control, NodeRecord, Switchover, SwitchoverDone};
use crate::settings::leader_key;

/// How often `--wait` looks at the records (a blocking query returns at once on a change).
pub const WAIT_POLL: Duration = Duration::from_millis(200);

/// After a switchover ended, how long `--wait` waits for the lock holder's status record to
/// show its key confirmed live (a restart with the key takes neard's boot).
pub const CONFIRM_WAIT: Duration = Duration::from_secs(30);

/// How many times a change of the control record is tried against a record that keeps
/// changing.
pub const CAS_TRIES: usize = 10;

/// A change of the control record, and when it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `pause` (true) or `resume`.
    Pause(bool),
    /// `switchover --cancel`.
    Cancel,
    /// `switchover`: the request.
    Request(Switchover),
    /// `--wait` gave up on request `id` after `timeout`: the request is withdrawn.
    Withdraw {
        /// The request.
        id: String,
        /// How long `--wait` waited.
        timeout: Duration,
    },
}

/// The pending switchover, described for an operator.
fn describe(sw: &Switchover) -> String {
    format!(
        "switchover {} ({} -> {})",
        sw.id,
        sw.from,
        sw.to.as_deref().unwrap_or("the best standby")
    )
}

impl Change {
    /// Applies the change to `c`, or says why it is refused. `m`: the simulation's switched-off
    /// fixes (none in a real build).
    pub fn apply(&self, c: &mut Control, m: Mutations) -> Result<(), String> {
        match self {
            Change::Pause(paused) => {
                // A pause would leave a switchover's successor to decide alone whether a
                // released lock may be taken: refuse while one is in flight.
                if let (true, Some(sw)) = (paused, &c.switchover) {
                    if !m.on(|m| m.pause_during_switchover) {
                        return Err(format!(
                            "{} is in flight: wait for it to end (`kuutamoctl status`) or cancel it (`kuutamoctl switchover --cancel`), then pause",
                            describe(sw)
                        ));
                    }
                }
                c.paused = *paused;
                Ok(())
            }
            Change::Cancel => {
                let Some(sw) = c.switchover.take() else {
                    return Err("no switchover is in flight".into());
                };
                c.done = Some(SwitchoverDone {
                    id: sw.id,
                    ok: false,
                    leader: None,
                    outcome: "cancelled by kuutamoctl".into(),
                });
                Ok(())
            }
            Change::Request(request) => {
                if c.paused {
                    return Err(
                        "automatic failover is paused; `kuutamoctl resume` first, then switch over"
                            .into(),
                    );
                }
                if let Some(sw) = &c.switchover {
                    return Err(format!(
                        "{} is in flight: wait for it to end, or `kuutamoctl switchover --cancel`",
                        describe(sw)
                    ));
                }
                c.switchover = Some(request.clone());
                Ok(())
            }
            Change::Withdraw { id, timeout } => {
                if c.switchover.as_ref().is_some_and(|s| &s.id == id) {
                    let sw = c.switchover.take();
                    c.done = sw.map(|sw| SwitchoverDone {
                        id: sw.id,
                        ok: false,
                        leader: None,
                        outcome: format!("timed out after {timeout:?} in kuutamoctl --wait"),
                    });
                }
                Ok(())
            }
        }
    }
}

/// What a command does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Make this lock-store call and hand its answer to [`Ctl::step`].
    Ask(StoreOp),
    /// Print this line on stdout, then call [`Ctl::step`] with no answer.
    Say(String),
    /// Done: the exit status, after printing `stdout` and `stderr` lines.
    Done(Outcome),
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// kuutamoctl's exit status (0 done; 1 not done, with why; 3 the store could not be
    /// asked).
    pub code: i32,
    /// What it prints on stdout.
    pub stdout: Vec<String>,
    /// What it prints on stderr.
    pub stderr: Vec<String>,
    /// `switchover`: the request written, if one was.
    pub request: Option<Switchover>,
    /// `--wait`: the node it reports validating as the target, on success.
    pub switched_to: Option<String>,
}

impl Outcome {
    fn ok(line: String) -> Outcome {
        Outcome {
            stdout: vec![line],
            ..Outcome::default()
        }
    }

    fn no(line: String) -> Outcome {
        Outcome {
            code: 1,
            stderr: vec![format!("kuutamoctl: {line}")],
            ..Outcome::default()
        }
    }

    fn error(e: impl std::fmt::Display) -> Outcome {
        Outcome {
            code: 3,
            stderr: vec![format!("kuutamoctl: {e}")],
            ..Outcome::default()
        }
    }
}

/// The lock as kuutamoctl reads it: its record, its holder's session, and whether that session
/// is alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Lock {
    record: Option<Record>,
    holder: Option<String>,
    alive: bool,
}

impl Lock {
    /// The node that validates: the record's node id, while its session is alive.
    fn validator(&self) -> Option<String> {
        self.record
            .as_ref()
            .filter(|_| self.alive)
            .map(|r| r.node_id.clone())
    }
}

/// Reading the lock: the key, then its holder's session.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LockRead {
    Key,
    Session(Lock),
    Done(Lock),
}

impl LockRead {
    fn first(account: &str) -> StoreOp {
        StoreOp::GetKey {
            key: leader_key(account),
            blocking: None,
            consistent: false,
        }
    }

    /// Takes an answer; the next call, or `None` when the lock is read.
    fn take(&mut self, answer: StoreReply) -> Option<StoreOp> {
        match (std::mem::replace(self, LockRead::Key), answer) {
            (LockRead::Key, StoreReply::Key(entry, _)) => {
                let holder = entry
                    .as_ref()
                    .and_then(|e| e.session.clone())
                    .filter(|s| !s.is_empty());
                let record = entry.as_ref().and_then(|e| Record::parse(&e.bytes()));
                let lock = Lock {
                    record,
                    holder: holder.clone(),
                    alive: false,
                };
                match holder {
                    Some(session) => {
                        *self = LockRead::Session(lock);
                        Some(StoreOp::SessionInfo { session })
                    }
                    None => {
                        *self = LockRead::Done(lock);
                        None
                    }
                }
            }
            (LockRead::Session(mut lock), StoreReply::Info(info)) => {
                lock.alive = info.is_some();
                *self = LockRead::Done(lock);
                None
            }
            (other, _) => {
                *self = other;
                None
            }
        }
    }
}

/// The account's records as kuutamoctl reads them: the control record and its index (0 when
/// absent), and every node's status record, by node id.
pub fn cluster(
    account: &str,
    entries: &[crate::consul::KvEntry],
) -> (Control, u64, Vec<NodeRecord>) {
    let ckey = control_key(account);
    let mut control = (Control::default(), 0);
    let mut nodes = Vec::new();
    for e in entries {
        if e.key == ckey {
            control = (
                Control::parse(&e.bytes()).unwrap_or_default(),
                e.modify_index,
            );
        } else if let Some(r) = NodeRecord::parse(&e.bytes()) {
            nodes.push(r);
        }
    }
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    (control.0, control.1, nodes)
}

/// A check-and-set of the control record, retried while it changes under it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Update {
    change: Change,
    tries: usize,
    /// The record the write in flight would leave.
    writing: Option<Control>,
}

/// Where an [`Update`] is.
enum Updated {
    Ask(StoreOp),
    Done(Control),
    Refused(String),
}

impl Update {
    fn new(change: Change) -> Update {
        Update {
            change,
            tries: 0,
            writing: None,
        }
    }

    fn read(&mut self, account: &str) -> Updated {
        if self.tries >= CAS_TRIES {
            return Updated::Refused(String::new());
        }
        self.tries += 1;
        Updated::Ask(StoreOp::GetPrefix {
            prefix: prefix(account),
            blocking: None,
        })
    }

    fn take(&mut self, account: &str, answer: StoreReply, m: Mutations) -> Updated {
        match (self.writing.take(), answer) {
            (None, StoreReply::Prefix(entries, _)) => {
                let (mut control, index, _) = cluster(account, &entries);
                if let Err(why) = self.change.apply(&mut control, m) {
                    return Updated::Refused(why);
                }
                let value = control.to_bytes();
                self.writing = Some(control);
                Updated::Ask(StoreOp::PutCas {
                    key: control_key(account),
                    value,
                    index,
                })
            }
            (Some(control), StoreReply::Applied(true)) => Updated::Done(control),
            _ => self.read(account),
        }
    }
}

/// One operator command.
#[derive(Debug, Clone)]
pub struct Ctl {
    account: String,
    mutations: Mutations,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// `pause`, `resume`, `switchover --cancel`.
    Update(Update),
    /// `switchover`: reading the lock.
    Lock {
        req: Request,
        read: LockRead,
    },
    /// `switchover`: reading the records.
    Records {
        req: Request,
        old: String,
        session: String,
    },
    /// `switchover`: asking whether each candidate's session is alive.
    Ready(Candidates),
    /// `switchover`: writing the request.
    Write {
        update: Update,
        request: Switchover,
        wait: Option<Duration>,
    },
    /// `--wait`.
    Wait(Box<Wait>),
    Done,
}

/// What `switchover` was asked.
#[derive(Debug, Clone)]
struct Request {
    to: Option<String>,
    in_window: bool,
    wait: bool,
    timeout: Duration,
    id: String,
}

/// `switchover`'s candidates, while their sessions are asked about.
#[derive(Debug, Clone)]
struct Candidates {
    req: Request,
    old: String,
    session: String,
    /// Nodes still to ask about, and the ready ones so far.
    todo: Vec<NodeRecord>,
    ready: Vec<NodeRecord>,
    asking: Option<NodeRecord>,
}

impl Ctl {
    /// `kuutamoctl pause` (`true`) or `resume`.
    pub fn pause(account: &str, paused: bool, m: Mutations) -> Ctl {
        Ctl::update(account, Change::Pause(paused), m)
    }

    /// `kuutamoctl switchover --cancel`.
    pub fn cancel(account: &str, m: Mutations) -> Ctl {
        Ctl::update(account, Change::Cancel, m)
    }

    fn update(account: &str, change: Change, m: Mutations) -> Ctl {
        Ctl {
            account: account.into(),
            mutations: m,
            state: State::Update(Update::new(change)),
        }
    }

    /// `kuutamoctl switchover [--to NODE] [--in-window] [--wait] [--timeout D]`; `id`: the
    /// request's unique id.
    pub fn switchover(
        account: &str,
        to: Option<String>,
        in_window: bool,
        wait: bool,
        timeout: Duration,
        id: String,
        m: Mutations,
    ) -> Ctl {
        Ctl {
            account: account.into(),
            mutations: m,
            state: State::Lock {
                req: Request {
                    to,
                    in_window,
                    wait,
                    timeout,
                    id,
                },
                read: LockRead::Key,
            },
        }
    }

    /// The first step.
    pub fn start(&mut self, now: Instant) -> Step {
        match &mut self.state {
            State::Update(u) => match u.read(&self.account) {
                Updated::Ask(op) => Step::Ask(op),
                _ => Step::Done(Outcome::error("no tries")),
            },
            State::Lock { .. } => Step::Ask(LockRead::first(&self.account)),
            _ => self.step(None, now),
        }
    }

    /// Takes the answer to the last call (`None` after [`Step::Say`]); what comes next.
    pub fn step(&mut self, answer: Option<Result<StoreReply, Failure>>, now: Instant) -> Step {
        let answer = match answer {
            Some(Err(e)) => {
                // Withdrawing a request at `--wait`'s timeout may fail: the report follows.
                if let State::Wait(w) = &mut self.state {
                    if matches!(w.step, WaitStep::Withdraw(_)) {
                        w.step = WaitStep::TimedOut {
                            read: LockRead::Key,
                            withdrawn: false,
                        };
                        return Step::Ask(LockRead::first(&self.account));
                    }
                }
                self.state = State::Done;
                return Step::Done(Outcome::error(e));
            }
            Some(Ok(a)) => Some(a),
            None => None,
        };
        let account = self.account.clone();
        let m = self.mutations;
        match std::mem::replace(&mut self.state, State::Done) {
            State::Update(mut u) => {
                let Some(a) = answer else {
                    return Step::Done(Outcome::error("no answer"));
                };
                match u.take(&account, a, m) {
                    Updated::Ask(op) => {
                        self.state = State::Update(u);
                        Step::Ask(op)
                    }
                    Updated::Refused(why) if why.is_empty() => Step::Done(Outcome::error(
                        "the control record kept changing; try again",
                    )),
                    Updated::Refused(why) => Step::Done(Outcome::no(why)),
                    Updated::Done(c) => Step::Done(match u.change {
                        Change::Pause(paused) => Outcome::ok(format!(
                            "automatic failover for {account} is {}",
                            if paused {
                                "paused (safety fences stay active; `kuutamoctl resume` to end)"
                            } else {
                                "on"
                            }
                        )),
                        _ => Outcome::ok(format!(
                            "switchover {} cancelled",
                            c.done.map(|d| d.id).unwrap_or_default()
                        )),
                    }),
                }
            }
            State::Lock { req, mut read } => {
                if let Some(op) = answer.and_then(|a| read.take(a)) {
                    self.state = State::Lock { req, read };
                    return Step::Ask(op);
                }
                let LockRead::Done(lock) = read else {
                    return Step::Done(Outcome::error("the lock could not be read"));
                };
                let (Some(r), Some(s), true) = (&lock.record, &lock.holder, lock.alive) else {
                    return Step::Done(Outcome::no(format!(
                        "no node validates for {account}; nothing to hand over"
                    )));
                };
                let (old, session) = (r.node_id.clone(), s.clone());
                self.state = State::Records { req, old, session };
                Step::Ask(StoreOp::GetPrefix {
                    prefix: prefix(&account),
                    blocking: None,
                })
            }
            State::Records { req, old, session } => {
                let Some(StoreReply::Prefix(entries, _)) = answer else {
                    return Step::Done(Outcome::error("the records could not be read"));
                };
                let (_, _, nodes) = cluster(&account, &entries);
                if req.to.as_deref() == Some(old.as_str()) {
                    return Step::Done(Outcome::ok(format!("{old} already validates")));
                }
                // The nodes that would take the lock now: a status record that says so, judged
                // by its Consul session being alive (the node's kuutamod renews it), never by
                // its wall-clock age.
                let todo: Vec<NodeRecord> = nodes
                    .into_iter()
                    .filter(|n| {
                        n.node_id != old && n.may_take_over && n.priority > 0 && n.session.is_some()
                    })
                    .rev()
                    .collect();
                self.candidates(Candidates {
                    req,
                    old,
                    session,
                    todo,
                    ready: Vec::new(),
                    asking: None,
                })
            }
            State::Ready(mut c) => {
                if let (Some(n), Some(StoreReply::Info(info))) = (c.asking.take(), answer) {
                    if info.is_some() {
                        c.ready.push(n);
                    }
                }
                self.candidates(c)
            }
            State::Write {
                mut update,
                request,
                wait,
            } => {
                let Some(a) = answer else {
                    return Step::Done(Outcome::error("no answer"));
                };
                match update.take(&account, a, m) {
                    Updated::Ask(op) => {
                        self.state = State::Write {
                            update,
                            request,
                            wait,
                        };
                        Step::Ask(op)
                    }
                    Updated::Refused(why) if why.is_empty() => Step::Done(Outcome::error(
                        "the control record kept changing; try again",
                    )),
                    Updated::Refused(why) => Step::Done(Outcome::no(why)),
                    Updated::Done(_) => {
                        let line = format!(
                            "switchover {} requested: {} -> {}{}",
                            request.id,
                            request.from,
                            request.to.as_deref().unwrap_or_default(),
                            if request.in_window {
                                ", in a maintenance window"
                            } else {
                                ""
                            }
                        );
                        match wait {
                            None => Step::Done(Outcome {
                                request: Some(request),
                                ..Outcome::ok(line)
                            }),
                            Some(timeout) => {
                                self.state =
                                    State::Wait(Box::new(Wait::new(request, timeout, now)));
                                Step::Say(line)
                            }
                        }
                    }
                }
            }
            State::Wait(mut w) => {
                let step = w.step(&account, answer, now, m);
                if !matches!(step, Step::Done(_)) {
                    self.state = State::Wait(w);
                }
                step
            }
            State::Done => Step::Done(Outcome::error("the command is over")),
        }
    }

    /// Asks about the next candidate's session, or chooses the target and writes the request.
    fn candidates(&mut self, mut c: Candidates) -> Step {
        if let Some(n) = c.todo.pop() {
            let session = n.session.clone().unwrap_or_default();
            c.asking = Some(n);
            self.state = State::Ready(c);
            return Step::Ask(StoreOp::SessionInfo { session });
        }
        let Candidates {
            req,
            old,
            session,
            ready,
            ..
        } = c;
        let names = ready
            .iter()
            .map(|n| n.node_id.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        // The target is chosen now, never by the node that validates afterwards (the
        // simulation's mutation restores the old way: no target unless one is named).
        if self.mutations.on(|m| m.switchover_without_identity) && req.to.is_none() {
            let request = Switchover {
                id: req.id.clone(),
                from: old,
                from_session: Some(session),
                to: None,
                in_window: req.in_window,
                timeout_ms: u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX),
            };
            return self.write_request(request, req.wait.then_some(req.timeout));
        }
        let target = match &req.to {
            Some(t) if !ready.iter().any(|n| &n.node_id == t) => {
                return Step::Done(Outcome::no(format!(
                    "{t} is not a synced standby that may take over (ready: {names})"
                )));
            }
            Some(t) => t.clone(),
            None => match ready
                .iter()
                .max_by(|a, b| a.priority.cmp(&b.priority).then(b.node_id.cmp(&a.node_id)))
            {
                Some(n) => n.node_id.clone(),
                None => return Step::Done(Outcome::no("no synced standby may take over".into())),
            },
        };
        let request = Switchover {
            id: req.id.clone(),
            from: old,
            from_session: Some(session),
            to: Some(target),
            in_window: req.in_window,
            timeout_ms: u64::try_from(req.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.write_request(request, req.wait.then_some(req.timeout))
    }

    /// Writes the switchover request into the control record.
    fn write_request(&mut self, request: Switchover, wait: Option<Duration>) -> Step {
        let mut update = Update::new(Change::Request(request.clone()));
        let Updated::Ask(op) = update.read(&self.account) else {
            return Step::Done(Outcome::error("no tries"));
        };
        self.state = State::Write {
            update,
            request,
            wait,
        };
        Step::Ask(op)
    }
}

/// `switchover --wait`: follows the records until the request ends or the timeout passes, and
/// reports what it saw.
#[derive(Debug, Clone)]
struct Wait {
    request: Switchover,
    old: String,
    target: String,
    timeout: Duration,
    deadline: Instant,
    /// When the old leader's record was first seen not validating, and a node's record first
    /// seen validating with its activation confirmed after that: the signing gap.
    fenced: Option<Instant>,
    live: Option<(String, Instant)>,
    last_status: String,
    index: u64,
    ended_at: Option<Instant>,
    step: WaitStep,
}

#[derive(Debug, Clone)]
enum WaitStep {
    /// A read of the records is in flight.
    Records,
    /// The request ended: reading the lock, with the records as they were.
    Ended {
        read: LockRead,
        done: SwitchoverDone,
        nodes: Vec<NodeRecord>,
        seen: Instant,
    },
    /// The timeout passed: withdrawing the request.
    Withdraw(Update),
    /// Withdrawn (or not): reading the lock for the report.
    TimedOut { read: LockRead, withdrawn: bool },
}

impl Wait {
    fn new(request: Switchover, timeout: Duration, now: Instant) -> Wait {
        Wait {
            old: request.from.clone(),
            target: request.to.clone().unwrap_or_default(),
            request,
            timeout,
            deadline: now + timeout,
            fenced: None,
            live: None,
            last_status: String::new(),
            index: 0,
            ended_at: None,
            step: WaitStep::Records,
        }
    }

    /// The next read of the records (or, past the deadline, the withdrawal).
    fn next(&mut self, account: &str, now: Instant) -> Step {
        if now >= self.deadline {
            let mut u = Update::new(Change::Withdraw {
                id: self.request.id.clone(),
                timeout: self.timeout,
            });
            let Updated::Ask(op) = u.read(account) else {
                return Step::Done(Outcome::error("no tries"));
            };
            self.step = WaitStep::Withdraw(u);
            return Step::Ask(op);
        }
        self.step = WaitStep::Records;
        let wait = WAIT_POLL.min(self.deadline.saturating_duration_since(now));
        Step::Ask(StoreOp::GetPrefix {
            prefix: prefix(account),
            blocking: (self.index > 0).then_some((self.index, wait)),
        })
    }

    fn step(
        &mut self,
        account: &str,
        answer: Option<StoreReply>,
        now: Instant,
        m: Mutations,
    ) -> Step {
        let Some(answer) = answer else {
            // After a line was printed: the lock's read of an ended request, or the next read
            // of the records.
            if matches!(self.step, WaitStep::Ended { .. }) {
                return Step::Ask(LockRead::first(account));
            }
            return self.next(account, now);
        };
        match std::mem::replace(&mut self.step, WaitStep::Records) {
            WaitStep::Records => {
                let StoreReply::Prefix(entries, index) = answer else {
                    return Step::Done(Outcome::error("the records could not be read"));
                };
                self.index = index;
                let seen = now;
                let (control, _, nodes) = cluster(account, &entries);
                let old = self.old.clone();
                let state = |n: &str| nodes.iter().find(|r| r.node_id == n).cloned();
                if self.fenced.is_none() && state(&old).is_some_and(|r| r.state != "Validating") {
                    self.fenced = Some(seen);
                }
                if let (Some(_), None) = (self.fenced, &self.live) {
                    if let Some(r) = nodes.iter().find(|r| {
                        r.node_id != old
                            && r.state == "Validating"
                            && r.validating_since_ms.is_some()
                    }) {
                        self.live = Some((r.node_id.clone(), seen));
                    }
                }
                let status = state(&old)
                    .and_then(|r| r.switchover)
                    .filter(|s| s.id == self.request.id && s.status != self.last_status);
                let done = control.done.filter(|d| d.id == self.request.id);
                if let Some(done) = done {
                    self.step = WaitStep::Ended {
                        read: LockRead::Key,
                        done,
                        nodes,
                        seen,
                    };
                    if let Some(s) = status {
                        self.last_status = s.status.clone();
                        return Step::Say(format!("{old}: {}", s.status));
                    }
                    return Step::Ask(LockRead::first(account));
                }
                if let Some(s) = status {
                    self.last_status = s.status.clone();
                    // The next read comes after the line is printed.
                    self.step = WaitStep::Records;
                    self.index = index;
                    return Step::Say(format!("{old}: {}", s.status));
                }
                self.next(account, now)
            }
            WaitStep::Ended {
                mut read,
                done,
                nodes,
                seen,
            } => {
                if let Some(op) = read.take(answer) {
                    self.step = WaitStep::Ended {
                        read,
                        done,
                        nodes,
                        seen,
                    };
                    return Step::Ask(op);
                }
                let LockRead::Done(lock) = read else {
                    return Step::Done(Outcome::error("the lock could not be read"));
                };
                self.ended(account, lock, done, &nodes, seen, now)
            }
            WaitStep::Withdraw(mut u) => match u.take(account, answer, m) {
                Updated::Ask(op) => {
                    self.step = WaitStep::Withdraw(u);
                    Step::Ask(op)
                }
                done @ (Updated::Done(_) | Updated::Refused(_)) => {
                    let withdrawn = matches!(done, Updated::Done(_));
                    self.step = WaitStep::TimedOut {
                        read: LockRead::Key,
                        withdrawn,
                    };
                    Step::Ask(LockRead::first(account))
                }
            },
            WaitStep::TimedOut {
                mut read,
                withdrawn,
            } => {
                if let Some(op) = read.take(answer) {
                    self.step = WaitStep::TimedOut { read, withdrawn };
                    return Step::Ask(op);
                }
                let LockRead::Done(lock) = read else {
                    return Step::Done(Outcome::error("the lock could not be read"));
                };
                let holder = lock.validator();
                Step::Done(Outcome::no(format!(
                    "switchover {} did not end within {:?}{}; last status: {}; {} validates now",
                    self.request.id,
                    self.timeout,
                    if withdrawn {
                        " (request withdrawn)"
                    } else {
                        ""
                    },
                    if self.last_status.is_empty() {
                        "none"
                    } else {
                        &self.last_status
                    },
                    holder.as_deref().unwrap_or("no node"),
                )))
            }
        }
    }

    /// The request ended: who holds the lock now, with its activation confirmed?
    fn ended(
        &mut self,
        account: &str,
        lock: Lock,
        done: SwitchoverDone,
        nodes: &[NodeRecord],
        seen: Instant,
        now: Instant,
    ) -> Step {
        let holder = lock.validator();
        let state = |n: &str| nodes.iter().find(|r| r.node_id == n);
        let confirmed = holder.as_deref().is_some_and(|h| {
            state(h).is_some_and(|r| r.state == "Validating" && r.validating_since_ms.is_some())
        });
        // The node that ended the request writes its status record on its own: give it a
        // moment to show the confirmed activation.
        let ended = *self.ended_at.get_or_insert(seen);
        if holder.is_some() && !confirmed && seen < ended + CONFIRM_WAIT && seen < self.deadline {
            return self.next(account, now);
        }
        let (old, target) = (&self.old, &self.target);
        if done.ok && confirmed && holder.as_deref() == Some(target.as_str()) {
            let gap = match (self.fenced, &self.live) {
                (Some(f), Some((n, t))) if holder.as_deref() == Some(n.as_str()) => {
                    format!("{} ms", t.saturating_duration_since(f).as_millis())
                }
                _ => "not seen".into(),
            };
            return Step::Done(Outcome {
                switched_to: Some(target.clone()),
                request: Some(self.request.clone()),
                ..Outcome::ok(format!(
                    "switched over: {old} -> {target} (signing gap as the status records showed it: {gap})"
                ))
            });
        }
        Step::Done(Outcome {
            request: Some(self.request.clone()),
            ..Outcome::no(format!(
                "switchover {} did not go as asked ({old} -> {target}): {}; now {}",
                self.request.id,
                done.outcome,
                match (&holder, confirmed) {
                    (Some(h), true) => format!("{h} validates"),
                    (Some(h), false) =>
                        format!("{h} holds the lock, its key not confirmed live yet"),
                    (None, _) => "no node holds the lock".to_string(),
                }
            ))
        })
    }
}

#[cfg(test)]
mod tests;
