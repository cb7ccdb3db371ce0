//! The commands that talk to the server: the default (enroll if needed, then
//! run), `enroll`, `run`, `status`, `logout`, `doctor`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use fusion_host::{ConnectionState, Credentials, Error as HostError, HostOptions, Http, enroll, run_host};
use serde_json::json;

use crate::Global;
use crate::fail::{Fail, exit};
use crate::settings::{self, ConfigFile};

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Set when the log goes to a file (`--log-file`): what `run` reports then
/// goes there too, since nobody reads the console.
static REPORT_TO_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sends `run`'s reports to the log file from now on.
pub(crate) fn report_to_log() {
    REPORT_TO_LOG.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// One line of what the device is doing, for the person at the terminal
/// (stderr) or, under a service, the log file.
fn report(line: &str) {
    if REPORT_TO_LOG.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!(target: "fusion_host", "{line}");
    } else {
        eprintln!("{line}");
    }
}

const REPAIRING: &str =
    "This device's pairing was revoked on the server; pairing again with FUSION_HOST_CODE…";

/// `fusion-host` with no subcommand: pair if not paired yet (with
/// `FUSION_HOST_CODE`), then run. Credentials the server refuses (the device
/// was revoked) are replaced by pairing with `FUSION_HOST_CODE` when one is
/// given, so the one-liner with a fresh code from /devices always works.
pub(crate) async fn default(global: &Global) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let code = std::env::var("FUSION_HOST_CODE")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let stored = Credentials::load(&dir)?;
    if stored.as_ref().is_none_or(|c| c.revoked) {
        let Some(code) = &code else {
            // No code: log in in the browser, when there is a server to ask.
            let config = ConfigFile::load(&dir)?;
            if resolve_server(None, &config).is_ok() {
                if stored.is_some() {
                    eprintln!("This device's pairing was revoked on the server; logging in again…");
                }
                login(global, &LoginArgs::default()).await?;
                return run(global, &[], None, false).await;
            }
            return Err(Fail {
                code: exit::USAGE,
                error: match stored {
                    Some(_) => HostError::Revoked.into(),
                    None => HostError::NotEnrolled.into(),
                },
            });
        };
        if stored.is_some() {
            eprintln!("{REPAIRING}");
        }
        do_enroll(global, None, code, None).await?;
        return run(global, &[], None, false).await;
    }
    match run(global, &[], None, false).await {
        Err(fail) if fail.code == exit::REPAIR => {
            let Some(code) = &code else {
                return Err(fail);
            };
            eprintln!("{REPAIRING}");
            do_enroll(global, None, code, None).await?;
            run(global, &[], None, false).await
        }
        other => other,
    }
}

/// `fusion-host enroll`.
pub(crate) async fn do_enroll(
    global: &Global,
    server: Option<&str>,
    code: &str,
    name: Option<&str>,
) -> Result<Credentials, Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let server = resolve_server(server, &config)?;
    let name = settings::device_name(name, &config);
    let http = Http::new(&server, ca_cert(global, &config).as_deref(), VERSION)?;
    let credentials = enroll(&http, &server, code, &name, VERSION).await?;
    let path = credentials.save(&dir)?;
    tracing::info!(path = %path.display(), "credentials saved");
    if global.json {
        println!(
            "{}",
            json!({ "event": "enrolled", "server": server, "device_id": credentials.device_id, "name": name, "owner": credentials.owner })
        );
    } else {
        eprintln!(
            "✓ Paired with {server} as device '{name}' (owner {})",
            credentials.owner_display()
        );
    }
    Ok(credentials)
}

/// The server to pair with: `--server`, else `FUSION_HOST_SERVER`, else the
/// configuration file's.
fn resolve_server(server: Option<&str>, config: &ConfigFile) -> Result<String, Fail> {
    server
        .map(str::to_string)
        .or_else(settings::server_from_env)
        .or_else(|| config.server.clone())
        .ok_or_else(|| Fail {
            code: exit::USAGE,
            error: anyhow::anyhow!(
                "no server: pass --server URL or set FUSION_HOST_SERVER (the address shown on /devices)"
            ),
        })
}

/// `fusion-host login`'s options.
#[derive(Debug, Default)]
pub(crate) struct LoginArgs<'a> {
    pub(crate) server: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    /// Also draw the link as a QR code, for approving from a phone.
    pub(crate) qr: bool,
}

/// `fusion-host login`: the device authorization flow. Prints the code and
/// the page to approve it on (Enter opens it in the browser), waits for the
/// approval, and saves the credentials.
pub(crate) async fn login(global: &Global, args: &LoginArgs<'_>) -> Result<Credentials, Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let server = resolve_server(args.server, &config)?;
    let name = settings::device_name(args.name, &config);
    let http = Http::new(&server, ca_cert(global, &config).as_deref(), VERSION)?;
    let request = fusion_host::request_login(&http, &name, VERSION).await?;
    if global.json {
        println!(
            "{}",
            json!({ "event": "login", "user_code": request.user_code, "verification_uri": request.verification_uri,
                    "verification_uri_complete": request.verification_uri_complete, "expires_in": request.expires_in.as_secs() })
        );
    } else {
        eprintln!("! Copy your one-time code: {}", request.user_code);
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
        if interactive {
            eprintln!(
                "Open {} to approve this device (or press Enter to open it in your browser)",
                request.verification_uri
            );
        } else {
            eprintln!("Open {} to approve this device", request.verification_uri);
        }
        if request.verification_uri_complete.is_some() {
            eprintln!("  or go straight to {}", request.link());
        }
        if args.qr {
            eprintln!("{}", qr_code(request.link()));
        }
        if interactive {
            open_on_enter(request.link().to_string());
        }
        eprintln!(
            "Waiting for approval (the code works for {} minutes; Ctrl-C to stop)…",
            request.expires_in.as_secs().div_ceil(60)
        );
    }
    let credentials = tokio::select! {
        result = fusion_host::wait_for_approval(&http, &server, &name, &request, tokio::time::sleep) => result?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Fail { code: exit::INTERRUPTED, error: anyhow::anyhow!("login stopped; nothing was saved") });
        }
    };
    let path = credentials.save(&dir)?;
    tracing::info!(path = %path.display(), "credentials saved");
    if global.json {
        println!(
            "{}",
            json!({ "event": "enrolled", "server": server, "device_id": credentials.device_id, "name": name,
                    "owner": credentials.owner, "owner_label": credentials.owner_label })
        );
    } else {
        eprintln!(
            "✓ Approved: paired with {server} as device '{name}' (owner {})",
            credentials.owner_display()
        );
    }
    Ok(credentials)
}

/// Opens `link` in the browser when the person presses Enter. Reading
/// stdin blocks, so it runs on its own thread; the process ends without
/// waiting for it.
fn open_on_enter(link: String) {
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0)
            && let Err(e) = webbrowser::open(&link)
        {
            eprintln!("could not open a browser here ({e}); open the link on any computer or phone");
        }
    });
}

/// `link` as a QR code drawn with half-block characters.
fn qr_code(link: &str) -> String {
    match qrcode::QrCode::new(link.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

fn ca_cert(global: &Global, config: &ConfigFile) -> Option<PathBuf> {
    global.ca_cert.clone().or_else(|| config.ca_cert.clone())
}

/// `fusion-host run`: hold the stream until Ctrl-C/SIGTERM or a fatal error;
/// with `once`, stop as soon as the device is connected (after `login`).
pub(crate) async fn run(
    global: &Global,
    roots: &[String],
    concurrency: Option<usize>,
    once: bool,
) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let credentials = Credentials::load(&dir)?.ok_or(HostError::NotEnrolled)?;
    if credentials.revoked {
        return Err(HostError::Revoked.into());
    }
    let scope = settings::scope(roots, &config, &dir).map_err(|error| Fail {
        code: exit::USAGE,
        error,
    })?;
    let root_list: Vec<String> = scope
        .root_infos()
        .iter()
        .map(|r| {
            format!(
                "{}{}",
                r.path,
                if r.access == fusion_tools::Access::ReadOnly {
                    " (read-only)"
                } else {
                    ""
                }
            )
        })
        .collect();
    let http = Http::new(&credentials.server, ca_cert(global, &config).as_deref(), VERSION)?;
    let mut options = HostOptions::new(http, credentials.clone(), crate::toolbox(), scope, VERSION);
    if let Some(n) = concurrency {
        options.concurrency = n;
    }
    options.applied_journal = Some(dir.join(fusion_host::APPLIED_JOURNAL_FILE));
    // Recovered rename batches are logged as warnings by run_host.
    let host = run_host(options);
    let mut state = host.state();
    let state_file = StateFile::new(&dir);
    let watcher = {
        let (json, credentials, root_list) = (global.json, credentials.clone(), root_list.clone());
        let stop_when_connected = once.then(|| host.stopper());
        tokio::spawn(async move {
            let mut announced = false;
            while state.changed().await.is_ok() {
                let current = state.borrow_and_update().clone();
                state_file.write(&current);
                match current {
                    ConnectionState::Connected { session_id } => {
                        if json {
                            println!(
                                "{}",
                                json!({ "event": "connected", "server": credentials.server, "device_id": credentials.device_id, "name": credentials.name, "owner": credentials.owner, "roots": root_list, "session_id": session_id })
                            );
                        } else if !announced {
                            let line = format!(
                                "✓ Connected to {} as device '{}' (owner {}) — answering calls for: {}",
                                credentials.server,
                                credentials.name,
                                credentials.owner_display(),
                                root_list.join(", ")
                            );
                            if REPORT_TO_LOG.load(std::sync::atomic::Ordering::Relaxed) {
                                report(&line);
                            } else {
                                println!("{line}");
                            }
                        } else {
                            report("✓ reconnected");
                        }
                        announced = true;
                        if let Some(stopper) = &stop_when_connected {
                            stopper.shutdown();
                        }
                    }
                    ConnectionState::Retrying { reason, delay } => {
                        if json {
                            println!(
                                "{}",
                                json!({ "event": "retrying", "reason": reason, "delay_ms": delay.as_millis() as u64 })
                            );
                        } else {
                            report(&format!(
                                "… connection lost ({reason}); retrying in {:.1}s",
                                delay.as_secs_f32()
                            ));
                        }
                    }
                    _ => {}
                }
            }
        })
    };
    let stopper = host.stopper();
    let (stop, join) = (shutdown_signal(), host.join());
    tokio::pin!(stop, join);
    let joined = tokio::select! {
        () = &mut stop => {
            // The first signal is graceful: no new calls, the running ones get
            // the shutdown grace. A second one stops at once.
            report("stopping… (finishing the call in progress; signal again to stop now)");
            stopper.shutdown();
            tokio::select! {
                result = &mut join => result,
                () = shutdown_signal() => {
                    report("stopped at once; a running call was cut short");
                    StateFile::new(&dir).remove();
                    std::process::exit(i32::from(exit::INTERRUPTED));
                }
            }
        }
        result = &mut join => result,
    };
    watcher.abort();
    StateFile::new(&dir).remove();
    match joined {
        Ok(stopped) => {
            if stopped.cancelled_calls > 0 {
                report(&format!(
                    "stopped; {} running call(s) were cancelled",
                    stopped.cancelled_calls
                ));
            }
            Ok(())
        }
        Err(e) => {
            if matches!(e, HostError::Revoked) {
                // Remember it, so `status` does not call a revoked device paired.
                let revoked = Credentials {
                    revoked: true,
                    ..credentials
                };
                if let Err(e) = revoked.save(&dir) {
                    tracing::warn!(error = %e, "could not mark the credentials revoked");
                }
                crate::service::disable_task_after_revoke(&dir);
            }
            Err(e.into())
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows;
        // Closing the console window, logging off and shutting down give a
        // console program a few seconds: stop as on Ctrl-C.
        let (Ok(mut brk), Ok(mut close), Ok(mut logoff), Ok(mut shutdown)) = (
            windows::ctrl_break(),
            windows::ctrl_close(),
            windows::ctrl_logoff(),
            windows::ctrl_shutdown(),
        ) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = brk.recv() => {}
            _ = close.recv() => {}
            _ = logoff.recv() => {}
            _ = shutdown.recv() => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `run.json` in the configuration directory: what a running device is doing,
/// for `status`.
struct StateFile(PathBuf);

impl StateFile {
    fn new(dir: &Path) -> Self {
        StateFile(dir.join("run.json"))
    }

    fn write(&self, state: &ConnectionState) {
        let (connected, detail) = match state {
            ConnectionState::Connected { session_id } => (true, session_id.clone()),
            ConnectionState::Retrying { reason, .. } => (false, reason.clone()),
            other => (false, format!("{other:?}")),
        };
        let since = humantime_now();
        let body =
            json!({ "pid": std::process::id(), "connected": connected, "detail": detail, "since": since });
        let _ = std::fs::write(&self.0, body.to_string());
    }

    fn remove(&self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn humantime_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}")
}

/// `fusion-host status`.
pub(crate) fn status(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let credentials = Credentials::load(&dir)?;
    let scope = settings::scope(roots, &config, &dir).ok();
    let run: Option<serde_json::Value> = std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let running = run
        .as_ref()
        .and_then(|r| r["pid"].as_u64())
        .is_some_and(process_alive);
    let connected = running && run.as_ref().is_some_and(|r| r["connected"] == true);
    let roots: Vec<String> = scope
        .map(|s| s.root_infos().into_iter().map(|r| r.path).collect())
        .unwrap_or_default();
    if global.json {
        println!(
            "{}",
            json!({
                "enrolled": credentials.as_ref().is_some_and(|c| !c.revoked),
                "revoked": credentials.as_ref().is_some_and(|c| c.revoked),
                "server": credentials.as_ref().map(|c| &c.server),
                "device_id": credentials.as_ref().map(|c| &c.device_id),
                "name": credentials.as_ref().map(|c| &c.name),
                "owner": credentials.as_ref().map(|c| &c.owner),
                "roots": roots,
                "running": running,
                "connected": connected,
                "config_dir": dir,
            })
        );
        return Ok(());
    }
    match &credentials {
        Some(c) if c.revoked => {
            println!(
                "paired:    no — device '{}' ({}) was revoked on the server; pair it again: \
                 FUSION_HOST_CODE=<new code from /devices> fusion-host",
                c.name, c.device_id
            );
            println!("server:    {}", c.server);
        }
        Some(c) => {
            println!(
                "paired:    yes — device '{}' ({}) of {}",
                c.name, c.device_id, c.owner
            );
            println!("server:    {}", c.server);
        }
        None => println!("paired:    no — run `fusion-host enroll --server URL --code CODE`"),
    }
    println!(
        "folders:   {}",
        if roots.is_empty() {
            "(none configured)".into()
        } else {
            roots.join(", ")
        }
    );
    println!(
        "running:   {}",
        match (running, connected) {
            (true, true) => "yes, connected",
            (true, false) => "yes, not connected (retrying)",
            _ => "no — start it with `fusion-host run`",
        }
    );
    println!("config:    {}", dir.display());
    Ok(())
}

fn process_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `fusion-host logout`.
pub(crate) fn logout(global: &Global) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    if Credentials::remove(&dir)? {
        println!(
            "✓ Forgot this device's credentials. Revoke it on /devices too, if the server should forget it."
        );
    } else {
        println!("This device was not paired; nothing to forget.");
    }
    Ok(())
}

/// One `doctor` line.
#[derive(serde::Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    /// Informational: neither passed nor failed (an optional file that is absent).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    info: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// `fusion-host doctor`: each check a line with ✓/✗ and the fix.
pub(crate) async fn doctor(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let mut checks = Vec::new();
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config_path = dir.join(settings::CONFIG_FILE);
    if !config_path.exists() {
        // Optional: not a failure, but no ✓ for a file that is not there.
        checks.push(Check {
            check: "config",
            ok: true,
            info: true,
            detail: format!(
                "none ({} does not exist; flags and environment apply)",
                config_path.display()
            ),
            fix: None,
        });
    }
    let mut add = |check, ok, detail: String, fix: Option<&str>| {
        checks.push(Check {
            check,
            ok,
            info: false,
            detail,
            fix: fix.map(str::to_string),
        });
    };
    let config = match ConfigFile::load(&dir) {
        Ok(c) if !config_path.exists() => c,
        Ok(c) => {
            add("config", true, config_path.display().to_string(), None);
            c
        }
        Err(e) => {
            add(
                "config",
                false,
                format!("{e:#}"),
                Some("fix or remove the configuration file"),
            );
            ConfigFile::default()
        }
    };
    match settings::scope(roots, &config, &dir) {
        Ok(scope) => {
            for root in scope.root_infos() {
                let readable = std::fs::read_dir(&root.path).is_ok();
                add(
                    "folder",
                    readable,
                    root.path.clone(),
                    (!readable).then_some("give your user read access to it"),
                );
            }
            // Looked at, never acted on: the device may be running.
            for found in fusion_tools::check_renames(&scope) {
                let (ok, fix) = match found.outcome {
                    fusion_tools::RecoveryOutcome::Ignored { .. } => (
                        false,
                        "check the names it lists by hand, then delete it; the device never acts on it",
                    ),
                    fusion_tools::RecoveryOutcome::ReadOnly => (
                        false,
                        "allow the folder read-write once so the batch can be rolled back",
                    ),
                    _ => (
                        false,
                        "restart the device: it finishes or rolls the batch back at start",
                    ),
                };
                add("rename journal", ok, found.to_string(), Some(fix));
            }
        }
        Err(e) => add(
            "folders",
            false,
            format!("{e:#}"),
            Some("pass --root PATH, or set `roots` in config.toml"),
        ),
    }
    let credentials = Credentials::load(&dir).ok().flatten();
    match &credentials {
        Some(c) if c.revoked => add(
            "paired",
            false,
            format!("device '{}' ({}) was revoked on the server", c.name, c.device_id),
            Some("pair it again: FUSION_HOST_CODE=<new code from /devices> fusion-host"),
        ),
        Some(c) => {
            let mode_ok = credentials_private(&dir);
            add(
                "paired",
                true,
                format!("device '{}' ({}) of {}", c.name, c.device_id, c.owner),
                None,
            );
            let file = dir.join(fusion_host::CREDENTIALS_FILE).display().to_string();
            add(
                "credentials file",
                mode_ok,
                if cfg!(unix) {
                    file
                } else {
                    // Restricted when written; not read back: say so
                    // rather than claim it.
                    format!("{file} (made readable by this user only when it was written; not read back)")
                },
                (!mode_ok).then_some("run `chmod 600` on it: other users can read the token"),
            );
        }
        None => add(
            "paired",
            false,
            "no credentials".into(),
            Some("run `fusion-host enroll --server URL --code CODE`"),
        ),
    }
    let server = credentials
        .as_ref()
        .map(|c| c.server.clone())
        .or_else(settings::server_from_env)
        .or(config.server.clone());
    for proxy in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"] {
        if let Ok(p) = std::env::var(proxy) {
            add(
                "proxy",
                true,
                format!(
                    "{proxy}={p} (NO_PROXY={})",
                    std::env::var("NO_PROXY").unwrap_or_default()
                ),
                None,
            );
        }
    }
    if let Some(server) = server {
        network_checks(global, &config, &server, credentials.as_ref(), &mut add).await;
    } else {
        add(
            "server",
            false,
            "no server configured".into(),
            Some("set FUSION_HOST_SERVER or `server` in config.toml"),
        );
    }

    let all_ok = checks.iter().all(|c| c.ok);
    if global.json {
        println!("{}", serde_json::to_string_pretty(&checks).unwrap_or_default());
    } else {
        for c in &checks {
            let mark = match (c.info, c.ok) {
                (true, _) => "·",
                (false, true) => "✓",
                (false, false) => "✗",
            };
            println!("{mark} {:<17} {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                println!("  {:<17} → {fix}", "");
            }
        }
    }
    if all_ok {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            error: anyhow::anyhow!("some checks failed"),
        })
    }
}

async fn network_checks(
    global: &Global,
    config: &ConfigFile,
    server: &str,
    credentials: Option<&Credentials>,
    add: &mut impl FnMut(&'static str, bool, String, Option<&str>),
) {
    let Ok(url) = reqwest_url(server) else {
        add(
            "server",
            false,
            format!("{server} is not a URL"),
            Some("use the address shown on /devices, e.g. https://app.example.com"),
        );
        return;
    };
    let (host, port) = (url.0, url.1);
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(mut addrs) => {
            let first = addrs.next();
            add(
                "dns",
                first.is_some(),
                format!(
                    "{host} → {}",
                    first.map_or("nothing".into(), |a| a.ip().to_string())
                ),
                None,
            );
        }
        Err(e) => {
            add(
                "dns",
                false,
                format!("{host}: {e}"),
                Some("check the server address and your DNS/VPN"),
            );
            return;
        }
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => add("tcp", true, format!("{host}:{port} reachable"), None),
        _ => {
            add(
                "tcp",
                false,
                format!("{host}:{port} did not accept a connection"),
                Some("check the firewall, VPN or proxy"),
            );
            return;
        }
    }
    let http = match Http::new(server, ca_cert(global, config).as_deref(), VERSION) {
        Ok(h) => h,
        Err(e) => {
            add("tls", false, e.to_string(), None);
            return;
        }
    };
    // A result for a call that does not exist: 404 proves the token works,
    // 401 that it does not; nothing changes on the server either way.
    let token = credentials.map_or("fh_none", |c| c.token.as_str());
    let probe = json!({ "call_id": "call_doctor", "ok": true, "duration_ms": 0 });
    let response = http
        .client()
        .post(format!("{}/result", http.base()))
        .bearer_auth(token)
        .json(&probe)
        .send()
        .await;
    match response {
        Ok(r) => {
            add(
                "tls",
                true,
                if server.starts_with("https") {
                    "certificate trusted".into()
                } else {
                    "plain HTTP (no TLS)".into()
                },
                None,
            );
            if let Some(date) = r
                .headers()
                .get("date")
                .and_then(|d| d.to_str().ok())
                .and_then(httpdate)
            {
                let skew = SystemTime::now()
                    .duration_since(date)
                    .unwrap_or_else(|e| e.duration());
                let ok = skew < Duration::from_secs(300);
                add(
                    "clock",
                    ok,
                    format!("{}s from the server's clock", skew.as_secs()),
                    (!ok).then_some("set the system clock (enable NTP)"),
                );
            }
            if credentials.is_some() {
                let ok = r.status() == 404;
                add(
                    "token",
                    ok,
                    if ok {
                        "accepted".into()
                    } else {
                        format!("refused (HTTP {})", r.status().as_u16())
                    },
                    (!ok).then_some("pair this device again with a new code from /devices"),
                );
            }
        }
        Err(e) => {
            let e = http.explain(e).await;
            add("tls", false, e.to_string(), None);
        }
    }
}

fn reqwest_url(server: &str) -> anyhow::Result<(String, u16)> {
    let rest = server.split_once("://").map(|(_, r)| r).context("no scheme")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if server.starts_with("https://") { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            Ok((host.to_string(), port.parse()?))
        }
        _ => Ok((authority.to_string(), default_port)),
    }
}

fn httpdate(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .or_else(|| parse_imf_fixdate(s))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the only date format HTTP servers send.
fn parse_imf_fixdate(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)?
        + 1;
    let iso = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    humantime::parse_rfc3339(&iso).ok()
}

#[cfg(unix)]
fn credentials_private(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir.join(fusion_host::CREDENTIALS_FILE))
        .is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

/// Windows: the file sits in the user's profile (`%APPDATA%`), whose ACL
/// admits only the user, SYSTEM and administrators; no stricter ACL is set
/// yet, and this check does not read it.
#[cfg(not(unix))]
fn credentials_private(_: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_urls() {
        let t = parse_imf_fixdate("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert_eq!(
            reqwest_url("https://app.example.com/x").unwrap(),
            ("app.example.com".into(), 443)
        );
        assert_eq!(
            reqwest_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080)
        );
    }

    #[test]
    fn the_login_link_draws_as_a_square_qr_code() {
        let link = "https://app.example.com/device?user_code=WDJB-MJHT";
        let drawn = qr_code(link);
        let rows: Vec<&str> = drawn.lines().collect();
        let width = rows[0].chars().count();
        // Two modules per character row, a quiet zone of 4 around: a QR
        // symbol is 21 + 4k modules wide.
        assert!(rows.iter().all(|r| r.chars().count() == width), "{drawn}");
        assert_eq!((width - 8 - 21) % 4, 0, "{drawn}");
        assert_eq!(rows.len(), width.div_ceil(2));
        // The quiet zone is light, so the first row has no dark module.
        assert!(rows[0].chars().all(|c| c == '█'), "{drawn}");
    }
}
