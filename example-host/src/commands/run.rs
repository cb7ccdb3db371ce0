//! `fusion-host run`: hold the stream and answer calls until stopped. A
//! revoked device is remembered as such and returned as such; `main`
//! decides what else that means (a supervisor told to stop restarting it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fusion_host::{ConnectionState, Credentials, Error as HostError, HostOptions, Http, run_host};
use serde_json::json;

use crate::auto_update;
use crate::cli::Global;
use crate::commands::service;
use crate::fail::{Fail, exit};
use crate::report::{self, report};
use crate::settings::{self, ConfigFile, VERSION};
use crate::state_file::StateFile;

/// `fusion-host run`: hold the stream until Ctrl-C/SIGTERM or a fatal error;
/// with `once`, stop as soon as the device is connected (after `login`).
pub(crate) async fn run(
    global: &Global,
    roots: &[String],
    concurrency: Option<usize>,
    once: bool,
) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    // Where this binary is now: an update replaces the file, and the
    // restart starts what is there then.
    let exe = std::env::current_exe().map_err(anyhow::Error::from)?;
    if !once && let Some(restart) = auto_update::before_start(&dir) {
        return Err(restart_onto(&exe, &dir, global, &restart));
    }
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
    let http = Http::new(
        &credentials.server,
        settings::ca_cert(global, &config).as_deref(),
        VERSION,
    )?;
    let mut options = HostOptions::new(
        http,
        credentials.clone(),
        crate::toolbox::toolbox(),
        scope,
        VERSION,
    );
    if let Some(n) = concurrency {
        options.concurrency = n;
    }
    options.applied_journal = Some(dir.join(fusion_host::APPLIED_JOURNAL_FILE));
    // Recovered rename batches are logged as warnings by run_host.
    let updater_http = options.http.clone();
    let host = run_host(options);
    let restart = Arc::new(OnceLock::new());
    let updater = (!once).then(|| {
        let updater = auto_update::Updater {
            dir: dir.clone(),
            http: updater_http,
            credentials: credentials.clone(),
            activity: host.activity(),
            stopper: host.stopper(),
            allowed: config.updates.automatic != Some(false),
            trial: Duration::from_secs(config.updates.trial_seconds.unwrap_or(settings::TRIAL_SECONDS)),
            restart: Arc::clone(&restart),
        };
        tokio::spawn(updater.run(host.state()))
    });
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
                    ConnectionState::Connected { session_id, .. } => {
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
                            if report::to_log_file() {
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
    if let Some(updater) = updater {
        updater.abort();
    }
    StateFile::new(&dir).remove();
    if let (Ok(_), Some(restart)) = (&joined, restart.get()) {
        return Err(restart_onto(&exe, &dir, global, restart));
    }
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
            }
            Err(e.into())
        }
    }
}

/// Starts the binary now at `exe` in place of this process; what is
/// returned is why that failed.
fn restart_onto(
    exe: &std::path::Path,
    dir: &std::path::Path,
    global: &Global,
    restart: &auto_update::Restart,
) -> Fail {
    report(&format!("… {}: restarting", restart.why));
    let error = match service::restart_by_task(exe, dir, global.log_file.as_deref()) {
        Some(Ok(())) => std::process::exit(0),
        Some(Err(e)) => e,
        None => auto_update::exec(exe),
    };
    Fail {
        code: 1,
        error: anyhow::anyhow!(
            "{}, but {} could not be started again ({error}); start it by hand",
            restart.why,
            exe.display()
        ),
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
