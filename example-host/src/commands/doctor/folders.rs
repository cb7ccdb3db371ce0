//! The allowed folders: readable, not holding the device's own files, and
//! no rename batch left half done (or planted) in them.

use std::path::Path;

use super::Checks;
use crate::settings::{self, ConfigFile};

pub(super) fn check(dir: &Path, roots: &[String], config: &ConfigFile, checks: &mut Checks) {
    match settings::scope(roots, config, dir) {
        Ok(scope) => {
            for root in scope.root_infos() {
                let readable = std::fs::read_dir(&root.path).is_ok();
                checks.add(
                    "folder",
                    readable,
                    root.path.clone(),
                    (!readable).then_some("give your user read access to it"),
                );
            }
            // The device's own files (its token, its rename journals) must
            // not be reachable by the tools it runs.
            let own = dunce::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            if let Some(root) = scope
                .roots()
                .iter()
                .find(|r| r.access() == fusion_tools::Access::ReadWrite && own.starts_with(r.path()))
            {
                checks.add(
                    "config folder",
                    false,
                    format!(
                        "{} is inside the allowed folder {}: an approved change could rewrite the device's \
                         token and rename journals",
                        own.display(),
                        root.path().display()
                    ),
                    Some("allow narrower folders, or keep the configuration elsewhere with --config-dir"),
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
                checks.add("rename journal", ok, found.to_string(), Some(fix));
            }
        }
        Err(e) => checks.add(
            "folders",
            false,
            format!("{e:#}"),
            Some("pass --root PATH, or set `roots` in config.toml"),
        ),
    }
}
