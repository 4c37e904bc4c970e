//! WHIP publish and WHEP play over real sockets: the HTTP exchange (201, Location, ETag, answer, CORS), the
//! participant it makes (seen by WebSocket members, with its tracks), media both ways between a str0m client on
//! HTTP and a str0m client on the WebSocket, PATCH, DELETE, a kick, and every refusal's status.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use http_body_util::{BodyExt, Full};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// What a driven str0m client reports.
#[derive(Debug)]
enum Ev {
    Connected,
    /// A media frame arrived on `mid`, of codec `codec`.
    Media {
        kind: MediaKind,
        codec: String,
    },
}

/// A str0m client on its own task: it drives ICE/DTLS over a loopback UDP socket, sends a fake VP8 keyframe and an
/// Opus-sized packet on every m-line it sends on, ~30 times a second, answers the server's offers (WebSocket
/// subscribers), and reports what it receives.
struct Client {
    events: mpsc::UnboundedReceiver<Ev>,
    offers: mpsc::UnboundedSender<String>,
    answers: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn bind() -> (Rtc, UdpSocket, SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    (rtc, sock, local)
}

/// A client offering `media` (kind, direction); returns it (not yet running), its offer and the pending change.
struct Offering {
    rtc: Rtc,
    sock: UdpSocket,
    local: SocketAddr,
    mids: Vec<Mid>,
    offer: String,
    pending: str0m::change::SdpPendingOffer,
}

async fn offering(media: &[(MediaKind, Direction)]) -> Offering {
    let (mut rtc, sock, local) = bind().await;
    let mut change = rtc.sdp_api();
    let mids = media.iter().map(|(kind, dir)| change.add_media(*kind, *dir, None, None, None)).collect();
    let (offer, pending) = change.apply().unwrap();
    Offering { rtc, sock, local, mids, offer: offer.to_sdp_string(), pending }
}

impl Offering {
    /// Take the answer and start driving.
    fn answered(mut self, answer: &str) -> Client {
        self.rtc.sdp_api().accept_answer(self.pending, SdpAnswer::from_sdp_string(answer).unwrap()).unwrap();
        run(self.rtc, self.sock, self.local, self.mids)
    }
}

fn run(mut rtc: Rtc, sock: UdpSocket, local: SocketAddr, mut mids: Vec<Mid>) -> Client {
    let (ev_tx, events) = mpsc::unbounded_channel();
    let (offers, mut offer_rx) = mpsc::unbounded_channel::<String>();
    let (answer_tx, answers) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        let mut connected = false;
        let mut frame = 0u64;
        let mut next_frame = Instant::now();
        loop {
            while let Ok(offer) = offer_rx.try_recv() {
                let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
                let _ = answer_tx.send(answer.to_sdp_string());
            }
            if connected && Instant::now() >= next_frame {
                next_frame = Instant::now() + Duration::from_millis(33);
                frame += 1;
                for mid in mids.clone() {
                    let Some(kind) = rtc.media(mid).filter(|m| m.direction().is_sending()).map(|m| m.kind()) else {
                        continue;
                    };
                    let Some(w) = rtc.writer(mid) else { continue };
                    let Some(pt) = w.payload_params().next().map(|p| p.pt()) else { continue };
                    let (data, time) = match kind {
                        // A VP8 keyframe header (every frame is one), then filler.
                        MediaKind::Video => {
                            let mut d = vec![0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
                            d.resize(300, 0x11);
                            (d, MediaTime::from_90khz(frame * 3000))
                        }
                        MediaKind::Audio => {
                            (vec![0xf8; 60], MediaTime::new(frame * 1440, str0m::media::Frequency::FORTY_EIGHT_KHZ))
                        }
                    };
                    let _ = w.write(pt, Instant::now(), time, data);
                }
            }
            let timeout = loop {
                match rtc.poll_output() {
                    Ok(Output::Timeout(t)) => break t,
                    Ok(Output::Transmit(t)) => {
                        let _ = sock.send_to(&t.contents, t.destination).await;
                    }
                    Ok(Output::Event(Event::Connected)) => {
                        connected = true;
                        let _ = ev_tx.send(Ev::Connected);
                    }
                    Ok(Output::Event(Event::MediaAdded(m))) => mids.push(m.mid),
                    Ok(Output::Event(Event::MediaData(d))) => {
                        let kind = rtc.media(d.mid).map(|m| m.kind()).unwrap_or(MediaKind::Audio);
                        let _ = ev_tx.send(Ev::Media { kind, codec: format!("{:?}", d.params.spec().codec) });
                    }
                    Ok(Output::Event(_)) => {}
                    Err(_) => return,
                }
            };
            let wait =
                timeout.min(Instant::now() + Duration::from_millis(10)).saturating_duration_since(Instant::now());
            let input = match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, source))) => match Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    Ok(r) => Input::Receive(Instant::now(), r),
                    Err(_) => continue,
                },
                _ => Input::Timeout(Instant::now()),
            };
            if rtc.handle_input(input).is_err() {
                return;
            }
        }
    });
    Client { events, offers, answers, task }
}

impl Client {
    /// Wait until `pred` holds for an event, within `within`.
    async fn wait_for(&mut self, within: Duration, what: &str, mut pred: impl FnMut(&Ev) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if pred(&ev) => return,
                Ok(Some(_)) => continue,
                _ => panic!("{what}: not within {within:?}"),
            }
        }
    }
}

/// One HTTP request over a real connection: status, headers, body.
async fn http(
    s: &signaling::Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<axum::body::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://{}{path}", s.http_addr));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(axum::body::Bytes::from(body.to_string()))).unwrap();
    let res =
        tokio::time::timeout(Duration::from_secs(10), client.request(req)).await.expect("answer within 10 s").unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

async fn post_offer(s: &signaling::Server, path: &str, token: &str, offer: &str) -> (u16, hyper::HeaderMap, String) {
    let auth = format!("Bearer {token}");
    http(s, "POST", path, &[("content-type", "application/sdp"), ("authorization", &auth)], offer).await
}

/// A WHIP publisher (str0m, audio + video) connected and sending; returns it and its resource path.
async fn whip_publisher(s: &signaling::Server, room: &str, identity: &str) -> (Client, String, String) {
    let o = offering(&[(MediaKind::Audio, Direction::SendOnly), (MediaKind::Video, Direction::SendOnly)]).await;
    let (status, headers, answer) = post_offer(s, "/whip", &token(room, identity), &o.offer).await;
    assert_eq!(status, 201, "{answer}");
    let location = headers["location"].to_str().unwrap().to_string();
    let etag = headers["etag"].to_str().unwrap().to_string();
    let mut c = o.answered(&answer);
    c.wait_for(Duration::from_secs(10), "WHIP publisher connects", |e| matches!(e, Ev::Connected)).await;
    (c, location, etag)
}

/// A WebSocket member that subscribes to everything with a str0m peer (it answers the server's offers).
struct WsSubscriber {
    ws: Ws,
    client: Client,
}

impl WsSubscriber {
    async fn join(s: &signaling::Server, room: &str, identity: &str) -> (WsSubscriber, serde_json::Value) {
        let (ws, joined) = join(s, room, identity).await;
        let (rtc, sock, local) = bind().await;
        (WsSubscriber { ws, client: run(rtc, sock, local, Vec::new()) }, joined)
    }

    /// Pump signaling (answer offers) until `pred` holds for a received media event, within `within`.
    async fn receive(&mut self, within: Duration, what: &str, mut pred: impl FnMut(&Ev) -> bool) {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            tokio::select! {
                m = self.ws.next() => {
                    let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m else { continue };
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == "offer" {
                        self.client.offers.send(v["sdp"].as_str().unwrap().to_string()).unwrap();
                        let answer = tokio::time::timeout(Duration::from_secs(5), self.client.answers.recv()).await.unwrap().unwrap();
                        let msg = serde_json::json!({"type": "answer", "id": v["id"], "sdp": answer});
                        send(&mut self.ws, &msg.to_string()).await;
                    }
                }
                ev = self.client.events.recv() => {
                    if ev.as_ref().is_some_and(&mut pred) { return; }
                }
                _ = tokio::time::sleep_until(deadline) => panic!("{what}: not within {within:?}"),
            }
        }
    }
}

fn is_video(e: &Ev) -> bool {
    matches!(e, Ev::Media { kind: MediaKind::Video, codec } if codec == "Vp8")
}

fn is_audio(e: &Ev) -> bool {
    matches!(e, Ev::Media { kind: MediaKind::Audio, codec } if codec == "Opus")
}

#[tokio::test]
async fn whip_publisher_is_a_participant_whose_media_reaches_websocket_subscribers() {
    let s = server().await;
    let (mut sub, _) = WsSubscriber::join(&s, "r", "viewer").await;
    let (_publisher, location, etag) = whip_publisher(&s, "r", "obs").await;
    assert!(location.starts_with("/whip/"), "{location}");
    assert!(etag.starts_with('"'), "{etag}");
    let joined = recv_type(&mut sub.ws, "participant_joined").await;
    assert_eq!(joined["participant"]["identity"], "obs");
    // Its tracks are announced like any participant's, and the subscriber receives them.
    let t = Instant::now();
    sub.receive(Duration::from_secs(15), "VP8 from the WHIP publisher", is_video).await;
    sub.receive(Duration::from_secs(5), "Opus from the WHIP publisher", is_audio).await;
    eprintln!("first VP8 frame at the WebSocket subscriber {} ms after connect", t.elapsed().as_millis());
    // The admin API lists it.
    let (status, list) =
        api(&s, "GET", "/api/v1/rooms/r/participants", Some(&api_token("r", |r| r.room_admin = true)), None).await;
    assert_eq!(status, 200);
    let obs = list["participants"].as_array().unwrap().iter().find(|p| p["identity"] == "obs").expect("listed").clone();
    assert_eq!(obs["tracks"].as_array().unwrap().len(), 2, "{obs}");

    // DELETE: it leaves, the others hear it, the resource is gone.
    let (status, _, _) = http(&s, "DELETE", &location, &[], "").await;
    assert_eq!(status, 200);
    let left = recv_type(&mut sub.ws, "participant_left").await;
    assert_eq!(left["participant_id"], joined["participant"]["id"]);
    assert_eq!(http(&s, "DELETE", &location, &[], "").await.0, 404);
    assert_eq!(s.state.whip.len(), 0);
}

#[tokio::test]
async fn whep_viewer_plays_a_websocket_publisher() {
    let s = server().await;
    // A WebSocket publisher (str0m, audio + video).
    let (mut ws, _) = join(&s, "r", "cam").await;
    let o = offering(&[(MediaKind::Audio, Direction::SendOnly), (MediaKind::Video, Direction::SendOnly)]).await;
    send(&mut ws, &serde_json::json!({"type": "offer", "id": 1, "sdp": o.offer}).to_string()).await;
    let answer = recv_type(&mut ws, "answer").await;
    let _publisher = o.answered(answer["sdp"].as_str().unwrap());
    recv_type(&mut ws, "track_published").await;
    recv_type(&mut ws, "track_published").await;

    // A WHEP viewer of "cam" (named in the URL), receive-only.
    let o = offering(&[(MediaKind::Audio, Direction::RecvOnly), (MediaKind::Video, Direction::RecvOnly)]).await;
    let (status, headers, answer) = post_offer(&s, "/whep?participant=cam", &token("r", "player"), &o.offer).await;
    assert_eq!(status, 201, "{answer}");
    assert!(headers["location"].to_str().unwrap().starts_with("/whep/"));
    assert_eq!(headers["content-type"], "application/sdp");
    assert!(answer.matches("a=sendonly").count() == 2, "both m-lines carry the publisher's tracks: {answer}");
    let mut viewer = o.answered(&answer);
    let t = Instant::now();
    viewer.wait_for(Duration::from_secs(15), "VP8 at the WHEP viewer", is_video).await;
    viewer.wait_for(Duration::from_secs(5), "Opus at the WHEP viewer", is_audio).await;
    eprintln!("first VP8 frame at the WHEP viewer {} ms after its answer", t.elapsed().as_millis());
    // The viewer is a participant too.
    let joined = recv_type(&mut ws, "participant_joined").await;
    assert_eq!(joined["participant"]["identity"], "player");

    // Without a named publisher, the first that publishes video is played.
    let offer = offering(&[(MediaKind::Video, Direction::RecvOnly)]).await.offer;
    assert_eq!(post_offer(&s, "/whep", &token("r", "player2"), &offer).await.0, 201);
    // Nobody of that name, or nobody publishing: 404.
    assert_eq!(post_offer(&s, "/whep?participant=nobody", &token("r", "p3"), &offer).await.0, 404);
    assert_eq!(post_offer(&s, "/whep", &token("empty", "p4"), &offer).await.0, 404);
    assert_eq!(post_offer(&s, "/whep?layer=x", &token("r", "p5"), &offer).await.0, 400);
}

#[tokio::test]
async fn patch_trickles_candidates_and_refuses_ice_restart() {
    let s = server().await;
    let offer = offering(&[(MediaKind::Audio, Direction::SendOnly)]).await.offer;
    let (status, headers, _) = post_offer(&s, "/whip", &token("r", "obs"), &offer).await;
    assert_eq!(status, 201);
    let location = headers["location"].to_str().unwrap().to_string();
    let etag = headers["etag"].to_str().unwrap().to_string();
    let ufrag = offer.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).unwrap().trim().to_string();
    let frag = format!(
        "a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
         a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n"
    );
    let ct = ("content-type", "application/trickle-ice-sdpfrag");
    assert_eq!(http(&s, "PATCH", &location, &[ct, ("if-match", &etag)], &frag).await.0, 204);
    assert_eq!(http(&s, "PATCH", &location, &[ct], &frag).await.0, 204, "If-Match is optional for a trickle");
    assert_eq!(http(&s, "PATCH", &location, &[ct, ("if-match", "\"other\"")], &frag).await.0, 412);
    assert_eq!(http(&s, "PATCH", &location, &[ct, ("if-match", "*")], &frag).await.0, 422, "ICE restart");
    let restart = frag.replace(&ufrag, "newufrag");
    assert_eq!(http(&s, "PATCH", &location, &[ct, ("if-match", &etag)], &restart).await.0, 422);
    assert_eq!(http(&s, "PATCH", &location, &[("content-type", "application/sdp")], &frag).await.0, 415);
    assert_eq!(http(&s, "PATCH", &location, &[ct], "a=candidate:garbage\r\n").await.0, 400);
    assert_eq!(http(&s, "PATCH", "/whip/nope", &[ct], &frag).await.0, 404);
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let s = server().await;
    for path in ["/whip", "/whep", "/whip/x"] {
        let (status, h, _) = http(
            &s,
            "OPTIONS",
            path,
            &[("origin", "https://a.example"), ("access-control-request-method", "POST")],
            "",
        )
        .await;
        assert_eq!(status, 204, "{path}");
        assert_eq!(h["access-control-allow-origin"], "*");
        let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        assert!(allowed.contains("authorization") && allowed.contains("if-match"), "{allowed}");
    }
    let (status, h, _) = post_offer(&s, "/whip", "bad", "v=0\r\nm=audio 9 X 0\r\n").await;
    assert_eq!(status, 401);
    assert_eq!(h["access-control-allow-origin"], "*", "errors are readable cross-origin too");
    assert!(h["access-control-expose-headers"].to_str().unwrap().contains("Location"));
}

#[tokio::test]
async fn every_refusal_has_its_status() {
    let s = server_with(|raw| {
        raw.limits.get_or_insert_with(Default::default).max_participants = Some(1);
    })
    .await;
    let offer = offering(&[(MediaKind::Audio, Direction::SendOnly)]).await.offer;
    let t = token("r", "obs");
    let auth = format!("Bearer {t}");
    // Missing or bad token.
    assert_eq!(http(&s, "POST", "/whip", &[("content-type", "application/sdp")], &offer).await.0, 401);
    assert_eq!(post_offer(&s, "/whip", "not-a-token", &offer).await.0, 401);
    // No publish grant; no subscribe grant for WHEP.
    assert_eq!(post_offer(&s, "/whip", &token_with("r", "x", |r| r.can_publish = false), &offer).await.0, 403);
    assert_eq!(post_offer(&s, "/whep", &token_with("r", "x", |r| r.can_subscribe = false), &offer).await.0, 403);
    // Wrong content type; not SDP; too large.
    assert_eq!(
        http(&s, "POST", "/whip", &[("content-type", "text/plain"), ("authorization", &auth)], &offer).await.0,
        415
    );
    assert_eq!(post_offer(&s, "/whip", &t, "hello").await.0, 400);
    let huge = format!("{offer}{}", "a=x\r\n".repeat(20_000));
    assert_eq!(post_offer(&s, "/whip", &t, &huge).await.0, 413);
    // SDP the engine cannot take.
    assert_eq!(post_offer(&s, "/whip", &t, "v=0\r\nm=audio 9 X 0\r\n").await.0, 400);
    // Room full (max_participants 1): the first gets in, the second is refused like a WebSocket join.
    let (status, headers, _) = post_offer(&s, "/whip", &t, &offer).await;
    assert_eq!(status, 201);
    let (status, h, body) = post_offer(&s, "/whip", &token("r", "second"), &offer).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("room_full"), "{body}");
    assert!(h.contains_key("retry-after"));
    // An admin kick ends the resource.
    let (status, _) =
        api(&s, "DELETE", "/api/v1/rooms/r/participants/obs", Some(&api_token("r", |r| r.room_admin = true)), None)
            .await;
    assert!(status == 200 || status == 204, "kick: {status}");
    let location = headers["location"].to_str().unwrap().to_string();
    eventually("the kicked resource is gone", Duration::from_secs(5), || {
        let s = &s;
        let location = location.clone();
        async move {
            match http(s, "DELETE", &location, &[], "").await.0 {
                404 => Ok(()),
                other => Err(format!("DELETE answered {other}")),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn resources_per_identity_are_bounded_and_drain_refuses() {
    let s = server().await;
    let offer = offering(&[(MediaKind::Audio, Direction::SendOnly)]).await.offer;
    // The same identity in different rooms (in one room a newer session replaces the older).
    for i in 0..signaling::whip::MAX_RESOURCES_PER_IDENTITY {
        assert_eq!(post_offer(&s, "/whip", &token(&format!("r{i}"), "obs"), &offer).await.0, 201);
    }
    let (status, h, _) = post_offer(&s, "/whip", &token("rx", "obs"), &offer).await;
    assert_eq!(status, 429);
    assert!(h.contains_key("retry-after"));
    s.state.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(post_offer(&s, "/whip", &token("ry", "other"), &offer).await.0, 503);
}

#[tokio::test]
async fn a_whip_publisher_that_goes_silent_leaves() {
    let s = server().await;
    let (mut ws, _) = join(&s, "r", "viewer").await;
    let (publisher, location, _) = whip_publisher(&s, "r", "obs").await;
    recv_type(&mut ws, "participant_joined").await;
    // The encoder vanishes without a DELETE: no STUN, no SRTP. The engine's liveness timer (15 s) ends the peer,
    // and with it the resource.
    drop(publisher);
    let t = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    let left = loop {
        use futures::StreamExt;
        let m = tokio::time::timeout_at(deadline, ws.next()).await.expect("participant_left within 25 s");
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = m else { continue };
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        if v["type"] == "participant_left" {
            break v;
        }
    };
    eprintln!("silent WHIP publisher left after {} ms", t.elapsed().as_millis());
    assert_eq!(left["reason"], "disconnected");
    assert_eq!(http(&s, "DELETE", &location, &[], "").await.0, 404);
}

#[tokio::test]
async fn webhooks_see_a_whip_participant_join_and_leave() {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hooks",
            axum::routing::post(
                |axum::extract::State(g): axum::extract::State<Arc<Mutex<Vec<serde_json::Value>>>>,
                 body: axum::body::Bytes| async move {
                    g.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = server_with(move |raw| {
        raw.webhooks = Some(webhook_endpoint(&format!("http://{addr}/hooks"), "whip-webhook-secret"))
    })
    .await;
    let offer = offering(&[(MediaKind::Audio, Direction::SendOnly)]).await.offer;
    let (status, headers, _) = post_offer(&s, "/whip", &token("r", "obs"), &offer).await;
    assert_eq!(status, 201);
    assert_eq!(http(&s, "DELETE", headers["location"].to_str().unwrap(), &[], "").await.0, 200);
    eventually("participant_joined and participant_left of the WHIP publisher", Duration::from_secs(5), || {
        let events: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["participant"]["identity"] == "obs")
            .map(|v| v["event"].as_str().unwrap_or_default().to_string())
            .collect();
        async move {
            if events.iter().any(|e| e == "participant_joined") && events.iter().any(|e| e == "participant_left") {
                Ok(())
            } else {
                Err(format!("{events:?}"))
            }
        }
    })
    .await;
}

/// The `http` examples of docs/protocol.md's "WHIP and WHEP" section: (first line, header names, body).
fn documented_exchanges() -> Vec<(String, Vec<String>, String)> {
    let doc = include_str!("../../docs/protocol.md");
    let start = doc.find("\n## WHIP and WHEP").expect("the WHIP section");
    let section = &doc[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut out = Vec::new();
    let mut rest = section;
    while let Some(at) = rest.find("```http\n") {
        let block = &rest[at + 8..];
        let end = block.find("\n```").expect("a closed block");
        let text = &block[..end];
        let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
        let mut lines = head.lines();
        let first = lines.next().unwrap_or_default().to_string();
        let names = lines.filter_map(|l| l.split_once(':')).map(|(k, _)| k.trim().to_ascii_lowercase()).collect();
        out.push((first, names, body.to_string()));
        rest = &block[end..];
    }
    out
}

/// The document's exchange, done against a server with TURN on: the POST answers the documented status with every
/// documented header (`Link` with the TURN credentials among them), the documented PATCH is accepted, DELETE ends it.
#[tokio::test]
async fn the_documented_exchange_is_what_the_server_does() {
    let ex = documented_exchanges();
    assert!(ex.len() >= 3, "the section shows a POST, its answer and a PATCH: {ex:?}");
    let post = ex.iter().find(|(l, ..)| l.starts_with("POST /whip ")).expect("a documented POST");
    let created = ex.iter().find(|(l, ..)| l.starts_with("HTTP/1.1 ")).expect("a documented answer");
    let patch = ex.iter().find(|(l, ..)| l.starts_with("PATCH /whip/")).expect("a documented PATCH");
    let status: u16 = created.0.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(post.1.contains(&"authorization".to_string()) && post.1.contains(&"content-type".to_string()));

    let s = server_with(|c| {
        c.turn = Some(signaling::config::RawTurnConfig {
            enabled: Some(true),
            addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        })
    })
    .await;
    let o = offering(&[(MediaKind::Audio, Direction::SendOnly), (MediaKind::Video, Direction::SendOnly)]).await;
    let (got, headers, answer) = post_offer(&s, "/whip", &token("doc", "encoder"), &o.offer).await;
    assert_eq!(got, status, "{answer}");
    for name in &created.1 {
        assert!(headers.contains_key(name.as_str()), "the documented header {name} is missing: {headers:?}");
    }
    let link = headers["link"].to_str().unwrap();
    assert!(link.contains("rel=\"ice-server\"") && link.contains("username=\"") && link.contains("turn:"), "{link}");
    assert!(answer.starts_with("v=0"), "{answer}");

    // The documented PATCH (its ICE credentials made the offer's: others would be an ICE restart).
    let location = headers["location"].to_str().unwrap().to_string();
    let etag = headers["etag"].to_str().unwrap().to_string();
    let line = |prefix: &str| o.offer.lines().find(|l| l.starts_with(prefix)).unwrap().to_string();
    let body: String = patch
        .2
        .lines()
        .map(|l| match l {
            l if l.starts_with("a=ice-ufrag:") => line("a=ice-ufrag:"),
            l if l.starts_with("a=ice-pwd:") => line("a=ice-pwd:"),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n";
    assert!(patch.1.contains(&"if-match".to_string()));
    let (got, _, text) = http(
        &s,
        "PATCH",
        &location,
        &[("content-type", "application/trickle-ice-sdpfrag"), ("if-match", &etag)],
        &body,
    )
    .await;
    assert_eq!(got, 204, "{text}");
    assert_eq!(http(&s, "DELETE", &location, &[], "").await.0, 200);
}
