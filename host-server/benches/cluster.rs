//! Replica benchmark: calls to a device on the same replica against calls
//! that cross to another replica over NATS, with 100 devices spread over
//! three replicas, in one run.
//!
//! Run: `cargo bench -p fusion-host-server --features nats --bench cluster`
//! (NATS with JetStream at `FUSION_BENCH_NATS_URL`, default
//! `nats://127.0.0.1:4222`; the bench says so and stops when none answers).
//!
//! The three replicas are three dispatchers with their own HTTP listeners
//! and NATS connections in this process, sharing one in-memory store (the
//! store's cost is the app's database's, measured by example-web's bench).
//! Devices are the `dispatch` bench's SSE readers that answer at once;
//! callers go through an app-style route, `POST /bench/call`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use fusion_host_server::cluster::{Cluster, NatsOptions};
use fusion_host_server::{Config, Dispatcher, MemoryStore, Store, router};
use serde_json::{Value, json};

mod support;

use support::{Stats, ms, stats};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::args().any(|a| a == "--bench") || std::env::args().count() == 1 {
        runtime.block_on(orchestrate());
    }
}

async fn revoke(State(d): State<Dispatcher>, Json(body): Json<Value>) -> Json<Value> {
    let device = body["device_id"].as_str().unwrap_or_default();
    match d.revoke(support::OWNER, device).await {
        Ok(()) => Json(json!({ "ok": true })),
        Err(e) => Json(json!({ "ok": false, "error": e.to_body() })),
    }
}

/// One replica on 127.0.0.1:0; returns its URL.
async fn replica(store: Arc<dyn Store>, nats: &str, prefix: &str) -> String {
    let cluster = Cluster::nats(
        nats,
        NatsOptions {
            prefix: prefix.to_string(),
            ..NatsOptions::default()
        },
    )
    .await
    .expect("join NATS");
    let config = Config {
        enroll_per_address: u32::MAX,
        enroll_global_failures: u32::MAX,
        cluster: Some(cluster),
        ..Config::default()
    };
    let dispatcher = Dispatcher::new(store, config);
    let bench = axum::Router::new()
        .route("/bench/call", post(support::bench_call))
        .route("/bench/mint", post(support::bench_mint))
        .route("/bench/revoke", post(revoke))
        .with_state(dispatcher.clone());
    let app = axum::Router::new()
        .nest("/api/host", router(dispatcher))
        .merge(bench);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    url
}

/// A call: `(replica URL, device id)`.
type Target = (String, String);

async fn call_once(client: &reqwest::Client, (url, device): &Target) {
    let response: Value = client
        .post(format!("{url}/bench/call"))
        .json(&json!({ "device_id": device }))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(response["ok"], true, "{response}");
}

/// Sequential calls, round-robin over `targets`.
async fn latency(client: &reqwest::Client, targets: &[Target], n: usize) -> Stats {
    for target in targets.iter().cycle().take(300) {
        call_once(client, target).await;
    }
    let mut samples = Vec::with_capacity(n);
    for target in targets.iter().cycle().take(n) {
        let started = Instant::now();
        call_once(client, target).await;
        samples.push(started.elapsed());
    }
    stats(samples)
}

/// Completed calls per second with `concurrency` callers for `for_`.
async fn throughput(client: &reqwest::Client, targets: &[Target], concurrency: usize, for_: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + for_;
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let (client, done, targets) = (client.clone(), Arc::clone(&done), targets.to_vec());
            tokio::spawn(async move {
                // Each caller walks the targets from its own place, stepping
                // by a prime so callers spread over devices and replicas.
                let mut k = i * 7;
                while Instant::now() < deadline {
                    call_once(&client, &targets[k % targets.len()]).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    k += 13;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[allow(clippy::async_yields_async)]
async fn orchestrate() {
    let nats = std::env::var("FUSION_BENCH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    if tokio::net::TcpStream::connect(nats.trim_start_matches("nats://"))
        .await
        .is_err()
    {
        println!("cluster bench: skipped: no NATS answers at {nats} (set FUSION_BENCH_NATS_URL)");
        return;
    }
    let prefix = format!("bench{}", std::process::id());
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(Arc::clone(&store), &nats, &prefix).await);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let answered = Arc::new(AtomicU64::new(0));
    let mut devices = Vec::new();
    let mut tasks = Vec::new();
    for n in 0..100 {
        let home = &replicas[n % 3];
        let code: Value = client
            .post(format!("{home}/bench/mint"))
            .send()
            .await
            .expect("mint")
            .json()
            .await
            .expect("json");
        let enrolled = support::enroll_with(home, code["code"].as_str().expect("code"), None).await;
        devices.push((n % 3, enrolled.device_id.clone()));
        tasks.push(support::connect_device(home.clone(), enrolled, Arc::clone(&answered)).await);
    }
    // Every replica hears of every holder before the timed part.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let same: Vec<Target> = devices
        .iter()
        .map(|(home, id)| (replicas[*home].clone(), id.clone()))
        .collect();
    let cross: Vec<Target> = devices
        .iter()
        .map(|(home, id)| (replicas[(home + 1) % 3].clone(), id.clone()))
        .collect();
    // Every (replica, device) pair: a third of them local, as with callers
    // spread evenly over replicas.
    let any: Vec<Target> = devices
        .iter()
        .flat_map(|(_, id)| replicas.iter().map(move |r| (r.clone(), id.clone())))
        .collect();

    let samples = 2000;
    let window = Duration::from_secs(5);
    println!(
        "# cluster bench: {} cores, 3 replicas, 100 devices, NATS at {nats}, {samples} samples per latency row\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let same_latency = latency(&client, &same, samples).await;
    let cross_latency = latency(&client, &cross, samples).await;
    let same_rate = throughput(&client, &same, 64, window).await;
    let cross_rate = throughput(&client, &cross, 64, window).await;
    let any_rate = throughput(&client, &any, 64, window).await;

    println!("| measurement | same replica | across replicas | callers on any replica |");
    println!("|---|---|---|---|");
    println!(
        "| latency p50 | {} | {} | |",
        ms(same_latency.p50),
        ms(cross_latency.p50)
    );
    println!(
        "| latency p99 | {} | {} | |",
        ms(same_latency.p99),
        ms(cross_latency.p99)
    );
    println!(
        "| throughput, 64 concurrent callers | {same_rate:.0} calls/s | {cross_rate:.0} calls/s | {any_rate:.0} calls/s |"
    );
    println!(
        "\n(cross-replica p50 is {:.2}× same-replica; {} calls answered by devices)",
        cross_latency.p50.as_secs_f64() / same_latency.p50.as_secs_f64(),
        answered.load(Ordering::Relaxed)
    );

    // Revoke on another replica than the holder: time until the device's
    // stream (on the holder) has ended, as the device sees it.
    let mut closed = Vec::new();
    for ((home, id), task) in devices.iter().zip(tasks).take(30) {
        let started = Instant::now();
        let other = &replicas[(home + 1) % 3];
        let response: Value = client
            .post(format!("{other}/bench/revoke"))
            .json(&json!({ "device_id": id }))
            .send()
            .await
            .expect("revoke")
            .json()
            .await
            .expect("json");
        assert_eq!(response["ok"], true, "{response}");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the revoked stream ends")
            .expect("device task");
        closed.push(started.elapsed());
    }
    let closed = stats(closed);
    println!(
        "
| revoke on another replica until the device's stream ends (30 devices) | p50 {} | max {} |",
        ms(closed.p50),
        ms(closed.p99)
    );
}
