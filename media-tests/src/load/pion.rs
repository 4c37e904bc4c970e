//! Pion's broadcast example as a load target: pion/webrtc v3 `examples/broadcast` (3.1.56, built from Debian's
//! packaged sources by `media-tests/bench/pion-broadcast.sh`), run inside a network namespace because pion/ice
//! gathers no loopback candidates.
//!
//! How the example signals (its `main.go` and `examples/internal/signal`): `-port` (default 8080) serves
//! `POST /sdp`, whose body is a base64 JSON `SessionDescription`; the response (`done`) comes once the main loop has
//! taken the body. The first offer is the broadcaster's (one video transceiver); every later one is a viewer's. Each
//! answer is printed on stdout as one base64 JSON line, after ICE gathering completed (so it carries its host
//! candidates); blank lines and a "Curl an base64 SDP…" prompt come between. Viewers are taken only after the
//! broadcaster's first RTP packet arrived (the loop waits for the track), so a subscribe before that waits here.
//! It sends the broadcaster a PLI every 3 s, forwards every packet to every viewer from one goroutine
//! (`TrackLocalStaticRTP`: SSRC and payload type rewritten, sequence numbers, timestamps and header extensions kept),
//! reads its packets into a 1400-byte buffer (a larger packet panics it), and panics on most errors: one room, one
//! video publisher, no audio, no leaving.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use base64::Engine;
use tokio::sync::mpsc;

use super::netns::Netns;
use super::peer::PeerHandle;
use super::target::{Media, Session, Target};

/// The example's HTTP port, inside the namespace.
const PORT: u16 = 8080;
/// How long each wait on the example may take (connect, POST, answer).
const STEP: Duration = Duration::from_secs(10);

/// The binary built by `media-tests/bench/pion-broadcast.sh` (which builds it on first use: apt-get, go build).
pub fn build() -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/pion-broadcast.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {} (or pass --server-bin)", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().map(str::trim).unwrap_or_default();
    if path.is_empty() {
        bail!("{} printed no path", script.display());
    }
    Ok(PathBuf::from(path))
}

pub struct PionBroadcast {
    child: Child,
    http: SocketAddr,
    /// Answers in the order the example printed them; `None` once its stdout closed. The lock also serializes
    /// requests, so each POST is paired with the next answer.
    answers: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    /// The end of its stderr (a Go panic), for errors.
    stderr: Arc<Mutex<String>>,
}

impl PionBroadcast {
    /// Starts `bin -port 8080` inside `netns` (`ip netns exec`, pinned to `cpu` when given); the child is the example.
    pub fn start(bin: &Path, netns: &Netns, cpu: Option<usize>) -> anyhow::Result<PionBroadcast> {
        let prefix = netns.exec_prefix(cpu);
        let mut child = Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(bin)
            .args(["-port", &PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().context("no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match decode_answer(&line) {
                    Some(sdp) => {
                        if tx.send(sdp).is_err() {
                            break;
                        }
                    }
                    None if line.trim().is_empty() => {}
                    None => tracing::debug!("pion: {line}"),
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().context("no stderr")?;
        let tail = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                if let Ok(mut t) = tail.lock() {
                    t.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if t.len() > 8192 {
                        let cut = t.len() - 4096;
                        let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            }
        });
        let mut pion = PionBroadcast {
            child,
            http: SocketAddr::new(netns.ns_addr.into(), PORT),
            answers: tokio::sync::Mutex::new(rx),
            stderr,
        };
        pion.wait_listening()?;
        Ok(pion)
    }

    /// Waits until the example accepts connections: by then the pid is the example's (not `ip` or `taskset` before
    /// they exec), so the idle RSS the runner reads is the example's.
    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(self.died(&format!("the example exited at start ({status})")));
            }
            if std::net::TcpStream::connect_timeout(&self.http, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if started.elapsed() > STEP {
                return Err(self.died(&format!("no listener on {} within {STEP:?}", self.http)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn died(&self, what: &str) -> anyhow::Error {
        let tail = self.stderr.lock().map(|t| t.trim().to_string()).unwrap_or_default();
        let last: Vec<&str> = tail.lines().rev().take(12).collect();
        let last: Vec<&str> = last.into_iter().rev().collect();
        anyhow!("pion: {what}; its stderr ends:\n{}", last.join("\n"))
    }

    /// POSTs `offer` to `/sdp` and returns the next answer the example prints.
    async fn exchange(&self, offer: &str) -> anyhow::Result<String> {
        let mut answers = self.answers.lock().await;
        let body = base64::engine::general_purpose::STANDARD
            .encode(serde_json::json!({ "type": "offer", "sdp": offer }).to_string());
        tokio::time::timeout(STEP, self.post(&body)).await.map_err(|_| {
            anyhow!(
                "pion: the example did not take the offer within {STEP:?} (it takes viewers only after the \
                 broadcaster's first RTP packet)"
            )
        })??;
        match tokio::time::timeout(STEP, answers.recv()).await {
            Ok(Some(sdp)) => Ok(sdp),
            Ok(None) => Err(self.died("the example exited")),
            Err(_) => Err(self.died(&format!("no answer on its stdout within {STEP:?}"))),
        }
    }

    /// One HTTP/1.1 POST (the listener is up: [`start`](Self::start) waited for it).
    async fn post(&self, body: &str) -> anyhow::Result<()> {
        let (status, reply) = super::http::request(self.http, "POST", "/sdp", Some(("text/plain", body)))
            .await
            .context("pion: POST /sdp")?;
        if status != 200 {
            bail!("pion: POST /sdp answered {status}: {reply}");
        }
        Ok(())
    }
}

/// The SDP of a stdout line holding a base64 JSON answer (`signal.Encode` of a `SessionDescription`).
fn decode_answer(line: &str) -> Option<String> {
    let json = base64::engine::general_purpose::STANDARD.decode(line.trim()).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
    (v.get("type")?.as_str()? == "answer").then(|| v.get("sdp")?.as_str().map(str::to_string))?
}

impl Drop for PionBroadcast {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[async_trait]
impl Target for PionBroadcast {
    fn name(&self) -> &'static str {
        "pion"
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn supports(&self, rooms: usize, publishers: usize, media: Media) -> anyhow::Result<()> {
        if rooms != 1 || publishers != 1 || media.audio || !media.video {
            bail!("Pion's broadcast example forwards one video publisher to its viewers: use --rooms 1 --publishers 1 without audio");
        }
        Ok(())
    }

    async fn publish(&self, _room: usize, _index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session> {
        let offer = peer.offer(media, true).await?;
        let answer = self.exchange(&offer).await.context("the broadcaster's offer")?;
        peer.accept_answer(answer).await?;
        Ok(Box::new(()))
    }

    async fn subscribe(&self, _room: usize, _index: usize, media: Media, peer: &PeerHandle) -> anyhow::Result<Session> {
        let offer = peer.offer(media, false).await?;
        let answer = self.exchange(&offer).await.context("a viewer's offer")?;
        peer.accept_answer(answer).await?;
        Ok(Box::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_base64_json_lines_and_nothing_else_is() {
        let line = base64::engine::general_purpose::STANDARD.encode(r#"{"type":"answer","sdp":"v=0\r\n"}"#);
        assert_eq!(decode_answer(&line).as_deref(), Some("v=0\r\n"));
        let offer = base64::engine::general_purpose::STANDARD.encode(r#"{"type":"offer","sdp":"v=0\r\n"}"#);
        assert_eq!(decode_answer(&offer), None);
        assert_eq!(decode_answer("Curl an base64 SDP to start sendonly peer connection"), None);
        assert_eq!(decode_answer(""), None);
    }
}
