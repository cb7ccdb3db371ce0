//! `fusion-host`, the device binary: it pairs with a web app once, then dials
//! out and answers tool calls inside the folders you allow. It opens no port.

mod device;
mod doctor;
mod e57las;
mod fail;
mod local;
mod rename;
mod service;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fusion_tools::{NamedCommand, Toolbox};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Let an AI agent on a web app work on files on this machine — inside the
/// folders you allow, with every change shown and approved first.
///
/// The one-liner from /devices pairs and runs:
///   FUSION_HOST_SERVER=https://app.example.com FUSION_HOST_CODE=BCDF-GHJK fusion-host
/// Or approve this machine in the browser instead of copying a code:
///   fusion-host login --server https://app.example.com
#[derive(Debug, Parser)]
#[command(name = "fusion-host", version, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Global {
    /// Configuration directory (a profile). Default: the OS's, e.g. ~/.config/fusion-host.
    #[arg(long, env = "FUSION_HOST_CONFIG_DIR", global = true)]
    config_dir: Option<PathBuf>,
    /// Extra CA certificates to trust (PEM), e.g. your organisation's root CA.
    #[arg(long, env = "FUSION_HOST_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Write the log, and what `run` reports, to this file (appended)
    /// instead of the terminal: for a service, which has no console.
    #[arg(long, env = "FUSION_HOST_LOG_FILE", global = true, value_name = "PATH")]
    log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pair this machine with a web app, using a code from its /devices page.
    Enroll {
        /// The web app's address (also FUSION_HOST_SERVER or PULSN_URL).
        #[arg(long)]
        server: Option<String>,
        /// The pairing code, like BCDF-GHJK (also FUSION_HOST_CODE).
        #[arg(long, env = "FUSION_HOST_CODE")]
        code: String,
        /// A name for this device on /devices. Default: the host name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Pair this machine by approving it in the browser: prints a code and
    /// the page to approve it on (press Enter to open it), waits, saves the
    /// credentials and checks that the device connects.
    Login {
        /// The web app's address (also FUSION_HOST_SERVER or PULSN_URL).
        #[arg(long)]
        server: Option<String>,
        /// A name for this device on /devices. Default: the host name.
        #[arg(long)]
        name: Option<String>,
        /// Also show the link as a QR code, to approve from a phone.
        #[arg(long)]
        qr: bool,
    },
    /// Connect and answer calls until stopped (Ctrl-C).
    Run {
        /// An allowed folder, `PATH` or `PATH:ro` for read-only. Repeatable.
        /// Default: `roots` in config.toml, else the current directory.
        #[arg(long = "root", value_name = "PATH[:ro]")]
        roots: Vec<String>,
        /// How many calls run at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Whether this device is paired, running and connected.
    Status {
        /// Allowed folders to report instead of the configured ones.
        #[arg(long = "root", value_name = "PATH[:ro]")]
        roots: Vec<String>,
    },
    /// Check configuration, folders, DNS, TCP, TLS, the token and the clock.
    Doctor {
        /// Allowed folders to check instead of the configured ones.
        #[arg(long = "root", value_name = "PATH[:ro]")]
        roots: Vec<String>,
    },
    /// Forget this device's credentials here.
    Logout,
    /// List the tools this device offers (the MCP tools/list).
    Tools,
    /// Run one tool here and print its result as JSON (a mutate tool prints
    /// its plan unless --apply).
    Call {
        /// The tool's name.
        tool: String,
        /// The tool's input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// An allowed folder, `PATH` or `PATH:ro`. Repeatable.
        #[arg(long = "root", value_name = "PATH[:ro]")]
        roots: Vec<String>,
        /// Apply a mutate tool's plan right away.
        #[arg(long)]
        apply: bool,
    },
    /// Keep this device running under the system's supervisor: a systemd
    /// user unit on Linux (a system unit with --system), a launchd agent on
    /// macOS. `install --print` shows the unit without writing it.
    Service {
        /// install, uninstall, status or logs.
        #[command(subcommand)]
        action: service::Action,
        /// A system-wide unit (Linux, as root) instead of your user's.
        #[arg(long, global = true)]
        system: bool,
        /// With install: print the unit instead of writing it.
        #[arg(long, global = true)]
        print: bool,
    },
    /// Serve this device's tools to a local MCP client (Claude Desktop, an
    /// editor, any MCP client) over stdin/stdout. Opens no port and needs no
    /// pairing; changes are planned first and applied only with the plan's
    /// apply_token (or after the client's own approval prompt).
    Mcp {
        /// An allowed folder, `PATH` or `PATH:ro`. Repeatable.
        /// Default: `roots` in config.toml, else the current directory.
        #[arg(long = "root", value_name = "PATH[:ro]")]
        roots: Vec<String>,
    },
    /// Rename files by a naming schema, as one all-or-nothing batch: prints
    /// the plan as a table; renames only with --apply.
    ///
    /// Example: fusion-host rename 'scans/*.e57' --to '{mtime:%Y-%m-%d}_north_{n:03}.{ext}'
    ///
    /// Tokens: {name} {stem} {ext} {parent}, {n} a counter ({n:03} three digits,
    /// {n:03:100} from 100), {mtime} the modification date ({mtime:%Y%m%d_%H%M}
    /// any strftime format, local time), {1}… groups of --match, {{ and }} braces.
    Rename {
        /// Which files: a glob relative to the first allowed folder
        /// (`scans/*.e57`; `**/*.e57` at any depth).
        pattern: String,
        /// The new name of each file (in its own folder), from tokens.
        #[arg(long = "to", value_name = "TEMPLATE")]
        to: String,
        /// Only files whose name matches this regular expression; its groups
        /// are {1}, {2}… in --to.
        #[arg(long = "match", value_name = "REGEX")]
        matcher: Option<String>,
        /// The order {n} counts in.
        #[arg(long, value_enum, default_value_t = rename::Order::Name)]
        sort: rename::Order,
        /// An allowed folder, `PATH` or `PATH:ro`. Repeatable.
        #[arg(long = "root", value_name = "PATH[:ro]")]
        roots: Vec<String>,
        /// Rename now (otherwise only the plan is printed).
        #[arg(long)]
        apply: bool,
        /// How many rows of the plan to print.
        #[arg(long, default_value_t = 20)]
        rows: usize,
    },
    /// Convert point clouds: `fusion-host convert e57 --to las|laz [--merge FILE] DIR`.
    Convert {
        /// The input format.
        from: Format,
        /// The output format.
        #[arg(long = "to")]
        to: Format,
        /// Merge every scan into this file (in DIR) instead of one per scan.
        #[arg(long)]
        merge: Option<String>,
        /// The folder with the scans (searched at any depth).
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    E57,
    Las,
    Laz,
}

/// Input of `convert_ifc`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConvertIfc {
    /// The IFC model.
    source: String,
    /// The file to create; its extension picks the format (.obj, .dae, .glb, .stp, .svg, ...).
    target: String,
}

/// The built-in tools plus the scan-to-BIM domain tools.
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            device::report_to_log();
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
            None => device::default(global).await,
            Some(Command::Enroll { server, code, name }) => {
                device::do_enroll(global, server.as_deref(), code, name.as_deref())
                    .await
                    .map(|_| ())
            }
            Some(Command::Login { server, name, qr }) => {
                let args = device::LoginArgs {
                    server: server.as_deref(),
                    name: name.as_deref(),
                    qr: *qr,
                };
                device::login(global, &args).await?;
                device::run(global, &[], None, true).await
            }
            Some(Command::Run { roots, concurrency }) => {
                device::run(global, roots, Some(*concurrency), false).await
            }
            Some(Command::Status { roots }) => device::status(global, roots),
            Some(Command::Doctor { roots }) => doctor::doctor(global, roots).await,
            Some(Command::Logout) => device::logout(global),
            Some(Command::Tools) => local::tools(global),
            Some(Command::Call {
                tool,
                input,
                roots,
                apply,
            }) => local::call(global, tool, input, roots, *apply),
            Some(Command::Mcp { roots }) => local::mcp(global, roots).await,
            Some(Command::Service {
                action,
                system,
                print,
            }) => service::service(global, *action, *system, *print),
            Some(Command::Rename {
                pattern,
                to,
                matcher,
                sort,
                roots,
                apply,
                rows,
            }) => rename::rename(
                global,
                &rename::RenameArgs {
                    pattern,
                    to,
                    matcher: matcher.as_deref(),
                    order: *sort,
                    roots,
                    apply: *apply,
                    rows: *rows,
                },
            ),
            Some(Command::Convert { from, to, merge, dir }) => match (*from, *to) {
                (Format::E57, Format::Las) => {
                    local::convert(global, dir, merge.as_deref(), e57las::OutputFormat::Las)
                }
                (Format::E57, Format::Laz) => {
                    local::convert(global, dir, merge.as_deref(), e57las::OutputFormat::Laz)
                }
                _ => Err(fail::Fail {
                    code: fail::exit::USAGE,
                    error: anyhow::anyhow!("only `convert e57 --to las` and `--to laz` are supported"),
                }),
            },
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            if global.json {
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
