//! `fusion-host update` as a real process on a copy of the binary: it
//! installs a signed newer build served over HTTP, `--rollback` brings the
//! old one back, and a release that fails a check changes nothing. And
//! automatic updates: a paired device told so in `hello` updates itself,
//! restarts onto the new build and says so in the activity log; a pinned
//! version holds it; a new build that cannot connect is rolled back.

mod common;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::BIN;
use fusion_protocol::{Artifact, ArtifactKind, MANIFEST_FORMAT, ReleaseManifest, current_target};
use sha2::{Digest, Sha256};

const VERSION: &str = "99.0.0";

fn test_key() -> minisign::SecretKey {
    minisign::SecretKeyBox::from_string(include_str!("../../release/keys/test.key"))
        .unwrap()
        .into_secret_key(Some(String::new()))
        .unwrap()
}

fn sign(bytes: &[u8]) -> String {
    minisign::sign(None, &test_key(), Cursor::new(bytes), None, None)
        .unwrap()
        .to_string()
}

/// A release of `VERSION` whose binary is `binary`, signed with the test
/// key, in a folder served at `/releases/`.
struct Release {
    dir: tempfile::TempDir,
    file: String,
    url: String,
}

impl Release {
    /// The release's files, in a folder of their own.
    fn write(binary: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = format!(
            "fusion-host-{VERSION}-{}{}",
            current_target(),
            std::env::consts::EXE_SUFFIX
        );
        std::fs::write(dir.path().join(&file), binary).unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let manifest = ReleaseManifest {
            format: MANIFEST_FORMAT,
            version: VERSION.into(),
            issued_at: now,
            expires_at: now + 3600,
            artifacts: vec![Artifact {
                target: current_target(),
                kind: ArtifactKind::Binary,
                file: file.clone(),
                size: binary.len() as u64,
                sha256: Sha256::digest(binary)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                signature: sign(binary),
            }],
        };
        let json = serde_json::to_vec(&manifest).unwrap();
        std::fs::write(dir.path().join("manifest.json.minisig"), sign(&json)).unwrap();
        std::fs::write(dir.path().join("manifest.json"), json).unwrap();
        (dir, file)
    }

    /// `GET /releases/{file}` from `root`.
    fn routes(root: PathBuf) -> axum::Router {
        axum::Router::new().route(
            "/releases/{file}",
            axum::routing::get(move |UrlPath(name): UrlPath<String>| {
                let path = root.join(name);
                async move {
                    match std::fs::read(path) {
                        Ok(bytes) => bytes.into_response(),
                        Err(_) => StatusCode::NOT_FOUND.into_response(),
                    }
                }
            }),
        )
    }

    async fn serve(binary: &[u8]) -> Release {
        let (dir, file) = Release::write(binary);
        let app = Release::routes(dir.path().to_path_buf());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Release { dir, file, url }
    }
}

/// A copy of the device binary in a folder of its own, as installed.
fn installed() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir
        .path()
        .join(format!("fusion-host{}", std::env::consts::EXE_SUFFIX));
    std::fs::copy(BIN, &exe).unwrap();
    (dir, exe)
}

/// Runs `exe` with `args` in its own profile, off the machine's services.
async fn run(exe: &Path, home: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(exe);
    command
        .arg("--config-dir")
        .arg(home.join("config"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"));
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output().unwrap()),
    )
    .await
    .expect("update finishes")
    .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn update_installs_a_signed_build_and_rollback_brings_the_old_one_back() {
    let original = std::fs::read(BIN).unwrap();
    // A different build: the same program with bytes after its end, which
    // every executable format leaves alone.
    let mut newer = original.clone();
    newer.extend_from_slice(b"\nfusion-host test build 99.0.0\n");
    let release = Release::serve(&newer).await;
    let (home, exe) = installed();

    let check = run(
        &exe,
        home.path(),
        &["update", "--check", "--server", &release.url],
    )
    .await;
    assert!(check.status.success(), "{}", said(&check));
    assert!(
        said(&check).contains(&format!("fusion-host {VERSION} is available")),
        "{}",
        said(&check)
    );
    assert_eq!(std::fs::read(&exe).unwrap(), original, "--check changes nothing");

    let update = run(&exe, home.path(), &["update", "--server", &release.url]).await;
    assert!(update.status.success(), "{}", said(&update));
    assert!(
        said(&update).contains(&format!("→ {VERSION} (verified")),
        "{}",
        said(&update)
    );
    assert_eq!(std::fs::read(&exe).unwrap(), newer, "the new build is in place");
    // The new build runs.
    let version = run(&exe, home.path(), &["--version"]).await;
    assert!(version.status.success(), "{}", said(&version));

    let back = run(&exe, home.path(), &["update", "--rollback"]).await;
    assert!(back.status.success(), "{}", said(&back));
    assert_eq!(std::fs::read(&exe).unwrap(), original, "the old build is back");
    // And forward again: a second rollback undoes the first.
    let again = run(&exe, home.path(), &["update", "--rollback"]).await;
    assert!(again.status.success(), "{}", said(&again));
    assert_eq!(std::fs::read(&exe).unwrap(), newer);
}

#[tokio::test]
async fn a_release_that_fails_a_check_changes_nothing() {
    let original = std::fs::read(BIN).unwrap();
    let mut newer = original.clone();
    newer.extend_from_slice(b"\nanother build\n");
    let release = Release::serve(&newer).await;
    let (home, exe) = installed();
    let artifact = release.dir.path().join(&release.file);

    // The file changed on the server after it was signed.
    let mut tampered = newer.clone();
    *tampered.last_mut().unwrap() ^= 1;
    std::fs::write(&artifact, &tampered).unwrap();
    let out = run(&exe, home.path(), &["update", "--server", &release.url]).await;
    assert!(!out.status.success());
    assert!(
        said(&out).contains("digest_mismatch") && said(&out).contains("nothing was changed"),
        "{}",
        said(&out)
    );
    assert_eq!(std::fs::read(&exe).unwrap(), original);

    // Cut short.
    std::fs::write(&artifact, &newer[..newer.len() / 2]).unwrap();
    let out = run(&exe, home.path(), &["update", "--server", &release.url]).await;
    assert!(said(&out).contains("size_mismatch"), "{}", said(&out));
    assert_eq!(std::fs::read(&exe).unwrap(), original);

    // The manifest's signature replaced by one over something else.
    std::fs::write(&artifact, &newer).unwrap();
    std::fs::write(
        release.dir.path().join("manifest.json.minisig"),
        sign(b"another manifest"),
    )
    .unwrap();
    let out = run(&exe, home.path(), &["update", "--server", &release.url]).await;
    assert!(said(&out).contains("bad_signature"), "{}", said(&out));
    assert_eq!(std::fs::read(&exe).unwrap(), original);

    // A manifest past the size a device reads.
    let manifest = release.dir.path().join("manifest.json");
    let signed = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, vec![b' '; (1 << 20) + 1]).unwrap();
    let out = run(&exe, home.path(), &["update", "--server", &release.url]).await;
    assert!(
        said(&out).contains("longer than the 1048576 bytes expected"),
        "{}",
        said(&out)
    );
    assert_eq!(std::fs::read(&exe).unwrap(), original);
    std::fs::write(&manifest, signed).unwrap();

    // Nothing kept, so nothing to roll back to.
    let out = run(&exe, home.path(), &["update", "--rollback"]).await;
    assert!(
        !out.status.success() && said(&out).contains("nothing to roll back to"),
        "{}",
        said(&out)
    );
}

/// The dispatcher and a release on one origin, as an app serves them, with
/// a switch that refuses every device connection after the first: the new
/// build an automatic update starts then cannot connect.
#[cfg(unix)]
struct Site {
    url: String,
    store: std::sync::Arc<fusion_host_server::MemoryStore>,
    dispatcher: fusion_host_server::Dispatcher,
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    _release: tempfile::TempDir,
}

#[cfg(unix)]
impl Site {
    async fn start(binary: &[u8]) -> Site {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

        use fusion_host_server::{Config, Dispatcher, MemoryStore, router};

        let (release, _) = Release::write(binary);
        let store = Arc::new(MemoryStore::new());
        let dispatcher = Dispatcher::new(store.clone(), Config::default());
        let refusing = Arc::new(AtomicBool::new(false));
        let manifests = Arc::new(AtomicUsize::new(0));
        let (refuse, count) = (refusing.clone(), manifests.clone());
        let app = axum::Router::new()
            .nest("/api/host", router(dispatcher.clone()))
            .merge(Release::routes(release.path().to_path_buf()))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let (refuse, count) = (refuse.clone(), count.clone());
                    async move {
                        if request.uri().path() == "/api/host/manifest"
                            && count.fetch_add(1, Ordering::SeqCst) >= 1
                            && refuse.load(Ordering::SeqCst)
                        {
                            return StatusCode::SERVICE_UNAVAILABLE.into_response();
                        }
                        next.run(request).await
                    }
                },
            ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Site {
            url,
            store,
            dispatcher,
            refusing,
            _release: release,
        }
    }

    /// Pairs `exe` as alice's device and starts it, with `-v` so it says
    /// what the updater decides.
    async fn device(
        &self,
        exe: &Path,
        home: &Path,
        config_toml: &str,
    ) -> (common::Running, std::sync::mpsc::Receiver<String>) {
        let code = self.dispatcher.mint_pairing_code("alice").await.unwrap();
        let enrolled = run(
            exe,
            home,
            &["enroll", "--server", &self.url, "--code", &code.code],
        )
        .await;
        assert!(enrolled.status.success(), "{}", said(&enrolled));
        std::fs::write(home.join("config").join("config.toml"), config_toml).unwrap();
        let folder = home.join("work");
        std::fs::create_dir_all(&folder).unwrap();
        let mut child = Command::new(exe)
            .arg("--config-dir")
            .arg(home.join("config"))
            .args(["-v", "run", "--root"])
            .arg(&folder)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("xdg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        (common::Running(Some(child)), rx)
    }

    /// Waits for alice's activity log to hold an automatic update.
    async fn update_logged(&self) -> fusion_host_server::CallLogEntry {
        use fusion_host_server::Store;
        for _ in 0..600 {
            let calls = self.store.calls("alice", 10).await.unwrap();
            if let Some(entry) = calls.into_iter().find(|c| c.tool == "update") {
                return entry;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no update in the activity log within 60 s");
    }
}

/// Waits for a line of the device's log that contains `text`.
#[cfg(unix)]
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, text: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(text) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("the device never said {text:?}; it said:\n{}", seen.join("\n"));
}

#[cfg(unix)]
fn automatic(pinned: Option<&str>) -> fusion_protocol::UpdatePolicy {
    fusion_protocol::UpdatePolicy {
        automatic: true,
        pinned: pinned.map(str::to_string),
    }
}

// Restarting onto the new build replaces the process on Unix; on Windows it
// starts another one, which a test cannot stop, so these run on Unix only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_told_to_update_installs_restarts_and_logs_it() {
    let original = std::fs::read(BIN).unwrap();
    let mut newer = original.clone();
    newer.extend_from_slice(b"\nfusion-host test build 99.0.0, automatic\n");
    let site = Site::start(&newer).await;
    site.store.set_update_policy("alice", automatic(None));
    let (home, exe) = installed();
    let (device, lines) = site.device(&exe, home.path(), "").await;

    let entry = site.update_logged().await;
    assert_eq!(entry.error_code, None, "{entry:?}");
    assert!(
        entry.requested_by.starts_with("automatic update ")
            && entry.requested_by.ends_with(&format!("→ {VERSION}")),
        "{entry:?}"
    );
    assert_eq!(std::fs::read(&exe).unwrap(), newer, "the new build is in place");
    // The same process id, now running the new build, is connected again.
    let pid = device.id();
    let exe_now = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe_now, exe, "the device restarted onto the installed file");
    let devices = site.dispatcher.devices("alice").await.unwrap();
    assert!(devices[0].online && devices[0].updating.is_none(), "{devices:?}");
    // It does not install itself again: the running binary is the offered one.
    wait_for_line(&lines, "✓ updated fusion-host");
    let kept = home.path().join("config").join("updates");
    assert!(kept.join("previous").exists() && !kept.join("trial.json").exists());
    drop(device);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_or_a_device_that_says_no_stays_as_it_is() {
    let original = std::fs::read(BIN).unwrap();
    let mut newer = original.clone();
    newer.extend_from_slice(b"\nfusion-host test build 99.0.0, pinned\n");
    let site = Site::start(&newer).await;

    site.store.set_update_policy("alice", automatic(Some("98.0.0")));
    let (home, exe) = installed();
    let (device, lines) = site.device(&exe, home.path(), "").await;
    wait_for_line(&lines, "pinned: staying on");
    assert_eq!(std::fs::read(&exe).unwrap(), original);
    drop(device);

    site.store.set_update_policy("alice", automatic(None));
    let (home, exe) = installed();
    let (device, lines) = site
        .device(&exe, home.path(), "[updates]\nautomatic = false\n")
        .await;
    wait_for_line(&lines, "config.toml says no");
    assert_eq!(std::fs::read(&exe).unwrap(), original);
    drop(device);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_build_that_cannot_connect_is_rolled_back_and_not_tried_again() {
    use std::sync::atomic::Ordering;

    let original = std::fs::read(BIN).unwrap();
    let mut newer = original.clone();
    newer.extend_from_slice(b"\nfusion-host test build 99.0.0, cut off\n");
    let site = Site::start(&newer).await;
    site.store.set_update_policy("alice", automatic(None));
    // Every connection after the first device's is refused: the new build's.
    site.refusing.store(true, Ordering::SeqCst);
    let (home, exe) = installed();
    let (device, lines) = site
        .device(&exe, home.path(), "[updates]\ntrial_seconds = 3\n")
        .await;

    wait_for_line(&lines, "did not connect within 3 s; rolled back");
    assert_eq!(std::fs::read(&exe).unwrap(), original, "the old build is back");
    site.refusing.store(false, Ordering::SeqCst);
    let entry = site.update_logged().await;
    assert_eq!(
        entry.error_code.as_deref(),
        Some("update_rolled_back"),
        "{entry:?}"
    );
    assert_eq!(entry.paths, vec![format!("{VERSION} did not connect within 3 s")]);
    // Connected again, it leaves that version alone for a day.
    wait_for_line(&lines, "failed here less than a day ago");
    assert_eq!(std::fs::read(&exe).unwrap(), original);
    drop(device);
}
