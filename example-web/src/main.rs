//! The fusion-host reference web app: accounts, the device registry on the
//! app's own tables, `/devices`, a JSON API, and `--demo`.

mod activity;
mod app;
mod approve;
mod auth;
mod db;
mod error;
mod extract;
mod oauth;
mod pages;
mod releases;
mod state;
mod updates;
mod views;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use fusion_host_server::blobs::{BlobConfig, Blobs};
use fusion_host_server::cluster::{Cluster, NatsOptions};
use fusion_host_server::{Config, Dispatcher};
use fusion_tools::{Access, Scope, Toolbox};

use crate::db::Db;
use crate::state::AppState;

/// The fusion-host reference web app.
#[derive(Debug, Parser)]
#[command(name = "example-web", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Database URL: `sqlite://PATH` (default ./data/fusion-host.db) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// The address devices and browsers reach this app at, used in the
    /// pasted enroll command. Default: http://<listen address>.
    #[arg(long, env = "PUBLIC_URL")]
    public_url: Option<String>,
    /// Start with a demo account and an in-process device on a scratch folder.
    #[arg(long)]
    demo: bool,
    /// Seconds a call to an offline device waits for it to connect. Devices
    /// come back within about a second after a restart.
    #[arg(long, env = "OFFLINE_GRACE_S", default_value_t = 10)]
    offline_grace: u64,
    /// Where uploaded files are kept: a folder (or `file://` URL), or an S3
    /// bucket (`s3://bucket[/prefix]`; credentials, region and a non-AWS
    /// endpoint from the usual `AWS_*` variables). Default: `blobs/` beside
    /// a SQLite database; with PostgreSQL, files by handle are off unless
    /// this is given.
    #[arg(long, env = "BLOB_STORE")]
    blob_store: Option<String>,
    /// A local folder for uploads in progress when blobs go to S3. Default:
    /// `uploads/` beside a SQLite database, else in the system's temporary
    /// folder.
    #[arg(long, env = "BLOB_STAGING")]
    blob_staging: Option<std::path::PathBuf>,
    /// Run as one of several replicas that share devices through this NATS
    /// server (JetStream on), e.g. `nats://127.0.0.1:4222`. Every replica
    /// needs the same PostgreSQL database. Default: a single process.
    #[arg(long, env = "NATS_URL")]
    nats_url: Option<String>,
    /// Prefix of the NATS subjects and KV bucket, for apps sharing one NATS.
    #[arg(long, env = "NATS_PREFIX", default_value = "fusion")]
    nats_prefix: String,
    /// A folder of signed device releases (`fusion-release sign` wrote it):
    /// served under /releases/ for `fusion-host update`, and offered on
    /// /download. Default: none, and /download says how to build it.
    #[arg(long, env = "FUSION_RELEASES_DIR")]
    releases: Option<std::path::PathBuf>,
    /// Whether devices update themselves to the release served with
    /// --releases (each account can still turn it off for its devices), or
    /// only when their users run `fusion-host update`.
    #[arg(long, env = "FUSION_UPDATES", value_enum, default_value = "automatic")]
    updates: UpdatesMode,
    /// Keep every device on this version: automatic updates install it and
    /// nothing past it.
    #[arg(long, env = "FUSION_PIN_VERSION", value_parser = parse_version)]
    pin_version: Option<String>,
    /// Let MCP clients' metadata documents (their OAuth client ids) live on
    /// loopback and private addresses. For development and tests only: on a
    /// public server, a client id could otherwise make the app fetch from
    /// its own network.
    #[arg(long, env = "OAUTH_PRIVATE_CLIENT_METADATA")]
    oauth_private_client_metadata: bool,
}

/// `--updates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UpdatesMode {
    Automatic,
    Manual,
}

fn parse_version(v: &str) -> Result<String, String> {
    semver::Version::parse(v)
        .map(|_| v.to_string())
        .map_err(|_| format!("{v:?} is not a version (like 0.2.0)"))
}

/// Where blobs go: `--blob-store` (a folder, `file://…` or `s3://…`),
/// else `blobs/` beside a SQLite file; none with PostgreSQL unless given.
fn blob_config(args: &Args, database_url: &str) -> anyhow::Result<Option<BlobConfig>> {
    let beside_sqlite = |name: &str| {
        let path = database_url.strip_prefix("sqlite://")?;
        let path = std::path::Path::new(path.split('?').next().unwrap_or(path));
        Some(
            path.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .join(name),
        )
    };
    let local = |dir: std::path::PathBuf| {
        BlobConfig::local(&dir).map_err(|e| anyhow::anyhow!("cannot keep files in {}: {e}", dir.display()))
    };
    match args.blob_store.as_deref() {
        Some(url) if url.starts_with("s3://") => {
            let staging = args
                .blob_staging
                .clone()
                .or_else(|| beside_sqlite("uploads"))
                .unwrap_or_else(|| std::env::temp_dir().join("fusion-host-uploads"));
            BlobConfig::s3(url, &staging)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("cannot keep files in {url}: {e}"))
        }
        Some(store) if store.contains("://") && !store.starts_with("file://") => {
            anyhow::bail!("--blob-store {store}: give a folder, a file:// URL or an s3://bucket URL")
        }
        Some(store) => local(store.trim_start_matches("file://").into()).map(Some),
        None => beside_sqlite("blobs").map(local).transpose(),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,example_web=info,fusion_host_server=info")
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let scratch = args
        .demo
        .then(|| std::env::temp_dir().join(format!("fusion-host-demo-{}", std::process::id())));
    let database_url = match (&args.database_url, &scratch) {
        (Some(url), _) => url.clone(),
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir)?;
            format!("sqlite://{}?mode=rwc", dir.join("demo.db").display())
        }
        (None, None) => {
            std::fs::create_dir_all("data").context("cannot create ./data for the database")?;
            "sqlite://data/fusion-host.db?mode=rwc".to_string()
        }
    };
    let mut db = Db::connect(&database_url).await?;
    db.updates = Arc::new(db::Operator {
        offered: args.releases.is_some(),
        manual: args.updates == UpdatesMode::Manual,
        pinned: args.pin_version.clone(),
    });
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        // The demo should just work, even when 8080 is taken.
        Err(_) if args.demo => tokio::net::TcpListener::bind((args.listen.ip(), 0)).await?,
        Err(e) => return Err(e).with_context(|| format!("cannot listen on {}", args.listen)),
    };
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let config = Config {
        offline_grace: std::time::Duration::from_secs(args.offline_grace),
        verification_uri: Some(format!("{}/device", public_url.trim_end_matches('/'))),
        blobs: blob_config(&args, &database_url)?.map(Blobs::new),
        cluster: match &args.nats_url {
            Some(url) => Some(
                Cluster::nats(
                    url,
                    NatsOptions {
                        prefix: args.nats_prefix.clone(),
                        ..NatsOptions::default()
                    },
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot join the replicas on NATS at {url}: {e}"))?,
            ),
            None => None,
        },
        ..Config::default()
    };
    let replica = config
        .cluster
        .as_ref()
        .map(|c| format!(", replica {} on NATS", c.replica()))
        .unwrap_or_default();
    let dispatcher = Dispatcher::new(Arc::new(db.clone()), config);
    let state = AppState {
        db: db.clone(),
        dispatcher: dispatcher.clone(),
        secure_cookies: public_url.starts_with("https://"),
        public_url: public_url.clone(),
        mcp_sessions: Default::default(),
        releases: args.releases.clone().map(releases::check_dir).transpose()?,
    };
    let app = app::router(
        state,
        oauth::OAuth::new(&public_url, args.oauth_private_client_metadata)?,
    );
    let bound = format!("http://{addr}");
    let public = if public_url == bound {
        String::new()
    } else {
        format!("public address {public_url}, ")
    };
    println!(
        "listening on {bound} ({public}database {}{replica})",
        db::redact(&database_url)
    );

    let serving = tokio::spawn({
        let dispatcher = dispatcher.clone();
        async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(dispatcher.stopped())
                .await
        }
    });
    let device = match &scratch {
        Some(dir) => Some(demo(&db, &dispatcher, &public_url, dir).await?),
        None => None,
    };
    shutdown_signal().await;
    eprintln!("stopping…");
    if let Some(device) = device {
        device.shutdown();
        let _ = device.join().await;
    }
    dispatcher.shutdown();
    serving.await??;
    // Every call answered before the stop is in the log.
    db.flush_call_log().await;
    Ok(())
}

/// The demo: an account, a scratch folder with a few files, and a device
/// paired to that account over HTTP, exactly as `fusion-host` would pair.
async fn demo(
    db: &Db,
    dispatcher: &Dispatcher,
    url: &str,
    dir: &Path,
) -> anyhow::Result<fusion_host::HostHandle> {
    let email = "demo@example.com";
    let password = auth::random_hex(6);
    let user = auth::sign_up(db, email, &password)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    let folder = dir.join("site-survey");
    seed(&folder)?;
    let code = dispatcher.mint_pairing_code(&user.id).await?;
    let version = env!("CARGO_PKG_VERSION");
    let http = fusion_host::Http::new(url, None, version)?;
    let credentials = fusion_host::enroll(&http, url, &code.code, "demo-laptop", version).await?;
    let scope = Scope::single(&folder, Access::ReadWrite)?;
    let host = fusion_host::run_host(fusion_host::HostOptions::new(
        http,
        credentials,
        Toolbox::builtin(),
        scope,
        version,
    ));
    let mut state = host.state();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        state.wait_for(|s| matches!(s, fusion_host::ConnectionState::Connected { .. })),
    )
    .await;
    let (token, _) = auth::mint_api_token(db, &user, "demo", None)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?;
    println!();
    println!("fusion-host demo is running");
    println!("  open       {url}/devices");
    println!("  sign in    {email} / {password}");
    println!("  MCP        {url}/mcp with header `Authorization: Bearer {token}`");
    println!(
        "  device     'demo-laptop' is connected, answering calls for {}",
        folder.display()
    );
    println!(
        "  try        list_directory, grep {{\"pattern\": \"TODO\"}}, then write_file: approve its diff"
    );
    println!("Ctrl-C stops it; the scratch data stays in {}", dir.display());
    Ok(host)
}

/// A small survey project: notes, two "scans" (binary), a gitignored cache.
fn seed(folder: &Path) -> std::io::Result<()> {
    let files: [(PathBuf, &[u8]); 6] = [
        (
            "README.md".into(),
            b"# Site survey, block 7\n\nScans in scans/, notes in notes/.\n",
        ),
        (
            "notes/todo.txt".into(),
            b"TODO: merge north and south scans\nTODO: rename by schema\n",
        ),
        ("scans/north.e57".into(), b"ASTM-E57\0\x01\x00\x00TODO"),
        ("scans/south.e57".into(), b"ASTM-E57\0\x01\x00\x00"),
        (".gitignore".into(), b"cache/\n"),
        ("cache/preview.txt".into(), b"TODO: this file is gitignored\n"),
    ];
    for (rel, content) in files {
        let path = folder.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(folder))?;
        std::fs::write(path, content)?;
    }
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
