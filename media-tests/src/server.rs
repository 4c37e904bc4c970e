//! The real `courier` server as a child process, for the scenario runner and the end-to-end tests: started on
//! ephemeral loopback ports with a scratch data directory, found through its `COURIER_READY` line, read through its
//! `/metrics` and `/proc`, killed (and its directory removed) when dropped. Whoever uses it reaches the server only
//! over the network, like any client.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token::{mint_token, TokenRequest};

/// A running `courier serve`.
pub struct CourierProcess {
    child: Child,
    /// `host:port` of its HTTP listener.
    pub http: String,
    /// Its signaling URL, `ws://host:port/rtc`.
    pub url: String,
    /// Its UDP (media) address, its ICE host candidate.
    pub udp: SocketAddr,
    key: String,
    secret: String,
    data: PathBuf,
}

impl CourierProcess {
    /// Starts `bin serve` on 127.0.0.1 ephemeral ports with the API key `key:secret` and extra environment `env`;
    /// waits (at most 30 s) for its `COURIER_READY` line. Its log goes to this process's stderr (`COURIER_LOG`,
    /// default `warn`).
    pub fn start(bin: &Path, key: &str, secret: &str, env: &[(&str, &str)]) -> io::Result<CourierProcess> {
        Self::start_with(bin, key, secret, env, &[], std::net::Ipv4Addr::LOCALHOST.into(), 2)
    }

    /// [`start`](Self::start) with the command run behind `prefix` (e.g. `ip netns exec NS taskset -c 0`, which
    /// exec, so the child's pid stays the server's), listening on `ip`, with `workers` runtime threads.
    pub fn start_with(
        bin: &Path,
        key: &str,
        secret: &str,
        env: &[(&str, &str)],
        prefix: &[String],
        ip: std::net::IpAddr,
        workers: usize,
    ) -> io::Result<CourierProcess> {
        let data = std::env::temp_dir().join(format!("courier-run-{}-{}", std::process::id(), unique()));
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .arg("serve")
            .arg("--http-addr")
            .arg(format!("{ip}:0"))
            .arg("--udp-addr")
            .arg(format!("{ip}:0"))
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--keys")
            .arg(format!("{key}:{secret}"))
            .arg("--data-dir")
            .arg(&data)
            .arg("--web-root")
            .arg("")
            .env("COURIER_LOG", std::env::var("COURIER_LOG").unwrap_or_else(|_| "warn".into()))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", bin.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for l in lines.by_ref().map_while(Result::ok) {
                if l.starts_with("COURIER_READY") {
                    let _ = tx.send(l);
                    break;
                }
            }
            for _ in lines {}
        });
        let fail = |child: &mut Child, what: String| {
            let _ = child.kill();
            let _ = child.wait();
            io::Error::other(what)
        };
        let ready = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => return Err(fail(&mut child, format!("{} printed no COURIER_READY within 30 s", bin.display()))),
        };
        let field = |name: &str| ready.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
        let (Some(http), Some(Ok(udp))) = (field("http="), field("udp=").map(|a| a.parse::<SocketAddr>())) else {
            return Err(fail(&mut child, format!("cannot read the ready line: {ready}")));
        };
        Ok(CourierProcess {
            child,
            url: format!("ws://{http}/rtc"),
            http,
            udp,
            key: key.to_string(),
            secret: secret.to_string(),
            data,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A join token for `identity` in `room`, signed with the server's key.
    pub fn token(&self, room: &str, identity: &str) -> Result<String, crate::token::TokenError> {
        mint_token(&TokenRequest::new(&self.key, &self.secret, room, identity))
    }

    /// A token for a hidden viewer of `room`: subscribes, never publishes, never announced.
    pub fn viewer_token(&self, room: &str, identity: &str) -> Result<String, crate::token::TokenError> {
        let req = TokenRequest {
            can_publish: false,
            hidden: true,
            ..TokenRequest::new(&self.key, &self.secret, room, identity)
        };
        mint_token(&req)
    }

    /// The server's Prometheus metrics as name → value.
    pub fn metrics(&self) -> io::Result<HashMap<String, f64>> {
        let mut s = std::net::TcpStream::connect(&self.http)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.http)?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect())
    }

    /// Resident memory of the server process, KiB (from /proc; 0 if unreadable).
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// CPU time the server process used so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        proc_cpu_time(self.pid())
    }

    /// Waits (at most `within`) until the engine and the rooms are empty; returns the metrics it saw last.
    pub fn wait_empty(&self, within: Duration) -> HashMap<String, f64> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.metrics().unwrap_or_default();
            let empty = [
                "courier_participants",
                "courier_tracks",
                "courier_sfu_peers",
                "courier_sfu_tracks",
                "courier_sfu_downtracks",
            ]
            .iter()
            .all(|k| m.get(*k) == Some(&0.0));
            if empty || Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for CourierProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Waits (at most `within`) until each of `nodes`, courier nodes of one cluster, sees at least all of them in the
/// registry (the gauge `courier_cluster_nodes`; at least, since a node of a run that ended a moment ago stays listed
/// for the registry's TTL). `Err` names what each node saw last.
pub fn wait_for_cluster(nodes: &[&CourierProcess], within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let seen = |n: &CourierProcess| n.metrics().ok().and_then(|m| m.get("courier_cluster_nodes").copied());
    loop {
        let views: Vec<Option<f64>> = nodes.iter().map(|n| seen(n)).collect();
        if views.iter().all(|k| k.is_some_and(|k| k >= nodes.len() as f64)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the nodes do not see each other within {within:?}: {views:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `/proc/<pid>/status` field in KiB (0 if unreadable).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process, from `/proc/<pid>/stat` (zero if unreadable).
pub fn proc_cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| f.get(i)?.parse::<u64>().ok()).sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn unique() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
