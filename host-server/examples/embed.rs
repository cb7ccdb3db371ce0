//! The smallest app that embeds the dispatcher, end to end: sign-in, the
//! device routes, pairing, a call, the approval page, live events per
//! owner, graceful shutdown. `docs/EMBEDDING.md` walks through it.
//!
//! ```sh
//! cargo run -p fusion-host-server --example embed        # http://127.0.0.1:8090, alice / alice
//! ```
//!
//! Open the page, mint a code, run the line it shows on a computer with
//! `fusion-host`, then:
//!
//! ```sh
//! curl -u alice:alice -X POST http://127.0.0.1:8090/devices/DEVICE_ID/calls \
//!      -H 'content-type: application/json' \
//!      -d '{"tool": "write_file", "input": {"path": "hello.txt", "content": "hi\n"}}'
//! ```
//!
//! and approve the proposal on the page. Two things here are stand-ins for
//! what a real app has: the users (a fixed list, HTTP Basic) and the store
//! ([`MemoryStore`], gone at exit; implement [`Store`] on your tables).
//!
//! [`Store`]: fusion_host_server::Store

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::TypedHeader;
use axum_extra::headers::Authorization;
use axum_extra::headers::authorization::Basic;
use fusion_host_server::{CallOptions, CallOutcome, Config, Dispatcher, MemoryStore, ProposalStatus, router};
use futures_util::{Stream, StreamExt};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where devices reach the dispatcher: `fusion-host` always calls
/// `<server>/api/host/…`, so the routes are nested exactly there.
const DEVICE_ROUTES: &str = "/api/host";

/// The stand-in for the app's accounts: user id and password.
const USERS: [(&str, &str); 2] = [("alice", "alice"), ("bob", "bob")];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let public_url = "http://127.0.0.1:8090";
    let config = Config {
        // The page where a signed-in person approves `fusion-host login`;
        // without it, device login is off (this example has no such page:
        // example-web's `/device` is one).
        verification_uri: None,
        ..Config::default()
    };
    let dispatcher = Dispatcher::new(Arc::new(MemoryStore::new()), config);
    let app = Router::new()
        .route("/", get(page))
        .route("/pairing-codes", post(pairing_code))
        .route("/devices/{id}/calls", post(call))
        .route("/proposals/{id}/{decision}", post(decide))
        .route("/events", get(events))
        .with_state(dispatcher.clone())
        .nest(DEVICE_ROUTES, router(dispatcher.clone()));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:8090").await?;
    println!("listening on {public_url} (sign in as alice / alice)");
    let stop = dispatcher.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        // Ends every device stream, so the graceful shutdown below does
        // not wait on them; devices reconnect to the next process.
        stop.shutdown();
    });
    // Connect info: pairing is rate-limited per client address.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(dispatcher.stopped())
        .await?;
    Ok(())
}

/// The signed-in user. Every call into the dispatcher names an owner, and
/// the dispatcher answers only with that owner's devices and proposals.
struct User(String);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let ask = || {
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"embed\"")],
                "sign in",
            )
                .into_response()
        };
        let TypedHeader(Authorization(basic)) =
            TypedHeader::<Authorization<Basic>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ask())?;
        let known = USERS
            .iter()
            .any(|(user, password)| *user == basic.username() && *password == basic.password());
        if !known {
            return Err(ask());
        }
        // A form posted from another site carries the browser's Basic
        // credentials too: changes come only from this origin.
        let cross_site = parts
            .headers
            .get("sec-fetch-site")
            .is_some_and(|v| v != "same-origin" && v != "none");
        if parts.method != axum::http::Method::GET && cross_site {
            return Err((StatusCode::FORBIDDEN, "cross-site request refused").into_response());
        }
        Ok(User(basic.username().to_string()))
    }
}

/// The owner's page: devices, a pairing code, and the proposals waiting
/// for a person, each with its exact diff. What a device sent (names,
/// paths, diffs) is escaped like any untrusted text.
async fn page(State(d): State<Dispatcher>, User(owner): User) -> Result<Markup, fusion_host_server::Error> {
    let devices = d.devices(&owner).await?;
    let pending = d.proposals(&owner, Some(ProposalStatus::Pending)).await?;
    Ok(html! {
        h1 { "Devices of " (owner) }
        form method="post" action="/pairing-codes" { button { "Add a device" } }
        ul {
            @for s in &devices {
                li { (s.device.name) " (" code { (s.device.id) } ") — " (if s.online { "online" } else { "offline" }) }
            }
        }
        h2 { "Waiting for your approval" }
        @for p in &pending {
            section {
                p { b { (p.tool) } " on " code { (p.device_id) } ": " (p.plan.summary) }
                @if let Some(diff) = &p.plan.diff { pre { (diff) } }
                form method="post" action={ "/proposals/" (p.id) "/approve" } { button { "Approve" } }
                form method="post" action={ "/proposals/" (p.id) "/reject" } { button { "Reject" } }
            }
        }
    })
}

/// A pairing code for the owner, and the line to run on the device.
async fn pairing_code(
    State(d): State<Dispatcher>,
    User(owner): User,
) -> Result<Html<String>, fusion_host_server::Error> {
    let code = d.mint_pairing_code(&owner).await?;
    Ok(Html(
        html! {
            p { "On the computer to add, in the folder it may work on:" }
            pre { "fusion-host --server http://127.0.0.1:8090 --code " (code.code) }
            p { a href="/" { "Back" } }
        }
        .into_string(),
    ))
}

#[derive(Deserialize)]
struct CallBody {
    tool: String,
    #[serde(default)]
    input: Value,
}

/// Runs a tool: a read or action tool answers at once, a mutate tool
/// answers with a proposal to approve on the page.
async fn call(
    State(d): State<Dispatcher>,
    User(owner): User,
    Path(device): Path<String>,
    Json(body): Json<CallBody>,
) -> Result<Json<Value>, fusion_host_server::Error> {
    let options = CallOptions {
        requested_by: Some(owner.clone()),
        ..CallOptions::default()
    };
    Ok(Json(
        match d.call(&owner, &device, &body.tool, body.input, options).await? {
            CallOutcome::Output(out) => json!({ "output": out.output, "truncated": out.truncated }),
            CallOutcome::Proposal(p) => {
                json!({ "proposal_id": p.id, "summary": p.plan.summary, "approve_at": "/" })
            }
        },
    ))
}

/// Approve or reject: only the id travels, and the dispatcher applies the
/// input it stored when the change was proposed.
async fn decide(
    State(d): State<Dispatcher>,
    User(owner): User,
    Path((id, decision)): Path<(String, String)>,
) -> Result<Redirect, fusion_host_server::Error> {
    match decision.as_str() {
        "approve" => {
            // A conflict (the files changed since the plan) comes back as
            // an error, and the proposal is marked failed.
            d.approve(&owner, &id).await?;
        }
        _ => {
            d.reject(&owner, &id).await?;
        }
    }
    Ok(Redirect::to("/"))
}

/// Live events for the owner's pages. The dispatcher's channel carries
/// every owner's events: each is forwarded only to its owner.
async fn events(
    State(d): State<Dispatcher>,
    User(owner): User,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = tokio_stream_of(d.subscribe()).filter_map(move |event| {
        let mine = event.owner() == owner;
        async move { mine.then(|| Ok(Event::default().json_data(&event).unwrap_or_default())) }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The broadcast receiver as a stream; a page too slow to keep up skips
/// what it missed (and should reload what it shows).
fn tokio_stream_of(
    rx: tokio::sync::broadcast::Receiver<fusion_host_server::HostEvent>,
) -> impl Stream<Item = fusion_host_server::HostEvent> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => return Some((event, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
