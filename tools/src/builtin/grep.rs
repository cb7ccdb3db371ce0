//! `grep`: regex or literal search over a tree, with ripgrep's engine.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use grep_regex::RegexMatcherBuilder;
use grep_searcher::{
    BinaryDetection, Searcher, SearcherBuilder, Sink, SinkContext, SinkContextKind, SinkMatch,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::listing::{PathGlob, slash_path};
use super::{bounded_limit, default_true, dot};
use crate::error::{Error, Result};
use crate::fsutil::open_nofollow;
use crate::tool::{Context, Tool, ToolSpec};
use crate::walk::{MAX_DEPTH, WalkOptions, walk};

/// The most matching lines `grep` returns in one call.
pub const MAX_MATCHES: usize = 200;
/// The most bytes of one line `grep` returns.
pub const MAX_LINE_BYTES: usize = 1024;
/// The most context lines before or after a match.
pub const MAX_CONTEXT: usize = 10;

/// `grep`: search file contents under a folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Grep;

/// Input of `grep`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrepInput {
    /// A regular expression (Rust regex syntax), or text with `literal`.
    pub pattern: String,
    /// The folder or file to search.
    #[serde(default = "dot")]
    pub path: String,
    /// Treat `pattern` as plain text.
    #[serde(default)]
    pub literal: bool,
    /// Match letters regardless of case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Only search files whose name (or relative path, with `/`) matches this glob, e.g. `*.rs`.
    #[serde(default)]
    pub glob: Option<String>,
    /// Lines of context before each match (0 to 10).
    #[serde(default)]
    pub before_context: usize,
    /// Lines of context after each match (0 to 10).
    #[serde(default)]
    pub after_context: usize,
    /// Search names that start with a dot. Default false.
    #[serde(default)]
    pub hidden: bool,
    /// Skip what `.gitignore` / `.ignore` files exclude. Default true.
    #[serde(default = "default_true")]
    pub respect_ignore: bool,
    /// Skip this many matching lines (to continue a truncated result).
    #[serde(default)]
    pub offset: usize,
    /// Return at most this many matching lines (1 to 200, default 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One matching line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GrepMatch {
    /// File path relative to the searched folder, `/`-separated.
    pub path: String,
    /// 1-based line number.
    pub line_number: u64,
    /// The line, without its line ending, cut at 1 KB.
    pub line: String,
    /// True when `line` was cut.
    pub line_truncated: bool,
    /// Context lines before, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Context lines after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// Output of `grep`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GrepOutput {
    /// The searched path, in full.
    pub path: String,
    /// Matching lines in path order.
    pub matches: Vec<GrepMatch>,
    /// Files opened and scanned, binary ones included.
    pub files_searched: u64,
    /// Files with at least one match.
    pub files_matched: u64,
    /// Binary files skipped (a NUL byte was found).
    pub binary_skipped: u64,
    /// True when more matches exist than were returned: the search stopped early.
    pub truncated: bool,
    /// The `offset` that continues, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// Folders or files that could not be read.
    pub unreadable: u64,
}

impl Tool for Grep {
    type Input = GrepInput;
    type Output = GrepOutput;

    fn spec(&self) -> ToolSpec {
        ToolSpec::read(
            "grep",
            "Search file contents for a regex or literal text, like ripgrep: skips binary, hidden and \
             gitignored files by default; optional file glob and context lines. At most 200 matching \
             lines per call (1 KB each); `next_offset` continues.",
        )
    }

    fn run(&self, cx: &Context<'_>, input: Self::Input) -> Result<Self::Output> {
        let limit = bounded_limit("grep", input.limit, MAX_MATCHES)?;
        for (field, n) in [
            ("before_context", input.before_context),
            ("after_context", input.after_context),
        ] {
            if n > MAX_CONTEXT {
                return Err(Error::invalid_input(
                    "grep",
                    field,
                    format!("{n} is above the cap of {MAX_CONTEXT}"),
                ));
            }
        }
        if input.pattern.is_empty() {
            return Err(Error::invalid_input(
                "grep",
                "pattern",
                "is empty; give text or a regex to search for",
            ));
        }
        let matcher = RegexMatcherBuilder::new()
            .case_insensitive(input.case_insensitive)
            .fixed_strings(input.literal)
            .line_terminator(Some(b'\n'))
            .build(&input.pattern)
            .map_err(|e| Error::invalid_input("grep", "pattern", format!("not a valid regex: {e}")))?;
        let glob = input
            .glob
            .as_deref()
            .map(|g| PathGlob::new("grep", "glob", g, false))
            .transpose()?;
        let search = FileSearch {
            matcher,
            before: input.before_context,
            after: input.after_context,
            // No file can contribute more than the page needs, plus one to
            // know that more exist.
            cap: input.offset + limit + 1,
        };
        let base = cx.scope().resolve(&input.path)?;
        let mut merge = Merge {
            offset: input.offset,
            limit,
            seen: 0,
            out: GrepOutput {
                path: base.display(),
                matches: Vec::new(),
                files_searched: 0,
                files_matched: 0,
                binary_skipped: 0,
                truncated: false,
                next_offset: None,
                unreadable: 0,
            },
        };

        let md = crate::fsutil::lstat(&base)?.ok_or_else(|| Error::NotFound { path: base.path() })?;
        if md.is_file() {
            let (file, _) = crate::fsutil::open_regular(&base)?;
            let name = base
                .rel()
                .file_name()
                .map(std::path::Path::new)
                .unwrap_or(base.rel());
            let found = search.run(cx, &mut search.searcher(), file.into_std(), slash_path(name))?;
            merge.add(found);
        } else {
            let options = WalkOptions::filtered(MAX_DEPTH, input.hidden, input.respect_ignore);
            let unreadable = search_tree(cx, &base, &options, glob.as_ref(), &search, &mut merge)?;
            merge.out.unreadable += unreadable;
        }
        let mut out = merge.out;
        if out.truncated {
            out.next_offset = Some(input.offset + out.matches.len());
        }
        Ok(out)
    }
}

/// Files per hand-off between the walker and the searching threads.
const BATCH: usize = 32;

/// How many threads search file contents: the cores, at most 8.
fn search_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

/// Walks in order on this thread, opening each candidate file through its
/// parent's handle, while worker threads search the opened files; results
/// are merged strictly in walk order, so output and `offset` paging are the
/// same as a sequential search. Returns the count of unreadable entries.
fn search_tree(
    cx: &Context<'_>,
    base: &crate::scope::Location<'_>,
    options: &WalkOptions,
    glob: Option<&PathGlob>,
    search: &FileSearch,
    merge: &mut Merge,
) -> Result<u64> {
    let stop_flag = AtomicBool::new(false);
    let stop = &stop_flag;
    // Files travel in batches: one channel hand-off per file costs a futex
    // wake-up each, which measured as the search's largest overhead.
    let (job_tx, job_rx) = mpsc::sync_channel::<Vec<Job>>(8);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Vec<(usize, Result<Found>)>>();
    std::thread::scope(|s| {
        for _ in 0..search_threads() {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            s.spawn(move || {
                let mut searcher = search.searcher();
                loop {
                    let batch = job_rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|rx| rx.recv().map_err(|_| ()));
                    let Ok(batch) = batch else { return };
                    let results = batch
                        .into_iter()
                        .map(|job| {
                            if stop.load(Ordering::Relaxed) {
                                return (job.index, Ok(Found::skipped()));
                            }
                            // Opened here, in parallel, through the parent's handle; a
                            // file swapped for a symlink since the listing is not followed.
                            let found =
                                match open_nofollow(&job.dir, &job.name, std::path::Path::new(&job.rel)) {
                                    Ok(file) => search.run(cx, &mut searcher, file.into_std(), job.rel),
                                    Err(_) => Ok(Found {
                                        unreadable: true,
                                        ..Found::skipped()
                                    }),
                                };
                            (job.index, found)
                        })
                        .collect();
                    if done_tx.send(results).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let walker = s.spawn(move || {
            let mut index = 0;
            let mut batch = Vec::with_capacity(BATCH);
            let stats = walk(cx, base, options, |entry| {
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                if !entry.file_type.is_file() || glob.is_some_and(|g| !g.is_match(entry.rel)) {
                    return Ok(true);
                }
                let dir = Arc::clone(entry.parent);
                batch.push(Job {
                    index,
                    dir,
                    name: entry.name.clone(),
                    rel: slash_path(entry.rel),
                });
                index += 1;
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    return Ok(job_tx.send(full).is_ok());
                }
                Ok(true)
            });
            if !batch.is_empty() {
                let _ = job_tx.send(batch);
            }
            drop(job_tx);
            stats.map(|st| st.unreadable)
        });

        // Merge in walk order as results arrive.
        let mut pending = BTreeMap::new();
        let mut next = 0;
        let mut failure = None;
        for results in done_rx {
            pending.extend(results);
            while let Some(found) = pending.remove(&next) {
                next += 1;
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                match found {
                    Ok(found) => {
                        if !merge.add(found) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        failure.get_or_insert(e);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        let walked = walker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match failure {
            Some(e) => Err(e),
            None => walked,
        }
    })
}

/// One file to search: its folder's handle and its name in it.
struct Job {
    index: usize,
    dir: Arc<cap_std::fs::Dir>,
    name: std::ffi::OsString,
    rel: String,
}

/// The search settings every thread shares.
struct FileSearch {
    matcher: grep_regex::RegexMatcher,
    before: usize,
    after: usize,
    cap: usize,
}

impl FileSearch {
    fn searcher(&self) -> Searcher {
        SearcherBuilder::new()
            .binary_detection(BinaryDetection::quit(0))
            .line_number(true)
            .before_context(self.before)
            .after_context(self.after)
            .build()
    }

    /// Searches one opened file; at most `cap` matching lines are kept.
    fn run(
        &self,
        cx: &Context<'_>,
        searcher: &mut Searcher,
        file: std::fs::File,
        rel: String,
    ) -> Result<Found> {
        cx.checkpoint()?;
        match file.metadata() {
            Ok(md) if md.is_file() => {}
            // A FIFO or device swapped in after the listing: never read.
            _ => {
                return Ok(Found {
                    unreadable: true,
                    ..Found::skipped()
                });
            }
        }
        let mut sink = FileSink {
            cx,
            rel: &rel,
            cap: self.cap,
            found: Found::skipped(),
            pending_before: Vec::new(),
        };
        sink.found.searched = true;
        if let Err(e) = searcher.search_file(&self.matcher, &file, &mut sink) {
            if let Some(stop) = e.get_ref().and_then(|inner| inner.downcast_ref::<StopReason>()) {
                return Err(stop.0.clone().into_error());
            }
            return Ok(Found {
                unreadable: true,
                ..Found::skipped()
            });
        }
        Ok(sink.found)
    }
}

/// What one file contributed.
struct Found {
    matches: Vec<GrepMatch>,
    searched: bool,
    binary: bool,
    unreadable: bool,
}

impl Found {
    fn skipped() -> Self {
        Found {
            matches: Vec::new(),
            searched: false,
            binary: false,
            unreadable: false,
        }
    }
}

/// The result so far, in walk order, with offset and limit applied.
struct Merge {
    offset: usize,
    limit: usize,
    /// Matching lines seen so far, including skipped ones.
    seen: usize,
    out: GrepOutput,
}

impl Merge {
    /// Adds one file's matches; `false` once the page is full and one more
    /// match showed that the result is truncated.
    fn add(&mut self, found: Found) -> bool {
        if found.unreadable {
            self.out.unreadable += 1;
            return true;
        }
        if !found.searched {
            return true;
        }
        self.out.files_searched += 1;
        if found.binary {
            // Matches before the NUL byte are dropped with the file, as ripgrep does.
            self.out.binary_skipped += 1;
            return true;
        }
        if !found.matches.is_empty() {
            self.out.files_matched += 1;
        }
        for m in found.matches {
            self.seen += 1;
            if self.seen <= self.offset {
                continue;
            }
            if self.out.matches.len() == self.limit {
                self.out.truncated = true;
                return false;
            }
            self.out.matches.push(m);
        }
        true
    }
}

/// Why a search was stopped from inside the sink (cancellation or deadline).
#[derive(Debug, Clone)]
struct StopReason(Stop);

#[derive(Debug, Clone)]
enum Stop {
    Cancelled,
    Timeout,
}

impl Stop {
    fn into_error(self) -> Error {
        match self {
            Stop::Cancelled => Error::Cancelled,
            Stop::Timeout => Error::Timeout,
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "search stopped: {:?}", self.0)
    }
}

impl std::error::Error for StopReason {}

/// Collects one file's matches (with context) up to the cap.
struct FileSink<'s, 'c> {
    cx: &'s Context<'c>,
    rel: &'s str,
    cap: usize,
    found: Found,
    pending_before: Vec<String>,
}

fn line_text(bytes: &[u8]) -> (String, bool) {
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.len() <= MAX_LINE_BYTES {
        return (String::from_utf8_lossy(bytes).into_owned(), false);
    }
    let mut cut = MAX_LINE_BYTES;
    while cut > 0 && (bytes[cut] & 0b1100_0000) == 0b1000_0000 {
        cut -= 1;
    }
    (String::from_utf8_lossy(&bytes[..cut]).into_owned(), true)
}

impl Sink for FileSink<'_, '_> {
    type Error = io::Error;

    fn matched(&mut self, _: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, io::Error> {
        if let Err(e) = self.cx.checkpoint() {
            let stop = if matches!(e, Error::Timeout) {
                Stop::Timeout
            } else {
                Stop::Cancelled
            };
            return Err(io::Error::other(StopReason(stop)));
        }
        let before = std::mem::take(&mut self.pending_before);
        let (line, line_truncated) = line_text(mat.bytes());
        self.found.matches.push(GrepMatch {
            path: self.rel.to_string(),
            line_number: mat.line_number().unwrap_or(0),
            line,
            line_truncated,
            before,
            after: Vec::new(),
        });
        Ok(self.found.matches.len() < self.cap)
    }

    fn context(&mut self, _: &Searcher, ctx: &SinkContext<'_>) -> Result<bool, io::Error> {
        let (text, _) = line_text(ctx.bytes());
        match ctx.kind() {
            SinkContextKind::Before => self.pending_before.push(text),
            SinkContextKind::After => {
                if let Some(last) = self.found.matches.last_mut() {
                    last.after.push(text);
                }
            }
            SinkContextKind::Other => {}
        }
        Ok(true)
    }

    fn context_break(&mut self, _: &Searcher) -> Result<bool, io::Error> {
        self.pending_before.clear();
        Ok(true)
    }

    fn binary_data(&mut self, _: &Searcher, _: u64) -> Result<bool, io::Error> {
        self.found.binary = true;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testutil::{Fixture, code};
    use crate::ErrorCode;

    fn hits(out: &serde_json::Value) -> Vec<(String, u64)> {
        out["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["path"].as_str().unwrap().to_string(),
                    m["line_number"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn tree() -> Fixture {
        let f = Fixture::new();
        f.write("src/main.rs", "fn main() {\n    println!(\"Hello\");\n}\n");
        f.write("src/lib.rs", "// hello there\npub fn f() {}\n");
        f.write("notes.md", "say HELLO\n");
        f.write("target/debug/out.rs", "hello from build output\n");
        f.write(".gitignore", "target/\n");
        f.write(".env", "hello=secret\n");
        f.write("scan.bin", b"hello\0binary");
        f
    }

    #[test]
    fn regex_literal_and_case() {
        let f = tree();
        let out = f.run("grep", json!({ "pattern": "hello" }));
        assert_eq!(hits(&out), [("src/lib.rs".to_string(), 1)]);
        let out = f.run("grep", json!({ "pattern": "hello", "case_insensitive": true }));
        assert_eq!(
            hits(&out),
            [
                ("notes.md".into(), 1),
                ("src/lib.rs".into(), 1),
                ("src/main.rs".into(), 2)
            ]
        );
        assert_eq!(out["files_matched"], 3);
        assert_eq!(out["binary_skipped"], 1);
        let out = f.run("grep", json!({ "pattern": "f()", "literal": true }));
        assert_eq!(hits(&out), [("src/lib.rs".to_string(), 2)]);
        let out = f.run("grep", json!({ "pattern": r"fn \w+\(\)" }));
        assert_eq!(hits(&out).len(), 2);
    }

    #[test]
    fn ignore_hidden_and_glob_filters() {
        let f = tree();
        let all =
            json!({ "pattern": "hello", "case_insensitive": true, "hidden": true, "respect_ignore": false });
        let out = f.run("grep", all);
        let files: Vec<_> = hits(&out).into_iter().map(|h| h.0).collect();
        assert_eq!(
            files,
            [
                ".env",
                "notes.md",
                "src/lib.rs",
                "src/main.rs",
                "target/debug/out.rs"
            ]
        );
        let out = f.run(
            "grep",
            json!({ "pattern": "hello", "case_insensitive": true, "glob": "*.rs" }),
        );
        assert_eq!(hits(&out).len(), 2);
        let out = f.run("grep", json!({ "pattern": "hello", "path": "src/lib.rs" }));
        assert_eq!(hits(&out), [("lib.rs".to_string(), 1)]);
    }

    #[test]
    fn context_lines() {
        let f = Fixture::new();
        f.write("a.txt", "1\n2\nmatch\n4\n5\n");
        let out = f.run(
            "grep",
            json!({ "pattern": "match", "before_context": 2, "after_context": 1 }),
        );
        let m = &out["matches"][0];
        assert_eq!(m["before"], json!(["1", "2"]));
        assert_eq!(m["after"], json!(["4"]));
        assert_eq!(m["line"], "match");
        let e = f.run_err("grep", json!({ "pattern": "x", "after_context": 11 }));
        assert!(e.to_string().contains("after_context"), "{e}");
    }

    #[test]
    fn match_bound_line_bound_and_offset() {
        let f = Fixture::new();
        f.write("a.txt", "hit\n".repeat(150));
        f.write("b.txt", "hit\n".repeat(150));
        f.write("long.txt", format!("hit{}\n", "x".repeat(5000)));
        let out = f.run("grep", json!({ "pattern": "hit" }));
        assert_eq!(out["matches"].as_array().unwrap().len(), 200);
        assert_eq!(out["truncated"], true);
        assert_eq!(out["next_offset"], 200);
        let rest = f.run("grep", json!({ "pattern": "hit", "offset": 200 }));
        assert_eq!(hits(&rest).first(), Some(&("b.txt".to_string(), 51)));
        assert_eq!(rest["matches"].as_array().unwrap().len(), 101);
        assert_eq!(rest["truncated"], false);
        let long = rest["matches"].as_array().unwrap().last().unwrap();
        assert_eq!(long["line_truncated"], true);
        assert_eq!(long["line"].as_str().unwrap().len(), super::MAX_LINE_BYTES);
        let page = f.run("grep", json!({ "pattern": "hit", "limit": 1, "offset": 149 }));
        assert_eq!(hits(&page), [("a.txt".to_string(), 150)]);
        assert_eq!(page["truncated"], true);
    }

    #[test]
    fn sibling_folders_with_the_same_file_names_are_each_searched() {
        // Regression: a cached folder handle once made every sibling's
        // `notes.txt` open in the first sibling.
        let f = Fixture::new();
        for i in 0..40 {
            let content = if i == 37 { "the needle\n" } else { "hay\n" };
            f.write(&format!("d{i:02}/notes.txt"), content);
            f.write(&format!("d{i:02}/more.txt"), "hay\n");
        }
        let out = f.run("grep", json!({ "pattern": "needle" }));
        assert_eq!(hits(&out), [("d37/notes.txt".to_string(), 1)]);
        assert_eq!(out["files_searched"], 80);
    }

    #[test]
    fn bad_patterns() {
        let f = Fixture::new();
        let e = f.run_err("grep", json!({ "pattern": "(unclosed" }));
        assert_eq!(code(&e), ErrorCode::InvalidInput);
        assert!(e.to_string().contains("pattern"), "{e}");
        assert_eq!(
            code(&f.run_err("grep", json!({ "pattern": "" }))),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(&f.run_err("grep", json!({ "pattern": "x", "glob": "[" }))),
            ErrorCode::InvalidInput
        );
        assert_eq!(
            code(&f.run_err("grep", json!({ "pattern": "x", "limit": 201 }))),
            ErrorCode::InvalidInput
        );
    }
}
