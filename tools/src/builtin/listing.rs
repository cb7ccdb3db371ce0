//! The walking read tools: `list_directory`, `glob`, `disk_usage`.

use std::path::Path;
use std::time::{Duration, Instant};

use globset::{GlobBuilder, GlobMatcher};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MAX_ENTRIES, bounded_limit, default_true, dot};
use crate::EntryKind;
use crate::error::{Error, Result};
use crate::fsutil::{entry_kind, modified};
use crate::tool::{Context, Tool, ToolSpec};
use crate::walk::{MAX_DEPTH, WalkOptions, WalkStats, walk};

/// `list_directory`: the entries of a folder, optionally recursive.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListDirectory;

/// Input of `list_directory`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListDirectoryInput {
    /// The folder to list.
    #[serde(default = "dot")]
    pub path: String,
    /// List sub-folders too.
    #[serde(default)]
    pub recursive: bool,
    /// With `recursive`, how many levels to descend (1 = this folder only). Default 16.
    #[serde(default)]
    pub max_depth: Option<usize>,
    /// Include names that start with a dot. Default true.
    #[serde(default = "default_true")]
    pub hidden: bool,
    /// Skip what `.gitignore` / `.ignore` files exclude. Default false.
    #[serde(default)]
    pub respect_ignore: bool,
    /// Size and modification time of every entry. Default true; false gives
    /// `names` instead of `entries`: paths only, a folder's ending in `/`,
    /// without reading each entry's metadata, up to 100000 names or 4 MiB of
    /// them per call (a tree at a glance).
    #[serde(default = "default_true")]
    pub details: bool,
    /// Continue a truncated listing: the `next_cursor` of the previous page.
    /// Each page then costs only itself (an `offset` re-walks what it skips).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Skip this many entries (to continue a truncated listing; prefer `cursor`).
    #[serde(default)]
    pub offset: usize,
    /// Return at most this many entries (default 1000, at most 10000; with
    /// `details: false`, default and most 100000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The most entries a names-only listing (`details: false`) returns in one call.
pub const MAX_NAME_ENTRIES: usize = 100_000;

/// The most entries a listing with details returns in one call, when asked
/// (`limit`); 1000 unless asked.
pub const MAX_DETAILED_ENTRIES: usize = 10_000;

/// The most bytes of paths a listing returns in one call: long paths end a
/// page before its count of entries does, so that a page stays well below
/// what a server accepts as one result.
pub const MAX_LISTING_BYTES: usize = 4 << 20;

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Entry {
    /// Path relative to the listed folder, `/`-separated.
    pub path: String,
    /// File, directory, symlink or other.
    pub kind: EntryKind,
    /// Size in bytes (a symlink's own size); absent with `details: false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Last modification, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
    /// True for symbolic links (never followed by listings).
    pub symlink: bool,
}

/// Output of `list_directory`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ListDirectoryOutput {
    /// The listed folder, as a full path.
    pub path: String,
    /// The entries, sorted by path, depth first; empty with `details: false`,
    /// which gives `names` instead.
    pub entries: Vec<Entry>,
    /// With `details: false`: every entry's path, relative and `/`-separated,
    /// in the same order as `entries` would be; a folder's ends in `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// With `details: false`: those of `names` that are symbolic links (never
    /// followed). Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symlinks: Vec<String>,
    /// True when more entries exist than were returned.
    pub truncated: bool,
    /// The `offset` that continues this listing, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// The `cursor` that continues this listing, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Sub-folders that could not be read (permission denied), not listed.
    pub unreadable: u64,
}

/// A cursor: the last path a page returned, so the next page resumes the
/// walk right after it. Opaque to callers: `c1.` and the path's components,
/// `/`-joined, in hex — the name's own bytes on Unix, so a name that is not
/// UTF-8 resumes exactly where it was.
pub(crate) fn cursor_after(rel: &Path) -> String {
    let mut bytes = Vec::new();
    for (i, component) in rel.components().enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(&name_bytes(component.as_os_str()));
    }
    format!("c1.{}", crate::fsutil::hex(&bytes))
}

#[cfg(unix)]
fn name_bytes(name: &std::ffi::OsStr) -> Vec<u8> {
    std::os::unix::ffi::OsStrExt::as_bytes(name).to_vec()
}

/// Windows names are UTF-16; only an unpaired surrogate is not UTF-8.
#[cfg(not(unix))]
fn name_bytes(name: &std::ffi::OsStr) -> Vec<u8> {
    name.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn name_from(bytes: &[u8]) -> Option<std::ffi::OsString> {
    Some(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes).to_os_string())
}

#[cfg(not(unix))]
fn name_from(bytes: &[u8]) -> Option<std::ffi::OsString> {
    std::str::from_utf8(bytes).ok().map(std::ffi::OsString::from)
}

/// The walk's resume point from a `cursor`, checked to stay below the base.
pub(crate) fn resume_from(tool: &str, cursor: &str, offset: usize) -> Result<Vec<std::ffi::OsString>> {
    let bad = |why: &str| {
        Error::invalid_input(
            tool,
            "cursor",
            format!("{why}; pass the next_cursor of the previous page unchanged"),
        )
    };
    if offset != 0 {
        return Err(Error::invalid_input(
            tool,
            "offset",
            "give either `cursor` or `offset`, not both",
        ));
    }
    let hex = cursor
        .strip_prefix("c1.")
        .ok_or_else(|| bad("it is not a cursor of this tool"))?;
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| bad("it is damaged"))?;
    let components = bytes
        .split(|b| *b == b'/')
        .map(name_from)
        .collect::<Option<Vec<std::ffi::OsString>>>()
        .ok_or_else(|| bad("it is damaged"))?;
    if components.iter().any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(bad("it does not name a path below the listed folder"));
    }
    Ok(components)
}

impl Tool for ListDirectory {
    type Input = ListDirectoryInput;
    type Output = ListDirectoryOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::read(
            "list_directory",
            "List a folder's entries (type, size, modified time, symlink flag); optionally recursive. \
             Returns 1000 entries per call (up to 10000 with `limit`) with `truncated` and `next_cursor` \
             to continue. `details: false` gives the whole tree at a glance: `names` only (folders end \
             in `/`), up to 100000 per call. A page also ends at 4 MiB of paths.",
        )
    }

    fn run(&self, cx: &Context<'_>, input: Self::Input) -> Result<Self::Output> {
        let limit = match (input.details, input.limit) {
            (true, None) => MAX_ENTRIES,
            (true, asked) => bounded_limit("list_directory", asked, MAX_DETAILED_ENTRIES)?,
            (false, asked) => bounded_limit("list_directory", asked, MAX_NAME_ENTRIES)?,
        };
        let base = cx.scope().resolve(&input.path)?;
        let max_depth = match (input.recursive, input.max_depth) {
            (false, _) => 1,
            (true, None) => 16,
            (true, Some(0)) => {
                return Err(Error::invalid_input(
                    "list_directory",
                    "max_depth",
                    "must be at least 1",
                ));
            }
            (true, Some(d)) => d.min(MAX_DEPTH),
        };
        // Reads no further ahead than the page needs. Entries are stat'ed
        // ahead on the first page only: a later page would stat every entry
        // it skips.
        let mut options = WalkOptions::filtered(max_depth, input.hidden, input.respect_ignore)
            .with_lookahead(input.offset.saturating_add(limit).saturating_add(1));
        options.metadata = input.details && input.offset == 0;
        if let Some(cursor) = &input.cursor {
            options.resume_after = Some(resume_from("list_directory", cursor, input.offset)?);
        }
        let mut entries = Vec::new();
        let (mut names, mut symlinks, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        let mut seen = 0usize;
        let mut truncated = false;
        let mut last = std::path::PathBuf::new();
        let stats = walk(cx, &base, &options, |entry| {
            seen += 1;
            if seen <= input.offset {
                return Ok(true);
            }
            if entries.len() + names.len() == limit {
                truncated = true;
                return Ok(false);
            }
            let mut path = slash_path(entry.rel);
            if !input.details && entry.file_type.is_dir() {
                path.push('/');
            }
            if bytes > 0 && bytes + path.len() > MAX_LISTING_BYTES {
                truncated = true;
                return Ok(false);
            }
            bytes += path.len();
            if input.details {
                let md = entry.metadata()?;
                entries.push(Entry {
                    path,
                    kind: entry_kind(entry.file_type),
                    size: Some(md.len()),
                    modified: modified(&md),
                    symlink: entry.file_type.is_symlink(),
                });
            } else {
                if entry.file_type.is_symlink() {
                    symlinks.push(path.clone());
                }
                names.push(path);
            }
            last.as_mut_os_string().clear();
            last.push(entry.rel);
            Ok(true)
        })?;
        let returned = entries.len() + names.len();
        Ok(ListDirectoryOutput {
            path: base.display(),
            next_offset: truncated.then_some(input.offset + returned),
            next_cursor: truncated.then(|| cursor_after(&last)),
            entries,
            names: (!input.details).then_some(names),
            symlinks,
            truncated,
            unreadable: stats.unreadable,
        })
    }
}

/// A relative path with `/` separators on every platform.
pub(crate) fn slash_path(rel: &Path) -> String {
    let s = rel.to_string_lossy();
    if std::path::MAIN_SEPARATOR == '/' {
        s.into_owned()
    } else {
        s.replace(std::path::MAIN_SEPARATOR, "/")
    }
}

/// `glob`: paths matching a glob pattern, gitignore-aware.
#[derive(Debug, Clone, Copy, Default)]
pub struct Glob;

/// Input of `glob`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GlobInput {
    /// A glob: `*.e57`, `**/*.rs`, `scans/{north,south}/*.las`. A pattern
    /// without `/` matches file names at any depth; with `/` it matches the
    /// path relative to `path`. `*` never crosses `/`; `**` does.
    pub pattern: String,
    /// The folder to search.
    #[serde(default = "dot")]
    pub path: String,
    /// Include names that start with a dot. Default false.
    #[serde(default)]
    pub hidden: bool,
    /// Skip what `.gitignore` / `.ignore` files exclude. Default true.
    #[serde(default = "default_true")]
    pub respect_ignore: bool,
    /// Match letters regardless of case. Default false.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Only `file`s, only `directory`s, or both (default).
    #[serde(default)]
    pub kind: Option<EntryKind>,
    /// Continue a truncated result: the `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// Skip this many matches (to continue a truncated result; prefer `cursor`).
    #[serde(default)]
    pub offset: usize,
    /// Return at most this many matches (1 to 1000, default 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One path that matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GlobMatch {
    /// Path relative to the searched folder, `/`-separated.
    pub path: String,
    /// File, directory, symlink or other.
    pub kind: EntryKind,
}

/// Output of `glob`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GlobOutput {
    /// The searched folder, as a full path.
    pub path: String,
    /// Matches, sorted by path, depth first.
    pub matches: Vec<GlobMatch>,
    /// True when more matches exist than were returned.
    pub truncated: bool,
    /// The `offset` that continues, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// The `cursor` that continues, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Sub-folders that could not be read, not searched.
    pub unreadable: u64,
}

/// A compiled name-or-path glob, as `glob` and `grep`'s file filter use it.
pub(crate) struct PathGlob {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl PathGlob {
    pub(crate) fn new(tool: &str, field: &str, pattern: &str, case_insensitive: bool) -> Result<Self> {
        let matcher = GlobBuilder::new(pattern)
            .literal_separator(true)
            .case_insensitive(case_insensitive)
            .build()
            .map_err(|e| Error::invalid_input(tool, field, format!("not a valid glob: {e}")))?
            .compile_matcher();
        Ok(PathGlob {
            matcher,
            whole_path: pattern.contains('/'),
        })
    }

    pub(crate) fn is_match(&self, rel: &Path) -> bool {
        if self.whole_path {
            self.matcher.is_match(rel)
        } else {
            rel.file_name().is_some_and(|n| self.matcher.is_match(n))
        }
    }
}

impl Tool for Glob {
    type Input = GlobInput;
    type Output = GlobOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::read(
            "glob",
            "Find files and folders whose name or relative path matches a glob (`**/*.e57`). \
             Honours .gitignore/.ignore and skips hidden names unless asked. At most 1000 matches per call.",
        )
    }

    fn run(&self, cx: &Context<'_>, input: Self::Input) -> Result<Self::Output> {
        let limit = bounded_limit("glob", input.limit, MAX_ENTRIES)?;
        let glob = PathGlob::new("glob", "pattern", &input.pattern, input.case_insensitive)?;
        let base = cx.scope().resolve(&input.path)?;
        let mut options = WalkOptions::filtered(MAX_DEPTH, input.hidden, input.respect_ignore);
        if let Some(cursor) = &input.cursor {
            options.resume_after = Some(resume_from("glob", cursor, input.offset)?);
        }
        let mut matches = Vec::new();
        let mut seen = 0usize;
        let mut truncated = false;
        let mut last = std::path::PathBuf::new();
        let stats = walk(cx, &base, &options, |entry| {
            let kind = entry_kind(entry.file_type);
            if input.kind.is_some_and(|k| k != kind) || !glob.is_match(entry.rel) {
                return Ok(true);
            }
            seen += 1;
            if seen <= input.offset {
                return Ok(true);
            }
            if matches.len() == limit {
                truncated = true;
                return Ok(false);
            }
            last.as_mut_os_string().clear();
            last.push(entry.rel);
            matches.push(GlobMatch {
                path: slash_path(entry.rel),
                kind,
            });
            Ok(true)
        })?;
        Ok(GlobOutput {
            path: base.display(),
            next_offset: truncated.then_some(input.offset + matches.len()),
            next_cursor: truncated.then(|| cursor_after(&last)),
            matches,
            truncated,
            unreadable: stats.unreadable,
        })
    }
}

/// `disk_usage`: bytes, files and folders under a path, within a budget.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskUsage;

/// The most entries `disk_usage` visits unless asked for fewer.
pub const DISK_USAGE_MAX_ENTRIES: u64 = 5_000_000;
/// How long `disk_usage` walks unless asked for less: 10 s.
pub const DISK_USAGE_TIME_BUDGET_MS: u64 = 10_000;

/// Input of `disk_usage`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskUsageInput {
    /// The folder (or file) to measure.
    #[serde(default = "dot")]
    pub path: String,
    /// Stop after visiting this many entries (default and maximum 5,000,000).
    #[serde(default)]
    pub max_entries: Option<u64>,
    /// Stop after this many milliseconds (default and maximum 10,000).
    #[serde(default)]
    pub time_budget_ms: Option<u64>,
}

/// Output of `disk_usage`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiskUsageOutput {
    /// The measured path.
    pub path: String,
    /// Sum of file sizes (apparent size), symlinks counted as themselves.
    pub bytes: u64,
    /// Space allocated on disk, where the platform reports it (as `du` does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// Regular files.
    pub files: u64,
    /// Folders below the path.
    pub directories: u64,
    /// Symbolic links (not followed).
    pub symlinks: u64,
    /// False when a budget stopped the walk: the totals are then lower bounds.
    pub complete: bool,
    /// `entry_budget` or `time_budget` when not complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// True when not complete (same as `!complete`, for uniform handling).
    pub truncated: bool,
    /// Sub-folders that could not be read, not counted.
    pub unreadable: u64,
}

impl Tool for DiskUsage {
    type Input = DiskUsageInput;
    type Output = DiskUsageOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::read(
            "disk_usage",
            "Total size, file and folder counts under a path. Bounded by an entry and a time budget; \
             says when it stopped early (then the totals are lower bounds).",
        )
    }

    fn run(&self, cx: &Context<'_>, input: Self::Input) -> Result<Self::Output> {
        let max_entries = input
            .max_entries
            .unwrap_or(DISK_USAGE_MAX_ENTRIES)
            .min(DISK_USAGE_MAX_ENTRIES);
        let budget = Duration::from_millis(
            input
                .time_budget_ms
                .unwrap_or(DISK_USAGE_TIME_BUDGET_MS)
                .min(DISK_USAGE_TIME_BUDGET_MS),
        );
        let stop_at = Instant::now() + budget;
        let base = cx.scope().resolve(&input.path)?;
        let mut out = DiskUsageOutput {
            path: base.display(),
            bytes: 0,
            disk_bytes: None,
            files: 0,
            directories: 0,
            symlinks: 0,
            complete: true,
            stopped_by: None,
            truncated: false,
            unreadable: 0,
        };
        let mut disk_bytes = 0u64;
        let mut count = |md: &cap_std::fs::Metadata, out: &mut DiskUsageOutput| {
            out.bytes += md.len();
            disk_bytes += allocated(md);
            match entry_kind(md.file_type()) {
                EntryKind::File => out.files += 1,
                EntryKind::Directory => out.directories += 1,
                EntryKind::Symlink => out.symlinks += 1,
                EntryKind::Other => {}
            }
        };
        let md = crate::fsutil::lstat(&base)?.ok_or_else(|| Error::NotFound { path: base.path() })?;
        let stats = if md.is_dir() {
            let mut visited = 0u64;
            walk(cx, &base, &WalkOptions::everything().with_metadata(), |entry| {
                if visited >= max_entries || Instant::now() >= stop_at {
                    out.stopped_by = Some(
                        if visited >= max_entries {
                            "entry_budget"
                        } else {
                            "time_budget"
                        }
                        .into(),
                    );
                    return Ok(false);
                }
                visited += 1;
                count(&entry.metadata()?, &mut out);
                Ok(true)
            })?
        } else {
            count(&md, &mut out);
            WalkStats::default()
        };
        out.complete = out.stopped_by.is_none();
        out.truncated = !out.complete;
        out.unreadable = stats.unreadable;
        out.disk_bytes = cfg!(unix).then_some(disk_bytes);
        Ok(out)
    }
}

#[cfg(unix)]
fn allocated(md: &cap_std::fs::Metadata) -> u64 {
    use cap_std::fs::MetadataExt;
    md.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(_: &cap_std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests;
