use super::*;
use crate::{Access, Scope};

/// A tree wide and deep enough that workers read ahead: 12 folders of 6
/// sub-folders of 5 files, names chosen so that creation order, byte
/// order and length order all differ.
fn tree() -> (tempfile::TempDir, Scope) {
    let dir = tempfile::tempdir().unwrap();
    for top in 0..12 {
        for sub in 0..6 {
            let folder = dir
                .path()
                .join(format!("d{}", 11 - top))
                .join(format!("S{sub}x{}", "y".repeat(sub)));
            std::fs::create_dir_all(&folder).unwrap();
            for f in 0..5 {
                std::fs::write(folder.join(format!("{}f", 5 - f)), b"x").unwrap();
            }
        }
    }
    std::fs::write(dir.path().join("A.txt"), b"top").unwrap();
    let scope = Scope::single(dir.path(), Access::ReadOnly).unwrap();
    (dir, scope)
}

/// The expected order, computed independently: std::fs, sorted by bytes.
fn expected(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let mut names: Vec<OsString> = std::fs::read_dir(dir.join(rel))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    for name in names {
        let child = rel.join(&name);
        out.push(child.clone());
        if dir.join(&child).is_dir() {
            expected(dir, &child, out);
        }
    }
}

fn visited(scope: &Scope, options: &WalkOptions) -> Vec<PathBuf> {
    let cx = Context::new(scope);
    let base = scope.resolve(".").unwrap();
    let mut seen = Vec::new();
    walk(&cx, &base, options, |e| {
        seen.push(e.rel.to_path_buf());
        Ok(true)
    })
    .unwrap();
    seen
}

#[test]
fn read_ahead_keeps_the_sorted_depth_first_order() {
    let (dir, scope) = tree();
    let root = scope.roots()[0].path().to_path_buf();
    let mut want = Vec::new();
    expected(&root, Path::new(""), &mut want);
    assert_eq!(want.len(), 12 + 12 * 6 + 12 * 6 * 5 + 1);
    for workers in [0, 1, 2, 4] {
        for lookahead in [1, 7, LOOKAHEAD] {
            let mut options = WalkOptions::everything().with_lookahead(lookahead);
            options.workers = workers;
            assert_eq!(
                visited(&scope, &options),
                want,
                "workers {workers}, lookahead {lookahead}"
            );
        }
    }
    drop(dir);
}

#[test]
fn read_ahead_metadata_is_the_entry_s_own() {
    let (_dir, scope) = tree();
    let cx = Context::new(&scope);
    let base = scope.resolve(".").unwrap();
    let mut files = 0;
    walk(&cx, &base, &WalkOptions::everything().with_metadata(), |e| {
        let md = e.metadata()?;
        assert_eq!(md.is_dir(), e.file_type.is_dir(), "{}", e.rel.display());
        if e.file_type.is_file() {
            files += 1;
            let want = if e.rel == Path::new("A.txt") { 3 } else { 1 };
            assert_eq!(md.len(), want, "{}", e.rel.display());
        }
        Ok(true)
    })
    .unwrap();
    assert_eq!(files, 12 * 6 * 5 + 1);
}

#[test]
fn a_visitor_that_stops_early_ends_the_walk() {
    let (_dir, scope) = tree();
    let cx = Context::new(&scope);
    let base = scope.resolve(".").unwrap();
    let mut seen = 0;
    walk(&cx, &base, &WalkOptions::everything(), |_| {
        seen += 1;
        Ok(seen < 10)
    })
    .unwrap();
    assert_eq!(seen, 10);
    // An error from the visitor ends it too, and is returned as is.
    let err = walk(&cx, &base, &WalkOptions::everything(), |_| Err(Error::Cancelled)).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err:?}");
}

#[test]
fn a_panicking_visitor_does_not_leave_workers_waiting() {
    let (_dir, scope) = tree();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cx = Context::new(&scope);
        let base = scope.resolve(".").unwrap();
        let mut seen = 0;
        walk(&cx, &base, &WalkOptions::everything(), |_| {
            seen += 1;
            assert!(seen < 20, "visitor gives up");
            Ok(true)
        })
    }));
    // Reaching this line at all is the point: the scope joined its workers.
    assert!(outcome.is_err());
}

#[test]
fn ignore_rules_apply_to_what_workers_read() {
    let (_dir, scope) = tree();
    let root = scope.roots()[0].path().to_path_buf();
    std::fs::write(root.join(".gitignore"), "d3/\n*x\n").unwrap();
    std::fs::write(root.join("d5/.gitignore"), "!S0x\n1f\n").unwrap();
    let options = WalkOptions::filtered(MAX_DEPTH, false, true);
    let seen = visited(&scope, &options);
    let has = |p: &str| seen.iter().any(|s| s == Path::new(p));
    assert!(
        !has("d3") && !seen.iter().any(|s| s.starts_with("d3")),
        "ignored folder skipped"
    );
    assert!(!has("d4/S0x"), "*x ignores S0x at any depth");
    assert!(has("d5/S0x") && has("d5/S0x/2f"), "a deeper rule re-includes it");
    assert!(!has("d5/S0x/1f"), "and its own rule applies below it");
    assert!(has("d4/S1xy/1f"), "other folders are untouched");
}
