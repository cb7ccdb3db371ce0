//! The app over HTTP, as a real process: accounts, CSRF, the JSON API with a
//! real device, approvals, revocation, owner isolation. Every flow runs on
//! SQLite, and on PostgreSQL when `FUSION_TEST_POSTGRES_URL` is set.

mod common;

use common::{App, User, hidden_csrf, submit_credentials};
use serde_json::json;

fn postgres() -> Option<String> {
    match std::env::var("FUSION_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped on PostgreSQL: FUSION_TEST_POSTGRES_URL is not set (the SQLite run still ran)"
            );
            None
        }
    }
}

/// Runs each flow as two tests, `FLOW::sqlite` and `FLOW::postgres` (the
/// latter skipped, saying so, without `FUSION_TEST_POSTGRES_URL`).
macro_rules! on_both_databases {
    ($($flow:ident),* $(,)?) => {$(
        mod $flow {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$flow(&App::start(None)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(url) = super::postgres() else { return };
                super::$flow(&App::start(Some(&url))).await;
            }
        }
    )*};
}

on_both_databases!(
    activity_trail,
    device_login,
    accounts_and_csrf,
    api_round_trip_and_isolation,
    pages_render,
    concurrent_pairing_and_calls
);

async fn accounts_and_csrf(app: &App) {
    let alice = User::sign_up(app, "alice").await;
    // Every state change made with the cookie needs the session's CSRF token.
    let r = alice
        .client
        .post(format!("{}/api/pairing-codes", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "csrf");
    let r = alice
        .client
        .post(format!("{}/api/pairing-codes", app.url))
        .header("x-csrf-token", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, minted) = alice.post("/api/pairing-codes", json!({})).await;
    assert_eq!(status, 200);
    let expires_at = minted["expires_at"].as_str().expect("expires_at is a string");
    assert!(humantime::parse_rfc3339(expires_at).is_ok(), "{minted}");

    // Sign-in and sign-up forms need their own token too.
    let r = reqwest::Client::new()
        .post(format!("{}/signin", app.url))
        .form(&[
            ("email", alice.email.as_str()),
            ("password", "correct horse battery"),
            ("csrf", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Sign out, then sign in again; a wrong password is refused.
    let page = alice.html("/devices").await;
    let r = alice
        .client
        .post(format!("{}/signout", app.url))
        .form(&[("csrf", hidden_csrf(&page))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.url().path(), "/signin");
    assert_eq!(alice.get("/api/session").await.0, 401);
    let r = submit_credentials(&alice.client, &app.url, "signin", &alice.email, "wrong password!").await;
    assert_eq!(r.status(), 401);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("the email or the password is wrong")
    );
    let r = submit_credentials(
        &alice.client,
        &app.url,
        "signin",
        &alice.email,
        "correct horse battery",
    )
    .await;
    assert_eq!(r.url().path(), "/devices");
    assert_eq!(alice.get("/api/session").await.0, 200);

    // Signing up twice with one email is refused plainly.
    let stranger = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = submit_credentials(&stranger, &app.url, "signup", &alice.email, "another password").await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("an account with this email exists")
    );
}

async fn api_round_trip_and_isolation(app: &App) {
    let alice = User::sign_up(app, "alice").await;
    let bob = User::sign_up(app, "bob").await;
    let device = alice.pair_device().await;
    std::fs::write(device.dir.path().join("notes.txt"), "draft\n").unwrap();

    let (status, devices) = alice.get("/api/devices").await;
    assert_eq!(status, 200);
    assert_eq!(devices["devices"][0]["online"], true);
    assert_eq!(
        devices["devices"][0]["manifest"]["tools"]
            .as_array()
            .unwrap()
            .len(),
        19
    );

    // One device: its whole manifest (schemas included), its owner only.
    let one = format!("/api/devices/{}", device.id);
    let (status, detail) = alice.get(&one).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["device"]["id"], device.id.as_str());
    assert_eq!(detail["device"]["online"], true);
    let tools = detail["manifest"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 19);
    assert!(tools.iter().all(|t| t["inputSchema"].is_object()), "{detail}");
    let (status, err) = bob.get(&one).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("device_not_found")));

    let calls = format!("/api/devices/{}/calls", device.id);
    let (status, out) = alice
        .post(&calls, json!({ "tool": "list_directory", "input": {} }))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["kind"], "output");
    assert_eq!(out["output"]["entries"][0]["path"], "notes.txt");

    let (status, err) = alice
        .post(
            &calls,
            json!({ "tool": "read_file", "input": { "path": "../secret" } }),
        )
        .await;
    assert_eq!((status, err["code"].as_str()), (422, Some("outside_scope")));

    let (_, proposal) = alice
        .post(
            &calls,
            json!({ "tool": "write_file", "input": { "path": "notes.txt", "content": "final\n" } }),
        )
        .await;
    assert_eq!(proposal["kind"], "proposal");
    assert!(proposal["plan"]["diff"].as_str().unwrap().contains("+final"));
    let (_, pending) = alice.get("/api/proposals?status=pending").await;
    assert_eq!(pending["proposals"].as_array().unwrap().len(), 1);

    // Bob sees nothing of Alice's and reaches nothing.
    assert_eq!(bob.get("/api/devices").await.1["devices"], json!([]));
    assert_eq!(bob.get("/api/proposals").await.1["proposals"], json!([]));
    assert_eq!(bob.get("/api/calls").await.1["calls"], json!([]));
    let (status, err) = bob.post(&calls, json!({ "tool": "list_directory" })).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("device_not_found")));
    let decide = json!({ "proposal_id": proposal["id"], "decision": "approve" });
    let (status, err) = bob.post("/api/host/approve", decide.clone()).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("proposal_not_found")));
    let (status, _) = bob
        .post(&format!("/api/devices/{}/revoke", device.id), json!({}))
        .await;
    assert_eq!(status, 404);
    let r = bob
        .client
        .get(format!("{}/devices/{}", app.url, device.id))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("notes.txt")).unwrap(),
        "draft\n"
    );

    // Alice approves: the stored input is applied.
    let (status, applied) = alice.post("/api/host/approve", decide.clone()).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["status"], "applied");
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("notes.txt")).unwrap(),
        "final\n"
    );
    let (status, err) = alice.post("/api/host/approve", decide).await;
    assert_eq!((status, err["code"].as_str()), (409, Some("proposal_resolved")));

    // Reject another.
    let (_, p) = alice
        .post(
            &calls,
            json!({ "tool": "delete", "input": { "path": "notes.txt" } }),
        )
        .await;
    let (_, rejected) = alice
        .post(
            "/api/host/approve",
            json!({ "proposal_id": p["id"], "decision": "reject" }),
        )
        .await;
    assert_eq!(rejected["status"], "rejected");
    assert!(device.dir.path().join("notes.txt").exists());

    // The activity log has it all, newest first.
    let (_, log) = alice.get("/api/calls").await;
    let modes: Vec<&str> = log["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["plan", "apply", "plan", "run", "run"]);

    // An API token works without cookies or CSRF, for scripts and the agent loop.
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let r = reqwest::Client::new()
        .post(format!("{}{calls}", app.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .json(&json!({ "tool": "stat", "input": { "path": "notes.txt" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Revoke: the device stops with the re-pair message.
    let (status, _) = alice
        .post(&format!("/api/devices/{}/revoke", device.id), json!({}))
        .await;
    assert_eq!(status, 204);
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), device.host.join())
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("pair it again"), "{e}");
    // The page shows it as revoked, apart from the working devices.
    let html = alice.html("/devices").await;
    let revoked = html
        .split("table class=\"devices revoked\"")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .expect("a revoked table");
    assert!(
        revoked.contains("badge revoked") && revoked.contains("test-laptop"),
        "{html}"
    );
    assert!(
        !revoked.contains("data-revoke="),
        "no Revoke button on a revoked device: {revoked}"
    );
}

async fn pages_render(app: &App) {
    let alice = User::sign_up(app, "alice").await;
    let html = alice.html("/devices").await;
    assert!(html.contains("No devices yet — add one"));
    assert!(html.contains("Nothing to approve"));
    // A strict Content-Security-Policy holds: no inline script or style, the
    // page's own are files.
    let r = alice
        .client
        .get(format!("{}/devices", app.url))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("style-src 'self';") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    assert!(!page.contains("<style"), "inline style");
    for script in page.split("<script").skip(1) {
        assert!(
            script.starts_with(" type=\"module\" src=\"/assets/js/main.js?v=")
                || script.starts_with(" type=\"application/json\""),
            "inline script: {}",
            &script[..script.len().min(80)]
        );
    }
    // The script's modules and the styles: cached, and asked again with
    // their ETag, which answers 304 until they change.
    let http = reqwest::Client::new();
    for (asset, kind) in [
        ("js/main.js", "text/javascript"),
        ("js/runner.js", "text/javascript"),
        ("app.css", "text/css"),
    ] {
        let url = format!("{}/assets/{asset}", app.url);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with(kind));
        assert_eq!(r.headers()["cache-control"], "no-cache");
        let etag = r.headers()["etag"].clone();
        let again = http
            .get(&url)
            .header("if-none-match", etag.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{asset}");
        assert_eq!(again.headers()["etag"], etag);
        let stale = http
            .get(&url)
            .header("if-none-match", "\"old\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), 200, "{asset}");
    }
    let missing = reqwest::get(format!("{}/assets/js/nothing.js", app.url))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let device = alice.pair_device().await;
    let html = alice.html("/devices").await;
    assert!(html.contains("test-laptop") && html.contains("badge online"));
    // The row links to the runner, and the device can be renamed; a second
    // machine of the same name is told apart.
    assert!(html.contains(&format!("/devices/{}#runner", device.id)));
    let second = alice.pair_device().await;
    let (_, devices) = alice.get("/api/devices").await;
    assert_eq!(devices["devices"][1]["name"], "test-laptop (2)");
    let (status, renamed) = alice
        .post(
            &format!("/api/devices/{}/rename", second.id),
            json!({ "name": "north site" }),
        )
        .await;
    assert_eq!(
        (status, renamed["name"].as_str()),
        (200, Some("north site")),
        "{renamed}"
    );
    assert!(alice.html("/devices").await.contains("north site"));
    let html = alice
        .client
        .get(format!("{}/devices/{}", app.url, device.id))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Run a tool") && html.contains("list_directory"));
    // A device that is not yours, or not at all, is a page that says so.
    let r = alice
        .client
        .get(format!("{}/devices/dev_nonexistent", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    assert!(
        html.contains("No such device") && html.contains("dev_nonexistent"),
        "{html}"
    );
    // Unauthenticated pages redirect to sign-in; the health check answers.
    let r = reqwest::Client::new()
        .get(format!("{}/devices", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.url().path(), "/signin");
    assert_eq!(
        reqwest::get(format!("{}/health", app.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
}

/// `fusion-host login` against the app: the link sends a signed-out person
/// through sign-in and back, the page shows what is asking, Approve pairs
/// the device (named by the owner's email), Deny refuses, a code is decided
/// once.
async fn device_login(app: &App) {
    use fusion_host::{Error, Http, request_login, wait_for_approval};
    let no_wait = |_| tokio::time::sleep(std::time::Duration::from_millis(20));
    let http = Http::new(&app.url, None, "test").unwrap();
    let request = request_login(&http, "site-tablet", "0.1.0").await.unwrap();
    assert_eq!(request.verification_uri, format!("{}/device", app.url));
    let link = request.link().to_string();
    assert!(
        link.ends_with(&format!("/device?user_code={}", request.user_code)),
        "{link}"
    );

    // Signed out, the link goes through sign-up and comes back to the page.
    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = client.get(&link).send().await.unwrap();
    assert_eq!(r.url().path(), "/signin");
    let next = r
        .url()
        .query_pairs()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    assert_eq!(next, format!("/device?user_code={}", request.user_code));
    let mut signup_url = reqwest::Url::parse(&format!("{}/signup", app.url)).unwrap();
    signup_url.query_pairs_mut().append_pair("next", &next);
    let signup = client.get(signup_url).send().await.unwrap().text().await.unwrap();
    let email = common::unique_email("approver");
    let fields = [
        ("email", email.as_str()),
        ("password", "correct horse battery"),
        ("csrf", &hidden_csrf(&signup)),
        ("next", &next),
    ];
    let r = client
        .post(format!("{}/signup", app.url))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(r.url().path(), "/device");
    let page = r.text().await.unwrap();
    assert!(
        page.contains("site-tablet") && page.contains(&request.user_code),
        "{page}"
    );
    assert!(page.contains("127.0.0.1") && page.contains("Approve") && page.contains("Deny"));

    // Approving needs the session's CSRF token.
    let decide = |decision: &'static str, code: String, csrf: String| {
        let client = client.clone();
        let url = format!("{}/device", app.url);
        async move {
            let r = client
                .post(url)
                .form(&[
                    ("user_code", code.as_str()),
                    ("csrf", csrf.as_str()),
                    ("decision", decision),
                ])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, _) = decide("approve", request.user_code.clone(), "forged".into()).await;
    assert_eq!(status, 403);
    let csrf = hidden_csrf(&page);
    let (status, html) = decide("approve", request.user_code.clone(), csrf.clone()).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("✓ Device approved"), "{html}");
    let credentials = wait_for_approval(&http, &app.url, "site-tablet", &request, no_wait)
        .await
        .unwrap();
    assert_eq!(credentials.owner_label.as_deref(), Some(email.as_str()));
    assert_eq!(credentials.owner_display(), email);
    // Decided once.
    let (status, html) = decide("deny", request.user_code.clone(), csrf.clone()).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("already"), "{html}");

    // Deny: the device hears access_denied, and nothing is paired.
    let denied = request_login(&http, "stranger", "0.1.0").await.unwrap();
    let (status, html) = decide("deny", denied.user_code.clone(), csrf.clone()).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("Device denied"), "{html}");
    let refused = wait_for_approval(&http, &app.url, "stranger", &denied, no_wait).await;
    assert!(matches!(refused, Err(Error::LoginDenied)), "{refused:?}");

    // A wrong code is a page that says so, with the form to try again.
    let r = client
        .get(format!("{}/device?user_code=BCDF-GHJK", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(html.contains("no device is asking with that code") && html.contains("user_code"));
    let (status, devices) = {
        let r = client
            .get(format!("{}/api/devices", app.url))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
    };
    assert_eq!(status, 200);
    let names: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["site-tablet"]);
}

/// The activity log as an audit trail: who asked (a person or an API
/// token), the paths, the outcome, who approved or rejected; filters,
/// cursor paging that visits every row once, CSV and JSON export.
async fn activity_trail(app: &App) {
    let alice = User::sign_up(app, "alice").await;
    let bob = User::sign_up(app, "bob").await;
    let device = alice.pair_device().await;
    std::fs::write(device.dir.path().join("notes.txt"), "draft\n").unwrap();
    let calls = format!("/api/devices/{}/calls", device.id);
    let (status, _) = alice
        .post(
            &calls,
            json!({ "tool": "read_file", "input": { "path": "notes.txt" } }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = alice
        .post(
            &calls,
            json!({ "tool": "read_file", "input": { "path": "../outside.txt" } }),
        )
        .await;
    assert_eq!(status, 422);
    let propose = |content: &'static str| {
        alice.post(
            &calls,
            json!({ "tool": "write_file", "input": { "path": "plan.txt", "content": content } }),
        )
    };
    let (_, rejected) = propose("no\n").await;
    let (status, _) = alice
        .post(
            "/api/host/approve",
            json!({ "proposal_id": rejected["id"], "decision": "reject" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, approved) = propose("yes\n").await;
    let (status, _) = alice
        .post(
            "/api/host/approve",
            json!({ "proposal_id": approved["id"], "decision": "approve" }),
        )
        .await;
    assert_eq!(status, 200);
    let (_, token) = alice.post("/api/tokens", json!({})).await;
    let r = reqwest::Client::new()
        .post(format!("{}{calls}", app.url))
        .bearer_auth(token["token"].as_str().unwrap())
        .json(&json!({ "tool": "stat", "input": { "path": "notes.txt" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (status, page) = alice.get("/api/activity").await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().unwrap();
    // stat, apply, plan (approved), plan (rejected), refused read, read.
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["tool"].as_str().unwrap(),
                e["mode"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("stat", "run", "ok"),
            ("write_file", "apply", "ok"),
            ("write_file", "plan", "ok"),
            ("write_file", "plan", "rejected"),
            ("read_file", "run", "refused"),
            ("read_file", "run", "ok"),
        ],
        "{page}"
    );
    assert_eq!(entries[0]["requested_by"], format!("{} (API token)", alice.email));
    assert_eq!(entries[1]["requested_by"], alice.email.as_str());
    assert_eq!(entries[1]["paths"], json!(["plan.txt"]));
    assert_eq!(entries[1]["decision"]["decided_by"], alice.email.as_str());
    assert_eq!(entries[3]["decision"]["status"], "rejected");
    assert_eq!(entries[3]["decision"]["decided_by"], alice.email.as_str());
    assert!(entries[3]["decision"]["decided_at"].is_string());
    assert_eq!(entries[4]["error_code"], "outside_scope");
    assert_eq!(entries[4]["paths"], json!(["../outside.txt"]));
    assert_eq!(entries[5]["device_name"], "test-laptop");
    assert!(page["next_cursor"].is_null());

    // Filters.
    let (_, only) = alice.get("/api/activity?outcome=rejected").await;
    assert_eq!(only["entries"].as_array().unwrap().len(), 1);
    assert_eq!(only["entries"][0]["proposal_id"], rejected["id"]);
    let (_, refused) = alice
        .get(&format!("/api/activity?outcome=refused&device={}", device.id))
        .await;
    assert_eq!(refused["entries"].as_array().unwrap().len(), 1);
    let (_, none) = alice.get("/api/activity?device=dev_other").await;
    assert!(none["entries"].as_array().unwrap().is_empty());
    let (status, err) = alice.get("/api/activity?outcome=maybe").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_query")),
        "{err}"
    );

    // Paging two rows at a time visits every row once, in order.
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("/api/activity?limit=2&cursor={c}"),
            None => "/api/activity?limit=2".into(),
        };
        let (status, page) = alice.get(&url).await;
        assert_eq!(status, 200, "{page}");
        ids.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["call_id"].clone()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    let all: Vec<_> = entries.iter().map(|e| e["call_id"].clone()).collect();
    assert_eq!(ids, all);
    for limit in [0, 10_001] {
        let (status, err) = alice.get(&format!("/api/activity?limit={limit}")).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (400, Some("invalid_input")),
            "{err}"
        );
    }
    let (status, err) = alice.get("/api/activity?cursor=nonsense").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some("invalid_input")),
        "{err}"
    );

    // CSV export.
    let r = alice
        .client
        .get(format!("{}/api/activity?format=csv&limit=3", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(r.headers().contains_key("x-next-cursor"));
    let text = r.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("at,requested_by,device_id,device,tool,mode,paths,outcome"));
    assert!(lines[2].contains("write_file,apply,plan.txt,ok"), "{text}");

    // Another user sees none of it.
    let (_, theirs) = bob.get("/api/activity").await;
    assert!(theirs["entries"].as_array().unwrap().is_empty());
    // And the page shows the trail.
    let html = alice.html("/devices?outcome=rejected").await;
    assert!(
        html.contains("rejected by") && html.contains(&alice.email),
        "{html}"
    );
}

/// A device uploads a file by handle; its owner downloads it from the
/// app, nobody else can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_files_are_their_owners_to_download() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "alice").await;
    let bob = User::sign_up(&app, "bob").await;
    let device = alice.pair_device().await;
    let content = "E57 stand-in\n".repeat(1000);
    std::fs::write(device.dir.path().join("scan.e57"), &content).unwrap();
    let (status, out) = alice
        .post(
            &format!("/api/devices/{}/calls", device.id),
            json!({ "tool": "upload", "input": { "path": "scan.e57" } }),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let blob = out["output"]["blob_id"].as_str().unwrap();
    assert_eq!(out["output"]["size"], content.len());
    let r = alice
        .client
        .get(format!("{}/api/blobs/{blob}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("scan.e57")
    );
    assert_eq!(r.text().await.unwrap(), content);

    // A page a device uploads, under a name no header can quote as is, is a
    // download too: never rendered in the app's origin.
    let name = "report\u{1}\"é.html";
    std::fs::write(
        device.dir.path().join(name),
        "<script>fetch('/api/session')</script>",
    )
    .unwrap();
    let (status, out) = alice
        .post(
            &format!("/api/devices/{}/calls", device.id),
            json!({ "tool": "upload", "input": { "path": name } }),
        )
        .await;
    assert_eq!(status, 200, "{out}");
    let page = out["output"]["blob_id"].as_str().unwrap();
    let r = alice
        .client
        .get(format!("{}/api/blobs/{page}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
    assert_eq!(
        header("content-disposition"),
        "attachment; filename=\"report___.html\"; filename*=UTF-8''report%01%22%C3%A9.html"
    );
    assert_eq!(header("content-type"), "application/octet-stream");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("content-security-policy"), "sandbox; default-src 'none'");

    let (status, err) = bob.get(&format!("/api/blobs/{blob}")).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("blob_not_found")),
        "{err}"
    );
}

/// The README's first command: `--demo` starts the app with an account and a
/// connected device on a seeded folder, and stops cleanly on SIGTERM.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_mode_is_ready_to_use() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(common::BIN)
        .args(["--demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| l.unwrap())
            .take_while(|l| !l.starts_with("Ctrl-C"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let field = |label: &str| {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    let url = field("open").trim_end_matches("/devices").to_string();
    let credentials = field("sign in");
    let (email, password) = credentials.split_once(" / ").unwrap();
    assert!(
        field("device").contains("'demo-laptop' is connected"),
        "{lines:?}"
    );

    let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let r = submit_credentials(&client, &url, "signin", email, password).await;
    assert_eq!(r.url().path(), "/devices");
    let session: serde_json::Value = client
        .get(format!("{url}/api/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let devices: serde_json::Value = client
        .get(format!("{url}/api/devices"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device = &devices["devices"][0];
    assert_eq!(
        (device["name"].as_str(), device["online"].as_bool()),
        (Some("demo-laptop"), Some(true))
    );
    let grep = client
        .post(format!(
            "{url}/api/devices/{}/calls",
            device["id"].as_str().unwrap()
        ))
        .header("x-csrf-token", session["csrf"].as_str().unwrap())
        .json(&json!({ "tool": "grep", "input": { "pattern": "TODO" } }))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(grep["output"]["matches"][0]["path"], "notes/todo.txt");

    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Every `/api` and device route answers a malformed request with JSON
/// `{code, message}` and a stable code, never axum's plain text or an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_code_and_message_on_every_route() {
    let app = App::start(None);
    let alice = User::sign_up(&app, "alice").await;
    // Just over each limit (2 MB for the app's API, 8 MiB for device
    // routes): far more, and the server closes the socket mid-upload.
    let over = |limit: usize| format!("{{\"tool\": \"{}\"}}", "x".repeat(limit + 1024));
    let (big, bigger) = (over(2 * 1024 * 1024), over(8 * 1024 * 1024));
    // (method, path, content type, body, status, code)
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, &'a str);
    let table: Vec<Row<'_>> = vec![
        (
            "POST",
            "/api/devices/dev_x/calls",
            Some("application/json"),
            "{not json".into(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/devices/dev_x/calls",
            Some("application/json"),
            r#"{"tool":"stat","nope":1}"#.into(),
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/api/devices/dev_x/calls",
            Some("application/json"),
            r#"{"input":{}}"#.into(),
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/api/devices/dev_x/calls",
            None,
            r#"{"tool":"stat"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/devices/dev_x/calls",
            Some("application/json"),
            big,
            413,
            "too_large",
        ),
        (
            "POST",
            "/api/devices/%FF/calls",
            Some("application/json"),
            r#"{"tool":"stat"}"#.into(),
            400,
            "invalid_path",
        ),
        (
            "POST",
            "/api/host/approve",
            Some("application/json"),
            "[]".into(),
            422,
            "invalid_input",
        ),
        (
            "POST",
            "/api/host/approve",
            Some("text/plain"),
            "{}".into(),
            415,
            "unsupported_media_type",
        ),
        (
            "GET",
            "/api/proposals?status=a&status=b",
            None,
            String::new(),
            400,
            "invalid_query",
        ),
        (
            "GET",
            "/api/proposals?status=sideways",
            None,
            String::new(),
            400,
            "invalid_input",
        ),
        (
            "GET",
            "/api/nothing-here",
            None,
            String::new(),
            404,
            "route_not_found",
        ),
        (
            "DELETE",
            "/api/devices",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/pairing-codes",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/host/nothing-here",
            None,
            String::new(),
            404,
            "route_not_found",
        ),
        (
            "GET",
            "/api/host/enroll",
            None,
            String::new(),
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/host/enroll",
            Some("application/json"),
            "{".into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/host/enroll",
            None,
            "{}".into(),
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/api/host/enroll",
            Some("application/json"),
            bigger,
            413,
            "too_large",
        ),
        (
            "PUT",
            "/api/host/manifest",
            Some("application/json"),
            "{}".into(),
            401,
            "token_unknown",
        ),
        (
            "POST",
            "/api/host/result",
            Some("application/json"),
            "{}".into(),
            401,
            "token_unknown",
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, content_type, body, status, code) in table {
        let mut request = alice
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.url))
            .header("x-csrf-token", &alice.csrf)
            .body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let got_status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        let got_code = json.as_ref().and_then(|j| j["code"].as_str()).unwrap_or("");
        let message = json.as_ref().and_then(|j| j["message"].as_str()).unwrap_or("");
        if (got_status, got_code) != (status, code) || message.is_empty() {
            failures.push(format!("{method} {path}: {got_status} {text:.200}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Ctrl-C with a `/devices` tab open: the live-event stream ends, so the
/// server stops instead of waiting for the tab to close.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_event_streams() {
    use futures_util::StreamExt;
    let mut app = App::start(None);
    let alice = User::sign_up(&app, "alice").await;
    let events = alice
        .client
        .get(format!("{}/events", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let mut body = events.bytes_stream();
    let status = tokio::task::spawn_blocking(move || {
        let status = app.terminate(std::time::Duration::from_secs(20));
        (app, status)
    });
    // The stream ends (the server closed it) rather than hanging.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    let (_app, status) = status.await.unwrap();
    assert!(ended.is_ok(), "the event stream stayed open after SIGTERM");
    let status = status.expect("the server did not stop with a /devices tab open");
    assert!(status.success(), "{status:?}");
}

/// Pairings and calls at once: the pool has several connections, and a
/// pairing's compare-and-set must not fail under a concurrent writer.
async fn concurrent_pairing_and_calls(app: &App) {
    let alice = User::sign_up(app, "alice").await;
    let device = alice.pair_device().await;
    let calls = format!("/api/devices/{}/calls", device.id);
    let mut codes = Vec::new();
    for _ in 0..8 {
        let (status, minted) = alice.post("/api/pairing-codes", json!({})).await;
        assert_eq!(status, 200);
        codes.push(minted["code"].as_str().unwrap().to_string());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for code in codes {
        let url = app.url.clone();
        tasks.spawn(async move {
            let http = fusion_host::Http::new(&url, None, "test").unwrap();
            fusion_host::enroll(&http, &url, &code, "laptop", "test")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
    // Forty calls at once, beside the pairings.
    let mut calling = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (client, url, csrf) = (
            alice.client.clone(),
            format!("{}{calls}", app.url),
            alice.csrf.clone(),
        );
        calling.spawn(async move {
            let r = client
                .post(url)
                .header("x-csrf-token", csrf)
                .json(&json!({ "tool": "stat", "input": { "path": "." } }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        });
    }
    let mut answered = 0;
    for (status, out) in calling.join_all().await {
        assert_eq!(status, 200, "{out}");
        answered += 1;
    }
    for result in tasks.join_all().await {
        result.expect("every pairing succeeds");
    }
    let (_, devices) = alice.get("/api/devices").await;
    assert_eq!(devices["devices"].as_array().unwrap().len(), 9);
    // Every call is in the log (written in batches, read back in full).
    let (_, log) = alice.get("/api/calls").await;
    assert!(log["calls"].as_array().unwrap().len() >= answered, "{log}");
}

/// The call log is written in batches off the call path; a clean stop
/// (SIGTERM) right after a burst of calls still keeps every record.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_keeps_every_call_record() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display());
    let mut app = App::start(Some(&url));
    let mut alice = User::sign_up(&app, "alice").await;
    let device = alice.pair_device().await;
    let calls = format!("{}/api/devices/{}/calls", app.url, device.id);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..60 {
        let (client, calls, csrf) = (alice.client.clone(), calls.clone(), alice.csrf.clone());
        burst.spawn(async move {
            client
                .post(calls)
                .header("x-csrf-token", csrf)
                .json(&json!({ "tool": "stat", "input": { "path": "." } }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    for status in burst.join_all().await {
        assert_eq!(status, 200);
    }
    device.host.shutdown();
    let status = tokio::task::spawn_blocking(move || app.terminate(std::time::Duration::from_secs(20)))
        .await
        .unwrap()
        .expect("the app stops");
    assert!(status.success(), "{status:?}");

    // The same database, a new process: every call is in the log.
    let app = App::start(Some(&url));
    alice.url = app.url.clone();
    let (status, log) = alice.get("/api/calls").await;
    assert_eq!(status, 200, "{log}");
    assert_eq!(log["calls"].as_array().unwrap().len(), 60);
}
