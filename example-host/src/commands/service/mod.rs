//! `fusion-host service install | uninstall | status | logs`: keep the device
//! running under the system's supervisor — a systemd unit on Linux (a user
//! unit, or a system one with `--system`, `systemd.rs`), a launchd agent on
//! macOS (`launchd.rs`), a Task Scheduler task of the user on Windows
//! (`windows.rs`). Each is a [`Manager`]; this file is the command.
//!
//! The unit runs `fusion-host run` with this binary and this profile's
//! configuration folder. The token stays in the credentials file (0600 on
//! Unix, the user's profile folder on Windows); the unit holds no secret.
//! The supervisor restarts on failure, but not on the exits that a restart
//! cannot fix: bad configuration (2) and "revoked, pair again" (3).

mod launchd;
mod systemd;
mod windows;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use crate::cli::{Action, Global};
use crate::fail::{Fail, exit};
use crate::settings;

/// The unit's name, on every system.
pub(crate) const UNIT: &str = "fusion-host";

/// Where a unit goes, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

/// How the service's log is read.
pub(crate) enum Logs {
    /// A command that follows it.
    Command(Vec<String>),
    /// A file to follow here.
    Follow(PathBuf),
}

/// One system's supervisor: where its unit goes and the commands that
/// start, stop, show and follow it. Each command is run as given, never
/// through a shell.
pub(crate) trait Manager {
    /// The unit that runs `exe run --config-dir config_dir`.
    fn unit(&self, exe: &Path, config_dir: &Path) -> anyhow::Result<Unit>;
    /// `--system` was asked for; only systemd has it.
    fn refuse_system(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The unit file's bytes.
    fn unit_bytes(&self, text: &str) -> Vec<u8> {
        text.as_bytes().to_vec()
    }
    /// Starts the written unit now and at every log-in; each must succeed.
    fn start(&self, unit: &Unit) -> Vec<Vec<String>>;
    /// Stops it and makes the supervisor forget it (best effort).
    fn stop(&self, unit: &Unit) -> Vec<Vec<String>>;
    /// Run once the unit file is gone.
    fn forgotten(&self) -> Vec<Vec<String>> {
        Vec::new()
    }
    /// Restarts it, so it runs a binary that was replaced.
    fn restart(&self, unit: &Unit) -> Vec<Vec<String>>;
    /// Starts it again once the process it ran has ended by itself.
    fn start_again(&self, unit: &Unit) -> Vec<Vec<String>> {
        self.restart(unit)
    }
    /// Shows whether it runs.
    fn status(&self) -> Vec<String>;
    /// Follows its log.
    fn logs(&self, config_dir: &Path) -> Logs;
    /// When it starts again by itself.
    fn started_again_after(&self) -> &'static str {
        "log-in"
    }
}

/// This system's supervisor.
fn manager(system: bool) -> anyhow::Result<Box<dyn Manager>> {
    let manager: Box<dyn Manager> = if cfg!(target_os = "macos") {
        Box::new(launchd::Launchd)
    } else if cfg!(windows) {
        Box::new(windows::TaskScheduler)
    } else if cfg!(target_os = "linux") {
        Box::new(systemd::Systemd { system })
    } else {
        bail!(
            "`fusion-host service` knows systemd (Linux), launchd (macOS) and Task Scheduler (Windows); on this system run `fusion-host run` from its own supervisor"
        )
    };
    if system {
        manager.refuse_system()?;
    }
    Ok(manager)
}

/// Disables a Windows task after the device was revoked, so it is not
/// started again every minute; `service install` enables it again. The
/// other supervisors do not restart a device that exits revoked.
pub(crate) fn disable_after_revoke(config_dir: &Path) {
    if cfg!(windows) {
        windows::disable_task_after_revoke(config_dir);
    }
}

/// Restarts the installed service, if there is one (the user's, else the
/// machine's systemd unit): after an update, so it runs the new binary.
/// Whether one was restarted.
pub(crate) fn restart_if_installed(config_dir: &Path) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot tell where this binary is")?;
    for system in [false, true] {
        let Ok(manager) = manager(system) else { continue };
        let unit = manager.unit(&exe, config_dir)?;
        if !unit.path.exists() {
            continue;
        }
        for command in manager.restart(&unit) {
            if !run(&command)? {
                bail!("the supervisor did not restart the service; see `fusion-host service status`");
            }
        }
        return Ok(true);
    }
    Ok(false)
}

pub(super) fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set; cannot tell where the service unit goes"))
}

/// Runs one of the supervisor's commands, saying what it ran.
fn run(args: &[String]) -> anyhow::Result<bool> {
    eprintln!("$ {}", args.join(" "));
    match Command::new(&args[0]).args(&args[1..]).status() {
        Ok(status) => Ok(status.success()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "`{}` is not installed; the unit is written but nothing started it",
                args[0]
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot run {}", args[0])),
    }
}

/// `fusion-host --server URL --code CODE --service`, once paired: the
/// current folder becomes the allowed folder when the configuration names
/// none (the folder the pairing line was run in, as for a device run in a
/// terminal), then the service is installed and started.
pub(crate) fn install_here(global: &Global) -> Result<(), Fail> {
    let config_dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = settings::ConfigFile::load(&config_dir)?;
    if config.roots.is_empty() {
        // The checks a device run here makes of its folder (not a whole
        // disk, not the system's own).
        settings::scope(&[], &config, &config_dir).map_err(|error| Fail {
            code: exit::USAGE,
            error,
        })?;
        let here = std::env::current_dir()
            .and_then(dunce::canonicalize)
            .context("cannot read the current directory")?;
        settings::name_root(&config_dir, &here)?;
        println!(
            "✓ allowed folder: {} (`roots` in {})",
            here.display(),
            config_dir.join(settings::CONFIG_FILE).display()
        );
    }
    service(global, Action::Install, false, false)
}

/// `fusion-host service ACTION [--system] [--print]`.
pub(crate) fn service(global: &Global, action: Action, system: bool, print: bool) -> Result<(), Fail> {
    let config_dir = settings::config_dir(global.config_dir.as_deref())?;
    let usage = |error| Fail {
        code: exit::USAGE,
        error,
    };
    let manager = manager(system).map_err(usage)?;
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot tell where this binary is")?;
    let unit = manager.unit(&exe, &config_dir).map_err(usage)?;
    match action {
        Action::Install if print => {
            print!("{}", unit.text);
            Ok(())
        }
        Action::Install => {
            if !config_dir.join(fusion_host::CREDENTIALS_FILE).exists() {
                return Err(usage(anyhow!(
                    "this device is not paired yet ({} has no credentials); pair it first, then install the service",
                    config_dir.display()
                )));
            }
            // A service starts in the supervisor's folder (`/`, the home
            // folder, C:\Windows\System32), never in the one the user meant:
            // it shares only folders named in the configuration.
            let config = settings::ConfigFile::load(&config_dir)?;
            if config.roots.is_empty() {
                return Err(usage(anyhow!(
                    "a service has no current folder to share, so it needs its allowed folders named: add them to {}, e.g. roots = ['{}'] (':ro' at the end of one makes it read-only), then run `fusion-host service install` again",
                    config_dir.join(settings::CONFIG_FILE).display(),
                    if cfg!(windows) {
                        r"C:\Users\me\Scans"
                    } else {
                        "/home/me/scans"
                    },
                )));
            }
            if let Some(parent) = unit.path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&unit.path, manager.unit_bytes(&unit.text))
                .with_context(|| format!("cannot write {}", unit.path.display()))?;
            println!("✓ wrote {}", unit.path.display());
            for command in manager.start(&unit) {
                if !run(&command)? {
                    return Err(anyhow!(
                        "the supervisor did not start the service; see `fusion-host service status`"
                    )
                    .into());
                }
            }
            println!(
                "✓ fusion-host runs as a service now, and again after every {}",
                manager.started_again_after()
            );
            Ok(())
        }
        Action::Uninstall => {
            if !unit.path.exists() {
                println!("no service installed ({} does not exist)", unit.path.display());
                return Ok(());
            }
            for command in manager.stop(&unit) {
                let _ = run(&command);
            }
            std::fs::remove_file(&unit.path)
                .with_context(|| format!("cannot remove {}", unit.path.display()))?;
            for command in manager.forgotten() {
                let _ = run(&command);
            }
            println!("✓ removed {}", unit.path.display());
            Ok(())
        }
        Action::Status => {
            if !unit.path.exists() {
                println!(
                    "not installed ({} does not exist); `fusion-host service install` installs it",
                    unit.path.display()
                );
                return Ok(());
            }
            println!("installed: {}", unit.path.display());
            run(&manager.status())?;
            Ok(())
        }
        Action::Logs => match manager.logs(&config_dir) {
            Logs::Command(command) => {
                run(&command)?;
                Ok(())
            }
            Logs::Follow(log) => follow(&log).map_err(Fail::from),
        },
        Action::Resume => resume(manager.as_ref(), &unit).map_err(Fail::from),
    }
}

/// Under the Windows log-on task, leaves starting the new binary to the
/// task: Task Scheduler does not start the task again while this process
/// runs, so a helper does once it has ended. `None` when this process is
/// not the task's: the task's definition is in this profile and the log goes
/// to a file, as the task runs it (a device run by hand in a terminal
/// writes to the terminal), and never off Windows.
pub(crate) fn restart_by_task(
    exe: &Path,
    config_dir: &Path,
    log_file: Option<&Path>,
) -> Option<std::io::Result<()>> {
    #[cfg(windows)]
    if crate::report::to_log_file() && config_dir.join(windows::TASK_FILE).exists() {
        return Some(windows::resume_task_after_exit(exe, config_dir, log_file));
    }
    let _ = (exe, config_dir, log_file);
    None
}

/// `service resume`: waits for the process that started it to end (it
/// holds this one's standard input, which closes with it), then starts the
/// service again. Task Scheduler ignores a start while the task runs, so a
/// device that updated itself under its task cannot start the new binary
/// as the task itself; this is what it leaves behind to do it.
fn resume(manager: &dyn Manager, unit: &Unit) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    while stdin.read(&mut sink).is_ok_and(|n| n > 0) {}
    if !unit.path.exists() {
        bail!(
            "no service to start again ({} does not exist); start `fusion-host run` by hand",
            unit.path.display()
        );
    }
    // Task Scheduler notes the end of the task's process a moment after it.
    std::thread::sleep(std::time::Duration::from_secs(1));
    for command in manager.start_again(unit) {
        if !run(&command)? {
            bail!(
                "the supervisor did not start the service again; it starts by itself within a minute, or see `fusion-host service status`"
            );
        }
    }
    crate::report::report("✓ started the service again on the new binary");
    Ok(())
}

/// Prints the end of `log`, then what is appended to it, until interrupted
/// (`tail -f`, where there is none).
fn follow(log: &Path) -> anyhow::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(log).with_context(|| {
        format!(
            "cannot open {}; the service writes it once it has run",
            log.display()
        )
    })?;
    let len = file.metadata()?.len();
    // About the last 50 lines.
    let mut at = len.saturating_sub(8 * 1024);
    file.seek(SeekFrom::Start(at))?;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        file.read_to_end(&mut buf)?;
        if !buf.is_empty() {
            let text = String::from_utf8_lossy(&buf);
            let text = if at > 0 && at == len.saturating_sub(8 * 1024) {
                text.split_once('\n').map_or("", |(_, rest)| rest).to_string()
            } else {
                text.into_owned()
            };
            print!("{text}");
            std::io::Write::flush(&mut std::io::stdout())?;
            at += buf.len() as u64;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
