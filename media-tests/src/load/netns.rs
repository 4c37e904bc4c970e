//! A network namespace joined to this one by a veth pair, for servers that will not gather ICE candidates on
//! loopback (Janus, Pion's examples). The benchmark makes it, runs the server inside it (`ip netns exec`), talks to it
//! over the pair's two addresses, and removes it when done; traffic never leaves the machine. Needs root (CAP_NET_ADMIN).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

/// A namespace `name` with `ns_addr`/30 inside on `veth1`, `host_addr`/30 outside on `<name>-h`. Deleted on drop.
pub struct Netns {
    pub name: String,
    /// The address on this side of the pair (the generator's).
    pub host_addr: Ipv4Addr,
    /// The address inside the namespace (the server's).
    pub ns_addr: Ipv4Addr,
    host_if: String,
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip` (iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Netns {
    /// Creates the namespace and the pair; `subnet` is the third octet of 10.77.X.0/30 (one per concurrent namespace).
    /// A leftover namespace of the same name (from a killed run) is removed first.
    pub fn create(name: &str, subnet: u8) -> anyhow::Result<Netns> {
        let host_addr = Ipv4Addr::new(10, 77, subnet, 1);
        let ns_addr = Ipv4Addr::new(10, 77, subnet, 2);
        // Interface names are at most 15 bytes.
        let host_if: String =
            format!("{name}-h").chars().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        let _ = ip(&["netns", "del", name]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.to_string(), host_addr, ns_addr, host_if: host_if.clone() };
        ip(&["link", "add", &host_if, "type", "veth", "peer", "name", "veth1", "netns", name])?;
        ip(&["addr", "add", &format!("{host_addr}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", name, "addr", "add", &format!("{ns_addr}/30"), "dev", "veth1"])?;
        ip(&["-n", name, "link", "set", "veth1", "up"])?;
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The command prefix that runs a program inside the namespace, pinned to `cpu` when given:
    /// `ip netns exec NAME [taskset -c CPU]`. Both exec, so the child's pid is the program's.
    pub fn exec_prefix(&self, cpu: Option<usize>) -> Vec<String> {
        let mut v: Vec<String> = ["ip", "netns", "exec", &self.name].iter().map(|s| s.to_string()).collect();
        if let Some(cpu) = cpu {
            v.extend(["taskset".to_string(), "-c".to_string(), cpu.to_string()]);
        }
        v
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
