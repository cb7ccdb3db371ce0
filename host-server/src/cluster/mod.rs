//! Several replicas sharing devices: the seam the dispatcher talks to
//! ([`Bus`]), and its NATS implementation in `nats.rs` (feature `nats`).
//! Without a cluster (the default) every device streams to this process and
//! nothing here runs. In the dispatcher, only `dispatcher/replicas.rs` uses
//! this module.
//!
//! What crosses replicas (see `docs/CLUSTER.md`):
//! - **who holds a device's stream**: a key per device in a NATS KV bucket,
//!   written with compare-and-set on its revision and refreshed by the
//!   holder, which also announces what it holds on every heartbeat (NATS 2.9
//!   has no per-key TTL, so a holder not heard from for three heartbeats
//!   counts as gone);
//! - **calls**: a request on the device's subject, which only its holder
//!   subscribes to; "no responders" means offline everywhere;
//! - **results** a device posts to another replica: a request on the
//!   calling replica's subject, found through the call's row in the store;
//! - **cancels, displacement, revocation and live events**;
//! - **MCP tasks**: a replica asked about a task it does not have asks the
//!   others, and the one that has it answers.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use fusion_protocol::{CallEvent, CallResult, ResultAck};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::events::HostEvent;

/// How this app's replicas reach each other. Put it in
/// [`Config::cluster`](crate::Config::cluster); `None` (the default) keeps
/// every device in this process.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) bus: Arc<dyn Bus>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.bus.replica())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// This replica's id, unique per process.
    pub fn replica(&self) -> &str {
        self.bus.replica()
    }

    /// Leaves the other replicas: stops the background tasks that follow
    /// them and waits until they have ended. Dropping the
    /// [`Dispatcher`](crate::Dispatcher) it was given to stops them
    /// too, without waiting.
    pub async fn close(&self) {
        self.bus.stop();
        self.bus.closed().await;
    }
}

/// What another replica asks of this one, or tells it.
#[derive(Debug)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) enum Inbound {
    /// Push this call down the device's stream, if this replica holds it;
    /// answer whether it did.
    Call {
        device_id: String,
        call: Box<CallEvent>,
        /// The replica whose caller waits.
        caller: String,
        held: oneshot::Sender<bool>,
    },
    /// The caller gave up: forget the call and tell the device.
    Cancel {
        device_id: String,
        call_id: String,
        reason: String,
    },
    /// The call's result reached its caller through another replica.
    Done { device_id: String, call_id: String },
    /// A newer stream on replica `by` replaced this session.
    Displace {
        device_id: String,
        session_id: String,
        by: String,
    },
    /// The device was revoked on another replica.
    Revoked { device_id: String },
    /// A device's result for a call made here, posted to another replica
    /// (the one holding the stream, or not).
    Result {
        device_id: String,
        result: Box<CallResult>,
        from_holder: bool,
        ack: oneshot::Sender<Result<ResultAck, WireError>>,
    },
    /// Where a device's stream is now: `None` when nowhere.
    Holder {
        device_id: String,
        owner: String,
        replica: Option<String>,
    },
    /// A live event from another replica.
    Event(HostEvent),
    /// Another replica asks about an MCP task (a JSON request): the reply
    /// when this replica has the task, `None` to stay silent.
    Task {
        request: Vec<u8>,
        reply: oneshot::Sender<Option<Vec<u8>>>,
    },
}

/// Why a replica refused a result routed to it, as it crosses replicas:
/// `{"code": "call_unknown"}`. A code this version does not know (a newer
/// replica's) reads as [`WireError::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub(crate) enum WireError {
    /// No call there has this id.
    CallUnknown,
    /// The call belongs to another device.
    CallNotYours,
    #[serde(other)]
    Unknown,
}

impl WireError {
    /// The refusal for `error`, which a replica's delivery returned.
    pub(crate) fn of(error: &Error) -> WireError {
        match error {
            Error::CallNotYours { .. } => WireError::CallNotYours,
            _ => WireError::CallUnknown,
        }
    }

    /// The error the replica that forwarded the result answers its device.
    pub(crate) fn into_error(self, call_id: String) -> Error {
        match self {
            WireError::CallNotYours => Error::CallNotYours { call_id },
            WireError::CallUnknown | WireError::Unknown => Error::CallUnknown { call_id },
        }
    }
}

/// What a call request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) enum Sent {
    /// A replica holds the stream and pushed the call.
    Held,
    /// No replica holds it.
    Nobody,
}

/// The seam between the dispatcher and the replicas' transport.
#[async_trait]
pub(crate) trait Bus: Send + Sync + 'static {
    /// This replica's id.
    fn replica(&self) -> &str;
    /// Whether the transport is connected now.
    fn available(&self) -> bool;
    /// Starts delivering what other replicas send. Called once.
    fn attach(&self, inbound: mpsc::UnboundedSender<Inbound>);
    /// This replica now holds `session_id` of the device: route its calls
    /// here, and displace the session that held it before.
    async fn claim(&self, device_id: &str, owner: &str, session_id: &str) -> Result<()>;
    /// The session ended; stop routing to it unless a newer one holds it.
    async fn release(&self, device_id: &str, session_id: &str);
    /// Sends a call to whichever replica holds the device.
    async fn send_call(&self, device_id: &str, call: &CallEvent) -> Result<Sent>;
    /// The caller gave up on a call (`reason`), or (`None`) got its result.
    async fn finish_call(&self, device_id: &str, call_id: &str, reason: Option<&str>);
    /// Tells every replica the device was revoked.
    async fn revoked(&self, device_id: &str);
    /// Hands a result to the replica whose caller waits; `None` when that
    /// replica is gone.
    async fn route_result(
        &self,
        caller: &str,
        device_id: &str,
        result: &CallResult,
        from_holder: bool,
    ) -> Result<Option<Result<ResultAck, WireError>>>;
    /// Shares a live event with the other replicas.
    fn event(&self, event: &HostEvent);
    /// Asks the other replicas about an MCP task; the reply of the one that
    /// has it, or `None` when none answers in time.
    async fn ask_task(&self, request: Vec<u8>) -> Option<Vec<u8>>;
    /// Stops the background work [`Bus::attach`] started; [`Bus::closed`]
    /// resolves once all of it has ended.
    fn stop(&self);
    /// Resolves once every background task has ended after [`Bus::stop`].
    async fn closed(&self);
}

#[cfg(feature = "nats")]
pub use nats::NatsOptions;

#[cfg(feature = "nats")]
mod nats;
