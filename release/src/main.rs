//! `fusion-release`: signs a release of the device. Every artifact gets a
//! minisign signature (`<file>.minisig`, checkable with the standard
//! `minisign -V` tool) and a line in `SHA256SUMS`; the release gets a
//! manifest (`manifest.json`: version, expiry, and per artifact its target,
//! size, digest and signature), itself signed (`manifest.json.minisig`).
//! An app serves that folder (`example-web --releases DIR`) and
//! `fusion-host update` installs from it. See `docs/RELEASES.md`.
//!
//! ```text
//! fusion-release keygen --out keys/ --name release
//! fusion-release sign --dir dist/ --version 0.2.0 --key keys/release.key
//! ```
//!
//! The key: `--key FILE`, else `FUSION_RELEASE_KEY` (the key file's text),
//! with `FUSION_RELEASE_KEY_PASSWORD` for an encrypted one. It is never
//! printed or passed on a command line by the scripts.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fusion_protocol::{Artifact, ArtifactKind, MANIFEST_FORMAT, ReleaseManifest, is_plain_file_name};
use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox};
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(name = "fusion-release", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make a key pair: NAME.key (secret; encrypted with
    /// FUSION_RELEASE_KEY_PASSWORD when set: keep it in a secret store) and
    /// NAME.pub (what a device build trusts).
    Keygen {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "release")]
        name: String,
        /// The secret key's comment (shown by `minisign`).
        #[arg(long, default_value = "fusion-host release key")]
        comment: String,
    },
    /// Sign every `fusion-host-VERSION-TARGET[.exe|.msi]` in DIR and write
    /// SHA256SUMS, manifest.json and manifest.json.minisig there.
    Sign {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        version: String,
        /// The secret key file; else FUSION_RELEASE_KEY holds its text.
        #[arg(long)]
        key: Option<PathBuf>,
        /// How long devices accept the manifest.
        #[arg(long, default_value_t = 30)]
        valid_days: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Keygen { out, name, comment } => keygen(&out, &name, &comment),
        Command::Sign {
            dir,
            version,
            key,
            valid_days,
        } => {
            let sk = secret_key(key.as_deref())?;
            let manifest = sign(&dir, &version, &sk, Duration::from_secs(valid_days * 86_400))?;
            for a in &manifest.artifacts {
                println!(
                    "signed {} ({}, {} bytes, sha256 {})",
                    a.file, a.target, a.size, a.sha256
                );
            }
            println!(
                "wrote {}/manifest.json (version {}, valid {valid_days} days)",
                dir.display(),
                manifest.version
            );
            Ok(())
        }
    }
}

fn keygen(out: &Path, name: &str, comment: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // Encrypted with FUSION_RELEASE_KEY_PASSWORD when it is set; without
    // one, the secret key is stored in the clear (for a secret store).
    let password = std::env::var("FUSION_RELEASE_KEY_PASSWORD").unwrap_or_default();
    let KeyPair { pk, sk } = KeyPair::generate_encrypted_keypair(Some(password))?;
    let (secret, public) = (out.join(format!("{name}.key")), out.join(format!("{name}.pub")));
    for path in [&secret, &public] {
        if path.exists() {
            bail!("{} exists; keys are never overwritten", path.display());
        }
    }
    std::fs::write(&secret, sk.to_box(Some(comment))?.to_string())?;
    std::fs::write(&public, pk.to_box()?.to_string())?;
    println!("wrote {} (secret) and {}", secret.display(), public.display());
    Ok(())
}

/// The signing key: from `path`, else `FUSION_RELEASE_KEY`.
fn secret_key(path: Option<&Path>) -> anyhow::Result<SecretKey> {
    let text = match path {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read the key {}", p.display()))?
        }
        None => std::env::var("FUSION_RELEASE_KEY")
            .context("no key: pass --key FILE or set FUSION_RELEASE_KEY to the secret key's text")?,
    };
    // An empty password opens an unencrypted key and never prompts.
    let password = std::env::var("FUSION_RELEASE_KEY_PASSWORD").unwrap_or_default();
    let sk = SecretKeyBox::from_string(&text)
        .and_then(|b| b.into_secret_key(Some(password)))
        .context("the release key cannot be read (a minisign secret key; set FUSION_RELEASE_KEY_PASSWORD if it is encrypted)")?;
    Ok(sk)
}

/// What an artifact's file name says: `fusion-host-VERSION-TARGET` is the
/// binary, with `.exe` on Windows; `.msi` is the Windows installer.
fn classify(name: &str, version: &str) -> Option<(String, ArtifactKind)> {
    let rest = name.strip_prefix(&format!("fusion-host-{version}-"))?;
    if let Some(target) = rest.strip_suffix(".msi") {
        return Some((target.to_string(), ArtifactKind::Installer));
    }
    let target = rest.strip_suffix(".exe").unwrap_or(rest);
    (!target.contains('.')).then(|| (target.to_string(), ArtifactKind::Binary))
}

/// Signs the release in `dir` and writes its manifest.
fn sign(dir: &Path, version: &str, sk: &SecretKey, valid: Duration) -> anyhow::Result<ReleaseManifest> {
    semver_like(version)?;
    let pk = PublicKey::from_secret_key(sk)?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| classify(n, version).is_some())
        .collect();
    names.sort();
    if names.is_empty() {
        bail!(
            "no artifacts named fusion-host-{version}-TARGET in {}",
            dir.display()
        );
    }
    let mut artifacts = Vec::new();
    let mut sums = String::new();
    for name in names {
        let (target, kind) = classify(&name, version).expect("filtered above");
        if !is_plain_file_name(&name) {
            bail!("{name} is not a plain file name");
        }
        let bytes = std::fs::read(dir.join(&name))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let comment = format!("fusion-host {version} {target} {name}");
        let signature = minisign::sign(Some(&pk), sk, Cursor::new(&bytes), Some(&comment), None)?.to_string();
        std::fs::write(dir.join(format!("{name}.minisig")), &signature)?;
        sums.push_str(&format!("{sha256}  {name}\n"));
        artifacts.push(Artifact {
            target,
            kind,
            file: name,
            size: bytes.len() as u64,
            sha256,
            signature,
        });
    }
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    let manifest = ReleaseManifest {
        format: MANIFEST_FORMAT,
        version: version.to_string(),
        issued_at: now.as_secs(),
        expires_at: (now + valid).as_secs(),
        artifacts,
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    let comment = format!(
        "fusion-host {version} manifest, expires at {}",
        manifest.expires_at
    );
    let signature = minisign::sign(Some(&pk), sk, Cursor::new(&json), Some(&comment), None)?;
    std::fs::write(dir.join("SHA256SUMS"), sums)?;
    std::fs::write(dir.join("manifest.json"), &json)?;
    std::fs::write(dir.join("manifest.json.minisig"), signature.to_string())?;
    Ok(manifest)
}

/// `MAJOR.MINOR.PATCH`, optionally with a pre-release: what devices compare.
fn semver_like(version: &str) -> anyhow::Result<()> {
    let core = version.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        bail!("the version {version:?} is not MAJOR.MINOR.PATCH");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key() -> SecretKey {
        let text = include_str!("../keys/test.key");
        SecretKeyBox::from_string(text)
            .unwrap()
            .into_secret_key(Some(String::new()))
            .unwrap()
    }

    #[test]
    fn a_signed_release_checks_with_minisign_and_its_sums() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fusion-host-1.2.3-x86_64-linux"), b"linux binary").unwrap();
        std::fs::write(
            dir.path().join("fusion-host-1.2.3-x86_64-windows.exe"),
            b"windows binary",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("fusion-host-1.2.3-x86_64-windows.msi"),
            b"installer",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not an artifact").unwrap();
        let manifest = sign(dir.path(), "1.2.3", &test_key(), Duration::from_secs(3600)).unwrap();
        let kinds: Vec<(&str, ArtifactKind)> = manifest
            .artifacts
            .iter()
            .map(|a| (a.target.as_str(), a.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("x86_64-linux", ArtifactKind::Binary),
                ("x86_64-windows", ArtifactKind::Binary),
                ("x86_64-windows", ArtifactKind::Installer),
            ]
        );
        assert_eq!(manifest.expires_at - manifest.issued_at, 3600);
        // What a user or a device checks, with the public key alone.
        let pk = minisign_verify::PublicKey::decode(include_str!("../keys/test.pub")).unwrap();
        let json = std::fs::read(dir.path().join("manifest.json")).unwrap();
        let sig = std::fs::read_to_string(dir.path().join("manifest.json.minisig")).unwrap();
        pk.verify(&json, &minisign_verify::Signature::decode(&sig).unwrap(), false)
            .unwrap();
        let linux = std::fs::read(dir.path().join("fusion-host-1.2.3-x86_64-linux")).unwrap();
        let sig = minisign_verify::Signature::decode(&manifest.artifacts[0].signature).unwrap();
        pk.verify(&linux, &sig, false).unwrap();
        assert!(pk.verify(b"tampered", &sig, false).is_err());
        let sums = std::fs::read_to_string(dir.path().join("SHA256SUMS")).unwrap();
        assert!(sums.contains(&format!(
            "{}  fusion-host-1.2.3-x86_64-linux\n",
            manifest.artifacts[0].sha256
        )));
    }

    #[test]
    fn names_and_versions_are_checked() {
        assert_eq!(
            classify("fusion-host-1.0.0-x86_64-linux", "1.0.0"),
            Some(("x86_64-linux".into(), ArtifactKind::Binary))
        );
        assert_eq!(classify("fusion-host-1.0.0-x86_64-linux.minisig", "1.0.0"), None);
        assert_eq!(classify("fusion-host-0.9.0-x86_64-linux", "1.0.0"), None);
        assert!(semver_like("1.2.3-rc.1").is_ok());
        assert!(semver_like("1.2").is_err());
        let dir = tempfile::tempdir().unwrap();
        assert!(sign(dir.path(), "1.0.0", &test_key(), Duration::from_secs(60)).is_err());
    }

    /// The standard `minisign` tool accepts what this signs, where it is
    /// installed (Debian's `minisign` package).
    #[test]
    fn the_minisign_tool_verifies_the_signatures() {
        if std::process::Command::new("minisign").arg("-v").output().is_err() {
            eprintln!("skipped: the minisign tool is not installed (apt-get install minisign)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("fusion-host-2.0.0-x86_64-linux");
        std::fs::write(&file, b"a build").unwrap();
        sign(dir.path(), "2.0.0", &test_key(), Duration::from_secs(60)).unwrap();
        let pubkey = concat!(env!("CARGO_MANIFEST_DIR"), "/keys/test.pub");
        for signed in [file.clone(), dir.path().join("manifest.json")] {
            let out = std::process::Command::new("minisign")
                .arg("-Vm")
                .arg(&signed)
                .args(["-p", pubkey])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "minisign -V {}: {}{}",
                signed.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(&file, b"another build").unwrap();
        let out = std::process::Command::new("minisign")
            .arg("-Vm")
            .arg(&file)
            .args(["-p", pubkey])
            .output()
            .unwrap();
        assert!(!out.status.success(), "a changed file fails minisign -V");
    }

    /// The installer `scripts/release` builds: per user, no elevation, the
    /// program, a PATH shim and a Start-menu entry, and an uninstall that
    /// removes the device's log-on task first (read back with msiinfo).
    #[test]
    fn the_windows_installer_is_per_user_and_complete() {
        let have = |tool: &str| std::process::Command::new(tool).arg("--version").output().is_ok();
        if !have("wixl") || !have("msiinfo") {
            eprintln!("skipped: wixl and msiinfo are not installed (apt-get install wixl msitools)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let packaging = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/windows");
        for file in ["fusion-host.wxs", "fusion-host.cmd"] {
            std::fs::copy(format!("{packaging}/{file}"), dir.path().join(file)).unwrap();
        }
        std::fs::write(dir.path().join("fusion-host.exe"), b"MZ not really a program").unwrap();
        let run = |args: &[&str]| {
            let out = std::process::Command::new(args[0])
                .args(&args[1..])
                .current_dir(dir.path())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&[
            "wixl",
            "-a",
            "x64",
            "-D",
            "Version=1.2.3",
            "-D",
            "Exe=fusion-host.exe",
            "-D",
            "Shim=fusion-host.cmd",
            "-o",
            "out.msi",
            "fusion-host.wxs",
        ]);
        let files = run(&["msiinfo", "export", "out.msi", "File"]);
        assert!(
            files.contains("fusion-host.exe") && files.contains("fusion-host.cmd"),
            "{files}"
        );
        let dirs = run(&["msiinfo", "export", "out.msi", "Directory"]);
        for needle in [
            "INSTALLDIR\tProgramsFolder\tfusion-host",
            "ProgramsFolder\tLocalAppDataFolder\tPrograms",
            "WindowsAppsFolder\tMicrosoftFolder\tWindowsApps",
        ] {
            assert!(dirs.contains(needle), "{needle} in {dirs}");
        }
        assert!(run(&["msiinfo", "export", "out.msi", "Shortcut"]).contains("fusion-host.exe"));
        let properties = run(&["msiinfo", "export", "out.msi", "Property"]);
        assert!(properties.contains("MSIINSTALLPERUSER\t1") && properties.contains("ProductVersion\t1.2.3"));
        // 18 (a program the package installs) + 64 (its exit code ignored) +
        // 1024 (deferred); not 2048, so it runs as the user, whose task it is.
        assert!(
            run(&["msiinfo", "export", "out.msi", "CustomAction"])
                .contains("RemoveLogOnTask\t1106\tFusionHostExe\tservice uninstall"),
        );
        let sequence = run(&["msiinfo", "export", "out.msi", "InstallExecuteSequence"]);
        let at = |action: &str| -> u32 {
            let line = sequence
                .lines()
                .find(|l| l.starts_with(&format!("{action}\t")))
                .unwrap_or_else(|| panic!("{action} in {sequence}"));
            line.rsplit('\t').next().unwrap().trim().parse().unwrap()
        };
        assert!(at("RemoveLogOnTask") < at("RemoveFiles"), "{sequence}");
        assert!(
            sequence.contains("RemoveLogOnTask\tREMOVE=\"ALL\" AND NOT UPGRADINGPRODUCTCODE\t"),
            "{sequence}"
        );
        // Word count 10: compressed (2) and no elevation needed (8).
        assert!(run(&["msiinfo", "suminfo", "out.msi"]).contains("Source: 10 "));
    }
}
