//! `fusion-host logout`: forget this device's credentials here.

use fusion_host::Credentials;

use crate::cli::Global;
use crate::fail::Fail;
use crate::settings;

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
