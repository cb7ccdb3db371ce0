//! The sandbox: a set of allowed folders, each held open as a directory handle.
//!
//! A requested path is mapped to (root, relative path) *lexically*, and every
//! operation then goes through the root's handle with cap-std, which resolves
//! the relative path beneath the handle (`openat2(RESOLVE_BENEATH)` on Linux,
//! a component-by-component walk elsewhere). A string is never checked and
//! then handed back to the kernel to resolve again.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use crate::error::{Error, Result};
use crate::{Access, RootInfo};

/// One allowed folder, canonicalized once and held open.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: Dir,
    access: Access,
    /// Read-only roots nested in this one, relative to it: nothing under them
    /// may change through this root either.
    read_only_inside: Vec<PathBuf>,
}

impl Root {
    /// The canonical path of the folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it may be changed.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The directory handle every operation goes through.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// A read-only allowed folder at or under `rel` (a path in this root), if
    /// there is one: changing `rel` would change it.
    pub(crate) fn read_only_under(&self, rel: &Path) -> Option<&Path> {
        self.read_only_inside
            .iter()
            .find(|ro| ro.starts_with(rel))
            .map(PathBuf::as_path)
    }
}

/// The set of allowed folders.
///
/// Relative paths are resolved against the first root; absolute paths may
/// name any root (the most specific one wins when roots nest).
#[derive(Debug)]
pub struct Scope {
    roots: Vec<Root>,
    state_dir: Option<PathBuf>,
}

impl Scope {
    /// Opens the given folders as roots.
    ///
    /// Each is canonicalized (symlinks in the configured path itself are
    /// resolved once, here) and must be an existing directory.
    pub fn new<P: AsRef<Path>>(roots: impl IntoIterator<Item = (P, Access)>) -> Result<Scope> {
        let mut opened = Vec::new();
        for (path, access) in roots {
            let path = path.as_ref();
            let canonical = dunce::canonicalize(path).map_err(|e| Error::io(path, e))?;
            if !canonical.is_dir() {
                return Err(Error::NotADirectory {
                    path: canonical,
                    found: "not a directory",
                });
            }
            let dir = Dir::open_ambient_dir(&canonical, ambient_authority())
                .map_err(|e| Error::io(&canonical, e))?;
            opened.push(Root {
                path: canonical,
                dir,
                access,
                read_only_inside: Vec::new(),
            });
        }
        let read_only: Vec<PathBuf> = opened
            .iter()
            .filter(|r| r.access == Access::ReadOnly)
            .map(|r| r.path.clone())
            .collect();
        for root in &mut opened {
            root.read_only_inside = read_only
                .iter()
                .filter_map(|ro| ro.strip_prefix(&root.path).ok())
                .filter(|rel| !rel.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .collect();
        }
        if opened.is_empty() {
            return Err(Error::invalid_input(
                "scope",
                "roots",
                "at least one allowed folder is needed",
            ));
        }
        Ok(Scope {
            roots: opened,
            state_dir: None,
        })
    }

    /// Keeps the device's own bookkeeping for these folders (the journals
    /// of rename batches) in `dir`, a folder of the device's that no allowed
    /// folder contains. Nothing in an allowed folder is ever trusted as
    /// bookkeeping: anyone who can put a file there (a cloned repository, a
    /// synced folder) could otherwise make the device move files.
    ///
    /// Without one, `rename_batch` still applies all-or-nothing while the
    /// process lives, but a batch a crash interrupts is left for a person.
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Scope {
        self.state_dir = Some(dir.into());
        self
    }

    /// The folder set by [`Scope::with_state_dir`].
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// A scope of one folder.
    pub fn single(path: impl AsRef<Path>, access: Access) -> Result<Scope> {
        Scope::new([(path, access)])
    }

    /// The roots, in the order given.
    pub fn roots(&self) -> &[Root] {
        &self.roots
    }

    /// The roots as the manifest lists them.
    pub fn root_infos(&self) -> Vec<RootInfo> {
        self.roots
            .iter()
            .map(|r| RootInfo {
                path: r.path.display().to_string(),
                access: r.access,
            })
            .collect()
    }

    /// Maps a requested path to a root and a relative path inside it.
    ///
    /// This is purely lexical plus, for absolute paths that name no root
    /// literally, one canonicalization to see through an alias of a root
    /// (`/tmp` vs `/private/tmp`). It never decides whether the path is safe
    /// to open: the handle does that when the path is used.
    pub fn resolve(&self, requested: &str) -> Result<Location<'_>> {
        let refuse = |reason: &str| Error::OutsideScope {
            path: requested.to_string(),
            reason: reason.to_string(),
        };
        if requested.is_empty() {
            return Err(Error::invalid_input(
                "scope",
                "path",
                "the path is empty; use \".\" for the first allowed folder",
            ));
        }
        if requested.contains('\0') {
            return Err(refuse("it contains a NUL byte"));
        }
        if cfg!(windows)
            && let Some(reason) = windows_hazard(requested)
        {
            return Err(refuse(reason));
        }
        let path = Path::new(requested);
        if path.is_absolute() || path.has_root() {
            let normal = normalize_absolute(path);
            if let Some(location) = self.locate(&normal) {
                return Ok(location);
            }
            if let Some(canonical) = canonicalize_existing_prefix(&normal)
                && let Some(location) = self.locate(&canonical)
            {
                return Ok(location);
            }
            return Err(refuse("it is not under any allowed folder"));
        }
        let rel = normalize_relative(path).ok_or_else(|| refuse("`..` leads above the allowed folder"))?;
        // Written relative or absolute, a path belongs to its most specific
        // root: `ro/x` under a read-write first root is in a read-only `ro`.
        let full = self.roots[0].path.join(&rel);
        Ok(self.locate(&full).unwrap_or(Location {
            root: &self.roots[0],
            rel,
        }))
    }

    /// The most specific root that contains `path`, component-wise (so
    /// `/x/allow_evil` is not inside `/x/allow`).
    fn locate(&self, path: &Path) -> Option<Location<'_>> {
        self.roots
            .iter()
            .filter_map(|root| {
                let rest = path.strip_prefix(&root.path).ok()?;
                Some(Location {
                    root,
                    rel: rest.to_path_buf(),
                })
            })
            .max_by_key(|l| l.root.path.components().count())
    }
}

/// A path inside a root: the root and a normalized relative path (only
/// normal components; empty for the root itself).
#[derive(Debug, Clone)]
pub struct Location<'s> {
    root: &'s Root,
    rel: PathBuf,
}

impl<'s> Location<'s> {
    /// The root.
    pub fn root(&self) -> &'s Root {
        self.root
    }

    /// The path relative to the root; empty for the root itself.
    pub fn rel(&self) -> &Path {
        &self.rel
    }

    /// The relative path for cap-std: `.` for the root itself.
    pub fn rel_or_dot(&self) -> &Path {
        if self.rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.rel
        }
    }

    /// The full path, as reported back to the caller.
    pub fn path(&self) -> PathBuf {
        if self.rel.as_os_str().is_empty() {
            self.root.path.clone()
        } else {
            self.root.path.join(&self.rel)
        }
    }

    /// [`Location::path`] as a string.
    pub fn display(&self) -> String {
        self.path().display().to_string()
    }

    /// Whether this is a root itself.
    pub fn is_root(&self) -> bool {
        self.rel.as_os_str().is_empty()
    }

    /// A child of this location.
    pub fn join(&self, name: impl AsRef<Path>) -> Location<'s> {
        Location {
            root: self.root,
            rel: self.rel.join(name),
        }
    }

    /// Another location in the same root.
    pub(crate) fn with_rel(&self, rel: PathBuf) -> Location<'s> {
        Location { root: self.root, rel }
    }

    /// Refuses with `permission_denied` unless the root is read-write and no
    /// read-only allowed folder lies at or under this location (a recursive
    /// delete, move or copy onto a parent would change it).
    pub fn require_writable(&self) -> Result<()> {
        match self.root.access {
            Access::ReadWrite => {}
            Access::ReadOnly => {
                return Err(Error::PermissionDenied {
                    path: self.path(),
                    reason: format!(
                        "{} is a read-only folder; allow it read-write on the device to change files there",
                        self.root.path.display()
                    ),
                });
            }
        }
        if !self.is_root()
            && let Some(ro) = self.root.read_only_under(&self.rel)
        {
            return Err(Error::PermissionDenied {
                path: self.path(),
                reason: format!(
                    "it holds {}, a read-only folder; change the files around it one by one, or allow \
                     that folder read-write on the device",
                    self.root.path.join(ro).display()
                ),
            });
        }
        Ok(())
    }

    /// Refuses with `permission_denied` for a root itself: roots are never
    /// deleted, moved or replaced.
    pub fn require_not_root(&self, what: &str) -> Result<()> {
        if self.is_root() {
            return Err(Error::PermissionDenied {
                path: self.path(),
                reason: format!("it is an allowed folder itself and cannot be {what}"),
            });
        }
        Ok(())
    }

    /// Opens the parent directory through the root's handle and returns it
    /// with the final name. Acting on (handle, name) pins the parent: if it is
    /// swapped for a symlink afterwards, the operation still happens in the
    /// directory that was opened, never where the new link points.
    pub fn open_parent(&self) -> Result<(Dir, OsString)> {
        let name = self
            .rel
            .file_name()
            .ok_or_else(|| Error::PermissionDenied {
                path: self.path(),
                reason: "it is an allowed folder itself".into(),
            })?
            .to_os_string();
        let parent = self.rel.parent().unwrap_or(Path::new(""));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let dir = self
            .root
            .dir
            .open_dir(parent)
            .map_err(|e| Error::io(&self.root.path.join(parent), e))?;
        Ok((dir, name))
    }

    /// Classifies an I/O error that happened at this location.
    pub fn err(&self, e: std::io::Error) -> Error {
        Error::io(&self.path(), e)
    }
}

/// Removes `.` and folds `..` for an absolute path, without touching disk.
/// `..` at the top stays at the top, as the kernel does.
fn normalize_absolute(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// Folds `.` and `..` in a relative path; `None` if `..` climbs above it.
fn normalize_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) | Component::RootDir => return None,
        }
    }
    Some(out)
}

/// Canonicalizes the longest existing prefix of `path` and re-attaches the
/// rest. Used only to *name* the root a path belongs to.
fn canonicalize_existing_prefix(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = dunce::canonicalize(existing) {
            let mut out = canonical;
            out.extend(rest.iter().rev());
            return Some(out);
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}

/// Why a path is refused on Windows, if it is: forms that name something
/// other than a plain file under a drive, or that Windows rewrites silently.
///
/// Pure string logic, compiled and tested on every platform.
pub(crate) fn windows_hazard(path: &str) -> Option<&'static str> {
    let unified = path.replace('/', "\\");
    if unified.starts_with("\\\\?\\") || unified.starts_with("\\\\.\\") || unified.starts_with("\\??\\") {
        return Some("verbatim and device-namespace paths (\\\\?\\, \\\\.\\) are not accepted");
    }
    if unified.starts_with("\\\\") {
        return Some("network (UNC) paths are not accepted");
    }
    let bytes = unified.as_bytes();
    let has_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if has_drive && bytes.get(2) != Some(&b'\\') {
        return Some("drive-relative paths like C:foo are not accepted; write C:\\foo");
    }
    let body = if has_drive { &unified[2..] } else { &unified[..] };
    for component in body.split('\\').filter(|c| !c.is_empty()) {
        if component.contains(':') {
            return Some("alternate data streams (name:stream) are not accepted");
        }
        if component != "." && component != ".." && (component.ends_with('.') || component.ends_with(' ')) {
            return Some("names ending in a dot or a space are rewritten by Windows and are not accepted");
        }
        let stem = component
            .split('.')
            .next()
            .unwrap_or("")
            .trim_end()
            .to_ascii_uppercase();
        let is_device = matches!(
            stem.as_str(),
            "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
        ) || (stem.len() == 4
            && (stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.as_bytes()[3].is_ascii_digit()
            && stem.as_bytes()[3] != b'0');
        if is_device {
            return Some("Windows device names (CON, NUL, COM1, LPT1, ...) are not accepted");
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_normalization() {
        assert_eq!(
            normalize_relative(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(normalize_relative(Path::new(".")), Some(PathBuf::new()));
        assert_eq!(normalize_relative(Path::new("a/../..")), None);
        assert_eq!(normalize_relative(Path::new("../x")), None);
    }

    #[test]
    fn absolute_normalization_stays_at_top() {
        assert_eq!(normalize_absolute(Path::new("/../a/./b/..")), PathBuf::from("/a"));
    }

    macro_rules! windows_cases {
        ($($name:ident: $path:expr => $refused:expr,)*) => {$(
            #[test]
            fn $name() {
                assert_eq!(windows_hazard($path).is_some(), $refused, "{}", $path);
            }
        )*};
    }

    windows_cases! {
        win_verbatim: r"\\?\C:\Windows" => true,
        win_device_ns: r"\\.\PhysicalDrive0" => true,
        win_unc: r"\\server\share\x" => true,
        win_unc_slashes: "//server/share/x" => true,
        win_drive_relative: "C:foo" => true,
        win_drive_absolute: r"C:\data\scan.e57" => false,
        win_ads: r"C:\data\file.txt:secret" => true,
        win_ads_relative: "file.txt::$DATA" => true,
        win_device_con: r"C:\data\con" => true,
        win_device_nul_ext: "nul.txt" => true,
        win_device_com1: "sub/COM1.log" => true,
        win_com0_is_fine: "COM0" => false,
        win_console_is_fine: "console.txt" => false,
        win_trailing_dot: "name." => true,
        win_trailing_space: "name " => true,
        win_dots_are_fine: "a/../b/./c" => false,
        win_plain: "scans/site 1/scan.e57" => false,
    }
}
