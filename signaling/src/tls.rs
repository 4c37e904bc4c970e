//! TLS for the HTTP and WebSocket listener: `https://` and `wss://` from a certificate chain and a private key in PEM
//! files, picked up again when the files change (a renewed Let's Encrypt certificate needs no restart).
//!
//! [`CertFiles`] holds the files' current certificate and answers every handshake with it; a background job
//! ([`crate::jobs`]) calls [`CertFiles::reload_if_changed`] every few seconds. A half-written renewal (a new chain
//! with the old key, a truncated file) is refused and the previous certificate kept until the files agree.
//! [`TlsListener`] is the `axum::serve` listener: it accepts TCP, runs each handshake in its own task (bounded in
//! time and number, so a slow or silent client never holds up the others) and hands over finished streams.
//!
//! rustls with the `ring` provider, the same crypto the rest of the server uses; TLS 1.2 and 1.3, ALPN
//! `http/1.1` (WebSockets upgrade over HTTP/1.1).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for changes.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);
/// A client has this long to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; connections past it are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("reading {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("{0}: no private key in the file")]
    NoKey(PathBuf),
    #[error("the private key does not fit the certificate (or is not supported): {0}")]
    Key(rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key files, and what they held when last read.
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of (cert, key) when `current` was read.
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertFiles").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read { path: path.to_path_buf(), message: e.to_string() })
}

/// Read a chain and a key that belong together.
fn load(cert_path: &Path, key_path: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let pem = read(cert_path)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read { path: cert_path.to_path_buf(), message: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_path)?).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey(key_path.to_path_buf()),
        e => TlsError::Read { path: key_path.to_path_buf(), message: e.to_string() },
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(TlsError::Key)
}

impl CertFiles {
    /// Read the files; an error names the file and what is wrong with it.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertFiles>, TlsError> {
        let provider = provider();
        let seen = (modified(cert_path), modified(key_path));
        let key = load(cert_path, key_path, &provider)?;
        Ok(Arc::new(CertFiles {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(key)),
            seen: Mutex::new(seen),
            provider,
        }))
    }

    /// Read the files again if either changed since the last good read. `Ok(true)`: a new certificate is in use.
    /// On an error the previous certificate stays, and the next call tries again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (modified(&self.cert_path), modified(&self.key_path));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == now {
            return Ok(false);
        }
        let key = load(&self.cert_path, &self.key_path, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *seen = now;
        Ok(true)
    }

    /// The certificate handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A server configuration that always presents the current certificate.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        self.server_config_alpn(vec![b"http/1.1".to_vec()])
    }

    /// The same with these ALPN protocols (empty: no ALPN, as the TURN listener wants: TURN clients rarely send
    /// one, and a client that offers another would be refused).
    pub fn server_config_alpn(self: &Arc<Self>, alpn: Vec<Vec<u8>>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn;
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A TCP listener whose streams are TLS, for `axum::serve`.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        TlsListener { tcp, acceptor: TlsAcceptor::from(config), handshakes: JoinSet::new() }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, addr)) => {
                        if self.handshakes.len() >= MAX_HANDSHAKES {
                            tracing::debug!(%addr, "too many TLS handshakes in progress; connection closed");
                            continue;
                        }
                        // Small frames go out at once (see the plain listener in lib.rs).
                        let _ = tcp.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => {
                        // As axum's own listener: out of descriptors and the like pass; wait a little.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(stream)) = done {
                        return stream;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn loads_reloads_on_change_and_keeps_the_old_certificate_on_a_bad_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let (c1, k1) = self_signed("one.test");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let files = CertFiles::load(&cert, &key).unwrap();
        let first = files.current().cert[0].clone();
        assert!(!files.reload_if_changed().unwrap(), "unchanged files are not read again");

        // A renewal half written: the new chain with the old key. Refused; the old certificate stays.
        let (c2, k2) = self_signed("two.test");
        std::fs::write(&cert, &c2).unwrap();
        bump(&cert);
        assert!(matches!(files.reload_if_changed(), Err(TlsError::Key(_))));
        assert_eq!(files.current().cert[0], first);
        // The key arrives: the next check takes both.
        std::fs::write(&key, &k2).unwrap();
        bump(&key);
        assert!(files.reload_if_changed().unwrap());
        assert_ne!(files.current().cert[0], first);
        assert!(!files.reload_if_changed().unwrap());

        // Bad files at start-up name the file.
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(matches!(CertFiles::load(&cert, &key), Err(TlsError::NoCertificate(p)) if p == cert));
        std::fs::write(&cert, &c2).unwrap();
        std::fs::write(&key, "").unwrap();
        assert!(matches!(CertFiles::load(&cert, &key), Err(TlsError::NoKey(p)) if p == key));
        assert!(matches!(CertFiles::load(&dir.path().join("nope"), &key), Err(TlsError::Read { .. })));
    }

    /// Move a file's modification time forward (two writes within the file system's time granularity look alike).
    fn bump(p: &Path) {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        let t = modified(p).unwrap() + Duration::from_secs(1);
        f.set_modified(t).unwrap();
    }
}
