//! Sessions: a device's stream opening, its manifest, and its end.

use std::sync::Arc;

use fusion_protocol::{ClosingEvent, DeviceManifest, Mode, UpdatePolicy, UpdateReport, UpdateStatus};
use tokio::sync::mpsc;

use super::Dispatcher;
use super::state::{Session, StreamMsg};
use crate::credentials::new_id;
use crate::error::{Error, Result};
use crate::events::HostEvent;
use crate::store::{CallLogEntry, DeviceRecord};

/// Who asked, in the activity log, for an automatic update.
const AUTOMATIC_UPDATE: &str = "automatic update";

impl Dispatcher {
    /// Records the device's manifest (`PUT /manifest`).
    pub(crate) async fn set_manifest(&self, device: &DeviceRecord, manifest: DeviceManifest) -> Result<()> {
        self.inner.store.save_manifest(&device.id, &manifest).await?;
        self.inner.store.touch_device(&device.id, self.now()).await?;
        self.state().index_tools(&device.id, &device.owner, &manifest);
        Ok(())
    }

    /// The update policy the device's owner has, for its `hello`. A store
    /// that cannot say is logged and taken as no policy: the stream opens
    /// anyway.
    pub(crate) async fn update_policy(&self, device: &DeviceRecord) -> Option<UpdatePolicy> {
        match self.inner.store.update_policy(&device.owner).await {
            Ok(policy) => policy,
            Err(e) => {
                tracing::warn!(device_id = %device.id, error = %e, "update policy unreadable; none sent");
                None
            }
        }
    }

    /// A device's word on its automatic update (`POST /update`): `started`
    /// marks it updating on the owner's page; how it ended goes to the
    /// activity log, as asked by "automatic update".
    pub(crate) async fn report_update(&self, device: &DeviceRecord, report: UpdateReport) -> Result<()> {
        for (field, value, limit) in [
            ("from", report.from.as_str(), 64),
            ("to", report.to.as_str(), 64),
            ("reason", report.reason.as_deref().unwrap_or(""), 500),
        ] {
            if value.chars().count() > limit || value.chars().any(char::is_control) {
                return Err(Error::InvalidRequest(format!(
                    "the update report's {field} must be at most {limit} printable characters"
                )));
            }
        }
        // Here now; on the other replicas when the event below reaches them.
        self.state()
            .slot(&device.id, &device.owner)
            .note_update(report.status, &report.to);
        tracing::info!(device_id = %device.id, status = report.status.as_str(), from = %report.from, to = %report.to, "device update");
        if report.status != UpdateStatus::Started {
            let error_code = match report.status {
                UpdateStatus::RolledBack => Some("update_rolled_back".to_string()),
                UpdateStatus::Failed => Some("update_failed".to_string()),
                _ => None,
            };
            let entry = CallLogEntry {
                call_id: new_id("upd_"),
                owner: device.owner.clone(),
                device_id: device.id.clone(),
                tool: "update".into(),
                mode: Mode::Run,
                requested_by: format!("{AUTOMATIC_UPDATE} {} → {}", report.from, report.to),
                paths: report.reason.iter().cloned().collect(),
                proposal_id: None,
                started_at: self.now(),
                duration_ms: 0,
                error_code,
            };
            self.inner.store.log_call(entry).await?;
        }
        self.emit(HostEvent::DeviceUpdate {
            owner: device.owner.clone(),
            device_id: device.id.clone(),
            status: report.status,
            to: report.to,
        });
        Ok(())
    }

    /// Opens a stream for the device: replaces an older one, then queues
    /// every call it was sent but has not answered.
    pub(crate) fn connect(&self, device: &DeviceRecord) -> (String, mpsc::UnboundedReceiver<StreamMsg>) {
        let session_id = new_id("ses_");
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut state = self.state();
            let slot = state.slot(&device.id, &device.owner);
            let new = Session {
                id: session_id.clone(),
                tx,
                device: device.clone(),
            };
            if let Some(old) = slot.session.replace(new) {
                let _ = old.tx.send(StreamMsg::Replaced(ClosingEvent {
                    message: "a newer connection from this device replaced this one".into(),
                }));
            }
            if let Some(session) = &slot.session {
                for (event_id, call) in &slot.outstanding {
                    let _ = session
                        .tx
                        .send(StreamMsg::Call(*event_id, Box::new(call.clone())));
                }
            }
            slot.online.send_replace(true);
        }
        tracing::info!(device_id = %device.id, session_id, "device connected");
        self.emit(HostEvent::DeviceOnline {
            owner: device.owner.clone(),
            device_id: device.id.clone(),
        });
        (session_id, rx)
    }

    /// Closes the device's session if it is still the current one.
    pub(crate) fn disconnect(&self, device_id: &str, session_id: &str) {
        self.leave_replicas(device_id, session_id);
        let owner = {
            let mut state = self.state();
            let Some(slot) = state.slots.get_mut(device_id) else {
                return;
            };
            if slot.session.as_ref().is_none_or(|s| s.id != session_id) {
                return;
            }
            slot.session = None;
            let online = slot.is_online();
            slot.online.send_replace(online);
            slot.owner.clone()
        };
        tracing::info!(device_id, session_id, "device disconnected");
        self.emit(HostEvent::DeviceOffline {
            owner,
            device_id: device_id.to_string(),
        });
        let store = Arc::clone(&self.inner.store);
        let (device_id, now) = (device_id.to_string(), self.now());
        tokio::spawn(async move {
            if let Err(e) = store.touch_device(&device_id, now).await {
                tracing::warn!(error = %e, "could not record the device's last-seen time");
            }
        });
    }
}
