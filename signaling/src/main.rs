//! `courier`: the server binary. The CLI and glue; the work is done in the `signaling` and `sfu` libraries.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use signaling::auth::{mint, TokenRequest};
use signaling::config::{parse_keys, Config, LogFormat, RawConfig, WebRoot};

#[derive(Parser)]
#[command(name = "courier", version, about = "Courier: a WebRTC SFU with an integrated signaling channel")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve(ServeArgs),
    /// Access tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Chat history maintenance (works while the server runs).
    Chat {
        #[command(subcommand)]
        cmd: ChatCmd,
    },
}

#[derive(Subcommand)]
enum ChatCmd {
    /// Erase every message an identity sent, in every conversation, and its receipts (tombstones keep the
    /// sequence numbers).
    EraseIdentity {
        #[arg(long)]
        identity: String,
        /// TOML config file naming the store (also COURIER_CONFIG).
        #[arg(long, env = "COURIER_CONFIG")]
        config: Option<PathBuf>,
        /// Data directory of the SQLite store (default ./courier-data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Apply the configured retention to every conversation now.
    Trim {
        #[arg(long, env = "COURIER_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Development mode: embedded defaults on 127.0.0.1, a development API key kept in the data directory, a
    /// ready-to-use join token printed, and the token endpoint /dev/token.
    #[arg(long)]
    dev: bool,
    /// TOML config file (also COURIER_CONFIG).
    #[arg(long, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP/WebSocket listen address (default 127.0.0.1:7880).
    #[arg(long)]
    http_addr: Option<std::net::SocketAddr>,
    /// The media UDP socket (default 127.0.0.1:7881).
    #[arg(long)]
    udp_addr: Option<std::net::SocketAddr>,
    /// ICE-TCP listener for clients whose UDP is blocked (default: the UDP address, over TCP).
    #[arg(long)]
    ice_tcp_addr: Option<std::net::SocketAddr>,
    /// The IP announced to clients when it differs from the bound one.
    #[arg(long)]
    public_ip: Option<std::net::IpAddr>,
    /// Where data is kept (default ./courier-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory served at / instead of the web demo built into the binary; "" serves no static files.
    // An OsString: clap's PathBuf parser refuses the empty value that turns the demo off.
    #[arg(long, value_parser = clap::builder::OsStringValueParser::new())]
    web_root: Option<std::ffi::OsString>,
    /// API keys, key:secret[,key:secret…].
    #[arg(long)]
    keys: Option<String>,
    /// Media worker tasks (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Log format: text or json.
    #[arg(long)]
    log_format: Option<String>,
    /// TLS certificate chain (PEM): serve https:// and wss:// (with --tls-key). Re-read when it changes.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// PEM file of extra CA certificates trusted for outbound HTTPS (webhooks, the pre-send hook).
    #[arg(long)]
    outbound_ca_file: Option<PathBuf>,
    /// Start the built-in TURN server (UDP and TCP on --turn-addr, TLS on 5349 with the [tls] certificate).
    #[arg(long)]
    turn: bool,
    /// The built-in TURN server's UDP and TCP address (default: the media IP, port 3478).
    #[arg(long)]
    turn_addr: Option<std::net::SocketAddr>,
    /// The host name put in TURN URLs (TLS needs the certificate's name).
    #[arg(long)]
    turn_host: Option<String>,
    /// Join a cluster through this Redis (`redis://…`); chat must then use PostgreSQL.
    #[arg(long)]
    redis_url: Option<String>,
    /// This node's id in the cluster.
    #[arg(long)]
    node_id: Option<String>,
    /// The WebSocket URL other nodes redirect clients to (default ws://<http_addr>/rtc).
    #[arg(long)]
    advertise_url: Option<String>,
    /// The cluster region of this node.
    #[arg(long)]
    region: Option<String>,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a join token.
    Create {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        name: Option<String>,
        /// API key (default: the only configured one, or the development key).
        #[arg(long, env = "COURIER_API_KEY")]
        api_key: Option<String>,
        /// API secret.
        #[arg(long, env = "COURIER_API_SECRET")]
        api_secret: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 6 * 3600)]
        ttl: u64,
        /// A grant, repeatable: `NAME` (true), `NAME=true|false`, or `sources=camera,microphone,screen,screen_audio`.
        /// Names: can_publish, can_subscribe, can_chat, room_admin, room_join, room_create, room_list, hidden.
        #[arg(long = "grant")]
        grant: Vec<String>,
        /// Grants to withhold (shorthand for `--grant NAME=false`): publish, subscribe, chat.
        #[arg(long = "deny", value_delimiter = ',')]
        deny: Vec<String>,
        /// Participant metadata (opaque text, often JSON), shown to the other participants.
        #[arg(long)]
        metadata: Option<String>,
        /// Hidden participant: not shown to others, may not publish.
        #[arg(long)]
        hidden: bool,
        /// Data directory holding the development key (when no key is given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration for a maintenance command: file, environment, `--data-dir`; keys are not needed.
fn maintenance_config(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let file = match &config {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    let env = RawConfig::from_env(|k| std::env::var(k).ok())?;
    let flags = RawConfig { data_dir, ..RawConfig::default() };
    Config::resolve(flags.over(env.over(file)), true)
}

fn chat_command(cmd: ChatCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        match cmd {
            ChatCmd::EraseIdentity { identity, config, data_dir } => {
                let config = maintenance_config(config, data_dir)?;
                let (store, handle) = signaling::open_chat_store(&config).await?;
                let n = store.erase_identity(&identity).await.context("erasing")?;
                handle.close().await;
                println!("erased {n} messages of {identity}");
            }
            ChatCmd::Trim { config, data_dir } => {
                let config = maintenance_config(config, data_dir)?;
                let (store, handle) = signaling::open_chat_store(&config).await?;
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
                // Rooms created with retention "keep" (kept by the server in its data directory) are left whole.
                let kept = signaling::open_room_store(&config).await?.kept_history().await?;
                let keep = |c: &courier_chat::ConversationId| c.as_room().is_some_and(|r| kept.contains(r));
                let (visited, removed) = signaling::jobs::apply_retention(&*store, &config.chat, &keep, now).await?;
                handle.close().await;
                println!("{visited} conversations, {removed} messages removed");
            }
        }
        Ok(())
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(args) => serve(args),
        Cmd::Chat { cmd } => chat_command(cmd),
        Cmd::Token {
            cmd:
                TokenCmd::Create { room, identity, name, api_key, api_secret, ttl, grant, deny, metadata, hidden, data_dir },
        } => {
            let (key, secret) = match (api_key, api_secret) {
                (Some(k), Some(s)) => (k, s),
                (None, None) => dev_keys(&data_dir.unwrap_or_else(|| PathBuf::from("courier-data")), false)?
                    .into_iter()
                    .next()
                    .context("no development key; pass --api-key and --api-secret")?,
                _ => anyhow::bail!("give both --api-key and --api-secret"),
            };
            if secret.is_empty() {
                anyhow::bail!("--api-secret must not be empty");
            }
            let mut req = TokenRequest {
                name,
                ttl: Duration::from_secs(ttl),
                metadata,
                hidden,
                ..TokenRequest::new(&room, &identity)
            };
            for d in &deny {
                req.apply_grant(&format!("{d}=false")).map_err(|e| anyhow::anyhow!("--deny {d}: {e}"))?;
            }
            for g in &grant {
                req.apply_grant(g).map_err(|e| anyhow::anyhow!("--grant {g}: {e}"))?;
            }
            println!("{}", mint(&key, &secret, &req));
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    let env = RawConfig::from_env(|k| std::env::var(k).ok())?;
    let flags = RawConfig {
        http_addr: args.http_addr,
        udp_addr: args.udp_addr,
        ice_tcp_addr: args.ice_tcp_addr,
        ice_tcp: None,
        public_ip: args.public_ip,
        data_dir: args.data_dir,
        web_root: args.web_root.map(PathBuf::from),
        workers: args.workers,
        bwe_initial_kbps: None,
        udp_gso: None,
        max_message_bytes: None,
        log_format: args.log_format,
        keys: args.keys.as_deref().map(parse_keys).transpose()?,
        chat: None,
        drain_timeout_secs: None,
        limits: None,
        rooms: None,
        webhooks: None,
        tls: Some(signaling::config::RawTlsConfig { cert_file: args.tls_cert, key_file: args.tls_key }),
        outbound_ca_file: args.outbound_ca_file,
        turn: Some(signaling::config::RawTurnConfig {
            enabled: args.turn.then_some(true),
            addr: args.turn_addr,
            host: args.turn_host,
            ..Default::default()
        }),
        cluster: Some(signaling::config::RawClusterConfig {
            redis_url: args.redis_url,
            node_id: args.node_id,
            advertise_url: args.advertise_url,
            region: args.region,
            full_participants: None,
        }),
    };
    let mut config = Config::resolve(flags.over(env.over(file)), args.dev)?;
    init_tracing(config.log_format);
    if config.dev && config.keys.is_empty() {
        config.keys = dev_keys(&config.data_dir, true)?;
    }
    let workers = config.workers;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let dev = config.dev;
        let drain_timeout = config.drain_timeout;
        let keys = config.keys.clone();
        let web_root = config.web_root.clone();
        let server = signaling::Server::start(config).await?;
        match &web_root {
            WebRoot::Embedded => tracing::info!(url = %format_args!("http://{}/", server.http_addr), "web demo (built in)"),
            WebRoot::Dir(dir) => tracing::info!(url = %format_args!("http://{}/", server.http_addr), dir = %dir.display(), "static files"),
            WebRoot::Off => tracing::info!("no static files (web_root is empty)"),
        }
        if dev {
            let (k, s) = keys.iter().min_by_key(|(k, _)| k.as_str()).expect("dev mode has a key");
            let token = mint(
                k,
                s,
                &TokenRequest {
                    room: "demo".into(),
                    identity: "dev-user".into(),
                    name: Some("Dev User".into()),
                    ttl: Duration::from_secs(24 * 3600),
                    can_publish: true,
                    can_subscribe: true,
                    can_chat: true,
                    room_admin: false,
                    ..TokenRequest::new("", "")
                },
            );
            let (http, ws) = if server.state.tls.is_some() { ("https", "wss") } else { ("http", "ws") };
            eprintln!("\n  Courier (development mode)");
            match &web_root {
                WebRoot::Embedded => eprintln!("  web demo:    {http}://{}/", server.http_addr),
                WebRoot::Dir(dir) => {
                    eprintln!("  web root:    {http}://{}/ (files of {})", server.http_addr, dir.display())
                }
                WebRoot::Off => eprintln!("  web demo:    off (web_root is empty)"),
            }
            eprintln!("  signaling:   {ws}://{}/rtc", server.http_addr);
            eprintln!("  media (UDP): {}", server.udp_addr);
            if let Some(tcp) = server.state.sfu.tcp_addr() {
                eprintln!("  media (TCP): {tcp} (ICE-TCP, when UDP is blocked)");
            }
            if let Some(t) = server.state.turn.shell() {
                eprintln!("  TURN:        {} (UDP and TCP){}", t.addr(), t.tls_addr().map(|a| format!(", {a} (TLS)")).unwrap_or_default());
            }
            eprintln!("  API key:     {k}");
            eprintln!("  API secret:  {s}");
            eprintln!("  join token (room \"demo\", identity \"dev-user\"):\n  {token}\n");
        }
        // One machine-readable line for scripts and tests.
        println!("COURIER_READY http={} udp={}", server.http_addr, server.udp_addr);
        let _ = std::io::stdout().flush();
        shutdown_signal().await;
        tracing::info!("shutting down");
        server.shutdown(drain_timeout).await;
        Ok::<(), anyhow::Error>(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The development key in `data_dir/dev-keys.toml`, created on first use.
fn dev_keys(data_dir: &Path, create: bool) -> anyhow::Result<HashMap<String, String>> {
    let path = data_dir.join("dev-keys.toml");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let keys: HashMap<String, String> =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if !keys.is_empty() {
            return Ok(keys);
        }
    }
    if !create {
        anyhow::bail!("no development key at {}", path.display());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let key = format!("dev{}", signaling::room::random_token(8));
    let secret = signaling::room::random_token(32);
    let text = format!("# Development API key, created by `courier serve --dev`.\n{key} = \"{secret}\"\n");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok([(key, secret)].into())
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("COURIER_LOG").unwrap_or_else(|_| EnvFilter::new("info,str0m=warn"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.init(),
    }
}
