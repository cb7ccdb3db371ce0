//! Server-rendered pages: sign up/in/out and `/devices`. maud escapes every
//! interpolation, so names and file content can never become markup.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::cookie::CookieJar;
use fusion_host_server::ProposalStatus;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use crate::activity::{ActivityPage, ActivityQuery, Outcome};
use crate::auth::{self, Authed, FORM_CSRF_COOKIE, MaybeAuthed, Next, SESSION_COOKIE};
use crate::error::AppError;
use crate::extract::ApiPath;
use crate::releases;
use crate::state::AppState;
use crate::updates::{self, DeviceUpdate};
use crate::views::{ago, assets, layout, proposal_card};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/devices") }))
        .route("/signin", get(signin_page).post(signin))
        .route("/signup", get(signup_page).post(signup))
        .route("/signout", post(signout))
        .route("/devices", get(devices_page))
        .route("/devices/{id}", get(device_page))
        .route("/devices/tokens/{id}/revoke", post(revoke_token))
        .route("/devices/clients/{id}/disconnect", post(disconnect_client))
        .route("/device", get(crate::approve::page).post(crate::approve::decide))
        .route("/proposals/{id}/card", get(proposal_card_page))
        .route("/assets/{*path}", get(assets::serve))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct Credentials {
    email: String,
    password: String,
    csrf: String,
    /// Where to go once signed in (a page that sent the person here).
    #[serde(default)]
    next: Option<String>,
}

fn auth_page(
    kind: &str,
    error: Option<&str>,
    next: Option<&str>,
    jar: CookieJar,
    secure: bool,
) -> (CookieJar, Markup) {
    let next = Next::safe(next);
    // Double-submit cookie: the form must carry the value of this cookie.
    let token = auth::random_hex(16);
    let jar = jar.add(auth::cookie(FORM_CSRF_COOKIE, token.clone(), secure));
    let (title, action, other, other_label) = if kind == "signup" {
        ("Create your account", "/signup", "/signin", "I have an account")
    } else {
        ("Sign in", "/signin", "/signup", "Create an account")
    };
    let body = html! {
        section.card.narrow {
            h1 { (title) }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            @if next.is_some_and(|n| n.starts_with("/device?") || n == "/device") {
                p.muted { "Sign in to approve the device that is asking to join your account." }
            }
            form method="post" action=(action) {
                input type="hidden" name="csrf" value=(token);
                @if let Some(next) = next { input type="hidden" name="next" value=(next); }
                label { "Email" input type="email" name="email" required autocomplete="username"; }
                label { "Password" input type="password" name="password" required minlength="10" autocomplete=(if kind == "signup" { "new-password" } else { "current-password" }); }
                button.primary type="submit" { (title) }
            }
            p.muted { a href=(next.map_or_else(|| other.to_string(), |n| format!("{other}?{}", serde_urlencoded::to_string([("next", n)]).unwrap_or_default()))) { (other_label) } }
        }
    };
    (jar, layout(title, None, body))
}

async fn signin_page(State(s): State<AppState>, Query(q): Query<Next>, jar: CookieJar) -> impl IntoResponse {
    auth_page("signin", None, q.next.as_deref(), jar, s.secure_cookies)
}

async fn signup_page(State(s): State<AppState>, Query(q): Query<Next>, jar: CookieJar) -> impl IntoResponse {
    auth_page("signup", None, q.next.as_deref(), jar, s.secure_cookies)
}

fn form_csrf_ok(jar: &CookieJar, form: &Credentials) -> bool {
    jar.get(FORM_CSRF_COOKIE)
        .is_some_and(|c| auth::same(c.value(), &form.csrf))
}

async fn signin(State(s): State<AppState>, jar: CookieJar, Form(form): Form<Credentials>) -> Response {
    authenticate(s, jar, form, false).await
}

async fn signup(State(s): State<AppState>, jar: CookieJar, Form(form): Form<Credentials>) -> Response {
    authenticate(s, jar, form, true).await
}

async fn authenticate(s: AppState, jar: CookieJar, form: Credentials, new: bool) -> Response {
    let kind = if new { "signup" } else { "signin" };
    if !form_csrf_ok(&jar, &form) {
        let (jar, page) = auth_page(
            kind,
            Some("The form expired; please try again."),
            form.next.as_deref(),
            jar,
            s.secure_cookies,
        );
        return (axum::http::StatusCode::FORBIDDEN, jar, page).into_response();
    }
    let user = if new {
        auth::sign_up(&s.db, &form.email, &form.password).await
    } else {
        auth::sign_in(&s.db, &form.email, &form.password).await
    };
    let user = match user {
        Ok(u) => u,
        Err(e) => {
            let (jar, page) = auth_page(
                kind,
                Some(&e.message),
                form.next.as_deref(),
                jar,
                s.secure_cookies,
            );
            return (e.status, jar, page).into_response();
        }
    };
    match auth::start_session(&s.db, &user, s.secure_cookies).await {
        Ok(cookie) => {
            let to = Next::safe(form.next.as_deref()).unwrap_or("/devices");
            (jar.add(cookie), Redirect::to(to)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct SignOut {
    csrf: String,
}

async fn signout(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    jar: CookieJar,
    Form(form): Form<SignOut>,
) -> Result<Response, AppError> {
    if let Some(p) = p {
        p.check_csrf(Some(&form.csrf))?;
        if let Some(token) = &p.session_token {
            auth::end_session(&s.db, token).await?;
        }
    }
    Ok((jar.remove(SESSION_COOKIE), Redirect::to("/signin")).into_response())
}

/// The revoke button of a token on `/devices`: a plain form, so it works
/// without script.
async fn revoke_token(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    Path(id): Path<String>,
    Form(form): Form<SignOut>,
) -> Result<Response, AppError> {
    let Some(p) = p else {
        return Ok(Redirect::to("/signin").into_response());
    };
    p.check_csrf(Some(&form.csrf))?;
    auth::revoke_token(&s, &p.user.id, &id).await?;
    Ok(Redirect::to("/devices#tokens").into_response())
}

/// The disconnect button of a connected client on `/devices`.
async fn disconnect_client(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    Path(id): Path<String>,
    Form(form): Form<SignOut>,
) -> Result<Response, AppError> {
    let Some(p) = p else {
        return Ok(Redirect::to("/signin").into_response());
    };
    p.check_csrf(Some(&form.csrf))?;
    crate::oauth::grants::disconnect(&s, &p.user.id, &id).await?;
    Ok(Redirect::to("/devices#connected").into_response())
}

/// The MCP clients a person let sign in with OAuth.
fn connected_view(clients: &[crate::oauth::grants::Connected], csrf: Option<&str>) -> Markup {
    let when = |ms: i64| ago(crate::db::time(ms));
    html! {
        section.card #connected {
            h2 { "Connected apps" }
            p.muted { "MCP clients you let sign in. Disconnecting one ends its sign-in and its MCP sessions at once." }
            @if clients.is_empty() {
                p.empty { "No connected apps." }
            } @else {
                table.devices {
                    thead { tr { th { "App" } th { "May" } th { "Connected" } th { "Last used" } th {} } }
                    tbody {
                        @for c in clients {
                            tr data-client=(c.id) {
                                td {
                                    (c.client_name)
                                    @if let Some(host) = url::Url::parse(&c.client_id).ok().filter(|u| u.scheme() == "https").and_then(|u| u.host_str().map(str::to_string)) {
                                        " " span.muted { "(" (host) ")" }
                                    }
                                }
                                td.muted {
                                    @if c.scope.split(' ').any(|s| s == crate::oauth::SCOPE_PROPOSE) { "read, propose changes" } @else { "read" }
                                }
                                td.muted { (when(c.created_at)) }
                                td.muted { (c.last_used_at.map_or_else(|| "never".to_string(), when)) }
                                td.actions {
                                    form.inline method="post" action={ "/devices/clients/" (c.id) "/disconnect" } {
                                        input type="hidden" name="csrf" value=[csrf];
                                        button.danger.small type="submit" { "Disconnect" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The API tokens section of `/devices`.
fn tokens_view(tokens: &[auth::TokenInfo], csrf: Option<&str>) -> Markup {
    let when = |ms: i64| ago(crate::db::time(ms));
    html! {
        section.card #tokens {
            h2 { "API tokens" }
            p.muted { "Scripts, and MCP clients that cannot sign in with OAuth, use these (" code { "POST /api/tokens" } "). Revoking one ends its MCP sessions at once." }
            @if tokens.is_empty() {
                p.empty { "No API tokens." }
            } @else {
                table.devices {
                    thead { tr { th { "Name" } th { "Created" } th { "Last used" } th { "Expires" } th {} } }
                    tbody {
                        @for t in tokens {
                            tr data-token=(t.id) {
                                td { (t.name) }
                                td.muted { (when(t.created_at)) }
                                td.muted { (t.last_used_at.map_or_else(|| "never".to_string(), when)) }
                                td.muted { (t.expires_at.map_or_else(|| "never".to_string(), |at| humantime::format_rfc3339_seconds(crate::db::time(at)).to_string())) }
                                td.actions {
                                    form.inline method="post" action={ "/devices/tokens/" (t.id) "/revoke" } {
                                        input type="hidden" name="csrf" value=[csrf];
                                        button.danger.small type="submit" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A call's outcome as people read it: ok, refused (the device's rules said
/// no: outside the allowed folders, read-only), a conflict (the disk changed
/// since the plan), or failed. A refusal is not an outage and must not look
/// like one.
fn outcome_badge(outcome: Outcome, code: Option<&str>) -> Markup {
    let text = code.unwrap_or(outcome.as_str());
    html! { span class={ "badge " (outcome.as_str()) } title=(outcome.as_str()) { (text) } }
}

/// Whether the device may change files in a folder.
fn access_badge(access: fusion_tools::Access) -> Markup {
    match access {
        fusion_tools::Access::ReadOnly => html! { span.badge.readonly { "read-only" } },
        fusion_tools::Access::ReadWrite => html! { span.badge.readwrite { "read-write" } },
    }
}

/// `GET /proposals/{id}/card`: one of the owner's proposals as the card
/// `/devices` shows, for the tool runner to place where it proposed it.
async fn proposal_card_page(
    State(s): State<AppState>,
    Authed(p): Authed,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, AppError> {
    let proposal = s.dispatcher.proposal(&p.user.id, &id).await?;
    let devices = s.dispatcher.devices(&p.user.id).await?;
    let device = devices
        .iter()
        .find(|d| d.device.id == proposal.device_id)
        .map(|d| d.device.name.as_str());
    Ok(proposal_card(&proposal, device).into_response())
}

async fn devices_page(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    Query(q): Query<ActivityQuery>,
) -> Result<Response, AppError> {
    let Some(p) = p else {
        return Ok(Redirect::to("/signin").into_response());
    };
    let q = ActivityQuery {
        limit: Some(ACTIVITY_ROWS),
        format: None,
        ..q
    };
    let devices = s.dispatcher.devices(&p.user.id).await?;
    let pending = s
        .dispatcher
        .proposals(&p.user.id, Some(ProposalStatus::Pending))
        .await?;
    let activity = crate::activity::page(&s.db, &p.user.id, &q).await?;
    let tokens = auth::api_tokens(&s.db, &p.user.id).await?;
    let connected = crate::oauth::grants::connected(&s.db, &p.user.id).await?;
    let offered = releases::offered(&s).await;
    let (own_updates, told) = updates::for_page(&s, &p.user.id).await?;
    let automatic = told.as_ref().is_some_and(|t| t.automatic);
    let names: std::collections::HashMap<&str, &str> = devices
        .iter()
        .map(|d| (d.device.id.as_str(), d.device.name.as_str()))
        .collect();
    let active: Vec<_> = devices.iter().filter(|d| d.device.revoked_at.is_none()).collect();
    let revoked: Vec<_> = devices.iter().filter(|d| d.device.revoked_at.is_some()).collect();
    let body = html! {
        section.card {
            div.row {
                h1 { "Devices" }
                button.primary #add-device type="button" { "Add a device" }
            }
            div #pairing hidden {
                p { "On the computer to add, run this in a terminal (PowerShell, cmd or a shell), in the folder it may work on:" }
                p.muted { "Not installed there yet? " a href="/download" { "Download fusion-host" } " first." }
                div.code-row { code #pair-command {} button #copy-command type="button" { "Copy" } }
                p.bigcode #pair-code {}
                p.muted #pair-expiry { "The code works once and expires in " span #pair-countdown {} "." }
                p.muted { "Add " code { "--service" } " to keep it running in the background and start it at every log-on." }
                p #pair-expired hidden { "This code expired before a device used it. " button.small #mint-again type="button" { "Mint a new code" } }
                p.success #pair-done hidden {}
            }
            div #device-list data-live {
            @if active.is_empty() {
                p.empty #no-devices { "No devices yet — add one with the button above, or run " code { "fusion-host login" } " on the computer to add." }
            } @else {
                table.devices {
                    thead { tr { th { "Name" } th { "Status" } th { "Platform" } th { "Version" } th { "Last seen" } th { "Folders" } th { "Tools" } th {} } }
                    tbody {
                        @for d in &active {
                            tr data-device=(d.device.id) {
                                td { a href={ "/devices/" (d.device.id) } { (d.device.name) } }
                                td { span class={ "badge " (if d.online { "online" } else { "offline" }) } data-badge=(d.device.id) { (if d.online { "online" } else { "offline" }) } }
                                td.muted { (d.device.platform) }
                                td.muted.version {
                                    (d.device.host_version)
                                    @if let Some(state) = DeviceUpdate::of(d, offered.as_deref(), told.as_ref()) {
                                        " " (state.badge(automatic))
                                    }
                                }
                                td.muted { (d.device.last_seen.map(ago).unwrap_or_default()) }
                                td.muted { @if let Some(m) = &d.manifest { @for r in &m.roots { div.folder { (r.path) " " (access_badge(r.access)) } } } }
                                td { (d.manifest.as_ref().map_or(0, |m| m.tools.len())) }
                                td.actions {
                                    a.button.small href={ "/devices/" (d.device.id) "#runner" } { "Run a tool" } " "
                                    button.small data-rename=(d.device.id) data-name=(d.device.name) type="button" { "Rename" } " "
                                    button.danger.small data-revoke=(d.device.id) data-name=(d.device.name) type="button" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            @if !revoked.is_empty() {
                h2.revoked-title { "Revoked" }
                p.muted { "These no longer connect or run anything; pair the computer again to use it." }
                table.devices.revoked {
                    tbody {
                        @for d in &revoked {
                            tr data-revoked=(d.device.id) {
                                td { (d.device.name) }
                                td { span.badge.revoked { "revoked" } }
                                td.muted { (d.device.platform) }
                                td.muted { "revoked " (d.device.revoked_at.map(ago).unwrap_or_default()) }
                            }
                        }
                    }
                }
            }
            }
        }
        section.card #approvals data-live {
            h2 { "Waiting for your approval" }
            @if pending.is_empty() {
                p.empty { "Nothing to approve. Changes an agent proposes appear here with their exact diff." }
            }
            @for prop in &pending {
                (proposal_card(prop, names.get(prop.device_id.as_str()).copied()))
            }
        }
        @if let Some(offered) = &offered {
            (updates::view(&own_updates, &s.db.updates, offered, p.csrf.as_deref()))
        }
        (activity_view(&activity, &q, &devices))
        (tokens_view(&tokens, p.csrf.as_deref()))
        (connected_view(&connected, p.csrf.as_deref()))
    };
    Ok(layout("Devices", Some(&p), body).into_response())
}

/// Activity rows on `/devices`; the API pages further.
const ACTIVITY_ROWS: usize = 25;

/// The audit trail: filters, one page, the next-page link and the exports.
fn activity_view(
    page: &ActivityPage,
    q: &ActivityQuery,
    devices: &[fusion_host_server::DeviceStatus],
) -> Markup {
    let filters = q.filters();
    let with = |extra: String| {
        let joined = [filters.as_str(), extra.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("&");
        if joined.is_empty() {
            String::new()
        } else {
            format!("?{joined}")
        }
    };
    let filtered = !filters.is_empty();
    html! {
        section.card #activity data-live {
            div.row {
                h2 { "Activity" }
                span.muted.exports {
                    "Export: "
                    a #export-csv href={ "/api/activity" (with("format=csv&limit=10000".into())) } { "CSV" } " · "
                    a #export-json href={ "/api/activity" (with("limit=10000".into())) } { "JSON" }
                }
            }
            form.filters method="get" action="/devices#activity" {
                label { "Device "
                    select name="device" #filter-device {
                        option value="" { "all" }
                        @for d in devices {
                            option value=(d.device.id) selected[q.device.as_deref() == Some(d.device.id.as_str())] { (d.device.name) }
                        }
                    }
                }
                label { "Outcome "
                    select name="outcome" #filter-outcome {
                        option value="" { "all" }
                        @for o in Outcome::ALL {
                            option value=(o.as_str()) selected[q.outcome == Some(o)] { (o.as_str()) }
                        }
                    }
                }
                button.small type="submit" { "Filter" }
                @if filtered { " " a href="/devices#activity" { "clear" } }
            }
            @if page.entries.is_empty() {
                p.empty #no-activity {
                    @if filtered || q.cursor.is_some() { "No calls match. " a href="/devices#activity" { "Show all activity" } }
                    @else { "No calls yet. Run a tool on a device, or let an agent call one; every call is recorded here." }
                }
            } @else {
                table.activity {
                    thead { tr { th { "When" } th { "Who asked" } th { "Device" } th { "Tool" } th { "Paths" } th { "Result" } th { "Decision" } th { "Time" } } }
                    tbody {
                        @for r in &page.entries {
                            tr data-call=(r.call_id) {
                                td.muted title=(r.at) { (ago(r.started_at)) }
                                td { (r.requested_by) }
                                td { (r.device_name.as_deref().unwrap_or(&r.device_id)) }
                                td { (r.tool) span.muted { " " (r.mode) } }
                                td.paths { (paths_cell(&r.paths)) }
                                td { (outcome_badge(r.outcome, r.error_code.as_deref())) }
                                td.muted { @if let Some(d) = &r.decision { (decision_text(d)) } }
                                td.muted { (r.duration_ms) " ms" }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next_cursor {
                    p { a #older href={ "/devices" (with(serde_urlencoded::to_string([("cursor", next)]).unwrap_or_default())) "#activity" } { "Older →" } }
                }
            }
        }
    }
}

/// The first two paths, and how many more.
fn paths_cell(paths: &[String]) -> Markup {
    html! {
        @for p in paths.iter().take(2) { code { (p) } " " }
        @if paths.len() > 2 { span.muted { "+" (paths.len() - 2) } }
    }
}

/// "approved by x@y.com", "rejected by …", "waiting", "expired".
fn decision_text(d: &crate::activity::Decision) -> String {
    let by = d
        .decided_by
        .as_deref()
        .map(|b| format!(" by {b}"))
        .unwrap_or_default();
    match d.status.as_str() {
        "pending" => "waiting for approval".into(),
        "approved" | "applied" | "failed" => format!("approved{by}"),
        "rejected" => format!("rejected{by}"),
        other => other.to_string(),
    }
}

async fn device_page(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let Some(p) = p else {
        return Ok(Redirect::to("/signin").into_response());
    };
    let (d, manifest) = match s.dispatcher.device(&p.user.id, &id).await {
        Ok(found) => found,
        // A page, not the API's JSON: someone followed a stale or mistyped link.
        Err(fusion_host_server::Error::DeviceNotFound { .. }) => {
            let body = html! {
                section.card {
                    h1 { "No such device" }
                    p { "None of your devices has the id " code { (id) } ". It may have been removed, or the link is mistyped." }
                    p { a href="/devices" { "← Your devices" } }
                }
            };
            return Ok((StatusCode::NOT_FOUND, layout("No such device", Some(&p), body)).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let tools = manifest.map(|m| m.tools).unwrap_or_default();
    let tools_json = serde_json::to_string(&tools).unwrap_or_default();
    let body = html! {
        section.card {
            div.row {
                h1 { (d.device.name) " " span class={ "badge " (if d.online { "online" } else { "offline" }) } data-badge=(d.device.id) { (if d.online { "online" } else { "offline" }) } }
                a href="/devices" { "← All devices" }
            }
            p.muted { (d.device.platform) " · fusion-host " (d.device.host_version) }
            @if let Some(m) = &d.manifest { p { "Folders: " @for r in &m.roots { code { (r.path) } " " (access_badge(r.access)) " " } } }
        }
        section.card #runner data-device=(d.device.id) {
            h2 { "Run a tool" }
            @if tools.is_empty() { p.empty { "This device has not sent its tools yet; start it and reload." } } @else {
                label { "Tool"
                    select #tool {
                        @for t in &tools { option value=(t.name) { (t.name) " (" (t.class.as_str()) ")" } }
                    }
                }
                p.muted #tool-description {}
                label { "Input (JSON)" textarea #input rows="6" spellcheck="false" {} }
                button.primary #run type="button" { "Run" }
                div #result {}
            }
            script type="application/json" #tools-data { (PreEscaped(tools_json.replace("</", "<\\/"))) }
        }
    };
    Ok(layout(&d.device.name, Some(&p), body).into_response())
}

#[cfg(test)]
mod tests {
    #[test]
    fn next_stays_on_this_site() {
        let safe = crate::auth::Next::safe;
        assert_eq!(
            safe(Some("/device?user_code=WDJB-MJHT")),
            Some("/device?user_code=WDJB-MJHT")
        );
        for elsewhere in [
            "//evil.example",
            "https://evil.example/",
            "evil",
            "/\\evil.example",
            "/\t/evil.example/x",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/ /evil.example",
            "/\u{0}/evil.example",
            "/\u{7f}/evil.example",
            "/é",
            "",
        ] {
            assert_eq!(safe(Some(elsewhere)), None, "{elsewhere}");
        }
        assert_eq!(
            crate::auth::Next::signin_to("/device?user_code=A"),
            "/signin?next=%2Fdevice%3Fuser_code%3DA"
        );
    }
}
