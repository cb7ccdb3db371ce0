//! The replicas' half: what other replicas send, handled here.

use std::sync::Weak;

use fusion_protocol::{CancelEvent, ClosingEvent};
use tokio::sync::mpsc;

use super::state::StreamMsg;
use super::{Dispatcher, Inner};
use crate::cluster::{Cluster, Inbound, WireError};

/// Handles what other replicas send, for as long as the dispatcher lives.
pub(super) async fn serve_inbound(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
    while let Some(msg) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        Dispatcher { inner }.inbound(msg);
    }
}

impl Dispatcher {
    pub(super) fn inbound(&self, msg: Inbound) {
        match msg {
            Inbound::Call {
                device_id,
                call,
                caller,
                held,
            } => {
                let mut state = self.state();
                let call_id = call.call_id.clone();
                let pushed = state
                    .slots
                    .get_mut(&device_id)
                    .is_some_and(|slot| slot.push_once(*call));
                if pushed {
                    state.routed.insert(call_id, (device_id, caller));
                }
                drop(state);
                let _ = held.send(pushed);
            }
            Inbound::Cancel {
                device_id,
                call_id,
                reason,
            } => {
                let mut state = self.state();
                state.routed.remove(&call_id);
                if let Some(slot) = state.slots.get_mut(&device_id) {
                    slot.outstanding.retain(|_, c| c.call_id != call_id);
                    if let Some(session) = &slot.session {
                        let _ = session
                            .tx
                            .send(StreamMsg::Cancel(CancelEvent { call_id, reason }));
                    }
                }
            }
            Inbound::Done { device_id, call_id } => {
                let mut state = self.state();
                state.routed.remove(&call_id);
                if let Some(slot) = state.slots.get_mut(&device_id) {
                    slot.outstanding.retain(|_, c| c.call_id != call_id);
                }
            }
            Inbound::Displace {
                device_id,
                session_id,
                by,
            } => {
                let mut state = self.state();
                if let Some(slot) = state.slots.get_mut(&device_id)
                    && slot.session.as_ref().is_some_and(|s| s.id == session_id)
                    && let Some(old) = slot.session.take()
                {
                    tracing::info!(
                        device_id,
                        session_id,
                        replica = by,
                        "device moved to another replica"
                    );
                    let _ = old.tx.send(StreamMsg::Replaced(ClosingEvent {
                        message: "a newer connection from this device replaced this one".into(),
                    }));
                    slot.remote = Some(by);
                    slot.online.send_replace(true);
                }
            }
            Inbound::Revoked { device_id } => self.close_revoked(&device_id),
            Inbound::Result {
                device_id,
                result,
                from_holder,
                ack,
            } => {
                let answer = match self.deliver_here(&device_id, &result, !from_holder) {
                    Ok(Some(a)) => Ok(a),
                    Ok(None) => Err(WireError {
                        code: "call_unknown".into(),
                    }),
                    Err(e) => Err(WireError {
                        code: e.code().to_string(),
                    }),
                };
                let _ = ack.send(answer);
            }
            Inbound::Holder {
                device_id,
                owner,
                replica,
            } => {
                let here = self.cluster().map(Cluster::replica);
                let remote = replica.filter(|r| Some(r.as_str()) != here);
                let mut state = self.state();
                let slot = state.slot(&device_id, &owner);
                if remote.is_some() && slot.remote != remote {
                    // A new stream elsewhere may have sent a new manifest.
                    slot.tools = None;
                }
                slot.remote = remote;
                let online = slot.is_online();
                slot.online.send_replace(online);
            }
            Inbound::Event(event) => {
                let _ = self.inner.events.send(event);
            }
        }
    }
}
