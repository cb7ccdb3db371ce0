//! `/mcp`: each user's devices for MCP clients, over Streamable HTTP.
//!
//! An app nests [`mcp_router`] (example-web mounts it at `/mcp`) and serves
//! [`protected_resource_router`] at its root. Every request carries a Bearer
//! token that the app checks ([`McpAuth`]); the tools are those of the
//! signed-in user's devices, each taking a `device` argument (the device's id
//! or name), plus `list_devices`, `get_proposal` and `wait_for_approval`.
//! Calls go through [`Dispatcher::call`]: a mutate tool creates a proposal,
//! returned with its plan and the page to approve it on.

mod guard;
mod sessions;
mod tasks;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;

use crate::Dispatcher;

pub use sessions::McpSessions;

use guard::{Guard, authenticate};

/// The MCP handler: one per session (or per stateless request).
#[derive(Clone)]
struct RemoteMcp {
    dispatcher: Dispatcher,
    config: Arc<McpConfig>,
    /// Long calls of clients that follow tasks.
    tasks: tasks::Tasks,
}

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
    /// The credential may only read: tools that change files are left out
    /// of its tool list and refused (an OAuth client a person allowed to
    /// read, not to propose changes).
    pub read_only: bool,
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
    /// The OAuth authorization servers clients sign in with (their issuer
    /// URLs), named in the RFC 9728 metadata; empty when the app takes only
    /// tokens made by hand.
    pub authorization_servers: Vec<String>,
    /// The scopes a client may ask for, named in the metadata and in the
    /// `WWW-Authenticate` challenge.
    pub scopes_supported: Vec<String>,
}

impl McpConfig {
    /// `public_url` with the endpoint at `/mcp` and approvals on `/devices`.
    pub fn new(public_url: &str) -> Self {
        McpConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            path: "/mcp".into(),
            approve_path: "/devices".into(),
            sessions: McpSessions::default(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
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
        tasks: tasks::Tasks::new(&dispatcher),
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
    let mut metadata = json!({
        "resource": config.resource(),
        "bearer_methods_supported": ["header"],
        "resource_name": "fusion-host devices",
        "resource_documentation": format!("{}/devices", config.public_url),
    });
    if !config.authorization_servers.is_empty() {
        metadata["authorization_servers"] = json!(config.authorization_servers);
    }
    if !config.scopes_supported.is_empty() {
        metadata["scopes_supported"] = json!(config.scopes_supported);
    }
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
