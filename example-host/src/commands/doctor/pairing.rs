//! The pairing: credentials present, not revoked, readable by this user only.

use std::path::Path;

use fusion_host::Credentials;

use super::Checks;

/// Checks the stored credentials and returns them, for the token check.
pub(super) fn check(dir: &Path, checks: &mut Checks) -> Option<Credentials> {
    let credentials = Credentials::load(dir).ok().flatten();
    match &credentials {
        Some(c) if c.revoked => checks.add(
            "paired",
            false,
            format!("device '{}' ({}) was revoked on the server", c.name, c.device_id),
            Some("pair it again: fusion-host --server URL --code <new code from /devices>"),
        ),
        Some(c) => {
            let mode_ok = credentials_private(dir);
            checks.add(
                "paired",
                true,
                format!("device '{}' ({}) of {}", c.name, c.device_id, c.owner),
                None,
            );
            let file = dir.join(fusion_host::CREDENTIALS_FILE).display().to_string();
            checks.add(
                "credentials file",
                mode_ok,
                if cfg!(unix) {
                    file
                } else {
                    // Restricted when written; not read back: say so
                    // rather than claim it.
                    format!("{file} (made readable by this user only when it was written; not read back)")
                },
                (!mode_ok).then_some("run `chmod 600` on it: other users can read the token"),
            );
        }
        None => checks.add(
            "paired",
            false,
            "no credentials".into(),
            Some("run `fusion-host enroll --server URL --code CODE`"),
        ),
    }
    credentials
}

#[cfg(unix)]
fn credentials_private(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir.join(fusion_host::CREDENTIALS_FILE))
        .is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

/// Windows: the file sits in the user's profile (`%APPDATA%`), whose ACL
/// admits only the user, SYSTEM and administrators; no stricter ACL is set
/// yet, and this check does not read it.
#[cfg(not(unix))]
fn credentials_private(_: &Path) -> bool {
    true
}
