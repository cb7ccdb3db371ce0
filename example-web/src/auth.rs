//! Accounts: argon2 password hashes, sessions in HttpOnly SameSite cookies,
//! API tokens for scripts, and CSRF tokens for every state-changing request
//! made with a cookie.

use std::time::{Duration, SystemTime};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{Db, millis};
use crate::error::AppError;
use crate::state::AppState;

pub(crate) const SESSION_COOKIE: &str = "fh_session";
pub(crate) const FORM_CSRF_COOKIE: &str = "fh_form_csrf";
const SESSION_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) email: String,
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random number generator failed");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Constant-time string equality, for tokens.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates an account.
pub(crate) async fn sign_up(db: &Db, email: &str, password: &str) -> Result<User, AppError> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.len() > 200 {
        return Err(AppError::invalid(
            "email",
            "enter an email address like you@example.com",
        ));
    }
    if password.chars().count() < 10 {
        return Err(AppError::invalid("password", "use at least 10 characters"));
    }
    let salt =
        SaltString::encode_b64(random_hex(16).as_bytes()).map_err(|e| AppError::internal(e.to_string()))?;
    let hash = Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| AppError::internal(e.to_string()))?
        .to_string();
    let user = User {
        id: format!("usr_{}", random_hex(16)),
        email,
    };
    let inserted =
        sqlx::query("INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&user.id)
            .bind(&user.email)
            .bind(hash)
            .bind(millis(SystemTime::now()))
            .execute(&db.pool)
            .await;
    match inserted {
        Ok(_) => Ok(user),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AppError::invalid(
            "email",
            "an account with this email exists; sign in instead",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Checks an email and password. The same error for a wrong email and a
/// wrong password, so accounts cannot be probed.
pub(crate) async fn sign_in(db: &Db, email: &str, password: &str) -> Result<User, AppError> {
    let wrong = || AppError::unauthorized("the email or the password is wrong");
    let row = sqlx::query("SELECT id, email, password_hash FROM users WHERE email = $1")
        .bind(email.trim().to_lowercase())
        .fetch_optional(&db.pool)
        .await?;
    let Some(row) = row else {
        // Spend the same time as a real check.
        let _ = Argon2::default().hash_password(
            password.as_bytes(),
            &SaltString::encode_b64(b"fusion-host-dummy").map_err(|e| AppError::internal(e.to_string()))?,
        );
        return Err(wrong());
    };
    let stored: String = row.try_get("password_hash")?;
    let parsed = PasswordHash::new(&stored).map_err(|e| AppError::internal(e.to_string()))?;
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .map_err(|_| wrong())?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
    })
}

/// Starts a session: returns the cookie to set.
pub(crate) async fn start_session(db: &Db, user: &User, secure: bool) -> Result<Cookie<'static>, AppError> {
    let token = random_hex(32);
    let now = SystemTime::now();
    sqlx::query("INSERT INTO sessions (token_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(sha256(&token))
        .bind(&user.id)
        .bind(random_hex(32))
        .bind(millis(now))
        .bind(millis(now + SESSION_TTL))
        .execute(&db.pool)
        .await?;
    Ok(cookie(SESSION_COOKIE, token, secure))
}

pub(crate) fn cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((name, value))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .path("/")
        .build()
}

pub(crate) async fn end_session(db: &Db, token: &str) -> Result<(), AppError> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(sha256(token))
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// An API token as its owner sees it listed (never the token itself).
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct TokenInfo {
    pub(crate) id: String,
    pub(crate) name: String,
    /// Milliseconds since the epoch, as every time in the API.
    pub(crate) created_at: i64,
    pub(crate) last_used_at: Option<i64>,
    pub(crate) expires_at: Option<i64>,
}

/// The longest a token's name may be.
pub(crate) const MAX_TOKEN_NAME: usize = 100;

/// Mints an API token (`fhu_…`) for scripts and the agent loop; shown once.
pub(crate) async fn mint_api_token(
    db: &Db,
    user: &User,
    name: &str,
    expires_at: Option<i64>,
) -> Result<(String, TokenInfo), AppError> {
    let token = format!("fhu_{}", random_hex(32));
    let info = TokenInfo {
        id: format!("tok_{}", random_hex(12)),
        name: name.to_string(),
        created_at: millis(SystemTime::now()),
        last_used_at: None,
        expires_at,
    };
    sqlx::query(
        "INSERT INTO api_tokens (token_hash, user_id, created_at, id, name, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(sha256(&token))
    .bind(&user.id)
    .bind(info.created_at)
    .bind(&info.id)
    .bind(&info.name)
    .bind(info.expires_at)
    .execute(&db.pool)
    .await?;
    Ok((token, info))
}

/// The user's API tokens, newest first.
pub(crate) async fn api_tokens(db: &Db, user_id: &str) -> Result<Vec<TokenInfo>, AppError> {
    let rows = sqlx::query(
        "SELECT id, name, created_at, last_used_at, expires_at FROM api_tokens WHERE user_id = $1 \
         ORDER BY created_at DESC, id",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(TokenInfo {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                last_used_at: row.try_get("last_used_at")?,
                expires_at: row.try_get("expires_at")?,
            })
        })
        .collect()
}

/// Revokes one of the user's tokens; `false` when the user has none by that id.
pub(crate) async fn revoke_api_token(db: &Db, user_id: &str, id: &str) -> Result<bool, AppError> {
    let done = sqlx::query("DELETE FROM api_tokens WHERE user_id = $1 AND id = $2")
        .bind(user_id)
        .bind(id)
        .execute(&db.pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Who is asking: a session (with its CSRF token) or an API token.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) user: User,
    /// The session's CSRF token; `None` for API-token requests, which carry
    /// no ambient credential and need none.
    pub(crate) csrf: Option<String>,
    pub(crate) session_token: Option<String>,
}

impl Principal {
    /// Refuses a cookie-authenticated state change without the session's CSRF
    /// token (header `x-csrf-token`, or a form field passed in).
    pub(crate) fn check_csrf(&self, presented: Option<&str>) -> Result<(), AppError> {
        match (&self.csrf, presented) {
            (None, _) => Ok(()),
            (Some(expected), Some(given)) if same(expected, given) => Ok(()),
            _ => Err(AppError::forbidden(
                "csrf",
                "the request is missing its CSRF token; reload the page and try again",
            )),
        }
    }
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Option<Principal>, AppError> {
    if let Some(token) = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return match api_token_user(&state.db, token).await? {
            Some((user, _)) => Ok(Some(Principal {
                user,
                csrf: None,
                session_token: None,
            })),
            None => Err(AppError::unauthorized(
                "the API token is unknown, revoked or expired; create a new one on /devices",
            )),
        };
    }
    let jar = CookieJar::from_headers(&parts.headers);
    let Some(token) = jar.get(SESSION_COOKIE).map(|c| c.value().to_string()) else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT u.id, u.email, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
    )
    .bind(sha256(&token))
    .fetch_optional(&state.db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<i64, _>("expires_at")? < millis(SystemTime::now()) {
        return Ok(None);
    }
    Ok(Some(Principal {
        user: User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
        },
        csrf: Some(row.try_get("csrf")?),
        session_token: Some(token),
    }))
}

/// How stale `last_used_at` may get before a use writes it again: a busy
/// script must not turn every request into a write.
const LAST_USED_GRAIN_MS: i64 = 60_000;

/// The user an unexpired API token (`fhu_…`) belongs to, with the token's id.
pub(crate) async fn api_token_user(db: &Db, token: &str) -> Result<Option<(User, String)>, AppError> {
    let hash = sha256(token);
    let row = sqlx::query(
        "SELECT u.id AS user_id, u.email, t.id AS token_id, t.last_used_at, t.expires_at \
         FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let now = millis(SystemTime::now());
    if row
        .try_get::<Option<i64>, _>("expires_at")?
        .is_some_and(|at| at <= now)
    {
        return Ok(None);
    }
    if row
        .try_get::<Option<i64>, _>("last_used_at")?
        .is_none_or(|at| now - at >= LAST_USED_GRAIN_MS)
    {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(&hash)
            .execute(&db.pool)
            .await?;
    }
    Ok(Some((
        User {
            id: row.try_get("user_id")?,
            email: row.try_get("email")?,
        },
        row.try_get("token_id")?,
    )))
}

/// A request that must be signed in (401 otherwise).
pub(crate) struct Authed(pub(crate) Principal);

impl FromRequestParts<AppState> for Authed {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        principal(parts, state)
            .await?
            .map(Authed)
            .ok_or_else(|| AppError::unauthorized("sign in first"))
    }
}

/// A request that may be signed in (pages redirect when it is not).
pub(crate) struct MaybeAuthed(pub(crate) Option<Principal>);

impl FromRequestParts<AppState> for MaybeAuthed {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        principal(parts, state).await.map(MaybeAuthed)
    }
}

/// Revokes a token and ends its MCP sessions at once.
pub(crate) async fn revoke_token(state: &AppState, user_id: &str, id: &str) -> Result<(), AppError> {
    if !revoke_api_token(&state.db, user_id, id).await? {
        return Err(AppError::not_found(
            "token_not_found",
            format!("you have no API token {id}; GET /api/tokens lists yours"),
        ));
    }
    let ended = state.mcp_sessions.end_credential(id).await;
    tracing::info!(token = id, mcp_sessions_ended = ended, "API token revoked");
    Ok(())
}

/// `?next=` of the sign-in and sign-up pages.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Next {
    pub(crate) next: Option<String>,
}

impl Next {
    /// Only a path on this site: never `//elsewhere` or `https://elsewhere`.
    ///
    /// Browsers drop TAB, CR and LF anywhere in a URL and treat `\` as `/`,
    /// so `/\t/evil.example` would leave the site: any control character,
    /// space, backslash or non-ASCII character refuses the value outright
    /// (a real path here is percent-encoded), which also keeps it a valid
    /// `Location` header.
    pub(crate) fn safe(next: Option<&str>) -> Option<&str> {
        next.filter(|n| {
            n.starts_with('/')
                && !n.starts_with("//")
                && n.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
        })
    }

    /// `/signin?next=…` for a page that needs a signed-in person.
    pub(crate) fn signin_to(next: &str) -> String {
        match serde_urlencoded::to_string([("next", next)]) {
            Ok(query) => format!("/signin?{query}"),
            Err(_) => "/signin".into(),
        }
    }
}
