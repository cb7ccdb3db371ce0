//! `fusion-host doctor`: each check a line with ✓/✗ and the fix.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use fusion_host::{Credentials, Http};
use serde_json::json;

use crate::Global;
use crate::device::{VERSION, ca_cert};
use crate::fail::Fail;
use crate::settings::{self, ConfigFile};

/// One `doctor` line.
#[derive(serde::Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    /// Informational: neither passed nor failed (an optional file that is absent).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    info: bool,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

/// `fusion-host doctor`: each check a line with ✓/✗ and the fix.
pub(crate) async fn doctor(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let mut checks = Vec::new();
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config_path = dir.join(settings::CONFIG_FILE);
    if !config_path.exists() {
        // Optional: not a failure, but no ✓ for a file that is not there.
        checks.push(Check {
            check: "config",
            ok: true,
            info: true,
            detail: format!(
                "none ({} does not exist; flags and environment apply)",
                config_path.display()
            ),
            fix: None,
        });
    }
    let mut add = |check, ok, detail: String, fix: Option<&str>| {
        checks.push(Check {
            check,
            ok,
            info: false,
            detail,
            fix: fix.map(str::to_string),
        });
    };
    let config = match ConfigFile::load(&dir) {
        Ok(c) if !config_path.exists() => c,
        Ok(c) => {
            add("config", true, config_path.display().to_string(), None);
            c
        }
        Err(e) => {
            add(
                "config",
                false,
                format!("{e:#}"),
                Some("fix or remove the configuration file"),
            );
            ConfigFile::default()
        }
    };
    match settings::scope(roots, &config, &dir) {
        Ok(scope) => {
            for root in scope.root_infos() {
                let readable = std::fs::read_dir(&root.path).is_ok();
                add(
                    "folder",
                    readable,
                    root.path.clone(),
                    (!readable).then_some("give your user read access to it"),
                );
            }
            // The device's own files (its token, its rename journals) must
            // not be reachable by the tools it runs.
            let own = dunce::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
            if let Some(root) = scope
                .roots()
                .iter()
                .find(|r| r.access() == fusion_tools::Access::ReadWrite && own.starts_with(r.path()))
            {
                add(
                    "config folder",
                    false,
                    format!(
                        "{} is inside the allowed folder {}: an approved change could rewrite the device's \
                         token and rename journals",
                        own.display(),
                        root.path().display()
                    ),
                    Some("allow narrower folders, or keep the configuration elsewhere with --config-dir"),
                );
            }
            // Looked at, never acted on: the device may be running.
            for found in fusion_tools::check_renames(&scope) {
                let (ok, fix) = match found.outcome {
                    fusion_tools::RecoveryOutcome::Ignored { .. } => (
                        false,
                        "check the names it lists by hand, then delete it; the device never acts on it",
                    ),
                    fusion_tools::RecoveryOutcome::ReadOnly => (
                        false,
                        "allow the folder read-write once so the batch can be rolled back",
                    ),
                    _ => (
                        false,
                        "restart the device: it finishes or rolls the batch back at start",
                    ),
                };
                add("rename journal", ok, found.to_string(), Some(fix));
            }
        }
        Err(e) => add(
            "folders",
            false,
            format!("{e:#}"),
            Some("pass --root PATH, or set `roots` in config.toml"),
        ),
    }
    let credentials = Credentials::load(&dir).ok().flatten();
    match &credentials {
        Some(c) if c.revoked => add(
            "paired",
            false,
            format!("device '{}' ({}) was revoked on the server", c.name, c.device_id),
            Some("pair it again: FUSION_HOST_CODE=<new code from /devices> fusion-host"),
        ),
        Some(c) => {
            let mode_ok = credentials_private(&dir);
            add(
                "paired",
                true,
                format!("device '{}' ({}) of {}", c.name, c.device_id, c.owner),
                None,
            );
            let file = dir.join(fusion_host::CREDENTIALS_FILE).display().to_string();
            add(
                "credentials file",
                mode_ok,
                if cfg!(unix) {
                    file
                } else {
                    // Restricted when written; not read back: say so
                    // rather than claim it.
                    format!("{file} (made readable by this user only when it was written; not read back)")
                },
                (!mode_ok).then_some("run `chmod 600` on it: other users can read the token"),
            );
        }
        None => add(
            "paired",
            false,
            "no credentials".into(),
            Some("run `fusion-host enroll --server URL --code CODE`"),
        ),
    }
    let server = credentials
        .as_ref()
        .map(|c| c.server.clone())
        .or_else(settings::server_from_env)
        .or(config.server.clone());
    for proxy in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"] {
        if let Ok(p) = std::env::var(proxy) {
            add(
                "proxy",
                true,
                format!(
                    "{proxy}={p} (NO_PROXY={})",
                    std::env::var("NO_PROXY").unwrap_or_default()
                ),
                None,
            );
        }
    }
    if let Some(server) = server {
        network_checks(global, &config, &server, credentials.as_ref(), &mut add).await;
    } else {
        add(
            "server",
            false,
            "no server configured".into(),
            Some("set FUSION_HOST_SERVER or `server` in config.toml"),
        );
    }

    let all_ok = checks.iter().all(|c| c.ok);
    if global.json {
        println!("{}", serde_json::to_string_pretty(&checks).unwrap_or_default());
    } else {
        for c in &checks {
            let mark = match (c.info, c.ok) {
                (true, _) => "·",
                (false, true) => "✓",
                (false, false) => "✗",
            };
            println!("{mark} {:<17} {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                println!("  {:<17} → {fix}", "");
            }
        }
    }
    if all_ok {
        Ok(())
    } else {
        Err(Fail {
            code: 1,
            error: anyhow::anyhow!("some checks failed"),
        })
    }
}

async fn network_checks(
    global: &Global,
    config: &ConfigFile,
    server: &str,
    credentials: Option<&Credentials>,
    add: &mut impl FnMut(&'static str, bool, String, Option<&str>),
) {
    let Ok(url) = reqwest_url(server) else {
        add(
            "server",
            false,
            format!("{server} is not a URL"),
            Some("use the address shown on /devices, e.g. https://app.example.com"),
        );
        return;
    };
    let (host, port) = (url.0, url.1);
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(mut addrs) => {
            let first = addrs.next();
            add(
                "dns",
                first.is_some(),
                format!(
                    "{host} → {}",
                    first.map_or("nothing".into(), |a| a.ip().to_string())
                ),
                None,
            );
        }
        Err(e) => {
            add(
                "dns",
                false,
                format!("{host}: {e}"),
                Some("check the server address and your DNS/VPN"),
            );
            return;
        }
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => add("tcp", true, format!("{host}:{port} reachable"), None),
        _ => {
            add(
                "tcp",
                false,
                format!("{host}:{port} did not accept a connection"),
                Some("check the firewall, VPN or proxy"),
            );
            return;
        }
    }
    let http = match Http::new(server, ca_cert(global, config).as_deref(), VERSION) {
        Ok(h) => h,
        Err(e) => {
            add("tls", false, e.to_string(), None);
            return;
        }
    };
    // A result for a call that does not exist: 404 proves the token works,
    // 401 that it does not; nothing changes on the server either way.
    let token = credentials.map_or("fh_none", |c| c.token.as_str());
    let probe = json!({ "call_id": "call_doctor", "ok": true, "duration_ms": 0 });
    let response = http
        .client()
        .post(format!("{}/result", http.base()))
        .bearer_auth(token)
        .json(&probe)
        .send()
        .await;
    match response {
        Ok(r) => {
            add(
                "tls",
                true,
                if server.starts_with("https") {
                    "certificate trusted".into()
                } else {
                    "plain HTTP (no TLS)".into()
                },
                None,
            );
            if let Some(date) = r
                .headers()
                .get("date")
                .and_then(|d| d.to_str().ok())
                .and_then(httpdate)
            {
                let skew = SystemTime::now()
                    .duration_since(date)
                    .unwrap_or_else(|e| e.duration());
                let ok = skew < Duration::from_secs(300);
                add(
                    "clock",
                    ok,
                    format!("{}s from the server's clock", skew.as_secs()),
                    (!ok).then_some("set the system clock (enable NTP)"),
                );
            }
            if credentials.is_some() {
                let ok = r.status() == 404;
                add(
                    "token",
                    ok,
                    if ok {
                        "accepted".into()
                    } else {
                        format!("refused (HTTP {})", r.status().as_u16())
                    },
                    (!ok).then_some("pair this device again with a new code from /devices"),
                );
            }
        }
        Err(e) => {
            let e = http.explain(e).await;
            add("tls", false, e.to_string(), None);
        }
    }
}

fn reqwest_url(server: &str) -> anyhow::Result<(String, u16)> {
    let rest = server.split_once("://").map(|(_, r)| r).context("no scheme")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let default_port = if server.starts_with("https://") { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
            Ok((host.to_string(), port.parse()?))
        }
        _ => Ok((authority.to_string(), default_port)),
    }
}

/// A server's clock as it answers: an HTTP `Date` header (RFC 9110's three
/// forms, through the `httpdate` crate), or RFC 3339 in a JSON body.
fn httpdate(s: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(s)
        .ok()
        .or_else(|| humantime::parse_rfc3339_weak(s).ok())
}

#[cfg(unix)]
fn credentials_private(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir.join(fusion_host::CREDENTIALS_FILE))
        .is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}

/// Windows: the file sits in the user's profile (`%APPDATA%`), whose ACL
/// admits only the user, SYSTEM and administrators; no stricter ACL is set
/// yet, and this check does not read it.
#[cfg(not(unix))]
fn credentials_private(_: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_urls() {
        let t = httpdate("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(httpdate("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(httpdate("1994-11-06T08:49:37Z"), Some(t));
        assert_eq!(httpdate("yesterday"), None);
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert_eq!(
            reqwest_url("https://app.example.com/x").unwrap(),
            ("app.example.com".into(), 443)
        );
        assert_eq!(
            reqwest_url("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080)
        );
    }
}
