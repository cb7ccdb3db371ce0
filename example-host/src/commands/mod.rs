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

use fusion_host::{Credentials, Error as HostError};

use crate::cli::Global;
use crate::fail::{Fail, exit};
use crate::settings::{self, ConfigFile};

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
            if settings::server(None, &config).is_ok() {
                if stored.is_some() {
                    eprintln!("This device's pairing was revoked on the server; logging in again…");
                }
                login::login(global, &login::LoginArgs::default()).await?;
                return run::run(global, &[], None, false).await;
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
        enroll::enroll(global, None, code, None).await?;
        return run::run(global, &[], None, false).await;
    }
    match run::run(global, &[], None, false).await {
        Err(fail) if fail.code == exit::REPAIR => {
            let Some(code) = &code else {
                return Err(fail);
            };
            eprintln!("{REPAIRING}");
            enroll::enroll(global, None, code, None).await?;
            run::run(global, &[], None, false).await
        }
        other => other,
    }
}

/// `fusion-host login`, then `run` until the device is connected.
pub(crate) async fn login_then_connect(global: &Global, args: &login::LoginArgs<'_>) -> Result<(), Fail> {
    login::login(global, args).await?;
    run::run(global, &[], None, true).await
}
