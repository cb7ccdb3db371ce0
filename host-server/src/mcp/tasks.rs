//! Long calls as tasks, for clients that declare the tasks extension
//! (`io.modelcontextprotocol/tasks`, SEP-2663): the call answers at once
//! with a task that the client polls (`tasks/get`) and may stop
//! (`tasks/cancel`). rmcp's [`TaskManager`] keeps their state; this keeps
//! each task with its owner, so a user sees only their own.
//!
//! A task runs on the replica that started it. Asked about a task it does
//! not have, a replica asks the others (through the dispatcher's cluster),
//! and the one that has it answers: a client need not come back to the same
//! replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use std::time::Duration;

use rmcp::model::{CallToolResult, DetailedTask, InputResponses, Task};
use rmcp::service::RequestContext;
use rmcp::task_manager::{TaskContext, TaskExit, TaskFuture, TaskManager, TaskOptions};
use rmcp::{ErrorData as McpError, RoleServer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::tools::{Answer, PROGRESS_EVERY, error_result, outcome_result, success};
use super::{McpUser, RemoteMcp};
use crate::{Dispatcher, Error, HostEvent, ProposalStatus};

/// How long a task is kept from its creation: a conversion of a site's
/// scans takes minutes, and its result must outlive it.
const TASK_TTL_MS: u64 = 60 * 60 * 1000;

/// How often a client should look again.
const POLL_MS: u64 = 1_000;

/// The tasks of every user on this replica, each with its owner.
#[derive(Clone, Default)]
pub(super) struct Tasks {
    inner: Arc<TasksInner>,
}

#[derive(Default)]
struct TasksInner {
    manager: TaskManager,
    owners: Mutex<Owners>,
}

/// Each task's owner, with when it started: an entry past the tasks' TTL
/// is dropped (the manager lets such tasks go), in a sweep that runs when
/// the map has doubled since the last one, so starting a task stays cheap.
#[derive(Default)]
struct Owners {
    of: HashMap<String, (String, std::time::Instant)>,
    sweep_at: usize,
}

/// What one replica asks another about a task.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Question {
    Get {
        owner: String,
        id: String,
    },
    Cancel {
        owner: String,
        id: String,
    },
    Update {
        owner: String,
        id: String,
        responses: InputResponses,
    },
}

/// The reply of the replica that has the task: the task for `Get`.
type Reply = Result<Option<DetailedTask>, McpError>;

impl Tasks {
    /// The tasks of this replica, which answer the other replicas'
    /// questions through `dispatcher`.
    pub(super) fn new(dispatcher: &Dispatcher) -> Tasks {
        let tasks = Tasks::default();
        let here: Weak<TasksInner> = Arc::downgrade(&tasks.inner);
        dispatcher.answer_tasks(Arc::new(move |request| {
            let inner = here.upgrade()?;
            let question: Question = serde_json::from_slice(request).ok()?;
            let reply = Tasks { inner }.answer(&question)?;
            serde_json::to_vec(&reply).ok()
        }));
        tasks
    }

    /// Starts `work` as a task of `owner`'s.
    pub(super) fn spawn(&self, owner: &str, work: impl FnOnce(TaskContext) -> TaskFuture) -> Task {
        let options = TaskOptions::new()
            .with_ttl_ms(TASK_TTL_MS)
            .with_poll_interval_ms(POLL_MS);
        let task = self.inner.manager.spawn(options, work);
        let mut owners = self.owners();
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

    fn owners(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.inner.owners.lock().expect("task owners lock poisoned")
    }

    /// Whether task `id` is here: `None` when it is not, else whether it is
    /// `owner`'s. Another user's task does not exist for them, as for an id
    /// that never did.
    fn here(&self, owner: &str, id: &str) -> Option<Result<(), McpError>> {
        let owners = self.owners();
        let (o, _) = owners.of.get(id)?;
        Some(if o == owner { Ok(()) } else { Err(no_task(id)) })
    }

    /// Answers `question` about a task of this replica's; `None` when the
    /// task is not here.
    fn answer(&self, question: &Question) -> Option<Reply> {
        let manager = &self.inner.manager;
        Some(match question {
            Question::Get { owner, id } => self
                .here(owner, id)?
                .and_then(|()| manager.get_task(id).map(Some)),
            Question::Cancel { owner, id } => self
                .here(owner, id)?
                .and_then(|()| manager.cancel_task(id).map(|()| None)),
            Question::Update { owner, id, responses } => self
                .here(owner, id)?
                .and_then(|()| manager.update_task(id, responses.clone()).map(|()| None)),
        })
    }

    /// Answers `question` here, or asks the other replicas.
    async fn ask(&self, dispatcher: &Dispatcher, id: &str, question: Question) -> Reply {
        if let Some(reply) = self.answer(&question) {
            return reply;
        }
        let request =
            serde_json::to_vec(&question).map_err(|e| McpError::internal_error(e.to_string(), None))?;
        match dispatcher.ask_replicas_about_task(request).await {
            Some(reply) => serde_json::from_slice(&reply).map_err(|e| {
                McpError::internal_error(format!("a replica's answer about task {id}: {e}"), None)
            })?,
            None => Err(no_task(id)),
        }
    }

    pub(super) async fn get(
        &self,
        dispatcher: &Dispatcher,
        owner: &str,
        id: &str,
    ) -> Result<DetailedTask, McpError> {
        let question = Question::Get {
            owner: owner.into(),
            id: id.into(),
        };
        self.ask(dispatcher, id, question)
            .await?
            .ok_or_else(|| no_task(id))
    }

    pub(super) async fn cancel(
        &self,
        dispatcher: &Dispatcher,
        owner: &str,
        id: &str,
    ) -> Result<(), McpError> {
        let question = Question::Cancel {
            owner: owner.into(),
            id: id.into(),
        };
        self.ask(dispatcher, id, question).await.map(|_| ())
    }

    pub(super) async fn update(
        &self,
        dispatcher: &Dispatcher,
        owner: &str,
        id: &str,
        responses: InputResponses,
    ) -> Result<(), McpError> {
        let question = Question::Update {
            owner: owner.into(),
            id: id.into(),
            responses,
        };
        self.ask(dispatcher, id, question).await.map(|_| ())
    }
}

fn no_task(id: &str) -> McpError {
    McpError::invalid_params(
        format!("there is no task {id}; it may have ended more than an hour ago"),
        None,
    )
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
