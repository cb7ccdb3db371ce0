//! Dispatcher benchmark: call latency and throughput over loopback, and the
//! server's memory per idle connected device — next to a plain axum JSON
//! round trip measured the same way, as the floor.
//!
//! Run: `cargo bench -p fusion-host-server --bench dispatch`
//!
//! The bench starts itself again as the server (`--serve`) so the server's
//! resident memory can be read from /proc in isolation; the devices (SSE
//! readers that answer every call at once) and the timed callers run in this
//! process. Latency is measured through an app-style route,
//! `POST /bench/call`, which calls `Dispatcher::call` — exactly what an app
//! handler does — so the difference from `POST /bench/echo` is what the
//! dispatcher and the device's round trip add.

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use fusion_host_server::{Config, Dispatcher, MemoryStore, router};
use fusion_tools::EnrollResponse;
use futures_util::StreamExt;
use serde_json::{Value, json};

mod support;

use support::{Stats, connect_device, ms, stats};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::args().any(|a| a == "--serve") {
        runtime.block_on(serve());
    } else if std::env::args().any(|a| a == "--bench") || std::env::args().count() == 1 {
        runtime.block_on(orchestrate());
    }
}

// ---------------------------------------------------------------- server side

async fn serve() {
    let config = Config {
        enroll_per_address: u32::MAX,
        enroll_global_failures: u32::MAX,
        heartbeat: Duration::from_secs(10),
        ..Config::default()
    };
    let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), config);
    let bench = axum::Router::new()
        .route("/bench/echo", post(echo))
        .route("/bench/call", post(support::bench_call))
        .route("/bench/mint", post(support::bench_mint))
        .route("/bench/idle", axum::routing::get(idle))
        .with_state(dispatcher.clone());
    let app = axum::Router::new()
        .nest("/api/host", router(dispatcher))
        .merge(bench);
    support::serve_until_stdin_closes(app).await;
}

async fn echo(Json(body): Json<Value>) -> Json<Value> {
    Json(json!({ "ok": true, "output": body }))
}

/// The memory floor: an SSE stream that never sends anything but heartbeats.
async fn idle() -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{KeepAlive, Sse};
    Sse::new(futures_util::stream::pending()).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

// ---------------------------------------------------------------- client side

struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let mut command = Command::new(std::env::current_exe().expect("current exe"));
        command.arg("--serve");
        let (child, base) = support::spawn_server(command);
        ServerProcess { child, base }
    }

    /// Resident memory of the server process, from /proc.
    fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn enroll(client: &reqwest::Client, base: &str) -> EnrollResponse {
    let code: Value = client
        .post(format!("{base}/bench/mint"))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    support::enroll_with(base, code["code"].as_str().expect("code"), None).await
}

/// Sequential round trips of `POST path` with each body in turn.
async fn latency(client: &reqwest::Client, url: &str, bodies: &[Value], n: usize) -> Stats {
    for body in bodies.iter().cycle().take(200) {
        client
            .post(url)
            .json(body)
            .send()
            .await
            .expect("warm-up")
            .bytes()
            .await
            .expect("body");
    }
    let mut samples = Vec::with_capacity(n);
    for body in bodies.iter().cycle().take(n) {
        let started = Instant::now();
        let response: Value = client
            .post(url)
            .json(body)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        samples.push(started.elapsed());
        assert_eq!(response["ok"], true, "{response}");
    }
    stats(samples)
}

/// Completed round trips per second with `concurrency` callers for `for_`.
async fn throughput(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Value],
    concurrency: usize,
    for_: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + for_;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (client, url, done) = (client.clone(), url.to_string(), Arc::clone(&done));
            let bodies = bodies.to_vec();
            tokio::spawn(async move {
                let mut k = i;
                while Instant::now() < deadline {
                    let body = &bodies[k % bodies.len()];
                    let response: Value = client
                        .post(&url)
                        .json(body)
                        .send()
                        .await
                        .expect("request")
                        .json()
                        .await
                        .expect("json");
                    assert_eq!(response["ok"], true, "{response}");
                    done.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

// The connection helpers return a task handle on purpose: holding it keeps
// the connection open; it is never awaited.
#[allow(clippy::async_yields_async)]
async fn orchestrate() {
    let samples = 2000;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let answered = Arc::new(AtomicU64::new(0));

    println!(
        "# dispatch bench: {} cores, {} samples per latency row\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        samples
    );
    let server = ServerProcess::start();
    let echo_url = format!("{}/bench/echo", server.base);
    let call_url = format!("{}/bench/call", server.base);

    let mut devices = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let enrolled = enroll(&client, &server.base).await;
        devices.push(json!({ "device_id": enrolled.device_id }));
        tasks.push(connect_device(server.base.clone(), enrolled, Arc::clone(&answered)).await);
    }
    let floor_body = vec![json!({ "device_id": "dev_x" })];
    let floor = latency(&client, &echo_url, &floor_body, samples).await;
    let one = latency(&client, &call_url, &devices[..1], samples).await;
    let hundred = latency(&client, &call_url, &devices, samples).await;
    let window = Duration::from_secs(5);
    let floor_rate = throughput(&client, &echo_url, &floor_body, 64, window).await;
    let call_rate = throughput(&client, &call_url, &devices, 64, window).await;

    println!("| measurement | plain axum JSON round trip (floor) | call through the dispatcher |");
    println!("|---|---|---|");
    println!(
        "| latency p50, 1 device connected | {} | {} |",
        ms(floor.p50),
        ms(one.p50)
    );
    println!(
        "| latency p99, 1 device connected | {} | {} |",
        ms(floor.p99),
        ms(one.p99)
    );
    println!(
        "| latency p50, 100 devices connected (round-robin) | {} | {} |",
        ms(floor.p50),
        ms(hundred.p50)
    );
    println!(
        "| latency p99, 100 devices connected (round-robin) | {} | {} |",
        ms(floor.p99),
        ms(hundred.p99)
    );
    println!(
        "| throughput, 64 concurrent callers, 100 devices | {floor_rate:.0} req/s | {call_rate:.0} calls/s |"
    );
    println!(
        "\n({} + {} + {} latency samples; {} calls answered by devices)\n",
        floor.n,
        one.n,
        hundred.n,
        answered.load(Ordering::Relaxed)
    );
    for t in tasks {
        t.abort();
    }
    drop(server);

    // Memory per idle connection: plain SSE streams (the floor), then
    // connected devices, each on a fresh server.
    let floor = idle_memory(&client, |client, base, _| async move {
        let response = client
            .get(format!("{base}/bench/idle"))
            .send()
            .await
            .expect("idle stream");
        assert_eq!(response.status(), 200);
        tokio::spawn(async move {
            let mut body = response.bytes_stream();
            while body.next().await.is_some() {}
        })
    })
    .await;
    let devices = idle_memory(&client, |client, base, answered| async move {
        let enrolled = enroll(&client, &base).await;
        connect_device(base, enrolled, answered).await
    })
    .await;
    println!(
        "| idle connections | plain axum SSE stream (floor): server RSS, per connection | connected devices: server RSS, per device |"
    );
    println!("|---|---|---|");
    for ((n, floor_rss, floor_per), (_, rss, per)) in floor.iter().zip(&devices) {
        println!(
            "| {n} | {:.1} MiB, {:.1} KiB | {:.1} MiB, {:.1} KiB |",
            *floor_rss as f64 / 1048576.0,
            floor_per / 1024.0,
            *rss as f64 / 1048576.0,
            per / 1024.0
        );
    }
    println!("\n(per-connection figures are above each fresh server's RSS after one warm-up connection)");
}

/// Opens 1,000 then 10,000 idle connections with `open` on a fresh server
/// and reads its RSS: (count, rss, bytes per connection above the baseline).
async fn idle_memory<F, Fut>(client: &reqwest::Client, open: F) -> Vec<(usize, u64, f64)>
where
    F: Fn(reqwest::Client, String, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = tokio::task::JoinHandle<()>> + Send + 'static,
{
    let server = ServerProcess::start();
    let answered = Arc::new(AtomicU64::new(0));
    drop(open(client.clone(), server.base.clone(), Arc::clone(&answered)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = server.rss_bytes().unwrap_or(0);
    let mut held = Vec::new();
    let mut rows = Vec::new();
    for target in [1_000usize, 10_000] {
        while held.len() < target {
            let batch: Vec<_> = (held.len()..target.min(held.len() + 200))
                .map(|_| tokio::spawn(open(client.clone(), server.base.clone(), Arc::clone(&answered))))
                .collect();
            for task in batch {
                held.push(task.await.expect("connect"));
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = server.rss_bytes().unwrap_or(0);
        rows.push((target, rss, rss.saturating_sub(base_rss) as f64 / target as f64));
    }
    for task in held {
        task.abort();
    }
    rows
}
