//! Files for domain tools: read through the scope, and create atomically
//! (a hidden temporary beside the target, renamed into place on commit).

use std::ffi::OsString;
use std::path::PathBuf;

use cap_std::fs::{Dir, OpenOptions};

use crate::PathState;
use crate::error::{Error, Result};
use crate::fingerprint::state_of;
use crate::fsutil::{entry_kind, existing_file_for_write, identity, lstat, open_regular};
use crate::scope::Location;
use crate::tool::Context;

impl Location<'_> {
    /// Opens a regular file for reading through the root's handle (a FIFO or
    /// device is refused without blocking). Returns the file and its size.
    pub fn open_file(&self) -> Result<(std::fs::File, u64)> {
        let (file, md) = open_regular(self)?;
        Ok((file.into_std(), md.len()))
    }

    /// The state of this path, for a precondition; with `tree`, a folder's
    /// state covers everything below it.
    pub fn state(&self, cx: &Context<'_>, tree: bool) -> Result<PathState> {
        state_of(cx, self, tree)
    }

    /// This path's identity, for a precondition on an input that is only
    /// read: kind, file id, size and modification time, without reading
    /// the content (a [`PathState::Identity`]; `Absent` when nothing is
    /// there). What a multi-gigabyte source needs: its content hash would
    /// read every byte at plan time and again at apply.
    pub fn identity(&self) -> Result<PathState> {
        Ok(lstat(self)?.map_or(PathState::Absent, |md| identity(&md)))
    }

    /// Starts writing a new file at this path. Nothing appears at the path
    /// until [`PendingFile::commit`]; dropping the pending file removes it.
    /// With `overwrite` false an existing file is `already_exists`; a
    /// symlink, folder or special file is never replaced.
    pub fn create_file(&self, overwrite: bool) -> Result<PendingFile> {
        self.require_writable()?;
        self.require_not_root("replaced")?;
        let (dir, name) = self.open_parent()?;
        let path = self.path();
        if existing_file_for_write(&dir, &name, &path)?.is_some() && !overwrite {
            return Err(Error::AlreadyExists {
                path,
                hint: "choose another name, or allow overwriting",
            });
        }
        remove_stale_partials(&dir, &name);
        let mut random = [0u8; 6];
        let _ = getrandom::fill(&mut random);
        let mut temp = OsString::from(".");
        temp.push(&name);
        temp.push(format!(".fusion-partial-{}", crate::fsutil::hex(&random)));
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(true);
        let file = dir
            .open_with(&temp, &options)
            .map_err(|e| Error::io(&path, e))?
            .into_std();
        Ok(PendingFile {
            dir,
            temp,
            name,
            path,
            file,
            committed: false,
        })
    }
}

/// How long a partial file must have been left alone before a new write of
/// the same target removes it: one being written is touched at every buffer.
pub const STALE_PARTIAL: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Removes what an interrupted write of `name` left in `dir` (a crash, a
/// kill, a power cut: nothing ran to clean up): `.NAME.fusion-partial-*`
/// files untouched for [`STALE_PARTIAL`]. Best effort.
fn remove_stale_partials(dir: &Dir, name: &std::ffi::OsStr) {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".fusion-partial-");
    let Ok(entries) = dir.entries() else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if !file_name
            .as_encoded_bytes()
            .starts_with(prefix.as_encoded_bytes())
        {
            continue;
        }
        let stale = entry
            .metadata()
            .ok()
            .filter(cap_std::fs::Metadata::is_file)
            .and_then(|md| md.modified().ok())
            .and_then(|t| t.into_std().elapsed().ok())
            .is_some_and(|age| age >= STALE_PARTIAL);
        if stale {
            let _ = dir.remove_file(&file_name);
        }
    }
}

/// A file being written beside its final path. See [`Location::create_file`].
#[derive(Debug)]
pub struct PendingFile {
    dir: Dir,
    temp: OsString,
    name: OsString,
    path: PathBuf,
    file: std::fs::File,
    committed: bool,
}

impl PendingFile {
    /// The file to write into.
    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// Another handle to the same file, for writers that must own theirs.
    pub fn try_clone_file(&self) -> Result<std::fs::File> {
        self.file.try_clone().map_err(|e| Error::io(&self.path, e))
    }

    /// The final path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Flushes the file to disk and renames it into place (replacing a
    /// regular file there), through the parent folder's handle.
    pub fn commit(mut self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        match self.dir.symlink_metadata(&self.name) {
            Ok(md) if !md.is_file() => {
                return Err(Error::NotAFile {
                    path: self.path.clone(),
                    found: entry_kind(md.file_type()).article(),
                });
            }
            _ => {}
        }
        self.dir
            .rename(&self.temp, &self.dir, &self.name)
            .map_err(|e| Error::io(&self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.dir.remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::builtin::testutil::{Fixture, code};
    use crate::{Context, ErrorCode, PathState};

    #[test]
    fn pending_files_appear_only_on_commit() {
        let f = Fixture::new();
        let loc = f.scope.resolve("out.las").unwrap();
        let mut pending = loc.create_file(false).unwrap();
        pending.file().write_all(b"LASF").unwrap();
        assert!(!f.exists("out.las"));
        pending.commit().unwrap();
        assert_eq!(f.read("out.las"), "LASF");
        let names: Vec<_> = std::fs::read_dir(f.root()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary left");
        assert_eq!(
            code(&loc.create_file(false).unwrap_err()),
            ErrorCode::AlreadyExists
        );

        let dropped = f.scope.resolve("never.las").unwrap().create_file(false).unwrap();
        drop(dropped);
        assert_eq!(
            std::fs::read_dir(f.root()).unwrap().count(),
            1,
            "a dropped file leaves nothing"
        );

        let (mut file, size) = loc.open_file().unwrap();
        assert_eq!(size, 4);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut file, &mut s).unwrap();
        assert_eq!(s, "LASF");
        let cx = Context::new(&f.scope);
        assert!(matches!(
            loc.state(&cx, false).unwrap(),
            PathState::File { size: 4, .. }
        ));
        let outside = f.scope.resolve("../x.las");
        assert_eq!(code(&outside.unwrap_err()), ErrorCode::OutsideScope);
    }

    /// What a killed write left behind is removed by the next write of the
    /// same file, once nobody has touched it for a while; a partial that is
    /// still being written, and other files, are left alone.
    #[test]
    fn the_next_write_removes_a_stale_partial() {
        let f = Fixture::new();
        let old = std::time::SystemTime::now() - super::STALE_PARTIAL - std::time::Duration::from_secs(60);
        for (name, age) in [
            (".site.las.fusion-partial-0123456789ab", Some(old)),
            (".site.las.fusion-partial-fresh0000000", None),
            (".other.las.fusion-partial-0123456789ab", Some(old)),
        ] {
            f.write(name, "partial");
            if let Some(t) = age {
                std::fs::File::options()
                    .write(true)
                    .open(f.path(name))
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
        }
        let pending = f.scope.resolve("site.las").unwrap().create_file(false).unwrap();
        pending.commit().unwrap();
        assert!(
            !f.exists(".site.las.fusion-partial-0123456789ab"),
            "the stale one is gone"
        );
        assert!(
            f.exists(".site.las.fusion-partial-fresh0000000"),
            "a fresh one may still be written"
        );
        assert!(
            f.exists(".other.las.fusion-partial-0123456789ab"),
            "another file's is not ours"
        );
    }
}
