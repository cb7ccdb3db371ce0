//! `/mcp`: each user's devices for MCP clients, over Streamable HTTP.
//!
//! An app nests [`mcp_router`] (example-web mounts it at `/mcp`) and serves
//! [`protected_resource_router`] at its root. Every request carries a Bearer
//! token that the app checks ([`McpAuth`]); the tools are those of the
//! signed-in user's devices, each taking a `device` argument (the device's id
//! or name), plus `list_devices`, `get_proposal` and `wait_for_approval`.
//! Calls go through [`Dispatcher::call`]: a mutate tool creates a proposal,
//! returned with its plan and the page to approve it on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fusion_protocol::{Class, ToolDescriptor};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::transport::streamable_http_server::session::SessionManager as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Map, Value, json};

use crate::{CallOptions, CallOutcome, Dispatcher, Error, HostEvent, ProposalRecord, ProposalStatus};

/// Who a Bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpUser {
    /// The owner id the dispatcher knows the user's devices by.
    pub owner: String,
    /// How the user is shown to people (an email), as the `requested_by` of
    /// the proposals made over MCP: "alice@example.com (MCP)".
    pub name: String,
    /// Which credential authenticated the request (the id of an API token,
    /// say; never the token). A session is bound to the credential that
    /// opened it: a request with any other gets 404, and
    /// [`McpSessions::end_credential`] ends them when it is revoked.
    pub credential: String,
}

/// How the app tells who a Bearer token belongs to.
#[async_trait::async_trait]
pub trait McpAuth: Send + Sync + 'static {
    /// The user of `token`, or `None` when it is unknown or revoked.
    async fn user(&self, token: &str) -> Option<McpUser>;
}

/// Where the MCP endpoint lives, for the checks and links it needs.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The app's public address, `https://app.example.com` (no trailing
    /// slash): allowed `Host` and `Origin`, and the base of links.
    pub public_url: String,
    /// Where the router is nested, `/mcp`.
    pub path: String,
    /// The open sessions, for the app to end when a credential is revoked.
    pub sessions: McpSessions,
    /// The page a person approves proposals on, `/devices`.
    pub approve_path: String,
}

impl McpConfig {
    /// `public_url` with the endpoint at `/mcp` and approvals on `/devices`.
    pub fn new(public_url: &str) -> Self {
        McpConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            path: "/mcp".into(),
            approve_path: "/devices".into(),
            sessions: McpSessions::default(),
        }
    }

    fn resource(&self) -> String {
        format!("{}{}", self.public_url, self.path)
    }

    fn metadata_url(&self) -> String {
        format!(
            "{}/.well-known/oauth-protected-resource{}",
            self.public_url, self.path
        )
    }

    /// `host` and `host:port` of the public address.
    fn hosts(&self) -> Vec<String> {
        let authority = self
            .public_url
            .split("://")
            .nth(1)
            .unwrap_or(&self.public_url)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => authority.clone(),
        };
        let port = authority.strip_prefix(&host).unwrap_or_default().to_string();
        let mut hosts = vec![authority.clone(), host.clone()];
        // A loopback address answers to each of its names.
        if ["127.0.0.1", "localhost", "[::1]"].contains(&host.as_str()) {
            for alias in ["127.0.0.1", "localhost", "[::1]"] {
                hosts.push(format!("{alias}{port}"));
                hosts.push(alias.to_string());
            }
        }
        hosts.sort();
        hosts.dedup();
        hosts
    }
}

/// The open MCP sessions and the credential each was opened with. A clone
/// is a handle to the same sessions.
#[derive(Clone, Default)]
pub struct McpSessions {
    manager: Arc<LocalSessionManager>,
    /// Session id → (owner, credential).
    bound: Arc<Mutex<HashMap<String, (String, String)>>>,
}

impl std::fmt::Debug for McpSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpSessions")
            .field("bound", &self.bound.lock().map(|b| b.len()).unwrap_or(0))
            .finish()
    }
}

/// Past this many bindings, those of sessions that ended on their own
/// (expired, dropped) are cleared out every 256 new ones.
const PRUNE_AT: usize = 4096;

impl McpSessions {
    /// Ends every session opened with `credential` at once (its open
    /// streams close); call it when the credential is revoked. Returns how
    /// many were ended.
    pub async fn end_credential(&self, credential: &str) -> usize {
        let ids: Vec<String> = match self.bound.lock() {
            Ok(mut bound) => {
                let ids: Vec<String> = bound
                    .iter()
                    .filter(|(_, (_, c))| c == credential)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &ids {
                    bound.remove(id);
                }
                ids
            }
            Err(_) => Vec::new(),
        };
        for id in &ids {
            let _ = self.manager.close_session(&Arc::from(id.as_str())).await;
        }
        ids.len()
    }

    /// Whether `session` may be used by `user`: unknown sessions pass (the
    /// transport answers for them), known ones only with their credential.
    fn allows(&self, session: &str, user: &McpUser) -> bool {
        self.bound.lock().is_ok_and(|bound| {
            bound
                .get(session)
                .is_none_or(|(owner, credential)| *owner == user.owner && *credential == user.credential)
        })
    }

    async fn bind(&self, session: &str, user: &McpUser) {
        let stale: Vec<String> = match self.bound.lock() {
            Ok(mut bound) => {
                bound.insert(session.to_string(), (user.owner.clone(), user.credential.clone()));
                // Now and then, not on every bind past the mark.
                if bound.len() >= PRUNE_AT && bound.len() % 256 == 0 {
                    bound.keys().cloned().collect()
                } else {
                    Vec::new()
                }
            }
            Err(_) => return,
        };
        for id in stale {
            if !self
                .manager
                .has_session(&Arc::from(id.as_str()))
                .await
                .unwrap_or(true)
                && let Ok(mut bound) = self.bound.lock()
            {
                bound.remove(&id);
            }
        }
    }

    fn unbind(&self, session: &str) {
        if let Ok(mut bound) = self.bound.lock() {
            bound.remove(session);
        }
    }
}

/// The user a request was authenticated as, put in its extensions.
#[derive(Debug, Clone)]
struct Owner(McpUser);

/// The router to nest at [`McpConfig::path`].
pub fn mcp_router(dispatcher: Dispatcher, auth: Arc<dyn McpAuth>, config: McpConfig) -> Router {
    let hosts = Arc::new(config.hosts());
    let http = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts.to_vec())
        .with_allowed_origins([config.public_url.clone()])
        .with_legacy_session_mode(true)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    let handler = RemoteMcp {
        dispatcher,
        config: Arc::new(config.clone()),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::clone(&config.sessions.manager),
        http,
    );
    let guard = Guard {
        auth,
        hosts,
        config: Arc::new(config),
    };
    Router::new()
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(guard, authenticate))
}

/// `/.well-known/oauth-protected-resource` and `…/mcp` (RFC 9728), at the
/// app's root: where an OAuth-capable client learns how to authenticate.
pub fn protected_resource_router(config: McpConfig) -> Router {
    let metadata = json!({
        "resource": config.resource(),
        "bearer_methods_supported": ["header"],
        "resource_name": "fusion-host devices",
        "resource_documentation": format!("{}/devices", config.public_url),
    });
    let handler = move || {
        let metadata = metadata.clone();
        async move { axum::Json(metadata) }
    };
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            axum::routing::get(handler.clone()),
        )
        .route(
            &format!("/.well-known/oauth-protected-resource{}", config.path),
            axum::routing::get(handler),
        )
}

#[derive(Clone)]
struct Guard {
    auth: Arc<dyn McpAuth>,
    config: Arc<McpConfig>,
    /// [`McpConfig::hosts`], worked out once.
    hosts: Arc<Vec<String>>,
}

/// Host and Origin first (a DNS-rebinding page gets 403 whatever it
/// sends), then the Bearer token (401 with where to learn more).
async fn authenticate(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host_ok = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| guard.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
    let origin_ok = headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|o| {
            o.trim_end_matches('/')
                .eq_ignore_ascii_case(&guard.config.public_url)
        });
    if !host_ok || !origin_ok {
        let which = if host_ok { "Origin" } else { "Host" };
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            &format!(
                "the {which} header does not name this server; MCP is served at {}",
                guard.config.resource()
            ),
            None,
        );
    }
    let token = bearer(headers);
    let owner = match token {
        Some(t) => guard.auth.user(t).await,
        None => None,
    };
    let Some(owner) = owner else {
        let (code, message) = match token {
            None => (
                "unauthorized",
                "send `Authorization: Bearer <token>` with an API token from POST /api/tokens",
            ),
            Some(_) => (
                "token_unknown",
                "the token is unknown or revoked; create a new one with POST /api/tokens",
            ),
        };
        let challenge = format!(
            "Bearer resource_metadata=\"{}\"{}",
            guard.config.metadata_url(),
            if token.is_some() {
                ", error=\"invalid_token\""
            } else {
                ""
            }
        );
        return refuse(StatusCode::UNAUTHORIZED, code, message, Some(challenge));
    };
    // A session belongs to the credential that opened it: to anyone else it
    // does not exist (not 403, which would say it does).
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let sessions = &guard.config.sessions;
    if let Some(id) = &session
        && !sessions.allows(id, &owner)
    {
        return refuse(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no such MCP session; start a new one with initialize",
            None,
        );
    }
    let deleting = request.method() == axum::http::Method::DELETE;
    if request.method() == axum::http::Method::POST {
        request = match json_rpc_body(request).await {
            Ok(request) => request,
            Err(response) => return response,
        };
    }
    request.extensions_mut().insert(Owner(owner.clone()));
    let response = next.run(request).await;
    match &session {
        None => {
            if let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                sessions.bind(id, &owner).await;
            }
        }
        Some(id) if deleting && response.status().is_success() => sessions.unbind(id),
        Some(_) => {}
    }
    response
}

const SESSION_HEADER: &str = "mcp-session-id";

/// The largest JSON-RPC message `/mcp` reads (the transport's own bound).
const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Checks a POST's body is one JSON-RPC message before the transport sees
/// it, so a malformed one is answered as JSON-RPC says (`-32700`, `-32600`,
/// with HTTP 400, 413 or 415), never in plain text.
async fn json_rpc_body(request: Request) -> Result<Request, Response> {
    let json_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            -32600,
            "send the JSON-RPC message with Content-Type: application/json",
        ));
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_MESSAGE_BYTES).await else {
        return Err(rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            -32600,
            &format!("the message is larger than {MAX_MESSAGE_BYTES} bytes; send less at once"),
        ));
    };
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        rpc_error(
            StatusCode::BAD_REQUEST,
            -32700,
            &format!("parse error: the body is not JSON ({e})"),
        )
    })?;
    if value.is_array() {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            "JSON-RPC batches are not supported in this protocol revision; send one message per request",
        ));
    }
    if let Err(e) = serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(value) {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            -32600,
            &format!("invalid request: not a JSON-RPC 2.0 request or notification an MCP client sends ({e})"),
        ));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

fn refuse(status: StatusCode, code: &str, message: &str, challenge: Option<String>) -> Response {
    let mut response = (status, axum::Json(json!({ "code": code, "message": message }))).into_response();
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The MCP handler: one per session (or per stateless request).
#[derive(Clone)]
struct RemoteMcp {
    dispatcher: Dispatcher,
    config: Arc<McpConfig>,
}

/// How fresh a tool list is, for clients of the stateless revision: devices
/// come and go.
const TOOLS_TTL_MS: u64 = 5_000;

/// The longest `wait_for_approval` waits in one call.
const MAX_WAIT: Duration = Duration::from_secs(60);

fn user_of(extensions: &rmcp::model::Extensions) -> Result<McpUser, McpError> {
    extensions
        .get::<Parts>()
        .and_then(|p| p.extensions.get::<Owner>())
        .map(|o| o.0.clone())
        .ok_or_else(|| McpError::internal_error("the request was not authenticated", None))
}

fn builtin_tool(name: &str, description: &str, input: Value, read_only: bool) -> Tool {
    serde_json::from_value(json!({
        "name": name,
        "description": description,
        "inputSchema": input,
        "annotations": { "readOnlyHint": read_only, "destructiveHint": false, "idempotentHint": read_only, "openWorldHint": false },
    }))
    .unwrap_or_default()
}

fn proposal_input() -> Value {
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

    async fn tools(&self, owner: &str) -> Result<Vec<Tool>, Error> {
        let mut offered: BTreeMap<String, (ToolDescriptor, Vec<String>)> = BTreeMap::new();
        for (status, manifest) in self.devices(owner).await? {
            for tool in manifest.map(|m| m.tools).unwrap_or_default() {
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

    async fn proposal(&self, owner: &str, id: &str) -> Result<ProposalRecord, Error> {
        match self.dispatcher.store().proposal(id).await? {
            Some(p) if p.owner == owner => Ok(p),
            _ => Err(Error::ProposalNotFound {
                proposal_id: id.to_string(),
            }),
        }
    }

    fn proposal_view(&self, p: &ProposalRecord) -> Value {
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

    async fn call_device_tool(
        &self,
        user: &McpUser,
        name: &str,
        mut arguments: Map<String, Value>,
    ) -> Result<Value, Error> {
        let owner = user.owner.as_str();
        let wanted = match arguments.remove("device") {
            Some(Value::String(d)) => d,
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
        let options = CallOptions {
            requested_by: Some(format!("{} (MCP)", user.name)),
            ..CallOptions::default()
        };
        match self
            .dispatcher
            .call(owner, &device.device.id, name, Value::Object(arguments), options)
            .await?
        {
            CallOutcome::Output(out) => Ok(out.output),
            CallOutcome::Proposal(p) => Ok(self.proposal_view(&p)),
        }
    }
}

/// A device tool as the remote server lists it: its own input plus `device`.
fn device_tool(name: &str, descriptor: &ToolDescriptor, devices: &[String], config: &McpConfig) -> Tool {
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

/// A dispatcher error as an MCP result: `isError` with the code.
fn error_result(e: &Error) -> CallToolResult {
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
                    Ok(
                        HostEvent::DeviceOnline { owner: o, .. }
                        | HostEvent::DeviceOffline { owner: o, .. }
                        | HostEvent::DeviceEnrolled { owner: o, .. }
                        | HostEvent::DeviceRevoked { owner: o, .. },
                    ) if o == owner => {
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

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let owner = user_of(&context.extensions)?.owner;
        let tools = self
            .tools(&owner)
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
        let arguments = request.arguments.unwrap_or_default();
        let name = request.name.to_string();
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
                self.proposal(&owner, &id).await.map(|p| self.proposal_view(&p))
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
                    match self.proposal(&owner, &id).await {
                        Ok(p) if p.status == ProposalStatus::Pending && tokio::time::Instant::now() < deadline => {
                            // Woken by any resolution, or every second to look again.
                            let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
                        }
                        other => break other.map(|p| self.proposal_view(&p)),
                    }
                }
            }
            _ => match self.call_device_tool(&user, &name, arguments.clone()).await {
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
                other => other,
            },
        };
        Ok(match result {
            Ok(value) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
                result.structured_content = Some(value);
                result
            }
            Err(e) => error_result(&e),
        }
        .into())
    }
}
