//! The device authorization flow (RFC 8628) over real HTTP: the wire shapes
//! a standard OAuth client expects, each error, and the rules a person's
//! decision follows.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::Server;
use fusion_host_server::Error;
use serde_json::Value;

const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

async fn flow_server() -> Server {
    Server::with(|c| c.verification_uri = Some("https://app.example.com/device".into())).await
}

async fn post_form(server: &Server, route: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(route))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status == 200 || status >= 400 {
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "{route} answers must not be cached"
        );
    }
    (status, response.json().await.unwrap())
}

async fn request_code(server: &Server) -> Value {
    let (status, body) = post_form(
        server,
        "/device/code",
        &[
            ("client_id", "fusion-host"),
            ("name", "survey-laptop"),
            ("platform", "windows-x86_64"),
            ("host_version", "0.1.0"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn poll(server: &Server, device_code: &str) -> (u16, Value) {
    post_form(
        server,
        "/device/token",
        &[
            ("grant_type", GRANT),
            ("device_code", device_code),
            ("client_id", "fusion-host"),
        ],
    )
    .await
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

fn device_code(body: &Value) -> &str {
    body["device_code"].as_str().unwrap()
}

fn user_code(body: &Value) -> &str {
    body["user_code"].as_str().unwrap()
}

#[tokio::test]
async fn approve_then_the_next_poll_gets_a_token_once() {
    let server = flow_server().await;
    let code = request_code(&server).await;
    let user = user_code(&code);
    assert_eq!(user.len(), 9);
    assert!(
        user.bytes()
            .all(|b| b == b'-' || fusion_host_server::CODE_ALPHABET.contains(&b))
    );
    assert_eq!(code["verification_uri"], "https://app.example.com/device");
    assert_eq!(
        code["verification_uri_complete"],
        format!("https://app.example.com/device?user_code={user}")
    );
    assert_eq!(code["expires_in"], 900);
    assert_eq!(code["interval"], 5);
    assert_eq!(device_code(&code).len(), 64, "a 256-bit secret");

    let (status, body) = poll(&server, device_code(&code)).await;
    assert_eq!((status, error(&body)), (400, "authorization_pending"), "{body}");

    // What the /device page shows, looked up by the code typed in any case,
    // with or without its dash.
    let typed = user.replace('-', "").to_lowercase();
    let shown = server
        .dispatcher
        .device_authorization("alice", None, &typed)
        .await
        .unwrap();
    assert_eq!(shown.user_code, user);
    assert_eq!(shown.name, "survey-laptop");
    assert_eq!(shown.platform, "windows-x86_64");
    assert_eq!(shown.address.as_deref(), Some("127.0.0.1"));
    assert!(!shown.expired);

    server
        .dispatcher
        .approve_device("alice", None, user)
        .await
        .unwrap();
    server.clock.advance(Duration::from_secs(5));
    let (status, token) = poll(&server, device_code(&code)).await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "bearer");
    assert_eq!(token["owner"], "alice");
    let access = token["access_token"].as_str().unwrap();
    let device_id = token["device_id"].as_str().unwrap();
    assert!(access.starts_with(&format!("fh_{device_id}.")));

    // The device is alice's, and the token works on the device routes.
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device.name, "survey-laptop");
    let manifest = common::client(access)
        .put(server.url("/manifest"))
        .json(&common::manifest())
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), 204);

    // The device code is spent.
    server.clock.advance(Duration::from_secs(5));
    let (status, body) = poll(&server, device_code(&code)).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "{body}");
    assert_eq!(server.dispatcher.devices("alice").await.unwrap().len(), 1);
    // ...and so is the user code.
    let again = server.dispatcher.approve_device("alice", None, user).await;
    assert!(
        matches!(again, Err(Error::UserCodeDecided { status: "issued" })),
        "{again:?}"
    );
}

#[tokio::test]
async fn polling_too_fast_gets_slow_down_and_a_longer_interval() {
    let server = flow_server().await;
    let code = request_code(&server).await;
    let (_, first) = poll(&server, device_code(&code)).await;
    assert_eq!(error(&first), "authorization_pending");
    // No time passed: too soon.
    let (status, body) = poll(&server, device_code(&code)).await;
    assert_eq!((status, error(&body)), (400, "slow_down"), "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("10 s"),
        "{body}"
    );
    // The interval is now 10 s: 5 s later is still too soon...
    server.clock.advance(Duration::from_secs(5));
    let (_, body) = poll(&server, device_code(&code)).await;
    assert_eq!(error(&body), "slow_down", "{body}");
    // ...and after the (now 15 s) interval, pending again.
    server.clock.advance(Duration::from_secs(15));
    let (_, body) = poll(&server, device_code(&code)).await;
    assert_eq!(error(&body), "authorization_pending", "{body}");
}

#[tokio::test]
async fn deny_gives_access_denied_and_cannot_be_approved_later() {
    let server = flow_server().await;
    let code = request_code(&server).await;
    server
        .dispatcher
        .deny_device("alice", None, user_code(&code))
        .await
        .unwrap();
    let (status, body) = poll(&server, device_code(&code)).await;
    assert_eq!((status, error(&body)), (400, "access_denied"), "{body}");
    let late = server
        .dispatcher
        .approve_device("alice", None, user_code(&code))
        .await;
    assert!(
        matches!(late, Err(Error::UserCodeDecided { status: "denied" })),
        "{late:?}"
    );
    let (_, body) = poll(&server, device_code(&code)).await;
    assert_eq!(error(&body), "access_denied");
    assert!(server.dispatcher.devices("alice").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_expired_request_gives_expired_token_and_cannot_be_approved() {
    let server = flow_server().await;
    let code = request_code(&server).await;
    server.clock.advance(Duration::from_secs(15 * 60));
    let shown = server
        .dispatcher
        .device_authorization("alice", None, user_code(&code))
        .await
        .unwrap();
    assert!(shown.expired);
    let late = server
        .dispatcher
        .approve_device("alice", None, user_code(&code))
        .await;
    assert!(matches!(late, Err(Error::UserCodeExpired)), "{late:?}");
    let (status, body) = poll(&server, device_code(&code)).await;
    assert_eq!((status, error(&body)), (400, "expired_token"), "{body}");
}

#[tokio::test]
async fn malformed_requests_get_oauth_errors() {
    let server = flow_server().await;
    let (status, body) = post_form(&server, "/device/code", &[("client_id", "someone-else")]).await;
    assert_eq!((status, error(&body)), (401, "invalid_client"), "{body}");
    let (status, body) = post_form(&server, "/device/code", &[("client_id", "fusion-host")]).await;
    assert_eq!((status, error(&body)), (400, "invalid_request"), "{body}");
    assert!(
        body["error_description"].as_str().unwrap().contains("name"),
        "{body}"
    );

    let (status, body) = post_form(
        &server,
        "/device/token",
        &[("grant_type", "password"), ("client_id", "fusion-host")],
    )
    .await;
    assert_eq!((status, error(&body)), (400, "unsupported_grant_type"), "{body}");
    let (status, body) = post_form(
        &server,
        "/device/token",
        &[("grant_type", GRANT), ("client_id", "fusion-host")],
    )
    .await;
    assert_eq!((status, error(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = poll(&server, &"0".repeat(64)).await;
    assert_eq!((status, error(&body)), (400, "invalid_grant"), "{body}");

    // JSON instead of a form is a malformed request, in OAuth's shape too.
    let response = reqwest::Client::new()
        .post(server.url("/device/token"))
        .json(&serde_json::json!({ "grant_type": GRANT }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error(&body), "invalid_request", "{body}");
}

#[tokio::test]
async fn without_a_verification_page_the_flow_is_off() {
    let server = Server::start().await;
    let (status, body) = post_form(
        &server,
        "/device/code",
        &[
            ("client_id", "fusion-host"),
            ("name", "n"),
            ("platform", "p"),
            ("host_version", "v"),
        ],
    )
    .await;
    assert_eq!((status, error(&body)), (400, "unsupported_grant_type"), "{body}");
    assert!(body["error_description"].as_str().unwrap().contains("/devices"));
}

#[tokio::test]
async fn user_code_guesses_are_limited_per_address() {
    let server = Server::with(|c| {
        c.verification_uri = Some("https://app.example.com/device".into());
        c.enroll_per_address = 3;
    })
    .await;
    let code = request_code(&server).await;
    let attacker = Some(IpAddr::from([10, 0, 0, 9]));
    for _ in 0..3 {
        let guess = server
            .dispatcher
            .device_authorization("mallory", attacker, "BCDF-GHJK")
            .await;
        assert!(matches!(guess, Err(Error::UserCodeUnknown)), "{guess:?}");
    }
    // The right code from that address is refused too, for the window...
    let limited = server
        .dispatcher
        .approve_device("mallory", attacker, user_code(&code))
        .await;
    assert!(matches!(limited, Err(Error::RateLimited { .. })), "{limited:?}");
    // ...while the person at another address approves it.
    let person = Some(IpAddr::from([192, 168, 1, 20]));
    server
        .dispatcher
        .approve_device("alice", person, user_code(&code))
        .await
        .unwrap();
}

/// One account typing codes from many addresses (a botnet behind one
/// signed-in account) is bounded by the account; codes that are found give
/// their count back, so one address looks up a real code as often as needed.
#[tokio::test]
async fn user_code_lookups_are_limited_per_account_and_found_codes_are_free() {
    let server = Server::with(|c| {
        c.verification_uri = Some("https://app.example.com/device".into());
        c.enroll_per_address = 3;
    })
    .await;
    let code = request_code(&server).await;
    for i in 0..3 {
        let from = Some(IpAddr::from([10, 0, 1, i]));
        let guess = server
            .dispatcher
            .device_authorization("mallory", from, "BCDF-GHJK")
            .await;
        assert!(matches!(guess, Err(Error::UserCodeUnknown)), "{guess:?}");
    }
    let fresh = Some(IpAddr::from([10, 0, 2, 1]));
    let limited = server
        .dispatcher
        .device_authorization("mallory", fresh, "BCDF-GHJK")
        .await;
    assert!(matches!(limited, Err(Error::RateLimited { .. })), "{limited:?}");

    let office = Some(IpAddr::from([192, 0, 2, 1]));
    for _ in 0..12 {
        server
            .dispatcher
            .device_authorization("alice", office, user_code(&code))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn device_code_requests_are_limited_per_address() {
    let server = Server::with(|c| {
        c.verification_uri = Some("https://app.example.com/device".into());
        c.enroll_per_address = 2;
    })
    .await;
    request_code(&server).await;
    request_code(&server).await;
    let response = reqwest::Client::new()
        .post(server.url("/device/code"))
        .form(&[
            ("client_id", "fusion-host"),
            ("name", "n"),
            ("platform", "p"),
            ("host_version", "v"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(error(&body), "rate_limited", "{body}");
}
