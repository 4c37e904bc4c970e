//! Reaching the engine through its real sockets: a str0m client that has no UDP at all — only an active TCP
//! candidate on a connection it opened to the engine's ICE-TCP port — gets ICE and DTLS up and publishes audio the
//! engine receives (frames cross the connection with RFC 4571 length prefixes, written by this test); and a client
//! over UDP reaches an engine bound to 0.0.0.0 that announces a public IP.

mod common;

use std::net::SocketAddr;

use common::client::{connect_and_publish, Link};
use sfu::{Sfu, SfuConfig};

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
