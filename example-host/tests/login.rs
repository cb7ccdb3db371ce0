//! `fusion-host login` (RFC 8628) as a real process against the real
//! dispatcher: approved, denied, expired, and the one-liner without a code.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fusion_host_server::{Clock, Config, ManualClock};

mod common;

use common::{BIN, Running, Server, server_with};

const PAGE: &str = "https://app.example.com/device";

async fn login_server() -> (Server, ManualClock) {
    let (clock, handle) = Clock::manual(SystemTime::now());
    let config = Config {
        verification_uri: Some(PAGE.into()),
        device_poll_interval: Duration::from_secs(1),
        clock,
        ..Config::default()
    };
    (server_with(config).await, handle)
}

/// What a process printed on stderr, collected as it goes.
type Log = Arc<Mutex<Vec<String>>>;

/// Starts `fusion-host ARGS` with no terminal, and reads its stderr up to
/// the one-time code. Returns the process, the code and its stderr so far
/// (and from then on).
async fn start(server: &Server, config: &Path, folder: &Path, args: &[&str]) -> (Running, String, Log) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("FUSION_HOST_SERVER", &server.url)
        .env("FUSION_HOST_CONFIG_DIR", config)
        .env_remove("FUSION_HOST_CODE")
        .current_dir(folder)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let running = Running(Some(child));
    let log = Log::default();
    let printed = Arc::clone(&log);
    let code = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines().map_while(Result::ok);
        let mut code = None;
        // Up to the wait; then keep draining, so the process never blocks
        // on a full pipe.
        for line in lines.by_ref() {
            if let Some(c) = line.strip_prefix("! Copy your one-time code: ") {
                code = Some(c.to_string());
            }
            let waiting = line.starts_with("Waiting for approval");
            printed.lock().unwrap().push(line);
            if waiting {
                break;
            }
        }
        std::thread::spawn(move || lines.for_each(|line| printed.lock().unwrap().push(line)));
        code
    })
    .await
    .unwrap();
    let code = code.unwrap_or_else(|| panic!("no code printed: {:?}", log.lock().unwrap()));
    (running, code, log)
}

fn first_stdout_line(running: &mut Running) -> tokio::task::JoinHandle<String> {
    let stdout = running.0.as_mut().unwrap().stdout.take().unwrap();
    tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .next()
            .map(Result::unwrap)
            .unwrap_or_default()
    })
}

/// Waits for the process to end; its exit code.
async fn finish(running: Running) -> Option<i32> {
    let mut child = running.take();
    tokio::task::spawn_blocking(move || child.wait().unwrap().code())
        .await
        .unwrap()
}

/// Waits (up to 10 s: the pipe is read on another thread) for a stderr
/// line that starts with `start`.
async fn wait_for_line(log: &Log, start: &str) {
    for _ in 0..100 {
        if log.lock().unwrap().iter().any(|l| l.starts_with(start)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no line starting {start:?} in {:?}", log.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_approved_on_the_page_pairs_connects_and_ends() {
    let (server, _clock) = login_server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (mut running, code, printed) = start(
        &server,
        config.path(),
        folder.path(),
        &["login", "--name", "field-laptop"],
    )
    .await;
    let printed = printed.lock().unwrap().clone();
    assert_eq!(code.len(), 9, "{printed:?}");
    assert!(
        printed.contains(&format!("Open {PAGE} to approve this device")),
        "{printed:?}"
    );
    assert!(
        printed.contains(&format!("  or go straight to {PAGE}?user_code={code}")),
        "{printed:?}"
    );

    let shown = server
        .dispatcher
        .device_authorization("alice", None, &code)
        .await
        .unwrap();
    assert_eq!(shown.name, "field-laptop");
    let connected = first_stdout_line(&mut running);
    server
        .dispatcher
        .approve_device("alice", None, &code)
        .await
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(30), connected)
        .await
        .expect("no ✓ Connected line within 30 s")
        .unwrap();
    assert!(
        line.starts_with(&format!(
            "✓ Connected to {} as device 'field-laptop' (owner alice)",
            server.url
        )),
        "{line}"
    );
    assert_eq!(finish(running).await, Some(0), "login ends once connected");

    assert!(config.path().join("credentials.json").exists());
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device.name, "field-laptop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_login_saves_nothing_and_says_so() {
    let (server, _clock) = login_server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (running, code, log) = start(&server, config.path(), folder.path(), &["login"]).await;
    server.dispatcher.deny_device("alice", None, &code).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), finish(running))
        .await
        .expect("fusion-host did not end after the denial");
    assert_eq!(status, Some(1));
    wait_for_line(
        &log,
        "error: the login was denied on the server; nothing was saved",
    )
    .await;
    assert!(!config.path().join("credentials.json").exists());
    assert!(server.dispatcher.devices("alice").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_login_ends_with_what_to_do() {
    let (server, clock) = login_server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (running, _code, log) = start(&server, config.path(), folder.path(), &["login"]).await;
    clock.advance(Duration::from_secs(15 * 60));
    let status = tokio::time::timeout(Duration::from_secs(30), finish(running))
        .await
        .expect("fusion-host did not end after the code expired");
    assert_eq!(status, Some(1));
    wait_for_line(
        &log,
        "error: nobody approved the code in time; run `fusion-host login` again",
    )
    .await;
    assert!(!config.path().join("credentials.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_liner_without_a_code_logs_in_and_keeps_running() {
    let (server, _clock) = login_server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (mut running, code, _) = start(&server, config.path(), folder.path(), &[]).await;
    let connected = first_stdout_line(&mut running);
    server
        .dispatcher
        .approve_device("alice", None, &code)
        .await
        .unwrap();
    let line = tokio::time::timeout(Duration::from_secs(30), connected)
        .await
        .expect("no ✓ Connected line within 30 s")
        .unwrap();
    assert!(line.starts_with("✓ Connected to "), "{line}");
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert!(devices[0].online);
    let mut child = running.take();
    assert!(child.try_wait().unwrap().is_none(), "the one-liner keeps running");
    let _ = child.kill();
    let _ = child.wait();
}
