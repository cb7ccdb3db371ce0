//! Long calls as tasks, for clients that declare the tasks extension
//! (`io.modelcontextprotocol/tasks`, SEP-2663): the call answers at once
//! with a task that the client polls (`tasks/get`) and may stop
//! (`tasks/cancel`). rmcp's [`TaskManager`] keeps their state; this keeps
//! each task with its owner, so a user sees only their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use std::time::Duration;

use rmcp::model::{CallToolResult, DetailedTask, InputResponses, Task};
use rmcp::service::RequestContext;
use rmcp::task_manager::{TaskContext, TaskExit, TaskFuture, TaskManager, TaskOptions};
use rmcp::{ErrorData as McpError, RoleServer};
use serde_json::{Map, Value};

use super::tools::{Answer, PROGRESS_EVERY, error_result, outcome_result, success};
use super::{McpUser, RemoteMcp};
use crate::{Error, HostEvent, ProposalStatus};

/// How long a task is kept from its creation: a conversion of a site's
/// scans takes minutes, and its result must outlive it.
const TASK_TTL_MS: u64 = 60 * 60 * 1000;

/// How often a client should look again.
const POLL_MS: u64 = 1_000;

/// The tasks of every user on this server, each with its owner.
#[derive(Clone, Default)]
pub(super) struct Tasks {
    manager: TaskManager,
    owners: Arc<Mutex<Owners>>,
}

/// Each task's owner, with when it started: an entry past the tasks' TTL
/// is dropped (the manager lets such tasks go), in a sweep that runs when
/// the map has doubled since the last one, so starting a task stays cheap.
#[derive(Default)]
struct Owners {
    of: HashMap<String, (String, std::time::Instant)>,
    sweep_at: usize,
}

impl Tasks {
    /// Starts `work` as a task of `owner`'s.
    pub(super) fn spawn(&self, owner: &str, work: impl FnOnce(TaskContext) -> TaskFuture) -> Task {
        let options = TaskOptions::new()
            .with_ttl_ms(TASK_TTL_MS)
            .with_poll_interval_ms(POLL_MS);
        let task = self.manager.spawn(options, work);
        let mut owners = self.owners.lock().expect("task owners lock poisoned");
        if owners.of.len() >= owners.sweep_at {
            let ttl = std::time::Duration::from_millis(TASK_TTL_MS);
            owners.of.retain(|_, (_, started)| started.elapsed() < ttl);
            owners.sweep_at = (2 * owners.of.len()).max(1024);
        }
        let started = std::time::Instant::now();
        owners
            .of
            .insert(task.task_id.clone(), (owner.to_string(), started));
        task
    }

    /// The task `id`, if it is `owner`'s: another user's task does not
    /// exist for them, as for an id that never did.
    fn check(&self, owner: &str, id: &str) -> Result<(), McpError> {
        let owners = self.owners.lock().expect("task owners lock poisoned");
        match owners.of.get(id) {
            Some((o, _)) if o == owner => Ok(()),
            _ => Err(McpError::invalid_params(
                format!("there is no task {id}; it may have ended more than an hour ago"),
                None,
            )),
        }
    }

    pub(super) fn get(&self, owner: &str, id: &str) -> Result<DetailedTask, McpError> {
        self.check(owner, id)?;
        self.manager.get_task(id)
    }

    pub(super) fn cancel(&self, owner: &str, id: &str) -> Result<(), McpError> {
        self.check(owner, id)?;
        self.manager.cancel_task(id)
    }

    pub(super) fn update(&self, owner: &str, id: &str, responses: InputResponses) -> Result<(), McpError> {
        self.check(owner, id)?;
        self.manager.update_task(id, responses)
    }
}

impl RemoteMcp {
    /// Whether a call of device tool `name` runs as a task: the client
    /// follows tasks, and the tool (by the device's manifest) is one that
    /// can take long.
    pub(super) async fn as_task(
        &self,
        context: &RequestContext<RoleServer>,
        owner: &str,
        name: &str,
        args: &Map<String, Value>,
    ) -> bool {
        if !context.client_capabilities().is_some_and(|c| c.supports_tasks()) {
            return false;
        }
        let Some(Value::String(wanted)) = args.get("device") else {
            return false;
        };
        let Ok(devices) = self.dispatcher.devices(owner).await else {
            return false;
        };
        let Some(device) = devices
            .iter()
            .filter(|d| d.device.revoked_at.is_none())
            .find(|d| &d.device.id == wanted || &d.device.name == wanted)
        else {
            return false;
        };
        let Ok((_, Some(manifest))) = self.dispatcher.device(owner, &device.device.id).await else {
            return false;
        };
        manifest
            .tools
            .iter()
            .find(|t| t.name == name)
            .is_some_and(|t| fusion_protocol::runs_long(name, t.class))
    }

    /// A device call as a task: its status says how long the device has
    /// been at it; a change waits for the person's decision (`tasks/cancel`
    /// while it waits withdraws it), then for the apply. Cancelling a
    /// running call tells the device to stop.
    pub(super) async fn run_as_task(
        &self,
        task: TaskContext,
        user: McpUser,
        name: String,
        arguments: Map<String, Value>,
    ) -> Result<CallToolResult, TaskExit> {
        let (progress, mut reports) = tokio::sync::mpsc::unbounded_channel();
        let call = self.call_device_tool(&user, &name, arguments, Some(progress));
        tokio::pin!(call);
        let started = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval_at(started + PROGRESS_EVERY, PROGRESS_EVERY);
        // The device's own reports once they come; until then, the time.
        let mut from_device = false;
        let answer = loop {
            tokio::select! {
                done = &mut call => break done,
                // Dropping the call tells the device to stop (`caller_gone`).
                () = task.cancelled() => return Err(TaskExit::Cancelled),
                Some(report) = reports.recv() => {
                    from_device = true;
                    task.set_status_message(report.describe(&name));
                }
                _ = ticks.tick(), if !from_device => task.set_status_message(format!(
                    "{name} running on the device for {} s",
                    started.elapsed().as_secs()
                )),
            }
        };
        let mut proposal = match answer {
            Ok(Answer::Output(output)) => return Ok(success(&name, output)),
            Ok(Answer::Proposal(p)) => *p,
            Err(Error::InvalidRequest(message)) => return Err(McpError::invalid_params(message, None).into()),
            Err(e) => return Ok(error_result(&e)),
        };
        let owner = user.owner.as_str();
        let page = format!(
            "{}{}?proposal={id}#proposal-{id}",
            self.config.public_url,
            self.config.approve_path,
            id = proposal.id
        );
        let mut events = self.dispatcher.subscribe();
        // Whether the device has said how far the apply has come.
        let mut applying = false;
        loop {
            match proposal.status {
                ProposalStatus::Pending => task.set_status_message(format!(
                    "waiting for a person to approve on {page}: {}",
                    proposal.plan.summary
                )),
                ProposalStatus::Approved if !applying => {
                    task.set_status_message("approved; applying on the device");
                }
                ProposalStatus::Approved => {}
                _ => return Ok(outcome_result(self.proposal_view(&proposal), &proposal)),
            }
            tokio::select! {
                () = task.cancelled(), if proposal.status == ProposalStatus::Pending => {
                    // Nothing was applied: the change is withdrawn.
                    let _ = self.dispatcher.reject(owner, &proposal.id).await;
                    return Err(TaskExit::Cancelled);
                }
                event = tokio::time::timeout(Duration::from_secs(1), events.recv()) => {
                    // The apply's progress, as the device reports it.
                    if let Ok(Ok(HostEvent::CallProgress { proposal_id: Some(id), call_id, done, total, message, .. })) = event
                        && id == proposal.id
                    {
                        applying = true;
                        let report = fusion_protocol::CallProgress { call_id, done, total, message };
                        task.set_status_message(format!("applying: {}", report.describe(&name)));
                        continue;
                    }
                }
            }
            proposal = match self.dispatcher.proposal(owner, &proposal.id).await {
                Ok(p) => p,
                Err(e) => return Ok(error_result(&e)),
            };
        }
    }
}
