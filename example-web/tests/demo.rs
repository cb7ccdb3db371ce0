//! The README's first command, run as a real process.

use std::process::Command;

#[test]
fn demo_runs_the_whole_tool_loop() {
    let out = Command::new(env!("CARGO_BIN_EXE_example-web"))
        .arg("--demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "notes/todo.txt:1: TODO: merge north and south scans",
        "+DONE: merged north and south scans",
        "applied: 1 replacement(s)",
        "conflict: ",
        "outside_scope: ../../etc/passwd",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
    // The gitignored cache is listed but not searched.
    assert!(stdout.contains("cache/preview.txt"));
    assert!(!stdout.contains("preview.txt:1"));
    let folder = stdout
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .find(|w| w.contains("fusion-host-demo"))
        .unwrap();
    std::fs::remove_dir_all(folder).unwrap();
}

#[test]
fn without_demo_it_says_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_example-web")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--demo"));
}
