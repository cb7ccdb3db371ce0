//! Planning a batch: every problem listed before anything moves, or the
//! renames with the precondition apply checks again.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::Access;
use crate::error::{BatchProblem, BatchProblemCode, Error, Result};
use crate::fsutil::identity;
use crate::scope::{Root, Scope, windows_hazard};
use crate::tool::Context;
use crate::{Effect, EffectOp, Expectation, PathState, Plan, Precondition};

use super::journal::batch_pending;
use super::{Item, MAX_BATCH, RenameBatchInput, Staged};

/// The parts of a path the batch needs, or the problem with it.
pub(super) fn locate<'s>(
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

pub(super) fn eq_ignoring_case(a: &Path, b: &Path) -> bool {
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
