use serde_json::json;

use super::super::testutil::{Fixture, code};
use crate::ErrorCode;

/// The paths a listing returned: its entries' `path`s, or its `names`.
fn paths(v: &serde_json::Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().or(e["path"].as_str()).unwrap().to_string())
        .collect()
}

#[test]
fn lists_one_level_sorted_with_metadata() {
    let f = Fixture::new();
    f.write("b.txt", "hello");
    f.write("a/inner.txt", "x");
    f.write(".hidden", "");
    let out = f.run("list_directory", json!({ "path": "." }));
    assert_eq!(paths(&out, "entries"), [".hidden", "a", "b.txt"]);
    let b = &out["entries"][2];
    assert_eq!(b["kind"], "file");
    assert_eq!(b["size"], 5);
    assert_eq!(b["symlink"], false);
    assert!(b["modified"].as_str().unwrap().ends_with('Z'));
    assert_eq!(out["truncated"], false);
    assert_eq!(out["path"], f.root().display().to_string());
}

#[test]
fn recursive_respects_depth_and_hidden_switch() {
    let f = Fixture::new();
    f.write("a/b/c/deep.txt", "");
    f.write(".git/config", "");
    let out = f.run(
        "list_directory",
        json!({ "recursive": true, "max_depth": 2, "hidden": false }),
    );
    assert_eq!(paths(&out, "entries"), ["a", "a/b"]);
    let out = f.run("list_directory", json!({ "recursive": true }));
    assert_eq!(
        paths(&out, "entries"),
        [".git", ".git/config", "a", "a/b", "a/b/c", "a/b/c/deep.txt"]
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_flagged_not_followed() {
    let f = Fixture::new();
    f.write("real/file.txt", "");
    super::super::testutil::symlink(f.path("real"), f.path("link"));
    let out = f.run("list_directory", json!({ "recursive": true }));
    assert_eq!(paths(&out, "entries"), ["link", "real", "real/file.txt"]);
    assert_eq!(out["entries"][0]["kind"], "symlink");
    assert_eq!(out["entries"][0]["symlink"], true);
}

#[test]
fn bound_is_reported_and_offset_continues() {
    let f = Fixture::new();
    for i in 0..1003 {
        f.write(&format!("f{i:04}"), "");
    }
    let first = f.run("list_directory", json!({}));
    assert_eq!(first["entries"].as_array().unwrap().len(), 1000);
    assert_eq!(first["truncated"], true);
    assert_eq!(first["next_offset"], 1000);
    let rest = f.run("list_directory", json!({ "offset": 1000 }));
    assert_eq!(paths(&rest, "entries"), ["f1000", "f1001", "f1002"]);
    assert_eq!(rest["truncated"], false);
    assert!(rest.get("next_offset").is_none());

    let page = f.run("list_directory", json!({ "limit": 2, "offset": 5 }));
    assert_eq!(paths(&page, "entries"), ["f0005", "f0006"]);
    assert_eq!(page["next_offset"], 7);
}

/// Every page size, through nested folders, hidden names and ignore
/// rules: the pages a cursor chains are exactly the one long listing.
#[test]
fn cursor_pages_join_into_the_whole_listing() {
    let f = Fixture::new();
    for path in [
        "a/1.txt",
        "a/b/2.txt",
        "a/b/c/3.las",
        "a/b/c/4.e57",
        "a/d.e57",
        "b.e57",
        "c/.hidden/5.e57",
        "c/6.e57",
        "c/ignored.log",
        "d/e/f/g/7.e57",
        "z.txt",
    ] {
        f.write(path, "x");
    }
    f.write(".gitignore", "*.log\n");
    for (tool, args, key) in [
        ("list_directory", json!({ "recursive": true }), "entries"),
        (
            "list_directory",
            json!({ "recursive": true, "hidden": false, "respect_ignore": true }),
            "entries",
        ),
        (
            "list_directory",
            json!({ "recursive": true, "details": false }),
            "names",
        ),
        ("glob", json!({ "pattern": "*.e57" }), "matches"),
        (
            "glob",
            json!({ "pattern": "**", "hidden": true, "respect_ignore": false }),
            "matches",
        ),
    ] {
        let whole = paths(&f.run(tool, args.clone()), key);
        assert!(whole.len() > 3, "{tool} {args}: {whole:?}");
        for limit in 1..=whole.len() {
            let mut joined = Vec::new();
            let mut input = args.clone();
            input["limit"] = json!(limit);
            loop {
                let page = f.run(tool, input.clone());
                joined.extend(paths(&page, key));
                match page.get("next_cursor") {
                    Some(cursor) => input["cursor"] = cursor.clone(),
                    None => break,
                }
            }
            assert_eq!(joined, whole, "{tool} {args} by {limit}");
        }
    }
}

#[test]
fn names_only_listings_give_names_and_page_by_100000() {
    let f = Fixture::new();
    f.write("a/b.txt", "12345");
    let out = f.run("list_directory", json!({ "recursive": true, "details": false }));
    assert_eq!(out["names"], json!(["a/", "a/b.txt"]));
    assert_eq!(out["entries"], json!([]));
    assert!(out.get("symlinks").is_none(), "{out}");
    let out = f.run("list_directory", json!({ "recursive": true }));
    assert_eq!(out["entries"][1]["size"], 5);
    assert!(out.get("names").is_none(), "{out}");
    let e = f.run_err("list_directory", json!({ "details": false, "limit": 100_001 }));
    assert!(e.to_string().contains("100000"), "{e}");
    let e = f.run_err("list_directory", json!({ "limit": 10_001 }));
    assert!(e.to_string().contains("10000"), "{e}");
}

#[cfg(unix)]
#[test]
fn names_only_listings_name_their_symlinks() {
    let f = Fixture::new();
    f.write("real/file.txt", "");
    super::super::testutil::symlink(f.path("real"), f.path("link"));
    let out = f.run("list_directory", json!({ "recursive": true, "details": false }));
    assert_eq!(out["names"], json!(["link", "real/", "real/file.txt"]));
    assert_eq!(out["symlinks"], json!(["link"]));
}

/// Long paths end a names-only page at 4 MiB of paths, well before its
/// 100,000 entries, and the cursor goes on from there. Unix only: paths of
/// 3.8 KB are beyond what Windows opens without its `\\?\` prefix.
#[cfg(unix)]
#[test]
fn names_only_pages_stop_at_their_byte_bound() {
    let f = Fixture::new();
    let segment = "d".repeat(255);
    let deep = vec![segment.as_str(); 14].join("/");
    for i in 0..1200 {
        f.write(&format!("{deep}/{i:04}{}", "f".repeat(196)), "");
    }
    let input = json!({ "recursive": true, "max_depth": 20, "details": false });
    let first = f.run("list_directory", input.clone());
    let names = paths(&first, "names");
    let bytes: usize = names.iter().map(String::len).sum();
    assert_eq!(first["truncated"], true);
    let mut input = input;
    input["cursor"] = first["next_cursor"].clone();
    let rest = f.run("list_directory", input);
    assert_eq!(rest["truncated"], false);
    let rest = paths(&rest, "names");
    assert_eq!(names.len() + rest.len(), 14 + 1200);
    // Full: the next name would not have fitted.
    assert!(bytes <= crate::MAX_LISTING_BYTES, "{bytes}");
    assert!(bytes + rest[0].len() > crate::MAX_LISTING_BYTES, "{bytes}");
}

/// A name that is not UTF-8 (possible on Linux) is listed lossily, but
/// the cursor keeps its bytes: the next page starts right after it.
#[cfg(target_os = "linux")]
#[test]
fn a_cursor_at_a_name_that_is_not_utf8_resumes_exactly() {
    use std::os::unix::ffi::OsStrExt as _;
    let f = Fixture::new();
    for name in [&b"a\xff"[..], b"a\xfe", b"a\xfd", b"b"] {
        std::fs::write(f.root().join(std::ffi::OsStr::from_bytes(name)), "").unwrap();
    }
    let whole = f.run("list_directory", json!({}));
    let mut input = json!({ "limit": 1 });
    let mut pages = 0;
    loop {
        let page = f.run("list_directory", input.clone());
        pages += 1;
        assert!(pages <= 10, "the cursor does not advance: {page}");
        match page.get("next_cursor") {
            Some(cursor) => input["cursor"] = cursor.clone(),
            None => break,
        }
    }
    assert_eq!(
        pages,
        whole["entries"].as_array().unwrap().len(),
        "one page per entry, none repeated or lost"
    );
}

#[test]
fn a_cursor_survives_its_entry_being_removed_and_bad_ones_are_named() {
    let f = Fixture::new();
    for name in ["a", "b/1", "b/2", "c"] {
        f.write(name, "");
    }
    let page = f.run("list_directory", json!({ "recursive": true, "limit": 3 }));
    assert_eq!(paths(&page, "entries"), ["a", "b", "b/1"]);
    std::fs::remove_file(f.path("b/1")).unwrap();
    let rest = f.run(
        "list_directory",
        json!({ "recursive": true, "cursor": page["next_cursor"] }),
    );
    assert_eq!(paths(&rest, "entries"), ["b/2", "c"]);
    for (cursor, says) in [
        ("nope", "not a cursor"),
        ("c1.zz", "damaged"),
        ("c1.2e2e", "below the listed folder"),
    ] {
        let e = f.run_err("list_directory", json!({ "cursor": cursor }));
        assert!(
            e.to_string().contains("cursor") && e.to_string().contains(says),
            "{cursor}: {e}"
        );
    }
    let e = f.run_err(
        "glob",
        json!({ "pattern": "*", "cursor": page["next_cursor"], "offset": 2 }),
    );
    assert!(e.to_string().contains("either `cursor` or `offset`"), "{e}");
}

#[test]
fn bad_inputs_name_the_field() {
    let f = Fixture::new();
    f.write("file.txt", "");
    let e = f.run_err("list_directory", json!({ "limit": 0 }));
    assert_eq!(code(&e), ErrorCode::InvalidInput);
    assert!(e.to_string().contains("limit"), "{e}");
    let e = f.run_err("list_directory", json!({ "limit": 10_001 }));
    assert!(e.to_string().contains("cap of 10000"), "{e}");
    let e = f.run_err("list_directory", json!({ "recursive": "yes" }));
    assert_eq!(code(&e), ErrorCode::InvalidInput);
    assert!(e.to_string().contains("recursive"), "{e}");
    let e = f.run_err("list_directory", json!({ "path": ".", "colour": true }));
    assert!(e.to_string().contains("colour"), "{e}");
    assert_eq!(
        code(&f.run_err("list_directory", json!({ "path": "file.txt" }))),
        ErrorCode::NotADirectory
    );
    assert_eq!(
        code(&f.run_err("list_directory", json!({ "path": "missing" }))),
        ErrorCode::NotFound
    );
}

#[test]
fn glob_matches_names_or_paths_and_honours_gitignore() {
    let f = Fixture::new();
    f.write("scans/north.e57", "");
    f.write("scans/south.E57", "");
    f.write("scans/old/west.e57", "");
    f.write("build/out.e57", "");
    f.write(".cache/c.e57", "");
    f.write(".gitignore", "build/\n");
    f.write("scans/.ignore", "old/\n");
    let out = f.run("glob", json!({ "pattern": "*.e57" }));
    assert_eq!(paths(&out, "matches"), ["scans/north.e57"]);
    let out = f.run(
        "glob",
        json!({ "pattern": "*.e57", "case_insensitive": true, "respect_ignore": false, "hidden": true }),
    );
    assert_eq!(
        paths(&out, "matches"),
        [
            ".cache/c.e57",
            "build/out.e57",
            "scans/north.e57",
            "scans/old/west.e57",
            "scans/south.E57"
        ]
    );
    // With a slash the pattern is matched against the relative path; `*` does not cross `/`.
    let out = f.run(
        "glob",
        json!({ "pattern": "scans/*", "respect_ignore": false, "kind": "file" }),
    );
    assert_eq!(paths(&out, "matches"), ["scans/north.e57", "scans/south.E57"]);
    let out = f.run(
        "glob",
        json!({ "pattern": "**/west.e57", "respect_ignore": false }),
    );
    assert_eq!(paths(&out, "matches"), ["scans/old/west.e57"]);
    // Ignore files above the searched folder still apply.
    let out = f.run("glob", json!({ "pattern": "*", "path": "scans" }));
    assert_eq!(paths(&out, "matches"), ["north.e57", "south.E57"]);
}

#[test]
fn glob_bound_and_bad_pattern() {
    let f = Fixture::new();
    for i in 0..5 {
        f.write(&format!("{i}.las"), "");
    }
    let out = f.run("glob", json!({ "pattern": "*.las", "limit": 2 }));
    assert_eq!(paths(&out, "matches"), ["0.las", "1.las"]);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["next_offset"], 2);
    let out = f.run("glob", json!({ "pattern": "*.las", "offset": 4 }));
    assert_eq!(paths(&out, "matches"), ["4.las"]);
    let e = f.run_err("glob", json!({ "pattern": "a[" }));
    assert_eq!(code(&e), ErrorCode::InvalidInput);
    assert!(e.to_string().contains("pattern"), "{e}");
}

#[test]
fn disk_usage_totals_and_budgets() {
    let f = Fixture::new();
    f.write("a/one.bin", vec![0u8; 1000]);
    f.write("a/b/two.bin", vec![0u8; 24]);
    f.write(".hidden", "12");
    let out = f.run("disk_usage", json!({}));
    assert_eq!(out["files"], 3);
    assert_eq!(out["directories"], 2);
    assert_eq!(out["complete"], true);
    assert_eq!(out["truncated"], false);
    let dir_sizes = out["bytes"].as_u64().unwrap() - 1026;
    let dir_size = std::fs::metadata(f.path("a")).unwrap().len();
    assert_eq!(
        dir_sizes,
        dir_size + std::fs::metadata(f.path("a/b")).unwrap().len()
    );

    let out = f.run("disk_usage", json!({ "max_entries": 2 }));
    assert_eq!(out["complete"], false);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["stopped_by"], "entry_budget");
    assert_eq!(
        out["files"].as_u64().unwrap() + out["directories"].as_u64().unwrap(),
        2
    );

    // A zero time budget has always run out by the first entry.
    let out = f.run("disk_usage", json!({ "time_budget_ms": 0 }));
    assert_eq!(out["stopped_by"], "time_budget");

    let out = f.run("disk_usage", json!({ "path": "a/one.bin" }));
    assert_eq!(
        (out["files"].as_u64(), out["bytes"].as_u64()),
        (Some(1), Some(1000))
    );
}

/// Names a planted file can carry (a newline, a leading quote, a tab, a
/// terminal escape) read back exactly from a listing's text, names only and
/// with details: each is written as a JSON string where it would not read
/// back as itself.
#[cfg(unix)]
#[test]
fn hostile_names_read_back_exactly_from_the_listing_text() {
    let f = Fixture::new();
    for name in [
        "two\nlines",
        "\"quoted",
        "tab\there",
        "esc\u{1b}[2J",
        "plain name",
    ] {
        f.write(name, "");
    }
    let unquote = |field: &str| -> String {
        if field.starts_with('"') {
            serde_json::from_str(field).unwrap()
        } else {
            field.to_string()
        }
    };
    let out = f.run("list_directory", json!({ "details": false }));
    let text = crate::output_text("list_directory", &out);
    let read: Vec<String> = text.lines().skip(1).map(unquote).collect();
    assert_eq!(read, paths(&out, "names"));
    assert_eq!(read.len(), 5, "{text}");

    let out = f.run("list_directory", json!({}));
    let text = crate::output_text("list_directory", &out);
    let read: Vec<String> = text
        .lines()
        .skip(1)
        .map(|line| unquote(line.splitn(4, ' ').nth(3).unwrap()))
        .collect();
    assert_eq!(read, paths(&out, "entries"));
}
