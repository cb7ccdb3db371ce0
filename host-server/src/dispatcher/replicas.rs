//! The replicas' half: everything the dispatcher does because other
//! replicas share its devices, and what they send it. The only file of the
//! dispatcher that names the cluster; without one, every method here does
//! nothing (or answers as for a device only this process knows).

use std::sync::{Arc, Weak};
use std::time::Duration;

use fusion_protocol::{CallEvent, CallResult, ClosingEvent, ResultAck};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::state::{Ending, State, StreamMsg};
use super::{Dispatcher, Inner};
use crate::cluster::{Cluster, Inbound, Sent, WireError};
use crate::error::{Error, Result};
use crate::events::HostEvent;
use crate::store::{DeviceRecord, PendingCallRecord};

/// How a replica answers another's question about an MCP task (JSON both
/// ways): the reply when it has the task, `None` when it does not.
pub(crate) type TaskAnswers = Arc<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// Starts hearing the other replicas, for as long as the dispatcher lives.
pub(super) fn attach(dispatcher: &Dispatcher) {
    if let Some(cluster) = dispatcher.cluster() {
        let (tx, rx) = mpsc::unbounded_channel();
        cluster.bus.attach(tx);
        tokio::spawn(serve_inbound(Arc::downgrade(&dispatcher.inner), rx));
    }
}

/// Stops following the other replicas when the dispatcher is dropped.
pub(super) fn detach(inner: &Inner) {
    if let Some(cluster) = &inner.config.cluster {
        cluster.bus.stop();
    }
}

/// Handles what other replicas send, for as long as the dispatcher lives.
async fn serve_inbound(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Inbound>) {
    while let Some(msg) = rx.recv().await {
        let Some(inner) = inner.upgrade() else { return };
        Dispatcher { inner }.inbound(msg);
    }
}

impl Dispatcher {
    fn cluster(&self) -> Option<&Cluster> {
        self.inner.config.cluster.as_ref()
    }

    /// Sets how this replica answers the others' questions about MCP tasks
    /// (the MCP endpoint does, once).
    #[cfg_attr(not(feature = "mcp"), allow(dead_code))]
    pub(crate) fn answer_tasks(&self, answers: TaskAnswers) {
        *self.inner.task_answers.lock().unwrap_or_else(|e| e.into_inner()) = Some(answers);
    }

    /// Asks the other replicas about an MCP task this one does not have:
    /// the reply of the one that has it; `None` without replicas or when
    /// none has it.
    #[cfg_attr(not(feature = "mcp"), allow(dead_code))]
    pub(crate) async fn ask_replicas_about_task(&self, request: Vec<u8>) -> Option<Vec<u8>> {
        self.cluster()?.bus.ask_task(request).await
    }

    /// Shares a live event with the other replicas.
    pub(super) fn share_event(&self, event: &HostEvent) {
        if let Some(cluster) = self.cluster() {
            cluster.bus.event(event);
        }
    }

    /// Keeps a call in the store until it is answered, so a device that
    /// reconnects to another replica still gets it and its result finds
    /// this one. Refuses when the other replicas cannot be reached and the
    /// stream is not here.
    pub(super) async fn keep_for_replicas(&self, device: &DeviceRecord, call: &CallEvent) -> Result<()> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        if !cluster.bus.available() && !self.holds(&device.id) {
            return Err(Error::ClusterUnavailable {
                device_id: device.id.clone(),
            });
        }
        self.inner
            .store
            .save_pending_call(PendingCallRecord {
                call_id: call.call_id.clone(),
                device_id: device.id.clone(),
                caller: cluster.replica().to_string(),
                call: call.clone(),
                created_at: self.now(),
            })
            .await?;
        Ok(())
    }

    /// Gets a call to the device wherever it streams: here (the slot's
    /// outstanding calls are pushed on connect), or through the replica
    /// holding it. Waits up to the offline grace for it to be somewhere.
    /// `None` without a cluster: the caller waits for the device here.
    pub(super) async fn route_via_replicas(
        &self,
        device: &DeviceRecord,
        call: &CallEvent,
        online: &mut watch::Receiver<bool>,
    ) -> Option<Result<()>> {
        let cluster = self.cluster()?;
        let deadline = Instant::now() + self.inner.config.offline_grace;
        Some(loop {
            if self.holds(&device.id) {
                break Ok(());
            }
            // Asked even when no holder was announced yet: a replica that
            // started a moment ago has not heard the heartbeats.
            match cluster.bus.send_call(&device.id, call).await {
                Ok(Sent::Held) => break Ok(()),
                Ok(Sent::Nobody) => {}
                Err(e) => break Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(Error::DeviceOffline {
                    device_id: device.id.clone(),
                });
            }
            // A holder that just went away, or one this replica has not
            // heard of yet: look again when it changes, or shortly.
            let wait = (deadline - now).min(Duration::from_millis(250));
            online.mark_unchanged();
            let _ = tokio::time::timeout(wait, online.changed()).await;
        })
    }

    /// Sends a result no caller here waits for to the replica whose caller
    /// does, found through the routed map or the store.
    pub(super) async fn forward_result(&self, device_id: &str, result: &CallResult) -> Result<ResultAck> {
        let call_id = result.call_id.clone();
        let Some(cluster) = self.cluster() else {
            return Err(Error::CallUnknown { call_id });
        };
        // Its caller: known here if this replica pushed it, else in the store.
        let routed = self.state().routed.get(&call_id).cloned();
        let (device, caller) = match routed {
            Some(routed) => routed,
            None => match self.inner.store.pending_call(&call_id).await? {
                Some(row) => (row.device_id, row.caller),
                None => return Err(Error::CallUnknown { call_id }),
            },
        };
        if device != device_id {
            return Err(Error::CallNotYours { call_id });
        }
        let from_holder = self
            .state()
            .end_call(device_id, &call_id, Ending::EndedElsewhere { cancel: None })
            .held_here;
        match cluster
            .bus
            .route_result(&caller, device_id, result, from_holder)
            .await?
        {
            Some(Ok(ack)) => Ok(ack),
            Some(Err(refused)) => Err(refused.into_error(call_id)),
            None => {
                // The replica that made the call is gone, and its caller
                // with it: nobody waits.
                tracing::warn!(
                    call_id,
                    device_id,
                    "a result arrived for a call whose replica is gone"
                );
                self.inner.store.remove_pending_call(&call_id).await?;
                Ok(ResultAck { accepted: false })
            }
        }
    }

    /// Tells the other replicas that a call made here ended: its row in the
    /// store goes, and the replica holding the stream (when this one does
    /// not) forgets it, or cancels it on the device.
    pub(super) fn share_ending(&self, device_id: &str, call_id: &str, held_here: bool, ending: Ending<'_>) {
        let tell = match ending {
            Ending::Answered { tell_holder } => (tell_holder && !held_here).then_some(None),
            Ending::Cancelled { reason } => (!held_here).then(|| Some(reason.to_string())),
            Ending::EndedElsewhere { .. } | Ending::Revoked => return,
        };
        let Some(cluster) = self.cluster() else { return };
        // A call's guard may be dropped outside the runtime.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (bus, store) = (Arc::clone(&cluster.bus), Arc::clone(&self.inner.store));
        let (device_id, call_id) = (device_id.to_string(), call_id.to_string());
        runtime.spawn(async move {
            if let Err(e) = store.remove_pending_call(&call_id).await {
                tracing::warn!(error = %e, call_id, "could not forget an ended call");
            }
            if let Some(reason) = tell {
                bus.finish_call(&device_id, &call_id, reason.as_deref()).await;
            }
        });
    }

    /// Announces a new session to the other replicas (displacing a stream
    /// another one held) and queues the calls the store still has for the
    /// device, made on any replica. With NATS away the stream still works
    /// for calls made here.
    pub(crate) async fn join_replicas(&self, device: &DeviceRecord, session_id: &str) -> Result<()> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        if let Err(e) = cluster.bus.claim(&device.id, &device.owner, session_id).await {
            tracing::warn!(device_id = %device.id, error = %e, "could not announce the device to the other replicas");
        }
        // A call older than its caller could wait (the offline grace, then
        // its timeout) has nobody waiting: its replica died. It is deleted,
        // not sent: a device back after a day gets no day-old call.
        let now = self.now();
        let mut calls = Vec::new();
        for pending in self.inner.store.pending_calls(&device.id).await? {
            let waited = Duration::from_millis(pending.call.timeout_ms) + self.inner.config.offline_grace;
            if pending.created_at + waited > now {
                calls.push(pending);
            } else {
                tracing::info!(call_id = %pending.call_id, device_id = %device.id, "a call nobody waits for any more is dropped");
                self.inner.store.remove_pending_call(&pending.call_id).await?;
            }
        }
        let mut state = self.state();
        let State { slots, routed, .. } = &mut *state;
        let Some(slot) = slots.get_mut(&device.id) else {
            return Ok(());
        };
        for pending in calls {
            let call_id = pending.call.call_id.clone();
            if slot.push_once(pending.call) && pending.caller != cluster.replica() {
                routed.insert(call_id, (device.id.clone(), pending.caller));
            }
        }
        Ok(())
    }

    /// Stops routing the device's calls here, unless a newer session holds it.
    pub(super) fn leave_replicas(&self, device_id: &str, session_id: &str) {
        if let Some(cluster) = self.cluster() {
            let (bus, device_id, session_id) = (
                Arc::clone(&cluster.bus),
                device_id.to_string(),
                session_id.to_string(),
            );
            tokio::spawn(async move { bus.release(&device_id, &session_id).await });
        }
    }

    /// Tells every replica the device was revoked: the one holding its stream
    /// closes it, each fails the calls it waits on. Its stored calls go.
    pub(super) async fn revoke_everywhere(&self, device_id: &str) -> Result<()> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        cluster.bus.revoked(device_id).await;
        for call in self.inner.store.pending_calls(device_id).await? {
            self.inner.store.remove_pending_call(&call.call_id).await?;
        }
        Ok(())
    }

    fn inbound(&self, msg: Inbound) {
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
                let ending = Ending::EndedElsewhere {
                    cancel: Some(&reason),
                };
                self.state().end_call(&device_id, &call_id, ending);
            }
            Inbound::Done { device_id, call_id } => {
                let ending = Ending::EndedElsewhere { cancel: None };
                self.state().end_call(&device_id, &call_id, ending);
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
                    Ok(None) => Err(WireError::CallUnknown),
                    Err(e) => Err(WireError::of(&e)),
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
            Inbound::Task { request, reply } => {
                let answers = self
                    .inner
                    .task_answers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let _ = reply.send(answers.and_then(|answer| answer(&request)));
            }
            Inbound::Event(event) => {
                // A page on this replica shows a device updating whichever
                // replica it told.
                if let HostEvent::DeviceUpdate {
                    owner,
                    device_id,
                    status,
                    to,
                } = &event
                {
                    self.state().slot(device_id, owner).note_update(*status, to);
                }
                // A report another replica heard, for a caller here.
                if let HostEvent::CallProgress {
                    device_id,
                    call_id,
                    done,
                    total,
                    message,
                    ..
                } = &event
                {
                    let progress = fusion_protocol::CallProgress {
                        call_id: call_id.clone(),
                        done: *done,
                        total: *total,
                        message: message.clone(),
                    };
                    self.state().forward_progress(device_id, &progress);
                }
                let _ = self.inner.events.send(event);
            }
        }
    }
}
