//! WHIP publish and WHEP play from the native client: the same webrtc-rs peer, senders and receivers as
//! [`crate::client::Client`], negotiated with one HTTP `POST` instead of the WebSocket protocol.
//!
//! [`publish`] offers send-only Opus and VP8 (simulcast if asked) to a WHIP endpoint (`http://host:port/whip`)
//! and sends the client's synthetic media once connected; [`play`] offers receive-only audio and video to a
//! WHEP endpoint and receives into the same per-track statistics as the WebSocket client, so its
//! [`Report`] counts frames complete, corrupt and missing. [`Session::stop`] `DELETE`s the resource. The HTTP
//! client is a small HTTP/1.1 one over TCP (`http://` only): the server under test is on loopback.
//!
//! In a cluster the node that does not host the room answers the `POST` with `307 Temporary Redirect` (or `308`)
//! and a `Location` on the node that does: the same `POST` (same offer, same token) goes there, at most
//! [`MAX_REDIRECTS`](crate::signal::MAX_REDIRECTS) times in a row, and the resource (`PATCH`, `DELETE`) is then resolved against that final URL.

use std::sync::Arc;
use std::time::Duration;

use rtc::peer_connection::sdp::RTCSessionDescription;

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use crate::client::{
    ice_config, new_peer_connection, run_reader, start_publisher, ClientOptions, PcEvent, Publisher, Shared,
};
use crate::report::Report;
use crate::signal::{follow_redirect, MediaKind, RedirectError};

/// Why a WHIP or WHEP session failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhipError {
    /// The endpoint URL is not `http://host[:port]/path`.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// The HTTP exchange failed (connect, read, a malformed answer).
    #[error("HTTP: {0}")]
    Http(String),
    /// The server refused: its status and body.
    #[error("refused with {status}: {body}")]
    Refused { status: u16, body: String },
    /// A 307/308 that is not followed: one too many in a row, or a `Location` that is missing or not `http://`.
    #[error(transparent)]
    Redirect(#[from] RedirectError),
    /// The peer connection failed.
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    /// ICE and DTLS did not come up in time.
    #[error("not connected within {0:?}")]
    ConnectTimeout(Duration),
}

impl From<webrtc::error::Error> for WhipError {
    fn from(e: webrtc::error::Error) -> WhipError {
        WhipError::Client(e.into())
    }
}

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Largest HTTP answer read.
const MAX_RESPONSE: usize = 256 * 1024;

/// One HTTP/1.1 request (`Connection: close`) to an `http://` URL, within 10 s.
pub async fn http_request(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<HttpResponse, WhipError> {
    let u = url::Url::parse(url).map_err(|_| WhipError::BadUrl(url.into()))?;
    if u.scheme() != "http" {
        return Err(WhipError::BadUrl(format!("{url} (only http:// is supported)")));
    }
    let host = u.host_str().ok_or_else(|| WhipError::BadUrl(url.into()))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let path = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        (&mut stream).take(MAX_RESPONSE as u64).read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| WhipError::Http("no answer within 10 s".into()))?
        .map_err(|e| WhipError::Http(e.to_string()))?;
    parse_response(&buf)
}

/// Parse an HTTP/1.1 answer read to its end.
fn parse_response(buf: &[u8]) -> Result<HttpResponse, WhipError> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| WhipError::Http("no end of headers".into()))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| WhipError::Http("no status line".into()))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse { status, headers, body: body.to_string() })
}

/// `POST`s the offer to `endpoint`, following `307`/`308` to their `Location` (resolved against the URL that
/// answered), at most [`MAX_REDIRECTS`](crate::signal::MAX_REDIRECTS) in a row. Returns the last answer and the URL that gave it.
async fn post_following_redirects(endpoint: &str, auth: &str, sdp: &str) -> Result<(HttpResponse, String), WhipError> {
    let mut url = endpoint.to_owned();
    let mut hop = 0;
    loop {
        let r =
            http_request(&url, "POST", &[("Content-Type", "application/sdp"), ("Authorization", auth)], sdp).await?;
        if r.status != 307 && r.status != 308 {
            return Ok((r, url));
        }
        hop += 1;
        let next = follow_redirect(hop, &url, r.header("location").unwrap_or(""), &["http"])?;
        info!(status = r.status, to = %next, hop, "redirected");
        url = next.into();
    }
}

/// A running WHIP or WHEP session.
pub struct Session {
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    /// The resource URL (absolute).
    resource: String,
    etag: Option<String>,
    connection: watch::Receiver<RTCPeerConnectionState>,
    publishers: Vec<Publisher>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("whip::Session").field("resource", &self.resource).finish_non_exhaustive()
    }
}

/// Publish to the WHIP endpoint `endpoint` with `token`: audio and/or video as `options` says
/// (`publish_audio`, `publish_video`, `simulcast`, `video`, `twcc`, `udp_addr`).
pub async fn publish(endpoint: &str, token: &str, options: &ClientOptions) -> Result<Session, WhipError> {
    let mut s = Negotiating::new(endpoint, options).await?;
    let mut n = 0;
    for (wanted, kind) in [(options.publish_audio, MediaKind::Audio), (options.publish_video, MediaKind::Video)] {
        if wanted {
            s.publishers.push(start_publisher(&s.pc, &s.shared, options, &s.connection, kind, n).await?);
            n += 1;
        }
    }
    s.exchange(endpoint, token).await
}

/// Play from the WHEP endpoint `endpoint` (add `?participant=…` to choose the publisher) with `token`: one
/// receive-only audio and one receive-only video m-line.
pub async fn play(endpoint: &str, token: &str, options: &ClientOptions) -> Result<Session, WhipError> {
    let s = Negotiating::new(endpoint, options).await?;
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        let init = RTCRtpTransceiverInit {
            direction: RTCRtpTransceiverDirection::Recvonly,
            streams: vec![],
            send_encodings: vec![],
        };
        s.pc.add_transceiver_from_kind(kind, Some(init)).await?;
    }
    s.exchange(endpoint, token).await
}

/// A peer connection being set up.
struct Negotiating {
    pc: Arc<dyn PeerConnection>,
    shared: Arc<Shared>,
    pc_events: mpsc::UnboundedReceiver<PcEvent>,
    connection: watch::Receiver<RTCPeerConnectionState>,
    publishers: Vec<Publisher>,
}

impl Negotiating {
    async fn new(endpoint: &str, options: &ClientOptions) -> Result<Negotiating, WhipError> {
        let shared = Arc::new(Shared::new("whip".into(), String::new(), String::new(), options));
        // The offer goes out before the answer's Link headers name any ICE server: host candidates only.
        let ice = ice_config(&[], options.relay_only);
        let (pc, pc_events, connection) = new_peer_connection(endpoint, options, &shared, ice).await?;
        Ok(Negotiating { pc, shared, pc_events, connection, publishers: Vec::new() })
    }

    /// Offer (with every candidate gathered: nothing to trickle), POST, apply the answer, start the readers.
    async fn exchange(mut self, endpoint: &str, token: &str) -> Result<Session, WhipError> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer.clone()).await?;
        let gathered = async {
            while let Some(ev) = self.pc_events.recv().await {
                if matches!(ev, PcEvent::GatheringComplete) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered).await;
        let sdp = self.pc.local_description().await.map(|d| d.sdp).unwrap_or(offer.sdp);
        let auth = format!("Bearer {token}");
        let (r, url) = match post_following_redirects(endpoint, &auth, &sdp).await {
            Ok((r, url)) if r.status == 201 => (r, url),
            Ok((r, _)) => {
                let _ = self.pc.close().await;
                return Err(WhipError::Refused { status: r.status, body: r.body });
            }
            Err(e) => {
                let _ = self.pc.close().await;
                return Err(e);
            }
        };
        let location = r.header("location").ok_or_else(|| WhipError::Http("201 without Location".into()))?;
        let resource = url::Url::parse(&url)
            .and_then(|u| u.join(location))
            .map_err(|_| WhipError::Http(format!("bad Location {location}")))?
            .to_string();
        self.pc.set_remote_description(RTCSessionDescription::answer(r.body.clone())?).await?;
        for p in &self.publishers {
            let _ = p.negotiated.send(true);
        }
        info!(%resource, "WHIP/WHEP resource created");
        // Received tracks go to the client's readers (its per-track statistics).
        let (events, _) = mpsc::unbounded_channel();
        let (_reading_tx, reading) = watch::channel(true);
        let (pc, shared) = (Arc::clone(&self.pc), Arc::clone(&self.shared));
        let mut pc_events = self.pc_events;
        let pump = tokio::spawn(async move {
            let _keep_reading = _reading_tx;
            let mut readers = Vec::new();
            while let Some(ev) = pc_events.recv().await {
                if let PcEvent::Track(track) = ev {
                    readers.push(tokio::spawn(run_reader(
                        track,
                        Arc::clone(&pc),
                        Arc::clone(&shared),
                        events.clone(),
                        reading.clone(),
                    )));
                }
            }
            for r in readers {
                r.abort();
            }
        });
        Ok(Session {
            pc: self.pc,
            shared: self.shared,
            resource,
            etag: r.header("etag").map(String::from),
            connection: self.connection,
            publishers: self.publishers,
            tasks: vec![pump],
        })
    }
}

impl Session {
    /// The resource URL (for `PATCH` and `DELETE`).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The resource's entity tag, if the server gave one.
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// Wait until ICE and DTLS are up.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<(), WhipError> {
        let connected = self.connection.wait_for(|s| *s == RTCPeerConnectionState::Connected);
        match tokio::time::timeout(timeout, connected).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(WhipError::ConnectTimeout(timeout)),
        }
    }

    /// What was sent and received so far.
    pub fn stats(&self) -> Report {
        self.shared.report()
    }

    /// `DELETE` the resource, close the peer connection and return the final report and the DELETE's status.
    pub async fn stop(self) -> Result<(Report, u16), WhipError> {
        for p in &self.publishers {
            let _ = p.stop.send(true);
        }
        let r = http_request(&self.resource, "DELETE", &[], "").await;
        let report = self.shared.report();
        let _ = self.pc.close().await;
        for t in &self.tasks {
            t.abort();
        }
        for p in &self.publishers {
            p.task.abort();
        }
        debug!(resource = %self.resource, "stopped");
        Ok((report, r?.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\nLocation: /whip/abc\r\nETag: \"x\"\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.header("location"), Some("/whip/abc"));
        assert_eq!(r.header("etag"), Some("\"x\""));
        assert_eq!(r.body, "v=0\r\n");
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }
}
