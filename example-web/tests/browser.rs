//! `/devices` in real headless Chromium, driven over WebDriver: sign up, add a
//! device (a real device enrolls with the code the page shows), see it go
//! online, run `list_directory`, propose `write_file`, see the diff, approve,
//! and find the file on disk; a `rename_batch` shows its problems, then its
//! plan as a table with one Approve; a device that ran `fusion-host login`
//! is approved on `/device`; an MCP client signs a person in through the
//! OAuth consent page and is disconnected. Saves `target/browser-devices.png`,
//! `target/browser-rename-batch.png`, `target/browser-device-login.png` and
//! `target/browser-oauth-consent.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test
//! says it skipped and passes.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{App, Device, unique_email};
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

/// Clicks what `selector` finds in a part of the page that events
/// re-render: an element found a moment ago may have been replaced (a
/// stale reference), so it is found again and clicked, within [`WAIT`].
async fn click_live(c: &fantoccini::Client, selector: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let clicked = match c.find(Locator::Css(selector)).await {
            Ok(el) => el.click().await,
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("could not click {selector}: {e}"),
        }
    }
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|p| Path::new(p).exists())
        .map(|p| p.to_string())
}

/// Signs a new account up on the app's page and waits for `/devices`.
async fn sign_up(c: &fantoccini::Client, url: &str, name: &str) {
    c.goto(&format!("{url}/signup")).await.unwrap();
    c.find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(&unique_email(name))
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("correct horse battery")
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("#add-device"))
        .await
        .unwrap();
}

/// Headless Chromium under ChromeDriver, with `emulate` as its
/// `mobileEmulation` (a User-Agent and client hints) when given; `None`
/// (and a line saying so) where they are not installed.
struct Browser {
    client: fantoccini::Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

async fn chromium(emulate: Option<serde_json::Value>) -> Option<Browser> {
    let (Some(chromium), Some(chromedriver)) = (
        find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
        find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]),
    ) else {
        eprintln!(
            "skipped: Chromium and ChromeDriver are not installed (apt-get install chromium chromium-driver)"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Driver(
        Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1000",
    ]
    .map(String::from)
    .to_vec();
    all.push(format!("--user-data-dir={}", profile.path().display()));
    let mut options = json!({ "binary": chromium, "args": all });
    if let Some(emulate) = emulate {
        options["mobileEmulation"] = emulate;
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    for _ in 0..50 {
        if let Ok(client) = ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            return Some(Browser {
                client,
                _driver: driver,
                _profile: profile,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("ChromeDriver did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_page_end_to_end_in_chromium() {
    let Some(browser) = chromium(None).await else {
        return;
    };
    let mut app = App::start(None);
    let c = browser.client.clone();
    let css = |s: &'static str| Locator::Css(s);

    sign_up(&c, &app.url, "browser").await;
    assert!(
        c.find(css("#no-devices"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .contains("No devices yet")
    );

    // Add a device: the page shows a code and the command; a real device enrolls with it.
    c.find(css("#add-device")).await.unwrap().click().await.unwrap();
    let code_el = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#pair-code"))
        .await
        .unwrap();
    let mut code = String::new();
    for _ in 0..100 {
        code = code_el.text().await.unwrap();
        if code.len() == 9 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let command = c.find(css("#pair-command")).await.unwrap().text().await.unwrap();
    assert!(
        command == format!("fusion-host --server {} --code {code}", app.url),
        "{command}"
    );
    let device = Device::pair(&app.url, &code).await;
    std::fs::write(device.dir.path().join("scan-notes.txt"), "north wall\n").unwrap();

    // "✓ test-laptop connected", then the list shows it online.
    let done = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#pair-done:not([hidden])"))
        .await
        .unwrap();
    assert!(done.text().await.unwrap().contains("✓ test-laptop connected"));
    c.wait()
        .at_most(WAIT)
        .for_element(css("tr[data-device] .badge.online"))
        .await
        .unwrap();
    let shot = c.screenshot().await.unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("browser-devices.png"), &shot).unwrap();

    // The device page: run list_directory.
    click_live(&c, "tr[data-device] a").await;
    let select = c.wait().at_most(WAIT).for_element(css("#tool")).await.unwrap();
    // The safe default is a read, its input prefilled so it runs as it is.
    assert_eq!(
        select.prop("value").await.unwrap().as_deref(),
        Some("list_directory")
    );
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    let table = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#result table"))
        .await
        .unwrap();
    let listing = table.text().await.unwrap();
    assert!(
        listing.contains("scan-notes.txt") && listing.contains("11 B"),
        "{listing}"
    );
    assert!(
        c.find(css("#result details.raw summary")).await.is_ok(),
        "raw JSON, collapsed"
    );
    // The tree at a glance: the names, one a line.
    let input = c.find(css("#input")).await.unwrap();
    input.clear().await.unwrap();
    input
        .send_keys(r#"{"recursive": true, "details": false}"#)
        .await
        .unwrap();
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    let names = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#result pre.names"))
        .await
        .unwrap();
    let names = names.text().await.unwrap();
    assert!(names.lines().any(|l| l == "scan-notes.txt"), "{names}");
    // Descriptions are text: `code` spans are code, no literal backticks.
    select.select_by_value("append_file").await.unwrap();
    let description = c.find(css("#tool-description")).await.unwrap();
    assert!(!description.text().await.unwrap().contains('`'));
    assert!(c.find(css("#tool-description code")).await.is_ok());
    // Every tool's prefilled input is valid JSON with its required fields.
    let prefilled = c
        .execute(
            "const s = document.getElementById('tool'); const bad = []; \
             for (const o of s.options) { s.value = o.value; s.dispatchEvent(new Event('change')); \
               const t = JSON.parse(document.getElementById('tools-data').textContent).find((x) => x.name === o.value); \
               const v = JSON.parse(document.getElementById('input').value); \
               for (const r of t.inputSchema.required || []) if (!(r in v)) bad.push(o.value + '.' + r); } \
             return bad;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        prefilled,
        json!([]),
        "tools whose prefilled input lacks a required field"
    );

    // Upload a file by handle, and offer it to a device as a download.
    select.select_by_value("upload").await.unwrap();
    let input = c.find(css("#input")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(r#"{"path": "scan-notes.txt"}"#).await.unwrap();
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css("#blob-device option"))
        .await
        .unwrap();
    let path = c.find(css("#blob-path")).await.unwrap();
    path.clear().await.unwrap();
    path.send_keys("notes-copy.txt").await.unwrap();
    c.find(css("#blob-send")).await.unwrap().click().await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css(".send-blob .proposal [data-decide=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css(".send-blob .success"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("notes-copy.txt")).unwrap(),
        "north wall\n"
    );

    // Propose write_file, see the diff, approve.
    select.select_by_value("write_file").await.unwrap();
    let input = c.find(css("#input")).await.unwrap();
    input.clear().await.unwrap();
    input
        .send_keys(r#"{"path": "approved.txt", "content": "approved in the browser\n"}"#)
        .await
        .unwrap();
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    let diff = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#result pre.diff .add"))
        .await
        .unwrap();
    assert!(diff.text().await.unwrap().contains("+approved in the browser"));
    // The card is the server's, as /devices shows it: it names the tool,
    // the device and who asked.
    let card = c
        .find(css("#result .proposal"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(card.contains("write_file on test-laptop"), "{card}");
    assert!(
        !device.dir.path().join("approved.txt").exists(),
        "nothing is written before approval"
    );
    c.find(css("#result .proposal [data-decide=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let applied = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#result .success"))
        .await
        .unwrap();
    assert_eq!(applied.text().await.unwrap(), "✓ Applied");
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("approved.txt")).unwrap(),
        "approved in the browser\n"
    );

    // A rename batch: its problems as a table, then a plan of 30 renames as a
    // table of its first 20 rows, approved once on /devices.
    for i in 1..=30 {
        std::fs::write(device.dir.path().join(format!("Scan_{i:04}.e57")), i.to_string()).unwrap();
    }
    select.select_by_value("rename_batch").await.unwrap();
    let input = c.find(css("#input")).await.unwrap();
    input.clear().await.unwrap();
    input
        .send_keys(r#"{"renames": [{"from": "missing.e57", "to": "x.e57"}]}"#)
        .await
        .unwrap();
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    let problems = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#result table"))
        .await
        .unwrap();
    assert!(problems.text().await.unwrap().contains("source_missing"));
    let renames: Vec<_> = (1..=30)
        .map(|i| json!({ "from": format!("Scan_{i:04}.e57"), "to": format!("2026-11-03_north_{i:03}.e57") }))
        .collect();
    input.clear().await.unwrap();
    input
        .send_keys(&json!({ "renames": renames }).to_string())
        .await
        .unwrap();
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css("#result .proposal table"))
        .await
        .unwrap();
    // A refused call, for the activity log's badges.
    select.select_by_value("read_file").await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(r#"{"path": "../../etc/passwd"}"#).await.unwrap();
    c.find(css("#run")).await.unwrap().click().await.unwrap();
    let refused = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#result .error"))
        .await
        .unwrap();
    assert!(refused.text().await.unwrap().contains("outside_scope"));

    c.goto(&format!("{}/devices", app.url)).await.unwrap();
    let batch = c
        .wait()
        .at_most(WAIT)
        .for_element(css(".proposal table.effects"))
        .await
        .unwrap();
    assert_eq!(batch.find_all(css("tbody tr")).await.unwrap().len(), 20);
    assert!(batch.text().await.unwrap().contains("2026-11-03_north_001.e57"));
    let more = c
        .find(css(".proposal .more"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(more.contains("and 10 more (30 in all)"), "{more}");
    assert_eq!(
        c.find_all(css(".proposal [data-decide=approve]"))
            .await
            .unwrap()
            .len(),
        1,
        "one Approve for the batch"
    );
    let shot = c.screenshot().await.unwrap();
    std::fs::write(target.join("browser-rename-batch.png"), shot).unwrap();
    c.find(css(".proposal [data-decide=approve]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let renamed = device.dir.path().join("2026-11-03_north_030.e57");
    let deadline = std::time::Instant::now() + WAIT;
    while !renamed.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(renamed.exists(), "the approved batch renamed the files");
    assert!(!device.dir.path().join("Scan_0001.e57").exists());

    // Back on /devices the activity log shows the calls.
    c.goto(&format!("{}/devices", app.url)).await.unwrap();
    let log = c
        .wait()
        .at_most(WAIT)
        .for_element(css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("write_file") && log.contains("apply"), "{log}");
    // Outcomes read as what they are: a refusal and a failed plan are not
    // an outage, and the folder says whether the device may change it.
    for badge in [".badge.ok", ".badge.refused", ".badge.failed", ".badge.readwrite"] {
        assert!(
            !c.find_all(css(badge)).await.unwrap().is_empty(),
            "{badge} on /devices"
        );
    }
    let refused = c
        .execute(
            "return document.querySelector('.badge.refused').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, json!("outside_scope"));
    let shot = c.screenshot().await.unwrap();
    std::fs::write(target.join("browser-devices.png"), shot).unwrap();

    // `fusion-host login` on another machine: its link opens /device with
    // the code filled in; the page says what is asking; Approve pairs it.
    let http = fusion_host::Http::new(&app.url, None, "test").unwrap();
    let login = fusion_host::request_login(&http, "site-tablet", "0.1.0")
        .await
        .unwrap();
    c.goto(login.link()).await.unwrap();
    let name = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#request-name"))
        .await
        .unwrap();
    assert_eq!(name.text().await.unwrap(), "site-tablet");
    assert_eq!(
        c.find(css("#request-code")).await.unwrap().text().await.unwrap(),
        login.user_code
    );
    let shot = c.screenshot().await.unwrap();
    std::fs::write(target.join("browser-device-login.png"), shot).unwrap();
    c.find(css("#approve-device"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let result = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#device-result"))
        .await
        .unwrap();
    assert!(result.text().await.unwrap().contains("✓ Device approved"));
    let credentials = fusion_host::wait_for_approval(&http, &app.url, "site-tablet", &login, |_| {
        tokio::time::sleep(Duration::from_millis(50))
    })
    .await
    .unwrap();
    assert!(credentials.owner_display().ends_with("@example.com"));

    // Two tabs on /devices stay current without reloading: a proposal made
    // elsewhere appears in both, and approving it in one removes it from
    // the other. A reload would lose the marker set on the first tab.
    c.goto(&format!("{}/devices", app.url)).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css("#approvals"))
        .await
        .unwrap();
    let first = c.window().await.unwrap();
    c.execute("window.__stayed = true; return 1;", vec![])
        .await
        .unwrap();
    let second = c.new_window(true).await.unwrap().handle;
    c.switch_to_window(second.clone()).await.unwrap();
    c.goto(&format!("{}/devices", app.url)).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css("#approvals"))
        .await
        .unwrap();
    let propose = format!(
        "const done = arguments[arguments.length - 1]; \
         fetch('/api/devices/{}/calls', {{ method: 'POST', headers: {{ 'content-type': 'application/json', \
         'x-csrf-token': document.body.dataset.csrf }}, body: JSON.stringify({{ tool: 'write_file', input: \
         {{ path: 'two-tabs.txt', content: 'seen in both\\n' }} }}) }}).then((r) => r.text()).then(done, (e) => done('failed: ' + e));",
        device.id
    );
    let answer = c.execute_async(&propose, vec![]).await.unwrap();
    let answer: serde_json::Value = serde_json::from_str(answer.as_str().unwrap_or_default())
        .unwrap_or_else(|_| panic!("the proposal call answered {answer}"));
    let proposal = answer["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_string();
    let card = format!("[data-proposal=\"{proposal}\"]");
    c.switch_to_window(first.clone()).await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&card))
        .await
        .unwrap();
    c.switch_to_window(second).await.unwrap();
    let approve = format!("{card} [data-decide=approve]");
    click_live(&c, &approve).await;
    // The person sees it applied before closing the tab: closing at once
    // could cancel the request before it left the browser.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(&format!(
            "//*[@data-proposal='{proposal}']//*[contains(@class, 'outcome')]/*[contains(., 'Applied')] | //*[@id='approvals' and not(.//*[@data-proposal='{proposal}'])]"
        )))
        .await
        .unwrap();
    c.close_window().await.unwrap();
    c.switch_to_window(first).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !c.find_all(Locator::Css(&card)).await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the approved proposal stayed on the other tab"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stayed = c
        .execute("return window.__stayed === true;", vec![])
        .await
        .unwrap();
    assert_eq!(stayed, json!(true), "the page reloaded");
    assert_eq!(
        std::fs::read_to_string(device.dir.path().join("two-tabs.txt")).unwrap(),
        "seen in both\n"
    );
    // The activity trail says who approved it.
    let trail = c.find(css("#activity")).await.unwrap().text().await.unwrap();
    assert!(trail.contains("approved by"), "{trail}");

    // Rename a device from the list: the row follows without a reload.
    let rename = format!("[data-rename=\"{}\"]", device.id);
    click_live(&c, &rename).await;
    c.send_alert_text("north site").await.unwrap();
    c.accept_alert().await.unwrap();
    // Read in the page: the live list re-renders its rows, so an element
    // found a moment ago may already be gone.
    let row_text = format!(
        "const r = document.querySelector('tr[data-device=\"{}\"]'); return r ? r.textContent : '';",
        device.id
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = c.execute(&row_text, vec![]).await.unwrap();
        let text = text.as_str().unwrap_or_default().to_string();
        if text.contains("north site") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the row still says {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A pairing code that runs out collapses and offers a new one. The
    // page is told the code lasts one second instead of ten minutes.
    c.execute(
        "const f = window.fetch; window.fetch = (u, o) => f(u, o).then((r) => u === '/api/pairing-codes' \
         ? r.json().then((j) => new Response(JSON.stringify({ ...j, expires_in_s: 1 }), { status: 200 })) : r); \
         return 1;",
        vec![],
    )
    .await
    .unwrap();
    c.find(css("#add-device")).await.unwrap().click().await.unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(css("#pair-expired:not([hidden])"))
        .await
        .unwrap();
    assert!(
        !c.find(css("#pair-code"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    c.find(css("#mint-again")).await.unwrap().click().await.unwrap();
    let code = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#pair-code"))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while code.text().await.unwrap().len() != 9 {
        assert!(std::time::Instant::now() < deadline, "no new code shown");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stayed = c
        .execute("return window.__stayed === true;", vec![])
        .await
        .unwrap();
    assert_eq!(stayed, json!(true), "the page reloaded");

    // At phone width nothing runs off the side.
    c.set_window_size(390, 844).await.unwrap();
    let fits = c
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    let shot = c.screenshot().await.unwrap();
    std::fs::write(target.join("browser-devices-phone.png"), shot).unwrap();
    assert_eq!(fits, json!(true), "/devices is wider than a phone");
    c.set_window_size(1280, 1000).await.unwrap();

    // The server goes away: the page says so instead of failing silently.
    assert!(app.terminate(Duration::from_secs(10)).is_some());
    let banner = c
        .wait()
        .at_most(WAIT)
        .for_element(css("#offline-banner:not([hidden])"))
        .await
        .unwrap();
    assert!(banner.text().await.unwrap().contains("Cannot reach the server"));
    c.close().await.unwrap();
}

/// `/download` and "Add a device" as three visitors see them: Chromium
/// saying it runs on Windows, macOS and Linux. Each gets its own platform
/// first, and the same pairing line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_and_add_a_device_for_windows_macos_and_linux_visitors() {
    let release = common::release_dir();
    let app = App::start_with(None, &["--releases", release.path().to_str().unwrap()]);
    // What Chromium on each system says: its User-Agent, and the platform
    // client hint (which the page prefers when both are there).
    let visitors = [
        (
            "Windows",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        ),
        (
            "macOS",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        ),
        (
            "Linux",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
        ),
    ];
    for (platform, agent) in visitors {
        let emulate = json!({
            "userAgent": agent,
            "clientHints": { "platform": platform, "mobile": false },
        });
        let Some(browser) = chromium(Some(emulate)).await else {
            return;
        };
        let c = &browser.client;
        c.goto(&format!("{}/download", app.url)).await.unwrap();
        let first = c.find(Locator::Css("#for-you")).await.unwrap();
        assert_eq!(
            first.attr("data-platform").await.unwrap().as_deref(),
            Some(platform),
            "{agent}"
        );
        let text = first.text().await.unwrap();
        match platform {
            "Windows" => {
                let link = c.find(Locator::Css("#for-you a.button")).await.unwrap();
                assert!(
                    link.attr("href")
                        .await
                        .unwrap()
                        .unwrap()
                        .ends_with("/releases/fusion-host-0.3.0-x86_64-windows.msi"),
                    "{text}"
                );
                assert!(text.contains("Get-FileHash"), "{text}");
            }
            "macOS" => assert!(text.contains("No build for macOS yet"), "{text}"),
            _ => assert!(
                text.contains("sha256sum -c") && text.contains("x86_64-linux"),
                "{text}"
            ),
        }
        // Every file below, each with its digest.
        let rows = c
            .find_all(Locator::Css("table.artifacts tbody tr"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 3);

        // "Add a device" links here and gives one line for every shell.
        sign_up(c, &app.url, "visitor").await;
        c.find(Locator::Css("#add-device"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let line = c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::XPath(
                "//code[@id='pair-command' and string-length(text()) > 0]",
            ))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let code = c
            .find(Locator::Css("#pair-code"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            line,
            format!("fusion-host --server {} --code {code}", app.url),
            "{platform}"
        );
        let download = c
            .find(Locator::Css("#pairing a[href='/download']"))
            .await
            .unwrap();
        assert!(download.is_displayed().await.unwrap());
        browser.client.clone().close().await.unwrap();
    }
}

/// The whole sign-in as an MCP client added by URL runs it, with the
/// person in Chromium: discovery from the 401, the client known by its
/// metadata document (served over TLS), PKCE, the consent page, Allow —
/// the browser lands on the client's own redirect URI with the code (the
/// page's Content-Security-Policy lets exactly that redirect through) —
/// tokens, a call, a refresh, and Disconnect on `/devices`, after which
/// the token is refused. Saves `target/browser-oauth-consent.png`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_client_signs_in_through_the_consent_page_and_is_disconnected() {
    let docs = common::documents::Documents::start().await;
    let app = docs.app(true);
    // The client's redirect URI: a local listener, as native clients use.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let callback = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |uri: axum::http::Uri| {
            let _ = tx.send(uri.to_string());
            async { "Signed in; you can close this tab." }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, callback).await.unwrap() });
    let client_id = docs.client("/survey-agent.json", "Survey Agent", &redirect);

    let (status, challenge) = common::mcp_status(&app, "").await;
    assert_eq!(status, 401);
    let mut oauth = rmcp::transport::auth::OAuthState::new(format!("{}/mcp", app.url), None)
        .await
        .unwrap();
    oauth
        .start_authorization(
            rmcp::transport::auth::AuthorizationRequest::new(&redirect)
                .with_client_metadata_url(&client_id)
                .with_challenge(&challenge),
        )
        .await
        .unwrap();
    let authorize = oauth.get_authorization_url().await.unwrap();

    let Some(browser) = chromium(None).await else {
        return;
    };
    let c = &browser.client;
    sign_up(c, &app.url, "consent").await;
    c.goto(&authorize).await.unwrap();
    let name = c
        .find(Locator::Css("#client-name"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(name, "Survey Agent");
    let host = c
        .find(Locator::Css("#client-host"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(host, "localhost");
    let shown = c
        .find(Locator::Css("#redirect-uri"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown, redirect);
    let shot = c.screenshot().await.unwrap();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("browser-oauth-consent.png"), shot).unwrap();
    c.find(Locator::Css("#allow"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let landed = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert!(landed.contains("code="), "{landed}");
    let current = c.current_url().await.unwrap();
    assert!(current.as_str().starts_with(&redirect), "{current}");

    oauth.handle_callback_url(current.as_str()).await.unwrap();
    let oauth = oauth.into_authorization_manager().expect("signed in");
    let token = oauth.get_access_token().await.unwrap();
    assert_eq!(common::mcp_status(&app, &token).await.0, 200);
    oauth.refresh_token().await.unwrap();
    let renewed = oauth.get_access_token().await.unwrap();
    assert_eq!(common::mcp_status(&app, &renewed).await.0, 200);

    // Listed under Connected apps, and disconnected with one click.
    c.goto(&format!("{}/devices", app.url)).await.unwrap();
    let row = c.find(Locator::Css("#connected tbody tr")).await.unwrap();
    let text = row.text().await.unwrap();
    assert!(
        text.contains("Survey Agent") && text.contains("localhost") && text.contains("read, propose changes"),
        "{text}"
    );
    c.find(Locator::Css("#connected button.danger"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::XPath(
            "//section[@id='connected']//p[contains(., 'No connected apps')]",
        ))
        .await
        .unwrap();
    let (status, challenge) = common::mcp_status(&app, &renewed).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert!(
        oauth.refresh_token().await.is_err(),
        "the refresh token ended too"
    );
    browser.client.clone().close().await.unwrap();
}
