//! `fusion-host update`: install the release the server offers, verified
//! first (see `releases.rs` and `install.rs`), keeping the binary it
//! replaces for `--rollback`. The download goes through the same client as
//! the stream: the same TLS roots, extra CA and proxy.

use fusion_host::{Credentials, Http};
use fusion_protocol::{Artifact, ReleaseManifest};
use serde_json::json;

use crate::cli::Global;
use crate::fail::Fail;
use crate::install::{Kept, Offered, Releases, Trial};
use crate::settings::{self, ConfigFile, VERSION};

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
        let version = kept.roll_back()?;
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
        return Ok(Updated::Replaced {
            from: VERSION.to_string(),
            to: version,
        });
    }
    let server = match args.server {
        Some(s) => s.to_string(),
        None => match Credentials::load(&dir)? {
            Some(c) => c.server,
            None => settings::server(None, &config)?,
        },
    };
    let http = Http::new(&server, settings::ca_cert(global, &config).as_deref(), VERSION)?;
    let releases = Releases::read(&http, &server).await?;
    if releases.test_key_only {
        eprintln!(
            "! this build trusts only the repository's test key (built without FUSION_RELEASE_PUBKEYS)"
        );
    }
    let manifest = &releases.manifest;
    let artifact = match releases.offer()? {
        Offered::UpToDate => {
            say(global, "up_to_date", manifest, None);
            return Ok(Updated::Nothing);
        }
        Offered::Newer(artifact) => artifact,
    };
    if args.check {
        say(global, "available", manifest, Some(artifact));
        return Ok(Updated::Nothing);
    }
    let bytes = releases.download(&http, artifact).await?;
    kept.install(&bytes, &manifest.version)?;
    // Installed by hand: no automatic update is on trial any more.
    Trial::end(&dir);
    say(global, "updated", manifest, Some(artifact));
    Ok(Updated::Replaced {
        from: VERSION.to_string(),
        to: manifest.version.clone(),
    })
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
