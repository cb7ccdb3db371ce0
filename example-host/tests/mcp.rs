//! `fusion-host mcp` as a child process, driven by the official Rust MCP
//! client over stdio.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusion_host::mcp::LocalMcp;
use fusion_tools::{Access, Scope, Tool, ToolSpec, Toolbox};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    ElicitRequestParams, ElicitResult, ElicitationAction, Implementation, ProgressNotificationParam, Request,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RequestContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fusion-host");

async fn connect(folder: &Path, config: &Path) -> RunningService<RoleClient, ()> {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("mcp")
        .arg("--root")
        .arg(folder)
        .arg("--config-dir")
        .arg(config);
    ().serve(TokioChildProcess::new(cmd).unwrap()).await.unwrap()
}

fn args(v: Value) -> CallToolRequestParams {
    let Value::Object(map) = v else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new("").with_arguments(map)
}

fn named(tool: &str, v: Value) -> CallToolRequestParams {
    let mut params = args(v);
    params.name = tool.to_string().into();
    params
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, input: Value) -> CallToolResult {
    let mut params = args(input);
    params.name = tool.to_string().into();
    client.call_tool(params).await.unwrap()
}

#[tokio::test]
async fn tools_list_and_calls_over_stdio() {
    let folder = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("north.e57"), "scan").unwrap();
    let client = connect(folder.path(), config.path()).await;
    let info = client.peer_info().unwrap();
    assert_eq!(info.server_info.as_ref().unwrap().name, "fusion-host");

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "a stable order");
    assert!(
        names.contains(&"rename_batch") && names.contains(&"convert_e57_to_las"),
        "{names:?}"
    );
    for tool in &tools {
        assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
        assert!(tool.output_schema.is_some(), "{} has an outputSchema", tool.name);
    }
    let by_name = |n: &str| tools.iter().find(|t| t.name == n).unwrap();
    assert_eq!(
        by_name("read_file").annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    assert_eq!(
        by_name("delete").annotations.as_ref().unwrap().destructive_hint,
        Some(true)
    );
    assert!(
        by_name("write_file").input_schema["properties"]
            .get("apply_token")
            .is_some()
    );
    assert!(
        by_name("read_file").input_schema["properties"]
            .get("apply_token")
            .is_none()
    );

    // A read: structured content and the same as text (a listing's as one
    // entry a line after its other fields).
    let out = call(&client, "list_directory", json!({})).await;
    assert_eq!(out.is_error, Some(false));
    let structured = out.structured_content.clone().unwrap();
    assert_eq!(structured["entries"][0]["path"], "north.e57");
    let text = out.content[0].as_text().unwrap().text.clone();
    let (head, entries) = text.split_once('\n').unwrap();
    assert_eq!(serde_json::from_str::<Value>(head).unwrap()["truncated"], false);
    let modified = structured["entries"][0]["modified"].as_str().unwrap();
    assert_eq!(entries, format!("file 4 {modified} north.e57"));
    // A file: its fields, then the fenced text as it is.
    let out = call(&client, "read_file", json!({ "path": "north.e57" })).await;
    let structured = out.structured_content.clone().unwrap();
    let text = out.content[0].as_text().unwrap().text.clone();
    let (head, content) = text.split_once('\n').unwrap();
    assert_eq!(content, structured["content"].as_str().unwrap());
    assert!(content.contains("\nscan\n"), "{content}");
    assert_eq!(serde_json::from_str::<Value>(head).unwrap()["size"], 4);
    let out = call(&client, "disk_usage", json!({})).await;
    let text = out.content[0].as_text().unwrap().text.clone();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        out.structured_content.unwrap()
    );

    // A tree at a glance: the names as a list, and as one name a line after
    // the other fields.
    let out = call(&client, "list_directory", json!({ "details": false })).await;
    let structured = out.structured_content.clone().unwrap();
    assert_eq!(structured["names"], json!(["north.e57"]));
    let text = out.content[0].as_text().unwrap().text.clone();
    let (head, names) = text.split_once('\n').unwrap();
    assert_eq!(names, "north.e57");
    let head: Value = serde_json::from_str(head).unwrap();
    assert_eq!(head["truncated"], false);
    assert!(head.get("names").is_none(), "{head}");

    // A tool error: isError, the code in the text and the structure.
    let out = call(&client, "read_file", json!({ "path": "../../etc/passwd" })).await;
    assert_eq!(out.is_error, Some(true));
    assert_eq!(out.structured_content.as_ref().unwrap()["code"], "outside_scope");
    assert!(
        out.content[0]
            .as_text()
            .unwrap()
            .text
            .starts_with("outside_scope: ")
    );

    // Unknown tools and malformed arguments are JSON-RPC errors.
    let mut params = args(json!({}));
    params.name = "rm_rf".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("unknown tool `rm_rf`"), "{e}");
    let mut params = args(json!({ "path": 3 }));
    params.name = "read_file".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("path"), "{e}");

    // A change: the plan and a token first, the change only with the token.
    let input = json!({ "path": "notes.txt", "content": "north wall\n" });
    let planned = call(&client, "write_file", input.clone()).await;
    let planned = planned.structured_content.unwrap();
    assert_eq!(planned["status"], "planned");
    assert!(planned["plan"]["diff"].as_str().unwrap().contains("+north wall"));
    assert!(
        !folder.path().join("notes.txt").exists(),
        "nothing written before the token"
    );
    let token = planned["apply_token"].as_str().unwrap().to_string();
    let mut other = input.clone();
    other["content"] = json!("something else\n");
    other["apply_token"] = json!(token);
    let mut params = args(other);
    params.name = "write_file".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("other input"), "{e}");
    let mut with_token = input.clone();
    with_token["apply_token"] = json!(token);
    // The token was bound to the first input and is not spent by a refused try.
    let applied = call(&client, "write_file", with_token.clone()).await;
    assert_eq!(
        applied.structured_content.as_ref().unwrap()["status"],
        "applied",
        "{applied:?}"
    );
    assert_eq!(
        std::fs::read_to_string(folder.path().join("notes.txt")).unwrap(),
        "north wall\n"
    );
    let mut params = args(with_token);
    params.name = "write_file".into();
    let e = client.call_tool(params).await.unwrap_err().to_string();
    assert!(e.contains("used already"), "{e}");

    // The precondition is re-verified when the token comes back.
    let input = json!({ "path": "notes.txt", "content": "v2\n" });
    let planned = call(&client, "write_file", input.clone())
        .await
        .structured_content
        .unwrap();
    std::fs::write(folder.path().join("notes.txt"), "changed meanwhile\n").unwrap();
    let mut with_token = input;
    with_token["apply_token"] = planned["apply_token"].clone();
    let out = call(&client, "write_file", with_token).await;
    assert_eq!(out.is_error, Some(true));
    assert_eq!(out.structured_content.unwrap()["code"], "conflict");
    client.cancel().await.unwrap();
}

/// A progress notification's progress and total.
type Reported = (f64, Option<f64>);

/// A client that can ask its user (elicitation) and watches progress.
#[derive(Clone, Default)]
struct Person {
    approve: bool,
    /// Declares the tasks extension.
    follows_tasks: bool,
    asked: Arc<Mutex<Vec<String>>>,
    /// Each progress notification's progress and total.
    progress: Arc<Mutex<Vec<Reported>>>,
}

impl ClientHandler for Person {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::builder().enable_elicitation().build();
        if self.follows_tasks {
            capabilities.extensions = ClientCapabilities::builder().enable_tasks().build().extensions;
        }
        ClientConfig::new(capabilities, Implementation::new("person", "0"))
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, rmcp::ErrorData> {
        if let ElicitRequestParams::FormElicitationParams { message, .. } = request {
            self.asked.lock().unwrap().push(message);
        }
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({ "approve": self.approve })))
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        self.progress
            .lock()
            .unwrap()
            .push((params.progress, params.total));
    }
}

/// Runs until cancelled or `seconds` pass, checking the flag as tools do.
struct Slow {
    cancelled: Arc<AtomicBool>,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct SlowInput {
    seconds: u64,
}

impl Tool for Slow {
    type Input = SlowInput;
    type Output = Value;

    fn spec(&self) -> ToolSpec {
        ToolSpec::read("slow", "Waits, for tests of progress and cancellation.")
    }

    fn run(&self, cx: &fusion_tools::Context<'_>, input: SlowInput) -> fusion_tools::Result<Value> {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(input.seconds) {
            cx.progress(
                started.elapsed().as_millis() as u64,
                Some(input.seconds * 1000),
                "ms waited",
            );
            if let Err(e) = cx.checkpoint() {
                self.cancelled.store(true, Ordering::SeqCst);
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(json!({}))
    }
}

/// The server in this process over a pipe, with the `slow` tool added.
async fn in_process(folder: &Path, person: Person) -> (RunningService<RoleClient, Person>, Arc<AtomicBool>) {
    in_process_as(folder, person, rmcp::service::ClientLifecycleMode::Initialize).await
}

/// [`in_process`] with the client's lifecycle: `Initialize` (2025-11-25 and
/// before) or `Discover` (2026-07-28).
async fn in_process_as(
    folder: &Path,
    person: Person,
    lifecycle: rmcp::service::ClientLifecycleMode,
) -> (RunningService<RoleClient, Person>, Arc<AtomicBool>) {
    let cancelled = Arc::new(AtomicBool::new(false));
    let mut toolbox = Toolbox::builtin();
    toolbox.add(Slow {
        cancelled: Arc::clone(&cancelled),
    });
    let scope = Scope::single(folder, Access::ReadWrite).unwrap();
    let server = LocalMcp::new(toolbox, scope, "test");
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    (
        rmcp::service::serve_client_with_lifecycle(person, client_io, lifecycle)
            .await
            .unwrap(),
        cancelled,
    )
}

#[tokio::test]
async fn a_client_that_can_ask_gets_the_question_instead_of_a_token() {
    let folder = tempfile::tempdir().unwrap();
    let person = Person {
        approve: true,
        ..Person::default()
    };
    let (client, _) = in_process(folder.path(), person.clone()).await;
    let out = client
        .call_tool(named(
            "write_file",
            json!({ "path": "a.txt", "content": "approved\n" }),
        ))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["status"], "applied");
    assert_eq!(
        std::fs::read_to_string(folder.path().join("a.txt")).unwrap(),
        "approved\n"
    );
    let asked = person.asked.lock().unwrap().clone();
    assert!(
        asked[0].contains("+approved"),
        "the question shows the diff: {asked:?}"
    );

    let person = Person::default();
    let (client, _) = in_process(folder.path(), person).await;
    let out = client
        .call_tool(named("write_file", json!({ "path": "b.txt", "content": "no\n" })))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["status"], "rejected");
    assert!(!folder.path().join("b.txt").exists());
}

/// The 2026-07-28 revision forbids the server's own questions; the question
/// travels in an input-required result instead, with the plan's one-time
/// apply token as its request state, and the client's retry applies (or
/// rejects) exactly the plan that was shown.
#[tokio::test]
async fn a_2026_client_gets_the_question_in_an_input_required_result() {
    let folder = tempfile::tempdir().unwrap();
    let v2026 = || rmcp::service::ClientLifecycleMode::Discover {
        preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
    };
    let person = Person {
        approve: true,
        ..Person::default()
    };
    let (client, _) = in_process_as(folder.path(), person.clone(), v2026()).await;
    let out = client
        .call_tool(named(
            "write_file",
            json!({ "path": "a.txt", "content": "agreed
" }),
        ))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["status"], "applied");
    assert_eq!(
        std::fs::read_to_string(folder.path().join("a.txt")).unwrap(),
        "agreed
"
    );
    let asked = person.asked.lock().unwrap().clone();
    assert!(asked.len() == 1 && asked[0].contains("+agreed"), "{asked:?}");

    let (client, _) = in_process_as(folder.path(), Person::default(), v2026()).await;
    let out = client
        .call_tool(named(
            "write_file",
            json!({ "path": "b.txt", "content": "no
" }),
        ))
        .await
        .unwrap();
    assert_eq!(out.structured_content.unwrap()["status"], "rejected");
    assert!(!folder.path().join("b.txt").exists());
}

#[tokio::test]
async fn long_calls_report_progress_and_stop_when_cancelled() {
    let folder = tempfile::tempdir().unwrap();
    let person = Person::default();
    let (client, cancelled) = in_process(folder.path(), person.clone()).await;
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(named("slow", json!({ "seconds": 60 })))),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while person.progress.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !person.progress.lock().unwrap().is_empty(),
        "a progress notification within 10 s"
    );
    // The tool's own count, of the total it gave, rising.
    let seen = person.progress.lock().unwrap().clone();
    assert!(seen.iter().all(|(_, total)| *total == Some(60_000.0)), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    handle.cancel(Some("the user stopped it".into())).await.unwrap();
    while !cancelled.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cancelled.load(Ordering::SeqCst),
        "notifications/cancelled stops the tool"
    );
}

/// Polls a task until it ends or `done` says so, within 10 s.
async fn poll_task(
    client: &RunningService<RoleClient, Person>,
    id: &str,
    done: impl Fn(&rmcp::model::DetailedTask) -> bool,
) -> rmcp::model::DetailedTask {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let task = client
            .peer()
            .get_task(rmcp::model::GetTaskParams::new(id))
            .await
            .unwrap()
            .task;
        if done(&task) || std::time::Instant::now() > deadline {
            return task;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that follows tasks (2026-07-28, the tasks extension) gets long
/// calls as tasks over stdio too: a hash answers at once with a task that
/// ends with the digest; a long one says how long it has run and stops on
/// `tasks/cancel`; a read that answers at once stays a plain call.
#[tokio::test]
async fn a_client_that_follows_tasks_gets_long_calls_as_tasks() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("notes.txt"), "north wall\n").unwrap();
    let person = Person {
        follows_tasks: true,
        ..Person::default()
    };
    let (client, cancelled) = in_process_as(
        folder.path(),
        person,
        rmcp::service::ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        },
    )
    .await;
    let task_id = |response: rmcp::model::CallToolResponse| match response {
        rmcp::model::CallToolResponse::Task(created) => created.task.task_id,
        other => panic!("a task, not {other:?}"),
    };

    let id = task_id(
        client
            .peer()
            .call_tool_once(named("hash_file", json!({ "path": "notes.txt" })))
            .await
            .unwrap(),
    );
    let done = poll_task(&client, &id, |t| t.status().is_terminal()).await;
    assert_eq!(done.status(), rmcp::model::TaskStatus::Completed, "{done:?}");
    assert!(
        serde_json::to_string(&done).unwrap().contains("sha256"),
        "{done:?}"
    );

    let quick = client
        .peer()
        .call_tool_once(named("read_file", json!({ "path": "notes.txt" })))
        .await
        .unwrap();
    assert!(
        matches!(quick, rmcp::model::CallToolResponse::Complete(_)),
        "{quick:?}"
    );

    let id = task_id(
        client
            .peer()
            .call_tool_once(named("slow", json!({ "seconds": 60 })))
            .await
            .unwrap(),
    );
    let running = poll_task(&client, &id, |t| {
        t.task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains("slow running for"))
    })
    .await;
    assert_eq!(running.status(), rmcp::model::TaskStatus::Working, "{running:?}");
    client
        .peer()
        .cancel_task(rmcp::model::CancelTaskParams::new(&id))
        .await
        .unwrap();
    let stopped = poll_task(&client, &id, |t| t.status().is_terminal()).await;
    assert_eq!(
        stopped.status(),
        rmcp::model::TaskStatus::Cancelled,
        "{stopped:?}"
    );
    assert!(cancelled.load(Ordering::SeqCst), "tasks/cancel stops the tool");
    client.cancel().await.unwrap();
}
