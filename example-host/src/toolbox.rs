//! The tools this device offers: the built-in ones plus the scan-to-BIM
//! domain tools.

use fusion_tools::{NamedCommand, Toolbox};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::e57las;

/// Input of `convert_ifc`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConvertIfc {
    /// The IFC model.
    source: String,
    /// The file to create; its extension picks the format (.obj, .dae, .glb, .stp, .svg, ...).
    target: String,
}

pub(crate) fn toolbox() -> Toolbox {
    let mut toolbox = Toolbox::builtin();
    toolbox.add_mutating(e57las::ConvertE57ToLas).add_mutating(
        NamedCommand::<ConvertIfc>::new(
            "convert_ifc",
            "Convert an IFC model to another format with IfcOpenShell's IfcConvert (must be installed).",
            "IfcConvert",
        )
        .input_arg("source")
        .output_arg("target"),
    );
    toolbox
}
