//! `rename_batch` on 10,000 files in one folder: plan and apply, against the
//! same renames as 10,000 single `move` calls and against a bare loop of
//! `rename(2)` in one Perl process (the floor: no plan, no checks, no journal).
//!
//! ```sh
//! cargo bench -p fusion-tools --bench rename -- [--files N] [--reps N] [--write docs/BENCHMARKS.md]
//! ```
//!
//! Every run renames `Scan_NNNNN.e57` to `2026-11-03_north_NNNNN.e57` or back,
//! in a folder under `target/bench-rename`, and checks the folder afterwards.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fusion_tools::{Access, Context, Mode, Outcome, Scope, Toolbox};
use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let files: usize = flag("--files").map_or(10_000, |v| v.parse().expect("--files N"));
    let reps: usize = flag("--reps").map_or(5, |v| v.parse().expect("--reps N"));
    let write = flag("--write").map(|p| support::workspace_path(env!("CARGO_MANIFEST_DIR"), &p));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-rename");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let old = |i: usize| format!("Scan_{i:05}.e57");
    let new = |i: usize| format!("2026-11-03_north_{i:05}.e57");
    for i in 0..files {
        std::fs::write(dir.join(old(i)), format!("scan {i}\n")).unwrap();
    }
    let scope = Scope::single(&dir, Access::ReadWrite).unwrap();
    let cx = Context::new(&scope);
    let toolbox = Toolbox::builtin();
    let pairs = |forward: bool| -> Value {
        let renames: Vec<Value> = (0..files)
            .map(|i| {
                let (from, to) = if forward {
                    (old(i), new(i))
                } else {
                    (new(i), old(i))
                };
                json!({ "from": from, "to": to })
            })
            .collect();
        json!({ "renames": renames })
    };
    let check = |forward: bool| {
        let name = if forward { new(files - 1) } else { old(files - 1) };
        assert!(dir.join(&name).exists(), "{name} is missing");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            files,
            "a leftover in the folder"
        );
    };

    // rename_batch: plan, then apply, alternating direction.
    let (mut plans, mut applies) = (Vec::new(), Vec::new());
    let mut forward = true;
    for _ in 0..reps {
        let input = pairs(forward);
        let started = Instant::now();
        let Outcome::Plan(plan) = toolbox
            .call(&cx, "rename_batch", Mode::Plan, input.clone(), None)
            .unwrap()
        else {
            panic!("a plan")
        };
        plans.push(started.elapsed());
        let started = Instant::now();
        toolbox
            .call(&cx, "rename_batch", Mode::Apply, input, Some(&plan.precondition))
            .unwrap();
        applies.push(started.elapsed());
        check(forward);
        forward = !forward;
    }

    // The same renames as single `move` calls, each planned and applied.
    let mut moves = Vec::new();
    for _ in 0..reps.min(3) {
        let started = Instant::now();
        for i in 0..files {
            let (from, to) = if forward {
                (old(i), new(i))
            } else {
                (new(i), old(i))
            };
            let input = json!({ "source": from, "destination": to });
            let Outcome::Plan(plan) = toolbox
                .call(&cx, "move", Mode::Plan, input.clone(), None)
                .unwrap()
            else {
                panic!("a plan")
            };
            toolbox
                .call(&cx, "move", Mode::Apply, input, Some(&plan.precondition))
                .unwrap();
        }
        moves.push(started.elapsed());
        check(forward);
        forward = !forward;
    }

    // The floor: rename(2) in a loop, one process, nothing checked.
    let list = dir.with_extension("pairs");
    let mut floor = Vec::new();
    for _ in 0..reps {
        let text: String = (0..files)
            .map(|i| {
                let (from, to) = if forward {
                    (old(i), new(i))
                } else {
                    (new(i), old(i))
                };
                format!("{from}\t{to}\n")
            })
            .collect();
        std::fs::write(&list, text).unwrap();
        let started = Instant::now();
        let status = Command::new("perl")
            .args([
                "-e",
                "chdir $ARGV[0] or die; open my $f, '<', $ARGV[1] or die; \
                 while (<$f>) { chomp; my ($a, $b) = split /\\t/; rename $a, $b or die \"$a: $!\" }",
            ])
            .arg(&dir)
            .arg(&list)
            .status()
            .expect("perl is needed for the floor row");
        floor.push(started.elapsed());
        assert!(status.success());
        check(forward);
        forward = !forward;
    }
    let _ = std::fs::remove_file(&list);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let (plan, apply, moves, floor) = (median(plans), median(applies), median(moves), median(floor));
    let table = format!(
        "{files} files in one folder, {cores} cores; median of {reps} runs ({} for single moves), in-process \
         calls through the toolbox.\n\n\
         | what | time | per file | goal |\n|---|---|---|---|\n\
         | `rename_batch` plan | {:.0} ms | {:.1} µs | < 1 s |\n\
         | `rename_batch` apply (re-verify, journal, two passes, flush) | {:.0} ms | {:.1} µs | < 5 s |\n\
         | `rename_batch` plan + apply | {:.0} ms | {:.1} µs | |\n\
         | {files} single `move` calls, each planned and applied | {:.0} ms | {:.1} µs | (and {files} approvals) |\n\
         | floor: `rename(2)` in a Perl loop, no checks, no journal | {:.0} ms | {:.1} µs | |\n",
        reps.min(3),
        ms(plan),
        ms(plan) * 1000.0 / files as f64,
        ms(apply),
        ms(apply) * 1000.0 / files as f64,
        ms(plan + apply),
        ms(plan + apply) * 1000.0 / files as f64,
        ms(moves),
        ms(moves) * 1000.0 / files as f64,
        ms(floor),
        ms(floor) * 1000.0 / files as f64,
    );
    println!("{table}");
    if let Some(path) = write {
        support::write_table(&path, "rename-bench", &table);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
