//! `/mcp` on the app, as a real process with a real paired device, driven by
//! the official Rust MCP client over Streamable HTTP; and the HTTP-level
//! rules (Bearer, RFC 9728 metadata, Host and Origin) checked by hand.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::tasks::{follower, poll, task_of};
use common::{App, User};
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use serde_json::{Value, json};

async fn client(app: &App, token: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap()
}

fn params(tool: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(map) = args else {
        panic!("an object")
    };
    CallToolRequestParams::new(tool.to_string()).with_arguments(map)
}

#[tokio::test]
async fn devices_over_mcp_with_proposals_and_isolation() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "alice").await;
    let device = alice.pair_device().await;
    std::fs::write(device.dir.path().join("north.e57"), "scan").unwrap();
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap().to_string();

    let mcp = client(&app, &token).await;
    let tools = mcp.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for name in [
        "list_devices",
        "get_proposal",
        "wait_for_approval",
        "read_file",
        "write_file",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let read_file = tools.iter().find(|t| t.name == "read_file").unwrap();
    assert!(
        read_file.input_schema["required"]
            .as_array()
            .unwrap()
            .contains(&json!("device")),
        "device tools take a device"
    );

    let out = mcp.call_tool(params("list_devices", json!({}))).await.unwrap();
    let devices = out.structured_content.unwrap();
    assert_eq!(devices["devices"][0]["id"], device.id);
    assert_eq!(devices["devices"][0]["online"], true);

    let out = mcp
        .call_tool(params(
            "glob",
            json!({ "device": "test-laptop", "pattern": "*.e57" }),
        ))
        .await
        .unwrap();
    assert_eq!(out.is_error, Some(false));
    assert_eq!(out.structured_content.unwrap()["matches"][0]["path"], "north.e57");

    // A change is a proposal to approve on /devices, followed with wait_for_approval.
    let out = mcp
        .call_tool(params(
            "write_file",
            json!({ "device": device.id, "path": "notes.txt", "content": "from an agent\n" }),
        ))
        .await
        .unwrap();
    let proposal = out.structured_content.unwrap();
    assert_eq!(proposal["status"], "pending");
    let asker = proposal["requested_by"].as_str().unwrap();
    assert!(
        asker.starts_with("alice") && asker.ends_with("@example.com (MCP)"),
        "{asker}"
    );
    assert!(proposal["approve_url"].as_str().unwrap().ends_with("/devices"));
    assert!(
        proposal["plan"]["diff"]
            .as_str()
            .unwrap()
            .contains("+from an agent")
    );
    let id = proposal["proposal_id"].as_str().unwrap().to_string();
    let out = mcp
        .call_tool(params(
            "wait_for_approval",
            json!({ "proposal_id": id, "timeout_s": 1 }),
        ))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["status"], "pending");
    let (status, _) = alice
        .post(
            "/api/host/approve",
            json!({ "proposal_id": id, "decision": "approve" }),
        )
        .await;
    assert_eq!(status, 200);
    let out = mcp
        .call_tool(params("wait_for_approval", json!({ "proposal_id": id })))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["status"], "applied");
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("notes.txt")).unwrap(),
        "from an agent\n"
    );

    // A device's tree at a glance: the names, and as text one a line after
    // the listing's other fields.
    let out = mcp
        .call_tool(params(
            "list_directory",
            json!({ "device": device.id, "details": false }),
        ))
        .await
        .unwrap();
    let names = out.structured_content.clone().unwrap()["names"].clone();
    assert!(names.as_array().unwrap().contains(&json!("notes.txt")), "{names}");
    let text = out.content[0].as_text().unwrap().text.clone();
    let (head, lines) = text.split_once('\n').unwrap();
    assert_eq!(serde_json::from_str::<Value>(head).unwrap()["truncated"], false);
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(json!(lines), names);

    // Tool errors are results; a bad call is a JSON-RPC error.
    let out = mcp
        .call_tool(params(
            "read_file",
            json!({ "device": device.id, "path": "../../etc/passwd" }),
        ))
        .await
        .unwrap();
    assert_eq!(out.is_error, Some(true));
    assert_eq!(out.structured_content.unwrap()["code"], "outside_scope");
    let e = mcp
        .call_tool(params("read_file", json!({ "path": "x" })))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("device"), "{e}");

    // Another user sees none of it: their list is empty, the device and the
    // proposal are not found.
    let bob = User::sign_up(&app, "bob").await;
    let (_, bob_token) = bob.post("/api/tokens", json!({})).await;
    let bob_mcp = client(&app, bob_token["token"].as_str().unwrap()).await;
    let out = bob_mcp
        .call_tool(params("list_devices", json!({})))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["devices"], json!([]));
    let out = bob_mcp
        .call_tool(params("get_proposal", json!({ "proposal_id": id })))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["code"], "proposal_not_found");
    let out = bob_mcp
        .call_tool(params("stat", json!({ "device": device.id, "path": "." })))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.structured_content.unwrap()["code"], "device_not_found");
    mcp.cancel().await.unwrap();
    bob_mcp.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_http_rules() {
    let app = App::start(None);
    let http = reqwest::Client::new();
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let post = |token: Option<&str>| {
        let mut r = http
            .post(format!("{}/mcp", app.url))
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r
    };
    let r = post(None).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_string();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\"")
            && challenge.contains("/.well-known/oauth-protected-resource/mcp"),
        "{challenge}"
    );
    let r = post(Some("fhu_not_a_token")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let metadata: Value = http
        .get(format!("{}/.well-known/oauth-protected-resource/mcp", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["resource"], format!("{}/mcp", app.url));
    // A page on another origin, or a rebound host name, is refused before
    // the token is even looked at.
    let r = post(None)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = post(None).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
}

/// A client of the 2025-11-25 revision, which keeps a session, counting
/// `notifications/tools/list_changed` and `notifications/progress`.
#[derive(Clone, Default)]
struct Watch {
    changed: Arc<AtomicUsize>,
    progress: Arc<AtomicUsize>,
    /// The last progress notification's total and message.
    last: Arc<std::sync::Mutex<Option<Heard>>>,
}

/// A progress notification's total and message.
type Heard = (Option<f64>, Option<String>);

impl ClientHandler for Watch {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("watch", "0"))
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_tool_list_changed(&self, _: NotificationContext<RoleClient>) {
        self.changed.fetch_add(1, Ordering::SeqCst);
    }

    async fn on_progress(
        &self,
        param: rmcp::model::ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        *self.last.lock().unwrap() = Some((param.total, param.message));
        self.progress.fetch_add(1, Ordering::SeqCst);
    }
}

/// A device call that takes long (hashing a file of 16 GiB, all holes):
/// the client hears progress while it runs, and cancelling the request
/// stops the device's work, not only the wait for it.
#[tokio::test]
async fn a_long_device_call_reports_progress_and_stops_when_cancelled() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "long-call").await;
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap().to_string();
    let device = alice.pair_device().await;
    std::fs::File::create(device.dir.path().join("big.bin"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let watch = Watch::default();
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(&token);
    let client = watch
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    let call = params("hash_file", json!({ "device": device.id, "path": "big.bin" }));
    let handle = client
        .send_cancellable_request(
            rmcp::model::ClientRequest::CallToolRequest(rmcp::model::Request::new(call)),
            rmcp::service::PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let activity = device.host.activity();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while watch.progress.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(watch.progress.load(Ordering::SeqCst) > 0, "progress within 20 s");
    assert_eq!(activity.running(), 1, "the device is hashing");
    // The device's own count follows: bytes hashed of the file's size.
    let from_device = |last: &Option<Heard>| {
        last.as_ref().is_some_and(|(total, message)| {
            *total == Some((16u64 << 30) as f64)
                && message.as_deref().is_some_and(|m| m.contains("bytes hashed"))
        })
    };
    while !from_device(&watch.last.lock().unwrap()) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        from_device(&watch.last.lock().unwrap()),
        "{:?}",
        watch.last.lock().unwrap()
    );
    handle.cancel(Some("the user stopped it".into())).await.unwrap();
    while activity.running() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        activity.running(),
        0,
        "notifications/cancelled stops the device's work"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn the_tool_list_follows_devices_as_they_come() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "alice").await;
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap().to_string();

    // A short time to live on the list, for clients that cache it.
    let fresh = client(&app, &token).await;
    let listed = fresh.list_tools(None).await.unwrap();
    assert_eq!(
        listed.ttl_ms,
        Some(5000),
        "{:?}",
        fresh.peer_info().map(|p| p.protocol_version.clone())
    );
    assert!(
        !listed.tools.iter().any(|t| t.name == "read_file"),
        "no device yet"
    );

    // A session of the older revision hears about the new device.
    let watch = Watch::default();
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(&token);
    let session = watch
        .clone()
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    let _device = alice.pair_device().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while watch.changed.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        watch.changed.load(Ordering::SeqCst) > 0,
        "tools/list_changed within 10 s"
    );
    let tools = session.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "read_file"));
    session.cancel().await.unwrap();
    fresh.cancel().await.unwrap();
}

/// A client of the 2026-07-28 revision asks for change notifications with
/// `subscriptions/listen`; the tool list is accepted, and a device coming
/// online is heard on the subscription.
#[tokio::test]
async fn a_2026_client_listens_for_tool_list_changes() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "listener").await;
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap().to_string();
    // The 2026-07-28 lifecycle: `server/discover`, metadata on every request.
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(&token);
    let client = rmcp::service::serve_client_with_lifecycle(
        (),
        StreamableHttpClientTransport::from_config(config),
        rmcp::service::ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap();
    let asked = rmcp::model::SubscriptionFilter::builder()
        .tools_list_changed()
        .resources_list_changed()
        .build();
    let mut subscription = client
        .peer()
        .listen(asked)
        .await
        .expect("subscriptions/listen is served");
    assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
    assert_ne!(
        subscription.acknowledged().resources_list_changed,
        Some(true),
        "only what changes here is accepted"
    );
    let _device = alice.pair_device().await;
    let heard = tokio::time::timeout(std::time::Duration::from_secs(10), subscription.next())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert!(
        matches!(
            heard,
            Some(rmcp::model::ServerNotification::ToolListChangedNotification(_))
        ),
        "{heard:?}"
    );
    client.cancel().await.unwrap();
}

/// A 2026-07-28 client that can send its user to a page (URL-mode
/// elicitation). Its "user" approves the change on the app, as a person on
/// `/devices` would, then says they did.
#[derive(Clone)]
struct Approver {
    user: Arc<User>,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ClientHandler for Approver {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation =
            Some(rmcp::model::ElicitationCapability::new().with_url(Default::default()));
        ClientConfig::new(capabilities, Implementation::new("approver", "0"))
    }

    async fn create_elicitation(
        &self,
        request: rmcp::model::ElicitRequestParams,
        _: rmcp::service::RequestContext<RoleClient>,
    ) -> Result<rmcp::model::ElicitResult, rmcp::ErrorData> {
        let rmcp::model::ElicitRequestParams::UrlElicitationParams { url, .. } = request else {
            panic!("a page to send the person to, not a form")
        };
        self.asked.lock().unwrap().push(url.clone());
        let proposal = url
            .split("proposal=")
            .nth(1)
            .and_then(|rest| rest.split(['&', '#']).next())
            .expect("the page names the proposal");
        assert!(url.ends_with(&format!("#proposal-{proposal}")), "{url}");
        let (status, decided) = self
            .user
            .post(
                "/api/host/approve",
                json!({ "proposal_id": proposal, "decision": "approve" }),
            )
            .await;
        assert_eq!(status, 200, "{decided}");
        Ok(rmcp::model::ElicitResult::new(
            rmcp::model::ElicitationAction::Accept,
        ))
    }
}

/// The approval of an exact change, carried inside the protocol: a
/// 2026-07-28 client gets `input_required` with a URL-mode elicitation of
/// the proposal's page, sends its person there, retries with the request
/// state, and gets the applied result — no polling tool in between.
#[tokio::test]
async fn a_2026_client_is_sent_to_the_approval_page_and_gets_the_applied_result() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "approver").await;
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap().to_string();
    let device = alice.pair_device().await;
    let approver = Approver {
        user: Arc::new(alice.on(&app)),
        asked: Arc::default(),
    };
    let config =
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.url)).auth_header(&token);
    let client = rmcp::service::serve_client_with_lifecycle(
        approver.clone(),
        StreamableHttpClientTransport::from_config(config),
        rmcp::service::ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    )
    .await
    .unwrap();
    let result = client
        .call_tool(params(
            "write_file",
            json!({ "device": device.id, "path": "agreed.txt", "content": "approved in the protocol\n" }),
        ))
        .await
        .unwrap();
    let asked = approver.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "one page, once: {asked:?}");
    assert!(
        asked[0].starts_with(&format!("{}/devices?proposal=prop_", app.url)),
        "{asked:?}"
    );
    let out = result.structured_content.expect("the proposal as it ended");
    assert_eq!(out["status"], "applied", "{out}");
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("agreed.txt")).unwrap(),
        "approved in the protocol\n"
    );
    client.cancel().await.unwrap();
}

/// Long calls as tasks: a hash answers at once with a task whose result
/// the client fetches later; a change waits, as a task, for the person's
/// approval on the app and ends with the applied output; cancelling a
/// running task stops the device's work; and another user cannot see it.
#[tokio::test]
async fn a_client_that_follows_tasks_gets_long_calls_as_tasks() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "tasks").await;
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let token = token["token"].as_str().unwrap().to_string();
    let device = alice.pair_device().await;
    std::fs::write(device.dir.path().join("small.txt"), "north wall\n").unwrap();
    let client = follower(&app, &token).await;

    // A hash: a task, then its result.
    let response = client
        .peer()
        .call_tool_once(params(
            "hash_file",
            json!({ "device": device.id, "path": "small.txt" }),
        ))
        .await
        .unwrap();
    let id = task_of(response);
    let task = poll(&client, &id, |t| t.status().is_terminal()).await;
    assert_eq!(task.status(), rmcp::model::TaskStatus::Completed, "{task:?}");
    let text = serde_json::to_string(&task).unwrap();
    assert!(text.contains("sha256"), "the hash is the task's result: {text}");

    // A quick read stays a plain call.
    let response = client
        .peer()
        .call_tool_once(params(
            "read_file",
            json!({ "device": device.id, "path": "small.txt" }),
        ))
        .await
        .unwrap();
    assert!(
        matches!(response, rmcp::model::CallToolResponse::Complete(_)),
        "{response:?}"
    );

    // A change: the task waits for the person, then ends applied.
    let response = client
        .peer()
        .call_tool_once(params(
            "write_file",
            json!({ "device": device.id, "path": "agreed.txt", "content": "as a task\n" }),
        ))
        .await
        .unwrap();
    let id = task_of(response);
    let waiting = poll(&client, &id, |t| {
        t.task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for a person"))
    })
    .await;
    assert!(
        waiting
            .task
            .status_message
            .as_deref()
            .unwrap_or_default()
            .contains("/devices?proposal="),
        "{waiting:?}"
    );
    let (_, pending) = alice.get("/api/proposals?status=pending").await;
    let proposal = pending["proposals"][0]["id"].as_str().unwrap().to_string();
    let (status, _) = alice
        .post(
            "/api/host/approve",
            json!({ "proposal_id": proposal, "decision": "approve" }),
        )
        .await;
    assert_eq!(status, 200);
    let done = poll(&client, &id, |t| t.status().is_terminal()).await;
    assert_eq!(done.status(), rmcp::model::TaskStatus::Completed, "{done:?}");
    assert!(
        serde_json::to_string(&done).unwrap().contains("applied"),
        "{done:?}"
    );
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("agreed.txt")).unwrap(),
        "as a task\n"
    );

    // Another user: no such task.
    let bob = User::sign_up(&app, "bob").await;
    let (_, bob_token) = bob.post("/api/tokens", json!({})).await;
    let other = follower(&app, bob_token["token"].as_str().unwrap()).await;
    assert!(
        other
            .peer()
            .get_task(rmcp::model::GetTaskParams::new(&id))
            .await
            .is_err(),
        "another user's task does not exist for bob"
    );

    // Cancelling a running task stops the device.
    std::fs::File::create(device.dir.path().join("big.bin"))
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let activity = device.host.activity();
    let response = client
        .peer()
        .call_tool_once(params(
            "hash_file",
            json!({ "device": device.id, "path": "big.bin" }),
        ))
        .await
        .unwrap();
    let id = task_of(response);
    let running = poll(&client, &id, |t| {
        t.task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("running on the device"))
    })
    .await;
    assert_eq!(running.status(), rmcp::model::TaskStatus::Working, "{running:?}");
    assert_eq!(activity.running(), 1, "the device is hashing");
    client
        .peer()
        .cancel_task(rmcp::model::CancelTaskParams::new(&id))
        .await
        .unwrap();
    let cancelled = poll(&client, &id, |t| t.status().is_terminal()).await;
    assert_eq!(
        cancelled.status(),
        rmcp::model::TaskStatus::Cancelled,
        "{cancelled:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while activity.running() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(activity.running(), 0, "tasks/cancel stops the device's work");
    client.cancel().await.unwrap();
    other.cancel().await.unwrap();
}
