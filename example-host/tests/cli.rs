//! The `fusion-host` binary as a real process, against the real dispatcher
//! served on 127.0.0.1:0 by this test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use fusion_host_server::{CallOptions, CallOutcome};
use serde_json::{Value, json};

mod common;
#[path = "support/e57.rs"]
mod e57_fixture;

use common::{BIN, Running, Server, server};

/// Starts the one-liner from /devices in `folder`, and waits for its
/// "✓ Connected" line. Returns the process and that line.
async fn one_liner(server: &Server, config: &Path, folder: &Path) -> (Running, String) {
    one_liner_with(server, config, folder, &[]).await
}

/// [`one_liner`] with more environment variables.
async fn one_liner_with(
    server: &Server,
    config: &Path,
    folder: &Path,
    env: &[(&str, &str)],
) -> (Running, String) {
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    // The line /devices shows: the same in every shell.
    let mut child = Command::new(BIN)
        .args(["--server", &server.url, "--code", &code.code])
        .envs(env.iter().copied())
        .env("FUSION_HOST_CONFIG_DIR", config)
        .current_dir(folder)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(Some(child));
    let line = tokio::task::spawn_blocking(move || BufReader::new(stdout).lines().next().unwrap().unwrap())
        .await
        .unwrap();
    (running, line)
}

/// Stops the process as a service manager would: SIGTERM on Unix. Windows
/// has no signal to send another console process from here, so there it is
/// terminated (its exit code is then not the graceful one).
fn stop(running: Running) -> (Option<i32>, String) {
    let child = running.take();
    #[cfg(unix)]
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    #[cfg(not(unix))]
    let child = {
        let mut child = child;
        let _ = child.kill();
        child
    };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_liner_pairs_connects_and_answers() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("site-notes.txt"), "north wall").unwrap();
    let (child, line) = one_liner(&server, config.path(), folder.path()).await;
    let canonical = dunce_path(folder.path());
    assert!(
        line.starts_with(&format!("✓ Connected to {} as device '", server.url)),
        "{line}"
    );
    assert!(
        line.contains("(owner alice) — answering calls for: ") && line.contains(&canonical),
        "{line}"
    );

    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert!(devices[0].online);
    assert_eq!(devices[0].manifest.as_ref().unwrap().tools.len(), 21);
    let out = server
        .dispatcher
        .call(
            "alice",
            &devices[0].device.id,
            "grep",
            json!({ "pattern": "north" }),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let CallOutcome::Output(out) = out else { panic!() };
    assert_eq!(out.output["matches"][0]["path"], "site-notes.txt");

    let credentials_path = config.path().join("credentials.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = serde_json::from_str::<Value>(&std::fs::read_to_string(&credentials_path).unwrap()).unwrap()
        ["token"]
        .as_str()
        .unwrap()
        .to_string();

    #[cfg(target_os = "linux")]
    assert_listens_on_nothing(child.id());

    let (code, stderr) = stop(child);
    #[cfg(unix)]
    assert_eq!(code, Some(0), "{stderr}");
    let _ = code;
    assert!(
        !stderr.contains(&token) && !line.contains(&token),
        "the token never reaches output"
    );
}

/// The path as the device prints it: canonical, in the form a user reads
/// (`C:\...`, not `\\?\C:\...`, on Windows).
/// `fusion-host status --json` for the profile in `config`.
fn status_json(config: &Path) -> Value {
    let out = Command::new(BIN)
        .args(["status", "--json", "--config-dir"])
        .arg(config)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `fusion-host doctor` for `folder` with the profile in `config`.
fn doctor(folder: &Path, config: &Path, json: bool) -> std::process::Output {
    let mut command = Command::new(BIN);
    command.arg("doctor");
    if json {
        command.arg("--json");
    }
    command
        .arg("--root")
        .arg(folder)
        .arg("--config-dir")
        .arg(config)
        .output()
        .unwrap()
}

fn dunce_path(p: &Path) -> String {
    dunce::canonicalize(p).unwrap().display().to_string()
}

/// The process holds sockets (its connection to the server) but none of them listens.
#[cfg(target_os = "linux")]
fn assert_listens_on_nothing(pid: u32) {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        if let Ok(target) = std::fs::read_link(fd.unwrap().path())
            && let Some(inode) = target
                .to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    assert!(!inodes.is_empty(), "the device should hold its connection");
    let mut states = Vec::new();
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() > 9 && inodes.contains(cols[9]) {
                states.push((table, cols[3].to_string()));
            }
        }
    }
    assert!(!states.is_empty(), "its sockets are found in /proc/net");
    // 0A is TCP_LISTEN; a UDP socket bound by the process would be a listener too.
    assert!(
        states.iter().all(|(t, s)| t.starts_with("tcp") && s != "0A"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_stops_the_process_with_the_repair_message() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (child, _) = one_liner(&server, config.path(), folder.path()).await;
    let device = server.dispatcher.devices("alice").await.unwrap().remove(0);
    server
        .dispatcher
        .revoke("alice", &device.device.id)
        .await
        .unwrap();
    let child = child.take();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("this device was revoked — pair it again with a new code from /devices"),
        "{stderr}"
    );

    // `status` no longer calls it paired.
    let out = Command::new(BIN)
        .args(["status", "--config-dir"])
        .arg(config.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("paired:    no") && text.contains("revoked"),
        "{text}"
    );
    let status = status_json(config.path());
    assert_eq!(
        (status["enrolled"].clone(), status["revoked"].clone()),
        (json!(false), json!(true))
    );

    // The one-liner with a fresh code pairs again and connects.
    let (child, line) = one_liner(&server, config.path(), folder.path()).await;
    assert!(line.starts_with("✓ Connected to"), "{line}");
    let devices = server.dispatcher.devices("alice").await.unwrap();
    assert_eq!(devices.len(), 2);
    assert!(
        devices
            .iter()
            .any(|d| d.online && d.device.id != device.device.id)
    );
    let (_, stderr) = stop(child);
    assert!(stderr.contains("pairing again"), "{stderr}");
}

/// A stand-in `IfcConvert` that marks `TARGET.started`, takes `seconds`,
/// then writes its output; and the `PATH` that finds it first.
#[cfg(unix)]
fn slow_ifc_convert(seconds: u32) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let program = bin.path().join("IfcConvert");
    std::fs::write(
        &program,
        format!("#!/bin/sh\ntouch \"$2.started\"\nsleep {seconds}\necho converted > \"$2\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (bin, path)
}

/// Proposes converting `model.ifc` in `folder` on alice's device, approves
/// it in the background, and returns once the program is running.
#[cfg(unix)]
async fn conversion_running(
    server: &Server,
    folder: &Path,
) -> tokio::task::JoinHandle<fusion_host_server::Result<fusion_host_server::ProposalRecord>> {
    std::fs::write(folder.join("model.ifc"), "ISO-10303-21;").unwrap();
    let device_id = server.dispatcher.devices("alice").await.unwrap()[0]
        .device
        .id
        .clone();
    let outcome = server
        .dispatcher
        .call(
            "alice",
            &device_id,
            "convert_ifc",
            json!({ "source": "model.ifc", "target": "model.obj" }),
            CallOptions::default(),
        )
        .await
        .unwrap();
    let CallOutcome::Proposal(proposal) = outcome else {
        panic!("convert_ifc is planned first")
    };
    let approve = {
        let dispatcher = server.dispatcher.clone();
        tokio::spawn(async move { dispatcher.approve("alice", &proposal.id).await })
    };
    let started = folder.join("model.obj.started");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "the program never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    approve
}

/// A service manager's stop (SIGTERM) while a change is being applied: the
/// device takes no new calls, finishes the one in progress, reports it, and
/// exits 0. The change is a real shell-out that takes two seconds.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_progress_finish() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (_bin, path) = slow_ifc_convert(2);
    let (child, _) = one_liner_with(&server, config.path(), folder.path(), &[("PATH", &path)]).await;
    let approve = conversion_running(&server, folder.path()).await;
    let (code, stderr) = tokio::task::spawn_blocking(move || stop(child)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("finishing the call in progress"), "{stderr}");
    let applied = approve.await.unwrap().unwrap();
    assert_eq!(applied.status, fusion_host_server::ProposalStatus::Applied);
    assert_eq!(
        std::fs::read_to_string(folder.path().join("model.obj")).unwrap(),
        "converted\n"
    );
}

/// A second stop while the first waits for a call: the device stops at
/// once, says a call was cut short, and exits 130 (as after Ctrl-C twice).
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stop_signal_stops_at_once_with_130() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (_bin, path) = slow_ifc_convert(60);
    let (child, _) = one_liner_with(&server, config.path(), folder.path(), &[("PATH", &path)]).await;
    let _approve = conversion_running(&server, folder.path()).await;
    let mut child = child.take();
    let term = |pid: u32| {
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap()
    };
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push(line);
        }
        seen
    });
    term(pid);
    // The first stop waits (a sixty-second call runs); then the second.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first stop waits for the call"
    );
    term(pid);
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "it stopped at once"
    );
    let said = lines.join().unwrap().join("\n");
    assert_eq!(status.code(), Some(130), "{said}");
    assert!(
        said.contains("stopped at once; a running call was cut short"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_address_without_a_scheme_says_what_to_type() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let bare = server.url.trim_start_matches("http://").to_string();
    let out = Command::new(BIN)
        .args(["enroll", "--server", &bare, "--code", "BCDF-GHJK", "--config-dir"])
        .arg(config.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http://{bare}")) && !stderr.contains("relative URL"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_code_is_explained() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "enroll",
            "--server",
            &server.url,
            "--code",
            "BCDF-GHJK",
            "--config-dir",
        ])
        .arg(config.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pairing code is not known"), "{stderr}");
    assert!(!config.path().join("credentials.json").exists());
}

#[test]
fn call_runs_a_tool_locally_and_applies_only_when_asked() {
    let folder = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--root")
            .arg(folder.path())
            .arg("--config-dir")
            .arg(config.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null),
        )
    };
    let input = r#"{"path":"plan.txt","content":"v1\n"}"#;
    let (code, plan) = run(&["call", "write_file", "--input", input]);
    assert_eq!(code, Some(0));
    assert!(plan["diff"].as_str().unwrap().contains("+v1"), "{plan}");
    assert!(!folder.path().join("plan.txt").exists());
    let (code, out) = run(&["call", "write_file", "--input", input, "--apply"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        std::fs::read_to_string(folder.path().join("plan.txt")).unwrap(),
        "v1\n"
    );
    let (code, err) = run(&["call", "read_file", "--input", r#"{"path":"../../etc/passwd"}"#]);
    assert_eq!(code, Some(1));
    assert_eq!(err["code"], "outside_scope");
    // With --json too, a failed call prints one JSON document: the error.
    let (code, err) = run(&[
        "--json",
        "call",
        "read_file",
        "--input",
        r#"{"path":"../../etc/passwd"}"#,
    ]);
    assert_eq!(
        (code, err["code"].as_str()),
        (Some(1), Some("outside_scope")),
        "{err}"
    );

    let out = Command::new(BIN).args(["tools", "--json"]).output().unwrap();
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["tools"].as_array().unwrap().len(), 19);
}

#[test]
fn convert_ifc_names_the_missing_program() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("model.ifc"), "ISO-10303-21;").unwrap();
    let out = Command::new(BIN)
        .args([
            "call",
            "convert_ifc",
            "--apply",
            "--input",
            r#"{"source":"model.ifc","target":"model.obj"}"#,
            "--root",
        ])
        .arg(folder.path())
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["code"], "program_not_found");
    assert!(err["message"].as_str().unwrap().contains("IfcConvert"), "{err}");
}

#[test]
fn status_and_logout_speak_plainly() {
    let config = tempfile::tempdir().unwrap();
    let status = status_json(config.path());
    assert_eq!(status["enrolled"], false);
    assert_eq!(status["running"], false);
    let out = Command::new(BIN)
        .args(["logout", "--config-dir"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("not paired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_each_check() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (child, _) = one_liner(&server, config.path(), folder.path()).await;
    let (_, _) = stop(child);

    // No config.toml: said plainly, neither passed nor failed.
    let out = doctor(folder.path(), config.path(), false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("✓ config"), "{text}");
    assert!(
        text.contains("· config") && text.contains("does not exist"),
        "{text}"
    );
    std::fs::write(config.path().join("config.toml"), "name = \"survey-laptop\"\n").unwrap();

    let out = doctor(folder.path(), config.path(), true);
    let checks: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for expected in [
        "config",
        "folder",
        "paired",
        "credentials file",
        "dns",
        "tcp",
        "tls",
        "clock",
        "token",
    ] {
        assert!(names.contains(&expected), "missing {expected} in {names:?}");
    }
    assert!(
        !names.contains(&"config folder"),
        "the configuration is not in a shared folder"
    );
    assert!(
        checks.as_array().unwrap().iter().all(|c| c["ok"] == true),
        "{checks:#}"
    );
    assert_eq!(out.status.code(), Some(0));

    // After revocation the token check fails and says what to do.
    let device = server.dispatcher.devices("alice").await.unwrap().remove(0);
    server
        .dispatcher
        .revoke("alice", &device.device.id)
        .await
        .unwrap();
    let out = doctor(folder.path(), config.path(), false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("✗ token") && text.contains("pair this device again"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(1));
}

/// `fusion-host convert e57 ARGS… FOLDER`, which must succeed; its stdout.
fn converted(folder: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["convert", "e57"])
        .args(args)
        .arg(folder)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// On a terminal, a tool that takes a while shows how far it has come;
/// piped, stdout is the one JSON document and stderr says nothing.
#[test]
fn call_shows_progress_on_a_terminal_only() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::File::create(folder.path().join("big.bin"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let args = format!(
        "{BIN} call hash_file --input '{{\"path\": \"big.bin\"}}' --root '{}'",
        folder.path().display()
    );
    // `script` gives the command a terminal, as a person's shell would.
    match Command::new("script").args(["-qec", &args, "/dev/null"]).output() {
        Ok(out) if out.status.success() => {
            let shown = String::from_utf8_lossy(&out.stdout);
            assert!(shown.contains("bytes hashed"), "{shown}");
            assert!(shown.contains("\"digest\""), "{shown}");
        }
        Ok(out) => panic!("{}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("skipped: no `script` to run the call on a terminal ({e})"),
    }
    let out = Command::new(BIN)
        .args(["call", "hash_file", "--input", r#"{"path": "big.bin"}"#, "--root"])
        .arg(folder.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["size"], 64 << 20);
}

#[test]
fn convert_e57_to_las_on_the_command_line() {
    let folder = tempfile::tempdir().unwrap();
    write_e57(&folder.path().join("scan.e57"), 300);
    assert!(converted(folder.path(), &["--to", "las"]).contains("300 points"));
    assert!(folder.path().join("scan.las").exists());
    assert!(converted(folder.path(), &["--to", "laz", "--merge", "site"]).contains("into 1 LAZ file(s)"));
    assert!(
        folder.path().join("site.laz").exists(),
        "a bare --merge name gets .laz"
    );
    // Running again does not overwrite the LAS file.
    let out = Command::new(BIN)
        .args(["convert", "e57", "--to", "las"])
        .arg(folder.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));

    // COPC, a bare --merge name gets .copc.laz.
    assert!(
        converted(folder.path(), &["--to", "copc", "--merge", "site"])
            .contains("into 1 COPC file(s), 300 points")
    );
    assert!(folder.path().join("site.copc.laz").exists());

    // Every output is checked before any is written: with b.copc.laz taken,
    // a.copc.laz is not written either.
    write_e57(&folder.path().join("b.e57"), 10);
    std::fs::write(folder.path().join("b.copc.laz"), "taken").unwrap();
    std::fs::rename(folder.path().join("scan.e57"), folder.path().join("a.e57")).unwrap();
    let out = Command::new(BIN)
        .args(["convert", "e57", "--to", "copc"])
        .arg(folder.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("b.copc.laz already exists"));
    assert!(!folder.path().join("a.copc.laz").exists(), "nothing written");
}

/// `--thin-m` keeps one point per cube: 300 points at (i, −i), in cubes of
/// 10 m, fill 60 (each run of ten along x straddles two cubes along y: the
/// first lies on a cube's edge).
#[test]
fn convert_thins_on_the_command_line() {
    let folder = tempfile::tempdir().unwrap();
    write_e57(&folder.path().join("scan.e57"), 300);
    let out = converted(
        folder.path(),
        &["--to", "laz", "--merge", "thin", "--thin-m", "10"],
    );
    assert!(out.contains("into 1 LAZ file(s), 60 points"), "{out}");
    let out = Command::new(BIN)
        .args(["convert", "e57", "--to", "las", "--thin-m", "0"])
        .arg(folder.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("thin_m"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One scan of `n` points, coordinates only.
fn write_e57(path: &Path, n: usize) {
    let point = |i: usize| e57_fixture::Point {
        xyz: [i as f64, -(i as f64), 0.5],
        ..Default::default()
    };
    let scan = e57_fixture::Scan {
        name: "pc".into(),
        fields: e57_fixture::Fields::default(),
        acquisition_start: None,
        pose: None,
        points: n,
        point: &point,
    };
    e57_fixture::write(path, None, &[scan]);
}

/// `fusion-host rename` with `args`, in `folder`.
fn rename_cmd(folder: &Path, config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("rename")
        .args(args)
        .arg("--root")
        .arg(folder)
        .arg("--config-dir")
        .arg(config);
    cmd
}

#[test]
fn rename_prints_the_plan_and_applies_only_when_asked() {
    let folder = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir(folder.path().join("scans")).unwrap();
    for name in ["Scan_0001.e57", "Scan_0002.e57", "notes.txt"] {
        std::fs::write(folder.path().join("scans").join(name), name).unwrap();
    }
    let template = ["scans/*.e57", "--to", "north_{n:03}.{ext}"];
    let out = rename_cmd(folder.path(), config.path(), &template)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("scans/Scan_0002.e57  →  scans/north_002.e57"),
        "{text}"
    );
    assert!(text.contains("Run again with --apply"), "{text}");
    assert!(
        folder.path().join("scans/Scan_0001.e57").exists(),
        "a plan renames nothing"
    );

    // A problem stops the batch and is shown with its code (a folder is not
    // matched, so it is not renamed away).
    std::fs::create_dir(folder.path().join("scans/north_001.e57")).unwrap();
    let out = rename_cmd(folder.path(), config.path(), &template)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("target_exists"), "{text}");
    std::fs::remove_dir(folder.path().join("scans/north_001.e57")).unwrap();

    let out = rename_cmd(
        folder.path(),
        config.path(),
        &[&template[..], &["--apply", "--json"]].concat(),
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["renamed"], 2);
    let mut names: Vec<_> = std::fs::read_dir(folder.path().join("scans"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["north_001.e57", "north_002.e57", "notes.txt"]);

    let out = rename_cmd(folder.path(), config.path(), &["scans/*", "--to", "{nope}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown token `{nope}`"));
}

/// Every file under `folder/scans` by name, with the SHA-256 of its content;
/// anything else under `folder` (a journal, a temporary name) shows too.
#[cfg(unix)]
fn tree_hashes(folder: &Path) -> Vec<(String, String)> {
    use sha2::Digest as _;
    let mut out = Vec::new();
    for dir in [folder.to_path_buf(), folder.join("scans")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                let hash = sha2::Sha256::digest(std::fs::read(entry.path()).unwrap());
                let rel = entry.path().strip_prefix(folder).unwrap().display().to_string();
                out.push((rel, format!("{hash:x}")));
            }
        }
    }
    out.sort();
    out
}

/// kill -9 of the process at points spread over a 2,000-file apply: after the
/// next start, the folder holds all old names or all new ones, every file's
/// content intact, and no journal.
#[cfg(unix)]
#[test]
fn kill_9_during_a_rename_leaves_all_old_or_all_new_names() {
    const FILES: usize = 2000;
    let config = tempfile::tempdir().unwrap();
    let fill = |folder: &Path| {
        std::fs::create_dir_all(folder.join("scans")).unwrap();
        for i in 1..=FILES {
            std::fs::write(
                folder.join(format!("scans/Scan_{i:04}.e57")),
                format!("scan {i}\n"),
            )
            .unwrap();
        }
    };
    let template = ["scans/*.e57", "--to", "north_{n:04}.{ext}"];
    let apply = [&template[..], &["--apply"]].concat();
    // The two end states, and how long planning and applying take here.
    let probe = tempfile::tempdir().unwrap();
    fill(probe.path());
    let old = tree_hashes(probe.path());
    let started = std::time::Instant::now();
    let out = rename_cmd(probe.path(), config.path(), &template)
        .output()
        .unwrap();
    assert!(out.status.success());
    let plan_time = started.elapsed();
    let started = std::time::Instant::now();
    let out = rename_cmd(probe.path(), config.path(), &apply).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let apply_time = started.elapsed().max(plan_time);
    let new = tree_hashes(probe.path());
    assert_eq!(new.len(), FILES);
    assert!(new[0].0.starts_with("scans/north_0001.e57"), "{:?}", new[0]);

    let (mut rolled_back, mut finished, mut untouched, mut done) = (0, 0, 0, 0);
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..40 {
        let folder = tempfile::tempdir().unwrap();
        fill(folder.path());
        // A point in [plan time, apply time], jittered.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let span = apply_time.saturating_sub(plan_time).as_micros() as u64 + 1;
        let at = plan_time + std::time::Duration::from_micros(seed % span);
        let mut child = rename_cmd(folder.path(), config.path(), &apply)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let status = child.wait().unwrap();
        // The next start: any local command recovers first.
        let out = Command::new(BIN)
            .args(["call", "stat", "--input", r#"{"path":"scans"}"#, "--root"])
            .arg(folder.path())
            .arg("--config-dir")
            .arg(config.path())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        let now = tree_hashes(folder.path());
        let now_old = now == old;
        assert!(
            now_old || now == new,
            "round {round} (killed after {at:?}, {status}): a mixed folder: {:?}",
            now.iter()
                .filter(|(p, _)| !p.starts_with("scans/Scan_") && !p.starts_with("scans/north_"))
                .collect::<Vec<_>>()
        );
        match (said.contains("was rolled back"), said.contains("had finished")) {
            (true, _) => rolled_back += 1,
            (_, true) => finished += 1,
            _ if now_old => untouched += 1,
            _ => done += 1,
        }
        if round >= 9 && rolled_back + finished >= 2 {
            break;
        }
    }
    eprintln!(
        "kill -9 rounds: {rolled_back} rolled back, {finished} finished on restart, {untouched} killed before the \
         first rename, {done} after the last (plan {plan_time:?}, apply {apply_time:?})"
    );
    assert!(
        rolled_back + finished >= 1,
        "no kill landed inside an apply; the timing probe is off"
    );
}

/// Ctrl-C during a conversion removes the half-written file: the output is
/// whole or absent, and no `.…fusion-partial-…` file is left.
#[cfg(unix)]
#[test]
fn an_interrupted_conversion_leaves_nothing_behind() {
    let folder = tempfile::tempdir().unwrap();
    write_e57(&folder.path().join("big.e57"), 3_000_000);
    let child = Command::new(BIN)
        .args(["convert", "e57", "--to", "las"])
        .arg(folder.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let names: Vec<String> = std::fs::read_dir(folder.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("fusion-partial")),
        "a partial file was left: {names:?}"
    );
    if out.status.success() {
        eprintln!("the conversion finished before the interrupt; nothing to check beyond that");
    } else {
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("the file being written is removed"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !folder.path().join("big.las").exists(),
            "no half file at the final name"
        );
    }
}

/// A rename journal planted in a shared folder — a cloned repository that
/// ships one, aimed at `.git/hooks` — moves nothing, whichever command starts
/// the device (`call`, `mcp`, the one-liner's `run`); each says it ignored it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_rename_journal_moves_nothing_at_any_start() {
    let server = server().await;
    let folder = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let root = folder.path();
    std::fs::create_dir_all(root.join("tools")).unwrap();
    std::fs::create_dir_all(root.join(".git/hooks")).unwrap();
    std::fs::write(root.join("tools/fmt.sh"), "#!/bin/sh\necho pwned\n").unwrap();
    std::fs::write(root.join(".fusion-rename-0000abcd-1"), "export EVIL=1\n").unwrap();
    let journal = json!({ "version": 1, "batch": "0000abcd", "items": [
        { "from": ".git/hooks/post-checkout", "to": "x", "temp": "tools/fmt.sh", "id": "0:0" },
        { "from": ".bashrc", "to": "y", "temp": ".fusion-rename-0000abcd-1", "id": "0:0" },
        { "from": "../outside", "to": "z", "temp": "tools/fmt.sh", "id": "0:0" },
    ] });
    std::fs::write(root.join(".fusion-rename.journal"), journal.to_string()).unwrap();
    let untouched = || {
        assert!(root.join("tools/fmt.sh").exists());
        assert!(root.join(".fusion-rename-0000abcd-1").exists());
        assert!(!root.join(".git/hooks/post-checkout").exists());
        assert!(!root.join(".bashrc").exists());
        assert!(root.join(".fusion-rename.journal").exists(), "left alone");
    };
    let said_ignored = |stderr: &str, how: &str| {
        assert!(
            stderr.contains("ignored") && stderr.contains("no file was moved"),
            "{how}: {stderr}"
        );
    };

    let out = Command::new(BIN)
        .args(["call", "stat", "--input", r#"{"path":"tools"}"#, "--root"])
        .arg(root)
        .arg("--config-dir")
        .arg(config.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    said_ignored(&String::from_utf8_lossy(&out.stderr), "call");
    untouched();

    // stdin at its end: the MCP session closes at once, after the start.
    let out = Command::new(BIN)
        .args(["mcp", "--root"])
        .arg(root)
        .arg("--config-dir")
        .arg(config.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    said_ignored(&String::from_utf8_lossy(&out.stderr), "mcp");
    untouched();

    let (child, line) = one_liner(&server, config.path(), root).await;
    assert!(line.starts_with("✓ Connected"), "{line}");
    let (_, stderr) = stop(child);
    said_ignored(&stderr, "run");
    untouched();

    let out = doctor(root, config.path(), false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rename journal") && text.contains("ignored"),
        "{text}"
    );
    untouched();
}

/// A configuration folder inside a shared folder (`--root ~`) is named by
/// `doctor`: the tools could rewrite the device's token and journals there.
#[test]
fn doctor_names_a_configuration_inside_a_shared_folder() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join(".config/fusion-host");
    std::fs::create_dir_all(&config).unwrap();
    let out = doctor(home.path(), &config, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("✗ config folder") && text.contains("--config-dir"),
        "{text}"
    );
}

#[test]
fn rename_help_lists_every_token_on_one_line() {
    let out = Command::new(BIN).args(["rename", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let tokens = help
        .lines()
        .find(|l| l.starts_with("Tokens:"))
        .expect("a Tokens line");
    for token in [
        "{name}",
        "{parent}",
        "{n:1} a counter",
        "{n:03:100}",
        "{mtime",
        "{1}",
    ] {
        assert!(tokens.contains(token), "{token} in {tokens}");
    }
}

#[test]
fn a_whole_disk_is_never_the_folder_shared_by_default() {
    let config = tempfile::tempdir().unwrap();
    let root = std::env::current_dir()
        .unwrap()
        .ancestors()
        .last()
        .unwrap()
        .to_path_buf();
    let out = Command::new(BIN)
        .args(["call", "stat", "--input", r#"{"path":"."}"#, "--config-dir"])
        .arg(config.path())
        .current_dir(&root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("is a whole disk, which is never shared by default") && said.contains("--root"),
        "{said}"
    );
}

/// A folder holding a stand-in `systemctl` that notes each command line it
/// is given in `asked` beside it, and a PATH that finds it first.
#[cfg(target_os = "linux")]
fn stand_in_systemctl() -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let systemctl = bin.path().join("systemctl");
    std::fs::write(
        &systemctl,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n",
            bin.path().join("asked").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&systemctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (bin, path)
}

/// The pairing line with `--service`: the device is paired, the folder the
/// line ran in is named in `config.toml` (first, so a table already there
/// keeps its keys), the user's systemd unit is written and enabled, and the
/// command returns instead of running in the terminal.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pairing_line_with_service_installs_it_for_this_folder() {
    let server = server().await;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.toml"), "[updates]\nautomatic = false\n").unwrap();
    let folder = tempfile::tempdir().unwrap();
    let (bin, path) = stand_in_systemctl();
    let asked = bin.path().join("asked");
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["--server", &server.url, "--code", &code.code, "--service"])
        .env("FUSION_HOST_CONFIG_DIR", &config)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg"))
        .env("PATH", path)
        .current_dir(folder.path())
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(server.dispatcher.devices("alice").await.unwrap().len(), 1);
    let here = folder.path().canonicalize().unwrap();
    assert_eq!(
        std::fs::read_to_string(config.join("config.toml")).unwrap(),
        format!("roots = ['{}']\n[updates]\nautomatic = false\n", here.display())
    );
    let unit = std::fs::read_to_string(home.path().join("xdg/systemd/user/fusion-host.service")).unwrap();
    assert!(
        unit.contains(&format!("run --config-dir {}", config.display())),
        "{unit}"
    );
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap(),
        "--user daemon-reload\n--user enable --now fusion-host.service\n"
    );

    // With a command it means nothing, and says so.
    let out = Command::new(BIN).args(["--service", "status"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("service install"), "{said}");
}

/// What a device that updated itself under its Windows task leaves behind
/// (`service resume`) waits for that device to end, then starts the
/// service again; shown with systemd's commands, as Wine's Task Scheduler
/// has no `/Run`.
#[cfg(target_os = "linux")]
#[test]
fn the_helper_left_by_an_update_starts_the_service_once_the_device_has_ended() {
    use std::io::Write as _;
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let (bin, path) = stand_in_systemctl();
    let asked = bin.path().join("asked");
    let helper = |unit_installed: bool| {
        let xdg = home.path().join(if unit_installed { "xdg" } else { "none" });
        if unit_installed {
            std::fs::create_dir_all(xdg.join("systemd/user")).unwrap();
            std::fs::write(xdg.join("systemd/user/fusion-host.service"), "[Service]\n").unwrap();
        }
        Command::new(BIN)
            .args(["service", "resume"])
            .env("FUSION_HOST_CONFIG_DIR", &config)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", xdg)
            .env("PATH", &path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    let mut child = helper(true);
    // The device is still running: nothing is started, however long.
    child.stdin.as_mut().unwrap().write_all(b"x").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none());
    assert!(!asked.exists());
    // It ends (its end of the pipe closes with it).
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        std::fs::read_to_string(&asked).unwrap(),
        "--user restart fusion-host.service\n"
    );

    // With no service installed there is nothing to start; it says so.
    std::fs::remove_file(&asked).unwrap();
    let mut child = helper(false);
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("no service to start again"), "{said}");
    assert!(!asked.exists());
}

#[test]
fn a_service_needs_its_folders_named() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("credentials.json"), "{}").unwrap();
    let out = Command::new(BIN)
        .args(["service", "install", "--config-dir"])
        .arg(&config)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("xdg"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("a service has no current folder to share") && said.contains("roots = ["),
        "{said}"
    );
    assert!(
        !home.path().join("xdg").exists(),
        "nothing was written for the service"
    );
}

/// The device's token, and the pairing code it was paired with, appear in
/// nothing it prints, however verbose: pairing, connecting, answering a
/// call and stopping with `-vv` (debug logging of every crate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_the_code_never_reach_the_output_even_at_vv() {
    let server = server().await;
    let config = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let code = server.dispatcher.mint_pairing_code("alice").await.unwrap();
    let mut child = Command::new(BIN)
        .args(["-vv", "--server", &server.url, "--code", &code.code])
        .env("FUSION_HOST_CONFIG_DIR", config.path())
        .env_remove("RUST_LOG")
        .current_dir(folder.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        (first, lines)
    });
    let running = Running(Some(child));
    let (first, rest) = first.await.unwrap();
    let device_id = server.dispatcher.devices("alice").await.unwrap()[0]
        .device
        .id
        .clone();
    let out = server
        .dispatcher
        .call(
            "alice",
            &device_id,
            "list_directory",
            json!({}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert!(matches!(out, CallOutcome::Output(_)));
    let (_, stderr) = tokio::task::spawn_blocking(move || stop(running)).await.unwrap();
    let stdout: Vec<String> = rest.map_while(Result::ok).collect();
    let said = format!("{first}\n{}\n{stderr}", stdout.join("\n"));
    assert!(said.contains("DEBUG"), "-vv logs at debug: {said}");
    let credentials: Value =
        serde_json::from_slice(&std::fs::read(config.path().join("credentials.json")).unwrap()).unwrap();
    let token = credentials["token"].as_str().unwrap();
    assert!(token.len() > 20);
    assert!(!said.contains(token), "the token was printed");
    // Not a recognisable part of it either.
    assert!(
        !said.contains(&token[token.len() - 16..]),
        "part of the token was printed"
    );
    assert!(!said.contains(&code.code), "the pairing code was printed");
}
