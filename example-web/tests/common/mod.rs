//! The app as a real process on 127.0.0.1:0, users as cookie-keeping HTTP
//! clients, and devices as the real runtime.
#![allow(dead_code, unreachable_pub)]

pub mod documents;
pub mod tasks;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fusion_host::{ConnectionState, HostHandle, HostOptions, Http, enroll, run_host};
use fusion_tools::{Access, Scope, Toolbox};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_example-web");

pub struct App {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl App {
    /// Starts the app on SQLite in a fresh folder, or on `database_url`.
    pub fn start(database_url: Option<&str>) -> App {
        App::start_with(database_url, &[])
    }

    /// Starts the app with more command-line arguments.
    pub fn start_with(database_url: Option<&str>, args: &[&str]) -> App {
        App::start_with_env(database_url, args, &[])
    }

    /// Starts the app with more arguments and environment variables.
    pub fn start_with_env(database_url: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> App {
        let dir = tempfile::tempdir().unwrap();
        let url = database_url.map_or_else(
            || format!("sqlite://{}?mode=rwc", dir.path().join("app.db").display()),
            str::to_string,
        );
        let mut child = Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--database-url", &url])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let line = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let url = line
            .strip_prefix("listening on ")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        App {
            url,
            child,
            _dir: dir,
        }
    }
}

impl App {
    /// Sends SIGTERM (as Ctrl-C or a deploy would) and waits up to `within`
    /// for the process to exit; `None` if it is still running then.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        #[cfg(unix)]
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl App {
    /// Kills the process outright (SIGKILL), as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A signed-in browser-like client.
pub struct User {
    pub client: reqwest::Client,
    pub url: String,
    pub csrf: String,
    pub email: String,
}

/// An MCP `initialize` POST to the app's `/mcp` with `token` as Bearer:
/// its status and its `WWW-Authenticate` challenge (empty when none).
pub async fn mcp_status(app: &App, token: &str) -> (reqwest::StatusCode, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/mcp", app.url))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}))
        .send()
        .await
        .unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status(), challenge)
}

pub fn unique_email(name: &str) -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    format!(
        "{name}-{}@example.com",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

pub fn hidden_csrf(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

/// Fills and posts the sign-in or sign-up `form` ("signin" or "signup") as a
/// browser would: load the page, take its CSRF field, submit.
pub async fn submit_credentials(
    client: &reqwest::Client,
    url: &str,
    form: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    let page = client
        .get(format!("{url}/{form}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fields = [
        ("email", email),
        ("password", password),
        ("csrf", &hidden_csrf(&page)),
    ];
    client
        .post(format!("{url}/{form}"))
        .form(&fields)
        .send()
        .await
        .unwrap()
}

impl User {
    pub async fn sign_up(app: &App, name: &str) -> User {
        let client = reqwest::Client::builder().cookie_store(true).build().unwrap();
        User::sign_up_in(app, name, client).await
    }

    /// Signs up in `client`, a cookie-keeping browser (one that does not
    /// follow redirects, say, to check each step's `Location`).
    pub async fn sign_up_in(app: &App, name: &str, client: reqwest::Client) -> User {
        let email = unique_email(name);
        let response = submit_credentials(&client, &app.url, "signup", &email, "correct horse battery").await;
        let landed = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map_or_else(|| response.url().path().to_string(), str::to_string);
        assert_eq!(landed, "/devices", "sign-up lands on /devices");
        let session: Value = client
            .get(format!("{}/api/session", app.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        User {
            client,
            url: app.url.clone(),
            csrf: session["csrf"].as_str().unwrap().to_string(),
            email,
        }
    }

    /// The same signed-in person, talking to another replica of the app
    /// (cookies are per host, not per port).
    pub fn on(&self, app: &App) -> User {
        User {
            client: self.client.clone(),
            url: app.url.clone(),
            csrf: self.csrf.clone(),
            email: self.email.clone(),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .header("x-csrf-token", &self.csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A page's HTML, as this user's browser would get it.
    pub async fn html(&self, path: &str) -> String {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Mints a code and pairs a real device on a fresh folder.
    pub async fn pair_device(&self) -> Device {
        let (status, pairing) = self.post("/api/pairing-codes", json!({})).await;
        assert_eq!(status, 200, "{pairing}");
        assert!(
            pairing["command"]
                .as_str()
                .unwrap()
                .contains(pairing["code"].as_str().unwrap())
        );
        Device::pair(&self.url, pairing["code"].as_str().unwrap()).await
    }
}

pub struct Device {
    pub dir: tempfile::TempDir,
    pub host: HostHandle,
    pub id: String,
}

impl Device {
    pub async fn pair(url: &str, code: &str) -> Device {
        let http = Http::new(url, None, "test").unwrap();
        let credentials = enroll(&http, url, code, "test-laptop", "test").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let scope = Scope::single(dir.path(), Access::ReadWrite).unwrap();
        let id = credentials.device_id.clone();
        let mut options = HostOptions::new(http, credentials, Toolbox::builtin(), scope, "test");
        options.backoff = (Duration::from_millis(20), Duration::from_millis(200));
        let host = run_host(options);
        let mut state = host.state();
        tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| matches!(s, ConnectionState::Connected { .. })),
        )
        .await
        .unwrap()
        .unwrap();
        Device { dir, host, id }
    }
}

/// A release folder as `fusion-release sign` lays it out (the page lists;
/// only the device checks signatures, in its own tests).
pub fn release_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let artifact = |target: &str, kind: &str, file: &str, body: &[u8]| {
        std::fs::write(dir.path().join(file), body).unwrap();
        json!({ "target": target, "kind": kind, "file": file, "size": body.len(),
                "sha256": format!("{:064x}", body.len()), "signature": "untrusted comment: test\n" })
    };
    let manifest = json!({
        "format": 1, "version": "0.3.0", "issued_at": 1, "expires_at": 4_000_000_000u64,
        "artifacts": [
            artifact("x86_64-linux", "binary", "fusion-host-0.3.0-x86_64-linux", b"linux"),
            artifact("x86_64-windows", "binary", "fusion-host-0.3.0-x86_64-windows.exe", b"windows"),
            artifact("x86_64-windows", "installer", "fusion-host-0.3.0-x86_64-windows.msi", b"msi"),
        ],
    });
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    std::fs::write(dir.path().join(".secret"), "never served").unwrap();
    dir
}
