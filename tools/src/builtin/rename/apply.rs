//! Applying a batch: two passes through temporary names, all or nothing,
//! with the journal that lets a crash be recovered.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, Metadata};

use crate::error::{Error, Result};
use crate::fsutil::{hex, id_of};
use crate::tool::Context;

use super::journal::{Journal, JournalItem, journal_path, remove_journal, roll_back, write_journal};
use super::{RenameBatchOutput, Staged, TEMP_PREFIX};

/// What the test hook says at a step of apply.
#[derive(Debug)]
pub(crate) enum Step {
    /// Carry on.
    Go,
    /// Fail this step with this error (a locked file, say).
    #[cfg_attr(not(test), allow(dead_code))]
    Fail(io::Error),
    /// Stop dead, as a crash would: no rollback, the journal stays.
    #[cfg_attr(not(test), allow(dead_code))]
    Crash,
}

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

/// Applies a planned batch. `hook` is asked before every rename (step
/// numbers run through both passes); production passes one that says go.
pub(crate) fn run_batch(
    cx: &Context<'_>,
    staged: Staged,
    hook: &mut dyn FnMut(usize) -> Step,
) -> Result<RenameBatchOutput> {
    let root = &cx.scope().roots()[staged.root];
    let root_path = root.path().to_path_buf();
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let batch = hex(&random);
    let journal = Journal {
        version: super::journal::JOURNAL_VERSION,
        root: root_path.clone(),
        batch: batch.clone(),
        items: staged
            .items
            .iter()
            .enumerate()
            .map(|(n, item)| JournalItem {
                from: item.from.clone(),
                to: item.to.clone(),
                temp: temp_for(&item.from, &batch, n),
                id: item.id.clone(),
            })
            .collect(),
    };
    // Without a state folder the batch still rolls back on failure while
    // this process lives; only recovery after a crash needs the journal.
    let journal_file = journal_path(cx.scope(), &root_path, &batch);
    if let Some(path) = &journal_file {
        write_journal(path, &journal).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::Conflict {
                subject: path.display().to_string(),
                detail: "another rename batch with the same id started meanwhile; plan it again".into(),
            },
            _ => Error::io(path, e),
        })?;
    }
    let forget = || match &journal_file {
        Some(path) => remove_journal(path).map_err(|e| Error::io(path, e)),
        None => Ok(()),
    };
    let mut folders = Folders::new(root.dir());
    let mut step = 0;
    let mut failure = None;
    'passes: for pass in 0..2 {
        for (n, item) in journal.items.iter().enumerate() {
            let (from, to) = if pass == 0 {
                (&item.from, &item.temp)
            } else {
                (&item.temp, &item.to)
            };
            let outcome = match hook(step) {
                Step::Crash => return Err(Error::Cancelled),
                Step::Fail(e) => Err(e),
                Step::Go => match cx.checkpoint() {
                    Err(e) => Err(io::Error::other(e.to_string())),
                    Ok(()) => folders.rename(from, to),
                },
            };
            step += 1;
            if let Err(e) = outcome {
                failure = Some((n, e));
                break 'passes;
            }
        }
    }
    if let Some((n, e)) = failure {
        let item = &journal.items[n];
        let cause = Error::io(&root_path.join(&item.from), e);
        let undo = roll_back(root.dir(), &journal);
        let detail = serde_json::json!({
            "failed": {
                "index": n,
                "from": root_path.join(&item.from).display().to_string(),
                "to": root_path.join(&item.to).display().to_string(),
                "code": cause.code().as_str(),
                "message": cause.to_string(),
            },
            "items": journal.items.len(),
            "moved_back": undo.moved_back,
            "not_restored": undo.stuck.iter().map(|(i, why)| serde_json::json!({
                "index": i,
                "from": root_path.join(&journal.items[*i].from).display().to_string(),
                "temp": root_path.join(&journal.items[*i].temp).display().to_string(),
                "message": why,
            })).collect::<Vec<_>>(),
        });
        let message = if undo.stuck.is_empty() {
            let _ = folders.sync();
            let _ = forget();
            format!(
                "renaming {} to {} failed ({cause}); the {} rename(s) already done were undone, so every \
                 name is as it was: close any program holding the file and plan the batch again",
                root_path.join(&item.from).display(),
                root_path.join(&item.to).display(),
                undo.moved_back
            )
        } else {
            let next = match &journal_file {
                Some(path) => format!(
                    "the journal {} is kept and the next start of the device retries",
                    path.display()
                ),
                None => "move them back by hand (their temporary names are in the details)".into(),
            };
            format!(
                "renaming {} failed ({cause}) and {} item(s) could not be moved back (see details); {next}",
                root_path.join(&item.from).display(),
                undo.stuck.len(),
            )
        };
        return Err(Error::BatchFailed {
            message,
            details: detail,
        });
    }
    folders.sync().map_err(|e| Error::io(&root_path, e))?;
    forget()?;
    Ok(RenameBatchOutput {
        renamed: journal.items.len() as u64,
        unchanged: staged.unchanged,
        case_only: staged.items.iter().filter(|i| i.case_only).count() as u64,
        root: root_path.display().to_string(),
    })
}
