//! The canonical scenarios (`media-tests/scenarios/*.toml`): every file parses and makes valid relay schedules, and
//! the short ones that state the product's promises under loss are played in CI through the CLI (`media-tests run`,
//! which starts the real server, a relay per impaired participant, and the clients) and must pass their thresholds:
//! at 2 % and 5 % random loss at least 99 % of video frames complete after retransmission and no freeze over 500 ms;
//! at 10 % no freeze over 500 ms; and at 2, 5 and 10 % the server never pauses the video. Each of them has two
//! subscribers on the same impaired downlink: one without TWCC (no bandwidth estimate) and one with it, as every browser
//! (the server estimates its bandwidth and allocates by it). The others run on demand:
//! `media-tests run media-tests/scenarios/<name>.toml`.

mod courier;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use media_tests::scenario::Scenario;

/// One scenario at a time: two at once on a 2-core machine measure the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

#[test]
fn every_scenario_file_parses() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).expect("scenarios/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).expect("read");
            let s = Scenario::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(Some(s.name.as_str()), path.file_stem().and_then(|n| n.to_str()), "named after its file");
            for p in &s.participants {
                let _ = (p.up_schedule(), p.down_schedule());
                if let Some(signal) = &p.signal {
                    let _ = (signal.up_schedule(), signal.down_schedule());
                }
            }
            names.push(s.name);
        }
    }
    names.sort();
    for want in [
        "clean",
        "loss-2",
        "loss-5",
        "loss-10",
        "loss-20",
        "burst-10",
        "jitter-50",
        "bandwidth-step",
        "reorder",
        "signal-outage",
    ] {
        assert!(names.iter().any(|n| n == want), "scenario {want} missing: {names:?}");
    }
}

/// Plays `name` through the CLI; its exit status is the verdict on the thresholds. Each impaired subscriber's relay
/// must have dropped more than `min_lost` datagrams.
fn play(name: &str, min_lost: u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir = std::env::temp_dir().join(format!("courier-scenario-{}-{name}", std::process::id()));
    let report = out_dir.join(format!("{name}.json"));
    let output = Command::new(courier::media_tests_bin())
        .arg("run")
        .arg(scenarios_dir().join(format!("{name}.toml")))
        .arg("--courier-bin")
        .arg(courier::courier_bin())
        .arg("--out")
        .arg(&report)
        .output()
        .expect("media-tests run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the JSON report is written")).expect("JSON");
    let _ = std::fs::remove_dir_all(&out_dir);
    assert_eq!(json["pass"], output.status.success(), "the exit status says what the report says");
    assert!(
        output.status.success(),
        "{name} failed its thresholds:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The relays did impair the paths: the thresholds were met under loss, not on a clean link.
    let relays = json["relays"].as_array().expect("relays");
    assert_eq!(relays.len(), 2, "one relay per impaired subscriber");
    for relay in relays {
        let lost = relay["down"]["lost"].as_u64().expect("relay counters");
        assert!(lost > min_lost, "a relay dropped only {lost} datagrams");
    }
}

#[test]
fn two_percent_loss_keeps_video_whole_and_unpaused() {
    play("loss-2", 15);
}

#[test]
fn five_percent_loss_keeps_video_whole() {
    play("loss-5", 50);
}

#[test]
fn ten_percent_loss_has_no_long_freeze() {
    play("loss-10", 50);
}
