//! Handing the device out: `--releases DIR` (a folder `fusion-release sign`
//! wrote) is served under `/releases/` for `fusion-host update` and
//! browsers, and `/download` offers the visitor's platform first, each file
//! with its SHA-256, then how to pair in a line any shell takes.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fusion_protocol::{Artifact, ArtifactKind, RELEASES_PATH, ReleaseManifest, is_plain_file_name};
use maud::{Markup, html};
use tower_http::services::ServeFile;

use crate::auth::MaybeAuthed;
use crate::error::AppError;
use crate::state::AppState;
use crate::views::layout;

/// `/download`, and the release files when there is a folder of them.
pub(crate) fn router(state: AppState, releases: Option<&Path>) -> Router {
    let router = Router::new().route("/download", get(download_page));
    let router = match releases {
        Some(_) => router.route(&format!("{RELEASES_PATH}/{{file}}"), get(release_file)),
        None => router,
    };
    router.with_state(state)
}

/// `GET /releases/{file}`: a plain file name in the folder (no listing, no
/// dot-files, nothing that leaves it), with Last-Modified and ranges for
/// resumed downloads.
async fn release_file(
    State(s): State<AppState>,
    UrlPath(file): UrlPath<String>,
    request: Request,
) -> Response {
    let Some(dir) = s.releases.as_deref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !is_plain_file_name(&file) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match ServeFile::new(dir.join(&file)).try_call(request).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => AppError::internal(format!("cannot read the release file {file}: {e}")).into_response(),
    }
}

/// A visitor's platform, from client hints, else the User-Agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Platform {
    Windows,
    Macos,
    Linux,
}

impl Platform {
    pub(crate) fn of(headers: &HeaderMap) -> Option<Platform> {
        let hint = headers
            .get("sec-ch-ua-platform")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_ascii_lowercase());
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let said = hint.unwrap_or_else(|| agent.to_ascii_lowercase());
        if said.contains("windows") {
            Some(Platform::Windows)
        } else if said.contains("mac") {
            Some(Platform::Macos)
        } else if said.contains("linux") || said.contains("x11") {
            Some(Platform::Linux)
        } else {
            None
        }
    }

    fn name(self) -> &'static str {
        match self {
            Platform::Windows => "Windows",
            Platform::Macos => "macOS",
            Platform::Linux => "Linux",
        }
    }

    /// Whether an artifact's target (`x86_64-windows`) is for this platform.
    fn runs(self, target: &str) -> bool {
        let os = target.rsplit('-').next().unwrap_or_default();
        matches!(
            (self, os),
            (Platform::Windows, "windows") | (Platform::Macos, "macos") | (Platform::Linux, "linux")
        )
    }
}

/// The release in `dir`, as its manifest says (the device checks the
/// signature; the page only lists).
fn manifest(dir: &Path) -> Option<ReleaseManifest> {
    let json = std::fs::read(dir.join("manifest.json")).ok()?;
    serde_json::from_slice(&json).ok()
}

async fn download_page(
    State(s): State<AppState>,
    MaybeAuthed(p): MaybeAuthed,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let platform = Platform::of(&headers);
    let release = match s.releases.clone() {
        Some(dir) => tokio::task::spawn_blocking(move || manifest(&dir))
            .await
            .map_err(|e| AppError::internal(e.to_string()))?,
        None => None,
    };
    let body = html! {
        section.card #download {
            h1 { "Download fusion-host" }
            @match &release {
                None => {
                    p { "This server offers no downloads yet. Build the device from source: "
                        code { "cargo install --path example-host" } "." }
                }
                Some(r) => {
                    p.muted { "Version " (r.version) ", signed with minisign; every file's SHA-256 is below and in "
                        a href=(format!("{RELEASES_PATH}/SHA256SUMS")) { "SHA256SUMS" } "." }
                    (for_platform(platform, r, &s.public_url))
                    h2 { "Every platform" }
                    (artifact_table(&r.artifacts))
                }
            }
        }
        section.card #pair-help {
            h2 { "Then pair it" }
            p { "On " a href="/devices" { "/devices" } ", “Add a device” gives a code; run this line in any terminal (PowerShell, cmd or a shell), in the folder the device may work on:" }
            pre.file { "fusion-host --server " (s.public_url) " --code <the code>" }
            p.muted { "It runs in that terminal. To keep it running in the background and start it at every log-on instead, add " code { "--service" } " (a scheduled task of your user on Windows, a systemd user unit on Linux, a launchd agent on macOS)." }
        }
    };
    Ok(layout("Download", p.as_ref(), body).into_response())
}

/// The visitor's files first, with a line that fetches, checks and installs.
fn for_platform(platform: Option<Platform>, r: &ReleaseManifest, public_url: &str) -> Markup {
    let Some(platform) = platform else {
        return html! { p { "Pick the file for your computer below." } };
    };
    let mine: Vec<&Artifact> = r.artifacts.iter().filter(|a| platform.runs(&a.target)).collect();
    let url = |a: &Artifact| format!("{public_url}{RELEASES_PATH}/{}", a.file);
    let installer = mine.iter().find(|a| a.kind == ArtifactKind::Installer);
    let binary = mine.iter().find(|a| a.kind == ArtifactKind::Binary);
    html! {
        div.proposal #for-you data-platform=(platform.name()) {
            h2 { "For " (platform.name()) }
            @if mine.is_empty() {
                p { "No build for " (platform.name()) " yet. Build it from source: " code { "cargo install --path example-host" } ", or pick another platform's file below." }
            }
            @if let Some(a) = installer {
                p { a.button.primary href=(url(a)) { "Download the installer (" (a.file) ")" } }
                p.muted { "Installs for you only, no administrator needed, into " code { "%LOCALAPPDATA%\\Programs\\fusion-host" } ", on PATH, with a Start-menu entry." }
            }
            @if let Some(a) = binary {
                @match platform {
                    Platform::Windows => {
                        p { "Or the program alone, in PowerShell:" }
                        pre.file { "Invoke-WebRequest " (url(a)) " -OutFile fusion-host.exe\nif ((Get-FileHash fusion-host.exe -Algorithm SHA256).Hash -ne '" (a.sha256.to_uppercase()) "') { Remove-Item fusion-host.exe; 'The download does not match; try again.' }" }
                    }
                    _ => {
                        p { "Download, check and install, in a terminal:" }
                        pre.file { "curl -fLo fusion-host " (url(a)) " \\\n  && echo '" (a.sha256) "  fusion-host' | sha256sum -c - \\\n  && install -m 755 fusion-host ~/.local/bin/fusion-host" }
                    }
                }
            }
        }
    }
}

fn artifact_table(artifacts: &[Artifact]) -> Markup {
    html! {
        table.artifacts {
            thead { tr { th { "Platform" } th { "File" } th { "Size" } th { "SHA-256" } th { "Signature" } } }
            tbody {
                @for a in artifacts {
                    tr data-target=(a.target) {
                        td { (a.target) @if a.kind == ArtifactKind::Installer { " (installer)" } }
                        td { a href=(format!("{RELEASES_PATH}/{}", a.file)) { (a.file) } }
                        td.muted { (format!("{:.1} MB", a.size as f64 / 1e6)) }
                        td { code.digest { (a.sha256) } }
                        td { a href=(format!("{RELEASES_PATH}/{}.minisig", a.file)) { ".minisig" } }
                    }
                }
            }
        }
    }
}

/// The version the served release offers, if there is one.
pub(crate) async fn offered(state: &AppState) -> Option<String> {
    let dir = state.releases.clone()?;
    let release = tokio::task::spawn_blocking(move || manifest(&dir)).await.ok()??;
    Some(release.version)
}

/// Whether `offered` is newer than a device's `running` version; versions
/// that are not semantic versions compare as not newer.
pub(crate) fn is_newer(offered: &str, running: &str) -> bool {
    match (semver::Version::parse(offered), semver::Version::parse(running)) {
        (Ok(offered), Ok(running)) => offered > running,
        _ => false,
    }
}

/// Where `--releases` points, checked at start.
pub(crate) fn check_dir(dir: PathBuf) -> anyhow::Result<PathBuf> {
    if !dir.join("manifest.json").is_file() {
        anyhow::bail!(
            "{} has no manifest.json; sign a release into it with `fusion-release sign` (see docs/RELEASES.md)",
            dir.display()
        );
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn the_platform_comes_from_hints_then_the_agent() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let windows = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36";
        let mac = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15";
        let linux = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36";
        assert_eq!(
            Platform::of(&headers(&[("user-agent", windows)])),
            Some(Platform::Windows)
        );
        assert_eq!(
            Platform::of(&headers(&[("user-agent", mac)])),
            Some(Platform::Macos)
        );
        assert_eq!(
            Platform::of(&headers(&[("user-agent", linux)])),
            Some(Platform::Linux)
        );
        assert_eq!(
            Platform::of(&headers(&[
                ("user-agent", linux),
                ("sec-ch-ua-platform", "\"Windows\"")
            ])),
            Some(Platform::Windows)
        );
        assert_eq!(Platform::of(&headers(&[("user-agent", "curl/8")])), None);
        assert!(Platform::Windows.runs("x86_64-windows") && !Platform::Linux.runs("x86_64-windows"));
    }

    #[test]
    fn newer_is_by_semantic_version() {
        assert!(is_newer("0.10.0", "0.9.1"));
        assert!(!is_newer("0.9.1", "0.9.1"));
        assert!(!is_newer("0.2.0-rc.1", "0.2.0"));
        assert!(!is_newer("garbage", "0.1.0"));
    }
}
