//! `fusion-host update` as a real process on a copy of the binary: it
//! installs a signed newer build served over HTTP, `--rollback` brings the
//! old one back, and a release that fails a check changes nothing.

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
    async fn serve(binary: &[u8]) -> Release {
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
        let root: PathBuf = dir.path().to_path_buf();
        let app = axum::Router::new().route(
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
        );
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
