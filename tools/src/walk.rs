//! A directory walk through handles: each directory is opened from its
//! parent's handle without following symlinks, so a walk can never leave the
//! root, whatever is renamed or swapped while it runs.
//!
//! Order is deterministic (entries sorted by name, depth first), so that a
//! bounded result can be continued with an `offset`. `.gitignore` and
//! `.ignore` files are honoured like ripgrep does, from the root down.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, FileType, Metadata};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};
use crate::scope::Location;
use crate::tool::Context;

/// How deep and what to show.
#[derive(Debug, Clone)]
pub(crate) struct WalkOptions {
    /// 1 lists the directory's own entries only.
    pub max_depth: usize,
    /// Include names starting with a dot.
    pub hidden: bool,
    /// Honour `.gitignore` / `.ignore` files.
    pub respect_ignore: bool,
}

/// The deepest a walk descends, whatever is asked: deeper trees are reported
/// through `skipped`, never followed into unbounded recursion.
pub(crate) const MAX_DEPTH: usize = 256;

impl WalkOptions {
    /// Every entry at every depth, ignore files and hidden names included:
    /// what a precondition or a tree copy must see.
    pub(crate) fn everything() -> Self {
        WalkOptions {
            max_depth: MAX_DEPTH,
            hidden: true,
            respect_ignore: false,
        }
    }
}

/// One entry met by the walk.
pub(crate) struct WalkEntry<'a> {
    /// Path relative to the walk's base.
    pub rel: &'a Path,
    /// The entry's type, symlinks not followed.
    pub file_type: FileType,
    /// The handle of the directory holding the entry.
    /// Shared, so a consumer can keep it after the visit (to open the entry
    /// on another thread).
    pub parent: &'a Arc<Dir>,
    /// The entry's name in `parent`.
    pub name: &'a OsString,
    base: &'a Location<'a>,
}

impl WalkEntry<'_> {
    /// Metadata without following a final symlink.
    pub(crate) fn metadata(&self) -> Result<Metadata> {
        self.parent
            .symlink_metadata(self.name)
            .map_err(|e| self.base.join(self.rel).err(e))
    }

    /// The entry's location in the scope.
    pub(crate) fn location(&self) -> Location<'_> {
        self.base.join(self.rel)
    }
}

/// What the walk could not read (a directory without permission, say). It is
/// counted and reported by the tools, never silently dropped.
#[derive(Debug, Default, Clone)]
pub(crate) struct WalkStats {
    pub unreadable: u64,
    pub first_unreadable: Option<String>,
}

/// Walks below `base` (not including it), calling `visit` for each entry in
/// order. `visit` returns `Ok(false)` to stop the whole walk.
pub(crate) fn walk(
    cx: &Context<'_>,
    base: &Location<'_>,
    options: &WalkOptions,
    mut visit: impl FnMut(&WalkEntry<'_>) -> Result<bool>,
) -> Result<WalkStats> {
    // The base may be a symlink that stays inside the root (cap-std resolves it
    // beneath the handle and refuses one that leaves); entries below are never followed.
    let dir = base.root().dir().open_dir(base.rel_or_dot()).map_err(|e| {
        match base.root().dir().metadata(base.rel_or_dot()) {
            Ok(md) if !md.is_dir() => Error::NotADirectory {
                path: base.path(),
                found: crate::fsutil::EntryKind::of(md.file_type()).article(),
            },
            _ => base.err(e),
        }
    })?;
    let mut walker = Walker {
        cx,
        base,
        options,
        ignores: Vec::new(),
        stats: WalkStats::default(),
    };
    if options.respect_ignore {
        walker.load_ancestor_ignores(base)?;
    }
    walker.dir(&Arc::new(dir), PathBuf::new(), 1, &mut visit)?;
    Ok(walker.stats)
}

struct Walker<'a, 'b> {
    cx: &'a Context<'b>,
    base: &'a Location<'a>,
    options: &'a WalkOptions,
    /// Ignore matchers from the root down to the directory being walked.
    ignores: Vec<Gitignore>,
    stats: WalkStats,
}

impl Walker<'_, '_> {
    /// Ignore files between the root and the base apply to the walk too.
    fn load_ancestor_ignores(&mut self, base: &Location<'_>) -> Result<()> {
        let root = base.root();
        let mut rel = PathBuf::new();
        let mut components = base.rel().components();
        loop {
            let dir_rel = if rel.as_os_str().is_empty() {
                Path::new(".")
            } else {
                rel.as_path()
            };
            if let Ok(dir) = root.dir().open_dir_nofollow(dir_rel) {
                if let Some(ignore) = load_ignore_file(&dir, &root.path().join(&rel)) {
                    self.ignores.push(ignore);
                }
            }
            match components.next() {
                Some(c) => rel.push(c),
                None => return Ok(()),
            }
        }
    }

    /// Walks one directory; returns `Ok(false)` when the visitor stopped.
    fn dir(
        &mut self,
        dir: &Arc<Dir>,
        rel: PathBuf,
        depth: usize,
        visit: &mut impl FnMut(&WalkEntry<'_>) -> Result<bool>,
    ) -> Result<bool> {
        let pushed = if self.options.respect_ignore && depth > 1 {
            match load_ignore_file(dir, &self.virtual_path(&rel)) {
                Some(ignore) => {
                    self.ignores.push(ignore);
                    true
                }
                None => false,
            }
        } else {
            false
        };
        let result = self.dir_entries(dir, &rel, depth, visit);
        if pushed {
            self.ignores.pop();
        }
        result
    }

    fn dir_entries(
        &mut self,
        dir: &Arc<Dir>,
        rel: &Path,
        depth: usize,
        visit: &mut impl FnMut(&WalkEntry<'_>) -> Result<bool>,
    ) -> Result<bool> {
        let mut entries = Vec::new();
        let read = dir.entries().and_then(|it| {
            for entry in it {
                let entry = entry?;
                entries.push((entry.file_name(), entry.file_type()?));
            }
            Ok(())
        });
        if let Err(e) = read {
            self.unreadable(rel, &e);
            return Ok(true);
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));

        for (name, file_type) in entries {
            self.cx.checkpoint()?;
            if !self.options.hidden && name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let child = rel.join(&name);
            if self.options.respect_ignore && self.ignored(&child, file_type.is_dir()) {
                continue;
            }
            let entry = WalkEntry {
                rel: &child,
                file_type,
                parent: dir,
                name: &name,
                base: self.base,
            };
            if !visit(&entry)? {
                return Ok(false);
            }
            if file_type.is_dir() && depth < self.options.max_depth.min(MAX_DEPTH) {
                // Never follows a symlink: `file_type` is the link's own type,
                // and open_dir_nofollow refuses a name swapped for a link since.
                match dir.open_dir_nofollow(&name) {
                    Ok(sub) => {
                        if !self.dir(&Arc::new(sub), child, depth + 1, visit)? {
                            return Ok(false);
                        }
                    }
                    Err(e) => self.unreadable(&child, &e),
                }
            }
        }
        Ok(true)
    }

    fn unreadable(&mut self, rel: &Path, e: &io::Error) {
        self.stats.unreadable += 1;
        if self.stats.first_unreadable.is_none() {
            self.stats.first_unreadable = Some(format!("{}: {e}", self.base.join(rel).display()));
        }
    }

    /// The path ignore matchers see: the real path, so patterns anchored in an
    /// ignore file line up with the directory that file sits in.
    fn virtual_path(&self, rel: &Path) -> PathBuf {
        self.base.path().join(rel)
    }

    fn ignored(&self, rel: &Path, is_dir: bool) -> bool {
        let path = self.virtual_path(rel);
        for ignore in self.ignores.iter().rev() {
            let m = ignore.matched(&path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }
}

/// Builds one matcher from a directory's `.gitignore` and `.ignore` (the
/// latter wins, as in ripgrep). Unreadable or malformed lines are skipped.
fn load_ignore_file(dir: &Dir, virtual_dir: &Path) -> Option<Gitignore> {
    let mut builder = GitignoreBuilder::new(virtual_dir);
    let mut any = false;
    for name in [".gitignore", ".ignore"] {
        let Ok(text) = dir.read_to_string(name) else {
            continue;
        };
        let from = virtual_dir.join(name);
        for line in text.lines() {
            let _ = builder.add_line(Some(from.clone()), line);
        }
        any = true;
    }
    if !any {
        return None;
    }
    builder.build().ok().filter(|g| !g.is_empty())
}
