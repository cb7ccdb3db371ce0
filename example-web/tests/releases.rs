//! Handing the device out: `--releases DIR` serves the release files and
//! nothing else, and `/download` puts the visitor's platform first, with a
//! line that checks the digest, then how to pair in any shell.

mod common;

use common::{App, User, release_dir};
use fusion_host::{Http, enroll};
use serde_json::json;

const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0";
const MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15";
const LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0";

async fn page(app: &App, agent: &str) -> String {
    let r = reqwest::Client::new()
        .get(format!("{}/download", app.url))
        .header("user-agent", agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test]
async fn the_download_page_offers_the_visitors_platform_first() {
    let dir = release_dir();
    let app = App::start_with(None, &["--releases", dir.path().to_str().unwrap()]);

    let windows = page(&app, WINDOWS).await;
    let first = windows.find("id=\"for-you\"").expect("a section for the visitor");
    assert!(windows[first..].starts_with("id=\"for-you\" data-platform=\"Windows\""));
    let installer = windows
        .find("Download the installer (fusion-host-0.3.0-x86_64-windows.msi)")
        .unwrap();
    assert!(installer > first && installer < windows.find("Every platform").unwrap());
    assert!(windows.contains("Get-FileHash fusion-host.exe -Algorithm SHA256"));
    // Pairing in a form PowerShell and cmd take: no `VAR=value cmd`.
    assert!(windows.contains(&format!(
        "fusion-host --server {} --code &lt;the code&gt;",
        app.url
    )));
    assert!(!windows.contains("FUSION_HOST_CODE="));

    let linux = page(&app, LINUX).await;
    assert!(linux.contains("data-platform=\"Linux\""));
    assert!(linux.contains(&format!("{}/releases/fusion-host-0.3.0-x86_64-linux", app.url)));
    assert!(linux.contains("sha256sum -c -"));

    let mac = page(&app, MAC).await;
    assert!(mac.contains("data-platform=\"macOS\""));
    assert!(mac.contains("No build for macOS yet"));
    // Every platform's file is listed below, with its digest.
    for html in [&windows, &linux, &mac] {
        assert_eq!(html.matches("<tr data-target=").count(), 3);
    }
}

#[tokio::test]
async fn the_release_folder_serves_its_files_and_nothing_else() {
    let dir = release_dir();
    let app = App::start_with(None, &["--releases", dir.path().to_str().unwrap()]);
    let get = |path: &str| reqwest::get(format!("{}{path}", app.url));
    let manifest = get("/releases/manifest.json").await.unwrap();
    assert_eq!(manifest.status(), 200);
    assert!(manifest.headers().contains_key("last-modified"));
    let linux = get("/releases/fusion-host-0.3.0-x86_64-linux").await.unwrap();
    assert_eq!(linux.bytes().await.unwrap().as_ref(), b"linux");
    for outside in [
        "/releases/",
        "/releases/.secret",
        "/releases/..%2fCargo.toml",
        "/releases/%2e%2e/Cargo.toml",
        "/releases/nothing",
    ] {
        let r = get(outside).await.unwrap();
        assert!(
            r.status() == 404 || r.status() == 400,
            "{outside}: {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn without_releases_the_page_says_how_to_build_it() {
    let app = App::start(None);
    let html = page(&app, LINUX).await;
    assert!(html.contains("offers no downloads yet") && html.contains("cargo install --path example-host"));
    let r = reqwest::get(format!("{}/releases/manifest.json", app.url))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn devices_show_their_version_and_an_update_when_one_is_served() {
    let dir = release_dir();
    let app = App::start_with(None, &["--releases", dir.path().to_str().unwrap()]);
    let alice = User::sign_up(&app, "releases").await;
    for (name, version) in [("old-laptop", "0.1.0"), ("new-laptop", "0.3.0")] {
        let (status, pairing) = alice.post("/api/pairing-codes", json!({})).await;
        assert_eq!(status, 200, "{pairing}");
        let http = Http::new(&app.url, None, version).unwrap();
        enroll(&http, &app.url, pairing["code"].as_str().unwrap(), name, version)
            .await
            .unwrap();
    }
    let html = alice.html("/devices").await;
    let row = |name: &str| {
        let at = html.find(name).unwrap();
        html[at..html[at..].find("</tr>").unwrap() + at].to_string()
    };
    assert!(
        row("old-laptop").contains("0.3.0 available"),
        "{}",
        row("old-laptop")
    );
    assert!(row("new-laptop").contains("up to date") && !row("new-laptop").contains("available"));

    put_policy(&alice, json!({ "automatic": true, "pinned": "0.2.0" })).await;
    let html = alice.html("/devices").await;
    let at = html.find("old-laptop").unwrap();
    let row = &html[at..html[at..].find("</tr>").unwrap() + at];
    assert!(row.contains("pinned to 0.2.0"), "{row}");
}

#[test]
fn a_releases_folder_without_a_manifest_stops_the_start_and_says_why() {
    let empty = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["--listen", "127.0.0.1:0", "--database-url"])
        .arg(format!(
            "sqlite://{}?mode=rwc",
            db.path().join("app.db").display()
        ))
        .arg("--releases")
        .arg(empty.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("has no manifest.json") && said.contains("fusion-release sign"),
        "{said}"
    );
}

/// `PUT /api/update-policy` as this user.
async fn put_policy(user: &User, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = user
        .client
        .put(format!("{}/api/update-policy", user.url))
        .header("x-csrf-token", &user.csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// What a device of `user` is told about updates when it connects.
async fn told(user: &User) -> Option<fusion_protocol::UpdatePolicy> {
    let device = user.pair_device().await;
    let state = device.host.state().borrow().clone();
    device.host.shutdown();
    match state {
        fusion_host::ConnectionState::Connected { updates, .. } => updates,
        other => panic!("not connected: {other:?}"),
    }
}

#[tokio::test]
async fn an_accounts_update_policy_reaches_its_devices_and_the_page_says_where_each_is() {
    let dir = release_dir();
    let app = App::start_with(None, &["--releases", dir.path().to_str().unwrap()]);
    let alice = User::sign_up(&app, "policy").await;

    let (status, policy) = alice.get("/api/update-policy").await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(policy["automatic"], true);
    assert_eq!(policy["offered"], "0.3.0");
    assert_eq!(
        told(&alice).await,
        Some(fusion_protocol::UpdatePolicy {
            automatic: true,
            pinned: None
        })
    );

    let (status, refused) = put_policy(&alice, json!({ "automatic": true, "pinned": "newest" })).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid_input")),
        "{refused}"
    );
    let (status, policy) = put_policy(&alice, json!({ "automatic": true, "pinned": "0.2.0" })).await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(
        policy["devices_are_told"],
        json!({ "automatic": true, "pinned": "0.2.0" })
    );
    let pinned = told(&alice).await.unwrap();
    assert_eq!(pinned.pinned.as_deref(), Some("0.2.0"));
    let html = alice.html("/devices").await;
    assert!(html.contains(r#"id="updates-pinned""#) && html.contains(r#"value="0.2.0""#));

    // The form on the page, without script: the box unticked, no pin.
    let r = alice
        .client
        .post(format!("{}/devices/updates", app.url))
        .form(&[("csrf", alice.csrf.as_str()), ("pinned", "")])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success() || r.status().is_redirection(),
        "{}",
        r.status()
    );
    assert_eq!(
        told(&alice).await,
        Some(fusion_protocol::UpdatePolicy {
            automatic: false,
            pinned: None
        })
    );
    let html = alice.html("/devices").await;
    assert!(
        !html.contains(r#"value="0.2.0""#) && !html.contains("checked"),
        "{html}"
    );

    // Someone else's form without the session's token changes nothing.
    let r = alice
        .client
        .post(format!("{}/devices/updates", app.url))
        .form(&[("csrf", "forged"), ("automatic", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(alice.get("/api/update-policy").await.1["automatic"], false);
}

#[tokio::test]
async fn the_operator_decides_for_everyone_and_without_releases_devices_are_told_nothing() {
    let dir = release_dir();
    let app = App::start_with(
        None,
        &[
            "--releases",
            dir.path().to_str().unwrap(),
            "--updates",
            "manual",
            "--pin-version",
            "0.3.0",
        ],
    );
    let alice = User::sign_up(&app, "operator").await;
    let (_, policy) = put_policy(&alice, json!({ "automatic": true, "pinned": "0.2.0" })).await;
    assert_eq!(
        policy["devices_are_told"],
        json!({ "automatic": false, "pinned": "0.3.0" })
    );
    assert_eq!(told(&alice).await.unwrap().pinned.as_deref(), Some("0.3.0"));
    let html = alice.html("/devices").await;
    assert!(
        html.contains("The operator turned automatic updates off"),
        "{html}"
    );
    assert!(html.contains("The operator keeps every device on 0.3.0"));

    let plain = App::start(None);
    let bob = User::sign_up(&plain, "no-releases").await;
    assert_eq!(told(&bob).await, None);
    assert!(!bob.html("/devices").await.contains(r#"id="updates""#));
}
