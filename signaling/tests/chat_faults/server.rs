//! The real `courier` binary as a child process: started on a fixed loopback HTTP port with a TOML config,
//! ready when it prints `COURIER_READY`, killed with SIGKILL. Dropping a [`ServerProc`] kills the child, so a
//! failing or panicking test leaves no server behind.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "faultkey";
pub const SECRET: &str = "fault-secret-0123456789";

/// Where and how the server runs; the same for every restart.
pub struct ServerSetup {
    /// The test's temporary directory: holds the data directory, the config file and the server log.
    pub root: PathBuf,
    /// The fixed HTTP port on 127.0.0.1.
    pub port: u16,
}

impl ServerSetup {
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    fn config_path(&self) -> PathBuf {
        self.root.join("courier.toml")
    }

    /// Write the config file (once; every restart reads the same one).
    pub fn write_config(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.data_dir())?;
        let text = format!(
            r#"http_addr = "127.0.0.1:{port}"
udp_addr = "127.0.0.1:0"
data_dir = "{data}"
web_root = ""
workers = 2

[keys]
{KEY} = "{SECRET}"

[chat]
rate_per_sec = 2000.0
room_rate_per_sec = 100000.0
queue_capacity = 8192
"#,
            port = self.port,
            data = self.data_dir().display(),
        );
        std::fs::write(self.config_path(), text)
    }

    /// The last `n` lines of the server log (every generation appends to it).
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// One running server process.
pub struct ServerProc {
    child: Option<Child>,
    pub pid: u32,
}

impl ServerProc {
    /// Start generation `generation` and wait for `COURIER_READY` (bounded); a failed start is retried a few
    /// times (the port may linger for a moment after a kill).
    pub async fn start(setup: &ServerSetup, generation: u32) -> Result<ServerProc, String> {
        let mut last_err = String::new();
        for attempt in 0..6 {
            let (bin, config, log, port) =
                (env!("CARGO_BIN_EXE_courier").to_string(), setup.config_path(), setup.log_path(), setup.port);
            let res = tokio::task::spawn_blocking(move || start_blocking(&bin, &config, &log, port, generation))
                .await
                .map_err(|e| format!("start task: {e}"))?;
            match res {
                Ok(p) => return Ok(p),
                Err(e) => {
                    last_err = format!("attempt {attempt}: {e}");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
                }
            }
        }
        Err(format!(
            "server generation {generation} did not start: {last_err}\n--- log tail ---\n{}",
            setup.log_tail(30)
        ))
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap; returns how the process ended.
    pub fn kill(mut self) -> Result<String, String> {
        let mut child = self.child.take().expect("a running child");
        child.kill().map_err(|e| format!("kill {}: {e}", self.pid))?;
        let status = child.wait().map_err(|e| format!("wait {}: {e}", self.pid))?;
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if status.signal() != Some(9) {
                return Err(format!(
                    "server {} ended with {status:?}, not by SIGKILL (it died before the kill?)",
                    self.pid
                ));
            }
        }
        Ok(format!("{status}"))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_blocking(bin: &str, config: &Path, log: &Path, port: u16, generation: u32) -> Result<ServerProc, String> {
    let mut logf =
        std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| format!("log file: {e}"))?;
    let _ = writeln!(logf, "=== chat_faults: server generation {generation} starting on 127.0.0.1:{port} ===");
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg("--config").arg(config);
    // The test's own environment must not change the server's config (a variable beats the file).
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("COURIER_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("COURIER_LOG", "info,str0m=warn").env("NO_COLOR", "1");
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(logf));
    let mut child = cmd.spawn().map_err(|e| format!("spawn {bin}: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // Read stdout to its end (so the pipe never fills); the ready line is passed on.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut proc = ServerProc { child: Some(child), pid };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("COURIER_READY") => {
                let want = format!("http=127.0.0.1:{port}");
                if !line.contains(&want) {
                    return Err(format!("ready on the wrong address: {line}"));
                }
                return Ok(proc);
            }
            Ok(_) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Err("no COURIER_READY within 20 s".into());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = proc.child.as_mut().and_then(|c| c.wait().ok());
                proc.child = None;
                return Err(format!("the server exited before it was ready: {status:?}"));
            }
        }
    }
}
