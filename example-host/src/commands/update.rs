//! `fusion-host update`: install the release the server offers, verified
//! first (see `releases.rs`), keeping the binary it replaces for
//! `--rollback`. The download goes through the same client as the stream:
//! the same TLS roots, extra CA and proxy.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use fusion_host::{Credentials, Http};
use fusion_protocol::{Artifact, RELEASES_PATH, ReleaseManifest, current_target};
use serde_json::json;

use crate::cli::Global;
use crate::fail::{Fail, exit};
use crate::releases::{self, Offer, Refusal};
use crate::settings::{self, ConfigFile, VERSION};

/// The largest manifest read.
const MANIFEST_LIMIT: usize = 1 << 20;

/// `fusion-host update`'s options.
#[derive(Debug, Default)]
pub(crate) struct UpdateArgs<'a> {
    /// Only say what is offered.
    pub(crate) check: bool,
    /// Go back to the binary the last update replaced.
    pub(crate) rollback: bool,
    /// The server to ask instead of the paired one.
    pub(crate) server: Option<&'a str>,
}

/// What `update` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Updated {
    /// Nothing to do, or only checked.
    Nothing,
    /// This binary was replaced: a running device must restart to use it.
    Replaced { from: String, to: String },
}

/// `fusion-host update [--check | --rollback]`.
pub(crate) async fn update(global: &Global, args: &UpdateArgs<'_>) -> Result<Updated, Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let kept = Kept::new(&dir);
    if args.rollback {
        return kept.roll_back(global);
    }
    let server = match args.server {
        Some(s) => s.to_string(),
        None => match Credentials::load(&dir)? {
            Some(c) => c.server,
            None => settings::server(None, &config)?,
        },
    };
    let http = Http::new(&server, settings::ca_cert(global, &config).as_deref(), VERSION)?;
    let base = format!("{}{RELEASES_PATH}", server.trim_end_matches('/'));
    let (keys, test_only) = releases::trusted_keys();
    if test_only {
        eprintln!(
            "! this build trusts only the repository's test key (built without FUSION_RELEASE_PUBKEYS)"
        );
    }
    let json = fetch(&http, &format!("{base}/manifest.json"), MANIFEST_LIMIT).await?;
    let signature = fetch(&http, &format!("{base}/manifest.json.minisig"), 4096).await?;
    let signature = String::from_utf8_lossy(&signature);
    let manifest = releases::verify_manifest(&json, &signature, &keys, SystemTime::now()).map_err(refused)?;
    let target = current_target();
    let artifact = match releases::offer(&manifest, VERSION, &target).map_err(refused)? {
        Offer::UpToDate => {
            say(global, "up_to_date", &manifest, None);
            return Ok(Updated::Nothing);
        }
        Offer::Newer(artifact) => artifact,
    };
    if args.check {
        say(global, "available", &manifest, Some(artifact));
        return Ok(Updated::Nothing);
    }
    let url = format!("{base}/{}", artifact.file);
    // One byte past the size is enough to know it is too long.
    let bytes = fetch(&http, &url, artifact.size as usize + 1).await?;
    releases::verify_artifact(&bytes, artifact, &keys).map_err(refused)?;
    kept.install(&bytes, &manifest.version)?;
    say(global, "updated", &manifest, Some(artifact));
    Ok(Updated::Replaced {
        from: VERSION.to_string(),
        to: manifest.version.clone(),
    })
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

fn say(global: &Global, status: &str, manifest: &ReleaseManifest, artifact: Option<&Artifact>) {
    if global.json {
        println!(
            "{}",
            json!({ "event": "update", "status": status, "current": VERSION, "offered": manifest.version,
                    "file": artifact.map(|a| &a.file), "sha256": artifact.map(|a| &a.sha256) })
        );
        return;
    }
    match status {
        "up_to_date" => println!("✓ fusion-host {VERSION} is the version the server offers"),
        "available" => println!(
            "fusion-host {} is available (this is {VERSION}); `fusion-host update` installs it",
            manifest.version
        ),
        _ => println!(
            "✓ updated fusion-host {VERSION} → {} (verified: signature, SHA-256 {}); `fusion-host update --rollback` goes back",
            manifest.version,
            artifact.map_or("", |a| a.sha256.as_str())
        ),
    }
}

/// The binaries `update` keeps in the configuration folder: the one it
/// replaced last, with its version, for `--rollback`.
struct Kept {
    dir: PathBuf,
}

impl Kept {
    fn new(config_dir: &Path) -> Self {
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

    /// Keeps this binary as the previous one, then puts `bytes` in its
    /// place (on Windows the running `.exe` is renamed aside first).
    fn install(&self, bytes: &[u8], version: &str) -> Result<(), Fail> {
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

    /// Swaps this binary and the kept one: a second rollback undoes the first.
    fn roll_back(&self, global: &Global) -> Result<Updated, Fail> {
        let previous = self.previous();
        let Ok(bytes) = std::fs::read(&previous) else {
            return Err(Fail {
                code: exit::USAGE,
                error: anyhow!(
                    "nothing to roll back to: no update replaced this binary ({} does not exist)",
                    previous.display()
                ),
            });
        };
        let version = std::fs::read_to_string(self.previous_version()).unwrap_or_else(|_| "?".into());
        self.install(&bytes, &version)?;
        if global.json {
            println!(
                "{}",
                json!({ "event": "update", "status": "rolled_back", "from": VERSION, "to": version })
            );
        } else {
            println!(
                "✓ rolled back fusion-host {VERSION} → {version}; `fusion-host update --rollback` again undoes it"
            );
        }
        Ok(Updated::Replaced {
            from: VERSION.to_string(),
            to: version,
        })
    }
}
