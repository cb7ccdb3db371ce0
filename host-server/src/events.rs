//! Live events for UIs: what `/devices` subscribes to.

use fusion_protocol::{Mode, UpdateStatus};
use serde::{Deserialize, Serialize};

use crate::store::ProposalStatus;

/// Something that happened, for live pages. Every event names its owner;
/// forward an event only to that owner's pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum HostEvent {
    /// A pairing code was redeemed: a new device exists.
    DeviceEnrolled {
        /// The owner.
        owner: String,
        /// The new device.
        device_id: String,
        /// Its name.
        name: String,
    },
    /// A device opened its stream.
    DeviceOnline {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
    },
    /// A device's stream ended.
    DeviceOffline {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
    },
    /// A device was renamed.
    DeviceRenamed {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
        /// Its new name.
        name: String,
    },
    /// A device was revoked.
    DeviceRevoked {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
    },
    /// A device said how its automatic update goes.
    DeviceUpdate {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
        /// `started`, `updated`, `rolled_back` or `failed`.
        status: UpdateStatus,
        /// The version it installs (or installed, or gave up).
        to: String,
    },
    /// A call was sent (or queued for an offline device).
    CallStarted {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
        /// The call.
        call_id: String,
        /// The tool.
        tool: String,
        /// `run`, `plan` or `apply`.
        mode: Mode,
    },
    /// A running call's device said how far it has come.
    CallProgress {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
        /// The call.
        call_id: String,
        /// The proposal an apply carries out, when the replica that heard
        /// the report knows the call.
        #[serde(skip_serializing_if = "Option::is_none")]
        proposal_id: Option<String>,
        /// Units done.
        done: u64,
        /// Units in all, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        /// What the units are.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A call ended.
    CallFinished {
        /// The owner.
        owner: String,
        /// The device.
        device_id: String,
        /// The call.
        call_id: String,
        /// The tool.
        tool: String,
        /// `run`, `plan` or `apply`.
        mode: Mode,
        /// Whether it succeeded.
        ok: bool,
        /// Its error code when it failed.
        error_code: Option<String>,
        /// How long it took, end to end.
        duration_ms: u64,
    },
    /// A mutate call produced a proposal waiting for approval.
    ProposalCreated {
        /// The owner.
        owner: String,
        /// The proposal.
        proposal_id: String,
        /// The device.
        device_id: String,
        /// The tool.
        tool: String,
        /// The plan's one-line summary.
        summary: String,
    },
    /// A proposal was approved (and applied or failed), rejected or expired.
    ProposalResolved {
        /// The owner.
        owner: String,
        /// The proposal.
        proposal_id: String,
        /// Its new status.
        status: ProposalStatus,
    },
}

impl HostEvent {
    /// The user this event belongs to.
    pub fn owner(&self) -> &str {
        match self {
            HostEvent::DeviceEnrolled { owner, .. }
            | HostEvent::DeviceOnline { owner, .. }
            | HostEvent::DeviceOffline { owner, .. }
            | HostEvent::DeviceRevoked { owner, .. }
            | HostEvent::DeviceRenamed { owner, .. }
            | HostEvent::DeviceUpdate { owner, .. }
            | HostEvent::CallStarted { owner, .. }
            | HostEvent::CallProgress { owner, .. }
            | HostEvent::CallFinished { owner, .. }
            | HostEvent::ProposalCreated { owner, .. }
            | HostEvent::ProposalResolved { owner, .. } => owner,
        }
    }
}
