//! Simulated devices for the benches: enrolled over HTTP, each holding a real
//! SSE stream and answering every `call` at once with a fixed `stat` result.
//! Shared by `dispatch` (this crate) and example-web's `app` bench.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use eventsource_stream::Eventsource;
use fusion_tools::{CallEvent, CallResult, DeviceManifest, EnrollResponse, Toolbox};
use futures_util::StreamExt;
use serde_json::json;

/// Enrolls with `code` at `base` (the app's URL), from `from` when given: the
/// server limits enroll attempts per address, so a bench spreads them.
pub async fn enroll_with(base: &str, code: &str, from: Option<IpAddr>) -> EnrollResponse {
    let client = reqwest::Client::builder()
        .local_address(from)
        .build()
        .expect("client");
    let response = client
        .post(format!("{base}/api/host/enroll"))
        .json(&json!({ "code": code, "name": "bench", "platform": "linux", "host_version": "bench" }))
        .send()
        .await
        .expect("enroll");
    assert_eq!(
        response.status(),
        200,
        "enroll: {}",
        response.text().await.unwrap_or_default()
    );
    response.json().await.expect("enroll json")
}

/// A device's HTTP client, with its token.
fn device_client(enrolled: &EnrollResponse) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", enrolled.token).parse().expect("header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client")
}

/// Sends the built-in tools' manifest, as a device does on connect.
pub async fn put_manifest(base: &str, enrolled: &EnrollResponse) {
    let manifest = DeviceManifest {
        host_version: "bench".into(),
        tools: Toolbox::builtin().manifest().tools,
        roots: Vec::new(),
    };
    let put = device_client(enrolled)
        .put(format!("{base}/api/host/manifest"))
        .json(&manifest)
        .send()
        .await
        .expect("manifest");
    assert_eq!(put.status(), 204);
}

/// Connects a device that answers every call at once; returns when its
/// stream is open. The task holds the connection for as long as it lives.
pub async fn connect_device(
    base: String,
    enrolled: EnrollResponse,
    answered: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    put_manifest(&base, &enrolled).await;
    let client = device_client(&enrolled);
    let response = client
        .get(format!("{base}/api/host/stream"))
        .send()
        .await
        .expect("stream");
    assert_eq!(response.status(), 200);
    let mut events = response.bytes_stream().eventsource();
    let hello = events.next().await.expect("hello").expect("hello event");
    assert_eq!(hello.event, "hello");
    tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if event.event != "call" {
                continue;
            }
            let Ok(call) = serde_json::from_str::<CallEvent>(&event.data) else {
                continue;
            };
            let result = CallResult {
                call_id: call.call_id,
                ok: true,
                output: Some(json!({ "kind": "directory" })),
                error: None,
                truncated: false,
                duration_ms: 0,
            };
            let client = client.clone();
            let base = base.clone();
            let answered = Arc::clone(&answered);
            // Answer concurrently, as the real device does.
            tokio::spawn(async move {
                let _ = client
                    .post(format!("{base}/api/host/result"))
                    .json(&result)
                    .send()
                    .await;
                answered.fetch_add(1, Ordering::Relaxed);
            });
        }
    })
}

/// Serves `app` on 127.0.0.1:0 in a server process: prints `listening on
/// URL` for the parent, and exits when the parent closes its stdin.
pub async fn serve_until_stdin_closes(app: axum::Router) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    std::io::stdout().flush().expect("stdout");
    tokio::spawn(async {
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().lines().count()).await;
        std::process::exit(0);
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .expect("serve");
}

/// Starts a server process and reads its `listening on URL` line: the child
/// (stdin piped: dropping it stops the server) and the URL.
pub fn spawn_server(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server process");
    let line = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a listening line")
        .expect("read");
    let base = line
        .strip_prefix("listening on ")
        .and_then(|l| l.split(' ').next())
        .expect("listening on URL")
        .to_string();
    (child, base)
}

/// Latency percentiles of a run.
pub struct Stats {
    pub p50: std::time::Duration,
    pub p99: std::time::Duration,
    pub n: usize,
}

pub fn stats(mut samples: Vec<std::time::Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        n: samples.len(),
    }
}

pub fn ms(d: std::time::Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// The owner the benches' devices belong to.
pub const OWNER: &str = "bench";

/// `POST /bench/call {"device_id"}`: what an app's handler does,
/// `Dispatcher::call` for a `read` tool (`stat`).
pub async fn bench_call(
    axum::extract::State(d): axum::extract::State<fusion_host_server::Dispatcher>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::Json<serde_json::Value> {
    use fusion_host_server::{CallOptions, CallOutcome};
    let device = body["device_id"].as_str().unwrap_or_default();
    let input = json!({ "path": "." });
    axum::Json(
        match d.call(OWNER, device, "stat", input, CallOptions::default()).await {
            Ok(CallOutcome::Output(out)) => json!({ "ok": true, "output": out.output }),
            Ok(CallOutcome::Proposal(_)) => json!({ "ok": false }),
            Err(e) => json!({ "ok": false, "error": e.to_body() }),
        },
    )
}

/// `POST /bench/mint`: a pairing code for [`OWNER`].
pub async fn bench_mint(
    axum::extract::State(d): axum::extract::State<fusion_host_server::Dispatcher>,
) -> axum::Json<serde_json::Value> {
    let code = d.mint_pairing_code(OWNER).await.expect("mint");
    axum::Json(json!({ "code": code.code }))
}
