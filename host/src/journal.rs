//! The applied-calls journal: the results of the last applied calls, kept in
//! a small file next to the credentials.
//!
//! A device that dies after an apply renamed its file into place but before
//! the result reached the server is sent the same apply again when it comes
//! back. Re-running it would find the change already on disk and answer
//! `conflict`, so the proposal would end `failed` although it was applied.
//! The journal is written right after the apply and before the result is
//! posted; a re-delivered apply is answered from it.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use fusion_tools::CallResult;

/// The journal's usual file name, next to the credentials.
pub const APPLIED_JOURNAL_FILE: &str = "applied.json";

/// How many applied results the file keeps. A re-delivery comes within the
/// server's proposal lifetime, long before this many later applies.
pub(crate) const JOURNAL_KEEP: usize = 256;

/// The journal, newest last.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    path: Option<PathBuf>,
    results: VecDeque<CallResult>,
}

impl Journal {
    /// Opens the journal at `path` (or an in-memory one for `None`). An
    /// unreadable file is logged and started afresh: at worst a re-delivered
    /// apply is then refused as a conflict, never applied twice.
    pub(crate) fn open(path: Option<PathBuf>) -> Journal {
        let results = path
            .as_deref()
            .map(|p| match std::fs::read(p) {
                Ok(bytes) => serde_json::from_slice::<VecDeque<CallResult>>(&bytes).unwrap_or_else(|e| {
                    tracing::warn!(path = %p.display(), error = %e, "the applied-calls journal is unreadable; starting a new one");
                    VecDeque::new()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "cannot read the applied-calls journal");
                    VecDeque::new()
                }
            })
            .unwrap_or_default();
        Journal { path, results }
    }

    /// The recorded results, oldest first.
    pub(crate) fn results(&self) -> impl Iterator<Item = &CallResult> {
        self.results.iter()
    }

    /// Records an applied call's result and writes the file (atomically).
    pub(crate) fn record(&mut self, result: &CallResult) {
        if self.results.iter().any(|r| r.call_id == result.call_id) {
            return;
        }
        while self.results.len() >= JOURNAL_KEEP {
            self.results.pop_front();
        }
        self.results.push_back(result.clone());
        if let Some(path) = &self.path
            && let Err(e) = write_atomically(path, &serde_json::to_vec(&self.results).unwrap_or_default())
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the applied-calls journal");
        }
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, and renames it
/// over `path`: a crash leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(id: &str) -> CallResult {
        CallResult {
            call_id: id.into(),
            ok: true,
            output: Some(serde_json::json!({ "applied": id })),
            error: None,
            truncated: false,
            duration_ms: 1,
        }
    }

    #[test]
    fn survives_a_restart_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("applied.json");
        let mut journal = Journal::open(Some(path.clone()));
        for i in 0..JOURNAL_KEEP + 3 {
            journal.record(&result(&format!("call_{i}")));
        }
        journal.record(&result("call_5"));
        let reopened = Journal::open(Some(path));
        let ids: Vec<&str> = reopened.results().map(|r| r.call_id.as_str()).collect();
        assert_eq!(ids.len(), JOURNAL_KEEP);
        assert_eq!(ids[0], "call_3");
        assert_eq!(ids[JOURNAL_KEEP - 1], format!("call_{}", JOURNAL_KEEP + 2));
        assert_eq!(
            reopened.results().last().unwrap().output,
            result(&format!("call_{}", JOURNAL_KEEP + 2)).output
        );
    }

    #[test]
    fn an_unreadable_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("applied.json");
        std::fs::write(&path, "{ not json").unwrap();
        let mut journal = Journal::open(Some(path.clone()));
        assert_eq!(journal.results().count(), 0);
        journal.record(&result("call_a"));
        assert_eq!(Journal::open(Some(path)).results().count(), 1);
    }
}
