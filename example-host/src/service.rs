//! `fusion-host service install | uninstall | status | logs`: keep the device
//! running under the system's supervisor — a systemd unit on Linux (a user
//! unit, or a system one with `--system`), a launchd agent on macOS, a
//! Task Scheduler task of the user on Windows.
//!
//! The unit runs `fusion-host run` with this binary and this profile's
//! configuration folder. The token stays in the credentials file (0600 on
//! Unix, the user's profile folder on Windows); the unit holds no secret.
//! The supervisor restarts on failure, but not on the exits that a restart
//! cannot fix: bad configuration (2) and "revoked, pair again" (3).
//!
//! Windows: a per-user scheduled task, not a Windows service. A service
//! runs as a service account (or needs the user's password stored to run as
//! them), while the allowed folders are the user's, often on drives mapped
//! at their log-on. The task starts at log-on, as the user, without
//! elevation. Task Scheduler restarts a task that fails to start, not one
//! whose program exits non-zero, so the task also starts every minute while
//! not running (a second instance is never started): a crash costs at most
//! a minute. A device that exits revoked disables its task, so it is not
//! started again until it is paired and `service install` runs again.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use crate::Global;
use crate::fail::{Fail, exit};
use crate::settings;

/// The unit's name, on every system.
pub(crate) const UNIT: &str = "fusion-host";

/// launchd's label.
pub(crate) const LABEL: &str = "dev.fusion-host.device";

/// The task's definition, kept in the profile folder on Windows.
pub(crate) const TASK_FILE: &str = "fusion-host-task.xml";

/// The log a Windows task writes (it has no console).
pub(crate) const LOG_FILE: &str = "fusion-host.log";

/// What `service` was asked to do.
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
}

/// Where a unit goes, and how it is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

/// The systemd unit that runs `exe run --config-dir config_dir`.
pub(crate) fn systemd_unit(exe: &Path, config_dir: &Path, system: bool) -> String {
    let wanted_by = if system {
        "multi-user.target"
    } else {
        "default.target"
    };
    format!(
        "# Written by `fusion-host service install`; remove with `fusion-host service uninstall`.\n\
         [Unit]\n\
         Description=fusion-host device: this computer's allowed folders for the web app\n\
         Documentation=https://github.com/fusion-host/fusion-host\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} run --config-dir {}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # 2: bad configuration, 3: revoked (pair again). A restart fixes neither.\n\
         RestartPreventExitStatus={} {}\n\
         # The first SIGTERM finishes the call in progress (at most 5 s).\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=15\n\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n",
        systemd_quote(exe),
        systemd_quote(config_dir),
        exit::USAGE,
        exit::REPAIR,
    )
}

/// A path as one systemd command-line word.
fn systemd_quote(path: &Path) -> String {
    let s = path.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s
    } else {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%")
        )
    }
}

/// The launchd agent that runs `exe run --config-dir config_dir`, kept alive
/// while it exits with failure (launchd cannot tell exit codes apart, so a
/// revoked device is restarted every `ThrottleInterval` and says so in its log).
pub(crate) fn launchd_plist(exe: &Path, config_dir: &Path, log: &Path) -> String {
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `fusion-host service install`; remove with `fusion-host service uninstall`. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{}</string>
    <string>run</string>
    <string>--config-dir</string>
    <string>{}</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>5</integer>
  <key>StandardOutPath</key>
  <string>{}</string>
  <key>StandardErrorPath</key>
  <string>{}</string>
</dict>
</plist>
"#,
        esc(exe),
        esc(config_dir),
        esc(log),
        esc(log),
    )
}

/// The Task Scheduler task that runs `exe run --config-dir config_dir
/// --log-file log` for `user` (`DOMAIN\\name`) at log-on, and every minute
/// it is not running.
pub(crate) fn windows_task(exe: &Path, config_dir: &Path, log: &Path, user: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    // One argument per quoted path; a trailing backslash would escape the
    // closing quote for the program's argument parser.
    let arg = |p: &Path| format!("\"{}\"", p.display().to_string().trim_end_matches('\\'));
    let arguments = format!("run --config-dir {} --log-file {}", arg(config_dir), arg(log));
    format!(
        r#"<?xml version="1.0" encoding="UTF-16"?>
<!-- Written by `fusion-host service install`; remove with `fusion-host service uninstall`. -->
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>fusion-host device: this computer's allowed folders for the web app</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{user}</UserId>
    </LogonTrigger>
    <TimeTrigger>
      <Enabled>true</Enabled>
      <StartBoundary>2000-01-01T00:00:00</StartBoundary>
      <Repetition>
        <Interval>PT1M</Interval>
        <StopAtDurationEnd>false</StopAtDurationEnd>
      </Repetition>
    </TimeTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{user}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <StartWhenAvailable>true</StartWhenAvailable>
    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>
    <IdleSettings>
      <StopOnIdleEnd>false</StopOnIdleEnd>
      <RestartOnIdle>false</RestartOnIdle>
    </IdleSettings>
    <AllowStartOnDemand>true</AllowStartOnDemand>
    <Enabled>true</Enabled>
    <Hidden>false</Hidden>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure>
      <Interval>PT1M</Interval>
      <Count>999</Count>
    </RestartOnFailure>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{}</Command>
      <Arguments>{}</Arguments>
    </Exec>
  </Actions>
</Task>
"#,
        esc(&exe.display().to_string()),
        esc(&arguments),
        user = esc(user),
    )
}

/// The user a Windows task runs as: `DOMAIN\name` from the environment.
fn windows_user() -> anyhow::Result<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let name =
        var("USERNAME").ok_or_else(|| anyhow!("USERNAME is not set; cannot tell whose task to write"))?;
    Ok(match var("USERDOMAIN") {
        Some(domain) => format!("{domain}\\{name}"),
        None => name,
    })
}

/// Task Scheduler reads a definition file as UTF-16 with a byte order mark.
fn utf16_with_bom(text: &str) -> Vec<u8> {
    std::iter::once(0xfeff_u16)
        .chain(text.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Disables the Windows task after the device was revoked, so it is not
/// started again every minute; `service install` enables it again.
pub(crate) fn disable_task_after_revoke(config_dir: &Path) {
    if !cfg!(windows) || !config_dir.join(TASK_FILE).exists() {
        return;
    }
    match Command::new("schtasks")
        .args(["/Change", "/TN", UNIT, "/DISABLE"])
        .output()
    {
        Ok(out) if out.status.success() => eprintln!(
            "The fusion-host task is disabled until this device is paired again and `fusion-host service install` runs."
        ),
        _ => eprintln!("could not disable the fusion-host task; run `fusion-host service uninstall`"),
    }
}

fn home() -> anyhow::Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("HOME is not set; cannot tell where the service unit goes"))
}

/// The unit for this system, this binary and this profile.
pub(crate) fn unit(config_dir: &Path, system: bool) -> anyhow::Result<Unit> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("cannot tell where this binary is")?;
    if cfg!(target_os = "macos") {
        if system {
            bail!("--system is for Linux; on macOS the service is a launchd agent of your user");
        }
        let log = config_dir.join("fusion-host.log");
        return Ok(Unit {
            path: home()?
                .join("Library/LaunchAgents")
                .join(format!("{LABEL}.plist")),
            text: launchd_plist(&exe, config_dir, &log),
        });
    }
    if cfg!(windows) {
        if system {
            bail!("--system is for Linux; on Windows the service is a scheduled task of your user");
        }
        return Ok(Unit {
            path: config_dir.join(TASK_FILE),
            text: windows_task(&exe, config_dir, &config_dir.join(LOG_FILE), &windows_user()?),
        });
    }
    if cfg!(target_os = "linux") {
        let dir = if system {
            PathBuf::from("/etc/systemd/system")
        } else {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .map_or_else(|| home().map(|h| h.join(".config")), Ok)?
                .join("systemd/user")
        };
        return Ok(Unit {
            path: dir.join(format!("{UNIT}.service")),
            text: systemd_unit(&exe, config_dir, system),
        });
    }
    bail!(
        "`fusion-host service` knows systemd (Linux), launchd (macOS) and Task Scheduler (Windows); on this system run `fusion-host run` from its own supervisor"
    )
}

fn supervisor(system: bool) -> Vec<String> {
    if cfg!(windows) {
        vec!["schtasks".into()]
    } else if cfg!(target_os = "macos") {
        vec!["launchctl".into()]
    } else if system {
        vec!["systemctl".into()]
    } else {
        vec!["systemctl".into(), "--user".into()]
    }
}

/// Runs the supervisor's command, saying what it ran.
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

/// `fusion-host service ACTION [--system] [--print]`.
pub(crate) fn service(global: &Global, action: Action, system: bool, print: bool) -> Result<(), Fail> {
    let config_dir = settings::config_dir(global.config_dir.as_deref())?;
    let unit = unit(&config_dir, system).map_err(|error| Fail {
        code: exit::USAGE,
        error,
    })?;
    let sup = supervisor(system);
    let with = |more: &[&str]| -> Vec<String> {
        sup.iter()
            .cloned()
            .chain(more.iter().map(|s| s.to_string()))
            .collect()
    };
    match action {
        Action::Install if print => {
            print!("{}", unit.text);
            Ok(())
        }
        Action::Install => {
            if !config_dir.join(fusion_host::CREDENTIALS_FILE).exists() {
                return Err(Fail {
                    code: exit::USAGE,
                    error: anyhow!(
                        "this device is not paired yet ({} has no credentials); pair it first, then install the service",
                        config_dir.display()
                    ),
                });
            }
            if let Some(parent) = unit.path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            let bytes = if cfg!(windows) {
                utf16_with_bom(&unit.text)
            } else {
                unit.text.clone().into_bytes()
            };
            std::fs::write(&unit.path, bytes)
                .with_context(|| format!("cannot write {}", unit.path.display()))?;
            println!("✓ wrote {}", unit.path.display());
            let path = unit.path.display().to_string();
            let started = if cfg!(windows) {
                run(&with(&["/Create", "/TN", UNIT, "/XML", &path, "/F"]))?
                    && run(&with(&["/Run", "/TN", UNIT]))?
            } else if cfg!(target_os = "macos") {
                run(&with(&["load", "-w", &unit.path.display().to_string()]))?
            } else {
                run(&with(&["daemon-reload"]))?
                    && run(&with(&["enable", "--now", &format!("{UNIT}.service")]))?
            };
            if !started {
                return Err(anyhow!(
                    "the supervisor did not start the service; see `fusion-host service status`"
                )
                .into());
            }
            println!(
                "✓ fusion-host runs as a service now, and again after every {}",
                if system { "boot" } else { "log-in" }
            );
            Ok(())
        }
        Action::Uninstall => {
            if !unit.path.exists() {
                println!("no service installed ({} does not exist)", unit.path.display());
                return Ok(());
            }
            let _ = if cfg!(windows) {
                let _ = run(&with(&["/End", "/TN", UNIT]));
                run(&with(&["/Delete", "/TN", UNIT, "/F"]))
            } else if cfg!(target_os = "macos") {
                run(&with(&["unload", "-w", &unit.path.display().to_string()]))
            } else {
                run(&with(&["disable", "--now", &format!("{UNIT}.service")]))
            };
            std::fs::remove_file(&unit.path)
                .with_context(|| format!("cannot remove {}", unit.path.display()))?;
            if cfg!(target_os = "linux") {
                let _ = run(&with(&["daemon-reload"]));
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
            let args = if cfg!(windows) {
                with(&["/Query", "/TN", UNIT, "/V", "/FO", "LIST"])
            } else if cfg!(target_os = "macos") {
                with(&["list", LABEL])
            } else {
                with(&["status", "--no-pager", &format!("{UNIT}.service")])
            };
            run(&args)?;
            Ok(())
        }
        Action::Logs if cfg!(windows) => follow(&config_dir.join(LOG_FILE)).map_err(Fail::from),
        Action::Logs => {
            let args: Vec<String> = if cfg!(target_os = "macos") {
                vec![
                    "tail".into(),
                    "-f".into(),
                    config_dir.join("fusion-host.log").display().to_string(),
                ]
            } else {
                let mut a = vec!["journalctl".to_string()];
                if !system {
                    a.push("--user".into());
                }
                a.extend(["-u".into(), format!("{UNIT}.service"), "-f".into()]);
                a
            };
            run(&args)?;
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_systemd_unit_is_exactly_this() {
        let unit = systemd_unit(
            Path::new("/usr/local/bin/fusion-host"),
            Path::new("/home/ana/.config/fusion-host"),
            false,
        );
        let golden = "\
# Written by `fusion-host service install`; remove with `fusion-host service uninstall`.
[Unit]
Description=fusion-host device: this computer's allowed folders for the web app
Documentation=https://github.com/fusion-host/fusion-host
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/local/bin/fusion-host run --config-dir /home/ana/.config/fusion-host
Restart=on-failure
RestartSec=5
# 2: bad configuration, 3: revoked (pair again). A restart fixes neither.
RestartPreventExitStatus=2 3
# The first SIGTERM finishes the call in progress (at most 5 s).
KillSignal=SIGTERM
TimeoutStopSec=15

[Install]
WantedBy=default.target
";
        assert_eq!(unit, golden);
        assert!(systemd_unit(Path::new("/x"), Path::new("/y"), true).contains("WantedBy=multi-user.target"));
        assert!(!unit.to_lowercase().contains("token"), "no secret in the unit");
    }

    #[test]
    fn odd_paths_are_quoted_for_systemd() {
        let unit = systemd_unit(
            Path::new("/opt/my tools/fusion-host"),
            Path::new("/home/a/100%"),
            false,
        );
        assert!(
            unit.contains(r#"ExecStart="/opt/my tools/fusion-host" run --config-dir "/home/a/100%%""#),
            "{unit}"
        );
    }

    #[test]
    fn the_windows_task_runs_at_log_on_and_every_minute_it_is_not_running() {
        let task = windows_task(
            Path::new(r"C:\Users\Ana López\fusion-host.exe"),
            Path::new(r"C:\Users\Ana López\AppData\Roaming\fusion-host\"),
            Path::new(r"C:\Users\Ana López\AppData\Roaming\fusion-host\fusion-host.log"),
            r"SURVEY\ana&co",
        );
        for needle in [
            r#"<?xml version="1.0" encoding="UTF-16"?>"#,
            "<LogonTrigger>\n      <Enabled>true</Enabled>\n      <UserId>SURVEY\\ana&amp;co</UserId>",
            "<Interval>PT1M</Interval>",
            "<MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>",
            "<LogonType>InteractiveToken</LogonType>",
            "<RunLevel>LeastPrivilege</RunLevel>",
            "<ExecutionTimeLimit>PT0S</ExecutionTimeLimit>",
            "<DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>",
            r"<Command>C:\Users\Ana López\fusion-host.exe</Command>",
            // Quoted paths, the trailing backslash dropped so it cannot
            // escape the closing quote.
            r"<Arguments>run --config-dir &quot;C:\Users\Ana López\AppData\Roaming\fusion-host&quot; --log-file &quot;C:\Users\Ana López\AppData\Roaming\fusion-host\fusion-host.log&quot;</Arguments>",
        ] {
            assert!(task.contains(needle), "{needle} missing from:\n{task}");
        }
        assert!(!task.to_lowercase().contains("token\""), "no secret in the task");
        assert!(!task.contains("cmd"), "no shell in between");
        let bytes = utf16_with_bom(&task);
        assert_eq!(
            &bytes[..4],
            &[0xff, 0xfe, b'<', 0],
            "UTF-16LE with a byte order mark"
        );
    }

    /// Task Scheduler takes the definition as `service install` writes and
    /// registers it, and deletes it as `service uninstall` does. (Under
    /// Wine, whose schtasks has no `/Run` or `/Query`, this is the part that
    /// can run; starting at log-on needs a real Windows machine.)
    #[cfg(windows)]
    #[test]
    fn task_scheduler_registers_and_deletes_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let task = windows_task(
            &exe,
            dir.path(),
            &dir.path().join(LOG_FILE),
            &windows_user().unwrap(),
        );
        let xml = dir.path().join(TASK_FILE);
        std::fs::write(&xml, utf16_with_bom(&task)).unwrap();
        let name = format!("fusion-host-test-{}", std::process::id());
        let schtasks = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("schtasks").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "schtasks {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let os = |s: &'static str| std::ffi::OsStr::new(s);
        schtasks(&[
            os("/Create"),
            os("/TN"),
            name.as_ref(),
            os("/XML"),
            xml.as_os_str(),
            os("/F"),
        ]);
        schtasks(&[os("/Delete"), os("/TN"), name.as_ref(), os("/F")]);
    }

    #[test]
    fn the_launchd_plist_keeps_the_agent_alive_on_failure() {
        let plist = launchd_plist(
            Path::new("/Applications/fusion-host"),
            Path::new("/Users/a/Library/Application Support/fusion-host"),
            Path::new("/tmp/l&g"),
        );
        for needle in [
            "<string>dev.fusion-host.device</string>",
            "<string>/Applications/fusion-host</string>",
            "<string>/Users/a/Library/Application Support/fusion-host</string>",
            "<key>SuccessfulExit</key>\n    <false/>",
            "<string>/tmp/l&amp;g</string>",
        ] {
            assert!(plist.contains(needle), "{needle} in {plist}");
        }
    }

    /// `systemd-analyze verify` reads the unit as systemd would, where it is installed.
    #[cfg(target_os = "linux")]
    #[test]
    fn systemd_accepts_the_unit() {
        let Ok(exe) = std::env::current_exe() else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fusion-host.service");
        std::fs::write(&path, systemd_unit(&exe, dir.path(), false)).unwrap();
        match Command::new("systemd-analyze").arg("verify").arg(&path).output() {
            Err(_) => eprintln!("skipped: systemd-analyze is not installed"),
            Ok(out) => {
                let said = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "systemd-analyze verify: {said}");
                assert!(
                    !said.contains("fusion-host.service:"),
                    "warnings about the unit: {said}"
                );
            }
        }
    }
}
