//! Releases of the device: the signed manifest an app serves at
//! `/releases/manifest.json` (with its minisign signature beside it, at
//! `manifest.json.minisig`), which `fusion-host update` reads. See
//! `docs/RELEASES.md`.

use serde::{Deserialize, Serialize};

/// The manifest format this version writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// Where an app serves the manifest and the artifacts, under its origin.
pub const RELEASES_PATH: &str = "/releases";

/// One release: what it offers, for how long the offer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The release's version (semantic versioning).
    pub version: String,
    /// When it was signed, Unix seconds.
    pub issued_at: u64,
    /// After this (Unix seconds) the manifest is refused, so an old one
    /// cannot be replayed for ever to hold devices back.
    pub expires_at: u64,
    /// Its files, one binary per platform at most.
    pub artifacts: Vec<Artifact>,
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The platform, as [`current_target`] names it: `x86_64-linux`.
    pub target: String,
    /// What the file is.
    pub kind: ArtifactKind,
    /// Its name under [`RELEASES_PATH`]; a plain file name.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, lowercase hex.
    pub sha256: String,
    /// Its minisign signature (the whole `.minisig` file).
    pub signature: String,
}

/// What an artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// The `fusion-host` binary itself, which `update` installs.
    Binary,
    /// A Windows installer (MSI), for people.
    Installer,
}

impl ReleaseManifest {
    /// The binary for `target`, if the release has one.
    pub fn binary_for(&self, target: &str) -> Option<&Artifact> {
        self.artifacts
            .iter()
            .find(|a| a.kind == ArtifactKind::Binary && a.target == target)
    }
}

/// How a device is kept up to date, as its server decides (the app per
/// owner, its operator for everyone) and tells it in `hello`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpdatePolicy {
    /// Whether the device installs a newer release by itself, when no call
    /// is running.
    pub automatic: bool,
    /// The version devices stay on: an automatic update installs only this
    /// version, never one past it. `None`: the newest the server offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// `POST /update` body: a device saying how an automatic update went, for
/// the activity log and the devices page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct UpdateReport {
    /// What happened.
    pub status: UpdateStatus,
    /// The version it ran before.
    pub from: String,
    /// The version it installs, installed, or gave up.
    pub to: String,
    /// For `rolled_back` and `failed`: why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where an automatic update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    /// The new binary is verified and no call is running: the device
    /// stops, swaps its binary and restarts.
    Started,
    /// The new version connected: the update is done.
    Updated,
    /// The new version did not connect in time, so the device went back to
    /// the one before.
    RolledBack,
    /// The update stopped before anything was replaced.
    Failed,
}

impl UpdateStatus {
    /// The wire name: `started`, `updated`, `rolled_back`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::Started => "started",
            UpdateStatus::Updated => "updated",
            UpdateStatus::RolledBack => "rolled_back",
            UpdateStatus::Failed => "failed",
        }
    }
}

/// This build's platform: `<arch>-<os>`, e.g. `x86_64-linux`,
/// `x86_64-windows`, `aarch64-macos`.
pub fn current_target() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Whether `name` may name an artifact: a plain file name, nothing that
/// leaves the releases folder.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'))
}
