//! What a person allowed: a grant (one client's access to one account, with
//! its scopes and resource), the one-time codes that start it, and the
//! tokens it issues. Tokens are opaque random strings kept as SHA-256
//! hashes: an access token (`fha_…`) works for an hour at `/mcp` only, a
//! refresh token (`fhr_…`) is replaced on every use, and one used twice, or
//! a code used twice, ends the whole grant (someone has a copy).

use std::time::SystemTime;

use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use sqlx::Row;

use super::{ACCESS_TTL, CODE_TTL, OAuthError, REFRESH_TTL, SCOPE_PROPOSE};
use crate::auth::{random_hex, same, sha256};
use crate::db::{Db, millis};
use crate::state::AppState;

/// What a person approved on the consent page, waiting for its code.
#[derive(Debug, Clone)]
pub(crate) struct Approval {
    pub(crate) user_id: String,
    pub(crate) client_id: String,
    pub(crate) scope: String,
    pub(crate) resource: String,
    /// As the authorization request named it (`None` when it named none).
    pub(crate) redirect_uri: Option<String>,
    pub(crate) code_challenge: String,
}

/// Issues the one-time code for an approval.
pub(crate) async fn issue_code(db: &Db, a: &Approval) -> Result<String, OAuthError> {
    let code = random_hex(32);
    let now = millis(SystemTime::now());
    sqlx::query(
        "INSERT INTO oauth_codes (code_hash, user_id, client_id, scope, resource, redirect_uri, \
         code_challenge, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(sha256(&code))
    .bind(&a.user_id)
    .bind(&a.client_id)
    .bind(&a.scope)
    .bind(&a.resource)
    .bind(&a.redirect_uri)
    .bind(&a.code_challenge)
    .bind(now)
    .bind(now + CODE_TTL.as_millis() as i64)
    .execute(&db.pool)
    .await?;
    Ok(code)
}

/// A token request's `authorization_code` fields.
#[derive(Debug)]
pub(crate) struct CodeExchange<'a> {
    pub(crate) code: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) redirect_uri: Option<&'a str>,
    pub(crate) code_verifier: &'a str,
}

/// A new access and refresh token.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) access: String,
    pub(crate) refresh: String,
    pub(crate) scope: String,
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters.
fn well_formed_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Trades a code for tokens: the code once, by the client it was issued
/// to, for the redirect URI it was issued for, with the verifier of its
/// challenge.
pub(crate) async fn exchange_code(s: &AppState, x: &CodeExchange<'_>) -> Result<Issued, OAuthError> {
    let db = &s.db;
    let hash = sha256(x.code);
    let row = sqlx::query(
        "SELECT user_id, client_id, scope, resource, redirect_uri, code_challenge, expires_at, used_at, grant_id \
         FROM oauth_codes WHERE code_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else {
        return Err(OAuthError::invalid_grant(
            "the code is unknown; start the sign-in again",
        ));
    };
    let now = millis(SystemTime::now());
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        // RFC 6749 §4.1.2: a code presented twice revokes what it gave.
        if let Some(grant) = row.try_get::<Option<String>, _>("grant_id")? {
            end_grant(s, &grant).await?;
        }
        return Err(OAuthError::invalid_grant(
            "the code was used already, so the tokens it gave are revoked; start the sign-in again",
        ));
    }
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Err(OAuthError::invalid_grant(
            "the code expired; start the sign-in again",
        ));
    }
    let client_id: String = row.try_get("client_id")?;
    if client_id != x.client_id {
        return Err(OAuthError::invalid_grant("the code was issued to another client"));
    }
    let redirect_uri: Option<String> = row.try_get("redirect_uri")?;
    if redirect_uri.is_some() && redirect_uri.as_deref() != x.redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri is not the one the code was issued for",
        ));
    }
    if !well_formed_verifier(x.code_verifier) {
        return Err(OAuthError::invalid_request(
            "code_verifier must be 43 to 128 letters, digits, `-`, `.`, `_` or `~` (RFC 7636)",
        ));
    }
    let challenge =
        PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(x.code_verifier.into()));
    if !same(challenge.as_str(), &row.try_get::<String, _>("code_challenge")?) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge of the authorization request",
        ));
    }
    let grant = format!("grt_{}", random_hex(12));
    // Spent before anything is issued: of two racing requests, one wins.
    let spent = sqlx::query(
        "UPDATE oauth_codes SET used_at = $1, grant_id = $2 WHERE code_hash = $3 AND used_at IS NULL",
    )
    .bind(now)
    .bind(&grant)
    .bind(&hash)
    .execute(&db.pool)
    .await?;
    if spent.rows_affected() != 1 {
        return Err(OAuthError::invalid_grant(
            "the code was used already; start the sign-in again",
        ));
    }
    let scope: String = row.try_get("scope")?;
    sqlx::query(
        "INSERT INTO oauth_grants (id, user_id, client_id, scope, resource, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&grant)
    .bind(row.try_get::<String, _>("user_id")?)
    .bind(&client_id)
    .bind(&scope)
    .bind(row.try_get::<String, _>("resource")?)
    .bind(now)
    .execute(&db.pool)
    .await?;
    issue_tokens(db, &grant, scope).await
}

async fn issue_tokens(db: &Db, grant: &str, scope: String) -> Result<Issued, OAuthError> {
    let issued = Issued {
        access: format!("fha_{}", random_hex(32)),
        refresh: format!("fhr_{}", random_hex(32)),
        scope,
    };
    let now = millis(SystemTime::now());
    for (token, kind, ttl) in [
        (&issued.access, "access", ACCESS_TTL),
        (&issued.refresh, "refresh", REFRESH_TTL),
    ] {
        sqlx::query(
            "INSERT INTO oauth_tokens (token_hash, grant_id, kind, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256(token))
        .bind(grant)
        .bind(kind)
        .bind(now)
        .bind(now + ttl.as_millis() as i64)
        .execute(&db.pool)
        .await?;
    }
    Ok(issued)
}

/// Trades a refresh token for a new pair; the old one stops working.
pub(crate) async fn refresh(
    s: &AppState,
    token: &str,
    client_id: &str,
    scope: Option<&str>,
) -> Result<Issued, OAuthError> {
    let db = &s.db;
    let hash = sha256(token);
    let row = sqlx::query(
        "SELECT t.expires_at, t.used_at, g.id, g.client_id, g.scope, g.revoked_at \
         FROM oauth_tokens t JOIN oauth_grants g ON g.id = t.grant_id \
         WHERE t.token_hash = $1 AND t.kind = 'refresh'",
    )
    .bind(&hash)
    .fetch_optional(&db.pool)
    .await?;
    let gone =
        || OAuthError::invalid_grant("the refresh token is unknown, expired or revoked; sign in again");
    let Some(row) = row else { return Err(gone()) };
    let grant: String = row.try_get("id")?;
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Err(gone());
    }
    if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
        // A replaced refresh token came back: a copy is in other hands.
        end_grant(s, &grant).await?;
        return Err(OAuthError::invalid_grant(
            "the refresh token was used already, so this sign-in is revoked; sign in again",
        ));
    }
    let now = millis(SystemTime::now());
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Err(gone());
    }
    if row.try_get::<String, _>("client_id")? != client_id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let granted: String = row.try_get("scope")?;
    let scope = match scope {
        None => granted,
        Some(asked) => {
            let narrowed: Vec<&str> = asked.split_whitespace().collect();
            if narrowed.is_empty() || !narrowed.iter().all(|s| granted.split(' ').any(|g| g == *s)) {
                return Err(OAuthError::new(
                    oauth2::basic::BasicErrorResponseType::InvalidScope,
                    format!("scope `{asked}` is more than was granted (`{granted}`)"),
                ));
            }
            narrowed.join(" ")
        }
    };
    let spent = sqlx::query("UPDATE oauth_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
        .bind(now)
        .bind(&hash)
        .execute(&db.pool)
        .await?;
    if spent.rows_affected() != 1 {
        return Err(gone());
    }
    issue_tokens(db, &grant, scope).await
}

/// Revokes a token a client hands back: a refresh token ends its grant, an
/// access token only itself. Unknown tokens, and tokens of another client,
/// change nothing.
pub(crate) async fn revoke_token(
    s: &AppState,
    token: &str,
    client_id: Option<&str>,
) -> Result<(), OAuthError> {
    let hash = sha256(token);
    let row = sqlx::query(
        "SELECT t.kind, g.id, g.client_id FROM oauth_tokens t JOIN oauth_grants g ON g.id = t.grant_id \
         WHERE t.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&s.db.pool)
    .await?;
    let Some(row) = row else { return Ok(()) };
    if client_id.is_some_and(|c| c != row.try_get::<String, _>("client_id").unwrap_or_default()) {
        return Ok(());
    }
    if row.try_get::<String, _>("kind")? == "refresh" {
        end_grant(s, &row.try_get::<String, _>("id")?).await?;
    } else {
        sqlx::query("DELETE FROM oauth_tokens WHERE token_hash = $1")
            .bind(&hash)
            .execute(&s.db.pool)
            .await?;
    }
    Ok(())
}

/// Ends a grant at once: its tokens stop working and its MCP sessions end.
pub(crate) async fn end_grant(s: &AppState, grant: &str) -> Result<(), sqlx::Error> {
    let now = millis(SystemTime::now());
    sqlx::query("UPDATE oauth_grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(grant)
        .execute(&s.db.pool)
        .await?;
    sqlx::query("DELETE FROM oauth_tokens WHERE grant_id = $1")
        .bind(grant)
        .execute(&s.db.pool)
        .await?;
    let ended = s.mcp_sessions.end_credential(grant).await;
    tracing::info!(grant, mcp_sessions_ended = ended, "OAuth grant revoked");
    Ok(())
}

/// Who an access token signs in, for `/mcp`.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) user_id: String,
    pub(crate) email: String,
    pub(crate) client_name: String,
    pub(crate) grant: String,
    pub(crate) may_propose: bool,
}

/// How stale `last_used_at` may get before a use writes it again.
const LAST_USED_GRAIN_MS: i64 = 60_000;

/// The account and client an access token stands for, if it is unexpired,
/// its grant stands, and it was issued for `resource` (RFC 8707: a token
/// for another resource is no token here).
pub(crate) async fn access(db: &Db, token: &str, resource: &str) -> Result<Option<Signed>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT t.expires_at, g.id, g.user_id, g.scope, g.resource, g.revoked_at, g.last_used_at, \
         u.email, c.name FROM oauth_tokens t JOIN oauth_grants g ON g.id = t.grant_id \
         JOIN users u ON u.id = g.user_id JOIN oauth_clients c ON c.client_id = g.client_id \
         WHERE t.token_hash = $1 AND t.kind = 'access'",
    )
    .bind(sha256(token))
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let now = millis(SystemTime::now());
    if row.try_get::<i64, _>("expires_at")? <= now
        || row.try_get::<Option<i64>, _>("revoked_at")?.is_some()
        || row.try_get::<String, _>("resource")? != resource
    {
        return Ok(None);
    }
    let grant: String = row.try_get("id")?;
    if row
        .try_get::<Option<i64>, _>("last_used_at")?
        .is_none_or(|at| now - at >= LAST_USED_GRAIN_MS)
    {
        sqlx::query("UPDATE oauth_grants SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&grant)
            .execute(&db.pool)
            .await?;
    }
    let scope: String = row.try_get("scope")?;
    Ok(Some(Signed {
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        client_name: row.try_get("name")?,
        grant,
        may_propose: scope.split(' ').any(|s| s == SCOPE_PROPOSE),
    }))
}

/// A connected client as its owner sees it listed on `/devices`.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Connected {
    pub(crate) id: String,
    pub(crate) client_id: String,
    pub(crate) client_name: String,
    pub(crate) scope: String,
    /// Milliseconds since the epoch, as every time in the API.
    pub(crate) created_at: i64,
    pub(crate) last_used_at: Option<i64>,
}

/// The user's standing grants, newest first.
pub(crate) async fn connected(db: &Db, user_id: &str) -> Result<Vec<Connected>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT g.id, g.client_id, c.name, g.scope, g.created_at, g.last_used_at \
         FROM oauth_grants g JOIN oauth_clients c ON c.client_id = g.client_id \
         WHERE g.user_id = $1 AND g.revoked_at IS NULL ORDER BY g.created_at DESC, g.id",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Connected {
                id: row.try_get("id")?,
                client_id: row.try_get("client_id")?,
                client_name: row.try_get("name")?,
                scope: row.try_get("scope")?,
                created_at: row.try_get("created_at")?,
                last_used_at: row.try_get("last_used_at")?,
            })
        })
        .collect()
}

/// Ends one of the user's grants; `false` when the user has none by that id.
pub(crate) async fn disconnect(s: &AppState, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let owned =
        sqlx::query("SELECT 1 FROM oauth_grants WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
            .bind(id)
            .bind(user_id)
            .fetch_optional(&s.db.pool)
            .await?
            .is_some();
    if owned {
        end_grant(s, id).await?;
    }
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_as_rfc_7636_defines_them() {
        assert!(well_formed_verifier(&"a".repeat(43)));
        assert!(well_formed_verifier(&"A-._~9".repeat(20)));
        assert!(!well_formed_verifier(&"a".repeat(42)));
        assert!(!well_formed_verifier(&"a".repeat(129)));
        assert!(!well_formed_verifier(&format!("{}+", "a".repeat(43))));
    }

    /// RFC 8707: a token is good only at the resource it was issued for.
    #[tokio::test]
    async fn a_token_for_another_resource_signs_nobody_in() {
        let (_dir, db) = crate::db::scratch().await;
        for (sql, binds) in [
            (
                "INSERT INTO oauth_clients (client_id, name, redirect_uris, kind, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'registered', 0, 0)",
                vec!["fhc_a", "Agent", "[]"],
            ),
            (
                "INSERT INTO oauth_grants (id, user_id, client_id, scope, resource, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 0)",
                vec![
                    "grt_a",
                    "usr_1",
                    "fhc_a",
                    "devices:read",
                    "https://other.example/mcp",
                ],
            ),
        ] {
            let mut query = sqlx::query(sql);
            for b in binds {
                query = query.bind(b);
            }
            query.execute(&db.pool).await.unwrap();
        }
        let issued = issue_tokens(&db, "grt_a", "devices:read".into()).await.unwrap();
        let here = access(&db, &issued.access, "https://app.example/mcp")
            .await
            .unwrap();
        assert!(here.is_none(), "issued for https://other.example/mcp");
        let there = access(&db, &issued.access, "https://other.example/mcp")
            .await
            .unwrap();
        let signed = there.expect("good where it was issued for");
        assert_eq!((signed.user_id.as_str(), signed.may_propose), ("usr_1", false));
        assert!(
            access(&db, &issued.refresh, "https://other.example/mcp")
                .await
                .unwrap()
                .is_none(),
            "a refresh token is no access token"
        );
    }
}
