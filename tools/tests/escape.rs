//! The escape suite: every way out of an allowed folder we know of, each as
//! a test, plus a property test over random paths. Unix only: the attacks are
//! built from symlinks and FIFOs; Windows-only path forms are unit-tested in
//! `scope.rs` on every platform.
#![cfg(unix)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use fusion_tools::{Access, Context, Error, ErrorCode, Mode, Outcome, Scope, Toolbox};
use proptest::prelude::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET: &str = "OUTSIDE-SECRET-7f3a";

/// `base/root` is the allowed folder; `base/outside` holds a secret, and
/// `base/root_evil` is a sibling whose name extends the root's.
struct Sandbox {
    _base: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
    scope: Scope,
}

impl Sandbox {
    fn new() -> Sandbox {
        let base = tempfile::tempdir().unwrap();
        let base_path = dunce::canonicalize(base.path()).unwrap();
        let root = base_path.join("root");
        let outside = base_path.join("outside");
        let evil = base_path.join("root_evil");
        for dir in [&root, &outside, &evil, &root.join("a"), &root.join("b")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        std::fs::write(evil.join("secret.txt"), SECRET).unwrap();
        std::fs::write(root.join("a/file.txt"), "inside").unwrap();
        symlink("a", root.join("link_in")).unwrap();
        symlink("../outside", root.join("link_out")).unwrap();
        symlink(&outside, root.join("abs_link")).unwrap();
        symlink("../outside/secret.txt", root.join("secret_link")).unwrap();
        symlink("..", root.join("a/up")).unwrap();
        symlink("../..", root.join("a/up2")).unwrap();
        let scope = Scope::single(&root, Access::ReadWrite).unwrap();
        Sandbox {
            _base: base,
            root,
            outside,
            scope,
        }
    }

    fn call(&self, tool: &str, mode: Mode, input: Value) -> Result<Outcome, Error> {
        Toolbox::builtin().call(&Context::new(&self.scope), tool, mode, input, None)
    }

    fn refused(&self, tool: &str, mode: Mode, input: Value) -> ErrorCode {
        match self.call(tool, mode, input.clone()) {
            Ok(out) => panic!("{tool} {input} should have been refused, got {out:?}"),
            Err(e) => e.code(),
        }
    }

    fn outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret.txt"], "nothing may be created outside");
        assert_eq!(
            std::fs::read_to_string(self.outside.join("secret.txt")).unwrap(),
            SECRET
        );
    }
}

macro_rules! refused {
    ($($name:ident: $tool:literal $mode:ident $input:tt => $code:ident,)*) => {$(
        #[test]
        fn $name() {
            let s = Sandbox::new();
            let input = json!($input);
            let input = serde_json::from_str::<Value>(
                &input.to_string().replace("$ROOT", &s.root.display().to_string())
                    .replace("$OUTSIDE", &s.outside.display().to_string()),
            ).unwrap();
            assert_eq!(s.refused($tool, Mode::$mode, input), ErrorCode::$code);
            s.outside_untouched();
        }
    )*};
}

refused! {
    dotdot_read: "read_file" Run { "path": "../outside/secret.txt" } => OutsideScope,
    dotdot_deep: "read_file" Run { "path": "a/../../outside/secret.txt" } => OutsideScope,
    dotdot_list: "list_directory" Run { "path": ".." } => OutsideScope,
    absolute_outside: "read_file" Run { "path": "$OUTSIDE/secret.txt" } => OutsideScope,
    absolute_dotdot: "read_file" Run { "path": "$ROOT/../outside/secret.txt" } => OutsideScope,
    absolute_system: "stat" Run { "path": "/etc/passwd" } => OutsideScope,
    sibling_prefix: "read_file" Run { "path": "$ROOT_evil/secret.txt" } => OutsideScope,
    sibling_prefix_list: "list_directory" Run { "path": "$ROOT_evil" } => OutsideScope,
    final_symlink_out: "read_file" Run { "path": "secret_link" } => OutsideScope,
    intermediate_symlink_out: "read_file" Run { "path": "link_out/secret.txt" } => OutsideScope,
    absolute_symlink_out: "read_file" Run { "path": "abs_link/secret.txt" } => OutsideScope,
    symlink_up_twice: "read_file" Run { "path": "a/up2/outside/secret.txt" } => OutsideScope,
    list_through_link_out: "list_directory" Run { "path": "link_out" } => OutsideScope,
    grep_through_link_out: "grep" Run { "pattern": "SECRET", "path": "link_out" } => OutsideScope,
    hash_through_link_out: "hash_file" Run { "path": "abs_link/secret.txt" } => OutsideScope,
    nul_byte: "read_file" Run { "path": "a/file.txt\u{0}/etc/passwd" } => OutsideScope,
    write_through_link_out: "write_file" Plan { "path": "link_out/new.txt", "content": "x" } => OutsideScope,
    write_absolute_outside: "write_file" Plan { "path": "$OUTSIDE/new.txt", "content": "x" } => OutsideScope,
    write_over_symlink: "write_file" Plan { "path": "secret_link", "content": "x" } => NotAFile,
    edit_through_link: "edit_file" Plan { "path": "link_out/secret.txt", "edits": [{ "find": "O", "replace": "X" }] } => OutsideScope,
    mkdir_through_link: "create_directory" Plan { "path": "link_out/new" } => OutsideScope,
    copy_out: "copy" Plan { "source": "a/file.txt", "destination": "../outside/copied.txt" } => OutsideScope,
    copy_in_from_out: "copy" Plan { "source": "link_out/secret.txt", "destination": "stolen.txt" } => OutsideScope,
    move_out: "move" Plan { "source": "a/file.txt", "destination": "abs_link/moved.txt" } => OutsideScope,
    delete_root: "delete" Plan { "path": ".", "recursive": true } => PermissionDenied,
    delete_root_absolute: "delete" Plan { "path": "$ROOT", "recursive": true } => PermissionDenied,
    move_root: "move" Plan { "source": ".", "destination": "a/moved" } => PermissionDenied,
    delete_through_link_out: "delete" Plan { "path": "link_out/secret.txt" } => OutsideScope,
}

#[test]
fn symlinks_that_stay_inside_work() {
    let s = Sandbox::new();
    for path in ["link_in/file.txt", "a/up/a/file.txt", "$ROOT/link_in/file.txt"] {
        let path = path.replace("$ROOT", &s.root.display().to_string());
        let out = s
            .call("read_file", Mode::Run, json!({ "path": path }))
            .unwrap()
            .into_value();
        assert!(out["content"].as_str().unwrap().contains("inside"), "{path}");
    }
    let out = s
        .call("list_directory", Mode::Run, json!({ "path": "link_in" }))
        .unwrap()
        .into_value();
    assert_eq!(out["entries"][0]["path"], "file.txt");
}

#[test]
fn walks_never_follow_links_out() {
    let s = Sandbox::new();
    let out = s
        .call(
            "grep",
            Mode::Run,
            json!({ "pattern": SECRET, "hidden": true, "respect_ignore": false }),
        )
        .unwrap();
    assert_eq!(out.into_value()["matches"], json!([]));
    let out = s
        .call("list_directory", Mode::Run, json!({ "recursive": true }))
        .unwrap()
        .into_value();
    let listed: Vec<_> = out["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(!listed.iter().any(|p| p.contains("secret.txt")), "{listed:?}");
    let out = s.call("disk_usage", Mode::Run, json!({})).unwrap().into_value();
    assert_eq!(out["files"], 1);
}

/// The TOCTOU case: a parent that was a real folder at plan time is swapped
/// for a symlink out of the root before apply. Apply must not follow it.
#[test]
fn parent_swapped_for_symlink_between_plan_and_apply() {
    let s = Sandbox::new();
    std::fs::create_dir(s.root.join("sub")).unwrap();
    std::fs::write(s.root.join("sub/notes.txt"), "v1").unwrap();
    let toolbox = Toolbox::builtin();
    let cx = Context::new(&s.scope);
    for (tool, input) in [
        (
            "write_file",
            json!({ "path": "sub/notes.txt", "content": "pwned" }),
        ),
        (
            "write_file",
            json!({ "path": "sub/secret.txt", "content": "pwned" }),
        ),
        ("delete", json!({ "path": "sub/notes.txt" })),
        (
            "copy",
            json!({ "source": "a/file.txt", "destination": "sub/copied.txt" }),
        ),
    ] {
        let Outcome::Plan(plan) = toolbox.call(&cx, tool, Mode::Plan, input.clone(), None).unwrap() else {
            panic!("{tool}: expected a plan")
        };
        std::fs::rename(s.root.join("sub"), s.root.join("sub.real")).unwrap();
        symlink(&s.outside, s.root.join("sub")).unwrap();

        let e = toolbox
            .call(&cx, tool, Mode::Apply, input, Some(&plan.precondition))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::OutsideScope, "{tool}: {e}");
        s.outside_untouched();

        std::fs::remove_file(s.root.join("sub")).unwrap();
        std::fs::rename(s.root.join("sub.real"), s.root.join("sub")).unwrap();
    }
    assert_eq!(
        std::fs::read_to_string(s.root.join("sub/notes.txt")).unwrap(),
        "v1"
    );
}

/// Once a parent handle is held, swapping the path under it changes nothing:
/// the write lands in the folder that was opened, never through the new link.
#[test]
fn an_opened_parent_is_pinned() {
    let s = Sandbox::new();
    std::fs::create_dir(s.root.join("sub")).unwrap();
    let loc = s.scope.resolve("sub/x.txt").unwrap();
    let (dir, name) = loc.open_parent().unwrap();
    std::fs::rename(s.root.join("sub"), s.root.join("sub.real")).unwrap();
    symlink(&s.outside, s.root.join("sub")).unwrap();
    dir.write(&name, "pinned").unwrap();
    assert_eq!(
        std::fs::read_to_string(s.root.join("sub.real/x.txt")).unwrap(),
        "pinned"
    );
    s.outside_untouched();
}

#[test]
fn read_only_roots_refuse_every_mutation() {
    let s = Sandbox::new();
    let scope = Scope::single(&s.root, Access::ReadOnly).unwrap();
    let toolbox = Toolbox::builtin();
    let cx = Context::new(&scope);
    for (tool, input) in [
        ("write_file", json!({ "path": "a/new.txt", "content": "x" })),
        (
            "edit_file",
            json!({ "path": "a/file.txt", "edits": [{ "find": "inside", "replace": "x" }] }),
        ),
        ("append_file", json!({ "path": "a/file.txt", "content": "x" })),
        ("create_directory", json!({ "path": "c" })),
        (
            "move",
            json!({ "source": "a/file.txt", "destination": "b/file.txt" }),
        ),
        (
            "copy",
            json!({ "source": "a/file.txt", "destination": "b/file.txt" }),
        ),
        ("delete", json!({ "path": "a/file.txt" })),
    ] {
        let e = toolbox.call(&cx, tool, Mode::Plan, input, None).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied, "{tool}: {e}");
    }
    assert_eq!(
        std::fs::read_to_string(s.root.join("a/file.txt")).unwrap(),
        "inside"
    );
}

#[test]
fn roots_are_matched_by_component_and_most_specific_wins() {
    let s = Sandbox::new();
    let scope = Scope::new([
        (&s.root, Access::ReadOnly),
        (&s.root.join("b"), Access::ReadWrite),
    ])
    .unwrap();
    let loc = scope
        .resolve(&s.root.join("b/new.txt").display().to_string())
        .unwrap();
    assert_eq!(loc.root().path(), s.root.join("b"));
    assert!(loc.require_writable().is_ok());
    let loc = scope
        .resolve(&s.root.join("a/file.txt").display().to_string())
        .unwrap();
    assert!(loc.require_writable().is_err());
    let e = scope
        .resolve(&format!("{}_evil/secret.txt", s.root.display()))
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OutsideScope);
}

#[test]
fn an_alias_of_the_root_maps_to_it() {
    let s = Sandbox::new();
    let alias = s.outside.join("alias");
    symlink(&s.root, &alias).unwrap();
    let loc = s
        .scope
        .resolve(&alias.join("a/file.txt").display().to_string())
        .unwrap();
    assert_eq!(loc.path(), s.root.join("a/file.txt"));
    std::fs::remove_file(alias).unwrap();
}

fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "..",
        ".",
        "a",
        "b",
        "link_in",
        "link_out",
        "abs_link",
        "secret_link",
        "up",
        "up2",
        "secret.txt",
        "file.txt",
        "",
        "outside",
        "root_evil",
        "root",
    ])
}

fn assert_contained(s: &Sandbox, path: &str) {
    for tool in ["read_file", "stat", "list_directory", "hash_file", "grep"] {
        let input = match tool {
            "grep" => json!({ "pattern": "SECRET", "path": path, "hidden": true, "respect_ignore": false }),
            _ => json!({ "path": path }),
        };
        let Ok(out) = s.call(tool, Mode::Run, input) else {
            continue;
        };
        let out = out.into_value();
        let text = out.to_string();
        assert!(!text.contains(SECRET), "{tool} {path:?} leaked: {text}");
        if tool == "hash_file" {
            let secret_hash = format!("{:x}", Sha256::digest(SECRET));
            assert_ne!(out["digest"], secret_hash.as_str(), "{path:?} hashed the secret");
        }
        let reported = out["path"].as_str().unwrap();
        assert!(
            Path::new(reported).starts_with(&s.root),
            "{tool} {path:?} reported {reported}"
        );
    }
    if let Ok(loc) = s.scope.resolve(path) {
        assert!(
            loc.path().starts_with(&s.root),
            "{path:?} resolved to {}",
            loc.path().display()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_relative_paths_never_leave_the_root(segments in prop::collection::vec(segment(), 1..8)) {
        let s = Sandbox::new();
        assert_contained(&s, &segments.join("/"));
    }

    #[test]
    fn random_absolute_paths_never_leave_the_root(segments in prop::collection::vec(segment(), 0..8)) {
        let s = Sandbox::new();
        let parent = s.root.parent().unwrap().display().to_string();
        assert_contained(&s, &format!("{parent}/{}", segments.join("/")));
    }
}

/// A read-only folder nested in a read-write one: no path to it, relative or
/// absolute, and no change to a folder that holds it, changes anything in it.
#[test]
fn a_read_only_folder_nested_in_a_read_write_one_stays_unchanged() {
    let base = tempfile::tempdir().unwrap();
    let root = dunce::canonicalize(base.path()).unwrap();
    std::fs::create_dir_all(root.join("sub/ro")).unwrap();
    std::fs::create_dir_all(root.join("ro_sibling")).unwrap();
    std::fs::write(root.join("sub/ro/kept.txt"), "kept").unwrap();
    std::fs::write(root.join("a.txt"), "a").unwrap();
    let scope = Scope::new([
        (root.clone(), Access::ReadWrite),
        (root.join("sub/ro"), Access::ReadOnly),
    ])
    .unwrap();
    let toolbox = Toolbox::builtin();
    let plan =
        |tool: &str, input: Value| toolbox.call(&Context::new(&scope), tool, Mode::Plan, input.clone(), None);
    let ro = root.join("sub/ro");
    let abs = |rel: &str| ro.join(rel).display().to_string();
    let attempts = [
        (
            "write_file",
            json!({ "path": "sub/ro/planted.txt", "content": "x" }),
        ),
        (
            "write_file",
            json!({ "path": "sub/./ro/../ro/planted.txt", "content": "x" }),
        ),
        (
            "write_file",
            json!({ "path": abs("planted.txt"), "content": "x" }),
        ),
        (
            "append_file",
            json!({ "path": "sub/ro/kept.txt", "content": "x" }),
        ),
        ("create_directory", json!({ "path": "sub/ro/new" })),
        ("delete", json!({ "path": "sub/ro/kept.txt" })),
        ("delete", json!({ "path": "sub", "recursive": true })),
        ("move", json!({ "source": "sub", "destination": "elsewhere" })),
        (
            "move",
            json!({ "source": "a.txt", "destination": "sub/ro/a.txt" }),
        ),
        (
            "copy",
            json!({ "source": "a.txt", "destination": "sub/ro/a.txt" }),
        ),
        (
            "rename_batch",
            json!({ "renames": [{ "from": "a.txt", "to": "sub/ro/a.txt" }] }),
        ),
        (
            "rename_batch",
            json!({ "renames": [{ "from": "sub", "to": "sub2" }] }),
        ),
    ];
    for (tool, input) in attempts {
        let e = match plan(tool, input.clone()) {
            Ok(out) => panic!("{tool} {input} should have been refused, got {out:?}"),
            Err(e) => e,
        };
        assert!(
            matches!(e.code(), ErrorCode::PermissionDenied | ErrorCode::InvalidBatch),
            "{tool} {input}: {e}"
        );
    }
    // A sibling whose name extends the read-only one's is not inside it.
    plan(
        "write_file",
        json!({ "path": "ro_sibling/ok.txt", "content": "x" }),
    )
    .unwrap();
    plan("write_file", json!({ "path": "sub/ok.txt", "content": "x" })).unwrap();
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 1);
}
