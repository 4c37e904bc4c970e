//! A str0m client that reaches an engine through its real sockets (UDP, or a connection to its ICE-TCP port) and
//! publishes audio: for the tests of the engine's shell.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::engine::PeerOptions;
use sfu::id::TrackId;
use sfu::peer::PeerEvent;
use sfu::Sfu;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client's one way to the server.
pub enum Link {
    /// A connection to the ICE-TCP port, and the frames read from it so far.
    Tcp(tokio::net::TcpStream, sfu::tcp::Framer),
    Udp(tokio::net::UdpSocket),
}

impl Link {
    pub fn proto(&self) -> Protocol {
        match self {
            Link::Tcp(..) => Protocol::Tcp,
            Link::Udp(_) => Protocol::Udp,
        }
    }

    pub fn local(&self) -> SocketAddr {
        match self {
            Link::Tcp(s, _) => s.local_addr().unwrap(),
            Link::Udp(s) => s.local_addr().unwrap(),
        }
    }

    pub async fn send(&mut self, data: &[u8], to: SocketAddr) {
        match self {
            Link::Tcp(s, _) => {
                let mut out = Vec::new();
                sfu::tcp::frame(data, &mut out);
                s.write_all(&out).await.unwrap();
            }
            Link::Udp(s) => {
                s.send_to(data, to).await.unwrap();
            }
        }
    }

    /// What arrived within `wait`: (source, packets).
    pub async fn recv(&mut self, wait: Duration, buf: &mut [u8], server: SocketAddr) -> Vec<(SocketAddr, Vec<u8>)> {
        match self {
            Link::Tcp(s, framer) => match tokio::time::timeout(wait, s.read(buf)).await {
                Ok(Ok(0)) => panic!("the server closed the ICE-TCP connection"),
                Ok(Ok(n)) => {
                    framer.push(&buf[..n]);
                    let mut got = Vec::new();
                    while let Some(frame) = framer.next_frame().unwrap() {
                        got.push((server, frame.to_vec()));
                    }
                    got
                }
                Ok(Err(e)) => panic!("read: {e}"),
                Err(_) => Vec::new(),
            },
            Link::Udp(s) => match tokio::time::timeout(wait, s.recv_from(buf)).await {
                Ok(Ok((n, from))) => vec![(from, buf[..n].to_vec())],
                Ok(Err(e)) => panic!("recv: {e}"),
                Err(_) => Vec::new(),
            },
        }
    }
}

/// Connect a client over `link` to `server` (the address the client dials), publish 100 audio packets, and wait
/// until the engine counted at least 50 of them.
pub async fn connect_and_publish(sfu: &Sfu, link: Link, server: SocketAddr) {
    let rtp_before = sfu.stats().rtp_in;
    let counted = || sfu.stats().rtp_in >= rtp_before + 50;
    publish_audio(sfu, link, server, 100, |_| {}, counted).await;
}

/// Connect a client over `link` to `server`, publish up to `packets` audio packets (one per 20 ms), tell `published`
/// the engine's id of the track, and return once all are sent and `done()`, or fail after 20 s.
pub async fn publish_audio(
    sfu: &Sfu,
    mut link: Link,
    server: SocketAddr,
    packets: u32,
    mut published: impl FnMut(TrackId),
    done: impl Fn() -> bool,
) {
    let (peer, mut events) = sfu
        .create_peer(PeerOptions {
            can_publish: true,
            can_subscribe: true,
            label: "client".into(),
            client_offers: false,
            relay: false,
        })
        .await
        .unwrap();
    let local = link.local();
    let mut client = Rtc::builder().build(Instant::now());
    let candidate = match link.proto() {
        Protocol::Tcp => Candidate::builder().tcp().host(local).tcptype(TcpType::Active).build().unwrap(),
        _ => Candidate::host(local, "udp").unwrap(),
    };
    client.add_local_candidate(candidate);
    let mut change = client.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    sfu.offer(peer, 1, offer.to_sdp_string()).await.unwrap();
    let answer = loop {
        if let PeerEvent::Answer { id: 1, sdp } =
            tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap()
        {
            break sdp;
        }
    };
    if link.proto() == Protocol::Tcp {
        assert!(answer.contains(" tcp ") && answer.contains("tcptype passive"), "ICE-TCP offered: {answer}");
    }
    client.sdp_api().accept_answer(pending, SdpAnswer::from_sdp_string(&answer).unwrap()).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 16 * 1024];
    let (mut connected, mut server_connected) = (false, false);
    let mut sent = 0u32;
    let mut next_frame = Instant::now();
    let pt = client.media(mid).unwrap().remote_pts()[0];
    loop {
        assert!(Instant::now() < deadline, "no media within 20 s (client connected {connected})");
        while let Ok(ev) = events.try_recv() {
            match ev {
                PeerEvent::Connected => server_connected = true,
                PeerEvent::TrackPublished { track, .. } => published(track),
                _ => {}
            }
        }
        if server_connected && sent >= packets && done() {
            break;
        }
        if connected && sent < packets && Instant::now() >= next_frame {
            let now = Instant::now();
            let writer = client.writer(mid).unwrap();
            writer.write(pt, now, str0m::media::MediaTime::from_90khz(u64::from(sent) * 960), vec![0xf8; 40]).unwrap();
            sent += 1;
            next_frame = now + Duration::from_millis(20);
        }
        let timeout = loop {
            match client.poll_output().unwrap() {
                Output::Timeout(t) => break t,
                Output::Transmit(t) => {
                    assert_eq!(t.proto, link.proto(), "the client has one way out");
                    link.send(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => connected = true,
                Output::Event(_) => {}
            }
        };
        let wait = timeout.min(next_frame).min(Instant::now() + Duration::from_millis(50));
        let got = link.recv(wait.saturating_duration_since(Instant::now()), &mut buf, server).await;
        if got.is_empty() {
            client.handle_input(Input::Timeout(Instant::now())).unwrap();
        }
        for (source, data) in got {
            let proto = link.proto();
            let receive = Receive { proto, source, destination: local, contents: (&data[..]).try_into().unwrap() };
            client.handle_input(Input::Receive(Instant::now(), receive)).unwrap();
        }
    }
    assert!(connected, "ICE and DTLS up on the client's side");
}
