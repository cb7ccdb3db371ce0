//! A directory walk through handles: each directory is opened from its
//! parent's handle without following symlinks, so a walk can never leave the
//! root, whatever is renamed or swapped while it runs.
//!
//! Order is deterministic (entries sorted by name, depth first), so that a
//! bounded result can be continued with an `offset`. `.gitignore` and
//! `.ignore` files are honoured like ripgrep does, from the root down.
//!
//! Reading is parallel, the order is not: worker threads read directories
//! ahead of the visitor (open, list, filter, sort and, when asked, stat every
//! entry), in the depth-first order the visitor will want them, while the
//! visitor runs on the calling thread. How far the workers may run ahead is
//! bounded in entries and in open directories, so memory and descriptors stay
//! flat on any tree, and a walk the visitor stops early wastes little.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use cap_fs_ext::DirExt;
use cap_std::fs::{Dir, FileType, Metadata};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::error::{Error, Result};
use crate::scope::Location;
use crate::tool::Context;

/// How deep, what to show and what to read ahead.
#[derive(Debug, Clone)]
pub(crate) struct WalkOptions {
    /// 1 lists the directory's own entries only.
    pub max_depth: usize,
    /// Include names starting with a dot.
    pub hidden: bool,
    /// Honour `.gitignore` / `.ignore` files.
    pub respect_ignore: bool,
    /// Stat every entry while reading its directory (on the workers), for
    /// visitors that call [`WalkEntry::metadata`] on every entry.
    pub metadata: bool,
    /// The most entries read ahead of the visitor. A visitor that stops after
    /// a known count (a bounded listing) sets it near that count.
    pub lookahead: usize,
    /// Threads reading ahead; 0 reads every directory on the visitor's thread.
    pub workers: usize,
    /// Resume just after this entry (its path below the base, by component):
    /// everything before it in walk order is neither visited nor read, so a
    /// continued listing costs its own page, not a walk from the start.
    pub resume_after: Option<Vec<OsString>>,
}

/// The deepest a walk descends, whatever is asked: deeper trees are reported
/// through `skipped`, never followed into unbounded recursion.
pub(crate) const MAX_DEPTH: usize = 256;

/// Entries read ahead of the visitor unless a walk asks for fewer.
const LOOKAHEAD: usize = 16_384;

/// Directories held open ahead of the visitor, at most.
const MAX_AHEAD_DIRS: usize = 128;

/// Threads reading ahead, at most.
const MAX_WORKERS: usize = 4;

impl WalkOptions {
    /// A filtered walk, as the listing and search tools do it.
    pub(crate) fn filtered(max_depth: usize, hidden: bool, respect_ignore: bool) -> Self {
        WalkOptions {
            max_depth,
            hidden,
            respect_ignore,
            metadata: false,
            lookahead: LOOKAHEAD,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            resume_after: None,
        }
    }

    /// Where the resume point lies inside the directory at `rel`: the name
    /// of its component there; `None` when `rel` is not on the way to it.
    fn resume_component(&self, rel: &Path) -> Option<&OsStr> {
        let after = self.resume_after.as_ref()?;
        let mut depth = 0;
        for component in rel.components() {
            if after.get(depth)?.as_os_str() != component.as_os_str() {
                return None;
            }
            depth += 1;
        }
        after.get(depth).map(OsString::as_os_str)
    }

    /// Every entry at every depth, ignore files and hidden names included:
    /// what a precondition or a tree copy must see.
    pub(crate) fn everything() -> Self {
        WalkOptions::filtered(MAX_DEPTH, true, false)
    }

    /// Stat entries while reading ahead.
    pub(crate) fn with_metadata(mut self) -> Self {
        self.metadata = true;
        self
    }

    /// Read at most about `entries` ahead of the visitor.
    pub(crate) fn with_lookahead(mut self, entries: usize) -> Self {
        self.lookahead = entries.clamp(1, LOOKAHEAD);
        self
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
    metadata: Option<&'a Metadata>,
    base: &'a Location<'a>,
}

impl WalkEntry<'_> {
    /// Metadata without following a final symlink: read ahead when the walk
    /// was asked for it, else now.
    pub(crate) fn metadata(&self) -> Result<Metadata> {
        if let Some(md) = self.metadata {
            return Ok(md.clone());
        }
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
/// order, on the calling thread. `visit` returns `Ok(false)` to stop the
/// whole walk.
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
                found: crate::fsutil::entry_kind(md.file_type()).article(),
            },
            _ => base.err(e),
        }
    })?;
    let ignores = if options.respect_ignore {
        ancestor_ignores(base)
    } else {
        None
    };
    let workers = if options.max_depth > 1 { options.workers } else { 0 };
    let reader = Reader {
        options,
        base_path: base.path(),
        parallel: workers > 0,
        queue: Mutex::new(Queue::default()),
        work: Condvar::new(),
    };
    let mut walker = Walker {
        cx,
        base,
        reader: &reader,
        stats: WalkStats::default(),
    };
    let top = reader.read(dir, Path::new(""), Vec::new(), ignores, false);
    let top = match top {
        Ok(listing) => listing,
        Err(e) => {
            walker.unreadable(Path::new(""), &e);
            return Ok(walker.stats);
        }
    };
    std::thread::scope(|s| {
        // Stops the workers however the visitor ends, a panic included, so
        // the scope never waits on a worker blocked for work.
        let _stop = StopOnDrop(&reader);
        if top.entries.iter().any(|item| item.sub.is_some()) {
            for _ in 0..workers {
                s.spawn(|| reader.work());
            }
            reader.schedule(&top, Path::new(""));
        }
        walker.listing(top, &mut PathBuf::new(), &mut visit)?;
        Ok(walker.stats)
    })
}

/// A directory as read: its kept entries, sorted by name.
struct Listing {
    dir: Arc<Dir>,
    /// The directory's place in depth-first order: the index of each
    /// ancestor among its siblings, then its own.
    order: Vec<u32>,
    entries: Vec<Item>,
    /// Each entry's metadata, in the same order, when the walk reads it
    /// ahead; empty otherwise. Apart from the entries, so that sorting moves
    /// small items.
    metadata: Vec<Option<Metadata>>,
    /// The ignore rules in force inside this directory.
    ignores: Option<Arc<IgnoreChain>>,
}

struct Item {
    name: OsString,
    file_type: FileType,
    /// For a directory the walk descends into: where its listing arrives.
    sub: Option<Arc<Slot>>,
}

/// What a reader charges against the lookahead for a listing.
fn cost(listing: &io::Result<Listing>) -> usize {
    listing.as_ref().map_or(1, |l| l.entries.len() + 1)
}

/// Ignore matchers from the root down, shared by every directory below.
struct IgnoreChain {
    parent: Option<Arc<IgnoreChain>>,
    matcher: Gitignore,
}

impl IgnoreChain {
    fn ignored(chain: Option<&Arc<IgnoreChain>>, path: &Path, is_dir: bool) -> bool {
        let mut next = chain;
        while let Some(link) = next {
            let m = link.matcher.matched(path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
            next = link.parent.as_ref();
        }
        false
    }
}

/// Where one directory's listing is, from scheduled to taken.
enum SlotState {
    /// Not read yet; whoever comes first reads it.
    Idle,
    /// A worker is reading it.
    Running,
    /// Read, waiting for the visitor.
    Done(io::Result<Listing>),
    /// The visitor has it.
    Taken,
}

struct Slot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

/// A directory to read: `name` in `parent`.
struct Task {
    order: Vec<u32>,
    slot: Arc<Slot>,
    parent: Arc<Dir>,
    name: OsString,
    rel: PathBuf,
    ignores: Option<Arc<IgnoreChain>>,
}

// Tasks are ordered by their place in the walk, earliest first.
impl PartialEq for Task {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for Task {}

impl PartialOrd for Task {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Task {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order.cmp(&other.order)
    }
}

#[derive(Default)]
struct Queue {
    /// Workers take the earliest directory in depth-first order: the one the
    /// visitor will want first.
    tasks: BinaryHeap<Reverse<Task>>,
    /// Read and not yet taken by the visitor.
    ahead_entries: usize,
    ahead_dirs: usize,
    stop: bool,
}

/// Reads directories, on the workers or on the visitor's thread.
struct Reader<'a> {
    options: &'a WalkOptions,
    /// The real path of the walk's base: what ignore patterns are matched against.
    base_path: PathBuf,
    parallel: bool,
    queue: Mutex<Queue>,
    work: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Reader<'_> {
    /// Lists `dir` (at `rel`, `order`), keeping what the options show.
    /// `own_ignores` loads the directory's own ignore files (the base's were
    /// loaded with its ancestors').
    fn read(
        &self,
        dir: Dir,
        rel: &Path,
        order: Vec<u32>,
        inherited: Option<Arc<IgnoreChain>>,
        own_ignores: bool,
    ) -> io::Result<Listing> {
        let depth = order.len() + 1;
        let options = self.options;
        let virtual_dir = self.base_path.join(rel);
        let ignores = match options.respect_ignore && own_ignores {
            true => match load_ignore_file(&dir, &virtual_dir) {
                Some(matcher) => Some(Arc::new(IgnoreChain {
                    parent: inherited,
                    matcher,
                })),
                None => inherited,
            },
            false => inherited,
        };
        let mut entries = Vec::new();
        for entry in dir.entries()? {
            let entry = entry?;
            let name = entry.file_name();
            if !options.hidden && name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let file_type = entry.file_type()?;
            if options.respect_ignore
                && IgnoreChain::ignored(ignores.as_ref(), &virtual_dir.join(&name), file_type.is_dir())
            {
                continue;
            }
            entries.push(Item {
                name,
                file_type,
                sub: None,
            });
        }
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        // On the way to a resume point, what sorts before it was walked by an
        // earlier page: neither kept, nor stat'ed, nor read below.
        if let Some(resume) = options.resume_component(rel) {
            entries.retain(|item| item.name.as_os_str() >= resume);
        }
        let descend = depth < options.max_depth.min(MAX_DEPTH);
        // A failure here is met again, and reported, when the visitor asks.
        let metadata = match options.metadata {
            true => entries
                .iter()
                .map(|item| dir.symlink_metadata(&item.name).ok())
                .collect(),
            false => Vec::new(),
        };
        for item in &mut entries {
            if descend && item.file_type.is_dir() {
                item.sub = Some(Arc::new(Slot {
                    state: Mutex::new(SlotState::Idle),
                    ready: Condvar::new(),
                }));
            }
        }
        Ok(Listing {
            dir: Arc::new(dir),
            order,
            entries,
            metadata,
            ignores,
        })
    }

    /// Opens `name` in `parent` and reads it. Never follows a symlink: the
    /// entry was listed as a directory, and open_dir_nofollow refuses a name
    /// swapped for a link since.
    fn read_sub(
        &self,
        parent: &Dir,
        name: &OsStr,
        rel: &Path,
        order: Vec<u32>,
        inherited: Option<Arc<IgnoreChain>>,
    ) -> io::Result<Listing> {
        let dir = parent.open_dir_nofollow(name)?;
        self.read(dir, rel, order, inherited, true)
    }

    /// Hands the sub-directories of `listing` to the workers.
    fn schedule(&self, listing: &Listing, rel: &Path) {
        if !self.parallel {
            return;
        }
        let tasks: Vec<Reverse<Task>> = (0u32..)
            .zip(&listing.entries)
            .filter_map(|(index, item)| {
                Some(Reverse(Task {
                    order: child_order(&listing.order, index),
                    slot: Arc::clone(item.sub.as_ref()?),
                    parent: Arc::clone(&listing.dir),
                    name: item.name.clone(),
                    rel: rel.join(&item.name),
                    ignores: listing.ignores.clone(),
                }))
            })
            .collect();
        if tasks.is_empty() {
            return;
        }
        lock(&self.queue).tasks.extend(tasks);
        self.work.notify_all();
    }

    /// A worker: reads scheduled directories while the lookahead allows.
    fn work(&self) {
        loop {
            let task = {
                let mut queue = lock(&self.queue);
                loop {
                    if queue.stop {
                        return;
                    }
                    if queue.ahead_entries < self.options.lookahead
                        && queue.ahead_dirs < MAX_AHEAD_DIRS
                        && let Some(Reverse(task)) = queue.tasks.pop()
                    {
                        break task;
                    }
                    queue = self.work.wait(queue).unwrap_or_else(PoisonError::into_inner);
                }
            };
            {
                let mut state = lock(&task.slot.state);
                if !matches!(*state, SlotState::Idle) {
                    continue; // the visitor got there first
                }
                *state = SlotState::Running;
            }
            let listing = self.read_sub(&task.parent, &task.name, &task.rel, task.order, task.ignores);
            if let Ok(listing) = &listing {
                self.schedule(listing, &task.rel);
            }
            {
                let mut queue = lock(&self.queue);
                queue.ahead_entries += cost(&listing);
                queue.ahead_dirs += 1;
            }
            *lock(&task.slot.state) = SlotState::Done(listing);
            task.slot.ready.notify_all();
        }
    }

    /// The visitor's side: the listing of the sub-directory `name` of
    /// `parent`, read ahead or, when no worker has started it, read now.
    fn take(
        &self,
        slot: &Slot,
        parent: &Listing,
        index: u32,
        name: &OsStr,
        rel: &Path,
    ) -> io::Result<Listing> {
        let mut state = lock(&slot.state);
        loop {
            match std::mem::replace(&mut *state, SlotState::Taken) {
                SlotState::Idle => {
                    drop(state);
                    let order = child_order(&parent.order, index);
                    let listing = self.read_sub(&parent.dir, name, rel, order, parent.ignores.clone());
                    if let Ok(listing) = &listing {
                        self.schedule(listing, rel);
                    }
                    return listing;
                }
                SlotState::Running => {
                    *state = SlotState::Running;
                    state = slot.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
                }
                SlotState::Done(listing) => {
                    drop(state);
                    {
                        let mut queue = lock(&self.queue);
                        queue.ahead_entries -= cost(&listing);
                        queue.ahead_dirs -= 1;
                    }
                    self.work.notify_one();
                    return listing;
                }
                SlotState::Taken => {
                    return Err(io::Error::other("a directory listing was taken twice"));
                }
            }
        }
    }

    fn stop(&self) {
        lock(&self.queue).stop = true;
        self.work.notify_all();
    }
}

fn child_order(parent: &[u32], index: u32) -> Vec<u32> {
    let mut order = Vec::with_capacity(parent.len() + 1);
    order.extend_from_slice(parent);
    order.push(index);
    order
}

struct StopOnDrop<'a, 'b>(&'a Reader<'b>);

impl Drop for StopOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The visitor's side of the walk.
struct Walker<'a, 'b> {
    cx: &'a Context<'b>,
    base: &'a Location<'a>,
    reader: &'a Reader<'a>,
    stats: WalkStats,
}

impl Walker<'_, '_> {
    /// Visits one directory's entries, descending into sub-directories as
    /// they come; returns `Ok(false)` when the visitor stopped. `rel` is the
    /// directory's path below the base: each entry's is pushed onto it while
    /// the entry is visited, and taken off after.
    fn listing(
        &mut self,
        listing: Listing,
        rel: &mut PathBuf,
        visit: &mut impl FnMut(&WalkEntry<'_>) -> Result<bool>,
    ) -> Result<bool> {
        // The entry on the way to the resume point was visited by an earlier
        // page (itself, or as an ancestor of it); what is below it was not.
        let resume = self.reader.options.resume_component(rel).map(OsStr::to_os_string);
        for (index, item) in (0u32..).zip(&listing.entries) {
            self.cx.checkpoint()?;
            rel.push(&item.name);
            let went_on = self.item(&listing, index, item, resume.as_deref(), rel, visit);
            rel.pop();
            if !went_on? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Visits one entry of `listing`, at `rel`, and what is below it.
    fn item(
        &mut self,
        listing: &Listing,
        index: u32,
        item: &Item,
        resume: Option<&OsStr>,
        rel: &mut PathBuf,
        visit: &mut impl FnMut(&WalkEntry<'_>) -> Result<bool>,
    ) -> Result<bool> {
        let entry = WalkEntry {
            rel,
            file_type: item.file_type,
            parent: &listing.dir,
            name: &item.name,
            metadata: listing.metadata.get(index as usize).and_then(Option::as_ref),
            base: self.base,
        };
        if resume != Some(item.name.as_os_str()) && !visit(&entry)? {
            return Ok(false);
        }
        let Some(slot) = &item.sub else {
            return Ok(true);
        };
        match self.reader.take(slot, listing, index, &item.name, rel) {
            Ok(sub) => self.listing(sub, rel, visit),
            Err(e) => {
                self.unreadable(rel, &e);
                Ok(true)
            }
        }
    }

    fn unreadable(&mut self, rel: &Path, e: &io::Error) {
        self.stats.unreadable += 1;
        if self.stats.first_unreadable.is_none() {
            self.stats.first_unreadable = Some(format!("{}: {e}", self.base.join(rel).display()));
        }
    }
}

/// Ignore files between the root and the base (the base's own included)
/// apply to the walk too.
fn ancestor_ignores(base: &Location<'_>) -> Option<Arc<IgnoreChain>> {
    let root = base.root();
    let mut chain = None;
    let mut rel = PathBuf::new();
    let mut components = base.rel().components();
    loop {
        let dir_rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel.as_path()
        };
        if let Ok(dir) = root.dir().open_dir_nofollow(dir_rel)
            && let Some(matcher) = load_ignore_file(&dir, &root.path().join(&rel))
        {
            chain = Some(Arc::new(IgnoreChain {
                parent: chain,
                matcher,
            }));
        }
        match components.next() {
            Some(c) => rel.push(c),
            None => return chain,
        }
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

#[cfg(test)]
mod tests;
