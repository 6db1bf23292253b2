//! Hosts in network namespaces: one namespace per node slot, all joined by veth pairs to one
//! bridge in the root namespace, so every host (a node's Consul client agent, its kuutamod, its
//! neard) reaches the Consul servers (bound to the bridge's addresses) and the other hosts, as
//! machines on one LAN do. Addresses come from 10.213.0.0/16, used only on the bridge and in
//! the namespaces this module creates (deleted on drop and on Ctrl-C).
//!
//! A partition is a set of nft rules inside the host's namespace that *drop* (not reject)
//! everything on its LAN interface (a drop leaves TCP retransmitting: the failure that hid
//! lost Consul locks for minutes), except the harness's own view of the exporter, so the
//! sampler still sees the node's state. The host's loopback (kuutamod to its agent) stays up,
//! as on a real host cut off from the network.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// nft table holding a partition's rules (deleted to heal).
const TABLE: &str = "kbench";

/// The LAN interface inside every namespace.
const LAN_IF: &str = "veth0";

/// Prefix length of the LAN.
const LAN_PREFIX: u8 = 24;

/// Host part of the first host's address (10.213.S.10, .11, ...); .1 is the bridge, .2 to .4
/// are the Consul servers.
const FIRST_HOST: u8 = 10;

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

/// Name of this process's bridge (also used by the Ctrl-C clean-up).
pub fn bridge_name(pid: u32) -> String {
    format!("kb{pid}b")
}

/// Where a node lives: a namespace on the LAN, or (without namespaces) the root namespace's
/// loopback. Cheap to clone: the [`Lan`] owns the namespaces.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name (`ip netns`), or `None` for the root namespace.
    pub netns: Option<String>,
    /// The host's address: its LAN address in a namespace (reachable from the root namespace
    /// and every other host), 127.0.0.1 otherwise.
    pub ip: IpAddr,
}

impl Host {
    /// The root namespace's loopback (no partitions possible).
    pub fn loopback() -> Host {
        Host {
            netns: None,
            ip: IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// Drops every packet on the host's LAN interface, both directions, except TCP to and
    /// from `keep_port` on the host (the exporter the harness samples).
    pub fn partition(&self, keep_port: u16) -> anyhow::Result<()> {
        let ns = self
            .netns
            .as_deref()
            .context("a partition needs a namespace")?;
        let rules = format!(
            "table inet {TABLE} {{\n\
             chain out {{ type filter hook output priority 0; policy accept; oifname \"{LAN_IF}\" tcp sport {keep_port} accept; oifname \"{LAN_IF}\" drop; }}\n\
             chain in {{ type filter hook input priority 0; policy accept; iifname \"{LAN_IF}\" tcp dport {keep_port} accept; iifname \"{LAN_IF}\" drop; }}\n\
             }}\n"
        );
        run("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(&rules))
            .context("nft failed (install nftables)")
    }

    /// Removes the partition (idempotent).
    pub fn heal(&self) -> anyhow::Result<()> {
        let Some(ns) = self.netns.as_deref() else {
            return Ok(());
        };
        let rules = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n");
        run("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(&rules))
            .context("nft failed (install nftables)")
    }
}

/// The LAN: a bridge in the root namespace with the servers' addresses, and one namespace per
/// host slot. Deleted on drop.
pub struct Lan {
    /// The bridge.
    pub bridge: String,
    /// Addresses on the bridge for Consul servers (root namespace).
    pub server_ips: Vec<IpAddr>,
    /// The host slots.
    pub hosts: Vec<Host>,
}

impl Lan {
    /// Creates the bridge and `hosts` namespaces (failing loudly without root, iproute2 or
    /// nftables: a partition scenario that cannot drop packets must fail, not pass).
    pub fn create(hosts: u8) -> anyhow::Result<Lan> {
        let pid = std::process::id();
        let subnet = (pid % 250) as u8;
        let addr = |h: u8| IpAddr::from([10, 213, subnet, h]);
        let bridge = bridge_name(pid);
        run("ip", &["link", "add", &bridge, "type", "bridge"], None)
            .context("network namespaces unavailable (need root and iproute2)")?;
        let mut lan = Lan {
            bridge: bridge.clone(),
            server_ips: (2..5).map(addr).collect(),
            hosts: Vec::new(),
        };
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/{LAN_PREFIX}", addr(1)),
                "dev",
                &bridge,
            ],
            None,
        )?;
        for ip in &lan.server_ips {
            run(
                "ip",
                &["addr", "add", &format!("{ip}/{LAN_PREFIX}"), "dev", &bridge],
                None,
            )?;
        }
        run("ip", &["link", "set", &bridge, "up"], None)?;
        for i in 0..hosts {
            let name = format!("kb{pid}n{i}");
            let root_if = format!("kb{pid}r{i}");
            let ip = addr(FIRST_HOST + i);
            run("ip", &["netns", "add", &name], None)?;
            lan.hosts.push(Host {
                netns: Some(name.clone()),
                ip,
            });
            run(
                "ip",
                &[
                    "link", "add", &root_if, "type", "veth", "peer", "name", LAN_IF, "netns", &name,
                ],
                None,
            )?;
            run("ip", &["link", "set", &root_if, "master", &bridge], None)?;
            run("ip", &["link", "set", &root_if, "up"], None)?;
            run(
                "ip",
                &[
                    "-n",
                    &name,
                    "addr",
                    "add",
                    &format!("{ip}/{LAN_PREFIX}"),
                    "dev",
                    LAN_IF,
                ],
                None,
            )?;
            run("ip", &["-n", &name, "link", "set", LAN_IF, "up"], None)?;
            run("ip", &["-n", &name, "link", "set", "lo", "up"], None)?;
            lan.hosts[i as usize].heal()?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &self.hosts {
            if let Some(ns) = &h.netns {
                let _ = run("ip", &["netns", "del", ns], None);
            }
        }
        let _ = run("ip", &["link", "del", &self.bridge], None);
    }
}
