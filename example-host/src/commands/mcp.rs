//! `fusion-host mcp`: this device's tools for a local MCP client, over
//! stdin/stdout.

use anyhow::Context as _;

use crate::cli::Global;
use crate::fail::Fail;
use crate::settings::{self, VERSION};

/// `fusion-host mcp`: the tools over MCP on stdin/stdout. Nothing but the
/// protocol goes to stdout; notes go to stderr.
pub(crate) async fn mcp(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let scope = settings::local_scope(global, roots)?;
    fusion_host::mcp::LocalMcp::new(crate::toolbox::toolbox(), scope, VERSION)
        .serve_stdio()
        .await
        .context("the MCP connection failed")?;
    Ok(())
}
