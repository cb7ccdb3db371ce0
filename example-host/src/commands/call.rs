//! `fusion-host call`: one tool, run here, without a server.

use anyhow::Context as _;
use fusion_tools::{Class, Context, Mode, Outcome};
use serde_json::Value;

use crate::cli::Global;
use crate::fail::{Fail, PrintedAsJson, exit};
use crate::settings;

/// `fusion-host call TOOL --input JSON`: one tool, run here, result as JSON.
/// A mutate tool prints its plan unless `--apply`.
pub(crate) fn call(
    global: &Global,
    tool: &str,
    input: &str,
    roots: &[String],
    apply: bool,
) -> Result<(), Fail> {
    let input: Value = serde_json::from_str(input)
        .with_context(|| format!("--input is not valid JSON: {input}"))
        .map_err(|error| Fail {
            code: exit::USAGE,
            error,
        })?;
    let scope = settings::local_scope(global, roots)?;
    let toolbox = crate::toolbox::toolbox();
    let cx = Context::new(&scope);
    let result = match toolbox.class(tool) {
        Some(Class::Mutate) => toolbox
            .call(&cx, tool, Mode::Plan, input.clone(), None)
            .and_then(|planned| match planned {
                Outcome::Plan(plan) if apply => {
                    toolbox.call(&cx, tool, Mode::Apply, input, Some(&plan.precondition))
                }
                other => Ok(other),
            }),
        _ => toolbox.call(&cx, tool, Mode::Run, input, None),
    };
    match result {
        Ok(outcome) => {
            println!("{}", serde_json::to_string_pretty(&outcome.into_value())?);
            Ok(())
        }
        Err(e) => {
            println!("{}", serde_json::to_string_pretty(&e.to_body())?);
            Err(Fail {
                code: 1,
                error: PrintedAsJson(e.into()).into(),
            })
        }
    }
}
