//! Clients that vanish without a word (SIGKILL: no `leave`, no DTLS close) leave nothing behind: the server's
//! participant, peer, track and subscription counts all return to zero — after one disconnect, and after a storm.

mod courier;

use std::time::{Duration, Instant};

use courier::{CliClient, Courier};

fn wait_for(server: &Courier, metric: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric(metric) != value {
        assert!(Instant::now() < deadline, "{metric} never reached {value}: {:?}", server.metrics());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn abrupt_disconnects_free_everything() {
    let server = Courier::start();
    let clients: Vec<CliClient> =
        (0..3).map(|i| CliClient::spawn(&server, "dc", &format!("c{i}"), "audio,video", "60s")).collect();
    wait_for(&server, "courier_sfu_tracks", 6.0);
    wait_for(&server, "courier_sfu_downtracks", 12.0);
    assert_eq!(server.metric("courier_sfu_peers"), 3.0);
    for c in &clients {
        c.signal("KILL");
    }
    let m = server.wait_empty(Duration::from_secs(20));
    for k in [
        "courier_rooms",
        "courier_participants",
        "courier_tracks",
        "courier_sfu_peers",
        "courier_sfu_tracks",
        "courier_sfu_downtracks",
    ] {
        assert_eq!(m[k], 0.0, "{k} after the disconnect: {m:?}");
    }
    drop(clients);

    // A storm: rounds of clients that join, exchange media and are killed.
    let rss_before = server.rss_kib();
    for round in 0..5 {
        let clients: Vec<CliClient> = (0..4)
            .map(|i| CliClient::spawn(&server, &format!("storm{round}"), &format!("s{i}"), "audio,video", "60s"))
            .collect();
        wait_for(&server, "courier_sfu_downtracks", 24.0);
        for c in &clients {
            c.signal("KILL");
        }
        let m = server.wait_empty(Duration::from_secs(20));
        assert_eq!(m["courier_sfu_peers"], 0.0, "round {round}: {m:?}");
        assert_eq!(m["courier_participants"], 0.0, "round {round}: {m:?}");
    }
    println!("server RSS: {rss_before} KiB before the storm, {} KiB after 5 rounds of 4 clients", server.rss_kib());
}
