//! `fusion-host call`: one tool, run here, without a server.

use std::sync::Mutex;

use anyhow::Context as _;
use fusion_tools::{Class, Context, Mode, Outcome, ProgressSink};
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
    let bar = progress_bar(global);
    let cx = Context::new(&scope).with_progress(progress_to(&bar));
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
    bar.finish_and_clear();
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

/// A bar on a terminal for a tool that says how far it has come (`hash_file`
/// a large file, a conversion); nothing when stderr is not a terminal or
/// with `--json`, so scripts read exactly one JSON document.
fn progress_bar(global: &Global) -> indicatif::ProgressBar {
    if global.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::no_length().with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Drawn only once a tool reports: a quick call shows nothing.
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar
}

/// The tool's reports, onto `bar`.
fn progress_to(bar: &indicatif::ProgressBar) -> ProgressSink {
    let (bar, said) = (bar.clone(), Mutex::new(String::new()));
    ProgressSink::new(move |done, total, what| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
        if let Ok(mut said) = said.lock()
            && *said != what
        {
            what.clone_into(&mut said);
            bar.set_message(what.to_string());
        }
    })
}
