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

#[cfg(test)]
mod tests {
    use super::*;

    fn user(credential: &str) -> McpUser {
        McpUser {
            owner: "usr_a".into(),
            name: "a@example.com".into(),
            credential: credential.into(),
            read_only: false,
        }
    }

    #[tokio::test]
    async fn a_session_answers_only_to_its_credential() {
        let sessions = McpSessions::default();
        sessions.bind("s1", &user("tok_a")).await;
        assert!(sessions.allows("s1", &user("tok_a")));
        assert!(!sessions.allows("s1", &user("tok_b")));
        // Unknown to the guard: the transport answers for it.
        assert!(sessions.allows("s2", &user("tok_b")));
        assert_eq!(sessions.end_credential("tok_a").await, 1);
        assert!(
            sessions.allows("s1", &user("tok_b")),
            "the binding is gone with the session"
        );
    }

    /// Bindings of sessions the transport no longer has (expired, dropped
    /// without DELETE) do not pile up past the mark.
    #[tokio::test]
    async fn bindings_of_ended_sessions_are_cleared() {
        let sessions = McpSessions::default();
        for n in 0..PRUNE_AT + 256 {
            sessions.bind(&format!("s{n}"), &user("tok_a")).await;
        }
        let left = sessions.bound.lock().unwrap().len();
        assert!(left < PRUNE_AT, "{left} bindings of sessions that do not exist");
    }
}
