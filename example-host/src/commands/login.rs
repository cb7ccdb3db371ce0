//! `fusion-host login`: pair by approving this machine in the browser (the
//! device authorization flow).

use fusion_host::{Credentials, Http};
use serde_json::json;

use crate::cli::Global;
use crate::fail::{Fail, exit};
use crate::settings::{self, ConfigFile, VERSION};

/// `fusion-host login`'s options.
#[derive(Debug, Default)]
pub(crate) struct LoginArgs<'a> {
    pub(crate) server: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    /// Also draw the link as a QR code, for approving from a phone.
    pub(crate) qr: bool,
}

/// `fusion-host login`: the device authorization flow. Prints the code and
/// the page to approve it on (Enter opens it in the browser), waits for the
/// approval, and saves the credentials.
pub(crate) async fn login(global: &Global, args: &LoginArgs<'_>) -> Result<Credentials, Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let config = ConfigFile::load(&dir)?;
    let server = settings::server(args.server, &config)?;
    let name = settings::device_name(args.name, &config);
    let http = Http::new(&server, settings::ca_cert(global, &config).as_deref(), VERSION)?;
    let request = fusion_host::request_login(&http, &name, VERSION).await?;
    if global.json {
        println!(
            "{}",
            json!({ "event": "login", "user_code": request.user_code, "verification_uri": request.verification_uri,
                    "verification_uri_complete": request.verification_uri_complete, "expires_in": request.expires_in.as_secs() })
        );
    } else {
        eprintln!("! Copy your one-time code: {}", request.user_code);
        let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
        if interactive {
            eprintln!(
                "Open {} to approve this device (or press Enter to open it in your browser)",
                request.verification_uri
            );
        } else {
            eprintln!("Open {} to approve this device", request.verification_uri);
        }
        if request.verification_uri_complete.is_some() {
            eprintln!("  or go straight to {}", request.link());
        }
        if args.qr {
            eprintln!("{}", qr_code(request.link()));
        }
        if interactive {
            open_on_enter(request.link().to_string());
        }
        eprintln!(
            "Waiting for approval (the code works for {} minutes; Ctrl-C to stop)…",
            request.expires_in.as_secs().div_ceil(60)
        );
    }
    let credentials = tokio::select! {
        result = fusion_host::wait_for_approval(&http, &server, &name, &request, tokio::time::sleep) => result?,
        _ = tokio::signal::ctrl_c() => {
            return Err(Fail { code: exit::INTERRUPTED, error: anyhow::anyhow!("login stopped; nothing was saved") });
        }
    };
    let path = credentials.save(&dir)?;
    tracing::info!(path = %path.display(), "credentials saved");
    if global.json {
        println!(
            "{}",
            json!({ "event": "enrolled", "server": server, "device_id": credentials.device_id, "name": name,
                    "owner": credentials.owner, "owner_label": credentials.owner_label })
        );
    } else {
        eprintln!(
            "✓ Approved: paired with {server} as device '{name}' (owner {})",
            credentials.owner_display()
        );
    }
    Ok(credentials)
}

/// Opens `link` in the browser when the person presses Enter. Reading
/// stdin blocks, so it runs on its own thread; the process ends without
/// waiting for it.
fn open_on_enter(link: String) {
    std::thread::spawn(move || {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0)
            && let Err(e) = webbrowser::open(&link)
        {
            eprintln!("could not open a browser here ({e}); open the link on any computer or phone");
        }
    });
}

/// `link` as a QR code drawn with half-block characters.
fn qr_code(link: &str) -> String {
    match qrcode::QrCode::new(link.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
        Err(e) => format!("(no QR code: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_link_draws_as_a_square_qr_code() {
        let link = "https://app.example.com/device?user_code=WDJB-MJHT";
        let drawn = qr_code(link);
        let rows: Vec<&str> = drawn.lines().collect();
        let width = rows[0].chars().count();
        // Two modules per character row, a quiet zone of 4 around: a QR
        // symbol is 21 + 4k modules wide.
        assert!(rows.iter().all(|r| r.chars().count() == width), "{drawn}");
        assert_eq!((width - 8 - 21) % 4, 0, "{drawn}");
        assert_eq!(rows.len(), width.div_ceil(2));
        // The quiet zone is light, so the first row has no dark module.
        assert!(rows[0].chars().all(|c| c == '█'), "{drawn}");
    }
}
