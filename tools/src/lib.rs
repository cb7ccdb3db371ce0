//! The local-tool contract of fusion-host, the sandboxed [`Scope`], and the
//! seventeen built-in filesystem tools.
//!
//! A tool is the MCP triple — name, description, a JSON Schema for its input
//! derived from a Rust type — plus a [`Class`]:
//!
//! * **read** tools ([`Tool`]) run on arrival and change nothing;
//! * **action** tools ([`Tool`]) run on arrival with an effect outside the
//!   file tree (opening a window);
//! * **mutate** tools ([`MutateTool`]) are two-phase: [`MutateTool::plan`]
//!   returns the exact effect and a [`Precondition`] without touching disk; a
//!   person approves; apply plans again, refuses with `conflict` if anything
//!   changed, and only then acts.
//!
//! Every path goes through a [`Scope`]: a set of canonical roots, each held
//! open as a directory handle. Operations resolve paths *beneath the handle*
//! (cap-std), so `..`, symlinks that leave the root and a parent swapped for a
//! symlink mid-operation are refused by construction, not by a string check.
//!
//! A [`Toolbox`] holds tools, validates input against their types (errors
//! name the field), dispatches by name, and produces the manifest: a valid MCP
//! `tools/list` result.
//!
//! # Example: declaring a domain tool
//!
//! ```
//! use fusion_tools::{Access, Context, Mode, Scope, Tool, ToolSpec, Toolbox};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! /// Counts the `.e57` scans in a folder.
//! struct CountScans;
//!
//! #[derive(Deserialize, JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct CountScansInput {
//!     /// The folder to look in.
//!     folder: String,
//! }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct CountScansOutput {
//!     scans: usize,
//! }
//!
//! impl Tool for CountScans {
//!     type Input = CountScansInput;
//!     type Output = CountScansOutput;
//!
//!     fn spec(&self) -> ToolSpec {
//!         ToolSpec::read("count_scans", "Count the E57 scans in a folder.")
//!     }
//!
//!     fn run(&self, cx: &Context<'_>, input: CountScansInput) -> fusion_tools::Result<CountScansOutput> {
//!         // Built-in tools compose: reuse `glob` rather than walking by hand.
//!         let found = Toolbox::builtin().call(
//!             cx,
//!             "glob",
//!             Mode::Run,
//!             serde_json::json!({ "pattern": "*.e57", "path": input.folder }),
//!             None,
//!         )?;
//!         let scans = found.into_value()["matches"].as_array().map_or(0, Vec::len);
//!         Ok(CountScansOutput { scans })
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("north.e57"), b"")?;
//! std::fs::write(dir.path().join("notes.txt"), b"")?;
//!
//! let scope = Scope::single(dir.path(), Access::ReadOnly)?;
//! let mut toolbox = Toolbox::builtin();
//! toolbox.add(CountScans);
//!
//! let cx = Context::new(&scope);
//! let out = toolbox.call(&cx, "count_scans", Mode::Run, serde_json::json!({ "folder": "." }), None)?;
//! assert_eq!(out.into_value()["scans"], 1);
//!
//! // Paths outside the allowed folder are refused with a stable code.
//! let err = toolbox
//!     .call(&cx, "count_scans", Mode::Run, serde_json::json!({ "folder": "../.." }), None)
//!     .unwrap_err();
//! assert_eq!(err.code().as_str(), "outside_scope");
//!
//! // The manifest is a valid MCP `tools/list` result.
//! let manifest = serde_json::to_value(toolbox.manifest())?;
//! assert_eq!(manifest["tools"].as_array().unwrap().len(), 18);
//! # Ok(())
//! # }
//! ```
//!
//! Programs are wrapped with [`NamedCommand`]: a fixed program and an
//! argument template whose path slots are resolved through the scope.

mod builtin;
mod error;
mod fence;
mod fingerprint;
mod fsutil;
mod pending;
mod scope;
mod shell;
mod tool;
mod walk;

pub use builtin::*;
pub use error::{BatchProblem, BatchProblemCode, Error, Result};
pub use fence::Fenced;
// The wire, defined once in `fusion-protocol` and spoken by this crate's tools.
pub use fusion_protocol::{
    Access, Annotations, CallEvent, CallProgress, CallResult, CancelEvent, Class, ClosingEvent,
    DEVICE_CLIENT_ID, DEVICE_CODE_GRANT_TYPE, DeviceGrant, DeviceManifest, Effect, EffectOp, EnrollRequest,
    EnrollResponse, EntryKind, ErrorBody, ErrorCode, Expectation, Gather, HelloEvent, MAX_PLAN_EFFECTS, Mode,
    PROTOCOL_HEADER, PROTOCOL_VERSION, PathState, Plan, Precondition, ResultAck, RootInfo, TOKEN_PREFIX,
    ToolDescriptor, ToolList, UpdatePolicy, UpdateReport, UpdateStatus, Written, output_text, runs_long,
    write_hashing,
};
pub use pending::{PendingFile, STALE_PARTIAL};
pub use scope::{Location, Root, Scope};
pub use shell::{CommandOutput, DEFAULT_PROGRAM_TIMEOUT, MAX_CAPTURE_BYTES, NamedCommand, run_program};
pub use tool::{Cancellation, Context, MutateTool, Outcome, ProgressSink, Tool, ToolSpec, Toolbox};
