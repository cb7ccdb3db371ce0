//! Configuration: flag > environment > `config.toml` > default, resolved once
//! into [`Settings`].

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use fusion_tools::{Access, Scope};
use serde::Deserialize;

use crate::cli::Global;
use crate::fail::{Fail, exit};

/// `config.toml` in the configuration directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The server's public URL.
    pub(crate) server: Option<String>,
    /// This device's name.
    pub(crate) name: Option<String>,
    /// Extra CA bundle (PEM).
    pub(crate) ca_cert: Option<PathBuf>,
    /// Allowed folders, `PATH` or `PATH:ro`.
    #[serde(default)]
    pub(crate) roots: Vec<String>,
    /// `[updates]`: this device's say in automatic updates.
    #[serde(default)]
    pub(crate) updates: UpdatesConfig,
}

/// `[updates]` in `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdatesConfig {
    /// `false`: never update automatically, whatever the server says.
    pub(crate) automatic: Option<bool>,
    /// How long a new version has to connect before it is rolled back.
    /// Default [`TRIAL_SECONDS`].
    pub(crate) trial_seconds: Option<u64>,
}

/// How long, by default, a new version has to connect after an automatic
/// update before the device goes back to the one before.
pub(crate) const TRIAL_SECONDS: u64 = 120;

pub(crate) const CONFIG_FILE: &str = "config.toml";

/// This build's version, sent to the server and shown by `doctor`.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

impl ConfigFile {
    pub(crate) fn load(dir: &Path) -> anyhow::Result<ConfigFile> {
        let path = dir.join(CONFIG_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&windows_paths_verbatim(&text)).with_context(|| {
                format!(
                    "{} is not valid configuration (write paths as 'C:\\Scans' in single quotes, or C:/Scans)",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

/// Takes Windows paths in double-quoted TOML strings as the user meant them.
///
/// In a TOML basic string a backslash starts an escape, so `"C:\Scans"` does
/// not parse and `"C:\new"` holds a line break. Every basic string that starts
/// with a drive (`"X:\`) gets its lone backslashes doubled before parsing;
/// pairs that are already doubled, and everything else, stay as written.
fn windows_paths_verbatim(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        match c {
            '#' => {
                for c in chars.by_ref() {
                    out.push(c);
                    if c == '\n' {
                        break;
                    }
                }
            }
            '\'' => {
                for c in chars.by_ref() {
                    out.push(c);
                    if c == '\'' {
                        break;
                    }
                }
            }
            '"' => {
                let ahead: String = chars.clone().take(3).collect();
                let b = ahead.as_bytes();
                let drive = b.len() == 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\';
                while let Some(c) = chars.next() {
                    match c {
                        '\\' if drive => {
                            out.push_str("\\\\");
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                        }
                        '\\' => {
                            out.push(c);
                            if let Some(escaped) = chars.next() {
                                out.push(escaped);
                            }
                        }
                        '"' | '\n' => {
                            out.push(c);
                            break;
                        }
                        c => out.push(c),
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The configuration directory: `FUSION_HOST_CONFIG_DIR` / `--config-dir`, or
/// the OS's (`~/.config/fusion-host` on Linux).
pub(crate) fn config_dir(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    directories::ProjectDirs::from("", "", "fusion-host")
        .map(|d| d.config_dir().to_path_buf())
        .context("cannot find a configuration directory (no home directory?); pass --config-dir")
}

/// The server address from the environment: `FUSION_HOST_SERVER`, or its
/// alias `PULSN_URL`.
pub(crate) fn server_from_env() -> Option<String> {
    ["FUSION_HOST_SERVER", "PULSN_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// A root as typed: `PATH`, `PATH:ro` or `PATH:rw`.
pub(crate) fn parse_root(spec: &str) -> (PathBuf, Access) {
    if let Some(path) = spec.strip_suffix(":ro") {
        (expand_home(path), Access::ReadOnly)
    } else if let Some(path) = spec.strip_suffix(":rw") {
        (expand_home(path), Access::ReadWrite)
    } else {
        (expand_home(spec), Access::ReadWrite)
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), directories::BaseDirs::new()) {
        (Some(rest), Some(base)) => base.home_dir().join(rest),
        _ => PathBuf::from(path),
    }
}

/// Names `folder` as the one allowed folder in `config.toml` of `dir`, which
/// names none: a `roots` line goes first (before any `[table]`), the rest of
/// the file is kept as it is, and the file is replaced whole or not at all.
pub(crate) fn name_root(dir: &Path, folder: &Path) -> anyhow::Result<()> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    // `roots = []` written by hand: a second `roots` would make the file
    // invalid, and rewriting it would lose the person's layout and comments.
    if toml::from_str::<toml::Table>(&windows_paths_verbatim(&text)).is_ok_and(|t| t.contains_key("roots")) {
        bail!(
            "{} has an empty `roots`; name the folder the device may work on there, e.g. roots = ['{}']",
            path.display(),
            folder.display()
        );
    }
    let shown = folder.display().to_string();
    // A literal string: Windows paths as they are, no escapes to get wrong.
    if shown.contains('\'') || shown.chars().any(char::is_control) {
        bail!(
            "the folder {shown:?} cannot be written as a `roots` entry here; add it to {} yourself",
            path.display()
        );
    }
    let mut file =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, format!("roots = ['{shown}']\n{text}").as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(&path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// The allowed folders: `--root` flags, else the config file's `roots`, else
/// the current directory (read-write). The device's own bookkeeping for them
/// (rename journals) stays in `config_dir`, never in an allowed folder.
pub(crate) fn scope(flags: &[String], config: &ConfigFile, config_dir: &Path) -> anyhow::Result<Scope> {
    let specs: Vec<(PathBuf, Access)> = if !flags.is_empty() {
        flags.iter().map(|s| parse_root(s)).collect()
    } else if !config.roots.is_empty() {
        config.roots.iter().map(|s| parse_root(s)).collect()
    } else {
        let here = std::env::current_dir().context("cannot read the current directory")?;
        if let Some(what) = not_a_work_folder(&here) {
            bail!(
                "the current folder {} is {what}, which is never shared by default; start fusion-host in the folder it may work on, or name folders with --root or `roots` in {CONFIG_FILE}",
                here.display()
            );
        }
        vec![(here, Access::ReadWrite)]
    };
    for (path, _) in &specs {
        if !path.is_dir() {
            bail!(
                "allowed folder {} does not exist or is not a folder; fix --root or `roots` in {CONFIG_FILE}",
                path.display()
            );
        }
    }
    Ok(Scope::new(specs)?.with_state_dir(config_dir))
}

/// Why `dir` must not be the folder shared by default, when it is one a
/// program lands in without being asked (a service started by its
/// supervisor): a whole disk, or the system's own folder.
fn not_a_work_folder(dir: &Path) -> Option<&'static str> {
    if dir.parent().is_none() {
        return Some("a whole disk");
    }
    if !cfg!(windows) {
        return None;
    }
    // Windows compares paths without regard to case.
    let system = std::env::var_os("SystemRoot").or_else(|| std::env::var_os("windir"))?;
    let system = system.to_string_lossy().trim_end_matches('\\').to_lowercase();
    let dir = dir.to_string_lossy().to_lowercase();
    (dir == system || dir.starts_with(&format!("{system}\\"))).then_some("Windows' own folder")
}

/// The device's name: flag, config, or the machine's host name.
pub(crate) fn device_name(flag: Option<&str>, config: &ConfigFile) -> String {
    flag.map(str::to_string)
        .or_else(|| config.name.clone())
        .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// The server to pair with: `--server`, else `FUSION_HOST_SERVER`, else the
/// configuration file's.
pub(crate) fn server(server: Option<&str>, config: &ConfigFile) -> Result<String, Fail> {
    server
        .map(str::to_string)
        .or_else(server_from_env)
        .or_else(|| config.server.clone())
        .ok_or_else(|| Fail {
            code: exit::USAGE,
            error: anyhow::anyhow!(
                "no server: pass --server URL or set FUSION_HOST_SERVER (the address shown on /devices)"
            ),
        })
}

/// Extra CA certificates to trust: `--ca-cert`, else the configuration file's.
pub(crate) fn ca_cert(global: &Global, config: &ConfigFile) -> Option<PathBuf> {
    global.ca_cert.clone().or_else(|| config.ca_cert.clone())
}

/// The allowed folders of a command that works here, without a server
/// (`call`, `rename`, `mcp`): from `--root`, else the configuration. A rename
/// batch a crash interrupted is finished or rolled back first, and said so
/// on stderr (stdout may be a protocol).
pub(crate) fn local_scope(global: &Global, roots: &[String]) -> Result<Scope, Fail> {
    let dir = config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let scope = scope(roots, &config, &dir).map_err(|error| Fail {
        code: exit::USAGE,
        error,
    })?;
    for recovery in fusion_tools::recover_renames(&scope) {
        eprintln!("! {recovery}");
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The folder goes first, the rest of the file stays as it was, and an
    /// empty `roots` written by hand is left to its author.
    #[test]
    fn naming_a_root_keeps_the_file_and_refuses_a_second_roots() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("scans");
        let path = dir.path().join(CONFIG_FILE);
        std::fs::write(&path, "# mine\nname = \"rig\"\n[updates]\nautomatic = false\n").unwrap();
        name_root(dir.path(), &folder).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!(
                "roots = ['{}']\n# mine\nname = \"rig\"\n[updates]\nautomatic = false\n",
                folder.display()
            )
        );
        let config = ConfigFile::load(dir.path()).unwrap();
        assert_eq!(config.roots, [folder.display().to_string()]);
        assert_eq!(config.updates.automatic, Some(false));

        std::fs::write(&path, "roots = []\n").unwrap();
        let e = name_root(dir.path(), &folder).unwrap_err().to_string();
        assert!(e.contains("empty `roots`"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "roots = []\n");
    }

    #[test]
    fn root_specs() {
        assert_eq!(
            parse_root("/data/scans"),
            (PathBuf::from("/data/scans"), Access::ReadWrite)
        );
        assert_eq!(
            parse_root("/data/archive:ro"),
            (PathBuf::from("/data/archive"), Access::ReadOnly)
        );
        assert_eq!(
            parse_root("/data/x:rw"),
            (PathBuf::from("/data/x"), Access::ReadWrite)
        );
        assert_eq!(parse_root(r"C:\scans:ro").0, PathBuf::from(r"C:\scans"));
    }

    #[test]
    fn config_file_is_strict_and_roots_resolve() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ConfigFile::load(dir.path()).unwrap().roots.is_empty());
        let scans = dir.path().join("scans");
        std::fs::create_dir(&scans).unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            format!("name = \"rig\"\nroots = [\"{}:ro\"]\n", scans.display()),
        )
        .unwrap();
        let config = ConfigFile::load(dir.path()).unwrap();
        assert_eq!(device_name(None, &config), "rig");
        assert_eq!(device_name(Some("cli"), &config), "cli");
        let scope = scope(&[], &config, Path::new("/nonexistent")).unwrap();
        assert_eq!(scope.roots()[0].access(), Access::ReadOnly);
        let e = scope_err(&["/no/such/folder".into()], &config);
        assert!(e.contains("/no/such/folder"), "{e}");

        std::fs::write(dir.path().join(CONFIG_FILE), "serverr = \"x\"\n").unwrap();
        let e = ConfigFile::load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("serverr"), "{e:#}");
    }

    #[test]
    fn windows_paths_in_double_quotes_mean_what_they_say() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            concat!(
                "# C:\\comment \"quoted\"\n",
                "name = \"rig \\\"7\\\"\"\n",
                "roots = [\"C:\\Scans:ro\", \"D:\\new\\tmp\", \"E:\\\\done\\\\right\", 'F:\\literal', \"G:\\trailing\\\"]\n",
                "ca_cert = \"C:\\certs\\acme root.pem\"\n",
            ),
        )
        .unwrap();
        let config = ConfigFile::load(dir.path()).unwrap();
        assert_eq!(config.name.as_deref(), Some("rig \"7\""));
        assert_eq!(
            config.roots,
            [
                r"C:\Scans:ro",
                r"D:\new\tmp",
                r"E:\done\right",
                r"F:\literal",
                r"G:\trailing\"
            ]
        );
        assert_eq!(config.ca_cert, Some(PathBuf::from(r"C:\certs\acme root.pem")));
        assert_eq!(
            parse_root(&config.roots[0]),
            (PathBuf::from(r"C:\Scans"), Access::ReadOnly)
        );
    }

    fn scope_err(flags: &[String], config: &ConfigFile) -> String {
        format!(
            "{:#}",
            scope(flags, config, Path::new("/nonexistent")).unwrap_err()
        )
    }
}
