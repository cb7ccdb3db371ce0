//! `fusion-host convert e57 --to las|laz|copc`: the converter, run here.

use std::path::Path;

use fusion_tools::{Access, Context, Scope};

use crate::cli::Global;
use crate::e57las;
use crate::fail::Fail;

/// `fusion-host convert e57 --to las|laz|copc [--merge FILE] [--thin-m METRES] DIR`.
pub(crate) fn convert(
    global: &Global,
    dir: &Path,
    merge: Option<&str>,
    to: e57las::OutputFormat,
    thin_m: Option<f64>,
) -> Result<(), Fail> {
    let scope = Scope::single(dir, Access::ReadWrite)?;
    // Ctrl-C stops the conversion at its next step; the half-written file
    // is removed on the way out instead of being left behind.
    let cancel = fusion_tools::Cancellation::new();
    let interrupt = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping… (the file being written is removed)");
                cancel.cancel();
            }
        })
    };
    let _stop_listening = AbortOnDrop(interrupt);
    let cx = Context::new(&scope).with_cancellation(cancel);
    let root = scope.roots()[0].path().display().to_string();
    let scans = e57las::collect_scans(&cx, &[root])?;
    let merge = merge.map(|m| {
        // A bare name gets the format's extension.
        if Path::new(m).extension().is_some() {
            m.to_string()
        } else {
            format!("{m}.{}", to.extension())
        }
    });
    let (mut jobs, _) = e57las::jobs(&cx, &scans, merge.as_deref(), merge.is_none().then_some(to))?;
    e57las::thin(&mut jobs, thin_m)?;
    // Every output is checked before the first is written: a name taken
    // halfway must not leave some files converted and the rest not.
    for job in &jobs {
        e57las::writable(&cx, job)?;
    }
    let total: u64 = jobs.iter().map(|j| j.points).sum();
    let bar = if global.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else if thin_m.is_some() {
        // How many points thinning keeps is known only at the end: a
        // count, not a bar towards the scans' total.
        indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {human_pos} points kept")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        )
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} points ({eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    };
    let mut done = 0;
    for job in &jobs {
        bar.set_message(
            Path::new(&job.output)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let written = e57las::convert(&cx, job, &mut |n| bar.set_position(done + n))?;
        done += written;
        if global.json {
            println!(
                "{}",
                serde_json::json!({ "output": job.output, "points": written, "sources": job.sources })
            );
        } else {
            bar.println(format!("✓ {} ({written} points)", job.output));
        }
    }
    bar.finish_and_clear();
    if !global.json {
        println!(
            "converted {} scan(s) into {} {} file(s), {done} points",
            scans.len(),
            jobs.len(),
            to.label()
        );
    }
    Ok(())
}

/// Stops a background task when the command ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
