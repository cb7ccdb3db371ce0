//! What every handler shares.

use fusion_host_server::Dispatcher;

use crate::db::Db;

/// What every handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) db: Db,
    pub(crate) dispatcher: Dispatcher,
    /// The address devices and browsers use, for the pasted enroll command.
    pub(crate) public_url: String,
    /// Mark cookies `Secure` (the public URL is https).
    pub(crate) secure_cookies: bool,
    /// Open `/mcp` sessions, ended when their token is revoked.
    pub(crate) mcp_sessions: fusion_host_server::mcp::McpSessions,
    /// The signed releases served under `/releases/` (`--releases`).
    pub(crate) releases: Option<std::path::PathBuf>,
}
