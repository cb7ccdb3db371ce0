//! The file-system steps a batch is made of, shared by applying it and by
//! recovering it from its journal: folders opened through the root's
//! handle, renames that never replace, folder flushes, temporary names.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, Metadata};

use super::TEMP_PREFIX;
use crate::fsutil::id_of;

/// Parent folders opened once, through the root's handle.
pub(super) struct Folders<'d> {
    root: &'d Dir,
    open: HashMap<PathBuf, Dir>,
}

impl<'d> Folders<'d> {
    pub(super) fn new(root: &'d Dir) -> Self {
        Folders {
            root,
            open: HashMap::new(),
        }
    }

    /// The folder holding `rel`, and `rel`'s name in it.
    fn split<'p>(&mut self, rel: &'p Path) -> io::Result<(&Dir, &'p OsStr)> {
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a path with no name"))?;
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if !self.open.contains_key(&parent) {
            let dir = if parent.as_os_str().is_empty() {
                self.root.try_clone()?
            } else {
                self.root.open_dir(&parent)?
            };
            self.open.insert(parent.clone(), dir);
        }
        Ok((&self.open[&parent], name))
    }

    /// Renames `from` to `to` (both relative to the root), never replacing
    /// whatever is at `to`.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let (_, from_name) = self.split(from)?;
        let (_, to_name) = self.split(to)?;
        let from_parent = from.parent().unwrap_or(Path::new("")).to_path_buf();
        let to_parent = to.parent().unwrap_or(Path::new("")).to_path_buf();
        rename_noreplace(
            &self.open[&from_parent],
            from_name,
            &self.open[&to_parent],
            to_name,
        )
    }

    /// Makes every opened folder's entries durable.
    pub(super) fn sync(&self) -> io::Result<()> {
        for dir in self.open.values() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// `rename(2)` that refuses to replace an existing target.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(super) fn rename_noreplace(from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
    use rustix::fs::{RenameFlags, renameat_with};
    use rustix::io::Errno;
    match renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        // Filesystems without RENAME_NOREPLACE (some network mounts).
        Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
            checked_rename(from_dir, from, to_dir, to)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(super) fn rename_noreplace(from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
    checked_rename(from_dir, from, to_dir, to)
}

/// Looks, then renames: for systems without an atomic no-replace rename.
pub(super) fn checked_rename(from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
    match to_dir.symlink_metadata(to) {
        // On a case-insensitive volume the source itself answers to a
        // case-only target; that is not an occupied target.
        Ok(md) if !same_entry(from_dir, from, &md) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} appeared while the batch ran", Path::new(to).display()),
            ));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    from_dir.rename(from, to_dir, to)
}

pub(super) fn same_entry(dir: &Dir, name: &OsStr, other: &Metadata) -> bool {
    dir.symlink_metadata(name)
        .is_ok_and(|md| id_of(&md) == id_of(other))
}

/// Flushes a folder's entries. The root's handle may be a path-only
/// descriptor, which cannot be flushed, so the folder is opened for reading.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Dir) -> io::Result<()> {
    use rustix::fs::{Mode, OFlags, fsync, openat};
    let fd = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    fsync(fd).map_err(io::Error::from)
}

/// NTFS journals its metadata; a folder cannot be flushed on Windows.
#[cfg(not(unix))]
pub(super) fn sync_dir(_: &Dir) -> io::Result<()> {
    Ok(())
}

pub(super) fn temp_for(item_from: &Path, batch: &str, n: usize) -> PathBuf {
    let name: OsString = format!("{TEMP_PREFIX}{batch}-{n}").into();
    match item_from.parent() {
        Some(parent) => parent.join(name),
        None => PathBuf::from(name),
    }
}
