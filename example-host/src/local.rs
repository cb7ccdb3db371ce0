//! Commands that run tools locally, without a server: `tools`, `call`,
//! `convert e57`.

use std::path::Path;

use anyhow::Context as _;
use fusion_tools::{Access, Class, Context, Mode, Outcome, Scope};
use serde_json::Value;

use crate::Global;
use crate::e57las;
use crate::fail::{Fail, exit};
use crate::settings::{self, ConfigFile};

/// `fusion-host tools`: the manifest.
pub(crate) fn tools(global: &Global) -> Result<(), Fail> {
    let manifest = crate::toolbox().manifest();
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
    let scope = local_scope(global, roots)?;
    let toolbox = crate::toolbox();
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
                error: e.into(),
            })
        }
    }
}

/// The allowed folders of a command that works here, without a server
/// (`call`, `rename`, `mcp`): from `--root`, else the configuration. A rename
/// batch a crash interrupted is finished or rolled back first, and said so
/// on stderr (stdout may be a protocol).
pub(crate) fn local_scope(global: &Global, roots: &[String]) -> Result<Scope, Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let scope = settings::scope(roots, &config, &dir).map_err(|error| Fail {
        code: exit::USAGE,
        error,
    })?;
    for recovery in fusion_tools::recover_renames(&scope) {
        eprintln!("! {recovery}");
    }
    Ok(scope)
}

/// `fusion-host mcp`: the tools over MCP on stdin/stdout. Nothing but the
/// protocol goes to stdout; notes go to stderr.
pub(crate) async fn mcp(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let scope = local_scope(global, roots)?;
    fusion_host::mcp::LocalMcp::new(crate::toolbox(), scope, crate::device::VERSION)
        .serve_stdio()
        .await
        .context("the MCP connection failed")?;
    Ok(())
}

/// `fusion-host convert e57 --to las [--merge FILE] DIR`.
pub(crate) fn convert(
    global: &Global,
    dir: &Path,
    merge: Option<&str>,
    to: e57las::OutputFormat,
) -> Result<(), Fail> {
    let scope = Scope::single(dir, Access::ReadWrite)?;
    // Ctrl-C stops the conversion at its next step; the half-written file
    // is removed on the way out instead of being left behind.
    let cancel = fusion_tools::Cancellation::new();
    let interrupt = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping… (the file being written is removed)");
                cancel.cancel();
            }
        })
    };
    let _stop_listening = AbortOnDrop(interrupt);
    let cx = Context::new(&scope).with_cancellation(cancel);
    let root = scope.roots()[0].path().display().to_string();
    let scans = e57las::collect_scans(&cx, &[root])?;
    let merge = merge.map(|m| {
        // A bare name gets the format's extension.
        if Path::new(m).extension().is_some() {
            m.to_string()
        } else {
            format!(
                "{m}.{}",
                if to == e57las::OutputFormat::Laz {
                    "laz"
                } else {
                    "las"
                }
            )
        }
    });
    let (jobs, _) = e57las::jobs(&cx, &scans, merge.as_deref(), merge.is_none().then_some(to))?;
    let total: u64 = jobs.iter().map(|j| j.points).sum();
    let bar = if global.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} points ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    };
    let mut done = 0;
    for job in &jobs {
        bar.set_message(
            Path::new(&job.output)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let written = e57las::convert(&cx, job, &mut |n| bar.set_position(done + n))?;
        done += written;
        if global.json {
            println!(
                "{}",
                serde_json::json!({ "output": job.output, "points": written, "sources": job.sources })
            );
        } else {
            bar.println(format!("✓ {} ({written} points)", job.output));
        }
    }
    bar.finish_and_clear();
    if !global.json {
        println!(
            "converted {} scan(s) into {} {} file(s), {done} points",
            scans.len(),
            jobs.len(),
            if to == e57las::OutputFormat::Laz {
                "LAZ"
            } else {
                "LAS"
            }
        );
    }
    Ok(())
}

/// Stops a background task when the command ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
