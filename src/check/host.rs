//! The checks of this host: neard's home, binary and version, the exporter address and the
//! clock.

use std::path::Path;
use std::time::Duration;

use super::Verdict;
use crate::neard::config::NeardConfig;
use crate::settings::{addresses, Args, FailoverMode, ShardTracking};

/// How long `neard --version` may take: it prints a constant string, so seconds mean a
/// binary that hangs.
const NEARD_VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A host's kernel clock is fine when its estimated maximum error is at most this: half of
/// the 500 ms by which kuutamod assumes two hosts' wall clocks agree
/// ([`crate::fence::WALL_SKEW`]), since two hosts' errors add up.
const CLOCK_MAX_ERROR: Duration = Duration::from_millis(250);

pub(super) fn neard_home(home: &Path) -> Result<String, String> {
    let config = NeardConfig::load(home).map_err(|e| e.to_string())?;
    let genesis = config
        .field("genesis_file")
        .and_then(|v| v.as_str())
        .unwrap_or("genesis.json");
    let genesis = home.join(genesis);
    std::fs::File::open(&genesis).map_err(|e| {
        format!(
            "cannot read {}: {e}; install the chain's genesis (neard init --download-genesis)",
            genesis.display()
        )
    })?;
    // kuutamod writes the keys and config.json there.
    tempfile::Builder::new()
        .prefix(".kuutamod-check-")
        .tempfile_in(home)
        .map_err(|e| {
            format!(
                "cannot write in {}: {e}; kuutamod writes the keys and config.json there",
                home.display()
            )
        })?;
    let rpc = config.rpc_addr().map_err(|e| e.to_string())?;
    let store = config
        .field("store")
        .and_then(|s| s.get("path"))
        .and_then(|v| v.as_str())
        .unwrap_or("data");
    let data = if home.join(store).is_dir() {
        format!("a database in {store}/")
    } else {
        format!("no database yet ({store}/ is absent: neard syncs from the start, see the runbook's initial sync)")
    };
    let key = if config.validator_key_path().exists() {
        "; it holds validator_key.json, which kuutamod removes before it starts neard as a voter"
    } else {
        ""
    };
    Ok(format!(
        "{}: config.json (rpc {rpc}) and {} in place, writable; {data}{key}",
        home.display(),
        genesis
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
    ))
}

/// The release in `neard --version`'s output: `neard (release 2.6.3) (build ...) ...` since
/// 1.2x (nearcore `neard/src/main.rs`, `NEARD_VERSION_STRING`); older builds printed
/// `neard 1.x.y (build ...)`.
pub fn release_of(version_output: &str) -> Option<String> {
    let line = version_output.lines().next()?;
    if let Some(rest) = line.split("(release ").nth(1) {
        return rest.split(')').next().map(str::to_string);
    }
    line.split_whitespace()
        .nth(1)
        .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `major.minor` of a release (`2.6.3-rc.1` -> (2, 6)).
pub fn major_minor(release: &str) -> Option<(u64, u64)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// What the failover mode and the shard tracking need of neard's version (docs/neard.md).
pub fn judge_version(
    release: &str,
    mode: FailoverMode,
    tracking: ShardTracking,
) -> (Verdict, String) {
    let Some(v) = major_minor(release) else {
        return (
            Verdict::Warn,
            format!("release {release:?} is not a version number (a development build?): cannot tell what it supports"),
        );
    };
    let mut notes = Vec::new();
    let mut verdict = Verdict::Ok;
    if mode == FailoverMode::HotSwap {
        if v < (2, 0) {
            return (
                Verdict::Fail,
                format!("neard {release} cannot hot-swap a validator key (SIGHUP key reload came with neard 2.0): upgrade neard or set KUUTAMO_FAILOVER_MODE=restart"),
            );
        }
        if v < (2, 3) {
            verdict = Verdict::Warn;
            notes.push("hot swap promotes, but below 2.3 neard cannot drop a key on SIGHUP, so kuutamod demotes by restarting it");
        }
    }
    match tracking {
        ShardTracking::ShadowValidator if v < (2, 6) => {
            return (
                Verdict::Fail,
                format!("KUUTAMO_VOTER_SHARD_TRACKING=shadow-validator needs neard >= 2.6 (tracked_shards_config), this is {release}: use tracked-shadow-validator"),
            );
        }
        ShardTracking::TrackedShadowValidator if v < (2, 0) => {
            return (
                Verdict::Fail,
                format!("KUUTAMO_VOTER_SHARD_TRACKING=tracked-shadow-validator needs neard >= 2.0, this is {release}"),
            );
        }
        ShardTracking::TrackedShadowValidator if v >= (2, 6) => {
            verdict = Verdict::Warn;
            notes.push("neard >= 2.6 has tracked_shards_config: prefer KUUTAMO_VOTER_SHARD_TRACKING=shadow-validator");
        }
        _ => {}
    }
    let mut detail = format!("neard {release}");
    if !notes.is_empty() {
        detail.push_str(": ");
        detail.push_str(&notes.join("; "));
    }
    (verdict, detail)
}

pub(super) async fn neard_version(bin: &Path, args: &Args) -> (Verdict, String) {
    let run = tokio::process::Command::new(bin)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(NEARD_VERSION_TIMEOUT, run).await {
        Err(_) => {
            return (
                Verdict::Fail,
                format!(
                    "`{} --version` did not answer within {}",
                    bin.display(),
                    crate::duration::display(NEARD_VERSION_TIMEOUT)
                ),
            )
        }
        Ok(Err(e)) => return (Verdict::Fail, format!("cannot run {}: {e}", bin.display())),
        Ok(Ok(out)) => out,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), release_of(&text)) {
        (true, Some(release)) => {
            judge_version(&release, args.failover_mode, args.voter_shard_tracking)
        }
        _ => (
            Verdict::Fail,
            format!(
                "`{} --version` printed no neard version ({}; output {:?}): is it neard?",
                bin.display(),
                out.status,
                text.trim()
            ),
        ),
    }
}

pub(super) async fn exporter(args: &Args) -> (Verdict, String) {
    let Ok((addr, _, _)) = addresses(args) else {
        return (
            Verdict::Skip,
            "the address is not valid (see settings)".into(),
        );
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => (Verdict::Ok, format!("{addr} is free")),
        Err(e) => (
            Verdict::Fail,
            format!("cannot listen on KUUTAMO_EXPORTER_ADDRESS {addr}: {e}; choose a free address (is kuutamod already running here?)"),
        ),
    }
}

/// The kernel's view of the wall clock (adjtimex(2), read only).
pub(super) fn clock() -> (Verdict, String) {
    // kuutamod's deadlines run on CLOCK_BOOTTIME (crate::clock); it must be there.
    if let Err(e) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        return (
            Verdict::Fail,
            format!("CLOCK_BOOTTIME is not available: {e}"),
        );
    }
    #[allow(unsafe_code)]
    // SAFETY: timex is a plain C struct of integers, for which all-zero bytes are valid.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    #[allow(unsafe_code)]
    // SAFETY: `tx` is a valid, exclusively borrowed timex; `modes` 0 makes the call read the
    // kernel's clock state and change nothing.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        let e = std::io::Error::last_os_error();
        return (
            Verdict::Skip,
            format!("cannot read the kernel's clock state (adjtimex: {e}; a sandbox such as systemd's ProtectClock hides it)"),
        );
    }
    let max_error = Duration::from_micros(u64::try_from(tx.maxerror).unwrap_or(u64::MAX));
    let unsynced = state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
    let wanted = "kuutamod assumes the hosts' wall clocks agree within 500 ms (docs/failover.md, assumption 2): run an NTP client such as chrony or systemd-timesyncd";
    if unsynced {
        (
            Verdict::Warn,
            format!("the kernel reports the wall clock as not synchronized; {wanted}"),
        )
    } else if max_error > CLOCK_MAX_ERROR {
        (
            Verdict::Warn,
            format!(
                "synchronized, but with a maximum error of {}; {wanted}",
                crate::duration::display(max_error)
            ),
        )
    } else {
        (
            Verdict::Ok,
            format!(
                "synchronized (maximum error {})",
                crate::duration::display(max_error)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_are_read_from_every_version_format() {
        let v = "neard (release 2.6.3) (build 2.6.3) (rustc 1.84.0) (protocol 75) (db 42)\n";
        assert_eq!(release_of(v).as_deref(), Some("2.6.3"));
        assert_eq!(
            release_of("neard (release trunk) (build abc)").as_deref(),
            Some("trunk")
        );
        assert_eq!(
            release_of("neard 1.26.1 (build 1.26.1) (protocol 52) (db 31)").as_deref(),
            Some("1.26.1")
        );
        assert_eq!(release_of("neard-sim 0.1.0"), Some("0.1.0".into()));
        assert_eq!(release_of("something else"), None);
        assert_eq!(major_minor("2.3.0-rc.1"), Some((2, 3)));
        assert_eq!(major_minor("trunk"), None);
    }

    #[test]
    fn versions_are_judged_by_what_the_mode_needs() {
        use FailoverMode::{HotSwap, Restart};
        use ShardTracking::{None as Plain, ShadowValidator, TrackedShadowValidator};
        let verdict = |r, m, t| judge_version(r, m, t).0;
        assert_eq!(verdict("2.6.3", HotSwap, ShadowValidator), Verdict::Ok);
        assert_eq!(verdict("1.40.0", HotSwap, Plain), Verdict::Fail);
        assert_eq!(verdict("1.40.0", Restart, Plain), Verdict::Ok);
        assert_eq!(verdict("2.2.1", HotSwap, Plain), Verdict::Warn);
        assert_eq!(verdict("2.5.0", HotSwap, ShadowValidator), Verdict::Fail);
        assert_eq!(
            verdict("2.5.0", HotSwap, TrackedShadowValidator),
            Verdict::Ok
        );
        assert_eq!(
            verdict("2.7.0", HotSwap, TrackedShadowValidator),
            Verdict::Warn
        );
        assert_eq!(verdict("trunk", HotSwap, Plain), Verdict::Warn);
        let (_, detail) = judge_version("1.40.0", HotSwap, Plain);
        assert!(detail.contains("KUUTAMO_FAILOVER_MODE=restart"), "{detail}");
    }
}
