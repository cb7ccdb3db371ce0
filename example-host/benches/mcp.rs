//! `fusion-host mcp` against the official Node filesystem server
//! (`@modelcontextprotocol/server-filesystem`), both as processes over stdio,
//! driven by the same rmcp client on the same folder.
//!
//! ```sh
//! scripts/check-mcp-interop   # installs the Node server under /var/cache/fusion-host/mcp-interop
//! cargo bench -p example-host --bench mcp -- [--reps N] [--write docs/BENCHMARKS.md]
//! ```
//!
//! `FUSION_MCP_FS_SERVER` points at the Node server's `dist/index.js` when it
//! is elsewhere. Rows: the whole tree of a 20,000-file folder, names only
//! (ours one names-only `list_directory`, theirs one `directory_tree`) and
//! with sizes (ours pages `list_directory`, 10,000 entries a call; theirs
//! lists every folder with `list_directory_with_sizes`), a search by name, reading a 1 MiB text file, and memory after start-up.
//! A row gives the two times side by side only when both found the same
//! thing (the same number of entries or matches; for the file, the same
//! text once our fence lines are taken off); otherwise it says they differ
//! and compares nothing.

#[path = "../../tools/benches/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fusion-host");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let reps: usize = flag("--reps").map_or(5, |v| v.parse().expect("--reps N"));
    let write = flag("--write").map(|p| support::workspace_path(env!("CARGO_MANIFEST_DIR"), &p));
    let node_server = std::env::var("FUSION_MCP_FS_SERVER").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from("/var/cache/fusion-host/mcp-interop/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")
    });
    if !node_server.exists() || which("node").is_none() {
        println!(
            "skipped: the Node filesystem server is not at {} (run scripts/check-mcp-interop once, or set FUSION_MCP_FS_SERVER)",
            node_server.display()
        );
        return;
    }
    let corpus = corpus();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&corpus, &node_server, reps, write.as_deref()));
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// 20 folders × 20 sub-folders × 50 small files, and a 1 MiB text file.
fn corpus() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-mcp");
    let done = root.join(".complete");
    if done.exists() {
        return root;
    }
    let _ = std::fs::remove_dir_all(&root);
    for a in 0..20 {
        for b in 0..20 {
            let dir = root.join(format!("site{a:02}/scan{b:02}"));
            std::fs::create_dir_all(&dir).unwrap();
            for c in 0..50 {
                std::fs::write(dir.join(format!("point_{c:02}.txt")), format!("{a} {b} {c}\n")).unwrap();
            }
        }
    }
    let line = "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 survey\n";
    std::fs::write(root.join("one-mib.txt"), line.repeat((1 << 20) / line.len())).unwrap();
    std::fs::write(&done, "").unwrap();
    root
}

type Client = RunningService<RoleClient, ()>;

async fn start(program: &str, args: &[&str]) -> (Client, u32) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    let transport = TokioChildProcess::new(cmd).unwrap();
    let pid = transport.id().unwrap_or(0);
    let client = ().serve(transport).await.unwrap();
    client.list_all_tools().await.unwrap();
    (client, pid)
}

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let Value::Object(map) = args else { unreachable!() };
    let out = client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(map))
        .await
        .unwrap();
    assert_ne!(out.is_error, Some(true), "{tool}: {out:?}");
    out
}

fn text(out: &CallToolResult) -> String {
    out.content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

/// Resident memory of a process, in KiB (`VmRSS`), or 0 off Linux.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Runs `ours` and `theirs` one after the other, `reps` times: the median
/// time of each, and what each found and in how many calls, on its last run.
async fn alternate(
    reps: usize,
    mut ours: impl AsyncFnMut() -> (usize, usize),
    mut theirs: impl AsyncFnMut() -> (usize, usize),
) -> (Duration, Duration, (usize, usize), (usize, usize)) {
    let (mut ours_t, mut theirs_t, mut ours_found, mut theirs_found) = (vec![], vec![], (0, 0), (0, 0));
    for _ in 0..reps {
        let started = Instant::now();
        ours_found = ours().await;
        ours_t.push(started.elapsed());
        let started = Instant::now();
        theirs_found = theirs().await;
        theirs_t.push(started.elapsed());
    }
    (median(ours_t), median(theirs_t), ours_found, theirs_found)
}

/// Our whole tree: names only, or pages of entries with their metadata.
/// The entries found, and the calls it took.
async fn whole_listing(ours: &Client, details: bool) -> (usize, usize) {
    let mut input = json!({ "recursive": true, "max_depth": 64, "details": details });
    if details {
        input["limit"] = json!(10_000);
    }
    let (mut n, mut calls) = (0, 0);
    loop {
        let out = call(ours, "list_directory", input.clone()).await;
        let page = out.structured_content.unwrap();
        n += page[if details { "entries" } else { "names" }]
            .as_array()
            .map_or(0, Vec::len);
        calls += 1;
        match page.get("next_cursor") {
            Some(cursor) => input["cursor"] = cursor.clone(),
            None => return (n, calls),
        }
    }
}

/// Their whole tree with sizes: `list_directory_with_sizes` on every folder,
/// from the root down. The entries found, and the calls it took.
async fn sized_tree(theirs: &Client, root: &str) -> (usize, usize) {
    let (mut n, mut calls, mut folders) = (0, 0, vec![root.to_string()]);
    while let Some(folder) = folders.pop() {
        let out = call(theirs, "list_directory_with_sizes", json!({ "path": folder })).await;
        calls += 1;
        for line in text(&out).lines() {
            if let Some(name) = line.strip_prefix("[DIR] ") {
                folders.push(format!("{folder}/{}", name.trim_end()));
                n += 1;
            } else if line.starts_with("[FILE] ") {
                n += 1;
            }
        }
    }
    (n, calls)
}

fn count_tree(node: &Value) -> usize {
    node.as_array().map_or(0, |children| {
        children
            .iter()
            .map(|c| 1 + c.get("children").map_or(0, count_tree))
            .sum()
    })
}

struct Row {
    name: &'static str,
    ours: Duration,
    theirs: Duration,
    ours_found: usize,
    theirs_found: usize,
    /// Both found the same thing, so the times compare.
    same: bool,
    note: String,
}

/// Our `read_file` content without its fence: the header line, the opening
/// marker, and the closing marker.
fn unfenced(content: &str) -> String {
    let lines: Vec<&str> = content.lines().collect();
    if lines.len() < 3 {
        return String::new();
    }
    lines[2..lines.len() - 1].join("\n")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run(corpus: &Path, node_server: &Path, reps: usize, write: Option<&Path>) {
    let dir = corpus.to_str().unwrap();
    let (ours, our_pid) = start(BIN, &["mcp", "--root", dir]).await;
    let (theirs, their_pid) = start("node", &[node_server.to_str().unwrap(), dir]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (our_idle, their_idle) = (rss_kib(our_pid), rss_kib(their_pid));

    let mut rows = Vec::new();
    // The whole tree, names and kinds: ours one names-only listing, theirs
    // one `directory_tree`.
    let (ours_t, theirs_t, (ours_n, pages), (theirs_n, _)) = alternate(
        reps,
        async || whole_listing(&ours, false).await,
        async || {
            let out = call(&theirs, "directory_tree", json!({ "path": dir })).await;
            let tree: Value = serde_json::from_str(&text(&out)).unwrap_or(Value::Null);
            (count_tree(&tree), 1)
        },
    )
    .await;
    rows.push(Row {
        name: "whole tree, names and kinds",
        ours: ours_t,
        theirs: theirs_t,
        ours_found: ours_n,
        theirs_found: theirs_n,
        same: ours_n == theirs_n,
        note: format!(
            "20,000 files in 420 folders; ours: {pages} `list_directory` call(s), `details: false`; \
             theirs: one `directory_tree`"
        ),
    });

    // The whole tree with sizes. Theirs has no recursive listing with sizes:
    // a client lists each folder with `list_directory_with_sizes`, going
    // down the `[DIR]` lines (sizes rounded, no times). Ours pages a listing
    // with exact sizes and modification times, each entry stat'ed.
    let (ours_t, theirs_t, (ours_n, pages), (theirs_n, folders)) = alternate(
        reps,
        async || whole_listing(&ours, true).await,
        async || sized_tree(&theirs, dir).await,
    )
    .await;
    rows.push(Row {
        name: "whole tree with sizes",
        ours: ours_t,
        theirs: theirs_t,
        ours_found: ours_n,
        theirs_found: theirs_n,
        same: ours_n == theirs_n,
        note: format!(
            "ours: {pages} `list_directory` calls of up to 10,000 chained by `cursor`, exact size and mtime; \
             theirs: {folders} `list_directory_with_sizes` calls, one a folder (rounded sizes, no mtime)"
        ),
    });

    // A search by name.
    let (mut ours_t, mut theirs_t, mut ours_n, mut theirs_n) = (vec![], vec![], 0, 0);
    for _ in 0..reps {
        let started = Instant::now();
        let out = call(&ours, "glob", json!({ "pattern": "point_42.txt" })).await;
        ours_t.push(started.elapsed());
        ours_n = out.structured_content.unwrap()["matches"]
            .as_array()
            .map_or(0, Vec::len);
        let started = Instant::now();
        let out = call(
            &theirs,
            "search_files",
            json!({ "path": dir, "pattern": "**/point_42.txt" }),
        )
        .await;
        theirs_t.push(started.elapsed());
        theirs_n = text(&out).lines().filter(|l| l.contains("point_42.txt")).count();
    }
    rows.push(Row {
        name: "search by name `point_42.txt`",
        ours: median(ours_t),
        theirs: median(theirs_t),
        ours_found: ours_n,
        theirs_found: theirs_n,
        same: ours_n == theirs_n,
        note: "ours: `glob`; theirs: `search_files`".into(),
    });

    // Reading a 1 MiB file.
    let (mut ours_t, mut theirs_t, mut ours_text, mut theirs_text) =
        (vec![], vec![], String::new(), String::new());
    for _ in 0..reps {
        let started = Instant::now();
        let out = call(&ours, "read_file", json!({ "path": "one-mib.txt" })).await;
        ours_t.push(started.elapsed());
        ours_text = unfenced(
            out.structured_content.unwrap()["content"]
                .as_str()
                .unwrap_or_default(),
        );
        let started = Instant::now();
        let out = call(
            &theirs,
            "read_text_file",
            json!({ "path": format!("{dir}/one-mib.txt") }),
        )
        .await;
        theirs_t.push(started.elapsed());
        theirs_text = text(&out);
    }
    let same = ours_text.trim_end_matches('\n') == theirs_text.trim_end_matches('\n');
    rows.push(Row {
        name: "read a 1 MiB text file",
        ours: median(ours_t),
        theirs: median(theirs_t),
        ours_found: ours_text.lines().count(),
        theirs_found: theirs_text.lines().count(),
        same,
        note: format!(
            "lines; {} once our fence (a header line and two markers) is taken off",
            if same { "the same text" } else { "the texts differ" }
        ),
    });
    let (our_after, their_after) = (rss_kib(our_pid), rss_kib(their_pid));

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut table = format!(
        "{cores} cores; median of {reps} calls per row, each a round trip through rmcp's client to a \
         separate process over stdio, ours and theirs alternating.\n\n\
         | row | `fusion-host mcp` | Node `server-filesystem` | theirs / ours | found (ours / theirs) | note |\n\
         |---|---|---|---|---|---|\n"
    );
    for r in &rows {
        let ratio = if r.same {
            format!("{:.1}×", r.theirs.as_secs_f64() / r.ours.as_secs_f64())
        } else {
            "not compared: they found different things".to_string()
        };
        table.push_str(&format!(
            "| {} | {:.1} ms | {:.1} ms | {ratio} | {} / {} | {} |\n",
            r.name,
            r.ours.as_secs_f64() * 1000.0,
            r.theirs.as_secs_f64() * 1000.0,
            r.ours_found,
            r.theirs_found,
            r.note
        ));
    }
    table.push_str(&format!(
        "| memory after start-up (RSS) | {:.1} MiB | {:.1} MiB | {:.1}× | | after the rows: {:.1} MiB / {:.1} MiB |\n",
        our_idle as f64 / 1024.0,
        their_idle as f64 / 1024.0,
        their_idle as f64 / our_idle.max(1) as f64,
        our_after as f64 / 1024.0,
        their_after as f64 / 1024.0,
    ));
    println!("{table}");
    if let Some(path) = write {
        support::write_table(path, "mcp-bench", &table);
    }
    let _ = ours.cancel().await;
    let _ = theirs.cancel().await;
}
