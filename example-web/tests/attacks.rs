//! Attacks on the app as an outsider, another user, a holder of a token or a
//! device would make them; each one that once got through stays here.

use serde_json::{Value, json};

mod common;

use common::{App, User, hidden_csrf, unique_email};

/// A client that keeps cookies and does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Loads `/signin?next=…` as a browser would and signs in with the form it
/// got, `next` included; returns the page and the answer to the form.
async fn sign_in(app: &App, email: &str, next: &str) -> (String, reqwest::Response) {
    let client = browser();
    let page = client
        .get(format!("{}/signin", app.url))
        .query(&[("next", next)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "{next:?}");
    let html = page.text().await.unwrap();
    let r = client
        .post(format!("{}/signin", app.url))
        .form(&[
            ("email", email),
            ("password", "correct horse battery"),
            ("csrf", &hidden_csrf(&html)),
            ("next", next),
        ])
        .send()
        .await
        .unwrap();
    (html, r)
}

/// `next` after sign-in stays on this site, whatever browsers ignore in it,
/// and a header-breaking value is refused, not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_never_sends_the_person_elsewhere() {
    let app = App::start(None);
    let email = unique_email("redirect");
    let signup = browser();
    common::submit_credentials(&signup, &app.url, "signup", &email, "correct horse battery").await;
    for next in [
        "/\t/evil.example/x",
        "/\n/evil.example/x",
        "/\r\n/evil.example/x",
        "/\\evil.example",
        "//evil.example",
        " //evil.example",
        "/\u{0}/x",
        "/devices\r\nSet-Cookie: a=b",
    ] {
        let (html, r) = sign_in(&app, &email, next).await;
        assert!(!html.contains("evil.example"), "{next:?} is kept in the form");
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], "/devices", "{next:?}");
    }
    // A path on this site still works.
    let (_, r) = sign_in(&app, &email, "/device?user_code=WDJB-MJHT").await;
    assert_eq!(r.headers()["location"], "/device?user_code=WDJB-MJHT");
}

/// Names a device chooses and paths an agent chooses reach the activity
/// export as text, never as a spreadsheet formula.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_activity_export_holds_no_formulas() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "csv").await;
    let device = alice.pair_device().await;
    let (status, out) = alice
        .post(
            &format!("/api/devices/{}/rename", device.id),
            json!({ "name": "=HYPERLINK(\"http://evil.example\",\"x\")" }),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    for path in ["+1+1", "@SUM(A1)", "-2+3+cmd|' /C calc'!A0"] {
        alice
            .post(
                &format!("/api/devices/{}/calls", device.id),
                json!({ "tool": "stat", "input": { "path": path } }),
            )
            .await;
    }
    let text = alice.html("/api/activity?format=csv").await;
    let cells: Vec<&str> = text
        .lines()
        .skip(1)
        .flat_map(|line| line.split(','))
        .map(|cell| cell.trim_start_matches('"'))
        .collect();
    assert!(cells.len() > 3 * 10, "{text}");
    for cell in cells {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{cell:?} in {text}"
        );
    }
    assert!(
        text.contains("'=HYPERLINK") && text.contains("'+1+1") && text.contains("'@SUM"),
        "{text}"
    );
}

/// `DELETE /api/tokens/{id}` as `user`, with or without the CSRF token;
/// returns the status.
async fn revoke(user: &User, id: &str, with_csrf: bool) -> u16 {
    let mut request = user.client.delete(format!("{}/api/tokens/{id}", user.url));
    if with_csrf {
        request = request.header("x-csrf-token", &user.csrf);
    }
    request.send().await.unwrap().status().as_u16()
}

/// API tokens are listed, named, revoked and may expire; another user can
/// neither see nor revoke them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_are_listed_and_revoked() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "tokens").await;
    let bob = User::sign_up(&app, "tokens-bob").await;
    let (status, ci) = alice
        .post("/api/tokens", json!({ "name": "ci", "expires_in_days": 30 }))
        .await;
    assert_eq!(status, 200, "{ci}");
    assert!(ci["token"].as_str().unwrap().starts_with("fhu_"));
    assert!(ci["id"].as_str().unwrap().starts_with("tok_"));
    let (_, plain) = alice.post("/api/tokens", json!({})).await;
    assert_eq!(plain["name"], "API token");
    assert_eq!(plain["expires_at"], Value::Null);
    for bad in [
        json!({ "expires_in_days": 0 }),
        json!({ "name": "" }),
        json!({ "name": "a\u{7}b" }),
        json!({ "scope": "all" }),
    ] {
        let (status, err) = alice.post("/api/tokens", bad.clone()).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_input")),
            "{bad}: {err}"
        );
    }

    // Using a token stamps it.
    let use_token = |token: &str| {
        reqwest::Client::new()
            .get(format!("{}/api/devices", app.url))
            .bearer_auth(token.to_string())
            .send()
    };
    assert_eq!(
        use_token(ci["token"].as_str().unwrap()).await.unwrap().status(),
        200
    );
    let (_, list) = alice.get("/api/tokens").await;
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{list}");
    let listed = tokens.iter().find(|t| t["id"] == ci["id"]).unwrap();
    assert_eq!(listed["name"], "ci");
    assert!(
        listed["last_used_at"].is_i64() && listed["expires_at"].is_i64(),
        "{listed}"
    );
    assert!(
        listed.get("token").is_none() && !list.to_string().contains("fhu_"),
        "{list}"
    );
    assert!(
        alice
            .html("/devices")
            .await
            .contains(&format!("data-token=\"{}\"", ci["id"].as_str().unwrap()))
    );

    // Bob sees none of them and revokes none.
    let (_, theirs) = bob.get("/api/tokens").await;
    assert_eq!(theirs["tokens"], json!([]));
    assert_eq!(revoke(&bob, ci["id"].as_str().unwrap(), true).await, 404);
    // Without the CSRF token a browser session revokes nothing.
    assert_eq!(revoke(&alice, ci["id"].as_str().unwrap(), false).await, 403);
    assert_eq!(revoke(&alice, ci["id"].as_str().unwrap(), true).await, 204);
    let r = use_token(ci["token"].as_str().unwrap()).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        use_token(plain["token"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(revoke(&alice, ci["id"].as_str().unwrap(), true).await, 404);
}

/// An MCP session answers only to the token that opened it: another user's
/// token with a leaked session id gets 404 for calls and for DELETE; and
/// revoking the token ends the session at once, its open stream included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_session_is_bound_to_its_token() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "mcp-owner").await;
    let bob = User::sign_up(&app, "mcp-other").await;
    let (_, token) = alice.post("/api/tokens", json!({ "name": "agent" })).await;
    let (_, bob_token) = bob.post("/api/tokens", json!({})).await;
    let (token_id, token) = (token["id"].as_str().unwrap(), token["token"].as_str().unwrap());
    let bob_token = bob_token["token"].as_str().unwrap();
    let http = reqwest::Client::new();
    let rpc = |token: &str, session: Option<&str>, body: Value| {
        let mut r = http
            .post(format!("{}/mcp", app.url))
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(token.to_string())
            .json(&body);
        if let Some(s) = session {
            r = r.header("mcp-session-id", s);
        }
        r.send()
    };
    let init = json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "t", "version": "0" } } });
    let r = rpc(token, None, init).await.unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
    assert!(
        rpc(token, Some(&session), initialized)
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" });

    let r = rpc(bob_token, Some(&session), list.clone()).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .delete(format!("{}/mcp", app.url))
        .bearer_auth(bob_token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = rpc(token, Some(&session), list.clone()).await.unwrap();
    assert_eq!(r.status(), 200, "the owner's session lives on");
    assert!(r.text().await.unwrap().contains("list_devices"));

    // Its open stream ends when the token is revoked.
    let stream = http
        .get(format!("{}/mcp", app.url))
        .header("accept", "text/event-stream")
        .bearer_auth(token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let r = alice
        .client
        .delete(format!("{}/api/tokens/{token_id}", app.url))
        .header("x-csrf-token", &alice.csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), stream.bytes()).await;
    assert!(
        ended.is_ok(),
        "the session's stream is still open after the revoke"
    );
    let (_, second) = alice.post("/api/tokens", json!({})).await;
    let r = rpc(second["token"].as_str().unwrap(), Some(&session), list)
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the session is gone, whoever asks");
}

/// Typing wrong codes on `/device` is limited (per address and per account)
/// and the 429 page says when to try again; a real code is never used up by
/// looking at it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_page_limits_guesses_and_says_when_to_retry() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "guesser").await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let r = alice
            .client
            .get(format!("{}/device?user_code=BCDF-GHJK", app.url))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
            assert!(r.text().await.unwrap().contains("role=\"alert\""));
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 1, "{statuses:?}");
}

/// A scripted device: enrolls over HTTP with a fresh code of `user`'s and
/// returns its token.
async fn scripted_device(app: &App, user: &User) -> String {
    let (_, code) = user.post("/api/pairing-codes", json!({})).await;
    let enrolled: Value = reqwest::Client::new()
        .post(format!("{}/api/host/enroll", app.url))
        .header("fusion-host-protocol", "1")
        .json(&json!({ "code": code["code"], "name": "script", "platform": "linux", "host_version": "0" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    enrolled["token"].as_str().expect("a device token").to_string()
}

/// Bad input gets a 4xx with a stable code in the route's own format, never
/// a 500 or a plain-text body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_in_kind() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "bad-input").await;
    for id in [
        format!("blob_{}", "a".repeat(5000)),
        format!("blob_{}", "a".repeat(1000)),
        "blob_".to_string(),
        "blob_%2e%2e".to_string(),
    ] {
        let (status, err) = alice.get(&format!("/api/blobs/{id}")).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (404, Some("blob_not_found")),
            "{err}"
        );
        assert!(err["message"].as_str().unwrap().len() < 300, "{err}");
    }

    let token = scripted_device(&app, &alice).await;
    let device = |method: reqwest::Method, path: &str| {
        reqwest::Client::new()
            .request(method, format!("{}/api/host{path}", app.url))
            .header("fusion-host-protocol", "1")
            .bearer_auth(&token)
    };
    for name in [".", "..", " .. ", "a/b", "..\\x"] {
        let r = device(reqwest::Method::POST, "/uploads")
            .json(&json!({ "name": name, "size": 3 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name:?}");
        let err: Value = r.json().await.unwrap();
        assert_eq!(err["code"], "invalid_request", "{name:?}: {err}");
    }
    let upload: Value = device(reqwest::Method::POST, "/uploads")
        .json(&json!({ "name": "ok.txt", "size": 3 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = upload["upload_id"].as_str().expect("an upload id");
    for query in ["?offset=-1", "?offset=abc", ""] {
        let r = device(reqwest::Method::PUT, &format!("/uploads/{id}{query}"))
            .body("abc")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let err: Value = r.json().await.expect("a JSON body");
        assert_eq!(err["code"], "invalid_request", "{query}: {err}");
    }

    // /mcp answers in JSON-RPC.
    let (_, mcp_token) = alice.post("/api/tokens", json!({})).await;
    let mcp = |body: String, content_type: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/mcp", app.url))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", content_type)
            .bearer_auth(mcp_token["token"].as_str().unwrap())
            .body(body)
            .send()
    };
    // Past the 4 MiB a message may hold, before any of it is parsed.
    let oversized = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(5 << 20)
    );
    for (body, content_type, status, code) in [
        ("{", "application/json", 400, -32700),
        (oversized.as_str(), "application/json", 413, -32600),
        (
            "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]",
            "application/json",
            400,
            -32600,
        ),
        ("{\"hello\":1}", "application/json", 400, -32600),
        (
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
            "text/plain",
            415,
            -32600,
        ),
    ] {
        let shown = &body[..body.len().min(60)];
        let r = mcp(body.to_string(), content_type).await.unwrap();
        assert_eq!(r.status(), status, "{shown}");
        let err: Value = r.json().await.expect("a JSON-RPC error");
        assert_eq!(err["jsonrpc"], "2.0", "{err}");
        assert_eq!(err["error"]["code"], code, "{shown}: {err}");
    }
}
