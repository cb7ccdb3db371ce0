//! `fusion-host status`: paired, running, connected, and which folders.

use fusion_host::Credentials;
use serde_json::json;

use crate::cli::Global;
use crate::fail::Fail;
use crate::settings::{self, ConfigFile};
use crate::state_file::StateFile;

/// `fusion-host status`.
pub(crate) fn status(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let credentials = Credentials::load(&dir)?;
    let scope = settings::scope(roots, &config, &dir).ok();
    let (running, connected) = StateFile::new(&dir).read();
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
                 fusion-host --server URL --code <new code from /devices>",
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
