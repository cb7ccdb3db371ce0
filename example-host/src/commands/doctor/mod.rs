//! `fusion-host doctor`: each check a line with ✓/✗ and the fix. The
//! checks, in the order they print: the configuration file (`config.rs`),
//! the allowed folders and what lies in them (`folders.rs`), the pairing
//! (`pairing.rs`), and the way to the server (`network.rs`).

mod config;
mod folders;
mod network;
mod pairing;

use crate::cli::Global;
use crate::fail::Fail;
use crate::settings;

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

/// The lines so far.
#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    /// A check that passed (`ok`) or failed, with its fix.
    fn add(&mut self, check: &'static str, ok: bool, detail: String, fix: Option<&str>) {
        self.0.push(Check {
            check,
            ok,
            info: false,
            detail,
            fix: fix.map(str::to_string),
        });
    }

    /// A line that neither passes nor fails.
    fn info(&mut self, check: &'static str, detail: String) {
        self.0.push(Check {
            check,
            ok: true,
            info: true,
            detail,
            fix: None,
        });
    }
}

/// `fusion-host doctor`: each check a line with ✓/✗ and the fix.
pub(crate) async fn doctor(global: &Global, roots: &[String]) -> Result<(), Fail> {
    let dir = settings::config_dir(global.config_dir.as_deref())?;
    let mut checks = Checks::default();
    let config = config::check(&dir, &mut checks);
    folders::check(&dir, roots, &config, &mut checks);
    let credentials = pairing::check(&dir, &mut checks);
    network::check(global, &config, credentials.as_ref(), &mut checks).await;

    let checks = checks.0;
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
