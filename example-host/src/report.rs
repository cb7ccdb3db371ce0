//! What `run` tells the person at the terminal (stderr) or, under a service,
//! the log file (`--log-file`), since nobody reads that console.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set when the log goes to a file.
static REPORT_TO_LOG: AtomicBool = AtomicBool::new(false);

/// Sends reports to the log file from now on.
pub(crate) fn to_log() {
    REPORT_TO_LOG.store(true, Ordering::Relaxed);
}

/// Whether reports go to the log file.
pub(crate) fn to_log_file() -> bool {
    REPORT_TO_LOG.load(Ordering::Relaxed)
}

/// One line of what the device is doing.
pub(crate) fn report(line: &str) {
    if to_log_file() {
        tracing::info!(target: "fusion_host", "{line}");
    } else {
        eprintln!("{line}");
    }
}
