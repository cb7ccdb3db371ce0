use serde_json::json;

use super::super::testutil::{Fixture, code};
use crate::{EffectOp, ErrorCode};

#[test]
fn create_directory_plans_each_missing_level() {
    let f = Fixture::new();
    let input = json!({ "path": "a/b/c" });
    let plan = f.plan("create_directory", input.clone());
    assert_eq!(plan.effects.len(), 3);
    assert!(!f.exists("a"));
    let out = f.apply("create_directory", input.clone(), &plan).unwrap();
    assert_eq!(out["created"].as_array().unwrap().len(), 3);
    assert!(f.path("a/b/c").is_dir());
    // Idempotent: nothing to do the second time.
    let plan = f.plan("create_directory", input.clone());
    assert!(plan.effects.is_empty());
    assert!(plan.summary.contains("already exists"));
    f.write("file", "");
    assert_eq!(
        code(&f.plan_err("create_directory", json!({ "path": "file" }))),
        ErrorCode::AlreadyExists
    );
    assert_eq!(
        code(&f.plan_err("create_directory", json!({ "path": "file/sub" }))),
        ErrorCode::NotADirectory
    );
}

#[test]
fn create_directory_conflicts_if_something_appeared() {
    let f = Fixture::new();
    let input = json!({ "path": "out/las" });
    let plan = f.plan("create_directory", input.clone());
    f.write("out", "a file now");
    assert_eq!(
        code(&f.apply("create_directory", input, &plan).unwrap_err()),
        ErrorCode::Conflict
    );
    assert_eq!(f.read("out"), "a file now");
}

#[test]
fn move_renames_and_refuses_to_overwrite_unless_asked() {
    let f = Fixture::new();
    f.write("a.txt", "A");
    f.write("b.txt", "B");
    let e = f.plan_err("move", json!({ "source": "a.txt", "destination": "b.txt" }));
    assert_eq!(code(&e), ErrorCode::AlreadyExists);
    assert!(e.to_string().contains("overwrite"), "{e}");
    let input = json!({ "source": "a.txt", "destination": "b.txt", "overwrite": true });
    let plan = f.plan("move", input.clone());
    assert_eq!(plan.effects[0].op, EffectOp::Move);
    assert_eq!((f.read("a.txt"), f.read("b.txt")), ("A".into(), "B".into()));
    let out = f.apply("move", input, &plan).unwrap();
    assert_eq!(out["replaced"], true);
    assert!(!f.exists("a.txt"));
    assert_eq!(f.read("b.txt"), "A");
}

#[test]
fn move_tree_and_its_refusals() {
    let f = Fixture::new();
    f.write("scans/x.e57", "1");
    f.write("dest/keep", "");
    let input = json!({ "source": "scans", "destination": "archive/2026" });
    assert_eq!(
        code(&f.plan_err("move", input)),
        ErrorCode::NotFound,
        "missing parent"
    );
    let e = f.plan_err("move", json!({ "source": "scans", "destination": "scans/inner" }));
    assert!(e.to_string().contains("into itself"), "{e}");
    let e = f.plan_err("move", json!({ "source": "scans", "destination": "dest" }));
    assert!(e.to_string().contains("full new path"), "{e}");
    assert_eq!(
        code(&f.plan_err("move", json!({ "source": ".", "destination": "x" }))),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(&f.plan_err("move", json!({ "source": "nope", "destination": "x" }))),
        ErrorCode::NotFound
    );

    let input = json!({ "source": "scans", "destination": "dest/scans" });
    let plan = f.plan("move", input.clone());
    f.write("scans/y.e57", "2"); // the tree changed: its digest no longer matches
    assert_eq!(
        code(&f.apply("move", input.clone(), &plan).unwrap_err()),
        ErrorCode::Conflict
    );
    assert!(f.exists("scans/x.e57"));
    let plan = f.plan("move", input.clone());
    f.apply("move", input, &plan).unwrap();
    assert_eq!(f.read("dest/scans/y.e57"), "2");
}

#[test]
fn copy_file_and_tree_with_counts() {
    let f = Fixture::new();
    f.write("src/a.txt", "aaa");
    f.write("src/sub/b.txt", "bb");
    #[cfg(unix)]
    super::super::testutil::symlink("/etc/passwd", f.path("src/sub/link"));
    let input = json!({ "source": "src", "destination": "copy" });
    let before = f.snapshot();
    let plan = f.plan("copy", input.clone());
    assert_eq!(f.snapshot(), before);
    let copies = plan.effects.iter().filter(|e| e.op == EffectOp::Copy).count();
    assert_eq!(copies, 2);
    let out = f.apply("copy", input, &plan).unwrap();
    assert_eq!(
        (
            out["files"].as_u64(),
            out["bytes"].as_u64(),
            out["directories"].as_u64()
        ),
        (Some(2), Some(5), Some(2))
    );
    #[cfg(unix)]
    assert_eq!(out["skipped_symlinks"], 1);
    assert_eq!(f.read("copy/sub/b.txt"), "bb");
    assert!(!f.exists("copy/sub/link"));
    // No temporary folder is left behind.
    let names: Vec<_> = std::fs::read_dir(f.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let input = json!({ "source": "src/a.txt", "destination": "a-copy.txt" });
    let plan = f.plan("copy", input.clone());
    f.apply("copy", input, &plan).unwrap();
    assert_eq!(f.read("a-copy.txt"), "aaa");
    let e = f.plan_err(
        "copy",
        json!({ "source": "src/a.txt", "destination": "a-copy.txt" }),
    );
    assert_eq!(code(&e), ErrorCode::AlreadyExists);
}

#[test]
fn copy_conflicts_when_the_source_changed() {
    let f = Fixture::new();
    f.write("a.txt", "v1");
    let input = json!({ "source": "a.txt", "destination": "b.txt" });
    let plan = f.plan("copy", input.clone());
    f.write("a.txt", "v2");
    assert_eq!(
        code(&f.apply("copy", input, &plan).unwrap_err()),
        ErrorCode::Conflict
    );
    assert!(!f.exists("b.txt"));
}

#[test]
fn delete_lists_what_goes_and_needs_recursive() {
    let f = Fixture::new();
    f.write("old/a.las", "12345");
    f.write("old/deep/b.las", "1");
    std::fs::create_dir(f.path("empty")).unwrap();
    let e = f.plan_err("delete", json!({ "path": "old" }));
    assert_eq!(code(&e), ErrorCode::InvalidInput);
    assert!(e.to_string().contains("recursive"), "{e}");
    let input = json!({ "path": "old", "recursive": true });
    let plan = f.plan("delete", input.clone());
    assert_eq!(plan.effects.len(), 4);
    assert!(
        plan.summary.contains("2 file(s), 2 folder(s)"),
        "{}",
        plan.summary
    );
    assert!(f.exists("old/a.las"));
    let out = f.apply("delete", input, &plan).unwrap();
    assert_eq!(out["bytes"], 6);
    assert!(!f.exists("old"));

    let input = json!({ "path": "empty" });
    let plan = f.plan("delete", input.clone());
    f.apply("delete", input, &plan).unwrap();
    assert!(!f.exists("empty"));
    assert_eq!(
        code(&f.plan_err("delete", json!({ "path": "." }))),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(&f.plan_err("delete", json!({ "path": "gone" }))),
        ErrorCode::NotFound
    );
}

#[test]
fn delete_conflicts_when_the_tree_changed() {
    let f = Fixture::new();
    f.write("t/a", "1");
    let input = json!({ "path": "t", "recursive": true });
    let plan = f.plan("delete", input.clone());
    f.write("t/new-and-important", "keep me");
    assert_eq!(
        code(&f.apply("delete", input, &plan).unwrap_err()),
        ErrorCode::Conflict
    );
    assert_eq!(f.read("t/new-and-important"), "keep me");
}

#[cfg(unix)]
#[test]
fn delete_removes_a_link_never_its_target() {
    let f = Fixture::new();
    f.write("target/keep.txt", "safe");
    super::super::testutil::symlink(f.path("target"), f.path("link"));
    let input = json!({ "path": "link", "recursive": true });
    let plan = f.plan("delete", input.clone());
    assert_eq!(plan.effects[0].op, EffectOp::DeleteSymlink);
    f.apply("delete", input, &plan).unwrap();
    assert!(!f.exists("link"));
    assert_eq!(f.read("target/keep.txt"), "safe");
}
