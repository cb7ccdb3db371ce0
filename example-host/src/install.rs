//! Installing a release, for `fusion-host update` and automatic updates:
//! reading the server's offer, downloading a verified binary, putting it
//! in place of this one while keeping the one it replaces, and the records
//! in `<config>/updates/` that let a new version prove itself or be rolled
//! back.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, anyhow};
use fusion_host::Http;
use fusion_protocol::{Artifact, RELEASES_PATH, ReleaseManifest, current_target};
use minisign_verify::PublicKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fail::Fail;
use crate::releases::{self, Offer, Refusal};
use crate::settings::VERSION;

/// The largest manifest read.
const MANIFEST_LIMIT: usize = 1 << 20;

/// How long a version that failed is not tried again.
pub(crate) const RETRY_FAILED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// A server's releases, read and verified.
pub(crate) struct Releases {
    base: String,
    keys: Vec<PublicKey>,
    /// The manifest, signed by a trusted key and not expired.
    pub(crate) manifest: ReleaseManifest,
    /// Whether this build trusts only the repository's test key.
    pub(crate) test_key_only: bool,
}

/// What a server offers this binary.
pub(crate) enum Offered<'r> {
    /// Nothing newer: the same version, or the very binary running.
    UpToDate,
    /// A newer release, with its binary for this platform.
    Newer(&'r Artifact),
}

impl Releases {
    /// Reads and verifies `server`'s manifest.
    pub(crate) async fn read(http: &Http, server: &str) -> Result<Releases, Fail> {
        let base = format!("{}{RELEASES_PATH}", server.trim_end_matches('/'));
        let (keys, test_key_only) = releases::trusted_keys();
        let json = fetch(http, &format!("{base}/manifest.json"), MANIFEST_LIMIT).await?;
        let signature = fetch(http, &format!("{base}/manifest.json.minisig"), 4096).await?;
        let signature = String::from_utf8_lossy(&signature);
        let manifest =
            releases::verify_manifest(&json, &signature, &keys, SystemTime::now()).map_err(refused)?;
        Ok(Releases {
            base,
            keys,
            manifest,
            test_key_only,
        })
    }

    /// What the manifest offers this binary. The binary the manifest names
    /// for this platform being the one running counts as up to date,
    /// whatever version either says, so a device never installs itself
    /// again and again.
    pub(crate) fn offer(&self) -> Result<Offered<'_>, Fail> {
        match releases::offer(&self.manifest, VERSION, &current_target()).map_err(refused)? {
            Offer::UpToDate => Ok(Offered::UpToDate),
            Offer::Newer(artifact) if running_sha256().as_deref() == Some(artifact.sha256.as_str()) => {
                Ok(Offered::UpToDate)
            }
            Offer::Newer(artifact) => Ok(Offered::Newer(artifact)),
        }
    }

    /// Downloads `artifact` and checks its size, digest and signature.
    pub(crate) async fn download(&self, http: &Http, artifact: &Artifact) -> Result<Vec<u8>, Fail> {
        let url = format!("{}/{}", self.base, artifact.file);
        // One byte past the size is enough to know it is too long.
        let bytes = fetch(http, &url, artifact.size as usize + 1).await?;
        releases::verify_artifact(&bytes, artifact, &self.keys).map_err(refused)?;
        Ok(bytes)
    }
}

/// The SHA-256 of the running binary, when it can be read.
fn running_sha256() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let mut file = std::fs::File::open(exe).ok()?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).ok()?;
    Some(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn refused(r: Refusal) -> Fail {
    Fail {
        code: 1,
        error: r.into(),
    }
}

/// Reads `url` whole, refusing more than `limit` bytes.
async fn fetch(http: &Http, url: &str, limit: usize) -> Result<Vec<u8>, Fail> {
    let mut response = match http.client().get(url).send().await {
        Ok(r) => r,
        Err(e) => return Err(http.explain(e).await.into()),
    };
    if response.status() == 404 {
        return Err(anyhow!("{url} does not exist: this server offers no releases").into());
    }
    if !response.status().is_success() {
        return Err(anyhow!("{url} answered HTTP {}", response.status().as_u16()).into());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.with_context(|| format!("reading {url}"))? {
        if body.len() + chunk.len() > limit {
            return Err(Refusal {
                code: "size_mismatch",
                message: format!("{url} is longer than the {limit} bytes expected"),
            }
            .into());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The binaries kept in the configuration folder: the one the last update
/// replaced, with its version, for `--rollback` and automatic roll-back.
pub(crate) struct Kept {
    dir: PathBuf,
}

impl Kept {
    pub(crate) fn new(config_dir: &Path) -> Self {
        Kept {
            dir: config_dir.join("updates"),
        }
    }

    fn previous(&self) -> PathBuf {
        self.dir.join(format!("previous{}", std::env::consts::EXE_SUFFIX))
    }

    fn previous_version(&self) -> PathBuf {
        self.dir.join("previous.version")
    }

    /// Writes `bytes` as an executable file in the kept folder.
    fn stage(&self, name: &str, bytes: &[u8]) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(path)
    }

    /// Runs `bytes` as a program before it replaces anything: it must start
    /// on this machine and say it is fusion-host. Catches a build for
    /// another platform or C library, or a damaged one, that a signature
    /// cannot.
    pub(crate) async fn try_out(&self, bytes: &[u8]) -> anyhow::Result<()> {
        let staged = self.stage(&format!("trying{}", std::env::consts::EXE_SUFFIX), bytes)?;
        let run = tokio::process::Command::new(&staged)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let outcome = tokio::time::timeout(Duration::from_secs(30), run).await;
        let _ = std::fs::remove_file(&staged);
        let output = match outcome {
            Err(_) => anyhow::bail!("the new binary did not answer --version within 30 s"),
            Ok(Err(e)) => anyhow::bail!("the new binary does not start on this machine: {e}"),
            Ok(Ok(output)) => output,
        };
        let said = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !said.starts_with("fusion-host ") {
            anyhow::bail!(
                "the new binary does not run here ({}: {})",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// Keeps this binary as the previous one, then puts `bytes` in its
    /// place (on Windows the running `.exe` is renamed aside first).
    pub(crate) fn install(&self, bytes: &[u8], version: &str) -> Result<(), Fail> {
        let exe = std::env::current_exe().context("cannot tell where this binary is")?;
        let staged = self.stage(&format!("new{}", std::env::consts::EXE_SUFFIX), bytes)?;
        let kept = self.dir.join(format!("kept{}", std::env::consts::EXE_SUFFIX));
        std::fs::copy(&exe, &kept).with_context(|| format!("cannot keep a copy of {}", exe.display()))?;
        self_replace::self_replace(&staged)
            .with_context(|| format!("cannot replace {} (is its folder writable?)", exe.display()))?;
        let _ = std::fs::remove_file(&staged);
        std::fs::rename(&kept, self.previous()).context("cannot keep the previous binary")?;
        std::fs::write(self.previous_version(), VERSION)?;
        tracing::info!(from = VERSION, to = version, "binary replaced");
        Ok(())
    }

    /// Swaps this binary and the kept one (a second roll-back undoes the
    /// first); returns the version now in place.
    pub(crate) fn roll_back(&self) -> Result<String, Fail> {
        let previous = self.previous();
        let Ok(bytes) = std::fs::read(&previous) else {
            return Err(Fail {
                code: crate::fail::exit::USAGE,
                error: anyhow!(
                    "nothing to roll back to: no update replaced this binary ({} does not exist)",
                    previous.display()
                ),
            });
        };
        let version = std::fs::read_to_string(self.previous_version()).unwrap_or_else(|_| "?".into());
        self.install(&bytes, &version)?;
        Trial::clear(&self.dir);
        Ok(version)
    }
}

/// `updates/trial.json`: an automatic update installed `to` and restarted;
/// until that version connects, it is on trial. A version that does not
/// connect within the trial, or fails to start three times, is rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Trial {
    pub(crate) from: String,
    pub(crate) to: String,
    /// How many times the new version started.
    pub(crate) starts: u32,
}

/// Starts of a version on trial before it is rolled back without waiting.
pub(crate) const TRIAL_STARTS: u32 = 3;

impl Trial {
    fn path(updates: &Path) -> PathBuf {
        updates.join("trial.json")
    }

    pub(crate) fn begin(config_dir: &Path, from: &str, to: &str) -> anyhow::Result<()> {
        let trial = Trial {
            from: from.into(),
            to: to.into(),
            starts: 0,
        };
        let path = Self::path(&config_dir.join("updates"));
        std::fs::write(&path, serde_json::to_vec(&trial)?)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The trial in progress.
    pub(crate) fn current(config_dir: &Path) -> Option<Trial> {
        serde_json::from_slice(&std::fs::read(Self::path(&config_dir.join("updates"))).ok()?).ok()
    }

    /// The trial in progress, counted as one more start.
    pub(crate) fn started(config_dir: &Path) -> Option<Trial> {
        let path = Self::path(&config_dir.join("updates"));
        let mut trial: Trial = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        trial.starts += 1;
        let _ = std::fs::write(&path, serde_json::to_vec(&trial).unwrap_or_default());
        Some(trial)
    }

    pub(crate) fn end(config_dir: &Path) {
        Self::clear(&config_dir.join("updates"));
    }

    fn clear(updates: &Path) {
        let _ = std::fs::remove_file(Self::path(updates));
    }
}

/// `updates/failed.json`: the last version an automatic update gave up,
/// why and when; not tried again for [`RETRY_FAILED_AFTER`], and told to
/// the server once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failed {
    pub(crate) from: String,
    pub(crate) version: String,
    pub(crate) reason: String,
    /// Unix seconds.
    pub(crate) at: u64,
    /// Whether it was rolled back (it had replaced this binary), or
    /// stopped before anything was replaced.
    pub(crate) rolled_back: bool,
    /// Whether the server was told.
    pub(crate) reported: bool,
}

impl Failed {
    fn path(config_dir: &Path) -> PathBuf {
        config_dir.join("updates").join("failed.json")
    }

    pub(crate) fn record(config_dir: &Path, from: &str, version: &str, reason: &str, rolled_back: bool) {
        let failed = Failed {
            from: from.into(),
            version: version.into(),
            reason: reason.into(),
            at: unix_now(),
            rolled_back,
            reported: false,
        };
        failed.save(config_dir);
    }

    pub(crate) fn save(&self, config_dir: &Path) {
        let path = Self::path(config_dir);
        let _ = std::fs::create_dir_all(config_dir.join("updates"));
        if let Err(e) = std::fs::write(&path, serde_json::to_vec(self).unwrap_or_default()) {
            tracing::warn!(path = %path.display(), error = %e, "cannot record the failed update");
        }
    }

    pub(crate) fn load(config_dir: &Path) -> Option<Failed> {
        serde_json::from_slice(&std::fs::read(Self::path(config_dir)).ok()?).ok()
    }

    /// Whether `version` failed recently enough not to be tried again.
    pub(crate) fn holds_back(&self, version: &str) -> bool {
        self.version == version && unix_now().saturating_sub(self.at) < RETRY_FAILED_AFTER.as_secs()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
