//! The commands that steer the cluster through its control record: `pause`, `resume` and
//! `switchover`. What each does is [`kuutamod::ctl`] (plain code, which the deterministic
//! simulation runs too); this file runs it against the lock store (Consul or etcd,
//! [`kuutamod::store::Store`]) and prints what it says.

use super::*;
use kuutamod::ctl::{Ctl, Step};
use kuutamod::lock_store::{execute, Failure};
use kuutamod::machine::Mutations;

/// Runs `ctl` against the store `consul`, printing its lines; its exit status.
async fn drive(consul: &Consul, mut ctl: Ctl) -> Result<i32, String> {
    let mut consul = consul.clone();
    let mut step = ctl.start(kuutamod::clock::now());
    loop {
        step = match step {
            Step::Ask(op) => {
                let answer = execute(&mut consul, &op).await.map_err(Failure::from);
                ctl.step(Some(answer), kuutamod::clock::now())
            }
            Step::Say(line) => {
                println!("{line}");
                ctl.step(None, kuutamod::clock::now())
            }
            Step::Done(outcome) => {
                for line in outcome.stdout {
                    println!("{line}");
                }
                for line in outcome.stderr {
                    eprintln!("{line}");
                }
                return Ok(outcome.code);
            }
        };
    }
}

pub(super) async fn set_paused(
    consul: &Consul,
    account: &str,
    paused: bool,
) -> Result<i32, String> {
    drive(consul, Ctl::pause(account, paused, Mutations::default())).await
}

/// `switchover --cancel`: ends a pending switchover without a hand-over (one already under
/// way completes; its outcome is then recorded by no one).
pub(super) async fn cancel_switchover(consul: &Consul, account: &str) -> Result<i32, String> {
    drive(consul, Ctl::cancel(account, Mutations::default())).await
}

pub(super) async fn switchover(
    consul: &Consul,
    account: &str,
    to: Option<String>,
    in_window: bool,
    wait: bool,
    timeout: Duration,
) -> Result<i32, String> {
    let id = format!("{:x}-{}", wall_ms(), std::process::id());
    let ctl = Ctl::switchover(
        account,
        to,
        in_window,
        wait,
        timeout,
        id,
        Mutations::default(),
    );
    drive(consul, ctl).await
}
