//! Reaching the engine through its real sockets: a str0m client that has no UDP at all — only an active TCP
//! candidate on a connection it opened to the engine's ICE-TCP port — gets ICE and DTLS up and publishes audio the
//! engine receives (frames cross the connection with RFC 4571 length prefixes, written by this test); and a client
//! over UDP reaches an engine bound to 0.0.0.0 that announces a public IP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sfu::engine::PeerOptions;
use sfu::peer::PeerEvent;
use sfu::{Sfu, SfuConfig};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The client's one way to the server.
enum Link {
    /// A connection to the ICE-TCP port, and the frames read from it so far.
    Tcp(tokio::net::TcpStream, sfu::tcp::Framer),
    Udp(tokio::net::UdpSocket),
}

impl Link {
    fn proto(&self) -> Protocol {
        match self {
            Link::Tcp(..) => Protocol::Tcp,
            Link::Udp(_) => Protocol::Udp,
        }
    }

    fn local(&self) -> SocketAddr {
        match self {
            Link::Tcp(s, _) => s.local_addr().unwrap(),
            Link::Udp(s) => s.local_addr().unwrap(),
        }
    }

    async fn send(&mut self, data: &[u8], to: SocketAddr) {
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
    async fn recv(&mut self, wait: Duration, buf: &mut [u8], server: SocketAddr) -> Vec<(SocketAddr, Vec<u8>)> {
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
async fn connect_and_publish(sfu: &Sfu, mut link: Link, server: SocketAddr) {
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

    let rtp_before = sfu.stats().rtp_in;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 16 * 1024];
    let (mut connected, mut server_connected) = (false, false);
    let mut sent = 0u32;
    let mut next_frame = Instant::now();
    let pt = client.media(mid).unwrap().remote_pts()[0];
    loop {
        assert!(Instant::now() < deadline, "no media within 20 s (client connected {connected})");
        while let Ok(ev) = events.try_recv() {
            if matches!(ev, PeerEvent::Connected) {
                server_connected = true;
            }
        }
        if server_connected && sent >= 100 && sfu.stats().rtp_in >= rtp_before + 50 {
            break;
        }
        if connected && sent < 100 && Instant::now() >= next_frame {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_udp_connects_over_tcp_and_publishes() {
    let sfu =
        Sfu::start(SfuConfig { tcp_addr: Some("127.0.0.1:0".parse().unwrap()), workers: 1, ..Default::default() })
            .await
            .unwrap();
    let server = sfu.tcp_addr().expect("an ICE-TCP listener");
    let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    connect_and_publish(&sfu, Link::Tcp(tcp, sfu::tcp::Framer::default()), server).await;
    sfu.shutdown().await;
}

/// Bound to every interface and announcing `public_ip` (a server behind NAT): the client reaches the announced
/// address, and the engine must take its requests as addressed to its one UDP candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_bound_to_every_interface_announces_its_public_ip() {
    let sfu = Sfu::start(SfuConfig {
        udp_addr: "0.0.0.0:0".parse().unwrap(),
        public_ip: Some("127.0.0.1".parse().unwrap()),
        workers: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let server = SocketAddr::from(([127, 0, 0, 1], sfu.local_addr().port()));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    connect_and_publish(&sfu, Link::Udp(udp), server).await;
    sfu.shutdown().await;
}
