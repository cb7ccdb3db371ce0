use serde_json::json;

use super::super::testutil::Fixture;

#[test]
fn no_plan_touches_the_disk() {
    let f = Fixture::new();
    f.write("a.txt", "one\n");
    f.write("tree/b.txt", "two\n");
    let before = f.snapshot();
    for (tool, input) in [
        (
            "write_file",
            json!({ "path": "new/c.txt", "content": "x", "create_parents": true }),
        ),
        (
            "edit_file",
            json!({ "path": "a.txt", "edits": [{ "find": "one", "replace": "1" }] }),
        ),
        ("append_file", json!({ "path": "a.txt", "content": "more\n" })),
        ("create_directory", json!({ "path": "d/e/f" })),
        ("move", json!({ "source": "tree", "destination": "moved" })),
        ("copy", json!({ "source": "tree", "destination": "copied" })),
        ("delete", json!({ "path": "tree", "recursive": true })),
    ] {
        let plan = f.plan(tool, input);
        assert!(!plan.effects.is_empty(), "{tool}");
        assert_eq!(f.snapshot(), before, "{tool}'s plan changed the disk");
    }
}

#[test]
fn a_plan_lists_at_most_1000_effects_and_says_so() {
    let f = Fixture::new();
    for i in 0..1100 {
        f.write(&format!("big/{i:04}.las"), "");
    }
    let plan = f.plan("delete", json!({ "path": "big", "recursive": true }));
    assert_eq!(plan.effects.len(), crate::MAX_PLAN_EFFECTS);
    assert_eq!(plan.effects_total, 1101);
    assert!(plan.truncated);
    assert!(plan.summary.contains("1100 file(s)"), "{}", plan.summary);
    // The bound is on the listing, not the deletion.
    let out = f
        .apply("delete", json!({ "path": "big", "recursive": true }), &plan)
        .unwrap();
    assert_eq!(out["files"], 1100);
    assert!(!f.exists("big"));
}
