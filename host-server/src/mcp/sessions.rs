//! Open MCP sessions, each bound to the credential that opened it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::transport::streamable_http_server::session::SessionManager as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::McpUser;

/// The open MCP sessions and the credential each was opened with. A clone
/// is a handle to the same sessions.
#[derive(Clone, Default)]
pub struct McpSessions {
    pub(super) manager: Arc<LocalSessionManager>,
    /// Session id → (owner, credential).
    pub(super) bound: Arc<Mutex<HashMap<String, (String, String)>>>,
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
pub(super) const PRUNE_AT: usize = 4096;

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
    pub(super) fn allows(&self, session: &str, user: &McpUser) -> bool {
        self.bound.lock().is_ok_and(|bound| {
            bound
                .get(session)
                .is_none_or(|(owner, credential)| *owner == user.owner && *credential == user.credential)
        })
    }

    pub(super) async fn bind(&self, session: &str, user: &McpUser) {
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

    pub(super) fn unbind(&self, session: &str) {
        if let Ok(mut bound) = self.bound.lock() {
            bound.remove(session);
        }
    }
}
