//! E57 → LAZ: `fusion-host`'s native `convert_e57_to_las` against the
//! Python route a point-cloud user would script, pye57 (libE57Format) and
//! laspy with its lazrs backend (`scripts/e57-to-laz.py`), on the same file in
//! the same run. PDAL is not packaged here; where it is, it belongs in this
//! table too.
//!
//! ```sh
//! pip install pye57 'laspy[lazrs]'
//! cargo bench -p example-host --bench convert -- [--points N] [--reps N]
//! ```
//!
//! The input is one E57 file of three scans (cartesian doubles, intensity,
//! RGB) written by the `e57` crate, `--points` in all (default 6,000,000).
//! Each side runs as its own process, the two alternating, timed
//! wall-clock, best of `--reps` (default 3); peak memory is
//! `/usr/bin/time`'s maximum resident set. Beside the whole process, each
//! side's own work: the script times itself after Python's start-up and
//! imports; ours is the whole time less the binary's start-up (`--version`,
//! timed the same way). CPU is the least user plus system time of a run,
//! which on two cores says what wall-clock time hides: work a busy second
//! core absorbs. The versions in the table are the ones installed.
//! `FUSION_BENCH_BIN=path` measures another build of `fusion-host` instead.
//! Both outputs are read back by laspy, which must count every point: the
//! bench stops if either does not.
//! A later row converts the same scans with a timestamp per point (GPS time
//! in the output, point format 3): ours only, as pye57 does not read
//! `timeStamp`. The last writes COPC, with the peak of what its octree
//! build keeps in the temporary folder (no reference: laspy reads COPC but
//! does not write it, and PDAL is not packaged here).

#[path = "../tests/support/e57.rs"]
mod e57_fixture;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fusion-host");

/// The binary measured: this build's, or another (`FUSION_BENCH_BIN`), to
/// compare two versions of the converter on the same files.
fn bin() -> String {
    std::env::var("FUSION_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let points: usize = flag("--points").map_or(6_000_000, |v| v.parse().expect("--points N"));
    let reps: usize = flag("--reps").map_or(3, |v| v.parse().expect("--reps N"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/e57-to-laz.py");
    let python_ready = Command::new("python3")
        .args(["-c", "import pye57, laspy, lazrs"])
        .output()
        .is_ok_and(|o| o.status.success());

    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("scans.e57");
    let started = Instant::now();
    write_scans(&source, points, false);
    let e57_bytes = std::fs::metadata(&source).expect("e57").len();
    println!(
        "# E57 → LAZ: {points} points in 3 scans, {:.1} MiB of E57 (written in {:.1} s), best of {reps}\n",
        e57_bytes as f64 / 1048576.0,
        started.elapsed().as_secs_f64()
    );

    let root = dir.path().display().to_string();
    let config = dir.path().join("config");
    let ours_out = dir.path().join("ours.laz");
    // `fusion-host call convert_e57_to_las --apply`, merging `source` into
    // `out` (removed first).
    let convert = |source: &str, out: &str| {
        let input = serde_json::json!({ "sources": [source], "merge_into": out }).to_string();
        let (out, config, root) = (dir.path().join(out), config.clone(), root.clone());
        move || {
            let _ = std::fs::remove_file(&out);
            let mut c = Command::new(bin());
            c.arg("--config-dir").arg(&config).args([
                "call",
                "convert_e57_to_las",
                "--apply",
                "--root",
                &root,
                "--input",
                &input,
            ]);
            c
        }
    };
    let ours_command = convert("scans.e57", "ours.laz");
    let startup = measure(
        &[&|| {
            let mut c = Command::new(bin());
            c.arg("--version");
            c
        }],
        reps,
    )
    .remove(0)
    .best;

    table_header();
    // Ours: its work is its whole time less the binary's start-up.
    let ours_row = |ours: &Run| {
        row(
            "fusion-host `convert_e57_to_las` (Rust: e57 + las/laz)",
            ours,
            ours.best.saturating_sub(startup),
            points,
            &ours_out,
        );
    };
    if python_ready {
        let theirs_out = dir.path().join("theirs.laz");
        let theirs_command = || {
            let _ = std::fs::remove_file(&theirs_out);
            let mut c = Command::new("python3");
            c.arg(&script).arg(&source).arg(&theirs_out);
            c
        };
        let mut runs = measure(&[&ours_command, &theirs_command], reps);
        let theirs = runs.pop().expect("theirs");
        ours_row(&runs.pop().expect("ours"));
        let said: serde_json::Value = serde_json::from_str(theirs.stdout.lines().last().unwrap_or_default())
            .expect("the script prints its JSON line");
        let versions = &said["versions"];
        row(
            &format!(
                "pye57 {} + laspy {} (lazrs {}), `scripts/e57-to-laz.py`",
                versions["pye57"].as_str().unwrap_or("?"),
                versions["laspy"].as_str().unwrap_or("?"),
                versions["lazrs"].as_str().unwrap_or("?"),
            ),
            &theirs,
            Duration::from_secs_f64(theirs.work_s.unwrap_or(f64::NAN)),
            points,
            &theirs_out,
        );
        let (read_ours, read_theirs) = (count_laz(&ours_out), count_laz(&theirs_out));
        println!(
            "\n(points read back by laspy: ours {read_ours}, theirs {read_theirs}; the script says it wrote {}; \
             fusion-host starts in {:.0} ms)",
            said["points"],
            startup.as_secs_f64() * 1000.0
        );
        assert_eq!(
            read_ours,
            points.to_string(),
            "laspy does not read every point of ours back"
        );
        assert_eq!(
            read_theirs,
            points.to_string(),
            "laspy does not read every point of theirs back"
        );
    } else {
        ours_row(&measure(&[&ours_command], reps).remove(0));
        println!(
            "| pye57 + laspy | skipped: `python3 -c 'import pye57, laspy, lazrs'` failed (pip install pye57 'laspy[lazrs]') | | | | |"
        );
    }

    write_scans(&dir.path().join("timed.e57"), points, true);
    let timed = measure(&[&convert("timed.e57", "timed.laz")], reps).remove(0);
    println!("\nThe same scans with a timestamp per point:\n");
    table_header();
    row(
        "fusion-host, GPS time kept (point format 3)",
        &timed,
        timed.best.saturating_sub(startup),
        points,
        &dir.path().join("timed.laz"),
    );
    // What a standard reader makes of it: laspy's point format, GPS time
    // type and range. The scans start at GPS 1,400,000,000 s and 600 s
    // apart, a point every 10 µs.
    let read_back = python_says(
        "import sys, laspy; f = laspy.read(sys.argv[1]); h = f.header; \
         print(f'point format {h.point_format.id}, GPS time {h.global_encoding.gps_time_type.name}, \
         {f.gps_time.min():.5f} to {f.gps_time.max():.5f}, {h.point_count} points')",
        &dir.path().join("timed.laz"),
    );
    let expected_last = 1_400_000_000.0 + 2.0 * 600.0 - 1e9 + (points / 3 - 1) as f64 * 1e-5;
    println!(
        "\n(read back by laspy: {read_back}; expected {:.5} to {expected_last:.5})",
        1_400_000_000.0 - 1e9
    );

    // COPC: the untimed scans again, built into an octree. Its points wait
    // on disk in the temporary folder (TMPDIR, here one of the bench's own)
    // until the last is read; a thread samples how much lies there.
    let staging = dir.path().join("tmp");
    std::fs::create_dir_all(&staging).expect("staging folder");
    let copc_command = {
        let base = convert("scans.e57", "ours.copc.laz");
        let staging = staging.clone();
        move || {
            let mut c = base();
            c.env("TMPDIR", &staging);
            c
        }
    };
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, staging) = (watching.clone(), staging.clone());
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(bytes_under(&staging));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let copc = measure(&[&copc_command], reps).remove(0);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let staged = watcher.join().expect("the watcher");
    println!("\nThe same untimed scans as COPC (octree, LAZ 1.4, point format 7):\n");
    table_header();
    row(
        "fusion-host, COPC",
        &copc,
        copc.best.saturating_sub(startup),
        points,
        &dir.path().join("ours.copc.laz"),
    );
    let read_back = python_says(
        "import sys; from laspy.copc import CopcReader; r = CopcReader.open(sys.argv[1]); \
             print(f'{len(r.query().x)} points through the octree, {len(r.level_query(0).x)} at the root')",
        &dir.path().join("ours.copc.laz"),
    );
    println!(
        "\n(read back by laspy's CopcReader: {read_back}; at most {:.0} MiB, {:.0} bytes a point, waited in the \
         temporary folder; {} left there after the runs)",
        staged as f64 / 1048576.0,
        staged as f64 / points as f64,
        bytes_under(&staging)
    );
}

/// Bytes in the files under `dir`, at any depth (0 for what vanishes while
/// it is counted).
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => bytes_under(&e.path()),
                Ok(_) => e.metadata().map_or(0, |m| m.len()),
                Err(_) => 0,
            })
            .sum()
    })
}

struct Run {
    /// The shortest whole-process time.
    best: Duration,
    peak_kib: Option<u64>,
    /// The least CPU time (user plus system) a run took, in seconds.
    cpu_s: Option<f64>,
    /// What the last run printed.
    stdout: String,
    /// The shortest time the process says its own work took (`work_s`).
    work_s: Option<f64>,
}

/// Runs each command `reps` times, taking turns (one of each, then again),
/// under `/usr/bin/time` when it is there, so both sides see the same
/// machine: a busy moment, a warm cache.
fn measure(commands: &[&dyn Fn() -> Command], reps: usize) -> Vec<Run> {
    let mut runs: Vec<Run> = commands
        .iter()
        .map(|_| Run {
            best: Duration::MAX,
            peak_kib: None,
            cpu_s: None,
            stdout: String::new(),
            work_s: None,
        })
        .collect();
    for _ in 0..reps {
        for (command, run) in commands.iter().zip(runs.iter_mut()) {
            let inner = command();
            let timed = Path::new("/usr/bin/time").exists();
            let mut c = if timed {
                let mut c = Command::new("/usr/bin/time");
                c.args(["-f", "%M %U %S"])
                    .arg(inner.get_program())
                    .args(inner.get_args());
                for (key, value) in inner.get_envs() {
                    if let Some(value) = value {
                        c.env(key, value);
                    }
                }
                c
            } else {
                inner
            };
            let started = Instant::now();
            let out = c.output().expect("run the converter");
            let took = started.elapsed();
            assert!(
                out.status.success(),
                "{:?} failed: {}",
                c.get_program(),
                String::from_utf8_lossy(&out.stderr)
            );
            run.best = run.best.min(took);
            if timed {
                let said = String::from_utf8_lossy(&out.stderr);
                let last: Vec<&str> = said
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect();
                if let [peak, user, system] = last[..] {
                    run.peak_kib = peak.parse().ok().max(run.peak_kib);
                    if let (Ok(user), Ok(system)) = (user.parse::<f64>(), system.parse::<f64>()) {
                        run.cpu_s = Some(run.cpu_s.map_or(user + system, |c: f64| c.min(user + system)));
                    }
                }
            }
            run.stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let work =
                serde_json::from_str::<serde_json::Value>(run.stdout.lines().last().unwrap_or_default())
                    .ok()
                    .and_then(|v| v["work_s"].as_f64());
            if let Some(work) = work {
                run.work_s = Some(run.work_s.map_or(work, |w: f64| w.min(work)));
            }
        }
    }
    runs
}

fn row(name: &str, run: &Run, work: Duration, points: usize, out: &Path) {
    println!(
        "| {name} | {:.2} s | {:.2} s | {:.2} M | {} | {} | {:.1} MiB |",
        run.best.as_secs_f64(),
        work.as_secs_f64(),
        points as f64 / work.as_secs_f64() / 1e6,
        run.cpu_s
            .map_or_else(|| "n/a".to_string(), |c| format!("{c:.2} s")),
        run.peak_kib
            .map_or_else(|| "n/a".to_string(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
        std::fs::metadata(out).map_or(0.0, |m| m.len() as f64 / 1048576.0),
    );
}

/// The columns of every table this bench prints.
fn table_header() {
    println!(
        "| converter | whole process | its own work | points/s (work) | CPU (user + system) | peak memory | output |"
    );
    println!("|---|---|---|---|---|---|---|");
}

/// What a Python one-liner (`python3 -c CODE PATH`) prints of a file, or
/// `n/a` when it cannot (laspy missing).
fn python_says(code: &str, path: &Path) -> String {
    Command::new("python3")
        .args(["-c", code])
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "n/a (laspy missing)".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
}

/// Points in a LAZ file, as laspy reads them.
fn count_laz(path: &Path) -> String {
    python_says(
        "import sys, laspy; print(laspy.read(sys.argv[1]).header.point_count)",
        path,
    )
}

/// Three posed scans of a survey: a grid of points with intensity and colour,
/// and with `timed` a timestamp per point (10 µs apart, from each scan's
/// acquisition start).
fn write_scans(path: &Path, points: usize, timed: bool) {
    let fields = e57_fixture::Fields {
        intensity: true,
        color: true,
        time: timed,
        time_invalid: false,
        invalid_state: false,
    };
    // Each scan in its station's frame, the station posed in UTM: turned
    // about the vertical by 40° more than the last, 30 m along.
    let station = |scan: usize| {
        let half = (scan as f64 * 40.0).to_radians() / 2.0;
        e57::Transform {
            rotation: e57::Quaternion {
                w: half.cos(),
                x: 0.0,
                y: 0.0,
                z: half.sin(),
            },
            translation: e57::Translation {
                x: 512_352.0 + scan as f64 * 30.0,
                y: 5_401_245.0,
                z: 148.0,
            },
        }
    };
    // The same grid in every station's frame.
    let grid = |i: usize| {
        let (row, col) = ((i / 2000) as f64, (i % 2000) as f64);
        e57_fixture::Point {
            xyz: [
                col * 0.005,
                row * 0.005,
                ((row * 0.1).sin() + (col * 0.05).cos()) * 0.5,
            ],
            intensity: (i % 1000) as f32 / 999.0,
            rgb: [(i % 256) as i64, ((i / 7) % 256) as i64, ((i / 13) % 256) as i64],
            time: i as f64 * 1e-5,
            time_invalid: false,
            invalid_state: 0,
        }
    };
    let scans: Vec<e57_fixture::Scan<'_>> = (0..3)
        .map(|scan| e57_fixture::Scan {
            name: format!("scan-{scan}"),
            fields,
            acquisition_start: timed.then_some(1_400_000_000.0 + scan as f64 * 600.0),
            pose: Some(station(scan)),
            points: points / 3 + usize::from(scan < points % 3),
            point: &grid,
        })
        .collect();
    e57_fixture::write(path, None, &scans);
}
