//! The device's tools for a local MCP client, over stdio (`fusion-host mcp`).
//!
//! Read and action tools run on arrival. A mutate tool keeps its consent:
//! called without approval it returns its plan (the diff, the effects) and a
//! one-time `apply_token` bound to the input and the precondition it was
//! planned against; the change happens only when the client calls the tool
//! again with that token, and the precondition is re-verified then. Where the
//! client can ask its user (elicitation, protocol 2025-11-25 and older), the
//! server asks there instead and applies on "approve".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusion_tools::{
    Cancellation, Class, Context, Mode, Outcome, Plan, Precondition, Scope, ToolDescriptor, Toolbox,
    runs_long,
};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ElicitationSchema, Implementation, InputRequest, InputRequests, InputRequiredResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::model::{CancelTaskParams, CreateTaskResult, GetTaskParams, GetTaskResult, UpdateTaskParams};
use rmcp::service::{ElicitationError, RequestContext};
use rmcp::task_manager::{TaskContext, TaskExit, TaskManager, TaskOptions};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

/// The argument that carries an apply token.
pub const APPLY_TOKEN: &str = "apply_token";

/// How long an apply token stays good.
pub const APPLY_TOKEN_TTL: Duration = Duration::from_secs(10 * 60);

/// The most plans waiting for their token at once; the oldest goes first.
const MAX_PENDING: usize = 256;

/// How often a running tool reports progress to a client that asked for it.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A planned change waiting for its apply token.
#[derive(Debug)]
struct Pending {
    tool: String,
    input: Value,
    precondition: Precondition,
    planned: Instant,
}

/// An MCP server over a toolbox and a scope.
#[derive(Clone)]
pub struct LocalMcp {
    toolbox: Arc<Toolbox>,
    scope: Arc<Scope>,
    version: String,
    pending: Arc<Mutex<HashMap<String, Pending>>>,
    /// Long calls of a client that follows tasks.
    tasks: TaskManager,
}

/// What a running tool answers to: the request that asked for it (its
/// cancellation, its progress token), or the task it runs as (`tasks/cancel`,
/// its status message).
#[derive(Clone, Copy)]
enum Watcher<'a> {
    Request(&'a RequestContext<RoleServer>),
    Task(&'a TaskContext),
}

impl Watcher<'_> {
    async fn stopped(self) {
        match self {
            Watcher::Request(context) => context.ct.cancelled().await,
            Watcher::Task(task) => task.cancelled().await,
        }
    }

    /// Says how far the tool has come (`progress` of `total`, when known),
    /// where anyone listens.
    async fn report(self, progress: f64, total: Option<f64>, message: String) {
        match self {
            Watcher::Request(context) => {
                if let Some(token) = context.meta.get_progress_token() {
                    let mut param = ProgressNotificationParam::new(token, progress).with_message(message);
                    if let Some(total) = total {
                        param = param.with_total(total);
                    }
                    let _ = context.peer.notify_progress(param).await;
                }
            }
            Watcher::Task(task) => task.set_status_message(message),
        }
    }
}

/// How long a task is kept from its creation.
const TASK_TTL_MS: u64 = 60 * 60 * 1000;

impl LocalMcp {
    /// A server for `toolbox` confined to `scope`; `version` is reported as
    /// the server's version.
    pub fn new(toolbox: Toolbox, scope: Scope, version: &str) -> Self {
        LocalMcp {
            toolbox: Arc::new(toolbox),
            scope: Arc::new(scope),
            version: version.to_string(),
            pending: Arc::default(),
            tasks: TaskManager::new(),
        }
    }

    /// Serves MCP on stdin/stdout until the client closes the stream.
    pub async fn serve_stdio(self) -> Result<(), std::io::Error> {
        use rmcp::ServiceExt as _;
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(std::io::Error::other)?;
        running.waiting().await.map_err(std::io::Error::other)?;
        Ok(())
    }

    /// The tools as MCP lists them, in name order.
    pub fn tools(&self) -> Vec<Tool> {
        self.toolbox.manifest().tools.iter().map(mcp_tool).collect()
    }

    /// The pending plan of `token`, spent, if it was given for `tool` with
    /// exactly `input`. A token shown with other input stays unspent.
    fn take_pending(&self, token: &str, tool: &str, input: &Value) -> Result<Pending, McpError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.planned.elapsed() < APPLY_TOKEN_TTL);
        match pending.get(token) {
            None => Err(McpError::invalid_params(
                format!(
                    "the {APPLY_TOKEN} is unknown, used already or expired (they last {} min); call {tool} \
                     without it to plan again",
                    APPLY_TOKEN_TTL.as_secs() / 60
                ),
                Some(json!({ "code": "invalid_input" })),
            )),
            Some(p) if p.tool != tool || p.input != *input => Err(McpError::invalid_params(
                format!(
                    "this {APPLY_TOKEN} was given for {} with other input; an approved plan is applied with \
                     exactly the input it was planned with",
                    p.tool
                ),
                Some(json!({ "code": "invalid_input" })),
            )),
            Some(_) => Ok(pending.remove(token).expect("present")),
        }
    }

    fn remember(&self, tool: &str, input: Value, plan: &Plan) -> String {
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|_, p| p.planned.elapsed() < APPLY_TOKEN_TTL);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.planned)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            token.clone(),
            Pending {
                tool: tool.to_string(),
                input,
                precondition: plan.precondition.clone(),
                planned: Instant::now(),
            },
        );
        token
    }

    /// Runs one toolbox call on the blocking pool, stopped when its
    /// request or task is cancelled, saying how long it has run (progress
    /// to a request that asked for it, the status of a task).
    async fn run(
        &self,
        watcher: Watcher<'_>,
        tool: &str,
        mode: Mode,
        input: Value,
        precondition: Option<Precondition>,
    ) -> Result<Outcome, fusion_tools::Error> {
        let cancel = Cancellation::new();
        let (toolbox, scope, name) = (
            Arc::clone(&self.toolbox),
            Arc::clone(&self.scope),
            tool.to_string(),
        );
        let flag = cancel.clone();
        let (sink, mut reports) = crate::progress::latest(String::new());
        let mut work = tokio::task::spawn_blocking(move || {
            let cx = Context::new(&scope).with_cancellation(flag).with_progress(sink);
            toolbox.call(&cx, &name, mode, input, precondition.as_ref())
        });
        let started = Instant::now();
        let mut ticks =
            tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        // The tool's own count once it reports one, the time until then;
        // progress only ever increases.
        let (mut sent, mut counted) = (0.0f64, false);
        loop {
            tokio::select! {
                joined = &mut work => {
                    return joined.unwrap_or_else(|e| Err(fusion_tools::Error::Io {
                        path: tool.into(),
                        source: std::io::Error::other(format!("the tool crashed: {e}")),
                    }));
                }
                () = watcher.stopped(), if !cancel.is_cancelled() => cancel.cancel(),
                _ = ticks.tick() => {
                    let (progress, total, message) = if counted || reports.has_changed().unwrap_or(false) {
                        counted = true;
                        let report = reports.borrow_and_update();
                        (report.done as f64, report.total.map(|t| t as f64), report.describe(tool))
                    } else {
                        let elapsed = started.elapsed().as_secs_f64().floor();
                        (elapsed, None, format!("{tool} running for {elapsed:.0} s"))
                    };
                    if progress > sent {
                        sent = progress;
                        watcher.report(progress, total, message).await;
                    }
                }
            }
        }
    }

    /// Asks the client's user to approve `plan`, where the client can.
    /// `None` when it cannot (or the protocol forbids server requests).
    async fn ask(&self, context: &RequestContext<RoleServer>, tool: &str, plan: &Plan) -> Option<bool> {
        let can_ask = context
            .peer
            .peer_info()
            .is_some_and(|info| info.capabilities.elicitation.is_some());
        if !can_ask {
            return None;
        }
        let message = approval_message(tool, plan);
        match context.peer.elicit::<Approval>(message).await {
            Ok(Some(answer)) => Some(answer.approve),
            Ok(None) | Err(ElicitationError::UserDeclined) | Err(ElicitationError::UserCancelled) => {
                Some(false)
            }
            Err(_) => None,
        }
    }
}

/// The answer to an approval question.
#[derive(Debug, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
struct Approval {
    /// Apply the change.
    approve: bool,
}

rmcp::elicit_safe!(Approval);

/// The question a person answers to approve `plan`: its summary and the
/// diff (or the first 20 effects).
fn approval_message(tool: &str, plan: &Plan) -> String {
    let mut message = format!("Approve this change by {tool}?\n\n{}\n", plan.summary);
    if let Some(diff) = &plan.diff {
        message.push('\n');
        message.push_str(&diff.chars().take(8000).collect::<String>());
    } else {
        for effect in plan.effects.iter().take(20) {
            message.push_str(&format!(
                "\n{:?} {}{}",
                effect.op,
                effect.path,
                effect
                    .to
                    .as_deref()
                    .map(|t| format!(" → {t}"))
                    .unwrap_or_default()
            ));
        }
        if plan.effects_total > 20 {
            message.push_str(&format!("\n… and {} more", plan.effects_total - 20));
        }
    }
    message
}

/// The key of the approval among a call's input requests.
const APPROVAL_INPUT: &str = "approval";

/// Whether this request is of the 2026-07-28 revision from a client that
/// shows forms: the question then travels in an input-required result.
fn asks_in_results(context: &RequestContext<RoleServer>) -> bool {
    let v2026 = context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
    v2026
        && context
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .is_some()
}

/// The approval question as an input-required result whose request state
/// is the plan's one-time apply token.
fn approval_request(tool: &str, plan: &Plan, token: String) -> Result<InputRequiredResult, McpError> {
    let schema = ElicitationSchema::from_type::<Approval>()
        .map_err(|e| McpError::internal_error(format!("the approval form: {e}"), None))?;
    let elicit = ElicitRequest::new(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: approval_message(tool, plan),
        requested_schema: schema,
    });
    let mut requests = InputRequests::new();
    requests.insert(APPROVAL_INPUT.to_string(), InputRequest::Elicitation(elicit));
    Ok(InputRequiredResult::new(Some(requests), Some(token)))
}

/// A tool as MCP lists it. A mutate tool takes an optional `apply_token`
/// beside its own input, and its output is the plan or what applying did.
pub fn mcp_tool(descriptor: &ToolDescriptor) -> Tool {
    let mut value = serde_json::to_value(descriptor).unwrap_or(Value::Null);
    if descriptor.class == Class::Mutate {
        if let Some(props) = value["inputSchema"]["properties"].as_object_mut() {
            props.insert(
                APPLY_TOKEN.into(),
                json!({
                    "type": "string",
                    "description": "Leave out to get the plan (the exact change) and a one-time apply_token; \
                                    call again with the same input and that token to apply it, once a person \
                                    has approved the plan."
                }),
            );
        }
        let output = value
            .get("outputSchema")
            .cloned()
            .unwrap_or(json!({ "type": "object" }));
        value["outputSchema"] = mutate_output_schema(output);
        if let Some(description) = value["description"].as_str() {
            value["description"] = Value::String(format!(
                "{description} Changes nothing until applied: the first call returns the plan and an \
                 apply_token; show the plan to the user and call again with the token to apply."
            ));
        }
    }
    serde_json::from_value(value).unwrap_or_else(|_| Tool::default())
}

/// What a mutate tool returns: its plan (with the token) or its applied output.
fn mutate_output_schema(applied: Value) -> Value {
    let mut plan = schemars::schema_for!(Plan).to_value();
    if let Some(map) = plan.as_object_mut() {
        map.remove("$schema");
        map.remove("title");
    }
    let mut defs = Map::new();
    for schema in [&mut plan, &mut applied.clone()] {
        if let Some(Value::Object(d)) = schema.as_object_mut().and_then(|m| m.remove("$defs")) {
            defs.extend(d);
        }
    }
    let mut applied = applied;
    if let Some(map) = applied.as_object_mut() {
        map.remove("$defs");
    }
    let mut schema = json!({
        "type": "object",
        "properties": {
            "status": {
                "type": "string",
                "enum": ["planned", "applied", "rejected"],
                "description": "planned: nothing changed yet, see plan and apply_token; applied: see output; \
                                rejected: the user said no"
            },
            "plan": plan,
            "apply_token": { "type": "string" },
            "expires_in_s": { "type": "integer" },
            "output": applied,
        },
        "required": ["status"],
    });
    if !defs.is_empty() {
        schema["$defs"] = Value::Object(defs);
    }
    schema
}

/// A tool error as an MCP result: `isError`, the code in the text and in
/// `structuredContent`.
fn error_result(e: &fusion_tools::Error) -> CallToolResult {
    let body = e.to_body();
    let mut result = CallToolResult::structured_error(serde_json::to_value(&body).unwrap_or(Value::Null));
    result.content = vec![ContentBlock::text(format!("{}: {}", body.code, body.message))];
    result
}

impl ServerHandler for LocalMcp {
    fn get_info(&self) -> ServerConfig {
        let roots: Vec<String> = self
            .scope
            .root_infos()
            .iter()
            .map(|r| match r.access {
                fusion_tools::Access::ReadOnly => format!("{} (read-only)", r.path),
                fusion_tools::Access::ReadWrite => r.path.clone(),
            })
            .collect();
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("fusion-host", self.version.clone()))
        .with_instructions(format!(
            "Tools on this computer's files, confined to these folders: {}. Relative paths are relative to \
                 the first. Tools that change files return a plan first; apply it with the apply_token only \
                 after the user approved it.",
            roots.join(", ")
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let Some(class) = self.toolbox.class(&name) else {
            let available: Vec<&str> = self.toolbox.names().collect();
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{name}`; this server offers: {}",
                    available.join(", ")
                ),
                Some(json!({ "code": "unknown_tool" })),
            ));
        };
        let mut arguments = request.arguments.unwrap_or_default();
        let token = match arguments.remove(APPLY_TOKEN) {
            None => None,
            Some(Value::String(t)) if class == Class::Mutate => Some(t),
            Some(_) => {
                return Err(McpError::invalid_params(
                    format!(
                        "`{APPLY_TOKEN}` is a string, and only mutate tools take it; `{name}` is a {} tool",
                        class.as_str()
                    ),
                    Some(json!({ "code": "invalid_input" })),
                ));
            }
        };
        let input = Value::Object(arguments);
        // The retry of an approval asked in an input-required result: the
        // state is the apply token, bound to this tool and this input.
        let token = match (class, token, request.request_state) {
            (Class::Mutate, None, Some(state)) => {
                let answer = request
                    .input_responses
                    .as_ref()
                    .and_then(|r| r.get(APPROVAL_INPUT))
                    .cloned()
                    .unwrap_or(Value::Null);
                let approved = answer["action"] == "accept" && answer["content"]["approve"] == true;
                if !approved {
                    // Spend the token: the person said no (or gave no answer).
                    self.take_pending(&state, &name, &input)?;
                    let result = json!({ "status": "rejected" });
                    let mut done = CallToolResult::success(vec![ContentBlock::text(result.to_string())]);
                    done.structured_content = Some(result);
                    return Ok(done.into());
                }
                Some(state)
            }
            (_, token, _) => token,
        };
        let follows_tasks = context.client_capabilities().is_some_and(|c| c.supports_tasks());
        let applying = token.is_some();
        if follows_tasks && runs_long(&name, class) && (class != Class::Mutate || applying) {
            let precondition = match token {
                Some(token) => Some(self.take_pending(&token, &name, &input)?.precondition),
                None => None,
            };
            let mode = if applying { Mode::Apply } else { Mode::Run };
            let this = self.clone();
            let options = TaskOptions::new()
                .with_ttl_ms(TASK_TTL_MS)
                .with_poll_interval_ms(PROGRESS_EVERY.as_millis() as u64);
            let task = self.tasks.spawn(options, move |task| {
                Box::pin(async move {
                    let outcome = this
                        .run(Watcher::Task(&task), &name, mode, input, precondition)
                        .await;
                    if task.is_cancel_requested() && matches!(outcome, Err(fusion_tools::Error::Cancelled)) {
                        return Err(TaskExit::Cancelled);
                    }
                    let applied = outcome.map(|o| match mode {
                        Mode::Apply => json!({ "status": "applied", "output": o.into_value() }),
                        _ => o.into_value(),
                    });
                    into_result(&name, applied).map_err(TaskExit::Error)
                })
            });
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
        }
        let outcome = match (class, token) {
            (Class::Mutate, Some(token)) => {
                let pending = self.take_pending(&token, &name, &input)?;
                self.run(
                    Watcher::Request(&context),
                    &name,
                    Mode::Apply,
                    input,
                    Some(pending.precondition),
                )
                .await
                .map(|o| json!({ "status": "applied", "output": o.into_value() }))
            }
            (Class::Mutate, None) => match self
                .run(Watcher::Request(&context), &name, Mode::Plan, input.clone(), None)
                .await
            {
                Ok(Outcome::Plan(plan)) if asks_in_results(&context) => {
                    let token = self.remember(&name, input, &plan);
                    return Ok(approval_request(&name, &plan, token)?.into());
                }
                Ok(Outcome::Plan(plan)) => match self.ask(&context, &name, &plan).await {
                    Some(true) => self
                        .run(
                            Watcher::Request(&context),
                            &name,
                            Mode::Apply,
                            input,
                            Some(plan.precondition.clone()),
                        )
                        .await
                        .map(|o| json!({ "status": "applied", "output": o.into_value() })),
                    Some(false) => Ok(json!({ "status": "rejected", "plan": plan })),
                    None => {
                        let token = self.remember(&name, input, &plan);
                        Ok(json!({
                            "status": "planned",
                            "plan": plan,
                            "apply_token": token,
                            "expires_in_s": APPLY_TOKEN_TTL.as_secs(),
                        }))
                    }
                },
                Ok(Outcome::Output(v)) => Ok(v),
                Err(e) => Err(e),
            },
            _ => self
                .run(Watcher::Request(&context), &name, Mode::Run, input, None)
                .await
                .map(Outcome::into_value),
        };
        into_result(&name, outcome).map(Into::into)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        self.tasks.get_task(&request.task_id).map(GetTaskResult::new)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks.update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks.cancel_task(&request.task_id)
    }
}

/// `tool`'s outcome as the call's result.
fn into_result(tool: &str, outcome: Result<Value, fusion_tools::Error>) -> Result<CallToolResult, McpError> {
    match outcome {
        Ok(value) => {
            // The value itself as the structure, and its text for clients
            // that read only text.
            let mut result =
                CallToolResult::success(vec![ContentBlock::text(fusion_tools::output_text(tool, &value))]);
            result.structured_content = Some(value);
            Ok(result)
        }
        // Malformed arguments are the client's error, as JSON-RPC says.
        Err(e @ fusion_tools::Error::InvalidInput { .. }) => Err(McpError::invalid_params(
            e.to_string(),
            Some(serde_json::to_value(e.to_body()).unwrap_or(Value::Null)),
        )),
        Err(e) => Ok(error_result(&e)),
    }
}

#[cfg(test)]
mod tests {
    use fusion_tools::{Access, Plan, Precondition, Scope, Toolbox};
    use serde_json::json;

    use super::*;

    fn server() -> (tempfile::TempDir, LocalMcp) {
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        (dir, LocalMcp::new(Toolbox::builtin(), scope, "test"))
    }

    fn plan() -> Plan {
        Plan::new("write a.txt", Vec::new(), Precondition::default())
    }

    #[test]
    fn an_apply_token_expires() {
        let (_dir, mcp) = server();
        let input = json!({ "path": "a.txt", "content": "x" });
        let token = mcp.remember("write_file", input.clone(), &plan());
        let long_ago = Instant::now().checked_sub(APPLY_TOKEN_TTL + Duration::from_secs(1));
        let Some(long_ago) = long_ago else { return };
        if let Some(p) = mcp.pending.lock().unwrap().get_mut(&token) {
            p.planned = long_ago;
        }
        let e = mcp.take_pending(&token, "write_file", &input).unwrap_err();
        assert!(e.message.contains("expired"), "{e:?}");
    }

    #[test]
    fn the_oldest_plan_gives_way_past_the_bound() {
        let (_dir, mcp) = server();
        let input = json!({ "path": "a.txt", "content": "x" });
        let first = mcp.remember("write_file", input.clone(), &plan());
        let mut last = String::new();
        for _ in 0..MAX_PENDING {
            last = mcp.remember("write_file", input.clone(), &plan());
        }
        assert_eq!(mcp.pending.lock().unwrap().len(), MAX_PENDING);
        assert!(
            mcp.take_pending(&first, "write_file", &input).is_err(),
            "the oldest went"
        );
        assert!(mcp.take_pending(&last, "write_file", &input).is_ok());
    }
}
