//! Plans: what a mutate tool will do, shown to the person who approves it,
//! and the precondition apply checks again before acting.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The exact effect of a mutate tool, as shown to the person who approves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    /// One line saying what will happen.
    pub summary: String,
    /// A unified diff, for text edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What will be created, replaced, moved, copied or deleted (at most 1000
    /// listed; `effects_total` counts them all).
    pub effects: Vec<Effect>,
    /// How many effects there are in all.
    pub effects_total: u64,
    /// Whether `effects` was cut at 1000.
    pub truncated: bool,
    /// The state the plan was made against; apply re-verifies it.
    pub precondition: Precondition,
}

/// The most effects a plan lists.
pub const MAX_PLAN_EFFECTS: usize = 1000;

impl Plan {
    /// A plan with `effects` (cut at [`MAX_PLAN_EFFECTS`]) and `precondition`.
    pub fn new(summary: impl Into<String>, mut effects: Vec<Effect>, precondition: Precondition) -> Self {
        let effects_total = effects.len() as u64;
        let truncated = effects.len() > MAX_PLAN_EFFECTS;
        effects.truncate(MAX_PLAN_EFFECTS);
        Plan {
            summary: summary.into(),
            diff: None,
            effects,
            effects_total,
            truncated,
            precondition,
        }
    }

    /// Attaches a unified diff.
    pub fn with_diff(mut self, diff: String) -> Self {
        self.diff = Some(diff);
        self
    }
}

/// One thing a plan will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Effect {
    /// What happens.
    pub op: EffectOp,
    /// The path it happens to.
    pub path: String,
    /// The destination, for moves and copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Bytes involved, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl Effect {
    /// An effect on one path.
    pub fn new(op: EffectOp, path: impl Into<String>) -> Self {
        Effect {
            op,
            path: path.into(),
            to: None,
            bytes: None,
        }
    }

    /// Sets the destination.
    pub fn to(mut self, to: impl Into<String>) -> Self {
        self.to = Some(to.into());
        self
    }

    /// Sets the byte count.
    pub fn bytes(mut self, bytes: u64) -> Self {
        self.bytes = Some(bytes);
        self
    }
}

/// The kinds of effect a plan can list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EffectOp {
    /// A new file.
    CreateFile,
    /// An existing file replaced whole.
    ReplaceFile,
    /// Bytes added at the end of a file.
    AppendFile,
    /// A new directory.
    CreateDirectory,
    /// A file, directory or link renamed or moved.
    Move,
    /// A file copied.
    Copy,
    /// A file removed.
    DeleteFile,
    /// A (now empty) directory removed.
    DeleteDirectory,
    /// A symbolic link removed (never its target).
    DeleteSymlink,
    /// A named program run.
    Run,
    /// A symbolic link that a copy leaves out.
    SkipSymlink,
}

/// The state a plan was made against.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Precondition {
    /// What each path looked like.
    pub expect: Vec<Expectation>,
}

impl Precondition {
    /// A precondition over the given expectations.
    pub fn new(expect: Vec<Expectation>) -> Self {
        Precondition { expect }
    }

    /// The first difference from `fresh`, as (path, detail).
    pub fn first_difference(&self, fresh: &Precondition) -> Option<(String, String)> {
        for (old, new) in self.expect.iter().zip(&fresh.expect) {
            if old != new {
                let path = if old.path == new.path {
                    &old.path
                } else {
                    &new.path
                };
                return Some((path.clone(), format!("was {}, is now {}", old.state, new.state)));
            }
        }
        (self.expect.len() != fresh.expect.len()).then(|| {
            (
                "the planned paths".into(),
                format!(
                    "{} paths were planned, {} are involved now",
                    self.expect.len(),
                    fresh.expect.len()
                ),
            )
        })
    }
}

/// One path and the state it must still be in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Expectation {
    /// The path.
    pub path: String,
    /// Its state.
    pub state: PathState,
}

/// A path's state, precise enough to notice any change that matters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PathState {
    /// Nothing is there.
    Absent,
    /// A regular file with this content.
    File {
        /// SHA-256 of the content, lowercase hex.
        sha256: String,
        /// Size in bytes.
        size: u64,
    },
    /// A directory; with `tree`, also everything below it.
    Directory {
        /// SHA-256 over the sorted listing (path, type, size, mtime) of the
        /// whole tree, when the plan depends on its content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tree: Option<String>,
    },
    /// A symbolic link with this target.
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
    /// A FIFO, socket or device.
    Special,
    /// An entry known by identity rather than content: what a rename depends
    /// on, since it never reads or changes the content (hashing a folder of
    /// multi-gigabyte scans to rename them would take hours).
    Identity {
        /// What the entry is.
        entry: EntryKind,
        /// The file id: `device:inode` in hex (volume serial and file index on
        /// Windows).
        id: String,
        /// Size in bytes.
        size: u64,
        /// Modification time, RFC 3339 with nanoseconds, where the platform has it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        modified: Option<String>,
    },
}

impl std::fmt::Display for PathState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathState::Absent => f.write_str("absent"),
            PathState::File { sha256, size } => {
                write!(
                    f,
                    "a {size}-byte file (sha256 {})",
                    &sha256[..sha256.len().min(12)]
                )
            }
            PathState::Directory { tree: None } => f.write_str("a directory"),
            PathState::Directory { tree: Some(t) } => {
                write!(f, "a directory (tree {})", &t[..t.len().min(12)])
            }
            PathState::Symlink { target } => write!(f, "a symbolic link to {target}"),
            PathState::Special => f.write_str("a special file"),
            PathState::Identity {
                entry,
                id,
                size,
                modified,
            } => {
                write!(f, "{} (id {id}, {size} bytes", entry.article())?;
                match modified {
                    Some(m) => write!(f, ", modified {m})"),
                    None => f.write_str(")"),
                }
            }
        }
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (not followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl EntryKind {
    /// "a directory", "a symbolic link": for error messages.
    pub fn article(self) -> &'static str {
        match self {
            EntryKind::File => "a regular file",
            EntryKind::Directory => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Other => "a special file (FIFO, socket or device)",
        }
    }
}
