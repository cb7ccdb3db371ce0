//! `fusion-host`, the device binary: it pairs with a web app once, then dials
//! out and answers tool calls inside the folders you allow. It opens no port.
//!
//! `cli.rs` is the command line, `commands/` one file per command, and the
//! rest what the commands share: `settings.rs` (flags, environment,
//! `config.toml`), `fail.rs` (exit codes), `report.rs`, `state_file.rs`,
//! `toolbox.rs` (the tools offered) and `e57las/` (the E57 converter).

mod auto_update;
mod cli;
mod commands;
mod e57las;
mod fail;
mod install;
mod releases;
mod report;
mod settings;
mod state_file;
mod toolbox;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, Target};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.service && cli.command.is_some() {
        <Cli as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--service goes with the pairing line, without a command (`fusion-host --server URL --code CODE --service`); once paired, `fusion-host service install` does the same",
            )
            .exit();
    }
    let filter = match cli.global.verbose {
        0 => "warn,rmcp=error",
        1 => "info,fusion_host=info",
        _ => "debug",
    };
    let env_filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    match &cli.global.log_file {
        Some(path) => {
            let file = match std::fs::OpenOptions::new().create(true).append(true).open(path) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: cannot write the log file {}: {e}", path.display());
                    return ExitCode::from(fail::exit::USAGE);
                }
            };
            report::to_log();
            tracing_subscriber::fmt()
                .with_env_filter(env_filter)
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(env_filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let global = &cli.global;
    let result = runtime.block_on(async {
        match &cli.command {
            None => commands::default(global, cli.server.as_deref(), cli.code.as_deref(), cli.service).await,
            Some(Command::Enroll { server, code, name }) => {
                commands::enroll::enroll(global, server.as_deref(), code, name.as_deref())
                    .await
                    .map(|_| ())
            }
            Some(Command::Login { server, name, qr }) => {
                let args = commands::login::LoginArgs {
                    server: server.as_deref(),
                    name: name.as_deref(),
                    qr: *qr,
                };
                commands::login_then_connect(global, &args).await
            }
            Some(Command::Run { roots, concurrency }) => {
                commands::run::run(global, roots, Some(*concurrency), false).await
            }
            Some(Command::Status { roots }) => commands::status::status(global, roots),
            Some(Command::Doctor { roots }) => commands::doctor::doctor(global, roots).await,
            Some(Command::Logout) => commands::logout::logout(global),
            Some(Command::Tools) => commands::tools::tools(global),
            Some(Command::Call {
                tool,
                input,
                roots,
                apply,
            }) => commands::call::call(global, tool, input, roots, *apply),
            Some(Command::Mcp { roots }) => commands::mcp::mcp(global, roots).await,
            Some(Command::Service {
                action,
                system,
                print,
            }) => commands::service::service(global, *action, *system, *print),
            Some(Command::Rename {
                pattern,
                to,
                matcher,
                sort,
                roots,
                apply,
                rows,
            }) => commands::rename::rename(
                global,
                &commands::rename::RenameArgs {
                    pattern,
                    to,
                    matcher: matcher.as_deref(),
                    order: *sort,
                    roots,
                    apply: *apply,
                    rows: *rows,
                },
            ),
            Some(Command::Update {
                check,
                rollback,
                server,
            }) => {
                let args = commands::update::UpdateArgs {
                    check: *check,
                    rollback: *rollback,
                    server: server.as_deref(),
                };
                commands::update_then_restart(global, &args).await
            }
            Some(Command::Convert {
                from,
                to,
                merge,
                thin_m,
                dir,
            }) => {
                let cli::Source::E57 = from;
                let format = match to {
                    Target::Las => e57las::OutputFormat::Las,
                    Target::Laz => e57las::OutputFormat::Laz,
                    Target::Copc => e57las::OutputFormat::Copc,
                };
                commands::convert::convert(global, dir, merge.as_deref(), format, *thin_m)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            if fail.code == fail::exit::REPAIR
                && let Ok(dir) = settings::config_dir(global.config_dir.as_deref())
            {
                // Revoked: a supervisor that would start it again is told not to.
                commands::service::disable_after_revoke(&dir);
            }
            if global.json && fail.error.downcast_ref::<fail::PrintedAsJson>().is_none() {
                println!(
                    "{}",
                    serde_json::json!({ "event": "error", "message": format!("{:#}", fail.error) })
                );
            }
            if global.log_file.is_some() {
                tracing::error!(code = fail.code, "{:#}", fail.error);
            }
            eprintln!("error: {:#}", fail.error);
            ExitCode::from(fail.code)
        }
    }
}
