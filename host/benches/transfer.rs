//! Files by handle: `upload` and `download` of one large file (1 GiB by
//! default; `FUSION_BENCH_BYTES` to change) between a device and a server
//! process over loopback, against `curl` moving the same file to and from a
//! plain axum endpoint on the same server in the same run, in alternating
//! rounds (`FUSION_BENCH_ROUNDS`, 3 by default). Reports the median
//! throughput and the peak memory (VmHWM) of both processes.
//!
//! ```sh
//! cargo bench -p fusion-host --bench transfer
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::put;
use fusion_host::{HostOptions, Http, enroll};
use fusion_host_server::blobs::{BlobConfig, Blobs};
use fusion_host_server::{Config, Dispatcher, MemoryStore, router};
use fusion_tools::{Access, Context, Mode, Scope, Toolbox};
use futures_util::StreamExt;
use serde_json::{Value, json};

const ROLE: &str = "FUSION_BENCH_TRANSFER_SERVER";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(dir) = std::env::var(ROLE) {
        runtime.block_on(serve(dir.into()));
        return;
    }
    runtime.block_on(bench());
}

/// The server process: the device routes with a local blob store, and a
/// plain `PUT|GET /plain` that streams to and from a file (the floor).
async fn serve(dir: std::path::PathBuf) {
    let blobs = Blobs::new(BlobConfig::local(dir.join("blobs")).expect("blob store"));
    let config = Config {
        blobs: Some(blobs),
        ..Config::default()
    };
    let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), config);
    let code = dispatcher.mint_pairing_code("bench").await.expect("code");
    let plain = dir.join("plain.bin");
    let floor = axum::Router::new()
        .route(
            "/plain",
            put(plain_put)
                .get(plain_get)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .with_state(plain);
    let app = axum::Router::new()
        .nest("/api/host", router(dispatcher))
        .merge(floor);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("{} {}", listener.local_addr().expect("addr"), code.code);
    std::io::stdout().flush().expect("flush");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .expect("serve");
}

async fn plain_put(State(path): State<std::path::PathBuf>, body: axum::body::Body) -> &'static str {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(&path).await.expect("create");
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk.expect("body")).await.expect("write");
    }
    file.sync_data().await.expect("sync");
    "ok"
}

async fn plain_get(State(path): State<std::path::PathBuf>) -> axum::body::Body {
    let file = tokio::fs::File::open(&path).await.expect("open");
    axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20))
}

/// CPU time (user and system) a process has used, plus that of its
/// children it waited for, in seconds (`/proc/<pid>/stat`, 100 ticks/s).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14–17: 12–15 after the name.
    fields
        .get(11..15)
        .map_or(f64::NAN, |t| t.iter().sum::<f64>() / 100.0)
}

/// VmHWM (peak resident memory) of a process, in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn mib_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

async fn bench() {
    let bytes: u64 = std::env::var("FUSION_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let work = tempfile::tempdir().expect("tempdir");
    let server_dir = work.path().join("server");
    let device_dir = work.path().join("device");
    std::fs::create_dir_all(&server_dir).expect("dir");
    std::fs::create_dir_all(&device_dir).expect("dir");
    // Incompressible content, written once.
    let source = device_dir.join("scan.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&source).expect("create"));
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut block = vec![0u8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            for b in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            let n = left.min(block.len() as u64) as usize;
            file.write_all(&block[..n]).expect("write");
            left -= n as u64;
        }
    }

    let mut server = Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE, &server_dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server line");
    let (addr, code) = line.trim().split_once(' ').expect("addr and code");
    let url = format!("http://{addr}");
    let server_pid = server.id();

    // The floor: curl to and from the plain endpoint.
    let curl = |args: &[&str]| {
        let started = Instant::now();
        let status = Command::new("curl").args(["-sS", "--fail"]).args(args).status();
        match status {
            Ok(s) if s.success() => Some(started.elapsed()),
            _ => None,
        }
    };
    let source_arg = source.to_string_lossy().into_owned();
    // Into a file, as the device writes one (curl does not fsync it).
    let curl_copy = device_dir.join("curl-copy.bin").to_string_lossy().into_owned();

    // The device.
    let http = Http::new(&url, None, "bench").expect("http");
    let credentials = enroll(&http, &url, code, "bench", "bench").await.expect("enroll");
    let scope = Scope::single(&device_dir, Access::ReadWrite).expect("scope");
    let options = HostOptions::new(http, credentials, Toolbox::new(), scope, "bench");
    let (toolbox, scope) = (Arc::clone(&options.toolbox), Arc::clone(&options.scope));
    let call = move |tool: &'static str,
                     mode: Mode,
                     input: Value,
                     precondition: Option<fusion_tools::Precondition>| {
        let (toolbox, scope) = (Arc::clone(&toolbox), Arc::clone(&scope));
        tokio::task::spawn_blocking(move || {
            let cx = Context::new(&scope);
            let started = Instant::now();
            let out = toolbox
                .call(&cx, tool, mode, input, precondition.as_ref())
                .expect(tool)
                .into_value();
            (out, started.elapsed())
        })
    };

    // Rounds alternate curl and the device, each run starting with no dirty
    // pages left by the one before (`sync`), so neither pays for the
    // other's writeback; the medians are reported.
    let rounds: usize = std::env::var("FUSION_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let sync = || {
        let _ = Command::new("sync").status();
    };
    let (mut curl_up, mut curl_down, mut ups, mut downs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // CPU seconds of both ends (server, this process, curl) per run.
    let cpu = || cpu_secs(server_pid) + cpu_secs(std::process::id());
    let mut cpus: [Vec<f64>; 4] = Default::default();
    let mut server_after_curl = 0f64;
    for round in 0..rounds {
        sync();
        let before = cpu();
        curl_up.extend(curl(&[
            "-o",
            "/dev/null",
            "-T",
            &source_arg,
            &format!("{url}/plain"),
        ]));
        cpus[0].push(cpu() - before);
        sync();
        let before = cpu();
        curl_down.extend(curl(&["-o", &curl_copy, &format!("{url}/plain")]));
        cpus[1].push(cpu() - before);
        if round == 0 {
            server_after_curl = peak_mib(server_pid);
        }
        sync();
        let before = cpu();
        let (handle, up) = call("upload", Mode::Run, json!({ "path": "scan.bin" }), None)
            .await
            .expect("upload");
        cpus[2].push(cpu() - before);
        ups.push(up);
        let blob = handle["blob_id"].as_str().expect("blob id").to_string();
        let input = json!({ "blob_id": blob, "path": format!("back-{round}.bin") });
        let (plan, _) = call("download", Mode::Plan, input.clone(), None)
            .await
            .expect("plan");
        let precondition = serde_json::from_value(plan["precondition"].clone()).expect("precondition");
        sync();
        let before = cpu();
        let (_, down) = call("download", Mode::Apply, input, Some(precondition))
            .await
            .expect("download");
        cpus[3].push(cpu() - before);
        downs.push(down);
        let _ = std::fs::remove_file(device_dir.join(format!("back-{round}.bin")));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied()
    };
    let (curl_up, curl_down) = (median(curl_up), median(curl_down));
    let (up, down) = (median(ups).expect("rounds"), median(downs).expect("rounds"));
    let [curl_up_cpu, curl_down_cpu, up_cpu, down_cpu] = cpus.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    });
    let client_peak = peak_mib(std::process::id());
    let server_peak = peak_mib(server_pid);
    let _ = server.kill();
    let _ = server.wait();

    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!(
        "Files by handle, {gib:.2} GiB over loopback, median of {rounds} alternating rounds (MiB/s; higher is better)\n"
    );
    println!(
        "| direction | curl to/from a plain axum endpoint | fusion-host upload/download | ratio | CPU s, both ends: curl / fusion-host |"
    );
    println!("|---|---|---|---|---|");
    for (name, floor, ours, floor_cpu, our_cpu) in [
        ("upload", curl_up, up, curl_up_cpu, up_cpu),
        ("download", curl_down, down, curl_down_cpu, down_cpu),
    ] {
        match floor {
            Some(floor) => println!(
                "| {name} | {:.0} MiB/s | {:.0} MiB/s | {:.2}× | {floor_cpu:.2} / {our_cpu:.2} |",
                mib_s(bytes, floor),
                mib_s(bytes, ours),
                mib_s(bytes, ours) / mib_s(bytes, floor)
            ),
            None => println!(
                "| {name} | (curl not installed) | {:.0} MiB/s | | – / {our_cpu:.2} |",
                mib_s(bytes, ours)
            ),
        }
    }
    println!(
        "\nPeak memory (VmHWM): server {server_after_curl:.1} MiB after the curl runs, {server_peak:.1} MiB after upload and download; device process {client_peak:.1} MiB (it also wrote the test file)."
    );
}
