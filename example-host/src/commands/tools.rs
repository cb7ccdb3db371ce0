//! `fusion-host tools`: the tools this device offers.

use crate::cli::Global;
use crate::fail::Fail;

/// `fusion-host tools`: the manifest.
pub(crate) fn tools(global: &Global) -> Result<(), Fail> {
    let manifest = crate::toolbox::toolbox().manifest();
    if global.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    for tool in &manifest.tools {
        let summary = tool.description.split(". ").next().unwrap_or_default();
        println!("{:<20} {:<7} {summary}", tool.name, tool.class.as_str());
    }
    Ok(())
}
