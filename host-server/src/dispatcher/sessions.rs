//! Sessions: a device's stream opening, its manifest, and its end.

use std::sync::Arc;

use fusion_protocol::{ClosingEvent, DeviceManifest};
use tokio::sync::mpsc;

use super::Dispatcher;
use super::state::{Session, StreamMsg};
use crate::credentials::new_id;
use crate::error::Result;
use crate::events::HostEvent;
use crate::store::DeviceRecord;

impl Dispatcher {
    /// Records the device's manifest (`PUT /manifest`).
    pub(crate) async fn set_manifest(&self, device: &DeviceRecord, manifest: DeviceManifest) -> Result<()> {
        self.inner.store.save_manifest(&device.id, &manifest).await?;
        self.inner.store.touch_device(&device.id, self.now()).await?;
        self.state().index_tools(&device.id, &device.owner, &manifest);
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
