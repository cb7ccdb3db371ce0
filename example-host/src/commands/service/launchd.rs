//! macOS: a launchd agent of the user.

use std::path::Path;

use anyhow::bail;

use super::{Logs, Manager, Unit, home};

/// launchd's label.
pub(super) const LABEL: &str = "dev.fusion-host.device";

/// The log the agent writes, in the configuration folder.
const LOG_FILE: &str = "fusion-host.log";

/// launchd, for the user.
pub(super) struct Launchd;

impl Manager for Launchd {
    fn unit(&self, exe: &Path, config_dir: &Path) -> anyhow::Result<Unit> {
        Ok(Unit {
            path: home()?
                .join("Library/LaunchAgents")
                .join(format!("{LABEL}.plist")),
            text: launchd_plist(exe, config_dir, &config_dir.join(LOG_FILE)),
        })
    }

    fn refuse_system(&self) -> anyhow::Result<()> {
        bail!("--system is for Linux; on macOS the service is a launchd agent of your user")
    }

    fn start(&self, unit: &Unit) -> Vec<Vec<String>> {
        vec![launchctl(&["load", "-w", &unit.path.display().to_string()])]
    }

    fn stop(&self, unit: &Unit) -> Vec<Vec<String>> {
        vec![launchctl(&["unload", "-w", &unit.path.display().to_string()])]
    }

    fn restart(&self, unit: &Unit) -> Vec<Vec<String>> {
        let path = unit.path.display().to_string();
        vec![launchctl(&["unload", &path]), launchctl(&["load", "-w", &path])]
    }

    fn status(&self) -> Vec<String> {
        launchctl(&["list", LABEL])
    }

    fn logs(&self, config_dir: &Path) -> Logs {
        Logs::Command(vec![
            "tail".into(),
            "-f".into(),
            config_dir.join(LOG_FILE).display().to_string(),
        ])
    }
}

fn launchctl(args: &[&str]) -> Vec<String> {
    std::iter::once("launchctl")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

/// The launchd agent that runs `exe run --config-dir config_dir`, kept alive
/// while it exits with failure (launchd cannot tell exit codes apart, so a
/// revoked device is restarted every `ThrottleInterval` and says so in its log).
pub(super) fn launchd_plist(exe: &Path, config_dir: &Path, log: &Path) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
