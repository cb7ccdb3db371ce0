//! The fusion-host wire: one definition of what the device and the server
//! say to each other, imported by both ends.
//!
//! - [`wire`](crate#reexports): enrolment, the manifest, the stream's events
//!   ([`HelloEvent`], [`CallEvent`], [`CancelEvent`], [`ClosingEvent`]) and
//!   the result a device posts back ([`CallResult`]);
//! - tools as MCP describes them ([`ToolDescriptor`]), with their consent
//!   [`Class`] and the [`Mode`] a call runs in;
//! - a mutate tool's [`Plan`]: its effects and the [`Precondition`] that
//!   apply checks again, path by path ([`PathState`]);
//! - the stable error codes ([`ErrorCode`]) and the body every error travels
//!   in ([`ErrorBody`]);
//! - [`write_hashing`]: a verified transfer's receiving end, shared by the
//!   device and the server;
//! - a release's signed [`ReleaseManifest`], which `fusion-host update`
//!   reads.
//!
//! Nothing here touches a filesystem or a network: the device's tools live
//! in `fusion-tools`, the dispatcher in `fusion-host-server`.
//!
//! ```
//! use fusion_protocol::{CallEvent, Mode, PathState, Plan};
//!
//! // A call as the server pushes it down a device's stream.
//! let call: CallEvent = serde_json::from_value(serde_json::json!({
//!     "call_id": "call_1",
//!     "tool": "write_file",
//!     "mode": "plan",
//!     "input": { "path": "notes.txt", "content": "hello\n" },
//!     "timeout_ms": 30000,
//! }))
//! .unwrap();
//! assert_eq!(call.mode, Mode::Plan);
//!
//! // The plan that comes back pins the path's state for apply.
//! let plan: Plan = serde_json::from_value(serde_json::json!({
//!     "summary": "create notes.txt (6 bytes)",
//!     "effects": [{ "op": "create_file", "path": "/data/notes.txt", "bytes": 6 }],
//!     "effects_total": 1,
//!     "truncated": false,
//!     "precondition": { "expect": [{ "path": "/data/notes.txt", "state": { "kind": "absent" } }] },
//! }))
//! .unwrap();
//! assert_eq!(plan.precondition.expect[0].state, PathState::Absent);
//! ```

mod digest;
mod error;
mod folders;
mod plan;
mod release;
mod text;
mod wire;

pub use digest::{Gather, Written, write_hashing};
pub use error::{ErrorBody, ErrorCode};
pub use folders::{Access, RootInfo};
pub use plan::{Effect, EffectOp, EntryKind, Expectation, MAX_PLAN_EFFECTS, PathState, Plan, Precondition};
pub use release::{
    Artifact, ArtifactKind, MANIFEST_FORMAT, RELEASES_PATH, ReleaseManifest, UpdatePolicy, UpdateReport,
    UpdateStatus, current_target, is_plain_file_name,
};
pub use text::output_text;
pub use wire::{
    Annotations, CallEvent, CallProgress, CallResult, CancelEvent, Class, ClosingEvent, DEVICE_CLIENT_ID,
    DEVICE_CODE_GRANT_TYPE, DeviceGrant, DeviceManifest, EnrollRequest, EnrollResponse, HelloEvent, Mode,
    PROTOCOL_HEADER, PROTOCOL_VERSION, ResultAck, TOKEN_PREFIX, ToolDescriptor, ToolList, runs_long,
};
