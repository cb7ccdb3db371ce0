//! `run.json` in the configuration directory: what a running device is
//! doing, written by `run` and read by `status`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fusion_host::ConnectionState;
use serde_json::json;

/// The state file of one configuration directory.
pub(crate) struct StateFile(PathBuf);

impl StateFile {
    pub(crate) fn new(dir: &Path) -> Self {
        StateFile(dir.join("run.json"))
    }

    pub(crate) fn write(&self, state: &ConnectionState) {
        let (connected, detail) = match state {
            ConnectionState::Connected { session_id, .. } => (true, session_id.clone()),
            ConnectionState::Retrying { reason, .. } => (false, reason.clone()),
            other => (false, format!("{other:?}")),
        };
        let since = humantime_now();
        let body =
            json!({ "pid": std::process::id(), "connected": connected, "detail": detail, "since": since });
        let _ = std::fs::write(&self.0, body.to_string());
    }

    pub(crate) fn remove(&self) {
        let _ = std::fs::remove_file(&self.0);
    }

    /// What a device that is running now wrote: `(running, connected)`.
    pub(crate) fn read(&self) -> (bool, bool) {
        let run: Option<serde_json::Value> = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let running = run
            .as_ref()
            .and_then(|r| r["pid"].as_u64())
            .is_some_and(process_alive);
        let connected = running && run.as_ref().is_some_and(|r| r["connected"] == true);
        (running, connected)
    }
}

fn humantime_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}")
}

fn process_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}
