//! One file per command. No command uses another; the two that are a
//! sequence of others (the default, and `login` then `run`) are composed
//! here.

pub(crate) mod call;
pub(crate) mod convert;
pub(crate) mod doctor;
pub(crate) mod enroll;
pub(crate) mod login;
pub(crate) mod logout;
pub(crate) mod mcp;
pub(crate) mod rename;
pub(crate) mod run;
pub(crate) mod service;
pub(crate) mod status;
pub(crate) mod tools;
pub(crate) mod update;

use fusion_host::{Credentials, Error as HostError};

use crate::cli::Global;
use crate::fail::{Fail, exit};
use crate::settings::{self, ConfigFile};

const REPAIRING: &str = "This device's pairing was revoked on the server; pairing again with the code given…";

/// `fusion-host` with no subcommand: pair if not paired yet (with `--code`
/// or `FUSION_HOST_CODE`), then run here, or with `--service` in the
/// background at every log-on. Credentials the server refuses (the
/// device was revoked) are replaced by pairing with the code when one is
/// given, so the line with a fresh code from /devices always works.
pub(crate) async fn default(
    global: &Global,
    server: Option<&str>,
    code: Option<&str>,
    as_service: bool,
) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let code = code.map(str::to_string).filter(|c| !c.trim().is_empty());
    let stored = Credentials::load(&dir)?;
    if stored.as_ref().is_none_or(|c| c.revoked) {
        let Some(code) = &code else {
            // No code: log in in the browser, when there is a server to ask.
            let config = ConfigFile::load(&dir)?;
            if settings::server(server, &config).is_ok() {
                if stored.is_some() {
                    eprintln!("This device's pairing was revoked on the server; logging in again…");
                }
                let args = login::LoginArgs {
                    server,
                    ..Default::default()
                };
                login::login(global, &args).await?;
                return then_run(global, as_service).await;
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
        enroll::enroll(global, server, code, None).await?;
        return then_run(global, as_service).await;
    }
    if as_service {
        return service::install_here(global);
    }
    match run::run(global, &[], None, false).await {
        Err(fail) if fail.code == exit::REPAIR => {
            let Some(code) = &code else {
                return Err(fail);
            };
            eprintln!("{REPAIRING}");
            enroll::enroll(global, server, code, None).await?;
            run::run(global, &[], None, false).await
        }
        other => other,
    }
}

/// After pairing: run here, or install the service that runs in the
/// background (`--service`).
async fn then_run(global: &Global, as_service: bool) -> Result<(), Fail> {
    match as_service {
        true => service::install_here(global),
        false => run::run(global, &[], None, false).await,
    }
}

/// `fusion-host login`, then `run` until the device is connected.
pub(crate) async fn login_then_connect(global: &Global, args: &login::LoginArgs<'_>) -> Result<(), Fail> {
    login::login(global, args).await?;
    run::run(global, &[], None, true).await
}

/// `fusion-host update`, then the service restarted onto the new binary.
pub(crate) async fn update_then_restart(global: &Global, args: &update::UpdateArgs<'_>) -> Result<(), Fail> {
    if let update::Updated::Replaced { to, .. } = update::update(global, args).await? {
        let dir = settings::config_dir(global.config_dir.as_deref())?;
        match service::restart_if_installed(&dir) {
            Ok(true) => eprintln!("✓ the service runs {to} now"),
            Ok(false) => eprintln!("Restart a running `fusion-host run` to use {to}."),
            Err(e) => eprintln!("! could not restart the service ({e:#}); restart it by hand"),
        }
    }
    Ok(())
}
