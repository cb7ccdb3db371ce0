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
    /// Size and modification time of every entry. Default true; false lists
    /// names and kinds only, without reading each entry's metadata, up to
    /// 20000 entries per call (a tree at a glance).
    #[serde(default = "default_true")]
    pub details: bool,
    /// Continue a truncated listing: the `next_cursor` of the previous page.
    /// Each page then costs only itself (an `offset` re-walks what it skips).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Skip this many entries (to continue a truncated listing; prefer `cursor`).
    #[serde(default)]
    pub offset: usize,
    /// Return at most this many entries (1 to 1000, default 1000; with
    /// `details: false`, 1 to 20000, default 20000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// The most entries a names-only listing (`details: false`) returns in one call.
pub const MAX_NAME_ENTRIES: usize = 20_000;

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
    /// The entries, sorted by path, depth first.
    pub entries: Vec<Entry>,
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
             Returns at most 1000 entries per call (20000 names with `details: false`) with `truncated` and \
             `next_cursor` to continue.",
        )
    }

    fn run(&self, cx: &Context<'_>, input: Self::Input) -> Result<Self::Output> {
        let cap = if input.details {
            MAX_ENTRIES
        } else {
            MAX_NAME_ENTRIES
        };
        let limit = bounded_limit("list_directory", input.limit, cap)?;
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
        let mut seen = 0usize;
        let mut truncated = false;
        let mut last = std::path::PathBuf::new();
        let stats = walk(cx, &base, &options, |entry| {
            seen += 1;
            if seen <= input.offset {
                return Ok(true);
            }
            if entries.len() == limit {
                truncated = true;
                return Ok(false);
            }
            last.as_mut_os_string().clear();
            last.push(entry.rel);
            let (size, modified) = if input.details {
                let md = entry.metadata()?;
                (Some(md.len()), modified(&md))
            } else {
                (None, None)
            };
            entries.push(Entry {
                path: slash_path(entry.rel),
                kind: entry_kind(entry.file_type),
                size,
                modified,
                symlink: entry.file_type.is_symlink(),
            });
            Ok(true)
        })?;
        Ok(ListDirectoryOutput {
            path: base.display(),
            next_offset: truncated.then_some(input.offset + entries.len()),
            next_cursor: truncated.then(|| cursor_after(&last)),
            entries,
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
mod tests {
    use serde_json::json;

    use super::super::testutil::{Fixture, code};
    use crate::ErrorCode;

    fn paths(v: &serde_json::Value, key: &str) -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn lists_one_level_sorted_with_metadata() {
        let f = Fixture::new();
        f.write("b.txt", "hello");
        f.write("a/inner.txt", "x");
        f.write(".hidden", "");
        let out = f.run("list_directory", json!({ "path": "." }));
        assert_eq!(paths(&out, "entries"), [".hidden", "a", "b.txt"]);
        let b = &out["entries"][2];
        assert_eq!(b["kind"], "file");
        assert_eq!(b["size"], 5);
        assert_eq!(b["symlink"], false);
        assert!(b["modified"].as_str().unwrap().ends_with('Z'));
        assert_eq!(out["truncated"], false);
        assert_eq!(out["path"], f.root().display().to_string());
    }

    #[test]
    fn recursive_respects_depth_and_hidden_switch() {
        let f = Fixture::new();
        f.write("a/b/c/deep.txt", "");
        f.write(".git/config", "");
        let out = f.run(
            "list_directory",
            json!({ "recursive": true, "max_depth": 2, "hidden": false }),
        );
        assert_eq!(paths(&out, "entries"), ["a", "a/b"]);
        let out = f.run("list_directory", json!({ "recursive": true }));
        assert_eq!(
            paths(&out, "entries"),
            [".git", ".git/config", "a", "a/b", "a/b/c", "a/b/c/deep.txt"]
        );
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_flagged_not_followed() {
        let f = Fixture::new();
        f.write("real/file.txt", "");
        super::super::testutil::symlink(f.path("real"), f.path("link"));
        let out = f.run("list_directory", json!({ "recursive": true }));
        assert_eq!(paths(&out, "entries"), ["link", "real", "real/file.txt"]);
        assert_eq!(out["entries"][0]["kind"], "symlink");
        assert_eq!(out["entries"][0]["symlink"], true);
    }

    #[test]
    fn bound_is_reported_and_offset_continues() {
        let f = Fixture::new();
        for i in 0..1003 {
            f.write(&format!("f{i:04}"), "");
        }
        let first = f.run("list_directory", json!({}));
        assert_eq!(first["entries"].as_array().unwrap().len(), 1000);
        assert_eq!(first["truncated"], true);
        assert_eq!(first["next_offset"], 1000);
        let rest = f.run("list_directory", json!({ "offset": 1000 }));
        assert_eq!(paths(&rest, "entries"), ["f1000", "f1001", "f1002"]);
        assert_eq!(rest["truncated"], false);
        assert!(rest.get("next_offset").is_none());

        let page = f.run("list_directory", json!({ "limit": 2, "offset": 5 }));
        assert_eq!(paths(&page, "entries"), ["f0005", "f0006"]);
        assert_eq!(page["next_offset"], 7);
    }

    /// Every page size, through nested folders, hidden names and ignore
    /// rules: the pages a cursor chains are exactly the one long listing.
    #[test]
    fn cursor_pages_join_into_the_whole_listing() {
        let f = Fixture::new();
        for path in [
            "a/1.txt",
            "a/b/2.txt",
            "a/b/c/3.las",
            "a/b/c/4.e57",
            "a/d.e57",
            "b.e57",
            "c/.hidden/5.e57",
            "c/6.e57",
            "c/ignored.log",
            "d/e/f/g/7.e57",
            "z.txt",
        ] {
            f.write(path, "x");
        }
        f.write(".gitignore", "*.log\n");
        for (tool, args, key) in [
            ("list_directory", json!({ "recursive": true }), "entries"),
            (
                "list_directory",
                json!({ "recursive": true, "hidden": false, "respect_ignore": true }),
                "entries",
            ),
            ("glob", json!({ "pattern": "*.e57" }), "matches"),
            (
                "glob",
                json!({ "pattern": "**", "hidden": true, "respect_ignore": false }),
                "matches",
            ),
        ] {
            let whole = paths(&f.run(tool, args.clone()), key);
            assert!(whole.len() > 3, "{tool} {args}: {whole:?}");
            for limit in 1..=whole.len() {
                let mut joined = Vec::new();
                let mut input = args.clone();
                input["limit"] = json!(limit);
                loop {
                    let page = f.run(tool, input.clone());
                    joined.extend(paths(&page, key));
                    match page.get("next_cursor") {
                        Some(cursor) => input["cursor"] = cursor.clone(),
                        None => break,
                    }
                }
                assert_eq!(joined, whole, "{tool} {args} by {limit}");
            }
        }
    }

    #[test]
    fn names_only_listings_skip_metadata_and_page_by_20000() {
        let f = Fixture::new();
        f.write("a/b.txt", "12345");
        let out = f.run("list_directory", json!({ "recursive": true, "details": false }));
        assert_eq!(paths(&out, "entries"), ["a", "a/b.txt"]);
        assert_eq!(
            out["entries"][1],
            json!({ "path": "a/b.txt", "kind": "file", "symlink": false })
        );
        let out = f.run("list_directory", json!({ "recursive": true }));
        assert_eq!(out["entries"][1]["size"], 5);
        let e = f.run_err("list_directory", json!({ "details": false, "limit": 20_001 }));
        assert!(e.to_string().contains("20000"), "{e}");
        let e = f.run_err("list_directory", json!({ "limit": 1001 }));
        assert!(e.to_string().contains("1000"), "{e}");
    }

    /// A name that is not UTF-8 (possible on Linux) is listed lossily, but
    /// the cursor keeps its bytes: the next page starts right after it.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_cursor_at_a_name_that_is_not_utf8_resumes_exactly() {
        use std::os::unix::ffi::OsStrExt as _;
        let f = Fixture::new();
        for name in [&b"a\xff"[..], b"a\xfe", b"a\xfd", b"b"] {
            std::fs::write(f.root().join(std::ffi::OsStr::from_bytes(name)), "").unwrap();
        }
        let whole = f.run("list_directory", json!({}));
        let mut input = json!({ "limit": 1 });
        let mut pages = 0;
        loop {
            let page = f.run("list_directory", input.clone());
            pages += 1;
            assert!(pages <= 10, "the cursor does not advance: {page}");
            match page.get("next_cursor") {
                Some(cursor) => input["cursor"] = cursor.clone(),
                None => break,
            }
        }
        assert_eq!(
            pages,
            whole["entries"].as_array().unwrap().len(),
            "one page per entry, none repeated or lost"
        );
    }

    #[test]
    fn a_cursor_survives_its_entry_being_removed_and_bad_ones_are_named() {
        let f = Fixture::new();
        for name in ["a", "b/1", "b/2", "c"] {
            f.write(name, "");
        }
        let page = f.run("list_directory", json!({ "recursive": true, "limit": 3 }));
        assert_eq!(paths(&page, "entries"), ["a", "b", "b/1"]);
        std::fs::remove_file(f.path("b/1")).unwrap();
        let rest = f.run(
            "list_directory",
            json!({ "recursive": true, "cursor": page["next_cursor"] }),
        );
        assert_eq!(paths(&rest, "entries"), ["b/2", "c"]);
        for (cursor, says) in [
            ("nope", "not a cursor"),
            ("c1.zz", "damaged"),
            ("c1.2e2e", "below the listed folder"),
        ] {
            let e = f.run_err("list_directory", json!({ "cursor": cursor }));
            assert!(
                e.to_string().contains("cursor") && e.to_string().contains(says),
                "{cursor}: {e}"
            );
        }
        let e = f.run_err(
            "glob",
            json!({ "pattern": "*", "cursor": page["next_cursor"], "offset": 2 }),
        );
        assert!(e.to_string().contains("either `cursor` or `offset`"), "{e}");
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let f = Fixture::new();
        f.write("file.txt", "");
        let e = f.run_err("list_directory", json!({ "limit": 0 }));
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        assert!(e.to_string().contains("limit"), "{e}");
        let e = f.run_err("list_directory", json!({ "limit": 5000 }));
        assert!(e.to_string().contains("cap of 1000"), "{e}");
        let e = f.run_err("list_directory", json!({ "recursive": "yes" }));
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        assert!(e.to_string().contains("recursive"), "{e}");
        let e = f.run_err("list_directory", json!({ "path": ".", "colour": true }));
        assert!(e.to_string().contains("colour"), "{e}");
        assert_eq!(
            code(&f.run_err("list_directory", json!({ "path": "file.txt" }))),
            ErrorCode::NotADirectory
        );
        assert_eq!(
            code(&f.run_err("list_directory", json!({ "path": "missing" }))),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn glob_matches_names_or_paths_and_honours_gitignore() {
        let f = Fixture::new();
        f.write("scans/north.e57", "");
        f.write("scans/south.E57", "");
        f.write("scans/old/west.e57", "");
        f.write("build/out.e57", "");
        f.write(".cache/c.e57", "");
        f.write(".gitignore", "build/\n");
        f.write("scans/.ignore", "old/\n");
        let out = f.run("glob", json!({ "pattern": "*.e57" }));
        assert_eq!(paths(&out, "matches"), ["scans/north.e57"]);
        let out = f.run(
            "glob",
            json!({ "pattern": "*.e57", "case_insensitive": true, "respect_ignore": false, "hidden": true }),
        );
        assert_eq!(
            paths(&out, "matches"),
            [
                ".cache/c.e57",
                "build/out.e57",
                "scans/north.e57",
                "scans/old/west.e57",
                "scans/south.E57"
            ]
        );
        // With a slash the pattern is matched against the relative path; `*` does not cross `/`.
        let out = f.run(
            "glob",
            json!({ "pattern": "scans/*", "respect_ignore": false, "kind": "file" }),
        );
        assert_eq!(paths(&out, "matches"), ["scans/north.e57", "scans/south.E57"]);
        let out = f.run(
            "glob",
            json!({ "pattern": "**/west.e57", "respect_ignore": false }),
        );
        assert_eq!(paths(&out, "matches"), ["scans/old/west.e57"]);
        // Ignore files above the searched folder still apply.
        let out = f.run("glob", json!({ "pattern": "*", "path": "scans" }));
        assert_eq!(paths(&out, "matches"), ["north.e57", "south.E57"]);
    }

    #[test]
    fn glob_bound_and_bad_pattern() {
        let f = Fixture::new();
        for i in 0..5 {
            f.write(&format!("{i}.las"), "");
        }
        let out = f.run("glob", json!({ "pattern": "*.las", "limit": 2 }));
        assert_eq!(paths(&out, "matches"), ["0.las", "1.las"]);
        assert_eq!(out["truncated"], true);
        assert_eq!(out["next_offset"], 2);
        let out = f.run("glob", json!({ "pattern": "*.las", "offset": 4 }));
        assert_eq!(paths(&out, "matches"), ["4.las"]);
        let e = f.run_err("glob", json!({ "pattern": "a[" }));
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        assert!(e.to_string().contains("pattern"), "{e}");
    }

    #[test]
    fn disk_usage_totals_and_budgets() {
        let f = Fixture::new();
        f.write("a/one.bin", vec![0u8; 1000]);
        f.write("a/b/two.bin", vec![0u8; 24]);
        f.write(".hidden", "12");
        let out = f.run("disk_usage", json!({}));
        assert_eq!(out["files"], 3);
        assert_eq!(out["directories"], 2);
        assert_eq!(out["complete"], true);
        assert_eq!(out["truncated"], false);
        let dir_sizes = out["bytes"].as_u64().unwrap() - 1026;
        let dir_size = std::fs::metadata(f.path("a")).unwrap().len();
        assert_eq!(
            dir_sizes,
            dir_size + std::fs::metadata(f.path("a/b")).unwrap().len()
        );

        let out = f.run("disk_usage", json!({ "max_entries": 2 }));
        assert_eq!(out["complete"], false);
        assert_eq!(out["truncated"], true);
        assert_eq!(out["stopped_by"], "entry_budget");
        assert_eq!(
            out["files"].as_u64().unwrap() + out["directories"].as_u64().unwrap(),
            2
        );

        // A zero time budget has always run out by the first entry.
        let out = f.run("disk_usage", json!({ "time_budget_ms": 0 }));
        assert_eq!(out["stopped_by"], "time_budget");

        let out = f.run("disk_usage", json!({ "path": "a/one.bin" }));
        assert_eq!(
            (out["files"].as_u64(), out["bytes"].as_u64()),
            (Some(1), Some(1000))
        );
    }
}
