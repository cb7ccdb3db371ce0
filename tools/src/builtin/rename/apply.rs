//! Applying a batch: two passes through temporary names, all or nothing,
//! with the journal that lets a crash be recovered.

use std::io;

use crate::error::{Error, Result};
use crate::fsutil::hex;
use crate::tool::Context;

use super::folders::{Folders, temp_for};
use super::journal::{Journal, JournalItem, journal_path, remove_journal, roll_back, write_journal};
use super::{RenameBatchOutput, Staged};

/// What the test hook says at a step of apply.
#[derive(Debug)]
pub(crate) enum Step {
    /// Carry on.
    Go,
    /// Fail this step with this error (a locked file, say).
    #[cfg_attr(not(test), allow(dead_code))]
    Fail(io::Error),
    /// Stop dead, as a crash would: no rollback, the journal stays.
    #[cfg_attr(not(test), allow(dead_code))]
    Crash,
}

/// Applies a planned batch. `hook` is asked before every rename (step
/// numbers run through both passes); production passes one that says go.
pub(crate) fn run_batch(
    cx: &Context<'_>,
    staged: Staged,
    hook: &mut dyn FnMut(usize) -> Step,
) -> Result<RenameBatchOutput> {
    let root = &cx.scope().roots()[staged.root];
    let root_path = root.path().to_path_buf();
    let mut random = [0u8; 4];
    let _ = getrandom::fill(&mut random);
    let batch = hex(&random);
    let journal = Journal {
        version: super::journal::JOURNAL_VERSION,
        root: root_path.clone(),
        batch: batch.clone(),
        items: staged
            .items
            .iter()
            .enumerate()
            .map(|(n, item)| JournalItem {
                from: item.from.clone(),
                to: item.to.clone(),
                temp: temp_for(&item.from, &batch, n),
                id: item.id.clone(),
            })
            .collect(),
    };
    // Without a state folder the batch still rolls back on failure while
    // this process lives; only recovery after a crash needs the journal.
    let journal_file = journal_path(cx.scope(), &root_path, &batch);
    if let Some(path) = &journal_file {
        write_journal(path, &journal).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::Conflict {
                subject: path.display().to_string(),
                detail: "another rename batch with the same id started meanwhile; plan it again".into(),
            },
            _ => Error::io(path, e),
        })?;
    }
    let forget = || match &journal_file {
        Some(path) => remove_journal(path).map_err(|e| Error::io(path, e)),
        None => Ok(()),
    };
    let mut folders = Folders::new(root.dir());
    let mut step = 0;
    let mut failure = None;
    'passes: for pass in 0..2 {
        for (n, item) in journal.items.iter().enumerate() {
            let (from, to) = if pass == 0 {
                (&item.from, &item.temp)
            } else {
                (&item.temp, &item.to)
            };
            let outcome = match hook(step) {
                Step::Crash => return Err(Error::Cancelled),
                Step::Fail(e) => Err(e),
                Step::Go => match cx.checkpoint() {
                    Err(e) => Err(io::Error::other(e.to_string())),
                    Ok(()) => folders.rename(from, to),
                },
            };
            step += 1;
            if let Err(e) = outcome {
                failure = Some((n, e));
                break 'passes;
            }
        }
    }
    if let Some((n, e)) = failure {
        let item = &journal.items[n];
        let cause = Error::io(&root_path.join(&item.from), e);
        let undo = roll_back(root.dir(), &journal);
        let detail = serde_json::json!({
            "failed": {
                "index": n,
                "from": root_path.join(&item.from).display().to_string(),
                "to": root_path.join(&item.to).display().to_string(),
                "code": cause.code().as_str(),
                "message": cause.to_string(),
            },
            "items": journal.items.len(),
            "moved_back": undo.moved_back,
            "not_restored": undo.stuck.iter().map(|(i, why)| serde_json::json!({
                "index": i,
                "from": root_path.join(&journal.items[*i].from).display().to_string(),
                "temp": root_path.join(&journal.items[*i].temp).display().to_string(),
                "message": why,
            })).collect::<Vec<_>>(),
        });
        let message = if undo.stuck.is_empty() {
            let _ = folders.sync();
            let _ = forget();
            format!(
                "renaming {} to {} failed ({cause}); the {} rename(s) already done were undone, so every \
                 name is as it was: close any program holding the file and plan the batch again",
                root_path.join(&item.from).display(),
                root_path.join(&item.to).display(),
                undo.moved_back
            )
        } else {
            let next = match &journal_file {
                Some(path) => format!(
                    "the journal {} is kept and the next start of the device retries",
                    path.display()
                ),
                None => "move them back by hand (their temporary names are in the details)".into(),
            };
            format!(
                "renaming {} failed ({cause}) and {} item(s) could not be moved back (see details); {next}",
                root_path.join(&item.from).display(),
                undo.stuck.len(),
            )
        };
        return Err(Error::BatchFailed {
            message,
            details: detail,
        });
    }
    folders.sync().map_err(|e| Error::io(&root_path, e))?;
    forget()?;
    Ok(RenameBatchOutput {
        renamed: journal.items.len() as u64,
        unchanged: staged.unchanged,
        case_only: staged.items.iter().filter(|i| i.case_only).count() as u64,
        root: root_path.display().to_string(),
    })
}
