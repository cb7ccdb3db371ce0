//! Automatic updates while `run` holds the stream, as the server's policy
//! (in `hello`) and `config.toml` allow:
//!
//! 1. On every connect, and every six hours, read the server's signed
//!    release; a newer one (or the pinned one) is downloaded, verified and
//!    tried out (`--version`) while calls go on.
//! 2. When no call is running, new calls are held (the server sends them
//!    again to the new version), the binary is swapped, and the device
//!    restarts onto it.
//! 3. The new version is on trial until it connects: if it does not within
//!    the trial, or fails to start three times, the one before comes back
//!    and that version is not tried again for a day.
//!
//! The server is told how it went (`POST /update`), for its activity log.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fusion_host::{Activity, ConnectionState, Credentials, Http, Stopper, report_update};
use fusion_protocol::{UpdatePolicy, UpdateReport, UpdateStatus};
use tokio::sync::watch;

use crate::install::{Failed, Kept, Offered, Releases, TRIAL_STARTS, Trial};
use crate::report::report;
use crate::settings::VERSION;

/// How often a connected device looks for a newer release.
const CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);

/// How often a device waiting for calls to end looks again.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// A restart onto another binary, which `run` carries out once the device
/// has stopped.
#[derive(Debug, Clone)]
pub(crate) struct Restart {
    /// Why, for the log.
    pub(crate) why: String,
}

/// What the updater needs of the running device.
pub(crate) struct Updater {
    pub(crate) dir: PathBuf,
    pub(crate) http: Http,
    pub(crate) credentials: Credentials,
    pub(crate) activity: Activity,
    pub(crate) stopper: Stopper,
    /// `false` when `config.toml` says no to automatic updates.
    pub(crate) allowed: bool,
    /// How long a new version has to connect.
    pub(crate) trial: Duration,
    /// Set before the device is stopped for a restart.
    pub(crate) restart: Arc<OnceLock<Restart>>,
}

/// Before the device starts: a version on trial that has started too
/// often without connecting is rolled back at once. `Some` when this
/// process must restart onto the binary now in place.
pub(crate) fn before_start(dir: &Path) -> Option<Restart> {
    let trial = Trial::started(dir)?;
    if trial.starts <= TRIAL_STARTS {
        return None;
    }
    let reason = format!(
        "{} started {} times without connecting",
        trial.to,
        trial.starts - 1
    );
    roll_back(dir, &trial, &reason)
}

fn roll_back(dir: &Path, trial: &Trial, reason: &str) -> Option<Restart> {
    match Kept::new(dir).roll_back() {
        Ok(version) => {
            report(&format!("! {reason}; rolled back to {version}"));
            Failed::record(dir, &trial.from, &trial.to, reason, true);
            Some(Restart {
                why: format!("rolled back to {version}"),
            })
        }
        Err(e) => {
            report(&format!("! {reason}, and rolling back failed: {:#}", e.error));
            Trial::end(dir);
            None
        }
    }
}

impl Updater {
    /// Follows the connection until an update (or a roll-back) needs a
    /// restart, or the device stops.
    pub(crate) async fn run(self, mut state: watch::Receiver<ConnectionState>) {
        let mut trial = Trial::current(&self.dir);
        let mut trial_ends = Box::pin(tokio::time::sleep(self.trial));
        let mut policy: Option<UpdatePolicy> = None;
        let mut told_no = false;
        loop {
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let ConnectionState::Connected { updates, .. } = state.borrow_and_update().clone() else {
                        continue;
                    };
                    if let Some(t) = trial.take() {
                        Trial::end(&self.dir);
                        report(&format!("✓ updated fusion-host {} → {}", t.from, t.to));
                        self.tell(UpdateStatus::Updated, &t.from, &t.to, None).await;
                    }
                    self.tell_failure().await;
                    policy = updates;
                }
                () = &mut trial_ends, if trial.is_some() => {
                    let t = trial.take().expect("on trial");
                    let reason = format!("{} did not connect within {} s", t.to, self.trial.as_secs());
                    if let Some(restart) = roll_back(&self.dir, &t, &reason) {
                        self.restart_with(restart);
                        return;
                    }
                    continue;
                }
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let Some(policy) = policy.as_ref().filter(|p| p.automatic) else {
                continue;
            };
            if !self.allowed {
                if !told_no {
                    tracing::info!("the server asks for automatic updates; config.toml says no");
                    told_no = true;
                }
                continue;
            }
            if let Some(restart) = self.attempt(policy).await {
                self.restart_with(restart);
                return;
            }
        }
    }

    fn restart_with(&self, restart: Restart) {
        let _ = self.restart.set(restart);
        self.stopper.shutdown();
    }

    /// One look at the server's release; `Some` once a new binary is in
    /// place.
    async fn attempt(&self, policy: &UpdatePolicy) -> Option<Restart> {
        let releases = match Releases::read(&self.http, &self.credentials.server).await {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(error = %format!("{:#}", e.error), "no release to update to");
                return None;
            }
        };
        let to = releases.manifest.version.clone();
        if let Some(pinned) = policy.pinned.as_deref().filter(|p| *p != to) {
            tracing::info!(pinned, offered = %to, "pinned: staying on {VERSION}");
            return None;
        }
        let artifact = match releases.offer() {
            Ok(Offered::UpToDate) => return None,
            Ok(Offered::Newer(artifact)) => artifact,
            Err(e) => {
                tracing::warn!(error = %format!("{:#}", e.error), "the offered release is not for this device");
                return None;
            }
        };
        if Failed::load(&self.dir).is_some_and(|f| f.holds_back(&to)) {
            tracing::info!(version = %to, "this version failed here less than a day ago; not trying it again yet");
            return None;
        }
        report(&format!("… updating fusion-host {VERSION} → {to}: downloading"));
        let kept = Kept::new(&self.dir);
        let bytes = match releases.download(&self.http, artifact).await {
            Ok(bytes) => bytes,
            Err(e) => return self.give_up(&to, &format!("{:#}", e.error)).await,
        };
        if let Err(e) = kept.try_out(&bytes).await {
            return self.give_up(&to, &format!("{e:#}")).await;
        }
        if self.activity.running() > 0 {
            report("… the update waits for the running calls to end");
        }
        self.activity.idle(IDLE_POLL).await;
        self.activity.hold();
        // A call that started in between ends first.
        self.activity.idle(IDLE_POLL).await;
        self.tell(UpdateStatus::Started, VERSION, &to, None).await;
        if let Err(e) = kept.install(&bytes, &to) {
            self.activity.release();
            return self.give_up(&to, &format!("{:#}", e.error)).await;
        }
        if let Err(e) = Trial::begin(&self.dir, VERSION, &to) {
            tracing::warn!(error = %format!("{e:#}"), "the new version starts without a trial");
        }
        report(&format!("… installed {to} (verified); restarting onto it"));
        Some(Restart {
            why: format!("updated to {to}"),
        })
    }

    /// An update that stopped before anything was replaced.
    async fn give_up(&self, to: &str, reason: &str) -> Option<Restart> {
        report(&format!(
            "! the update to {to} stopped: {reason}; {VERSION} keeps running"
        ));
        Failed::record(&self.dir, VERSION, to, reason, false);
        self.tell_failure().await;
        None
    }

    /// Tells the server about the last failure, once.
    async fn tell_failure(&self) {
        let Some(mut failed) = Failed::load(&self.dir).filter(|f| !f.reported) else {
            return;
        };
        let status = if failed.rolled_back {
            UpdateStatus::RolledBack
        } else {
            UpdateStatus::Failed
        };
        if self
            .tell(status, &failed.from, &failed.version, Some(&failed.reason))
            .await
        {
            failed.reported = true;
            failed.save(&self.dir);
        }
    }

    /// `POST /update`; whether the server took it.
    async fn tell(&self, status: UpdateStatus, from: &str, to: &str, reason: Option<&str>) -> bool {
        let body = UpdateReport {
            status,
            from: from.into(),
            to: to.into(),
            reason: reason.map(str::to_string),
        };
        match report_update(&self.http, &self.credentials.token, &body).await {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, status = status.as_str(), "the server was not told how the update went");
                false
            }
        }
    }
}

/// Starts `exe` again with this process's arguments: in place of this
/// process where the system can (Unix, so its supervisor sees the same
/// process), else as a new process this one leaves running (Windows; under
/// the log-on task `run` has the task start it instead). Returns only when
/// that failed.
pub(crate) fn exec(exe: &Path) -> std::io::Error {
    let mut command = std::process::Command::new(exe);
    command.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.exec()
    }
    #[cfg(not(unix))]
    {
        match command.spawn() {
            Ok(_) => std::process::exit(0),
            Err(e) => e,
        }
    }
}
