//! E57 files written by another library than the converter's own — pye57,
//! on libE57Format — convert, and every point lands where pye57 itself reads
//! it (posed), to the millimetre. The fixtures are made at test time by
//! `scripts/e57-writers.py`; without Python's pye57 and laspy the test says
//! it skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::BIN;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/e57-writers.py")
}

/// Whether pye57, laspy and numpy import; says why not otherwise.
fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pye57, laspy, lazrs, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: E57 files from another writer need `pip install pye57 'laspy[lazrs]'` \
             (python3 -c 'import pye57, laspy, lazrs, numpy' failed)"
        );
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Applies `convert_e57_to_las` with `input` to the folder `root`.
fn convert(root: &Path, input: &serde_json::Value) {
    run(Command::new(BIN)
        .args(["call", "convert_e57_to_las", "--apply", "--input"])
        .arg(input.to_string())
        .arg("--root")
        .arg(root)
        .arg("--config-dir")
        .arg(root.join(".config")));
}

/// What `scripts/e57-writers.py CHECK ARGS… SOURCES…` says of an output,
/// which must pass.
fn check(root: &Path, check: &[&str], sources: &[&str]) {
    let said = run(Command::new("python3")
        .arg(script())
        .args(check)
        .args(sources.iter().map(|s| root.join(s))));
    eprintln!("{}", said.trim());
}

#[test]
fn scans_written_by_pye57_convert_point_for_point() {
    if !python_ready() {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let root = dunce::canonicalize(folder.path()).unwrap();
    let written = run(Command::new("python3").arg(script()).arg("write").arg(&root));
    let fixtures: Vec<&str> = written.lines().collect();
    assert_eq!(fixtures, ["posed.e57", "site.e57", "local.e57"]);
    let convert_and_check = |sources: &[&str], output: &str| {
        convert(
            &root,
            &serde_json::json!({ "sources": sources, "merge_into": output }),
        );
        let output = root.join(output).display().to_string();
        check(&root, &["check", &output], sources);
    };
    // Each on its own: one posed scan whose header bounds are already posed
    // (and so out of order after rotation), a three-station site, a local scan.
    for fixture in &fixtures {
        convert_and_check(&[fixture], &fixture.replace(".e57", ".las"));
    }
    // The georeferenced ones merged, and compressed.
    convert_and_check(&["posed.e57", "site.e57"], "merged.las");
    convert_and_check(&["site.e57"], "site.laz");

    // Thinned to one point per 2 m cube (about two thirds of its points
    // remain), checked against the cubes pye57's reading of the same scans
    // fills.
    convert(
        &root,
        &serde_json::json!({ "sources": ["site.e57"], "merge_into": "site-thin.laz", "thin_m": 2.0 }),
    );
    let output = root.join("site-thin.laz").display().to_string();
    check(&root, &["thin-check", &output, "2.0"], &["site.e57"]);
}

/// COPC, read back by laspy's `CopcReader` (lazrs): the three-station site
/// merged (one node), and two dense stations (320,000 points, an octree of
/// several levels) one file per scan; every point once where pye57 reads
/// it, and queries through the hierarchy that miss none.
#[test]
fn copc_from_pye57_scans_reads_back_through_its_octree() {
    if !python_ready() {
        return;
    }
    let folder = tempfile::tempdir().unwrap();
    let root = dunce::canonicalize(folder.path()).unwrap();
    run(Command::new("python3").arg(script()).arg("write").arg(&root));
    run(Command::new("python3")
        .arg(script())
        .arg("write-dense")
        .arg(&root));
    for (input, output, sources) in [
        (
            serde_json::json!({ "sources": ["posed.e57", "site.e57"], "merge_into": "site.copc.laz" }),
            "site.copc.laz",
            &["posed.e57", "site.e57"][..],
        ),
        (
            serde_json::json!({ "sources": ["dense.e57"], "to": "copc" }),
            "dense.copc.laz",
            &["dense.e57"][..],
        ),
    ] {
        convert(&root, &input);
        let output = root.join(output).display().to_string();
        check(&root, &["copc-check", &output], sources);
    }
}
