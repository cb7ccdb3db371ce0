//! `/device`: where a signed-in person approves a device that ran
//! `fusion-host login` (RFC 8628's verification page). They type the code
//! the device shows (or follow its link, which carries it), see what is
//! asking — name, platform, address, when — and approve or deny.

use std::net::SocketAddr;
use std::time::SystemTime;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use fusion_host_server::{DeviceAuthorization, DeviceAuthorizationStatus};
use maud::{Markup, html};
use serde::Deserialize;

use crate::auth::{MaybeAuthed, Next, Principal};
use crate::error::AppError;
use crate::state::AppState;
use crate::views::{ago, layout};

/// `GET /device?user_code=…`.
#[derive(Debug, Deserialize)]
pub(crate) struct CodeQuery {
    user_code: Option<String>,
}

/// `POST /device`.
#[derive(Debug, Deserialize)]
pub(crate) struct Decision {
    user_code: String,
    csrf: String,
    /// `approve` or `deny`.
    decision: String,
}

type Peer = Option<Extension<ConnectInfo<SocketAddr>>>;

fn peer(peer: Peer) -> Option<SocketAddr> {
    peer.map(|Extension(ConnectInfo(a))| a)
}

pub(crate) async fn page(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    connect_info: Peer,
    headers: HeaderMap,
    Query(q): Query<CodeQuery>,
) -> Result<Response, AppError> {
    let code = q.user_code.filter(|c| !c.trim().is_empty());
    let Some(p) = p else {
        let here = match &code {
            Some(c) => format!(
                "/device?{}",
                serde_urlencoded::to_string([("user_code", c)]).unwrap_or_default()
            ),
            None => "/device".into(),
        };
        return Ok(Redirect::to(&Next::signin_to(&here)).into_response());
    };
    let Some(code) = code else {
        return Ok(render(&p, StatusCode::OK, entry_form(None, None)));
    };
    let addr = s.dispatcher.client_addr(peer(connect_info), &headers);
    match s.dispatcher.device_authorization(&p.user.id, addr, &code).await {
        Ok(request) => Ok(render(&p, StatusCode::OK, request_view(&p, &request))),
        Err(e) => {
            let wait = e.retry_after();
            let e = refusal(e)?;
            Ok(with_retry_after(
                render(&p, e.status, entry_form(Some(&code), Some(&e.message))),
                wait,
            ))
        }
    }
}

pub(crate) async fn decide(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    connect_info: Peer,
    headers: HeaderMap,
    Form(form): Form<Decision>,
) -> Result<Response, AppError> {
    let Some(p) = p else {
        return Ok(Redirect::to(&Next::signin_to("/device")).into_response());
    };
    p.check_csrf(Some(&form.csrf))?;
    let addr = s.dispatcher.client_addr(peer(connect_info), &headers);
    let decided = match form.decision.as_str() {
        "approve" => {
            s.dispatcher
                .approve_device(&p.user.id, addr, &form.user_code)
                .await
        }
        "deny" => s.dispatcher.deny_device(&p.user.id, addr, &form.user_code).await,
        other => {
            return Err(AppError::invalid(
                "decision",
                &format!("`{other}` is neither approve nor deny"),
            ));
        }
    };
    match decided {
        Ok(request) => Ok(render(&p, StatusCode::OK, decided_view(&request))),
        Err(e) => {
            let wait = e.retry_after();
            let e = refusal(e)?;
            let body = html! {
                section.card.narrow #device-result {
                    h1 { "Add a device" }
                    p.error role="alert" { (e.message) }
                    p { a href="/device" { "Enter another code" } " · " a href="/devices" { "Your devices" } }
                }
            };
            Ok(with_retry_after(render(&p, e.status, body), wait))
        }
    }
}

/// A 429 page says when to try again, as the API's 429s do.
fn with_retry_after(mut response: Response, wait: Option<std::time::Duration>) -> Response {
    if let Some(wait) = wait {
        // As the device routes say it: whole seconds, at least one.
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, wait.as_secs().max(1).into());
    }
    response
}

/// A refusal to show on the page (an unknown, expired or decided code, too
/// many tries); a server failure stays an error response.
fn refusal(e: fusion_host_server::Error) -> Result<AppError, AppError> {
    let e = AppError::from(e);
    if e.status.is_server_error() { Err(e) } else { Ok(e) }
}

fn render(p: &Principal, status: StatusCode, body: Markup) -> Response {
    (status, layout("Add a device", Some(p), body)).into_response()
}

fn entry_form(code: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Add a device" }
            p { "Enter the code your device shows after " code { "fusion-host login" } ":" }
            @if let Some(e) = error { p.error role="alert" #device-error { (e) } }
            form method="get" action="/device" {
                label {
                    "Code"
                    input #user-code name="user_code" value=[code] required autocomplete="off"
                        autocapitalize="characters" spellcheck="false" placeholder="WDJB-MJHT"
                        pattern="[A-Za-z]{4}-?[A-Za-z]{4}" maxlength="9";
                }
                button.primary type="submit" { "Continue" }
            }
        }
    }
}

fn minutes_left(until: SystemTime) -> u64 {
    until
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_secs().div_ceil(60))
}

fn request_view(p: &Principal, r: &DeviceAuthorization) -> Markup {
    let closed = match (r.status, r.expired) {
        (_, true) => Some("This code has expired. Run fusion-host login on the device again for a new one."),
        (DeviceAuthorizationStatus::Pending, false) => None,
        (DeviceAuthorizationStatus::Denied, _) => {
            Some("This device was denied. A code is decided once: run fusion-host login again to ask anew.")
        }
        _ => Some("This device was approved already."),
    };
    html! {
        section.card.narrow #device-request {
            h1 { "Add a device" }
            @if let Some(closed) = closed {
                p.error role="alert" #device-error { (closed) }
            } @else {
                p { "A computer is asking to work on files for " strong { (p.user.email) } ". Approve it only if you just ran "
                    code { "fusion-host login" } " there and it shows this code:" }
            }
            p.user-code { code #request-code { (r.user_code) } }
            table.facts {
                tr { th { "Name" } td #request-name { (r.name) } }
                tr { th { "Platform" } td { (r.platform) } }
                tr { th { "Version" } td { (r.host_version) } }
                tr { th { "Address" } td { (r.address.as_deref().unwrap_or("unknown")) } }
                tr { th { "Asked" } td { (ago(r.created_at)) } }
                @if closed.is_none() { tr { th { "Code expires" } td { "in " (minutes_left(r.expires_at)) " min" } } }
            }
            @if closed.is_none() {
                form.row method="post" action="/device" {
                    input type="hidden" name="user_code" value=(r.user_code);
                    input type="hidden" name="csrf" value=[p.csrf.as_deref()];
                    button.primary #approve-device type="submit" name="decision" value="approve" { "Approve" }
                    button #deny-device type="submit" name="decision" value="deny" { "Deny" }
                }
            }
        }
    }
}

fn decided_view(r: &DeviceAuthorization) -> Markup {
    html! {
        section.card.narrow #device-result {
            @if r.status == DeviceAuthorizationStatus::Approved {
                h1 { "✓ Device approved" }
                p { "'" (r.name) "' is being added to your account. Go back to its terminal: it connects within a few seconds." }
            } @else {
                h1 { "Device denied" }
                p { "'" (r.name) "' was told no. Nothing was added to your account." }
            }
            p { a href="/devices" { "Your devices" } }
        }
    }
}
