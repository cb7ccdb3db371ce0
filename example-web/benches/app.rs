//! The real app path, measured: example-web itself over HTTP on its embedded
//! SQLite default (and on PostgreSQL when `FUSION_TEST_POSTGRES_URL` is set),
//! next to the bare dispatcher on `MemoryStore` behind the same routes, in the
//! same run and under the same load.
//!
//! Run: `cargo bench -p example-web --bench app [-- --devices 100 --callers 256 --seconds 5 --list 1000]`
//!
//! For each server: enroll `--devices` simulated devices (real SSE streams
//! that answer every call at once), then `--callers` concurrent API clients
//! post `stat` calls round-robin for `--seconds`; then enroll more devices up
//! to `--list` and time `GET /api/devices`. The servers run as their own
//! processes; the devices and callers run here.

#[path = "../../host-server/benches/support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use fusion_host_server::{CallOptions, Config, Dispatcher, MemoryStore, router};
use serde_json::{Value, json};

const OWNER: &str = "bench";

struct Options {
    devices: usize,
    callers: usize,
    seconds: u64,
    list: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Options {
        devices: value("--devices", 100),
        callers: value("--callers", 256),
        seconds: value("--seconds", 5) as u64,
        list: value("--list", 1000),
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::args().any(|a| a == "--serve-memory") {
        runtime.block_on(serve_memory());
    } else if std::env::args().any(|a| a == "--bench") || !std::env::args().any(|a| a == "--list-tests") {
        runtime.block_on(orchestrate(options()));
    }
}

// ---------------------------------------------------------------- the floor

/// The dispatcher on `MemoryStore`, behind the app's own API paths, with no
/// accounts and no database: what the app adds is the difference.
async fn serve_memory() {
    let config = Config {
        enroll_per_address: u32::MAX,
        enroll_global_failures: u32::MAX,
        ..Config::default()
    };
    let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), config);
    let api = axum::Router::new()
        .route("/api/devices", get(memory_devices))
        .route("/api/devices/{id}/calls", post(memory_call))
        .route("/api/pairing-codes", post(memory_mint))
        .with_state(dispatcher.clone());
    let app = axum::Router::new()
        .nest("/api/host", router(dispatcher))
        .merge(api);
    support::serve_until_stdin_closes(app).await;
}

async fn memory_devices(State(d): State<Dispatcher>) -> Json<Value> {
    Json(json!({ "devices": d.devices(OWNER).await.expect("devices") }))
}

async fn memory_call(
    State(d): State<Dispatcher>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let tool = body["tool"].as_str().unwrap_or_default();
    match d
        .call(OWNER, &id, tool, body["input"].clone(), CallOptions::default())
        .await
    {
        Ok(outcome) => Json(serde_json::to_value(outcome).expect("json")),
        Err(e) => Json(json!({ "code": e.code(), "message": e.to_string() })),
    }
}

async fn memory_mint(State(d): State<Dispatcher>) -> Json<Value> {
    Json(serde_json::to_value(d.mint_pairing_code(OWNER).await.expect("mint")).expect("json"))
}

// ---------------------------------------------------------------- the servers

struct Server {
    child: Child,
    base: String,
    /// `Authorization` for the API.
    auth: Option<String>,
}

impl Server {
    fn start(command: Command) -> Server {
        let (child, base) = support::spawn_server(command);
        Server {
            child,
            base,
            auth: None,
        }
    }

    fn memory() -> Server {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command.arg("--serve-memory");
        Server::start(command)
    }

    async fn app(database_url: &str) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_example-web"));
        command.args(["--listen", "127.0.0.1:0", "--database-url", database_url]);
        let mut server = Server::start(command);
        server.auth = Some(format!("Bearer {}", api_token(&server.base).await));
        server
    }

    fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(auth) = &self.auth {
            headers.insert("authorization", auth.parse().expect("header"));
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .pool_max_idle_per_host(1024)
            .build()
            .expect("client")
    }

    /// Mints a pairing code through the API and enrolls with it.
    async fn enroll(&self, client: &reqwest::Client, n: usize) -> fusion_tools::EnrollResponse {
        let minted: Value = client
            .post(format!("{}/api/pairing-codes", self.base))
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("mint json");
        // Eight enrolls per loopback address stay under the per-address limit.
        let from = IpAddr::from([127, 1, (n / 8 / 250) as u8, (n / 8 % 250) as u8 + 1]);
        support::enroll_with(&self.base, minted["code"].as_str().expect("code"), Some(from)).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Signs up a fresh user with the forms, as a browser does, and mints an API token.
async fn api_token(base: &str) -> String {
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let page = client
        .get(format!("{base}/signup"))
        .send()
        .await
        .expect("signup page")
        .text()
        .await
        .expect("page");
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).expect("csrf field") + marker.len();
    let csrf = page[at..].split('"').next().expect("csrf").to_string();
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).expect("random");
    let email = format!(
        "bench-{}@example.com",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let response = client
        .post(format!("{base}/signup"))
        .form(&[
            ("email", email.as_str()),
            ("password", "correct horse battery"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .expect("signup");
    assert_eq!(response.url().path(), "/devices");
    let session: Value = client
        .get(format!("{base}/api/session"))
        .send()
        .await
        .expect("session")
        .json()
        .await
        .expect("session json");
    let token: Value = client
        .post(format!("{base}/api/tokens"))
        .header("x-csrf-token", session["csrf"].as_str().expect("csrf"))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    token["token"].as_str().expect("token").to_string()
}

// ---------------------------------------------------------------- the load

struct Row {
    calls_per_s: f64,
    p50: Duration,
    p99: Duration,
    list: Duration,
    list_bytes: usize,
}

#[allow(clippy::async_yields_async)]
async fn measure(server: &Server, o: &Options) -> Row {
    let client = server.client();
    let answered = Arc::new(AtomicU64::new(0));
    let mut devices = Vec::new();
    let mut streams = Vec::new();
    for n in 0..o.devices {
        let enrolled = server.enroll(&client, n).await;
        devices.push(enrolled.device_id.clone());
        streams.push(support::connect_device(server.base.clone(), enrolled, Arc::clone(&answered)).await);
    }
    let devices = Arc::new(devices);
    let call = |client: reqwest::Client, base: String, device: String| async move {
        let started = Instant::now();
        let response = client
            .post(format!("{base}/api/devices/{device}/calls"))
            .json(&json!({ "tool": "stat", "input": { "path": "." } }))
            .send()
            .await
            .expect("call");
        let status = response.status();
        let body: Value = response.json().await.expect("call json");
        assert!(status.is_success() && body["kind"] == "output", "{status} {body}");
        started.elapsed()
    };
    // Warm up: every device once.
    for d in devices.iter() {
        call(client.clone(), server.base.clone(), d.clone()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..o.callers)
        .map(|i| {
            let (client, base, devices) = (client.clone(), server.base.clone(), Arc::clone(&devices));
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut k = i;
                while Instant::now() < deadline {
                    samples
                        .push(call(client.clone(), base.clone(), devices[k % devices.len()].clone()).await);
                    k += 1;
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::new();
    for w in workers {
        samples.extend(w.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let (p50, p99) = (at(0.5), at(0.99));
    let calls_per_s = samples.len() as f64 / elapsed.as_secs_f64();
    for s in streams {
        s.abort();
    }

    // The device list with `--list` devices (enrolled, manifests sent).
    for n in o.devices..o.list {
        let enrolled = server.enroll(&client, n).await;
        support::put_manifest(&server.base, &enrolled).await;
    }
    let mut times = Vec::new();
    let mut list_bytes = 0;
    for _ in 0..11 {
        let started = Instant::now();
        let body = client
            .get(format!("{}/api/devices", server.base))
            .send()
            .await
            .expect("devices")
            .bytes()
            .await
            .expect("body");
        times.push(started.elapsed());
        list_bytes = body.len();
        let parsed: Value = serde_json::from_slice(&body).expect("devices json");
        assert_eq!(parsed["devices"].as_array().map(Vec::len), Some(o.list));
    }
    times.sort();
    Row {
        calls_per_s,
        p50,
        p99,
        list: times[times.len() / 2],
        list_bytes,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn orchestrate(o: Options) {
    println!(
        "# app bench: {} cores; {} devices, {} concurrent callers, {} s; list of {} devices\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        o.devices,
        o.callers,
        o.seconds,
        o.list
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    let memory = Server::memory();
    rows.push(("dispatcher on MemoryStore (floor)", measure(&memory, &o).await));
    drop(memory);
    let sqlite = format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display());
    let app = Server::app(&sqlite).await;
    rows.push(("example-web, SQLite", measure(&app, &o).await));
    drop(app);
    match std::env::var("FUSION_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => {
            let app = Server::app(&url).await;
            rows.push(("example-web, PostgreSQL", measure(&app, &o).await));
        }
        _ => println!("(PostgreSQL skipped: FUSION_TEST_POSTGRES_URL is not set)\n"),
    }
    println!(
        "| server | calls/s | p50 | p99 | GET /api/devices ({} devices) | its size |",
        o.list
    );
    println!("|---|---|---|---|---|---|");
    for (name, r) in rows {
        println!(
            "| {name} | {:.0} | {} | {} | {} | {:.0} KiB |",
            r.calls_per_s,
            ms(r.p50),
            ms(r.p99),
            ms(r.list),
            r.list_bytes as f64 / 1024.0
        );
    }
}
