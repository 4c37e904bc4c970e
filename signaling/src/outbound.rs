//! Outbound HTTP(S): the one client the chat pre-send hook and the webhooks share, the roots it trusts, and the
//! check of a callback URL.
//!
//! Callbacks may be `http://` or `https://`. TLS is rustls with the `ring` provider (no aws-lc-rs: it needs cmake
//! and nasm to build), HTTP/1.1 only. A receiver's certificate must chain to one of the Mozilla roots
//! (`webpki-roots`, compiled in, so the server needs no CA bundle on its machine) or to a certificate in the PEM
//! file named by `outbound_ca_file` (a private CA, or a self-signed receiver in development). The same roots serve
//! every outbound HTTPS connection, the PostgreSQL chat store's TLS included.
//!
//! ```
//! let client = signaling::outbound::client(&signaling::outbound::roots(None).unwrap());
//! let uri = signaling::outbound::callback_url("webhook url", "https://hooks.example.com/courier").unwrap();
//! # let _ = (client, uri);
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The outbound client: HTTP/1.1 over plain TCP or TLS, connections pooled per host and closed after 30 s idle.
/// Cheap to clone (clones share the pool).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Why the extra trusted certificates could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootsError {
    /// The file could not be read, or is not PEM.
    #[error("outbound_ca_file {path}: {error}")]
    Read { path: String, error: String },
    /// The file holds no `CERTIFICATE` block.
    #[error("outbound_ca_file {path}: no PEM certificate in it")]
    Empty { path: String },
    /// A certificate rustls cannot use as a trust anchor.
    #[error("outbound_ca_file {path}: certificate {index}: {error}")]
    Certificate { path: String, index: usize, error: String },
}

/// The roots outbound TLS trusts: the Mozilla roots and every certificate in `extra` (a PEM file).
pub fn roots(extra: Option<&Path>) -> Result<Arc<RootCertStore>, RootsError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra {
        let shown = path.display().to_string();
        let read = |e: rustls_pki_types::pem::Error| RootsError::Read { path: shown.clone(), error: e.to_string() };
        let certs = CertificateDer::pem_file_iter(path).map_err(read)?.collect::<Result<Vec<_>, _>>().map_err(read)?;
        if certs.is_empty() {
            return Err(RootsError::Empty { path: shown });
        }
        for (index, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| RootsError::Certificate {
                path: shown.clone(),
                index,
                error: e.to_string(),
            })?;
        }
    }
    Ok(Arc::new(roots))
}

/// The rustls client configuration for `roots`: ring, TLS 1.2 and 1.3, no client certificate.
pub fn tls_config(roots: &Arc<RootCertStore>) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports the default protocol versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth()
}

/// The outbound client, trusting `roots` for `https://`.
pub fn client(roots: &Arc<RootCertStore>) -> HttpClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(roots))
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// Parse an outbound callback URL (`what` names the setting in errors): `http://` or `https://`, with a host.
pub fn callback_url(what: &str, url: &str) -> Result<hyper::Uri, String> {
    let parsed: hyper::Uri = url.parse().map_err(|e| format!("{what} {url:?}: {e}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) {
        return Err(format!("{what} {url}: must be an http:// or https:// URL"));
    }
    if parsed.host().is_none_or(str::is_empty) {
        return Err(format!("{what} {url}: no host"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls() {
        for (url, ok) in [
            ("http://127.0.0.1:9000/hooks", true),
            ("https://hooks.example.com/courier", true),
            ("https://[::1]:8443/", true),
            ("ftp://example.com/", false),
            ("hooks.example.com/courier", false),
            ("/relative", false),
            ("https://", false),
            ("not a url", false),
        ] {
            assert_eq!(callback_url("x", url).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn extra_roots_from_a_pem_file() {
        let base = roots(None).unwrap().len();
        assert!(base > 100, "the Mozilla roots are compiled in: {base}");
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.pem()).unwrap();
        assert_eq!(roots(Some(&good)).unwrap().len(), base + 1);
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        assert!(matches!(roots(Some(&empty)), Err(RootsError::Empty { .. })));
        assert!(matches!(roots(Some(&dir.path().join("missing.pem"))), Err(RootsError::Read { .. })));
    }
}
