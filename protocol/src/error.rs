//! Errors on the wire: the stable codes, and the body both ends send.

use serde::{Deserialize, Serialize};

/// A stable, snake_case error code: what a program matches on.
///
/// The code is part of the protocol; the message beside it is for people and
/// may change. New codes may be added, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The path is outside every allowed folder, or tries to leave one.
    OutsideScope,
    /// Nothing exists at the path.
    NotFound,
    /// Something already exists where the tool would create it.
    AlreadyExists,
    /// The disk changed since the proposal was planned.
    Conflict,
    /// The input is larger than the tool accepts.
    TooLarge,
    /// The path names something that is not a regular file.
    NotAFile,
    /// The path names something that is not a directory.
    NotADirectory,
    /// The file is binary where text was needed.
    BinaryFile,
    /// The input does not match the tool's schema or rules.
    InvalidInput,
    /// The operating system, or a read-only root, refused the operation.
    PermissionDenied,
    /// No tool of that name is registered.
    UnknownTool,
    /// The call was cancelled.
    Cancelled,
    /// The call ran past its deadline.
    Timeout,
    /// A named program is not installed or could not be started.
    ProgramNotFound,
    /// A named program ran and failed.
    ProgramFailed,
    /// An I/O error not covered by a more specific code.
    Io,
    /// A batch has problems found before anything changed; the error's
    /// `details.problems` lists each with a code of its own.
    InvalidBatch,
    /// A step of a batch failed part-way; what was done was rolled back and
    /// the error's `details` says what happened to each item.
    BatchFailed,
    /// Moving a file to or from the server failed (the server refused, or
    /// the connection kept failing).
    TransferFailed,
    /// Bytes did not hash to the SHA-256 they were sent with.
    DigestMismatch,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `"outside_scope"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::OutsideScope => "outside_scope",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotAFile => "not_a_file",
            ErrorCode::NotADirectory => "not_a_directory",
            ErrorCode::BinaryFile => "binary_file",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::UnknownTool => "unknown_tool",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Timeout => "timeout",
            ErrorCode::ProgramNotFound => "program_not_found",
            ErrorCode::ProgramFailed => "program_failed",
            ErrorCode::Io => "io",
            ErrorCode::InvalidBatch => "invalid_batch",
            ErrorCode::BatchFailed => "batch_failed",
            ErrorCode::TransferFailed => "transfer_failed",
            ErrorCode::DigestMismatch => "digest_mismatch",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error as it travels on the wire: `{"code": "...", "message": "..."}`,
/// plus `details` for errors that carry structure (a batch's problems).
///
/// The code is a string, not [`ErrorCode`], so that a peer with a newer set of
/// codes still parses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// The stable snake_case code.
    pub code: String,
    /// A human-readable message that names the input and says what to do.
    pub message: String,
    /// Structured detail, for errors that have it (`invalid_batch`,
    /// `batch_failed`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// An error body from a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            details: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code, from the enum's own schema: a new variant is checked
    /// without anyone listing it.
    fn all_codes() -> Vec<ErrorCode> {
        let schema = schemars::schema_for!(ErrorCode).to_value();
        // Variants with doc comments come as `oneOf` of `const`s.
        let names: Vec<serde_json::Value> = match schema["oneOf"].as_array() {
            Some(variants) => variants
                .iter()
                .flat_map(|v| match v["enum"].as_array() {
                    Some(values) => values.clone(),
                    None => vec![v["const"].clone()],
                })
                .collect(),
            None => schema["enum"].as_array().cloned().unwrap_or_default(),
        };
        assert!(names.len() > 10, "ErrorCode's schema lists its values: {schema}");
        names
            .into_iter()
            .map(|name| serde_json::from_value(name).expect("a listed value reads back"))
            .collect()
    }

    #[test]
    fn code_strings_match_serde() {
        let codes = all_codes();
        assert!(codes.contains(&ErrorCode::TransferFailed), "{codes:?}");
        for code in codes {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.as_str().into()));
        }
    }

    /// `docs/TOOLS.md` names every code a tool can fail with.
    #[test]
    fn tools_md_names_every_code() {
        let doc = include_str!("../../docs/TOOLS.md");
        for code in all_codes() {
            let name = format!("`{}`", code.as_str());
            assert!(doc.contains(&name), "docs/TOOLS.md does not mention {name}");
        }
    }
}
