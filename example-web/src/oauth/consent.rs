//! `/oauth/authorize`: a person sees which client asks, for which account,
//! reaching which devices, and whether it may propose changes, then allows
//! or denies. Until the client and its redirect URI are known, errors are
//! shown here, never sent to a URI the request named; after that they go
//! back to the client as RFC 6749 §4.1.2.1 says.

use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{Markup, html};
use reqwest::Url;
use serde::Deserialize;

use super::clients::{self, Client};
use super::grants::{self, Approval};
use super::{OAuth, OAuthError, SCOPE_PROPOSE, SCOPE_READ, check_resource, known_scopes};
use crate::auth::{MaybeAuthed, Next, Principal};
use crate::state::AppState;
use crate::views::layout;

/// The authorization request, as the query of the page and the hidden
/// fields of its form.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct AuthorizeRequest {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
}

/// The consent form: the request again, and the person's answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Decision {
    #[serde(flatten)]
    request: AuthorizeRequest,
    csrf: String,
    /// `allow` or `deny`.
    decision: String,
    /// The checkbox "may propose changes": present when ticked.
    propose: Option<String>,
}

/// A request whose client and redirect URI are known: from here on,
/// problems go back to the client.
struct Checked {
    client: Client,
    redirect: String,
    challenge: String,
    scopes: Vec<&'static str>,
}

/// The page that says what is wrong with a request that cannot go back.
fn refusal(status: StatusCode, message: &str) -> Response {
    let body = html! {
        section.card.narrow {
            h1 { "This sign-in cannot continue" }
            p.error role="alert" { (message) }
            p.muted { "Go back to the app that sent you here and try again; if it keeps happening, tell its makers." }
        }
    };
    (status, layout("Sign-in refused", None, body)).into_response()
}

/// Back to the client with `error` (and the request's `state`).
fn back_with_error(
    redirect: &str,
    state: Option<&str>,
    issuer: &str,
    error: &str,
    description: &str,
) -> Response {
    let mut pairs = vec![
        ("error", error),
        ("error_description", description),
        ("iss", issuer),
    ];
    if let Some(state) = state {
        pairs.push(("state", state));
    }
    back(redirect, &pairs)
}

fn back(redirect: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = Url::parse(redirect) else {
        return refusal(StatusCode::BAD_REQUEST, "the redirect URI is not a URL");
    };
    url.query_pairs_mut().extend_pairs(pairs);
    Redirect::to(url.as_str()).into_response()
}

/// Finds the client and its redirect URI (errors for the page), then checks
/// the rest (errors for the client).
async fn check(
    s: &AppState,
    oauth: &OAuth,
    r: &AuthorizeRequest,
    fetch: bool,
) -> Result<Checked, Box<Response>> {
    let Some(client_id) = r.client_id.as_deref().filter(|c| !c.is_empty()) else {
        return Err(Box::new(refusal(
            StatusCode::BAD_REQUEST,
            "The request names no client (client_id is missing).",
        )));
    };
    let client = if fetch {
        clients::resolve(&s.db, &oauth.fetcher, client_id).await
    } else {
        // The consent form comes back moments after the page fetched the
        // client's document: the stored copy is what the person saw.
        clients::stored(&s.db, client_id).await.and_then(|c| {
            c.ok_or_else(|| {
                OAuthError::invalid_request(format!("client `{client_id}` is not known; start again"))
            })
        })
    };
    let client = client.map_err(|e| Box::new(refusal(StatusCode::BAD_REQUEST, &e.description())))?;
    let Some(redirect) = client.redirect_uri(r.redirect_uri.as_deref()) else {
        let message = match &r.redirect_uri {
            Some(uri) => format!("{} does not list `{uri}` among its redirect URIs.", client.name),
            None => format!(
                "{} has several redirect URIs and the request names none.",
                client.name
            ),
        };
        return Err(Box::new(refusal(StatusCode::BAD_REQUEST, &message)));
    };
    let issuer = oauth.issuer.as_str();
    let state = r.state.as_deref();
    let fail = |error: &str, description: &str| {
        Err(Box::new(back_with_error(
            &redirect,
            state,
            issuer,
            error,
            description,
        )))
    };
    if r.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "response_type must be code");
    }
    let Some(challenge) = r.code_challenge.clone().filter(|c| !c.is_empty()) else {
        return fail(
            "invalid_request",
            "code_challenge is missing: PKCE with S256 is required",
        );
    };
    if r.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "code_challenge_method must be S256");
    }
    if let Err(e) = check_resource(oauth, r.resource.as_deref()) {
        return fail("invalid_target", &e.description());
    }
    let scopes = known_scopes(r.scope.as_deref());
    if scopes.is_empty() {
        return fail("invalid_scope", "ask for devices:read, devices:propose or both");
    }
    Ok(Checked {
        client,
        redirect,
        challenge,
        scopes,
    })
}

/// `GET /oauth/authorize`.
pub(crate) async fn page(
    State(s): State<AppState>,
    Extension(oauth): Extension<Arc<OAuth>>,
    MaybeAuthed(p): MaybeAuthed,
    OriginalUri(uri): OriginalUri,
    Query(r): Query<AuthorizeRequest>,
) -> Response {
    let checked = match check(&s, &oauth, &r, true).await {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let Some(p) = p else {
        let here = uri.path_and_query().map_or("/oauth/authorize", |pq| pq.as_str());
        return Redirect::to(&Next::signin_to(here)).into_response();
    };
    let devices = match s.dispatcher.devices(&p.user.id).await {
        Ok(d) => d,
        Err(e) => return crate::error::AppError::from(e).into_response(),
    };
    let names: Vec<String> = devices
        .iter()
        .filter(|d| d.device.revoked_at.is_none())
        .map(|d| d.device.name.clone())
        .collect();
    let mut response = layout("Allow access", Some(&p), view(&p, &r, &checked, &names)).into_response();
    // The form's answer redirects to the client: CSP's form-action must let
    // that redirect through, and only that.
    let csp = crate::views::CONTENT_SECURITY_POLICY.replace(
        "form-action 'self'",
        &format!("form-action 'self' {}", form_action_source(&checked.redirect)),
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// The CSP source that allows a redirect to `uri`: its origin, or its
/// scheme for a private-use one.
fn form_action_source(uri: &str) -> String {
    match Url::parse(uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url.origin().ascii_serialization(),
        Ok(url) => format!("{}:", url.scheme()),
        Err(_) => String::new(),
    }
}

fn view(p: &Principal, r: &AuthorizeRequest, c: &Checked, devices: &[String]) -> Markup {
    let hidden = [
        ("response_type", r.response_type.as_deref()),
        ("client_id", r.client_id.as_deref()),
        ("redirect_uri", r.redirect_uri.as_deref()),
        ("state", r.state.as_deref()),
        ("scope", r.scope.as_deref()),
        ("code_challenge", r.code_challenge.as_deref()),
        ("code_challenge_method", r.code_challenge_method.as_deref()),
        ("resource", r.resource.as_deref()),
    ];
    let asks_to_propose = c.scopes.contains(&SCOPE_PROPOSE);
    html! {
        section.card.narrow #consent {
            h1 { "Allow " (c.client.name) " to use your devices?" }
            dl.facts {
                dt { "Client" }
                dd #client-name { (c.client.name) }
                @if let Some(host) = c.client.host().filter(|_| c.client.has_document()) {
                    dt { "Its address" }
                    dd #client-host { (host) }
                } @else {
                    dt { "Its address" }
                    dd #client-host { "none: it registered itself with this app, so only its own word says what it is" }
                }
                dt { "Returns to" }
                dd #redirect-uri { code { (c.redirect) } }
                dt { "Account" }
                dd { (p.user.email) }
                dt { "Devices it reaches" }
                dd #consent-devices {
                    @if devices.is_empty() { "none yet; devices you pair later too" }
                    @else { (devices.join(", ")) "; and devices you pair later" }
                }
            }
            form method="post" action="/oauth/authorize" {
                @for (name, value) in hidden {
                    @if let Some(value) = value { input type="hidden" name=(name) value=(value); }
                }
                input type="hidden" name="csrf" value=[p.csrf.as_deref()];
                p { "It may list your devices and read the files in their allowed folders (" code { (SCOPE_READ) } ")." }
                label.check {
                    input type="checkbox" name="propose" value="on" checked[asks_to_propose] disabled[!asks_to_propose];
                    span { "It may also propose changes to files (" code { (SCOPE_PROPOSE) } "); each change still waits for your approval on this site." }
                }
                p.muted { "You can disconnect it at any time under Connected apps on your devices page." }
                div.actions {
                    button.primary type="submit" name="decision" value="allow" #allow { "Allow" }
                    button type="submit" name="decision" value="deny" #deny { "Deny" }
                }
            }
        }
    }
}

/// `POST /oauth/authorize`: the person's answer.
pub(crate) async fn decide(
    State(s): State<AppState>,
    Extension(oauth): Extension<Arc<OAuth>>,
    MaybeAuthed(p): MaybeAuthed,
    Form(d): Form<Decision>,
) -> Response {
    let Some(p) = p else {
        return refusal(
            StatusCode::UNAUTHORIZED,
            "Your session ended; start the sign-in from the app again.",
        );
    };
    if let Err(e) = p.check_csrf(Some(&d.csrf)) {
        return refusal(e.status, &e.message);
    }
    let checked = match check(&s, &oauth, &d.request, false).await {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let issuer = oauth.issuer.as_str();
    let state = d.request.state.as_deref();
    if d.decision != "allow" {
        return back_with_error(
            &checked.redirect,
            state,
            issuer,
            "access_denied",
            "the person denied access",
        );
    }
    let scopes: Vec<&str> = checked
        .scopes
        .iter()
        .copied()
        .filter(|s| *s != SCOPE_PROPOSE || d.propose.is_some())
        .chain(std::iter::once(SCOPE_READ))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let approval = Approval {
        user_id: p.user.id.clone(),
        client_id: checked.client.id.clone(),
        scope: scopes.join(" "),
        resource: oauth.resource.clone(),
        redirect_uri: d.request.redirect_uri.clone(),
        code_challenge: checked.challenge.clone(),
    };
    match grants::issue_code(&s.db, &approval).await {
        Ok(code) => {
            let mut pairs = vec![("code", code.as_str()), ("iss", issuer)];
            if let Some(state) = state {
                pairs.push(("state", state));
            }
            tracing::info!(client = %checked.client.id, user = %p.user.id, scope = %approval.scope, "OAuth client allowed");
            back(&checked.redirect, &pairs)
        }
        Err(e) => back_with_error(&checked.redirect, state, issuer, "server_error", &e.description()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_may_send_the_browser_to_the_redirect_only() {
        assert_eq!(
            form_action_source("http://127.0.0.1:8000/cb?x=1"),
            "http://127.0.0.1:8000"
        );
        assert_eq!(
            form_action_source("https://app.example.com/cb"),
            "https://app.example.com"
        );
        assert_eq!(form_action_source("com.example.app:/oauth"), "com.example.app:");
    }
}
