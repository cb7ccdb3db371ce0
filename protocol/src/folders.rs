//! Allowed folders as the manifest lists them.

use serde::{Deserialize, Serialize};

/// Whether a root may be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Read tools only; mutations are refused with `permission_denied`.
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// A root as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RootInfo {
    /// The canonical path.
    pub path: String,
    /// `read_only` or `read_write`.
    pub access: Access,
}
