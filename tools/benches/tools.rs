//! The built-in tools against the tools power users already trust: `rg`,
//! `fd`, `find`, `du`, `sha256sum`, `md5sum`, `cat`.
//!
//! ```sh
//! cargo bench -p fusion-tools --bench tools -- [--tree DIR]... [--reps N] [--write docs/BENCHMARKS.md]
//! ```
//!
//! It generates (once, under `target/bench-corpus`) a tree of 60,000 files,
//! ~540 MB of mixed text and binary in nested folders with a `.gitignore`, a
//! 1 GiB file and a 1 MiB text file; every `--tree` (a real source tree) gets
//! the search rows too. Each row runs our tool and its reference as separate
//! processes (this binary re-runs itself with `--run` for ours), alternating,
//! after one warm-up each, and reports the median wall time — but only after
//! checking that both found the same thing. A row whose result our bounds cut
//! short says so. Our tool's peak resident memory comes from its own
//! `/proc/self/status`.

mod support;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fusion_tools::{Access, Context, Mode, Scope, Toolbox};
use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--run") {
        run_one(&args[i + 1], &args[i + 2], &args[i + 3]);
        return;
    }
    let mut trees = Vec::new();
    let mut reps = 5;
    let mut write = None;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--tree" => {
                trees.push(PathBuf::from(&args[i + 1]));
                i += 1;
            }
            "--reps" => {
                reps = args[i + 1].parse().expect("--reps N");
                i += 1;
            }
            "--write" => {
                write = Some(support::workspace_path(env!("CARGO_MANIFEST_DIR"), &args[i + 1]));
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    orchestrate(&trees, reps, write.as_deref());
}

/// `--run TOOL INPUT ROOT`: one call of our tool, then a JSON line with what
/// it found and the process's peak memory.
fn run_one(tool: &str, input: &str, root: &str) {
    let scope = Scope::single(root, Access::ReadOnly).expect("root");
    let cx = Context::new(&scope);
    let input: Value = serde_json::from_str(input).expect("input JSON");
    let toolbox = Toolbox::builtin();
    let started = Instant::now();
    let out = toolbox
        .call(&cx, tool, Mode::Run, input, None)
        .expect("tool call")
        .into_value();
    let call_us = started.elapsed().as_micros() as u64;
    let found = match tool {
        "grep" | "glob" => json!(out["matches"].as_array().map_or(0, Vec::len)),
        "list_directory" => json!(out["entries"].as_array().map_or(0, Vec::len)),
        "disk_usage" => out["disk_bytes"].clone(),
        "hash_file" => out["digest"].clone(),
        "read_file" => json!(out["end_line"]),
        _ => Value::Null,
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    println!(
        "{}",
        json!({ "found": found, "truncated": out["truncated"], "peak_kb": peak_kb, "call_us": call_us })
    );
}

struct Row {
    name: String,
    ours: Duration,
    reference: Duration,
    reference_name: String,
    found: String,
    /// Both found the same thing, so the times compare.
    agree: bool,
    note: String,
    peak_kb: u64,
    /// The tool call alone, inside our process (median).
    in_process: Duration,
}

fn timed(cmd: &mut Command) -> (Duration, String) {
    let started = Instant::now();
    let out = cmd.output().expect("run a command");
    let elapsed = started.elapsed();
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (elapsed, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs ours and the reference alternately; `reference_found` turns the
/// reference's stdout into the same kind of answer as ours.
fn compare(
    name: &str,
    root: &Path,
    tool: &str,
    input: Value,
    reference: &[&str],
    reference_found: impl Fn(&str) -> String,
    reps: usize,
) -> Row {
    let me = std::env::current_exe().expect("current exe");
    let ours_cmd = || {
        let mut c = Command::new(&me);
        c.args(["--run", tool, &input.to_string(), &root.display().to_string()]);
        c
    };
    let reference_cmd = || {
        let mut c = Command::new(reference[0]);
        c.args(&reference[1..]);
        c
    };
    // Warm-up (page cache), then alternate.
    let (_, warm) = timed(&mut ours_cmd());
    timed(&mut reference_cmd());
    let (mut ours_t, mut ref_t, mut inner_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = (String::new(), String::new());
    for _ in 0..reps {
        let (t, out) = timed(&mut ours_cmd());
        ours_t.push(t);
        let inner: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
        inner_t.push(Duration::from_micros(inner["call_us"].as_u64().unwrap_or(0)));
        let (t2, out2) = timed(&mut reference_cmd());
        ref_t.push(t2);
        last = (out, out2);
    }
    let ours: Value = serde_json::from_str(last.0.trim())
        .unwrap_or_else(|_| serde_json::from_str(warm.trim()).expect("ours JSON"));
    let ours_found = match &ours["found"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let theirs = reference_found(&last.1);
    let note = if ours["truncated"] == true {
        "ours stopped at its bound".to_string()
    } else if ours_found != theirs {
        format!("MISMATCH: ours {ours_found}, reference {theirs}")
    } else {
        String::new()
    };
    Row {
        name: name.to_string(),
        ours: median(ours_t),
        reference: median(ref_t),
        reference_name: reference.join(" ").replace(&root.display().to_string(), "DIR"),
        agree: ours_found == theirs,
        found: ours_found,
        note,
        peak_kb: ours["peak_kb"].as_u64().unwrap_or(0),
        in_process: median(inner_t),
    }
}

fn count_lines(s: &str) -> String {
    s.lines().filter(|l| !l.is_empty()).count().to_string()
}

/// `rg -c` prints `path:count` per file: the total of matching lines.
fn sum_counts(s: &str) -> String {
    s.lines()
        .filter_map(|l| l.rsplit(':').next()?.parse::<u64>().ok())
        .sum::<u64>()
        .to_string()
}

fn first_word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or_default().to_string()
}

fn orchestrate(trees: &[PathBuf], reps: usize, write: Option<&Path>) {
    let corpus = corpus();
    let d = |p: &Path| p.display().to_string();
    let c = d(&corpus.tree);
    let mut rows = Vec::new();

    for (label, dir) in std::iter::once(("corpus", corpus.tree.clone()))
        .chain(trees.iter().map(|t| ("source tree", t.clone())))
    {
        let s = d(&dir);
        rows.push(compare(
            &format!("grep literal, {label}"),
            &dir,
            "grep",
            json!({ "pattern": "FUSION_NEEDLE_42", "literal": true }),
            &["rg", "--no-require-git", "-F", "-c", "FUSION_NEEDLE_42", &s],
            sum_counts,
            reps,
        ));
        rows.push(compare(
            &format!("grep regex, {label}"),
            &dir,
            "grep",
            json!({ "pattern": r"needle_[0-9]{4}_end" }),
            &["rg", "--no-require-git", "-c", r"needle_[0-9]{4}_end", &s],
            sum_counts,
            reps,
        ));
    }
    rows.push(compare(
        "glob `**/s0?/f41.md`, corpus",
        &corpus.tree,
        "glob",
        json!({ "pattern": "**/s0?/f41.md" }),
        &["fdfind", "--glob", "--full-path", "**/s0?/f41.md", &c],
        count_lines,
        reps,
    ));
    for tree in trees {
        rows.push(compare(
            "glob `build.rs`, source tree",
            tree,
            "glob",
            json!({ "pattern": "build.rs", "respect_ignore": false }),
            &["fdfind", "--no-ignore", "--glob", "build.rs", &d(tree)],
            count_lines,
            reps,
        ));
    }
    rows.push(compare(
        "list_directory recursive, first 1000 entries",
        &corpus.tree,
        "list_directory",
        json!({ "recursive": true, "max_depth": 64 }),
        // Ours returns each entry's kind, size and modification time: find
        // prints the same, so both stat every entry.
        &[
            "sh",
            "-c",
            &format!("find '{c}' -mindepth 1 -printf '%y %s %T@ %p\\n' | head -n 1000"),
        ],
        count_lines,
        reps,
    ));
    rows.push(compare(
        "disk_usage, corpus",
        &corpus.tree,
        "disk_usage",
        json!({}),
        &["du", "-s", "-B1", &c],
        |s| {
            // du counts the folder itself; ours counts what is below it.
            let total: u64 = first_word(s).parse().unwrap_or(0);
            let own = std::fs::metadata(corpus_root().join("tree")).map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            });
            (total - own.unwrap_or(0)).to_string()
        },
        reps,
    ));
    let big = d(&corpus.big);
    let parent = corpus.big.parent().expect("parent").to_path_buf();
    rows.push(compare(
        "hash_file sha256, 1 GiB",
        &parent,
        "hash_file",
        json!({ "path": "big.bin" }),
        &["sha256sum", &big],
        first_word,
        reps,
    ));
    rows.push(compare(
        "hash_file md5, 1 GiB",
        &parent,
        "hash_file",
        json!({ "path": "big.bin", "algorithm": "md5" }),
        &["md5sum", &big],
        first_word,
        reps,
    ));
    let text = d(&corpus.text);
    rows.push(compare(
        "read_file, 1 MiB text",
        &parent,
        "read_file",
        json!({ "path": "one-mib.txt" }),
        &["sh", "-c", &format!("cat '{text}' | wc -l")],
        first_word,
        reps,
    ));

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut table = String::new();
    table.push_str(&format!(
        "Run on {cores} cores; median of {reps} alternating runs after a warm-up; each side is a separate process.\n\n"
    ));
    table.push_str("| row | ours | reference | ours / reference | ours, call only (in-process) | found | our peak memory | note |\n|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        // Times of two sides that found different things do not compare.
        let ratio = if r.agree {
            format!("{:.2}×", r.ours.as_secs_f64() / r.reference.as_secs_f64())
        } else {
            "not compared".to_string()
        };
        table.push_str(&format!(
            "| {} | {:.1} ms | {:.1} ms (`{}`) | {} | {:.1} ms | {} | {:.1} MiB | {} |\n",
            r.name,
            r.ours.as_secs_f64() * 1000.0,
            r.reference.as_secs_f64() * 1000.0,
            r.reference_name,
            ratio,
            r.in_process.as_secs_f64() * 1000.0,
            r.found,
            r.peak_kb as f64 / 1024.0,
            r.note
        ));
    }
    println!("{table}");
    if let Some(path) = write {
        support::write_table(path, "tools-bench", &table);
    }
}

struct Corpus {
    tree: PathBuf,
    big: PathBuf,
    text: PathBuf,
}

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-corpus")
}

/// A deterministic xorshift, so every run builds the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn corpus() -> Corpus {
    let root = corpus_root();
    let tree = root.join("tree");
    let done = root.join(".complete");
    let corpus = Corpus {
        tree: tree.clone(),
        big: root.join("big.bin"),
        text: root.join("one-mib.txt"),
    };
    if done.exists() {
        // fd only honours .gitignore inside a git checkout; an empty .git is enough.
        std::fs::create_dir_all(tree.join(".git")).expect("git dir");
        return corpus;
    }
    eprintln!("building the corpus in {} (once)…", root.display());
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&tree).expect("corpus dir");
    std::fs::write(tree.join(".gitignore"), "build/\n*.log\n").expect("gitignore");
    let words = [
        "scan",
        "point",
        "cloud",
        "survey",
        "north",
        "south",
        "wall",
        "registration",
        "target",
        "station",
        "level",
        "grid",
        "fn",
        "let",
        "mut",
        "struct",
        "impl",
        "return",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut file_no = 0u64;
    for top in 0..50 {
        for sub in 0..20 {
            let dir = tree.join(format!("t{top:02}/s{sub:02}"));
            std::fs::create_dir_all(&dir).expect("dir");
            for f in 0..60 {
                file_no += 1;
                let (name, binary) = match f % 10 {
                    0 => (format!("f{f:02}.bin"), true),
                    1 => (format!("f{f:02}.md"), false),
                    2 => (format!("f{f:02}.log"), false),
                    _ => (format!("f{f:02}.txt"), false),
                };
                let mut w = BufWriter::new(std::fs::File::create(dir.join(&name)).expect("file"));
                let size = 4_000 + (rng.next() % 10_000) as usize;
                if binary {
                    let mut written = 0;
                    while written < size {
                        let v = rng.next().to_le_bytes();
                        w.write_all(&v).expect("write");
                        written += 8;
                    }
                    w.write_all(b"\0FUSION_NEEDLE_42 inside a binary file\n")
                        .expect("write");
                } else {
                    let mut written = 0;
                    let mut line = 0;
                    while written < size {
                        line += 1;
                        let mut s = String::new();
                        for _ in 0..(6 + rng.next() % 10) {
                            s.push_str(words[(rng.next() % words.len() as u64) as usize]);
                            s.push(' ');
                        }
                        if file_no.is_multiple_of(1999) && line == 7 {
                            s.push_str("FUSION_NEEDLE_42");
                        }
                        if file_no.is_multiple_of(997) && line == 3 {
                            s.push_str(&format!("needle_{:04}_end", file_no % 10_000));
                        }
                        s.push('\n');
                        written += s.len();
                        w.write_all(s.as_bytes()).expect("write");
                    }
                }
            }
        }
        // Ignored files that contain the needle: the search must skip them.
        let build = tree.join(format!("t{top:02}/build"));
        std::fs::create_dir_all(&build).expect("build dir");
        std::fs::write(build.join("out.txt"), "FUSION_NEEDLE_42 in an ignored folder\n").expect("ignored");
    }
    let mut w = BufWriter::new(std::fs::File::create(&corpus.big).expect("big"));
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        for chunk in block.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes());
        }
        w.write_all(&block).expect("write big");
    }
    drop(w);
    let mut text = String::new();
    let mut n = 0;
    while text.len() < (1 << 20) - 100 {
        n += 1;
        text.push_str(&format!(
            "line {n}: the north wall scan is registered to station {}\n",
            n % 17
        ));
    }
    std::fs::write(&corpus.text, text).expect("text");
    std::fs::create_dir_all(tree.join(".git")).expect("git dir");
    std::fs::write(done, "").expect("marker");
    corpus
}
