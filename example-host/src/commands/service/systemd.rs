//! Linux: a systemd unit, of the user (`systemctl --user`) or, with
//! `--system`, of the machine.

use std::path::{Path, PathBuf};

use super::{Logs, Manager, UNIT, Unit, home};
use crate::fail::exit;

/// systemd, for the user or (`system`) the machine.
pub(super) struct Systemd {
    pub(super) system: bool,
}

impl Systemd {
    fn systemctl(&self, more: &[&str]) -> Vec<String> {
        let mut args = vec!["systemctl".to_string()];
        if !self.system {
            args.push("--user".into());
        }
        args.extend(more.iter().map(|s| s.to_string()));
        args
    }
}

impl Manager for Systemd {
    fn unit(&self, exe: &Path, config_dir: &Path) -> anyhow::Result<Unit> {
        let dir = if self.system {
            PathBuf::from("/etc/systemd/system")
        } else {
            std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .map_or_else(|| home().map(|h| h.join(".config")), Ok)?
                .join("systemd/user")
        };
        Ok(Unit {
            path: dir.join(format!("{UNIT}.service")),
            text: systemd_unit(exe, config_dir, self.system),
        })
    }

    fn start(&self, _: &Unit) -> Vec<Vec<String>> {
        let service = format!("{UNIT}.service");
        vec![
            self.systemctl(&["daemon-reload"]),
            self.systemctl(&["enable", "--now", &service]),
        ]
    }

    fn stop(&self, _: &Unit) -> Vec<Vec<String>> {
        vec![self.systemctl(&["disable", "--now", &format!("{UNIT}.service")])]
    }

    fn forgotten(&self) -> Vec<Vec<String>> {
        vec![self.systemctl(&["daemon-reload"])]
    }

    fn restart(&self, _: &Unit) -> Vec<Vec<String>> {
        vec![self.systemctl(&["restart", &format!("{UNIT}.service")])]
    }

    fn status(&self) -> Vec<String> {
        self.systemctl(&["status", "--no-pager", &format!("{UNIT}.service")])
    }

    fn logs(&self, _: &Path) -> Logs {
        let mut args = vec!["journalctl".to_string()];
        if !self.system {
            args.push("--user".into());
        }
        args.extend(["-u".into(), format!("{UNIT}.service"), "-f".into()]);
        Logs::Command(args)
    }

    fn started_again_after(&self) -> &'static str {
        if self.system { "boot" } else { "log-in" }
    }
}

/// The systemd unit that runs `exe run --config-dir config_dir`.
pub(super) fn systemd_unit(exe: &Path, config_dir: &Path, system: bool) -> String {
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

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    use std::process::Command;

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
