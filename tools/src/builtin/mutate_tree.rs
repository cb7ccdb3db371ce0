//! The tree mutate tools: `create_directory`, `move`, `copy`, `delete`.

use std::ffi::{OsStr, OsString};
use std::io;

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::mutate_files::{expect_now, missing_ancestors};
use crate::EntryKind;
use crate::error::{Error, Result};
use crate::fsutil::{entry_kind, lstat, open_nofollow, replace_atomically, stream};
use crate::scope::Location;
use crate::tool::{Context, MutateTool, ToolSpec};
use crate::walk::{WalkOptions, walk};
use crate::{Effect, EffectOp, Expectation, PathState, Plan, Precondition};

/// `create_directory`: make a folder and any missing parents (`mkdir -p`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateDirectory;

/// Input of `create_directory`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDirectoryInput {
    /// The folder to create.
    pub path: String,
}

/// Output of `create_directory`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CreateDirectoryOutput {
    /// The folder, in full.
    pub path: String,
    /// Folders created, shallowest first (empty when it already existed).
    pub created: Vec<String>,
}

impl MutateTool for CreateDirectory {
    type Input = CreateDirectoryInput;
    type Output = CreateDirectoryOutput;
    type Staged = Vec<String>;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "create_directory",
            "Create a folder and any missing parent folders (like mkdir -p). Nothing to do when it exists.",
        )
        .idempotent(true)
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, Vec<String>)> {
        let loc = cx.scope().resolve(&input.path)?;
        loc.require_writable()?;
        let mut missing = match lstat(&loc)? {
            Some(md) if md.is_dir() => Vec::new(),
            Some(md) => {
                return Err(Error::AlreadyExists {
                    path: loc.path(),
                    hint: match entry_kind(md.file_type()) {
                        EntryKind::Symlink => "it is a symbolic link; choose another name",
                        _ => "it is a file; choose another name",
                    },
                });
            }
            None => {
                let mut missing = missing_ancestors(&loc)?;
                missing.push(loc.clone());
                missing
            }
        };
        let expect = missing
            .first()
            .map(|first| {
                vec![Expectation {
                    path: first.display(),
                    state: PathState::Absent,
                }]
            })
            .unwrap_or_default();
        let created: Vec<String> = missing.drain(..).map(|l| l.display()).collect();
        let summary = if created.is_empty() {
            format!("{} already exists; nothing to do", loc.display())
        } else {
            format!("create {} folder(s) up to {}", created.len(), loc.display())
        };
        let effects = created
            .iter()
            .map(|p| Effect::new(EffectOp::CreateDirectory, p.clone()))
            .collect();
        Ok((Plan::new(summary, effects, Precondition::new(expect)), created))
    }

    fn apply(&self, cx: &Context<'_>, input: &Self::Input, created: Vec<String>) -> Result<Self::Output> {
        let loc = cx.scope().resolve(&input.path)?;
        if !created.is_empty() {
            loc.root()
                .dir()
                .create_dir_all(loc.rel())
                .map_err(|e| loc.err(e))?;
        }
        Ok(CreateDirectoryOutput {
            path: loc.display(),
            created,
        })
    }
}

/// Source and destination of a move or copy, examined for a plan.
struct Transfer<'s> {
    from: Location<'s>,
    to: Location<'s>,
    kind: EntryKind,
    /// The destination's current state (for `overwrite`).
    replaces: bool,
    expect: Vec<Expectation>,
}

impl<'s> Transfer<'s> {
    fn examine(
        cx: &Context<'s>,
        tool: &str,
        source: &str,
        destination: &str,
        overwrite: bool,
        verb: &str,
    ) -> Result<Self> {
        let from = cx.scope().resolve(source)?;
        let to = cx.scope().resolve(destination)?;
        if tool == "move" {
            from.require_writable()?;
            from.require_not_root("moved")?;
        }
        to.require_writable()?;
        to.require_not_root("replaced")?;
        let md = lstat(&from)?.ok_or_else(|| Error::NotFound { path: from.path() })?;
        let kind = entry_kind(md.file_type());
        if std::ptr::eq(from.root(), to.root()) && to.rel().starts_with(from.rel()) {
            return Err(Error::invalid_input(
                tool,
                "destination",
                format!(
                    "{} is inside {}; a folder cannot be {verb} into itself",
                    to.display(),
                    from.display()
                ),
            ));
        }
        let missing = missing_ancestors(&to)?;
        if let Some(first) = missing.first() {
            return Err(Error::MissingParent { path: first.path() });
        }
        let replaces = match lstat(&to)? {
            None => false,
            Some(dst) if overwrite && dst.is_file() && kind != EntryKind::Directory => true,
            Some(dst) if dst.is_dir() => {
                return Err(Error::AlreadyExists {
                    path: to.path(),
                    hint: "it is a folder; to put the source inside it, name the full new path (folder/name)",
                });
            }
            Some(_) => {
                return Err(Error::AlreadyExists {
                    path: to.path(),
                    hint: "set overwrite to replace it",
                });
            }
        };
        let expect = vec![
            expect_now(cx, &from, kind == EntryKind::Directory)?,
            expect_now(cx, &to, false)?,
        ];
        Ok(Transfer {
            from,
            to,
            kind,
            replaces,
            expect,
        })
    }
}

/// `move`: rename or move a file, folder or link.
#[derive(Debug, Clone, Copy, Default)]
pub struct Move;

/// Input of `move`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveInput {
    /// What to move.
    pub source: String,
    /// Its new path (including the new name).
    pub destination: String,
    /// Replace an existing file at the destination. Default false.
    #[serde(default)]
    pub overwrite: bool,
}

impl MoveInput {
    fn transfer<'s>(&self, cx: &Context<'s>) -> Result<Transfer<'s>> {
        Transfer::examine(
            cx,
            "move",
            &self.source,
            &self.destination,
            self.overwrite,
            "moved",
        )
    }
}

/// Output of `move`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MoveOutput {
    /// The old path.
    pub from: String,
    /// The new path.
    pub to: String,
    /// What was moved.
    pub kind: EntryKind,
    /// Whether a file at the destination was replaced.
    pub replaced: bool,
    /// True when source and destination are on different filesystems, so the
    /// move was a copy followed by a delete.
    pub across_filesystems: bool,
}

impl MutateTool for Move {
    type Input = MoveInput;
    type Output = MoveOutput;
    type Staged = ();

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "move",
            "Move or rename a file, folder or symlink. Refuses to replace an existing destination unless \
             `overwrite` (files only); never moves an allowed folder itself.",
        )
        .destructive(true)
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, ())> {
        let t = input.transfer(cx)?;
        let verb = if t.replaces { "replacing" } else { "to" };
        let summary = format!(
            "move {} {} {verb} {}",
            t.kind.article(),
            t.from.display(),
            t.to.display()
        );
        let effects = vec![Effect::new(EffectOp::Move, t.from.display()).to(t.to.display())];
        Ok((Plan::new(summary, effects, Precondition::new(t.expect)), ()))
    }

    fn apply(&self, cx: &Context<'_>, input: &Self::Input, _: ()) -> Result<MoveOutput> {
        let t = input.transfer(cx)?;
        let (from_dir, from_name) = t.from.open_parent()?;
        let (to_dir, to_name) = t.to.open_parent()?;
        let mut across = false;
        if let Err(e) = from_dir.rename(&from_name, &to_dir, &to_name) {
            if !is_cross_device(&e) {
                return Err(t.from.err(e));
            }
            // Different filesystems: copy (atomically), then remove the source.
            across = true;
            let mut counts = CopyOutput::new(&t.from, &t.to);
            copy_entry(
                cx,
                &from_dir,
                &from_name,
                &to_dir,
                &to_name,
                t.kind,
                &mut counts,
                &t.to,
            )?;
            remove_entry(&from_dir, &from_name, t.kind).map_err(|e| t.from.err(e))?;
        }
        Ok(MoveOutput {
            from: t.from.display(),
            to: t.to.display(),
            kind: t.kind,
            replaced: t.replaces,
            across_filesystems: across,
        })
    }
}

fn is_cross_device(e: &io::Error) -> bool {
    // EXDEV is 18 on Linux, macOS and the BSDs; Windows reports
    // ERROR_NOT_SAME_DEVICE (17).
    e.raw_os_error() == Some(if cfg!(windows) { 17 } else { 18 })
}

/// `copy`: copy a file or a whole folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Copy;

/// Input of `copy`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyInput {
    /// The file or folder to copy.
    pub source: String,
    /// The path of the copy (including its name).
    pub destination: String,
    /// Replace an existing file at the destination. Default false.
    #[serde(default)]
    pub overwrite: bool,
}

impl CopyInput {
    fn transfer<'s>(&self, cx: &Context<'s>) -> Result<Transfer<'s>> {
        Transfer::examine(
            cx,
            "copy",
            &self.source,
            &self.destination,
            self.overwrite,
            "copied",
        )
    }
}

/// Output of `copy`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CopyOutput {
    /// The source.
    pub from: String,
    /// The copy.
    pub to: String,
    /// Files copied.
    pub files: u64,
    /// Folders created.
    pub directories: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Symbolic links left out (a copied link could point anywhere).
    pub skipped_symlinks: u64,
    /// FIFOs, sockets and devices left out.
    pub skipped_special: u64,
}

impl CopyOutput {
    fn new(from: &Location<'_>, to: &Location<'_>) -> Self {
        CopyOutput {
            from: from.display(),
            to: to.display(),
            files: 0,
            directories: 0,
            bytes: 0,
            skipped_symlinks: 0,
            skipped_special: 0,
        }
    }
}

impl MutateTool for Copy {
    type Input = CopyInput;
    type Output = CopyOutput;
    type Staged = ();

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "copy",
            "Copy a file, or a folder with everything in it. A folder copy appears all at once (built under a \
             temporary name, then renamed); symlinks and special files inside are left out and counted.",
        )
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, ())> {
        let t = input.transfer(cx)?;
        let mut effects = Vec::new();
        let mut bytes = 0u64;
        match t.kind {
            EntryKind::Directory => {
                effects.push(Effect::new(EffectOp::CreateDirectory, t.to.display()));
                walk(cx, &t.from, &WalkOptions::everything().with_metadata(), |e| {
                    let to = t.to.join(e.rel).display();
                    effects.push(match entry_kind(e.file_type) {
                        EntryKind::Directory => Effect::new(EffectOp::CreateDirectory, to),
                        EntryKind::File => {
                            let size = e.metadata()?.len();
                            bytes += size;
                            Effect::new(EffectOp::Copy, e.location().display())
                                .to(to)
                                .bytes(size)
                        }
                        EntryKind::Symlink | EntryKind::Other => {
                            Effect::new(EffectOp::SkipSymlink, e.location().display())
                        }
                    });
                    Ok(true)
                })?;
            }
            EntryKind::File => {
                let size = lstat(&t.from)?.map_or(0, |m| m.len());
                bytes = size;
                effects.push(
                    Effect::new(EffectOp::Copy, t.from.display())
                        .to(t.to.display())
                        .bytes(size),
                );
            }
            other => {
                return Err(Error::NotAFile {
                    path: t.from.path(),
                    found: other.article(),
                });
            }
        }
        let summary = format!(
            "copy {} to {} ({} entries, {bytes} bytes)",
            t.from.display(),
            t.to.display(),
            effects.len()
        );
        Ok((Plan::new(summary, effects, Precondition::new(t.expect)), ()))
    }

    fn apply(&self, cx: &Context<'_>, input: &Self::Input, _: ()) -> Result<CopyOutput> {
        let t = input.transfer(cx)?;
        let (from_dir, from_name) = t.from.open_parent()?;
        let (to_dir, to_name) = t.to.open_parent()?;
        let mut counts = CopyOutput::new(&t.from, &t.to);
        copy_entry(
            cx,
            &from_dir,
            &from_name,
            &to_dir,
            &to_name,
            t.kind,
            &mut counts,
            &t.to,
        )?;
        Ok(counts)
    }
}

/// Copies a file (atomically replacing the destination) or a folder (built
/// under a hidden temporary name beside the destination, then renamed).
#[allow(clippy::too_many_arguments)]
fn copy_entry(
    cx: &Context<'_>,
    from_dir: &Dir,
    from_name: &OsStr,
    to_dir: &Dir,
    to_name: &OsStr,
    kind: EntryKind,
    counts: &mut CopyOutput,
    to: &Location<'_>,
) -> Result<()> {
    let to_path = to.path();
    match kind {
        EntryKind::File => copy_file(cx, from_dir, from_name, to_dir, to_name, counts, &to_path),
        EntryKind::Directory => {
            let temp = temp_name(to_name);
            to_dir.create_dir(&temp).map_err(|e| Error::io(&to_path, e))?;
            let result = (|| {
                {
                    let src = from_dir
                        .open_dir_nofollow(from_name)
                        .map_err(|e| Error::io(&to_path, e))?;
                    let dst = to_dir.open_dir(&temp).map_err(|e| Error::io(&to_path, e))?;
                    counts.directories += 1;
                    copy_tree(cx, &src, &dst, counts, &to_path)?;
                }
                // Both handles are closed here: Windows refuses to rename a
                // folder that is open (a sharing violation).
                to_dir
                    .rename(&temp, to_dir, to_name)
                    .map_err(|e| Error::io(&to_path, e))
            })();
            if result.is_err() {
                let _ = to_dir.remove_dir_all(&temp);
            }
            result
        }
        other => Err(Error::NotAFile {
            path: to_path,
            found: other.article(),
        }),
    }
}

fn copy_tree(
    cx: &Context<'_>,
    src: &Dir,
    dst: &Dir,
    counts: &mut CopyOutput,
    path: &std::path::Path,
) -> Result<()> {
    for entry in src.entries().map_err(|e| Error::io(path, e))? {
        cx.checkpoint()?;
        let entry = entry.map_err(|e| Error::io(path, e))?;
        let name = entry.file_name();
        let child = path.join(&name);
        match entry_kind(entry.file_type().map_err(|e| Error::io(&child, e))?) {
            EntryKind::File => copy_file(cx, src, &name, dst, &name, counts, &child)?,
            EntryKind::Directory => {
                dst.create_dir(&name).map_err(|e| Error::io(&child, e))?;
                counts.directories += 1;
                let sub_src = src.open_dir_nofollow(&name).map_err(|e| Error::io(&child, e))?;
                let sub_dst = dst.open_dir(&name).map_err(|e| Error::io(&child, e))?;
                copy_tree(cx, &sub_src, &sub_dst, counts, &child)?;
            }
            EntryKind::Symlink => counts.skipped_symlinks += 1,
            EntryKind::Other => counts.skipped_special += 1,
        }
    }
    Ok(())
}

fn copy_file(
    cx: &Context<'_>,
    from_dir: &Dir,
    from_name: &OsStr,
    to_dir: &Dir,
    to_name: &OsStr,
    counts: &mut CopyOutput,
    to_path: &std::path::Path,
) -> Result<()> {
    let src = open_nofollow(from_dir, from_name, to_path)?;
    let md = src.metadata().map_err(|e| Error::io(to_path, e))?;
    if !md.is_file() {
        counts.skipped_special += 1;
        return Ok(());
    }
    let mut copied = 0;
    replace_atomically(to_dir, to_name, Some(md.permissions()), to_path, |w| {
        let mut failed = None;
        copied = stream(cx, src, to_path, |chunk| {
            if failed.is_none() {
                failed = w.write_all(chunk).err();
            }
        })?;
        failed.map_or(Ok(()), |e| Err(Error::io(to_path, e)))
    })?;
    counts.files += 1;
    counts.bytes += copied;
    Ok(())
}

/// A hidden sibling name for building a folder copy: `.name.fusion-partial-<random>`.
fn temp_name(name: &OsStr) -> OsString {
    let mut random = [0u8; 6];
    let _ = getrandom::fill(&mut random);
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".fusion-partial-{}", crate::fsutil::hex(&random)));
    temp
}

/// `delete`: remove a file, link, or (with `recursive`) a folder tree.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delete;

/// Input of `delete`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInput {
    /// What to delete.
    pub path: String,
    /// Delete a non-empty folder and everything in it. Default false.
    #[serde(default)]
    pub recursive: bool,
}

/// Output of `delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeleteOutput {
    /// The deleted path.
    pub path: String,
    /// Files removed.
    pub files: u64,
    /// Folders removed (including the path itself when it is one).
    pub directories: u64,
    /// Symlinks removed (their targets are never touched).
    pub symlinks: u64,
    /// Bytes freed (apparent size of the files).
    pub bytes: u64,
}

impl MutateTool for Delete {
    type Input = DeleteInput;
    type Output = DeleteOutput;
    type Staged = DeleteOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "delete",
            "Delete a file or symlink, or a folder tree with `recursive`. Never follows links (a link is \
             removed, its target stays). The plan lists everything that goes. Never deletes an allowed folder itself.",
        )
        .destructive(true)
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, DeleteOutput)> {
        let loc = cx.scope().resolve(&input.path)?;
        loc.require_writable()?;
        loc.require_not_root("deleted")?;
        let md = lstat(&loc)?.ok_or_else(|| Error::NotFound { path: loc.path() })?;
        let kind = entry_kind(md.file_type());
        let mut totals = DeleteOutput {
            path: loc.display(),
            files: 0,
            directories: 0,
            symlinks: 0,
            bytes: 0,
        };
        let mut effects = Vec::new();
        let mut tally = |kind: EntryKind, path: String, size: u64, totals: &mut DeleteOutput| {
            let op = match kind {
                EntryKind::Directory => {
                    totals.directories += 1;
                    EffectOp::DeleteDirectory
                }
                EntryKind::Symlink => {
                    totals.symlinks += 1;
                    EffectOp::DeleteSymlink
                }
                EntryKind::File | EntryKind::Other => {
                    totals.files += 1;
                    totals.bytes += size;
                    EffectOp::DeleteFile
                }
            };
            effects.push(Effect::new(op, path).bytes(size));
        };
        if kind == EntryKind::Directory {
            let mut empty = true;
            walk(cx, &loc, &WalkOptions::everything().with_metadata(), |e| {
                empty = false;
                if !input.recursive {
                    return Ok(false);
                }
                let size = e.metadata()?.len();
                tally(entry_kind(e.file_type), e.location().display(), size, &mut totals);
                Ok(true)
            })?;
            if !empty && !input.recursive {
                return Err(Error::invalid_input(
                    "delete",
                    "recursive",
                    format!(
                        "{} is a folder that is not empty; set recursive to delete it and everything in it",
                        loc.display()
                    ),
                ));
            }
        }
        tally(
            kind,
            loc.display(),
            if kind == EntryKind::Directory { 0 } else { md.len() },
            &mut totals,
        );
        let summary = format!(
            "delete {}: {} file(s), {} folder(s), {} symlink(s), {} bytes",
            loc.display(),
            totals.files,
            totals.directories,
            totals.symlinks,
            totals.bytes
        );
        let expect = vec![expect_now(cx, &loc, kind == EntryKind::Directory)?];
        Ok((Plan::new(summary, effects, Precondition::new(expect)), totals))
    }

    fn apply(&self, cx: &Context<'_>, input: &Self::Input, totals: DeleteOutput) -> Result<DeleteOutput> {
        let loc = cx.scope().resolve(&input.path)?;
        let (dir, name) = loc.open_parent()?;
        let md = dir.symlink_metadata(&name).map_err(|e| loc.err(e))?;
        remove_entry(&dir, &name, entry_kind(md.file_type())).map_err(|e| loc.err(e))?;
        Ok(totals)
    }
}

/// Removes one entry through its parent's handle, never following a link.
fn remove_entry(dir: &Dir, name: &OsStr, kind: EntryKind) -> io::Result<()> {
    match kind {
        EntryKind::Directory => dir.remove_dir_all(name),
        _ => dir.remove_file_or_symlink(name),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod plan_tests;
