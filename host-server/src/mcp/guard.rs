//! What every `/mcp` request passes before the transport sees it: Host
//! and Origin, the Bearer token, the session's owner, and a well-formed
//! JSON-RPC body.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{McpAuth, McpConfig, Owner};

#[derive(Clone)]
pub(super) struct Guard {
    pub(super) auth: Arc<dyn McpAuth>,
    pub(super) config: Arc<McpConfig>,
    /// [`McpConfig::hosts`], worked out once.
    pub(super) hosts: Arc<Vec<String>>,
}

/// Host and Origin first (a DNS-rebinding page gets 403 whatever it
/// sends), then the Bearer token (401 with where to learn more).
pub(super) async fn authenticate(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
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
        let signs_in = !guard.config.authorization_servers.is_empty();
        let (code, message) = match (token, signs_in) {
            (None, false) => (
                "unauthorized",
                "send `Authorization: Bearer <token>` with an API token from POST /api/tokens",
            ),
            (None, true) => (
                "unauthorized",
                "sign in with OAuth (the resource metadata names the authorization server), \
                 or send `Authorization: Bearer <token>` with an API token from POST /api/tokens",
            ),
            (Some(_), false) => (
                "token_unknown",
                "the token is unknown or revoked; create a new one with POST /api/tokens",
            ),
            (Some(_), true) => (
                "token_unknown",
                "the token is unknown, expired, revoked or for another resource; sign in again, \
                 or create an API token with POST /api/tokens",
            ),
        };
        let mut challenge = format!("Bearer resource_metadata=\"{}\"", guard.config.metadata_url());
        if !guard.config.scopes_supported.is_empty() {
            challenge.push_str(&format!(
                ", scope=\"{}\"",
                guard.config.scopes_supported.join(" ")
            ));
        }
        if token.is_some() {
            challenge.push_str(", error=\"invalid_token\"");
        }
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

pub(super) const SESSION_HEADER: &str = "mcp-session-id";

/// The largest JSON-RPC message `/mcp` reads (the transport's own bound).
pub(super) const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// Checks a POST's body is one JSON-RPC message before the transport sees
/// it, so a malformed one is answered as JSON-RPC says (`-32700`, `-32600`,
/// with HTTP 400, 413 or 415), never in plain text.
pub(super) async fn json_rpc_body(request: Request) -> Result<Request, Response> {
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

pub(super) fn rpc_error(status: StatusCode, code: i64, message: &str) -> Response {
    let body = json!({ "jsonrpc": "2.0", "id": null, "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

pub(super) fn refuse(status: StatusCode, code: &str, message: &str, challenge: Option<String>) -> Response {
    let mut response = (status, axum::Json(json!({ "code": code, "message": message }))).into_response();
    if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
    }
    response
}
