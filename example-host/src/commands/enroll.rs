//! `fusion-host enroll`: pair with a code from the app's /devices page.

use fusion_host::{Credentials, Http};
use serde_json::json;

use crate::cli::Global;
use crate::fail::Fail;
use crate::settings::{self, ConfigFile, VERSION};

/// `fusion-host enroll`.
pub(crate) async fn enroll(
    global: &Global,
    server: Option<&str>,
    code: &str,
    name: Option<&str>,
) -> Result<Credentials, Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let server = settings::server(server, &config)?;
    let name = settings::device_name(name, &config);
    let http = Http::new(&server, settings::ca_cert(global, &config).as_deref(), VERSION)?;
    let credentials = fusion_host::enroll(&http, &server, code, &name, VERSION).await?;
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
