//! Several replicas of the app on one PostgreSQL and one NATS, as real
//! processes on 127.0.0.1:0, with devices as the real runtime: a call made on
//! any replica reaches a device streaming to any other.
//!
//! Needs `FUSION_TEST_POSTGRES_URL` and `FUSION_TEST_NATS_URL` (`.ci/run`
//! sets both when the servers answer); without them each test says it
//! skipped. Every test uses its own NATS prefix, so runs do not meet.

mod common;
// Enrolling from a chosen loopback address, as the benches do.
#[path = "../../host-server/benches/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{App, User};
use fusion_host::{ConnectionState, Credentials, HostHandle, HostOptions, Http, enroll, run_host};
use fusion_tools::{Access, Context, MutateTool, Plan, Precondition, Scope, Tool, ToolSpec, Toolbox};
use serde_json::{Value, json};

/// The servers, or why the test skips.
fn servers(test: &str) -> Option<(String, String)> {
    match (
        std::env::var("FUSION_TEST_POSTGRES_URL"),
        std::env::var("FUSION_TEST_NATS_URL"),
    ) {
        (Ok(pg), Ok(nats)) => Some((pg, nats)),
        _ => {
            eprintln!(
                "{test}: skipped: set FUSION_TEST_POSTGRES_URL and FUSION_TEST_NATS_URL to run replicas \
                 on PostgreSQL and NATS"
            );
            None
        }
    }
}

/// `n` replicas sharing one database and one NATS prefix of their own.
fn replicas(n: usize, pg: &str, nats: &str) -> Vec<App> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    let prefix = format!("t{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>());
    (0..n)
        .map(|_| {
            App::start_with(
                Some(pg),
                &[
                    "--nats-url",
                    nats,
                    "--nats-prefix",
                    &prefix,
                    "--offline-grace",
                    "10",
                ],
            )
        })
        .collect()
}

/// A read tool that waits until the test opens its gate, for calls that
/// must still be running when something else happens.
struct Gate {
    open: Arc<AtomicBool>,
    started: Arc<AtomicUsize>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoInput {}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Opened {
    opened: bool,
}

impl Tool for Gate {
    type Input = NoInput;
    type Output = Opened;
    fn spec(&self) -> ToolSpec {
        ToolSpec::read("gate", "Waits until the test opens the gate.")
    }
    fn run(&self, cx: &Context<'_>, _: NoInput) -> fusion_tools::Result<Opened> {
        self.started.fetch_add(1, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            cx.checkpoint()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Opened { opened: true })
    }
}

/// A change whose apply counts itself, then waits at the same gate: an
/// apply that must still be running when its replica dies.
struct GatedChange {
    open: Arc<AtomicBool>,
    applied: Arc<AtomicUsize>,
}

impl MutateTool for GatedChange {
    type Input = NoInput;
    type Output = Opened;
    type Staged = ();
    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "gated_change",
            "Applies once the test opens the gate; counts its applies.",
        )
    }
    fn plan(&self, _: &Context<'_>, _: &NoInput) -> fusion_tools::Result<(Plan, ())> {
        Ok((
            Plan::new("a gated change", Vec::new(), Precondition::new(Vec::new())),
            (),
        ))
    }
    fn apply(&self, cx: &Context<'_>, _: &NoInput, (): ()) -> fusion_tools::Result<Opened> {
        self.applied.fetch_add(1, Ordering::SeqCst);
        while !self.open.load(Ordering::SeqCst) {
            cx.checkpoint()?;
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Opened { opened: true })
    }
}

struct Device {
    dir: tempfile::TempDir,
    host: HostHandle,
    credentials: Credentials,
    gate: Arc<AtomicBool>,
    gate_started: Arc<AtomicUsize>,
    applied: Arc<AtomicUsize>,
}

impl Device {
    /// Pairs a device through `url` with a code `user` mints, and starts it
    /// streaming to `url`. Its folder holds `marker.txt` naming `marker`.
    async fn pair(user: &User, url: &str, marker: &str) -> Device {
        let (status, pairing) = user.post("/api/pairing-codes", json!({})).await;
        assert_eq!(status, 200, "{pairing}");
        let http = Http::new(url, None, "test").unwrap();
        let credentials = enroll(&http, url, pairing["code"].as_str().unwrap(), "laptop", "test")
            .await
            .unwrap();
        Device::with_folder(url, credentials, marker).await
    }

    /// Pairs as [`Device::pair`] does, enrolling from loopback address
    /// `from`: the enroll limit counts 10 a minute per address.
    async fn pair_from(user: &User, url: &str, marker: &str, from: std::net::IpAddr) -> Device {
        let (status, pairing) = user.post("/api/pairing-codes", json!({})).await;
        assert_eq!(status, 200, "{pairing}");
        let code = pairing["code"].as_str().unwrap();
        let enrolled = support::enroll_with(url, code, Some(from)).await;
        let credentials = Credentials {
            server: url.to_string(),
            device_id: enrolled.device_id,
            token: enrolled.token,
            owner: enrolled.owner,
            owner_label: enrolled.owner_label,
            name: marker.to_string(),
            revoked: false,
        };
        Device::with_folder(url, credentials, marker).await
    }

    async fn with_folder(url: &str, credentials: Credentials, marker: &str) -> Device {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("{marker}.txt")), marker).unwrap();
        Device::start(url, credentials, dir).await
    }

    /// Starts (another instance of) a device with `credentials` on `url`.
    async fn start(url: &str, credentials: Credentials, dir: tempfile::TempDir) -> Device {
        let gate = Arc::new(AtomicBool::new(false));
        let gate_started = Arc::new(AtomicUsize::new(0));
        let applied = Arc::new(AtomicUsize::new(0));
        let mut toolbox = Toolbox::builtin();
        toolbox.add(Gate {
            open: Arc::clone(&gate),
            started: Arc::clone(&gate_started),
        });
        toolbox.add_mutating(GatedChange {
            open: Arc::clone(&gate),
            applied: Arc::clone(&applied),
        });
        let http = Http::new(url, None, "test").unwrap();
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let mut options = HostOptions::new(http, credentials.clone(), toolbox, scope, "test");
        options.backoff = (Duration::from_millis(20), Duration::from_millis(200));
        let host = run_host(options);
        let device = Device {
            dir,
            host,
            credentials,
            gate,
            gate_started,
            applied,
        };
        device.connected().await;
        device
    }

    fn id(&self) -> &str {
        &self.credentials.device_id
    }

    /// Waits until the device holds a stream; returns its session id.
    async fn connected(&self) -> String {
        let mut state = self.host.state();
        let state = tokio::time::timeout(
            Duration::from_secs(15),
            state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
        )
        .await
        .expect("the device connects")
        .unwrap()
        .clone();
        match state {
            ConnectionState::Connected { session_id, .. } => session_id,
            _ => unreachable!(),
        }
    }
}

/// The names in a device's folder, through `user`'s replica.
async fn list(user: &User, device_id: &str) -> (u16, Value) {
    user.post(
        &format!("/api/devices/{device_id}/calls"),
        json!({ "tool": "list_directory", "input": {} }),
    )
    .await
}

fn names(listing: &Value) -> Vec<String> {
    listing["output"]["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["path"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `user`'s replica sees the device online (or not).
async fn wait_online(user: &User, device_id: &str, online: bool) {
    for _ in 0..200 {
        let (_, detail) = user.get(&format!("/api/devices/{device_id}")).await;
        if detail["device"]["online"] == online {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never saw {device_id} online={online}", user.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_on_one_replica_reaches_a_device_streaming_to_another() {
    let Some((pg, nats)) = servers("a_call_on_one_replica_reaches_a_device_streaming_to_another") else {
        return;
    };
    let apps = replicas(3, &pg, &nats);
    let (a, b, c) = (&apps[0], &apps[1], &apps[2]);
    let on_a = User::sign_up(a, "cluster").await;
    let (on_b, on_c) = (on_a.on(b), on_a.on(c));
    let device = Device::pair(&on_b, &b.url, "north").await;

    // A sees it online through B, and a read made on A runs on it.
    wait_online(&on_a, device.id(), true).await;
    let (status, listing) = list(&on_a, device.id()).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(names(&listing), ["north.txt"]);

    // A change proposed on A and approved on C is applied once.
    let (status, proposal) = on_a
        .post(
            &format!("/api/devices/{}/calls", device.id()),
            json!({ "tool": "write_file", "input": { "path": "notes.txt", "content": "from C\n" } }),
        )
        .await;
    assert_eq!(
        (status, proposal["kind"].as_str()),
        (200, Some("proposal")),
        "{proposal}"
    );
    let decide = json!({ "proposal_id": proposal["id"], "decision": "approve" });
    let (status, applied) = on_c.post("/api/host/approve", decide.clone()).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["status"], "applied");
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("notes.txt")).unwrap(),
        "from C\n"
    );
    let (status, again) = on_b.post("/api/host/approve", decide).await;
    assert_eq!((status, again["code"].as_str()), (409, Some("proposal_resolved")));

    // Every replica's call log has the calls made on it, and the device's
    // stream never moved.
    // The log is written in batches off the call path (the apply's entry by
    // the replica it ran on): wait for it, as a reader of the log would.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let calls = loop {
        let (_, calls) = on_a.get("/api/calls").await;
        if calls["calls"].as_array().unwrap().len() >= 3 || std::time::Instant::now() > deadline {
            break calls;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(calls["calls"].as_array().unwrap().len() >= 3, "{calls}");
    assert!(matches!(
        &*device.host.state().borrow(),
        ConnectionState::Connected { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_stream_on_another_replica_displaces_the_older_one() {
    let Some((pg, nats)) = servers("a_newer_stream_on_another_replica_displaces_the_older_one") else {
        return;
    };
    let apps = replicas(2, &pg, &nats);
    let (a, b) = (&apps[0], &apps[1]);
    let on_a = User::sign_up(a, "displace").await;
    let first = Device::pair(&on_a, &a.url, "first").await;

    // The same device, started again elsewhere, streams to B.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("second.txt"), "second").unwrap();
    let second = Device::start(&b.url, first.credentials.clone(), dir).await;

    // A sends `replaced`: the first instance stops instead of fighting back.
    let stopped = tokio::time::timeout(Duration::from_secs(10), first.host.join())
        .await
        .expect("the displaced instance stops");
    assert!(
        matches!(stopped, Err(fusion_host::Error::Replaced)),
        "{stopped:?}"
    );

    // Calls made on A now reach the second instance, on B.
    wait_online(&on_a, second.id(), true).await;
    let (status, listing) = list(&on_a, second.id()).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(names(&listing), ["second.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoking_on_one_replica_closes_the_stream_on_another() {
    let Some((pg, nats)) = servers("revoking_on_one_replica_closes_the_stream_on_another") else {
        return;
    };
    let apps = replicas(2, &pg, &nats);
    let (a, b) = (&apps[0], &apps[1]);
    let on_a = User::sign_up(a, "revoke").await;
    let device = Device::pair(&on_a.on(b), &b.url, "x").await;
    wait_online(&on_a, device.id(), true).await;

    // A call waiting on the device from A fails with device_revoked.
    let waiting = {
        let on_a = on_a.on(a);
        let id = device.id().to_string();
        tokio::spawn(async move {
            on_a.post(
                &format!("/api/devices/{id}/calls"),
                json!({ "tool": "gate", "input": {} }),
            )
            .await
        })
    };
    while device.gate_started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = on_a
        .post(&format!("/api/devices/{}/revoke", device.id()), json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, err) = waiting.await.unwrap();
    assert_eq!(
        (status, err["code"].as_str()),
        (410, Some("device_revoked")),
        "{err}"
    );
    // B closed the stream with `revoked`; the device stops once its running
    // call ends.
    device.gate.store(true, Ordering::SeqCst);
    let stopped = tokio::time::timeout(Duration::from_secs(10), device.host.join())
        .await
        .expect("the revoked device stops");
    assert!(matches!(stopped, Err(fusion_host::Error::Revoked)), "{stopped:?}");
    let (_, detail) = on_a
        .get(&format!("/api/devices/{}", device.credentials.device_id))
        .await;
    assert_eq!(detail["device"]["online"], false, "{detail}");
}

/// A device streaming to B says it is updating to A (its load balancer's
/// pick for that request): the owner's page on B shows it updating, and
/// stops when A hears how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_reported_to_one_replica_shows_on_another() {
    let Some((pg, nats)) = servers("an_update_reported_to_one_replica_shows_on_another") else {
        return;
    };
    let apps = replicas(2, &pg, &nats);
    let (a, b) = (&apps[0], &apps[1]);
    let on_b = User::sign_up(b, "updating").await;
    let device = Device::pair(&on_b, &b.url, "x").await;
    let report = |status| fusion_tools::UpdateReport {
        status,
        from: "0.1.0".into(),
        to: "0.2.0".into(),
        reason: None,
    };
    let http = Http::new(&a.url, None, "test").unwrap();
    let updating = |want: Option<&'static str>| {
        let on_b = on_b.on(b);
        let id = device.id().to_string();
        async move {
            for _ in 0..200 {
                let (_, detail) = on_b.get(&format!("/api/devices/{id}")).await;
                if detail["device"]["updating"].as_str() == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("B never showed the device updating to {want:?}");
        }
    };
    fusion_host::report_update(
        &http,
        &device.credentials.token,
        &report(fusion_tools::UpdateStatus::Started),
    )
    .await
    .unwrap();
    updating(Some("0.2.0")).await;
    fusion_host::report_update(
        &http,
        &device.credentials.token,
        &report(fusion_tools::UpdateStatus::Updated),
    )
    .await
    .unwrap();
    updating(None).await;
}

/// An MCP client that keeps the progress notifications it hears.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Vec<rmcp::model::ProgressNotificationParam>>>);

impl rmcp::ClientHandler for Progress {
    async fn on_progress(
        &self,
        param: rmcp::model::ProgressNotificationParam,
        _: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        self.0.lock().unwrap().push(param);
    }
}

/// A device streaming to B reports its progress to B; the MCP client that
/// asked on A hears it, with the total the device gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_reported_to_one_replica_reaches_a_caller_on_another() {
    use rmcp::ServiceExt as _;
    let Some((pg, nats)) = servers("progress_reported_to_one_replica_reaches_a_caller_on_another") else {
        return;
    };
    let apps = replicas(2, &pg, &nats);
    let (a, b) = (&apps[0], &apps[1]);
    let on_a = User::sign_up(a, "progress").await;
    let device = Device::pair(&on_a.on(b), &b.url, "x").await;
    wait_online(&on_a, device.id(), true).await;
    let size: u64 = 16 << 30;
    std::fs::File::create(device.dir.path().join("big.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let (_, token) = on_a.post("/api/tokens", json!({})).await;
    let config = rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig::with_uri(
        format!("{}/mcp", a.url),
    )
    .auth_header(token["token"].as_str().unwrap());
    let heard = Progress::default();
    let client = heard
        .clone()
        .serve(rmcp::transport::StreamableHttpClientTransport::from_config(
            config,
        ))
        .await
        .unwrap();
    let Value::Object(arguments) = json!({ "device": device.id(), "path": "big.bin" }) else {
        unreachable!()
    };
    let call = rmcp::model::CallToolRequestParams::new("hash_file").with_arguments(arguments);
    let handle = client
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(call)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let from_device = || {
        heard.0.lock().unwrap().iter().any(|p| {
            p.total == Some(size as f64) && p.message.as_deref().is_some_and(|m| m.contains("bytes hashed"))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !from_device() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(from_device(), "{:?}", heard.0.lock().unwrap());
    handle.cancel(Some("enough".into())).await.unwrap();
    client.cancel().await.unwrap();
}

/// A task started on one replica is followed and cancelled through
/// another: a client need not come back to the replica it started on. The
/// cancel reaches the device; another user asking the other replica finds
/// no such task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_started_on_one_replica_is_followed_and_cancelled_on_another() {
    use common::tasks::{follower, poll, task_of};
    use rmcp::model::{CancelTaskParams, GetTaskParams, TaskStatus};
    let Some((pg, nats)) = servers("a_task_started_on_one_replica_is_followed_and_cancelled_on_another")
    else {
        return;
    };
    let apps = replicas(2, &pg, &nats);
    let (a, b) = (&apps[0], &apps[1]);
    let alice = User::sign_up(a, "tasks").await;
    let device = Device::pair(&alice, &a.url, "x").await;
    wait_online(&alice, device.id(), true).await;
    std::fs::File::create(device.dir.path().join("big.bin"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap();
    let (on_a, on_b) = (follower(a, token).await, follower(b, token).await);
    let Value::Object(arguments) = json!({ "device": device.id(), "path": "big.bin" }) else {
        unreachable!()
    };
    let call = rmcp::model::CallToolRequestParams::new("hash_file").with_arguments(arguments);
    let id = task_of(on_a.peer().call_tool_once(call).await.unwrap());
    let activity = device.host.activity();

    // B does not run it, and follows it all the same.
    let running = poll(&on_b, &id, |t| {
        t.task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("bytes hashed") || m.contains("running on the device"))
    })
    .await;
    assert_eq!(running.status(), TaskStatus::Working, "{running:?}");
    assert_eq!(activity.running(), 1, "the device is hashing");

    // Another user, on B: no such task, said at once (A answers it).
    let bob = User::sign_up(b, "tasks-bob").await;
    let (_, bob_token) = bob.post("/api/tokens", json!({})).await;
    let other = follower(b, bob_token["token"].as_str().unwrap()).await;
    let asked = std::time::Instant::now();
    let e = other.peer().get_task(GetTaskParams::new(&id)).await.unwrap_err();
    assert!(e.to_string().contains("no task"), "{e}");
    assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());
    // An id no replica has: no such task, once the others stayed silent.
    let e = on_b
        .peer()
        .get_task(GetTaskParams::new("not-a-task"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no task"), "{e}");

    // Cancelled through B: the task on A ends, and so does the device's work.
    on_b.peer().cancel_task(CancelTaskParams::new(&id)).await.unwrap();
    let cancelled = poll(&on_a, &id, |t| t.status().is_terminal()).await;
    assert_eq!(cancelled.status(), TaskStatus::Cancelled, "{cancelled:?}");
    let seen_on_b = on_b.peer().get_task(GetTaskParams::new(&id)).await.unwrap().task;
    assert_eq!(seen_on_b.status(), TaskStatus::Cancelled, "{seen_on_b:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while activity.running() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(activity.running(), 0, "the cancel reached the device");
    for client in [on_a, on_b, other] {
        client.cancel().await.unwrap();
    }
}

/// Forwards TCP connections to whichever replica `target` names now, as a
/// load balancer would.
async fn balancer(target: Arc<Mutex<String>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = target.lock().unwrap().clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    format!("http://{addr}")
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Three replicas, and a device that reaches them through a balancer
/// pointing at the first; its owner signed in on the third.
struct Failover {
    apps: Vec<App>,
    target: Arc<Mutex<String>>,
    on_c: User,
    device: Device,
    first_session: String,
}

impl Failover {
    async fn start(pg: &str, nats: &str, name: &str) -> Failover {
        let apps = replicas(3, pg, nats);
        let on_c = User::sign_up(&apps[2], name).await;
        let target = Arc::new(Mutex::new(host_port(&apps[0].url)));
        let lb = balancer(Arc::clone(&target)).await;
        let device = Device::pair(&on_c, &lb, name).await;
        wait_online(&on_c, device.id(), true).await;
        let first_session = device.connected().await;
        Failover {
            apps,
            target,
            on_c,
            device,
            first_session,
        }
    }

    /// Turns the balancer to the second replica and kills the first (SIGKILL);
    /// returns once the device streams again, through the second.
    async fn kill_the_holder(&mut self) {
        *self.target.lock().unwrap() = host_port(&self.apps[1].url);
        self.apps[0].kill();
        let first = self.first_session.clone();
        let mut state = self.device.host.state();
        tokio::time::timeout(
            Duration::from_secs(15),
            state.wait_for(
                |s| matches!(s, ConnectionState::Connected { session_id, .. } if *session_id != first),
            ),
        )
        .await
        .expect("the device reconnects through the balancer")
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_survives_the_death_of_the_replica_holding_the_device() {
    let Some((pg, nats)) = servers("a_call_survives_the_death_of_the_replica_holding_the_device") else {
        return;
    };
    let mut f = Failover::start(&pg, &nats, "moved").await;

    // A call made on C is running on the device, streaming through A...
    let call = {
        let on_c = f.on_c.on(&f.apps[2]);
        let id = f.device.id().to_string();
        tokio::spawn(async move {
            on_c.post(
                &format!("/api/devices/{id}/calls"),
                json!({ "tool": "gate", "input": {}, "timeout_s": 60 }),
            )
            .await
        })
    };
    while f.device.gate_started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // ...when A dies, and the device moves to B.
    f.kill_the_holder().await;

    // B re-sends the call (the device runs it once), and its result reaches
    // the caller on C.
    f.device.gate.store(true, Ordering::SeqCst);
    let (status, out) = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends")
        .unwrap();
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["opened"], true);
    assert_eq!(
        f.device.gate_started.load(Ordering::SeqCst),
        1,
        "the call ran once"
    );

    // And the next call made on C goes to B.
    let (status, listing) = list(&f.on_c, f.device.id()).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(names(&listing), ["moved.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_apply_running_when_its_replica_dies_is_applied_once() {
    let Some((pg, nats)) = servers("an_apply_running_when_its_replica_dies_is_applied_once") else {
        return;
    };
    let mut f = Failover::start(&pg, &nats, "apply-once").await;

    // Proposed and approved on C; the apply runs on the device through A.
    let (status, proposal) = f
        .on_c
        .post(
            &format!("/api/devices/{}/calls", f.device.id()),
            json!({ "tool": "gated_change", "input": {} }),
        )
        .await;
    assert_eq!(
        (status, proposal["kind"].as_str()),
        (200, Some("proposal")),
        "{proposal}"
    );
    let approving = {
        let on_c = f.on_c.on(&f.apps[2]);
        let decide = json!({ "proposal_id": proposal["id"], "decision": "approve" });
        tokio::spawn(async move { on_c.post("/api/host/approve", decide).await })
    };
    while f.device.applied.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A dies mid-apply; the device moves to B, which sends the apply again
    // from the store.
    f.kill_the_holder().await;
    f.device.gate.store(true, Ordering::SeqCst);
    let (status, applied) = tokio::time::timeout(Duration::from_secs(30), approving)
        .await
        .expect("the approval ends")
        .unwrap();
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["status"], "applied", "{applied}");
    assert_eq!(f.device.applied.load(Ordering::SeqCst), 1, "applied exactly once");
    // And once more after it all settled: the re-sent apply was not run.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(f.device.applied.load(Ordering::SeqCst), 1, "applied exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_devices_on_three_replicas_answer_every_call_they_are_sent() {
    let Some((pg, nats)) = servers("a_hundred_devices_on_three_replicas_answer_every_call_they_are_sent")
    else {
        return;
    };
    let apps = replicas(3, &pg, &nats);
    let user = User::sign_up(&apps[0], "hundred").await;
    let users: Vec<User> = apps.iter().map(|app| user.on(app)).collect();
    let mut devices = Vec::new();
    for n in 0..100u8 {
        let (app, user) = (&apps[n as usize % 3], &users[n as usize % 3]);
        let from = std::net::IpAddr::from([127, 0, 1, n + 1]);
        devices.push(Device::pair_from(user, &app.url, &format!("device-{n}"), from).await);
    }
    for device in &devices {
        for u in &users {
            wait_online(u, device.id(), true).await;
        }
    }

    // Ten concurrent calls per device, each from a replica picked at random.
    let users = Arc::new(users);
    let mut calls = Vec::new();
    for (n, device) in devices.iter().enumerate() {
        for _ in 0..10 {
            let mut pick = [0u8; 1];
            getrandom::fill(&mut pick).unwrap();
            let (users, id) = (Arc::clone(&users), device.id().to_string());
            calls.push(tokio::spawn(async move {
                let (status, listing) = list(&users[pick[0] as usize % 3], &id).await;
                (n, status, names(&listing), listing)
            }));
        }
    }
    let mut outcomes: HashMap<&str, usize> = HashMap::new();
    for call in calls {
        let (n, status, names, listing) = call.await.unwrap();
        let outcome = if status != 200 {
            eprintln!("device-{n}: {status} {listing}");
            "lost"
        } else if names != [format!("device-{n}.txt")] {
            eprintln!("device-{n} answered with {names:?}");
            "misrouted"
        } else {
            "ok"
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    assert_eq!(outcomes, HashMap::from([("ok", 1000)]));
}

/// A NATS server of the test's own, stopped and started again on the same
/// port. `FUSION_TEST_NATS_SERVER` names the binary, else `nats-server` on
/// the PATH or in /usr/sbin.
struct OwnNats {
    binary: std::path::PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnNats {
    fn find() -> Option<std::path::PathBuf> {
        if let Ok(path) = std::env::var("FUSION_TEST_NATS_SERVER") {
            return Some(path.into());
        }
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([std::path::PathBuf::from("/usr/sbin")])
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    }

    async fn start(binary: std::path::PathBuf) -> OwnNats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = OwnNats {
            binary,
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        nats.resume().await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn resume(&mut self) {
        let child = std::process::Command::new(&self.binary)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_nats_calls_across_replicas_fail_fast_and_recover_by_themselves() {
    let test = "without_nats_calls_across_replicas_fail_fast_and_recover_by_themselves";
    let Ok(pg) = std::env::var("FUSION_TEST_POSTGRES_URL") else {
        eprintln!("{test}: skipped: set FUSION_TEST_POSTGRES_URL to run replicas on PostgreSQL");
        return;
    };
    let Some(binary) = OwnNats::find() else {
        eprintln!("{test}: skipped: no nats-server binary (set FUSION_TEST_NATS_SERVER)");
        return;
    };
    let mut nats = OwnNats::start(binary).await;
    let apps = replicas(2, &pg, &nats.url());
    let (a, b) = (&apps[0], &apps[1]);
    let on_a = User::sign_up(a, "outage").await;
    let on_b = on_a.on(b);
    let device = Device::pair(&on_b, &b.url, "kept").await;
    let session = device.connected().await;
    wait_online(&on_a, device.id(), true).await;
    assert_eq!(list(&on_a, device.id()).await.0, 200);

    // NATS goes away: a call from A to the device on B fails with
    // cluster_unavailable instead of waiting out the offline grace...
    nats.stop();
    let mut refused = None;
    for _ in 0..100 {
        let (status, out) = list(&on_a, device.id()).await;
        if status != 200 {
            refused = Some((status, out));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, out) = refused.expect("calls across replicas fail while NATS is away");
    assert_eq!(
        (status, out["code"].as_str()),
        (503, Some("cluster_unavailable")),
        "{out}"
    );
    assert!(out["message"].as_str().unwrap().contains("try again"), "{out}");

    // ...while the device stays connected to B, which still reaches it.
    let (status, listing) = list(&on_b, device.id()).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(names(&listing), ["kept.txt"]);

    // NATS comes back (empty: its routing state was in memory), and A
    // reaches the device again without a restart of anything.
    nats.resume().await;
    let mut recovered = false;
    for _ in 0..300 {
        if list(&on_a, device.id()).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "A reaches the device after NATS returns");
    assert_eq!(device.connected().await, session, "the device never reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_whose_replica_died_long_ago_is_dropped_not_sent() {
    let Some((pg, nats)) = servers("a_call_whose_replica_died_long_ago_is_dropped_not_sent") else {
        return;
    };
    let apps = replicas(2, &pg, &nats);
    let user = User::sign_up(&apps[0], "orphan").await;
    let device = Device::pair(&user.on(&apps[1]), &apps[1].url, "orphan").await;
    let (credentials, dir, gate_started) = (
        device.credentials.clone(),
        tempfile::tempdir().unwrap(),
        Arc::clone(&device.gate_started),
    );
    device.host.shutdown();
    device.host.join().await.unwrap();

    // A call made a day ago by a replica that has since died, still in the
    // store; and one made a moment ago by a replica that died just now.
    let db = sqlx::postgres::PgPool::connect(&pg).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let id = credentials.device_id.clone();
    for (call_id, age_ms) in [
        (format!("call_old_{id}"), 86_400_000i64),
        (format!("call_new_{id}"), 0),
    ] {
        let call =
            json!({ "call_id": call_id, "tool": "gate", "mode": "run", "input": {}, "timeout_ms": 60_000 });
        sqlx::query(
            "INSERT INTO pending_calls (call_id, device_id, caller, call, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&call_id)
        .bind(&id)
        .bind("rep_gone")
        .bind(call.to_string())
        .bind(now_ms - age_ms)
        .execute(&db)
        .await
        .unwrap();
    }

    // The device comes back: it gets the recent call (its result finds
    // nobody waiting and is dropped), never the day-old one.
    let back = Device::start(&apps[1].url, credentials, dir).await;
    back.gate.store(true, Ordering::SeqCst);
    let count = |call_id: String| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pending_calls WHERE call_id = $1")
                .bind(call_id)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    for _ in 0..200 {
        if count(format!("call_new_{id}")).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        count(format!("call_old_{id}")).await,
        0,
        "the day-old call is deleted"
    );
    assert_eq!(
        count(format!("call_new_{id}")).await,
        0,
        "the recent one was answered"
    );
    assert_eq!(
        back.gate_started.load(Ordering::SeqCst),
        1,
        "only the recent call ran"
    );
    assert_eq!(gate_started.load(Ordering::SeqCst), 0);
}
