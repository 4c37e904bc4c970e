//! `media-tests`: the command line around the library — run one test client, or mint a token.
//!
//! The real work is in the library; this binary parses arguments, runs a [`Client`] for a
//! while and prints its report as the last line of stdout, so any test harness (or a person)
//! can drive a participant without linking Rust code. Logs go to stderr (`RUST_LOG`).
//!
//! Exit status: 0 on success; 1 on an error (the chain is printed to stderr); 3 when the
//! server ended the session before `--duration` was up (the report is still printed).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use media_tests::client::{Client, ClientEvent, ClientOptions};
use media_tests::frame::VideoConfig;
use media_tests::plot::{timeline_svg, PlotBin, Timeline};
use media_tests::relay::{Relay, RelayConfig};
use media_tests::scenario::{evaluate, Scenario};
use media_tests::server::CourierProcess;
use media_tests::signal::MediaKind;
use media_tests::simulcast::SimulcastConfig;
use media_tests::tcp_relay::{TcpRelay, TcpRelayConfig};
use media_tests::token::{mint_token, TokenRequest};
use tracing::{debug, info, warn};

#[derive(Parser)]
#[command(name = "media-tests", about = "Courier media test client", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a room, publish synthetic media, receive for a while, print the report.
    Client(ClientArgs),
    /// Print an HS256 access token.
    Token(TokenArgs),
    /// Play a scenario file against a courier server this command starts: impairment relays, clients, metrics,
    /// thresholds. Prints a table; writes the JSON report; exits 1 when a threshold fails.
    Run(RunArgs),
    /// Load a server with cheap publishers and subscribers (no decoding) and measure it: packets/s, the server's
    /// CPU and RSS, forwarded packets per CPU-second, loss, added delay. Prints a table; writes a JSON report.
    Load(LoadArgs),
    /// Publish synthetic Opus and VP8 to a WHIP endpoint (http://host:port/whip) for a while, DELETE the resource,
    /// print the report.
    Whip(WhipArgs),
    /// Play from a WHEP endpoint (http://host:port/whep[?participant=ID]) for a while, DELETE the resource, print
    /// the report (frames complete, corrupt, missing; audio decoded). Exits 1 when no video arrived.
    Whep(WhipArgs),
}

#[derive(clap::Args)]
struct WhipArgs {
    /// The WHIP or WHEP endpoint URL.
    #[arg(long)]
    url: String,
    /// Access token (see the `token` command), sent as the Bearer token.
    #[arg(long)]
    token: String,
    /// WHIP: what to publish, a comma-separated list of `audio`, `video`.
    #[arg(long, value_delimiter = ',', value_parser = parse_kind, default_value = "audio,video")]
    publish: Vec<MediaKind>,
    /// WHIP: publish video as three synthetic simulcast layers q/h/f.
    #[arg(long)]
    simulcast: bool,
    /// How long to stay, e.g. 10s, 1500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Local UDP address for ICE (default: 127.0.0.1:0 for a loopback server, else 0.0.0.0:0).
    #[arg(long)]
    udp_addr: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadTarget {
    /// The courier binary (--courier-bin).
    Courier,
    /// Janus's videoroom (Debian `janus`; in a network namespace).
    Janus,
    /// Pion's broadcast example (built by media-tests/bench/pion-broadcast.sh; in a network namespace).
    Pion,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The server under test.
    #[arg(long, value_enum, default_value = "courier")]
    target: LoadTarget,
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers per room (each receives every publisher of its room).
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// The measured window, after every subscriber receives and the warm-up.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// Publish audio only (an audio room).
    #[arg(long)]
    audio_only: bool,
    /// Publish audio beside video.
    #[arg(long, conflicts_with = "audio_only")]
    with_audio: bool,
    /// Video bitrate per publisher, kbps (30 frames/s).
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    /// Largest video RTP payload, bytes.
    #[arg(long, default_value_t = 1100)]
    packet_bytes: usize,
    /// Publishers pace each frame's packets at this multiple of the video bitrate, as a browser does at 2.5
    /// (default: a frame's packets leave at once, the harder case for a fan-out).
    #[arg(long)]
    pace_publishers: Option<f64>,
    /// Run the server in a network namespace joined by a veth pair (root; always for janus and pion).
    #[arg(long)]
    netns: bool,
    /// Third octet of the namespace's 10.77.X.0/30.
    #[arg(long, default_value_t = 77)]
    subnet: u8,
    /// Pin the server to this core (taskset). Pin the generator yourself: `taskset -c 1 media-tests load …`.
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Courier's runtime threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Courier: run this many nodes as one cluster (each of a region of its own, so the room spans them all:
    /// publishers on the first, subscribers spread over all), on `COURIER_TEST_REDIS_URL` and
    /// `COURIER_TEST_POSTGRES_URL` (`scripts/redis.sh start DIR`, `scripts/postgres.sh start DIR`). CPU and RSS are
    /// the nodes' sums.
    #[arg(long, default_value_t = 1)]
    cluster_nodes: usize,
    /// Courier: where each subscriber's bandwidth estimate starts, kbit/s (default: the server's, 1000). A
    /// single-layer stream above it is paused until probing proves the link (see docs/benchmarks.md, "Load").
    #[arg(long)]
    bwe_initial_kbps: Option<u32>,
    /// The courier binary (default: $COURIER_BIN, else `courier` next to this program).
    #[arg(long)]
    courier_bin: Option<std::path::PathBuf>,
    /// The server binary for janus or pion (default: `janus` on PATH; the script's build for pion).
    #[arg(long)]
    server_bin: Option<std::path::PathBuf>,
    /// The server's configuration directory (janus: written by media-tests/bench/janus.sh).
    #[arg(long)]
    server_conf: Option<std::path::PathBuf>,
    /// Subscribers negotiating at once.
    #[arg(long, default_value_t = 16)]
    parallel_joins: usize,
    /// How subscribers reach Courier: `udp`, `tcp` (ICE-TCP to its passive candidate, RFC 4571 framing), or `turn`
    /// (relayed through the TURN server of `joined.ice_servers` over UDP; start Courier's with COURIER_TURN_ENABLED).
    #[arg(long, default_value = "udp", value_parser = ["udp", "tcp", "turn"])]
    subscriber_transport: String,
    /// Where the JSON report goes (default: stdout's last line only).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The scenario (TOML; see media-tests/scenarios/).
    scenario: std::path::PathBuf,
    /// The courier binary (default: $COURIER_BIN, else `courier` next to this program).
    #[arg(long)]
    courier_bin: Option<std::path::PathBuf>,
    /// Where the JSON report goes (default: media-tests-reports/<name>.json).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum ReportFormat {
    /// One JSON line (the last line of stdout).
    Json,
    /// Indented JSON (for people; not the last-line contract).
    Pretty,
}

/// `--report`: `json` / `pretty` (the stdout format), or any other value: a path the interop matrix's report is
/// written to (`interop/README.md`; stdout then carries the usual JSON line).
#[derive(Clone, PartialEq, Eq, Debug)]
enum ReportArg {
    Format(ReportFormat),
    Interop(std::path::PathBuf),
}

fn parse_report(s: &str) -> Result<ReportArg, String> {
    Ok(match s {
        "json" => ReportArg::Format(ReportFormat::Json),
        "pretty" => ReportArg::Format(ReportFormat::Pretty),
        "" => return Err("empty".to_owned()),
        path => ReportArg::Interop(path.into()),
    })
}

#[derive(clap::Args)]
struct ClientArgs {
    /// Signaling URL, e.g. ws://127.0.0.1:7880/rtc.
    #[arg(long)]
    url: String,
    /// Access token (see the `token` command).
    #[arg(long)]
    token: String,
    /// What to publish: a comma-separated list of `audio`, `video` (default: nothing).
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    publish: Vec<MediaKind>,
    /// How long to stay, e.g. 10s, 1500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Time between video keyframes (at most the clip's 5 s: its end brings a keyframe too).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    keyframe_interval: Duration,
    /// Video bitrate in kbps (filler on top of the VP8 clip's own ~140 kbps; never below that).
    #[arg(long, default_value_t = 700)]
    video_kbps: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Largest video RTP payload in bytes (VP8 descriptor included).
    #[arg(long, default_value_t = media_tests::frame::MAX_RTP_PAYLOAD)]
    max_rtp_payload: usize,
    /// Report format (`json`, `pretty`), or a path: write the interop matrix's report there (interop/README.md).
    #[arg(long, default_value = "json", value_parser = parse_report)]
    report: ReportArg,
    /// Interop window start, unix ms (units sent/received in [start, end) count as in the window).
    #[arg(long, default_value_t = 0)]
    window_start: u64,
    /// Interop window end, unix ms.
    #[arg(long, default_value_t = 0)]
    window_end: u64,
    /// Join with auto_subscribe=false.
    #[arg(long)]
    no_auto_subscribe: bool,
    /// Stop draining received media after this long (a subscriber that stops reading).
    #[arg(long, value_parser = parse_duration)]
    stop_reading_after: Option<Duration>,
    /// Local UDP address for ICE (default: 127.0.0.1:0 for a loopback server, else 0.0.0.0:0).
    #[arg(long)]
    udp_addr: Option<std::net::SocketAddr>,
    /// Send media to this address instead of the server's ICE candidate (an impairment relay):
    /// the server's candidates are rewritten to it.
    #[arg(long)]
    udp_via: Option<std::net::SocketAddr>,
    /// Publish video as three synthetic simulcast layers q/h/f (320x180, 640x360, 1280x720).
    #[arg(long)]
    simulcast: bool,
    /// Simulcast layer bitrates in kbps, q,h,f (with --simulcast).
    #[arg(long, value_delimiter = ',', default_values_t = media_tests::simulcast::DEFAULT_LAYER_KBPS)]
    layer_kbps: Vec<u32>,
    /// Send track_settings with this render size (WIDTHxHEIGHT) for every video track received.
    #[arg(long, value_parser = parse_size)]
    max_size: Option<(u16, u16)>,
    /// Negotiate TWCC (the server's bandwidth estimation needs it; off by default).
    #[arg(long)]
    twcc: bool,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// API key (`iss` and header `kid`).
    #[arg(long)]
    key: String,
    /// API secret.
    #[arg(long)]
    secret: String,
    /// Room.
    #[arg(long)]
    room: String,
    /// Identity (`sub`).
    #[arg(long)]
    identity: String,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds (or a duration like 1h).
    #[arg(long, default_value = "3600", value_parser = parse_duration)]
    ttl: Duration,
    /// Deny publishing.
    #[arg(long)]
    no_publish: bool,
    /// Deny subscribing.
    #[arg(long)]
    no_subscribe: bool,
}

fn parse_kind(s: &str) -> Result<MediaKind, String> {
    match s.trim() {
        "audio" => Ok(MediaKind::Audio),
        "video" => Ok(MediaKind::Video),
        other => Err(format!("unknown kind {other:?} (audio or video)")),
    }
}

/// `320x180`.
fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(|| format!("bad size {s:?} (WIDTHxHEIGHT)"))?;
    let parse = |v: &str| v.trim().parse::<u16>().ok().filter(|v| *v > 0).ok_or_else(|| format!("bad size {s:?}"));
    Ok((parse(w)?, parse(h)?))
}

/// `10s`, `1500ms`, `2m`, `1h`, or a plain number of seconds (fractions allowed).
/// `media-tests whip` (`publish`) and `media-tests whep`.
async fn run_whip(args: WhipArgs, publish: bool) -> anyhow::Result<ExitCode> {
    let mut options = ClientOptions::publishing(if publish { &args.publish } else { &[] });
    options.udp_addr = args.udp_addr;
    if args.simulcast && publish {
        options.simulcast = Some(SimulcastConfig::default());
    }
    let mut session = if publish {
        media_tests::whip::publish(&args.url, &args.token, &options).await.context("WHIP publish")?
    } else {
        media_tests::whip::play(&args.url, &args.token, &options).await.context("WHEP play")?
    };
    info!(resource = session.resource(), "resource created");
    session.wait_connected(Duration::from_secs(10)).await.context("connecting")?;
    tokio::time::sleep(args.duration).await;
    let (report, status) = session.stop().await.context("DELETE")?;
    if status != 200 {
        warn!(status, "DELETE was not answered 200");
    }
    println!("{}", serde_json::to_string(&report).context("encoding the report")?);
    let ok = if publish {
        report.published.video_frames_sent > 0 || report.published.audio_packets_sent > 0
    } else {
        report.video().any(|v| v.frames_received > 0)
    };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = number.trim().parse().map_err(|_| format!("bad duration {s:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,media_tests=info".into()),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Token(args) => {
            let req = TokenRequest {
                key: args.key,
                secret: args.secret,
                room: args.room,
                identity: args.identity,
                name: args.name,
                ttl: args.ttl,
                can_publish: !args.no_publish,
                can_subscribe: !args.no_subscribe,
                hidden: false,
            };
            println!("{}", mint_token(&req).context("minting the token")?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(run_client(args))
        }
        Command::Run(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(run_scenario(args))
        }
        Command::Whip(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(run_whip(args, true))
        }
        Command::Whep(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(run_whip(args, false))
        }
        Command::Load(args) => {
            // One thread: the generator stays on the core it is pinned to, and its peers share no locks.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            runtime.block_on(run_load(args))
        }
    }
}

/// The courier binary: `--courier-bin`, else $COURIER_BIN, else `courier` next to this program.
fn courier_bin(flag: Option<std::path::PathBuf>) -> anyhow::Result<std::path::PathBuf> {
    match flag.or_else(|| std::env::var_os("COURIER_BIN").map(Into::into)) {
        Some(b) => Ok(b),
        None => Ok(std::env::current_exe()?.with_file_name("courier")),
    }
}

async fn run_load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    use media_tests::load::{self, netns::Netns, target::Media, Workload};
    let media = match (args.audio_only, args.with_audio) {
        (true, _) => Media { audio: true, video: false },
        (false, with_audio) => Media { audio: with_audio, video: true },
    };
    if args.pace_publishers.is_some_and(|f| !(1.0..=100.0).contains(&f)) {
        anyhow::bail!("--pace-publishers must be between 1 and 100 (a multiple of the video bitrate)");
    }
    let workload = Workload {
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        media,
        video_kbps: args.video_kbps,
        packet_bytes: args.packet_bytes,
        pacing: args.pace_publishers,
        duration: args.duration,
        warmup: args.warmup,
        parallel_joins: args.parallel_joins,
        subscriber_transport: match args.subscriber_transport.as_str() {
            "tcp" => load::peer::Transport::Tcp,
            "turn" => load::peer::Transport::Turn,
            _ => load::peer::Transport::Udp,
        },
    };
    let netns = if args.netns || args.target != LoadTarget::Courier {
        Some(Netns::create(&format!("courier-load{}", args.subnet), args.subnet)?)
    } else {
        None
    };
    let bind: std::net::IpAddr = match &netns {
        Some(ns) => ns.host_addr.into(),
        None => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let target: Box<dyn load::target::Target> = match args.target {
        LoadTarget::Courier => {
            let bin = courier_bin(args.courier_bin)?;
            if args.cluster_nodes > 1 {
                let redis =
                    std::env::var("COURIER_TEST_REDIS_URL").context("--cluster-nodes needs COURIER_TEST_REDIS_URL")?;
                let postgres = std::env::var("COURIER_TEST_POSTGRES_URL")
                    .context("--cluster-nodes needs COURIER_TEST_POSTGRES_URL")?;
                Box::new(load::courier::Courier::start_cluster(
                    &bin,
                    args.workers,
                    args.cluster_nodes,
                    &redis,
                    &postgres,
                )?)
            } else {
                Box::new(load::courier::Courier::start(
                    &bin,
                    netns.as_ref(),
                    args.server_cpu,
                    args.workers,
                    args.bwe_initial_kbps,
                    workload.subscriber_transport == load::peer::Transport::Turn,
                )?)
            }
        }
        LoadTarget::Pion => {
            let bin = match args.server_bin {
                Some(b) => b,
                None => load::pion::build()?,
            };
            let ns = netns.as_ref().context("pion runs in a network namespace")?;
            Box::new(load::pion::PionBroadcast::start(&bin, ns, args.server_cpu)?)
        }
        LoadTarget::Janus => {
            let ns = netns.as_ref().context("janus runs in a network namespace")?;
            let confdir = match args.server_conf {
                Some(c) => c,
                None => {
                    load::janus::write_config(&std::env::temp_dir().join(format!("media-tests-janus{}", args.subnet)))?
                }
            };
            let bin = args.server_bin.clone().unwrap_or_else(|| "janus".into());
            Box::new(load::janus::Janus::start(&bin, &confdir, ns, args.server_cpu).await?)
        }
    };
    let report = load::run(target.as_ref(), &workload, bind).await?;
    drop(target);
    drop(netns);
    println!("{}", load::table(&report));
    let json = serde_json::to_string(&report)?;
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    }
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}

/// The API key the scenario runner gives the server it starts.
const RUN_KEY: &str = "scenario";
const RUN_SECRET: &str = "scenario-secret-long-enough";

async fn run_scenario(args: RunArgs) -> anyhow::Result<ExitCode> {
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {}", args.scenario.display()))?;
    let scenario = Scenario::from_toml(&text)?;
    let bin = courier_bin(args.courier_bin)?;
    let server = CourierProcess::start(&bin, RUN_KEY, RUN_SECRET, &[])?;
    info!(scenario = %scenario.name, url = %server.url, "server started");
    let join_timeout = Duration::from_secs(15);

    // Every relay first, so that the schedules share one start: the scenario's t = 0.
    let http: std::net::SocketAddr = tokio::net::lookup_host(&server.http)
        .await
        .with_context(|| format!("resolving {}", server.http))?
        .next()
        .with_context(|| format!("{} has no address", server.http))?;
    let mut relays = Vec::new();
    let mut signal_relays = Vec::new();
    for (i, p) in scenario.participants.iter().enumerate() {
        let seed = scenario.seed.wrapping_add(i as u64);
        relays.push(if p.impaired() {
            let config =
                RelayConfig::new(server.udp).to_server(p.up_schedule()).to_client(p.down_schedule()).seed(seed);
            Some(Relay::start(config).await?)
        } else {
            None
        });
        signal_relays.push(match &p.signal {
            Some(signal) => {
                let config = TcpRelayConfig::new(http)
                    .to_server(signal.up_schedule())
                    .to_client(signal.down_schedule())
                    .seed(seed);
                Some(TcpRelay::start(config).await?)
            }
            None => None,
        });
    }
    let started = std::time::Instant::now();
    let started_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let mut clients = Vec::new();
    for ((p, relay), signal_relay) in scenario.participants.iter().zip(&relays).zip(&signal_relays) {
        let url = match signal_relay {
            Some(r) => r.url_via(&server.url)?,
            None => server.url.clone(),
        };
        let mut options = ClientOptions::publishing(&p.publish);
        options.udp_via = relay.as_ref().map(Relay::addr);
        options.twcc = p.twcc;
        if let Some(kbps) = p.video_kbps {
            options.video.bitrate_bps = kbps * 1000;
        }
        if p.simulcast {
            options.simulcast = Some(SimulcastConfig::default());
        }
        let token = server.token(scenario.room(), &p.identity)?;
        let client = Client::connect(&url, &token, options).await.with_context(|| format!("{} joins", p.identity))?;
        client.wait_connected(join_timeout).await.with_context(|| format!("{} connects", p.identity))?;
        clients.push(client);
    }
    let rest = Duration::from_secs_f64(scenario.duration_s).saturating_sub(started.elapsed());
    tokio::time::sleep(rest).await;
    let cpu = server.cpu_time();
    let rss_kib = server.rss_kib();
    let metrics = server.metrics().unwrap_or_default();
    let mut reports = Vec::new();
    for (c, p) in clients.into_iter().zip(&scenario.participants) {
        reports.push(c.leave().await.with_context(|| format!("{} leaves", p.identity))?);
    }
    let mut links = Vec::new();
    for (relay, p) in relays.into_iter().zip(&scenario.participants) {
        if let Some(relay) = relay {
            let s = relay.stop().await;
            links.push(serde_json::json!({
                "identity": p.identity,
                "up": link_json(&s.to_server),
                "down": link_json(&s.to_client),
            }));
        }
    }
    let mut signal_links = Vec::new();
    for (relay, p) in signal_relays.into_iter().zip(&scenario.participants) {
        if let Some(relay) = relay {
            let s = relay.stop().await;
            signal_links.push(serde_json::json!({
                "identity": p.identity,
                "connections": s.connections,
                "up": stream_json(&s.to_server, s.client_reads_paused),
                "down": stream_json(&s.to_client, s.server_reads_paused),
            }));
        }
    }
    drop(server);

    let outcome = evaluate(&scenario, &reports);
    print!("{}\n{}", scenario.name, outcome.table());
    let wanted = |k: &str| k.contains("nack") || k.contains("pli") || k.contains("keyframe") || k.contains("rtx");
    let server_counters: std::collections::BTreeMap<_, _> = metrics.into_iter().filter(|(k, _)| wanted(k)).collect();
    let report = serde_json::json!({
        "scenario": scenario,
        "pass": outcome.pass(),
        "outcome": outcome,
        "server": { "cpu_s": cpu.as_secs_f64(), "rss_kib": rss_kib, "counters": server_counters },
        "relays": links,
        "signal_relays": signal_links,
        "reports": reports,
    });
    let out = args
        .out
        .unwrap_or_else(|| std::path::PathBuf::from("media-tests-reports").join(format!("{}.json", scenario.name)));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?).with_context(|| format!("writing {}", out.display()))?;
    println!("report: {}", out.display());
    let plot = out.with_extension("svg");
    std::fs::write(&plot, timeline_plot(&scenario, &reports, started_unix_ms))
        .with_context(|| format!("writing {}", plot.display()))?;
    println!("plot: {}", plot.display());
    Ok(if outcome.pass() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The SVG timeline of a run: per received video, its layer and freezes and its bitrate, loss and delay per bin;
/// the impairment steps as marks.
fn timeline_plot(scenario: &Scenario, reports: &[media_tests::report::Report], start_unix_ms: u64) -> String {
    let secs = |at_ms: u64| at_ms.saturating_sub(start_unix_ms) as f64 / 1000.0;
    let name = |pid: &str| {
        reports.iter().find(|r| r.participant_id == pid).map_or_else(|| pid.to_string(), |r| r.identity.clone())
    };
    let mut timelines = Vec::new();
    for r in reports {
        for v in r.video() {
            timelines.push(Timeline {
                label: format!("{} ← {}", r.identity, name(&v.participant_id)),
                layers: v.layer_timeline.iter().map(|c| (secs(c.at_ms), c.layer)).collect(),
                freezes: v
                    .freeze_timeline
                    .iter()
                    .map(|f| (secs(f.at_ms) - f.ms as f64 / 1000.0, f.ms as f64 / 1000.0))
                    .collect(),
                bins: (0..v.series.kbps.len())
                    .map(|i| PlotBin {
                        t: (v.series.start_ms as f64 + (i as u64 * v.series.bin_ms) as f64 - start_unix_ms as f64)
                            / 1000.0,
                        kbps: v.series.kbps[i],
                        loss_pct: v.series.loss_pct.get(i).copied().flatten(),
                        delay_ms: v.series.delay_ms_p50.get(i).copied().flatten(),
                    })
                    .collect(),
                bin_s: v.series.bin_ms as f64 / 1000.0,
            });
        }
    }
    let mut marks = Vec::new();
    for p in &scenario.participants {
        let signal = p.signal.clone().unwrap_or_default();
        for (dir, steps) in [("up", &p.up), ("down", &p.down), ("signal up", &signal.up), ("signal down", &signal.down)]
        {
            for step in steps {
                marks.push((step.at_s, format!("{} {dir}: {}", p.identity, step.summary())));
            }
        }
    }
    timeline_svg(&scenario.name, scenario.duration_s, &marks, &timelines)
}

fn link_json(s: &media_tests::relay::LinkStats) -> serde_json::Value {
    serde_json::json!({
        "datagrams_in": s.datagrams_in,
        "datagrams_out": s.datagrams_out,
        "lost": s.datagrams_lost,
        "lost_in_bursts": s.datagrams_lost_in_bursts,
        "lost_in_outage": s.datagrams_lost_in_outage,
        "queue_drops": s.datagrams_dropped,
        "reordered": s.datagrams_reordered,
        "duplicated": s.datagrams_duplicated,
        "max_queue_delay_ms": s.max_queue_delay.as_secs_f64() * 1000.0,
    })
}

/// The counters of one direction of a signaling relay (a byte stream: nothing is dropped).
fn stream_json(s: &media_tests::relay::LinkStats, reads_paused: u64) -> serde_json::Value {
    serde_json::json!({
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "retransmitted": s.datagrams_retransmitted,
        "reads_paused": reads_paused,
        "max_queue_delay_ms": s.max_queue_delay.as_secs_f64() * 1000.0,
    })
}

async fn run_client(args: ClientArgs) -> anyhow::Result<ExitCode> {
    if args.fps == 0 {
        bail!("--fps must be at least 1");
    }
    let mut options = ClientOptions::publishing(&args.publish);
    options.auto_subscribe = !args.no_auto_subscribe;
    options.udp_addr = args.udp_addr;
    options.udp_via = args.udp_via;
    options.max_video_size = args.max_size;
    options.twcc = args.twcc;
    options.window = media_tests::interop_report::Window { start_ms: args.window_start, end_ms: args.window_end };
    if args.simulcast {
        if !args.publish.contains(&MediaKind::Video) {
            bail!("--simulcast needs --publish video");
        }
        let kbps: [u32; 3] = args.layer_kbps.as_slice().try_into().context("--layer-kbps takes three numbers")?;
        options.simulcast = Some(SimulcastConfig::with_kbps(kbps));
    }
    options.video = VideoConfig {
        fps: args.fps,
        bitrate_bps: args.video_kbps.saturating_mul(1000),
        keyframe_interval: args.keyframe_interval,
        max_rtp_payload: args.max_rtp_payload,
    };
    let interop_path = match &args.report {
        ReportArg::Interop(path) => Some(path.clone()),
        ReportArg::Format(_) => None,
    };
    let mut interop = InteropLog::default();
    let mut client = match Client::connect(&args.url, &args.token, options).await {
        Ok(c) => c,
        Err(e) => {
            if let Some(path) = &interop_path {
                interop.closed_early = Some(format!("join failed: {e}"));
                interop.errors.push(format!("join failed: {e}"));
                interop.write(path, None)?;
            }
            return Err(e).with_context(|| format!("joining via {}", args.url));
        }
    };
    interop.joined_ms = media_tests::client::now_ms();

    let end = tokio::time::Instant::now() + args.duration;
    let stop_reading_at = args.stop_reading_after.map(|d| tokio::time::Instant::now() + d);
    let mut closed_early = false;
    loop {
        let stop_reading = async {
            match stop_reading_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = stop_reading, if stop_reading_at.is_some_and(|at| at > tokio::time::Instant::now()) => {
                info!("stopping media reads");
                client.set_media_reading(false);
            }
            event = client.next_event() => match event {
                Some(ClientEvent::Closed { code, reason, leave_reason }) => {
                    warn!(?code, %reason, ?leave_reason, "session ended by the server");
                    interop.closed_early = Some(format!("closed: code {code:?} {reason:?} leave {leave_reason:?}"));
                    closed_early = true;
                    break;
                }
                Some(ClientEvent::Error { code, message, req_type }) => {
                    warn!(%code, %message, ?req_type, "error");
                    interop.errors.push(format!("{code}: {message} ({req_type:?})"));
                }
                Some(event) => {
                    debug!(?event, "event");
                    interop.event(&event);
                }
                None => {
                    interop.closed_early.get_or_insert_with(|| "event stream ended".to_owned());
                    closed_early = true;
                    break;
                }
            },
        }
    }
    let participant_id = client.participant_id().to_owned();
    let units = client.units_handle();
    let left = client.leave().await;
    if let Some(path) = &interop_path {
        interop.participant_id = participant_id;
        if let Err(e) = &left {
            interop.errors.push(format!("leaving: {e}"));
        }
        let units = units.lock().unwrap_or_else(|e| e.into_inner()).clone();
        interop.write(path, Some(&units))?;
    }
    let report = left.context("leaving")?;
    let line = match args.report {
        ReportArg::Format(ReportFormat::Pretty) => serde_json::to_string_pretty(&report),
        _ => serde_json::to_string(&report),
    }
    .context("encoding the report")?;
    println!("{line}");
    Ok(if closed_early { ExitCode::from(3) } else { ExitCode::SUCCESS })
}

/// The webrtc-rs version (the workspace pins `webrtc = "=0.21.1"`).
const WEBRTC_RS_VERSION: &str = "webrtc-rs 0.21.1";

/// What the client command collects for the interop report besides the unit counters.
#[derive(Default)]
struct InteropLog {
    participant_id: String,
    joined_ms: u64,
    states: Vec<(u64, String)>,
    closed_early: Option<String>,
    errors: Vec<String>,
    /// Own tracks: (mid, kind, track id) from `track_published`.
    own: Vec<(String, MediaKind, String)>,
}

impl InteropLog {
    fn event(&mut self, event: &ClientEvent) {
        match event {
            ClientEvent::ConnectionState(state) => self.states.push((media_tests::client::now_ms(), state.clone())),
            ClientEvent::TrackPublished { track, own: true, .. } => {
                self.own.push((track.mid.clone().unwrap_or_default(), track.kind, track.id.clone()))
            }
            _ => {}
        }
    }

    fn write(&self, path: &std::path::Path, units: Option<&media_tests::interop_report::Units>) -> anyhow::Result<()> {
        use media_tests::interop_report::{unit_name, InteropReport, ReceivedTrack, SentTrack};
        let mut sent = Vec::new();
        if let Some(u) = units {
            for (mid, kind, track_id) in &self.own {
                let c = match kind {
                    MediaKind::Audio => u.sent_audio,
                    MediaKind::Video => u.sent_video,
                };
                sent.push(SentTrack {
                    mid: mid.clone(),
                    kind: *kind,
                    track_id: track_id.clone(),
                    units: unit_name(*kind).to_owned(),
                    window: c.window,
                    total: c.total,
                });
            }
        }
        let report = InteropReport {
            stack: "webrtc-rs".to_owned(),
            stack_version: WEBRTC_RS_VERSION.to_owned(),
            participant_id: self.participant_id.clone(),
            joined_ms: self.joined_ms,
            connected_ms: self.states.iter().find(|(_, s)| s == "connected").map(|(t, _)| *t),
            states: self.states.clone(),
            closed_early: self.closed_early.clone(),
            sent,
            received: units.map(|u| u.received.iter().map(ReceivedTrack::from_units).collect()).unwrap_or_default(),
            errors: self.errors.clone(),
        };
        let text = serde_json::to_string_pretty(&report).context("encoding the interop report")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("10s", Some(Duration::from_secs(10))),
            ("1500ms", Some(Duration::from_millis(1500))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("3600", Some(Duration::from_secs(3600))),
            ("0.5s", Some(Duration::from_millis(500))),
            ("", None),
            ("s", None),
            ("10x", None),
            ("-1s", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input).ok(), *expected, "{input:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("320x180"), Ok((320, 180)));
        assert_eq!(parse_size(" 1280X720 "), Ok((1280, 720)));
        for bad in ["320", "x180", "0x180", "320x", "70000x1", "axb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn simulcast_flags() {
        let base = ["media-tests", "client", "--url", "ws://127.0.0.1:1/rtc", "--token", "t", "--publish", "video"];
        let cli = Cli::try_parse_from(base).unwrap();
        let Command::Client(args) = cli.command else { panic!("not client") };
        assert!(!args.simulcast && !args.twcc);
        assert_eq!(args.layer_kbps, vec![150, 500, 1500]);
        assert_eq!(args.max_size, None);
        let mut argv = base.to_vec();
        argv.extend([
            "--simulcast",
            "--layer-kbps",
            "100,300,900",
            "--max-size",
            "320x180",
            "--udp-via",
            "127.0.0.1:4000",
            "--twcc",
        ]);
        let Command::Client(args) = Cli::try_parse_from(argv).unwrap().command else { panic!("not client") };
        assert!(args.simulcast && args.twcc);
        assert_eq!(args.layer_kbps, vec![100, 300, 900]);
        assert_eq!(args.max_size, Some((320, 180)));
        assert_eq!(args.udp_via, Some("127.0.0.1:4000".parse().unwrap()));
    }

    #[test]
    fn kinds() {
        assert_eq!(parse_kind("audio"), Ok(MediaKind::Audio));
        assert_eq!(parse_kind(" video"), Ok(MediaKind::Video));
        assert!(parse_kind("data").is_err());
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "media-tests",
            "client",
            "--url",
            "ws://127.0.0.1:1/rtc",
            "--token",
            "t",
            "--publish",
            "audio,video",
            "--duration",
            "3s",
            "--keyframe-interval",
            "1s",
            "--report",
            "json",
        ])
        .unwrap();
        let Command::Client(args) = cli.command else { panic!("not client") };
        assert_eq!(args.publish, vec![MediaKind::Audio, MediaKind::Video]);
        assert_eq!(args.duration, Duration::from_secs(3));
        assert_eq!(args.keyframe_interval, Duration::from_secs(1));
        assert_eq!(args.report, ReportArg::Format(ReportFormat::Json));
        let cli = Cli::try_parse_from([
            "media-tests",
            "client",
            "--url",
            "ws://127.0.0.1:1/rtc",
            "--token",
            "t",
            "--window-start",
            "1000",
            "--window-end",
            "2000",
            "--report",
            "/tmp/r.json",
        ])
        .unwrap();
        let Command::Client(args) = cli.command else { panic!("not client") };
        assert_eq!((args.window_start, args.window_end), (1000, 2000));
        assert_eq!(args.report, ReportArg::Interop("/tmp/r.json".into()));
        let cli = Cli::try_parse_from([
            "media-tests",
            "token",
            "--key",
            "k",
            "--secret",
            "s",
            "--room",
            "r",
            "--identity",
            "i",
            "--no-publish",
        ])
        .unwrap();
        let Command::Token(args) = cli.command else { panic!("not token") };
        assert!(args.no_publish && !args.no_subscribe);
        assert_eq!(args.ttl, Duration::from_secs(3600));
    }
}
