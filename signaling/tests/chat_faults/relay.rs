//! A TCP relay on 127.0.0.1 in front of the server that breaks connections on purpose (seeded):
//!
//! - **random kills**: every 50–300 ms one live connection is killed, both halves (bounded in count);
//! - **cuts after a send**: right after forwarding a client→server chunk (after the upgrade request and the join,
//!   every client→server chunk is a `chat_send`: the clients send nothing else), the relay sometimes stops
//!   forwarding server→client at once and kills the connection a few milliseconds later, so the message reaches
//!   the server but its `chat_ack` is lost (bounded in count).
//!
//! Half of the connections are closed with RST (zero linger), the rest with FIN. When the server is down the
//! relay accepts and closes at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How much damage the relay does.
#[derive(Clone, Copy)]
pub struct Chaos {
    pub max_random_kills: u64,
    pub max_send_cuts: u64,
    /// A send is cut with probability 1/`send_cut_one_in`.
    pub send_cut_one_in: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RelayStats {
    pub accepted: u64,
    pub upstream_refused: u64,
    pub random_kills: u64,
    pub send_cuts: u64,
}

struct Inner {
    upstream_port: u16,
    chaos: Chaos,
    rng: Mutex<StdRng>,
    conns: Mutex<HashMap<u64, Arc<Notify>>>,
    next_id: AtomicU64,
    on: AtomicBool,
    accepted: AtomicU64,
    upstream_refused: AtomicU64,
    random_kills: AtomicU64,
    send_cuts: AtomicU64,
}

impl Inner {
    fn rng<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decide (and count) a cut after a send.
    fn roll_send_cut(&self) -> bool {
        if !self.on.load(Ordering::Relaxed) || self.send_cuts.load(Ordering::Relaxed) >= self.chaos.max_send_cuts {
            return false;
        }
        if !self.rng(|r| r.gen_ratio(1, self.chaos.send_cut_one_in)) {
            return false;
        }
        self.send_cuts.fetch_add(1, Ordering::Relaxed) < self.chaos.max_send_cuts
    }
}

pub struct Relay {
    pub port: u16,
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    pub async fn start(upstream_port: u16, seed: u64, chaos: Chaos) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay bind");
        let port = listener.local_addr().unwrap().port();
        let inner = Arc::new(Inner {
            upstream_port,
            chaos,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            on: AtomicBool::new(true),
            accepted: AtomicU64::new(0),
            upstream_refused: AtomicU64::new(0),
            random_kills: AtomicU64::new(0),
            send_cuts: AtomicU64::new(0),
        });
        let accept = {
            let inner = inner.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    };
                    inner.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(serve_conn(client, inner.clone()));
                }
            })
        };
        let killer = {
            let inner = inner.clone();
            tokio::spawn(async move {
                while inner.random_kills.load(Ordering::Relaxed) < inner.chaos.max_random_kills {
                    let pause = inner.rng(|r| r.gen_range(50..300));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    if !inner.on.load(Ordering::Relaxed) {
                        continue;
                    }
                    let victim = {
                        let conns = inner.conns.lock().unwrap_or_else(|p| p.into_inner());
                        let mut ids: Vec<u64> = conns.keys().copied().collect();
                        ids.sort_unstable();
                        if ids.is_empty() {
                            None
                        } else {
                            let i = inner.rng(|r| r.gen_range(0..ids.len()));
                            conns.get(&ids[i]).cloned()
                        }
                    };
                    if let Some(kill) = victim {
                        kill.notify_one();
                        inner.random_kills.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Relay { port, inner, tasks: vec![accept, killer] }
    }

    /// Chaos on or off (off: connections are left alone; the server may still die).
    pub fn set_chaos(&self, on: bool) {
        self.inner.on.store(on, Ordering::Relaxed);
    }

    pub fn stats(&self) -> RelayStats {
        let i = &self.inner;
        RelayStats {
            accepted: i.accepted.load(Ordering::Relaxed),
            upstream_refused: i.upstream_refused.load(Ordering::Relaxed),
            random_kills: i.random_kills.load(Ordering::Relaxed),
            send_cuts: i.send_cuts.load(Ordering::Relaxed).min(i.chaos.max_send_cuts),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for kill in self.inner.conns.lock().unwrap_or_else(|p| p.into_inner()).values() {
            kill.notify_one();
        }
    }
}

async fn serve_conn(client: TcpStream, inner: Arc<Inner>) {
    let upstream =
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(("127.0.0.1", inner.upstream_port))).await;
    let server = match upstream {
        Ok(Ok(s)) => s,
        _ => {
            // The server is down: the client sees its connection closed.
            inner.upstream_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    if inner.rng(|r| r.gen_bool(0.5)) {
        let _ = client.set_zero_linger();
        let _ = server.set_zero_linger();
    }
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let kill = Arc::new(Notify::new());
    inner.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id, kill.clone());
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let frozen = Arc::new(AtomicBool::new(false));
    tokio::select! {
        _ = kill.notified() => {}
        _ = client_to_server(cr, sw, inner.clone(), frozen.clone()) => {}
        _ = server_to_client(sr, cw, frozen) => {}
    }
    // Dropping the halves closes both connections.
    inner.conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
}

async fn client_to_server(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, inner: Arc<Inner>, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut chunks = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
        chunks += 1;
        // Chunk 1 is the upgrade request, chunk 2 the join; later ones are chat_sends.
        if chunks > 2 && inner.roll_send_cut() {
            frozen.store(true, Ordering::SeqCst);
            let ms = inner.rng(|r| r.gen_range(0..15));
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return;
        }
    }
}

async fn server_to_client(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Cut after a send: nothing more reaches the client (the ack is lost); wait for the kill.
            std::future::pending::<()>().await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
