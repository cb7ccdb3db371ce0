//! The app: state, the router, the JSON API, and its one error type.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fusion_host_server::{CallOptions, ProposalStatus, router as device_routes};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{self, Authed};
use crate::error::AppError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// The whole app.
pub(crate) fn router(state: AppState, oauth: crate::oauth::OAuth) -> Router {
    let api = Router::new()
        .route("/api/session", get(session))
        .route("/api/devices", get(devices))
        .route("/api/devices/{id}", get(device))
        .route("/api/devices/{id}/calls", post(call))
        .route("/api/devices/{id}/revoke", post(revoke))
        .route("/api/devices/{id}/rename", post(rename))
        .route("/api/proposals", get(proposals))
        .route("/api/calls", get(calls))
        .route("/api/activity", get(activity))
        .route("/api/blobs/{id}", get(blob))
        .route("/api/pairing-codes", post(pairing_code))
        .route("/api/tokens", get(api_tokens).post(api_token))
        .route("/api/tokens/{id}", axum::routing::delete(revoke_api_token))
        .route("/api/connected-clients", get(connected_clients))
        .route(
            "/api/connected-clients/{id}",
            axum::routing::delete(disconnect_client),
        )
        .route("/events", get(events))
        .route("/health", get(health))
        .with_state(state.clone());
    let approve = Router::new()
        .route("/approve", post(approve))
        .with_state(state.clone());
    let mcp = fusion_host_server::mcp::McpConfig {
        sessions: state.mcp_sessions.clone(),
        authorization_servers: vec![oauth.issuer.clone()],
        scopes_supported: crate::oauth::SCOPES.map(String::from).to_vec(),
        ..fusion_host_server::mcp::McpConfig::new(&state.public_url)
    };
    let mcp_tokens = std::sync::Arc::new(crate::oauth::McpTokens {
        db: state.db.clone(),
        resource: oauth.resource.clone(),
    });
    let app = Router::new()
        .nest(
            "/mcp",
            fusion_host_server::mcp::mcp_router(state.dispatcher.clone(), mcp_tokens, mcp.clone()),
        )
        .merge(fusion_host_server::mcp::protected_resource_router(mcp))
        .nest(
            "/api/host",
            device_routes(state.dispatcher.clone()).merge(approve),
        )
        .merge(api)
        .merge(crate::releases::router(state.clone(), state.releases.as_deref()))
        .merge(crate::updates::router(state.clone()))
        .merge(crate::oauth::router(state.clone(), oauth))
        .merge(crate::pages::router(state))
        .method_not_allowed_fallback(crate::extract::method_not_allowed)
        .fallback(crate::extract::not_found);
    with_security_headers(app).layer(tower_http::trace::TraceLayer::new_for_http())
}

fn with_security_headers(router: Router) -> Router {
    use axum::http::header;
    let set = |name, value| SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value));
    router
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            crate::views::CONTENT_SECURITY_POLICY,
        ))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "same-origin"))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
}

fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-csrf-token").and_then(|v| v.to_str().ok())
}

async fn health(State(state): State<AppState>) -> Result<&'static str, AppError> {
    sqlx::query("SELECT 1").execute(&state.db.pool).await?;
    Ok("ok")
}

async fn session(Authed(p): Authed) -> Json<Value> {
    Json(json!({ "user_id": p.user.id, "email": p.user.email, "csrf": p.csrf }))
}

async fn devices(State(state): State<AppState>, Authed(p): Authed) -> Result<Json<Value>, AppError> {
    let devices = state.dispatcher.devices(&p.user.id).await?;
    Ok(Json(json!({ "devices": devices })))
}

/// One device with its whole manifest (tools with their input schemas).
async fn device(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, AppError> {
    let (status, manifest) = state.dispatcher.device(&p.user.id, &id).await?;
    Ok(Json(json!({ "device": status, "manifest": manifest })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    tool: String,
    #[serde(default = "empty_object")]
    input: Value,
    /// Seconds to wait for the result.
    #[serde(default)]
    timeout_s: Option<u64>,
}

fn empty_object() -> Value {
    json!({})
}

async fn call(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CallBody>,
) -> Result<Json<Value>, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    let options = CallOptions {
        timeout: body.timeout_s.map(Duration::from_secs),
        // A session is the person; a bearer token is a script or an agent.
        requested_by: Some(match p.csrf {
            Some(_) => p.user.email.clone(),
            None => format!("{} (API token)", p.user.email),
        }),
        ..CallOptions::default()
    };
    let outcome = state
        .dispatcher
        .call(&p.user.id, &id, &body.tool, body.input, options)
        .await?;
    Ok(Json(serde_json::to_value(outcome).unwrap_or_default()))
}

async fn revoke(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    state.dispatcher.revoke(&p.user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ProposalQuery {
    status: Option<String>,
}

async fn proposals(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<ProposalQuery>,
) -> Result<Json<Value>, AppError> {
    let status = match q.status.as_deref() {
        None => None,
        Some("pending") => Some(ProposalStatus::Pending),
        Some("applied") => Some(ProposalStatus::Applied),
        Some("failed") => Some(ProposalStatus::Failed),
        Some("rejected") => Some(ProposalStatus::Rejected),
        Some(other) => {
            return Err(AppError::invalid(
                "status",
                &format!("`{other}` is not pending, applied, failed or rejected"),
            ));
        }
    };
    let proposals = state.dispatcher.proposals(&p.user.id, status).await?;
    Ok(Json(json!({ "proposals": proposals })))
}

async fn calls(State(state): State<AppState>, Authed(p): Authed) -> Result<Json<Value>, AppError> {
    let calls = state.dispatcher.store().calls(&p.user.id, 100).await?;
    Ok(Json(json!({ "calls": calls })))
}

/// The audit trail, JSON (`{entries, next_cursor}`) or `format=csv`.
async fn activity(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiQuery(q): ApiQuery<crate::activity::ActivityQuery>,
) -> Result<Response, AppError> {
    let page = crate::activity::page(&state.db, &p.user.id, &q).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(page).into_response()),
        Some("csv") => crate::activity::csv(&page),
        Some(other) => Err(AppError::invalid(
            "format",
            &format!("`{other}` is not an export format; use json or csv"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct RenameBody {
    name: String,
}

async fn rename(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RenameBody>,
) -> Result<Json<Value>, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    let name = state
        .dispatcher
        .rename_device(&p.user.id, &id, &body.name)
        .await?;
    Ok(Json(json!({ "id": id, "name": name })))
}

/// A file a device uploaded, for its owner's browser.
async fn blob(
    State(state): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    let now = std::time::SystemTime::now();
    let (meta, stream) = state.dispatcher.blobs()?.open(&p.user.id, &id, now).await?;
    Ok(fusion_host_server::blob_response(&meta, stream))
}

async fn pairing_code(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
) -> Result<Json<Value>, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    let code = state.dispatcher.mint_pairing_code(&p.user.id).await?;
    // The same in every shell: PowerShell and cmd take no `VAR=value cmd`.
    let command = format!("fusion-host --server {} --code {}", state.public_url, code.code);
    let expires_in = code
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .map_or(0, |d| d.as_secs());
    // `PairingCode` serializes `expires_at` as RFC 3339, like every time in the API.
    let mut body = serde_json::to_value(&code).map_err(|e| AppError::internal(e.to_string()))?;
    body["expires_in_s"] = json!(expires_in);
    body["command"] = json!(command);
    Ok(Json(body))
}

/// `POST /api/tokens` takes an optional body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// What the token is for, as listed; "API token" by default.
    name: Option<String>,
    /// Days until it stops working; never by default.
    expires_in_days: Option<u32>,
}

/// The longest a token may be made to last, in days.
const MAX_TOKEN_DAYS: u32 = 3650;

async fn api_token(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    let new: NewToken = if body.iter().all(u8::is_ascii_whitespace) {
        NewToken::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            AppError::invalid(
                "body",
                &format!("{e}; send {{\"name\": \"…\", \"expires_in_days\": N}}, both optional"),
            )
        })?
    };
    let name = new.name.as_deref().map(str::trim).unwrap_or("API token");
    if name.is_empty() || name.chars().count() > auth::MAX_TOKEN_NAME || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            &format!(
                "must be 1 to {} characters without control characters",
                auth::MAX_TOKEN_NAME
            ),
        ));
    }
    let expires_at = match new.expires_in_days {
        None => None,
        Some(days @ 1..=MAX_TOKEN_DAYS) => {
            Some(crate::db::millis(std::time::SystemTime::now()) + i64::from(days) * 86_400_000)
        }
        Some(_) => {
            return Err(AppError::invalid(
                "expires_in_days",
                &format!("must be 1 to {MAX_TOKEN_DAYS}; leave it out for a token that does not expire"),
            ));
        }
    };
    let (token, info) = auth::mint_api_token(&state.db, &p.user, name, expires_at).await?;
    let mut body = json!(info);
    body["token"] = json!(token);
    Ok(Json(body))
}

async fn api_tokens(State(state): State<AppState>, Authed(p): Authed) -> Result<Json<Value>, AppError> {
    let tokens = auth::api_tokens(&state.db, &p.user.id).await?;
    Ok(Json(json!({ "tokens": tokens })))
}

async fn revoke_api_token(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    auth::revoke_token(&state, &p.user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The MCP clients signed in with OAuth, as `/devices` lists them.
async fn connected_clients(
    State(state): State<AppState>,
    Authed(p): Authed,
) -> Result<Json<Value>, AppError> {
    let clients = crate::oauth::grants::connected(&state.db, &p.user.id).await?;
    Ok(Json(json!({ "clients": clients })))
}

/// Ends a client's sign-in: its tokens stop working and its MCP sessions end.
async fn disconnect_client(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    if !crate::oauth::grants::disconnect(&state, &p.user.id, &id).await? {
        return Err(AppError::not_found(
            "client_not_found",
            format!("you have no connected client {id}; GET /api/connected-clients lists yours"),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    proposal_id: String,
    decision: String,
}

/// `POST /api/host/approve {proposal_id, decision}`. Only the id travels: the
/// stored input is what gets applied.
async fn approve(
    State(state): State<AppState>,
    Authed(p): Authed,
    headers: HeaderMap,
    ApiJson(d): ApiJson<Decision>,
) -> Result<Json<Value>, AppError> {
    p.check_csrf(csrf_header(&headers))?;
    let proposal = match d.decision.as_str() {
        "approve" => state.dispatcher.approve(&p.user.id, &d.proposal_id).await?,
        "reject" => state.dispatcher.reject(&p.user.id, &d.proposal_id).await?,
        other => {
            return Err(AppError::invalid(
                "decision",
                &format!("`{other}` is neither approve nor reject"),
            ));
        }
    };
    Ok(Json(serde_json::to_value(proposal).unwrap_or_default()))
}

/// The signed-in user's live events, for `/devices`.
async fn events(
    State(state): State<AppState>,
    Authed(p): Authed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.dispatcher.subscribe();
    let owner = p.user.id;
    // The stream ends when the server stops: graceful shutdown waits for open
    // connections, and an open /devices tab must not hold it up.
    let stopped = Box::pin(state.dispatcher.stopped());
    let stream =
        futures_util::stream::unfold((rx, owner, stopped), |(mut rx, owner, mut stopped)| async move {
            loop {
                let received = tokio::select! {
                    received = rx.recv() => received,
                    () = &mut stopped => return None,
                };
                match received {
                    Ok(event) if event.owner() == owner => {
                        let data = serde_json::to_string(&event).unwrap_or_default();
                        let event = Event::default().event("host").data(data);
                        return Some((Ok(event), (rx, owner, stopped)));
                    }
                    Ok(_) => {}
                    // A slow page missed some events: tell it to refresh.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let event = Event::default().event("lagged").data("{}");
                        return Some((Ok(event), (rx, owner, stopped)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
