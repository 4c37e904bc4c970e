//! A test network of simulated hosts: a [`Segment`] is a Linux bridge in the test's (root) network namespace
//! with a private /24 of 10.79.0.0/16, the root side at `.1` (the *gateway*: the test process, its clients and its
//! relays), and one network namespace per host, each joined to the bridge by a veth pair, at `.2`, `.3`, …
//! Traffic between hosts is bridged, never routed: nothing in the root namespace changes (no IP forwarding, no
//! sysctl, no firewall rule), and a host has no default route, so the segment's addresses are the only ones a host
//! can reach. Names carry the test's pid and a counter (`cv<pid>x<k>`: bridge `…b`, veths `…v<i>`, namespaces
//! `…h<i>`, at most 15 bytes); everything is deleted on drop, a leftover of the same name first, and leftovers of
//! test processes that are gone (SIGKILLed runs) when the next segment is made.
//!
//! Redis and PostgreSQL: the test servers (scripts/redis.sh, scripts/postgres.sh) listen on 127.0.0.1 of the root
//! namespace, which no host can reach. [`Segment::relay`] listens on the gateway address and copies each connection
//! to such a server, as a task of the test's own runtime: the servers are the ones scripts/test.sh started (each
//! test still gets its own Redis database and PostgreSQL database), no server is started, configured or restarted
//! for the segment, and nothing outlives the test process, even a killed one.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2's `ip`: [`Segment::create_or_skip`] fails the test
//! in CI (`CI` set) and skips it otherwise. On a machine whose `br_netfilter` sends bridged traffic through an
//! iptables FORWARD chain that drops (Docker's), traffic between two hosts would be dropped there; traffic between
//! a host and the gateway is not forwarded and always passes.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// One simulated host: a network namespace on the segment.
#[derive(Debug, Clone)]
pub struct Host {
    pub netns: String,
    pub addr: Ipv4Addr,
}

/// A bridge and its hosts; see the module doc. Deleted on drop.
pub struct Segment {
    pub bridge: String,
    /// The root namespace's address on the bridge.
    pub gateway: Ipv4Addr,
    pub hosts: Vec<Host>,
    /// The root side of each host's veth pair.
    veths: Vec<String>,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

/// Segments made by this process so far (a part of their names).
static MADE: AtomicU32 = AtomicU32::new(0);
/// One segment made at a time in this process (picking a free subnet and making it are one step).
static MAKING: Mutex<()> = Mutex::new(());
const NAME_PREFIX: &str = "cv";

/// Runs `ip ARGS`: its stdout, or its stderr as the error.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why segments cannot be made here, if they cannot: not root, or no `ip`.
pub fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("network namespaces need root".into());
    }
    if let Err(e) = ip(&["-V"]) {
        return Some(e);
    }
    None
}

impl Segment {
    /// A segment of `hosts` hosts, or `None` (with a message) when namespaces are unavailable here; in CI that
    /// fails the test instead. Panics if they are available and making one fails.
    pub fn create_or_skip(hosts: usize) -> Option<Segment> {
        if let Some(why) = unavailable() {
            assert!(std::env::var_os("CI").is_none(), "CI must run the network namespace tests: {why}");
            eprintln!("skipped: {why}");
            return None;
        }
        Some(Segment::create(hosts).unwrap_or_else(|e| panic!("making a test network: {e}")))
    }

    /// Makes the bridge and `hosts` namespaces (at most 9), each with `lo` and its veth up.
    pub fn create(hosts: usize) -> Result<Segment, String> {
        assert!((1..=9).contains(&hosts), "1 to 9 hosts on a segment");
        let _making = MAKING.lock().unwrap_or_else(|e| e.into_inner());
        remove_leftovers();
        let pid = std::process::id();
        let k = MADE.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{NAME_PREFIX}{pid}x{k}");
        let subnet = free_subnet(pid, k)?;
        let mut segment = Segment {
            bridge: format!("{tag}b"),
            gateway: Ipv4Addr::new(10, 79, subnet, 1),
            hosts: Vec::new(),
            veths: Vec::new(),
            relays: Vec::new(),
        };
        assert!(segment.bridge.len() <= 15, "interface names are at most 15 bytes: {}", segment.bridge);
        // A leftover of the same name (a pid used again after a killed run) goes first.
        let _ = ip(&["link", "del", &segment.bridge]);
        ip(&["link", "add", &segment.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{}/24", segment.gateway), "dev", &segment.bridge])?;
        ip(&["link", "set", &segment.bridge, "up"])?;
        for i in 0..hosts {
            let (netns, veth) = (format!("{tag}h{i}"), format!("{tag}v{i}"));
            let addr = Ipv4Addr::new(10, 79, subnet, 2 + i as u8);
            let _ = ip(&["link", "del", &veth]);
            let _ = ip(&["netns", "del", &netns]);
            ip(&["netns", "add", &netns])?;
            segment.hosts.push(Host { netns: netns.clone(), addr });
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns])?;
            segment.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &segment.bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &netns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        }
        Ok(segment)
    }

    /// Listens on the gateway (an ephemeral port) and copies every connection to `target` and back, until the
    /// segment is dropped. Returns the address hosts connect to. Call it inside a tokio runtime.
    pub async fn relay(&mut self, target: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind((self.gateway, 0)).await?;
        let at = listener.local_addr()?;
        self.relays.push(tokio::spawn(async move {
            // Dropped (the accept loop aborted) with every connection's task.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else {
                            // Out of file descriptors, most likely: let connections end.
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        };
                        conns.spawn(async move {
                            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
        Ok(at)
    }

    /// `url` (`scheme://[user[:password]@]host:port/…`, host an IPv4 address) with its host and port replaced by a
    /// [`relay`](Segment::relay) to them.
    pub async fn relay_url(&mut self, url: &str) -> Result<String, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("no scheme in {url:?}"))?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), authority),
        };
        let target: SocketAddr = hostport.parse().map_err(|e| format!("{hostport:?} in a test URL: {e}"))?;
        let at = self.relay(target).await.map_err(|e| format!("relay on {}: {e}", self.gateway))?;
        Ok(format!("{scheme}://{userinfo}{at}{path}"))
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        for r in &self.relays {
            r.abort();
        }
        for host in &self.hosts {
            kill_inside(&host.netns);
        }
        for veth in &self.veths {
            let _ = ip(&["link", "del", veth]);
        }
        for host in &self.hosts {
            let _ = ip(&["netns", "del", &host.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// SIGKILLs what still runs in `netns` (the test's nodes are killed before, this catches a leak): a namespace
/// deleted with a process inside lives on, unnamed, with its veth.
fn kill_inside(netns: &str) {
    let Ok(pids) = ip(&["netns", "pids", netns]) else { return };
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    }
}

/// The third octet of a 10.79.X.0/24 no interface of the root namespace has an address in: the first free one
/// from a start that depends on the pid and the segment's number, so concurrent test processes start apart.
fn free_subnet(pid: u32, k: u32) -> Result<u8, String> {
    let addrs = ip(&["-4", "-o", "addr", "show"])?;
    let start = (pid.wrapping_mul(7).wrapping_add(k)) % 250;
    (0..250)
        .map(|d| ((start + d) % 250 + 1) as u8)
        .find(|n| !addrs.contains(&format!("inet 10.79.{n}.")))
        .ok_or_else(|| "no free /24 left in 10.79.0.0/16".into())
}

/// The pid in a segment's name (`cv<pid>x<k>…`), if `name` is one.
fn owner_pid(name: &str) -> Option<u32> {
    let (pid, tail) = name.strip_prefix(NAME_PREFIX)?.split_once('x')?;
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    if !digits(pid) || !tail.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Deletes the namespaces, veths and bridges of segments whose test process is gone.
fn remove_leftovers() {
    let gone = |name: &str| owner_pid(name).is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists());
    let namespaces = ip(&["netns", "list"]).unwrap_or_default();
    for ns in namespaces.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| gone(n)) {
        kill_inside(ns);
        let _ = ip(&["netns", "del", ns]);
    }
    // `ip -o link` lines read "7: name@peer: <…", or "7: name: <…".
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    let names: Vec<&str> =
        links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n)).collect();
    for name in names.into_iter().filter(|n| gone(n)) {
        let _ = ip(&["link", "del", name]);
    }
}
