//! One `courier` node of a test cluster: the real binary as a child process on a fixed port, with a config file
//! naming the shared Redis and PostgreSQL. It runs on loopback, or inside a network namespace (`ip netns exec`, see
//! `netns.rs`) bound to its address there, which it also advertises (redirect URL, ICE candidates). Ready when it prints `COURIER_READY`; killed with SIGKILL
//! or stopped with SIGTERM; dropping it kills it, so a failing test leaves no process behind.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "clusterkey";
pub const SECRET: &str = "cluster-secret-0123456789";

/// How one node runs; the same for each of its starts.
#[derive(Debug, Clone)]
pub struct NodeSetup {
    pub id: String,
    /// The address it binds (HTTP/WebSocket and UDP) and advertises: 127.0.0.1, or its namespace's address.
    pub addr: IpAddr,
    pub port: u16,
    /// The network namespace it runs in, or `None` for the test's own.
    pub netns: Option<String>,
    pub root: PathBuf,
    pub redis_url: String,
    pub postgres_url: String,
    pub region: String,
    /// A webhook receiver every node sends its events to.
    pub webhook: Option<String>,
}

impl NodeSetup {
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/rtc", self.http_addr())
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.http_addr())
    }

    fn config_path(&self) -> PathBuf {
        self.root.join(format!("{}.toml", self.id))
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join(format!("{}.log", self.id))
    }

    fn write_config(&self) -> std::io::Result<()> {
        let data = self.root.join(format!("{}-data", self.id));
        std::fs::create_dir_all(&data)?;
        // In a namespace, say what to advertise (what the defaults would give too, written out: other hosts must
        // be told this address, never a loopback one).
        let (public_ip, advertise) = match self.netns {
            Some(_) => (format!("public_ip = \"{}\"\n", self.addr), format!("advertise_url = \"{}\"\n", self.ws_url())),
            None => (String::new(), String::new()),
        };
        let text = format!(
            r#"http_addr = "{http}"
udp_addr = "{udp}"
{public_ip}data_dir = "{data}"
web_root = ""
workers = 1
drain_timeout_secs = 2

[keys]
{KEY} = "{SECRET}"

[limits]
join_per_ip_per_sec = 0.0
join_per_identity_per_sec = 0.0

[chat]
store = "postgres"
postgres_url = "{pg}"
rate_per_sec = 2000.0
room_rate_per_sec = 100000.0

[cluster]
redis_url = "{redis}"
node_id = "{id}"
region = "{region}"
{advertise}"#,
            http = self.http_addr(),
            udp = SocketAddr::new(self.addr, 0),
            data = data.display(),
            pg = self.postgres_url,
            redis = self.redis_url,
            id = self.id,
            region = self.region,
        );
        let text = match &self.webhook {
            Some(url) => format!("{text}\n[[webhooks.endpoints]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n"),
            None => text,
        };
        std::fs::write(self.config_path(), text)
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A running node.
pub struct Node {
    pub setup: NodeSetup,
    child: Option<Child>,
}

impl Node {
    /// Start the node and wait for it to be ready (bounded; retried a few times, a port may linger after a kill).
    pub async fn start(setup: &NodeSetup) -> Node {
        setup.write_config().expect("node config");
        let mut last = String::new();
        for attempt in 0..5u64 {
            let s = setup.clone();
            match tokio::task::spawn_blocking(move || start_blocking(&s)).await.expect("start task") {
                Ok(child) => return Node { setup: setup.clone(), child: Some(child) },
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(300 * (attempt + 1))).await;
                }
            }
        }
        panic!("node {} did not start: {last}\n--- log ---\n{}", setup.id, setup.log_tail(40));
    }

    /// SIGKILL: the node dies without leaving the cluster.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit: the node drains and leaves the cluster first.
    pub async fn stop(mut self) {
        let Some(mut c) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("node {} did not stop within 15 s of SIGTERM", self.setup.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_blocking(setup: &NodeSetup) -> Result<Child, String> {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(setup.log_path())
        .map_err(|e| format!("log file: {e}"))?;
    let netns = setup.netns.as_deref().map(|n| format!(" in netns {n}")).unwrap_or_default();
    let _ = writeln!(log, "=== cluster test: node {} starting on {}{netns} ===", setup.id, setup.http_addr());
    let courier = env!("CARGO_BIN_EXE_courier");
    // `ip netns exec` execs the program (no fork): the child's pid is the node's, for kill and SIGTERM.
    let mut cmd = match &setup.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, courier]);
            c
        }
        None => Command::new(courier),
    };
    cmd.arg("serve").arg("--config").arg(setup.config_path());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("COURIER_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("COURIER_LOG", "info,str0m=warn,signaling::cluster=debug").env("NO_COLOR", "1");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log));
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with("COURIER_READY") => return Ok(child),
            Ok(_) => continue,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().ok();
                return Err(format!("not ready ({e}); exit {status:?}"));
            }
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: the node binds it a moment later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
