//! The MCP server itself: the user's devices as tools, proposals and the
//! wait for a person's decision.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::request::Parts;
use fusion_protocol::{CallProgress, Class, ToolDescriptor};
use rmcp::model::SubscriptionFilter;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, Implementation, InputRequest, InputRequests, InputRequiredResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::model::{CancelTaskParams, CreateTaskResult, GetTaskParams, GetTaskResult, UpdateTaskParams};
use rmcp::service::{NotificationContext, RequestContext, SubscriptionContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use crate::{CallOptions, CallOutcome, Error, HostEvent, ProposalRecord, ProposalStatus};

use super::{McpConfig, McpUser, Owner, RemoteMcp};

/// How fresh a tool list is, for clients of the stateless revision: devices
/// come and go.
pub(super) const TOOLS_TTL_MS: u64 = 5_000;

/// The longest `wait_for_approval` waits in one call.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(60);

pub(super) fn user_of(extensions: &rmcp::model::Extensions) -> Result<McpUser, McpError> {
    extensions
        .get::<Parts>()
        .and_then(|p| p.extensions.get::<Owner>())
        .map(|o| o.0.clone())
        .ok_or_else(|| McpError::internal_error("the request was not authenticated", None))
}

pub(super) fn builtin_tool(name: &str, description: &str, input: Value, read_only: bool) -> Tool {
    serde_json::from_value(json!({
        "name": name,
        "description": description,
        "inputSchema": input,
        "annotations": { "readOnlyHint": read_only, "destructiveHint": false, "idempotentHint": read_only, "openWorldHint": false },
    }))
    .unwrap_or_default()
}

pub(super) fn proposal_input() -> Value {
    json!({
        "type": "object",
        "properties": { "proposal_id": { "type": "string", "description": "The id a mutate tool returned." } },
        "required": ["proposal_id"],
        "additionalProperties": false,
    })
}

impl RemoteMcp {
    /// The owner's devices with their whole manifests, revoked ones left out.
    async fn devices(
        &self,
        owner: &str,
    ) -> Result<Vec<(crate::DeviceStatus, Option<fusion_protocol::DeviceManifest>)>, Error> {
        let mut out = Vec::new();
        for status in self.dispatcher.devices(owner).await? {
            if status.device.revoked_at.is_some() {
                continue;
            }
            out.push(self.dispatcher.device(owner, &status.device.id).await?);
        }
        Ok(out)
    }

    /// The tools `user` is offered: a read-only credential sees no tool
    /// that changes files.
    async fn tools(&self, user: &McpUser) -> Result<Vec<Tool>, Error> {
        let mut offered: BTreeMap<String, (ToolDescriptor, Vec<String>)> = BTreeMap::new();
        for (status, manifest) in self.devices(&user.owner).await? {
            let tools = manifest.map(|m| m.tools).unwrap_or_default();
            for tool in tools
                .into_iter()
                .filter(|t| !(user.read_only && t.class == Class::Mutate))
            {
                offered
                    .entry(tool.name.clone())
                    .or_insert_with(|| (tool.clone(), Vec::new()))
                    .1
                    .push(status.device.name.clone());
            }
        }
        let mut tools = vec![
            builtin_tool(
                "list_devices",
                "The user's devices: id, name, whether online, platform, the folders each may work in \
                 (read-only or read-write) and its tools. Call a device's tool with its `device` argument.",
                json!({ "type": "object", "properties": {}, "additionalProperties": false }),
                true,
            ),
            builtin_tool(
                "get_proposal",
                "A proposed change and where it stands: pending (waiting for a person on the devices page), \
                 applied (with the output), rejected, expired or failed.",
                proposal_input(),
                true,
            ),
            builtin_tool(
                "wait_for_approval",
                "Waits (up to `timeout_s`, at most 60) until a person approves or rejects a proposed change, \
                 then returns it as get_proposal does; still pending when the time runs out.",
                {
                    let mut input = proposal_input();
                    input["properties"]["timeout_s"] = json!({ "type": "integer", "minimum": 1, "maximum": 60, "description": "How long to wait; default 30." });
                    input
                },
                true,
            ),
        ];
        for (name, (descriptor, devices)) in offered {
            tools.push(device_tool(&name, &descriptor, &devices, &self.config));
        }
        Ok(tools)
    }

    pub(super) fn proposal_view(&self, p: &ProposalRecord) -> Value {
        json!({
            "proposal_id": p.id,
            "status": p.status,
            "device_id": p.device_id,
            "tool": p.tool,
            "requested_by": p.requested_by,
            "plan": p.plan,
            "approve_url": format!("{}{}", self.config.public_url, self.config.approve_path),
            "output": p.output,
            "error": p.error,
        })
    }

    pub(super) async fn call_device_tool(
        &self,
        user: &McpUser,
        name: &str,
        mut arguments: Map<String, Value>,
        progress: Option<mpsc::UnboundedSender<CallProgress>>,
    ) -> Result<Answer, Error> {
        let owner = user.owner.as_str();
        let wanted = match arguments.remove("device") {
            Some(Value::String(d)) => d,
            // A tool no device offers is unknown, whatever its arguments.
            _ if !self.tools(user).await?.iter().any(|t| t.name == name) => {
                return Err(Error::InvalidRequest(format!(
                    "unknown tool `{name}`: none of your devices offers it; list the tools again, devices come and go"
                )));
            }
            _ => {
                return Err(Error::InvalidRequest(format!(
                    "{name} needs `device`: a device's id or name from list_devices"
                )));
            }
        };
        let devices = self.dispatcher.devices(owner).await?;
        let device = devices
            .iter()
            .filter(|d| d.device.revoked_at.is_none())
            .find(|d| d.device.id == wanted || d.device.name == wanted)
            .ok_or_else(|| Error::DeviceNotFound {
                device_id: wanted.clone(),
            })?;
        if user.read_only {
            let (_, manifest) = self.dispatcher.device(owner, &device.device.id).await?;
            let mutates = manifest
                .iter()
                .flat_map(|m| &m.tools)
                .any(|t| t.name == name && t.class == Class::Mutate);
            if mutates {
                return Err(Error::InvalidRequest(format!(
                    "{name} changes files, and this client was allowed to read only; \
                     sign it in again and allow it to propose changes"
                )));
            }
        }
        let options = CallOptions {
            requested_by: Some(format!("{} (MCP)", user.name)),
            progress,
            ..CallOptions::default()
        };
        match self
            .dispatcher
            .call(owner, &device.device.id, name, Value::Object(arguments), options)
            .await?
        {
            CallOutcome::Output(out) => Ok(Answer::Output(out.output)),
            CallOutcome::Proposal(p) => Ok(Answer::Proposal(p)),
        }
    }

    /// A device call for an MCP request, [`watched`]: its progress passed
    /// on, and stopped when the request is.
    async fn watched_call(
        &self,
        context: &RequestContext<RoleServer>,
        user: &McpUser,
        name: &str,
        arguments: Map<String, Value>,
    ) -> Result<Answer, Error> {
        let (progress, reports) = mpsc::unbounded_channel();
        let call = self.call_device_tool(user, name, arguments, Some(progress));
        watched(context, name, reports, call).await
    }

    /// A person's approval, asked for inside the protocol: a URL-mode
    /// elicitation pointing at the proposal on the app's page, and the
    /// proposal's id as the request state the client sends back.
    fn ask_for_approval(&self, p: &ProposalRecord) -> InputRequiredResult {
        // The page scrolls to the proposal's card (`id="proposal-…"` on the
        // reference app's page).
        let url = format!(
            "{}{}?proposal={id}#proposal-{id}",
            self.config.public_url,
            self.config.approve_path,
            id = p.id
        );
        let message = format!(
            "Approve this change on {}: {} ({}).",
            self.config.public_url, p.plan.summary, p.tool
        );
        let elicit = ElicitRequest::new(ElicitRequestParams::UrlElicitationParams {
            meta: None,
            message,
            url,
            elicitation_id: p.id.clone(),
        });
        let mut requests = InputRequests::new();
        requests.insert(APPROVAL_INPUT.to_string(), InputRequest::Elicitation(elicit));
        InputRequiredResult::new(Some(requests), Some(p.id.clone()))
    }

    /// The client's retry after [`Self::ask_for_approval`]: `state` names the
    /// proposal (checked as the owner's, and for this tool). A person who
    /// declined in the client rejects it; otherwise it is awaited a while,
    /// then the outcome is the result, or the question is asked again.
    async fn approval_round(
        &self,
        owner: &str,
        tool: &str,
        state: &str,
        responses: Option<&rmcp::model::InputResponses>,
    ) -> Result<CallToolResponse, McpError> {
        let proposal = match self.dispatcher.proposal(owner, state).await {
            Ok(p) if p.tool == tool => p,
            Ok(_) | Err(Error::ProposalNotFound { .. }) => {
                return Err(McpError::invalid_params(
                    format!(
                        "requestState does not name a change of {tool} waiting for you; call {tool} again"
                    ),
                    None,
                ));
            }
            Err(e) => return Ok(error_result(&e).into()),
        };
        let action = responses
            .and_then(|r| r.get(APPROVAL_INPUT))
            .and_then(|v| v.get("action"))
            .and_then(Value::as_str);
        if action == Some("decline") && proposal.status == ProposalStatus::Pending {
            let rejected = self.dispatcher.reject(owner, &proposal.id).await;
            return Ok(match rejected {
                Ok(p) => outcome_result(self.proposal_view(&p), &p),
                Err(e) => error_result(&e),
            }
            .into());
        }
        let mut events = self.dispatcher.subscribe();
        let deadline = tokio::time::Instant::now() + APPROVAL_ROUND;
        let mut proposal = proposal;
        while proposal.status == ProposalStatus::Pending && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
            proposal = match self.dispatcher.proposal(owner, state).await {
                Ok(p) => p,
                Err(e) => return Ok(error_result(&e).into()),
            };
        }
        if proposal.status == ProposalStatus::Pending {
            // Not decided yet (or the person closed the page): ask again,
            // unless the client gave up.
            return Ok(if action == Some("cancel") {
                outcome_result(self.proposal_view(&proposal), &proposal).into()
            } else {
                self.ask_for_approval(&proposal).into()
            });
        }
        Ok(outcome_result(self.proposal_view(&proposal), &proposal).into())
    }
}

/// What a device tool answered: its output, or a change waiting for a person.
pub(super) enum Answer {
    Output(Value),
    Proposal(Box<ProposalRecord>),
}

/// The key of the approval among a call's input requests.
const APPROVAL_INPUT: &str = "approval";

/// How long one round of a client's retry waits for a person's decision.
const APPROVAL_ROUND: Duration = Duration::from_secs(30);

/// A proposal's state as a tool result: an error result unless it applied
/// (or still waits, for a client that stopped asking).
pub(super) fn outcome_result(view: Value, p: &ProposalRecord) -> CallToolResult {
    let ok = matches!(p.status, ProposalStatus::Applied | ProposalStatus::Pending);
    let text = view.to_string();
    let mut result = if ok {
        CallToolResult::success(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::error(vec![ContentBlock::text(text)])
    };
    result.structured_content = Some(view);
    result
}

/// Whether the client can send its user to a page (URL-mode elicitation)
/// inside a 2026-07-28 request, where an input-required result can reach it.
fn can_send_to_a_page(context: &RequestContext<RoleServer>) -> bool {
    let v2026 = context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
    v2026
        && context
            .client_capabilities()
            .and_then(|c| c.elicitation)
            .is_some_and(|e| e.url.is_some())
}

/// A device tool as the remote server lists it: its own input plus `device`.
pub(super) fn device_tool(
    name: &str,
    descriptor: &ToolDescriptor,
    devices: &[String],
    config: &McpConfig,
) -> Tool {
    let mut input = descriptor.input_schema.clone();
    if let Some(props) = input["properties"].as_object_mut() {
        props.insert(
            "device".into(),
            json!({ "type": "string", "description": format!("The device to run on, by id or name: {}", devices.join(", ")) }),
        );
    }
    match input["required"].as_array_mut() {
        Some(required) => required.push(json!("device")),
        None => input["required"] = json!(["device"]),
    }
    let mut description = format!("{} Offered by: {}.", descriptor.description, devices.join(", "));
    let output = if descriptor.class == Class::Mutate {
        description.push_str(&format!(
            " Changes nothing by itself: it returns a proposal (its exact plan) that a person approves on \
             {}{}; follow it with wait_for_approval.",
            config.public_url, config.approve_path
        ));
        Some(json!({
            "type": "object",
            "properties": {
                "proposal_id": { "type": "string" },
                "status": { "type": "string" },
                "device_id": { "type": "string" },
                "tool": { "type": "string" },
                "plan": { "type": "object" },
                "approve_url": { "type": "string" },
            },
            "required": ["proposal_id", "status", "plan", "approve_url"],
        }))
    } else {
        descriptor.output_schema.clone()
    };
    let mut tool = json!({
        "name": name,
        "description": description,
        "inputSchema": input,
        "annotations": descriptor.annotations,
    });
    if let Some(output) = output {
        tool["outputSchema"] = output;
    }
    serde_json::from_value(tool).unwrap_or_default()
}

/// How often a device call in progress tells a client that asked (with a
/// `progressToken`) that it is still running.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Awaits a device call for an MCP request: when the client asked for
/// progress, passes on the device's own reports (`reports`: units done of
/// a total, as the tool counts them), and until the first arrives says
/// every [`PROGRESS_EVERY`] how long the call has run. Stops when the
/// request is cancelled (`notifications/cancelled`, or the client hung
/// up): that drops the call, which tells the device to cancel it
/// (`caller_gone`); an approved apply is not such a call, and runs on.
async fn watched<T>(
    context: &RequestContext<RoleServer>,
    tool: &str,
    mut reports: mpsc::UnboundedReceiver<CallProgress>,
    call: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::pin!(call);
    let token = context.meta.get_progress_token();
    let started = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
    // Progress only ever increases: seconds until the device reports, then
    // its units, each sent only when above what was sent before.
    let (mut sent, mut from_device) = (0.0f64, false);
    loop {
        let param = tokio::select! {
            done = &mut call => return done,
            () = context.ct.cancelled() => {
                return Err(Error::Tool(fusion_protocol::ErrorBody::new(
                    "cancelled",
                    format!("{tool} was cancelled by the client; the device was told to stop"),
                )));
            }
            Some(report) = reports.recv(), if token.is_some() => {
                from_device = true;
                let mut param = ProgressNotificationParam::new(token.clone().expect("checked above"), report.done as f64)
                    .with_message(report.describe(tool));
                if let Some(total) = report.total {
                    param = param.with_total(total as f64);
                }
                param
            }
            _ = ticks.tick(), if token.is_some() && !from_device => {
                let elapsed = started.elapsed().as_secs_f64().floor();
                ProgressNotificationParam::new(token.clone().expect("checked above"), elapsed)
                    .with_message(format!("{tool} running on the device for {elapsed:.0} s"))
            }
        };
        if param.progress > sent {
            sent = param.progress;
            let _ = context.peer.notify_progress(param).await;
        }
    }
}

/// Whether `event` changes `owner`'s tool list: a device of theirs came,
/// went, was paired or revoked.
fn changes_tools(event: &HostEvent, owner: &str) -> bool {
    matches!(
        event,
        HostEvent::DeviceOnline { owner: o, .. }
            | HostEvent::DeviceOffline { owner: o, .. }
            | HostEvent::DeviceEnrolled { owner: o, .. }
            | HostEvent::DeviceRevoked { owner: o, .. } if o == owner
    )
}

/// The tools every user has, whatever their devices.
const BUILTIN: [&str; 3] = ["list_devices", "get_proposal", "wait_for_approval"];

/// `tool`'s output as a result: structured, and as text for clients that
/// read only text.
pub(super) fn success(tool: &str, value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(fusion_protocol::output_text(
        tool, &value,
    ))]);
    result.structured_content = Some(value);
    result
}

/// A dispatcher error as an MCP result: `isError` with the code.
pub(super) fn error_result(e: &Error) -> CallToolResult {
    let body = e.to_body();
    let mut result = CallToolResult::structured_error(serde_json::to_value(&body).unwrap_or(Value::Null));
    result.content = vec![ContentBlock::text(format!("{}: {}", body.code, body.message))];
    result
}

impl ServerHandler for RemoteMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            "fusion-host-server",
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(format!(
            "Tools on the user's own computers. Call list_devices first; pass `device` to every other \
             tool. Tools that change files return a proposal that a person approves on {}{}; use \
             wait_for_approval to follow it.",
            self.config.public_url, self.config.approve_path
        ))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Sessions of the older revision hear when the tool list changes.
        let Ok(McpUser { owner, .. }) = user_of(&context.extensions) else {
            return;
        };
        let mut events = self.dispatcher.subscribe();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(event) if changes_tools(&event, &owner) => {
                        if peer.notify_tool_list_changed().await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    /// 2026-07-28 clients ask for change notifications with
    /// `subscriptions/listen`: the tool list is what changes here (devices
    /// come, go, are paired and revoked).
    fn accepted_subscription_filter(&self, _requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    /// One listening client: `notifications/tools/list_changed` whenever
    /// the owner's devices change, until the client cancels or the server
    /// shuts down (then the final result says so).
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let owner = user_of(&context.request_context().extensions)?.owner;
        let mut events = self.dispatcher.subscribe();
        let stopped = self.dispatcher.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = &mut stopped => return Ok(()),
                event = events.recv() => match event {
                    Ok(event) if changes_tools(&event, &owner) => {
                        if context.sink().notify_tool_list_changed().await.is_err() {
                            return Ok(());
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let user = user_of(&context.extensions)?;
        let tools = self
            .tools(&user)
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))?;
        Ok(ListToolsResult::with_all_items(tools).with_ttl_ms(TOOLS_TTL_MS))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let user = user_of(&context.extensions)?;
        let owner = user.owner.clone();
        let name = request.name.to_string();
        if let Some(state) = request.request_state.as_deref() {
            if user.read_only {
                return Err(McpError::invalid_params(
                    "this client was allowed to read only, so it has no changes to follow",
                    None,
                ));
            }
            return self
                .approval_round(&owner, &name, state, request.input_responses.as_ref())
                .await;
        }
        let arguments = request.arguments.unwrap_or_default();
        if !BUILTIN.contains(&name.as_str()) && self.as_task(&context, &owner, &name, &arguments).await {
            let this = self.clone();
            let task = self.tasks.spawn(&owner, move |task| {
                Box::pin(async move { this.run_as_task(task, user, name, arguments).await })
            });
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
        }
        let proposal_id = || match arguments.get("proposal_id") {
            Some(Value::String(id)) => Ok(id.clone()),
            _ => Err(McpError::invalid_params(
                format!("{name} needs `proposal_id`, a string"),
                None,
            )),
        };
        let result = match name.as_str() {
            "list_devices" => self.devices(&owner).await.map(|devices| {
                let list: Vec<Value> = devices
                    .iter()
                    .map(|(status, manifest)| {
                        json!({
                            "id": status.device.id,
                            "name": status.device.name,
                            "online": status.online,
                            "platform": status.device.platform,
                            "folders": manifest.as_ref().map(|m| m.roots.clone()).unwrap_or_default(),
                            "tools": manifest.as_ref().map(|m| m.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>()).unwrap_or_default(),
                        })
                    })
                    .collect();
                json!({ "devices": list })
            }),
            "get_proposal" => {
                let id = proposal_id()?;
                self.dispatcher.proposal(&owner, &id).await.map(|p| self.proposal_view(&p))
            }
            "wait_for_approval" => {
                let id = proposal_id()?;
                let timeout = arguments
                    .get("timeout_s")
                    .and_then(Value::as_u64)
                    .map_or(Duration::from_secs(30), Duration::from_secs)
                    .min(MAX_WAIT);
                let mut events = self.dispatcher.subscribe();
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    match self.dispatcher.proposal(&owner, &id).await {
                        Ok(p) if p.status == ProposalStatus::Pending && tokio::time::Instant::now() < deadline => {
                            // Woken by any resolution, or every second to look again.
                            let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
                        }
                        other => break other.map(|p| self.proposal_view(&p)),
                    }
                }
            }
            _ => match self.watched_call(&context, &user, &name, arguments.clone()).await {
                Ok(Answer::Proposal(p)) if can_send_to_a_page(&context) => {
                    return Ok(self.ask_for_approval(&p).into());
                }
                Ok(Answer::Proposal(p)) => Ok(self.proposal_view(&p)),
                Ok(Answer::Output(output)) => Ok(output),
                Err(Error::InvalidRequest(message)) => return Err(McpError::invalid_params(message, None)),
                Err(Error::UnknownTool { .. }) => {
                    return Err(McpError::invalid_params(
                        format!("unknown tool `{name}`; list the tools again, devices come and go"),
                        None,
                    ));
                }
                Err(Error::Tool(body)) if body.code == "invalid_input" => {
                    return Err(McpError::invalid_params(body.message.clone(), serde_json::to_value(&body).ok()));
                }
                Err(e) => Err(e),
            },
        };
        Ok(match result {
            Ok(value) => success(&name, value),
            Err(e) => error_result(&e),
        }
        .into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let owner = user_of(&context.extensions)?.owner;
        self.tasks
            .get(&self.dispatcher, &owner, &request.task_id)
            .await
            .map(GetTaskResult::new)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let owner = user_of(&context.extensions)?.owner;
        self.tasks
            .update(
                &self.dispatcher,
                &owner,
                &request.task_id,
                request.input_responses,
            )
            .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let owner = user_of(&context.extensions)?.owner;
        self.tasks
            .cancel(&self.dispatcher, &owner, &request.task_id)
            .await
    }
}
