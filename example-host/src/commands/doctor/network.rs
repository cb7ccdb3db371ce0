//! The way to the server: proxy, DNS, TCP, TLS, the server's clock, and
//! whether it accepts the token.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use fusion_host::{Credentials, Http};
use serde_json::json;

use super::Checks;
use crate::cli::Global;
use crate::settings::{self, ConfigFile, VERSION};

/// The server from the credentials, the environment or the configuration,
/// then every step of reaching it.
pub(super) async fn check(
    global: &Global,
    config: &ConfigFile,
    credentials: Option<&Credentials>,
    checks: &mut Checks,
) {
    let server = credentials
        .map(|c| c.server.clone())
        .or_else(settings::server_from_env)
        .or(config.server.clone());
    for proxy in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"] {
        if let Ok(p) = std::env::var(proxy) {
            checks.add(
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
        reach(global, config, &server, credentials, checks).await;
    } else {
        checks.add(
            "server",
            false,
            "no server configured".into(),
            Some("set FUSION_HOST_SERVER or `server` in config.toml"),
        );
    }
}

async fn reach(
    global: &Global,
    config: &ConfigFile,
    server: &str,
    credentials: Option<&Credentials>,
    checks: &mut Checks,
) {
    let Ok(url) = reqwest_url(server) else {
        checks.add(
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
            checks.add(
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
            checks.add(
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
        Ok(Ok(_)) => checks.add("tcp", true, format!("{host}:{port} reachable"), None),
        _ => {
            checks.add(
                "tcp",
                false,
                format!("{host}:{port} did not accept a connection"),
                Some("check the firewall, VPN or proxy"),
            );
            return;
        }
    }
    let http = match Http::new(server, settings::ca_cert(global, config).as_deref(), VERSION) {
        Ok(h) => h,
        Err(e) => {
            checks.add("tls", false, e.to_string(), None);
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
            checks.add(
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
                checks.add(
                    "clock",
                    ok,
                    format!("{}s from the server's clock", skew.as_secs()),
                    (!ok).then_some("set the system clock (enable NTP)"),
                );
            }
            if credentials.is_some() {
                let ok = r.status() == 404;
                checks.add(
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
            checks.add("tls", false, e.to_string(), None);
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
