//! Pairing and devices: codes, enrolment, the owner's list, renaming and
//! revoking.

use std::net::IpAddr;
use std::time::SystemTime;

use fusion_protocol::{ClosingEvent, DeviceManifest, EnrollRequest, EnrollResponse, PROTOCOL_VERSION};
use serde::Serialize;

use super::Dispatcher;
use super::state::{Ending, Pending, Slot, StreamMsg};
use crate::credentials::{new_id, new_pairing_code, new_token, normalize_code, sha256_hex};
use crate::error::{Error, Result};
use crate::events::HostEvent;
use crate::store::{DeviceRecord, ManifestSummary, PairingCodeRecord};

/// A freshly minted pairing code. Show it once; only its hash is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairingCode {
    /// `XXXX-XXXX`.
    pub code: String,
    /// When it stops working.
    #[serde(with = "crate::time::rfc3339")]
    pub expires_at: SystemTime,
}

/// A device as the owner's UI shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceStatus {
    /// The stored device.
    #[serde(flatten)]
    pub device: DeviceRecord,
    /// Whether it holds a stream right now.
    pub online: bool,
    /// What its latest manifest says (folders, tool names), if it ever sent
    /// one; [`Dispatcher::manifest`] gives the whole manifest.
    pub manifest: Option<ManifestSummary>,
    /// The version it said it is installing, for the last
    /// ten minutes, until it says how that went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updating: Option<String>,
}

/// `name`, or `name (2)`, `name (3)`, … whichever `taken` does not have: a
/// machine paired again under the same host name stays distinguishable.
pub(crate) fn distinct_name(name: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == name) {
        return name.to_string();
    }
    (2..)
        .map(|n| format!("{name} ({n})"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or_else(|| name.to_string())
}

/// Checks what a device says about itself when it asks to be paired: each
/// field 1 to 200 characters.
pub(crate) fn check_device_fields(name: &str, platform: &str, host_version: &str) -> Result<(), String> {
    for (field, value) in [
        ("name", name),
        ("platform", platform),
        ("host_version", host_version),
    ] {
        if value.trim().is_empty() || value.len() > 200 {
            return Err(format!("{field} must be 1 to 200 characters"));
        }
    }
    Ok(())
}

impl Dispatcher {
    /// Mints a pairing code for `owner`, valid for [`Config::pairing_ttl`].
    pub async fn mint_pairing_code(&self, owner: &str) -> Result<PairingCode> {
        let code = new_pairing_code();
        let now = self.now();
        let expires_at = now + self.inner.config.pairing_ttl;
        let normal = normalize_code(&code).unwrap_or_default();
        self.inner
            .store
            .create_pairing_code(PairingCodeRecord {
                code_hash: sha256_hex(&normal),
                owner: owner.to_string(),
                created_at: now,
                expires_at,
                used_at: None,
            })
            .await?;
        Ok(PairingCode { code, expires_at })
    }

    /// Exchanges a pairing code for a device token (`POST /enroll`).
    pub(crate) async fn enroll(&self, addr: Option<IpAddr>, req: EnrollRequest) -> Result<EnrollResponse> {
        check_device_fields(&req.name, &req.platform, &req.host_version).map_err(Error::InvalidRequest)?;
        // Counted before the lookup: concurrent guesses cannot overrun the limit.
        let attempt = self
            .inner
            .limiter
            .attempt(addr)
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        let Some(code) = normalize_code(&req.code) else {
            return Err(Error::InvalidCode(
                "that is not a pairing code: a code is 8 letters like BCDF-GHJK; copy it from /devices",
            ));
        };
        let now = self.now();
        let Some(record) = self
            .inner
            .store
            .consume_pairing_code(&sha256_hex(&code), now)
            .await?
        else {
            return Err(Error::InvalidCode(
                "this pairing code is not known; check it, or mint a new one on /devices",
            ));
        };
        if record.used_at.is_some() {
            return Err(Error::InvalidCode(
                "this pairing code was already used; mint a new one on /devices",
            ));
        }
        if now >= record.expires_at {
            return Err(Error::CodeExpired);
        }
        attempt.succeeded();
        let (device, token, owner_label) = self
            .pair_device(&record.owner, &req.name, &req.platform, &req.host_version)
            .await?;
        Ok(EnrollResponse {
            name: Some(device.name),
            device_id: device.id,
            token,
            owner: device.owner,
            owner_label,
            server_time: crate::time::format(now),
            protocol_version: PROTOCOL_VERSION,
        })
    }

    /// Creates `owner`'s new device with a fresh token; returns it, the
    /// token (shown once) and how the owner is named to people.
    pub(crate) async fn pair_device(
        &self,
        owner: &str,
        name: &str,
        platform: &str,
        host_version: &str,
    ) -> Result<(DeviceRecord, String, Option<String>)> {
        let now = self.now();
        let device_id = new_id("dev_");
        let token = new_token(&device_id);
        let taken = self.names_in_use(owner, None).await?;
        let device = DeviceRecord {
            id: device_id,
            owner: owner.to_string(),
            name: distinct_name(name.trim(), &taken),
            platform: platform.to_string(),
            host_version: host_version.to_string(),
            token_hash: sha256_hex(&token),
            created_at: now,
            last_seen: Some(now),
            revoked_at: None,
        };
        self.inner.store.create_device(device.clone()).await?;
        tracing::info!(device_id = %device.id, owner = %device.owner, "device enrolled");
        self.emit(HostEvent::DeviceEnrolled {
            owner: device.owner.clone(),
            device_id: device.id.clone(),
            name: device.name.clone(),
        });
        let label = self.inner.store.owner_label(owner).await?;
        Ok((device, token, label))
    }

    /// The device record of a live stream, if the device has one.
    pub(crate) fn live_device(&self, device_id: &str) -> Option<DeviceRecord> {
        let state = self.state();
        state
            .slots
            .get(device_id)?
            .session
            .as_ref()
            .map(|s| s.device.clone())
    }

    /// The owner's device, or `DeviceNotFound` for anyone else's.
    pub(super) async fn owned_device(&self, owner: &str, device_id: &str) -> Result<DeviceRecord> {
        let device = match self.live_device(device_id) {
            Some(live) => Some(live),
            None => self.inner.store.device(device_id).await?,
        };
        match device {
            Some(d) if d.owner == owner => Ok(d),
            _ => Err(Error::DeviceNotFound {
                device_id: device_id.to_string(),
            }),
        }
    }

    /// The owner's devices with their live state and what their manifests
    /// say: two store queries, whatever the number of devices.
    pub async fn devices(&self, owner: &str) -> Result<Vec<DeviceStatus>> {
        let devices = self.inner.store.devices(owner).await?;
        let mut summaries = self.inner.store.manifest_summaries(owner).await?;
        let state = self.state();
        Ok(devices
            .into_iter()
            .map(|device| DeviceStatus {
                online: state.slots.get(&device.id).is_some_and(Slot::is_online),
                updating: state.slots.get(&device.id).and_then(Slot::updating),
                manifest: summaries.remove(&device.id),
                device,
            })
            .collect())
    }

    /// One of the owner's devices, with its live state and its whole latest
    /// manifest (tools with their schemas, folders), or `DeviceNotFound` for
    /// anyone else's. Read from the store, so `last_seen` is current.
    pub async fn device(
        &self,
        owner: &str,
        device_id: &str,
    ) -> Result<(DeviceStatus, Option<DeviceManifest>)> {
        let device = match self.inner.store.device(device_id).await? {
            Some(d) if d.owner == owner => d,
            _ => {
                return Err(Error::DeviceNotFound {
                    device_id: device_id.to_string(),
                });
            }
        };
        let manifest = self.inner.store.manifest(device_id).await?;
        let status = DeviceStatus {
            online: self.is_online(&device.id),
            updating: self.state().slots.get(&device.id).and_then(Slot::updating),
            manifest: manifest.as_ref().map(ManifestSummary::from),
            device,
        };
        Ok((status, manifest))
    }

    /// Whether the device holds a stream right now (to any replica).
    pub fn is_online(&self, device_id: &str) -> bool {
        self.state().slots.get(device_id).is_some_and(Slot::is_online)
    }

    /// The names of `owner`'s devices that are not revoked, but `except`'s.
    pub(super) async fn names_in_use(&self, owner: &str, except: Option<&str>) -> Result<Vec<String>> {
        Ok(self
            .inner
            .store
            .devices(owner)
            .await?
            .into_iter()
            .filter(|d| d.revoked_at.is_none() && Some(d.id.as_str()) != except)
            .map(|d| d.name)
            .collect())
    }

    /// Renames the owner's device (1 to 200 characters, trimmed). A name
    /// another of their devices has gets ` (2)`, ` (3)`, … so two stay
    /// distinguishable. Returns the name given.
    pub async fn rename_device(&self, owner: &str, device_id: &str, name: &str) -> Result<String> {
        let device = self.owned_device(owner, device_id).await?;
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::InvalidRequest("name must be 1 to 200 characters".into()));
        }
        let taken = self.names_in_use(owner, Some(&device.id)).await?;
        let name = distinct_name(name, &taken);
        self.inner.store.rename_device(device_id, &name).await?;
        {
            let mut state = self.state();
            if let Some(session) = state.slots.get_mut(device_id).and_then(|s| s.session.as_mut()) {
                session.device.name.clone_from(&name);
            }
        }
        self.emit(HostEvent::DeviceRenamed {
            owner: device.owner,
            device_id: device_id.to_string(),
            name: name.clone(),
        });
        Ok(name)
    }

    /// Revokes the owner's device: its token stops working and a live stream
    /// gets `revoked` and is closed at once. Calls waiting on it fail.
    pub async fn revoke(&self, owner: &str, device_id: &str) -> Result<()> {
        let device = self.owned_device(owner, device_id).await?;
        self.inner.store.revoke_device(device_id, self.now()).await?;
        self.close_revoked(device_id);
        self.revoke_everywhere(device_id).await?;
        tracing::info!(device_id, "device revoked");
        self.emit(HostEvent::DeviceRevoked {
            owner: device.owner,
            device_id: device_id.to_string(),
        });
        Ok(())
    }

    /// Sends `revoked` on the device's stream if it is here and closes it,
    /// ends every call to it this replica knows, and fails the ones waiting
    /// here.
    pub(super) fn close_revoked(&self, device_id: &str) {
        let failed: Vec<Pending> = {
            let mut state = self.state();
            let mut calls: Vec<String> = state
                .pending
                .iter()
                .filter(|(_, p)| p.device_id == device_id)
                .map(|(id, _)| id.clone())
                .collect();
            calls.extend(
                state
                    .routed
                    .iter()
                    .filter(|(_, (device, _))| device == device_id)
                    .map(|(id, _)| id.clone()),
            );
            if let Some(slot) = state.slots.get_mut(device_id) {
                if let Some(session) = slot.session.take() {
                    let _ = session.tx.send(StreamMsg::Revoked(ClosingEvent {
                        message: "this device was revoked; pair it again with a new code from /devices"
                            .into(),
                    }));
                }
                slot.remote = None;
                slot.online.send_replace(false);
                calls.extend(slot.outstanding.values().map(|c| c.call_id.clone()));
            }
            calls
                .iter()
                .filter_map(|id| state.end_call(device_id, id, Ending::Revoked).waiter)
                .collect()
        };
        for pending in failed {
            let _ = pending.tx.send(Err(Error::DeviceRevoked {
                device_id: device_id.to_string(),
            }));
        }
    }
}
