//! The operator: `kuutamoctl pause`, `resume`, `switchover [--to] [--wait]` and `switchover
//! --cancel` at the schedule's moments, each run as kuutamoctl runs it ([`kuutamod::ctl`]: the
//! same code), its calls going to the Consul servers from an operator's host. A command that
//! could not ask Consul (exit status 3) is run again two seconds later, as an operator would.
//! What `--wait` reports is kept for the invariants.

use std::time::Duration;

use kuutamod::clock::Instant;
use kuutamod::ctl::{Ctl, Outcome, Step};
use kuutamod::lock_store::{Failure, StoreReply};

use super::events::Ev;
use super::{World, ACCOUNT};
use crate::clock::S;

/// How long the simulated operator's `switchover` requests may take (`--timeout`): the
/// liveness bound's order of magnitude at the simulation's TTL.
const SWITCHOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// How long an operator waits before running a command again that could not ask Consul.
const RETRY: u64 = 2 * S;

/// What the operator runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Command {
    /// `pause` (true) or `resume`.
    Pause(bool),
    /// `switchover --cancel`.
    Cancel,
    /// `switchover [--to node] [--wait]`, the request's id.
    Switchover {
        to: Option<String>,
        wait: bool,
        id: String,
    },
}

/// One kuutamoctl process.
pub(super) struct Operator {
    command: Command,
    ctl: Ctl,
    /// Its outcome, once it ended.
    pub(super) outcome: Option<Outcome>,
}

impl World {
    fn ctl(&self, command: &Command) -> Ctl {
        let m = self.settings.mutation.machine();
        match command {
            Command::Pause(p) => Ctl::pause(ACCOUNT, *p, m),
            Command::Cancel => Ctl::cancel(ACCOUNT, m),
            Command::Switchover { to, wait, id } => Ctl::switchover(
                ACCOUNT,
                to.clone(),
                false,
                *wait,
                SWITCHOVER_TIMEOUT,
                id.clone(),
                m,
            ),
        }
    }

    /// The operator's time (true time: kuutamoctl's only clock is its own monotonic one).
    fn operator_now(&self) -> Instant {
        Instant::from_nanos(self.t)
    }

    /// Runs `command` now; a `pause` or `resume` after the one the operator still waits for.
    pub(super) fn operator_run(&mut self, command: Command) {
        let waiting = matches!(command, Command::Pause(_))
            && self
                .operators
                .iter()
                .any(|o| matches!(o.command, Command::Pause(_)) && o.outcome.is_none());
        if waiting {
            self.operator_queue.push(command);
            return;
        }
        let n = self.operators.len();
        let mut ctl = self.ctl(&command);
        let step = ctl.start(self.operator_now());
        let c = format!("{command:?}");
        self.trace(|| format!("kuutamoctl {n}: {c}"));
        self.operators.push(Operator {
            command,
            ctl,
            outcome: None,
        });
        self.operator_step(n, step);
    }

    /// The operator runs command `n` again (it could not ask Consul), unless it has since said
    /// the opposite (a `resume` after the `pause` that failed).
    pub(super) fn operator_retry(&mut self, n: usize) {
        let command = self.operators[n].command.clone();
        let superseded = matches!(command, Command::Pause(_))
            && self.operators[n + 1..]
                .iter()
                .any(|o| matches!(o.command, Command::Pause(_)));
        if superseded {
            return;
        }
        let command = match command {
            // kuutamoctl makes a new id for every request.
            Command::Switchover { to, wait, id } => Command::Switchover {
                to,
                wait,
                id: format!("{id}r"),
            },
            other => other,
        };
        self.operator_run(command);
    }

    /// The answer to operator `n`'s call.
    pub(super) fn operator_answer(&mut self, n: usize, answer: Result<StoreReply, Failure>) {
        let now = self.operator_now();
        let step = self.operators[n].ctl.step(Some(answer), now);
        self.operator_step(n, step);
    }

    fn operator_step(&mut self, n: usize, mut step: Step) {
        loop {
            match step {
                Step::Ask(op) => {
                    self.send_operator(n, op);
                    return;
                }
                Step::Say(line) => {
                    self.trace(|| format!("kuutamoctl {n}: {line}"));
                    let now = self.operator_now();
                    step = self.operators[n].ctl.step(None, now);
                }
                Step::Done(outcome) => {
                    let o = format!("{outcome:?}");
                    self.trace(|| format!("kuutamoctl {n} ends: {o}"));
                    // Consul could not be asked: the operator tries again.
                    if outcome.code == 3 {
                        self.after(RETRY, Ev::OperatorRetry(n));
                    }
                    self.operator_done(&outcome);
                    self.operators[n].outcome = Some(outcome);
                    if matches!(self.operators[n].command, Command::Pause(_))
                        && !self.operator_queue.is_empty()
                    {
                        let next = self.operator_queue.remove(0);
                        self.operator_run(next);
                    }
                    return;
                }
            }
        }
    }
}
