//! The commands that talk to the server: the default (enroll if needed, then
//! run), `enroll`, `run`, `status`, `logout`, `doctor`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

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

pub(crate) fn ca_cert(global: &Global, config: &ConfigFile) -> Option<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
