//! The seventeen built-in tools.

mod grep;
mod listing;
mod mutate_files;
mod mutate_tree;
mod open;
mod read;
mod rename;

pub use grep::{Grep, GrepInput, GrepMatch, GrepOutput, MAX_CONTEXT, MAX_LINE_BYTES, MAX_MATCHES};
pub use listing::{
    DISK_USAGE_MAX_ENTRIES, DISK_USAGE_TIME_BUDGET_MS, DiskUsage, DiskUsageInput, DiskUsageOutput, Entry,
    Glob, GlobInput, GlobMatch, GlobOutput, ListDirectory, ListDirectoryInput, ListDirectoryOutput,
    MAX_DETAILED_ENTRIES, MAX_LISTING_BYTES, MAX_NAME_ENTRIES,
};
pub use mutate_files::{
    AppendFile, AppendFileInput, Edit, EditFile, EditFileInput, WriteFile, WriteFileInput, WriteOutput,
};
pub use mutate_tree::{
    Copy, CopyInput, CopyOutput, CreateDirectory, CreateDirectoryInput, CreateDirectoryOutput, Delete,
    DeleteInput, DeleteOutput, Move, MoveInput, MoveOutput,
};
pub use open::{OpenInput, OpenOutput, OpenPath, RevealInOs};
pub use read::{
    HashAlgorithm, HashFile, HashFileInput, HashFileOutput, MAX_READ_BYTES, ReadFile, ReadFileInput,
    ReadFileOutput, Stat, StatInput, StatOutput,
};
pub use rename::{
    MAX_BATCH, RENAME_JOURNAL, RecoveryOutcome, RenameBatch, RenameBatchInput, RenameBatchOutput, RenamePair,
    RenameRecovery, check_renames, recover_renames,
};

use crate::tool::Toolbox;

/// The most entries a listing returns in one call.
pub const MAX_ENTRIES: usize = 1000;

impl Toolbox {
    /// A toolbox with the seventeen built-in tools.
    pub fn builtin() -> Self {
        let mut toolbox = Self::new();
        register(&mut toolbox);
        toolbox
    }
}

fn register(toolbox: &mut Toolbox) {
    toolbox
        .add(ListDirectory)
        .add(ReadFile)
        .add(Stat)
        .add(Glob)
        .add(Grep)
        .add(DiskUsage)
        .add(HashFile)
        .add_mutating(WriteFile)
        .add_mutating(EditFile)
        .add_mutating(AppendFile)
        .add_mutating(CreateDirectory)
        .add_mutating(Move)
        .add_mutating(Copy)
        .add_mutating(Delete)
        .add_mutating(RenameBatch)
        .add(OpenPath::default())
        .add(RevealInOs::default());
}

/// `"."`, the default for optional path inputs.
pub(crate) fn dot() -> String {
    ".".to_string()
}

pub(crate) fn default_true() -> bool {
    true
}

/// Checks a caller's `limit` against a tool's cap.
pub(crate) fn bounded_limit(tool: &str, limit: Option<usize>, cap: usize) -> crate::Result<usize> {
    match limit {
        None => Ok(cap),
        Some(0) => Err(crate::Error::invalid_input(tool, "limit", "must be at least 1")),
        Some(n) if n > cap => Err(crate::Error::invalid_input(
            tool,
            "limit",
            format!("{n} is above the cap of {cap}; page with `offset` instead"),
        )),
        Some(n) => Ok(n),
    }
}

#[cfg(test)]
pub(crate) mod testutil;
