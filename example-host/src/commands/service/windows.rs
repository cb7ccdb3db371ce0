//! Windows: a scheduled task of the user, not a Windows service. A service
//! runs as a service account (or needs the user's password stored to run as
//! them), while the allowed folders are the user's, often on drives mapped
//! at their log-on. The task starts at log-on, as the user, without
//! elevation. Task Scheduler restarts a task that fails to start, not one
//! whose program exits non-zero, so the task also starts every minute while
//! not running (a second instance is never started): a crash costs at most
//! a minute. A device that exits revoked disables its task, so it is not
//! started again until it is paired and `service install` runs again.

use std::path::Path;

use anyhow::{anyhow, bail};

use super::{Logs, Manager, UNIT, Unit};

/// The task's definition, kept in the profile folder.
pub(super) const TASK_FILE: &str = "fusion-host-task.xml";

/// The log the task writes (it has no console).
const LOG_FILE: &str = "fusion-host.log";

/// Task Scheduler, for the user.
pub(super) struct TaskScheduler;

impl Manager for TaskScheduler {
    fn unit(&self, exe: &Path, config_dir: &Path) -> anyhow::Result<Unit> {
        Ok(Unit {
            path: config_dir.join(TASK_FILE),
            text: windows_task(exe, config_dir, &config_dir.join(LOG_FILE), &windows_user()?),
        })
    }

    fn refuse_system(&self) -> anyhow::Result<()> {
        bail!("--system is for Linux; on Windows the service is a scheduled task of your user")
    }

    fn unit_bytes(&self, text: &str) -> Vec<u8> {
        utf16_with_bom(text)
    }

    fn start(&self, unit: &Unit) -> Vec<Vec<String>> {
        let path = unit.path.display().to_string();
        vec![
            schtasks(&["/Create", "/TN", UNIT, "/XML", &path, "/F"]),
            schtasks(&["/Run", "/TN", UNIT]),
        ]
    }

    fn stop(&self, _: &Unit) -> Vec<Vec<String>> {
        vec![
            schtasks(&["/End", "/TN", UNIT]),
            schtasks(&["/Delete", "/TN", UNIT, "/F"]),
        ]
    }

    fn restart(&self, _: &Unit) -> Vec<Vec<String>> {
        vec![schtasks(&["/End", "/TN", UNIT]), schtasks(&["/Run", "/TN", UNIT])]
    }

    fn start_again(&self, _: &Unit) -> Vec<Vec<String>> {
        vec![schtasks(&["/Run", "/TN", UNIT])]
    }

    fn status(&self) -> Vec<String> {
        schtasks(&["/Query", "/TN", UNIT, "/V", "/FO", "LIST"])
    }

    fn logs(&self, config_dir: &Path) -> Logs {
        Logs::Follow(config_dir.join(LOG_FILE))
    }
}

fn schtasks(args: &[&str]) -> Vec<String> {
    std::iter::once("schtasks")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

/// The Task Scheduler task that runs `exe run --config-dir config_dir
/// --log-file log` for `user` (`DOMAIN\\name`) at log-on, and every minute
/// it is not running.
pub(super) fn windows_task(exe: &Path, config_dir: &Path, log: &Path, user: &str) -> String {
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
pub(super) fn windows_user() -> anyhow::Result<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let name =
        var("USERNAME").ok_or_else(|| anyhow!("USERNAME is not set; cannot tell whose task to write"))?;
    Ok(match var("USERDOMAIN") {
        Some(domain) => format!("{domain}\\{name}"),
        None => name,
    })
}

/// Task Scheduler reads a definition file as UTF-16 with a byte order mark.
pub(super) fn utf16_with_bom(text: &str) -> Vec<u8> {
    std::iter::once(0xfeff_u16)
        .chain(text.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Disables the Windows task after the device was revoked, so it is not
/// started again every minute; `service install` enables it again.
pub(super) fn disable_task_after_revoke(config_dir: &Path) {
    if !config_dir.join(TASK_FILE).exists() {
        return;
    }
    match std::process::Command::new("schtasks")
        .args(["/Change", "/TN", UNIT, "/DISABLE"])
        .output()
    {
        Ok(out) if out.status.success() => eprintln!(
            "The fusion-host task is disabled until this device is paired again and `fusion-host service install` runs."
        ),
        _ => eprintln!("could not disable the fusion-host task; run `fusion-host service uninstall`"),
    }
}

/// Leaves `exe service resume` running, holding the other end of its
/// standard input: the system closes it when this process exits, and the
/// helper then starts the task again. Should the helper not outlive this
/// process, the task's every-minute trigger starts the new binary instead.
#[cfg(windows)]
pub(super) fn resume_task_after_exit(
    exe: &Path,
    config_dir: &Path,
    log_file: Option<&Path>,
) -> std::io::Result<()> {
    use std::os::windows::process::CommandExt as _;
    /// Not ended with the task's job (where the job allows it), and no
    /// console of its own.
    const CREATE_BREAKAWAY_FROM_JOB: u32 = 0x0100_0000;
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    let helper = |flags: u32| {
        let mut command = std::process::Command::new(exe);
        command
            .arg("--config-dir")
            .arg(config_dir)
            .args(["service", "resume"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .creation_flags(flags);
        if let Some(log) = log_file {
            command.arg("--log-file").arg(log);
        }
        command.spawn()
    };
    let child = helper(CREATE_BREAKAWAY_FROM_JOB | CREATE_NO_WINDOW).or_else(|_| helper(CREATE_NO_WINDOW))?;
    // Its standard input stays open until this process exits.
    std::mem::forget(child);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let out = std::process::Command::new("schtasks")
                .args(args)
                .output()
                .unwrap();
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
}
