//! The device protocol's messages: tool descriptors (MCP shaped), modes,
//! classes, and the call and result envelopes built on them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The class of a tool: how consent works for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Runs on arrival and changes nothing.
    Read,
    /// Two-phase: planned, approved by a person, then applied.
    Mutate,
    /// Runs on arrival, with an effect outside the file tree (opens a window).
    Action,
}

impl Class {
    /// The class as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Mutate => "mutate",
            Class::Action => "action",
        }
    }
}

/// Tools that answer at once (a listing, a read, a stat, opening a window):
/// never worth a background task.
const QUICK_TOOLS: [&str; 5] = ["list_directory", "read_file", "stat", "open_path", "reveal_in_os"];

/// Whether a call of `tool` may take long enough that an MCP client that
/// follows tasks should get it as one: every change (it waits for a
/// person, then runs), and every read that can take long — a grep, a hash,
/// an upload, a domain tool.
pub fn runs_long(tool: &str, class: Class) -> bool {
    class == Class::Mutate || !QUICK_TOOLS.contains(&tool)
}

/// How a call asks a tool to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Read and action tools: run now.
    Run,
    /// Mutate tools: dry run, return the plan.
    Plan,
    /// Mutate tools: re-verify the approved plan's precondition, then act.
    Apply,
}

impl Mode {
    /// The mode as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Plan => "plan",
            Mode::Apply => "apply",
        }
    }
}

/// MCP tool annotations. All four hints are always present and honest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Annotations {
    /// True for read tools only.
    pub read_only_hint: bool,
    /// True when applying may destroy or overwrite data.
    pub destructive_hint: bool,
    /// True when repeating the call has no further effect.
    pub idempotent_hint: bool,
    /// True when the tool reaches beyond the allowed folders (the OS opener).
    pub open_world_hint: bool,
}

/// One tool as MCP's `tools/list` describes it, plus its class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ToolDescriptor {
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of the input (an object schema).
    pub input_schema: Value,
    /// JSON Schema of the structured output, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// MCP hints.
    pub annotations: Annotations,
    /// Read, mutate or action, under MCP's extension key `_meta`.
    #[serde(rename = "_meta", with = "class_meta")]
    #[schemars(with = "Value")]
    pub class: Class,
}

/// A valid MCP `tools/list` result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ToolList {
    /// The tools, sorted by name.
    pub tools: Vec<ToolDescriptor>,
}

/// `class` travels as `"_meta": {"fusion-host/class": "mutate"}`, where MCP
/// allows implementation-specific data.
mod class_meta {
    use super::Class;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Meta {
        #[serde(rename = "fusion-host/class")]
        class: Class,
    }

    pub(super) fn serialize<S: Serializer>(class: &Class, s: S) -> Result<S::Ok, S::Error> {
        Meta { class: *class }.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Class, D::Error> {
        Meta::deserialize(d).map(|m| m.class)
    }
}

/// The protocol version this crate speaks. Sent by the device in the
/// [`PROTOCOL_HEADER`] header and by the server in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The request header carrying the device's protocol version.
pub const PROTOCOL_HEADER: &str = "fusion-host-protocol";

/// Every device token starts with this, so a leaked one is recognizable.
pub const TOKEN_PREFIX: &str = "fh_";

/// `POST /enroll` request: a pairing code exchanged for a device token.
///
/// Wire types ignore unknown fields, so a newer peer can add optional ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnrollRequest {
    /// The pairing code, `XXXX-XXXX` (case and dashes do not matter).
    pub code: String,
    /// A name for the device, shown on `/devices`.
    pub name: String,
    /// Operating system and architecture, e.g. `linux-x86_64`.
    pub platform: String,
    /// The device binary's version.
    pub host_version: String,
}

/// `POST /enroll` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EnrollResponse {
    /// The server-issued device id.
    pub device_id: String,
    /// The name the server gave the device: the one it asked for, or with
    /// ` (2)`, ` (3)`, … when the owner has a device of that name already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The bearer token, shown once: `fh_<device_id>.<secret>`.
    pub token: String,
    /// The user who minted the code and now owns the device.
    pub owner: String,
    /// How the owner is shown to people (an email address), when the server
    /// knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_label: Option<String>,
    /// The server's clock, RFC 3339, for skew checks.
    pub server_time: String,
    /// The protocol version the server speaks.
    pub protocol_version: u32,
}

/// The OAuth `client_id` a device sends in the device authorization flow
/// (`POST /device/code`, `POST /device/token`; RFC 8628).
pub const DEVICE_CLIENT_ID: &str = "fusion-host";

/// RFC 8628's `grant_type` for exchanging a device code.
pub const DEVICE_CODE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What `POST /device/token` answers beside RFC 6749's `access_token` and
/// `token_type` once a person approved the device: who it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceGrant {
    /// The server-issued device id.
    pub device_id: String,
    /// The name the server gave the device: the one it asked for, or with
    /// ` (2)`, ` (3)`, … when the owner has a device of that name already.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user who approved the device and now owns it.
    pub owner: String,
    /// How the owner is shown to people (an email address), when the server
    /// knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_label: Option<String>,
    /// The server's clock, RFC 3339.
    pub server_time: String,
    /// The protocol version the server speaks.
    pub protocol_version: u32,
}

/// `PUT /manifest` body: what the device offers, sent on every connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DeviceManifest {
    /// The device binary's version.
    pub host_version: String,
    /// The tools, as an MCP `tools/list` would list them.
    pub tools: Vec<ToolDescriptor>,
    /// The allowed folders.
    pub roots: Vec<crate::RootInfo>,
}

impl DeviceManifest {
    /// The class of a tool the device offers.
    pub fn class_of(&self, tool: &str) -> Option<Class> {
        self.tools.iter().find(|t| t.name == tool).map(|t| t.class)
    }
}

/// SSE event `hello`: the first event on every stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HelloEvent {
    /// The device this stream belongs to.
    pub device_id: String,
    /// This stream's id; a newer stream replaces it.
    pub session_id: String,
    /// The server sends something (an event or a `: ping` comment) at least this often.
    pub heartbeat_ms: u64,
    /// The protocol version the server speaks.
    pub protocol_version: u32,
    /// How the device's owner (and the server's operator) want this device
    /// kept up to date; absent from servers that say nothing, which a
    /// device takes as "no automatic updates".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updates: Option<crate::UpdatePolicy>,
}

/// SSE event `call`: run a tool. The SSE `id` is the stream's event id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallEvent {
    /// Unique per call; the result names it, and the device never applies the same id twice.
    pub call_id: String,
    /// The tool's name.
    pub tool: String,
    /// `run`, `plan` or `apply`.
    pub mode: Mode,
    /// The tool's input.
    pub input: Value,
    /// How long the server waits for the result.
    pub timeout_ms: u64,
    /// For `apply`: the approved proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal_id: Option<String>,
    /// For `apply`: the approved plan's precondition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precondition: Option<crate::Precondition>,
}

/// SSE event `cancel`: stop a call; its result is no longer awaited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CancelEvent {
    /// The call to stop.
    pub call_id: String,
    /// `timeout` or `caller_gone`.
    pub reason: String,
}

/// SSE events `revoked` and `replaced`, sent just before the server closes the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClosingEvent {
    /// What happened and what to do.
    pub message: String,
}

/// `POST /result` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallResult {
    /// The call this answers.
    pub call_id: String,
    /// Whether the tool succeeded.
    pub ok: bool,
    /// The output (or, for `plan`, the plan) when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// The error when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorBody>,
    /// Whether a bound cut the output short.
    #[serde(default)]
    pub truncated: bool,
    /// How long the tool ran on the device.
    #[serde(default)]
    pub duration_ms: u64,
}

/// `POST /progress` body: how far a running call has come, as its tool
/// counts (points converted, bytes hashed). At most one a second per call;
/// the server passes it on to whoever waits for the call, if anyone does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CallProgress {
    /// The call, as its `call` event named it.
    pub call_id: String,
    /// Units done so far; never decreases within a call.
    pub done: u64,
    /// Units in all, when the tool knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// What the units are and where the tool is, for people (at most 200
    /// printable characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl CallProgress {
    /// The report for people: "convert_e57_to_las: 3200000 of 10000000
    /// points written".
    pub fn describe(&self, tool: &str) -> String {
        let what = self.message.as_deref().unwrap_or("done");
        match self.total {
            Some(total) => format!("{tool}: {} of {total} {what}", self.done),
            None => format!("{tool}: {} {what}", self.done),
        }
    }
}

/// `POST /result` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ResultAck {
    /// True when this post delivered the result; false for a duplicate.
    pub accepted: bool,
}
