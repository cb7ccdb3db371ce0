//! The command line: every command and option, as clap reads them.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Let an AI agent on a web app work on files on this machine — inside the
/// folders you allow, with every change shown and approved first.
///
/// The line from /devices pairs and runs (in any shell):
///   fusion-host --server https://app.example.com --code BCDF-GHJK
/// Or approve this machine in the browser instead of copying a code:
///   fusion-host login --server https://app.example.com
#[derive(Debug, Parser)]
#[command(name = "fusion-host", version, verbatim_doc_comment)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    /// Without a command: the web app to pair with (also FUSION_HOST_SERVER).
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// Without a command: the pairing code from its /devices page, like
    /// BCDF-GHJK (also FUSION_HOST_CODE).
    #[arg(long, env = "FUSION_HOST_CODE")]
    pub(crate) code: Option<String>,
    /// Without a command: once paired, keep this device running in the
    /// background, at every log-on, as `fusion-host service install` does
    /// (the current folder becomes its allowed folder when `roots` names
    /// none), instead of running it in this terminal.
    #[arg(long)]
    pub(crate) service: bool,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// What `rename --to` understands, shown by `rename --help`. Clap prints
/// every `{n}` in help text as a line break, so the plain counter is
/// spelled `{n:1}` here, which means the same.
const RENAME_TOKENS: &str = "Tokens: {name} {stem} {ext} {parent}, {n:1} a counter (n in braces; {n:03} three \
     digits, {n:03:100} from 100), {mtime} the modification date ({mtime:%Y%m%d_%H%M} any strftime \
     format, local time), {1}… groups of --match, {{ and }} braces.";

/// Options every command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct Global {
    /// Configuration directory (a profile). Default: the OS's, e.g. ~/.config/fusion-host.
    #[arg(long, env = "FUSION_HOST_CONFIG_DIR", global = true)]
    pub(crate) config_dir: Option<PathBuf>,
    /// Extra CA certificates to trust (PEM), e.g. your organisation's root CA.
    #[arg(long, env = "FUSION_HOST_CA_CERT", global = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// More logging on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Write the log, and what `run` reports, to this file (appended)
    /// instead of the terminal: for a service, which has no console.
    #[arg(long, env = "FUSION_HOST_LOG_FILE", global = true, value_name = "PATH")]
    pub(crate) log_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// macOS, a log-on task of your user in Task Scheduler on Windows. A
    /// service shares the folders `roots` names in config.toml, never the
    /// folder it starts in. `install --print` shows the unit without
    /// writing it.
    Service {
        /// install, uninstall, status or logs.
        #[command(subcommand)]
        action: Action,
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
    #[command(after_help = RENAME_TOKENS)]
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
        #[arg(long, value_enum, default_value_t = Order::Name)]
        sort: Order,
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
    /// Install the release the server offers, verified first (its signature,
    /// SHA-256 and size), keeping this binary for --rollback; a service is
    /// restarted onto it.
    Update {
        /// Only say which version is offered.
        #[arg(long, conflicts_with = "rollback")]
        check: bool,
        /// Go back to the binary the last update replaced.
        #[arg(long)]
        rollback: bool,
        /// Ask this server instead of the one this device is paired with.
        #[arg(long)]
        server: Option<String>,
    },
    /// Convert point clouds: `fusion-host convert e57 --to las|laz|copc [--merge FILE] DIR`.
    Convert {
        /// The input format: E57 scans.
        from: Source,
        /// The output format: LAS, compressed LAZ, or COPC (`.copc.laz`,
        /// compressed and indexed for viewers that stream it).
        #[arg(long = "to")]
        to: Target,
        /// Merge every scan into this file (in DIR) instead of one per scan.
        #[arg(long)]
        merge: Option<String>,
        /// Keep one point per cube of this edge, in metres (0.01: one per
        /// centimetre), for a decimated copy.
        #[arg(long, value_name = "METRES")]
        thin_m: Option<f64>,
        /// The folder with the scans (searched at any depth).
        dir: PathBuf,
    },
}

/// What `convert` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Source {
    E57,
}

/// What `convert` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Target {
    Las,
    Laz,
    Copc,
}

/// What `service` is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub(crate) enum Action {
    /// Write the unit and start it now and at every log-in (boot with --system).
    Install,
    /// Stop the service and remove its unit.
    Uninstall,
    /// Whether the service is installed and running.
    Status,
    /// Follow the service's log.
    Logs,
    /// Wait until standard input closes, then start the service again:
    /// what a device that updated itself under its Windows task leaves
    /// behind, since a task does not start again while it runs.
    #[command(hide = true)]
    Resume,
}

/// How the matched files are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Order {
    /// By path, as listed.
    Name,
    /// Oldest modification first.
    Mtime,
}
