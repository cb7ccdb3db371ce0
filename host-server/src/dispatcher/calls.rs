//! Calls: sending one down a device's stream, waiting for its result, and
//! delivering a result to the caller that waits for it.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use fusion_protocol::{
    CallEvent, CallProgress, CallResult, Class, ErrorBody, Mode, Plan, Precondition, ResultAck,
};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{Ending, Pending, State, StreamMsg};
use super::{Dispatcher, ToolIndex};
use crate::credentials::new_id;
use crate::error::{Error, Result};
use crate::events::HostEvent;
use crate::store::{CallLogEntry, DeviceRecord, ProposalRecord, ProposalStatus, input_paths};

/// Options for one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// Overrides [`Config::call_timeout`].
    pub timeout: Option<Duration>,
    /// Who asked, when it is not the owner themself (an agent run, say).
    pub requested_by: Option<String>,
    /// Where the device's progress reports for this call go (`POST
    /// /progress`): how far the tool has come, at most one a second.
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<CallProgress>>,
}

/// What [`Dispatcher::call`] returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallOutcome {
    /// A read or action tool's result.
    Output(ToolOutput),
    /// A mutate tool's stored proposal, waiting for approval.
    Proposal(Box<ProposalRecord>),
}

/// A tool's successful result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolOutput {
    /// The call's id.
    pub call_id: String,
    /// The tool's structured output.
    pub output: Value,
    /// Whether a bound cut it short.
    pub truncated: bool,
    /// How long the tool ran on the device.
    pub duration_ms: u64,
}

impl Dispatcher {
    /// Calls `tool` on the owner's device. A read or action tool's result comes
    /// back as [`CallOutcome::Output`]; a mutate tool is planned on the device
    /// and stored as a pending [`CallOutcome::Proposal`].
    pub async fn call(
        &self,
        owner: &str,
        device_id: &str,
        tool: &str,
        input: Value,
        options: CallOptions,
    ) -> Result<CallOutcome> {
        let device = self.owned_device(owner, device_id).await?;
        if device.revoked_at.is_some() {
            return Err(Error::DeviceRevoked { device_id: device.id });
        }
        let timeout = options.timeout.unwrap_or(self.inner.config.call_timeout);
        let tools = self.tools_of(&device).await?;
        let class = *tools.get(tool).ok_or_else(|| Error::UnknownTool {
            device_id: device.id.clone(),
            tool: tool.to_string(),
            available: tools.keys().map(String::as_str).collect::<Vec<_>>().join(", "),
        })?;
        let mode = if class == Class::Mutate {
            Mode::Plan
        } else {
            Mode::Run
        };
        // A plan's log line names the proposal it becomes.
        let proposal_id = (mode == Mode::Plan).then(|| new_id("prop_"));
        let result = self
            .dispatch(
                &device,
                tool,
                mode,
                input.clone(),
                None,
                proposal_id.clone(),
                options.requested_by.as_deref().unwrap_or(owner),
                timeout,
                options.progress.clone(),
            )
            .await?;
        let output = ok_output(result)?;
        if mode == Mode::Run {
            return Ok(CallOutcome::Output(output));
        }
        let plan: Plan = serde_json::from_value(output.output).map_err(|e| {
            Error::Tool(ErrorBody::new(
                "invalid_plan",
                format!("the device returned a plan this server cannot read: {e}"),
            ))
        })?;
        let now = self.now();
        let proposal = ProposalRecord {
            id: proposal_id.unwrap_or_else(|| new_id("prop_")),
            owner: owner.to_string(),
            device_id: device.id.clone(),
            tool: tool.to_string(),
            input,
            plan,
            requested_by: options.requested_by.unwrap_or_else(|| owner.to_string()),
            created_at: now,
            expires_at: now + self.inner.config.proposal_ttl,
            status: ProposalStatus::Pending,
            decided_by: None,
            decided_at: None,
            output: None,
            error: None,
        };
        self.inner.store.create_proposal(proposal.clone()).await?;
        self.emit(HostEvent::ProposalCreated {
            owner: owner.to_string(),
            proposal_id: proposal.id.clone(),
            device_id: device.id,
            tool: tool.to_string(),
            summary: proposal.plan.summary.clone(),
        });
        Ok(CallOutcome::Proposal(Box::new(proposal)))
    }

    /// A device's word on how far one of its calls has come (`POST
    /// /progress`): passed to the caller if it waits here and listens,
    /// and to every replica as an event (naming the proposal of an apply
    /// this replica knows), where the caller may be instead.
    pub(crate) fn report_progress(&self, device: &DeviceRecord, progress: CallProgress) -> Result<()> {
        if let Some(message) = &progress.message
            && (message.chars().count() > 200 || message.chars().any(char::is_control))
        {
            return Err(Error::InvalidRequest(
                "a progress message must be at most 200 printable characters".into(),
            ));
        }
        // Call ids are the server's own (`call_` and 32 hex digits): what
        // could not be one is no call, and is not passed around.
        if progress.call_id.len() > 64
            || !progress
                .call_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::InvalidRequest(
                "call_id must be the id of a call this device was sent".into(),
            ));
        }
        let proposal_id = {
            let state = self.state();
            state.forward_progress(&device.id, &progress);
            state.slots.get(&device.id).and_then(|slot| {
                slot.outstanding
                    .values()
                    .find(|c| c.call_id == progress.call_id)
                    .and_then(|c| c.proposal_id.clone())
            })
        };
        self.emit(HostEvent::CallProgress {
            owner: device.owner.clone(),
            device_id: device.id.clone(),
            call_id: progress.call_id,
            proposal_id,
            done: progress.done,
            total: progress.total,
            message: progress.message,
        });
        Ok(())
    }

    /// The device's tool classes: from its live manifest, else its stored
    /// one, else the one it sends if it connects within the offline grace.
    pub(super) async fn tools_of(&self, device: &DeviceRecord) -> Result<Arc<ToolIndex>> {
        let mut online = {
            let mut state = self.state();
            let slot = state.slot(&device.id, &device.owner);
            if let Some(tools) = &slot.tools {
                return Ok(Arc::clone(tools));
            }
            slot.online.subscribe()
        };
        if let Some(manifest) = self.inner.store.manifest(&device.id).await? {
            return Ok(self.state().index_tools(&device.id, &device.owner, &manifest));
        }
        let _ = tokio::time::timeout(self.inner.config.offline_grace, online.wait_for(|on| *on)).await;
        // The manifest is sent right after the stream opens; give it the same grace.
        let deadline = Instant::now() + self.inner.config.offline_grace;
        loop {
            if let Some(tools) = self.state().slots.get(&device.id).and_then(|s| s.tools.clone()) {
                return Ok(tools);
            }
            if Instant::now() >= deadline || !*online.borrow() {
                return Err(Error::DeviceOffline {
                    device_id: device.id.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one call down the device's stream and waits for its result,
    /// logging it and emitting start/finish events.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn dispatch(
        &self,
        device: &DeviceRecord,
        tool: &str,
        mode: Mode,
        input: Value,
        precondition: Option<Precondition>,
        proposal_id: Option<String>,
        requested_by: &str,
        timeout: Duration,
        progress: Option<tokio::sync::mpsc::UnboundedSender<CallProgress>>,
    ) -> Result<CallResult> {
        if self.inner.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let call_id = new_id("call_");
        let started_at = self.now();
        let started = Instant::now();
        let owner = device.owner.clone();
        self.emit(HostEvent::CallStarted {
            owner: owner.clone(),
            device_id: device.id.clone(),
            call_id: call_id.clone(),
            tool: tool.to_string(),
            mode,
        });
        let paths = input_paths(&input);
        let call = CallEvent {
            call_id: call_id.clone(),
            tool: tool.to_string(),
            mode,
            input,
            timeout_ms: timeout.as_millis() as u64,
            // The device is told which proposal it applies; a plan's id is
            // only for the log (the proposal exists once the plan is back).
            proposal_id: proposal_id.clone().filter(|_| mode == Mode::Apply),
            precondition,
        };
        let result = self.send_and_wait(device, call, timeout, progress).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let error_code = match &result {
            Ok(r) if r.ok => None,
            Ok(r) => Some(
                r.error
                    .as_ref()
                    .map_or_else(|| "tool_failed".to_string(), |e| e.code.clone()),
            ),
            Err(e) => Some(e.code().to_string()),
        };
        self.emit(HostEvent::CallFinished {
            owner: owner.clone(),
            device_id: device.id.clone(),
            call_id: call_id.clone(),
            tool: tool.to_string(),
            mode,
            ok: error_code.is_none(),
            error_code: error_code.clone(),
            duration_ms,
        });
        let entry = CallLogEntry {
            call_id,
            owner,
            device_id: device.id.clone(),
            tool: tool.to_string(),
            mode,
            requested_by: requested_by.to_string(),
            paths,
            proposal_id,
            started_at,
            duration_ms,
            error_code,
        };
        if let Err(e) = self.inner.store.log_call(entry).await {
            // The call itself succeeded or failed on its own terms; a lost log line must not change that.
            tracing::error!(error = %e, "could not write the call log");
        }
        result
    }

    pub(super) async fn send_and_wait(
        &self,
        device: &DeviceRecord,
        call: CallEvent,
        timeout: Duration,
        progress: Option<tokio::sync::mpsc::UnboundedSender<CallProgress>>,
    ) -> Result<CallResult> {
        let (call_id, tool) = (call.call_id.clone(), call.tool.clone());
        let call_id = call_id.as_str();
        let (tx, rx) = oneshot::channel();
        self.keep_for_replicas(device, &call).await?;
        let routed = call.clone();
        let mut online = {
            let mut state = self.state();
            state.pending.insert(
                call_id.to_string(),
                Pending {
                    device_id: device.id.clone(),
                    tx,
                    progress,
                },
            );
            let slot = state.slot(&device.id, &device.owner);
            slot.next_event_id += 1;
            let event_id = slot.next_event_id;
            slot.outstanding.insert(event_id, call.clone());
            if let Some(session) = &slot.session {
                let _ = session.tx.send(StreamMsg::Call(event_id, Box::new(call)));
            }
            slot.online.subscribe()
        };
        let mut guard = CallGuard {
            dispatcher: self,
            device_id: &device.id,
            call_id,
            reason: "caller_gone",
            done: false,
        };
        if let Some(routed) = self.route_via_replicas(device, &routed, &mut online).await {
            routed?;
        } else if !*online.borrow_and_update() {
            let grace = self.inner.config.offline_grace;
            if !matches!(
                tokio::time::timeout(grace, online.wait_for(|on| *on)).await,
                Ok(Ok(_))
            ) {
                return Err(Error::DeviceOffline {
                    device_id: device.id.clone(),
                });
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => {
                guard.done = true;
                result
            }
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => {
                guard.reason = "timeout";
                Err(Error::Timeout {
                    device_id: device.id.clone(),
                    tool,
                    after: timeout,
                })
            }
        }
    }

    /// Whether this replica holds the device's stream.
    pub(super) fn holds(&self, device_id: &str) -> bool {
        self.state()
            .slots
            .get(device_id)
            .is_some_and(|s| s.session.is_some())
    }

    /// Ends a call made here (see [`State::end_call`]), releasing `state`,
    /// and tells the other replicas.
    pub(super) fn end_call(
        &self,
        mut state: MutexGuard<'_, State>,
        device_id: &str,
        call_id: &str,
        ending: Ending<'_>,
    ) -> Option<Pending> {
        let ended = state.end_call(device_id, call_id, ending);
        drop(state);
        self.share_ending(device_id, call_id, ended.held_here, ending);
        ended.waiter
    }

    /// Delivers a device's result (`POST /result`). Idempotent per call id.
    /// A result for a call made on another replica goes there.
    pub(crate) async fn deliver(&self, device_id: &str, result: CallResult) -> Result<ResultAck> {
        let delivered = match self.deliver_here(device_id, &result, true) {
            Ok(Some(ack)) => Ok(ack),
            Ok(None) => self.forward_result(device_id, &result).await,
            Err(e) => Err(e),
        };
        // A result for another device's call is answered as for an unknown
        // call: telling the device it exists would let it probe for calls.
        delivered.map_err(|e| match e {
            Error::CallNotYours { call_id } => {
                tracing::warn!(
                    device_id,
                    call_id,
                    "a device posted a result for another device's call"
                );
                Error::CallUnknown { call_id }
            }
            e => e,
        })
    }

    /// Delivers a result to a caller waiting on this replica; `None` when
    /// no call here knows it. `tell_holder`: the replica holding the
    /// stream may still have the call queued, and is told it is done.
    pub(super) fn deliver_here(
        &self,
        device_id: &str,
        result: &CallResult,
        tell_holder: bool,
    ) -> Result<Option<ResultAck>> {
        let state = self.state();
        let call_id = &result.call_id;
        match state.pending.get(call_id) {
            Some(p) if p.device_id != device_id => {
                return Err(Error::CallNotYours {
                    call_id: call_id.clone(),
                });
            }
            Some(_) => {}
            None => {
                return match state.finished.get(call_id) {
                    Some(owner_device) if owner_device == device_id => {
                        Ok(Some(ResultAck { accepted: false }))
                    }
                    Some(_) => Err(Error::CallNotYours {
                        call_id: call_id.clone(),
                    }),
                    None => Ok(None),
                };
            }
        }
        let waiter = self.end_call(state, device_id, call_id, Ending::Answered { tell_holder });
        let Some(waiter) = waiter else {
            return Ok(None);
        };
        let _ = waiter.tx.send(Ok(result.clone()));
        Ok(Some(ResultAck { accepted: true }))
    }
}

pub(super) fn ok_output(result: CallResult) -> Result<ToolOutput> {
    if !result.ok {
        let error = result.error.unwrap_or_else(|| {
            ErrorBody::new("tool_failed", "the device reported a failure without details")
        });
        return Err(Error::Tool(error));
    }
    Ok(ToolOutput {
        call_id: result.call_id,
        output: result.output.unwrap_or(Value::Null),
        truncated: result.truncated,
        duration_ms: result.duration_ms,
    })
}

/// Ends a call that gets no result (timeout, device offline, the caller's
/// future dropped): forgets it and tells the device to cancel.
pub(super) struct CallGuard<'a> {
    dispatcher: &'a Dispatcher,
    device_id: &'a str,
    call_id: &'a str,
    reason: &'static str,
    done: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let ending = Ending::Cancelled { reason: self.reason };
            let state = self.dispatcher.state();
            self.dispatcher
                .end_call(state, self.device_id, self.call_id, ending);
        }
    }
}
