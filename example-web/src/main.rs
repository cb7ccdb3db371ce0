//! The reference web app for fusion-host.
//!
//! The web app itself (accounts, `/devices`, the JSON API) is not built yet.
//! What runs today is `--demo`: the device's tool loop on a scratch folder,
//! in the terminal — list, search, propose a change with its diff, approve
//! it, and see the guards (a stale proposal, a path outside the folder).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fusion_tools::{Access, Context, Mode, Outcome, Plan, Scope, Toolbox};
use serde_json::{Value, json};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["--demo"] {
        eprintln!(
            "usage: example-web --demo\n\n\
             The web app (/devices, accounts, the JSON API) is not available in this build yet;\n\
             --demo runs the device's tools on a scratch folder in the terminal."
        );
        return ExitCode::from(2);
    }
    match demo() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let folder = std::env::temp_dir().join(format!("fusion-host-demo-{}", std::process::id()));
    seed(&folder)?;
    let scope = Scope::single(&folder, Access::ReadWrite)?;
    let toolbox = Toolbox::builtin();
    let cx = Context::new(&scope);
    let call = |tool: &str, mode: Mode, input: Value, plan: Option<&Plan>| {
        toolbox.call(&cx, tool, mode, input, plan.map(|p| &p.precondition))
    };

    println!("fusion-host demo: the device's tools on {}\n", folder.display());
    println!(
        "The device publishes {} tools (an MCP tools/list).\n",
        toolbox.names().count()
    );

    heading("list_directory (recursive; .gitignore'd cache/ still listed: listings show everything)");
    let out = call("list_directory", Mode::Run, json!({ "recursive": true }), None)?.into_value();
    for e in out["entries"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} {:>7}  {}",
            e["kind"].as_str().unwrap_or(""),
            e["size"],
            e["path"].as_str().unwrap_or("")
        );
    }

    heading("grep \"TODO\" (gitignore-aware, binary files skipped)");
    let out = call("grep", Mode::Run, json!({ "pattern": "TODO" }), None)?.into_value();
    for m in out["matches"].as_array().into_iter().flatten() {
        println!(
            "  {}:{}: {}",
            m["path"].as_str().unwrap_or(""),
            m["line_number"],
            m["line"].as_str().unwrap_or("")
        );
    }
    println!(
        "  ({} files searched, {} binary skipped)",
        out["files_searched"], out["binary_skipped"]
    );

    heading("edit_file: the agent proposes a change (plan: nothing is written yet)");
    let edit = json!({ "path": "notes/todo.txt", "edits": [
        { "find": "TODO: merge north and south scans", "replace": "DONE: merged north and south scans" }
    ] });
    let Outcome::Plan(plan) = call("edit_file", Mode::Plan, edit.clone(), None)? else {
        return Err("edit_file did not return a plan".into());
    };
    println!("  {}", plan.summary);
    for line in plan.diff.as_deref().unwrap_or_default().lines() {
        println!("  {line}");
    }

    heading("a person approves: apply re-verifies the file, then replaces it atomically");
    let out = call("edit_file", Mode::Apply, edit.clone(), Some(&plan))?.into_value();
    println!(
        "  applied: {} replacement(s), sha256 {}",
        out["replacements"],
        out["sha256"].as_str().unwrap_or("")
    );

    heading("approving the same (now stale) proposal again is refused");
    let err = call("edit_file", Mode::Apply, edit, Some(&plan)).expect_err("a stale plan must not apply");
    println!("  {}: {err}", err.code());

    heading("a path outside the allowed folder is refused");
    let err = call(
        "read_file",
        Mode::Run,
        json!({ "path": "../../etc/passwd" }),
        None,
    )
    .expect_err("outside the scope");
    println!("  {}: {err}", err.code());

    println!(
        "\nThe scratch folder stays at {} — delete it when done.",
        folder.display()
    );
    Ok(())
}

fn heading(text: &str) {
    println!("\n== {text}");
}

/// A small survey project: notes, two "scans" (binary), a gitignored cache.
fn seed(folder: &Path) -> std::io::Result<()> {
    let files: [(PathBuf, &[u8]); 6] = [
        (
            "README.md".into(),
            b"# Site survey, block 7\n\nScans in scans/, notes in notes/.\n",
        ),
        (
            "notes/todo.txt".into(),
            b"TODO: merge north and south scans\nTODO: rename by schema\n",
        ),
        ("scans/north.e57".into(), b"ASTM-E57\0\x01\x00\x00TODO"),
        ("scans/south.e57".into(), b"ASTM-E57\0\x01\x00\x00"),
        (".gitignore".into(), b"cache/\n"),
        ("cache/preview.txt".into(), b"TODO: this file is gitignored\n"),
    ];
    for (rel, content) in files {
        let path = folder.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(folder))?;
        std::fs::write(path, content)?;
    }
    Ok(())
}
