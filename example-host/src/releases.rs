//! What `fusion-host update` trusts and checks before it replaces anything:
//! the manifest's minisign signature by a key this build trusts, its format
//! and expiry, a version newer than this one, and the artifact's size,
//! SHA-256 and own signature. Every refusal has a stable code and says
//! what was found; nothing is installed unless all of it holds.

use std::fmt;
use std::time::SystemTime;

use fusion_protocol::{Artifact, MANIFEST_FORMAT, ReleaseManifest, is_plain_file_name};
use minisign_verify::{Error as SigError, PublicKey, Signature};
use sha2::{Digest, Sha256};

/// The public keys a release build trusts, given when it is built: one
/// minisign public key per line (or comma), so a new key can be added
/// before the old one is retired.
const RELEASE_KEYS: Option<&str> = option_env!("FUSION_RELEASE_PUBKEYS");

/// The repository's test-only key, trusted only by builds given no release
/// keys (development and tests).
const TEST_KEY: &str = include_str!("../../release/keys/test.pub");

/// The keys this build trusts, and whether they are only the test key.
pub(crate) fn trusted_keys() -> (Vec<PublicKey>, bool) {
    let given: Vec<PublicKey> = RELEASE_KEYS
        .unwrap_or_default()
        .split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with("untrusted comment:"))
        .filter_map(|k| PublicKey::from_base64(k).ok())
        .collect();
    if given.is_empty() {
        let test = PublicKey::decode(TEST_KEY).expect("the repository's test key decodes");
        (vec![test], true)
    } else {
        (given, false)
    }
}

/// Why an update was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// Stable, snake_case.
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}); nothing was changed", self.message, self.code)
    }
}

impl std::error::Error for Refusal {}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        code,
        message: message.into(),
    }
}

/// Checks `signature` over `bytes` with any of `keys`.
fn check_signature(what: &str, bytes: &[u8], signature: &str, keys: &[PublicKey]) -> Result<(), Refusal> {
    let sig = Signature::decode(signature)
        .map_err(|_| refuse("bad_signature", format!("the signature of {what} cannot be read")))?;
    let mut unknown = true;
    for key in keys {
        match key.verify(bytes, &sig, false) {
            Ok(()) => return Ok(()),
            Err(SigError::UnexpectedKeyId) => {}
            Err(_) => unknown = false,
        }
    }
    Err(if unknown {
        refuse(
            "unknown_key",
            format!("{what} is signed with a key this build does not trust"),
        )
    } else {
        refuse(
            "bad_signature",
            format!("the signature of {what} does not match its content"),
        )
    })
}

/// The manifest, once its signature, format and expiry hold.
pub(crate) fn verify_manifest(
    json: &[u8],
    signature: &str,
    keys: &[PublicKey],
    now: SystemTime,
) -> Result<ReleaseManifest, Refusal> {
    check_signature("the release manifest", json, signature, keys)?;
    let manifest: ReleaseManifest = serde_json::from_slice(json).map_err(|e| {
        refuse(
            "invalid_manifest",
            format!("the release manifest cannot be read: {e}"),
        )
    })?;
    if manifest.format != MANIFEST_FORMAT {
        return Err(refuse(
            "invalid_manifest",
            format!(
                "the release manifest is format {}; this version reads format {MANIFEST_FORMAT}",
                manifest.format
            ),
        ));
    }
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now >= manifest.expires_at {
        return Err(refuse(
            "manifest_expired",
            format!(
                "the release manifest of {} expired {} s ago; the server must publish a freshly signed one",
                manifest.version,
                now - manifest.expires_at
            ),
        ));
    }
    Ok(manifest)
}

/// What the manifest offers this build.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer<'m> {
    /// The same version as this one.
    UpToDate,
    /// A newer version, with its binary for this platform.
    Newer(&'m Artifact),
}

/// Compares the manifest's version with `current` and finds its binary for
/// `target`. An older version is refused: a device never goes back unless
/// its user rolls back.
pub(crate) fn offer<'m>(
    manifest: &'m ReleaseManifest,
    current: &str,
    target: &str,
) -> Result<Offer<'m>, Refusal> {
    let parse = |v: &str| {
        semver::Version::parse(v).map_err(|_| refuse("invalid_manifest", format!("{v:?} is not a version")))
    };
    let (offered, running) = (parse(&manifest.version)?, parse(current)?);
    if offered == running {
        return Ok(Offer::UpToDate);
    }
    if offered < running {
        return Err(refuse(
            "downgrade",
            format!("the server offers {offered}, older than this {running}"),
        ));
    }
    let artifact = manifest.binary_for(target).ok_or_else(|| {
        refuse(
            "no_build_for_target",
            format!("release {offered} has no build for {target}"),
        )
    })?;
    if !is_plain_file_name(&artifact.file) {
        return Err(refuse(
            "invalid_manifest",
            format!("the artifact name {:?} is not a plain file name", artifact.file),
        ));
    }
    Ok(Offer::Newer(artifact))
}

/// Checks a downloaded artifact: size, SHA-256, then its signature.
pub(crate) fn verify_artifact(bytes: &[u8], artifact: &Artifact, keys: &[PublicKey]) -> Result<(), Refusal> {
    if bytes.len() as u64 != artifact.size {
        return Err(refuse(
            "size_mismatch",
            format!(
                "{} arrived with {} bytes; the manifest says {}",
                artifact.file,
                bytes.len(),
                artifact.size
            ),
        ));
    }
    let digest: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    if digest != artifact.sha256 {
        return Err(refuse(
            "digest_mismatch",
            format!(
                "{} has SHA-256 {digest}; the manifest says {}",
                artifact.file, artifact.sha256
            ),
        ));
    }
    check_signature(&artifact.file, bytes, &artifact.signature, keys)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use fusion_protocol::ArtifactKind;
    use minisign::{KeyPair, SecretKey, SecretKeyBox};

    use super::*;

    fn test_secret() -> SecretKey {
        SecretKeyBox::from_string(include_str!("../../release/keys/test.key"))
            .unwrap()
            .into_secret_key(Some(String::new()))
            .unwrap()
    }

    fn sign(sk: &SecretKey, bytes: &[u8]) -> String {
        minisign::sign(None, sk, Cursor::new(bytes), None, None)
            .unwrap()
            .to_string()
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// A release of `version` with one binary, signed with `sk`.
    fn release(sk: &SecretKey, version: &str, binary: &[u8]) -> (Vec<u8>, String) {
        let manifest = ReleaseManifest {
            format: MANIFEST_FORMAT,
            version: version.into(),
            issued_at: 1_000,
            expires_at: 2_000,
            artifacts: vec![Artifact {
                target: "x86_64-linux".into(),
                kind: ArtifactKind::Binary,
                file: format!("fusion-host-{version}-x86_64-linux"),
                size: binary.len() as u64,
                sha256: Sha256::digest(binary)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                signature: sign(sk, binary),
            }],
        };
        let json = serde_json::to_vec(&manifest).unwrap();
        let sig = sign(sk, &json);
        (json, sig)
    }

    #[test]
    fn a_good_release_passes_every_check() {
        let (keys, test_only) = trusted_keys();
        assert!(
            test_only,
            "a build without FUSION_RELEASE_PUBKEYS trusts the test key only"
        );
        let (json, sig) = release(&test_secret(), "9.0.0", b"new binary");
        let manifest = verify_manifest(&json, &sig, &keys, at(1_500)).unwrap();
        let Offer::Newer(artifact) = offer(&manifest, "0.1.0", "x86_64-linux").unwrap() else {
            panic!("a newer version")
        };
        verify_artifact(b"new binary", artifact, &keys).unwrap();
        assert_eq!(
            offer(&manifest, "9.0.0", "x86_64-linux").unwrap(),
            Offer::UpToDate
        );
    }

    #[test]
    fn every_break_in_the_chain_is_refused_by_name() {
        let (keys, _) = trusted_keys();
        let sk = test_secret();
        let (json, sig) = release(&sk, "9.0.0", b"new binary");
        let code = |r: Result<ReleaseManifest, Refusal>| r.unwrap_err().code;

        // A manifest changed after signing.
        let mut tampered = json.clone();
        let at_version = tampered.windows(5).position(|w| w == b"9.0.0").unwrap();
        tampered[at_version] = b'8';
        assert_eq!(
            code(verify_manifest(&tampered, &sig, &keys, at(1_500))),
            "bad_signature"
        );
        // Signed by a key this build does not trust.
        let stranger = KeyPair::generate_encrypted_keypair(Some(String::new()))
            .unwrap()
            .sk;
        let (json2, sig2) = release(&stranger, "9.0.0", b"new binary");
        assert_eq!(
            code(verify_manifest(&json2, &sig2, &keys, at(1_500))),
            "unknown_key"
        );
        // Garbage where the signature should be.
        assert_eq!(
            code(verify_manifest(&json, "not a signature", &keys, at(1_500))),
            "bad_signature"
        );
        // Replayed after it expired.
        assert_eq!(
            code(verify_manifest(&json, &sig, &keys, at(2_000))),
            "manifest_expired"
        );

        let manifest = verify_manifest(&json, &sig, &keys, at(1_500)).unwrap();
        // Older than the running version.
        assert_eq!(
            offer(&manifest, "10.0.0", "x86_64-linux").unwrap_err().code,
            "downgrade"
        );
        // No build for this platform.
        assert_eq!(
            offer(&manifest, "0.1.0", "aarch64-macos").unwrap_err().code,
            "no_build_for_target"
        );
        let Offer::Newer(artifact) = offer(&manifest, "0.1.0", "x86_64-linux").unwrap() else {
            panic!("a newer version")
        };
        // Truncated, changed, or swapped for another signed file.
        assert_eq!(
            verify_artifact(b"new bin", artifact, &keys).unwrap_err().code,
            "size_mismatch"
        );
        assert_eq!(
            verify_artifact(b"NEW binary", artifact, &keys).unwrap_err().code,
            "digest_mismatch"
        );
        let mut forged = artifact.clone();
        forged.sha256 = Sha256::digest(b"evil file!")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            verify_artifact(b"evil file!", &forged, &keys).unwrap_err().code,
            "bad_signature"
        );
    }

    #[test]
    fn an_artifact_name_cannot_leave_the_releases_folder() {
        let (keys, _) = trusted_keys();
        let sk = test_secret();
        let mut manifest: ReleaseManifest = {
            let (json, sig) = release(&sk, "9.0.0", b"x");
            verify_manifest(&json, &sig, &keys, at(1_500)).unwrap()
        };
        manifest.artifacts[0].file = "../../etc/passwd".into();
        assert_eq!(
            offer(&manifest, "0.1.0", "x86_64-linux").unwrap_err().code,
            "invalid_manifest"
        );
    }
}
