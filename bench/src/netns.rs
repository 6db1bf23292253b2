//! Network namespaces: one per node, joined to the root namespace by a veth pair with
//! addresses from 10.213.0.0/16 (used only inside the namespaces this module creates), and
//! partitions made by *dropping* packets with nft inside the namespace (a drop, unlike a
//! reject, leaves TCP retransmitting: the failure that hid lost Consul locks for minutes).

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// nft table holding a partition's rules (deleted to heal).
const TABLE: &str = "kbench";

/// Runs a command, failing with its stderr.
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd} (install iproute2 and nftables)"))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One namespace with a veth pair to the root namespace. Deleted on drop.
pub struct Netns {
    /// Namespace name (`ip netns`).
    pub name: String,
    /// Address of the root-side end (Consul and proxies listen here for this node).
    pub root_ip: IpAddr,
    /// Address of the namespace-side end (the node's exporter listens here).
    pub ns_ip: IpAddr,
}

impl Netns {
    /// Creates namespace `index` of this process.
    pub fn create(index: u8) -> anyhow::Result<Netns> {
        let pid = std::process::id();
        let subnet = (pid % 250) as u8;
        let name = format!("kb{pid}n{index}");
        let root_if = format!("kb{pid}r{index}");
        let root_ip = IpAddr::from([10, 213, subnet, 4 * index + 1]);
        let ns_ip = IpAddr::from([10, 213, subnet, 4 * index + 2]);
        run("ip", &["netns", "add", &name], None)
            .context("network namespaces unavailable (need root and iproute2)")?;
        let ns = Netns {
            name: name.clone(),
            root_ip,
            ns_ip,
        };
        run(
            "ip",
            &[
                "link", "add", &root_if, "type", "veth", "peer", "name", "veth0", "netns", &name,
            ],
            None,
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{root_ip}/30"), "dev", &root_if],
            None,
        )?;
        run("ip", &["link", "set", &root_if, "up"], None)?;
        run(
            "ip",
            &[
                "-n",
                &name,
                "addr",
                "add",
                &format!("{ns_ip}/30"),
                "dev",
                "veth0",
            ],
            None,
        )?;
        run("ip", &["-n", &name, "link", "set", "veth0", "up"], None)?;
        run("ip", &["-n", &name, "link", "set", "lo", "up"], None)?;
        // nft must work here: a partition scenario that cannot drop packets must fail, not pass.
        ns.heal()?;
        Ok(ns)
    }

    /// Drops every packet between this namespace and TCP `port` on the root side (both
    /// directions), silently.
    pub fn partition(&self, port: u16) -> anyhow::Result<()> {
        let rules = format!(
            "table inet {TABLE} {{\n\
             chain out {{ type filter hook output priority 0; policy accept; ip daddr {root} tcp dport {port} drop; }}\n\
             chain in {{ type filter hook input priority 0; policy accept; ip saddr {root} tcp sport {port} drop; }}\n\
             }}\n",
            root = self.root_ip
        );
        run(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            Some(&rules),
        )
        .context("nft failed (install nftables)")
    }

    /// Removes the partition (idempotent).
    pub fn heal(&self) -> anyhow::Result<()> {
        let rules = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
        run(
            "ip",
            &["netns", "exec", &self.name, "nft", "-f", "-"],
            Some(&rules),
        )
        .context("nft failed (install nftables)")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name], None);
    }
}
