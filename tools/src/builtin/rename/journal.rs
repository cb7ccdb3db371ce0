//! The journal of a rename batch, and recovery after a crash.
//!
//! The journal is the device's own bookkeeping, so it lives in the device's
//! state folder ([`Scope::with_state_dir`]), one file per batch under a
//! folder keyed by the allowed folder's path — never in an allowed folder,
//! where anyone who can put a file (a cloned repository, a synced folder, an
//! extracted archive) could name moves for the device to make at start.
//!
//! Even its own journal is checked before anything moves: it must name this
//! allowed folder, every path must be a plain relative path, every temporary
//! name must be the one the device generates for that batch and item, and an
//! entry is moved only where it still has the file id recorded at plan time.
//! A journal that fails any of this is reported and left alone.
//!
//! Earlier versions kept the journal in the allowed folder itself
//! ([`RENAME_JOURNAL`]); such a file is now only reported, never acted on.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{self, Write as _};
use std::path::{Component, Path, PathBuf};

use cap_std::fs::Dir;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::folders::{Folders, sync_dir, temp_for};
use crate::Access;
use crate::fsutil::{hex, id_of};
use crate::scope::{Root, Scope};

/// The name earlier versions gave the journal, in the allowed folder itself.
/// A file of that name is reported by [`recover_renames`] and left alone: it
/// may have been put there by anyone who can write into the folder.
pub const RENAME_JOURNAL: &str = ".fusion-rename.journal";

pub(super) const JOURNAL_VERSION: u32 = 2;
/// The state folder's subfolder for rename journals.
const JOURNALS: &str = "rename-journals";
/// A journal larger than this is not one the device wrote (20,000 items of
/// long paths stay far below it).
pub(super) const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// The journal: written once, before the first rename.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Journal {
    pub(super) version: u32,
    /// The allowed folder the batch ran in, as the device canonicalized it.
    pub(super) root: PathBuf,
    pub(super) batch: String,
    pub(super) items: Vec<JournalItem>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JournalItem {
    pub(super) from: PathBuf,
    pub(super) to: PathBuf,
    pub(super) temp: PathBuf,
    pub(super) id: String,
}

/// Where an item of an interrupted batch is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Source,
    Temp,
    Target,
    Lost,
}

/// The folder holding the journals of batches in `root`.
fn journals_dir(state: &Path, root: &Path) -> PathBuf {
    let key = Sha256::digest(root.as_os_str().as_encoded_bytes());
    state.join(JOURNALS).join(hex(&key[..16]))
}

/// Where the journal of `batch` in `root` lives, if the scope has a state folder.
pub(super) fn journal_path(scope: &Scope, root: &Path, batch: &str) -> Option<PathBuf> {
    scope
        .state_dir()
        .map(|state| journals_dir(state, root).join(format!("{batch}.json")))
}

/// Writes the journal durably to `path`: complete under a temporary name,
/// then renamed, so a journal that exists under its own name is whole.
pub(super) fn write_journal(path: &Path, journal: &Journal) -> io::Result<()> {
    let dir = path.parent().expect("a journal path has a folder");
    create_private_dir(dir)?;
    let bytes = serde_json::to_vec(journal).map_err(io::Error::other)?;
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)?;
    let written = file.write_all(&bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&partial, path)) {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    sync_path(dir)
}

pub(super) fn remove_journal(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    sync_path(path.parent().unwrap_or(Path::new(".")))
}

/// Creates the journals' folder readable by the user alone.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn sync_path(dir: &Path) -> io::Result<()> {
    let dir = Dir::open_ambient_dir(dir, cap_std::ambient_authority())?;
    sync_dir(&dir)
}

/// Why `journal`, read from `file_stem`.json, is not one this device wrote
/// for `root`, if it is not.
fn unverified(journal: &Journal, root: &Path, file_stem: &str) -> Option<String> {
    if journal.version != JOURNAL_VERSION {
        return Some(format!(
            "it has version {}, not {JOURNAL_VERSION}",
            journal.version
        ));
    }
    if journal.root != root {
        return Some(format!("it names another folder, {}", journal.root.display()));
    }
    let batch_ok = journal.batch.len() == 8
        && journal
            .batch
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !batch_ok || journal.batch != file_stem {
        return Some(format!("its batch id {:?} is not the device's", journal.batch));
    }
    let plain =
        |p: &Path| !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    for (n, item) in journal.items.iter().enumerate() {
        if !plain(&item.from) || !plain(&item.to) {
            return Some(format!("item {n} has a path that is not plain and relative"));
        }
        if item.temp != temp_for(&item.from, &journal.batch, n) {
            return Some(format!(
                "item {n}'s temporary name {} is not one the device generates",
                item.temp.display()
            ));
        }
        if item.id.is_empty() {
            return Some(format!("item {n} has no file id"));
        }
    }
    None
}

/// What undoing a batch achieved.
pub(super) struct Undo {
    pub(super) moved_back: usize,
    /// Items that could not be put back, with why.
    pub(super) stuck: Vec<(usize, String)>,
}

/// Where each item is, told from the disk alone.
fn places(root: &Dir, journal: &Journal) -> Vec<Place> {
    let id_at = |rel: &Path| root.symlink_metadata(rel).ok().map(|md| id_of(&md));
    let mut listings: HashMap<PathBuf, HashSet<OsString>> = HashMap::new();
    let mut spelled = |rel: &Path| -> bool {
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let names = listings.entry(parent.clone()).or_insert_with(|| {
            let dir = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &parent
            };
            root.read_dir(dir)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default()
        });
        rel.file_name().is_some_and(|n| names.contains(n))
    };
    journal
        .items
        .iter()
        .map(|item| {
            // Only the entry this batch put there: whatever else sits under
            // a temporary name is not this batch's to move.
            if id_at(&item.temp).as_deref() == Some(item.id.as_str()) {
                return Place::Temp;
            }
            let at_target = id_at(&item.to).as_deref() == Some(item.id.as_str());
            let at_source = id_at(&item.from).as_deref() == Some(item.id.as_str());
            match (at_source, at_target) {
                // Case-only on a case-insensitive volume: both spellings answer;
                // the folder's listing says which one is on disk.
                (true, true) if spelled(&item.to) => Place::Target,
                (true, _) => Place::Source,
                (false, true) => Place::Target,
                (false, false) => Place::Lost,
            }
        })
        .collect()
}

/// Puts every item of `journal` back at its source: targets to their
/// temporary names first (so a cycle frees its names), then temporary names
/// to sources; each pass in reverse order.
pub(super) fn roll_back(root: &Dir, journal: &Journal) -> Undo {
    let mut place = places(root, journal);
    let mut folders = Folders::new(root);
    let mut undo = Undo {
        moved_back: 0,
        stuck: Vec::new(),
    };
    for (n, item) in journal.items.iter().enumerate().rev() {
        if place[n] == Place::Target {
            match folders.rename(&item.to, &item.temp) {
                Ok(()) => place[n] = Place::Temp,
                Err(e) => undo
                    .stuck
                    .push((n, format!("could not move it back from its new name: {e}"))),
            }
        }
    }
    for (n, item) in journal.items.iter().enumerate().rev() {
        match place[n] {
            Place::Temp => match folders.rename(&item.temp, &item.from) {
                Ok(()) => undo.moved_back += 1,
                Err(e) => undo
                    .stuck
                    .push((n, format!("could not move it back from its temporary name: {e}"))),
            },
            Place::Lost => undo
                .stuck
                .push((n, "it is at none of its old, temporary or new names".into())),
            Place::Source | Place::Target => {}
        }
    }
    let _ = folders.sync();
    undo
}

/// What [`recover_renames`] found or did in one allowed folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenameRecovery {
    /// The allowed folder.
    pub root: PathBuf,
    /// How many renames the interrupted batch had (0 when its journal could
    /// not be trusted).
    pub items: usize,
    /// What was done.
    pub outcome: RecoveryOutcome,
}

/// The end an interrupted batch was brought to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryOutcome {
    /// Every item had reached its new name: the batch is finished.
    Completed,
    /// Items were moved back: every entry has its old name again.
    RolledBack {
        /// How many were moved back.
        moved_back: usize,
    },
    /// Some items could not be put back; the journal is kept.
    Unresolved {
        /// One line per item that is stuck.
        stuck: Vec<String>,
    },
    /// The folder is read-only now, so nothing was touched; the journal is kept.
    ReadOnly,
    /// A batch is waiting to be recovered at the device's next start (what
    /// [`check_renames`] reports; nothing was touched).
    Pending,
    /// A journal that the device cannot verify as its own: nothing was
    /// moved, and the file is left where it is.
    Ignored {
        /// The file.
        journal: PathBuf,
        /// Why it is not trusted.
        reason: String,
    },
}

impl std::fmt::Display for RenameRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let root = self.root.display();
        match &self.outcome {
            RecoveryOutcome::Completed => write!(
                f,
                "an interrupted rename batch of {} item(s) in {root} had finished; its journal is removed",
                self.items
            ),
            RecoveryOutcome::RolledBack { moved_back } => write!(
                f,
                "an interrupted rename batch of {} item(s) in {root} was rolled back ({moved_back} moved \
                 back): every entry has its old name again; plan the batch again to rename",
                self.items
            ),
            RecoveryOutcome::Unresolved { stuck } => write!(
                f,
                "an interrupted rename batch of {} item(s) in {root} could not be fully rolled back; {} item(s) \
                 are stuck ({}); its journal is kept and the next start tries again",
                self.items,
                stuck.len(),
                stuck.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
            ),
            RecoveryOutcome::ReadOnly => write!(
                f,
                "{root} holds an interrupted rename batch but is allowed read-only now; allow it read-write \
                 once so the device can roll the batch back"
            ),
            RecoveryOutcome::Pending => write!(
                f,
                "{root} holds an interrupted rename batch of {} item(s); the device finishes or rolls it back \
                 when it next starts",
                self.items
            ),
            RecoveryOutcome::Ignored { journal, reason } => write!(
                f,
                "ignored {} in {root}: {reason}; no file was moved. If an earlier version of fusion-host \
                 was interrupted while renaming there, check the names it lists by hand, then delete it",
                journal.display()
            ),
        }
    }
}

/// Finishes or rolls back any rename batch a crash interrupted, in every
/// allowed folder. Call it at start, before taking calls: the rule is
/// "finished if every item reached its new name, otherwise rolled back", so
/// after it a folder holds either all old names or all new ones.
///
/// Only journals in the scope's state folder that pass every check are acted
/// on; anything else (a journal file in an allowed folder, say) is reported
/// as [`RecoveryOutcome::Ignored`] and left alone.
pub fn recover_renames(scope: &Scope) -> Vec<RenameRecovery> {
    scope
        .roots()
        .iter()
        .flat_map(|root| visit_root(scope, root, true))
        .collect()
}

/// What [`recover_renames`] would act on or ignore, touching nothing: for a
/// health check while the device may be running.
pub fn check_renames(scope: &Scope) -> Vec<RenameRecovery> {
    scope
        .roots()
        .iter()
        .flat_map(|root| visit_root(scope, root, false))
        .collect()
}

/// Whether a journal of this device names a batch in `root` that is running
/// or waits for recovery.
pub(super) fn batch_pending(scope: &Scope, root: &Path) -> bool {
    let Some(state) = scope.state_dir() else {
        return false;
    };
    journal_files(&journals_dir(state, root)).any(|path| {
        let stem = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        read_journal(&path).is_ok_and(|j| unverified(&j, root, &stem).is_none())
    })
}

fn journal_files(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
}

fn visit_root(scope: &Scope, root: &Root, act: bool) -> Vec<RenameRecovery> {
    let recovery = |items, outcome| RenameRecovery {
        root: root.path().to_path_buf(),
        items,
        outcome,
    };
    let mut found = Vec::new();
    // A journal file in the folder itself is never the device's (any more).
    if root.dir().symlink_metadata(RENAME_JOURNAL).is_ok() {
        found.push(recovery(
            0,
            RecoveryOutcome::Ignored {
                journal: root.path().join(RENAME_JOURNAL),
                reason: "the device keeps its journals outside the folders it shares, so this file \
                         may have been planted"
                    .into(),
            },
        ));
    }
    let Some(state) = scope.state_dir() else {
        return found;
    };
    let dir = journals_dir(state, root.path());
    let mut files: Vec<PathBuf> = journal_files(&dir).collect();
    files.sort();
    for path in files {
        let ignored = |reason: String| {
            recovery(
                0,
                RecoveryOutcome::Ignored {
                    journal: path.clone(),
                    reason,
                },
            )
        };
        let journal = match read_journal(&path) {
            Ok(journal) => journal,
            Err(reason) => {
                found.push(ignored(reason));
                continue;
            }
        };
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        if let Some(reason) = unverified(&journal, root.path(), &stem) {
            found.push(ignored(reason));
            continue;
        }
        let items = journal.items.len();
        if root.access() == Access::ReadOnly {
            found.push(recovery(items, RecoveryOutcome::ReadOnly));
        } else if !act {
            found.push(recovery(items, RecoveryOutcome::Pending));
        } else {
            found.push(recovery(items, recover_batch(root, &path, &journal)));
        }
    }
    // A journal cut short while it was written: its batch never started.
    if act && root.access() == Access::ReadWrite {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "partial") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    found
}

fn read_journal(path: &Path) -> Result<Journal, String> {
    let md = std::fs::symlink_metadata(path).map_err(|e| format!("it cannot be read ({e})"))?;
    if !md.is_file() {
        return Err("it is not a regular file".into());
    }
    if md.len() > MAX_JOURNAL_BYTES {
        return Err(format!(
            "it is {} bytes, larger than any journal the device writes",
            md.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("it cannot be read ({e})"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("it is not a journal the device wrote ({e})"))
}

fn recover_batch(root: &Root, path: &Path, journal: &Journal) -> RecoveryOutcome {
    let dir = root.dir();
    if places(dir, journal).iter().all(|p| *p == Place::Target) {
        let _ = remove_journal(path);
        return RecoveryOutcome::Completed;
    }
    let undo = roll_back(dir, journal);
    if undo.stuck.is_empty() {
        let _ = remove_journal(path);
        return RecoveryOutcome::RolledBack {
            moved_back: undo.moved_back,
        };
    }
    let stuck = undo
        .stuck
        .iter()
        .map(|(n, why)| format!("{}: {why}", root.path().join(&journal.items[*n].from).display()))
        .collect();
    RecoveryOutcome::Unresolved { stuck }
}
