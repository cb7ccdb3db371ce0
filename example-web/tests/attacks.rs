//! Attacks on the app as an outsider, another user, a holder of a token or a
//! device would make them; each one that once got through stays here.

use serde_json::json;

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
        let client = browser();
        let page = client
            .get(format!("{}/signin", app.url))
            .query(&[("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{next:?}");
        let html = page.text().await.unwrap();
        assert!(!html.contains("evil.example"), "{next:?} is kept in the form");
        let r = client
            .post(format!("{}/signin", app.url))
            .form(&[
                ("email", email.as_str()),
                ("password", "correct horse battery"),
                ("csrf", &hidden_csrf(&html)),
                ("next", next),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{next:?}");
        assert_eq!(r.headers()["location"], "/devices", "{next:?}");
    }
    // A path on this site still works.
    let client = browser();
    let html = client
        .get(format!("{}/signin", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = client
        .post(format!("{}/signin", app.url))
        .form(&[
            ("email", email.as_str()),
            ("password", "correct horse battery"),
            ("csrf", &hidden_csrf(&html)),
            ("next", "/device?user_code=WDJB-MJHT"),
        ])
        .send()
        .await
        .unwrap();
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
    let text = alice
        .client
        .get(format!("{}/api/activity?format=csv", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
