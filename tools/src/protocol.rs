//! Wire types shared by the device and the server: tool descriptors (MCP
//! shaped), modes, classes. The call/result envelopes build on these.

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
