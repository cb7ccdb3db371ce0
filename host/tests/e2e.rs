//! The device runtime against the real dispatcher, over HTTP on 127.0.0.1:0
//! (and HTTPS with a test CA).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fusion_host::{ConnectionState, Credentials, Error, HostHandle, HostOptions, Http, enroll, run_host};
use fusion_host_server::{CallOptions, CallOutcome, Config, Dispatcher, MemoryStore, ProposalStatus, router};
use fusion_tools::{Access, Context, Scope, Tool, ToolSpec, Toolbox};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

/// Upload chunks of the tests' blob servers.
const CHUNK: u64 = 1024 * 1024;

struct Server {
    addr: SocketAddr,
    dispatcher: Dispatcher,
    store: Arc<MemoryStore>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        Self::on(Arc::new(MemoryStore::new()), "127.0.0.1:0".parse().unwrap()).await
    }

    async fn on(store: Arc<MemoryStore>, addr: SocketAddr) -> Server {
        Self::with_config(store, addr, Config::default()).await
    }

    async fn with_config(store: Arc<MemoryStore>, addr: SocketAddr, config: Config) -> Server {
        let dispatcher = Dispatcher::new(store.clone(), config);
        let app = axum::Router::new().nest("/api/host", router(dispatcher.clone()));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let d = dispatcher.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(d.stopped())
                .await
                .unwrap();
        });
        Server {
            addr,
            dispatcher,
            store,
            task,
        }
    }

    /// A server keeping blobs in `dir`, taking uploads in chunks of
    /// [`CHUNK`] so a few MiB make several.
    async fn with_blobs(dir: &std::path::Path) -> Server {
        let mut blobs = fusion_host_server::blobs::BlobConfig::local(dir).unwrap();
        blobs.chunk_bytes = CHUNK;
        let config = Config {
            blobs: Some(fusion_host_server::blobs::Blobs::new(blobs)),
            ..Config::default()
        };
        Self::with_config(
            Arc::new(MemoryStore::new()),
            "127.0.0.1:0".parse().unwrap(),
            config,
        )
        .await
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server the way a deploy would, keeping its store.
    async fn restart(self) -> Server {
        let (store, addr) = (self.store.clone(), self.addr);
        self.stop().await;
        Server::on(store, addr).await
    }

    /// Stops the server; its store lives on in the returned handle.
    async fn stop(self) -> Arc<MemoryStore> {
        self.dispatcher.shutdown();
        self.task.await.unwrap();
        self.store
    }
}

/// A read tool that runs until cancelled (or 30 s), recording that it started
/// and that it saw the cancellation.
struct Slow {
    started: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoInput {}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct NoOutput {}

impl Tool for Slow {
    type Input = NoInput;
    type Output = NoOutput;
    fn spec(&self) -> ToolSpec {
        ToolSpec::read("slow", "Waits until cancelled; for tests.")
    }
    fn run(&self, cx: &Context<'_>, _: NoInput) -> fusion_tools::Result<NoOutput> {
        self.started.store(true, Ordering::SeqCst);
        for _ in 0..3000 {
            if let Err(e) = cx.checkpoint() {
                self.cancelled.store(true, Ordering::SeqCst);
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(NoOutput {})
    }
}

struct Device {
    dir: tempfile::TempDir,
    host: HostHandle,
    credentials: Credentials,
    started: Arc<AtomicBool>,
    cancelled: Arc<AtomicBool>,
}

async fn start_device(server: &Server, owner: &str) -> Device {
    start_device_in(server, owner, tempfile::tempdir().unwrap()).await
}

/// A device whose allowed folder is `dir`, prepared by the test.
async fn start_device_in(server: &Server, owner: &str, dir: tempfile::TempDir) -> Device {
    start_device_through(server, &server.url(), owner, dir).await
}

/// A device of `server` that reaches it at `url` (a proxy in front of it).
async fn start_device_through(server: &Server, url: &str, owner: &str, dir: tempfile::TempDir) -> Device {
    let http = Http::new(url, None, "test").unwrap();
    let code = server.dispatcher.mint_pairing_code(owner).await.unwrap();
    let credentials = enroll(&http, url, &code.code, "test-laptop", "test")
        .await
        .unwrap();
    assert_eq!(credentials.owner, owner);
    let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
    let (started, cancelled) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let mut toolbox = Toolbox::builtin();
    toolbox.add(Slow {
        started: Arc::clone(&started),
        cancelled: Arc::clone(&cancelled),
    });
    let mut options = HostOptions::new(http, credentials.clone(), toolbox, scope, "test");
    options.backoff = (Duration::from_millis(20), Duration::from_millis(200));
    options.shutdown_grace = Duration::from_millis(200);
    let host = run_host(options);
    wait_connected(&host).await;
    Device {
        dir,
        host,
        credentials,
        started,
        cancelled,
    }
}

async fn wait_connected(host: &HostHandle) {
    let mut state = host.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
    )
    .await
    .expect("connected within 10 s")
    .unwrap();
}

/// `stat` of the device's folder, as alice: the call most tests make.
async fn stat(server: &Server, device_id: &str) -> fusion_host_server::Result<CallOutcome> {
    stat_as_alice(&server.dispatcher, device_id).await
}

fn output(outcome: CallOutcome) -> Value {
    match outcome {
        CallOutcome::Output(o) => o.output,
        CallOutcome::Proposal(p) => panic!("unexpected proposal {p:?}"),
    }
}

#[tokio::test]
async fn enroll_connect_and_answer_a_read_call() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    std::fs::write(device.dir.path().join("north.e57"), "x").unwrap();
    let out = server
        .dispatcher
        .call(
            "alice",
            &device.credentials.device_id,
            "glob",
            json!({ "pattern": "*.e57" }),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(output(out)["matches"][0]["path"], "north.e57");
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert!(devices[0].online);
    let manifest = devices[0].manifest.as_ref().unwrap();
    assert_eq!(manifest.tools.len(), 20);
    assert_eq!(manifest.roots.len(), 1);
    device.host.shutdown();
    assert_eq!(device.host.join().await.unwrap().cancelled_calls, 0);
}

#[tokio::test]
async fn propose_approve_apply_writes_the_file() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    let id = &device.credentials.device_id;
    let input = json!({ "path": "report.txt", "content": "scan registered\n" });
    let outcome = server
        .dispatcher
        .call("alice", id, "write_file", input, CallOptions::default())
        .await
        .unwrap();
    let CallOutcome::Proposal(p) = outcome else {
        panic!("expected a proposal")
    };
    let file = device.dir.path().join("report.txt");
    assert!(!file.exists(), "planning writes nothing");
    let applied = server.dispatcher.approve("alice", &p.id).await.unwrap();
    assert_eq!(applied.status, ProposalStatus::Applied);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "scan registered\n");
}

#[tokio::test]
async fn a_rename_batch_is_one_proposal_with_its_problems_named() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    let id = &device.credentials.device_id;
    for i in 1..=480 {
        std::fs::write(device.dir.path().join(format!("Scan_{i:04}.e57")), i.to_string()).unwrap();
    }
    let renames: Vec<Value> = (1..=480)
        .map(|i| json!({ "from": format!("Scan_{i:04}.e57"), "to": format!("2026-11-03_north_{i:03}.e57") }))
        .collect();
    let outcome = server
        .dispatcher
        .call(
            "alice",
            id,
            "rename_batch",
            json!({ "renames": renames }),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let CallOutcome::Proposal(p) = outcome else {
        panic!("expected a proposal")
    };
    assert_eq!(p.plan.effects_total, 480);
    assert!(
        p.plan.summary.starts_with("rename 480 entries"),
        "{}",
        p.plan.summary
    );
    let pending = server
        .dispatcher
        .store()
        .proposals("alice", Some(ProposalStatus::Pending))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1, "one approval for the whole batch");
    let applied = server.dispatcher.approve("alice", &p.id).await.unwrap();
    assert_eq!(applied.status, ProposalStatus::Applied);
    assert!(device.dir.path().join("2026-11-03_north_480.e57").exists());
    assert!(!device.dir.path().join("Scan_0001.e57").exists());

    // Problems come back as one error whose details list each.
    let e = server
        .dispatcher
        .call(
            "alice",
            id,
            "rename_batch",
            json!({ "renames": [
                { "from": "missing.e57", "to": "x.e57" },
                { "from": "2026-11-03_north_001.e57", "to": "2026-11-03_north_002.e57" },
            ] }),
            CallOptions::default(),
        )
        .await
        .unwrap_err();
    let body = e.to_body();
    assert_eq!(body.code, "invalid_batch");
    let problems = &body.details.unwrap()["problems"];
    assert_eq!(problems[0]["code"], "source_missing");
    assert_eq!(problems[1]["code"], "target_exists");
}

/// A journal in the shared folder is not the device's (it keeps its own in
/// its state folder): one planted there, naming a file that sits at a
/// temporary name, is reported at start and moves nothing.
#[cfg(unix)]
#[tokio::test]
async fn the_device_ignores_a_rename_journal_planted_in_its_folder() {
    use std::os::unix::fs::MetadataExt as _;
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("payload"), "a").unwrap();
    let md = std::fs::symlink_metadata(dir.path().join("payload")).unwrap();
    let id = format!("{:x}:{:x}", md.dev(), md.ino());
    std::fs::rename(
        dir.path().join("payload"),
        dir.path().join(".fusion-rename-0000feed-0"),
    )
    .unwrap();
    let journal = json!({ "version": 2, "root": dir.path(), "batch": "0000feed", "items": [
        { "from": ".profile", "to": "north_1.e57", "temp": ".fusion-rename-0000feed-0", "id": id },
    ] });
    std::fs::write(dir.path().join(fusion_tools::RENAME_JOURNAL), journal.to_string()).unwrap();
    let device = start_device_in(&server, "alice", dir).await;
    let recovered = device.host.recovered();
    assert_eq!(recovered.len(), 1);
    assert!(
        matches!(
            recovered[0].outcome,
            fusion_tools::RecoveryOutcome::Ignored { .. }
        ),
        "{recovered:?}"
    );
    assert!(recovered[0].to_string().contains("no file was moved"));
    assert!(!device.dir.path().join(".profile").exists());
    assert!(device.dir.path().join(".fusion-rename-0000feed-0").exists());
    assert!(device.dir.path().join(fusion_tools::RENAME_JOURNAL).exists());
}

#[tokio::test]
async fn reconnects_by_itself_after_a_server_restart() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    let mut state = device.host.state();
    let server = server.restart().await;
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Retrying { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    wait_connected(&device.host).await;
    let out = stat(&server, &device.credentials.device_id).await.unwrap();
    assert_eq!(output(out)["kind"], "directory");
}

#[tokio::test]
async fn revocation_stops_the_device_with_the_repair_message() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    server
        .dispatcher
        .revoke("alice", &device.credentials.device_id)
        .await
        .unwrap();
    let e = tokio::time::timeout(WAIT, device.host.join())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Revoked), "{e:?}");
    assert_eq!(
        e.to_string(),
        "this device was revoked — pair it again with a new code from /devices"
    );

    // Starting again with the revoked credentials stops at once, same message.
    let http = Http::new(&server.url(), None, "test").unwrap();
    let scope = Scope::single(device.dir.path(), Access::ReadOnly).unwrap();
    let again = run_host(HostOptions::new(
        http,
        device.credentials.clone(),
        Toolbox::builtin(),
        scope,
        "test",
    ));
    let e = tokio::time::timeout(WAIT, again.join())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Revoked), "{e:?}");
}

#[tokio::test]
async fn a_slow_call_is_cancelled_when_the_caller_times_out() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    let options = CallOptions {
        timeout: Some(Duration::from_millis(300)),
        ..CallOptions::default()
    };
    let e = server
        .dispatcher
        .call("alice", &device.credentials.device_id, "slow", json!({}), options)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "timeout");
    wait_until(&device.cancelled, "the tool never saw the cancellation").await;
}

async fn wait_until(flag: &AtomicBool, failure: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !flag.load(Ordering::SeqCst) {
        assert!(tokio::time::Instant::now() < deadline, "{failure}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shutdown_cancels_calls_still_running_after_the_grace() {
    let server = Server::start().await;
    let device = start_device(&server, "alice").await;
    let d = server.dispatcher.clone();
    let id = device.credentials.device_id.clone();
    tokio::spawn(async move {
        d.call("alice", &id, "slow", json!({}), CallOptions::default())
            .await
    });
    wait_until(&device.started, "the call never started").await;
    device.host.shutdown();
    let stopped = tokio::time::timeout(WAIT, device.host.join())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.cancelled_calls, 1);
    assert!(device.cancelled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn enroll_errors_say_what_to_do() {
    let server = Server::start().await;
    let http = Http::new(&server.url(), None, "test").unwrap();
    let e = enroll(&http, &server.url(), "BCDF-GHJK", "x", "test")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("invalid_code"));
    assert!(e.to_string().contains("/devices"), "{e}");

    // Nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let e = enroll(
        &Http::new(&url, None, "test").unwrap(),
        &url,
        "BCDF-GHJK",
        "x",
        "test",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e:?}");
    assert!(!e.is_fatal());

    // Something that is not a fusion-host server.
    let other =
        axum::Router::new().fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "<html>nope</html>") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, other).await.unwrap() });
    let e = enroll(
        &Http::new(&url, None, "test").unwrap(),
        &url,
        "BCDF-GHJK",
        "x",
        "test",
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NotAServer { status: 404, .. }), "{e:?}");
    assert!(e.to_string().contains("server address"), "{e}");
}

mod tls {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use tokio_rustls::TlsAcceptor;

    /// Serves the device routes over TLS with a certificate from a fresh test CA.
    /// Returns the URL and the CA's PEM.
    async fn tls_server() -> (String, String, Dispatcher) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Fusion Test Root CA");
        ca.distinguished_name
            .push(DnType::OrganizationName, "Acme Surveying");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca_cert, &ca_key)
            .unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), Config::default());
        let app = axum::Router::new().nest("/api/host", router(dispatcher.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A refused handshake is the point of one test: ignore it.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                            .await;
                });
            }
        });
        (format!("https://localhost:{port}"), ca_cert.pem(), dispatcher)
    }

    #[tokio::test]
    async fn an_extra_ca_bundle_is_trusted() {
        let (url, ca_pem, dispatcher) = tls_server().await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("acme-root.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        let http = Http::new(&url, Some(&ca), "test").unwrap();
        let code = dispatcher.mint_pairing_code("alice").await.unwrap();
        let credentials = enroll(&http, &url, &code.code, "laptop", "test").await.unwrap();
        assert_eq!(credentials.owner, "alice");
    }

    #[tokio::test]
    async fn an_unknown_issuer_is_named_with_the_fix() {
        let (url, _, dispatcher) = tls_server().await;
        let http = Http::new(&url, None, "test").unwrap();
        let code = dispatcher.mint_pairing_code("alice").await.unwrap();
        let e = enroll(&http, &url, &code.code, "laptop", "test")
            .await
            .unwrap_err();
        let Error::UntrustedIssuer { issuer } = &e else {
            panic!("{e:?}")
        };
        assert!(issuer.contains("Fusion Test Root CA"), "{issuer}");
        let message = e.to_string();
        assert!(
            message.contains("--ca-cert") && message.contains("trust store"),
            "{message}"
        );
        assert!(e.is_fatal());
    }
}

#[tokio::test]
async fn a_reconnect_sends_the_last_event_id() {
    // A proxy in front of the real server that records each stream request's Last-Event-ID.
    let server = Server::start().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
    let proxy_url = proxy(server.url(), Arc::default(), Arc::clone(&seen)).await;

    let http = Http::new(&proxy_url, None, "test").unwrap();
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let credentials = enroll(&http, &proxy_url, &code.code, "laptop", "test")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
    let mut options = HostOptions::new(http, credentials.clone(), Toolbox::builtin(), scope, "test");
    options.backoff = (Duration::from_millis(20), Duration::from_millis(200));
    let host = run_host(options);
    wait_connected(&host).await;
    let out = stat(&server, &credentials.device_id).await;
    assert!(out.is_ok());
    // The server restarts; the device comes back through the proxy.
    let mut state = host.state();
    let server = server.restart().await;
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Retrying { .. })),
    )
    .await
    .unwrap()
    .unwrap();
    wait_connected(&host).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&None), "the first stream has no Last-Event-ID");
    assert_eq!(seen.last(), Some(&Some("1".to_string())), "{seen:?}");
    drop(server);
}

/// Over real HTTP (so in real time): the paused-clock version of this, over
/// a fed byte stream, is `heartbeat_comments_keep_an_idle_stream_alive`.
#[tokio::test]
async fn an_idle_device_stays_on_one_session_across_heartbeats() {
    let config = Config {
        heartbeat: Duration::from_secs(1),
        ..Config::default()
    };
    let server = Server::with_config(
        Arc::new(MemoryStore::new()),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .await;
    let device = start_device(&server, "alice").await;
    let mut state = device.host.state();
    let connected = state.borrow_and_update().clone();
    // Five heartbeat intervals with no calls; the device's idle timeout is three.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !state.has_changed().unwrap(),
        "the device reconnected while idle: {:?}",
        *state.borrow()
    );
    assert_eq!(*state.borrow(), connected);
    let out = server.dispatcher.devices("alice").await.unwrap();
    assert!(out[0].online);
}

#[tokio::test(start_paused = true)]
async fn after_a_server_restart_the_device_is_back_within_a_second_and_calls_wait_for_it() {
    let server = Server::start().await;
    let http = Http::new(&server.url(), None, "test").unwrap();
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let credentials = enroll(&http, &server.url(), &code.code, "laptop", "test")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
    // The production backoff: 0.5 s doubling to 30 s.
    let host = run_host(HostOptions::new(
        http,
        credentials.clone(),
        Toolbox::builtin(),
        scope,
        "test",
    ));
    wait_connected(&host).await;
    let addr = server.addr;
    let store = server.stop().await;
    // Down for a while: long enough for the plain backoff to reach 8-16 s steps.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let server = Server::on(store, addr).await;
    let back = tokio::time::Instant::now();
    // A call right after the restart waits for the device instead of failing.
    let out = stat(&server, &credentials.device_id).await.unwrap();
    assert_eq!(output(out)["kind"], "directory");
    let took = back.elapsed();
    assert!(
        took <= fusion_host::FAST_RECONNECT + Duration::from_millis(200),
        "the device took {took:?} to come back"
    );
    assert!(server.dispatcher.config().offline_grace > fusion_host::FAST_RECONNECT * 2);
}

/// An upstream response as the proxy's own, its body streamed.
fn forwarded(response: reqwest::Response) -> axum::response::Response {
    let status = response.status();
    let headers = response.headers().clone();
    let mut out = axum::response::Response::new(axum::body::Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// A reverse proxy to `upstream` whose `/result` requests hang while `hang` is set.
async fn proxy(
    upstream: String,
    hang: Arc<AtomicBool>,
    record: Arc<std::sync::Mutex<Vec<Option<String>>>>,
) -> String {
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (upstream, hang, record) = (upstream.clone(), Arc::clone(&hang), Arc::clone(&record));
        async move {
            if req.uri().path().ends_with("/stream") {
                let id = req
                    .headers()
                    .get("last-event-id")
                    .map(|v| v.to_str().unwrap().to_string());
                record.lock().unwrap().push(id);
            }
            if req.uri().path().ends_with("/result") && hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            let client = reqwest::Client::new();
            let url = format!("{upstream}{}", req.uri());
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let mut request = client.request(parts.method, url).body(body);
            for (k, v) in &parts.headers {
                request = request.header(k, v);
            }
            forwarded(request.send().await.unwrap())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn an_apply_redelivered_after_a_crash_answers_with_its_first_result() {
    let server = Server::start().await;
    let hang = Arc::new(AtomicBool::new(false));
    let proxy_url = proxy(server.url(), Arc::clone(&hang), Arc::default()).await;
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let http = Http::new(&proxy_url, None, "test").unwrap();
    let credentials = enroll(&http, &proxy_url, &code.code, "laptop", "test")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let journal = state_dir.path().join("applied.json");
    let options = |http: Http| {
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let mut options = HostOptions::new(http, credentials.clone(), Toolbox::builtin(), scope, "test");
        options.backoff = (Duration::from_millis(20), Duration::from_millis(200));
        options.applied_journal = Some(journal.clone());
        options
    };
    let first = run_host(options(http));
    wait_connected(&first).await;
    let outcome = server
        .dispatcher
        .call(
            "alice",
            &credentials.device_id,
            "write_file",
            json!({ "path": "report.txt", "content": "registered\n" }),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let CallOutcome::Proposal(p) = outcome else {
        panic!("expected a proposal")
    };

    // The apply's result never reaches the server, and the device dies.
    hang.store(true, Ordering::SeqCst);
    let d = server.dispatcher.clone();
    let proposal_id = p.id.clone();
    let approval = tokio::spawn(async move { d.approve("alice", &proposal_id).await });
    let file = dir.path().join("report.txt");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(file.exists() && journal.exists()) {
        assert!(tokio::time::Instant::now() < deadline, "the apply never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.shutdown();

    // A new process with the same credentials and journal gets the apply again.
    let second = run_host(options(Http::new(&server.url(), None, "test").unwrap()));
    let applied = tokio::time::timeout(WAIT, approval)
        .await
        .expect("the approval finished")
        .unwrap()
        .unwrap();
    assert_eq!(applied.status, ProposalStatus::Applied, "{applied:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "registered\n");
    second.shutdown();
    second.join().await.unwrap();
}

/// `fusion-host login`'s polling: at the server's interval, and 5 s slower
/// for this and every later poll once the server says `slow_down`.
#[tokio::test]
async fn login_polls_at_the_interval_and_slows_down_when_told() {
    let (clock, time) = fusion_host_server::Clock::manual(std::time::SystemTime::now());
    let config = Config {
        verification_uri: Some("https://app.example.com/device".into()),
        clock,
        ..Config::default()
    };
    let server = Server::with_config(
        Arc::new(MemoryStore::new()),
        "127.0.0.1:0".parse().unwrap(),
        config,
    )
    .await;
    let http = Http::new(&server.url(), None, "test").unwrap();
    let request = fusion_host::request_login(&http, "site-tablet", "0.1.0")
        .await
        .unwrap();
    assert_eq!(request.interval(), Duration::from_secs(5));

    let slept = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sleep = |d: Duration| {
        let (slept, time, dispatcher, code) = (
            Arc::clone(&slept),
            time.clone(),
            server.dispatcher.clone(),
            request.user_code.clone(),
        );
        async move {
            let n = {
                let mut slept = slept.lock().unwrap();
                slept.push(d);
                slept.len()
            };
            // The first wait is cut short, so the next poll is too soon.
            if n > 1 {
                time.advance(d);
            }
            if n == 3 {
                dispatcher.approve_device("alice", None, &code).await.unwrap();
            }
        }
    };
    let credentials = fusion_host::wait_for_approval(&http, &server.url(), "site-tablet", &request, sleep)
        .await
        .unwrap();
    assert_eq!(credentials.owner, "alice");
    let secs: Vec<u64> = slept.lock().unwrap().iter().map(Duration::as_secs).collect();
    // pending → 5 s; slow_down → 10 s from then on.
    assert_eq!(secs, [5, 10, 10]);
}

/// Files by handle: `upload` sends a file of several chunks and answers a
/// handle whose SHA-256 is the file's; `download` on another of the owner's
/// devices writes it after approval, byte for byte; another owner's device
/// cannot see it; a blob changed on the server is refused on download and
/// nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_move_by_handle_between_devices() {
    use sha2::Digest as _;
    let blob_dir = tempfile::tempdir().unwrap();
    let server = Server::with_blobs(blob_dir.path()).await;
    let laptop = start_device(&server, "alice").await;
    let office = start_device(&server, "alice").await;
    let stranger = start_device(&server, "bob").await;
    // 9 MiB and a bit: ten chunks, the last one short.
    let content: Vec<u8> = (0..9 * 1024 * 1024 + 4321)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(laptop.dir.path().join("scan_001.e57"), &content).unwrap();

    let call = |device: &Device, owner: &'static str, tool: &'static str, input: Value| {
        let (d, id) = (server.dispatcher.clone(), device.credentials.device_id.clone());
        async move { d.call(owner, &id, tool, input, CallOptions::default()).await }
    };
    let CallOutcome::Output(out) = call(&laptop, "alice", "upload", json!({ "path": "scan_001.e57" }))
        .await
        .unwrap()
    else {
        panic!("upload is a read")
    };
    let handle = out.output;
    assert_eq!(handle["size"], content.len() as u64);
    assert_eq!(handle["name"], "scan_001.e57");
    assert_eq!(handle["sha256"], format!("{:x}", sha2::Sha256::digest(&content)));
    let blob_id = handle["blob_id"].as_str().unwrap().to_string();

    let input = json!({ "blob_id": blob_id, "path": "incoming/scan_001.e57" });
    std::fs::create_dir(office.dir.path().join("incoming")).unwrap();
    let CallOutcome::Proposal(proposal) = call(&office, "alice", "download", input.clone()).await.unwrap()
    else {
        panic!("download is planned first")
    };
    assert!(
        proposal.plan.summary.contains(&content.len().to_string()),
        "{}",
        proposal.plan.summary
    );
    assert_eq!(proposal.plan.effects[0].bytes, Some(content.len() as u64));
    let applied = server.dispatcher.approve("alice", &proposal.id).await.unwrap();
    assert_eq!(applied.status, ProposalStatus::Applied);
    assert_eq!(
        std::fs::read(office.dir.path().join("incoming/scan_001.e57")).unwrap(),
        content
    );

    // Bob's device: not found, as if it did not exist.
    let theirs = call(&stranger, "bob", "download", input).await.unwrap_err();
    assert_eq!(theirs.code(), "transfer_failed");
    assert!(theirs.to_string().contains("blob_not_found"), "{theirs}");

    // The stored bytes change under the handle: the download is refused.
    let stored = walk_files(blob_dir.path())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == blob_id.as_str()))
        .expect("the blob's file");
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&stored, bytes).unwrap();
    let again = json!({ "blob_id": blob_id, "path": "second.e57" });
    let CallOutcome::Proposal(proposal) = call(&office, "alice", "download", again).await.unwrap() else {
        panic!("download is planned first")
    };
    let refused = server
        .dispatcher
        .approve("alice", &proposal.id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "digest_mismatch", "{refused}");
    assert!(!office.dir.path().join("second.e57").exists());
    let leftovers: Vec<_> = std::fs::read_dir(office.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("fusion-partial")),
        "{leftovers:?}"
    );
}

/// What [`tampering_proxy`] does to the traffic it passes.
#[derive(Default)]
struct Tamper {
    /// Cut the `cut`-th chunk of an upload (`PUT /uploads/…`, the first
    /// is number one) after `after` bytes: the server sees the body break
    /// off, the device gets a 502.
    cut: usize,
    after: usize,
    /// Bytes added to every blob passed down (`GET /blobs/{id}`).
    pad: usize,
    /// Called with each upload chunk's number as it arrives.
    on_chunk: Option<Box<dyn Fn(usize) + Send + Sync>>,
}

/// A reverse proxy to `upstream` that streams bodies both ways and does
/// what `tamper` says. Answers its URL and the count of upload chunks it
/// saw.
async fn tampering_proxy(upstream: String, tamper: Tamper) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let puts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = Arc::clone(&puts);
    let tamper = Arc::new(tamper);
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (upstream, puts, tamper) = (upstream.clone(), Arc::clone(&puts), Arc::clone(&tamper));
        let Tamper { cut, after, pad, .. } = *tamper;
        async move {
            use axum::response::IntoResponse as _;
            use futures_util::StreamExt as _;
            let path = req.uri().path().to_string();
            let is_chunk = req.method() == axum::http::Method::PUT && path.contains("/uploads/");
            let n = if is_chunk {
                puts.fetch_add(1, Ordering::SeqCst) + 1
            } else {
                0
            };
            if let (true, Some(hook)) = (is_chunk, &tamper.on_chunk) {
                hook(n);
            }
            let cutting = is_chunk && n == cut;
            let is_blob = req.method() == axum::http::Method::GET
                && path.contains("/blobs/")
                && !path.ends_with("/meta");
            let url = format!("{upstream}{}", req.uri());
            let (parts, body) = req.into_parts();
            let mut left = if cutting { after } else { usize::MAX };
            let body = body.into_data_stream().map(move |frame| {
                let mut frame = frame.map_err(std::io::Error::other)?;
                if left == 0 {
                    return Err(std::io::Error::other("cut by the proxy"));
                }
                if frame.len() > left {
                    frame.truncate(left);
                }
                left -= frame.len();
                Ok(frame)
            });
            let mut request = reqwest::Client::new()
                .request(parts.method, url)
                .body(reqwest::Body::wrap_stream(body));
            for (k, v) in &parts.headers {
                if k != axum::http::header::CONTENT_LENGTH {
                    request = request.header(k, v);
                }
            }
            let Ok(response) = request.send().await else {
                return axum::http::StatusCode::BAD_GATEWAY.into_response();
            };
            if !(is_blob && pad > 0) {
                return forwarded(response);
            }
            let status = response.status();
            let extra = futures_util::stream::iter([Ok(bytes::Bytes::from(vec![7u8; pad]))]);
            let body = axum::body::Body::from_stream(response.bytes_stream().chain(extra));
            (status, body).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// The connection breaks in the middle of an upload's first chunk: the
/// device asks the server what arrived, reads on from there, and the
/// handle's SHA-256 is still the whole file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_mid_chunk_goes_on_from_what_the_server_has() {
    use sha2::Digest as _;
    let blob_dir = tempfile::tempdir().unwrap();
    let server = Server::with_blobs(blob_dir.path()).await;
    // Cut half a MiB and a bit into the first chunk.
    const CUT: usize = 512 * 1024 + 17;
    let tamper = Tamper {
        cut: 1,
        after: CUT,
        ..Tamper::default()
    };
    let (proxy_url, puts) = tampering_proxy(server.url(), tamper).await;
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..10 * 1024 * 1024 + 99).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(dir.path().join("scan.e57"), &content).unwrap();
    let device = start_device_through(&server, &proxy_url, "alice", dir).await;

    let (d, id) = (&server.dispatcher, &device.credentials.device_id);
    let input = json!({ "path": "scan.e57" });
    let out = d
        .call("alice", id, "upload", input, CallOptions::default())
        .await
        .unwrap();
    let handle = output(out);
    assert_eq!(handle["size"], content.len() as u64);
    assert_eq!(handle["sha256"], format!("{:x}", sha2::Sha256::digest(&content)));
    // The cut chunk, then the rest from where it broke off.
    let rest = (content.len() - CUT) as u64;
    let expected = 1 + rest.div_ceil(CHUNK);
    assert_eq!(puts.load(Ordering::SeqCst) as u64, expected);
}

/// A file that grows while it is uploaded (a scanner still writing its
/// export) is refused instead of stored as a silent snapshot, and what the
/// server staged for it is discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_changes_while_it_is_uploaded_is_refused() {
    let blob_dir = tempfile::tempdir().unwrap();
    let server = Server::with_blobs(blob_dir.path()).await;
    let dir = tempfile::tempdir().unwrap();
    let scan = dir.path().join("scan.e57");
    std::fs::write(&scan, vec![3u8; 5 * 1024 * 1024 + 3]).unwrap();
    let growing = scan.clone();
    let tamper = Tamper {
        on_chunk: Some(Box::new(move |n| {
            if n == 3 {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new().append(true).open(&growing).unwrap();
                f.write_all(&[9u8; 1000]).unwrap();
            }
        })),
        ..Tamper::default()
    };
    let (proxy_url, _) = tampering_proxy(server.url(), tamper).await;
    let device = start_device_through(&server, &proxy_url, "alice", dir).await;

    let input = json!({ "path": "scan.e57" });
    let refused = server
        .dispatcher
        .call(
            "alice",
            &device.credentials.device_id,
            "upload",
            input,
            CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), "transfer_failed", "{refused}");
    let message = refused.to_string();
    assert!(message.contains("changed while it was being sent"), "{message}");
    assert!(
        message.contains("5242883 bytes before, 5243883 after"),
        "{message}"
    );
    let staged: Vec<_> = std::fs::read_dir(blob_dir.path().join("uploads"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(staged.is_empty(), "the upload was discarded: {staged:?}");
}

/// A blob that arrives longer than its handle says is refused as soon as
/// it passes its size, and nothing appears at the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_longer_than_its_blob_is_refused() {
    let blob_dir = tempfile::tempdir().unwrap();
    let server = Server::with_blobs(blob_dir.path()).await;
    let laptop = start_device(&server, "alice").await;
    std::fs::write(laptop.dir.path().join("scan.e57"), vec![1u8; 300_000]).unwrap();
    let tamper = Tamper {
        pad: 4 * 1024 * 1024,
        ..Tamper::default()
    };
    let (proxy_url, _) = tampering_proxy(server.url(), tamper).await;
    let office = start_device_through(&server, &proxy_url, "alice", tempfile::tempdir().unwrap()).await;

    let d = &server.dispatcher;
    let input = json!({ "path": "scan.e57" });
    let out = d.call(
        "alice",
        &laptop.credentials.device_id,
        "upload",
        input,
        CallOptions::default(),
    );
    let blob_id = output(out.await.unwrap())["blob_id"]
        .as_str()
        .unwrap()
        .to_string();
    let input = json!({ "blob_id": blob_id, "path": "copy.e57" });
    let proposed = d.call(
        "alice",
        &office.credentials.device_id,
        "download",
        input,
        CallOptions::default(),
    );
    let CallOutcome::Proposal(proposal) = proposed.await.unwrap() else {
        panic!("download is planned first")
    };
    let refused = d.approve("alice", &proposal.id).await.unwrap_err();
    assert_eq!(refused.code(), "transfer_failed", "{refused}");
    assert!(
        refused.to_string().contains("more than the blob's 300000 bytes"),
        "{refused}"
    );
    let left: Vec<_> = std::fs::read_dir(office.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test]
async fn hello_carries_the_owners_update_policy_and_a_hold_defers_new_calls_to_the_next_stream() {
    let store = Arc::new(MemoryStore::new());
    let policy = fusion_tools::UpdatePolicy {
        automatic: true,
        pinned: Some("1.2.3".into()),
    };
    store.set_update_policy("alice", policy.clone());
    let server = Server::on(store, "127.0.0.1:0".parse().unwrap()).await;
    let device = start_device(&server, "alice").await;
    let state = device.host.state().borrow().clone();
    assert!(
        matches!(&state, ConnectionState::Connected { updates: Some(p), .. } if *p == policy),
        "{state:?}"
    );

    // A call running when the hold begins goes on; a call arriving after
    // it is not started.
    let activity = device.host.activity();
    let id = device.credentials.device_id.clone();
    let d = server.dispatcher.clone();
    let slow = tokio::spawn(async move {
        d.call("alice", &id, "slow", json!({}), CallOptions::default())
            .await
    });
    wait_until(&device.started, "the call never started").await;
    assert_eq!(activity.running(), 1);
    activity.hold();
    let d = server.dispatcher.clone();
    let id = device.credentials.device_id.clone();
    let held = tokio::spawn(async move { stat_as_alice(&d, &id).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!held.is_finished(), "a held call was answered");
    assert_eq!(activity.running(), 1, "the held call did not start");
    assert!(
        !device.cancelled.load(Ordering::SeqCst),
        "the running call goes on"
    );

    // Let go: the device reconnects and the server sends the held call again.
    activity.release();
    let outcome = tokio::time::timeout(WAIT, held).await.unwrap().unwrap().unwrap();
    assert_eq!(output(outcome)["kind"], "directory");
    slow.abort();
    device.host.shutdown();
    let _ = device.host.join().await;
}

async fn stat_as_alice(dispatcher: &Dispatcher, device_id: &str) -> fusion_host_server::Result<CallOutcome> {
    dispatcher
        .call(
            "alice",
            device_id,
            "stat",
            json!({ "path": "." }),
            CallOptions::default(),
        )
        .await
}
