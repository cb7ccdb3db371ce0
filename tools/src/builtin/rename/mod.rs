//! `rename_batch`: many renames as one proposal, applied all-or-nothing.
//!
//! Apply works in two passes through hidden temporary names (every source to
//! `.fusion-rename-<batch>-<n>` in its own folder, then every temporary name
//! to its target), so chains (`a→b, b→c`), swaps and cycles (`a→b, b→a`) and
//! case-only renames on case-insensitive volumes need no special ordering.
//!
//! Before the first rename a journal records every item with its file id, in
//! the device's own state folder, never in the allowed folder (see
//! [`journal`]). Where each item is can always be told from the disk alone —
//! at its source, its temporary name or its target, recognised by the file
//! id — so the journal is written once and never updated. A failure part-way
//! moves everything back in reverse; after a crash or power loss,
//! [`recover_renames`] does the same on the next start (or finishes the
//! batch, when every item had reached its target), then removes the journal.

mod apply;
mod folders;
mod journal;
mod plan;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Plan;
use crate::error::Result;
use crate::tool::{Context, MutateTool, ToolSpec};

/// The most pairs one batch takes.
pub const MAX_BATCH: usize = 20_000;

use apply::{Step, run_batch};
pub use journal::{RENAME_JOURNAL, RecoveryOutcome, RenameRecovery, check_renames, recover_renames};
use plan::examine;
#[cfg(test)]
use plan::windows_name_problem;

const TEMP_PREFIX: &str = ".fusion-rename-";

/// `rename_batch`: rename many files or folders as one approval.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenameBatch;

/// Input of `rename_batch`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBatchInput {
    /// The renames, `{from, to}` each; paths as for every tool (relative to the
    /// first allowed folder, or absolute inside one), all in one allowed
    /// folder. Chains, swaps and cycles are fine; a pair whose `from` equals
    /// its `to` is left out. At most 20000 pairs.
    pub renames: Vec<RenamePair>,
}

/// One rename of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenamePair {
    /// The file or folder to rename.
    pub from: String,
    /// Its new path, including the new name. Its folder must exist.
    pub to: String,
}

/// Output of `rename_batch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RenameBatchOutput {
    /// Entries renamed.
    pub renamed: u64,
    /// Pairs left out because `from` and `to` were the same path.
    pub unchanged: u64,
    /// Renames that changed only the letter case of a name.
    pub case_only: u64,
    /// The allowed folder the batch ran in.
    pub root: String,
}

/// One rename, examined: relative paths inside the batch's root.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    from: PathBuf,
    to: PathBuf,
    /// The source's identity when planned.
    id: String,
    case_only: bool,
}

/// What a plan hands to apply.
#[derive(Debug)]
pub struct Staged {
    root: usize,
    items: Vec<Item>,
    unchanged: u64,
}

impl MutateTool for RenameBatch {
    type Input = RenameBatchInput;
    type Output = RenameBatchOutput;
    type Staged = Staged;

    fn spec(&self) -> ToolSpec {
        ToolSpec::mutate(
            "rename_batch",
            "Rename many files or folders at once, e.g. a folder of scans to a naming schema: one list of \
             {from, to} pairs, one approval, applied all-or-nothing (a failure part-way puts every name back; \
             a crash is recovered on the next start). Chains, swaps and case-only renames are handled. \
             The plan lists every problem (missing source, two sources to one target, an existing target, \
             names Windows cannot hold) before anything moves.",
        )
        // Like `move`: a name a file had is gone once applied.
        .destructive(true)
    }

    fn plan(&self, cx: &Context<'_>, input: &Self::Input) -> Result<(Plan, Staged)> {
        examine(cx, input, cfg!(windows))
    }

    fn apply(&self, cx: &Context<'_>, _: &Self::Input, staged: Staged) -> Result<RenameBatchOutput> {
        run_batch(cx, staged, &mut |_| Step::Go)
    }
}

#[cfg(test)]
mod tests;
