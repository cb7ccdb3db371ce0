//! The configuration file: absent (fine), read, or broken.

use std::path::Path;

use super::Checks;
use crate::settings::{self, ConfigFile};

/// Reads the configuration as the device would; a broken file is a failed
/// check and the defaults.
pub(super) fn check(dir: &Path, checks: &mut Checks) -> ConfigFile {
    let config_path = dir.join(settings::CONFIG_FILE);
    if !config_path.exists() {
        // Optional: not a failure, but no ✓ for a file that is not there.
        checks.info(
            "config",
            format!(
                "none ({} does not exist; flags and environment apply)",
                config_path.display()
            ),
        );
    }
    match ConfigFile::load(dir) {
        Ok(c) if !config_path.exists() => c,
        Ok(c) => {
            checks.add("config", true, config_path.display().to_string(), None);
            c
        }
        Err(e) => {
            checks.add(
                "config",
                false,
                format!("{e:#}"),
                Some("fix or remove the configuration file"),
            );
            ConfigFile::default()
        }
    }
}
