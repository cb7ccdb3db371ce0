//! The one error type of this crate, and its stable wire codes.

use std::io;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{ErrorBody, ErrorCode};

/// Everything that can go wrong in a tool call.
///
/// Every variant names the input it is about (a path, a field, a tool) and its
/// message says what to do. [`Error::code`] gives the stable wire code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The path is outside every allowed folder or tries to leave one.
    #[error("{path} is outside the allowed folders ({reason}); use a path inside one of them")]
    OutsideScope {
        /// The path as the caller wrote it.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// Nothing exists at the path.
    #[error("{} does not exist; check the spelling or list its folder first", .path.display())]
    NotFound {
        /// The path inside the scope.
        path: PathBuf,
    },
    /// The folder a file would be created in does not exist.
    #[error("{} does not exist; create it first, or set create_parents", .path.display())]
    MissingParent {
        /// The first missing folder.
        path: PathBuf,
    },
    /// Something already exists where the tool would create it.
    #[error("{} already exists; {hint}", .path.display())]
    AlreadyExists {
        /// The path inside the scope.
        path: PathBuf,
        /// What to do instead.
        hint: &'static str,
    },
    /// The disk changed between plan and apply.
    #[error("{subject} changed since the proposal was made ({detail}); plan the change again")]
    Conflict {
        /// What changed: a path, or the tool's input.
        subject: String,
        /// What changed.
        detail: String,
    },
    /// A size bound was exceeded.
    #[error("{what} is too large: {size} bytes, the limit is {limit}; {hint}")]
    TooLarge {
        /// What was too large (a path or a field).
        what: String,
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
        /// What to do instead.
        hint: &'static str,
    },
    /// The path is not a regular file.
    #[error("{} is {found}, not a regular file", .path.display())]
    NotAFile {
        /// The path inside the scope.
        path: PathBuf,
        /// What it is instead, e.g. "a directory".
        found: &'static str,
    },
    /// The path is not a directory.
    #[error("{} is {found}, not a directory", .path.display())]
    NotADirectory {
        /// The path inside the scope.
        path: PathBuf,
        /// What it is instead, e.g. "a regular file".
        found: &'static str,
    },
    /// The file is binary where the tool needs text.
    #[error("{} is a binary file; this tool works on UTF-8 text only", .path.display())]
    BinaryFile {
        /// The path inside the scope.
        path: PathBuf,
    },
    /// The input does not fit the tool's schema or rules.
    #[error("invalid input for {tool}: {field}: {message}")]
    InvalidInput {
        /// The tool that was called.
        tool: String,
        /// The input field at fault, as a dotted path (`edits[1].find`).
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The operating system or a read-only root refused the operation.
    #[error("permission denied for {}: {reason}", .path.display())]
    PermissionDenied {
        /// The path inside the scope.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// No tool of that name is registered.
    #[error("unknown tool `{tool}`; the device offers: {available}")]
    UnknownTool {
        /// The name that was asked for.
        tool: String,
        /// The registered names, comma-separated.
        available: String,
    },
    /// The call was cancelled by the caller.
    #[error("the call was cancelled")]
    Cancelled,
    /// The call ran past its deadline.
    #[error("the call ran past its deadline; narrow the request (a sub-folder, a glob) or allow more time")]
    Timeout,
    /// A named program is not installed.
    #[error(
        "the program `{program}` needed by {tool} was not found on PATH; install it, or add its folder to PATH"
    )]
    ProgramNotFound {
        /// The tool that needs it.
        tool: String,
        /// The program's name.
        program: String,
    },
    /// A named program ran and failed.
    #[error("`{program}` exited with {status}: {stderr}")]
    ProgramFailed {
        /// The program's name.
        program: String,
        /// Its exit status, as text.
        status: String,
        /// The last part of what it wrote to stderr.
        stderr: String,
    },
    /// A batch has problems; nothing was changed.
    #[error("{}", batch_problems_message(.problems))]
    InvalidBatch {
        /// Every problem found, in input order.
        problems: Vec<BatchProblem>,
    },
    /// A batch failed part-way and was rolled back.
    #[error("{message}")]
    BatchFailed {
        /// What failed, what was rolled back, and what to do.
        message: String,
        /// The structured account (per item), for `details`.
        details: serde_json::Value,
    },
    /// Moving a file to or from the server failed.
    #[error("{message}")]
    TransferFailed {
        /// What the server said, or why the connection kept failing; what to do.
        message: String,
    },
    /// Bytes that do not hash to what they were sent with.
    #[error("{} arrived with SHA-256 {actual}, not {expected}; nothing was written", .path.display())]
    DigestMismatch {
        /// The path inside the scope.
        path: PathBuf,
        /// The digest the bytes were sent with.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// Any other I/O error, with the path it happened on.
    #[error("i/o error on {}: {source}", .path.display())]
    Io {
        /// The path inside the scope.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The stable wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::OutsideScope { .. } => ErrorCode::OutsideScope,
            Error::NotFound { .. } | Error::MissingParent { .. } => ErrorCode::NotFound,
            Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::TooLarge { .. } => ErrorCode::TooLarge,
            Error::NotAFile { .. } => ErrorCode::NotAFile,
            Error::NotADirectory { .. } => ErrorCode::NotADirectory,
            Error::BinaryFile { .. } => ErrorCode::BinaryFile,
            Error::InvalidInput { .. } => ErrorCode::InvalidInput,
            Error::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            Error::UnknownTool { .. } => ErrorCode::UnknownTool,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Timeout => ErrorCode::Timeout,
            Error::ProgramNotFound { .. } => ErrorCode::ProgramNotFound,
            Error::ProgramFailed { .. } => ErrorCode::ProgramFailed,
            Error::Io { .. } => ErrorCode::Io,
            Error::InvalidBatch { .. } => ErrorCode::InvalidBatch,
            Error::BatchFailed { .. } => ErrorCode::BatchFailed,
            Error::TransferFailed { .. } => ErrorCode::TransferFailed,
            Error::DigestMismatch { .. } => ErrorCode::DigestMismatch,
        }
    }

    /// Whether the same call might succeed if simply tried again.
    ///
    /// Only transient conditions are retryable; a bad path or a conflict is
    /// not, because retrying would give the same answer.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            _ => false,
        }
    }

    /// The wire form: code, message and, for batches, the structured details.
    pub fn to_body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code().as_str().to_string(),
            message: self.to_string(),
            details: self.details(),
        }
    }

    /// Structured detail beyond the message, where the error has some.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            Error::InvalidBatch { problems } => Some(serde_json::json!({
                "problems_total": problems.len(),
                "problems": problems,
            })),
            Error::BatchFailed { details, .. } => Some(details.clone()),
            _ => None,
        }
    }

    /// An `invalid_input` error for `field` of `tool`.
    pub fn invalid_input(
        tool: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Error {
        Error::InvalidInput {
            tool: tool.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// Classifies an I/O error that happened on `path` (already inside the scope).
    pub fn io(path: &Path, source: io::Error) -> Error {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => Error::NotFound { path },
            io::ErrorKind::PermissionDenied if is_escape(&source) => Error::OutsideScope {
                path: path.display().to_string(),
                reason: "a symbolic link or `..` leads outside the allowed folder".into(),
            },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied {
                path,
                reason: "the operating system refused access; check the file's permissions".into(),
            },
            io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                path,
                hint: "choose another name, or remove it first",
            },
            io::ErrorKind::NotADirectory => Error::NotADirectory {
                path,
                found: "not a directory (or has a non-directory in its parents)",
            },
            io::ErrorKind::IsADirectory => Error::NotAFile {
                path,
                found: "a directory",
            },
            _ => Error::Io { path, source },
        }
    }
}

/// cap-std reports a resolution that would leave its directory handle as this
/// PermissionDenied error (it maps the kernel's EXDEV from `RESOLVE_BENEATH` to
/// it too). A raw EXDEV is *not* an escape: `rename` across filesystems gives it.
fn is_escape(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.to_string() == "a path led outside of the filesystem")
}

/// Something in a batch that stops it before anything moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BatchProblem {
    /// What kind of problem, as a stable code.
    pub code: BatchProblemCode,
    /// The pair's index in `renames`, when the problem is about one pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The path at fault.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// The stable codes of [`BatchProblem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchProblemCode {
    /// Nothing exists at `from`.
    SourceMissing,
    /// The same `from` is listed twice.
    DuplicateSource,
    /// Two sources rename to one target.
    DuplicateTarget,
    /// Something exists at `to` and is not itself renamed away in the batch.
    TargetExists,
    /// The folder `to` would be in does not exist (or is not a folder).
    TargetFolderMissing,
    /// A path is outside the allowed folders, or leads out of one.
    OutsideScope,
    /// A path is in another allowed folder than the rest of the batch.
    DifferentRoot,
    /// The batch's allowed folder is read-only.
    ReadOnly,
    /// A path names an allowed folder itself, or no name at all.
    InvalidName,
    /// A target name Windows cannot hold (reserved device names, a trailing
    /// dot or space, `: * ? " < > |`); checked when the device runs on Windows.
    WindowsName,
    /// A path lies inside a folder the same batch renames.
    Nested,
    /// Another batch is running in this folder, or one was interrupted and
    /// not yet recovered.
    BatchInProgress,
}

impl BatchProblemCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchProblemCode::SourceMissing => "source_missing",
            BatchProblemCode::DuplicateSource => "duplicate_source",
            BatchProblemCode::DuplicateTarget => "duplicate_target",
            BatchProblemCode::TargetExists => "target_exists",
            BatchProblemCode::TargetFolderMissing => "target_folder_missing",
            BatchProblemCode::OutsideScope => "outside_scope",
            BatchProblemCode::DifferentRoot => "different_root",
            BatchProblemCode::ReadOnly => "read_only",
            BatchProblemCode::InvalidName => "invalid_name",
            BatchProblemCode::WindowsName => "windows_name",
            BatchProblemCode::Nested => "nested",
            BatchProblemCode::BatchInProgress => "batch_in_progress",
        }
    }
}

impl std::fmt::Display for BatchProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// "3 problems in the batch; nothing was changed: first …; fix them and plan again".
fn batch_problems_message(problems: &[BatchProblem]) -> String {
    let shown: Vec<String> = problems
        .iter()
        .take(3)
        .map(|p| format!("{} ({})", p.message, p.code))
        .collect();
    let more = match problems.len() {
        n if n > 3 => format!("; and {} more (see details.problems)", n - 3),
        _ => String::new(),
    };
    format!(
        "{} problem(s) in the batch, nothing was changed: {}{more}; fix the listed items and plan again",
        problems.len(),
        shown.join("; ")
    )
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_errors_become_outside_scope() {
        let e = io::Error::new(
            io::ErrorKind::PermissionDenied,
            "a path led outside of the filesystem",
        );
        assert_eq!(Error::io(Path::new("x"), e).code(), ErrorCode::OutsideScope);
        let e = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(Error::io(Path::new("x"), e).code(), ErrorCode::PermissionDenied);
    }
}
