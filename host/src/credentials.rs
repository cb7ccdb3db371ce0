//! The device's credentials file: readable by its user only, written
//! atomically, never logged.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What enrollment leaves on the device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The server's base URL, e.g. `https://app.example.com/api/host`.
    pub server: String,
    /// The server-issued device id.
    pub device_id: String,
    /// The bearer token. Never printed: `Debug` hides it.
    pub token: String,
    /// The user who owns this device.
    pub owner: String,
    /// How the owner is shown to people (an email address), when the server
    /// names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_label: Option<String>,
    /// The device's name.
    pub name: String,
    /// The server refused these credentials as revoked or unknown: they are
    /// kept for reference, but the device must be paired again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoked: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("server", &self.server)
            .field("device_id", &self.device_id)
            .field("token", &"<hidden>")
            .field("owner", &self.owner)
            .field("owner_label", &self.owner_label)
            .field("name", &self.name)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// The file name inside the configuration directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";

impl Credentials {
    /// Who owns the device, in words a person recognises: the owner's label
    /// (an email address) when the server gave one, else the owner id.
    pub fn owner_display(&self) -> &str {
        self.owner_label.as_deref().unwrap_or(&self.owner)
    }

    /// Loads `dir/credentials.json`; `Ok(None)` when the device is not enrolled.
    pub fn load(dir: &Path) -> Result<Option<Credentials>> {
        let path = dir.join(CREDENTIALS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::Credentials {
                path,
                message: format!("not valid credentials ({e})"),
            })
    }

    /// Writes `dir/credentials.json` with mode 0600, atomically: a temporary
    /// file created with that mode (so the token is never readable by others,
    /// not even for a moment), then renamed over the old file.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(CREDENTIALS_FILE);
        let temp = dir.join(format!(".{CREDENTIALS_FILE}.{}", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let _ = std::fs::remove_file(&temp);
        let mut file = options.open(&temp).map_err(io(&temp))?;
        // Owner-only before the token is in it; the rename keeps the ACL.
        #[cfg(windows)]
        if let Err(e) = restrict_to_owner(&temp) {
            tracing::warn!(path = %temp.display(), error = %e, "could not make the credentials file readable by this user only; it keeps the profile folder's access");
        }
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(io(&temp))?;
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        Ok(path)
    }

    /// Deletes the credentials file; `Ok(false)` when there was none.
    pub fn remove(dir: &Path) -> Result<bool> {
        let path = dir.join(CREDENTIALS_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(Error::Io { path, source }),
        }
    }
}

/// `icacls FILE /inheritance:r /grant:r DOMAIN\\user:F`: the Windows analogue
/// of mode 0600. The file stops inheriting the folder's entries
/// (administrators, SYSTEM) and grants this user alone; icacls is Windows'
/// own, run from System32 by its full path, with no shell.
#[cfg(any(windows, test))]
fn owner_only_acl(
    file: &Path,
    system_root: &str,
    domain: Option<&str>,
    user: &str,
) -> (PathBuf, Vec<std::ffi::OsString>) {
    let who = match domain {
        Some(domain) => format!("{domain}\\{user}"),
        None => user.to_string(),
    };
    let program = Path::new(system_root).join("System32").join("icacls.exe");
    let args = vec![
        file.as_os_str().to_owned(),
        "/inheritance:r".into(),
        "/grant:r".into(),
        format!("{who}:F").into(),
    ];
    (program, args)
}

#[cfg(windows)]
fn restrict_to_owner(file: &Path) -> std::io::Result<()> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let user = var("USERNAME").ok_or_else(|| std::io::Error::other("USERNAME is not set"))?;
    let root = var("SystemRoot").unwrap_or_else(|| r"C:\Windows".into());
    let (program, args) = owner_only_acl(file, &root, var("USERDOMAIN").as_deref(), &user);
    let out = std::process::Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "icacls refused: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Credentials {
        Credentials {
            server: "https://example.test/api/host".into(),
            device_id: "dev_1".into(),
            token: "fh_dev_1.secret".into(),
            owner: "alice".into(),
            owner_label: None,
            name: "laptop".into(),
            revoked: false,
        }
    }

    #[test]
    fn round_trips_with_mode_0600_and_hides_the_token() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Credentials::load(dir.path()).unwrap(), None);
        let path = sample().save(dir.path()).unwrap();
        assert_eq!(path, dir.path().join(CREDENTIALS_FILE));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(Credentials::load(dir.path()).unwrap(), Some(sample()));
        assert!(!format!("{:?}", sample()).contains("secret"));
        assert!(Credentials::remove(dir.path()).unwrap());
        assert!(!Credentials::remove(dir.path()).unwrap());
    }

    #[test]
    fn a_damaged_file_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), "{").unwrap();
        let e = Credentials::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("fusion-host logout"), "{e}");
    }

    #[test]
    fn the_windows_acl_grants_the_user_alone_without_a_shell() {
        let (program, args) = owner_only_acl(
            Path::new(r"C:\Users\ana\AppData\Roaming\fusion-host\config\.credentials.json.7"),
            r"C:\Windows",
            Some("SURVEY"),
            "ana",
        );
        assert_eq!(
            program,
            Path::new(r"C:\Windows").join("System32").join("icacls.exe")
        );
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                r"C:\Users\ana\AppData\Roaming\fusion-host\config\.credentials.json.7",
                "/inheritance:r",
                "/grant:r",
                r"SURVEY\ana:F",
            ]
        );
    }
}
