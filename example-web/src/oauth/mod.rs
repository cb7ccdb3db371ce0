//! The app as the OAuth 2.1 authorization server of its own `/mcp`, so an
//! MCP client added by URL can sign a person in:
//!
//! - RFC 8414 metadata at `/.well-known/oauth-authorization-server`;
//! - `/oauth/authorize`: the authorization code flow with PKCE (S256 only)
//!   and a consent page ([`consent`]);
//! - clients known by their Client ID Metadata Document (the `client_id` is
//!   an https URL the app fetches, [`clients`]) or registered with RFC 7591
//!   (`/oauth/register`, for clients that know only that);
//! - `/oauth/token`: codes and rotating refresh tokens for short-lived,
//!   opaque access tokens bound to `/mcp` (RFC 8707), checked on every
//!   request ([`grants`]);
//! - `/oauth/revoke` (RFC 7009).
//!
//! The wire shapes (token and error bodies) are the `oauth2` crate's.

pub(crate) mod clients;
mod consent;
pub(crate) mod grants;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use oauth2::basic::{BasicErrorResponse, BasicErrorResponseType, BasicTokenType};
use oauth2::{AccessToken, EmptyExtraTokenFields, RefreshToken, Scope, StandardTokenResponse};
use serde::Deserialize;
use serde_json::json;

use crate::db::Db;
use crate::state::AppState;

/// Read the user's devices and call their read tools.
pub(crate) const SCOPE_READ: &str = "devices:read";
/// Also propose changes, each of which still waits for a person's approval.
pub(crate) const SCOPE_PROPOSE: &str = "devices:propose";
/// Every scope a client may ask for.
pub(crate) const SCOPES: [&str; 2] = [SCOPE_READ, SCOPE_PROPOSE];

/// How long an access token works.
pub(crate) const ACCESS_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a refresh token works if it is not used (each use replaces it).
pub(crate) const REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How long an authorization code works.
pub(crate) const CODE_TTL: Duration = Duration::from_secs(60);

/// What the authorization server needs to know about the app.
#[derive(Debug, Clone)]
pub(crate) struct OAuth {
    /// The issuer: the app's public URL.
    pub(crate) issuer: String,
    /// The one resource tokens are for: `/mcp`.
    pub(crate) resource: String,
    /// Fetches clients' metadata documents.
    pub(crate) fetcher: clients::Fetcher,
}

impl OAuth {
    pub(crate) fn new(public_url: &str, private_client_metadata: bool) -> anyhow::Result<OAuth> {
        let issuer = public_url.trim_end_matches('/').to_string();
        Ok(OAuth {
            resource: format!("{issuer}/mcp"),
            issuer,
            fetcher: clients::Fetcher::new(private_client_metadata)?,
        })
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

pub(crate) fn router(state: AppState, oauth: OAuth) -> Router {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/oauth/authorize", get(consent::page).post(consent::decide))
        .route("/oauth/token", post(token))
        .route("/oauth/register", post(register))
        .route("/oauth/revoke", post(revoke))
        .layer(Extension(Arc::new(oauth)))
        .with_state(state)
}

/// RFC 8414 authorization server metadata.
async fn metadata(Extension(o): Extension<Arc<OAuth>>) -> Json<serde_json::Value> {
    Json(json!({
        "issuer": o.issuer,
        "authorization_endpoint": o.endpoint("/oauth/authorize"),
        "token_endpoint": o.endpoint("/oauth/token"),
        "registration_endpoint": o.endpoint("/oauth/register"),
        "revocation_endpoint": o.endpoint("/oauth/revoke"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "code_challenge_methods_supported": ["S256"],
        "client_id_metadata_document_supported": true,
        "authorization_response_iss_parameter_supported": true,
        "service_documentation": o.endpoint("/devices"),
    }))
}

/// `/mcp` authenticates with the same API tokens, and with the access
/// tokens of OAuth clients (`fha_…`) issued for it.
#[derive(Debug, Clone)]
pub(crate) struct McpTokens {
    pub(crate) db: Db,
    /// The resource OAuth tokens must have been issued for: `/mcp`.
    pub(crate) resource: String,
}

#[async_trait::async_trait]
impl fusion_host_server::mcp::McpAuth for McpTokens {
    async fn user(&self, token: &str) -> Option<fusion_host_server::mcp::McpUser> {
        if token.starts_with("fha_") {
            let signed = grants::access(&self.db, token, &self.resource)
                .await
                .ok()
                .flatten()?;
            return Some(fusion_host_server::mcp::McpUser {
                owner: signed.user_id,
                name: format!("{} via {}", signed.email, signed.client_name),
                credential: signed.grant,
                read_only: !signed.may_propose,
            });
        }
        let (user, token_id) = crate::auth::api_token_user(&self.db, token)
            .await
            .ok()
            .flatten()?;
        Some(fusion_host_server::mcp::McpUser {
            owner: user.id,
            name: user.email,
            credential: token_id,
            read_only: false,
        })
    }
}

/// An OAuth error answer: RFC 6749 §5.2's `{error, error_description}`.
#[derive(Debug)]
pub(crate) struct OAuthError {
    status: StatusCode,
    body: BasicErrorResponse,
}

impl OAuthError {
    pub(crate) fn new(error: BasicErrorResponseType, description: impl Into<String>) -> Self {
        let status = match &error {
            BasicErrorResponseType::InvalidClient => StatusCode::UNAUTHORIZED,
            BasicErrorResponseType::Extension(e) if e == "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            body: BasicErrorResponse::new(error, Some(description.into()), None),
        }
    }

    /// An error RFC 6749's basic set has no name for (`invalid_target`,
    /// RFC 8707; `invalid_redirect_uri`, RFC 7591).
    pub(crate) fn named(error: &str, description: impl Into<String>) -> Self {
        Self::new(BasicErrorResponseType::Extension(error.into()), description)
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(BasicErrorResponseType::InvalidRequest, description)
    }

    pub(crate) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(BasicErrorResponseType::InvalidGrant, description)
    }

    /// What went wrong, in words.
    pub(crate) fn description(&self) -> String {
        self.body.error_description().cloned().unwrap_or_default()
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "OAuth: database error");
        Self::named("server_error", "something went wrong on the server; try again")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        no_store((self.status, Json(self.body)).into_response())
    }
}

/// Token answers are never cached (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The requested scopes this server knows, deduplicated; both when the
/// client names none. Unknown ones (`offline_access`, say) are dropped, as
/// RFC 6749 §3.3 allows: refresh tokens are always issued.
pub(crate) fn known_scopes(requested: Option<&str>) -> Vec<&'static str> {
    match requested.map(str::split_whitespace) {
        None => SCOPES.to_vec(),
        Some(words) => {
            let words: Vec<&str> = words.collect();
            SCOPES.into_iter().filter(|s| words.contains(s)).collect()
        }
    }
}

/// The resource a request names (RFC 8707): this app's `/mcp`, which is
/// also what a request that names none gets.
pub(crate) fn check_resource(oauth: &OAuth, resource: Option<&str>) -> Result<(), OAuthError> {
    match resource {
        None => Ok(()),
        Some(r) if r.trim_end_matches('/') == oauth.resource => Ok(()),
        Some(r) => Err(OAuthError::named(
            "invalid_target",
            format!(
                "resource `{r}` is not served here; tokens are issued for {}",
                oauth.resource
            ),
        )),
    }
}

/// `POST /oauth/token`, form-encoded.
#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    resource: Option<String>,
    scope: Option<String>,
}

fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, OAuthError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| OAuthError::invalid_request(format!("the form could not be read: {e}")))
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, OAuthError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OAuthError::invalid_request(format!("`{name}` is missing")))
}

async fn token(
    State(s): State<AppState>,
    Extension(oauth): Extension<Arc<OAuth>>,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let f: TokenForm = form(&body)?;
    let client_id = required(&f.client_id, "client_id")?;
    check_resource(&oauth, f.resource.as_deref())?;
    let issued = match required(&f.grant_type, "grant_type")? {
        "authorization_code" => {
            let exchange = grants::CodeExchange {
                code: required(&f.code, "code")?,
                client_id,
                redirect_uri: f.redirect_uri.as_deref(),
                code_verifier: required(&f.code_verifier, "code_verifier")?,
            };
            grants::exchange_code(&s, &exchange).await?
        }
        "refresh_token" => {
            grants::refresh(
                &s,
                required(&f.refresh_token, "refresh_token")?,
                client_id,
                f.scope.as_deref(),
            )
            .await?
        }
        other => {
            return Err(OAuthError::new(
                BasicErrorResponseType::UnsupportedGrantType,
                format!("grant_type `{other}` is not supported; use authorization_code or refresh_token"),
            ));
        }
    };
    let mut response = StandardTokenResponse::<EmptyExtraTokenFields, BasicTokenType>::new(
        AccessToken::new(issued.access),
        BasicTokenType::Bearer,
        EmptyExtraTokenFields {},
    );
    response.set_expires_in(Some(&ACCESS_TTL));
    response.set_refresh_token(Some(RefreshToken::new(issued.refresh)));
    response.set_scopes(Some(
        issued.scope.split(' ').map(|s| Scope::new(s.into())).collect(),
    ));
    Ok(no_store(Json(response).into_response()))
}

/// `POST /oauth/revoke`, form-encoded (RFC 7009).
#[derive(Debug, Default, Deserialize)]
struct RevokeForm {
    token: Option<String>,
    client_id: Option<String>,
}

/// Always 200 for a well-formed request, whether or not the token existed
/// (RFC 7009 §2.2): a refresh token ends its whole grant, an access token
/// only itself.
async fn revoke(State(s): State<AppState>, body: axum::body::Bytes) -> Result<Response, OAuthError> {
    let f: RevokeForm = form(&body)?;
    let token = required(&f.token, "token")?;
    grants::revoke_token(&s, token, f.client_id.as_deref()).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// `POST /oauth/register` (RFC 7591), for clients that do not publish a
/// metadata document. Every client is public: it proves itself with PKCE.
async fn register(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, OAuthError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(OAuthError::named(
            "invalid_client_metadata",
            "send the client's metadata as JSON (Content-Type: application/json)",
        ));
    }
    let request: clients::Registration = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::named(
            "invalid_client_metadata",
            format!("the client metadata could not be read: {e}"),
        )
    })?;
    let client = clients::register(&s.db, request).await?;
    let body = json!({
        "client_id": client.id,
        "client_id_issued_at": client.created_at / 1000,
        "client_name": client.name,
        "client_uri": client.client_uri,
        "redirect_uris": client.redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    Ok(no_store((StatusCode::CREATED, Json(body)).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_keep_only_what_is_known() {
        assert_eq!(known_scopes(None), SCOPES.to_vec());
        assert_eq!(
            known_scopes(Some("devices:read offline_access")),
            vec![SCOPE_READ]
        );
        assert_eq!(
            known_scopes(Some("devices:propose devices:read devices:read")),
            SCOPES.to_vec()
        );
        assert!(known_scopes(Some("profile")).is_empty());
    }
}
