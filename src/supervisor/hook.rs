//! The role-change hook (`KUUTAMO_ON_ROLE_CHANGE`): a command run on every change of the
//! reported state, one at a time and in order, each for at most [`HOOK_TIMEOUT`]. It runs in a
//! task of its own, so a slow or hanging hook never delays a fence.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::machine::State;

/// How long a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `command` (with `sh -c`) for every `(old, new)` state change received.
pub async fn run_hooks(
    command: String,
    node_id: String,
    account: String,
    mut changes: mpsc::UnboundedReceiver<(State, State)>,
) {
    while let Some((old, new)) = changes.recv().await {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(&command)
            .arg("kuutamod-role-change")
            .arg(old.name())
            .arg(new.name())
            .env("KUUTAMO_ROLE_OLD", old.name())
            .env("KUUTAMO_ROLE_NEW", new.name())
            .env("KUUTAMO_NODE_ID", &node_id)
            .env("KUUTAMO_ACCOUNT_ID", &account)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                log::warn!("role-change hook: cannot run `sh -c {command:?}`: {e}");
                continue;
            }
        };
        match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) if status.success() => {
                log::info!("role-change hook ran for {} -> {}", old.name(), new.name())
            }
            Ok(Ok(status)) => log::warn!(
                "role-change hook for {} -> {} failed: {status}",
                old.name(),
                new.name()
            ),
            Ok(Err(e)) => log::warn!("role-change hook: {e}"),
            Err(_) => {
                log::warn!(
                    "role-change hook for {} -> {} ran longer than {HOOK_TIMEOUT:?}; killed",
                    old.name(),
                    new.name()
                );
                let _ = child.kill().await;
            }
        }
    }
}
